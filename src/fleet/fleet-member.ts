import { Inject, Injectable, Logger } from '@nestjs/common';
import type { OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { CancellationRuntime } from '../module/cancellation-runtime.js';
import type { InFlightRequest } from '../registry/cancellation-events.types.js';
import type { TrackedWork } from '../registry/tracked-work.js';
import { fleetClient } from './fleet-connection.js';
import { FLEET_OPTIONS } from './fleet.options.js';
import type { ResolvedFleetOptions } from './fleet.options.js';

/** A cancel as it travels on the fleet's channel. @internal */
export interface CancelMessage {
  readonly id: string;
  readonly message: string;
  /** The instance that sent it, which collects the answers. */
  readonly from: string;
  readonly nonce: string;
  /** Set on the second message of a cancel that found its work: forget the waiting cancel. */
  readonly done?: boolean;
}

/** An instance's answer to a cancel. @internal */
export interface CancelAck {
  readonly nonce: string;
  readonly instanceId: string;
  readonly cancelled: number;
}

/** What an instance publishes under its lease key. @internal */
export interface InstanceSnapshot {
  readonly instanceId: string;
  readonly at: number;
  readonly work: InFlightRequest[];
}

/**
 * This instance's membership of the fleet: it publishes what it has in flight under a key that expires after
 * `leaseMs` (renewed every third of it, at least every second, and 50 ms after new work starts; deleted at
 * shutdown), listens for cancels on the fleet's channel and
 * answers each, and remembers a cancel for work it does not have yet, so that the work is cancelled as soon
 * as it registers (also cancels kept in Redis, read when it connects, for those it missed).
 * @internal
 */
@Injectable()
export class FleetMember implements OnApplicationBootstrap, OnApplicationShutdown {
  readonly commands: Redis;
  private readonly subscriber: Redis;
  private readonly logger = new Logger('CancellationFleet');
  /** Cancels waiting for their work: id -> message and expiry (epoch ms). */
  private readonly waiting = new Map<string, { message: string; until: number }>();
  private readonly ackListeners = new Map<string, (ack: CancelAck) => void>();
  private heartbeat: NodeJS.Timeout | undefined = undefined;
  private soon: NodeJS.Timeout | undefined = undefined;

  constructor(
    @Inject(FLEET_OPTIONS) readonly options: ResolvedFleetOptions,
    @Inject(CancellationRuntime) private readonly runtime: CancellationRuntime,
  ) {
    this.commands = fleetClient(options, 'commands');
    this.subscriber = fleetClient(options, 'subscriber');
  }

  /** Key and channel names. */
  key(kind: 'instance' | 'cancel', name: string): string {
    return `${this.options.prefix}:${kind}:${name}`;
  }

  get cancelChannel(): string {
    return `${this.options.prefix}:cancels`;
  }

  ackChannel(instanceId: string): string {
    return `${this.options.prefix}:acks:${instanceId}`;
  }

  /** Connects (without waiting: the application starts whether or not Redis is there), subscribes, publishes. */
  onApplicationBootstrap(): void {
    const { subscriber, commands, options } = this;
    subscriber.on('message', (channel: string, raw: string) => this.received(channel, raw));
    commands.on('ready', () => {
      void this.publish();
      void this.loadWaitingCancels();
    });
    subscriber.connect().catch(() => undefined);
    commands.connect().catch(() => undefined);
    subscriber.subscribe(this.cancelChannel, this.ackChannel(options.instanceId)).catch(() => undefined);
    this.runtime.registry.whenTracked((work) => this.tracked(work));
    // Renewed at least every second, so that the listing is never more than a second old; new work is
    // published within 50 ms.
    const every = Math.max(50, Math.min(1_000, Math.floor(options.leaseMs / 3)));
    this.heartbeat = setInterval(() => void this.publish(), every);
    this.heartbeat.unref();
  }

  /** Says goodbye (deletes its lease key) and disconnects. */
  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.heartbeat);
    clearTimeout(this.soon);
    this.runtime.registry.whenTracked(undefined);
    if (this.commands.status === 'ready') {
      await this.commands.del(this.key('instance', this.options.instanceId)).catch(() => undefined);
    }
    this.subscriber.disconnect();
    this.commands.disconnect();
  }

  /** Calls `listener` with each answer to the cancel `nonce` until the returned function is called. */
  onAck(nonce: string, listener: (ack: CancelAck) => void): () => void {
    this.ackListeners.set(nonce, listener);
    return () => this.ackListeners.delete(nonce);
  }

  /** Cancels the local work with this id; remembers the cancel when there is none. Returns how many. */
  cancelLocally(id: string, message: string): number {
    const cancelled = this.runtime.registry.cancelById(id, message);
    if (cancelled === 0) this.remember(id, message, Date.now() + this.options.pendingCancelMs);
    return cancelled;
  }

  /** What this instance has in flight now. */
  localWork(): InFlightRequest[] {
    return this.runtime.registry.list();
  }

  /** Publishes what this instance has in flight under its lease key. */
  async publish(): Promise<void> {
    if (this.commands.status !== 'ready') return;
    const { instanceId, leaseMs } = this.options;
    const snapshot: InstanceSnapshot = { instanceId, at: Date.now(), work: this.localWork() };
    await this.commands
      .set(this.key('instance', instanceId), JSON.stringify(snapshot), 'PX', leaseMs)
      .catch(() => undefined);
  }

  private received(channel: string, raw: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      return;
    }
    if (channel !== this.cancelChannel) {
      const ack = parsed as CancelAck;
      this.ackListeners.get(ack.nonce)?.(ack);
      return;
    }
    const cancel = parsed as CancelMessage;
    if (typeof cancel.id !== 'string' || typeof cancel.message !== 'string') return;
    if (cancel.done) {
      this.waiting.delete(cancel.id);
      return;
    }
    const cancelled = this.cancelLocally(cancel.id, cancel.message);
    const ack: CancelAck = { nonce: cancel.nonce, instanceId: this.options.instanceId, cancelled };
    this.commands.publish(this.ackChannel(cancel.from), JSON.stringify(ack)).catch(() => undefined);
  }

  private remember(id: string, message: string, until: number): void {
    const now = Date.now();
    if (this.waiting.size >= 1_000) {
      for (const [key, entry] of this.waiting) if (entry.until <= now) this.waiting.delete(key);
    }
    if (until > now) this.waiting.set(id, { message, until });
  }

  /** New work: published within 50 ms; a cancel that came first cancels it (once its scope has started). */
  private tracked(work: TrackedWork): void {
    if (this.soon === undefined) {
      this.soon = setTimeout(() => {
        this.soon = undefined;
        void this.publish();
      }, 50);
      this.soon.unref();
    }
    if (this.waiting.size === 0) return;
    const entry = this.waiting.get(work.id);
    if (entry === undefined) return;
    this.waiting.delete(work.id);
    if (entry.until < Date.now()) return;
    queueMicrotask(() => this.runtime.registry.cancelById(work.id, entry.message));
  }

  /** Reads the cancels kept in Redis (sent while this instance was not listening). */
  private async loadWaitingCancels(): Promise<void> {
    const pattern = `${this.key('cancel', '')}*`;
    try {
      let cursor = '0';
      do {
        const [next, keys] = await this.commands.scan(cursor, 'MATCH', pattern, 'COUNT', 200);
        cursor = next;
        const values = keys.length === 0 ? [] : await this.commands.mget(...keys);
        keys.forEach((key, index) => {
          const value = values[index];
          if (value === null || value === undefined) return;
          const { message, until } = JSON.parse(value) as { message: string; until: number };
          const id = key.slice(pattern.length - 1);
          if (this.runtime.registry.cancelById(id, message) === 0) this.remember(id, message, until);
        });
      } while (cursor !== '0');
    } catch (err) {
      this.logger.warn(`Could not read the fleet's waiting cancels: ${String(err)}`);
    }
  }
}
