import { closeSync, openSync, readSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

/** The state column of a listening socket in Linux's socket tables. */
const LISTEN = '0A';

/**
 * How many connections the kernel has completed on the listening socket at `address` that the server has not
 * accepted yet: its `rx_queue` in Linux's `/proc/net/tcp` (`tcp6` for an IPv6 or dual-stack address). Closing
 * the listener resets each of them. The kernel writes that table a few lines at a time, listening sockets
 * first, and reading stops at the socket's line: the count is at most a few lines' work old when it returns,
 * whatever else is open. `undefined` where the kernel does not tell (another system, no `/proc`, the socket not
 * listed).
 * @internal
 */
export function acceptQueueLength(address: AddressInfo): number | undefined {
  if (process.platform !== 'linux') return undefined;
  const table = address.family === 'IPv6' ? '/proc/net/tcp6' : '/proc/net/tcp';
  const port = `:${address.port.toString(16).toUpperCase().padStart(4, '0')}`;
  let fd: number;
  try {
    fd = openSync(table, 'r');
  } catch {
    return undefined;
  }
  try {
    const chunk = Buffer.alloc(4096);
    let partial = '';
    let header = true;
    for (;;) {
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) return undefined;
      const lines = (partial + chunk.toString('latin1', 0, read)).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (header) {
          header = false;
          continue;
        }
        // "sl local_address rem_address st tx_queue:rx_queue ...", addresses and counts in hexadecimal
        const [, local, , state, queues] = line.trim().split(/\s+/);
        if (state !== LISTEN) return undefined; // past the listening sockets
        if (local?.endsWith(port) !== true) continue;
        const queued = Number.parseInt(queues?.split(':')[1] ?? '', 16);
        return Number.isNaN(queued) ? undefined : queued;
      }
    }
  } finally {
    closeSync(fd);
  }
}
