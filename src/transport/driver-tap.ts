/**
 * Per-queue capture on the driver side (`attach --capture`, `virtio-mq
 * capture` against a running attach): the tap {@link runDriverLoop} puts on
 * one queue pair when its worker was given a capture ring
 * ({@link CaptureRing}, drained by {@link QueueCapture} on the main thread).
 *
 * Directions are the driver's, as the queue names say and as on the device
 * side: RX (pcapng inbound) = a frame the driver took from receiveqN (the
 * device sent it), TX (outbound) = a frame the driver made available on
 * transmitqN. Frames are captured without their `virtio_net_hdr`; a
 * MRG_RXBUF frame as one frame.
 *
 * Costs nothing while no capture runs: the loop reads the ring's mask once
 * per poll round ({@link CaptureRing.refresh}) and only while a direction is
 * captured hands the traffic source {@link DriverTap.tx} instead of the
 * pair, and the pair {@link DriverTap.consume} instead of the plain
 * consumer; otherwise it runs exactly the untapped calls. Capturing never
 * waits: a frame the ring has no room for is counted as a capture drop.
 */
import { DIR_RX, DIR_TX, type CaptureRing } from '../net/capture-ring.js';
import type { FrameConsumer, NetDriverPair } from '../net/driver-pair.js';

export class DriverTap {
  /**
   * The pair as a traffic source sees it while TX capture is on: the same
   * object underneath (a prototype view), whose reserveTx/commitTx (and so
   * send) also copy each committed frame into the ring.
   */
  readonly tx: NetDriverPair;
  /** The consumer while RX capture is on: copies each received frame into the ring, then consumes it. */
  readonly consume: FrameConsumer;

  constructor(readonly ring: CaptureRing, drv: NetDriverPair, consume: FrameConsumer) {
    const reserve = drv.reserveTx.bind(drv);
    const commit = drv.commitTx.bind(drv);
    let at = -1;
    const tx = Object.create(drv) as NetDriverPair;
    tx.burstTx = false; // frames are copied at commitTx: no reserveTxBurst
    tx.reserveTx = () => (at = reserve());
    tx.commitTx = (len: number) => {
      ring.put(DIR_TX, drv.txView, at, len);
      commit(len);
    };
    this.tx = tx;
    this.consume = (src, off, len) => {
      ring.put(DIR_RX, src, off, len);
      consume(src, off, len);
    };
  }
}
