/**
 * Driver half of a packed virtqueue (virtio spec v1.4 §2.8): writes
 * available descriptors into the descriptor ring (§2.8.21.1), reads used
 * descriptors back from it (§2.8.22), hands out Buffer IDs, and decides on
 * available-buffer notifications from the Device Event Suppression
 * structure (§2.8.10, §2.8.21.2).
 *
 * The driver keeps its own shadow of every chain it made available (slot
 * count, writable bytes, token per Buffer ID), so a buggy or hostile device
 * returning a bogus id or length corrupts nothing: the completion is refused
 * with a DescriptorError.
 *
 * Buffer IDs: from a free-id stack; with VIRTIO_F_IN_ORDER the id of a chain
 * is the ring position of its first descriptor, so ids and slots go in ring
 * order and a used descriptor for a batch (§2.8.12) names the last chain of
 * a run that starts at the driver's used position.
 *
 * Hot path rules as the split ring: no allocation on addOne/publish/
 * usedPending/popUsed, no BigInt, no closures, views made once. The first
 * descriptor of an unpublished batch gets its flags at publish() with
 * Atomics.store (release), so the device never sees a partial batch.
 */
import { DescriptorError, GuestMemoryError, QueueConfigError, type DescriptorErrorCode } from '../errors.js';
import type { GuestMemory } from '../memory.js';
import type { BufferSpec, DriverQueue, QueueLayout, QueueOptions, QueueState } from '../queue.js';
import {
  checkPackedLayout, packedNeedEvent, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, SCAN_LIMIT,
  VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE, WRAP_SHIFT,
} from './layout.js';
import { PackedRingViews } from './views.js';
import { takeUsedEach } from '../used-burst.js';

const TWO32 = 4294967296;
/** Word-3 flag bits (flags << 16) of an available descriptor, by the driver's wrap counter (§2.8.1). */
const AVAIL_MARK_1 = VIRTQ_DESC_F_AVAIL << 16;
const AVAIL_MARK_0 = VIRTQ_DESC_F_USED << 16;
const WRITE_MARK = VIRTQ_DESC_F_WRITE << 16;
const NEXT_MARK = VIRTQ_DESC_F_NEXT << 16;
const INDIRECT_MARK = VIRTQ_DESC_F_INDIRECT << 16;

export class PackedDriverQueue implements DriverQueue {
  readonly size: number;
  readonly index: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  readonly indirect: boolean;
  /** Free descriptor slots in the ring. */
  numFree: number;
  /** Byte count the device wrote, from the last {@link popUsed} (0 without VIRTQ_DESC_F_WRITE, §2.8.4). */
  usedLen = 0;
  /** The caller's token of the chain the last {@link popUsed} returned. */
  usedToken = 0;
  /** Next ring position the driver fills, and the Driver Ring Wrap Counter (§2.8.1). */
  private availPos = 0;
  private availWrap = 1;
  /** Next chain to reclaim: ring position and wrap counter (advanced per reclaimed chain). */
  private usedPos = 0;
  private usedWrap = 1;
  /** Where the next used descriptor is read (differs from usedPos inside an in-order batch). */
  private readPos = 0;
  private readWrap = 1;
  /** In-order batch being handed out: chains left (incl. the last), its last id and the device's len for it. */
  private batchLeft = 0;
  private batchId = 0;
  private batchLen = 0;
  /** Unpublished batch: word index of word 3 of its first descriptor (-1: none), the deferred value, slots added. */
  private firstW = -1;
  private firstWord = 0;
  private unpubDescs = 0;
  /** Chains added (counter), and the counter value at the last publish: a chain is published when its seq < pubSeq. */
  private addSeq = 0;
  private pubSeq = 0;
  /** Chains published and not reclaimed. */
  private outstandingPub = 0;
  /** Free Buffer IDs (a stack; not used with in-order). */
  private readonly freeIds: Uint16Array;
  private freeCount: number;
  /** Per Buffer ID: ring slots (0 = not in flight), writable bytes, add sequence number, caller's token. */
  private readonly descs: Uint16Array;
  private readonly writable: Float64Array;
  private readonly seq: Float64Array;
  private readonly tokens: Int32Array;
  /** Scratch for indirect tables (grown on demand, control of `add`). */
  private scratch8 = new Uint8Array(0);
  private scratch32 = new Int32Array(0);
  private readonly desc: Int32Array;
  private readonly descW: number;
  private readonly drvEvt: Int32Array;
  private readonly drvEvtW: number;
  private readonly devEvt: Int32Array;
  private readonly devEvtW: number;

  /**
   * Lays nothing out itself: the caller places the three parts in guest
   * memory (see contiguousPackedLayout); this constructor zeroes the ring and
   * both event suppression structures (§2.8.13; flags 0 = ENABLE). Both wrap
   * counters start at 1 (§2.8.1).
   * @throws QueueConfigError for a bad size, format or alignment; GuestMemoryError
   * when a part is not wholly inside one guest memory region.
   */
  constructor(private readonly mem: GuestMemory, layout: QueueLayout, opts: QueueOptions) {
    checkPackedLayout(layout);
    this.size = layout.size;
    this.index = opts.index ?? -1;
    this.eventIdx = opts.eventIdx;
    this.inOrder = opts.inOrder;
    this.indirect = opts.indirect;
    this.numFree = this.size;
    this.freeIds = new Uint16Array(this.size);
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeCount = this.size;
    this.descs = new Uint16Array(this.size);
    this.writable = new Float64Array(this.size);
    this.seq = new Float64Array(this.size);
    this.tokens = new Int32Array(this.size);
    const v = new PackedRingViews(mem, layout, true);
    this.desc = v.desc;
    this.descW = v.descW;
    this.drvEvt = v.drvEvt;
    this.drvEvtW = v.drvEvtW;
    this.devEvt = v.devEvt;
    this.devEvtW = v.devEvtW;
  }

  /** Ring position of the next chain to reclaim (0..size-1). */
  get nextUsed(): number {
    return this.usedPos;
  }

  /** The Buffer ID {@link addOne} will use next, or -1 when no slot is free. */
  peekFreeId(): number {
    if (this.numFree === 0) return -1;
    return this.inOrder ? this.availPos : this.freeIds[this.freeCount - 1];
  }

  /** Take a Buffer ID for a chain starting at availPos (numFree > 0 checked by the caller). */
  private takeId(): number {
    return this.inOrder ? this.availPos : this.freeIds[--this.freeCount];
  }

  /**
   * Write one available descriptor at the driver's position and move on
   * (§2.8.21.1). `mark` = flag bits << 16 other than AVAIL/USED. The first
   * descriptor of an unpublished batch gets its word 3 at publish().
   */
  private put(addr: number, len: number, id: number, mark: number): void {
    const d = this.desc;
    const w = this.descW + this.availPos * 4;
    const hi = addr < TWO32 ? 0 : Math.floor(addr / TWO32);
    const lo = addr - hi * TWO32; // not addr % TWO32: a float modulo is an fmod call per packet
    // Write only what changed (a caller that ties buffers to Buffer IDs puts
    // the same address and length in a slot lap after lap; the device wrote
    // len only for a device-writable buffer). Word 3 changes every lap.
    if (d[w] !== (lo | 0)) d[w] = lo;
    if (d[w + 1] !== hi) d[w + 1] = hi;
    if (d[w + 2] !== (len | 0)) d[w + 2] = len;
    const word3 = id | mark | (this.availWrap !== 0 ? AVAIL_MARK_1 : AVAIL_MARK_0);
    if (this.firstW < 0) {
      this.firstW = w + 3;
      this.firstWord = word3;
    } else {
      d[w + 3] = word3;
    }
    if (++this.availPos === this.size) {
      this.availPos = 0;
      this.availWrap ^= 1;
    }
  }

  /** Shadow bookkeeping of a chain just added. */
  private record(id: number, slots: number, writable: number, token: number): void {
    this.numFree -= slots;
    this.unpubDescs += slots;
    this.descs[id] = slots;
    this.writable[id] = writable;
    this.seq[id] = this.addSeq++;
    this.tokens[id] = token;
  }

  /**
   * Hot path: add a one-descriptor chain (§2.8.21.1). Returns its Buffer ID,
   * or -1 when no slot is free. `token` comes back in {@link usedToken}.
   * Not visible to the device until {@link publish}.
   * @param addr guest physical address, len bytes, writable = device-writable
   */
  addOne(addr: number, len: number, writable: boolean, token: number): number {
    if (this.numFree === 0) return -1;
    const id = this.takeId();
    this.put(addr, len, id, writable ? WRITE_MARK : 0);
    this.record(id, 1, writable ? len : 0, token);
    return id;
  }

  /**
   * Hot path for buffers tied to Buffer IDs (buffer i at guest address
   * `addr0 + i × stride`, `len` bytes, token i): add up to `n`
   * one-descriptor chains with the ids {@link addOne} would have used, write
   * the ids to `out[0..k)` and return k (fewer when the ring runs out of
   * slots). The caller may fill the buffers after this call: nothing is
   * visible to the device before {@link publish}. Same ring writes as k
   * addOne calls, with the bookkeeping done once per run.
   */
  addTied(out: Uint16Array, n: number, addr0: number, stride: number, len: number, writable: boolean): number {
    const k = n < this.numFree ? n : this.numFree;
    if (k <= 0) return 0;
    const d = this.desc, descW = this.descW, size = this.size;
    const descs = this.descs, wr = this.writable, seq = this.seq, tokens = this.tokens;
    const mark = writable ? WRITE_MARK : 0;
    const wlen = writable ? len : 0;
    const len32 = len | 0;
    const lowOnly = addr0 + (size - 1) * stride < TWO32;
    const inOrder = this.inOrder, freeIds = this.freeIds;
    let fc = this.freeCount;
    let pos = this.availPos, wrap = this.availWrap;
    let sq = this.addSeq;
    // The first descriptor of an unpublished batch gets its word 3 at publish() (release).
    let firstW = this.firstW, firstWord = this.firstWord;
    for (let i = 0; i < k; i++) {
      const id = inOrder ? pos : freeIds[--fc];
      const w = descW + pos * 4;
      if (lowOnly) {
        const lo = (addr0 + id * stride) | 0;
        if (d[w] !== lo) d[w] = lo;
        if (d[w + 1] !== 0) d[w + 1] = 0;
      } else {
        const addr = addr0 + id * stride;
        const hi = Math.floor(addr / TWO32);
        const lo = (addr - hi * TWO32) | 0;
        if (d[w] !== lo) d[w] = lo;
        if (d[w + 1] !== hi) d[w + 1] = hi;
      }
      if (d[w + 2] !== len32) d[w + 2] = len;
      const word3 = id | mark | (wrap !== 0 ? AVAIL_MARK_1 : AVAIL_MARK_0);
      if (firstW < 0) {
        firstW = w + 3;
        firstWord = word3;
      } else {
        d[w + 3] = word3;
      }
      descs[id] = 1;
      wr[id] = wlen;
      seq[id] = sq++;
      tokens[id] = id;
      out[i] = id;
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
    }
    this.freeCount = fc;
    this.firstW = firstW;
    this.firstWord = firstWord;
    this.availPos = pos;
    this.availWrap = wrap;
    this.addSeq = sq;
    this.numFree -= k;
    this.unpubDescs += k;
    return k;
  }

  /**
   * With VIRTIO_F_IN_ORDER (§2.8.12): reclaim every chain the device has
   * marked used, reading only the first used descriptor of each batch (its
   * id names the batch's last chain), as DPDK's
   * virtio_xmit_cleanup_inorder_packed. Used lengths are not read, so only
   * for queues whose chains the device never writes (a transmitq). Returns
   * the chains reclaimed; tokens are not reported. Without in-order,
   * reclaims with {@link popUsed}.
   * @throws DescriptorError USED_ID_INVALID as {@link popUsed} (chains
   * reclaimed before the bad descriptor stay reclaimed).
   */
  reclaimInOrder(): number {
    if (!this.inOrder) {
      let n = 0;
      for (let p = this.usedPending(); p > 0; p = this.usedPending()) for (; p > 0; p--, n++) this.popUsed();
      return n;
    }
    let count = 0;
    // A batch popUsed opened: hand its remaining chains back first.
    while (this.batchLeft > 0) {
      this.popUsed();
      count++;
    }
    const d = this.desc, w3 = this.descW + 3, size = this.size, descs = this.descs;
    let pos = this.usedPos, wrap = this.usedWrap;
    let freed = 0, chains = 0;
    while (chains < this.outstandingPub) {
      const word3 = Atomics.load(d, w3 + pos * 4);
      const f = word3 >>> 16;
      if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap) break;
      const id = word3 & 0xffff;
      const k = this.isOut(id) ? this.runLength(pos, id, this.outstandingPub - chains) : 0;
      if (k === 0) {
        this.commitReclaim(pos, wrap, freed, chains);
        if (++this.readPos === size) { this.readPos = 0; this.readWrap ^= 1; }
        throw this.err('USED_ID_INVALID', `device returned buffer id ${id}, which is not outstanding`);
      }
      for (let i = 0; i < k; i++) {
        const c = descs[pos];
        descs[pos] = 0;
        freed += c;
        pos += c;
        if (pos >= size) { pos -= size; wrap ^= 1; }
      }
      chains += k;
    }
    this.commitReclaim(pos, wrap, freed, chains);
    return count + chains;
  }

  private commitReclaim(pos: number, wrap: number, freed: number, chains: number): void {
    this.usedPos = this.readPos = pos;
    this.usedWrap = this.readWrap = wrap;
    this.numFree += freed;
    this.outstandingPub -= chains;
  }

  /**
   * Add a chain (§2.8.6: device-readable buffers first; NEXT on all but the
   * last descriptor, the Buffer ID in every descriptor). With `indirectTable`
   * (a guest address with room for 16 × bufs.length bytes, any alignment,
   * may cross adjacent regions) and VIRTIO_F_INDIRECT_DESC the buffers go in
   * an indirect table (§2.8.8, only VIRTQ_DESC_F_WRITE set in its entries)
   * and the chain takes one ring slot. Returns the Buffer ID, or -1 when too
   * few slots are free. Not visible to the device until {@link publish}.
   * @throws RangeError for an empty chain, one longer than the queue size
   * (also for an indirect table), or a readable buffer after a writable one.
   * @throws GuestMemoryError when the indirect table is outside guest memory.
   */
  add(bufs: readonly BufferSpec[], token: number, indirectTable?: number): number {
    const n = bufs.length;
    if (n === 0) throw new RangeError('a chain needs at least one buffer');
    if (n > this.size) throw new RangeError(`a chain of ${n} buffers is longer than the queue size ${this.size}`);
    let writable = 0;
    for (let i = 0; i < n; i++) {
      const b = bufs[i];
      if (b.writable) writable += b.len;
      else if (i > 0 && bufs[i - 1].writable) throw new RangeError('device-readable buffer after a device-writable one');
    }
    if (indirectTable !== undefined && this.indirect) {
      if (this.numFree === 0) return -1; // before touching the caller's table memory
      this.writeTable(indirectTable, bufs);
      const id = this.takeId();
      this.put(indirectTable, 16 * n, id, INDIRECT_MARK);
      this.record(id, 1, writable, token);
      return id;
    }
    if (n > this.numFree) return -1;
    const id = this.takeId();
    for (let i = 0; i < n; i++) {
      const b = bufs[i];
      this.put(b.addr, b.len, id, (b.writable ? WRITE_MARK : 0) | (i + 1 < n ? NEXT_MARK : 0));
    }
    this.record(id, n, writable, token);
    return id;
  }

  /** Write an indirect table (16-byte entries: addr, len, id 0, flags WRITE or 0) at guest address `addr`. */
  private writeTable(addr: number, bufs: readonly BufferSpec[]): void {
    const len = 16 * bufs.length;
    if (this.scratch8.length < len) {
      this.scratch8 = new Uint8Array(Math.max(len, 2 * this.scratch8.length));
      this.scratch32 = new Int32Array(this.scratch8.buffer);
    }
    const s = this.scratch32;
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i];
      const hi = Math.floor(b.addr / TWO32);
      s[4 * i] = b.addr - hi * TWO32;
      s[4 * i + 1] = hi;
      s[4 * i + 2] = b.len;
      s[4 * i + 3] = b.writable ? WRITE_MARK : 0;
    }
    const mem = this.mem;
    const r = mem.find(addr, len);
    if (r >= 0) {
      const u8 = mem.bytes[r].u8, off = mem.off;
      for (let i = 0; i < len; i++) u8[off + i] = this.scratch8[i];
      return;
    }
    // Across adjacent regions: piece by piece, only when every byte is covered.
    for (let at = addr, done = 0; done < len;) {
      const p = mem.findStart(at);
      if (p < 0) throw new GuestMemoryError(addr, len);
      const k = Math.min(len - done, mem.end[p] - at);
      const u8 = mem.bytes[p].u8, off = mem.off;
      for (let i = 0; i < k; i++) u8[off + i] = this.scratch8[done + i];
      done += k;
      at += k;
    }
  }

  /** Chains added since the last {@link publish}. */
  get unpublished(): boolean {
    return this.unpubDescs !== 0;
  }

  /**
   * Make the added chains visible: word 3 of the batch's first descriptor
   * with Atomics.store (release, §2.8.21.1), then read the Device Event
   * Suppression structure (§2.8.21.2). Returns true when the device wants an
   * available-buffer notification: ENABLE (or reserved values) → true,
   * DISABLE → false, DESC with VIRTIO_F_EVENT_IDX → true when the driver's
   * position just moved past the event descriptor (Linux
   * virtqueue_kick_prepare_packed). DESC without EVENT_IDX counts as ENABLE.
   * False when nothing was added.
   */
  publish(): boolean {
    const delta = this.unpubDescs;
    if (delta === 0) return false;
    Atomics.store(this.desc, this.firstW, this.firstWord);
    this.firstW = -1;
    this.unpubDescs = 0;
    this.outstandingPub += this.addSeq - this.pubSeq;
    this.pubSeq = this.addSeq;
    const ev = Atomics.load(this.devEvt, this.devEvtW);
    const flags = (ev >>> 16) & 3;
    if (this.eventIdx && flags === RING_EVENT_FLAGS_DESC) return packedNeedEvent(ev & 0xffff, this.availPos, this.availWrap, delta, this.size);
    return flags !== RING_EVENT_FLAGS_DISABLE;
  }

  /** Is `id` a chain made available (published) and not reclaimed? */
  private isOut(id: number): boolean {
    return id < this.size && this.descs[id] !== 0 && this.seq[id] < this.pubSeq;
  }

  /**
   * In-order: how many chains, starting with the oldest (at `pos`), up to and
   * including chain `id`; 0 when `id` is not one of the `max` oldest published chains.
   */
  private runLength(pos: number, id: number, max: number): number {
    const size = this.size;
    for (let k = 1; k <= max; k++) {
      if (pos === id) return k;
      const n = this.descs[pos];
      if (n === 0) return 0;
      pos += n;
      if (pos >= size) pos -= size;
    }
    return 0;
  }

  /**
   * Used buffers waiting to be reclaimed (§2.8.22), counted by scanning used
   * descriptors (USED and AVAIL both equal to the used wrap counter) from the
   * read position up to {@link SCAN_LIMIT}; an in-order batch counts each of
   * its chains. At least 1 whenever one is waiting. A used descriptor with an
   * id that is not outstanding counts as one (popUsed() rejects it) and ends
   * the scan. Never throws.
   */
  usedPending(): number {
    let n = this.batchLeft;
    const max = this.outstandingPub;
    const d = this.desc, w3 = this.descW + 3, size = this.size;
    let pos = this.readPos, wrap = this.readWrap;
    let oldest = pos; // in-order: id (= first slot) of the oldest chain not yet counted
    while (n < SCAN_LIMIT && n < max) {
      const word3 = Atomics.load(d, w3 + pos * 4);
      const f = word3 >>> 16;
      if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap) break;
      const id = word3 & 0xffff;
      if (!this.isOut(id)) return n + 1;
      let skip: number;
      if (this.inOrder) {
        const k = this.runLength(oldest, id, max - n);
        if (k === 0) return n + 1;
        n += k;
        // Slots from pos through the end of chain `id`.
        skip = id - pos + this.descs[id];
        if (id < pos) skip += size;
        oldest = id + this.descs[id];
        if (oldest >= size) oldest -= size;
      } else {
        n++;
        skip = this.descs[id];
      }
      pos += skip;
      if (pos >= size) { pos -= size; wrap ^= 1; }
    }
    return n < SCAN_LIMIT ? n : SCAN_LIMIT;
  }

  /**
   * {@link popUsed} when a used buffer is waiting, else -1: checks only the
   * descriptor at the read position (no scan ahead as {@link usedPending}).
   * @throws as {@link popUsed}.
   */
  popUsedIfAny(): number {
    if (this.batchLeft !== 0) return this.popUsed();
    if (this.outstandingPub === 0) return -1;
    const w = this.descW + this.readPos * 4;
    const word3 = Atomics.load(this.desc, w + 3); // the one acquire load per used buffer
    const f = word3 >>> 16;
    const wrap = this.readWrap;
    if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap) return -1;
    // Common in-order case: the used descriptor names the oldest chain itself (a batch of one).
    const id = word3 & 0xffff;
    const n = this.inOrder && id === this.usedPos ? this.descs[id] : 0;
    if (n === 0 || !(this.seq[id] < this.pubSeq)) return this.popUsed();
    const len = (word3 & WRITE_MARK) !== 0 ? this.desc[w + 2] >>> 0 : 0;
    this.descs[id] = 0;
    this.numFree += n;
    this.outstandingPub--;
    let p = id + n;
    if (p >= this.size) {
      p -= this.size;
      this.usedWrap ^= 1;
      this.readWrap ^= 1;
    }
    this.usedPos = this.readPos = p;
    this.usedToken = this.tokens[id];
    if (len > this.writable[id]) {
      this.usedLen = 0;
      throw this.err('USED_LEN_INVALID', `device wrote ${len} bytes into ${this.writable[id]} writable bytes`);
    }
    this.usedLen = len;
    return id;
  }

  /**
   * RX hot path: reclaim up to `max` used chains, exactly as that many
   * {@link popUsedIfAny} calls would (same checks, same queue state after),
   * writing chain i's token to `tokens[i]` and its used length to
   * `lens[i]`; returns how many (0 when none is waiting). A descriptor the
   * per-chain path refuses ends the burst before it: with nothing taken yet
   * the error is thrown, otherwise it is thrown by the next call.
   *
   * With VIRTIO_F_IN_ORDER, a run of one-descriptor chains each named by
   * its own used descriptor (what DPDK's vhost writes on enqueue) is read
   * with two acquire loads per run instead of one per chain: the flags of
   * the run's first descriptor, then (after plain loads of the flags
   * behind it) of its last. The device writes used descriptors in ring
   * order, each after its id, len and buffer (§2.8.22, §2.8.21.3), so the
   * last one's release covers the run. Every id and len is still checked
   * against the driver's shadow, whatever order a device wrote in.
   * @throws DescriptorError as {@link popUsed}.
   */
  popUsedBurst(tokens: Int32Array, lens: Int32Array, max: number): number {
    const e = this.burstErr;
    if (e !== null) {
      this.burstErr = null;
      throw e;
    }
    let i = 0;
    if (this.inOrder && this.batchLeft === 0) {
      i = this.runInOrder(tokens, lens, max);
      if (i < 0) return 0; // nothing used at the read position
      if (this.runWhole) return i; // stopped at a descriptor not (yet) used, or at max
    }
    return takeUsedEach(this, tokens, lens, i, max, this.late);
  }

  /**
   * {@link popUsedBurst} for a receiveq whose buffers are tied to Buffer IDs
   * as {@link addTied} ties them (buffer i at `addr0 + i × stride`, `len`
   * bytes, device-writable, token i), with VIRTIO_F_IN_ORDER and the ring
   * full: a run of chains taken is made available again in the same pass,
   * each in the slot it came from, which is the slot and id addTied would
   * give it (same ring words written, same state after as popUsedBurst
   * followed by addTied of those chains). Nothing re-added is visible to the
   * device before {@link publish}, so the caller may read the buffers until
   * then. Returns the chains taken; those the per-chain path took (an
   * in-order batch, an error path) are not re-added (`numFree` grew by
   * them): the caller re-adds them with addTied.
   * @throws as {@link popUsed}.
   */
  recycleBurst(tokens: Int32Array, lens: Int32Array, max: number, addr0: number, stride: number, len: number): number {
    if (this.burstErr !== null || !this.inOrder || this.batchLeft !== 0 || this.availPos !== this.usedPos || addr0 + (this.size - 1) * stride + len > TWO32)
      return this.popUsedBurst(tokens, lens, max);
    const m = this.scanRun(max);
    if (m < 0) return 0;
    if (m === 0) return this.popUsedBurst(tokens, lens, max);
    const d = this.desc, descW = this.descW, size = this.size;
    const descs = this.descs, seq = this.seq, tok = this.tokens, wr = this.writable, pubSeq = this.pubSeq;
    const len32 = len | 0, hiMark = AVAIL_MARK_1 | WRITE_MARK, loMark = AVAIL_MARK_0 | WRITE_MARK;
    let pos = this.usedPos, wrap = this.usedWrap, aw = this.availWrap;
    let sq = this.addSeq, firstW = this.firstW, firstWord = this.firstWord;
    let k = 0;
    for (; k < m; k++) {
      const w = descW + pos * 4;
      const word3 = d[w + 3];
      const f = word3 >>> 16;
      const id = word3 & 0xffff;
      if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap || id !== pos || descs[id] !== 1 || !(seq[id] < pubSeq)) break;
      const ulen = (word3 & WRITE_MARK) !== 0 ? d[w + 2] >>> 0 : 0;
      if (ulen > wr[id]) break;
      tokens[k] = tok[id];
      lens[k] = ulen;
      // Re-add buffer `id` in its slot (addTied's writes: only the words that changed, the first flags at publish()).
      const lo = (addr0 + id * stride) | 0;
      if (d[w] !== lo) d[w] = lo;
      if (d[w + 1] !== 0) d[w + 1] = 0;
      if (d[w + 2] !== len32) d[w + 2] = len;
      const nw = id | (aw !== 0 ? hiMark : loMark);
      if (firstW < 0) {
        firstW = w + 3;
        firstWord = nw;
      } else {
        d[w + 3] = nw;
      }
      wr[id] = len;
      seq[id] = sq++;
      tok[id] = id;
      if (++pos === size) { pos = 0; wrap ^= 1; aw ^= 1; }
    }
    this.usedPos = this.readPos = this.availPos = pos;
    this.usedWrap = this.readWrap = wrap;
    this.availWrap = aw;
    this.addSeq = sq;
    this.firstW = firstW;
    this.firstWord = firstWord;
    this.unpubDescs += k;
    this.outstandingPub -= k;
    if (k === m && (m < this.runLim || k === max)) return k;
    // The rest (a batch, a bad id or len) through the per-chain path; the caller re-adds those.
    return k === 0 ? this.popUsedBurst(tokens, lens, max) : takeUsedEach(this, tokens, lens, k, max, this.late);
  }

  /** Error the last {@link popUsedBurst} met after taking chains (thrown by the next call). */
  private burstErr: Error | null = null;
  private readonly late = (e: Error): void => {
    this.burstErr = e;
  };
  /** The last {@link runInOrder} took every used descriptor it saw (none is left for the per-chain path). */
  private runWhole = false;

  /**
   * Used descriptors from the oldest chain's position, up to `max`: their
   * flags read with plain loads behind one acquire load of the first, then
   * one of the last (see {@link popUsedBurst}). Returns the count, -1 when
   * the first is not used, 0 when the read position is not the oldest
   * chain's (after a refused descriptor: the per-chain path decides).
   */
  private scanRun(max: number): number {
    let lim = this.outstandingPub;
    if (max < lim) lim = max;
    this.runWhole = false;
    this.runLim = lim;
    if (lim <= 0) return -1;
    const pos0 = this.usedPos, wrap0 = this.usedWrap;
    if (this.readPos !== pos0 || this.readWrap !== wrap0) return 0;
    const d = this.desc, descW = this.descW, size = this.size;
    let f = Atomics.load(d, descW + pos0 * 4 + 3) >>> 16; // acquire: the run's first descriptor
    if ((f >>> 15) !== wrap0 || ((f >>> 7) & 1) !== wrap0) return -1;
    let m = 1, pos = pos0, wrap = wrap0;
    while (m < lim) {
      if (++pos === size) { pos = 0; wrap ^= 1; }
      f = d[descW + pos * 4 + 3] >>> 16;
      if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap) break;
      m++;
    }
    if (m > 1) {
      let last = pos0 + m - 1, lw = wrap0;
      if (last >= size) { last -= size; lw ^= 1; }
      f = Atomics.load(d, descW + last * 4 + 3) >>> 16;
      if ((f >>> 15) !== lw || ((f >>> 7) & 1) !== lw) m = 1; // cannot happen (coherence): keep the acquired first
    }
    return m;
  }

  /** The `lim` (min of max and chains outstanding) of the last {@link scanRun}. */
  private runLim = 0;

  /**
   * In-order run of one-descriptor chains (the common RX case) from the read
   * position: returns the chains taken, -1 when the descriptor at the read
   * position is not used. Stops before anything else (a batch naming a later
   * chain, a chain of several descriptors, a bad id or len), which
   * {@link popUsedBurst} then hands to the per-chain path.
   */
  private runInOrder(tokens: Int32Array, lens: Int32Array, max: number): number {
    const m = this.scanRun(max);
    if (m <= 0) return m;
    const d = this.desc, descW = this.descW, size = this.size;
    const pos0 = this.usedPos, wrap0 = this.usedWrap;
    let pos: number, wrap: number, f: number;
    const descs = this.descs, seq = this.seq, tok = this.tokens, wr = this.writable, pubSeq = this.pubSeq;
    pos = pos0;
    wrap = wrap0;
    let k = 0;
    for (; k < m; k++) {
      const w = descW + pos * 4;
      const word3 = d[w + 3];
      f = word3 >>> 16;
      const id = word3 & 0xffff;
      if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap || id !== pos || descs[id] !== 1 || !(seq[id] < pubSeq)) break;
      const len = (word3 & WRITE_MARK) !== 0 ? d[w + 2] >>> 0 : 0;
      if (len > wr[id]) break;
      descs[id] = 0;
      tokens[k] = tok[id];
      lens[k] = len;
      if (++pos === size) { pos = 0; wrap ^= 1; }
    }
    this.usedPos = this.readPos = pos;
    this.usedWrap = this.readWrap = wrap;
    this.numFree += k;
    this.outstandingPub -= k;
    this.runWhole = k === m && (m < this.runLim || k === max);
    return k;
  }

  /**
   * Reclaim the next used buffer (§2.8.22): returns its Buffer ID, frees its
   * slots (and id), leaves the device's byte count in {@link usedLen} and the
   * caller's token in {@link usedToken}. With VIRTIO_F_IN_ORDER a used
   * descriptor naming a later chain completes every chain up to it (§2.8.12):
   * they come back one per call, in order, with usedLen 0 except the last,
   * which carries the used len. Call only when usedPending() > 0.
   * @throws DescriptorError USED_ID_INVALID when the id is not a chain made
   * available and not reclaimed (the used descriptor is consumed: the read
   * position moves one slot, as the chain's footprint is unknown; the caller
   * should reset the queue); USED_LEN_INVALID when the len exceeds the
   * chain's writable bytes (the chain is still reclaimed: slots freed,
   * {@link usedToken} set, {@link usedLen} 0).
   */
  popUsed(): number {
    const size = this.size;
    if (this.batchLeft === 0) {
      const w = this.descW + this.readPos * 4;
      const word3 = Atomics.load(this.desc, w + 3);
      const id = word3 & 0xffff;
      const len = (word3 & WRITE_MARK) !== 0 ? this.desc[w + 2] >>> 0 : 0;
      let k = 1;
      if (!this.isOut(id) || (this.inOrder && (k = this.runLength(this.usedPos, id, this.outstandingPub)) === 0)) {
        if (++this.readPos === size) { this.readPos = 0; this.readWrap ^= 1; }
        if (!this.inOrder) { this.usedPos = this.readPos; this.usedWrap = this.readWrap; }
        throw this.err('USED_ID_INVALID', `device returned buffer id ${id}, which is not outstanding`);
      }
      this.batchLeft = k;
      this.batchId = id;
      this.batchLen = len;
      // The next used descriptor is read after the batch's last chain.
      let skip = this.descs[id];
      if (this.inOrder) { skip += id - this.readPos; if (id < this.readPos) skip += size; }
      let p = this.readPos + skip;
      if (p >= size) { p -= size; this.readWrap ^= 1; }
      this.readPos = p;
    }
    const id = this.inOrder ? this.usedPos : this.batchId;
    const n = this.descs[id];
    this.descs[id] = 0;
    this.numFree += n;
    this.outstandingPub--;
    if (!this.inOrder) this.freeIds[this.freeCount++] = id;
    let p = this.usedPos + n;
    if (p >= size) { p -= size; this.usedWrap ^= 1; }
    this.usedPos = p;
    this.usedToken = this.tokens[id];
    if (--this.batchLeft !== 0) {
      this.usedLen = 0;
      return id;
    }
    const len = this.batchLen;
    if (len > this.writable[id]) {
      this.usedLen = 0;
      throw this.err('USED_LEN_INVALID', `device wrote ${len} bytes into ${this.writable[id]} writable bytes`);
    }
    this.usedLen = len;
    return id;
  }

  /**
   * Ask for (true) or suppress (false) used-buffer notifications by writing
   * the Driver Event Suppression structure (§2.8.10): with VIRTIO_F_EVENT_IDX
   * enabling writes RING_EVENT_FLAGS_DESC with off_wrap = the position the
   * next used descriptor will be written at | wrap << 15 (Linux
   * virtqueue_enable_cb_prepare_packed), otherwise ENABLE; disabling writes
   * DISABLE. After enabling, check {@link usedPending} again before sleeping.
   */
  setNotification(enable: boolean): void {
    let word = RING_EVENT_FLAGS_DISABLE << 16;
    if (enable) word = this.eventIdx ? (RING_EVENT_FLAGS_DESC << 16) | this.readPos | (this.readWrap << WRAP_SHIFT) : RING_EVENT_FLAGS_ENABLE << 16;
    Atomics.store(this.drvEvt, this.drvEvtW, word);
  }

  /** `avail` = next position the driver fills | wrap << 15; `used` = position of the next chain it reclaims | wrap << 15. */
  state(): QueueState {
    return { avail: this.availPos | (this.availWrap << WRAP_SHIFT), used: this.usedPos | (this.usedWrap << WRAP_SHIFT) };
  }

  /** {@link DriverQueue.setState}: positions and wrap counters from `s` (position | wrap << 15), every Buffer ID free. */
  setState(s: QueueState): void {
    const ok = (x: number) => Number.isInteger(x) && x >= 0 && x <= 0xffff && (x & 0x7fff) < this.size;
    if (!ok(s.avail) || !ok(s.used))
      throw new QueueConfigError(`queue ${this.index}: packed ring state avail 0x${s.avail.toString(16)} used 0x${s.used.toString(16)} is outside a ${this.size}-entry ring`);
    this.availPos = s.avail & 0x7fff;
    this.availWrap = (s.avail >> WRAP_SHIFT) & 1;
    this.usedPos = this.readPos = s.used & 0x7fff;
    this.usedWrap = this.readWrap = (s.used >> WRAP_SHIFT) & 1;
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeCount = this.size;
    this.numFree = this.size;
    this.descs.fill(0);
    this.addSeq = this.pubSeq = 0;
    this.outstandingPub = 0;
    this.batchLeft = 0;
    this.firstW = -1;
    this.unpubDescs = 0;
    this.burstErr = null;
  }

  private err(code: DescriptorErrorCode, msg: string): DescriptorError {
    const e = new DescriptorError(code, `queue ${this.index}: ${msg}`);
    e.queue = this.index;
    return e;
  }
}
