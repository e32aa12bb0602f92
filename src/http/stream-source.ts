/**
 * The source of a streamed response body: what must be destroyed when the response cannot be finished.
 * @internal
 */
export interface StreamSource {
  destroy(error?: Error): unknown;
}

/**
 * The stream a handler's result sends as the body: a `StreamableFile`'s (recognised by its shape, not by
 * `instanceof`, which two copies of `@nestjs/common` would defeat), or a Readable (Fastify sends those).
 * @internal
 */
export function streamSource(value: unknown): StreamSource | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const candidate = value as { getStream?: unknown; pipe?: unknown; destroy?: unknown };
  if (typeof candidate.getStream === 'function') {
    const stream = (candidate.getStream as () => Partial<StreamSource> | undefined).call(value);
    return typeof stream?.destroy === 'function' ? (stream as StreamSource) : undefined;
  }
  return typeof candidate.pipe === 'function' && typeof candidate.destroy === 'function'
    ? (value as StreamSource)
    : undefined;
}
