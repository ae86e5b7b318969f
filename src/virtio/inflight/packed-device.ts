/**
 * The packed-ring device half with inflight I/O tracking (vhost-user.rst
 * "Inflight I/O tracking", packed format; see region.ts): every chain it
 * pops has its descriptors copied into entries of the free list (the head
 * entry flagged in flight) before the caller sees it; publish() returns the
 * batch's entries to the free list and moves used_idx before the ring's
 * used flags are written, and settles (inflight = 0, old_* = current) after.
 *
 * A separate class, picked once by ring.ts when the front-end negotiated
 * VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD and sent an inflight fd: without it
 * the worker's hot loop only ever sees {@link PackedDeviceQueue}, unchanged.
 */
import type { DescChain } from '../chain.js';
import { InflightError } from './region.js';
import type { GuestMemory } from '../memory.js';
import { PackedDeviceQueue } from '../packed/device.js';
import { POS_MASK, WRAP_SHIFT } from '../packed/layout.js';
import type { QueueLayout, QueueOptions } from '../queue.js';
import { InflightPackedRegion, type InflightSlot } from './region.js';
import type { InflightRestore, InflightMode } from './restore.js';

const TWO32 = 4294967296;

export class InflightPackedDeviceQueue extends PackedDeviceQueue {
  readonly region: InflightPackedRegion;
  /** Head entry of the chain in flight with each Buffer ID. */
  private readonly idEntry: Int32Array;
  /** Per ring position where a chain was popped: its head entry (-1: not recorded), its slots, free_head before it. */
  private readonly entAt: Int32Array;
  private readonly slotsAt: Uint16Array;
  private readonly freeAt: Uint16Array;
  /** Head entries of the chains pushed used since the last publish. */
  private readonly batchEntries: Int32Array;
  private batchN = 0;
  private readonly scratch: Int32Array;

  /** @throws what PackedDeviceQueue throws; InflightError when the ring does not fit the slot. */
  constructor(mem: GuestMemory, layout: QueueLayout, opts: QueueOptions, slot: InflightSlot) {
    super(mem, layout, opts);
    const size = layout.size;
    this.region = new InflightPackedRegion(slot, size);
    this.idEntry = new Int32Array(size);
    this.entAt = new Int32Array(size).fill(-1);
    this.slotsAt = new Uint16Array(size);
    this.freeAt = new Uint16Array(size);
    this.batchEntries = new Int32Array(size);
    this.scratch = new Int32Array(size);
  }

  /** Copy the `slots` ring descriptors of the chain popped at `start` into the region. */
  private record(start: number, slots: number, id: number): void {
    const r = this.region, d = this.desc, size = this.size;
    this.freeAt[start] = r.free;
    let pos = start, head = 0;
    for (let k = 0; k < slots; k++) {
      const w = this.descW + pos * 4;
      const w3 = d[w + 3];
      head = r.takeDesc(k, k === slots - 1, (d[w + 1] >>> 0) * TWO32 + (d[w] >>> 0), d[w + 2] >>> 0, w3 & 0xffff, w3 >>> 16);
      if (++pos === size) pos = 0;
    }
    this.entAt[start] = head;
    this.slotsAt[start] = slots;
    this.idEntry[id] = head;
  }

  override pop(chain: DescChain): void {
    const start = this.availPos;
    try {
      super.pop(chain);
    } catch (e) {
      // Consumed and not in flight (the queue is faulted): rewind() steps over it.
      this.entAt[start] = -1;
      this.slotsAt[start] = (this.availPos - start + this.size) % this.size || this.size;
      throw e;
    }
    this.record(start, chain.descs, chain.id);
  }

  override popSingle(write: number, minLen: number): number {
    const start = this.availPos;
    const r = super.popSingle(write, minLen);
    if (r >= 0) this.record(start, 1, this.singleId);
    return r;
  }

  override rewind(m: number): void {
    const size = this.size;
    const mpos = m & POS_MASK;
    let dist = this.availPos - mpos;
    if (((m >>> WRAP_SHIFT) & 1) !== this.availWrap) dist += size;
    if (mpos < size && dist > 0 && dist <= size) {
      let n = 0, p = mpos, free = -1;
      while (dist > 0) {
        const s = this.slotsAt[p];
        if (s === 0) break;
        const e = this.entAt[p];
        if (e >= 0) {
          if (free < 0) free = this.freeAt[p];
          this.scratch[n++] = e;
        }
        dist -= s;
        p += s;
        if (p >= size) p -= size;
      }
      if (free >= 0) this.region.untake(free, this.scratch, n);
    }
    super.rewind(m);
  }

  override pushUsed(id: number, len: number, descs: number): void {
    super.pushUsed(id, len, descs); // checks id and descs
    this.batchEntries[this.batchN++] = this.idEntry[id];
  }

  override publish(): boolean {
    const n = this.batchN;
    if (n === 0) return super.publish();
    const r = this.region, b = this.batchEntries;
    for (let i = 0; i < n; i++) r.ret(b[i]);
    r.advance(this.usedPos, this.usedWrap);
    const notify = super.publish(); // the batch's first used descriptor written last (release)
    r.settle(b, n);
    this.batchN = 0;
    return notify;
  }

  override setState(s: { avail: number; used: number }): void {
    super.setState(s);
    this.batchN = 0;
  }

  /**
   * Start on this region (the ring's positions already set from
   * SET_VRING_BASE). A region never used (version 0) is laid out at the
   * ring's used position. A used one is recovered ("When reconnecting",
   * {@link InflightPackedRegion.recover}); the used position is the
   * region's, and the chains in flight, oldest first:
   * - `complete`: the device's read position goes past them and they are
   *   pushed used with len 0 and published (a transmitq's frames are not
   *   sent a second time);
   * - `requeue`: their descriptors are written back into the ring from the
   *   region's copies (used descriptors written there but never published
   *   may have replaced them) and the read position goes back to the used
   *   position, so they are popped again (a receiveq: the driver has not
   *   seen them filled).
   * Both rely on the device using a queue's chains in the order it popped
   * them (NetDevicePair does) and giving back the newest first (rewind), so
   * the chains in flight take the ring slots from the used position on.
   * Then the region is laid out afresh. Returns what was done.
   * @throws InflightError INFLIGHT_CORRUPT for a region this ring cannot have written.
   */
  restoreInflight(mode: InflightMode): InflightRestore {
    const r = this.region, size = this.size;
    if (r.version === 0) {
      r.init(this.usedPos, this.usedWrap);
      return { fresh: true, chains: 0, notify: false };
    }
    const d = this.desc, w3 = this.descW + 3;
    const chains = r.recover((pos) => d[w3 + pos * 4] >>> 16);
    const used = r.usedIdx, wrap = r.usedWrap & 1;
    let notify = false;
    if (mode === 'complete') {
      let slots = 0;
      for (const c of chains) slots += c.num;
      if (slots > size) throw new InflightError('INFLIGHT_CORRUPT', `${chains.length} chains in flight take ${slots} descriptors of a ${size}-entry ring`);
      let avail = used + slots, aw = wrap;
      if (avail >= size) { avail -= size; aw ^= 1; }
      this.setState({ avail: avail | (aw << WRAP_SHIFT), used: used | (wrap << WRAP_SHIFT) });
      for (const c of chains) {
        this.idEntry[c.id] = c.entry;
        this.pushUsed(c.id, 0, c.num);
      }
      notify = this.publish();
    } else {
      // The chains' ring slots may hold used descriptors written but never published: put the
      // descriptors the driver made available back (from the region's copies), then pop them again.
      let pos = used;
      for (const c of chains) {
        let e = c.entry;
        for (let k = 0; k < c.num; k++) {
          if (e >= size) throw new InflightError('INFLIGHT_CORRUPT', `inflight chain at entry ${c.entry} reaches entry ${e} >= ${size}`);
          const w = this.descW + pos * 4, a = r.descAddr(e);
          d[w] = a >>> 0;
          d[w + 1] = (a / TWO32) >>> 0;
          d[w + 2] = r.descLen(e);
          Atomics.store(d, w + 3, r.descIdFlags(e));
          e = r.nextOf(e);
          if (++pos === size) pos = 0;
        }
      }
      this.setState({ avail: used | (wrap << WRAP_SHIFT), used: used | (wrap << WRAP_SHIFT) });
    }
    r.init(this.usedPos, this.usedWrap);
    this.entAt.fill(-1);
    this.slotsAt.fill(0);
    return { fresh: false, chains: chains.length, notify };
  }
}
