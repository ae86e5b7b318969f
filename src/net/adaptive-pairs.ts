/**
 * Adaptive queue pair count (the seed driver's "future enhancement"): from
 * one load sample per interval, decide whether the driver should raise or
 * lower its active pair count (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
 * §5.1.6.5.5), with hysteresis so the count does not flap.
 *
 * Load signals, per interval:
 * - queue depth: how often a transmitq was found full (`txRingFull`: the
 *   device drains slower than the driver fills), and
 * - packet rate per active pair (frames sent / interval / active pairs).
 *
 * Raise by one when, for `raiseAfter` intervals in a row, a transmitq was
 * full or the rate per pair was above `highPps`. Lower by one when, for
 * `lowerAfter` intervals in a row, no transmitq was full and the whole rate
 * would fit in one pair fewer below `lowPps` per pair (lowPps < highPps:
 * the gap between them is the hysteresis). After a change, samples start
 * over. The caller applies a change through the reorder-free path
 * (pause TX, drain, VQ_PAIRS_SET, re-assign flows).
 */
export interface AdaptiveOptions {
  /** Pairs that exist (the highest count). */
  maxPairs: number;
  /** Frames per second per active pair above which the count is raised. Default 200 000. */
  highPps?: number;
  /** Frames per second per pair (after lowering) below which the count is lowered. Default 50 000. */
  lowPps?: number;
  /** Consecutive loaded intervals before raising. Default 2. */
  raiseAfter?: number;
  /** Consecutive light intervals before lowering. Default 3. */
  lowerAfter?: number;
}

export interface LoadSample {
  /** Frames sent during the interval (all pairs). */
  txFrames: number;
  /** Times a transmitq was found full during the interval (all pairs). */
  txRingFull: number;
  /** Interval length in seconds (> 0). */
  seconds: number;
}

export class AdaptivePairs {
  private readonly maxPairs: number;
  private readonly highPps: number;
  private readonly lowPps: number;
  private readonly raiseAfter: number;
  private readonly lowerAfter: number;
  private loaded = 0;
  private light = 0;

  constructor(opts: AdaptiveOptions) {
    this.maxPairs = opts.maxPairs;
    this.highPps = opts.highPps ?? 200_000;
    this.lowPps = opts.lowPps ?? 50_000;
    this.raiseAfter = opts.raiseAfter ?? 2;
    this.lowerAfter = opts.lowerAfter ?? 3;
    if (!(this.maxPairs >= 1)) throw new RangeError('maxPairs must be >= 1');
    if (!(this.lowPps < this.highPps)) throw new RangeError('lowPps must be below highPps (the hysteresis)');
  }

  /** Feed one interval's sample; returns the pair count to switch to, or `active` to stay. */
  next(active: number, s: LoadSample): number {
    if (!(s.seconds > 0)) return active;
    const pps = s.txFrames / s.seconds;
    const full = s.txRingFull > 0;
    if (active < this.maxPairs && (full || pps / active > this.highPps)) {
      this.light = 0;
      if (++this.loaded >= this.raiseAfter) {
        this.loaded = 0;
        return active + 1;
      }
      return active;
    }
    this.loaded = 0;
    if (active > 1 && !full && pps / (active - 1) < this.lowPps) {
      if (++this.light >= this.lowerAfter) {
        this.light = 0;
        return active - 1;
      }
      return active;
    }
    this.light = 0;
    return active;
  }
}
