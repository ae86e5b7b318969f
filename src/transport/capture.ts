/**
 * Per-queue capture, main-thread side (as `dpdk-pdump` for a DPDK port):
 * every device pair worker has a {@link CaptureRing}; while a capture runs,
 * the workers copy the frames they place in receiveqN and take from
 * transmitqN into their ring, and this object drains the rings into a pcapng
 * file: one interface per queue pair (interface id = pair index, named
 * `qN`), the direction in each packet's `epb_flags` (inbound = receiveq,
 * host to guest; outbound = transmitq, guest to host), microsecond
 * timestamps, and an Interface Statistics Block per pair at the end
 * (isb_osdrop = capture drops).
 *
 * The data path never waits for the file: the rings are drained on a timer
 * and only while the output stream accepts more (no backpressure pending);
 * when the writer falls behind, a full ring makes the worker count a capture
 * drop instead. Captures start and stop at run time ({@link start},
 * {@link stop}); one at a time.
 *
 * The rings exist for the process's lifetime (pass {@link buffers} to the
 * workers when they are built): an idle ring costs one atomic load per poll
 * round and untouched (uncommitted) memory.
 */
import { closeSync, createWriteStream, openSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { CaptureCount, CaptureRing, CAPTURE_RX, CAPTURE_TX, DIR_RX } from '../net/capture-ring.js';
import { EPB_INBOUND, EPB_OUTBOUND, PcapngWriter } from '../netdev/pcapng-writer.js';

export type CaptureDirection = 'rx' | 'tx' | 'both';

export interface CaptureOptions {
  /** Queue pair to capture (0-based); default every pair. */
  queue?: number;
  /** Direction: rx (receiveq), tx (transmitq) or both (default). */
  dir?: CaptureDirection;
  /** Bytes kept per frame, 1..65535 (default 65535: whole frames). */
  snaplen?: number;
}

/** Per pair: frames written to the file and frames the capture dropped, by direction. */
export interface CaptureQueueSummary {
  pair: number;
  rxFrames: number;
  txFrames: number;
  rxDrops: number;
  txDrops: number;
}

export interface CaptureSummary {
  file: string;
  frames: number;
  drops: number;
  queues: CaptureQueueSummary[];
}

/** Per pair capture counters since the process started (monotonic; for metrics). */
export interface CaptureCounters {
  pair: number;
  rxCaptured: number;
  txCaptured: number;
  rxDrops: number;
  txDrops: number;
}

interface Running {
  name: string;
  out: Writable;
  /** We opened the file: close it on stop. */
  ownsStream: boolean;
  writer: PcapngWriter;
  pairs: number[];
  mask: number;
  snaplen: number;
  startUs: number;
  /** Counters when the capture started, per pair (4 each). */
  base: Float64Array;
  /** Records written per pair and direction. */
  written: Float64Array;
  stalled: boolean;
  /** Index into `pairs` the next drain round starts at. */
  turn: number;
  timer: NodeJS.Timeout;
  error: Error | null;
}

const DRAIN_MS = 10;
/** At most this many bytes drained per timer tick (keeps the control plane responsive). */
const TICK_BYTES = 8 << 20;
/** Records taken from one ring before the next ring's turn. */
const SLICE = 64;

export class QueueCapture {
  readonly rings: CaptureRing[];
  private run: Running | null = null;

  /**
   * @param pairs queue pairs (one ring each)
   * @param ringBytes bytes per ring (default 4 MiB; at most 64 MiB over all pairs)
   */
  constructor(readonly pairs: number, ringBytes?: number) {
    const each = ringBytes ?? Math.max(256 << 10, Math.min(4 << 20, Math.floor((64 << 20) / pairs)));
    this.rings = Array.from({ length: pairs }, () => new CaptureRing(each));
  }

  /** The rings' buffers, by pair: give buffers[p] to pair p's device worker. */
  get buffers(): SharedArrayBuffer[] {
    return this.rings.map((r) => r.buffer);
  }

  get active(): boolean {
    return this.run !== null;
  }

  /** Monotonic per-pair counters (frames captured and capture drops), for statistics and metrics. */
  counters(): CaptureCounters[] {
    return this.rings.map((r, pair) => ({
      pair,
      rxCaptured: r.counts[CaptureCount.rxFrames], txCaptured: r.counts[CaptureCount.txFrames],
      rxDrops: r.counts[CaptureCount.rxDrops], txDrops: r.counts[CaptureCount.txDrops],
    }));
  }

  /**
   * Start capturing into `out`: a file path (created or truncated, 0644 less
   * the umask) or a writable stream (left open on stop).
   * @throws Error when a capture is running; RangeError for a queue outside
   *   0..pairs-1 or a bad snap length; the file's open error (ENOENT, EACCES...).
   */
  start(out: string | Writable, o: CaptureOptions = {}): void {
    if (this.run) throw new Error(`a capture is already running (to ${this.run.name})`);
    const q = o.queue;
    if (q !== undefined && !(Number.isInteger(q) && q >= 0 && q < this.pairs)) throw new RangeError(`capture queue ${q} is outside 0..${this.pairs - 1}`);
    const snaplen = o.snaplen ?? 65535;
    if (!(Number.isInteger(snaplen) && snaplen >= 1 && snaplen <= 65535)) throw new RangeError(`snap length ${snaplen} is outside 1..65535`);
    const dir = o.dir ?? 'both';
    if (dir !== 'rx' && dir !== 'tx' && dir !== 'both') throw new RangeError(`capture direction ${String(dir)} is not rx, tx or both`);
    const mask = dir === 'rx' ? CAPTURE_RX : dir === 'tx' ? CAPTURE_TX : CAPTURE_RX | CAPTURE_TX;
    let stream: Writable;
    let name: string;
    if (typeof out === 'string') {
      const fd = openSync(out, 'w', 0o644); // errors here, synchronously, not later on the stream
      try {
        stream = createWriteStream(out, { fd, highWaterMark: 16 << 20 });
      } catch (e) {
        closeSync(fd);
        throw e;
      }
      name = out;
    } else {
      stream = out;
      name = '(stream)';
    }
    const r: Running = {
      name, out: stream, ownsStream: typeof out === 'string', writer: null as never,
      pairs: q === undefined ? Array.from({ length: this.pairs }, (_, p) => p) : [q],
      mask, snaplen, startUs: Math.round((performance.timeOrigin + performance.now()) * 1000),
      base: new Float64Array(4 * this.pairs), written: new Float64Array(2 * this.pairs),
      stalled: false, turn: 0, timer: null as never, error: null,
    };
    r.writer = new PcapngWriter((chunk) => {
      if (!stream.write(chunk)) r.stalled = true;
    });
    stream.on('drain', () => (r.stalled = false));
    stream.on('error', (e) => {
      r.error ??= e;
      r.stalled = true; // nothing more goes to a broken stream: the workers count drops
    });
    r.writer.sectionHeader();
    for (let p = 0; p < this.pairs; p++) {
      r.writer.interfaceDescription({ name: `q${p}`, description: `virtio-mq queue pair ${p} (receiveq${p + 1} inbound, transmitq${p + 1} outbound)`, snaplen });
    }
    r.writer.flush();
    for (const p of r.pairs) {
      const ring = this.rings[p];
      ring.discard(); // records left by an earlier capture's last round
      r.base.set(ring.counts, 4 * p);
      ring.setMask(mask, snaplen);
    }
    r.timer = setInterval(() => this.drain(r, false), DRAIN_MS);
    r.timer.unref();
    this.run = r;
  }

  /** Move records from the rings to the writer (only while the stream takes more, unless `final`). */
  private drain(r: Running, final: boolean): void {
    const w = r.writer;
    const n = r.pairs.length;
    // Round robin, a slice of records per ring at a time, so no pair starves another while the file keeps up.
    let moved = 1;
    let budget = TICK_BYTES;
    while (moved > 0 && (final || (!r.stalled && budget > 0))) {
      moved = 0;
      for (let i = 0; i < n; i++) {
        const p = r.pairs[(r.turn + i) % n];
        const ring = this.rings[p];
        for (let k = 0; k < SLICE && ring.next(); k++) {
          w.enhancedPacket(p, ring.tsHi, ring.tsLo, ring.u8, ring.dataOff, ring.capLen, ring.origLen, ring.dir === DIR_RX ? EPB_INBOUND : EPB_OUTBOUND);
          r.written[2 * p + ring.dir]++;
          budget -= ring.capLen + 44;
          ring.consume();
          moved++;
        }
      }
      r.turn = (r.turn + 1) % n;
    }
    if (!r.stalled || final) w.flush();
  }

  /**
   * Stop the capture: turn capturing off in every worker, write what the
   * rings still hold and the statistics blocks, and end the file. Frames a
   * worker captures in the poll round it is in when this is called may be
   * left out.
   * @returns what was written and dropped, per pair.
   * @throws the stream's write error, if one happened.
   */
  async stop(): Promise<CaptureSummary> {
    const r = this.run;
    if (!r) throw new Error('no capture is running');
    this.run = null;
    clearInterval(r.timer);
    for (const p of r.pairs) this.rings[p].setMask(0, r.snaplen);
    this.drain(r, true);
    const endUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
    const queues: CaptureQueueSummary[] = [];
    let frames = 0, drops = 0;
    for (const p of r.pairs) {
      const c = this.rings[p].counts;
      const b = 4 * p;
      const q: CaptureQueueSummary = {
        pair: p,
        rxFrames: r.written[2 * p], txFrames: r.written[2 * p + 1],
        rxDrops: c[CaptureCount.rxDrops] - r.base[b + CaptureCount.rxDrops],
        txDrops: c[CaptureCount.txDrops] - r.base[b + CaptureCount.txDrops],
      };
      queues.push(q);
      frames += q.rxFrames + q.txFrames;
      drops += q.rxDrops + q.txDrops;
      r.writer.interfaceStatistics(p, { startUs: r.startUs, endUs, dropped: q.rxDrops + q.txDrops, delivered: q.rxFrames + q.txFrames });
    }
    r.writer.flush();
    if (r.ownsStream) {
      await new Promise<void>((resolve) => {
        r.out.once('close', () => resolve());
        r.out.end();
      });
    } // a caller's stream stays open and is the caller's to end (it may still be draining)
    if (r.error) throw new Error(`capture ${r.name}: ${r.error.message}`);
    return { file: r.name, frames, drops, queues };
  }
}

/** One line: "capture FILE: N frames (rx A, tx B), D dropped". */
export function describeCapture(s: CaptureSummary): string {
  let rx = 0, tx = 0;
  for (const q of s.queues) {
    rx += q.rxFrames;
    tx += q.txFrames;
  }
  return `capture ${s.file}: ${s.frames} frames (rx ${rx}, tx ${tx}), ${s.drops} dropped by the capture`;
}
