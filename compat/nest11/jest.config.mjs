// The e2e suites of ../../test against Nest 11 (CommonJS) and the package's CommonJS build (dist/cjs, made by
// `npm run build` at the root). Jest runs without --experimental-vm-modules: every file is CommonJS, as in a
// Nest 11 application. Jest, ts-jest and TypeScript come from the root; Nest, rxjs, reflect-metadata and
// axios from this folder's node_modules, for the suites and for dist/cjs alike, so that the whole registry
// sees one Nest 11 (test/nest11.e2e-spec.ts checks that).
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const here = `${repo}/compat/nest11`;
const modules = `${here}/node_modules`;

/**
 * The suites of ../../test that run here. Left out: pack (it builds its own app from the packed tarball, a Nest 11
 * one among them), sample-app and demo-page (the sample app is compiled and run on the root's Nest 12);
 * exports.spec pins src/, not a platform. The cases that start a child process (drain, reliability, schedule,
 * fleet...) run their fixture app (test/fixtures/*.mjs) on this folder's Nest 11 and the CommonJS build too:
 * FIXTURE_NEST_DIR, set here and inherited by the test workers, makes test/utils/fixture.ts start it under
 * test/fixtures/compat-loader.mjs.
 */
const SUITES = [
  'async-context',
  'bullmq',
  'context',
  'contextless-calls',
  'deadlines',
  'disconnect',
  'door',
  'downstream',
  'drain',
  'exception-filters',
  'fleet',
  'graphql',
  'grpc',
  'guards',
  'https',
  'late-failures',
  'listeners',
  'microservice',
  'nested-interceptor',
  'outbound-request',
  'outcomes',
  'readme',
  'registry',
  'route-exclusion',
  'reliability',
  'observability',
  'rxjs',
  'schedule',
  'shared-signals',
  'shutdown',
  'shutdown-order',
  'socketio',
  'sse-budget',
  'streaming',
  'terminus',
  'websocket',
  'zoo',
];

process.env.FIXTURE_NEST_DIR = here;

/** @type {import('jest').Config} */
export default {
  rootDir: repo,
  testEnvironment: 'node',
  roots: [`${repo}/test`, `${here}/test`],
  testMatch: [...SUITES.map((name) => `${repo}/test/${name}.e2e-spec.ts`), `${here}/test/*.e2e-spec.ts`],
  moduleNameMapper: {
    '^nestjs-cancellation$': `${repo}/dist/cjs/index.js`,
    '^nestjs-cancellation/testing$': `${repo}/dist/cjs/testing/index.js`,
    '^nestjs-cancellation/grpc$': `${repo}/dist/cjs/grpc/index.js`,
    '^nestjs-cancellation/bullmq$': `${repo}/dist/cjs/bullmq/index.js`,
    '^nestjs-cancellation/fleet$': `${repo}/dist/cjs/fleet/index.js`,
    '^nestjs-cancellation/schedule$': `${repo}/dist/cjs/schedule/index.js`,
    '^nestjs-cancellation/terminus$': `${repo}/dist/cjs/terminus/index.js`,
    '^(?:\\.\\./)+src/pg/index\\.js$': `${repo}/dist/cjs/pg/index.js`,
    // Suites that reach into the library (e.g. `../src/registry/in-flight.registry.js`) get the same CommonJS copy.
    '^(?:\\.\\./)+src/((?:[a-z-]+/)*[a-z.-]+)\\.js$': `${repo}/dist/cjs/$1.js`,
    '^@nestjs/(axios|common|core|microservices|platform-express|platform-fastify|platform-socket\\.io|platform-ws|schedule|terminus|testing|websockets|graphql|apollo|bullmq)((?:/.*)?)$': `${modules}/@nestjs/$1$2`,
    // @grpc/grpc-js too: a Metadata made by the suites must be the one Nest 11's ClientGrpc checks for.
    '^(rxjs|axios|reflect-metadata|ws|graphql|@apollo/server|@as-integrations/express5|@grpc/grpc-js|@grpc/proto-loader|bullmq)((?:/.*)?)$': `${modules}/$1$2`,
    '^(\\.{1,2}/.*)\\.js$': '$1',
  },
  transform: {
    '^.+\\.ts$': [`${here}/jest.transform.mjs`, { tsconfig: `${here}/tsconfig.json` }],
  },
  testTimeout: 30_000,
};
