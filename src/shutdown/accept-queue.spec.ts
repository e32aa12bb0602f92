import { execFileSync } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { acceptQueueLength } from './accept-queue.js';

/** Opens `count` connections to `port` from another process, which exits once the kernel completed them all. */
function connectFromAnotherProcess(port: number, host: string, count: number): void {
  const script =
    `const net = require('node:net'); let open = 0;` +
    `for (let i = 0; i < ${count}; i++) net.connect(${port}, '${host}', () => { if (++open === ${count}) ` +
    `setTimeout(() => process.exit(0), 20); });`;
  // Synchronous: this process's event loop, and so the server, accepts nothing meanwhile.
  execFileSync(process.execPath, ['-e', script]);
}

let accepted = 0;

async function listening(host: string): Promise<net.Server> {
  const server = net.createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return server;
}

const onLinux = process.platform === 'linux' ? describe : describe.skip;

onLinux('acceptQueueLength (Linux)', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::', '::1'],
  ])('counts the connections queued and not yet accepted on %s', async (host, target) => {
    const server = await listening(host);
    try {
      const address = server.address() as AddressInfo;
      expect(acceptQueueLength(address)).toBe(0);
      connectFromAnotherProcess(address.port, target, 3);
      expect(acceptQueueLength(address)).toBe(3);
      // The event loop accepts them (Node accepts one connection a turn).
      const before = accepted;
      for (let turn = 0; turn < 20 && acceptQueueLength(address) !== 0; turn++) await nextTurn();
      expect(acceptQueueLength(address)).toBe(0);
      expect(accepted - before).toBe(3);
    } finally {
      server.close();
    }
  });

  it('is undefined for a port nothing listens on', async () => {
    const server = await listening('127.0.0.1');
    const address = server.address() as AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    expect(acceptQueueLength(address)).toBeUndefined();
  });
});

describe('acceptQueueLength elsewhere', () => {
  it('is undefined where there is no /proc to read', () => {
    const platform = Object.getOwnPropertyDescriptor(process, 'platform');
    Object.defineProperty(process, 'platform', { value: 'darwin' });
    try {
      expect(acceptQueueLength({ address: '127.0.0.1', family: 'IPv4', port: 80 })).toBeUndefined();
    } finally {
      Object.defineProperty(process, 'platform', platform!);
    }
  });
});
