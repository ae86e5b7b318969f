/**
 * The per-chain part of a driver queue's used-buffer burst
 * ({@link DriverQueue.popUsedBurst}, and what {@link DriverQueue.recycleBurst}
 * hands on), the same for split (§2.7.8) and packed (§2.8.22) rings: one
 * {@link UsedByChain.popUsedIfAny} per chain, each chain's token and used
 * length stored at `tokens[i]` / `lens[i]`. An error met after chains were
 * taken goes to `late` (the queue throws it from its next burst, so the
 * chains before it are delivered first); met before any, it is thrown.
 */
import type { DriverQueue } from './queue.js';

/** What the per-chain path needs of a driver queue. */
export type UsedByChain = Pick<DriverQueue, 'popUsedIfAny' | 'usedToken' | 'usedLen'>;

/**
 * Take used chains one by one into `tokens` / `lens` from index `i` until
 * `max` or none waits.
 * @returns the index after the last chain taken
 * @throws what popUsedIfAny throws, when `i` is 0 (nothing taken yet)
 */
export function takeUsedEach(q: UsedByChain, tokens: Int32Array, lens: Int32Array, i: number, max: number, late: (e: Error) => void): number {
  while (i < max) {
    let id: number;
    try {
      id = q.popUsedIfAny();
    } catch (err) {
      if (i === 0) throw err;
      late(err as Error);
      break;
    }
    if (id < 0) break;
    tokens[i] = q.usedToken;
    lens[i] = q.usedLen;
    i++;
  }
  return i;
}
