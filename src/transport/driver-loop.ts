/**
 * The driver side of one queue pair as a worker runs it, whatever the
 * transport: stock receiveqN, put the traffic source's frames on
 * transmitqN, hand every received frame to the source, reclaim transmitted
 * buffers, and sleep when idle (notify mode) or spin (busy mode).
 *
 * Only how the worker kicks the device and waits for used-buffer
 * notifications differs between transports ({@link DriverNotify}): the
 * local transport rings Atomics doorbells, the vhost-user front-end writes
 * kick eventfds and polls call eventfds. The traffic source is injected.
 *
 * Control words ({@link SharedControl}): CTL_STOP ends the loop; CTL_TX_STOP
 * stops new TX, and the pair acks it (TX_STOP_ACK) in the first round that
 * sends nothing; CTL_ACTIVE_PAIRS says whether this pair may send; CTL_PAUSE
 * odd pauses TX and the pair acks (ack word = the epoch) once its transmitq
 * is drained, then re-reads its flows when the epoch turns even (the
 * reorder-free pair-count change, §5.1.6.5.5).
 */
import type { NetDriverPair } from '../net/driver-pair.js';
import { DrvStat } from '../net/stats.js';
import type { TrafficSource } from '../traffic/source.js';
import { CTL_ACTIVE_PAIRS, CTL_PAUSE, CTL_STOP, CTL_TX_STOP, type SharedControl } from './local/shared.js';
import type { CaptureRing } from '../net/capture-ring.js';
import { DriverTap } from './driver-tap.js';

/** How a driver worker notifies its device and waits for it. */
export interface DriverNotify {
  /** Available-buffer notification (§2.9) for the pair's receiveq (0) or transmitq (1). */
  kick(queue: 0 | 1): void;
  /** A token read before interrupts are re-armed, passed to {@link sleep} (closes the lost-wake-up race). */
  arm(): number;
  /** Sleep until a used-buffer notification or a control change, at most `ms`; true when a notification woke it. */
  sleep(token: number, ms: number): boolean;
}

export interface DriverLoopOptions {
  pair: number;
  busy: boolean;
  /** Frames per poll round. */
  budget: number;
  ctl: SharedControl;
  stats: Float64Array;
  statBase: number;
  /** Extra TX gate, checked every round (the front-end's link state). Default: always. */
  txAllowed?: () => boolean;
  /** Called when a round found no work, before sleeping (front-end: hold handshake). */
  idle?: () => void;
  /** receiveqN is stocked and published: the loop is about to start. */
  onReady?: () => void;
  /** The pair stopped on a ring error (drv.error): called once. */
  onError: (e: Error) => void;
  /** This pair's capture ring (driver-tap.ts): frames received and transmitted are copied there while a capture runs. */
  capture?: CaptureRing;
}

/** Run until CTL_STOP. Stocks receiveqN first. */
export function runDriverLoop(drv: NetDriverPair, source: TrafficSource, notify: DriverNotify, o: DriverLoopOptions): void {
  const { ctl, stats, statBase, budget, busy } = o;
  const words = ctl.words;
  const pair = o.pair;
  const txAllowed = o.txAllowed ?? (() => true);
  const consume = (src: Parameters<typeof source.consume>[0], off: number, len: number) => source.consume(src, off, len);
  // Capture (driver-tap.ts): the tapped pair and consumer are used only in rounds a capture runs.
  const tap = o.capture ? new DriverTap(o.capture, drv, consume) : null;
  let txPair = drv;
  let rxConsume = consume;
  let pauseSeen = Atomics.load(words, CTL_PAUSE);
  let reported = false;
  drv.refillRx();
  if (drv.flushRx()) notify.kick(0);
  // Used-buffer notifications off while polling, on only around a sleep (as Linux's NAPI and DPDK's
  // virtio PMD do): a ring starts with them on (packed: RING_EVENT_FLAGS_ENABLE, §2.8.10), and a
  // device that honours that pays a notification (an eventfd write, a syscall) for every burst.
  drv.setInterrupts(false);
  let irqOn = false;
  o.onReady?.();
  const txq = drv.txq;
  let sent = 0; // frames the last round put on the transmitq
  for (;;) {
    if (irqOn) {
      drv.setInterrupts(false);
      irqOn = false;
    }
    if (tap !== null) {
      tap.ring.refresh();
      txPair = tap.ring.tx ? tap.tx : drv;
      rxConsume = tap.ring.rx ? tap.consume : consume;
    }
    // Reclaim transmitted buffers when the transmitq cannot take a whole
    // budget, or when the last round sent nothing (idle, paused, paced):
    // while sending, the used ring is read in large batches instead of
    // every round (as DPDK's virtio_xmit_pkts does), so the device's core
    // keeps its used-ring lines instead of losing them to our reads.
    let work = sent === 0 || txq.numFree < budget ? drv.reclaimTx() : 0;
    sent = 0;
    const pause = Atomics.load(words, CTL_PAUSE);
    const paused = (pause & 1) === 1;
    if (pause !== pauseSeen && !paused) source.reassign();
    pauseSeen = pause;
    const active = pair < Atomics.load(words, CTL_ACTIVE_PAIRS);
    const txStop = Atomics.load(words, CTL_TX_STOP);
    if (!paused && active && txStop === 0 && !drv.error && txAllowed()) {
      sent = source.fill(txPair, budget);
      work += sent;
      if (drv.flushTx()) notify.kick(1);
    } else if (txStop !== 0 && Atomics.load(words, ctl.txStopAck(pair)) !== txStop) {
      // Seen after this pair's last TX round and its counters: the TX totals are final (tx-stop.ts).
      Atomics.store(words, ctl.txStopAck(pair), txStop);
    }
    const r = drv.pollRx(budget, rxConsume);
    if (r > 0) {
      work += r;
      if (drv.flushRx()) notify.kick(0);
    }
    if (drv.error && !reported) {
      reported = true;
      o.onError(drv.error);
    }
    if (work > 0) continue;
    if (paused && drv.txInFlight === 0 && Atomics.load(words, ctl.ack(pair)) !== pause) {
      Atomics.store(words, ctl.ack(pair), pause);
      Atomics.notify(words, ctl.ack(pair));
    }
    o.idle?.();
    if (Atomics.load(words, CTL_STOP) !== 0) break;
    if (busy) continue;
    const token = notify.arm();
    drv.setInterrupts(true);
    irqOn = true;
    if (drv.hasUsed()) continue;
    if (notify.sleep(token, 50)) stats[statBase + DrvStat.interrupts]++;
  }
}
