/**
 * struct virtio_net_hdr, the header in front of every packet on the transmit
 * and receive queues (spec §5.1.6 "Device Operation").
 *
 * Byte layout (all multi-byte fields little-endian; the legacy interface's
 * guest-native endianness is assumed to be little-endian too):
 *
 * | off | size | field             | present when                                   |
 * |-----|------|-------------------|------------------------------------------------|
 * |  0  |  1   | flags             | always                                         |
 * |  1  |  1   | gso_type          | always                                         |
 * |  2  |  2   | hdr_len           | always                                         |
 * |  4  |  2   | gso_size          | always                                         |
 * |  6  |  2   | csum_start        | always                                         |
 * |  8  |  2   | csum_offset       | always                                         |
 * | 10  |  2   | num_buffers       | VERSION_1 or MRG_RXBUF (header ≥ 12 bytes)      |
 * | 12  |  4   | hash_value        | HASH_REPORT (header ≥ 20 bytes)                 |
 * | 16  |  2   | hash_report       | HASH_REPORT                                    |
 * | 18  |  2   | padding_reserved  | HASH_REPORT                                    |
 * | 20  |  2   | outer_th_offset   | HOST/GUEST_UDP_TUNNEL_GSO (header ≥ 24 bytes)   |
 * | 22  |  2   | inner_nh_offset   | HOST/GUEST_UDP_TUNNEL_GSO                       |
 * | 24  |  2   | outer_nh_offset   | OUT_NET_HEADER or IPSEC (header = 32 bytes)     |
 * | 26  |  6   | padding_reserved_2 / ipsec_resource_hdr {le32 resource_id, le16 resource_type} |
 *
 * The header size is cumulative: a larger variant contains every field of
 * the smaller ones (spec "Setting Up Receive Buffers": "consider all the
 * fields inclusive up to …"). Sizes: 10, 12, 20, 24 or 32 bytes
 * ({@link netHdrSize}).
 *
 * Everything below except {@link netHdrSize} is allocation-free and meant for
 * the per-packet path. Errors (bad size, header running past the buffer) are
 * thrown as RangeError before any byte is touched.
 */
import {
  VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO,
  VIRTIO_NET_F_IPSEC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_OUT_NET_HEADER,
} from './features.js';
import { VIRTIO_F_VERSION_1 } from '../virtio/features.js';

// flags (u8 at offset 0)
/** flags: the packet needs a checksum at `csum_start + csum_offset` (TX), or has a partial one (RX). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** flags (RX): the device validated the packet checksum. */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** flags (RX, RSC_EXT): csum_start/csum_offset carry coalesced segments / duplicated ACKs. */
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
/** flags: the outer UDP checksum of a UDP-tunnelled packet is partial / validated. */
export const VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM = 8;
/** flags (IPSEC): packet subject to inline IPsec. */
export const VIRTIO_NET_HDR_F_SECURITY = 16;
/** flags (IPSEC): IPsec processing failed. */
export const VIRTIO_NET_HDR_F_SECURITY_ERR = 32;
/** flags (IPSEC): the SA reached its soft expiry. */
export const VIRTIO_NET_HDR_F_SECURITY_SA_SOFT_EXPIRY_WARN = 64;

// gso_type (u8 at offset 1)
/** gso_type: not a GSO packet. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
/** gso_type: TCP over IPv4 segmentation. */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** gso_type: UDP fragmentation offload (UFO). */
export const VIRTIO_NET_HDR_GSO_UDP = 3;
/** gso_type: TCP over IPv6 segmentation. */
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** gso_type: UDP segmentation offload (USO). */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** gso_type bit: GSO packet inside a UDP tunnel over IPv4. */
export const VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4 = 0x20;
/** gso_type bit: GSO packet inside a UDP tunnel over IPv6. */
export const VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6 = 0x40;
/** gso_type bit: TCP segments carry ECN (CWR). */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

// hash_report (le16 at offset 16), spec "Hash reporting for incoming packets".
// VIRTIO_NET_HASH_TYPE_x === 1 << (VIRTIO_NET_HASH_REPORT_x - 1).
export {
  VIRTIO_NET_HASH_REPORT_NONE, VIRTIO_NET_HASH_REPORT_IPv4, VIRTIO_NET_HASH_REPORT_TCPv4, VIRTIO_NET_HASH_REPORT_UDPv4,
  VIRTIO_NET_HASH_REPORT_IPv6, VIRTIO_NET_HASH_REPORT_TCPv6, VIRTIO_NET_HASH_REPORT_UDPv6, VIRTIO_NET_HASH_REPORT_IPv6_EX,
  VIRTIO_NET_HASH_REPORT_TCPv6_EX, VIRTIO_NET_HASH_REPORT_UDPv6_EX,
} from './rss.js';
import { VIRTIO_NET_HASH_REPORT_NONE } from './rss.js';

/** Header sizes in bytes. */
export const NET_HDR_SIZE_LEGACY = 10;
export const NET_HDR_SIZE_MRG = 12;
export const NET_HDR_SIZE_HASH = 20;
export const NET_HDR_SIZE_TUNNEL = 24;
export const NET_HDR_SIZE_OUTER_NH = 32;

/** Byte offsets of the fields. */
export const NetHdrOffset = {
  flags: 0,
  gsoType: 1,
  hdrLen: 2,
  gsoSize: 4,
  csumStart: 6,
  csumOffset: 8,
  numBuffers: 10,
  hashValue: 12,
  hashReport: 16,
  paddingReserved: 18,
  outerThOffset: 20,
  innerNhOffset: 22,
  outerNhOffset: 24,
  ipsecResourceId: 26,
  ipsecResourceType: 30,
} as const;

/**
 * Size in bytes of struct virtio_net_hdr for negotiated features `f`:
 * 32 with OUT_NET_HEADER or IPSEC; else 24 with HOST_ or GUEST_UDP_TUNNEL_GSO;
 * else 20 with HASH_REPORT; else 12 with VERSION_1 or MRG_RXBUF; else 10
 * (legacy without MRG_RXBUF). Same precedence as the Linux driver.
 */
export function netHdrSize(f: bigint): number {
  if (f & (VIRTIO_NET_F_OUT_NET_HEADER | VIRTIO_NET_F_IPSEC)) return NET_HDR_SIZE_OUTER_NH;
  if (f & (VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO | VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO)) return NET_HDR_SIZE_TUNNEL;
  if (f & VIRTIO_NET_F_HASH_REPORT) return NET_HDR_SIZE_HASH;
  if (f & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF)) return NET_HDR_SIZE_MRG;
  return NET_HDR_SIZE_LEGACY;
}

/** True for the five valid header sizes. */
export function isNetHdrSize(size: number): boolean {
  return size === 10 || size === 12 || size === 20 || size === 24 || size === 32;
}

function check(len: number, off: number, size: number): void {
  if (!isNetHdrSize(size)) throw new RangeError(`invalid virtio_net_hdr size ${size}`);
  if (!Number.isInteger(off) || off < 0 || off + size > len) {
    throw new RangeError(`virtio_net_hdr [${off}, +${size}) outside buffer of ${len} bytes`);
  }
}

/** The header fields, as plain numbers. Fields absent from a smaller header read as their defaults. */
export interface NetHdrFields {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  /** 1 when the header has no num_buffers field (10-byte legacy header). */
  numBuffers: number;
  hashValue: number;
  hashReport: number;
  outerThOffset: number;
  innerNhOffset: number;
  outerNhOffset: number;
  ipsecResourceId: number;
  ipsecResourceType: number;
}

const rd16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const rd32 = (b: Uint8Array, o: number): number =>
  (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
const wr16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v;
  b[o + 1] = v >>> 8;
};
const wr32 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
};

/**
 * Decode a `size`-byte header at `buf[off..]` into `out` (every field is
 * assigned; absent fields get 0, `numBuffers` gets 1). Returns `out`.
 * Throws RangeError for an invalid size or an out-of-bounds header.
 */
export function readNetHdr<T extends NetHdrFields>(buf: Uint8Array, off: number, size: number, out: T): T {
  check(buf.length, off, size);
  out.flags = buf[off]!;
  out.gsoType = buf[off + 1]!;
  out.hdrLen = rd16(buf, off + 2);
  out.gsoSize = rd16(buf, off + 4);
  out.csumStart = rd16(buf, off + 6);
  out.csumOffset = rd16(buf, off + 8);
  out.numBuffers = size >= 12 ? rd16(buf, off + 10) : 1;
  if (size >= 20) {
    out.hashValue = rd32(buf, off + 12);
    out.hashReport = rd16(buf, off + 16);
  } else {
    out.hashValue = 0;
    out.hashReport = 0;
  }
  if (size >= 24) {
    out.outerThOffset = rd16(buf, off + 20);
    out.innerNhOffset = rd16(buf, off + 22);
  } else {
    out.outerThOffset = 0;
    out.innerNhOffset = 0;
  }
  if (size >= 32) {
    out.outerNhOffset = rd16(buf, off + 24);
    out.ipsecResourceId = rd32(buf, off + 26);
    out.ipsecResourceType = rd16(buf, off + 30);
  } else {
    out.outerNhOffset = 0;
    out.ipsecResourceId = 0;
    out.ipsecResourceType = 0;
  }
  return out;
}

/**
 * Encode `h` as a `size`-byte header at `buf[off..]`. Fields that do not fit
 * the size are not written; reserved padding (offset 18, and 26..31 unless an
 * ipsec resource is set) is written as given / zero. Values are truncated to
 * their field width (u8/u16/u32). Throws RangeError for an invalid size or an
 * out-of-bounds header.
 */
export function writeNetHdr(buf: Uint8Array, off: number, size: number, h: Readonly<NetHdrFields>): void {
  check(buf.length, off, size);
  buf[off] = h.flags;
  buf[off + 1] = h.gsoType;
  wr16(buf, off + 2, h.hdrLen);
  wr16(buf, off + 4, h.gsoSize);
  wr16(buf, off + 6, h.csumStart);
  wr16(buf, off + 8, h.csumOffset);
  if (size >= 12) wr16(buf, off + 10, h.numBuffers);
  if (size >= 20) {
    wr32(buf, off + 12, h.hashValue);
    wr16(buf, off + 16, h.hashReport);
    wr16(buf, off + 18, 0);
  }
  if (size >= 24) {
    wr16(buf, off + 20, h.outerThOffset);
    wr16(buf, off + 22, h.innerNhOffset);
  }
  if (size >= 32) {
    wr16(buf, off + 24, h.outerNhOffset);
    wr32(buf, off + 26, h.ipsecResourceId);
    wr16(buf, off + 30, h.ipsecResourceType);
  }
}

/**
 * Zero a `size`-byte header at `buf[off..]` and, when the header has a
 * num_buffers field, set it to `numBuffers` (default 1): the usual RX header
 * for a packet without offloads. Throws RangeError like {@link writeNetHdr}.
 */
export function clearNetHdr(buf: Uint8Array, off: number, size: number, numBuffers = 1): void {
  check(buf.length, off, size);
  buf.fill(0, off, off + size);
  if (size >= 12) wr16(buf, off + 10, numBuffers);
}

/** flags (u8, offset 0) of the header at `buf[off..]`. No size check beyond the buffer. */
export function getNetHdrFlags(buf: Uint8Array, off: number): number {
  if (off < 0 || off + 1 > buf.length) throw new RangeError('virtio_net_hdr outside buffer');
  return buf[off]!;
}

/** gso_type (u8, offset 1). */
export function getNetHdrGsoType(buf: Uint8Array, off: number): number {
  if (off < 0 || off + 2 > buf.length) throw new RangeError('virtio_net_hdr outside buffer');
  return buf[off + 1]!;
}

/** num_buffers (le16, offset 10); needs a ≥12-byte header. */
export function getNumBuffers(buf: Uint8Array, off: number): number {
  if (off < 0 || off + 12 > buf.length) throw new RangeError('virtio_net_hdr num_buffers outside buffer');
  return rd16(buf, off + 10);
}

/** Set num_buffers (le16, offset 10), e.g. after a mergeable RX packet's last buffer is filled. */
export function setNumBuffers(buf: Uint8Array, off: number, n: number): void {
  if (off < 0 || off + 12 > buf.length) throw new RangeError('virtio_net_hdr num_buffers outside buffer');
  wr16(buf, off + 10, n);
}

/** Set hash_value (le32, offset 12) and hash_report (le16, offset 16); needs a ≥20-byte header. */
export function setNetHdrHash(buf: Uint8Array, off: number, hashValue: number, hashReport: number): void {
  if (off < 0 || off + 20 > buf.length) throw new RangeError('virtio_net_hdr hash fields outside buffer');
  wr32(buf, off + 12, hashValue);
  wr16(buf, off + 16, hashReport);
  wr16(buf, off + 18, 0);
}

function checkView(dv: DataView, off: number, size: number): void {
  check(dv.byteLength, off, size);
}

/** {@link readNetHdr} on a DataView (`off` is relative to the view). */
export function readNetHdrView<T extends NetHdrFields>(dv: DataView, off: number, size: number, out: T): T {
  checkView(dv, off, size);
  out.flags = dv.getUint8(off);
  out.gsoType = dv.getUint8(off + 1);
  out.hdrLen = dv.getUint16(off + 2, true);
  out.gsoSize = dv.getUint16(off + 4, true);
  out.csumStart = dv.getUint16(off + 6, true);
  out.csumOffset = dv.getUint16(off + 8, true);
  out.numBuffers = size >= 12 ? dv.getUint16(off + 10, true) : 1;
  out.hashValue = size >= 20 ? dv.getUint32(off + 12, true) : 0;
  out.hashReport = size >= 20 ? dv.getUint16(off + 16, true) : 0;
  out.outerThOffset = size >= 24 ? dv.getUint16(off + 20, true) : 0;
  out.innerNhOffset = size >= 24 ? dv.getUint16(off + 22, true) : 0;
  out.outerNhOffset = size >= 32 ? dv.getUint16(off + 24, true) : 0;
  out.ipsecResourceId = size >= 32 ? dv.getUint32(off + 26, true) : 0;
  out.ipsecResourceType = size >= 32 ? dv.getUint16(off + 30, true) : 0;
  return out;
}

/** {@link writeNetHdr} on a DataView (`off` is relative to the view). */
export function writeNetHdrView(dv: DataView, off: number, size: number, h: Readonly<NetHdrFields>): void {
  checkView(dv, off, size);
  dv.setUint8(off, h.flags);
  dv.setUint8(off + 1, h.gsoType);
  dv.setUint16(off + 2, h.hdrLen, true);
  dv.setUint16(off + 4, h.gsoSize, true);
  dv.setUint16(off + 6, h.csumStart, true);
  dv.setUint16(off + 8, h.csumOffset, true);
  if (size >= 12) dv.setUint16(off + 10, h.numBuffers, true);
  if (size >= 20) {
    dv.setUint32(off + 12, h.hashValue, true);
    dv.setUint16(off + 16, h.hashReport, true);
    dv.setUint16(off + 18, 0, true);
  }
  if (size >= 24) {
    dv.setUint16(off + 20, h.outerThOffset, true);
    dv.setUint16(off + 22, h.innerNhOffset, true);
  }
  if (size >= 32) {
    dv.setUint16(off + 24, h.outerNhOffset, true);
    dv.setUint32(off + 26, h.ipsecResourceId, true);
    dv.setUint16(off + 30, h.ipsecResourceType, true);
  }
}

/**
 * A reusable, mutable header: allocate one per queue and {@link NetHdr.readFrom}
 * / {@link NetHdr.writeTo} per packet without allocating. `size` is the
 * negotiated header size ({@link netHdrSize}); it can be changed.
 */
export class NetHdr implements NetHdrFields {
  flags = 0;
  gsoType = VIRTIO_NET_HDR_GSO_NONE;
  hdrLen = 0;
  gsoSize = 0;
  csumStart = 0;
  csumOffset = 0;
  numBuffers = 1;
  hashValue = 0;
  hashReport = VIRTIO_NET_HASH_REPORT_NONE;
  outerThOffset = 0;
  innerNhOffset = 0;
  outerNhOffset = 0;
  ipsecResourceId = 0;
  ipsecResourceType = 0;
  size: number;

  /** Throws RangeError unless `size` is 10, 12, 20, 24 or 32. */
  constructor(size: number = NET_HDR_SIZE_MRG) {
    if (!isNetHdrSize(size)) throw new RangeError(`invalid virtio_net_hdr size ${size}`);
    this.size = size;
  }

  /** A header sized for negotiated features `f`. */
  static forFeatures(f: bigint): NetHdr {
    return new NetHdr(netHdrSize(f));
  }

  /** Reset every field to its default (no offloads, num_buffers 1). Returns this. */
  reset(): this {
    this.flags = 0;
    this.gsoType = VIRTIO_NET_HDR_GSO_NONE;
    this.hdrLen = 0;
    this.gsoSize = 0;
    this.csumStart = 0;
    this.csumOffset = 0;
    this.numBuffers = 1;
    this.hashValue = 0;
    this.hashReport = VIRTIO_NET_HASH_REPORT_NONE;
    this.outerThOffset = 0;
    this.innerNhOffset = 0;
    this.outerNhOffset = 0;
    this.ipsecResourceId = 0;
    this.ipsecResourceType = 0;
    return this;
  }

  /** Decode from `buf[off..off+size)`. Throws RangeError when out of bounds. */
  readFrom(buf: Uint8Array, off: number): this {
    return readNetHdr(buf, off, this.size, this);
  }

  /** Encode into `buf[off..off+size)`. Throws RangeError when out of bounds. */
  writeTo(buf: Uint8Array, off: number): void {
    writeNetHdr(buf, off, this.size, this);
  }

  /** Decode from a DataView at `off`. */
  readFromView(dv: DataView, off: number): this {
    return readNetHdrView(dv, off, this.size, this);
  }

  /** Encode into a DataView at `off`. */
  writeToView(dv: DataView, off: number): void {
    writeNetHdrView(dv, off, this.size, this);
  }

  /** True when NEEDS_CSUM is set. */
  get needsCsum(): boolean {
    return (this.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
  }

  /** True when DATA_VALID is set. */
  get dataValid(): boolean {
    return (this.flags & VIRTIO_NET_HDR_F_DATA_VALID) !== 0;
  }

  /** gso_type without the ECN and UDP tunnel modifier bits. */
  get gsoProtocol(): number {
    return this.gsoType & ~(VIRTIO_NET_HDR_GSO_ECN | VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4 | VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6);
  }
}
