/**
 * The split-ring device half with the checks only `--strict` makes
 * (conformance.ts): on every read of avail->idx it also checks that the
 * driver never moved it backwards (§2.7.6.1 "A driver MUST NOT decrement the
 * available idx on a virtqueue"). A decrement the plain queue would see as a
 * jump of nearly 65536 entries (AVAIL_IDX_JUMP), or not at all (when the
 * device had not yet popped what it was shown), is reported as
 * AVAIL_IDX_DECREMENT with both values.
 *
 * A separate class, picked once by ring.ts: without --strict the worker's
 * hot loop only ever sees {@link SplitDeviceQueue} and is unchanged.
 */
import { DescriptorError } from '../errors.js';
import { SplitDeviceQueue } from './device.js';

export class StrictSplitDeviceQueue extends SplitDeviceQueue {
  /** avail->idx at the last read (-1: none since the last setBase). */
  private seenAvail = -1;

  override setBase(lastAvailIdx: number, usedIdx = lastAvailIdx): void {
    super.setBase(lastAvailIdx, usedIdx);
    this.seenAvail = -1;
  }

  /** @throws DescriptorError AVAIL_IDX_DECREMENT, then what the plain queue throws. */
  protected override reloadAvail(): number {
    const a = Atomics.load(this.avail, this.availH + 1);
    const seen = this.seenAvail;
    if (seen >= 0 && a !== seen) {
      const last = this.lastAvailIdx;
      // Fewer entries available from the device's position than before (it popped none of them), or an
      // index that would be a jump past the queue size but lies behind the last one read (by at most half the index space).
      const before = (seen - last) & 0xffff;
      const now = (a - last) & 0xffff;
      const back = (seen - a) & 0xffff;
      if (now < before || (now > this.size && back <= 0x8000)) {
        const e = new DescriptorError('AVAIL_IDX_DECREMENT', `queue ${this.index}: avail idx went from ${seen} back to ${a}`);
        e.queue = this.index;
        this.seenAvail = a;
        throw e;
      }
    }
    const n = super.reloadAvail(); // reads avail->idx again: remember what it read
    this.seenAvail = (this.lastAvailIdx + n) & 0xffff;
    return n;
  }
}
