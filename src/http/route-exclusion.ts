import { RequestMethod } from '@nestjs/common';
import type { IncomingMessage } from 'node:http';
import { SKIP_CANCELLATION_METADATA } from '../decorators/skip-cancellation.decorator.js';

/**
 * A route left out of cancellation by the `exclude` option: a path pattern and, optionally, a method.
 *
 * The path is matched against the path the client requests (global prefix and URI version included, query
 * string ignored), case-insensitively, with or without a leading or trailing slash: `'health'` matches
 * `/health`; `':name'` matches one segment (`'users/:id/avatar'`); `'*'`, `'*name'` or `'{*name}'` as the last
 * segment matches whatever follows, nothing included (`'metrics/*'` matches `/metrics` and `/metrics/a/b`).
 */
export interface RouteExclusion {
  /** The path pattern. */
  path: string;
  /**
   * The method, as Nest's `RequestMethod` or its name (`'GET'`); a `GET` exclusion covers `HEAD` too.
   * @default RequestMethod.ALL
   */
  method?: RequestMethod | keyof typeof RequestMethod;
}

/** One compiled exclusion. */
interface CompiledExclusion {
  readonly pattern: RegExp;
  /** Upper-case method, or undefined for any. */
  readonly method: string | undefined;
}

/** A wildcard segment: `*`, `*name`, `{*name}`. */
const WILDCARD = /^(?:\*(?:[A-Za-z_$][\w$]*)?|\{\*[A-Za-z_$][\w$]*\})$/;
/** A parameter segment: `:name`. */
const PARAMETER = /^:[A-Za-z_$][\w$]*$/;
/** What a literal segment may not hold: pattern syntax this matcher does not understand. */
const UNSUPPORTED = /[()[\]{}*?+:!\\]/;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

type Fail = (option: string, value: unknown, expected: string) => never;

const PATH_EXPECTED =
  'a path such as "health", "users/:id" or "metrics/*" (":name" for one segment, "*" as the last segment ' +
  'for the rest)';

function compilePath(where: string, path: unknown, fail: Fail): RegExp {
  if (typeof path !== 'string' || path.trim() === '') fail(where, path, PATH_EXPECTED);
  const segments = path.split('/').filter((segment) => segment !== '');
  let source = '';
  for (const [index, segment] of segments.entries()) {
    if (WILDCARD.test(segment)) {
      if (index !== segments.length - 1) fail(where, path, `${PATH_EXPECTED}; "*" only as the last segment`);
      return new RegExp(`^${source}(?:/.*)?/?$`, 'i');
    }
    if (PARAMETER.test(segment)) source += '/[^/]+';
    else if (UNSUPPORTED.test(segment)) fail(where, path, PATH_EXPECTED);
    else source += `/${escapeRegExp(segment)}`;
  }
  return new RegExp(`^${source === '' ? '/?' : `${source}/?`}$`, 'i');
}

function compileMethod(where: string, method: unknown, fail: Fail): string | undefined {
  if (method === undefined) return undefined;
  const name =
    typeof method === 'number'
      ? RequestMethod[method]
      : typeof method === 'string'
        ? method.toUpperCase()
        : '';
  if (name === undefined || !Object.hasOwn(RequestMethod, name) || /^\d/.test(name)) {
    fail(where, method, 'a RequestMethod, or a method name such as "GET"');
  }
  return name === 'ALL' ? undefined : name;
}

/**
 * Validates and compiles the `exclude` option; a wrong entry fails with an error naming it (`exclude[1].path`).
 * @internal
 */
export function compileExclusions(value: unknown, fail: Fail): CompiledExclusion[] {
  if (!Array.isArray(value)) fail('exclude', value, 'an array of paths or { path, method } objects');
  return (value as unknown[]).map((entry, index) => {
    const where = `exclude[${index}]`;
    if (typeof entry === 'string') return { pattern: compilePath(where, entry, fail), method: undefined };
    if (typeof entry !== 'object' || entry === null)
      fail(where, entry, 'a path or a { path, method } object');
    const { path, method, ...rest } = entry as RouteExclusion;
    const unknown = Object.keys(rest)[0];
    if (unknown !== undefined)
      fail(`${where}.${unknown}`, rest[unknown as never], 'no such field (path, method)');
    return {
      pattern: compilePath(`${where}.path`, path, fail),
      method: compileMethod(`${where}.method`, method, fail),
    };
  });
}

/** Marks a Fastify route's config: its handler is `@SkipCancellation()`. */
const SKIPPED_ROUTE = Symbol('nestjs-cancellation.skipped-route');

/** The path of a request URL, without its query string. */
function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/**
 * Which requests are left out of cancellation: those whose path matches the `exclude` option, and those a
 * route marked `@SkipCancellation()` will handle. The first is known from the URL alone; the second, before
 * routing, from the route the platform would pick (Fastify has routed by `onRequest`; on Express the
 * application's route layers are asked, only while the application drains).
 * @internal
 */
export class RouteExclusions {
  /** The Express route layers in the order Express tries them, learned once the routes exist. */
  private expressRoutes: readonly ExpressRouteLayer[] | undefined = undefined;

  constructor(private readonly exclusions: readonly CompiledExclusion[]) {}

  /** Whether there are path exclusions at all (a request is then matched against them). */
  get hasPatterns(): boolean {
    return this.exclusions.length > 0;
  }

  /** Whether the `exclude` option covers this request. */
  matchesPath(request: { url?: string; method?: string }): boolean {
    if (this.exclusions.length === 0) return false;
    const path = pathOf(request.url ?? '/');
    const method = request.method ?? 'GET';
    for (const exclusion of this.exclusions) {
      if (!exclusion.pattern.test(path)) continue;
      const wanted = exclusion.method;
      if (wanted === undefined || wanted === method || (wanted === 'GET' && method === 'HEAD')) return true;
    }
    return false;
  }

  /**
   * Fastify: marks, as Fastify registers them, the routes whose handler is `@SkipCancellation()` (Nest copies
   * a method's metadata onto the handler it registers; Fastify keeps only a bound copy of it).
   */
  onFastifyRoute(route: { handler?: unknown; config?: object }): void {
    if (isSkipped(route.handler)) route.config = { ...route.config, [SKIPPED_ROUTE]: true };
  }

  /** Fastify: whether the route the request was routed to is marked `@SkipCancellation()`. */
  skipsFastifyRoute(request: { routeOptions?: { config?: object } }): boolean {
    return (
      (request.routeOptions?.config as { [SKIPPED_ROUTE]?: boolean } | undefined)?.[SKIPPED_ROUTE] === true
    );
  }

  /**
   * Express: whether the route Express will pick for this request is marked `@SkipCancellation()`. The
   * application's route layers are read the first time (routes exist by then: this runs while draining).
   */
  skipsExpressRoute(request: IncomingMessage, app: () => unknown): boolean {
    const routes = (this.expressRoutes ??= skippableRoutes(app()));
    if (routes.length === 0) return false;
    const path = pathOf(request.url ?? '/');
    const method = (request.method ?? 'GET').toLowerCase();
    for (const layer of routes) {
      const route = layer.route!;
      if (!layer.match(path) || !route._handlesMethod(method)) continue;
      return route.stack.some((handler) => isSkipped(handler.handle));
    }
    return false;
  }
}

/** The route layers of an Express application, in order, or none when no route is skipped. */
function skippableRoutes(app: unknown): ExpressRouteLayer[] {
  const express = app as { router?: ExpressRouter; _router?: ExpressRouter } | undefined;
  const routes = ((express?.router ?? express?._router)?.stack ?? []).filter(
    (layer) => layer.route !== undefined,
  );
  return routes.some((layer) => layer.route!.stack.some((handler) => isSkipped(handler.handle)))
    ? routes
    : [];
}

function isSkipped(handler: unknown): boolean {
  return typeof handler === 'function' && Reflect.getMetadata(SKIP_CANCELLATION_METADATA, handler) === true;
}

/** The parts of Express 5's router (the `router` package) the lookup uses. */
interface ExpressRouter {
  stack: ExpressRouteLayer[];
}

interface ExpressRouteLayer {
  route?: { stack: { handle: unknown }[]; _handlesMethod(method: string): boolean };
  match(path: string): boolean;
}
