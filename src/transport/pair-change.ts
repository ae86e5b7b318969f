/**
 * The reorder-free change of the active pair count (§5.1.6.5.5
 * VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET), the same for every transport: pause TX
 * on every pair (CTL_PAUSE odd, see driver-loop.ts), wait until each pair
 * acked the epoch with its transmitq drained and no frame is left in
 * flight, apply the new count (controlq or SET_VRING_ENABLE), let the
 * caller re-assign flows, then resume (CTL_PAUSE even) — also when any step
 * fails, so no pair stays paused.
 */
import { CTL_PAUSE, type SharedControl } from './local/shared.js';

export interface PairChange {
  ctl: SharedControl;
  /** Pairs whose workers must ack the pause. */
  pairs: number;
  /** Wake the pair workers (they sleep between polls). */
  wake: () => void;
  /** Frames between TX and RX (0 when drained). */
  inFlight: () => number;
  /** Apply the new count once everything is drained. */
  apply: () => Promise<void>;
  /** After apply, before resuming: re-assign flows to pairs. */
  beforeResume: () => void;
  timeoutMs: number;
}

/** @throws Error when a pair does not drain, or frames stay in flight, for `timeoutMs`. */
export async function changeActivePairs(c: PairChange): Promise<void> {
  const ctl = c.ctl;
  const cur = ctl.get(CTL_PAUSE);
  const epoch = cur % 2 === 0 ? cur + 1 : cur + 2; // odd: paused
  ctl.set(CTL_PAUSE, epoch);
  c.wake();
  const deadline = Date.now() + c.timeoutMs;
  try {
    for (let p = 0; p < c.pairs; p++) {
      while (ctl.get(ctl.ack(p)) !== epoch) {
        if (Date.now() > deadline) throw new Error(`pair ${p} did not drain its transmitq`);
        c.wake();
        await sleep(1);
      }
    }
    while (c.inFlight() > 0) {
      if (Date.now() > deadline) throw new Error(`${c.inFlight()} frames still in flight`);
      await sleep(1);
    }
    await c.apply();
    c.beforeResume();
  } finally {
    ctl.set(CTL_PAUSE, epoch + 1);
    c.wake();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
