/**
 * What a driver-side queue pair worker sends and how it checks what comes
 * back: the application above the driver in a test rig.
 */
import type { NetDriverPair } from '../net/driver-pair.js';
import type { Bytes } from '../virtio/copy.js';

export interface TrafficSource {
  /** Put up to `budget` frames on the pair's transmitq; returns how many. */
  fill(drv: NetDriverPair, budget: number): number;
  /** Check one received frame (bytes valid only during the call). */
  consume(src: Bytes, off: number, len: number): void;
  /** Re-read which flows this pair transmits (after the active pair count changed). */
  reassign(): void;
  /** Nothing more to send (finite sources). */
  exhausted(): boolean;
}

/** Counters a source updates in the driver stats block (see DrvStat). */
export interface SourceCounters {
  bad(): void;
  outOfOrder(): void;
  /** `n` frames of a flow never arrived before a later one did. */
  gap(n: number): void;
}
