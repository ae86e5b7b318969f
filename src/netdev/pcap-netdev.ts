/**
 * Pcap netdev: replays a capture into the device's receive path and/or
 * records what the driver transmits.
 *
 * Replay (`read`): the capture packed by {@link PcapCapture.toSharedArrayBuffer}
 * is shared by every pair's worker (zero-copy). Each worker replays a
 * disjoint share of the frames, in capture order, as external frames
 * (originPair -1; the device steers them by RSS / flow steering):
 *   - split 'flow' (default): frame i belongs to pair
 *     symmetricFlowHash(frame i) % maxPairs, so both directions of a
 *     conversation are replayed by one worker and every flow arrives in
 *     capture order;
 *   - split 'index': frame i belongs to pair i % maxPairs (even spread, but
 *     a flow's frames are replayed by several workers, so per-flow order at
 *     the receiver is not guaranteed).
 * A replay is lossless: when receive() refuses a frame, the same frame is
 * offered again on the next round (backpressure), never dropped. The only
 * exception is a frame larger than {@link MAX_REPLAY_FRAME}, which no
 * receive path can take: it is dropped (rx.drop()) and counted. Replay once
 * (default), `rounds` times, or endlessly with `loop: true`.
 *
 * Recording (`write`): pair workers run concurrently and PcapWriter owns
 * one file descriptor, so a single shared file would need cross-thread
 * locking of every record. Instead each pair writes its own classic pcap
 * file, named by {@link pcapPairPath}: `<path minus .pcap>.q<pair>.pcap`
 * (`tx.pcap` -> `tx.q0.pcap`, `tx.q1.pcap`, ...; a path without a `.pcap`
 * extension gets `.q<pair>` appended). Every pair creates its file at start
 * (an idle pair leaves a header-only file), records each frame with a
 * wall-clock timestamp (µs), flushes whenever its transmitq goes idle or
 * 100 ms passed, and closes on close(). {@link mergePairCaptures} merges the
 * per-pair files into one by timestamp.
 */
import { performance } from 'node:perf_hooks';
import type { Netdev, RxPort } from '../net/netdev.js';
import type { Bytes } from '../virtio/copy.js';
import { FlowKey, parseFlow } from '../net/flow.js';
import { symmetricFlowHash } from '../net/steering.js';
import { PcapCapture, PcapWriter, readPcapFile, type PcapWriterOptions } from './pcap.js';

/** Largest frame a replay offers (the device's largest frame); longer ones are dropped. */
export const MAX_REPLAY_FRAME = 65535;

export interface PcapNetdevSpec {
  kind: 'pcap';
  /** Capture to replay into RX: PcapCapture.toSharedArrayBuffer(). */
  read?: SharedArrayBuffer;
  /** Which pair replays which frames (default 'flow'). */
  split?: 'flow' | 'index';
  /** Replay this many times (default 1). */
  rounds?: number;
  /** Replay endlessly (overrides rounds). */
  loop?: boolean;
  /** Record transmitted frames to per-pair files named by pcapPairPath(write, pair). */
  write?: string;
  /** Snaplen of the recorded files (default 262144). */
  snaplen?: number;
  /** Int32 word 0: replay only once non-zero (see openGate in generator-backend.ts). */
  gate?: SharedArrayBuffer;
  /** Per-pair counters: newPcapStats(maxPairs), see {@link PcapStat}. */
  stats?: SharedArrayBuffer;
}

/** Per-pair counters of a pcap netdev (Float64, index pair * PCAP_STAT_COUNT + stat). */
export const PcapStat = {
  /** frames of the capture this pair replays (per round) */
  share: 0,
  /** frames the receive path took */
  replayed: 1,
  /** refused offers, retried later */
  retries: 2,
  /** frames dropped (larger than MAX_REPLAY_FRAME) */
  dropped: 3,
  /** completed replay rounds */
  rounds: 4,
  /** frames transmitted by the driver through this pair */
  txFrames: 5,
  /** frames written to this pair's file */
  written: 6,
} as const;
export const PCAP_STAT_COUNT = 7;

export function newPcapStats(maxPairs: number): SharedArrayBuffer {
  return new SharedArrayBuffer(8 * PCAP_STAT_COUNT * maxPairs);
}

/** The file pair `pair` records into: `x.pcap` -> `x.q<pair>.pcap`; other names get `.q<pair>` appended. */
export function pcapPairPath(path: string, pair: number): string {
  return path.endsWith('.pcap') ? `${path.slice(0, -5)}.q${pair}.pcap` : `${path}.q${pair}`;
}

/** Pair that replays frame `i` of a capture (the split rule; `key` is scratch). */
export function replayOwner(cap: PcapCapture, i: number, maxPairs: number, split: 'flow' | 'index', key = new FlowKey()): number {
  if (split === 'index' || maxPairs === 1) return i % maxPairs;
  const o = cap.offsets[i]!, len = cap.lengths[i]!;
  if (len < 14) return 0;
  parseFlow(cap.data, o, len, key);
  return symmetricFlowHash(key, cap.data, o) % maxPairs;
}

/**
 * Merge the per-pair files of a recording (`pcapPairPath(path, 0..maxPairs-1)`)
 * into one classic pcap at `out`, ordered by timestamp (ties: lower pair
 * first, each file's order kept). Missing files are skipped. Returns frames written.
 */
export function mergePairCaptures(path: string, maxPairs: number, out: string, opts: PcapWriterOptions = {}): number {
  const caps: PcapCapture[] = [];
  for (let p = 0; p < maxPairs; p++) {
    try {
      caps.push(readPcapFile(pcapPairPath(path, p), { onTruncated: 'stop' }));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  const pos = caps.map(() => 0);
  const w = new PcapWriter(out, opts);
  try {
    for (;;) {
      let best = -1;
      for (let c = 0; c < caps.length; c++) {
        if (pos[c] >= caps[c].count) continue;
        if (best < 0 || caps[c].timestamps[pos[c]]! < caps[best].timestamps[pos[best]]!) best = c;
      }
      if (best < 0) break;
      const i = pos[best]++;
      w.write(caps[best].frame(i), caps[best].timestamps[i]!);
    }
  } finally {
    w.close();
  }
  return w.count;
}

const FLUSH_MS = 100;

export class PcapNetdev implements Netdev {
  readonly externalRx: boolean;
  /** Frame indices this pair replays, capture order. */
  readonly share: Int32Array;
  /** The file this pair records into, or null. */
  readonly writePath: string | null;
  private readonly cap: PcapCapture | null;
  private readonly bytes: Bytes;
  private readonly base: number;
  private readonly rounds: number;
  private readonly gate: Int32Array | null;
  private open: boolean;
  private cursor = 0;
  private round = 0;
  private writer: PcapWriter | null = null;
  private dirty = false;
  private writtenAtPoll = 0;
  private lastFlush = 0;
  private readonly stats: Float64Array;
  private readonly sb: number;

  constructor(spec: PcapNetdevSpec, readonly pair: number, readonly maxPairs: number) {
    if (spec.stats) {
      this.stats = new Float64Array(spec.stats);
      this.sb = pair * PCAP_STAT_COUNT;
      if (this.stats.length < this.sb + PCAP_STAT_COUNT) throw new RangeError('pcap stats buffer too small for this pair');
    } else {
      this.stats = new Float64Array(PCAP_STAT_COUNT);
      this.sb = 0;
    }
    this.rounds = spec.loop ? Infinity : spec.rounds ?? 1;
    if (!(this.rounds >= 0)) throw new RangeError(`rounds must be >= 0 (got ${spec.rounds})`);
    this.gate = spec.gate ? new Int32Array(spec.gate, 0, 1) : null;
    this.open = this.gate === null;
    if (spec.read) {
      const cap = PcapCapture.fromSharedArrayBuffer(spec.read);
      this.cap = cap;
      // One Bytes over the whole buffer; frame i is at data.byteOffset + offsets[i].
      const sab = spec.read;
      this.bytes = { u8: new Uint8Array(sab), i32: new Int32Array(sab, 0, sab.byteLength >>> 2) };
      this.base = cap.data.byteOffset;
      const split = spec.split ?? 'flow';
      const key = new FlowKey();
      const mine: number[] = [];
      for (let i = 0; i < cap.count; i++) if (replayOwner(cap, i, maxPairs, split, key) === pair) mine.push(i);
      this.share = Int32Array.from(mine);
    } else {
      this.cap = null;
      this.bytes = { u8: new Uint8Array(0), i32: new Int32Array(0) };
      this.base = 0;
      this.share = new Int32Array(0);
    }
    this.externalRx = this.cap !== null;
    this.stats[this.sb + PcapStat.share] = this.share.length;
    this.writePath = spec.write ? pcapPairPath(spec.write, pair) : null;
    if (this.writePath) this.writer = new PcapWriter(this.writePath, { snaplen: spec.snaplen });
    this.lastFlush = performance.now();
  }

  stat(stat: number): number {
    return this.stats[this.sb + stat];
  }

  /** Replayed every round it was asked for. */
  get replayDone(): boolean {
    return this.share.length === 0 || this.round >= this.rounds;
  }

  private isOpen(): boolean {
    if (this.open) return true;
    if (Atomics.load(this.gate!, 0) === 0) return false;
    this.open = true;
    return true;
  }

  transmit(src: Bytes, off: number, len: number): boolean {
    this.stats[this.sb + PcapStat.txFrames]++;
    const w = this.writer;
    if (w) {
      // Wall-clock time in ns as a double: ~0.4 µs resolution, enough for µs records.
      w.write(src.u8.subarray(off, off + len), (performance.timeOrigin + performance.now()) * 1e6);
      this.stats[this.sb + PcapStat.written]++;
      this.dirty = true;
    }
    return true;
  }

  poll(rx: RxPort, budget: number): number {
    if (this.dirty) this.maybeFlush();
    if (this.cap === null || this.replayDone || !this.isOpen()) return 0;
    const cap = this.cap, share = this.share, st = this.stats, sb = this.sb;
    const offsets = cap.offsets, lengths = cap.lengths;
    let moved = 0;
    while (moved < budget) {
      const i = share[this.cursor]!;
      const len = lengths[i]!;
      if (len > MAX_REPLAY_FRAME) {
        rx.drop();
        st[sb + PcapStat.dropped]++;
      } else if (rx.receive(this.bytes, this.base + offsets[i]!, len, -1)) {
        st[sb + PcapStat.replayed]++;
      } else {
        st[sb + PcapStat.retries]++;
        break; // backpressure: the same frame next round
      }
      moved++;
      if (++this.cursor === share.length) {
        this.cursor = 0;
        st[sb + PcapStat.rounds]++;
        if (++this.round >= this.rounds) break;
      }
    }
    return moved;
  }

  /** Flush once the transmitq went idle (no frame since the last poll) or FLUSH_MS passed. */
  private maybeFlush(): void {
    const w = this.writer!;
    const now = performance.now();
    if (w.count === this.writtenAtPoll || now - this.lastFlush >= FLUSH_MS) {
      w.flush();
      this.dirty = false;
      this.lastFlush = now;
    }
    this.writtenAtPoll = w.count;
  }

  busy(): boolean {
    if (this.cap === null || this.replayDone) return false;
    return this.open || Atomics.load(this.gate!, 0) !== 0;
  }

  close(): void {
    if (this.writer) {
      this.writer.close();
      this.writer = null;
      this.dirty = false;
    }
  }
}
