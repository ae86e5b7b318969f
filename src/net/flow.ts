/**
 * Ethernet frame -> flow key parser for RSS (device RX) and TX queue selection.
 *
 * Supported: Ethernet II; up to two 802.1Q / 802.1ad (and legacy 0x9100) VLAN
 * tags; IPv4 (IHL honoured, total length honoured, fragments detected); IPv6
 * with extension headers hop-by-hop (0), routing (43), fragment (44),
 * destination options (60) and AH (51) skipped, stopping at ESP (50) and
 * No Next Header (59); TCP and UDP ports.
 *
 * Which fields matter is dictated by virtio 1.x, "Device Types / Network
 * Device / Device Operation / Processing of Incoming Packets / Hash
 * calculation for incoming packets" (IPv4 packets / IPv6 packets without
 * extension header / IPv6 packets with extension header). In particular:
 *
 *  - A packet "has a TCP (UDP) header" only when the L4 header is present and
 *    complete (20 bytes TCP, 8 bytes UDP) and the packet is not an IP
 *    fragment. Every fragment, including the first one (which does carry the
 *    L4 header), is reported with `hasPorts = false`, so that all fragments
 *    of a datagram get the same 2-tuple hash and land on the same queue (the
 *    same rule NDIS RSS and Linux's flow dissector apply). `l4Offset` is still
 *    set for a first fragment because the header is there.
 *  - For the _EX hash types the spec substitutes the Home Address option
 *    (destination options header, option type 0xC9) for the source address
 *    and the Routing Header Type 2 address for the destination address. The
 *    parser records those in `homeAddr6` / `rt2Addr6` with `hasHomeAddr` /
 *    `hasRt2Addr` (the first of each found), and `hasExtHeaders` tells which
 *    of the two IPv6 spec subsections applies.
 *
 * Byte order: every multi-byte field is read big-endian (network order). IPv4
 * addresses are stored as unsigned 32-bit numbers whose most significant byte
 * is the first address byte (10.0.0.1 -> 0x0a000001). IPv6 addresses are 4
 * unsigned 32-bit words, word k = address bytes 4k..4k+3 big-endian.
 *
 * Hot path: {@link parseFlow} never allocates, never throws and never reads
 * outside `[off, off + len)` (nor beyond `frame.length`). Offsets it reports
 * are relative to `off` (0 = first byte of the Ethernet header) and are
 * either -1 (absent) or strictly less than `len`.
 */

export const ETH_HLEN = 14;
export const ETH_P_IPV4 = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
/** Pre-standard QinQ outer tag some switches still emit. */
export const ETH_P_QINQ_9100 = 0x9100;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ESP = 50;
export const IPPROTO_AH = 51;
export const IPPROTO_NONE = 59;
export const IPPROTO_DSTOPTS = 60;

/** IPv6 Home Address destination option (RFC 6275 section 6.3). */
export const IPV6_TLV_HAO = 0xc9;

/** Bound on IPv6 extension headers walked (each is at least 8 bytes anyway). */
export const MAX_IPV6_EXT_HEADERS = 16;

/**
 * Reusable, mutable flow key. Allocate one per worker/queue and pass it to
 * {@link parseFlow} for every frame; every field keeps one type forever so
 * code reading it stays monomorphic.
 */
export class FlowKey {
  /** 0 = no IP header parsed, 4 = IPv4, 6 = IPv6. */
  l3 = 0;
  /**
   * IPv4 protocol, or for IPv6 the last Next Header value reached (the upper
   * layer protocol, 50 for ESP, 59 for none, or an extension header number
   * if the chain was truncated). 0 when l3 = 0.
   */
  l4proto = 0;
  /** TCP/UDP ports, valid only when `hasPorts`; 0 otherwise. */
  srcPort = 0;
  dstPort = 0;
  /** IPv4 addresses (see module doc for encoding); 0 unless l3 = 4. */
  src4 = 0;
  dst4 = 0;
  /** IPv6 addresses, 4 big-endian words each; valid only when l3 = 6. */
  readonly src6: Uint32Array = new Uint32Array(4);
  readonly dst6: Uint32Array = new Uint32Array(4);
  /** Home Address option address (for the _EX hash types); valid when `hasHomeAddr`. */
  readonly homeAddr6: Uint32Array = new Uint32Array(4);
  /** Routing Header Type 2 address (for the _EX hash types); valid when `hasRt2Addr`. */
  readonly rt2Addr6: Uint32Array = new Uint32Array(4);
  /** Ethertype after the VLAN tags (set even when parseFlow returns false and len >= 14). */
  ethertype = 0;
  /** Number of VLAN tags skipped (0..2). */
  vlanCount = 0;
  /** VID (12 bits) of the first (outer) tag, -1 if untagged. */
  vlanId = -1;
  /** VID of the second (inner, C-tag in QinQ) tag, -1 if fewer than two tags. */
  innerVlanId = -1;
  /** Offset of the IP header relative to the frame start, -1 if none. */
  l3Offset = -1;
  /** Offset of the upper-layer (L4) header relative to the frame start, -1 if not reached. */
  l4Offset = -1;
  /** True when a complete TCP or UDP header was found in a non-fragment. */
  hasPorts = false;
  /** IPv4 MF set or offset != 0; IPv6 fragment header with M set or offset != 0. */
  isFragment = false;
  /** IPv6 only: at least one extension header was present. */
  hasExtHeaders = false;
  hasHomeAddr = false;
  hasRt2Addr = false;

  /** Clear everything to "nothing parsed". Called by parseFlow. */
  reset(): void {
    this.l3 = 0;
    this.l4proto = 0;
    this.srcPort = 0;
    this.dstPort = 0;
    this.src4 = 0;
    this.dst4 = 0;
    this.ethertype = 0;
    this.vlanCount = 0;
    this.vlanId = -1;
    this.innerVlanId = -1;
    this.l3Offset = -1;
    this.l4Offset = -1;
    this.hasPorts = false;
    this.isFragment = false;
    this.hasExtHeaders = false;
    this.hasHomeAddr = false;
    this.hasRt2Addr = false;
  }

  /**
   * Turn the key into the one of the reply direction, in place: swaps
   * addresses and ports, and swaps the _EX addresses (a reply to a packet
   * carrying a Routing Header Type 2 carries the same address in a Home
   * Address option, and vice versa). Offsets are left alone.
   */
  reverse(): void {
    let t = this.src4;
    this.src4 = this.dst4;
    this.dst4 = t;
    t = this.srcPort;
    this.srcPort = this.dstPort;
    this.dstPort = t;
    swap4(this.src6, this.dst6);
    swap4(this.homeAddr6, this.rt2Addr6);
    const b = this.hasHomeAddr;
    this.hasHomeAddr = this.hasRt2Addr;
    this.hasRt2Addr = b;
  }

  /** Copy every field of `o` into this key (no allocation). */
  copyFrom(o: FlowKey): void {
    this.l3 = o.l3;
    this.l4proto = o.l4proto;
    this.srcPort = o.srcPort;
    this.dstPort = o.dstPort;
    this.src4 = o.src4;
    this.dst4 = o.dst4;
    this.src6.set(o.src6);
    this.dst6.set(o.dst6);
    this.homeAddr6.set(o.homeAddr6);
    this.rt2Addr6.set(o.rt2Addr6);
    this.ethertype = o.ethertype;
    this.vlanCount = o.vlanCount;
    this.vlanId = o.vlanId;
    this.innerVlanId = o.innerVlanId;
    this.l3Offset = o.l3Offset;
    this.l4Offset = o.l4Offset;
    this.hasPorts = o.hasPorts;
    this.isFragment = o.isFragment;
    this.hasExtHeaders = o.hasExtHeaders;
    this.hasHomeAddr = o.hasHomeAddr;
    this.hasRt2Addr = o.hasRt2Addr;
  }
}

function swap4(a: Uint32Array, b: Uint32Array): void {
  for (let i = 0; i < 4; i++) {
    const t = a[i]!;
    a[i] = b[i]!;
    b[i] = t;
  }
}

/**
 * Parse the Ethernet frame `frame[off .. off+len)` into `out` (which is reset
 * first).
 *
 * @returns true when an IPv4 or IPv6 header was parsed (`out.l3` is 4 or 6;
 *   L4 information may still be absent if truncated / fragmented / not
 *   TCP-UDP); false when the frame is not parsable beyond L2 (too short,
 *   non-IP ethertype, 802.3 length field, malformed IP header). On false,
 *   `ethertype` and the VLAN fields are still filled as far as they were read.
 *   Never throws; reads only inside `[off, off+len)` ∩ `[0, frame.length)`.
 */
export function parseFlow(frame: Uint8Array, off: number, len: number, out: FlowKey): boolean {
  out.reset();
  // Reject negative / non-integer / NaN bounds without throwing.
  if ((off >>> 0) !== off || (len >>> 0) !== len) return false;
  let end = off + len;
  if (end > frame.length) end = frame.length;
  if (end - off < ETH_HLEN) return false;
  const b = frame;
  let p = off + 12;
  let et = (b[p]! << 8) | b[p + 1]!;
  p += 2;
  for (let i = 0; i < 2; i++) {
    if (et !== ETH_P_8021Q && et !== ETH_P_8021AD && et !== ETH_P_QINQ_9100) break;
    if (p + 4 > end) {
      out.ethertype = et;
      return false;
    }
    const vid = ((b[p]! << 8) | b[p + 1]!) & 0xfff;
    if (i === 0) out.vlanId = vid;
    else out.innerVlanId = vid;
    out.vlanCount = i + 1;
    et = (b[p + 2]! << 8) | b[p + 3]!;
    p += 4;
  }
  out.ethertype = et;
  if (et === ETH_P_IPV4) return parseIPv4(b, off, p, end, out);
  if (et === ETH_P_IPV6) return parseIPv6(b, off, p, end, out);
  return false;
}

function parseIPv4(b: Uint8Array, base: number, p: number, end: number, out: FlowKey): boolean {
  if (p + 20 > end) return false;
  const vihl = b[p]!;
  if (vihl >>> 4 !== 4) return false;
  const hl = (vihl & 15) << 2;
  if (hl < 20 || p + hl > end) return false;
  const totLen = (b[p + 2]! << 8) | b[p + 3]!;
  let ipEnd: number;
  if (totLen === 0) {
    ipEnd = end; // TSO / BIG TCP super-packets may carry tot_len 0
  } else {
    if (totLen < hl) return false;
    ipEnd = p + totLen;
    if (ipEnd > end) ipEnd = end; // truncated capture: use what we have
  }
  out.l3 = 4;
  out.l3Offset = p - base;
  const proto = b[p + 9]!;
  out.l4proto = proto;
  out.src4 = ((b[p + 12]! << 24) | (b[p + 13]! << 16) | (b[p + 14]! << 8) | b[p + 15]!) >>> 0;
  out.dst4 = ((b[p + 16]! << 24) | (b[p + 17]! << 16) | (b[p + 18]! << 8) | b[p + 19]!) >>> 0;
  const frag = (b[p + 6]! << 8) | b[p + 7]!;
  if ((frag & 0x3fff) !== 0) {
    // MF (0x2000) or fragment offset (0x1fff) set.
    out.isFragment = true;
    if ((frag & 0x1fff) !== 0) return true; // non-first fragment: no L4 header
  }
  parseL4(b, base, p + hl, ipEnd, proto, out);
  return true;
}

function parseIPv6(b: Uint8Array, base: number, p: number, end: number, out: FlowKey): boolean {
  if (p + 40 > end) return false;
  if (b[p]! >>> 4 !== 6) return false;
  const plen = (b[p + 4]! << 8) | b[p + 5]!;
  let ipEnd = plen === 0 ? end : p + 40 + plen; // 0: jumbogram / BIG TCP
  if (ipEnd > end) ipEnd = end;
  out.l3 = 6;
  out.l3Offset = p - base;
  readAddr6(b, p + 8, out.src6);
  readAddr6(b, p + 24, out.dst6);
  let nh = b[p + 6]!;
  let q = p + 40;
  for (let n = 0; ; n++) {
    if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_DSTOPTS || nh === IPPROTO_ROUTING) {
      out.hasExtHeaders = true;
      if (n >= MAX_IPV6_EXT_HEADERS || q + 8 > ipEnd) break;
      const hlen = (b[q + 1]! + 1) << 3;
      if (q + hlen > ipEnd) break;
      if (nh === IPPROTO_ROUTING) {
        // RFC 6275 6.4: type 2, Hdr Ext Len 2, one address at offset 8.
        if (b[q + 2] === 2 && hlen >= 24 && !out.hasRt2Addr) {
          readAddr6(b, q + 8, out.rt2Addr6);
          out.hasRt2Addr = true;
        }
      } else if (nh === IPPROTO_DSTOPTS && !out.hasHomeAddr) {
        scanDestOpts(b, q + 2, q + hlen, out);
      }
      nh = b[q]!;
      q += hlen;
    } else if (nh === IPPROTO_FRAGMENT) {
      out.hasExtHeaders = true;
      if (n >= MAX_IPV6_EXT_HEADERS || q + 8 > ipEnd) break;
      const fo = (b[q + 2]! << 8) | b[q + 3]!;
      nh = b[q]!;
      q += 8;
      // Offset (0xfff8) or M (0x0001). An "atomic fragment" (both zero,
      // RFC 6946) is not a fragment.
      if ((fo & 0xfff9) !== 0) {
        out.isFragment = true;
        if ((fo & 0xfff8) !== 0) {
          out.l4proto = nh; // payload protocol, but no header here
          return true;
        }
      }
    } else if (nh === IPPROTO_AH) {
      out.hasExtHeaders = true;
      if (n >= MAX_IPV6_EXT_HEADERS || q + 8 > ipEnd) break;
      const hlen = (b[q + 1]! + 2) << 2;
      if (q + hlen > ipEnd) break;
      nh = b[q]!;
      q += hlen;
    } else {
      // Upper layer (or ESP / No Next Header, which have no ports).
      out.l4proto = nh;
      if (nh !== IPPROTO_NONE) parseL4(b, base, q, ipEnd, nh, out);
      return true;
    }
  }
  // Truncated / over-long extension chain: IP is known, L4 is not.
  out.l4proto = nh;
  return true;
}

/** Looks for the Home Address option in destination-options TLVs [q, qe). */
function scanDestOpts(b: Uint8Array, q: number, qe: number, out: FlowKey): void {
  while (q < qe) {
    const t = b[q]!;
    if (t === 0) {
      q++; // Pad1
      continue;
    }
    if (q + 2 > qe) return;
    const ol = b[q + 1]!;
    if (t === IPV6_TLV_HAO && ol === 16 && q + 18 <= qe) {
      readAddr6(b, q + 2, out.homeAddr6);
      out.hasHomeAddr = true;
      return;
    }
    q += 2 + ol;
  }
}

function parseL4(b: Uint8Array, base: number, p: number, ipEnd: number, proto: number, out: FlowKey): void {
  if (p >= ipEnd) return;
  out.l4Offset = p - base;
  if (out.isFragment) return; // first fragment: header present, ports not used
  if (proto === IPPROTO_TCP) {
    if (p + 20 > ipEnd) return;
  } else if (proto === IPPROTO_UDP) {
    if (p + 8 > ipEnd) return;
  } else {
    return;
  }
  out.srcPort = (b[p]! << 8) | b[p + 1]!;
  out.dstPort = (b[p + 2]! << 8) | b[p + 3]!;
  out.hasPorts = true;
}

function readAddr6(b: Uint8Array, p: number, dst: Uint32Array): void {
  dst[0] = (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
  dst[1] = (b[p + 4]! << 24) | (b[p + 5]! << 16) | (b[p + 6]! << 8) | b[p + 7]!;
  dst[2] = (b[p + 8]! << 24) | (b[p + 9]! << 16) | (b[p + 10]! << 8) | b[p + 11]!;
  dst[3] = (b[p + 12]! << 24) | (b[p + 13]! << 16) | (b[p + 14]! << 8) | b[p + 15]!;
}
