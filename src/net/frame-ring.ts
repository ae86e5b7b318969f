/**
 * A single-producer single-consumer ring of frames in a SharedArrayBuffer:
 * how one queue pair's worker hands a frame to another pair's receiveq
 * (RSS or flow steering picked a different pair), and the bounded RX backlog
 * a pair keeps while its receiveq has no buffers.
 *
 * Layout: Int32 header [writePos, readPos, capacity] then `capacity` data
 * bytes. A record is a u32 length followed by the frame, padded to 4 bytes;
 * a length of 0xffffffff marks "wrap to 0". Positions are byte offsets in
 * [0, capacity); one record never straddles the end. The producer publishes
 * writePos with Atomics.store after writing the bytes; the consumer releases
 * space the same way through readPos.
 */
import { copyBytes, type Bytes } from '../virtio/copy.js';

const HDR = 16; // header bytes
const WRAP = -1;

export class FrameRing {
  readonly buffer: SharedArrayBuffer;
  private readonly h: Int32Array;
  private readonly cap: number;
  readonly bytes: Bytes;
  /** Offset and length of the frame returned by the last {@link peek}. */
  frameOff = 0;
  frameLen = 0;

  /** `capacity` in bytes (multiple of 4), or an existing ring's buffer. */
  constructor(capacityOrBuffer: number | SharedArrayBuffer) {
    if (typeof capacityOrBuffer === 'number') {
      const cap = Math.ceil(capacityOrBuffer / 4) * 4;
      this.buffer = new SharedArrayBuffer(HDR + cap);
      new Int32Array(this.buffer, 0, 4)[2] = cap;
    } else {
      this.buffer = capacityOrBuffer;
    }
    this.h = new Int32Array(this.buffer, 0, 4);
    this.cap = this.h[2];
    this.bytes = { u8: new Uint8Array(this.buffer), i32: new Int32Array(this.buffer) };
  }

  /**
   * Producer: append one frame. Returns false (nothing written) when there is
   * no room. A record never straddles the end, so an empty ring is only
   * guaranteed to take a record (4 + len rounded up to 4) of at most half its
   * capacity, less 2 bytes: size rings at least twice the largest frame.
   */
  push(src: Bytes, off: number, len: number): boolean {
    const need = 4 + ((len + 3) & ~3);
    const cap = this.cap;
    if (need > cap - 4) return false;
    let w = this.h[0];
    const r = Atomics.load(this.h, 1);
    const free = r > w ? r - w - 4 : cap - w + r - 4; // keep 4 bytes so full != empty
    if (w + need > cap) {
      // Not enough contiguous room at the end: wrap (needs room for the marker and the record at 0).
      if (r > w || r < need + 4) return false;
      if (cap - w >= 4) this.bytes.i32[(HDR + w) >> 2] = WRAP;
      w = 0;
    } else if (need > free) {
      return false;
    }
    this.bytes.i32[(HDR + w) >> 2] = len;
    copyBytes(this.bytes, HDR + w + 4, src, off, len);
    Atomics.store(this.h, 0, w + need === cap ? 0 : w + need);
    return true;
  }

  /** Consumer: is a frame waiting? If so its place is left in frameOff/frameLen (byte offsets in {@link bytes}). */
  peek(): boolean {
    let r = this.h[1];
    const w = Atomics.load(this.h, 0);
    if (r === w) return false;
    let len = this.bytes.i32[(HDR + r) >> 2];
    if (len === WRAP || this.cap - r < 4) {
      r = 0;
      if (r === w) return false;
      len = this.bytes.i32[HDR >> 2];
      Atomics.store(this.h, 1, 0);
    }
    this.frameOff = HDR + r + 4;
    this.frameLen = len;
    return true;
  }

  /** Consumer: release the frame returned by the last successful {@link peek}. */
  consume(): void {
    const r = this.frameOff - HDR - 4;
    const next = r + 4 + ((this.frameLen + 3) & ~3);
    Atomics.store(this.h, 1, next === this.cap ? 0 : next);
  }

  /**
   * Consumer: the number of frames waiting (walks the records from readPos to
   * writePos). For a consumer that takes over a ring another one left
   * non-empty, e.g. a restarted queue pair's worker and its RX backlog.
   */
  count(): number {
    const w = Atomics.load(this.h, 0);
    let r = this.h[1], n = 0;
    while (r !== w) {
      const len = this.bytes.i32[(HDR + r) >> 2];
      if (len === WRAP || this.cap - r < 4) {
        r = 0;
        continue;
      }
      n++;
      r += 4 + ((len + 3) & ~3);
      if (r === this.cap) r = 0;
    }
    return n;
  }

  /** Consumer side estimate: nothing waiting. */
  isEmpty(): boolean {
    return this.h[1] === Atomics.load(this.h, 0);
  }
}
