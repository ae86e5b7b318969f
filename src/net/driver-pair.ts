/**
 * The driver side of one virtio-net queue pair (spec v1.4 §5.1.6): puts
 * frames on transmitqN, keeps receiveqN stocked with buffers, and hands
 * received frames to a consumer. Owned by one worker (the seeds' "RX task
 * per queue pair"): no locks.
 *
 * Buffers are tied to buffer ids (split: descriptor heads): TX buffer i and
 * RX buffer i live at fixed guest addresses, so the hot path writes a
 * frame and one descriptor, and publishes in batches. The rings are
 * {@link DriverQueue}s, split or packed.
 *
 * TX (§5.1.6.2): virtio_net_hdr (all zero: no offloads) followed by the
 * frame in one device-readable descriptor (VIRTIO_F_VERSION_1 lets header
 * and data share a buffer, §2.7.4). RX (§5.1.6.3.1): buffers of `rxBufSize`
 * bytes; with MRG_RXBUF a frame may come in several, `num_buffers` in the
 * first header.
 */
import type { Bytes } from '../virtio/copy.js';
import { copyBytes } from '../virtio/copy.js';
import type { GuestMemory } from '../virtio/memory.js';
import type { DriverQueue } from '../virtio/queue.js';
import { DrvStat } from './stats.js';
import { VirtioError } from '../virtio/errors.js';

/**
 * A receiveq buffer's `num_buffers` (virtio_net_hdr with MRG_RXBUF) the
 * driver cannot honour, checked on the driver side (src/net/conformance.ts
 * names the device rule each code breaks, §5.1.9.4.1 of the repository's
 * spec text):
 * - `NUM_BUFFERS_BEYOND_AVAILABLE` more buffers than the driver has made available on the receiveq;
 * - `NUM_BUFFERS_NOT_USED_TOGETHER` fewer used buffers published than num_buffers says.
 * `queue` is the receiveq's virtqueue index.
 */
export class NumBuffersError extends VirtioError {
  constructor(code: 'NUM_BUFFERS_BEYOND_AVAILABLE' | 'NUM_BUFFERS_NOT_USED_TOGETHER', readonly queue: number, message: string) {
    super(code, `queue ${queue}: ${message}`);
  }
}

/**
 * Receives each frame: bytes [off, off+len) of src, the frame without its
 * header; src[off - hdrLen, off) holds the frame's virtio_net_hdr (§5.1.6.1,
 * little-endian fields as the device wrote them: flags, gso_type, hdr_len,
 * gso_size, csum_start, csum_offset, num_buffers). Valid only during the call.
 */
export type FrameConsumer = (src: Bytes, off: number, len: number) => void;

export interface DriverPairOptions {
  pair: number;
  hdrLen: number;
  mrgRxbuf: boolean;
  /** Guest address of TX buffer 0; buffer i at txBufAddr + i × txBufSize (one per transmitq descriptor). */
  txBufAddr: number;
  txBufSize: number;
  rxBufAddr: number;
  rxBufSize: number;
}

export class NetDriverPair {
  readonly pair: number;
  private readonly mrg: boolean;
  private readonly txBytes: Bytes;
  private readonly txOff: number; // byte offset of TX buffer 0 in txBytes
  private readonly txBufSize: number;
  private readonly txBufAddr: number;
  private readonly rxBytes: Bytes;
  private readonly rxOff: number;
  private readonly rxBufSize: number;
  private readonly rxBufAddr: number;
  private readonly merge: Bytes; // reassembly buffer for MRG_RXBUF frames
  /** Descriptor head reserveTx() handed out, for commitTx(). */
  private txHead = -1;
  /** Buffer ids of the last {@link reserveTxBurst}. */
  readonly txIds: Uint16Array;
  /** {@link reserveTxBurst} may be used (false on a capture view, which copies frames at commitTx). */
  burstTx = true;
  /** Header bytes before each frame (virtio_net_hdr, §5.1.6.1). */
  readonly hdrLen: number;
  private readonly txInOrder: boolean;
  /** Set when a ring error stopped this pair; the message is in {@link error}. */
  error: Error | null = null;
  /** pollRxTied scratch: tokens and used lengths of a burst, ids of a refill, one extra chain. */
  private readonly rxToks: Int32Array;
  private readonly rxLens: Int32Array;
  private readonly rxIds: Uint16Array;
  private readonly rxOne = new Int32Array(1);
  private readonly rxOneLen = new Int32Array(1);

  constructor(
    mem: GuestMemory,
    readonly rxq: DriverQueue,
    readonly txq: DriverQueue,
    private readonly stats: Float64Array,
    private readonly statBase: number,
    opts: DriverPairOptions,
  ) {
    this.pair = opts.pair;
    this.hdrLen = opts.hdrLen;
    this.mrg = opts.mrgRxbuf;
    this.txBufSize = opts.txBufSize;
    this.txIds = new Uint16Array(txq.size);
    this.txInOrder = txq.inOrder;
    this.txBufAddr = opts.txBufAddr;
    let r = mem.translate(opts.txBufAddr, opts.txBufSize * txq.size);
    this.txBytes = mem.bytes[r];
    this.txOff = mem.off;
    this.rxBufSize = opts.rxBufSize;
    this.rxBufAddr = opts.rxBufAddr;
    r = mem.translate(opts.rxBufAddr, opts.rxBufSize * rxq.size);
    this.rxBytes = mem.bytes[r];
    this.rxOff = mem.off;
    // Shared so a consumer can hand it to the addon's writev (a TAP) without a copy.
    const m = new SharedArrayBuffer(65536 + 64);
    this.merge = { u8: new Uint8Array(m), i32: new Int32Array(m) };
    this.rxToks = new Int32Array(rxq.size);
    this.rxLens = new Int32Array(rxq.size);
    this.rxIds = new Uint16Array(rxq.size);
    // Chosen once per ring feature set (one class per worker: the call site stays monomorphic).
    this.pollRx = rxq.inOrder ? this.pollRxTied : this.pollRxEach;
  }

  /** Largest frame one TX call can carry (bytes, without header). */
  get maxTxFrame(): number {
    return this.txBufSize - this.hdrLen;
  }

  /** Make every free RX descriptor available with its buffer (token = buffer index, = the descriptor's id). */
  refillRx(): void {
    const q = this.rxq;
    for (;;) {
      const head = q.peekFreeId();
      if (head < 0) break;
      q.addOne(this.rxBufAddr + head * this.rxBufSize, this.rxBufSize, true, head);
    }
  }

  /**
   * Reserve the TX buffer for the next frame: returns the byte offset in
   * {@link txView} where the frame (after the header) must be written, or -1
   * when the transmitq is full. Then call {@link commitTx} with its length.
   */
  reserveTx(): number {
    const head = this.txq.peekFreeId();
    if (head < 0) {
      this.stats[this.statBase + DrvStat.txRingFull]++;
      return -1;
    }
    this.txHead = head;
    const o = this.txOff + head * this.txBufSize;
    const i32 = this.txBytes.i32;
    const w = o >>> 2;
    i32[w] = 0; // virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_*, num_buffers all 0
    i32[w + 1] = 0;
    i32[w + 2] = 0;
    if (this.hdrLen === 20) i32[w + 3] = i32[w + 4] = 0;
    return o + this.hdrLen;
  }

  /** The byte view TX frames are written into (guest memory). */
  get txView(): Bytes {
    return this.txBytes;
  }

  /** Make the frame written after {@link reserveTx} available (not published until {@link flushTx}). */
  commitTx(len: number): void {
    const head = this.txHead;
    this.txq.addOne(this.txBufAddr + head * this.txBufSize, this.hdrLen + len, false, head);
    const st = this.stats, b = this.statBase;
    st[b + DrvStat.txPackets]++;
    st[b + DrvStat.txBytes] += len;
  }

  /**
   * TX burst (hot path for sources that write their frames in place): make
   * up to `max` TX buffers available at once, each carrying a `len`-byte
   * frame, and return how many (k). Their buffer ids are in
   * {@link txIds}[0..k); frame i goes at byte {@link txFrameOffset}(txIds[i])
   * of {@link txView}, its virtio_net_hdr in the {@link hdrLen} bytes before
   * it. The caller must write all k frames and headers before
   * {@link flushTx} (the device sees nothing before it). Counts the frames
   * as sent; counts txRingFull when fewer than `max` buffers were free.
   * A capture view ({@link burstTx} false) does not offer it.
   */
  reserveTxBurst(max: number, len: number): number {
    const k = this.txq.addTied(this.txIds, max, this.txBufAddr, this.txBufSize, this.hdrLen + len, false);
    const st = this.stats, b = this.statBase;
    if (k < max) st[b + DrvStat.txRingFull]++;
    st[b + DrvStat.txPackets] += k;
    st[b + DrvStat.txBytes] += k * len;
    return k;
  }

  /** Byte offset in {@link txView} of the frame (after the header) of TX buffer `id`. */
  txFrameOffset(id: number): number {
    return this.txOff + id * this.txBufSize + this.hdrLen;
  }

  /** Copy-in convenience: send one frame. Returns false when the transmitq is full or the frame too big. */
  send(src: Bytes, off: number, len: number): boolean {
    if (len > this.maxTxFrame) return false;
    const o = this.reserveTx();
    if (o < 0) return false;
    copyBytes(this.txBytes, o, src, off, len);
    this.commitTx(len);
    return true;
  }

  /** Publish TX; returns true when the device must be notified (§2.7.13.3). */
  flushTx(): boolean {
    if (!this.txq.unpublished) return false;
    return this.kickDecision(this.txq.publish());
  }

  /**
   * Reclaim transmitted buffers; returns how many. With VIRTIO_F_IN_ORDER
   * the used elements are not read (TX chains carry no used length): see
   * {@link DriverQueue.reclaimInOrder}.
   */
  reclaimTx(): number {
    const q = this.txq;
    if (this.txInOrder) {
      try {
        return q.reclaimInOrder();
      } catch (e) {
        this.fail(e);
        return 0;
      }
    }
    let n = 0;
    try {
      for (let pending = q.usedPending(); pending > 0; pending = q.usedPending()) {
        for (; pending > 0; pending--) {
          q.popUsed();
          n++;
        }
      }
    } catch (e) {
      this.fail(e);
    }
    return n;
  }

  /** TX descriptors still owned by the device. */
  get txInFlight(): number {
    return this.txq.size - this.txq.numFree;
  }

  /**
   * Take up to `budget` received frames, give each to `consume`, recycle the
   * buffers and publish them. Returns frames received; `kick` is set when the
   * device must be notified of the recycled buffers.
   *
   * Chosen once per ring feature set (the constructor): a ring with
   * VIRTIO_F_IN_ORDER, split or packed, takes {@link pollRxTied} (used
   * chains in runs, each buffer re-added in the same pass), others
   * {@link pollRxEach}.
   */
  pollRx: (budget: number, consume: FrameConsumer) => number;

  /**
   * pollRx per chain: popUsedIfAny, consume, re-add the buffer at once
   * (its buffer id goes back to the queue's free list, so it is the id the
   * next add takes).
   */
  pollRxEach(budget: number, consume: FrameConsumer): number {
    const q = this.rxq;
    const hdrLen = this.hdrLen;
    const rxBytes = this.rxBytes, rxOff = this.rxOff, rxBufSize = this.rxBufSize, rxBufAddr = this.rxBufAddr;
    const u8 = rxBytes.u8;
    const mrg = this.mrg;
    let n = 0;
    // Counted once per call (the stats block is read by other threads per second, not per frame).
    let packets = 0, bytes = 0;
    try {
      while (n < budget) {
        if (q.popUsedIfAny() < 0) break;
        const len = q.usedLen;
        const buf = q.usedToken;
        const o = rxOff + buf * rxBufSize;
        let frameLen = len - hdrLen;
        if (mrg) {
          const nb = u8[o + 10] | (u8[o + 11] << 8);
          if (nb > 1) {
            frameLen = this.mergeRx(o, len, nb);
            if (frameLen >= 0) {
              consume(this.merge, hdrLen, frameLen);
              packets++;
              bytes += frameLen;
            }
            n++;
            continue;
          }
        }
        if (frameLen >= 0) {
          consume(rxBytes, o + hdrLen, frameLen);
          packets++;
          bytes += frameLen;
        } else {
          this.stats[this.statBase + DrvStat.rxBad]++;
        }
        q.addOne(rxBufAddr + buf * rxBufSize, rxBufSize, true, buf);
        n++;
      }
    } catch (e) {
      this.fail(e);
    } finally {
      if (packets !== 0) {
        const st = this.stats, b = this.statBase;
        st[b + DrvStat.rxPackets] += packets;
        st[b + DrvStat.rxBytes] += bytes;
      }
    }
    return n;
  }

  /**
   * pollRx for rings (split or packed) with VIRTIO_F_IN_ORDER, where every RX chain is
   * buffer i at Buffer ID i (refillRx and this path only ever add that way,
   * and in-order ids are ring positions, so the buffer taken and the id the
   * next add takes stay the same): used chains are taken in bursts and
   * made available again in the same pass ({@link DriverQueue.recycleBurst}:
   * only ring words that changed are written: packed, the length the device
   * overwrote and the flags; split, nothing but avail->idx at publish; the
   * device sees nothing before flushRx publishes), then each frame goes
   * to `consume`; chains the per-chain path had to take (an in-order batch)
   * are re-added at the end with {@link DriverQueue.addTied}. Leaves the
   * same ring memory and queue state as {@link pollRxEach} (the frames
   * before a ring error are delivered first in both).
   */
  pollRxTied(budget: number, consume: FrameConsumer): number {
    const q = this.rxq;
    const hdrLen = this.hdrLen;
    const rxBytes = this.rxBytes, rxOff = this.rxOff, rxBufSize = this.rxBufSize;
    const u8 = rxBytes.u8;
    const mrg = this.mrg;
    const toks = this.rxToks, lens = this.rxLens;
    const rxBufAddr = this.rxBufAddr;
    const free0 = q.numFree;
    let n = 0;
    let packets = 0, bytes = 0, bad = 0;
    try {
      while (n < budget) {
        // As DPDK's virtio_recv_pkts_packed: a burst of more than one cache line of
        // descriptors (4) ends at a line boundary, so the device gets whole lines back.
        let lim = budget - n;
        if (lim > 4) lim -= (q.nextUsed + lim) & 3;
        const k = q.recycleBurst(toks, lens, lim, rxBufAddr, rxBufSize, rxBufSize);
        if (k === 0) break;
        for (let i = 0; i < k; i++) {
          const len = lens[i];
          const o = rxOff + toks[i] * rxBufSize;
          let frameLen = len - hdrLen;
          if (mrg) {
            const nb = u8[o + 10] | (u8[o + 11] << 8);
            if (nb > 1) {
              // The frame's other buffers: the next ones of this burst, then more from the queue.
              const inBurst = nb - 1 < k - 1 - i ? nb - 1 : k - 1 - i;
              frameLen = this.mergeTied(o, len, nb, i + 1, inBurst, q.size - free0);
              i += inBurst;
              if (frameLen >= 0) {
                consume(this.merge, hdrLen, frameLen);
                packets++;
                bytes += frameLen;
              }
              n++;
              continue;
            }
          }
          if (frameLen >= 0) {
            consume(rxBytes, o + hdrLen, frameLen);
            packets++;
            bytes += frameLen;
          } else {
            bad++;
          }
          n++;
        }
      }
    } catch (e) {
      this.fail(e);
    } finally {
      const st = this.stats, b = this.statBase;
      if (packets !== 0) {
        st[b + DrvStat.rxPackets] += packets;
        st[b + DrvStat.rxBytes] += bytes;
      }
      if (bad !== 0) st[b + DrvStat.rxBad] += bad;
      // Re-add every buffer taken (buffer i at Buffer ID i).
      if (q.numFree !== free0) q.addTied(this.rxIds, q.numFree - free0, this.rxBufAddr, rxBufSize, rxBufSize, true);
    }
    return n;
  }

  /**
   * {@link mergeRx} for {@link pollRxTied}: the frame's first buffer at
   * byte offset o, its next `inBurst` buffers at rxToks/rxLens[at..), the
   * rest taken from the queue. `made` = buffers the driver had made
   * available when the poll began. Returns the frame length (without
   * header), -1 when it exceeds the merge buffer.
   */
  private mergeTied(o: number, len: number, nb: number, at: number, inBurst: number, made: number): number {
    const q = this.rxq;
    if (nb > made) {
      this.stats[this.statBase + DrvStat.rxBad]++;
      throw new NumBuffersError('NUM_BUFFERS_BEYOND_AVAILABLE', q.index, `num_buffers ${nb}, but the driver made only ${made} buffers available`);
    }
    const cap = this.merge.u8.length;
    let pos = len;
    copyBytes(this.merge, 0, this.rxBytes, o, Math.min(len, cap));
    const one = this.rxOne, oneLen = this.rxOneLen;
    for (let i = 1; i < nb; i++) {
      let buf: number, l: number;
      if (i <= inBurst) {
        buf = this.rxToks[at + i - 1];
        l = this.rxLens[at + i - 1];
      } else {
        if (q.popUsedBurst(one, oneLen, 1) === 0) {
          this.stats[this.statBase + DrvStat.rxBad]++;
          throw new NumBuffersError('NUM_BUFFERS_NOT_USED_TOGETHER', q.index, `num_buffers ${nb}, but only ${i} used buffers were published with it`);
        }
        buf = one[0];
        l = oneLen[0];
      }
      if (pos + l <= cap) copyBytes(this.merge, pos, this.rxBytes, this.rxOff + buf * this.rxBufSize, l);
      pos += l;
    }
    return pos <= cap ? pos - this.hdrLen : -1;
  }

  /** Publish recycled RX buffers; true when the device must be notified. */
  flushRx(): boolean {
    if (!this.rxq.unpublished) return false;
    return this.kickDecision(this.rxq.publish());
  }

  /**
   * Gather an MRG_RXBUF frame of `nb` buffers (the first at byte offset o)
   * into {@link merge}: the first buffer's header at 0, the frame behind
   * it. The device publishes a whole frame at once (§5.1.6.4.2), so all
   * `nb` buffers must be there. Returns the frame length (without header),
   * -1 when it exceeds the merge buffer.
   */
  private mergeRx(o: number, len: number, nb: number): number {
    const q = this.rxq;
    const first = q.usedToken;
    const made = q.size - q.numFree + 1; // buffers made available, this one included (just reclaimed)
    if (nb > made) {
      this.stats[this.statBase + DrvStat.rxBad]++;
      throw new NumBuffersError('NUM_BUFFERS_BEYOND_AVAILABLE', q.index, `num_buffers ${nb}, but the driver made only ${made} buffers available`);
    }
    let pos = len;
    copyBytes(this.merge, 0, this.rxBytes, o, Math.min(len, this.merge.u8.length));
    q.addOne(this.rxBufAddr + first * this.rxBufSize, this.rxBufSize, true, first);
    for (let i = 1; i < nb; i++) {
      if (q.usedPending() === 0) {
        this.stats[this.statBase + DrvStat.rxBad]++;
        throw new NumBuffersError('NUM_BUFFERS_NOT_USED_TOGETHER', q.index, `num_buffers ${nb}, but only ${i} used buffers were published with it`);
      }
      q.popUsed();
      const buf = q.usedToken;
      const l = q.usedLen;
      if (pos + l <= this.merge.u8.length) copyBytes(this.merge, pos, this.rxBytes, this.rxOff + buf * this.rxBufSize, l);
      pos += l;
      q.addOne(this.rxBufAddr + buf * this.rxBufSize, this.rxBufSize, true, buf);
    }
    return pos <= this.merge.u8.length ? pos - this.hdrLen : -1;
  }

  /**
   * Ask for (or suppress) used-buffer notifications on both queues (§2.7.7,
   * §2.8.10; split with EVENT_IDX: enabling publishes used_event, disabling
   * leaves it stale).
   */
  setInterrupts(enable: boolean): void {
    this.rxq.setNotification(enable);
    this.txq.setNotification(enable);
  }

  /** Used buffers waiting on either queue. */
  hasUsed(): boolean {
    try {
      return this.rxq.usedPending() > 0 || this.txq.usedPending() > 0;
    } catch {
      return true;
    }
  }

  private kickDecision(kick: boolean): boolean {
    const st = this.stats, b = this.statBase;
    if (kick) st[b + DrvStat.kicksSent]++;
    else st[b + DrvStat.kicksSuppressed]++;
    return kick;
  }

  private fail(e: unknown): void {
    this.stats[this.statBase + DrvStat.errors]++;
    this.error = e instanceof Error ? e : new Error(String(e));
  }
}
