/**
 * Device half of a split virtqueue (virtio spec v1.4 §2.7): reads the
 * available ring, walks descriptor chains, writes the used ring, and decides
 * when the driver needs a used-buffer notification (§2.7.7, §2.7.10).
 * Implements {@link DeviceQueue}. With VIRTIO_F_IN_ORDER (§2.7.9 "In-order
 * use of descriptors") a run of zero-length used entries (a transmitq's) is
 * written as one entry carrying the id of the run's last chain, in the slot
 * of its first, and used->idx advances by the run's length.
 *
 * Hot path rules: no allocation, no BigInt, monomorphic; ring fields are read
 * through typed-array views made once at construction. `avail->idx` is read
 * with Atomics.load (acquire) and `used->idx` written with Atomics.store
 * (release), the barriers §2.7.13 asks for.
 */
import type { DescChain } from '../chain.js';
import { DescriptorError } from '../errors.js';
import { IndirectTable } from '../indirect.js';
import type { GuestMemory } from '../memory.js';
import type { DeviceQueue, QueueState } from '../queue.js';
import { SplitRingViews } from './views.js';
import {
  checkLayout, needEvent,
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY, type SplitQueueLayout,
} from './layout.js';

export interface SplitQueueOptions {
  /** VIRTIO_F_EVENT_IDX negotiated: use used_event/avail_event instead of the flags. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** VIRTIO_F_IN_ORDER negotiated (default false). */
  inOrder?: boolean;
  /** Virtqueue index, for error reports. */
  index?: number;
}

const TWO32 = 4294967296;

export class SplitDeviceQueue implements DeviceQueue {
  readonly size: number;
  readonly index: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly inOrder: boolean;
  /** Next available-ring slot to read (u16, wraps at 65536). */
  lastAvailIdx = 0;
  /** avail->idx as {@link popSingle} last read it: it reloads only once the chains it announced are popped. */
  private shadowAvail = 0;
  /** Shadow of used->idx: entries written but maybe not yet published (u16). */
  usedIdx = 0;
  /** used->idx at the previous publish, for event-index decisions. */
  private publishedUsedIdx = 0;
  /** In-order: used index of the open run's first entry (-1: none), and its last chain's id and len. */
  private runStart = -1;
  private runId = 0;
  private runLen = 0;
  private readonly table: IndirectTable;
  private readonly mem: GuestMemory;
  /** Set by {@link popSingle}: the popped chain's id, and its one buffer's byte offset (in its region's buffer) and length. */
  singleId = 0;
  singleOff = 0;
  singleLen = 0;
  private readonly mask: number;
  // Descriptor table: Int32 view over its region's buffer, word index of entry 0.
  private readonly desc: Int32Array;
  private readonly descW: number;
  // Available ring: u16 view, index of `flags` (idx at +1, ring at +2, used_event at +2+size).
  protected readonly avail: Uint16Array;
  protected readonly availH: number;
  // Used ring: u16 view for flags/idx/avail_event, u32 view for the elements.
  private readonly used16: Uint16Array;
  private readonly usedH: number;
  private readonly used32: Uint32Array;
  private readonly usedElemW: number;

  /**
   * @throws QueueConfigError for a bad size or alignment; GuestMemoryError when
   * a ring part is not wholly inside one guest memory region.
   */
  constructor(mem: GuestMemory, layout: SplitQueueLayout, opts: SplitQueueOptions) {
    checkLayout(layout);
    this.size = layout.size;
    this.mask = layout.size - 1;
    this.index = opts.index ?? -1;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.inOrder = opts.inOrder ?? false;
    this.table = new IndirectTable(mem);
    this.mem = mem;
    const v = new SplitRingViews(mem, layout, false);
    this.desc = v.desc;
    this.descW = v.descW;
    this.avail = v.avail;
    this.availH = v.availH;
    this.used16 = v.used16;
    this.usedH = v.usedH;
    this.used32 = v.used32;
    this.usedElemW = v.usedElemW;
  }

  /** Restore ring positions (vhost-user SET_VRING_BASE; spec §2.7 "next index"). */
  setBase(lastAvailIdx: number, usedIdx = lastAvailIdx): void {
    this.lastAvailIdx = lastAvailIdx & 0xffff;
    this.shadowAvail = this.lastAvailIdx;
    this.usedIdx = usedIdx & 0xffff;
    this.publishedUsedIdx = this.usedIdx;
    this.runStart = -1;
  }

  /** {@link DeviceQueue.state}: last_avail_idx and used->idx (pushed entries included), free-running u16. */
  state(): QueueState {
    return { avail: this.lastAvailIdx, used: this.usedIdx };
  }

  setState(s: QueueState): void {
    this.setBase(s.avail, s.used);
  }

  /**
   * Chains the driver has made available and the device has not popped yet.
   * @throws DescriptorError AVAIL_IDX_JUMP when avail->idx ran ahead by more than the queue size.
   */
  pending(): number {
    return this.reloadAvail();
  }

  /**
   * Pop the next available chain into `chain` and walk it (§2.7.5, §2.7.5.3).
   * Call only when pending() > 0. Hop limit: the queue size for a direct chain,
   * the table's entry count inside an indirect table.
   * @throws DescriptorError for every malformed-chain case; the slot is consumed.
   */
  pop(chain: DescChain): void {
    const head = this.avail[this.availH + 2 + (this.lastAvailIdx & this.mask)];
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    this.walk(head, chain);
  }

  /**
   * Fast path for the common chain of one descriptor (no NEXT, no INDIRECT)
   * with flags exactly `write` (VIRTQ_DESC_F_WRITE or 0) and at least
   * `minLen` bytes, wholly inside one guest memory region: pops it and
   * returns that region's index, with id, byte offset and length in
   * {@link singleId}, {@link singleOff}, {@link singleLen}. Needs no
   * {@link pending} first: it reads avail->idx (Atomics.load) only once the
   * chains announced by its last read are popped, and throws AVAIL_IDX_JUMP
   * as pending() does. Returns -2 when no chain is available, and -1
   * (popping nothing) for any other available chain, valid or not: the
   * caller then uses {@link pop}, which walks and validates it.
   */
  popSingle(write: number, minLen: number): number {
    const last = this.lastAvailIdx;
    const known = (this.shadowAvail - last) & 0xffff;
    // Used up (or pop() went past it): read avail->idx again.
    if ((known === 0 || known > this.size) && this.reloadAvail() === 0) return -2;
    const head = this.avail[this.availH + 2 + (last & this.mask)];
    if (head >= this.size) return -1;
    const d = this.desc;
    const w = this.descW + head * 4;
    if ((d[w + 3] & 0xffff) !== write) return -1;
    const len = d[w + 2] >>> 0;
    if (len < minLen) return -1;
    const mem = this.mem;
    const r = mem.find((d[w + 1] >>> 0) * TWO32 + (d[w] >>> 0), len);
    if (r < 0) return -1;
    this.lastAvailIdx = (last + 1) & 0xffff;
    this.singleId = head;
    this.singleOff = mem.off;
    this.singleLen = len;
    return r;
  }

  /** Read avail->idx (acquire) into popSingle's shadow; returns the chains available. @throws DescriptorError AVAIL_IDX_JUMP */
  protected reloadAvail(): number {
    const a = Atomics.load(this.avail, this.availH + 1);
    const n = (a - this.lastAvailIdx) & 0xffff;
    if (n > this.size) throw this.err('AVAIL_IDX_JUMP', `avail idx ran ${n} entries ahead of a ${this.size}-entry queue`);
    this.shadowAvail = a;
    return n;
  }

  /** {@link DeviceQueue.mark}: the next available-ring index. */
  mark(): number {
    return this.lastAvailIdx;
  }

  rewind(m: number): void {
    this.lastAvailIdx = m & 0xffff;
  }

  /**
   * Walk the chain starting at descriptor `head` into `chain` (§2.7.5,
   * §2.7.5.3): id = head, descs = descriptors in the table it took. Hop
   * limit: the queue size for a direct chain, the table's entry count inside
   * an indirect table. A buffer crossing adjacent memory regions becomes
   * several pieces; an indirect table need not be aligned.
   * @throws DescriptorError for every malformed-chain case.
   */
  private walk(head: number, chain: DescChain): void {
    chain.reset(head);
    let table = this.desc;
    let base = this.descW;
    let limit = this.size;
    let hops = 0;
    let inIndirect = false;
    let idx = head;
    let total = 0;
    let descs = 0;
    for (;;) {
      if (idx >= limit) throw this.err('DESC_INDEX_OUT_OF_RANGE', `descriptor index ${idx} >= ${limit}`, idx);
      if (++hops > limit) throw this.err('CHAIN_TOO_LONG', `chain from head ${head} exceeds ${limit} descriptors (loop?)`, idx);
      const w = base + idx * 4;
      const addr = (table[w + 1] >>> 0) * TWO32 + (table[w] >>> 0);
      const len = table[w + 2] >>> 0;
      const fn = table[w + 3];
      const flags = fn & 0xffff;
      if (!inIndirect) descs++;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw this.err('INDIRECT_NOT_NEGOTIATED', 'VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC', idx);
        if (inIndirect) throw this.err('NESTED_INDIRECT', 'indirect descriptor inside an indirect table', idx);
        if (flags & VIRTQ_DESC_F_NEXT) throw this.err('INDIRECT_WITH_NEXT', 'VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT', idx);
        if (len === 0 || (len & 15) !== 0) throw this.err('INDIRECT_BAD_LENGTH', `indirect table length ${len} is not a non-zero multiple of 16`, idx);
        if (len / 16 > this.size) throw this.err('CHAIN_TOO_LONG', `indirect table of ${len / 16} entries exceeds queue size ${this.size}`, idx);
        if (!this.table.load(addr, len)) throw this.err('BUFFER_OUT_OF_RANGE', `indirect table [0x${addr.toString(16)}, +${len}) outside guest memory`, idx);
        table = this.table.words;
        base = this.table.base;
        limit = len / 16;
        hops = 0;
        idx = 0;
        inIndirect = true;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!writable && chain.count !== chain.readable)
        throw this.err('READABLE_AFTER_WRITABLE', 'device-readable descriptor after a device-writable one', idx);
      if (!chain.append(addr, len, writable)) throw this.err('BUFFER_OUT_OF_RANGE', `buffer [0x${addr.toString(16)}, +${len}) outside guest memory`, idx);
      total += len;
      if (total > TWO32) throw this.err('CHAIN_BYTES_TOO_LARGE', 'chain longer than 2^32 bytes', idx);
      if (!(flags & VIRTQ_DESC_F_NEXT)) {
        chain.descs = descs;
        return;
      }
      idx = fn >>> 16;
    }
  }

  /** Used entries written since the last {@link publish}. */
  get unpublished(): boolean {
    return this.usedIdx !== this.publishedUsedIdx;
  }

  /**
   * Add a used element {id: head, len: bytes written} (§2.7.8); not visible
   * until {@link publish}. `descs` is not needed by the split ring. With
   * in-order, zero-length entries are held back as one run (§2.7.9).
   */
  pushUsed(head: number, len: number, _descs = 1): void {
    if (this.inOrder) {
      if (this.runStart < 0) this.runStart = this.usedIdx;
      this.runId = head;
      this.runLen = len;
      this.usedIdx = (this.usedIdx + 1) & 0xffff;
      if (len !== 0) this.closeRun();
      return;
    }
    const w = this.usedElemW + 2 * (this.usedIdx & this.mask);
    this.used32[w] = head;
    this.used32[w + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  /** In-order: write the open run as one used element, in its first slot. */
  private closeRun(): void {
    const w = this.usedElemW + 2 * (this.runStart & this.mask);
    this.used32[w] = this.runId;
    this.used32[w + 1] = this.runLen;
    this.runStart = -1;
  }

  /**
   * Publish used->idx and say whether the driver wants a used-buffer
   * notification for the entries published since the last call (§2.7.10).
   */
  publish(): boolean {
    const newIdx = this.usedIdx;
    const oldIdx = this.publishedUsedIdx;
    if (newIdx === oldIdx) return false;
    if (this.runStart >= 0) this.closeRun();
    Atomics.store(this.used16, this.usedH + 1, newIdx);
    this.publishedUsedIdx = newIdx;
    if (this.eventIdx) return needEvent(Atomics.load(this.avail, this.availH + 2 + this.size), newIdx, oldIdx);
    return (Atomics.load(this.avail, this.availH) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask for (or suppress) available-buffer notifications (§2.7.7): with
   * EVENT_IDX by writing avail_event = the next index the device will read,
   * else by clearing/setting VIRTQ_USED_F_NO_NOTIFY. After enabling, call
   * {@link pending} again before sleeping: the driver may have added buffers
   * in between.
   */
  setNotification(enable: boolean): void {
    if (this.eventIdx) {
      if (enable) Atomics.store(this.used16, this.usedH + 2 + 4 * this.size, this.lastAvailIdx);
    } else {
      Atomics.store(this.used16, this.usedH, enable ? 0 : VIRTQ_USED_F_NO_NOTIFY);
    }
  }

  private err(code: ConstructorParameters<typeof DescriptorError>[0], msg: string, desc = -1): DescriptorError {
    const e = new DescriptorError(code, `queue ${this.index}: ${msg}`, desc);
    e.queue = this.index;
    return e;
  }
}
