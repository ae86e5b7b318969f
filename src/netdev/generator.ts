/**
 * Deterministic traffic generator for tests and benchmarks.
 *
 * Flow f is a fixed 5-tuple (UDP or TCP, IPv4 or optionally IPv6) between test
 * addresses that can never be real hosts:
 *   IPv4: 198.18.a.b -> 198.19.a.b (the RFC 2544 benchmarking range 198.18.0.0/15)
 *   IPv6: 2001:2::<f+1> -> 2001:2:0:1::<f+1> (the RFC 5180 benchmarking range 2001:2::/48)
 *   MACs: src 02:01:xx:xx:xx:xx (flow id), dst 02:00:00:00:00:01 by default
 *         (locally administered, unicast).
 * Tuples are distinct for every flow id below MAX_FLOWS.
 *
 * Frame = Ethernet II (no FCS) + IPv4/IPv6 + UDP/TCP + payload:
 *   u16 magic 0x564d ('VM') | u32 flow id | u32 seq (big-endian) | filler
 * The filler is a xorshift32 stream seeded from (flow, seq), so a receiver can
 * check every byte without keeping a copy. Some header fields also depend on seq
 * (IPv4 identification, TCP sequence number, L4 checksums), so a corrupted seq
 * field is detected even when a frame has no filler bytes.
 *
 * Frame size S (bytes without FCS) is clamped to [60, 9014]; a flow whose headers
 * do not fit S is made just big enough:
 *   UDP/IPv4 >= 60, TCP/IPv4 >= 64, UDP/IPv6 >= 72, TCP/IPv6 >= 84.
 * Use frameLength(flow) for the exact length.
 *
 * Checksums: IPv4 header checksum always valid; TCP checksum always valid; UDP
 * checksum valid for IPv6 (mandatory there) and for IPv4 when `udpChecksum` is
 * set (otherwise 0 = "no checksum", allowed for IPv4).
 *
 * writeFrame()/checkFrame() allocate nothing (checkFrame regenerates the frame
 * into a scratch buffer made once in the constructor and compares).
 */

export const MIN_FRAME = 60;
export const MAX_FRAME = 9728;
export const MAX_FLOWS = 1 << 24;
export const PAYLOAD_MAGIC = 0x564d;
/** Bytes of magic + flow id + seq at the start of the payload. */
export const PAYLOAD_HEADER = 10;

export type L4Proto = 'udp' | 'tcp';

export interface GeneratorOptions {
  /** Number of flows (1 .. MAX_FLOWS). */
  flows: number;
  /** Ethernet frame size without FCS; clamped to [60, 9014] (default 64). */
  frameSize?: number;
  /** 'mixed': even flows UDP, odd flows TCP (default 'udp'). */
  proto?: L4Proto | 'mixed';
  /** 'mixed': flows with bit 1 set use IPv6 (default 4). */
  ipVersion?: 4 | 6 | 'mixed';
  /** Compute UDP checksums over IPv4 too (default false: 0). */
  udpChecksum?: boolean;
  /** Destination MAC, e.g. the device's (default 02:00:00:00:00:01). */
  dstMac?: string;
}

export interface FlowTuple {
  flow: number;
  proto: L4Proto;
  ipVersion: 4 | 6;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  srcMac: string;
  dstMac: string;
}

/** checkFrame() results below zero. */
export const CheckError = {
  /** off/len outside the buffer, or len outside [60, 9014] */
  Bounds: -1,
  /** not Ethernet/IPv4|IPv6/UDP|TCP as we generate it */
  NotOurs: -2,
  BadMagic: -3,
  /** flow id >= flows, or the flow's protocol/IP version does not match */
  BadFlow: -4,
  /** len differs from frameLength(flow) */
  BadLength: -5,
  /** some byte differs from the regenerated frame; see badOffset */
  Corrupt: -6,
} as const;
export type CheckErrorCode = (typeof CheckError)[keyof typeof CheckError];

export function checkErrorName(code: number): string {
  for (const [k, v] of Object.entries(CheckError)) if (v === code) return k;
  return code >= 0 ? 'ok' : `unknown(${code})`;
}

const ETH = 14;
const IP4 = 20;
const IP6 = 40;
const UDP = 8;
const TCP = 20;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const BLOCK = 65534;   // flows per source-address block
const PORT_SPAN = 64512; // source ports 1024..65535

export class TrafficGenerator {
  readonly flows: number;
  /** Requested size after clamping; per-flow length is frameLength(flow). */
  readonly frameSize: number;
  readonly proto: L4Proto | 'mixed';
  readonly ipVersion: 4 | 6 | 'mixed';
  readonly udpChecksum: boolean;
  /** Largest frameLength() over all flows. */
  readonly maxFrameLength: number;
  private readonly dstMac = new Uint8Array(6);
  private readonly scratch: Uint8Array;

  /** Results of the last checkFrame(): flow id, sequence number, first differing byte (-1 if none). */
  flow = -1;
  seq = -1;
  badOffset = -1;

  constructor(opts: GeneratorOptions) {
    const flows = opts.flows;
    if (!Number.isInteger(flows) || flows < 1 || flows > MAX_FLOWS) {
      throw new RangeError(`flows must be an integer in 1..${MAX_FLOWS} (got ${flows})`);
    }
    this.flows = flows;
    const req = Math.floor(opts.frameSize ?? 64);
    this.frameSize = Number.isFinite(req) ? Math.min(MAX_FRAME, Math.max(MIN_FRAME, req)) : 64;
    this.proto = opts.proto ?? 'udp';
    this.ipVersion = opts.ipVersion ?? 4;
    this.udpChecksum = opts.udpChecksum ?? false;
    parseMac(opts.dstMac ?? '02:00:00:00:00:01', this.dstMac);
    let max = 0;
    for (let k = 0; k < 4; k++) max = Math.max(max, this.lengthFor((k & 1) === 1, (k & 2) === 2));
    this.maxFrameLength = max;
    this.scratch = new Uint8Array(max);
  }

  isTcp(flow: number): boolean {
    return this.proto === 'tcp' || (this.proto === 'mixed' && (flow & 1) === 1);
  }

  isV6(flow: number): boolean {
    return this.ipVersion === 6 || (this.ipVersion === 'mixed' && (flow & 2) === 2);
  }

  frameLength(flow: number): number {
    return this.lengthFor(this.isTcp(flow), this.isV6(flow));
  }

  private lengthFor(tcp: boolean, v6: boolean): number {
    const min = ETH + (v6 ? IP6 : IP4) + (tcp ? TCP : UDP) + PAYLOAD_HEADER;
    return Math.max(this.frameSize, min);
  }

  flowTuple(flow: number): FlowTuple {
    this.checkFlow(flow);
    const v6 = this.isV6(flow);
    const a = srcHost(flow);
    const smac = new Uint8Array(6);
    srcMacInto(flow, smac, 0);
    return {
      flow,
      proto: this.isTcp(flow) ? 'tcp' : 'udp',
      ipVersion: v6 ? 6 : 4,
      srcIp: v6 ? `2001:2::${((flow + 1) >>> 16).toString(16)}:${((flow + 1) & 0xffff).toString(16)}`
        : `198.18.${a >>> 8}.${a & 0xff}`,
      dstIp: v6 ? `2001:2:0:1::${((flow + 1) >>> 16).toString(16)}:${((flow + 1) & 0xffff).toString(16)}`
        : `198.19.${a >>> 8}.${a & 0xff}`,
      srcPort: srcPort(flow),
      dstPort: dstPort(flow),
      srcMac: fmtMac(smac),
      dstMac: fmtMac(this.dstMac),
    };
  }

  /**
   * Writes frame (flow, seq) at dst[off..]; returns its length. Throws
   * RangeError if flow is out of range or the frame does not fit dst.
   */
  writeFrame(flow: number, seq: number, dst: Uint8Array, off: number): number {
    this.checkFlow(flow);
    const tcp = this.isTcp(flow);
    const v6 = this.isV6(flow);
    const len = this.lengthFor(tcp, v6);
    if (!(off >= 0) || off + len > dst.length) throw new RangeError(`frame of ${len} bytes does not fit at offset ${off} of ${dst.length}`);
    seq >>>= 0;
    const d = dst;

    // Ethernet
    const m = this.dstMac;
    d[off] = m[0]!; d[off + 1] = m[1]!; d[off + 2] = m[2]!; d[off + 3] = m[3]!; d[off + 4] = m[4]!; d[off + 5] = m[5]!;
    srcMacInto(flow, d, off + 6);
    const et = v6 ? ETHERTYPE_IPV6 : ETHERTYPE_IPV4;
    d[off + 12] = et >>> 8; d[off + 13] = et & 0xff;

    const ip = off + ETH;
    const l4 = ip + (v6 ? IP6 : IP4);
    const l4len = off + len - l4;
    const proto = tcp ? PROTO_TCP : PROTO_UDP;
    let pseudo: number; // pseudo-header sum for the L4 checksum
    if (v6) {
      const fl = flowLabel(flow);
      // version 6, traffic class 0, 20-bit flow label
      d[ip] = 0x60; d[ip + 1] = (fl >>> 16) & 0x0f; d[ip + 2] = (fl >>> 8) & 0xff; d[ip + 3] = fl & 0xff;
      put16(d, ip + 4, l4len);
      d[ip + 6] = proto;
      d[ip + 7] = 64;
      v6Addr(d, ip + 8, 0, flow + 1);
      v6Addr(d, ip + 24, 1, flow + 1);
      pseudo = sum16(d, ip + 8, 32, 0) + l4len + proto;
    } else {
      const a = srcHost(flow);
      d[ip] = 0x45; d[ip + 1] = 0;
      put16(d, ip + 2, len - ETH);
      put16(d, ip + 4, (seq + Math.imul(flow, 40503)) & 0xffff); // identification depends on seq
      d[ip + 6] = 0x40; d[ip + 7] = 0; // DF
      d[ip + 8] = 64; d[ip + 9] = proto;
      d[ip + 10] = 0; d[ip + 11] = 0;
      d[ip + 12] = 198; d[ip + 13] = 18; d[ip + 14] = a >>> 8; d[ip + 15] = a & 0xff;
      d[ip + 16] = 198; d[ip + 17] = 19; d[ip + 18] = a >>> 8; d[ip + 19] = a & 0xff;
      put16(d, ip + 10, fold(sum16(d, ip, IP4, 0)) ^ 0xffff);
      pseudo = sum16(d, ip + 12, 8, 0) + l4len + proto;
    }

    put16(d, l4, srcPort(flow));
    put16(d, l4 + 2, dstPort(flow));
    let pl: number;
    if (tcp) {
      const payloadLen = l4len - TCP;
      put32(d, l4 + 4, (Math.imul(seq, payloadLen) + isn(flow)) >>> 0);
      put32(d, l4 + 8, isn(flow ^ 0x5a5a5a5a) >>> 0);
      d[l4 + 12] = (TCP / 4) << 4; d[l4 + 13] = 0x18; // PSH|ACK
      d[l4 + 14] = 0xff; d[l4 + 15] = 0xff;           // window
      d[l4 + 16] = 0; d[l4 + 17] = 0;                 // checksum (below)
      d[l4 + 18] = 0; d[l4 + 19] = 0;                 // urgent
      pl = l4 + TCP;
    } else {
      put16(d, l4 + 4, l4len);
      d[l4 + 6] = 0; d[l4 + 7] = 0;
      pl = l4 + UDP;
    }

    // payload: magic, flow, seq, filler
    put16(d, pl, PAYLOAD_MAGIC);
    put32(d, pl + 2, flow);
    put32(d, pl + 6, seq);
    const end = off + len;
    let x = fillerSeed(flow, seq);
    let p = pl + PAYLOAD_HEADER;
    for (; p + 4 <= end; p += 4) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      d[p] = x >>> 24; d[p + 1] = (x >>> 16) & 0xff; d[p + 2] = (x >>> 8) & 0xff; d[p + 3] = x & 0xff;
    }
    if (p < end) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      for (let s = 24; p < end; p++, s -= 8) d[p] = (x >>> s) & 0xff;
    }

    // L4 checksum
    if (tcp) {
      put16(d, l4 + 16, fold(sum16(d, l4, l4len, pseudo)) ^ 0xffff);
    } else if (v6 || this.udpChecksum) {
      const c = fold(sum16(d, l4, l4len, pseudo)) ^ 0xffff;
      put16(d, l4 + 6, c === 0 ? 0xffff : c);
    }
    return len;
  }

  /**
   * Checks that src[off..off+len) is exactly frame (flow, seq) for the flow and
   * seq it carries. Returns the flow id (>= 0; `this.flow`/`this.seq` set) or a
   * CheckError code (< 0; `this.badOffset` set for Corrupt). Allocation-free.
   */
  checkFrame(src: Uint8Array, off: number, len: number): number {
    this.flow = -1;
    this.seq = -1;
    this.badOffset = -1;
    if (!(off >= 0) || !(len >= MIN_FRAME) || len > MAX_FRAME || off + len > src.length) return CheckError.Bounds;
    const et = (src[off + 12]! << 8) | src[off + 13]!;
    let l4: number;
    let v6: boolean;
    let proto: number;
    if (et === ETHERTYPE_IPV4) {
      v6 = false; l4 = off + ETH + IP4; proto = src[off + ETH + 9]!;
    } else if (et === ETHERTYPE_IPV6) {
      v6 = true; l4 = off + ETH + IP6; proto = src[off + ETH + 6]!;
    } else {
      return CheckError.NotOurs;
    }
    let tcp: boolean;
    if (proto === PROTO_TCP) tcp = true;
    else if (proto === PROTO_UDP) tcp = false;
    else return CheckError.NotOurs;
    const pl = l4 + (tcp ? TCP : UDP);
    if (pl + PAYLOAD_HEADER > off + len) return CheckError.NotOurs;
    if (((src[pl]! << 8) | src[pl + 1]!) !== PAYLOAD_MAGIC) return CheckError.BadMagic;
    const flow = get32(src, pl + 2);
    const seq = get32(src, pl + 6);
    if (flow >= this.flows || this.isTcp(flow) !== tcp || this.isV6(flow) !== v6) return CheckError.BadFlow;
    if (len !== this.lengthFor(tcp, v6)) return CheckError.BadLength;
    const s = this.scratch;
    this.writeFrame(flow, seq, s, 0);
    for (let i = 0; i < len; i++) {
      if (src[off + i] !== s[i]) {
        this.badOffset = i;
        return CheckError.Corrupt;
      }
    }
    this.flow = flow;
    this.seq = seq;
    return flow;
  }

  /** Allocating convenience wrapper around checkFrame() for tests and tools. */
  inspect(src: Uint8Array, off = 0, len = src.length - off): { ok: boolean; flow: number; seq: number; error: string; badOffset: number } {
    const r = this.checkFrame(src, off, len);
    return { ok: r >= 0, flow: this.flow, seq: this.seq, error: checkErrorName(r), badOffset: this.badOffset };
  }

  private checkFlow(flow: number): void {
    if (!Number.isInteger(flow) || flow < 0 || flow >= this.flows) {
      throw new RangeError(`flow ${flow} out of range 0..${this.flows - 1}`);
    }
  }
}

// ---- per-flow fields (pure functions of the flow id) -----------------------

/** Host part (1..65534) of the 198.18/16 source and 198.19/16 destination. */
function srcHost(flow: number): number { return (flow % BLOCK) + 1; }
/** Distinct (srcHost, srcPort) for every flow < lcm(65534, 64512) > MAX_FLOWS. */
function srcPort(flow: number): number { return 1024 + (flow % PORT_SPAN); }
function dstPort(flow: number): number { return 20000 + ((flow * 31) % 10000); }
function flowLabel(flow: number): number { return (Math.imul(flow + 1, 0x9e3779b1) >>> 12) & 0xfffff; }
function isn(flow: number): number { return fmix32(flow ^ 0x7a3c1e5b); }

function srcMacInto(flow: number, d: Uint8Array, o: number): void {
  d[o] = 0x02; d[o + 1] = 0x01;
  d[o + 2] = 0; d[o + 3] = (flow >>> 16) & 0xff; d[o + 4] = (flow >>> 8) & 0xff; d[o + 5] = flow & 0xff;
}

/** 2001:2:0:<net>::<hi16>:<lo16> */
function v6Addr(d: Uint8Array, o: number, net: number, host: number): void {
  d[o] = 0x20; d[o + 1] = 0x01; d[o + 2] = 0x00; d[o + 3] = 0x02;
  d[o + 4] = 0; d[o + 5] = 0; d[o + 6] = 0; d[o + 7] = net;
  for (let i = 8; i < 12; i++) d[o + i] = 0;
  d[o + 12] = (host >>> 24) & 0xff; d[o + 13] = (host >>> 16) & 0xff; d[o + 14] = (host >>> 8) & 0xff; d[o + 15] = host & 0xff;
}

function fmix32(h: number): number {
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function fillerSeed(flow: number, seq: number): number {
  const x = fmix32(fmix32(flow + 0x2545f491) ^ seq);
  return x === 0 ? 0x6d2b79f5 : x; // xorshift32 state must be non-zero
}

// ---- byte helpers ------------------------------------------------------------

function put16(d: Uint8Array, o: number, v: number): void { d[o] = (v >>> 8) & 0xff; d[o + 1] = v & 0xff; }
function put32(d: Uint8Array, o: number, v: number): void {
  d[o] = v >>> 24; d[o + 1] = (v >>> 16) & 0xff; d[o + 2] = (v >>> 8) & 0xff; d[o + 3] = v & 0xff;
}
function get32(d: Uint8Array, o: number): number {
  return ((d[o]! << 24) | (d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!) >>> 0;
}

/** Unfolded one's-complement sum of big-endian 16-bit words (odd tail padded). */
export function sum16(d: Uint8Array, o: number, len: number, init: number): number {
  let s = init;
  const end = o + (len & ~1);
  for (let i = o; i < end; i += 2) s += (d[i]! << 8) | d[i + 1]!;
  if (len & 1) s += d[o + len - 1]! << 8;
  return s;
}

/** Folds a sum16() result into 16 bits (not complemented). */
export function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function parseMac(s: string, out: Uint8Array): void {
  const parts = s.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new TypeError(`bad MAC address '${s}'`);
  for (let i = 0; i < 6; i++) out[i] = parseInt(parts[i]!, 16);
}

function fmtMac(m: Uint8Array): string {
  return Array.from(m, (b) => b.toString(16).padStart(2, '0')).join(':');
}
