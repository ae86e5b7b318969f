/**
 * The split-ring device half with inflight I/O tracking (vhost-user.rst
 * "Inflight I/O tracking", split format; see region.ts): every chain it
 * pops is recorded (counter, inflight = 1) before the caller sees it, every
 * chain it pushes used is linked into the last batch, and publish() settles
 * the batch after used->idx is stored, in the spec's order.
 *
 * A separate class, picked once by ring.ts when the front-end negotiated
 * VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD and sent an inflight fd: without it
 * the worker's hot loop only ever sees {@link SplitDeviceQueue}, unchanged.
 * (--strict's extra checks are not combined with tracking.)
 */
import type { DescChain } from '../chain.js';
import type { GuestMemory } from '../memory.js';
import { SplitDeviceQueue, type SplitQueueOptions } from '../split/device.js';
import { SplitRingViews } from '../split/views.js';
import type { SplitQueueLayout } from '../split/layout.js';
import { InflightSplitRegion, type InflightSlot } from './region.js';
import type { InflightRestore } from './restore.js';

export class InflightSplitDeviceQueue extends SplitDeviceQueue {
  readonly region: InflightSplitRegion;
  private readonly usedIdxView: Uint16Array;
  private readonly usedIdxAt: number;
  /** Entries pushed since the last publish (the batch size). */
  private batch = 0;

  /** @throws what SplitDeviceQueue throws; InflightError when the ring does not fit the slot. */
  constructor(mem: GuestMemory, layout: SplitQueueLayout, opts: SplitQueueOptions, slot: InflightSlot) {
    super(mem, layout, opts);
    this.region = new InflightSplitRegion(slot, layout.size);
    const v = new SplitRingViews(mem, layout, false);
    this.usedIdxView = v.used16;
    this.usedIdxAt = v.usedH + 1;
  }

  override pop(chain: DescChain): void {
    super.pop(chain);
    this.region.take(chain.id);
  }

  override popSingle(write: number, minLen: number): number {
    const r = super.popSingle(write, minLen);
    if (r >= 0) this.region.take(this.singleId);
    return r;
  }

  override rewind(m: number): void {
    // Newest first: a crash part-way leaves the older ones in flight, still a run from used->idx on.
    const mask = this.size - 1, from = m & 0xffff;
    for (let i = this.lastAvailIdx; i !== from;) {
      i = (i - 1) & 0xffff;
      this.region.release(this.avail[this.availH + 2 + (i & mask)]);
    }
    super.rewind(m);
  }

  override pushUsed(head: number, len: number, descs = 1): void {
    this.region.link(head);
    this.batch++;
    super.pushUsed(head, len, descs);
  }

  override publish(): boolean {
    const n = this.batch;
    if (n === 0) return super.publish();
    const notify = super.publish(); // used->idx stored (release)
    this.batch = 0;
    this.region.settle(n, this.usedIdx);
    return notify;
  }

  override setBase(lastAvailIdx: number, usedIdx = lastAvailIdx): void {
    super.setBase(lastAvailIdx, usedIdx);
    this.batch = 0;
  }

  /**
   * Start on this region (the ring's positions already set from
   * SET_VRING_BASE). A region never used (version 0) is laid out with
   * used_idx = the used ring's idx. A used one is recovered ("When
   * reconnecting"): the last batch settled against used->idx, then
   * last_avail_idx = used->idx + the chains in flight, as libvhost-user
   * does (each chain popped is either in flight or counted in used->idx;
   * SET_VRING_BASE's value is not needed), and the chains in flight, oldest
   * first:
   * - `complete`: pushed used with len 0 and published (a transmitq: the
   *   frame may or may not have left; it is not sent a second time);
   * - `requeue`: given back, last_avail_idx = used->idx, so they are popped
   *   again (a receiveq: nothing was returned to the driver yet). This
   *   relies on the device using a queue's chains in the order it popped
   *   them (NetDevicePair does), so the chains in flight are the available
   *   ring's entries from used->idx on.
   * Then the region is laid out afresh. Returns what was done.
   * @throws InflightError INFLIGHT_CORRUPT for a region this ring cannot have written.
   */
  restoreInflight(mode: 'complete' | 'requeue'): InflightRestore {
    const r = this.region;
    const used = Atomics.load(this.usedIdxView, this.usedIdxAt);
    if (r.version === 0) {
      r.init(used);
      return { fresh: true, chains: 0, notify: false };
    }
    const heads = r.recover(used);
    let notify = false;
    if (mode === 'complete') {
      this.setBase(used + heads.length, used);
      for (const h of heads) this.pushUsed(h, 0, 1);
      notify = this.publish();
    } else {
      this.setBase(used, used);
    }
    r.init(this.usedIdx);
    return { fresh: false, chains: heads.length, notify };
  }
}
