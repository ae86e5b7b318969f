/**
 * The interface between a virtio-net device's queue pair and the netdev
 * behind it (where the device's frames go: loopback, TAP, pcap, generator).
 * One instance per queue pair, living in that pair's worker.
 */
import type { Bytes } from '../virtio/copy.js';

/** Where a netdev hands the frames it receives: the device's receive path. */
export interface RxPort {
  /**
   * Offer one Ethernet frame (no virtio_net_hdr; bytes [off, off+len) of
   * `src`) for the guest. `originPair` is the queue pair whose transmitq the
   * frame came from (loopback), or -1 for frames from outside. Returns false
   * when it could not be taken now (no RX buffer and the backlog full): the
   * caller either retries later (backpressure) or calls {@link drop}.
   */
  receive(src: Bytes, off: number, len: number, originPair: number): boolean;
  /**
   * Offer one frame the netdev took from its own queue for this pair (a
   * multi-queue TAP: queue N feeds pair N), with no steering. `hdrOff` >= 0
   * is the byte offset in `src` of the netdev's virtio_net_hdr (checksum
   * and GSO state, §5.1.6.4), else -1. Returns false when the receiveq has
   * no room for it now (retry later, or drop).
   */
  receiveOwn(src: Bytes, off: number, len: number, hdrOff: number): boolean;
  /**
   * Direct receive (optional; for a netdev with its own queue that can read
   * a frame straight into the driver's receive buffers, §5.1.6.4): take
   * receive buffers worth at least `min` bytes (one buffer without
   * VIRTIO_NET_F_MRG_RXBUF), all in one guest memory region, and describe
   * their writable pieces in {@link directOffs} / {@link directCaps} (byte
   * offsets into {@link directBuf}). Returns the number of pieces, 0 when
   * no buffer is available now, -1 when the buffers cannot be used directly
   * (use receiveOwn). Follow with {@link commitRx} or {@link cancelRx}.
   */
  reserveRx?(min: number): number;
  readonly directBuf?: Bytes;
  readonly directOffs?: Float64Array;
  readonly directCaps?: Uint32Array;
  /**
   * Finish a direct receive: `len` bytes (the netdev's virtio_net_hdr, then
   * the frame) were read into the reserved pieces and, beyond their
   * capacity, into `tail[tailOff..]`. Returns 1 when received, 0 when the
   * frame was refused (counted as a drop), -1 when there were not enough
   * receive buffers: nothing consumed, the whole frame (header first) was
   * copied to `spill[spillOff..]` for a later receiveOwn.
   */
  commitRx?(len: number, tail: Bytes, tailOff: number, spill: Bytes, spillOff: number): number;
  /** Give back the buffers of {@link reserveRx} (nothing was read). */
  cancelRx?(): void;
  /** Count a frame the netdev had to drop because receive() refused it. */
  drop(): void;
  /**
   * Receive buffers (descriptor chains) the driver has made available on this
   * pair's receiveq: a netdev that can hold frames (a TAP's kernel queue)
   * reads no more than this, as QEMU stops polling a tap while the guest has
   * no RX buffers, instead of reading frames only to drop them.
   */
  room(): number;
}

export interface Netdev {
  /**
   * One frame the driver transmitted on this pair: an Ethernet frame without
   * the virtio_net_hdr at [off, off+len) of `src` (guest memory or a gather
   * buffer: valid only during the call). Return false to push back; the
   * descriptor chain stays in the transmitq and is offered again later.
   */
  transmit(src: Bytes, off: number, len: number, rx: RxPort): boolean;
  /** Offer up to `budget` frames from outside through `rx`; returns how many were offered. */
  poll(rx: RxPort, budget: number): number;
  /**
   * True: transmit() gets the driver's virtio_net_hdr followed by the frame
   * ([off, off+hdrLen) is the header), as a TAP opened with IFF_VNET_HDR
   * wants it; the bytes may be guest memory.
   */
  readonly wantsHeader?: boolean;
  /**
   * One frame in several pieces of one buffer (`wantsHeader` netdevs only):
   * piece i is [offs[i], offs[i] + lens[i]) of `buf`, i < count, the
   * virtio_net_hdr first. The tables are reused by the caller after the
   * call (copy them); the bytes stay valid until flush(). Return false to
   * push back.
   */
  transmitSg?(buf: Bytes, offs: Float64Array, lens: Uint32Array, count: number, rx: RxPort): boolean;
  /** True: poll() hands its frames to receiveOwn() (the netdev chose the pair: no device steering, no AFS learning). */
  readonly ownQueue?: boolean;
  /**
   * Finish every transmit() of this round. Called before the used ring is
   * published: after that the driver may reuse the buffers transmit() saw.
   */
  flush?(): void;
  /** File descriptors a worker waiting for work should also wake on (e.g. a TAP queue fd). */
  readonly waitFds?: readonly number[];
  /** True when poll() can produce frames on its own (so AFS must learn TX flows). */
  readonly externalRx: boolean;
  /** True while poll() has more to offer right now (the worker must not sleep). */
  busy(): boolean;
  close?(): void;
  /** True once the device behind this netdev went away (a deleted TAP): leave waitFds out of poll(2). */
  readonly gone?: boolean;
  /** Called once when {@link gone} turns true (a worker reports it to the control plane). */
  onGone?: () => void;
}
