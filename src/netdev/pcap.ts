/**
 * Packet capture files: read classic pcap and pcapng (Ethernet only), write
 * classic pcap.
 *
 * Why our own code and not an npm library (checked on the npm registry):
 *  - `pcap` (node_pcap) is a native libpcap binding (node-gyp + libpcap-dev) for
 *    live capture; far too heavy for reading files.
 *  - `pcap-parser` 0.2.1 has had no release for over a decade, reads classic
 *    pcap only (no pcapng, no writer) and only as an event stream.
 *  - `pcap-ng-parser` 1.0.0 (single release) is a stream Transform that handles
 *    one section only, EPB only (no SPB), mis-sizes options, has no bounds checks
 *    and no classic pcap or writer.
 * None is maintained, synchronous from a Buffer, or bounds-safe, so this is a
 * compact parser with every read checked against the buffer length.
 *
 * Output is packed for worker threads: all captured bytes in one contiguous
 * `data` array plus `offsets`/`lengths`/`origLengths`/`timestamps` typed arrays;
 * `toSharedArrayBuffer()` / `PcapCapture.fromSharedArrayBuffer()` move the whole
 * capture into one SharedArrayBuffer and back with no per-frame objects.
 *
 * Frames whose captured length is smaller than the original length (snaplen
 * cut) are kept with the bytes that were captured: `lengths[i] < origLengths[i]`
 * and `truncatedFrames` counts them. Frames are kept exactly as stored (if the
 * file says it includes an FCS, see `fcsBytes`, it is not stripped).
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

export const LINKTYPE_ETHERNET = 1;

export type PcapErrorCode =
  | 'truncated'            // file or record/block ends early
  | 'bad-magic'            // neither pcap nor pcapng
  | 'unsupported-version'  // pcapng major version != 1, pcap major != 2
  | 'unsupported-linktype' // not LINKTYPE_ETHERNET
  | 'bad-block'            // malformed pcapng block (length, interface id, ...)
  | 'bad-record'           // classic pcap record longer than any snaplen allows
  | 'too-large';           // packed output would not fit 32-bit offsets

/** Malformed or unsupported capture; `offset` is the byte offset in the file. */
export class PcapFormatError extends Error {
  override readonly name = 'PcapFormatError';
  constructor(readonly code: PcapErrorCode, readonly offset: number, message: string) {
    super(`${message} (at byte offset ${offset})`);
  }
}

export type PcapFileFormat = 'pcap' | 'pcapng';

export interface ReadOptions {
  /**
   * What to do when the file ends inside a record/block: 'throw' (default)
   * raises PcapFormatError('truncated'); 'stop' returns the complete frames
   * before it (e.g. a capture whose writer was killed) and sets `truncatedAt`.
   */
  onTruncated?: 'throw' | 'stop';
}

/** The packed arrays; all views may live in one SharedArrayBuffer. */
export interface PackedCapture {
  readonly count: number;
  /** All captured bytes, frame i at data[offsets[i] .. offsets[i]+lengths[i]). */
  readonly data: Uint8Array;
  readonly offsets: Uint32Array;
  /** Captured length (bytes present in `data`). */
  readonly lengths: Uint32Array;
  /** Length of the frame on the wire (>= lengths[i]). */
  readonly origLengths: Uint32Array;
  /** Nanoseconds since the Unix epoch (0 if unknown: pcapng SPB before any EPB). */
  readonly timestamps: BigInt64Array;
}

const SAB_MAGIC = 0x50514d56; // 'VMQP'
const SAB_VERSION = 1;
const SAB_HEADER = 32;
const FORMAT_CODE: Record<PcapFileFormat, number> = { pcap: 1, pcapng: 2 };

export class PcapCapture implements PackedCapture {
  constructor(
    readonly format: PcapFileFormat,
    readonly count: number,
    readonly data: Uint8Array,
    readonly offsets: Uint32Array,
    readonly lengths: Uint32Array,
    readonly origLengths: Uint32Array,
    readonly timestamps: BigInt64Array,
    /** Bytes of FCS the file says each frame ends with (classic pcap F bit, pcapng if_fcslen of the first interface); 0 normally. */
    readonly fcsBytes = 0,
    /** Offset of an incomplete trailing record when read with onTruncated 'stop', else -1. */
    readonly truncatedAt = -1,
  ) {}

  /** Frame i as a view into `data` (no copy). */
  frame(i: number): Uint8Array {
    if (!(i >= 0 && i < this.count)) throw new RangeError(`frame index ${i} out of range 0..${this.count - 1}`);
    const o = this.offsets[i]!;
    return this.data.subarray(o, o + this.lengths[i]!);
  }

  timestampNs(i: number): bigint {
    if (!(i >= 0 && i < this.count)) throw new RangeError(`frame index ${i} out of range 0..${this.count - 1}`);
    return this.timestamps[i]!;
  }

  /** Number of frames cut by the snaplen (captured < original length). */
  get truncatedFrames(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.lengths[i]! < this.origLengths[i]!) n++;
    return n;
  }

  /** Every frame as a view (allocates one object per frame; prefer frame(i)). */
  get frames(): Uint8Array[] {
    const out = new Array<Uint8Array>(this.count);
    for (let i = 0; i < this.count; i++) out[i] = this.frame(i);
    return out;
  }

  *[Symbol.iterator](): IterableIterator<Uint8Array> {
    for (let i = 0; i < this.count; i++) yield this.frame(i);
  }

  /**
   * Copies the packed form into one SharedArrayBuffer (post it to workers and
   * open it there with PcapCapture.fromSharedArrayBuffer: zero-copy views).
   * Layout: 32-byte header, timestamps (i64), offsets, lengths, origLengths
   * (u32), then data.
   */
  toSharedArrayBuffer(): SharedArrayBuffer {
    const n = this.count;
    const tsOff = SAB_HEADER;
    const offOff = tsOff + 8 * n;
    const lenOff = offOff + 4 * n;
    const origOff = lenOff + 4 * n;
    const dataOff = origOff + 4 * n;
    const sab = new SharedArrayBuffer(dataOff + this.data.length);
    const h = new DataView(sab, 0, SAB_HEADER);
    h.setUint32(0, SAB_MAGIC, true);
    h.setUint32(4, SAB_VERSION, true);
    h.setUint32(8, n, true);
    h.setUint32(12, this.data.length, true);
    h.setUint32(16, FORMAT_CODE[this.format], true);
    h.setUint32(20, this.fcsBytes, true);
    new BigInt64Array(sab, tsOff, n).set(this.timestamps.subarray(0, n));
    new Uint32Array(sab, offOff, n).set(this.offsets.subarray(0, n));
    new Uint32Array(sab, lenOff, n).set(this.lengths.subarray(0, n));
    new Uint32Array(sab, origOff, n).set(this.origLengths.subarray(0, n));
    new Uint8Array(sab, dataOff, this.data.length).set(this.data);
    return sab;
  }

  /** Opens a buffer made by toSharedArrayBuffer() (views, no copy). */
  static fromSharedArrayBuffer(sab: SharedArrayBuffer | ArrayBuffer): PcapCapture {
    if (sab.byteLength < SAB_HEADER) throw new TypeError('not a packed capture buffer (too short)');
    const h = new DataView(sab, 0, SAB_HEADER);
    if (h.getUint32(0, true) !== SAB_MAGIC || h.getUint32(4, true) !== SAB_VERSION) {
      throw new TypeError('not a packed capture buffer (bad magic/version)');
    }
    const n = h.getUint32(8, true);
    const dataLen = h.getUint32(12, true);
    const format: PcapFileFormat = h.getUint32(16, true) === FORMAT_CODE.pcapng ? 'pcapng' : 'pcap';
    const fcs = h.getUint32(20, true);
    const tsOff = SAB_HEADER;
    const offOff = tsOff + 8 * n;
    const lenOff = offOff + 4 * n;
    const origOff = lenOff + 4 * n;
    const dataOff = origOff + 4 * n;
    if (dataOff + dataLen !== sab.byteLength) throw new TypeError('packed capture buffer has the wrong size');
    return new PcapCapture(
      format, n,
      new Uint8Array(sab, dataOff, dataLen),
      new Uint32Array(sab, offOff, n),
      new Uint32Array(sab, lenOff, n),
      new Uint32Array(sab, origOff, n),
      new BigInt64Array(sab, tsOff, n),
      fcs,
    );
  }
}

/** Reads a classic pcap or pcapng file (detected from its first bytes). */
export function readPcapFile(path: string, opts: ReadOptions = {}): PcapCapture {
  return parseCapture(readFileSync(path), opts);
}

/** Parses a capture held in memory (classic pcap or pcapng). */
export function parseCapture(buf: Uint8Array, opts: ReadOptions = {}): PcapCapture {
  if (buf.length < 4) throw new PcapFormatError('truncated', 0, `file too short for a magic number (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const m = dv.getUint32(0, false);
  if (m === 0x0a0d0d0a) return parsePcapng(buf, dv, opts);
  return parseClassic(buf, dv, opts);
}

// ---------------------------------------------------------------------------
// Collector: (source offset, lengths, timestamp) per frame, then one copy.

class Collector {
  n = 0;
  src = new Float64Array(256); // source offsets (files may exceed 4 GiB in principle)
  cap = new Uint32Array(256);
  orig = new Uint32Array(256);
  ts = new BigInt64Array(256);
  total = 0;

  push(srcOff: number, capLen: number, origLen: number, ts: bigint, at: number): void {
    if (this.n === this.cap.length) this.grow();
    this.src[this.n] = srcOff;
    this.cap[this.n] = capLen;
    this.orig[this.n] = origLen;
    this.ts[this.n] = ts;
    this.n++;
    this.total += capLen;
    if (this.total > 0xffffffff) throw new PcapFormatError('too-large', at, 'captured bytes exceed 4 GiB');
  }

  private grow(): void {
    const size = this.cap.length * 2;
    const src = new Float64Array(size); src.set(this.src); this.src = src;
    const cap = new Uint32Array(size); cap.set(this.cap); this.cap = cap;
    const orig = new Uint32Array(size); orig.set(this.orig); this.orig = orig;
    const ts = new BigInt64Array(size); ts.set(this.ts); this.ts = ts;
  }

  finish(buf: Uint8Array, format: PcapFileFormat, fcsBytes: number, truncatedAt: number): PcapCapture {
    const n = this.n;
    const data = new Uint8Array(this.total);
    const offsets = new Uint32Array(n);
    let o = 0;
    for (let i = 0; i < n; i++) {
      const s = this.src[i]!;
      const len = this.cap[i]!;
      data.set(buf.subarray(s, s + len), o);
      offsets[i] = o;
      o += len;
    }
    return new PcapCapture(format, n, data, offsets, this.cap.slice(0, n), this.orig.slice(0, n),
      this.ts.slice(0, n), fcsBytes, truncatedAt);
  }
}

// ---------------------------------------------------------------------------
// Classic pcap: 24-byte file header, then 16-byte record headers + data.

function parseClassic(buf: Uint8Array, dv: DataView, opts: ReadOptions): PcapCapture {
  const magicLE = dv.getUint32(0, true);
  let le: boolean;
  let nanos: boolean;
  switch (magicLE) {
    case 0xa1b2c3d4: le = true; nanos = false; break;
    case 0xd4c3b2a1: le = false; nanos = false; break;
    case 0xa1b23c4d: le = true; nanos = true; break;
    case 0x4d3cb2a1: le = false; nanos = true; break;
    default:
      throw new PcapFormatError('bad-magic', 0, `not a pcap or pcapng file (magic 0x${dv.getUint32(0, false).toString(16).padStart(8, '0')})`);
  }
  if (buf.length < 24) throw new PcapFormatError('truncated', buf.length, `pcap file header needs 24 bytes, file has ${buf.length}`);
  const major = dv.getUint16(4, le);
  if (major !== 2) throw new PcapFormatError('unsupported-version', 4, `pcap major version ${major} (expected 2)`);
  const network = dv.getUint32(20, le);
  const linktype = network & 0xffff;
  if (linktype !== LINKTYPE_ETHERNET) {
    throw new PcapFormatError('unsupported-linktype', 20, `pcap linktype ${linktype} is not Ethernet (1)`);
  }
  // F bit (bit 28): bits 26-27 give the FCS length in 16-bit words.
  const fcsBytes = network & 0x10000000 ? ((network >>> 26) & 3) * 2 : 0;
  const fracMul = nanos ? 1n : 1000n;
  // Classic pcap cannot resynchronise, so a corrupt length would swallow the
  // rest of the file as one frame: like libpcap, refuse records longer than
  // both the file's snaplen and 256 KiB (tcpdump's maximum snaplen).
  const maxRecord = Math.max(dv.getUint32(16, le), 262144);
  const c = new Collector();
  let pos = 24;
  let truncatedAt = -1;
  while (pos < buf.length) {
    const rest = buf.length - pos;
    if (rest < 16) {
      if (opts.onTruncated === 'stop') { truncatedAt = pos; break; }
      throw new PcapFormatError('truncated', pos, `pcap record header needs 16 bytes, ${rest} left`);
    }
    const sec = dv.getUint32(pos, le);
    const frac = dv.getUint32(pos + 4, le);
    const incl = dv.getUint32(pos + 8, le);
    const orig = dv.getUint32(pos + 12, le);
    if (incl > maxRecord) {
      throw new PcapFormatError('bad-record', pos + 8, `pcap record length ${incl} exceeds the maximum ${maxRecord}`);
    }
    if (incl > rest - 16) {
      if (opts.onTruncated === 'stop') { truncatedAt = pos; break; }
      throw new PcapFormatError('truncated', pos, `pcap record of ${incl} bytes, only ${rest - 16} left`);
    }
    const ts = BigInt(sec) * 1_000_000_000n + BigInt(frac) * fracMul;
    // orig < incl is malformed; keep what is there and report it as the wire length
    c.push(pos + 16, incl, orig < incl ? incl : orig, ts, pos);
    pos += 16 + incl;
  }
  return c.finish(buf, 'pcap', fcsBytes, truncatedAt);
}

// ---------------------------------------------------------------------------
// pcapng: blocks of (type u32, total length u32, body, total length u32).

const BT_SHB = 0x0a0d0d0a;
const BT_IDB = 1;
const BT_OPB = 2; // obsolete Packet Block
const BT_SPB = 3;
const BT_EPB = 6;
const BOM = 0x1a2b3c4d;

interface Iface {
  linktype: number;
  snaplen: number;
  /** ticks per second as bigint, and whether it is a power of ten */
  tsUnitsPerSec: bigint;
  tsOffsetSec: bigint;
  fcsBytes: number;
}

/** Called only when the file starts with a Section Header Block. */
function parsePcapng(buf: Uint8Array, dv: DataView, opts: ReadOptions): PcapCapture {
  const c = new Collector();
  let le = true;
  let ifaces: Iface[] = [];
  let pos = 0;
  let lastTs = 0n;
  let firstFcs = -1;
  let truncatedAt = -1;
  const truncated = (at: number, msg: string): boolean => {
    if (opts.onTruncated === 'stop') { truncatedAt = at; return true; }
    throw new PcapFormatError('truncated', at, msg);
  };

  while (pos < buf.length) {
    const rest = buf.length - pos;
    if (rest < 12) { if (truncated(pos, `pcapng block header needs 12 bytes, ${rest} left`)) break; }
    const type = dv.getUint32(pos, le);
    if (type === BT_SHB) { // palindromic: same in either byte order
      // new section: byte order from the byte-order magic
      const bomLE = dv.getUint32(pos + 8, true);
      if (bomLE === BOM) le = true;
      else if (bomLE === 0x4d3c2b1a) le = false;
      else throw new PcapFormatError('bad-magic', pos + 8, `pcapng byte-order magic 0x${bomLE.toString(16)} is invalid`);
      ifaces = [];
    }
    const total = dv.getUint32(pos + 4, le);
    if (total < 12 || total % 4 !== 0) {
      throw new PcapFormatError('bad-block', pos + 4, `pcapng block total length ${total} is invalid`);
    }
    if (total > rest) { if (truncated(pos, `pcapng block of ${total} bytes, only ${rest} left`)) break; }
    if (dv.getUint32(pos + total - 4, le) !== total) {
      throw new PcapFormatError('bad-block', pos + total - 4, `pcapng trailing block length differs from ${total}`);
    }
    const body = pos + 8;
    const bodyLen = total - 12;

    switch (type) {
      case BT_SHB: {
        if (bodyLen < 16) throw new PcapFormatError('bad-block', pos, 'pcapng Section Header Block too short');
        const major = dv.getUint16(body + 4, le);
        if (major !== 1) throw new PcapFormatError('unsupported-version', body + 4, `pcapng major version ${major} (expected 1)`);
        break;
      }
      case BT_IDB: {
        if (bodyLen < 8) throw new PcapFormatError('bad-block', pos, 'pcapng Interface Description Block too short');
        const iface: Iface = {
          linktype: dv.getUint16(body, le),
          snaplen: dv.getUint32(body + 4, le),
          tsUnitsPerSec: 1_000_000n,
          tsOffsetSec: 0n,
          fcsBytes: 0,
        };
        readIdbOptions(dv, body + 8, body + bodyLen, le, iface);
        ifaces.push(iface);
        break;
      }
      case BT_EPB:
      case BT_OPB: {
        if (bodyLen < 20) throw new PcapFormatError('bad-block', pos, 'pcapng packet block too short');
        const ifId = type === BT_EPB ? dv.getUint32(body, le) : dv.getUint16(body, le);
        const iface = ifaceFor(ifaces, ifId, pos);
        const tsHi = dv.getUint32(body + 4, le);
        const tsLo = dv.getUint32(body + 8, le);
        const capLen = dv.getUint32(body + 12, le);
        const origLen = dv.getUint32(body + 16, le);
        if (capLen > bodyLen - 20) {
          throw new PcapFormatError('bad-block', body + 12, `captured length ${capLen} exceeds the block body (${bodyLen - 20} bytes)`);
        }
        const ticks = (BigInt(tsHi) << 32n) | BigInt(tsLo);
        lastTs = (ticks * 1_000_000_000n) / iface.tsUnitsPerSec + iface.tsOffsetSec * 1_000_000_000n;
        if (firstFcs < 0) firstFcs = iface.fcsBytes;
        c.push(body + 20, capLen, origLen < capLen ? capLen : origLen, lastTs, pos);
        break;
      }
      case BT_SPB: {
        if (bodyLen < 4) throw new PcapFormatError('bad-block', pos, 'pcapng Simple Packet Block too short');
        const iface = ifaceFor(ifaces, 0, pos);
        const origLen = dv.getUint32(body, le);
        let capLen = bodyLen - 4;
        if (origLen < capLen) capLen = origLen;                                  // padding
        if (iface.snaplen !== 0 && iface.snaplen < capLen) capLen = iface.snaplen; // snaplen cut
        if (firstFcs < 0) firstFcs = iface.fcsBytes;
        // SPB carries no timestamp: reuse the previous packet's (0 if none)
        c.push(body + 4, capLen, origLen, lastTs, pos);
        break;
      }
      default:
        break; // NRB, ISB, DSB, custom, unknown: skip
    }
    pos += total;
  }
  return c.finish(buf, 'pcapng', firstFcs < 0 ? 0 : firstFcs, truncatedAt);
}

function ifaceFor(ifaces: Iface[], id: number, at: number): Iface {
  const iface = ifaces[id];
  if (!iface) throw new PcapFormatError('bad-block', at, `packet block refers to interface ${id}, section has ${ifaces.length}`);
  if (iface.linktype !== LINKTYPE_ETHERNET) {
    throw new PcapFormatError('unsupported-linktype', at, `pcapng interface ${id} has linktype ${iface.linktype}, not Ethernet (1)`);
  }
  return iface;
}

function readIdbOptions(dv: DataView, pos: number, end: number, le: boolean, iface: Iface): void {
  while (pos + 4 <= end) {
    const code = dv.getUint16(pos, le);
    const len = dv.getUint16(pos + 2, le);
    const v = pos + 4;
    if (code === 0) return; // opt_endofopt
    if (v + len > end) throw new PcapFormatError('bad-block', pos, `pcapng option ${code} of ${len} bytes overruns its block`);
    if (code === 9 && len >= 1) { // if_tsresol
      const r = dv.getUint8(v);
      const exp = BigInt(r & 0x7f);
      if ((r & 0x7f) > 63) throw new PcapFormatError('bad-block', v, `pcapng if_tsresol ${r} is out of range`);
      iface.tsUnitsPerSec = r & 0x80 ? 1n << exp : 10n ** exp;
    } else if (code === 13 && len >= 1) { // if_fcslen
      iface.fcsBytes = dv.getUint8(v);
    } else if (code === 14 && len >= 8) { // if_tsoffset (seconds)
      iface.tsOffsetSec = dv.getBigInt64(v, le);
    }
    pos = v + ((len + 3) & ~3);
  }
}

// ---------------------------------------------------------------------------
// Writer: classic pcap, little-endian, linktype Ethernet.

export interface PcapWriterOptions {
  /** Bytes kept per frame (default 262144); longer frames are cut, origlen kept. */
  snaplen?: number;
  /** Nanosecond timestamps (magic 0xa1b23c4d) instead of microseconds. */
  nanos?: boolean;
  linktype?: number;
}

const WRITE_BUF = 1 << 16;

export class PcapWriter {
  readonly snaplen: number;
  readonly nanos: boolean;
  private fd: number;
  private readonly buf = new Uint8Array(WRITE_BUF);
  private readonly dv = new DataView(this.buf.buffer);
  private used = 0;
  private closed = false;
  /** Frames written so far. */
  count = 0;

  constructor(readonly path: string, opts: PcapWriterOptions = {}) {
    const snaplen = opts.snaplen ?? 262144;
    if (!Number.isInteger(snaplen) || snaplen < 1 || snaplen > 0x7fffffff) throw new RangeError(`bad snaplen ${snaplen}`);
    this.snaplen = snaplen;
    this.nanos = opts.nanos ?? false;
    this.fd = openSync(path, 'w');
    const dv = this.dv;
    dv.setUint32(0, this.nanos ? 0xa1b23c4d : 0xa1b2c3d4, true);
    dv.setUint16(4, 2, true);
    dv.setUint16(6, 4, true);
    dv.setInt32(8, 0, true);    // thiszone
    dv.setUint32(12, 0, true);  // sigfigs
    dv.setUint32(16, snaplen, true);
    dv.setUint32(20, opts.linktype ?? LINKTYPE_ETHERNET, true);
    this.used = 24;
  }

  /**
   * Appends a frame. `tsNanos` is nanoseconds since the epoch: a bigint is
   * exact, a number is exact only below 2^53 ns (fine for relative times);
   * default: now.
   */
  write(frame: Uint8Array, tsNanos?: bigint | number): void {
    if (this.closed) throw new Error('PcapWriter: write after close');
    let sec: number;
    let ns: number;
    if (tsNanos === undefined) {
      const ms = Date.now();
      sec = Math.floor(ms / 1000);
      ns = (ms % 1000) * 1_000_000;
    } else if (typeof tsNanos === 'bigint') {
      if (tsNanos < 0n) throw new RangeError('negative timestamp');
      sec = Number(tsNanos / 1_000_000_000n);
      ns = Number(tsNanos % 1_000_000_000n);
    } else {
      if (!(tsNanos >= 0) || !Number.isFinite(tsNanos)) throw new RangeError(`bad timestamp ${tsNanos}`);
      sec = Math.floor(tsNanos / 1e9);
      ns = Math.min(999_999_999, Math.max(0, Math.round(tsNanos - sec * 1e9)));
    }
    if (sec > 0xffffffff) throw new RangeError('timestamp beyond 2106 does not fit classic pcap');
    const frac = this.nanos ? ns : Math.floor(ns / 1000);
    const incl = Math.min(frame.length, this.snaplen);
    if (this.used + 16 > WRITE_BUF) this.flush();
    const dv = this.dv;
    const h = this.used;
    dv.setUint32(h, sec, true);
    dv.setUint32(h + 4, frac, true);
    dv.setUint32(h + 8, incl, true);
    dv.setUint32(h + 12, frame.length, true);
    this.used += 16;
    const body = incl === frame.length ? frame : frame.subarray(0, incl);
    if (this.used + incl <= WRITE_BUF) {
      this.buf.set(body, this.used);
      this.used += incl;
    } else {
      this.flush();
      writeAll(this.fd, body);
    }
    this.count++;
  }

  /** Writes buffered records to the file. */
  flush(): void {
    if (this.used > 0) {
      writeAll(this.fd, this.buf.subarray(0, this.used));
      this.used = 0;
    }
  }

  close(): void {
    if (this.closed) return;
    try {
      this.flush();
    } finally {
      this.closed = true;
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += writeSync(fd, b, off, b.length - off);
}

/** Writes frames to a classic pcap file (timestamps: 1 µs apart from `startNs`, default 0). */
export function writePcapFile(path: string, frames: Iterable<Uint8Array>, opts: PcapWriterOptions & { startNs?: bigint } = {}): number {
  const w = new PcapWriter(path, opts);
  try {
    let ts = opts.startNs ?? 0n;
    for (const f of frames) { w.write(f, ts); ts += 1000n; }
  } finally {
    w.close();
  }
  return w.count;
}
