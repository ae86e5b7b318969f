/**
 * The inflight I/O tracking buffer of vhost-user (vhost-user.rst "Inflight
 * I/O tracking", VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): one region per
 * virtqueue, in the spec's split (QueueRegionSplit / DescStateSplit) or
 * packed (QueueRegionPacked / DescStatePacked) format. The back-end writes
 * it while it runs; the front-end keeps the fd (GET_INFLIGHT_FD) and hands
 * it to the next back-end (SET_INFLIGHT_FD), which reads from it what the
 * dead one had taken from the driver and not yet returned.
 *
 * All fields little-endian (this module, like the rings, uses host-order
 * typed arrays and refuses to load on a big-endian host). Byte layout:
 *
 * Split region (16-byte header, then `desc_num` 16-byte DescStateSplit):
 * | features u64 @0 | version u16 @8 | desc_num u16 @10 | last_batch_head u16 @12 | used_idx u16 @14 |
 * DescStateSplit i @16+16i: inflight u8 @0, padding[5] @1, next u16 @6, counter u64 @8.
 *
 * Packed region (32-byte header: 29 bytes of fields padded to 8, then
 * `desc_num` 32-byte DescStatePacked):
 * | features u64 @0 | version u16 @8 | desc_num u16 @10 | free_head u16 @12 | old_free_head u16 @14 |
 * | used_idx u16 @16 | old_used_idx u16 @18 | used_wrap_counter u8 @20 | old_used_wrap_counter u8 @21 | padding[7] @22 |
 * DescStatePacked i @32+32i: inflight u8 @0, padding u8 @1, next u16 @2, last u16 @4, num u16 @6,
 * counter u64 @8, id u16 @16, flags u16 @18, len u32 @20, addr u64 @24.
 *
 * Every queue's region takes {@link inflightQueueBytes} bytes whatever the
 * ring format (the packed size, the larger, rounded up to 64 bytes as DPDK
 * and libvhost-user align them): QEMU sends GET_INFLIGHT_FD before
 * SET_FEATURES, so the format is only known when a ring starts, and the
 * region is laid out (version 0 → 1) then.
 *
 * The commit points (inflight flags, used_idx, last_batch_head, the old_*
 * fields) are written with Atomics.store so no store is moved across them:
 * a process killed at any instruction leaves a record the recovery below
 * reads consistently.
 */
import { VirtioError } from '../errors.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('virtio-mq needs a little-endian host');

/** QueueRegion*.version this code writes (0: an uninitialised region). */
export const INFLIGHT_VERSION = 1;
/** Bytes of the split header / one DescStateSplit. */
export const SPLIT_HEADER_BYTES = 16;
export const SPLIT_DESC_BYTES = 16;
/** Bytes of the packed header / one DescStatePacked. */
export const PACKED_HEADER_BYTES = 32;
export const PACKED_DESC_BYTES = 32;
/** Each queue region starts on a 64-byte boundary (INFLIGHT_ALIGNMENT in libvhost-user and DPDK). */
export const INFLIGHT_ALIGNMENT = 64;
const TWO32 = 4294967296;

/**
 * Bytes of one queue's region for queues of up to `queueSize` entries: the
 * packed format's size, 64-byte aligned (also room for the split format).
 */
export function inflightQueueBytes(queueSize: number): number {
  const raw = PACKED_HEADER_BYTES + PACKED_DESC_BYTES * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/** Bytes of the whole buffer (GET_INFLIGHT_FD's mmap_size): `numQueues` regions. */
export function inflightBufferBytes(numQueues: number, queueSize: number): number {
  return numQueues * inflightQueueBytes(queueSize);
}

/**
 * A bad inflight buffer or description:
 * - `INFLIGHT_QUEUES`     num_queues outside 1..the device's queue count
 * - `INFLIGHT_QUEUE_SIZE` queue_size outside 1..32768, or smaller than a ring using it
 * - `INFLIGHT_SIZE`       mmap_size is not num_queues × the per-queue size, or the fd is shorter
 * - `INFLIGHT_CORRUPT`    a region whose contents cannot be a record this code wrote (desc_num, a batch larger than the ring)
 */
export class InflightError extends VirtioError {
  constructor(code: 'INFLIGHT_QUEUES' | 'INFLIGHT_QUEUE_SIZE' | 'INFLIGHT_SIZE' | 'INFLIGHT_CORRUPT', message: string) {
    super(code, message);
  }
}

/**
 * Check an inflight description (GET_INFLIGHT_FD / SET_INFLIGHT_FD) against a device with `maxQueues` virtqueues.
 * @param mmapSize null for GET_INFLIGHT_FD (the back-end chooses it)
 * @throws InflightError INFLIGHT_QUEUES, INFLIGHT_QUEUE_SIZE, INFLIGHT_SIZE
 */
export function checkInflightDescription(numQueues: number, queueSize: number, mmapSize: number | null, maxQueues: number): void {
  if (!(numQueues >= 1 && numQueues <= maxQueues)) throw new InflightError('INFLIGHT_QUEUES', `num_queues ${numQueues} is outside 1..${maxQueues}`);
  if (!(queueSize >= 1 && queueSize <= 32768)) throw new InflightError('INFLIGHT_QUEUE_SIZE', `queue_size ${queueSize} is outside 1..32768`);
  if (mmapSize !== null && mmapSize !== inflightBufferBytes(numQueues, queueSize))
    throw new InflightError('INFLIGHT_SIZE', `mmap_size ${mmapSize} is not ${inflightBufferBytes(numQueues, queueSize)} (${numQueues} queues of ${queueSize} entries)`);
}

/** Where one queue's region is: a buffer (the mapped memfd), its byte offset (64-aligned), and the queue_size it was made for. */
export interface InflightSlot {
  buffer: SharedArrayBuffer | ArrayBuffer;
  offset: number;
  queueSize: number;
}

/** The slot of queue `q` in a buffer of {@link inflightBufferBytes}. */
export function inflightSlot(buffer: SharedArrayBuffer | ArrayBuffer, q: number, queueSize: number): InflightSlot {
  return { buffer, offset: q * inflightQueueBytes(queueSize), queueSize };
}

abstract class RegionViews {
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;

  /** @throws InflightError INFLIGHT_QUEUE_SIZE when a ring of `size` entries does not fit the slot; INFLIGHT_SIZE when the slot is outside its buffer. */
  constructor(slot: InflightSlot, readonly size: number) {
    if (!(size >= 1 && size <= slot.queueSize)) throw new InflightError('INFLIGHT_QUEUE_SIZE', `a ${size}-entry ring does not fit an inflight region made for ${slot.queueSize} entries`);
    const bytes = inflightQueueBytes(slot.queueSize);
    if (slot.offset % INFLIGHT_ALIGNMENT !== 0 || slot.offset + bytes > slot.buffer.byteLength)
      throw new InflightError('INFLIGHT_SIZE', `inflight region [${slot.offset}, +${bytes}) is outside its ${slot.buffer.byteLength}-byte buffer`);
    this.u8 = new Uint8Array(slot.buffer, slot.offset, bytes);
    this.u16 = new Uint16Array(slot.buffer, slot.offset, bytes >>> 1);
    this.u32 = new Uint32Array(slot.buffer, slot.offset, bytes >>> 2);
  }

  get version(): number {
    return this.u16[4];
  }

  get descNum(): number {
    return this.u16[5];
  }

  /** desc_num of a used region must be the ring's size (the spec: "equal to the virtqueue size"). @throws InflightError INFLIGHT_CORRUPT */
  protected checkDescNum(): void {
    if (this.descNum !== this.size) throw new InflightError('INFLIGHT_CORRUPT', `inflight region for ${this.descNum} descriptors, the ring has ${this.size}`);
  }
}

/**
 * One split queue's region (QueueRegionSplit). The device's side of the
 * spec's procedure, one method per step group:
 * - {@link take}: a head popped (counter, then inflight = 1);
 * - {@link link}: a head pushed used (next = last_batch_head, last_batch_head = head);
 * - after the used ring's idx store: {@link settle} (inflight = 0 for the
 *   batch, then used_idx = used->idx);
 * - {@link release}: a head given back unused (rewind): inflight = 0.
 * And the front half of "When reconnecting": {@link recover}.
 */
export class InflightSplitRegion extends RegionViews {
  /** The global counter: the next head taken gets it. */
  counter = 1;

  /** Lay the region out (version 1, desc_num, used_idx, every entry clear); the version is written last. */
  init(usedIdx: number): void {
    this.u8.fill(0, 0, SPLIT_HEADER_BYTES + SPLIT_DESC_BYTES * this.size);
    this.u16[5] = this.size;
    this.u16[7] = usedIdx & 0xffff;
    Atomics.store(this.u16, 4, INFLIGHT_VERSION);
    this.counter = 1;
  }

  /** desc[head]: counter = the global counter (incremented), then inflight = 1. */
  take(head: number): void {
    const c = this.counter++;
    const w = 4 + 4 * head + 2;
    this.u32[w] = c >>> 0;
    this.u32[w + 1] = (c / TWO32) >>> 0;
    Atomics.store(this.u8, SPLIT_HEADER_BYTES + SPLIT_DESC_BYTES * head, 1);
  }

  /** A head given back before it was used (the device will pop it again): inflight = 0. */
  release(head: number): void {
    Atomics.store(this.u8, SPLIT_HEADER_BYTES + SPLIT_DESC_BYTES * head, 0);
  }

  /** Steps 2-3 of "supplying used buffers": desc[head].next = last_batch_head, last_batch_head = head. */
  link(head: number): void {
    this.u16[8 + 8 * head + 3] = this.u16[6];
    Atomics.store(this.u16, 6, head);
  }

  /**
   * After used->idx was raised by `n` to `usedIdx`: inflight = 0 for each
   * of the last `n` linked heads, then used_idx = usedIdx.
   */
  settle(n: number, usedIdx: number): void {
    const u8 = this.u8, u16 = this.u16;
    let h = u16[6];
    for (let i = 0; i < n; i++) {
      Atomics.store(u8, SPLIT_HEADER_BYTES + SPLIT_DESC_BYTES * h, 0);
      h = u16[8 + 8 * h + 3];
    }
    Atomics.store(u16, 7, usedIdx & 0xffff);
  }

  inflight(head: number): boolean {
    return this.u8[SPLIT_HEADER_BYTES + SPLIT_DESC_BYTES * head] !== 0;
  }

  counterOf(head: number): number {
    const w = 4 + 4 * head + 2;
    return this.u32[w] + this.u32[w + 1] * TWO32;
  }

  get usedIdx(): number {
    return this.u16[7];
  }

  get lastBatchHead(): number {
    return this.u16[6];
  }

  /**
   * "When reconnecting", given the used ring's idx: if used_idx lags it,
   * the last batch was published but not settled: clear its inflight flags
   * and set used_idx. Returns the heads still in flight, oldest (lowest
   * counter) first, and sets the global counter past them.
   * @throws InflightError INFLIGHT_CORRUPT (desc_num, a batch larger than the ring, a head out of range)
   */
  recover(ringUsedIdx: number): number[] {
    this.checkDescNum();
    const size = this.size;
    const n = (ringUsedIdx - this.usedIdx) & 0xffff;
    if (n !== 0) {
      if (n > size) throw new InflightError('INFLIGHT_CORRUPT', `used ring idx ${ringUsedIdx} is ${n} entries past the inflight used_idx ${this.usedIdx} (ring of ${size})`);
      let h = this.lastBatchHead;
      for (let i = 0; i < n; i++) {
        if (h >= size) throw new InflightError('INFLIGHT_CORRUPT', `last batch list reaches head ${h} >= ${size}`);
        Atomics.store(this.u8, SPLIT_HEADER_BYTES + SPLIT_DESC_BYTES * h, 0);
        h = this.u16[8 + 8 * h + 3];
      }
      Atomics.store(this.u16, 7, ringUsedIdx & 0xffff);
    }
    const heads: number[] = [];
    for (let i = 0; i < size; i++) if (this.inflight(i)) heads.push(i);
    heads.sort((a, b) => this.counterOf(a) - this.counterOf(b));
    this.counter = heads.length > 0 ? this.counterOf(heads[heads.length - 1]) + 1 : 1;
    return heads;
  }
}

/** A chain the packed region records as in flight: head entry, Buffer ID (its last descriptor's id), ring slots, counter. */
export interface PackedInflightChain {
  entry: number;
  id: number;
  num: number;
  counter: number;
}

/**
 * One packed queue's region (QueueRegionPacked). Descriptors are copied
 * into entries taken from the free list (free_head); a chain's head entry
 * holds inflight, counter, num and last. The device's side:
 * - {@link takeDesc} per descriptor of a popped chain (the spec's steps
 *   for receiving available buffers; old_free_head moves on at the last);
 * - {@link ret} per used chain of a batch before the ring is written
 *   (desc[last].next = free_head, free_head = head entry), then
 *   {@link advance} (used_idx, used_wrap_counter);
 * - after the used flags are written: {@link settle} (inflight = 0 per head,
 *   then old_free_head, old_used_idx, old_used_wrap_counter = the current ones).
 * And "When reconnecting": {@link recover}.
 */
export class InflightPackedRegion extends RegionViews {
  counter = 1;
  /** free_head as this process keeps it (the region's copy is written on every change). */
  private freeHead = 0;

  /** Lay the region out: every entry free and clear, used position `usedPos` / `usedWrap`; the version is written last. */
  init(usedPos: number, usedWrap: number): void {
    const size = this.size;
    this.u8.fill(0, 0, PACKED_HEADER_BYTES + PACKED_DESC_BYTES * size);
    for (let i = 0; i < size; i++) this.u16[16 + 16 * i + 1] = i + 1 < size ? i + 1 : 0;
    this.u16[5] = size;
    this.u16[8] = this.u16[9] = usedPos;
    this.u8[20] = this.u8[21] = usedWrap;
    Atomics.store(this.u16, 4, INFLIGHT_VERSION);
    this.freeHead = 0;
    this.counter = 1;
  }

  /**
   * Record descriptor `k` (0-based) of a chain being popped, `last` when it
   * is the chain's last: its addr/len/id/flags go into entry free_head.
   * The head entry (old_free_head) gets num = 0, counter, inflight = 1 at
   * k = 0, last at the last descriptor, num + 1 each time. Returns the head entry.
   */
  takeDesc(k: number, last: boolean, addr: number, len: number, id: number, flags: number): number {
    const u16 = this.u16, u32 = this.u32;
    const head = u16[7];
    const hb = 16 * head; // u16 index of the head entry
    if (k === 0) {
      u16[hb + 16 + 3] = 0;
      const c = this.counter++;
      u32[(hb >>> 1) + 8 + 2] = c >>> 0;
      u32[(hb >>> 1) + 8 + 3] = (c / TWO32) >>> 0;
      Atomics.store(this.u8, PACKED_HEADER_BYTES + PACKED_DESC_BYTES * head, 1);
    }
    const f = this.freeHead;
    if (last) u16[hb + 16 + 2] = f;
    u16[hb + 16 + 3]++;
    const fb = 16 * f;
    u16[fb + 16 + 8] = id;
    u16[fb + 16 + 9] = flags;
    u32[(fb >>> 1) + 8 + 5] = len;
    u32[(fb >>> 1) + 8 + 6] = addr >>> 0;
    u32[(fb >>> 1) + 8 + 7] = (addr / TWO32) >>> 0;
    this.freeHead = u16[fb + 16 + 1];
    Atomics.store(u16, 6, this.freeHead);
    if (last) Atomics.store(u16, 7, this.freeHead);
    return head;
  }

  /**
   * Give back the chains taken since free_head was `freeHead` (rewind):
   * the inflight flags of their head entries `heads` are cleared first, then
   * free_head and old_free_head go back (a crash in between leaves those
   * entries out of the free list and not in flight: recovery lays the
   * region out afresh, so nothing leaks for good).
   */
  untake(freeHead: number, heads: ArrayLike<number>, n: number): void {
    // Newest first: a crash part-way leaves the older ones in flight, still a run from the used position on.
    for (let i = n - 1; i >= 0; i--) Atomics.store(this.u8, PACKED_HEADER_BYTES + PACKED_DESC_BYTES * heads[i], 0);
    this.freeHead = freeHead;
    Atomics.store(this.u16, 6, freeHead);
    Atomics.store(this.u16, 7, freeHead);
  }

  /** free_head now (to pass to {@link untake} later). */
  get free(): number {
    return this.freeHead;
  }

  /** Steps 3-4 of "supplying used buffers" for the chain whose head entry is `entry`. */
  ret(entry: number): void {
    const u16 = this.u16;
    const last = u16[16 * entry + 16 + 2];
    u16[16 * last + 16 + 1] = this.freeHead;
    this.freeHead = entry;
    Atomics.store(u16, 6, entry);
  }

  /** used_idx / used_wrap_counter after the batch (before the ring's flags are written). */
  advance(usedPos: number, usedWrap: number): void {
    this.u8[20] = usedWrap;
    Atomics.store(this.u16, 8, usedPos);
  }

  /** After the batch's used flags are written: inflight = 0 for each head entry, then old_* = the current values. */
  settle(entries: ArrayLike<number>, n: number): void {
    const u8 = this.u8, u16 = this.u16;
    for (let i = 0; i < n; i++) Atomics.store(u8, PACKED_HEADER_BYTES + PACKED_DESC_BYTES * entries[i], 0);
    u8[21] = u8[20];
    Atomics.store(u16, 9, u16[8]);
    Atomics.store(u16, 7, u16[6]);
  }

  /** The Buffer ID of the chain with head entry `entry` (its last descriptor's id). */
  idOf(entry: number): number {
    return this.u16[16 * this.u16[16 * entry + 16 + 2] + 16 + 8];
  }

  /** Entry `e`'s saved descriptor: addr, len, id, flags; and the next entry of its chain. */
  descAddr(e: number): number {
    return this.u32[8 * e + 8 + 6] + this.u32[8 * e + 8 + 7] * TWO32;
  }

  descLen(e: number): number {
    return this.u32[8 * e + 8 + 5];
  }

  descIdFlags(e: number): number {
    return this.u16[16 * e + 16 + 8] | (this.u16[16 * e + 16 + 9] << 16);
  }

  nextOf(e: number): number {
    return this.u16[16 * e + 16 + 1];
  }

  get usedIdx(): number {
    return this.u16[8];
  }

  get usedWrap(): number {
    return this.u8[20];
  }

  get oldUsedIdx(): number {
    return this.u16[9];
  }

  get oldUsedWrap(): number {
    return this.u8[21];
  }

  /**
   * "When reconnecting". `usedFlagsAt(pos)` reads the flags of ring
   * descriptor `pos`. If used_idx moved past old_used_idx, the batch was
   * published iff the descriptor at old_used_idx no longer carries the
   * available marks of old_used_wrap_counter (AVAIL = wrap, USED = !wrap):
   * then the update is committed (the batch's head entries, pushed onto
   * the free list, lose their inflight flags), else rolled back. The free
   * head loses its flag too (a pop cut short). The caller completes or
   * requeues what is returned and then lays the region out afresh. Returns the chains in flight, oldest
   * first; free_head, used_idx and the counter are set for going on.
   * @throws InflightError INFLIGHT_CORRUPT (desc_num, a position or entry out of range, a free list longer than the ring)
   */
  recover(usedFlagsAt: (pos: number) => number): PackedInflightChain[] {
    this.checkDescNum();
    const size = this.size, u8 = this.u8, u16 = this.u16;
    if (u16[8] >= size || u16[9] >= size || u16[6] >= size || u16[7] >= size)
      throw new InflightError('INFLIGHT_CORRUPT', `inflight positions ${u16[8]}/${u16[9]}, free heads ${u16[6]}/${u16[7]} outside a ${size}-entry ring`);
    if (u16[8] !== u16[9] || u8[20] !== u8[21]) {
      const f = usedFlagsAt(u16[9]);
      const w = u8[21] & 1;
      const stillAvail = ((f >>> 7) & 1) === w && ((f >>> 15) & 1) !== w;
      if (!stillAvail) {
        // The driver saw the batch: commit it. Its head entries were pushed onto the free list
        // (free_head → head → desc[last].next → ... → old_free_head): clear their flags first.
        let e = u16[6];
        for (let i = 0; e !== u16[7]; i++) {
          if (i === size || e >= size) throw new InflightError('INFLIGHT_CORRUPT', `the last batch's free list does not reach old_free_head ${u16[7]}`);
          Atomics.store(u8, PACKED_HEADER_BYTES + PACKED_DESC_BYTES * e, 0);
          e = u16[16 * u16[16 * e + 16 + 2] + 16 + 1];
        }
        u8[21] = u8[20];
        Atomics.store(u16, 9, u16[8]);
        Atomics.store(u16, 7, u16[6]);
      }
    }
    // Roll back whatever is not committed.
    u8[20] = u8[21];
    Atomics.store(u16, 8, u16[9]);
    Atomics.store(u16, 6, u16[7]);
    this.freeHead = u16[7];
    // The free head is never in flight: a pop cut short after flagging it left it so.
    Atomics.store(u8, PACKED_HEADER_BYTES + PACKED_DESC_BYTES * this.freeHead, 0);
    const chains: PackedInflightChain[] = [];
    for (let i = 0; i < size; i++) {
      if (u8[PACKED_HEADER_BYTES + PACKED_DESC_BYTES * i] === 0) continue;
      const num = u16[16 * i + 16 + 3];
      const last = u16[16 * i + 16 + 2];
      if (num < 1 || num > size || last >= size) throw new InflightError('INFLIGHT_CORRUPT', `inflight entry ${i}: ${num} descriptors, last entry ${last}`);
      const w = (i * 8) + 8 + 2;
      chains.push({ entry: i, id: this.idOf(i), num, counter: this.u32[w] + this.u32[w + 1] * TWO32 });
    }
    chains.sort((a, b) => a.counter - b.counter);
    this.counter = chains.length > 0 ? chains[chains.length - 1].counter + 1 : 1;
    return chains;
  }
}
