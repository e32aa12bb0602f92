/**
 * A fleet call (`FleetRegistry.inFlight()`, `FleetRegistry.cancel()`) could not reach the fleet's Redis in
 * time. Local cancellation (`CancellationRegistry`) does not depend on Redis and keeps working.
 */
export class FleetUnavailableError extends Error {
  /** Always `'FleetUnavailableError'`. */
  override readonly name = 'FleetUnavailableError';

  /**
   * @param operation what was tried (`'inFlight'`, `'cancel'`)
   * @param cause the Redis client's error
   */
  constructor(operation: string, cause: unknown) {
    super(
      `nestjs-cancellation: the fleet's Redis is unreachable, ${operation}() failed` +
        ` (${cause instanceof Error ? cause.message : String(cause)}); local cancellation still works`,
      { cause },
    );
  }
}
