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

/**
 * Byte offset of the sequence number (u32, big-endian) in a bench frame: the
 * generator's payload seq field of a UDP/IPv4 frame (Ethernet 14 + IPv4 20 +
 * UDP 8, then magic u16 and flow u32). Only this field changes per packet, so
 * the frame is not byte-exact for {@link TrafficGenerator.checkFrame}.
 */
export const BENCH_SEQ_OFF = 14 + 20 + 8 + 6;

/** Byte-swap a 32-bit value (host little-endian <-> the frame's big-endian seq field). */
function bswap32(x: number): number {
  return ((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
}

export interface BenchTrafficSpec {
  kind: 'bench';
  /** Ethernet frame size in bytes, 60..1514. */
  size: number;
  /** Count out-of-order sequence numbers on RX (one compare per frame). Default true. */
  checkOrder?: boolean;
  /**
   * Loopback pacing: keep the frames sent and not yet received within the
   * receiveq size, so every frame the device loops back finds an RX buffer.
   * Default false (send whenever the transmitq has room).
   */
  rxWindow?: boolean;
}

/** Spec for {@link BenchSource}: `size`-byte frames; `loopback` = check order on RX and pace TX to the receiveq. */
export function benchTraffic(size: number, loopback = true): BenchTrafficSpec {
  if (!(Number.isInteger(size) && size >= 60 && size <= 1514)) throw new RangeError('bench frame size must be 60..1514');
  return { kind: 'bench', size, checkOrder: loopback, rxWindow: loopback };
}

/**
 * Write a frame's 32-bit sequence number big-endian at byte `s`: one store
 * when aligned (little-endian host, checked by layout.ts), else four bytes.
 */
function stampSeq(d: Uint8Array, i32: Int32Array, s: number, seq: number): void {
  if ((s & 3) === 0) {
    i32[s >>> 2] = bswap32(seq);
  } else {
    d[s] = seq >>> 24;
    d[s + 1] = seq >>> 16;
    d[s + 2] = seq >>> 8;
    d[s + 3] = seq;
  }
}

export class BenchSource implements TrafficSource {
  /** The prebuilt frame, at byte {@link frameOff} of its buffer. */
  private frame: Bytes;
  private frameOff = 0;
  private readonly pair: number;
  private readonly size: number;
  private readonly checkOrder: boolean;
  private readonly rxWindow: boolean;
  private txSeq = 0;
  private rxSeq = 0;
  private sentTotal = 0;
  /** Burst path: per TX buffer id, 1 when the buffer holds the header and frame (of {@link readyFor}'s pair). */
  private ready = new Uint8Array(0);
  private readyFor: NetDriverPair | null = null;
  /** Frames consumed, and the XOR of their sequence numbers (keeps the read observable). */
  received = 0;
  seqXor = 0;

  constructor(spec: BenchTrafficSpec, pair: number, private readonly counters: SourceCounters) {
    this.pair = pair;
    this.size = spec.size;
    this.checkOrder = spec.checkOrder !== false;
    this.rxWindow = spec.rxWindow === true;
    this.frame = this.build(0);
  }

  /**
   * The frame at byte `at` (0..7) of a fresh buffer. The copy source must sit
   * at the same offset modulo 8 as its destination in guest memory: copyBytes'
   * word loop needs both 4-aligned, and V8 copies between a SharedArrayBuffer
   * and another buffer byte by byte unless both are 8-aligned alike.
   */
  private build(at: number): Bytes {
    const buf = new ArrayBuffer((at + this.size + 7) & ~7);
    const u8 = new Uint8Array(buf);
    new TrafficGenerator({ flows: this.pair + 1, frameSize: this.size }).writeFrame(this.pair, 0, u8, at);
    this.frameOff = at;
    return { u8, i32: new Int32Array(buf) };
  }

  fill(drv: NetDriverPair, budget: number): number {
    const view = drv.txView;
    const d = view.u8;
    const i32 = view.i32;
    const size = this.size;
    let seq = this.txSeq;
    let sent = 0;
    if (this.rxWindow) {
      // Frames sent and not yet received are in the transmitq, the device's
      // backlog or the used receiveq; keep them within the receiveq size so
      // every looped-back frame finds an RX buffer. Without this a driver
      // that sends faster than it takes RX makes the device park every frame
      // in its backlog: an extra copy per frame, and the backlog never drains
      // while TX keeps coming.
      const room = drv.rxq.size - (this.sentTotal - this.received);
      if (room < budget) budget = room;
    }
    if (drv.burstTx) return this.fillBurst(drv, budget);
    for (; sent < budget; sent++) {
      const o = drv.reserveTx();
      if (o < 0) break;
      // TX buffers sit at fixed strides: the alignment changes at most once (first packet).
      if ((o & 7) !== this.frameOff) this.frame = this.build(o & 7);
      copyBytes(view, o, this.frame, this.frameOff, size);
      stampSeq(d, i32, o + BENCH_SEQ_OFF, seq);
      seq = (seq + 1) | 0;
      drv.commitTx(size);
    }
    this.txSeq = seq;
    this.sentTotal += sent;
    return sent;
  }

  /**
   * The burst path: up to `budget` TX buffers at once
   * ({@link NetDriverPair.reserveTxBurst}). TX buffers are tied to buffer
   * ids and only this source writes frames into them, so a buffer that
   * already holds the header and the frame (from an earlier lap) gets only
   * its sequence number stamped: the bytes the device reads are the same as
   * with a fresh copy. {@link ready} marks such buffers.
   */
  private fillBurst(drv: NetDriverPair, budget: number): number {
    if (budget <= 0) return 0;
    const size = this.size;
    const k = drv.reserveTxBurst(budget, size);
    if (k === 0) return 0;
    if (this.readyFor !== drv || this.ready.length < drv.txq.size) {
      this.readyFor = drv;
      this.ready = new Uint8Array(drv.txq.size);
    }
    const ready = this.ready;
    const ids = drv.txIds;
    const view = drv.txView;
    const d = view.u8;
    const i32 = view.i32;
    let seq = this.txSeq;
    for (let i = 0; i < k; i++) {
      const id = ids[i];
      const o = drv.txFrameOffset(id);
      if (ready[id] === 0) {
        this.prepare(drv, o);
        ready[id] = 1;
      }
      stampSeq(d, i32, o + BENCH_SEQ_OFF, seq);
      seq = (seq + 1) | 0;
    }
    this.txSeq = seq;
    this.sentTotal += k;
    return k;
  }

  /** Write the all-zero virtio_net_hdr and the frame into the TX buffer whose frame starts at byte `o`. */
  private prepare(drv: NetDriverPair, o: number): void {
    const view = drv.txView;
    view.u8.fill(0, o - drv.hdrLen, o);
    if ((o & 7) !== this.frameOff) this.frame = this.build(o & 7);
    copyBytes(view, o, this.frame, this.frameOff, this.size);
  }

  consume(src: Bytes, off: number, len: number): void {
    const s = off + BENCH_SEQ_OFF;
    let seq: number;
    if ((s & 3) === 0) {
      seq = bswap32(src.i32[s >>> 2]);
    } else {
      const d = src.u8;
      seq = (d[s] << 24) | (d[s + 1] << 16) | (d[s + 2] << 8) | d[s + 3];
    }
    this.received++;
    this.seqXor ^= seq;
    if (this.checkOrder) {
      const diff = (seq - this.rxSeq) | 0;
      if (diff !== 0 || len !== this.size) {
        if (len !== this.size) this.counters.bad();
        else if (diff < 0) this.counters.outOfOrder();
        else this.counters.gap(diff);
      }
      if (diff >= 0) this.rxSeq = (seq + 1) | 0;
    }
  }

  reassign(): void {}

  exhausted(): boolean {
    return false;
  }
}
