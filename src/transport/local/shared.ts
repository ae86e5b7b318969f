/**
 * The words the local transport's threads share besides guest memory: one
 * Int32Array over a SharedArrayBuffer.
 *
 * | index                | meaning |
 * | CTL_STOP             | 1: every worker exits |
 * | CTL_TX_STOP          | 1: driver workers stop making new TX frames |
 * | CTL_ACTIVE_PAIRS     | active queue pairs (VQ_PAIRS_SET) as the workers see it |
 * | CTL_PAUSE            | pause epoch: driver workers stop TX and ack when their transmitq is drained |
 * | CTL_GEN              | control generation: bumped when a control message waits on a worker's port |
 * | BELL_DEV + p         | device doorbell of pair p: available-buffer notifications (kicks) |
 * | BELL_DRV + p         | driver doorbell of pair p: used-buffer notifications (interrupts) |
 * | ACK + p              | pause epoch pair p's driver acknowledged |
 * | GEN_ACK + p          | control generation pair p's device worker has applied |
 * | TX_STOP_ACK + p      | CTL_TX_STOP value pair p's driver has seen, after its last TX round (see tx-stop.ts) |
 *
 * A doorbell is rung with Atomics.add + Atomics.notify; a worker sleeps with
 * Atomics.wait on the value it read before re-checking its rings (§2.7.7's
 * "re-check after enabling notifications" closes the lost-wake-up race).
 */
export const CTL_STOP = 0;
export const CTL_TX_STOP = 1;
export const CTL_ACTIVE_PAIRS = 2;
export const CTL_PAUSE = 3;
export const CTL_GEN = 4;
const FIXED = 8;

export class SharedControl {
  readonly words: Int32Array;
  constructor(readonly maxPairs: number, buffer?: SharedArrayBuffer) {
    this.words = new Int32Array(buffer ?? new SharedArrayBuffer((FIXED + 5 * maxPairs) * 4));
  }
  get buffer(): SharedArrayBuffer {
    return this.words.buffer as SharedArrayBuffer;
  }
  devBell(p: number): number {
    return FIXED + p;
  }
  drvBell(p: number): number {
    return FIXED + this.maxPairs + p;
  }
  ack(p: number): number {
    return FIXED + 2 * this.maxPairs + p;
  }
  genAck(p: number): number {
    return FIXED + 3 * this.maxPairs + p;
  }
  txStopAck(p: number): number {
    return FIXED + 4 * this.maxPairs + p;
  }
  ring(index: number): void {
    Atomics.add(this.words, index, 1);
    Atomics.notify(this.words, index);
  }
  get(index: number): number {
    return Atomics.load(this.words, index);
  }
  set(index: number, v: number): void {
    Atomics.store(this.words, index, v);
  }
  /** Wake every sleeper (used for stop and control changes). */
  wakeAll(): void {
    for (let p = 0; p < this.maxPairs; p++) {
      this.ring(this.devBell(p));
      this.ring(this.drvBell(p));
    }
  }
}
