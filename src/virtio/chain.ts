/**
 * A descriptor chain as the device sees it after walking it (spec v1.4
 * §2.7.5 split, §2.8.6 packed): its id and ring footprint, and its buffers,
 * device-readable ones first, then device-writable ones (§2.7.4.2, §2.8.4).
 * Each buffer is already translated into guest memory: a region index into
 * {@link GuestMemory.bytes} and a byte offset into that region's buffer. A
 * descriptor that crosses from one guest memory region into the next is
 * held as several pieces (as libvhost-user does), so `count` may exceed the
 * number of descriptors.
 *
 * The reader ({@link readTo}) and writer ({@link writeFrom}) move bytes
 * between a chain and a plain buffer as one contiguous stream, whatever the
 * buffer boundaries: the net layer never walks buffers itself.
 *
 * One DescChain is reused for every chain a queue pops: no allocation per
 * packet (the piece arrays grow only when a longer chain than ever before
 * arrives).
 */
import { copyBytes, type Bytes } from './copy.js';
import type { GuestMemory } from './memory.js';

export class DescChain {
  /** What the device returns in the used ring: split head index, packed Buffer ID. */
  id = 0;
  /** Descriptor slots the chain took (packed: how far the used descriptor skips). */
  descs = 0;
  /** Buffer pieces in this chain (readable + writable). */
  count = 0;
  /** Number of device-readable pieces (they come first). */
  readable = 0;
  readableBytes = 0;
  writableBytes = 0;
  region: Int32Array;
  offset: Float64Array;
  len: Uint32Array;

  constructor(readonly mem: GuestMemory, capacity = 16) {
    this.region = new Int32Array(capacity);
    this.offset = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  reset(id: number): void {
    this.id = id;
    this.descs = 0;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }

  /**
   * Append the buffer `[addr, addr+len)` (guest physical) as one piece, or as
   * several when it crosses adjacent guest memory regions. Returns false,
   * appending nothing, when any byte of it lies outside guest memory.
   * The caller checks the readable-before-writable order.
   */
  append(addr: number, len: number, writable: boolean): boolean {
    const mem = this.mem;
    let r = mem.find(addr, len);
    if (r >= 0) {
      this.push(r, mem.off, len, writable);
      return true;
    }
    if (len === 0) return false;
    // Across regions: only when every byte is covered, piece after piece.
    const first = this.count;
    let at = addr;
    let left = len;
    while (left > 0) {
      r = mem.findStart(at);
      if (r < 0) {
        this.drop(first);
        return false;
      }
      const n = Math.min(left, mem.end[r] - at);
      this.push(r, mem.off, n, writable);
      at += n;
      left -= n;
    }
    return true;
  }

  private push(r: number, off: number, len: number, writable: boolean): void {
    const i = this.count;
    if (i === this.len.length) this.grow();
    this.region[i] = r;
    this.offset[i] = off;
    this.len[i] = len;
    this.count = i + 1;
    if (writable) this.writableBytes += len;
    else {
      this.readable++;
      this.readableBytes += len;
    }
  }

  /** Forget pieces appended from index `first` on (a buffer that turned out to be partly outside memory). */
  private drop(first: number): void {
    for (let i = this.count - 1; i >= first; i--) {
      if (i < this.readable) {
        this.readable--;
        this.readableBytes -= this.len[i];
      } else this.writableBytes -= this.len[i];
    }
    this.count = first;
  }

  private grow(): void {
    const cap = this.len.length * 2;
    const region = new Int32Array(cap), offset = new Float64Array(cap), len = new Uint32Array(cap);
    region.set(this.region);
    offset.set(this.offset);
    len.set(this.len);
    this.region = region;
    this.offset = offset;
    this.len = len;
  }

  /**
   * Copy `len` bytes of the device-readable part, starting at readable byte
   * `at`, into `dst[dOff..]`. Returns the bytes copied (less than `len` when
   * the readable part ends first).
   */
  readTo(dst: Bytes, dOff: number, at: number, len: number): number {
    const bytes = this.mem.bytes;
    let done = 0;
    for (let i = 0; i < this.readable && done < len; i++) {
      const blen = this.len[i];
      if (at >= blen) {
        at -= blen;
        continue;
      }
      const n = Math.min(blen - at, len - done);
      copyBytes(dst, dOff + done, bytes[this.region[i]], this.offset[i] + at, n);
      done += n;
      at = 0;
    }
    return done;
  }

  /**
   * Copy `len` bytes from `src[sOff..]` into the device-writable part,
   * starting at writable byte `at`. Returns the writable position after the
   * last byte written (stops early when the writable part ends).
   */
  writeFrom(at: number, src: Bytes, sOff: number, len: number): number {
    const bytes = this.mem.bytes;
    let skip = at;
    for (let i = this.readable; i < this.count && len > 0; i++) {
      const blen = this.len[i];
      if (skip >= blen) {
        skip -= blen;
        continue;
      }
      const n = Math.min(blen - skip, len);
      copyBytes(bytes[this.region[i]], this.offset[i] + skip, src, sOff, n);
      skip = 0;
      sOff += n;
      len -= n;
      at += n;
    }
    return at;
  }

  /** Write one byte at writable byte `at` (e.g. a controlq ack, a num_buffers byte). Returns false past the end. */
  writeByte(at: number, value: number): boolean {
    for (let i = this.readable; i < this.count; i++) {
      const blen = this.len[i];
      if (at < blen) {
        this.mem.bytes[this.region[i]].u8[this.offset[i] + at] = value;
        return true;
      }
      at -= blen;
    }
    return false;
  }
}
