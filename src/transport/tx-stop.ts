/**
 * Stopping new TX on every queue pair, acknowledged: after CTL_TX_STOP is
 * set, a driver worker may still be inside a round that read the word as 0
 * and is putting one more budget of frames on its transmitq. Each worker
 * stores CTL_TX_STOP's value into its TX_STOP_ACK word in its first round
 * that sends nothing (driver-loop.ts), after its counters are written, so
 * once every pair acked, the TX totals are final and "sent − received" is
 * what is really in flight. Without the ack a caller draining right after
 * the stop could see 0 in flight, stop the workers, and count that last
 * budget as lost.
 */
import { CTL_TX_STOP, type SharedControl } from './local/shared.js';

/**
 * Set CTL_TX_STOP and wait until every pair `0 .. pairs-1` acked it, or
 * `timeoutMs` passed (a worker that crashed or never started never acks).
 * Never throws.
 * @returns the pairs that did not ack in time (empty: every TX total is final)
 */
export async function stopTxAcked(ctl: SharedControl, pairs: number, wake: () => void, timeoutMs = 2000): Promise<number[]> {
  ctl.set(CTL_TX_STOP, 1);
  wake();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const missing: number[] = [];
    for (let p = 0; p < pairs; p++) if (ctl.get(ctl.txStopAck(p)) !== 1) missing.push(p);
    if (missing.length === 0 || Date.now() >= deadline) return missing;
    await new Promise((r) => setTimeout(r, 1));
    wake();
  }
}
