/**
 * The device side of one virtio-net queue pair (spec v1.4 §5.1.6): consumes
 * transmitqN, fills receiveqN, and moves frames to and from the pair's
 * netdev. Owned by exactly one worker: no locks on the data path.
 *
 * - TX (§5.1.6.2): each chain holds a virtio_net_hdr then the frame in its
 *   device-readable buffers; the frame goes to the netdev, the chain is
 *   returned with len 0 (nothing written).
 * - RX (§5.1.6.3, §5.1.6.4): the header is written with num_buffers; with
 *   VIRTIO_NET_F_MRG_RXBUF a frame may span several chains.
 * - Steering: frames are placed on the receiveq picked by {@link RxSteering}
 *   (RSS, automatic flow steering, or receiveq1). A frame for another pair
 *   goes through that pair's inbox; a frame for this pair with no RX buffer
 *   waits in a bounded backlog and is a drop only when that is full.
 * - Faults: a malformed chain stops only the queue it came from; the error
 *   is reported through `onQueueError` and counted, and the rest runs on.
 *
 * The rings are {@link DeviceQueue}s: this class never knows whether they
 * are split or packed. Bytes move through the popped {@link DescChain}'s
 * reader and writer, with a fast path for the common one-buffer chain.
 */
import type { Bytes } from '../virtio/copy.js';
import { copyBytes } from '../virtio/copy.js';
import { DescChain } from '../virtio/chain.js';
import { VirtioError } from '../virtio/errors.js';
import type { GuestMemory } from '../virtio/memory.js';
import type { DeviceQueue } from '../virtio/queue.js';
import type { FrameRing } from './frame-ring.js';
import { DIR_RX, DIR_TX, type CaptureRing } from './capture-ring.js';
import type { Netdev, RxPort } from './netdev.js';
import { DevStat } from './stats.js';

/** Decides which queue pair receives a frame (RSS, AFS, else pair 0). */
export interface RxSteering {
  /** Pair index for the frame; `originPair` >= 0 when it came from that pair's transmitq. */
  route(src: Bytes, off: number, len: number, originPair: number): number;
  /** Automatic flow steering: remember that this frame's flow transmits on `pair`. */
  learnTx(src: Bytes, off: number, len: number, pair: number): void;
  /** RX filter (promiscuous mode, MAC and VLAN tables); true = accept. */
  accepts(src: Bytes, off: number, len: number): boolean;
}

/** Signals the workers of both ends. */
export interface PairNotifier {
  /** Used-buffer notification for virtqueue `queue` (receiveqN = 2(N-1), transmitqN = 2(N-1)+1). */
  notifyQueue(queue: number): void;
  /** Wake the device worker of `pair` (a frame arrived in its inbox). */
  wakeDevice(pair: number): void;
}

/** VIRTQ_DESC_F_WRITE (§2.7.5, §2.8.6): the flag popSingle wants on a receive buffer. */
const DESC_F_WRITE = 2;

export interface DevicePairOptions {
  pair: number;
  /** virtio_net_hdr size in bytes: 12 with VERSION_1 (§5.1.6.1), 20 with HASH_REPORT, 10 legacy. */
  hdrLen: number;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated. */
  mrgRxbuf: boolean;
  /** Largest frame accepted from a transmitq (bytes, without header). */
  maxFrame: number;
}

export class NetDevicePair implements RxPort {
  readonly pair: number;
  private readonly hdrLen: number;
  private readonly mrg: boolean;
  private readonly txChain: DescChain;
  /** RX: the (first) chain a frame goes into, and the further chains of a merged frame. */
  private readonly rxChain: DescChain;
  private readonly rxMore: DescChain;
  private readonly gather: Bytes;
  private readonly hdr: Bytes; // scratch header for RX
  /** Merged RX: id, descriptor count and bytes written of each chain after the first. */
  private readonly mrgIds: Int32Array;
  private readonly mrgDescs: Int32Array;
  private readonly mrgLens: Float64Array;
  private txFailed = false;
  private rxFailed = false;
  /** Frames in this pair's own backlog (only this worker pushes and pops it). */
  private backlogN = 0;
  /** RX counters not yet added to the shared stats (written once per poll round). */
  private rxPk = 0;
  private rxBy = 0;
  private rxBuf = 0;
  /** Set by the control plane: this pair is beyond the active pair count (§5.1.6.5.5). */
  active = true;
  onQueueError: (queue: number, err: Error) => void = () => {};
  /** Per-queue capture (set once when the worker is built): frames into receiveqN and out of transmitqN are copied there while it is on. */
  tap: CaptureRing | null = null;

  constructor(
    private readonly mem: GuestMemory,
    private readonly rxq: DeviceQueue,
    private readonly txq: DeviceQueue,
    private readonly netdev: Netdev,
    private readonly steering: RxSteering,
    /** inboxes[p]: frames pair p sends to this pair; inboxes[this.pair] is the backlog. */
    private readonly inboxes: FrameRing[],
    /** outboxes[p]: this pair's ring into pair p's inboxes (outboxes[this.pair] === the backlog). */
    private readonly outboxes: FrameRing[],
    private readonly notifier: PairNotifier,
    private readonly stats: Float64Array,
    private readonly statBase: number,
    opts: DevicePairOptions,
  ) {
    this.pair = opts.pair;
    this.hdrLen = opts.hdrLen;
    this.mrg = opts.mrgRxbuf;
    this.txChain = new DescChain(mem);
    this.rxChain = new DescChain(mem);
    this.rxMore = new DescChain(mem);
    const g = new SharedArrayBuffer(Math.max(65536, (opts.maxFrame + 64 + 3) & ~3));
    this.gather = { u8: new Uint8Array(g), i32: new Int32Array(g) };
    this.mrgIds = new Int32Array(rxq.size);
    this.mrgDescs = new Int32Array(rxq.size);
    this.mrgLens = new Float64Array(rxq.size);
    const h = new ArrayBuffer(32);
    this.hdr = { u8: new Uint8Array(h), i32: new Int32Array(h) };
  }

  /**
   * One round of work: the inboxes, up to `budget` TX chains, up to `budget`
   * frames from the netdev; publishes both used rings and notifies.
   * Returns the number of frames moved (0 = idle).
   */
  poll(budget: number): number {
    // Inboxes (and the backlog) first: new frames then find it empty and go
    // straight to the receiveq instead of queueing behind it (an extra copy).
    if (this.tap !== null) this.tap.refresh();
    let work = this.drainInboxes(budget);
    if (this.active) work += this.processTx(budget);
    if (this.active) work += this.netdev.poll(this, budget);
    this.flushRxStats();
    this.publish();
    return work;
  }

  private flushRxStats(): void {
    if (this.rxPk === 0 && this.rxBuf === 0) return;
    const st = this.stats, b = this.statBase;
    st[b + DevStat.rxPackets] += this.rxPk;
    st[b + DevStat.rxBytes] += this.rxBy;
    st[b + DevStat.rxBuffers] += this.rxBuf;
    this.rxPk = this.rxBy = this.rxBuf = 0;
  }

  /** Anything to do right now? (checked before sleeping, after re-enabling notifications) */
  hasWork(): boolean {
    // A netdev with frames to offer keeps the worker up only while the receiveq can take some.
    if (this.netdev.busy() && this.room() > 0) return true;
    try {
      if (this.active && !this.txFailed && this.txq.pending() > 0) return true;
      if (!this.rxFailed && this.rxq.pending() > 0) {
        for (let p = 0; p < this.inboxes.length; p++) if (!this.inboxes[p].isEmpty()) return true;
      }
    } catch {
      return true; // let poll() hit and report the error
    }
    return false;
  }

  /** Ask the driver for kicks on both queues (before sleeping). */
  enableNotifications(): void {
    if (!this.txFailed) this.txq.setNotification(true);
    if (!this.rxFailed) this.rxq.setNotification(true);
  }

  /**
   * Tell the driver not to kick while this worker polls (§2.7.7
   * VIRTQ_USED_F_NO_NOTIFY, §2.8.14 RING_EVENT_FLAGS_DISABLE; with EVENT_IDX
   * on a split ring the stale avail_event does it): a busy-polling worker,
   * or one that woke up, saves the driver a notification per burst, as
   * DPDK's vhost does.
   */
  disableNotifications(): void {
    if (!this.txFailed) this.txq.setNotification(false);
    if (!this.rxFailed) this.rxq.setNotification(false);
  }

  // ---- TX ---------------------------------------------------------------

  private processTx(budget: number): number {
    if (this.txFailed) return 0;
    const txq = this.txq;
    const chain = this.txChain;
    const hdrLen = this.hdrLen;
    const netdev = this.netdev;
    const withHdr = netdev.wantsHeader === true;
    const learn = netdev.externalRx;
    const bytes = this.mem.bytes;
    const tap = this.tap !== null && this.tap.tx ? this.tap : null;
    let done = 0, pk = 0, by = 0, bad = 0;
    try {
      for (; done < budget; done++) {
        const m = txq.mark();
        let src: Bytes, off: number, len: number, id: number, descs: number;
        const r = txq.popSingle(0, hdrLen);
        if (r === -2) break;
        if (r >= 0) {
          // One readable buffer holding header and frame (what DPDK and Linux send): no chain walk.
          src = bytes[r];
          off = txq.singleOff + hdrLen;
          len = txq.singleLen - hdrLen;
          id = txq.singleId;
          descs = 1;
        } else {
          txq.pop(chain);
          id = chain.id;
          descs = chain.descs;
          if (chain.readable === 1 && chain.len[0] >= hdrLen) {
            src = bytes[chain.region[0]];
            off = chain.offset[0] + hdrLen;
            len = chain.len[0] - hdrLen;
          } else if (chain.readable === 2 && chain.len[0] === hdrLen && !withHdr) {
            src = bytes[chain.region[1]];
            off = chain.offset[1];
            len = chain.len[1];
          } else {
            // Header and frame spread over several buffers: gather them (header at [0, hdrLen)).
            const total = chain.readableBytes;
            if (total < hdrLen || total > this.gather.u8.length) {
              // Too short for a header, or too large: a bad packet, not a broken queue.
              bad++;
              txq.pushUsed(id, 0, descs);
              continue;
            }
            chain.readTo(this.gather, 0, 0, total);
            src = this.gather;
            off = hdrLen;
            len = total - hdrLen;
          }
        }
        if (learn) this.steering.learnTx(src, off, len, this.pair);
        if (!(withHdr ? netdev.transmit(src, off - hdrLen, len + hdrLen, this) : netdev.transmit(src, off, len, this))) {
          txq.rewind(m); // backpressure: offered again next round
          break;
        }
        // A gathered frame lives in the one gather buffer: a batching netdev must finish it now.
        if (tap !== null) tap.put(DIR_TX, src, off, len);
        if (src === this.gather) netdev.flush?.();
        txq.pushUsed(id, 0, descs);
        pk++;
        by += len;
      }
    } catch (e) {
      this.fail(true, e);
    }
    const st = this.stats, b = this.statBase;
    if (pk !== 0) {
      st[b + DevStat.txPackets] += pk;
      st[b + DevStat.txBytes] += by;
    }
    if (bad !== 0) st[b + DevStat.errors] += bad;
    netdev.flush?.();
    return done;
  }

  // ---- RX ---------------------------------------------------------------

  /** RxPort: steer one frame to its pair (here, another pair's inbox, or the backlog). */
  receive(src: Bytes, off: number, len: number, originPair: number): boolean {
    const steering = this.steering;
    if (!steering.accepts(src, off, len)) {
      this.stats[this.statBase + DevStat.rxFiltered]++;
      return true;
    }
    const target = steering.route(src, off, len, originPair);
    if (target === this.pair) {
      if (this.backlogN === 0 && this.deliver(src, off, len)) return true;
      this.flushRxStats(); // off the fast path: counters are current whenever the backlog is in use
      if (this.inboxes[this.pair].push(src, off, len)) {
        this.backlogN++;
        this.stats[this.statBase + DevStat.backlog]++;
        this.stats[this.statBase + DevStat.rxRingFull]++;
        return true;
      }
      return false;
    }
    if (this.outboxes[target].push(src, off, len)) {
      this.notifier.wakeDevice(target);
      return true;
    }
    return false;
  }

  drop(): void {
    this.stats[this.statBase + DevStat.rxDrops]++;
  }

  room(): number {
    if (this.rxFailed) return 0;
    try {
      return this.backlogN === 0 ? this.rxq.pending() : 0;
    } catch {
      return 0;
    }
  }

  private drainInboxes(budget: number): number {
    let moved = 0;
    const boxes = this.inboxes;
    for (let p = 0; p < boxes.length; p++) {
      const box = boxes[p];
      while (moved < budget && box.peek()) {
        if (!this.deliver(box.bytes, box.frameOff, box.frameLen)) return moved;
        box.consume();
        if (p === this.pair) {
          this.backlogN--;
          this.stats[this.statBase + DevStat.backlog]--;
        }
        moved++;
      }
    }
    return moved;
  }

  /** Place one frame in receiveqN. Returns false (nothing consumed) when there are not enough RX buffers. */
  private deliver(src: Bytes, off: number, len: number): boolean {
    if (this.rxFailed) return false;
    const rxq = this.rxq;
    const hdrLen = this.hdrLen;
    const need = hdrLen + len;
    try {
      const r = rxq.popSingle(DESC_F_WRITE, need);
      if (r >= 0) {
        // One writable buffer holds header and frame (what DPDK and Linux post): no chain walk.
        const dst = this.mem.bytes[r];
        const o = rxq.singleOff;
        this.writeHdr(dst, o, 1);
        copyBytes(dst, o + hdrLen, src, off, len);
        rxq.pushUsed(rxq.singleId, need, 1);
        if (this.tap !== null && this.tap.rx) this.tap.put(DIR_RX, src, off, len);
        this.rxPk++;
        this.rxBy += len;
        this.rxBuf++;
        return true;
      }
      if (r === -2) return false;
      const chain = this.rxChain;
      const m = rxq.mark();
      rxq.pop(chain);
      if (chain.writableBytes < need) {
        if (this.mrg && chain.writableBytes >= hdrLen) return this.deliverMerged(m, src, off, len);
        // Without MRG_RXBUF (or a first buffer that cannot hold the header) the frame cannot be received.
        rxq.rewind(m);
        this.drop();
        return true;
      }
      this.writeRx(chain, src, off, len, 1);
      rxq.pushUsed(chain.id, need, chain.descs);
      if (this.tap !== null && this.tap.rx) this.tap.put(DIR_RX, src, off, len);
    } catch (e) {
      this.fail(false, e);
      return false;
    }
    this.rxPk++;
    this.rxBy += len;
    this.rxBuf++;
    return true;
  }

  /**
   * MRG_RXBUF (§5.1.6.4.2): spread one frame over as many chains as it takes,
   * num_buffers in the first header. The first chain was popped into rxChain
   * (mark `m` before it); each further chain is written as it is popped. On
   * shortage every popped chain is given back (what was written into them
   * is never marked used, so the driver ignores it); a frame larger than
   * the whole receiveq could ever hold is dropped.
   */
  private deliverMerged(m: number, src: Bytes, off: number, len: number): boolean {
    const rxq = this.rxq;
    const first = this.rxChain;
    const more = this.rxMore;
    const hdrLen = this.hdrLen;
    const ids = this.mrgIds, descs = this.mrgDescs, lens = this.mrgLens;
    const share0 = first.writableBytes - hdrLen;
    let fOff = off + share0;
    let left = len - share0;
    let n = 0; // chains after the first
    while (left > 0) {
      if (n + 1 >= rxq.size) {
        rxq.rewind(m);
        this.drop();
        return true;
      }
      if (rxq.pending() === 0) {
        rxq.rewind(m);
        return false;
      }
      rxq.pop(more);
      const share = Math.min(left, more.writableBytes);
      more.writeFrom(0, src, fOff, share);
      ids[n] = more.id;
      descs[n] = more.descs;
      lens[n] = share;
      n++;
      fOff += share;
      left -= share;
    }
    this.writeRx(first, src, off, share0, n + 1);
    rxq.pushUsed(first.id, first.writableBytes, first.descs);
    for (let i = 0; i < n; i++) rxq.pushUsed(ids[i], lens[i], descs[i]);
    if (this.tap !== null && this.tap.rx) this.tap.put(DIR_RX, src, off, len);
    this.rxPk++;
    this.rxBy += len;
    this.rxBuf += n + 1;
    return true;
  }

  /** Write header (zeroed, num_buffers) and `len` frame bytes into a chain's writable buffers. */
  private writeRx(chain: DescChain, src: Bytes, off: number, len: number, numBuffers: number): void {
    const hdrLen = this.hdrLen;
    const w = chain.readable;
    if (chain.count - w >= 1 && chain.len[w] >= hdrLen + len) {
      // One writable buffer holds header and frame.
      const dst = this.mem.bytes[chain.region[w]];
      const o = chain.offset[w];
      this.writeHdr(dst, o, numBuffers);
      copyBytes(dst, o + hdrLen, src, off, len);
      return;
    }
    const h = this.hdr;
    h.i32.fill(0);
    if (hdrLen >= 12) { h.u8[10] = numBuffers & 0xff; h.u8[11] = numBuffers >>> 8; }
    const at = chain.writeFrom(0, h, 0, hdrLen);
    chain.writeFrom(at, src, off, len);
  }

  /**
   * The RX virtio_net_hdr (§5.1.6.1) at byte `o` of `dst`, all in one buffer:
   * no flags, no GSO, num_buffers (le16 at byte 10, VERSION_1 headers), and
   * no hash (hash_value, hash_report: 0 in a 20-byte header).
   */
  private writeHdr(dst: Bytes, o: number, numBuffers: number): void {
    const hdrLen = this.hdrLen;
    if ((o & 3) === 0) {
      const d32 = dst.i32;
      const wo = o >>> 2;
      d32[wo] = 0;
      d32[wo + 1] = 0;
      if (hdrLen >= 12) d32[wo + 2] = numBuffers << 16;
      else if (hdrLen === 10) dst.u8[o + 8] = dst.u8[o + 9] = 0;
      if (hdrLen === 20) d32[wo + 3] = d32[wo + 4] = 0;
    } else {
      const u8 = dst.u8;
      u8.fill(0, o, o + hdrLen);
      if (hdrLen >= 12) {
        u8[o + 10] = numBuffers & 0xff;
        u8[o + 11] = numBuffers >>> 8;
      }
    }
  }

  // ---- notifications and faults -------------------------------------------

  /**
   * Publish both used rings and send a used-buffer notification for each
   * queue whose driver asked for one (EVENT_IDX or flags, §2.7.10): one
   * notification per virtqueue, as vhost-user's per-queue call fds need.
   */
  private publish(): void {
    const st = this.stats, b = this.statBase;
    const txq = this.txq, rxq = this.rxq;
    if (!this.txFailed && txq.unpublished) {
      if (txq.publish()) {
        st[b + DevStat.notifySent]++;
        this.notifier.notifyQueue(2 * this.pair + 1);
      } else st[b + DevStat.notifySuppressed]++;
    }
    if (!this.rxFailed && rxq.unpublished) {
      if (rxq.publish()) {
        st[b + DevStat.notifySent]++;
        this.notifier.notifyQueue(2 * this.pair);
      } else st[b + DevStat.notifySuppressed]++;
    }
  }

  private fail(tx: boolean, e: unknown): void {
    if (tx) this.txFailed = true;
    else this.rxFailed = true;
    this.stats[this.statBase + DevStat.errors]++;
    const err = e instanceof Error ? e : new Error(String(e));
    if (!(e instanceof VirtioError)) err.message = `unexpected: ${err.message}`;
    this.onQueueError(tx ? 2 * this.pair + 1 : 2 * this.pair, err);
  }
}
