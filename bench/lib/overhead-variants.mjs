// The variants of the overhead suite, shared by the parent (bench/overhead.mjs) and the server process
// (bench/servers/overhead-server.mjs).

/** What GET /hello and GET /io answer, checked before each measurement. */
export const HELLO = 'Hello World!';
export const IO = 'Hello I/O!';

/**
 * Every variant, by name, in table order. `default: true` ones run unless BENCH_VARIANTS names others.
 * `adapters: ['node']`: not a Nest app, measured once and shown in both adapter columns.
 */
export const VARIANTS = {
  'raw-node': { label: 'raw node:http (ceiling)', default: true, adapters: ['node'] },
  'bare-nest': { label: 'bare Nest', default: true },
  'empty-interceptor': { label: 'Nest + empty global interceptor', default: true },
  cancellation: { label: '**Nest + CancellationModule.forRoot()**', default: true },
  'timeout-recipe': { label: "Nest docs' TimeoutInterceptor (rxjs timeout + catchError)", default: true },
  'request-scoped': { label: 'REQUEST-scoped provider holding an AbortController', default: true },
  'nestjs-cls': { label: 'nestjs-cls middleware carrying an AbortController signal', default: true },
  'als-interceptor': {
    label: 'empty interceptor + AsyncLocalStorage.run() (cost of ALS alone)',
    default: false,
  },
  'cancellation-signal': { label: 'CancellationModule, handler takes @RequestSignal()', default: false },
  'cancellation-no-als': {
    label: 'CancellationModule.forRoot({ asyncContext: false })',
    default: false,
  },
  'cancellation-timeout': { label: 'CancellationModule.forRoot({ timeoutMs: 30_000 })', default: false },
  'cancellation-base': {
    label: 'CancellationModule.forRoot() of another build (BENCH_BASE_DIST_DIR): before / after a change',
    default: false,
  },
};
