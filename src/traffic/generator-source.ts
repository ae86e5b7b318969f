/**
 * Generated traffic through the driver: F flows of S-byte frames built by
 * {@link TrafficGenerator} (each carries its flow id and sequence number and
 * a filler derived from them, so the receiver checks every byte without
 * keeping a copy). The driver's TX queue selection assigns each flow to a
 * pair ({@link assignFlows}); the pair's worker sends only its flows, round
 * robin, and checks what it receives against per-flow sequence counters
 * shared by all pairs (a flow's RX pair may differ from its TX pair).
 */
import type { Bytes } from '../virtio/copy.js';
import type { NetDriverPair } from '../net/driver-pair.js';
import { TrafficGenerator, type GeneratorOptions } from '../netdev/generator.js';
import type { SourceCounters, TrafficSource } from './source.js';

export interface GeneratorTrafficSpec {
  kind: 'generator';
  gen: GeneratorOptions;
  /** Int32 per flow: the pair whose transmitq carries it. */
  flowPair: SharedArrayBuffer;
  /** Int32 per flow: next sequence number to send; next expected on RX. */
  txSeq: SharedArrayBuffer;
  rxSeq: SharedArrayBuffer;
}

export function prepareGeneratorTraffic(gen: GeneratorOptions): GeneratorTrafficSpec {
  const flows = new TrafficGenerator(gen).flows; // validates
  return {
    kind: 'generator', gen,
    flowPair: new SharedArrayBuffer(4 * flows), txSeq: new SharedArrayBuffer(4 * flows), rxSeq: new SharedArrayBuffer(4 * flows),
  };
}

/** Set each flow's TX pair from the driver's queue selection applied to the flow's frame. */
export function assignFlows(spec: GeneratorTrafficSpec, select: (frame: Uint8Array) => number): void {
  const g = new TrafficGenerator(spec.gen);
  const fp = new Int32Array(spec.flowPair);
  const buf = new Uint8Array(g.maxFrameLength);
  for (let f = 0; f < g.flows; f++) {
    const len = g.writeFrame(f, 0, buf, 0);
    fp[f] = select(buf.subarray(0, len));
  }
}

export class GeneratorSource implements TrafficSource {
  private readonly gen: TrafficGenerator;
  private readonly flowPair: Int32Array;
  private readonly txSeq: Int32Array;
  private readonly rxSeq: Int32Array;
  private mine: Int32Array = new Int32Array(0);
  private next = 0;

  constructor(spec: GeneratorTrafficSpec, private readonly pair: number, private readonly counters: SourceCounters) {
    this.gen = new TrafficGenerator(spec.gen);
    this.flowPair = new Int32Array(spec.flowPair);
    this.txSeq = new Int32Array(spec.txSeq);
    this.rxSeq = new Int32Array(spec.rxSeq);
    this.reassign();
  }

  reassign(): void {
    const mine: number[] = [];
    for (let f = 0; f < this.flowPair.length; f++) if (this.flowPair[f] === this.pair) mine.push(f);
    this.mine = Int32Array.from(mine);
    this.next = 0;
  }

  exhausted(): boolean {
    return false;
  }

  fill(drv: NetDriverPair, budget: number): number {
    const n = this.mine.length;
    if (n === 0 || this.gen.maxFrameLength > drv.maxTxFrame) return 0;
    const view = drv.txView.u8;
    const gen = this.gen;
    let sent = 0;
    for (; sent < budget; sent++) {
      const o = drv.reserveTx();
      if (o < 0) break;
      const flow = this.mine[this.next];
      this.next = this.next + 1 === n ? 0 : this.next + 1;
      const seq = this.txSeq[flow];
      this.txSeq[flow] = seq + 1;
      drv.commitTx(gen.writeFrame(flow, seq, view, o));
    }
    return sent;
  }

  consume(src: Bytes, off: number, len: number): void {
    const flow = this.gen.checkFrame(src.u8, off, len);
    if (flow < 0) {
      this.counters.bad(); // not ours, or altered: the generator rebuilt it and compared every byte
      return;
    }
    const seq = this.gen.seq | 0;
    const want = this.rxSeq[flow];
    if (seq < want) {
      this.counters.outOfOrder();
      return;
    }
    if (seq > want) this.counters.gap(seq - want);
    this.rxSeq[flow] = seq + 1;
  }
}
