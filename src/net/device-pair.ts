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
 * - Offloads (§5.1.6.2, §5.1.6.4): a netdev with a vnet header gets the
 *   driver's header unchanged (multi-descriptor chains as scatter pieces,
 *   `transmitSg`); for one without, with VIRTIO_NET_F_CSUM negotiated, the
 *   device completes checksums and segments GSO frames itself (gso.ts). A
 *   netdev with its own queue choice (a multi-queue TAP) hands frames to
 *   `receiveOwn` (no steering) with its header, filtered by the offloads
 *   the driver accepted, or reads them straight into the receive buffers
 *   (`reserveRx` / `commitRx`).
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
import { GSO_MAX_FRAME, GsoError, SoftOffload, type GsoEmit } from './gso.js';
import {
  VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
} from './hdr.js';
import type { Netdev, RxPort } from './netdev.js';
import { RX_OFFLOAD_CSUM, RX_OFFLOAD_ECN, RX_OFFLOAD_TSO4, RX_OFFLOAD_TSO6, RX_OFFLOAD_UFO, RX_OFFLOAD_USO4, RX_OFFLOAD_USO6 } from './offloads.js';
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
  /**
   * VIRTIO_NET_F_CSUM negotiated (the driver may send NEEDS_CSUM and, with
   * HOST_TSO4/6, HOST_UFO, HOST_USO, GSO frames): for a netdev without a
   * vnet header the device completes checksums and segments in software.
   */
  txOffload?: boolean;
  /**
   * Offloads the driver accepts on RX (RX_OFFLOAD_* bits, offloads.ts: from
   * GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO, GUEST_USO4/6 and
   * CTRL_GUEST_OFFLOADS_SET). A vnet header from the netdev asking for more
   * is refused (the frame dropped); flags are cleared without GUEST_CSUM.
   */
  rxOffloads?: number;
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
  /** TX software offload (netdev without a vnet header and VIRTIO_NET_F_CSUM negotiated). */
  private readonly swTx: SoftOffload | null;
  /** Backpressure in the middle of a segmented frame: chain id and frames already sent. */
  private swResumeId = -1;
  private swResumeDone = 0;
  /** RX_OFFLOAD_* bits the driver accepts (see DevicePairOptions.rxOffloads). */
  rxOffloads: number;
  /** receiveOwn: offset in the frame's buffer of the netdev's vnet header (-1: none, write a plain one). */
  private rxHdrOff = -1;
  private rxHdrSrc: Bytes | null = null;
  /** Direct receive (reserveRx/commitRx): the pieces, and per reserved chain its id, descriptors, bytes and the mark after it. */
  readonly directOffs = new Float64Array(1023);
  readonly directCaps = new Uint32Array(1023);
  directBuf: Bytes | undefined = undefined;
  private rsN = 0;
  private rsTotal = 0;
  private rsMark0 = 0;
  private readonly rsIds: Int32Array;
  private readonly rsDescs: Int32Array;
  private readonly rsCaps: Float64Array;
  private readonly rsMarks: Float64Array;
  /** Sends one software segment to the netdev (made once: no closure per offloaded frame). */
  private readonly emitSegment: GsoEmit = (b, o, l) => {
    const netdev = this.netdev;
    if (netdev.externalRx) this.steering.learnTx(b, o, l, this.pair);
    if (!netdev.transmit(b, o, l, this)) return false;
    netdev.flush?.(); // the segment lives in the offload's scratch buffer
    return true;
  };
  /** Scratch header fields read from a TX header (software offload). */
  private readonly txh = { flags: 0, gsoType: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
  onQueueError: (queue: number, err: Error) => void = () => {};
  /** Per-queue capture (set once when the worker is built): frames into receiveqN and out of transmitqN are copied there while it is on. */
  tap: CaptureRing | null = null;

  constructor(
    private readonly mem: GuestMemory,
    private rxq: DeviceQueue,
    private txq: DeviceQueue,
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
    const g = new SharedArrayBuffer(Math.max(GSO_MAX_FRAME + 64, (opts.maxFrame + 64 + 3) & ~3));
    this.gather = { u8: new Uint8Array(g), i32: new Int32Array(g) };
    this.mrgIds = new Int32Array(rxq.size);
    this.mrgDescs = new Int32Array(rxq.size);
    this.mrgLens = new Float64Array(rxq.size);
    const h = new ArrayBuffer(32);
    this.hdr = { u8: new Uint8Array(h), i32: new Int32Array(h) };
    this.rsIds = new Int32Array(rxq.size);
    this.rsDescs = new Int32Array(rxq.size);
    this.rsCaps = new Float64Array(rxq.size);
    this.rsMarks = new Float64Array(rxq.size);
    this.swTx = opts.txOffload === true && netdev.wantsHeader !== true ? new SoftOffload() : null;
    this.rxOffloads = opts.rxOffloads ?? 0;
    // The backlog outlives a worker (a pair restarted by SET_VRING_ENABLE, SET_MEM_TABLE, ...): frames a
    // predecessor left in it go first, so new frames must not be delivered past them.
    this.backlogN = inboxes[this.pair].count();
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

  /**
   * Go on with other objects for the same two rings at the same positions
   * (the dirty-logging wrapper of live migration put on or taken off, as
   * vhost-user's VHOST_F_LOG_ALL comes and goes). Only between poll()
   * rounds: no chain is then popped and not yet used, and both used rings
   * are published.
   */
  setQueues(rxq: DeviceQueue, txq: DeviceQueue): void {
    this.rxq = rxq;
    this.txq = txq;
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
      // pending() may have kept used descriptors a killed predecessor left (packed): publish them before sleeping.
      if ((!this.txFailed && this.txq.unpublished) || (!this.rxFailed && this.rxq.unpublished)) return true;
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
    const learn = netdev.externalRx && netdev.ownQueue !== true;
    const sg = withHdr && netdev.transmitSg !== undefined;
    const sw = this.swTx !== null;
    const bytes = this.mem.bytes;
    const tap = this.tap !== null && this.tap.tx ? this.tap : null;
    let done = 0, pk = 0, by = 0, bad = 0;
    try {
      for (; done < budget; done++) {
        const m = txq.mark();
        let src: Bytes, off: number, len: number, id: number, descs: number;
        // Where the driver's virtio_net_hdr is (software offload reads it).
        let hsrc: Bytes, hoff: number;
        const r = txq.popSingle(0, hdrLen);
        if (r === -2) break;
        if (r >= 0) {
          // One readable buffer holding header and frame (what DPDK and Linux send): no chain walk.
          src = hsrc = bytes[r];
          hoff = txq.singleOff;
          off = hoff + hdrLen;
          len = txq.singleLen - hdrLen;
          id = txq.singleId;
          descs = 1;
        } else {
          txq.pop(chain);
          id = chain.id;
          descs = chain.descs;
          if (chain.readable === 1 && chain.len[0] >= hdrLen) {
            src = hsrc = bytes[chain.region[0]];
            hoff = chain.offset[0];
            off = hoff + hdrLen;
            len = chain.len[0] - hdrLen;
          } else if (chain.readable === 2 && chain.len[0] === hdrLen && !withHdr) {
            hsrc = bytes[chain.region[0]];
            hoff = chain.offset[0];
            src = bytes[chain.region[1]];
            off = chain.offset[1];
            len = chain.len[1];
          } else if (sg && chain.readable > 1 && chain.readableBytes >= hdrLen && this.oneRegion(chain)) {
            // Header and frame in several buffers of one region (Linux's TSO frames): scatter writev, no gather copy.
            if (!netdev.transmitSg!(bytes[chain.region[0]], chain.offset, chain.len, chain.readable, this)) {
              txq.rewind(m);
              break;
            }
            txq.pushUsed(id, 0, descs);
            pk++;
            by += chain.readableBytes - hdrLen;
            continue;
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
            src = hsrc = this.gather;
            hoff = 0;
            off = hdrLen;
            len = total - hdrLen;
          }
        }
        if (sw && (hsrc.u8[hoff] | hsrc.u8[hoff + 1]) !== 0) {
          // Checksum or segmentation asked for, and the netdev takes plain frames: done here.
          const res = this.softTx(hsrc, hoff, src, off, len, id);
          if (res < 0) {
            txq.rewind(m);
            break;
          }
          if (res === 0) bad++;
          else {
            pk++;
            by += len;
          }
          txq.pushUsed(id, 0, descs);
          continue;
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

  /** All readable pieces of `chain` in one guest memory region (one buffer for a scatter writev). */
  private oneRegion(chain: DescChain): boolean {
    const r0 = chain.region[0];
    for (let i = 1; i < chain.readable; i++) if (chain.region[i] !== r0) return false;
    return true;
  }

  /**
   * Software offload of one TX frame (header at `hsrc[hoff..]`): complete
   * the checksum and/or segment, transmitting every resulting frame.
   * Returns 1 when done, 0 for a refused frame (counted as an error), -1 on
   * backpressure (the chain is offered again; segments already sent are
   * skipped then).
   */
  private softTx(hsrc: Bytes, hoff: number, src: Bytes, off: number, len: number, id: number): number {
    const h = this.txh, u = hsrc.u8;
    h.flags = u[hoff];
    h.gsoType = u[hoff + 1];
    h.gsoSize = u[hoff + 4] | (u[hoff + 5] << 8);
    h.csumStart = u[hoff + 6] | (u[hoff + 7] << 8);
    h.csumOffset = u[hoff + 8] | (u[hoff + 9] << 8);
    const skip = this.swResumeId === id ? this.swResumeDone : 0;
    this.swResumeId = -1;
    let total: number, done: number;
    try {
      const sw = this.swTx!;
      total = sw.count(src.u8, off, len, h);
      done = sw.process(src.u8, off, len, h, this.emitSegment, skip);
    } catch (e) {
      if (e instanceof GsoError) return 0;
      throw e;
    }
    if (done < total) {
      this.swResumeId = id;
      this.swResumeDone = done;
      return -1;
    }
    return 1;
  }

  // ---- RX ---------------------------------------------------------------

  /**
   * RxPort: a frame the netdev read from its own queue for this pair (a
   * multi-queue TAP's queue N feeds pair N): no steering, no cross-pair
   * copy. `hdrOff` >= 0: a virtio_net_hdr from the netdev (the kernel's, in
   * its first 10 bytes: flags, gso_type, hdr_len, gso_size, csum_start,
   * csum_offset) at `src[hdrOff..]`, passed to the driver as far as it
   * accepted those offloads; a GSO type it did not accept drops the frame.
   * Returns false (nothing consumed) when the receiveq has no room now.
   */
  receiveOwn(src: Bytes, off: number, len: number, hdrOff: number): boolean {
    if (!this.steering.accepts(src, off, len)) {
      this.stats[this.statBase + DevStat.rxFiltered]++;
      return true;
    }
    if (hdrOff >= 0) {
      const u = src.u8;
      if ((u[hdrOff] | u[hdrOff + 1]) === 0) hdrOff = -1;
      else if (!this.rxHdrAccepted(u[hdrOff + 1])) {
        this.drop();
        return true;
      }
    }
    this.rxHdrOff = hdrOff;
    this.rxHdrSrc = src;
    const ok = this.deliver(src, off, len);
    this.rxHdrOff = -1;
    this.rxHdrSrc = null;
    return ok;
  }

  /** RxPort.reserveRx: receive buffers for a frame read straight into them (see netdev.ts). */
  reserveRx(min: number): number {
    if (this.rxFailed || this.backlogN !== 0) return 0;
    const rxq = this.rxq;
    const chain = this.rxChain;
    const hdrLen = this.hdrLen;
    const offs = this.directOffs, caps = this.directCaps;
    let n = 0, segs = 0, total = 0, region = -1;
    try {
      if (rxq.pending() === 0) return 0;
      this.rsMark0 = rxq.mark();
      do {
        const m = rxq.mark();
        rxq.pop(chain);
        const w = chain.readable, cnt = chain.count - w;
        let ok = cnt > 0 && segs + cnt <= offs.length && (n > 0 || chain.len[w] >= hdrLen);
        if (region < 0 && ok) region = chain.region[w];
        for (let i = w; ok && i < chain.count; i++) if (chain.region[i] !== region) ok = false;
        if (!ok) {
          rxq.rewind(m);
          break;
        }
        for (let i = w; i < chain.count; i++) {
          offs[segs] = chain.offset[i];
          caps[segs] = chain.len[i];
          segs++;
        }
        this.rsIds[n] = chain.id;
        this.rsDescs[n] = chain.descs;
        this.rsCaps[n] = chain.writableBytes;
        this.rsMarks[n] = rxq.mark();
        n++;
        total += chain.writableBytes;
      } while (this.mrg && total < min && n + 1 < rxq.size && rxq.pending() > 0);
    } catch (e) {
      this.fail(false, e);
      return 0;
    }
    if (n === 0) return -1;
    this.rsN = n;
    this.rsTotal = total;
    this.directBuf = this.mem.bytes[region];
    return segs;
  }

  /** RxPort.cancelRx. */
  cancelRx(): void {
    if (this.rsN === 0) return;
    this.rsN = 0;
    this.rxq.rewind(this.rsMark0);
  }

  /** RxPort.commitRx (see netdev.ts). */
  commitRx(len: number, tail: Bytes, tailOff: number, spill: Bytes, spillOff: number): number {
    const n = this.rsN, total = this.rsTotal, hdrLen = this.hdrLen, rxq = this.rxq;
    this.rsN = 0;
    const buf = this.directBuf!, d = buf.u8;
    const h0 = this.directOffs[0];
    try {
      const frameInFirst = Math.min(len, this.directCaps[0]) - hdrLen;
      if (len <= hdrLen || !this.rxHdrAccepted(d[h0 + 1]) ||
          (frameInFirst >= 14 && !this.steering.accepts(buf, h0 + hdrLen, frameInFirst))) {
        rxq.rewind(this.rsMark0);
        this.drop();
        return 0;
      }
      // §5.1.6.4: without GUEST_CSUM the device sets flags to zero.
      d[h0] = (this.rxOffloads & RX_OFFLOAD_CSUM) !== 0 ? d[h0] & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) : 0;
      if (len <= total) {
        let k = 0, acc = 0;
        while (acc < len) acc += this.rsCaps[k++];
        if (k < n) rxq.rewind(this.rsMarks[k - 1]);
        if (hdrLen >= 12) {
          d[h0 + 10] = k & 0xff;
          d[h0 + 11] = k >>> 8;
        }
        for (let i = 0; i < k; i++) rxq.pushUsed(this.rsIds[i], i < k - 1 ? this.rsCaps[i] : len - (acc - this.rsCaps[k - 1]), this.rsDescs[i]);
        this.rxPk++;
        this.rxBy += len - hdrLen;
        this.rxBuf += k;
        return 1;
      }
      if (!this.mrg) {
        rxq.rewind(this.rsMark0); // larger than the one buffer: the frame cannot be received
        this.drop();
        return 0;
      }
      // What did not fit went to the tail: copy it into further buffers.
      const more = this.rxMore;
      const ids = this.mrgIds, descs = this.mrgDescs, lens = this.mrgLens;
      let left = len - total, at = tailOff, x = 0;
      while (left > 0) {
        if (rxq.pending() === 0 || n + x + 1 >= rxq.size) {
          // Not enough buffers now: keep the frame (header first) for a later receiveOwn.
          let o = spillOff;
          for (let i = 0, got = 0; got < total; i++) {
            const c = this.directCaps[i];
            copyBytes(spill, o, buf, this.directOffs[i], c);
            o += c;
            got += c;
          }
          copyBytes(spill, o, tail, tailOff, len - total);
          rxq.rewind(this.rsMark0);
          return -1;
        }
        rxq.pop(more);
        const share = Math.min(left, more.writableBytes);
        more.writeFrom(0, tail, at, share);
        ids[x] = more.id;
        descs[x] = more.descs;
        lens[x] = share;
        x++;
        at += share;
        left -= share;
      }
      const k = n + x;
      if (hdrLen >= 12) {
        d[h0 + 10] = k & 0xff;
        d[h0 + 11] = k >>> 8;
      }
      for (let i = 0; i < n; i++) rxq.pushUsed(this.rsIds[i], this.rsCaps[i], this.rsDescs[i]);
      for (let i = 0; i < x; i++) rxq.pushUsed(ids[i], lens[i], descs[i]);
      this.rxPk++;
      this.rxBy += len - hdrLen;
      this.rxBuf += k;
      return 1;
    } catch (e) {
      this.fail(false, e);
      return 0;
    }
  }

  /** Does the driver accept a frame of GSO type `t` (with its ECN bit)? */
  private rxHdrAccepted(t: number): boolean {
    const o = this.rxOffloads;
    if ((t & VIRTIO_NET_HDR_GSO_ECN) !== 0 && (o & RX_OFFLOAD_ECN) === 0) return false;
    switch (t & ~VIRTIO_NET_HDR_GSO_ECN) {
      case VIRTIO_NET_HDR_GSO_NONE: return true;
      case VIRTIO_NET_HDR_GSO_TCPV4: return (o & RX_OFFLOAD_TSO4) !== 0;
      case VIRTIO_NET_HDR_GSO_TCPV6: return (o & RX_OFFLOAD_TSO6) !== 0;
      case VIRTIO_NET_HDR_GSO_UDP: return (o & RX_OFFLOAD_UFO) !== 0;
      case VIRTIO_NET_HDR_GSO_UDP_L4: return (o & (RX_OFFLOAD_USO4 | RX_OFFLOAD_USO6)) !== 0;
      default: return false;
    }
  }

  /** Copy the netdev's header fields (bytes 0-9) over a freshly written RX header at `dst[o..]`. */
  private applyRxHdr(dst: Uint8Array, o: number): void {
    const s = this.rxHdrSrc!.u8, h = this.rxHdrOff;
    const csum = (this.rxOffloads & RX_OFFLOAD_CSUM) !== 0;
    // §5.1.6.4: without GUEST_CSUM the device sets flags to zero.
    dst[o] = csum ? s[h] & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) : 0;
    for (let i = 1; i < 10; i++) dst[o + i] = s[h + i];
  }

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
    if (this.rxHdrOff >= 0) this.applyRxHdr(h.u8, 0);
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
    if (this.rxHdrOff >= 0) this.applyRxHdr(dst.u8, o);
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
