/**
 * Per-queue-pair packet capture, device side: a bounded single-producer
 * single-consumer ring of captured frames in a SharedArrayBuffer. The pair's
 * worker (the only producer) copies each frame it places in receiveqN or
 * takes from transmitqN into the ring; the main thread (the only consumer)
 * drains it to a pcapng file. The producer never waits: a frame that does
 * not fit is counted as a capture drop and the data path goes on.
 *
 * Layout (little-endian, as the host):
 * - bytes 0..31, Int32 words: [0] writePos, [1] readPos, [2] capacity (data
 *   bytes), [3] mask (bit 0 {@link CAPTURE_RX}, bit 1 {@link CAPTURE_TX}:
 *   which directions to capture, 0 = off), [4] snap length (bytes kept per
 *   frame, 1..65535).
 * - bytes 32..63, Float64 counters written by the producer only
 *   (monotonic, never reset): [0] RX frames captured, [1] TX frames
 *   captured, [2] RX capture drops, [3] TX capture drops.
 * - bytes 64.., the data: records of a 20-byte header (u32 captured length,
 *   u32 length on the wire, u32 direction 0 = RX / 1 = TX, u32 timestamp
 *   high and low words in microseconds since the Unix epoch) then the
 *   captured bytes padded to 4. A captured length of 0xffffffff marks "wrap
 *   to 0"; a record never straddles the end (as {@link FrameRing}).
 *
 * Direction is the driver's view, as the queue names say: RX = a frame the
 * device placed in receiveqN (host to guest), TX = a frame the driver put on
 * transmitqN (guest to host).
 */
import { copyBytes, type Bytes } from '../virtio/copy.js';

/** Mask bit: capture frames placed in receiveqN. */
export const CAPTURE_RX = 1;
/** Mask bit: capture frames taken from transmitqN. */
export const CAPTURE_TX = 2;
/** Record direction values. */
export const DIR_RX = 0;
export const DIR_TX = 1;

const W_WRITE = 0, W_READ = 1, W_CAP = 2, W_MASK = 3, W_SNAP = 4;
const CNT_OFF = 32;
const HDR = 64;
/** Record header bytes. */
const REC = 20;
const WRAP = -1;
const TWO32 = 4294967296;

/** Counter indexes (Float64 at byte 32). */
export const CaptureCount = { rxFrames: 0, txFrames: 1, rxDrops: 2, txDrops: 3 } as const;

export class CaptureRing {
  readonly buffer: SharedArrayBuffer;
  private readonly h: Int32Array;
  private readonly cap: number;
  private readonly bytes: Bytes;
  /** Monotonic counters (see {@link CaptureCount}). */
  readonly counts: Float64Array;
  /** Producer: directions captured this poll round (set by {@link refresh}). */
  rx = false;
  tx = false;
  private snap = 65535;
  // Consumer: the record returned by the last next().
  /** Byte offset of the captured bytes in {@link u8}. */
  dataOff = 0;
  capLen = 0;
  origLen = 0;
  dir = 0;
  tsHi = 0;
  tsLo = 0;
  readonly u8: Uint8Array;

  /** `capacity` data bytes (rounded up to 4, at least 4096), or an existing ring's buffer. */
  constructor(capacityOrBuffer: number | SharedArrayBuffer) {
    if (typeof capacityOrBuffer === 'number') {
      const cap = Math.max(4096, Math.ceil(capacityOrBuffer / 4) * 4);
      this.buffer = new SharedArrayBuffer(HDR + cap);
      const h = new Int32Array(this.buffer, 0, 8);
      h[W_CAP] = cap;
      h[W_SNAP] = 65535;
    } else {
      this.buffer = capacityOrBuffer;
    }
    this.h = new Int32Array(this.buffer, 0, 8);
    this.counts = new Float64Array(this.buffer, CNT_OFF, 4);
    this.cap = this.h[W_CAP];
    this.u8 = new Uint8Array(this.buffer);
    this.bytes = { u8: this.u8, i32: new Int32Array(this.buffer) };
  }

  // ---- control (main thread) ---------------------------------------------

  /** Which directions to capture (CAPTURE_RX | CAPTURE_TX, 0 = off) and the snap length (1..65535 bytes). */
  setMask(mask: number, snaplen = 65535): void {
    if (!(Number.isInteger(snaplen) && snaplen >= 1 && snaplen <= 65535)) throw new RangeError(`snap length ${snaplen} is outside 1..65535`);
    Atomics.store(this.h, W_SNAP, snaplen);
    Atomics.store(this.h, W_MASK, mask & (CAPTURE_RX | CAPTURE_TX));
  }

  get mask(): number {
    return Atomics.load(this.h, W_MASK);
  }

  // ---- producer (the pair's worker) ----------------------------------------

  /** Read the mask and snap length: once per poll round, so the per-frame check is a field read. */
  refresh(): void {
    const m = Atomics.load(this.h, W_MASK);
    this.rx = (m & CAPTURE_RX) !== 0;
    this.tx = (m & CAPTURE_TX) !== 0;
    this.snap = this.h[W_SNAP];
  }

  /**
   * Capture one frame (`len` bytes at `src[off..]`) in direction `dir`
   * (DIR_RX / DIR_TX). Never waits: without room the frame is counted as a
   * capture drop.
   */
  put(dir: number, src: Bytes, off: number, len: number): void {
    const cl = len < this.snap ? len : this.snap;
    const need = REC + ((cl + 3) & ~3);
    const cap = this.cap;
    let w = this.h[W_WRITE];
    const r = Atomics.load(this.h, W_READ);
    const free = r > w ? r - w - 4 : cap - w + r - 4; // keep 4 bytes so full != empty
    if (need > cap - 4) {
      this.counts[2 + dir]++;
      return;
    }
    if (w + need > cap) {
      if (r > w || r < need + 4) {
        this.counts[2 + dir]++;
        return;
      }
      if (cap - w >= 4) this.bytes.i32[(HDR + w) >> 2] = WRAP;
      w = 0;
    } else if (need > free) {
      this.counts[2 + dir]++;
      return;
    }
    const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
    const hi = Math.floor(us / TWO32);
    const i32 = this.bytes.i32;
    const wi = (HDR + w) >> 2;
    i32[wi] = cl;
    i32[wi + 1] = len;
    i32[wi + 2] = dir;
    i32[wi + 3] = hi;
    i32[wi + 4] = us - hi * TWO32;
    copyBytes(this.bytes, HDR + w + REC, src, off, cl);
    Atomics.store(this.h, W_WRITE, w + need === cap ? 0 : w + need);
    this.counts[dir]++;
  }

  // ---- consumer (main thread) ----------------------------------------------

  /** Is a record waiting? If so its fields are in dataOff, capLen, origLen, dir, tsHi, tsLo until {@link consume}. */
  next(): boolean {
    let r = this.h[W_READ];
    const w = Atomics.load(this.h, W_WRITE);
    if (r === w) return false;
    const i32 = this.bytes.i32;
    if (this.cap - r < 4 || i32[(HDR + r) >> 2] === WRAP) {
      r = 0;
      Atomics.store(this.h, W_READ, 0);
      if (r === w) return false;
    }
    const wi = (HDR + r) >> 2;
    this.capLen = i32[wi];
    this.origLen = i32[wi + 1] >>> 0;
    this.dir = i32[wi + 2];
    this.tsHi = i32[wi + 3] >>> 0;
    this.tsLo = i32[wi + 4] >>> 0;
    this.dataOff = HDR + r + REC;
    return true;
  }

  /** Release the record returned by the last successful {@link next}. */
  consume(): void {
    const r = this.dataOff - REC - HDR;
    const n = r + REC + ((this.capLen + 3) & ~3);
    Atomics.store(this.h, W_READ, n === this.cap ? 0 : n);
  }

  /** Consumer: drop everything waiting (stale records of an earlier capture). */
  discard(): void {
    Atomics.store(this.h, W_READ, Atomics.load(this.h, W_WRITE));
  }
}
