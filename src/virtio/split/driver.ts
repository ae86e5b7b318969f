/**
 * Driver half of a split virtqueue (virtio spec v1.4 §2.7): owns the
 * descriptor table's free list, adds buffers to the available ring, reclaims
 * used buffers, and decides when the device needs an available-buffer
 * notification (§2.7.13.3, event index §2.7.10).
 *
 * The driver keeps its own shadow of every chain it made available (`next`
 * links, lengths, tokens), so a buggy or hostile device that rewrites the
 * descriptor table or returns a bogus id can corrupt nothing but that one
 * completion: the id is checked and rejected with a DescriptorError.
 *
 * With VIRTIO_F_IN_ORDER (§2.7.9) descriptors are used in ring order (freed
 * ones go to the tail of the free list), and a used element whose id is not
 * the oldest outstanding chain completes every chain up to it: each is
 * returned by {@link popUsed} in turn, with length 0 but for the last.
 * Implements {@link DriverQueue}.
 */
import { DescriptorError, QueueConfigError } from '../errors.js';
import type { GuestMemory } from '../memory.js';
import type { BufferSpec, DriverQueue, QueueState } from '../queue.js';
import {
  checkLayout, needEvent,
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY, type SplitQueueLayout,
} from './layout.js';
import { SplitRingViews } from './views.js';
import { takeUsedEach } from '../used-burst.js';
import type { SplitQueueOptions } from './device.js';

const TWO32 = 4294967296;
const NONE = 0xffff;

export type { BufferSpec };

export class SplitDriverQueue implements DriverQueue {
  readonly size: number;
  readonly index: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly inOrder: boolean;
  /** Free descriptors. */
  numFree: number;
  /** Shadow of avail->idx (u16). */
  availIdx = 0;
  /** Next used-ring slot to read (u16). */
  lastUsedIdx = 0;
  /** used->idx as {@link usedPending} last read it. */
  private usedEnd = 0;
  /** Byte count the device wrote, from the last {@link popUsed}. */
  usedLen = 0;
  private publishedAvailIdx = 0;
  /** Chains added and not yet reclaimed (heads with chainLen != 0). */
  private outstanding = 0;
  private freeHead = 0;
  /** Last free descriptor (in-order frees append here, keeping ring order). */
  private freeTail: number;
  /** In-order: heads outstanding, oldest first (a ring of `size`), and the open batch's last id (-1 none) and len. */
  private readonly order: Uint16Array;
  private orderHead = 0;
  private batchId = -1;
  private batchLen = 0;
  private readonly mask: number;
  private readonly next: Uint16Array; // shadow free-list / chain links
  private readonly chainLen: Uint16Array; // descriptors per outstanding head, 0 = not outstanding
  private readonly writableLen: Float64Array; // device-writable bytes per outstanding head
  /** Per head: caller's token (e.g. a buffer index), returned by popUsed via {@link usedToken}. */
  private readonly tokens: Int32Array;
  usedToken = 0;
  private readonly desc: Int32Array;
  private readonly descW: number;
  private readonly avail: Uint16Array;
  private readonly availH: number;
  private readonly used16: Uint16Array;
  private readonly usedH: number;
  private readonly used32: Uint32Array;
  private readonly usedElemW: number;

  /**
   * Lays nothing out itself: the caller allocates the three parts in guest
   * memory (see contiguousLayout) and this constructor zeroes them.
   * @throws QueueConfigError, GuestMemoryError
   */
  constructor(private readonly mem: GuestMemory, layout: SplitQueueLayout, opts: SplitQueueOptions) {
    checkLayout(layout);
    this.size = layout.size;
    this.mask = layout.size - 1;
    this.index = opts.index ?? -1;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.inOrder = opts.inOrder ?? false;
    this.order = new Uint16Array(this.inOrder ? this.size : 0);
    this.freeTail = this.size - 1;
    this.numFree = this.size;
    this.next = new Uint16Array(this.size);
    for (let i = 0; i < this.size; i++) this.next[i] = i + 1 < this.size ? i + 1 : NONE;
    this.chainLen = new Uint16Array(this.size);
    this.writableLen = new Float64Array(this.size);
    this.tokens = new Int32Array(this.size);
    const v = new SplitRingViews(mem, layout, true);
    this.desc = v.desc;
    this.descW = v.descW;
    this.avail = v.avail;
    this.availH = v.availH;
    this.used16 = v.used16;
    this.usedH = v.usedH;
    this.used32 = v.used32;
    this.usedElemW = v.usedElemW;
  }

  /** The head {@link addOne} will use next, or -1 when none is free (lets a caller tie buffers to heads). */
  peekFreeId(): number {
    return this.numFree === 0 ? -1 : this.freeHead;
  }

  /** {@link DriverQueue.state}: avail->idx (shadow, unpublished included) and the next used index to read. */
  state(): QueueState {
    return { avail: this.availIdx, used: this.lastUsedIdx };
  }

  /** {@link DriverQueue.setState}: every descriptor free, avail->idx = s.avail, next used index s.used. */
  setState(s: QueueState): void {
    if (!(Number.isInteger(s.avail) && s.avail >= 0 && s.avail <= 0xffff && Number.isInteger(s.used) && s.used >= 0 && s.used <= 0xffff))
      throw new QueueConfigError(`queue ${this.index}: split ring state avail ${s.avail} used ${s.used} is not two u16 indexes`);
    if (((s.avail - s.used) & 0xffff) > this.size)
      throw new QueueConfigError(`queue ${this.index}: used index ${s.used} is more than ${this.size} behind avail index ${s.avail}`);
    for (let i = 0; i < this.size; i++) this.next[i] = i + 1 < this.size ? i + 1 : NONE;
    this.chainLen.fill(0);
    this.freeHead = 0;
    this.freeTail = this.size - 1;
    this.numFree = this.size;
    this.outstanding = 0;
    this.orderHead = 0;
    this.batchId = -1;
    this.batchLen = 0;
    this.availIdx = this.publishedAvailIdx = s.avail;
    this.lastUsedIdx = this.usedEnd = s.used;
    this.burstErr = null;
    Atomics.store(this.avail, this.availH + 1, s.avail);
  }

  /** In-order bookkeeping: `head` is now the newest outstanding chain. */
  private enqueue(head: number): void {
    if (this.inOrder) this.order[(this.orderHead + this.outstanding - 1) & this.mask] = head;
  }

  /**
   * Hot path: add a one-descriptor chain. Returns the head index, or -1 when
   * no descriptor is free. Not visible to the device until {@link publish}.
   */
  addOne(addr: number, len: number, writable: boolean, token: number): number {
    const head = this.freeHead;
    if (this.numFree === 0) return -1;
    this.freeHead = this.next[head];
    this.numFree--;
    const w = this.descW + head * 4;
    const d = this.desc;
    const hi = addr < TWO32 ? 0 : Math.floor(addr / TWO32);
    const lo = addr - hi * TWO32; // not addr % TWO32: a float modulo is a call to fmod (~10 ns) per packet
    // Write only the words that change (DPDK's vq_update_avail_ring does the
    // same for the ring): a caller that ties buffers to heads rewrites the
    // same address, length and flags every time, and a store, even of an
    // equal value, takes the cache line away from the device's core, which
    // reads it for every chain. The (int32) views hold lo and len as signed.
    if (d[w] !== (lo | 0)) d[w] = lo;
    if (d[w + 1] !== hi) d[w + 1] = hi;
    if (d[w + 2] !== (len | 0)) d[w + 2] = len;
    const flags = writable ? VIRTQ_DESC_F_WRITE : 0;
    if (d[w + 3] !== flags) d[w + 3] = flags;
    this.chainLen[head] = 1;
    this.writableLen[head] = writable ? len : 0;
    this.tokens[head] = token;
    this.outstanding++;
    if (this.inOrder) this.enqueue(head);
    // With in-order the heads go round the ring in ring order: after the first
    // lap every slot already holds its head.
    const slot = this.availH + 2 + (this.availIdx & this.mask);
    if (this.avail[slot] !== head) this.avail[slot] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return head;
  }

  /**
   * Hot path for buffers tied to heads (buffer h at guest address
   * `addr0 + h × stride`, `len` bytes, token h): add up to `n` one-descriptor
   * chains with the heads {@link addOne} would have used, write the heads to
   * `out[0..k)` and return k (fewer when the free descriptors run out). The
   * caller may fill the buffers after this call: nothing is visible to the
   * device before {@link publish}. Same ring writes as k addOne calls (only
   * changed descriptor words and avail slots are stored), with the
   * bookkeeping done once per run.
   */
  addTied(out: Uint16Array, n: number, addr0: number, stride: number, len: number, writable: boolean): number {
    const k = n < this.numFree ? n : this.numFree;
    if (k <= 0) return 0;
    const d = this.desc, descW = this.descW, next = this.next, avail = this.avail, mask = this.mask;
    const chainLen = this.chainLen, writableLen = this.writableLen, tokens = this.tokens;
    const flags = writable ? VIRTQ_DESC_F_WRITE : 0;
    const wlen = writable ? len : 0;
    const len32 = len | 0;
    const slot0 = this.availH + 2;
    // The last buffer's address below 2^32 as well (checked once): low word = lo0 + h × stride, high word 0.
    const lowOnly = addr0 + (this.size - 1) * stride < TWO32;
    let head = this.freeHead;
    let ai = this.availIdx;
    let oi = this.orderHead + this.outstanding;
    for (let i = 0; i < k; i++) {
      const w = descW + head * 4;
      if (lowOnly) {
        const lo = (addr0 + head * stride) | 0;
        if (d[w] !== lo) d[w] = lo;
        if (d[w + 1] !== 0) d[w + 1] = 0;
      } else {
        const addr = addr0 + head * stride;
        const hi = Math.floor(addr / TWO32);
        const lo = (addr - hi * TWO32) | 0;
        if (d[w] !== lo) d[w] = lo;
        if (d[w + 1] !== hi) d[w + 1] = hi;
      }
      if (d[w + 2] !== len32) d[w + 2] = len;
      if (d[w + 3] !== flags) d[w + 3] = flags;
      chainLen[head] = 1;
      writableLen[head] = wlen;
      tokens[head] = head;
      if (this.inOrder) this.order[oi++ & mask] = head;
      const slot = slot0 + (ai & mask);
      if (avail[slot] !== head) avail[slot] = head;
      ai = (ai + 1) & 0xffff;
      out[i] = head;
      head = next[head];
    }
    this.freeHead = head;
    this.numFree -= k;
    this.outstanding += k;
    this.availIdx = ai;
    return k;
  }

  /**
   * With VIRTIO_F_IN_ORDER (§2.7.9): reclaim every chain the device has used,
   * from used->idx alone, without reading the used elements (as DPDK's
   * virtio_xmit_cleanup_inorder): in-order, used->idx says how many of the
   * oldest chains are done, whatever ids the elements name. Used lengths
   * are not read, so only for queues whose chains the device never writes
   * (a transmitq). Returns the number of chains reclaimed; tokens are not
   * reported. Without in-order, reclaims with {@link popUsed}.
   * @throws DescriptorError USED_IDX_JUMP (nothing reclaimed), or what popUsed throws without in-order.
   */
  reclaimInOrder(): number {
    let n = this.usedPending();
    if (!this.inOrder) {
      for (let i = 0; i < n; i++) this.popUsed();
      return n;
    }
    if (n === 0) return 0;
    const order = this.order, chainLen = this.chainLen, next = this.next, mask = this.mask;
    let oh = this.orderHead;
    let tail = this.numFree === 0 ? -1 : this.freeTail;
    let freed = 0;
    const count = n;
    for (; n > 0; n--) {
      const id = order[oh];
      oh = (oh + 1) & mask;
      const c = chainLen[id];
      chainLen[id] = 0;
      let last = id;
      for (let i = 1; i < c; i++) last = next[last];
      // Append at the tail: descriptors stay in ring order (§2.7.9).
      if (tail < 0) this.freeHead = id;
      else next[tail] = id;
      tail = last;
      freed += c;
    }
    next[tail] = NONE;
    this.freeTail = tail;
    this.orderHead = oh;
    this.numFree += freed;
    this.outstanding -= count;
    this.lastUsedIdx = (this.lastUsedIdx + count) & 0xffff;
    this.batchId = -1; // an open batch (popUsed) ends within these chains
    return count;
  }

  /**
   * Add a chain of buffers (readable ones first, §2.7.4.2). With
   * `indirectTable` (a guest address with room for 16 × bufs.length bytes)
   * and VIRTIO_F_INDIRECT_DESC, the chain goes in an indirect table and uses
   * one ring descriptor (§2.7.5.3). Returns the head, or -1 when not enough
   * descriptors are free.
   * @throws RangeError for an empty chain, a chain longer than the queue size
   * (§2.7.5.3.1, also for an indirect table), or a readable buffer after a writable one.
   */
  add(bufs: readonly BufferSpec[], token: number, indirectTable?: number): number {
    if (bufs.length === 0) throw new RangeError('a chain needs at least one buffer');
    if (bufs.length > this.size) throw new RangeError(`a chain of ${bufs.length} buffers is longer than the queue size ${this.size}`);
    for (let i = 1; i < bufs.length; i++)
      if (bufs[i - 1].writable && !bufs[i].writable) throw new RangeError('device-readable buffer after a device-writable one');
    let writable = 0;
    for (const b of bufs) if (b.writable) writable += b.len;
    if (indirectTable !== undefined && this.indirect) {
      if (this.numFree === 0) return -1; // before touching the caller's table memory
      const tbl = new Uint8Array(16 * bufs.length);
      const dv = new DataView(tbl.buffer);
      bufs.forEach((b, i) => {
        dv.setUint32(16 * i, b.addr % TWO32, true);
        dv.setUint32(16 * i + 4, Math.floor(b.addr / TWO32), true);
        dv.setUint32(16 * i + 8, b.len, true);
        dv.setUint16(16 * i + 12, (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), true);
        dv.setUint16(16 * i + 14, i + 1 < bufs.length ? i + 1 : 0, true);
      });
      this.mem.write(indirectTable, tbl);
      const head = this.addOne(indirectTable, tbl.length, false, token);
      if (head < 0) return -1;
      this.desc[this.descW + head * 4 + 3] = VIRTQ_DESC_F_INDIRECT;
      this.writableLen[head] = writable;
      return head;
    }
    if (bufs.length > this.numFree) return -1;
    const head = this.freeHead;
    let idx = head;
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i];
      const w = this.descW + idx * 4;
      const nxt = this.next[idx];
      this.desc[w] = b.addr % TWO32;
      this.desc[w + 1] = Math.floor(b.addr / TWO32);
      this.desc[w + 2] = b.len;
      const last = i + 1 === bufs.length;
      this.desc[w + 3] = (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT) | ((last ? 0 : nxt) << 16);
      if (last) this.freeHead = nxt;
      else idx = nxt;
    }
    this.numFree -= bufs.length;
    this.chainLen[head] = bufs.length;
    this.writableLen[head] = writable;
    this.tokens[head] = token;
    this.outstanding++;
    if (this.inOrder) this.enqueue(head);
    this.avail[this.availH + 2 + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return head;
  }

  /** Chains added since the last {@link publish}. */
  get unpublished(): boolean {
    return this.availIdx !== this.publishedAvailIdx;
  }

  /**
   * Publish avail->idx (release) and say whether the device wants an
   * available-buffer notification (§2.7.13.3-4; with EVENT_IDX, §2.7.10).
   */
  publish(): boolean {
    const newIdx = this.availIdx;
    const oldIdx = this.publishedAvailIdx;
    if (newIdx === oldIdx) return false;
    Atomics.store(this.avail, this.availH + 1, newIdx);
    this.publishedAvailIdx = newIdx;
    if (this.eventIdx) return needEvent(Atomics.load(this.used16, this.usedH + 2 + 4 * this.size), newIdx, oldIdx);
    return (Atomics.load(this.used16, this.usedH) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Used elements not yet reclaimed.
   * @throws DescriptorError USED_IDX_JUMP when the device published more than it was given.
   */
  usedPending(): number {
    const usedIdx = Atomics.load(this.used16, this.usedH + 1);
    const n = (usedIdx - this.lastUsedIdx) & 0xffff;
    // Bound: chains made available (published) and not reclaimed -- not
    // descriptors, which a multi-descriptor chain would over-count.
    const given = this.outstanding - ((this.availIdx - this.publishedAvailIdx) & 0xffff);
    if (n > given) throw this.err('USED_IDX_JUMP', `used idx ran ${n} ahead with ${given} chains outstanding`);
    this.usedEnd = usedIdx;
    return n;
  }

  /**
   * {@link popUsed} when a used element is waiting, else -1: used->idx is
   * read again only once the elements it last showed are consumed (one
   * load per burst, not per element).
   * @throws as {@link usedPending} and {@link popUsed}.
   */
  popUsedIfAny(): number {
    if (this.lastUsedIdx === this.usedEnd && this.usedPending() === 0) return -1;
    return this.popUsed();
  }

  /**
   * Reclaim the next used element: frees its descriptors and returns the head;
   * the device's byte count is left in {@link usedLen}, the token in {@link usedToken}.
   * Call only when usedPending() > 0.
   * @throws DescriptorError USED_ID_INVALID / USED_LEN_INVALID (the slot is
   * consumed). On USED_LEN_INVALID the chain is still reclaimed (the device
   * returned it): its descriptors are freed, {@link usedToken} is set and
   * {@link usedLen} is 0 (nothing the device wrote can be trusted).
   */
  /**
   * {@link DriverQueue.popUsedBurst}: up to `max` {@link popUsedIfAny} calls,
   * tokens and used lengths to `tokens[i]` / `lens[i]`; returns how many. An
   * error after chains were taken is thrown by the next call.
   * @throws DescriptorError as {@link popUsed}.
   */
  popUsedBurst(tokens: Int32Array, lens: Int32Array, max: number): number {
    const e = this.burstErr;
    if (e !== null) {
      this.burstErr = null;
      throw e;
    }
    return takeUsedEach(this, tokens, lens, 0, max, this.late);
  }

  /** Error the last {@link popUsedBurst} met after taking chains (thrown by the next call). */
  private burstErr: Error | null = null;
  private readonly late = (e: Error): void => {
    this.burstErr = e;
  };

  /** Used-ring slot of the next used element to read (0..size-1). */
  get nextUsed(): number {
    return this.lastUsedIdx & this.mask;
  }

  /**
   * {@link DriverQueue.recycleBurst} (§2.7.9 VIRTIO_F_IN_ORDER, §2.7.8 the
   * used ring): with in-order, every descriptor outstanding (the ring full)
   * and no batch open, each used element that names the oldest chain, a
   * one-descriptor buffer tied as addTied ties it (`len` writable bytes),
   * with a used length within it, is taken and its head made available
   * again at once in the next avail slot, which in-order is the slot it
   * already holds: the descriptor table is not touched (a split device
   * never writes it) and the avail slot is stored only if it differs.
   * used->idx is read once (acquire) per call. Anything else (a batch, a
   * bad id or length, another ring state) goes through
   * {@link popUsedBurst}, whose chains the caller re-adds. Nothing re-added
   * is visible to the device before {@link publish}.
   * @throws as {@link popUsedBurst}.
   */
  recycleBurst(tokens: Int32Array, lens: Int32Array, max: number, _addr0: number, _stride: number, len: number): number {
    // _addr0 and _stride: the descriptors already hold them (addTied wrote them, nothing rewrites a split descriptor).
    // The ring full of one-descriptor chains (every descriptor outstanding, one chain each): a head re-added takes the order entry and the avail slot it left.
    if (this.burstErr !== null || !this.inOrder || this.batchId >= 0 || this.numFree !== 0 || this.outstanding !== this.size)
      return this.popUsedBurst(tokens, lens, max);
    const used32 = this.used32, ew = this.usedElemW, mask = this.mask, order = this.order, tok = this.tokens;
    const wl = this.writableLen, chainLen = this.chainLen, avail = this.avail, slot0 = this.availH + 2;
    let k = 0;
    // used->idx is read again only once the elements it last showed are taken (as popUsedIfAny).
    while (k < max) {
      let n = (this.usedEnd - this.lastUsedIdx) & 0xffff;
      if (n === 0) {
        try {
          n = this.usedPending();
        } catch (err) {
          if (k === 0) throw err;
          this.late(err as Error); // thrown by the next call, after these k
          return k;
        }
        if (n === 0) return k;
      }
      if (n > max - k) n = max - k;
      let u = this.lastUsedIdx, oh = this.orderHead, ai = this.availIdx;
      const k0 = k;
      for (const end = k + n; k < end; k++) {
        const w = ew + 2 * (u & mask);
        const id = used32[w];
        const ulen = used32[w + 1];
        if (id !== order[oh] || chainLen[id] !== 1 || wl[id] !== len || ulen > len) break;
        tokens[k] = tok[id];
        lens[k] = ulen;
        // Re-added as addOne would: the same head (the free list holds only it), at avail slot ai.
        const slot = slot0 + (ai & mask);
        if (avail[slot] !== id) avail[slot] = id;
        u = (u + 1) & 0xffff;
        oh = (oh + 1) & mask;
        ai = (ai + 1) & 0xffff;
      }
      // The order ring and the free list need no change: the head re-added takes the entry it left.
      this.lastUsedIdx = u;
      this.orderHead = oh;
      this.availIdx = ai;
      if (k - k0 < n) break; // something for the per-chain path
    }
    if (k === max) return k;
    return k === 0 ? this.popUsedBurst(tokens, lens, max) : takeUsedEach(this, tokens, lens, k, max, this.late);
  }

  popUsed(): number {
    if (this.inOrder) return this.popUsedInOrder();
    const w = this.usedElemW + 2 * (this.lastUsedIdx & this.mask);
    const id = this.used32[w];
    const len = this.used32[w + 1];
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    if (id >= this.size || this.chainLen[id] === 0) throw this.err('USED_ID_INVALID', `device returned id ${id}, which is not outstanding`);
    return this.reclaim(id, len);
  }

  /**
   * §2.7.9: the used element at the start of a batch names the batch's last
   * chain; every outstanding chain up to it completes, oldest first.
   */
  private popUsedInOrder(): number {
    const expect = this.order[this.orderHead];
    if (this.batchId < 0) {
      const w = this.usedElemW + 2 * (this.lastUsedIdx & this.mask);
      const id = this.used32[w];
      const len = this.used32[w + 1];
      if (id >= this.size || this.chainLen[id] === 0) {
        this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
        throw this.err('USED_ID_INVALID', `device returned id ${id}, which is not outstanding`);
      }
      if (id !== expect) {
        // A batch: id must lie within what used->idx says was used.
        const n = (Atomics.load(this.used16, this.usedH + 1) - this.lastUsedIdx) & 0xffff;
        let k = 1;
        while (k < n && k < this.outstanding && this.order[(this.orderHead + k) & this.mask] !== id) k++;
        if (k >= n || k >= this.outstanding) {
          this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
          throw this.err('USED_ID_INVALID', `device returned id ${id}, not among the next ${n} chains in order`);
        }
      }
      this.batchId = id;
      this.batchLen = len;
    }
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    const last = expect === this.batchId;
    const len = last ? this.batchLen : 0;
    if (last) this.batchId = -1;
    return this.reclaim(expect, len);
  }

  /** Free chain `id`'s descriptors; check `len` against its writable bytes. */
  private reclaim(id: number, len: number): number {
    const badLen = len > this.writableLen[id];
    const n = this.chainLen[id];
    this.chainLen[id] = 0;
    let tail = id;
    for (let i = 1; i < n; i++) tail = this.next[tail];
    if (this.inOrder) {
      // Append at the tail: descriptors stay in ring order (§2.7.9).
      this.next[tail] = NONE;
      if (this.numFree === 0) this.freeHead = id;
      else this.next[this.freeTail] = id;
      this.freeTail = tail;
      this.orderHead = (this.orderHead + 1) & this.mask;
    } else {
      this.next[tail] = this.numFree === 0 ? NONE : this.freeHead;
      this.freeHead = id;
    }
    this.numFree += n;
    this.outstanding--;
    this.usedToken = this.tokens[id];
    if (badLen) {
      this.usedLen = 0;
      throw this.err('USED_LEN_INVALID', `device wrote ${len} bytes into ${this.writableLen[id]} writable bytes`);
    }
    this.usedLen = len;
    return id;
  }

  /**
   * Ask for (or suppress) used-buffer notifications (§2.7.7): with EVENT_IDX
   * by writing used_event = the next used index the driver will read, else by
   * clearing/setting VIRTQ_AVAIL_F_NO_INTERRUPT. After enabling, check
   * {@link usedPending} again before sleeping.
   */
  setNotification(enable: boolean): void {
    if (this.eventIdx) {
      if (enable) Atomics.store(this.avail, this.availH + 2 + this.size, this.lastUsedIdx);
    } else {
      Atomics.store(this.avail, this.availH, enable ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }

  private err(code: ConstructorParameters<typeof DescriptorError>[0], msg: string): DescriptorError {
    const e = new DescriptorError(code, `queue ${this.index}: ${msg}`);
    e.queue = this.index;
    return e;
  }
}
