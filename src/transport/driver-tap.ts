/**
 * Per-queue capture on the driver side (`attach --capture`, `virtio-mq
 * capture` against a running attach): the tap {@link runDriverLoop} puts on
 * one queue pair when its worker was given a capture ring
 * ({@link CaptureRing}, drained by {@link QueueCapture} on the main thread).
 *
 * Directions are the driver's, as the queue names say and as on the device
 * side: RX (pcapng inbound) = a frame the driver took from receiveqN (the
 * device sent it), TX (outbound) = a frame the driver made available on
 * transmitqN. Frames are captured without their `virtio_net_hdr`.
 *
 * Chosen once per worker, before its loop starts: a worker without a ring
 * runs exactly the untapped code. With a ring, every transmitted frame goes
 * through one wrapper around `reserveTx`/`commitTx` (a field read when
 * capture is off) and every received one through one wrapper around the
 * source's consumer; the ring's mask is read once per poll round
 * ({@link CaptureRing.refresh}). Capturing never waits: a frame the ring
 * has no room for is counted as a capture drop.
 */
import { DIR_RX, DIR_TX, type CaptureRing } from '../net/capture-ring.js';
import type { FrameConsumer, NetDriverPair } from '../net/driver-pair.js';

/**
 * Tap `drv`'s transmit path: each frame committed on transmitqN (through
 * reserveTx/commitTx or send) is copied into `ring` while TX capture is on.
 * Replaces the two methods on this instance, once.
 */
export function tapTransmit(drv: NetDriverPair, ring: CaptureRing): void {
  const reserve = drv.reserveTx.bind(drv);
  const commit = drv.commitTx.bind(drv);
  let at = -1;
  drv.reserveTx = () => (at = reserve());
  drv.commitTx = (len: number) => {
    if (ring.tx) ring.put(DIR_TX, drv.txView, at, len);
    commit(len);
  };
}

/** `consume`, also copying each received frame into `ring` while RX capture is on. */
export function tapReceive(ring: CaptureRing, consume: FrameConsumer): FrameConsumer {
  return (src, off, len) => {
    if (ring.rx) ring.put(DIR_RX, src, off, len);
    consume(src, off, len);
  };
}
