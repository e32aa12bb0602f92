/**
 * PostgreSQL's out-of-band cancel: a `CancelRequest` sent on a connection of its own with the backend's key,
 * and the wait for the query to confirm that it stopped.
 * @internal
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';

/** The `CancelRequest` message of the PostgreSQL protocol (1234 in the high 16 bits, 5678 in the low). */
const CANCEL_REQUEST_CODE = 80877102;
/** SQLSTATE of "canceling statement due to user request" (and of `statement_timeout`). */
const QUERY_CANCELED = '57014';
/**
 * How long a cancelled query may take to confirm that it stopped (its error `57014` arriving, and the server
 * closing the cancel connection) before the promise rejects anyway and a pooled connection is destroyed.
 * On a working server it takes a few milliseconds.
 */
export const CANCEL_CONFIRM_TIMEOUT_MS = 1_000;

interface BackendKey {
  readonly host: string | undefined;
  readonly port: number;
  readonly processID: number;
  readonly secretKey: number | Uint8Array;
}

/**
 * Sends the cancel request and resolves `true` once the query has ended with `57014` and the server has closed
 * the cancel connection (it closes it after signalling the backend, so no cancel is still on its way), `false`
 * when the query ended some other way or the cancel request failed.
 */
export async function cancelAndConfirm(client: object, running: Promise<unknown>): Promise<boolean> {
  const [sent, cancelled] = await Promise.all([
    // (async: a client without a backend key yet (still connecting) fails here, as a rejection)
    (async () => sendCancelRequest(backendKeyOf(client)))().then(
      () => true,
      () => false,
    ),
    running.then(
      () => false,
      (err: unknown) => (err as { code?: unknown } | null)?.code === QUERY_CANCELED,
    ),
  ]);
  return sent && cancelled;
}

function backendKeyOf(client: object): BackendKey {
  const { host, port, processID, secretKey } = client as Partial<Record<keyof BackendKey, unknown>>;
  if (
    typeof processID !== 'number' ||
    (typeof secretKey !== 'number' && !(secretKey instanceof Uint8Array)) ||
    typeof port !== 'number'
  ) {
    throw new TypeError(
      'queryWithSignal: the client has no backend key (is it connected, and the pure-JavaScript pg client?)',
    );
  }
  return { host: typeof host === 'string' ? host : undefined, port, processID, secretKey };
}

/** Opens a connection to the backend's server, sends `CancelRequest`, and resolves when the server closes it. */
function sendCancelRequest(key: BackendKey): Promise<void> {
  const secret = typeof key.secretKey === 'number' ? int32(key.secretKey) : Buffer.from(key.secretKey);
  const packet = Buffer.concat([
    int32(12 + secret.length),
    int32(CANCEL_REQUEST_CODE),
    int32(key.processID),
    secret,
  ]);
  return new Promise((resolve, reject) => {
    const socket: Socket = key.host?.startsWith('/')
      ? connect(`${key.host}/.s.PGSQL.${key.port}`)
      : connect(key.port, key.host);
    socket.setTimeout(CANCEL_CONFIRM_TIMEOUT_MS, () => socket.destroy(new Error('cancel request timed out')));
    socket.once('connect', () => socket.end(packet));
    socket.once('error', reject);
    socket.once('close', (hadError) => {
      if (!hadError) resolve();
    });
    socket.resume(); // the server answers nothing; just wait for it to close
  });
}

function int32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeInt32BE(value | 0); // `| 0`: an unsigned 32-bit key is written as the same four bytes
  return buffer;
}
