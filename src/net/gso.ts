/**
 * Software checksum and segmentation offload (spec §5.1.6.2 "Packet
 * Transmission"): what the device does with a frame whose virtio_net_hdr
 * asks for a checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) or segmentation
 * (`gso_type` TCPV4, TCPV6, UDP, UDP_L4) when the netdev behind it takes
 * plain Ethernet frames (loopback, pcap, generator, sink), like QEMU's
 * userspace path (net/net.c + hw/net/virtio-net.c with a peer without a
 * vnet header):
 *
 * - NEEDS_CSUM without GSO: the checksum at `csum_start + csum_offset` is
 *   completed (see csum.ts).
 * - TCPV4 / TCPV6 (TSO): the payload after the TCP header is cut into
 *   `gso_size`-byte segments; each gets the headers with the IPv4 total
 *   length, identification (+1 per segment) and header checksum, or the
 *   IPv6 payload length, the TCP sequence number advanced, FIN and PSH on
 *   the last segment only, CWR on the first only (GSO_ECN), and a full TCP
 *   checksum; as Linux's tcp_gso_segment produces them.
 * - UDP_L4 (USO): the payload after the UDP header is cut into `gso_size`
 *   bytes datagrams, each with its UDP length and checksum (udp4/6 GSO).
 * - UDP (UFO), IPv4 only: the datagram's UDP checksum is computed over the
 *   whole datagram, then the IP payload is fragmented in multiples of 8
 *   bytes (`gso_size` rounded down), MF on all but the last fragment.
 *   IPv6 UFO needs a fragment identification the device cannot choose
 *   consistently: such a frame is refused (counted as an error).
 *
 * Header lengths are taken from the frame itself (Ethernet with up to two
 * VLAN tags; IPv4 IHL; IPv6 with hop-by-hop, routing and destination
 * options headers), `csum_start` when NEEDS_CSUM is set: `hdr_len` is only
 * a hint (§5.1.6.2.1). A frame whose headers do not parse, whose GSO type
 * does not match its protocol, or with `gso_size` 0 is refused
 * (`GsoError`), never half sent.
 *
 * Output frames are built one at a time in a private buffer and handed to
 * `emit`; they are valid only during the call.
 */
import { bytesOf, type Bytes } from '../virtio/copy.js';
import { csumAdd, foldCsum, get16, internetChecksum, put16, completePartialCsum } from './csum.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
} from './hdr.js';

/** The virtio_net_hdr fields the software path needs. */
export interface GsoHdr {
  flags: number;
  gsoType: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** A frame the software offload refuses (malformed headers, unsupported GSO type). */
export class GsoError extends Error {
  override name = 'GsoError';
}

/** Receives each output frame: bytes [off, off+len) of `buf`. Return false to stop (backpressure). */
export type GsoEmit = (buf: Bytes, off: number, len: number) => boolean;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

/** Largest frame handled (vnet GSO frames are at most 64 KiB plus headers). */
export const GSO_MAX_FRAME = 65536 + 256;

export class SoftOffload {
  /** Output scratch: one frame at a time. */
  private readonly out: Bytes = bytesOf(new ArrayBuffer(GSO_MAX_FRAME));
  // Parsed layout of the current frame (offsets relative to the frame start).
  private l3 = 0;
  private ipv4 = false;
  private l4 = 0;
  private l4proto = 0;

  /** True when `h` asks for nothing (no NEEDS_CSUM, no GSO): the frame goes out unchanged. */
  static isPlain(h: GsoHdr): boolean {
    return (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0 && h.gsoType === VIRTIO_NET_HDR_GSO_NONE;
  }

  /**
   * Number of frames {@link process} makes of this frame (1 without GSO).
   * @throws GsoError as {@link process}.
   */
  count(src: Uint8Array, off: number, len: number, h: GsoHdr): number {
    const proto = h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    if (proto === VIRTIO_NET_HDR_GSO_NONE) return 1;
    this.parse(src, off, len, h);
    if (proto === VIRTIO_NET_HDR_GSO_UDP) {
      const fs = h.gsoSize & ~7;
      return Math.max(1, Math.ceil((len - this.l4) / fs));
    }
    const hdrs = this.l4 + (proto === VIRTIO_NET_HDR_GSO_UDP_L4 ? 8 : (src[off + this.l4 + 12]! >>> 4) * 4);
    return Math.max(1, Math.ceil((len - hdrs) / h.gsoSize));
  }

  /**
   * Complete the checksum and/or segment frame [off, off+len) of `src`
   * (an Ethernet frame without virtio_net_hdr) as header `h` asks, handing
   * every resulting frame to `emit`, skipping the first `skip` of them (a
   * retry after backpressure). Returns the number of frames handed out
   * including the skipped ones; less than {@link count} when `emit`
   * returned false. `src` is never written.
   * @throws GsoError for a frame that cannot be processed (nothing emitted).
   */
  process(src: Uint8Array, off: number, len: number, h: GsoHdr, emit: GsoEmit, skip = 0): number {
    if (len > GSO_MAX_FRAME) throw new GsoError(`frame of ${len} bytes exceeds ${GSO_MAX_FRAME}`);
    const proto = h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const out = this.out;
    if (proto === VIRTIO_NET_HDR_GSO_NONE) {
      if (skip > 0) return 1;
      out.u8.set(src.subarray(off, off + len), 0);
      if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        const udp = this.l4ProtoAt(out.u8, len, h.csumStart) === IPPROTO_UDP;
        if (!completePartialCsum(out.u8, 0, len, h.csumStart, h.csumOffset, udp))
          throw new GsoError(`csum_start ${h.csumStart} + csum_offset ${h.csumOffset} outside a ${len}-byte frame`);
      }
      return emit(out, 0, len) ? 1 : 0;
    }
    if (h.gsoSize === 0) throw new GsoError('gso_size 0');
    this.parse(src, off, len, h);
    switch (proto) {
      case VIRTIO_NET_HDR_GSO_TCPV4:
      case VIRTIO_NET_HDR_GSO_TCPV6:
        if (this.l4proto !== IPPROTO_TCP || this.ipv4 !== (proto === VIRTIO_NET_HDR_GSO_TCPV4))
          throw new GsoError(`gso_type ${h.gsoType} on a frame that is not TCP over IPv${proto === VIRTIO_NET_HDR_GSO_TCPV4 ? 4 : 6}`);
        return this.segmentL4(src, off, len, h.gsoSize, true, emit, skip);
      case VIRTIO_NET_HDR_GSO_UDP_L4:
        if (this.l4proto !== IPPROTO_UDP) throw new GsoError('gso_type UDP_L4 on a frame that is not UDP');
        return this.segmentL4(src, off, len, h.gsoSize, false, emit, skip);
      case VIRTIO_NET_HDR_GSO_UDP:
        if (this.l4proto !== IPPROTO_UDP) throw new GsoError('gso_type UDP on a frame that is not UDP');
        if (!this.ipv4) throw new GsoError('UFO over IPv6 is not supported by the software path');
        return this.fragmentUdp4(src, off, len, h.gsoSize, emit, skip);
      default:
        throw new GsoError(`gso_type ${h.gsoType} is not supported`);
    }
  }

  /** IP protocol of the frame whose L4 header starts at `l4`, when the frame parses; else -1. */
  private l4ProtoAt(f: Uint8Array, len: number, l4: number): number {
    try {
      this.parse(f, 0, len, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: 0, gsoSize: 0, csumStart: l4, csumOffset: 0 });
      return this.l4proto;
    } catch {
      return -1;
    }
  }

  /** Find L3 and L4 (sets l3, ipv4, l4, l4proto). @throws GsoError */
  private parse(f: Uint8Array, off: number, len: number, h: GsoHdr): void {
    let p = 12;
    if (len < 14) throw new GsoError('frame shorter than an Ethernet header');
    let type = get16(f, off + p);
    for (let tags = 0; (type === 0x8100 || type === 0x88a8 || type === 0x9100) && tags < 2; tags++) {
      p += 4;
      if (p + 2 > len) throw new GsoError('truncated VLAN tag');
      type = get16(f, off + p);
    }
    const l3 = p + 2;
    this.l3 = l3;
    let l4: number, proto: number;
    if (type === 0x0800) {
      if (l3 + 20 > len || f[off + l3]! >> 4 !== 4) throw new GsoError('bad IPv4 header');
      const ihl = (f[off + l3]! & 15) * 4;
      if (ihl < 20 || l3 + ihl > len) throw new GsoError('bad IPv4 header length');
      this.ipv4 = true;
      proto = f[off + l3 + 9]!;
      l4 = l3 + ihl;
    } else if (type === 0x86dd) {
      if (l3 + 40 > len || f[off + l3]! >> 4 !== 6) throw new GsoError('bad IPv6 header');
      this.ipv6Walk(f, off, len, l3);
      l4 = this.l4;
      proto = this.l4proto;
      this.ipv4 = false;
    } else throw new GsoError(`ethertype 0x${type.toString(16)} is not IP`);
    if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && h.csumStart !== l4) {
      // The driver's csum_start is authoritative for where L4 begins (e.g. unknown extension headers).
      if (h.csumStart <= l3 || h.csumStart >= len) throw new GsoError(`csum_start ${h.csumStart} outside the frame's L4 part`);
      l4 = h.csumStart;
    }
    this.l4 = l4;
    this.l4proto = proto;
    const need = proto === IPPROTO_TCP ? 20 : 8;
    if (l4 + need > len) throw new GsoError('truncated L4 header');
    if (proto === IPPROTO_TCP) {
      const thl = (f[off + l4 + 12]! >>> 4) * 4;
      if (thl < 20 || l4 + thl > len) throw new GsoError('bad TCP header length');
    }
  }

  private ipv6Walk(f: Uint8Array, off: number, len: number, l3: number): void {
    let nh = f[off + l3 + 6]!;
    let p = l3 + 40;
    for (let i = 0; i < 8 && (nh === 0 || nh === 43 || nh === 60); i++) {
      if (p + 8 > len) throw new GsoError('truncated IPv6 extension header');
      const next = f[off + p]!;
      p += (f[off + p + 1]! + 1) * 8;
      nh = next;
    }
    this.l4 = p;
    this.l4proto = nh;
  }

  /** Pseudo-header sum (not folded) for an L4 length `l4len` of the frame in `b` at `o`. */
  private pseudo(b: Uint8Array, o: number, proto: number, l4len: number): number {
    if (this.ipv4) return csumAdd(b, o + this.l3 + 12, 8) + proto + l4len;
    return csumAdd(b, o + this.l3 + 8, 32) + proto + (l4len >>> 16) + (l4len & 0xffff);
  }

  /** Set IPv4 total length, id and header checksum, or IPv6 payload length, for an L3 payload of `l3payload` bytes. */
  private fixIp(b: Uint8Array, l3payloadAfterL4: number, idAdd: number): void {
    const l3 = this.l3;
    if (this.ipv4) {
      const ihl = (b[l3]! & 15) * 4;
      put16(b, l3 + 2, this.l4 - l3 + l3payloadAfterL4);
      put16(b, l3 + 4, (get16(b, l3 + 4) + idAdd) & 0xffff);
      put16(b, l3 + 10, 0);
      put16(b, l3 + 10, internetChecksum(b, l3, ihl));
    } else {
      put16(b, l3 + 4, this.l4 - l3 - 40 + l3payloadAfterL4);
    }
  }

  /** TSO (tcp) or USO (!tcp): cut the L4 payload into mss-byte pieces. */
  private segmentL4(src: Uint8Array, off: number, len: number, mss: number, tcp: boolean, emit: GsoEmit, skip: number): number {
    const out = this.out, o8 = out.u8;
    const l4 = this.l4;
    const thl = tcp ? (src[off + l4 + 12]! >>> 4) * 4 : 8;
    const hdrs = l4 + thl;
    const payload = len - hdrs;
    const nseg = Math.max(1, Math.ceil(payload / mss));
    const seq0 = tcp ? (src[off + l4 + 4]! * 0x1000000 + (src[off + l4 + 5]! << 16) + (src[off + l4 + 6]! << 8) + src[off + l4 + 7]!) : 0;
    const flags0 = tcp ? src[off + l4 + 13]! : 0;
    for (let i = skip; i < nseg; i++) {
      const pOff = i * mss;
      const plen = Math.min(mss, payload - pOff);
      o8.set(src.subarray(off, off + hdrs), 0);
      o8.set(src.subarray(off + hdrs + pOff, off + hdrs + pOff + Math.max(0, plen)), hdrs);
      const l4len = thl + Math.max(0, plen);
      this.fixIp(o8, l4len, i);
      if (tcp) {
        const seq = (seq0 + pOff) % 0x100000000;
        o8[l4 + 4] = seq >>> 24;
        o8[l4 + 5] = (seq >>> 16) & 0xff;
        o8[l4 + 6] = (seq >>> 8) & 0xff;
        o8[l4 + 7] = seq & 0xff;
        let fl = flags0;
        if (i !== nseg - 1) fl &= ~0x09; // FIN, PSH on the last segment only
        if (i !== 0) fl &= ~0x80; // CWR on the first only
        o8[l4 + 13] = fl;
        put16(o8, l4 + 16, 0);
        put16(o8, l4 + 16, ~foldCsum(csumAdd(o8, l4, l4len, this.pseudo(o8, 0, IPPROTO_TCP, l4len))) & 0xffff);
      } else {
        put16(o8, l4 + 4, l4len);
        put16(o8, l4 + 6, 0);
        let c = ~foldCsum(csumAdd(o8, l4, l4len, this.pseudo(o8, 0, IPPROTO_UDP, l4len))) & 0xffff;
        if (c === 0) c = 0xffff;
        put16(o8, l4 + 6, c);
      }
      if (!emit(out, 0, hdrs + Math.max(0, plen))) return i;
    }
    return nseg;
  }

  /** UFO over IPv4: full UDP checksum, then IP fragments of (gsoSize & ~7) payload bytes. */
  private fragmentUdp4(src: Uint8Array, off: number, len: number, gsoSize: number, emit: GsoEmit, skip: number): number {
    const fs = gsoSize & ~7;
    if (fs === 0) throw new GsoError(`gso_size ${gsoSize} is below one 8-byte fragment unit`);
    const out = this.out, o8 = out.u8;
    const l3 = this.l3, l4 = this.l4;
    const ipPayload = len - l4; // UDP header + data
    // The UDP checksum over the whole datagram, computed in a copy of the original.
    o8.set(src.subarray(off, off + len), 0);
    put16(o8, l4 + 4, ipPayload);
    put16(o8, l4 + 6, 0);
    let c = ~foldCsum(csumAdd(o8, l4, ipPayload, this.pseudo(o8, 0, IPPROTO_UDP, ipPayload))) & 0xffff;
    if (c === 0) c = 0xffff;
    const udpHdr = [o8[l4]!, o8[l4 + 1]!, o8[l4 + 2]!, o8[l4 + 3]!, o8[l4 + 4]!, o8[l4 + 5]!, c >>> 8, c & 0xff];
    const nfrag = Math.max(1, Math.ceil(ipPayload / fs));
    const ihl = l4 - l3;
    for (let i = skip; i < nfrag; i++) {
      const fo = i * fs;
      const flen = Math.min(fs, ipPayload - fo);
      o8.set(src.subarray(off, off + l4), 0);
      // Fragment payload: bytes [fo, fo+flen) of (udp header with checksum + data).
      o8.set(src.subarray(off + l4 + fo, off + l4 + fo + flen), l4);
      if (i === 0) for (let k = 0; k < 8; k++) o8[l4 + k] = udpHdr[k]!; // fs >= 8: the UDP header is in the first fragment
      put16(o8, l3 + 2, ihl + flen);
      const mf = i !== nfrag - 1 ? 0x2000 : 0;
      put16(o8, l3 + 6, mf | (fo >>> 3));
      put16(o8, l3 + 10, 0);
      put16(o8, l3 + 10, internetChecksum(o8, l3, ihl));
      if (!emit(out, 0, l4 + flen)) return i;
    }
    return nfrag;
  }
}
