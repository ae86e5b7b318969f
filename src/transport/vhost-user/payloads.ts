/**
 * Codecs for the vhost-user header and for each payload layout of the spec
 * section "Message Specification" / "Payload".
 *
 * Byte order: the spec says "machine native byte order"; every peer this
 * project talks to (QEMU, DPDK, rust-vmm) runs on a little-endian host, so
 * this codec is little-endian throughout and does not support big-endian
 * hosts. All offsets below are byte offsets from the start of the payload
 * (i.e. after the 12-byte header).
 *
 * 64-bit values: feature masks, IOTLB fields and opaque ids are `bigint`.
 * Addresses, sizes and offsets are decoded to JS numbers and refused with
 * `UNSAFE_INTEGER` when they (or, for a range, its end) exceed
 * `Number.MAX_SAFE_INTEGER` (2^53 - 1): user-space virtual addresses on
 * x86-64/arm64 are below 2^48 (2^57 with 5-level paging would still be far
 * from any real mapping), file offsets and sizes of guest RAM are far below
 * 2^53, and a number keeps the rest of the code free of bigint arithmetic.
 * Ranges that wrap past 2^64 are refused with `BAD_FIELD` before that check.
 *
 * Decoders take the exact payload bytes and an optional error context (the
 * request code, NEED_REPLY flag and fds of the enclosing message) that is
 * copied into any {@link VhostUserProtocolError} they throw, so the catcher
 * can close the fds. Encoders validate their inputs and throw `RangeError` on
 * values that do not fit the wire format.
 */

import {
  VHOST_USER_CONFIG_HDR_SIZE,
  VHOST_USER_HEADER_SIZE,
  VHOST_USER_MAX_CONFIG_SIZE,
  VHOST_USER_VRING_IDX_MASK,
  VHOST_USER_VRING_NOFD_MASK,
  VHOST_MEMORY_BASELINE_NREGIONS,
} from './constants.js';
import { VhostUserProtocolError, type VhostUserErrorCode, type VhostUserProtocolErrorInit } from './errors.js';

/** Error context of a decode: copied into every error thrown (see errors.ts for fd ownership). */
export type DecodeContext = VhostUserProtocolErrorInit;

const U64_MAX = (1n << 64n) - 1n;
const SAFE_MAX = BigInt(Number.MAX_SAFE_INTEGER);

/** @internal Throw a VhostUserProtocolError carrying `ctx`. */
export function fail(ctx: DecodeContext | undefined, code: VhostUserErrorCode, message: string): never {
  throw new VhostUserProtocolError(code, message, ctx);
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** @internal Refuse a payload whose length is not `size`. */
export function expectLength(bytes: Uint8Array, size: number, what: string, ctx?: DecodeContext): void {
  if (bytes.byteLength !== size) fail(ctx, 'BAD_SIZE', `${what} payload is ${bytes.byteLength} bytes, expected ${size}`);
}

/** @internal u64 → number, refusing values above 2^53 - 1. */
export function safeNumber(v: bigint, what: string, ctx?: DecodeContext): number {
  if (v > SAFE_MAX) fail(ctx, 'UNSAFE_INTEGER', `${what} 0x${v.toString(16)} exceeds 2^53-1`);
  return Number(v);
}

/**
 * @internal Validate the range [base, base + size) of a u64 base and size: it must
 * not wrap past 2^64 (`BAD_FIELD`, same rule as DPDK: base + size >= 2^64
 * is refused) and its end must be a safe integer (`UNSAFE_INTEGER`).
 */
export function checkRange(base: bigint, size: bigint, what: string, ctx?: DecodeContext): void {
  if (base + size > U64_MAX) {
    fail(ctx, 'BAD_FIELD', `${what} 0x${base.toString(16)} + size 0x${size.toString(16)} wraps past 2^64`);
  }
  if (base + size > SAFE_MAX) {
    fail(ctx, 'UNSAFE_INTEGER', `${what} 0x${base.toString(16)} + size 0x${size.toString(16)} exceeds 2^53-1`);
  }
}

// ---------------------------------------------------------------------------
// Writers (RangeError on values that do not fit)
// ---------------------------------------------------------------------------

function checkUint(v: number, bits: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 2 ** bits - 1) throw new RangeError(`${what} ${v} is not a u${bits}`);
}

/** @internal */
export function putU8(dv: DataView, off: number, v: number, what: string): void {
  checkUint(v, 8, what);
  dv.setUint8(off, v);
}
/** @internal */
export function putU16(dv: DataView, off: number, v: number, what: string): void {
  checkUint(v, 16, what);
  dv.setUint16(off, v, true);
}
/** @internal */
export function putU32(dv: DataView, off: number, v: number, what: string): void {
  checkUint(v, 32, what);
  dv.setUint32(off, v, true);
}
/** @internal Write a u64 given as a bigint (0..2^64-1) or a safe non-negative integer. */
export function putU64(dv: DataView, off: number, v: bigint | number, what: string): void {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} ${v} is not a non-negative safe integer`);
    v = BigInt(v);
  }
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what} ${v} is not a u64`);
  dv.setBigUint64(off, v, true);
}

// ---------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------

/** The 12-byte message header (spec "Header"). */
export interface VhostUserHeader {
  /** @0 u32: request code (front-end or back-end request space, depending on the channel). */
  request: number;
  /** @4 u32: bits 0-1 version (1), bit 2 REPLY, bit 3 NEED_REPLY; the rest reserved. */
  flags: number;
  /** @8 u32: payload size in bytes. */
  size: number;
}

/**
 * Read a header (request u32 @0, flags u32 @4, size u32 @8, little-endian)
 * at `offset`. Pure parsing: no field is validated here (see decodeRequest /
 * decodeReply and the framer's size limit). RangeError if fewer than 12
 * bytes are available.
 */
export function decodeHeader(bytes: Uint8Array, offset = 0): VhostUserHeader {
  if (!Number.isInteger(offset) || offset < 0 || bytes.byteLength - offset < VHOST_USER_HEADER_SIZE) {
    throw new RangeError(`need ${VHOST_USER_HEADER_SIZE} header bytes at offset ${offset}, have ${bytes.byteLength - offset}`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, VHOST_USER_HEADER_SIZE);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

/** Write a header into a new 12-byte array (or into `target` at `offset`). RangeError if a field is not a u32. */
export function encodeHeader(header: VhostUserHeader, target?: Uint8Array, offset = 0): Uint8Array {
  const out = target ?? new Uint8Array(VHOST_USER_HEADER_SIZE);
  if (out.byteLength - offset < VHOST_USER_HEADER_SIZE) throw new RangeError('header does not fit in target');
  const dv = new DataView(out.buffer, out.byteOffset + offset, VHOST_USER_HEADER_SIZE);
  putU32(dv, 0, header.request, 'header request');
  putU32(dv, 4, header.flags, 'header flags');
  putU32(dv, 8, header.size, 'header size');
  return out;
}

// ---------------------------------------------------------------------------
// A single 64-bit integer (spec "A single 64-bit integer")
// ---------------------------------------------------------------------------

/** Size of the u64 payload. */
export const U64_PAYLOAD_SIZE = 8;

/** Decode the u64 payload (@0, 8 bytes). */
export function decodeU64(bytes: Uint8Array, ctx?: DecodeContext): bigint {
  expectLength(bytes, U64_PAYLOAD_SIZE, 'u64', ctx);
  return view(bytes).getBigUint64(0, true);
}

/** Encode the u64 payload. */
export function encodeU64(value: bigint | number): Uint8Array {
  const out = new Uint8Array(U64_PAYLOAD_SIZE);
  putU64(view(out), 0, value, 'u64');
  return out;
}

/** The u64 of SET_VRING_KICK / SET_VRING_CALL / SET_VRING_ERR: vring index (bits 0-7) and the NOFD flag (bit 8). */
export interface VhostVringFile {
  /** Bits 0-7: vring index (0..255). */
  index: number;
  /** Bit 8 (`VHOST_USER_VRING_NOFD_MASK`): no fd is attached; the back-end polls (kick) / the front-end polls (call). */
  noFd: boolean;
}

/**
 * Split a vring-file u64 into index and NOFD flag; any bit above 8 is
 * reserved and refused (`BAD_FIELD`), as rust-vmm does.
 */
export function decodeVringFileU64(value: bigint, ctx?: DecodeContext): VhostVringFile {
  if ((value & ~BigInt(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) !== 0n) {
    fail(ctx, 'BAD_FIELD', `vring u64 0x${value.toString(16)} has reserved bits set (only bits 0-8 are defined)`);
  }
  return { index: Number(value & BigInt(VHOST_USER_VRING_IDX_MASK)), noFd: (value & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n };
}

/** Build a vring-file u64 (index 0..255, NOFD bit). */
export function encodeVringFileU64(file: VhostVringFile): bigint {
  checkUint(file.index, 8, 'vring index');
  return BigInt(file.index) | (file.noFd ? BigInt(VHOST_USER_VRING_NOFD_MASK) : 0n);
}

// ---------------------------------------------------------------------------
// Vring state (spec "A vring state description")
// ---------------------------------------------------------------------------

/** Size of a vring state payload. */
export const VRING_STATE_SIZE = 8;

/**
 * Vring state: index u32 @0, num u32 @4. For SET/GET_VRING_BASE `num` is the
 * descriptor index: split rings use bits 0-15 (next avail index); packed
 * rings use bits 0-14 avail index, bit 15 avail wrap counter, bits 16-30 used
 * index, bit 31 used wrap counter (upstream spec "vring descriptor
 * index/indices"). This codec returns `num` raw.
 */
export interface VhostVringState {
  /** @0 u32: vring index, raw (the caller checks it against its queue count). */
  index: number;
  /** @4 u32 */
  num: number;
}

export function decodeVringState(bytes: Uint8Array, ctx?: DecodeContext): VhostVringState {
  expectLength(bytes, VRING_STATE_SIZE, 'vring state', ctx);
  const dv = view(bytes);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}

export function encodeVringState(state: VhostVringState): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const dv = view(out);
  putU32(dv, 0, state.index, 'vring index');
  putU32(dv, 4, state.num, 'vring num');
  return out;
}

// ---------------------------------------------------------------------------
// Vring address (spec "A vring address description")
// ---------------------------------------------------------------------------

/**
 * Size of a vring address payload: `struct vhost_vring_addr`, 40 bytes. The
 * spec's table shows a "size" column between flags and descriptor, but no
 * such field exists in the struct that QEMU, DPDK and Linux use (its field
 * list does not describe one either); 40 is what every implementation sends.
 */
export const VRING_ADDR_SIZE = 40;

/** Vring address: index u32 @0, flags u32 @4, desc u64 @8, used u64 @16, avail u64 @24, log u64 @32. */
export interface VhostVringAddr {
  /** @0 u32: vring index, raw. */
  index: number;
  /** @4 u32: bit 0 = VHOST_VRING_F_LOG (log used-ring writes); other bits refused. */
  flags: number;
  /** @8 u64: descriptor table, a front-end user address (an IOVA with VIRTIO_F_IOMMU_PLATFORM). */
  descUserAddr: number;
  /** @16 u64: used ring address. */
  usedUserAddr: number;
  /** @24 u64: available ring address. */
  availUserAddr: number;
  /** @32 u64: guest physical address used for used-ring dirty logging. */
  logGuestAddr: number;
}

export function decodeVringAddr(bytes: Uint8Array, ctx?: DecodeContext): VhostVringAddr {
  expectLength(bytes, VRING_ADDR_SIZE, 'vring address', ctx);
  const dv = view(bytes);
  const flags = dv.getUint32(4, true);
  if ((flags & ~1) !== 0) fail(ctx, 'BAD_FIELD', `vring address flags 0x${flags.toString(16)}: only bit 0 (VHOST_VRING_F_LOG) is defined`);
  return {
    index: dv.getUint32(0, true),
    flags,
    descUserAddr: safeNumber(dv.getBigUint64(8, true), 'desc_user_addr', ctx),
    usedUserAddr: safeNumber(dv.getBigUint64(16, true), 'used_user_addr', ctx),
    availUserAddr: safeNumber(dv.getBigUint64(24, true), 'avail_user_addr', ctx),
    logGuestAddr: safeNumber(dv.getBigUint64(32, true), 'log_guest_addr', ctx),
  };
}

export function encodeVringAddr(addr: VhostVringAddr): Uint8Array {
  const out = new Uint8Array(VRING_ADDR_SIZE);
  const dv = view(out);
  putU32(dv, 0, addr.index, 'vring index');
  putU32(dv, 4, addr.flags, 'vring flags');
  putU64(dv, 8, addr.descUserAddr, 'desc_user_addr');
  putU64(dv, 16, addr.usedUserAddr, 'used_user_addr');
  putU64(dv, 24, addr.availUserAddr, 'avail_user_addr');
  putU64(dv, 32, addr.logGuestAddr, 'log_guest_addr');
  return out;
}

// ---------------------------------------------------------------------------
// Memory regions (spec "Memory regions description", "Single memory region description")
// ---------------------------------------------------------------------------

/** Size of one memory region description. */
export const MEMORY_REGION_SIZE = 32;
/** Size of the memory table's fixed part (nregions u32, padding u32). */
export const MEMORY_TABLE_HDR_SIZE = 8;
/** Size of the single-region payload of ADD_MEM_REG / REM_MEM_REG: padding u64 + one region. */
export const SINGLE_MEMORY_REGION_SIZE = 8 + MEMORY_REGION_SIZE;

/**
 * A memory region: guest_addr u64 @0, size u64 @8, user_addr u64 @16,
 * mmap_offset u64 @24 (offsets relative to the region). Decoding guarantees
 * size > 0, and that guestAddr + size, userAddr + size and mmapOffset + size
 * neither wrap past 2^64 (`BAD_FIELD`) nor exceed 2^53 - 1 (`UNSAFE_INTEGER`).
 */
export interface VhostUserMemoryRegionDesc {
  /** @0 u64: guest physical address of the region. */
  guestAddr: number;
  /** @8 u64: size in bytes (> 0). */
  size: number;
  /** @16 u64: the front-end's user (virtual) address of the region. */
  userAddr: number;
  /** @24 u64: offset of the region in the fd to mmap. */
  mmapOffset: number;
}

/** A memory region together with the fd it is mapped from. */
export interface VhostUserMemoryRegion extends VhostUserMemoryRegionDesc {
  /** The fd (received via SCM_RIGHTS) to mmap; owned by the message's receiver. */
  fd: number;
}

/** @internal Decode one region at `off` of `dv`, validating it. */
export function readMemoryRegion(dv: DataView, off: number, what: string, ctx?: DecodeContext): VhostUserMemoryRegionDesc {
  const guest = dv.getBigUint64(off, true);
  const size = dv.getBigUint64(off + 8, true);
  const user = dv.getBigUint64(off + 16, true);
  const mmapOffset = dv.getBigUint64(off + 24, true);
  if (size === 0n) fail(ctx, 'BAD_FIELD', `${what} has size 0`);
  checkRange(guest, size, `${what} guest_addr`, ctx);
  checkRange(user, size, `${what} user_addr`, ctx);
  checkRange(mmapOffset, size, `${what} mmap_offset`, ctx);
  return { guestAddr: Number(guest), size: Number(size), userAddr: Number(user), mmapOffset: Number(mmapOffset) };
}

/** @internal */
export function writeMemoryRegion(dv: DataView, off: number, r: VhostUserMemoryRegionDesc): void {
  putU64(dv, off, r.guestAddr, 'guest_addr');
  putU64(dv, off + 8, r.size, 'region size');
  putU64(dv, off + 16, r.userAddr, 'user_addr');
  putU64(dv, off + 24, r.mmapOffset, 'mmap_offset');
}

/** Refuse regions that overlap in guest physical space (`BAD_FIELD`). */
export function checkNoGuestOverlap(regions: readonly VhostUserMemoryRegionDesc[], ctx?: DecodeContext): void {
  const sorted = regions.map((r, i) => ({ r, i })).sort((a, b) => a.r.guestAddr - b.r.guestAddr);
  for (let k = 1; k < sorted.length; k++) {
    const prev = sorted[k - 1]!;
    const cur = sorted[k]!;
    if (prev.r.guestAddr + prev.r.size > cur.r.guestAddr) {
      fail(
        ctx,
        'BAD_FIELD',
        `memory regions ${prev.i} [0x${prev.r.guestAddr.toString(16)}+0x${prev.r.size.toString(16)}) and ` +
          `${cur.i} [0x${cur.r.guestAddr.toString(16)}+0x${cur.r.size.toString(16)}) overlap in guest physical space`,
      );
    }
  }
}

/**
 * Decode a memory table: nregions u32 @0, padding u32 @4 (ignored), then
 * nregions regions of 32 bytes from @8. Requires 1 <= nregions <= 8
 * (`BAD_FIELD`), a payload of exactly 8 + 32 * nregions bytes (`BAD_SIZE`),
 * valid regions, and no guest-physical overlap.
 */
export function decodeMemoryTable(bytes: Uint8Array, ctx?: DecodeContext): VhostUserMemoryRegionDesc[] {
  if (bytes.byteLength < MEMORY_TABLE_HDR_SIZE) {
    fail(ctx, 'BAD_SIZE', `memory table payload is ${bytes.byteLength} bytes, need at least ${MEMORY_TABLE_HDR_SIZE}`);
  }
  const dv = view(bytes);
  const n = dv.getUint32(0, true);
  if (n < 1 || n > VHOST_MEMORY_BASELINE_NREGIONS) {
    fail(ctx, 'BAD_FIELD', `memory table nregions ${n} not in 1..${VHOST_MEMORY_BASELINE_NREGIONS}`);
  }
  expectLength(bytes, MEMORY_TABLE_HDR_SIZE + MEMORY_REGION_SIZE * n, `memory table (nregions ${n})`, ctx);
  const regions: VhostUserMemoryRegionDesc[] = [];
  for (let i = 0; i < n; i++) regions.push(readMemoryRegion(dv, MEMORY_TABLE_HDR_SIZE + MEMORY_REGION_SIZE * i, `memory region ${i}`, ctx));
  checkNoGuestOverlap(regions, ctx);
  return regions;
}

/** Encode a memory table of 1..8 regions (padding written as 0). */
export function encodeMemoryTable(regions: readonly VhostUserMemoryRegionDesc[]): Uint8Array {
  if (regions.length < 1 || regions.length > VHOST_MEMORY_BASELINE_NREGIONS) {
    throw new RangeError(`memory table needs 1..${VHOST_MEMORY_BASELINE_NREGIONS} regions, got ${regions.length}`);
  }
  const out = new Uint8Array(MEMORY_TABLE_HDR_SIZE + MEMORY_REGION_SIZE * regions.length);
  const dv = view(out);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => writeMemoryRegion(dv, MEMORY_TABLE_HDR_SIZE + MEMORY_REGION_SIZE * i, r));
  return out;
}

/** Decode the single-region payload: padding u64 @0 (ignored), region @8..@40 (validated as above). */
export function decodeSingleMemoryRegion(bytes: Uint8Array, ctx?: DecodeContext): VhostUserMemoryRegionDesc {
  expectLength(bytes, SINGLE_MEMORY_REGION_SIZE, 'single memory region', ctx);
  return readMemoryRegion(view(bytes), 8, 'memory region', ctx);
}

/** Encode the single-region payload (padding 0). */
export function encodeSingleMemoryRegion(region: VhostUserMemoryRegionDesc): Uint8Array {
  const out = new Uint8Array(SINGLE_MEMORY_REGION_SIZE);
  writeMemoryRegion(view(out), 8, region);
  return out;
}

// ---------------------------------------------------------------------------
// Log description (spec "Log description")
// ---------------------------------------------------------------------------

/** Size of a log description. */
export const LOG_SIZE = 16;

/** Dirty log area: mmap_size u64 @0, mmap_offset u64 @8 (into the attached fd). */
export interface VhostUserLog {
  /** @0 u64: size of the log area. */
  mmapSize: number;
  /** @8 u64: offset of the log in the fd (where guest address 0 is logged). */
  mmapOffset: number;
}

/** Decode a log description; mmapOffset + mmapSize must not wrap or exceed 2^53 - 1. */
export function decodeLog(bytes: Uint8Array, ctx?: DecodeContext): VhostUserLog {
  expectLength(bytes, LOG_SIZE, 'log description', ctx);
  const dv = view(bytes);
  const size = dv.getBigUint64(0, true);
  const offset = dv.getBigUint64(8, true);
  checkRange(offset, size, 'log mmap_offset', ctx);
  return { mmapSize: Number(size), mmapOffset: Number(offset) };
}

export function encodeLog(log: VhostUserLog): Uint8Array {
  const out = new Uint8Array(LOG_SIZE);
  const dv = view(out);
  putU64(dv, 0, log.mmapSize, 'log mmap_size');
  putU64(dv, 8, log.mmapOffset, 'log mmap_offset');
  return out;
}

// ---------------------------------------------------------------------------
// IOTLB message (spec "An IOTLB message")
// ---------------------------------------------------------------------------

/** Size of `struct vhost_iotlb_msg`: 3 u64 + 2 u8, padded to 8-byte alignment. */
export const IOTLB_MSG_SIZE = 32;

/**
 * IOTLB message: iova u64 @0, size u64 @8, uaddr u64 @16, perm u8 @24,
 * type u8 @25, 6 padding bytes @26 (ignored). The 64-bit fields stay
 * `bigint`: IOVAs are guest-chosen (a 57-bit IOMMU address width is legal)
 * and invalidations may span the whole 64-bit space, so the 2^53 rule used
 * for user addresses does not apply here.
 */
export interface VhostIotlbMsg {
  /** @0 u64: I/O virtual address. */
  iova: bigint;
  /** @8 u64: size of the range. */
  size: bigint;
  /** @16 u64: user address (UPDATE only). */
  uaddr: bigint;
  /** @24 u8: 0 none, 1 read, 2 write, 3 read/write. */
  perm: number;
  /** @25 u8: 1 miss, 2 update, 3 invalidate, 4 access fail. */
  type: number;
}

/** Decode an IOTLB message; perm must be 0..3, type 1..4, iova + size and uaddr + size must not wrap. */
export function decodeIotlbMsg(bytes: Uint8Array, ctx?: DecodeContext): VhostIotlbMsg {
  expectLength(bytes, IOTLB_MSG_SIZE, 'IOTLB message', ctx);
  const dv = view(bytes);
  const m: VhostIotlbMsg = {
    iova: dv.getBigUint64(0, true),
    size: dv.getBigUint64(8, true),
    uaddr: dv.getBigUint64(16, true),
    perm: dv.getUint8(24),
    type: dv.getUint8(25),
  };
  if (m.perm > 3) fail(ctx, 'BAD_FIELD', `IOTLB perm ${m.perm} not in 0..3`);
  if (m.type < 1 || m.type > 4) fail(ctx, 'BAD_FIELD', `IOTLB type ${m.type} not in 1..4`);
  if (m.iova + m.size > U64_MAX + 1n) fail(ctx, 'BAD_FIELD', 'IOTLB iova + size wraps past 2^64');
  if (m.uaddr + m.size > U64_MAX + 1n) fail(ctx, 'BAD_FIELD', 'IOTLB uaddr + size wraps past 2^64');
  return m;
}

export function encodeIotlbMsg(m: VhostIotlbMsg): Uint8Array {
  const out = new Uint8Array(IOTLB_MSG_SIZE);
  const dv = view(out);
  putU64(dv, 0, m.iova, 'iova');
  putU64(dv, 8, m.size, 'IOTLB size');
  putU64(dv, 16, m.uaddr, 'uaddr');
  putU8(dv, 24, m.perm, 'IOTLB perm');
  putU8(dv, 25, m.type, 'IOTLB type');
  return out;
}

// ---------------------------------------------------------------------------
// Config space (spec "Virtio device config space")
// ---------------------------------------------------------------------------

/**
 * Config space access: offset u32 @0, size u32 @4, flags u32 @8, then `size`
 * bytes @12. Decoding requires payload length == 12 + size (`BAD_SIZE`),
 * offset + size <= 256 (`VHOST_USER_MAX_CONFIG_SIZE`, `BAD_FIELD`) and
 * flags 0 (front-end write) or 1 (migration) (`BAD_FIELD`).
 */
export interface VhostUserConfigSpace {
  /** @0 u32: offset in the device's config space. */
  offset: number;
  /** @8 u32: 0 = VHOST_SET_CONFIG_TYPE_FRONTEND, 1 = VHOST_SET_CONFIG_TYPE_MIGRATION. */
  flags: number;
  /** @12: the `size` (@4 u32) bytes of config space (a copy). */
  data: Uint8Array;
}

export function decodeConfigSpace(bytes: Uint8Array, ctx?: DecodeContext): VhostUserConfigSpace {
  if (bytes.byteLength < VHOST_USER_CONFIG_HDR_SIZE) {
    fail(ctx, 'BAD_SIZE', `config payload is ${bytes.byteLength} bytes, need at least ${VHOST_USER_CONFIG_HDR_SIZE}`);
  }
  const dv = view(bytes);
  const offset = dv.getUint32(0, true);
  const size = dv.getUint32(4, true);
  const flags = dv.getUint32(8, true);
  if (size > VHOST_USER_MAX_CONFIG_SIZE || offset > VHOST_USER_MAX_CONFIG_SIZE - size) {
    fail(ctx, 'BAD_FIELD', `config access offset ${offset} size ${size} exceeds ${VHOST_USER_MAX_CONFIG_SIZE} bytes`);
  }
  expectLength(bytes, VHOST_USER_CONFIG_HDR_SIZE + size, `config (size ${size})`, ctx);
  if (flags > 1) fail(ctx, 'BAD_FIELD', `config flags ${flags} not 0 (front-end) or 1 (migration)`);
  return { offset, flags, data: bytes.slice(VHOST_USER_CONFIG_HDR_SIZE) };
}

export function encodeConfigSpace(c: VhostUserConfigSpace): Uint8Array {
  const out = new Uint8Array(VHOST_USER_CONFIG_HDR_SIZE + c.data.byteLength);
  const dv = view(out);
  putU32(dv, 0, c.offset, 'config offset');
  putU32(dv, 4, c.data.byteLength, 'config size');
  putU32(dv, 8, c.flags, 'config flags');
  out.set(c.data, VHOST_USER_CONFIG_HDR_SIZE);
  return out;
}

// ---------------------------------------------------------------------------
// Vring area (spec "Vring area description")
// ---------------------------------------------------------------------------

/** Size of a vring area description. */
export const VRING_AREA_SIZE = 24;

/**
 * Vring area: u64 @0 (bits 0-7 vring index, bit 8 NOFD, others refused),
 * size u64 @8, offset u64 @16 (mmap range in the attached fd; offset + size
 * must not wrap or exceed 2^53 - 1).
 */
export interface VhostUserVringArea {
  /** @0 bits 0-7 */
  index: number;
  /** @0 bit 8: no fd attached (de-register the notifier). */
  noFd: boolean;
  /** @8 u64: mmap size. */
  size: number;
  /** @16 u64: mmap offset. */
  offset: number;
}

export function decodeVringArea(bytes: Uint8Array, ctx?: DecodeContext): VhostUserVringArea {
  expectLength(bytes, VRING_AREA_SIZE, 'vring area', ctx);
  const dv = view(bytes);
  const file = decodeVringFileU64(dv.getBigUint64(0, true), ctx);
  const size = dv.getBigUint64(8, true);
  const offset = dv.getBigUint64(16, true);
  checkRange(offset, size, 'vring area offset', ctx);
  return { index: file.index, noFd: file.noFd, size: Number(size), offset: Number(offset) };
}

export function encodeVringArea(a: VhostUserVringArea): Uint8Array {
  const out = new Uint8Array(VRING_AREA_SIZE);
  const dv = view(out);
  putU64(dv, 0, encodeVringFileU64(a), 'vring area u64');
  putU64(dv, 8, a.size, 'vring area size');
  putU64(dv, 16, a.offset, 'vring area offset');
  return out;
}

// ---------------------------------------------------------------------------
// Inflight description (spec "Inflight description")
// ---------------------------------------------------------------------------

/** Size of `VhostUserInflight`: 2 u64 + 2 u16, padded to 8-byte alignment (QEMU and DPDK check for 24). */
export const INFLIGHT_SIZE = 24;

/** Inflight area: mmap_size u64 @0, mmap_offset u64 @8, num_queues u16 @16, queue_size u16 @18, 4 padding bytes @20. */
export interface VhostUserInflight {
  /** @0 u64 */
  mmapSize: number;
  /** @8 u64 (mmapOffset + mmapSize must not wrap or exceed 2^53 - 1) */
  mmapOffset: number;
  /** @16 u16 */
  numQueues: number;
  /** @18 u16 */
  queueSize: number;
}

export function decodeInflight(bytes: Uint8Array, ctx?: DecodeContext): VhostUserInflight {
  expectLength(bytes, INFLIGHT_SIZE, 'inflight description', ctx);
  const dv = view(bytes);
  const size = dv.getBigUint64(0, true);
  const offset = dv.getBigUint64(8, true);
  checkRange(offset, size, 'inflight mmap_offset', ctx);
  return { mmapSize: Number(size), mmapOffset: Number(offset), numQueues: dv.getUint16(16, true), queueSize: dv.getUint16(18, true) };
}

export function encodeInflight(i: VhostUserInflight): Uint8Array {
  const out = new Uint8Array(INFLIGHT_SIZE);
  const dv = view(out);
  putU64(dv, 0, i.mmapSize, 'inflight mmap_size');
  putU64(dv, 8, i.mmapOffset, 'inflight mmap_offset');
  putU16(dv, 16, i.numQueues, 'inflight num_queues');
  putU16(dv, 18, i.queueSize, 'inflight queue_size');
  return out;
}

// ---------------------------------------------------------------------------
// Shared object (upstream spec "VhostUserShared")
// ---------------------------------------------------------------------------

/** Size of `VhostUserShared`: a 16-byte UUID. */
export const SHARED_OBJECT_SIZE = 16;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Decode the 16-byte UUID @0 into its canonical lowercase text form. The
 * spec stores the first three components big-endian, i.e. RFC 4122 byte
 * order, so the text is simply the bytes in order.
 */
export function decodeSharedObject(bytes: Uint8Array, ctx?: DecodeContext): string {
  expectLength(bytes, SHARED_OBJECT_SIZE, 'shared object', ctx);
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Encode a UUID given in canonical text form (case-insensitive). RangeError on anything else. */
export function encodeSharedObject(uuid: string): Uint8Array {
  const u = uuid.toLowerCase();
  if (!UUID_RE.test(u)) throw new RangeError(`not a UUID: ${JSON.stringify(uuid)}`);
  const hex = u.replace(/-/g, '');
  const out = new Uint8Array(SHARED_OBJECT_SIZE);
  for (let i = 0; i < SHARED_OBJECT_SIZE; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---------------------------------------------------------------------------
// Device state transfer parameters (upstream spec "Device state transfer parameters")
// ---------------------------------------------------------------------------

/** Size of `VhostUserTransferDeviceState`. */
export const TRANSFER_STATE_SIZE = 8;

/** Device state transfer: direction u32 @0 (0 save, 1 load), phase u32 @4 (0 stopped). */
export interface VhostUserTransferState {
  /** @0 u32: 0 = save (back-end → front-end), 1 = load (front-end → back-end). */
  direction: number;
  /** @4 u32: 0 = stopped (the only phase defined). */
  phase: number;
}

export function decodeTransferState(bytes: Uint8Array, ctx?: DecodeContext): VhostUserTransferState {
  expectLength(bytes, TRANSFER_STATE_SIZE, 'device state transfer parameters', ctx);
  const dv = view(bytes);
  const direction = dv.getUint32(0, true);
  const phase = dv.getUint32(4, true);
  if (direction > 1) fail(ctx, 'BAD_FIELD', `transfer direction ${direction} not 0 (save) or 1 (load)`);
  if (phase !== 0) fail(ctx, 'BAD_FIELD', `migration phase ${phase} not 0 (stopped)`);
  return { direction, phase };
}

export function encodeTransferState(t: VhostUserTransferState): Uint8Array {
  const out = new Uint8Array(TRANSFER_STATE_SIZE);
  const dv = view(out);
  putU32(dv, 0, t.direction, 'transfer direction');
  putU32(dv, 4, t.phase, 'migration phase');
  return out;
}
