/**
 * pcapng writer (draft-ietf-opsawg-pcapng, the format tshark and Wireshark
 * read): one Section Header Block, one Interface Description Block per
 * interface (LINKTYPE_ETHERNET, microsecond timestamps), Enhanced Packet
 * Blocks with the direction in `epb_flags`, and Interface Statistics Blocks.
 * Little-endian. Blocks are built into fixed-size chunks that go to a sink
 * (a file stream) whole, so a caller can stop handing it packets while the
 * sink is busy.
 *
 * The reader in pcap.ts reads these files back (it ignores the options).
 */
import { LINKTYPE_ETHERNET } from './pcap.js';

const BT_SHB = 0x0a0d0d0a;
const BT_IDB = 1;
const BT_ISB = 5;
const BT_EPB = 6;
const BOM = 0x1a2b3c4d;

/** epb_flags direction bits (pcapng §4.3.1): 01 inbound, 10 outbound. */
export const EPB_INBOUND = 1;
export const EPB_OUTBOUND = 2;

export interface PcapngInterface {
  /** if_name (option 2), e.g. "q0". */
  name: string;
  /** if_description (option 3). */
  description?: string;
  /** Bytes kept per packet (0 = no limit). */
  snaplen: number;
}

export interface PcapngStats {
  /** isb_starttime / isb_endtime, microseconds since the epoch. */
  startUs: number;
  endUs: number;
  /** isb_osdrop (option 7): packets the capture dropped (its buffer was full). */
  dropped: number;
  /** isb_usrdeliv (option 8): packets written for this interface. */
  delivered: number;
}

const pad4 = (n: number) => (n + 3) & ~3;
const TWO32 = 4294967296;

export class PcapngWriter {
  private chunk: Buffer;
  private used = 0;
  /** Enhanced Packet Blocks written. */
  packets = 0;

  /**
   * @param sink receives each finished chunk (a Buffer it may keep).
   * @param chunkBytes chunk size (a block larger than this gets a chunk of its own).
   */
  constructor(private readonly sink: (chunk: Buffer) => void, private readonly chunkBytes = 1 << 18) {
    this.chunk = Buffer.allocUnsafe(chunkBytes);
  }

  /** Section Header Block (version 1.0, section length unknown) with shb_userappl. */
  sectionHeader(userAppl = 'virtio-mq'): void {
    const opts = optionsBytes([[4, Buffer.from(userAppl, 'utf8')]]);
    const total = 12 + 16 + opts.length;
    const b = this.room(total);
    let o = this.used;
    o = b.writeUInt32LE(BT_SHB, o);
    o = b.writeUInt32LE(total, o);
    o = b.writeUInt32LE(BOM, o);
    o = b.writeUInt16LE(1, o);
    o = b.writeUInt16LE(0, o);
    o = b.writeInt32LE(-1, o); // section length: not specified (64-bit -1)
    o = b.writeInt32LE(-1, o);
    o += opts.copy(b, o);
    b.writeUInt32LE(total, o);
    this.used += total;
  }

  /** Interface Description Block: interface ids count from 0 in the order written. */
  interfaceDescription(i: PcapngInterface): void {
    const list: [number, Buffer][] = [[2, Buffer.from(i.name, 'utf8')]];
    if (i.description) list.push([3, Buffer.from(i.description, 'utf8')]);
    list.push([9, Buffer.of(6)]); // if_tsresol: 10^-6 s
    const opts = optionsBytes(list);
    const total = 12 + 8 + opts.length;
    const b = this.room(total);
    let o = this.used;
    o = b.writeUInt32LE(BT_IDB, o);
    o = b.writeUInt32LE(total, o);
    o = b.writeUInt16LE(LINKTYPE_ETHERNET, o);
    o = b.writeUInt16LE(0, o);
    o = b.writeUInt32LE(i.snaplen >>> 0, o);
    o += opts.copy(b, o);
    b.writeUInt32LE(total, o);
    this.used += total;
  }

  /**
   * Enhanced Packet Block: `capLen` bytes of `src` at `off`, `origLen` on the
   * wire, timestamp in microseconds (high and low 32-bit words), `flags` =
   * epb_flags (EPB_INBOUND / EPB_OUTBOUND; 0 = no option).
   */
  enhancedPacket(ifId: number, tsHi: number, tsLo: number, src: Uint8Array, off: number, capLen: number, origLen: number, flags: number): void {
    const optLen = flags !== 0 ? 12 : 0; // epb_flags (4 + 4) + opt_endofopt (4)
    const total = 32 + pad4(capLen) + optLen;
    const b = this.room(total);
    let o = this.used;
    b.writeUInt32LE(BT_EPB, o);
    b.writeUInt32LE(total, o + 4);
    b.writeUInt32LE(ifId, o + 8);
    b.writeUInt32LE(tsHi, o + 12);
    b.writeUInt32LE(tsLo, o + 16);
    b.writeUInt32LE(capLen, o + 20);
    b.writeUInt32LE(origLen, o + 24);
    o += 28;
    b.set(src.subarray(off, off + capLen), o);
    const padded = pad4(capLen);
    b.fill(0, o + capLen, o + padded);
    o += padded;
    if (flags !== 0) {
      b.writeUInt16LE(2, o); // epb_flags
      b.writeUInt16LE(4, o + 2);
      b.writeUInt32LE(flags >>> 0, o + 4);
      b.writeUInt32LE(0, o + 8); // opt_endofopt
      o += 12;
    }
    b.writeUInt32LE(total, o);
    this.used += total;
    this.packets++;
  }

  /** Interface Statistics Block for interface `ifId` (written at the end of a capture). */
  interfaceStatistics(ifId: number, s: PcapngStats): void {
    const u64 = (v: number) => {
      const x = Buffer.alloc(8);
      x.writeUInt32LE(Math.floor(v / TWO32), 0); // timestamps: high word first, as in the block header
      x.writeUInt32LE(v % TWO32 >>> 0, 4);
      return x;
    };
    const le64 = (v: number) => {
      const x = Buffer.alloc(8);
      x.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(v))));
      return x;
    };
    const opts = optionsBytes([[2, u64(s.startUs)], [3, u64(s.endUs)], [7, le64(s.dropped)], [8, le64(s.delivered)]]);
    const total = 12 + 12 + opts.length;
    const b = this.room(total);
    let o = this.used;
    o = b.writeUInt32LE(BT_ISB, o);
    o = b.writeUInt32LE(total, o);
    o = b.writeUInt32LE(ifId, o);
    o = b.writeUInt32LE(Math.floor(s.endUs / TWO32), o);
    o = b.writeUInt32LE(s.endUs % TWO32 >>> 0, o);
    o += opts.copy(b, o);
    b.writeUInt32LE(total, o);
    this.used += total;
  }

  /** Bytes waiting in the current chunk. */
  get buffered(): number {
    return this.used;
  }

  /** Hand the current chunk (if not empty) to the sink. */
  flush(): void {
    if (this.used === 0) return;
    const out = this.chunk.subarray(0, this.used);
    this.chunk = Buffer.allocUnsafe(this.chunkBytes);
    this.used = 0;
    this.sink(out);
  }

  /** A chunk with `n` free bytes at `used` (flushing, or a chunk of its own for a large block). */
  private room(n: number): Buffer {
    if (this.used + n <= this.chunk.length) return this.chunk;
    this.flush();
    if (n > this.chunk.length) this.chunk = Buffer.allocUnsafe(n);
    return this.chunk;
  }
}

/** Options (code, value) then opt_endofopt, each value padded to 4. */
function optionsBytes(list: [number, Buffer][]): Buffer {
  const parts: Buffer[] = [];
  for (const [code, v] of list) {
    const h = Buffer.alloc(4 + pad4(v.length));
    h.writeUInt16LE(code, 0);
    h.writeUInt16LE(v.length, 2);
    v.copy(h, 4);
    parts.push(h);
  }
  parts.push(Buffer.alloc(4));
  return Buffer.concat(parts);
}
