/** @type {import('jest').Config} */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  roots: ['<rootDir>/src', '<rootDir>/test'],
  testRegex: '.*\\.(spec|e2e-spec)\\.ts$',
  moduleNameMapper: {
    '^nestjs-cancellation$': '<rootDir>/src/index.ts',
    '^nestjs-cancellation/testing$': '<rootDir>/src/testing/index.ts',
    '^nestjs-cancellation/grpc$': '<rootDir>/src/grpc/index.ts',
    '^nestjs-cancellation/bullmq$': '<rootDir>/src/bullmq/index.ts',
    '^nestjs-cancellation/fleet$': '<rootDir>/src/fleet/index.ts',
    '^nestjs-cancellation/schedule$': '<rootDir>/src/schedule/index.ts',
    '^nestjs-cancellation/terminus$': '<rootDir>/src/terminus/index.ts',
    '^(\\.{1,2}/.*)\\.js$': '$1',
  },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: '<rootDir>/tsconfig.json' }],
  },
  testTimeout: 30_000,
};
