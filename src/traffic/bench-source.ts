/**
 * Benchmark traffic: one prebuilt frame per pair, copied into the TX buffer
 * for every packet with {@link copyBytes} and stamped with a sequence number,
 * as a packet generator (pktgen, testpmd txonly with copy) would. On RX only
 * the sequence number is read; byte-exact checking is the loopback CLI's job.
 *
 * Hot path: no allocation, no per-packet closures, one monomorphic loop.
 */
import { copyBytes, type Bytes } from '../virtio/copy.js';
import type { NetDriverPair } from '../net/driver-pair.js';
import type { SourceCounters, TrafficSource } from './source.js';
import { TrafficGenerator } from '../netdev/generator.js';

/** Byte offset of the little-endian u32 sequence number in a bench frame (the generator's seq field). */
export const BENCH_SEQ_OFF = 50;

export interface BenchTrafficSpec {
  kind: 'bench';
  /** Ethernet frame size in bytes, 60..1514. */
  size: number;
  /** Count out-of-order sequence numbers on RX (one compare per frame). Default true. */
  checkOrder?: boolean;
}

export function benchTraffic(size: number, checkOrder = true): BenchTrafficSpec {
  if (!(Number.isInteger(size) && size >= 60 && size <= 1514)) throw new RangeError('bench frame size must be 60..1514');
  return { kind: 'bench', size, checkOrder };
}

export class BenchSource implements TrafficSource {
  private readonly frame: Bytes;
  private readonly size: number;
  private readonly checkOrder: boolean;
  private txSeq = 0;
  private rxSeq = 0;
  /** Frames consumed, and the XOR of their sequence numbers (keeps the read observable). */
  received = 0;
  seqXor = 0;

  constructor(spec: BenchTrafficSpec, pair: number, private readonly counters: SourceCounters) {
    this.size = spec.size;
    this.checkOrder = spec.checkOrder !== false;
    const buf = new ArrayBuffer((spec.size + 3) & ~3);
    const u8 = new Uint8Array(buf);
    new TrafficGenerator({ flows: pair + 1, frameSize: spec.size }).writeFrame(pair, 0, u8, 0);
    this.frame = { u8, i32: new Int32Array(buf) };
  }

  fill(drv: NetDriverPair, budget: number): number {
    const view = drv.txView;
    const d = view.u8;
    const frame = this.frame;
    const size = this.size;
    let seq = this.txSeq;
    let sent = 0;
    for (; sent < budget; sent++) {
      const o = drv.reserveTx();
      if (o < 0) break;
      copyBytes(view, o, frame, 0, size);
      const s = o + BENCH_SEQ_OFF;
      d[s] = seq;
      d[s + 1] = seq >>> 8;
      d[s + 2] = seq >>> 16;
      d[s + 3] = seq >>> 24;
      seq = (seq + 1) | 0;
      drv.commitTx(size);
    }
    this.txSeq = seq;
    return sent;
  }

  consume(src: Bytes, off: number, len: number): void {
    const d = src.u8;
    const s = off + BENCH_SEQ_OFF;
    const seq = d[s] | (d[s + 1] << 8) | (d[s + 2] << 16) | (d[s + 3] << 24);
    this.received++;
    this.seqXor ^= seq;
    if (this.checkOrder) {
      if (seq !== this.rxSeq || len !== this.size) this.counters.outOfOrder();
      this.rxSeq = (seq + 1) | 0;
    }
  }

  reassign(): void {}

  exhausted(): boolean {
    return false;
  }
}
