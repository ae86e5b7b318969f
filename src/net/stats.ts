/**
 * Per-queue-pair statistics, kept as Float64 counters (exact to 2^53) in a
 * SharedArrayBuffer: written only by the worker that owns the pair, read by
 * the control plane at any time (a read may lag a batch behind; it is never
 * torn on the 64-bit platforms Node runs on).
 */

/** Device-side counters of one queue pair (receiveqN + transmitqN). */
export const DevStat = {
  rxPackets: 0, // frames placed in receiveqN
  rxBytes: 1, // frame bytes placed (without virtio_net_hdr)
  rxDrops: 2, // frames dropped: no RX buffer and the backlog full (filtered frames count in rxFiltered)
  rxFiltered: 3, // frames the RX filter (promisc/MAC/VLAN tables) refused
  txPackets: 4, // chains consumed from transmitqN
  txBytes: 5, // frame bytes consumed (without virtio_net_hdr)
  notifySent: 6, // used-buffer notifications sent to the driver
  notifySuppressed: 7, // publishes where EVENT_IDX/flags said no notification
  kicks: 8, // available-buffer notifications (wake-ups) received
  backlog: 9, // frames waiting for RX buffers now (gauge)
  errors: 10, // malformed chains; the queue is stopped after the first
  rxBuffers: 11, // descriptor chains used on receiveqN (>= rxPackets with MRG_RXBUF)
  rxRingFull: 12, // frames that found receiveqN without a free buffer (or older frames waiting) and went to the backlog
  // Gauges, where each ring stands (QueueState: split u16 index; packed position | wrap << 15),
  // published by the pair's worker every 64 poll rounds and before it sleeps.
  rxAvailPos: 13, // receiveqN: next available entry the device reads
  rxUsedPos: 14, // receiveqN: next used entry the device writes
  txAvailPos: 15,
  txUsedPos: 16,
} as const;
/** Stride per pair: 24 doubles = three 64-byte cache lines, so pairs' counters never share a line. */
export const DEV_STAT_COUNT = 24;

/** Store where receiveqN and transmitqN stand into the pair's gauges (DevStat.rxAvailPos..txUsedPos). */
export function publishRingState(stats: Float64Array, base: number, rx: { state(): { avail: number; used: number } }, tx: { state(): { avail: number; used: number } }): void {
  const r = rx.state(), t = tx.state();
  stats[base + DevStat.rxAvailPos] = r.avail;
  stats[base + DevStat.rxUsedPos] = r.used;
  stats[base + DevStat.txAvailPos] = t.avail;
  stats[base + DevStat.txUsedPos] = t.used;
}

/** Driver-side counters of one queue pair. */
export const DrvStat = {
  txPackets: 0, // frames made available on transmitqN
  txBytes: 1,
  rxPackets: 2, // frames taken from receiveqN
  rxBytes: 3,
  kicksSent: 4, // available-buffer notifications sent
  kicksSuppressed: 5,
  interrupts: 6, // used-buffer notifications (wake-ups) received
  txRingFull: 7, // times TX found no free descriptor
  rxBad: 8, // frames that failed verification (altered, unknown)
  rxOutOfOrder: 9, // frames whose per-flow sequence number was below the next expected (reordered or duplicated)
  errors: 10, // ring errors seen by the driver
  rxGaps: 11, // frames missing: a flow's sequence number jumped ahead (lost or filtered before it)
} as const;
/** Stride per pair (16 doubles, see DEV_STAT_COUNT). */
export const DRV_STAT_COUNT = 16;

/** A block of `pairs × width` counters over one SharedArrayBuffer. */
export class StatsBlock {
  readonly counters: Float64Array;
  constructor(readonly pairs: number, readonly width: number, buffer?: SharedArrayBuffer) {
    this.counters = new Float64Array(buffer ?? new SharedArrayBuffer(pairs * width * 8));
  }
  get buffer(): SharedArrayBuffer {
    return this.counters.buffer as SharedArrayBuffer;
  }
  get(pair: number, stat: number): number {
    return this.counters[pair * this.width + stat];
  }
  /** Sum of one counter over all pairs. */
  total(stat: number): number {
    let s = 0;
    for (let p = 0; p < this.pairs; p++) s += this.counters[p * this.width + stat];
    return s;
  }
  /** A copy of every counter, for rate computation. */
  snapshot(): Float64Array {
    return this.counters.slice();
  }
}
