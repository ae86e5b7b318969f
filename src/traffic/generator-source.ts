/**
 * Generated traffic: F UDP/IPv4 flows of S-byte frames between addresses in
 * the benchmarking range 198.18.0.0/15, each frame carrying (flow, seq) and
 * a filler derived from them, so the receiver checks every byte without
 * keeping a copy. The driver's TX queue selection assigns each flow to a pair
 * ({@link assignFlows}); the pair's worker sends only its flows, round robin.
 *
 * Frame layout (bytes, network order where it is a header field):
 *   0   Ethernet dst 02:00:00:00:00:01, src 02:00:00:00:00:02, type 0x0800
 *   14  IPv4, 20 bytes, DF, TTL 64, proto 17, valid header checksum,
 *       src 198.18.(f>>8).(f&255), dst 198.19.0.1
 *   34  UDP, src port 1024 + (golden-ratio hash of f) & 0x7fff, dst port 5001, checksum 0
 *   42  payload: magic 0x76716d71 ("vqmq") le32, flow le32, seq le32, filler
 *       (byte i of the payload = (flow * 31 + seq * 7 + i) & 0xff)
 */
import type { Bytes } from '../virtio/copy.js';
import type { NetDriverPair } from '../net/driver-pair.js';
import type { SourceCounters, TrafficSource } from './source.js';

export const GEN_MAGIC = 0x76716d71;
const PAYLOAD = 42;

export interface GeneratorTrafficSpec {
  kind: 'generator';
  flows: number;
  /** Frame size in bytes (60..1514). */
  size: number;
  /** Int32 per flow: the pair whose transmitq carries it. */
  flowPair: SharedArrayBuffer;
  /** Int32 per flow: next sequence number to send / expected next on RX. */
  txSeq: SharedArrayBuffer;
  rxSeq: SharedArrayBuffer;
}

export function prepareGeneratorTraffic(flows: number, size: number): GeneratorTrafficSpec {
  if (!(size >= 60 && size <= 1514)) throw new RangeError('frame size must be 60..1514');
  return {
    kind: 'generator', flows, size,
    flowPair: new SharedArrayBuffer(4 * flows), txSeq: new SharedArrayBuffer(4 * flows), rxSeq: new SharedArrayBuffer(4 * flows),
  };
}

/** Set each flow's TX pair from the driver's queue selection applied to the flow's frame. */
export function assignFlows(spec: GeneratorTrafficSpec, select: (frame: Uint8Array) => number): void {
  const fp = new Int32Array(spec.flowPair);
  const buf = new Uint8Array(spec.size);
  for (let f = 0; f < spec.flows; f++) {
    writeGenFrame(buf, 0, spec.size, f, 0);
    fp[f] = select(buf);
  }
}

/** Write flow `flow`'s frame number `seq` (`size` bytes) at dst[off]. */
export function writeGenFrame(dst: Uint8Array, off: number, size: number, flow: number, seq: number): void {
  const d = dst;
  d[off] = 2; d[off + 1] = 0; d[off + 2] = 0; d[off + 3] = 0; d[off + 4] = 0; d[off + 5] = 1;
  d[off + 6] = 2; d[off + 7] = 0; d[off + 8] = 0; d[off + 9] = 0; d[off + 10] = 0; d[off + 11] = 2;
  d[off + 12] = 0x08; d[off + 13] = 0x00;
  const ip = off + 14;
  const totLen = size - 14;
  d[ip] = 0x45; d[ip + 1] = 0; d[ip + 2] = totLen >> 8; d[ip + 3] = totLen & 0xff;
  d[ip + 4] = 0; d[ip + 5] = 0; d[ip + 6] = 0x40; d[ip + 7] = 0;
  d[ip + 8] = 64; d[ip + 9] = 17; d[ip + 10] = 0; d[ip + 11] = 0;
  d[ip + 12] = 198; d[ip + 13] = 18; d[ip + 14] = (flow >> 8) & 0xff; d[ip + 15] = flow & 0xff;
  d[ip + 16] = 198; d[ip + 17] = 19; d[ip + 18] = 0; d[ip + 19] = 1;
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (d[ip + i] << 8) | d[ip + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  sum = ~sum & 0xffff;
  d[ip + 10] = sum >> 8; d[ip + 11] = sum & 0xff;
  const udp = ip + 20;
  const sport = 1024 + ((Math.imul(flow, 0x9e3779b1) >>> 17) & 0x7fff); // decorrelated from the address: Toeplitz is linear
  const udpLen = totLen - 20;
  d[udp] = sport >> 8; d[udp + 1] = sport & 0xff; d[udp + 2] = 5001 >> 8; d[udp + 3] = 5001 & 0xff;
  d[udp + 4] = udpLen >> 8; d[udp + 5] = udpLen & 0xff; d[udp + 6] = 0; d[udp + 7] = 0;
  const p = off + PAYLOAD;
  put32(d, p, GEN_MAGIC);
  put32(d, p + 4, flow);
  put32(d, p + 8, seq);
  const base = (flow * 31 + seq * 7) & 0xff;
  for (let i = 12; i < size - PAYLOAD; i++) d[p + i] = (base + i) & 0xff;
}

function put32(d: Uint8Array, o: number, v: number): void {
  d[o] = v & 0xff; d[o + 1] = (v >>> 8) & 0xff; d[o + 2] = (v >>> 16) & 0xff; d[o + 3] = v >>> 24;
}
function get32(d: Uint8Array, o: number): number {
  return (d[o] | (d[o + 1] << 8) | (d[o + 2] << 16) | (d[o + 3] << 24)) >>> 0;
}

export class GeneratorSource implements TrafficSource {
  private readonly flowPair: Int32Array;
  private readonly txSeq: Int32Array;
  private readonly rxSeq: Int32Array;
  private readonly size: number;
  private readonly template: Uint8Array;
  private mine: Int32Array = new Int32Array(0);
  private next = 0;

  constructor(spec: GeneratorTrafficSpec, private readonly pair: number, private readonly counters: SourceCounters) {
    this.flowPair = new Int32Array(spec.flowPair);
    this.txSeq = new Int32Array(spec.txSeq);
    this.rxSeq = new Int32Array(spec.rxSeq);
    this.size = spec.size;
    this.template = new Uint8Array(spec.size);
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
    if (n === 0) return 0;
    const view = drv.txView.u8;
    const size = this.size;
    let sent = 0;
    for (; sent < budget; sent++) {
      const o = drv.reserveTx();
      if (o < 0) break;
      const flow = this.mine[this.next];
      this.next = this.next + 1 === n ? 0 : this.next + 1;
      const seq = this.txSeq[flow];
      this.txSeq[flow] = seq + 1;
      writeGenFrame(view, o, size, flow, seq);
      drv.commitTx(size);
    }
    return sent;
  }

  consume(src: Bytes, off: number, len: number): void {
    const d = src.u8;
    if (len !== this.size || get32(d, off + PAYLOAD) !== GEN_MAGIC) {
      this.counters.bad();
      return;
    }
    const flow = get32(d, off + PAYLOAD + 4);
    const seq = get32(d, off + PAYLOAD + 8) | 0;
    if (flow >= this.rxSeq.length) {
      this.counters.bad();
      return;
    }
    // Byte-exact: rebuild the expected frame and compare every byte.
    const t = this.template;
    writeGenFrame(t, 0, len, flow, seq);
    for (let i = 0; i < len; i++) {
      if (t[i] !== d[off + i]) {
        this.counters.bad();
        return;
      }
    }
    const want = this.rxSeq[flow];
    if (seq !== want) this.counters.outOfOrder();
    if (seq >= want) this.rxSeq[flow] = seq + 1;
  }
}
