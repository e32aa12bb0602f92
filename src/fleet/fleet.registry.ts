import { Inject, Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { InFlightRequest } from '../registry/cancellation-events.types.js';
import type { FleetLike } from '../registry/fleet-registry.token.js';
import { FleetUnavailableError } from './fleet-unavailable.error.js';
import { FleetMember } from './fleet-member.js';
import type { CancelAck, CancelMessage, InstanceSnapshot } from './fleet-member.js';

/** Work in flight somewhere in the fleet, as `FleetRegistry.inFlight()` lists it. */
export interface FleetWork extends InFlightRequest {
  /** The instance that runs it. */
  readonly instanceId: string;
}

/** What `FleetRegistry.cancel()` found. */
export interface FleetCancelResult {
  /** How much work was cancelled, over all instances. */
  readonly cancelled: number;
  /** The instances that answered in time, each with how much it cancelled (0 when it had none). */
  readonly instances: ReadonlyArray<{ readonly instanceId: string; readonly cancelled: number }>;
}

const MAX_CANCEL_MESSAGE_LENGTH = 500;

/**
 * The fleet's registry, for operators: what every live instance of the application has in flight (requests
 * and jobs, each with its instance's id) and cancel by id wherever the work runs, over the Redis of
 * `CancellationFleetModule`. Every call is bounded by `timeoutMs` and fails with a `FleetUnavailableError`
 * when Redis cannot be reached; `CancellationRegistry` keeps working locally.
 *
 * @example
 * ```ts
 * const stuck = (await this.fleet.inFlight()).filter((work) => work.elapsedMs > 60_000);
 * for (const work of stuck) await this.fleet.cancel(work.id, 'Cancelled by an operator');
 * ```
 */
@Injectable()
export class FleetRegistry implements FleetLike {
  constructor(@Inject(FleetMember) private readonly member: FleetMember) {}

  /** This instance's id in the fleet. */
  get instanceId(): string {
    return this.member.options.instanceId;
  }

  /**
   * The live instances (their lease not expired), each with how much it has in flight and when it last
   * published (epoch ms).
   */
  async instances(): Promise<
    Array<{ readonly instanceId: string; readonly inFlight: number; readonly at: number }>
  > {
    const snapshots = await this.snapshots('instances');
    return snapshots
      .map(({ instanceId, at, work }) => ({ instanceId, at, inFlight: work.length }))
      .sort((a, b) => a.instanceId.localeCompare(b.instanceId));
  }

  /**
   * The work in flight on every live instance (an instance that died drops out within `leaseMs`), oldest
   * first. Other instances' entries are as they published them: at most a second old.
   */
  async inFlight(): Promise<FleetWork[]> {
    const own = this.instanceId;
    const work: FleetWork[] = [];
    for (const snapshot of await this.snapshots('inFlight')) {
      if (snapshot.instanceId === own) continue;
      for (const entry of snapshot.work) work.push({ ...entry, instanceId: snapshot.instanceId });
    }
    for (const entry of this.member.localWork()) work.push({ ...entry, instanceId: own });
    return work.sort((a, b) => a.startedAt - b.startedAt);
  }

  /** What every live instance last published. */
  private async snapshots(operation: string): Promise<InstanceSnapshot[]> {
    const { member } = this;
    const snapshots: InstanceSnapshot[] = [];
    try {
      const pattern = `${member.key('instance', '')}*`;
      let cursor = '0';
      do {
        const [next, keys] = await member.commands.scan(cursor, 'MATCH', pattern, 'COUNT', 200);
        cursor = next;
        const values = keys.length === 0 ? [] : await member.commands.mget(...keys);
        for (const value of values) if (value) snapshots.push(JSON.parse(value) as InstanceSnapshot);
      } while (cursor !== '0');
    } catch (err) {
      throw new FleetUnavailableError(operation, err);
    }
    return snapshots;
  }

  /**
   * Cancels the work with this id on whichever instance runs it (`kind: 'manual'`; an HTTP client is answered
   * 503 with `message`, a job fails without retry). Resolves once every listening instance has answered, or
   * after `timeoutMs`. A cancel for work that has not registered yet is kept for `pendingCancelMs`: it cancels
   * the work when it starts.
   *
   * @param id an id from `inFlight()` (a request id, or `<queue>:<job id>`)
   * @param message why, for the client's 503 body, the job's failure and the logs (at most 500 characters)
   */
  async cancel(id: string, message = 'The work was cancelled by an operator'): Promise<FleetCancelResult> {
    if (typeof id !== 'string' || id === '')
      throw new TypeError('nestjs-cancellation: cancel(id) takes a string id');
    if (typeof message !== 'string' || message.length > MAX_CANCEL_MESSAGE_LENGTH) {
      throw new TypeError(
        `nestjs-cancellation: cancel(id, message): the message must be a string of at most ${MAX_CANCEL_MESSAGE_LENGTH} characters`,
      );
    }
    const { member } = this;
    const { pendingCancelMs, timeoutMs } = member.options;
    const nonce = randomUUID();
    const cancel: CancelMessage = { id, message, from: this.instanceId, nonce };
    const acks: CancelAck[] = [];
    let receivers = Infinity;
    let done: () => void = () => undefined;
    const answered = new Promise<void>((resolve) => (done = resolve));
    const stop = member.onAck(nonce, (ack) => {
      acks.push(ack);
      if (acks.length >= receivers) done();
    });
    try {
      const replies = await member.commands
        .multi()
        .set(
          member.key('cancel', id),
          JSON.stringify({ message, until: Date.now() + pendingCancelMs }),
          'PX',
          pendingCancelMs,
        )
        .publish(member.cancelChannel, JSON.stringify(cancel))
        .exec();
      const published = replies?.[1];
      if (!published || published[0]) throw published?.[0] ?? new Error('the transaction was discarded');
      receivers = Number(published[1]);
      if (acks.length >= receivers) done();
      const timer = setTimeout(done, timeoutMs);
      await answered;
      clearTimeout(timer);
    } catch (err) {
      throw new FleetUnavailableError('cancel', err);
    } finally {
      stop();
    }
    const cancelled = acks.reduce((sum, ack) => sum + ack.cancelled, 0);
    if (cancelled > 0) await this.forget(cancel);
    return {
      cancelled,
      instances: acks.map(({ instanceId, cancelled: count }) => ({ instanceId, cancelled: count })),
    };
  }

  /** The work was found: the cancel waits for nothing any more (best effort). */
  private async forget(cancel: CancelMessage): Promise<void> {
    const { member } = this;
    await member.commands
      .multi()
      .del(member.key('cancel', cancel.id))
      .publish(member.cancelChannel, JSON.stringify({ ...cancel, done: true }))
      .exec()
      .catch(() => undefined);
  }
}
