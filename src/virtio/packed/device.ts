/**
 * Device half of a packed virtqueue (virtio spec v1.4 §2.8): reads the
 * descriptors the driver made available in the descriptor ring, walks
 * chains (§2.8.6) and indirect tables (§2.8.8), writes used descriptors back
 * into the same ring (§2.8.7, in-order batches §2.8.12), and decides on
 * used-buffer notifications from the Driver Event Suppression structure
 * (§2.8.10, §2.8.14).
 *
 * Hot path rules (as the split ring): no allocation, no BigInt, no closures,
 * monomorphic; the ring is read and written through Int32 views made once.
 * Descriptor word 3 (id | flags << 16) of the first descriptor of a chain is
 * read with Atomics.load (acquire) before its addr/len; the first used
 * descriptor of a publish batch is written last with Atomics.store
 * (release), so the driver never sees a partial batch (§2.8.11,
 * "Multi-buffer requests").
 *
 * Used descriptors overwrite the driver's available ones (§2.8.6). So that a
 * device killed without an inflight buffer (vhost-user: SIGKILL of `serve`,
 * the front-end resuming the next one at the driver's used position) leaves
 * a ring its successor can go on with, {@link pushUsed} writes nothing into
 * the ring: the batch waits in a per-queue pending array and
 * {@link publish} writes it in one go, first descriptor last (DPDK's vhost
 * keeps such a shadow too, `shadow_used_packed`). A device killed inside
 * that store loop leaves complete used descriptors behind the not yet
 * written first one; the next device finds them at its read position
 * (AVAIL = USED = its wrap counter, which no descriptor of the driver and
 * no used descriptor of a living device has there) and keeps them as used
 * ({@link adoptedUsed}), after it has used the chains before them.
 */
import { DescriptorError, QueueConfigError, type DescriptorErrorCode } from '../errors.js';
import { DescChain } from '../chain.js';
import { IndirectTable } from '../indirect.js';
import type { GuestMemory } from '../memory.js';
import type { DeviceQueue, QueueLayout, QueueOptions, QueueState } from '../queue.js';
import {
  checkPackedLayout, packedNeedEvent, POS_MASK, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
  SCAN_LIMIT, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE, WRAP_SHIFT,
} from './layout.js';
import { PackedRingViews } from './views.js';

const TWO32 = 4294967296;
/** Word-3 flag bits (flags << 16) of a used descriptor, by wrap counter. */
const USED_MARK = (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED) << 16;
const WRITE_MARK = VIRTQ_DESC_F_WRITE << 16;

export class PackedDeviceQueue implements DeviceQueue {
  readonly size: number;
  readonly index: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  readonly indirect: boolean;
  /** Next ring position the device reads, and the Device Ring Wrap Counter for it (0/1, §2.8.1). */
  protected availPos = 0;
  protected availWrap = 1;
  /** Next ring position the device writes a used descriptor at, and its wrap counter. Includes unpublished entries. */
  protected usedPos = 0;
  protected usedWrap = 1;
  /** Descriptors the used position moved since the last publish (for event-index decisions). */
  private pubDelta = 0;
  /**
   * Used descriptors pushed and not yet written (written at publish, in ring
   * order), 4 words each: word index of the descriptor, its len, its word 3
   * (id | flags << 16), unused.
   */
  private readonly pend: Int32Array;
  private pendN = 0;
  /**
   * Ring slots a previous device left used but unpublished at the read
   * position (killed inside {@link publish}) that this one kept as used; 0
   * on a ring only this device wrote.
   */
  adoptedUsed = 0;
  /** Inside a pending() or popSingle() that kept such descriptors already (at most once per call). */
  private adopting = false;
  /** In-order: an open run of zero-length chains not yet written (its ring position/wrap and last id). */
  private runOpen = false;
  private runPos = 0;
  private runWrap = 0;
  private runId = 0;
  /** pending() cache: `known` chains are available from availPos; the scan resumes at scanPos/scanWrap. */
  private known = 0;
  private scanPos = 0;
  private scanWrap = 1;
  /** The scan met a chain it cannot skip (longer than the ring): count nothing past it. */
  private scanStuck = false;
  /** Buffer IDs popped and not yet pushed used (1 = in flight). */
  private readonly inflight: Uint8Array;
  /** Per ring position where a popped chain started: its id (-1 after an error) and its slot count, for rewind(). */
  private readonly popId: Int32Array;
  private readonly popDescs: Uint16Array;
  private readonly table: IndirectTable;
  private readonly mem: GuestMemory;
  /** Set by {@link popSingle}: the popped chain's Buffer ID, and its one buffer's byte offset (in its region's buffer) and length. */
  singleId = 0;
  singleOff = 0;
  singleLen = 0;
  protected readonly desc: Int32Array;
  protected readonly descW: number;
  /** The descriptor ring's buffer as 8-byte words (null when the ring is not 8-byte aligned in it): words 2-3 in one store. */
  private readonly desc64: BigInt64Array | null;
  private readonly drvEvt: Int32Array;
  private readonly drvEvtW: number;
  private readonly devEvt: Int32Array;
  private readonly devEvtW: number;

  /**
   * Reads nothing and writes nothing in guest memory (the driver zeroed the ring).
   * @throws QueueConfigError for a bad size, format or alignment (§2.8.10.1);
   * GuestMemoryError when a part is not wholly inside one guest memory region.
   */
  constructor(mem: GuestMemory, layout: QueueLayout, opts: QueueOptions) {
    checkPackedLayout(layout);
    this.size = layout.size;
    this.index = opts.index ?? -1;
    this.eventIdx = opts.eventIdx;
    this.inOrder = opts.inOrder;
    this.indirect = opts.indirect;
    this.inflight = new Uint8Array(this.size);
    this.popId = new Int32Array(this.size);
    this.popDescs = new Uint16Array(this.size);
    this.pend = new Int32Array(4 * this.size);
    this.table = new IndirectTable(mem);
    this.mem = mem;
    const v = new PackedRingViews(mem, layout, false);
    this.desc = v.desc;
    this.descW = v.descW;
    const buf = v.desc.buffer;
    this.desc64 = (this.descW & 1) === 0 && v.desc.byteOffset === 0 ? new BigInt64Array(buf, 0, buf.byteLength >>> 3) : null;
    this.drvEvt = v.drvEvt;
    this.drvEvtW = v.drvEvtW;
    this.devEvt = v.devEvt;
    this.devEvtW = v.devEvtW;
  }

  /**
   * Chains available and not popped (§2.8.1-§2.8.3), counted by scanning
   * ahead from the device's position up to {@link SCAN_LIMIT}: at least 1
   * whenever one is available. Reads only word 3 of each chain's first
   * descriptor (Atomics.load) and skips along VIRTQ_DESC_F_NEXT; what it
   * learned is kept, so repeated calls only scan new descriptors.
   * Never throws: a malformed chain counts as one and pop() reports it.
   */
  pending(): number {
    let n = this.known;
    if (n === 0) {
      this.scanPos = this.availPos;
      this.scanWrap = this.availWrap;
      this.scanStuck = false;
    }
    if (n >= SCAN_LIMIT || this.scanStuck) return n;
    const d = this.desc, w3 = this.descW + 3, size = this.size;
    let pos = this.scanPos, wrap = this.scanWrap;
    while (n < SCAN_LIMIT) {
      const f = Atomics.load(d, w3 + pos * 4) >>> 16;
      if (((f >>> 7) & 1) !== wrap || (f >>> 15) === wrap) {
        // AVAIL = USED = wrap at the read position: used descriptors a killed predecessor left (see the file comment).
        if (n === 0 && ((f >>> 7) & 1) === wrap && !this.adopting && this.adoptStale()) {
          // Once per call (a driver rewriting the ring as fast as it is kept cannot hold the worker here).
          this.adopting = true;
          pos = this.availPos;
          wrap = this.availWrap;
          continue;
        }
        break;
      }
      n++;
      let flags = f, hops = 1;
      if (++pos === size) { pos = 0; wrap ^= 1; }
      while ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
        if (hops === size) { this.scanStuck = true; break; }
        flags = d[w3 + pos * 4] >>> 16;
        hops++;
        if (++pos === size) { pos = 0; wrap ^= 1; }
      }
      if (this.scanStuck) break;
    }
    this.known = n;
    this.scanPos = pos;
    this.scanWrap = wrap;
    this.adopting = false;
    return n;
  }

  /**
   * Pop the next available chain into `chain` (§2.8.6-§2.8.8): `chain.id` =
   * the Buffer ID of its last descriptor, `chain.descs` = ring slots taken
   * (1 for an indirect chain), buffers translated into guest memory (a buffer
   * crossing adjacent regions becomes several pieces). Call only when
   * pending() > 0. The id is in flight until {@link pushUsed}.
   * @throws DescriptorError (with `queue` set; the whole chain is consumed):
   * CHAIN_TOO_LONG (more ring slots than the queue size, or an indirect table
   * of more entries), BUFFER_OUT_OF_RANGE (a buffer or indirect table outside
   * guest memory), READABLE_AFTER_WRITABLE, CHAIN_BYTES_TOO_LARGE (over 2^32
   * bytes), INDIRECT_NOT_NEGOTIATED, INDIRECT_WITH_NEXT (an indirect
   * descriptor that is not alone in its chain), INDIRECT_BAD_LENGTH (0 or not
   * a multiple of 16), NESTED_INDIRECT, ID_OUT_OF_RANGE (id >= size),
   * ID_IN_FLIGHT (id popped and not yet used).
   * @throws RangeError when nothing is available (a caller bug).
   */
  pop(chain: DescChain): void {
    if (this.known === 0 && this.pending() === 0) throw new RangeError(`queue ${this.index}: pop() with no chain available`);
    this.known--;
    const d = this.desc, base = this.descW, size = this.size;
    const start = this.availPos;
    let pos = start, wrap = this.availWrap;
    let slots = 0, total = 0, word3 = 0;
    chain.reset(0);
    for (;;) {
      if (slots === size) throw this.fail('CHAIN_TOO_LONG', `chain from position ${start} runs over ${size} descriptors`, start, pos, wrap, slots, 0);
      const w = base + pos * 4;
      word3 = slots === 0 ? Atomics.load(d, w + 3) : d[w + 3];
      const flags = word3 >>> 16;
      const at = pos;
      slots++;
      if (++pos === size) { pos = 0; wrap ^= 1; }
      const addr = (d[w + 1] >>> 0) * TWO32 + (d[w] >>> 0);
      const len = d[w + 2] >>> 0;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.indirect) throw this.fail('INDIRECT_NOT_NEGOTIATED', 'VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC', at, pos, wrap, slots, flags);
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0 || slots !== 1)
          throw this.fail('INDIRECT_WITH_NEXT', 'an indirect descriptor must be the only one in its chain', at, pos, wrap, slots, flags);
        if (len === 0 || (len & 15) !== 0) throw this.fail('INDIRECT_BAD_LENGTH', `indirect table length ${len} is not a non-zero multiple of 16`, at, pos, wrap, slots, flags);
        const n = len >>> 4;
        if (n > size) throw this.fail('CHAIN_TOO_LONG', `indirect table of ${n} entries exceeds queue size ${size}`, at, pos, wrap, slots, flags);
        const t = this.table;
        if (!t.load(addr, len)) throw this.fail('BUFFER_OUT_OF_RANGE', `indirect table [0x${addr.toString(16)}, +${len}) outside guest memory`, at, pos, wrap, slots, flags);
        const words = t.words;
        for (let i = 0, tw = t.base; i < n; i++, tw += 4) {
          const tflags = words[tw + 3] >>> 16;
          if ((tflags & VIRTQ_DESC_F_INDIRECT) !== 0) throw this.fail('NESTED_INDIRECT', 'indirect descriptor inside an indirect table', i, pos, wrap, slots, 0);
          const ta = (words[tw + 1] >>> 0) * TWO32 + (words[tw] >>> 0);
          const tl = words[tw + 2] >>> 0;
          const code = this.append(chain, ta, tl, (tflags & VIRTQ_DESC_F_WRITE) !== 0);
          if (code !== null) throw this.fail(code, this.appendMessage(code, ta, tl), i, pos, wrap, slots, 0);
          total += tl;
          if (total > TWO32) throw this.fail('CHAIN_BYTES_TOO_LARGE', 'chain longer than 2^32 bytes', i, pos, wrap, slots, 0);
        }
        break;
      }
      const code = this.append(chain, addr, len, (flags & VIRTQ_DESC_F_WRITE) !== 0);
      if (code !== null) throw this.fail(code, this.appendMessage(code, addr, len), at, pos, wrap, slots, flags);
      total += len;
      if (total > TWO32) throw this.fail('CHAIN_BYTES_TOO_LARGE', 'chain longer than 2^32 bytes', at, pos, wrap, slots, flags);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
    }
    // Consumed: whatever the id says, the chain's slots are behind us.
    this.availPos = pos;
    this.availWrap = wrap;
    this.popDescs[start] = slots;
    this.popId[start] = -1;
    if (this.known === 0) this.scanStuck = false;
    const id = word3 & 0xffff;
    if (id >= size) throw this.err('ID_OUT_OF_RANGE', `buffer id ${id} >= queue size ${size}`, start);
    if (this.inflight[id] !== 0) throw this.err('ID_IN_FLIGHT', `buffer id ${id} is already in flight`, start);
    this.inflight[id] = 1;
    this.popId[start] = id;
    chain.id = id;
    chain.descs = slots;
  }

  /**
   * Fast path for the common chain of one descriptor (no NEXT, no INDIRECT)
   * with VIRTQ_DESC_F_WRITE exactly as `write` (VIRTQ_DESC_F_WRITE or 0), at
   * least `minLen` bytes wholly inside one guest memory region, and a Buffer
   * ID in range and not in flight: pops it as {@link pop} would and returns
   * the region's index, with id, byte offset and length in {@link singleId},
   * {@link singleOff}, {@link singleLen}. Reads the descriptor's flags
   * itself (Atomics.load, acquire), so it needs no {@link pending} first.
   * Returns -2 when no chain is available, and -1 (popping nothing) for any
   * other available chain, valid or not: the caller then uses {@link pop},
   * which validates it.
   */
  popSingle(write: number, minLen: number): number {
    const d = this.desc, size = this.size;
    const start = this.availPos;
    const w = this.descW + start * 4;
    const word3 = Atomics.load(d, w + 3);
    const f = word3 >>> 16;
    const wrap = this.availWrap;
    if (((f >>> 7) & 1) !== wrap || (f >>> 15) === wrap) {
      if (((f >>> 7) & 1) === wrap && !this.adopting && this.adoptStale()) {
        this.adopting = true; // one retry (see pending())
        const r = this.popSingle(write, minLen);
        this.adopting = false;
        return r;
      }
      return -2;
    }
    if ((f & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)) !== write) return -1;
    const id = word3 & 0xffff;
    if (id >= size || this.inflight[id] !== 0) return -1;
    const len = d[w + 2] >>> 0;
    if (len < minLen) return -1;
    const mem = this.mem;
    const r = mem.find((d[w + 1] >>> 0) * TWO32 + (d[w] >>> 0), len);
    if (r < 0) return -1;
    // The scan cache: `known` counts from availPos (0: the next pending() rescans from the new position).
    if (this.known !== 0) {
      if (--this.known === 0) this.scanStuck = false;
    }
    let pos = start + 1;
    if (pos === size) {
      pos = 0;
      this.availWrap = wrap ^ 1;
    }
    this.availPos = pos;
    this.popDescs[start] = 1;
    this.popId[start] = id;
    this.inflight[id] = 1;
    this.singleId = id;
    this.singleOff = mem.off;
    this.singleLen = len;
    return r;
  }

  /** Append one buffer; returns null, or the error code (readable after writable, outside memory). */
  private append(chain: DescChain, addr: number, len: number, writable: boolean): DescriptorErrorCode | null {
    if (!writable && chain.count !== chain.readable) return 'READABLE_AFTER_WRITABLE';
    return chain.append(addr, len, writable) ? null : 'BUFFER_OUT_OF_RANGE';
  }

  private appendMessage(code: DescriptorErrorCode, addr: number, len: number): string {
    return code === 'READABLE_AFTER_WRITABLE'
      ? 'device-readable descriptor after a device-writable one'
      : `buffer [0x${addr.toString(16)}, +${len}) outside guest memory`;
  }

  /**
   * Build the error for a malformed chain and consume the chain: skip the
   * rest of its slots (while the descriptor just read had NEXT, at most
   * `size` slots in all), so the position moves past it.
   * @param descIndex ring position (or table entry index) of the faulty descriptor
   * @param pos,wrap,slots position after the last slot read, and slots read
   * @param flags flags of the last ring descriptor read (its NEXT says whether more follow)
   */
  private fail(code: DescriptorErrorCode, msg: string, descIndex: number, pos: number, wrap: number, slots: number, flags: number): DescriptorError {
    const d = this.desc, w3 = this.descW + 3, size = this.size, start = this.availPos;
    while ((flags & VIRTQ_DESC_F_NEXT) !== 0 && slots < size) {
      flags = d[w3 + pos * 4] >>> 16;
      slots++;
      if (++pos === size) { pos = 0; wrap ^= 1; }
    }
    this.availPos = pos;
    this.availWrap = wrap;
    this.popDescs[start] = slots;
    this.popId[start] = -1;
    // The scan may have skipped this chain differently (it stops at `size` hops too): rescan from here.
    this.known = 0;
    return this.err(code, msg, descIndex);
  }

  /** An opaque read position for {@link rewind}: position | wrap << 15 (§2.8.1). */
  mark(): number {
    return this.availPos | (this.availWrap << WRAP_SHIFT);
  }

  /**
   * Give back every chain popped since {@link mark} returned `m` (they will be
   * popped again; their ids are no longer in flight). Chains popped since
   * then must not have been pushed used.
   * @throws RangeError for a mark that is no position of this ring (a caller
   *   bug); DescriptorError AVAIL_IDX_JUMP when the read position is not
   *   within one lap ahead of the mark: more than a ring of descriptors was
   *   popped since (the position only moves forward from a mark, so only a
   *   driver that rewrote descriptors the device still holds, i.e. lied
   *   about the wrap counter, gets there).
   */
  rewind(m: number): void {
    const mpos = m & POS_MASK, mwrap = (m >>> WRAP_SHIFT) & 1, size = this.size;
    let dist = this.availPos - mpos;
    if (mwrap !== this.availWrap) dist += size;
    if (mpos >= size) throw new RangeError(`queue ${this.index}: mark ${m} is no position of a ${size}-entry ring`);
    if (dist < 0 || dist > size) throw this.err('AVAIL_IDX_JUMP', `more than ${size} descriptors made available since mark ${m} (the driver reused descriptors the device holds)`);
    let p = mpos;
    while (dist > 0) {
      const id = this.popId[p], n = this.popDescs[p];
      if (n === 0) break;
      if (id >= 0) this.inflight[id] = 0;
      dist -= n;
      p += n;
      if (p >= size) p -= size;
    }
    this.availPos = mpos;
    this.availWrap = mwrap;
    this.known = 0;
    this.scanStuck = false;
  }

  /**
   * Return a chain (§2.8.7): a used descriptor with Buffer ID `id`, `len`
   * bytes written (VIRTQ_DESC_F_WRITE set when len > 0, §2.8.3), and AVAIL =
   * USED = the device's used wrap counter, at the used position, which then
   * moves `descs` slots on. With VIRTIO_F_IN_ORDER a run of chains pushed
   * with len 0 becomes one used descriptor carrying the id of the run's last
   * chain at the position of its first (§2.8.12); a chain with len != 0 ends
   * the run and carries its len. Nothing is written into the ring before
   * {@link publish}.
   * @param len bytes written into the chain's device-writable buffers
   * @param descs ring slots the chain took (`chain.descs`)
   * @throws RangeError for an id outside 0..size-1, descs outside 1..size, or
   *   more than `size` used descriptors without a publish (caller bugs).
   */
  pushUsed(id: number, len: number, descs: number): void {
    const size = this.size;
    if (!(id >= 0 && id < size) || !(descs >= 1 && descs <= size))
      throw new RangeError(`queue ${this.index}: pushUsed(${id}, ${len}, ${descs}) out of range`);
    this.inflight[id] = 0;
    const at = this.usedPos, atWrap = this.usedWrap;
    let p = at + descs;
    if (p >= size) { p -= size; this.usedWrap ^= 1; }
    this.usedPos = p;
    this.pubDelta += descs;
    let pos = at, wrap = atWrap;
    if (this.inOrder) {
      if (!this.runOpen) {
        this.runPos = at;
        this.runWrap = atWrap;
      } else {
        pos = this.runPos;
        wrap = this.runWrap;
      }
      this.runId = id;
      this.runOpen = len === 0;
      if (len === 0) return;
    }
    // queueUsed(pos, wrap, id, len), inline
    const i = this.pendN;
    if (i === size) throw new RangeError(`queue ${this.index}: more than ${size} used descriptors pushed without a publish()`);
    const pe = this.pend, k = i << 2;
    pe[k] = this.descW + pos * 4;
    pe[k + 1] = len;
    pe[k + 2] = id | (wrap !== 0 ? USED_MARK : 0) | (len !== 0 ? WRITE_MARK : 0);
    this.pendN = i + 1;
  }

  /** Queue a used descriptor for {@link publish} (nothing is written into the ring before). */
  private queueUsed(pos: number, wrap: number, id: number, len: number): void {
    const i = this.pendN;
    if (i === this.size) throw new RangeError(`queue ${this.index}: more than ${this.size} used descriptors pushed without a publish()`);
    const pe = this.pend, k = i << 2;
    pe[k] = this.descW + pos * 4;
    pe[k + 1] = len;
    pe[k + 2] = id | (wrap !== 0 ? USED_MARK : 0) | (len !== 0 ? WRITE_MARK : 0);
    this.pendN = i + 1;
  }

  /**
   * At the read position (nothing in flight: used position = read
   * position), used descriptors of the current lap that no driver and no
   * living device writes there: a predecessor killed inside publish() wrote
   * them, complete, behind a first one it never wrote. Keep them as used:
   * the read and used positions move past the slots each one covers, and
   * the next publish() counts them for the notification decision. The slots
   * are found as the driver will skip them: through the descriptor without
   * VIRTQ_DESC_F_NEXT that carries the used Buffer ID among the available
   * descriptors that follow (the chain's rest, or an in-order batch,
   * §2.8.6, §2.8.12), else the one slot; this relies on the predecessor
   * having used chains in the order it popped them (NetDevicePair does).
   * At most `size` slots per call. Returns whether any were kept.
   */
  private adoptStale(): boolean {
    if (this.usedPos !== this.availPos || this.usedWrap !== this.availWrap) return false;
    const d = this.desc, w3 = this.descW + 3, size = this.size;
    let pos = this.availPos, wrap = this.availWrap, total = 0;
    while (total < size) {
      const word3 = Atomics.load(d, w3 + pos * 4), f = word3 >>> 16;
      if ((f >>> 15) !== wrap || ((f >>> 7) & 1) !== wrap) break;
      const id = word3 & 0xffff;
      let n = 1, p = pos + 1, pw = wrap;
      if (p === size) { p = 0; pw ^= 1; }
      for (let k = 1; k < size - total; k++) {
        const g = Atomics.load(d, w3 + p * 4), gf = g >>> 16;
        if (((gf >>> 7) & 1) !== pw || (gf >>> 15) === pw) break;
        if ((gf & VIRTQ_DESC_F_NEXT) === 0 && (g & 0xffff) === id) {
          n = k + 1;
          break;
        }
        if (++p === size) { p = 0; pw ^= 1; }
      }
      total += n;
      pos += n;
      if (pos >= size) { pos -= size; wrap ^= 1; }
    }
    if (total === 0) return false;
    if (this.runOpen) {
      // An in-order run ends before the kept slots.
      this.runOpen = false;
      this.queueUsed(this.runPos, this.runWrap, this.runId, 0);
    }
    this.availPos = this.usedPos = pos;
    this.availWrap = this.usedWrap = wrap;
    this.pubDelta += total;
    this.adoptedUsed += total;
    this.known = 0;
    this.scanStuck = false;
    return true;
  }

  /** Used entries pushed since the last {@link publish}. */
  get unpublished(): boolean {
    return this.pubDelta !== 0;
  }

  /**
   * Make the pushed used descriptors visible: close an open in-order run,
   * write the batch in ring order from its second entry (len and word 3:
   * id, flags; len first unless it exceeds the len in that slot), then the
   * first one's len and its word 3 with Atomics.store (release, §2.8.11),
   * so the driver sees the whole batch at once. Then read the Driver Event Suppression structure
   * (§2.8.10, §2.8.14). Returns true when the driver wants a used-buffer
   * notification: flags ENABLE (or reserved values) → true, DISABLE →
   * false, DESC with VIRTIO_F_EVENT_IDX → true when the used position just
   * moved past the event descriptor (off_wrap). DESC without EVENT_IDX is
   * treated as ENABLE. False when nothing was pushed.
   */
  publish(): boolean {
    const delta = this.pubDelta;
    if (delta === 0) return false;
    if (this.runOpen) {
      this.runOpen = false;
      this.queueUsed(this.runPos, this.runWrap, this.runId, 0);
    }
    const n = this.pendN;
    if (n !== 0) {
      // Killed in this loop, a device leaves complete used descriptors behind an untouched first one; its
      // successor keeps them (adoptStale). Between an entry's two stores: len first when it does not exceed
      // the len in the slot (offered again, that descriptor only shrinks), else word 3 first (kept as used,
      // it carries the smaller len that was there).
      const d = this.desc, pe = this.pend, end = n << 2;
      for (let k = 4; k < end; k += 4) {
        const w = pe[k], len = pe[k + 1];
        if ((len >>> 0) <= (d[w + 2] >>> 0)) {
          d[w + 2] = len;
          d[w + 3] = pe[k + 2];
        } else {
          d[w + 3] = pe[k + 2];
          d[w + 2] = len;
        }
      }
      // The first entry last, its flags publishing the batch (release). A len that does not exceed the
      // slot's goes first (killed between, the chain is offered again with a shorter first buffer); a
      // larger one (a chain whose first buffer is smaller than what the chain received) goes with the
      // flags in one 8-byte store, so no kill can offer that buffer again with the grown len.
      const w = pe[0], len = pe[1], desc64 = this.desc64;
      if ((len >>> 0) <= (d[w + 2] >>> 0) || desc64 === null) {
        d[w + 2] = len;
        Atomics.store(d, w + 3, pe[2]);
      } else {
        Atomics.store(desc64, (w + 2) >> 1, BigInt.asIntN(64, (BigInt(pe[2] >>> 0) << 32n) | BigInt(len >>> 0)));
      }
      this.pendN = 0;
    }
    this.pubDelta = 0;
    const ev = Atomics.load(this.drvEvt, this.drvEvtW);
    const flags = (ev >>> 16) & 3;
    if (this.eventIdx && flags === RING_EVENT_FLAGS_DESC) return packedNeedEvent(ev & 0xffff, this.usedPos, this.usedWrap, delta, this.size);
    return flags !== RING_EVENT_FLAGS_DISABLE;
  }

  /**
   * Ask for (true) or suppress (false) available-buffer notifications by
   * writing the Device Event Suppression structure (§2.8.10): with
   * VIRTIO_F_EVENT_IDX enabling writes RING_EVENT_FLAGS_DESC with off_wrap =
   * the device's next read position | wrap << 15 (a notification once the
   * driver makes that descriptor available); otherwise ENABLE; disabling
   * writes DISABLE. After enabling, call {@link pending} again before sleeping.
   */
  setNotification(enable: boolean): void {
    let word = RING_EVENT_FLAGS_DISABLE << 16;
    if (enable) word = this.eventIdx ? (RING_EVENT_FLAGS_DESC << 16) | this.availPos | (this.availWrap << WRAP_SHIFT) : RING_EVENT_FLAGS_ENABLE << 16;
    Atomics.store(this.devEvt, this.devEvtW, word);
  }

  /**
   * Where the ring stands (vhost-user vring base for packed rings): `avail` =
   * next read position | wrap << 15, `used` = next used position | wrap << 15,
   * counting pushed but unpublished entries as used.
   */
  state(): QueueState {
    return { avail: this.availPos | (this.availWrap << WRAP_SHIFT), used: this.usedPos | (this.usedWrap << WRAP_SHIFT) };
  }

  /**
   * Restart from a saved position (vhost-user SET_VRING_BASE): forgets
   * in-flight ids, cached scans and unpublished used entries.
   * @throws QueueConfigError for a position >= size or a value above 16 bits.
   */
  setState(s: QueueState): void {
    const size = this.size;
    if (!(s.avail >= 0 && s.avail <= 0xffff && (s.avail & POS_MASK) < size) || !(s.used >= 0 && s.used <= 0xffff && (s.used & POS_MASK) < size))
      throw new QueueConfigError(`queue ${this.index}: ring state ${s.avail}/${s.used} outside a ${size}-entry packed ring`);
    this.availPos = s.avail & POS_MASK;
    this.availWrap = s.avail >>> WRAP_SHIFT;
    this.usedPos = s.used & POS_MASK;
    this.usedWrap = s.used >>> WRAP_SHIFT;
    this.inflight.fill(0);
    this.known = 0;
    this.scanStuck = false;
    this.pubDelta = 0;
    this.pendN = 0;
    this.runOpen = false;
  }

  private err(code: DescriptorErrorCode, msg: string, desc = -1): DescriptorError {
    const e = new DescriptorError(code, `queue ${this.index}: ${msg}`, desc);
    e.queue = this.index;
    return e;
  }
}
