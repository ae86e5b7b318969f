/**
 * Generator netdev: the "wire" behind the device produces frames built by
 * {@link TrafficGenerator} and offers them to the device's receive path as
 * external frames (originPair -1), so the device steers them with RSS when
 * the driver programmed it, else automatic flow steering (the pair whose
 * transmitq last carried the flow), else receiveq1.
 *
 * Division of work: every queue pair's worker has its own instance, and
 * instance `pair` generates flows f with f % maxPairs === pair (round robin,
 * per-flow sequence numbers 0, 1, 2, ...). That only decides which worker
 * builds a flow's frames; the receiveq a frame lands on is the steering's
 * choice. Since one worker produces a flow in sequence order and a flow is
 * steered to one receiveq through FIFO rings, a driver-side checker (e.g. a
 * GeneratorSource over the same generator options with no flows of its own)
 * sees each flow's sequence numbers increase. Flows owned by a pair beyond
 * the active pair count are not generated while it is inactive (the device
 * worker does not poll an inactive pair's netdev).
 *
 * Rate: as fast as the receive path takes frames. When `receive()` refuses
 * one (no RX buffer and the backlog or the target pair's inbox full):
 *   - onFull 'drop' (default): a wire drop, `rx.drop()` and the next frame;
 *     the flow's sequence numbers then have a gap;
 *   - onFull 'retry': the same frame is offered again next round (lossless).
 *
 * Transmit: every frame the driver sends is counted and discarded; frames
 * that carry the generator's payload are checked byte-exact with
 * {@link TrafficGenerator.checkFrame} (counters below).
 *
 * Optional controls, all SharedArrayBuffers so the spec stays
 * structured-clonable:
 *   - `gate`: nothing is generated until Int32 word 0 is non-zero
 *     ({@link openGate}); lets a test program RSS / filters first.
 *   - `stats`: GEN_STAT_COUNT Float64 counters per pair ({@link GenStat}),
 *     written only by the pair's worker.
 */
import type { Netdev, RxPort } from '../net/netdev.js';
import type { Bytes } from '../virtio/copy.js';
import { CheckError, TrafficGenerator, type GeneratorOptions, type L4Proto } from './generator.js';

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

export interface GeneratorNetdevSpec {
  kind: 'generator';
  /** Number of flows (all pairs together). */
  flows: number;
  /** Frame size in bytes without FCS (clamped as TrafficGenerator does). */
  size: number;
  proto?: L4Proto | 'mixed';
  ipVersion?: 4 | 6 | 'mixed';
  udpChecksum?: boolean;
  /** Destination MAC of generated frames (default 02:00:00:00:00:01, not the device's own MAC). */
  dstMac?: string;
  /** Frames per flow, then stop (default: endless). */
  perFlow?: number;
  /**
   * What to do when receive() refuses a frame (default 'drop'): drop it
   * (counted, like a wire), retry it next round (lossless), or 'pace': offer
   * no more frames than the receiveq has buffers for (RxPort.room()), as a
   * sender that sees its peer's ring would; refusals are then retried.
   */
  onFull?: 'drop' | 'retry' | 'pace';
  /** Check transmitted frames that carry our payload (default true). */
  checkTx?: boolean;
  /** Int32 word 0: generate only once non-zero (see {@link newGate}). */
  gate?: SharedArrayBuffer;
  /** Per-pair counters, see {@link newGeneratorStats} and {@link GenStat}. */
  stats?: SharedArrayBuffer;
  /**
   * Build each flow's frame once and only stamp the payload's sequence
   * number per frame, as DPDK's txonly sends a template: for benchmarks.
   * The headers and filler stay those of sequence 0, so such frames are not
   * byte-exact for TrafficGenerator.checkFrame (flow and seq still parse).
   */
  template?: boolean;
}

/** Per-pair counters of a generator netdev (Float64, index pair * GEN_STAT_COUNT + stat). */
export const GenStat = {
  /** distinct frames built (each (flow, seq) once) */
  generated: 0,
  /** frames the receive path took (including frames the RX filter then refused) */
  accepted: 1,
  /** frames refused and dropped (onFull 'drop'): rx.drop() was called */
  dropped: 2,
  /** refused offers held for a retry (onFull 'retry') */
  retries: 3,
  /** frames the driver transmitted through this pair */
  txFrames: 4,
  /** transmitted frames that passed checkFrame */
  txOk: 5,
  /** transmitted frames with our payload magic that failed the check (altered, wrong length, unknown flow) */
  txBad: 6,
  /** 1 once this pair generated all its frames (perFlow set) */
  done: 7,
} as const;
export const GEN_STAT_COUNT = 8;

/** Counters for `maxPairs` generator instances. */
export function newGeneratorStats(maxPairs: number): SharedArrayBuffer {
  return new SharedArrayBuffer(8 * GEN_STAT_COUNT * maxPairs);
}

/** A closed gate (see GeneratorNetdevSpec.gate / PcapNetdevSpec.gate). */
export function newGate(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

/** Open a gate. Workers asleep on their doorbells notice within their wait timeout; ring them to start at once. */
export function openGate(gate: SharedArrayBuffer): void {
  const w = new Int32Array(gate);
  Atomics.store(w, 0, 1);
  Atomics.notify(w, 0);
}

/** The TrafficGenerator options a spec uses (build a driver-side checker with the same). */
/** Close a gate again: generation pauses (frames already offered are not taken back). */
export function closeGate(gate: SharedArrayBuffer): void {
  Atomics.store(new Int32Array(gate), 0, 0);
}

export function generatorOptionsOf(spec: GeneratorNetdevSpec): GeneratorOptions {
  return {
    flows: spec.flows, frameSize: spec.size, proto: spec.proto, ipVersion: spec.ipVersion,
    udpChecksum: spec.udpChecksum, dstMac: spec.dstMac,
  };
}

/** The pair whose generator instance produces flow `flow`. */
export function generatorFlowOwner(flow: number, maxPairs: number): number {
  return flow % maxPairs;
}

export class GeneratorNetdev implements Netdev {
  readonly externalRx = true;
  readonly gen: TrafficGenerator;
  /** Flows this instance generates, ascending. */
  readonly flows: Int32Array;
  private readonly buf: Bytes;
  private readonly perFlow: number;
  private readonly retry: boolean;
  private readonly checkTx: boolean;
  private readonly gate: Int32Array | null;
  private readonly pace: boolean;
  private tmpl: Bytes | null = null;
  private tmplSlot = 0;
  private tmplLen = new Uint32Array(0);
  private tmplSeqOff = new Uint32Array(0);
  /** Every sequence number offset is 4-aligned and the host little-endian: stamp with one Int32 store. */
  private tmplSeqWord = false;
  private open: boolean;
  private readonly stats: Float64Array;
  private readonly base: number;
  /** Index into `flows` of the next frame, and the sequence number of this round. */
  private cursor = 0;
  private round = 0;
  /** A built frame not yet taken (onFull 'retry'), its length. */
  private pending = false;
  private pendingLen = 0;
  private finished: boolean;

  constructor(spec: GeneratorNetdevSpec, readonly pair: number, readonly maxPairs: number) {
    this.gen = new TrafficGenerator(generatorOptionsOf(spec));
    const mine: number[] = [];
    for (let f = pair; f < this.gen.flows; f += maxPairs) mine.push(f);
    this.flows = Int32Array.from(mine);
    const perFlow = spec.perFlow ?? Infinity;
    if (!(perFlow >= 0)) throw new RangeError(`perFlow must be >= 0 (got ${spec.perFlow})`);
    this.perFlow = perFlow;
    this.retry = spec.onFull === 'retry' || spec.onFull === 'pace';
    this.pace = spec.onFull === 'pace';
    this.checkTx = spec.checkTx ?? true;
    this.gate = spec.gate ? new Int32Array(spec.gate, 0, 1) : null;
    this.open = this.gate === null;
    const ab = new ArrayBuffer((this.gen.maxFrameLength + 3) & ~3);
    this.buf = { u8: new Uint8Array(ab), i32: new Int32Array(ab) };
    if (spec.stats) {
      this.stats = new Float64Array(spec.stats);
      this.base = pair * GEN_STAT_COUNT;
      if (this.stats.length < this.base + GEN_STAT_COUNT) throw new RangeError('generator stats buffer too small for this pair');
    } else {
      this.stats = new Float64Array(GEN_STAT_COUNT);
      this.base = 0;
    }
    if (spec.template) {
      const g = this.gen;
      this.tmplSlot = (g.maxFrameLength + 3) & ~3;
      const tb = new ArrayBuffer(Math.max(4, this.tmplSlot * this.flows.length));
      this.tmpl = { u8: new Uint8Array(tb), i32: new Int32Array(tb) };
      this.tmplLen = new Uint32Array(this.flows.length);
      this.tmplSeqOff = new Uint32Array(this.flows.length);
      this.flows.forEach((f, i) => {
        this.tmplLen[i] = g.writeFrame(f, 0, this.tmpl!.u8, i * this.tmplSlot);
        // payload = Ethernet + IP + L4 header; then magic u16, flow u32, seq u32
        this.tmplSeqOff[i] = 14 + (g.isV6(f) ? 40 : 20) + (g.isTcp(f) ? 20 : 8) + 6;
      });
      this.tmplSeqWord = LITTLE_ENDIAN && this.tmplSeqOff.every((o) => (o & 3) === 0) && (this.tmplSlot & 3) === 0;
    }
    this.finished = this.flows.length === 0 || perFlow === 0;
    if (this.finished) this.stats[this.base + GenStat.done] = 1;
  }

  /** Counter `stat` (GenStat) of this instance. */
  stat(stat: number): number {
    return this.stats[this.base + stat];
  }

  /** Frames this instance generates in all (Infinity when endless). */
  get total(): number {
    return this.flows.length * this.perFlow;
  }

  /** Generation runs while the gate (if any) is open; it may be closed again (closeGate). */
  private isOpen(): boolean {
    return this.open || Atomics.load(this.gate!, 0) !== 0;
  }

  transmit(src: Bytes, off: number, len: number): boolean {
    const st = this.stats, b = this.base;
    st[b + GenStat.txFrames]++;
    if (this.checkTx) {
      const r = this.gen.checkFrame(src.u8, off, len);
      if (r >= 0) st[b + GenStat.txOk]++;
      else if (r === CheckError.BadFlow || r === CheckError.BadLength || r === CheckError.Corrupt) st[b + GenStat.txBad]++;
      // Bounds, NotOurs, BadMagic: someone else's frame
    }
    return true;
  }

  /**
   * Offer up to `budget` frames. Returns the frames the receive path took:
   * dropped frames are not work done, so a device worker whose receive path
   * is stuck (e.g. the driver stopped) sees an idle round and can notice
   * that it is told to stop.
   */
  poll(rx: RxPort, budget: number): number {
    if (!this.isOpen()) return 0;
    if (this.pace) {
      const room = rx.room();
      if (room < budget) budget = room;
      if (budget === 0) return 0;
    }
    if (this.tmpl !== null) return this.pollTemplate(rx, budget);
    const st = this.stats, b = this.base;
    const buf = this.buf;
    let taken = 0;
    for (let n = 0; n < budget; n++) {
      if (!this.pending) {
        if (this.finished) break;
        this.pendingLen = this.gen.writeFrame(this.flows[this.cursor], this.round, buf.u8, 0);
        this.pending = true;
        st[b + GenStat.generated]++;
      }
      if (rx.receive(buf, 0, this.pendingLen, -1)) {
        st[b + GenStat.accepted]++;
        taken++;
      } else if (this.retry) {
        st[b + GenStat.retries]++;
        break; // the same frame next round
      } else {
        rx.drop();
        st[b + GenStat.dropped]++;
      }
      this.pending = false;
      this.advance();
    }
    return taken;
  }

  /** Template mode: offer each flow's prebuilt frame with its sequence number stamped (be32 at payload + 6). */
  private pollTemplate(rx: RxPort, budget: number): number {
    const t = this.tmpl!;
    const u8 = t.u8, i32 = t.i32;
    const word = this.tmplSeqWord;
    const slot = this.tmplSlot;
    let taken = 0, dropped = 0, retries = 0;
    for (let n = 0; n < budget && !this.finished; n++) {
      const c = this.cursor;
      const off = c * slot;
      const seq = this.round;
      if (word) {
        // One Int32 store of the byte-swapped (big-endian on the wire) sequence number: the offset is 4-aligned.
        i32[(off + this.tmplSeqOff[c]) >>> 2] = ((seq & 0xff) << 24) | ((seq & 0xff00) << 8) | ((seq >>> 8) & 0xff00) | (seq >>> 24);
      } else {
        const at = off + this.tmplSeqOff[c];
        u8[at] = seq >>> 24; u8[at + 1] = (seq >>> 16) & 0xff; u8[at + 2] = (seq >>> 8) & 0xff; u8[at + 3] = seq & 0xff; // big-endian, as TrafficGenerator writes it
      }
      if (rx.receive(t, off, this.tmplLen[c], -1)) {
        taken++;
      } else if (this.retry) {
        retries++;
        break;
      } else {
        rx.drop();
        dropped++;
      }
      this.advance();
    }
    // Counters once per call (generated: each (flow, seq) offered and not held for a retry).
    const st = this.stats, b = this.base;
    st[b + GenStat.generated] += taken + dropped;
    st[b + GenStat.accepted] += taken;
    if (dropped !== 0) st[b + GenStat.dropped] += dropped;
    if (retries !== 0) st[b + GenStat.retries] += retries;
    return taken;
  }

  private advance(): void {
    if (++this.cursor === this.flows.length) {
      this.cursor = 0;
      if (++this.round >= this.perFlow) {
        this.finished = true;
        this.stats[this.base + GenStat.done] = 1;
      }
    }
  }

  busy(): boolean {
    return (this.open || Atomics.load(this.gate!, 0) !== 0) && (this.pending || !this.finished);
  }
}
