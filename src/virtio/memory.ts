/**
 * Guest memory: the address space that descriptor addresses point into
 * (spec v1.4 §2.7.5: `addr` is a guest physical address, 64-bit LE).
 *
 * One or more regions, each backed by its own ArrayBuffer/SharedArrayBuffer
 * (in the local transport one SharedArrayBuffer; under vhost-user one mmap'd
 * fd per region of the front-end's memory table). Every access is translated
 * through {@link GuestMemory.translate}: an `(addr, len)` that does not lie
 * wholly inside one region is a {@link GuestMemoryError}, never a clamped view.
 *
 * Addresses are JS numbers: exact below 2^53, which covers every address a
 * real guest uses; a 64-bit descriptor address is read as two u32 halves and
 * anything at or above 2^53 can match no region.
 */
import { bytesOf, type Bytes } from './copy.js';
import { GuestMemoryError } from './errors.js';

/** How one region is described, and what is posted to a worker to rebuild it. */
export interface RegionSpec {
  /** Guest physical address of the region's first byte. */
  guestPhysAddr: number;
  /** Length in bytes (> 0). */
  size: number;
  /** Backing store; the region starts at `bufferOffset` in it. */
  buffer: SharedArrayBuffer | ArrayBuffer;
  /** Byte offset of the region in `buffer` (multiple of 8). Default 0. */
  bufferOffset?: number;
  /** vhost-user: the front-end's virtual address of the region (ring addresses use it). */
  userAddr?: number;
}

/** Maximum regions; vhost-user's CONFIGURE_MEM_SLOTS allows up to 509. */
export const MAX_REGIONS = 509;

export class GuestMemory {
  /** Per region: byte and word views of the whole backing buffer. */
  readonly bytes: Bytes[] = [];
  /** Per region: guest physical start, end (exclusive), buffer offset, user address. */
  readonly start: Float64Array;
  readonly end: Float64Array;
  readonly base: Float64Array;
  readonly userStart: Float64Array;
  readonly specs: readonly RegionSpec[];
  /** Byte offset into `bytes[r]` computed by the last successful translate(). */
  off = 0;
  private last = 0;

  /**
   * @throws RangeError when regions are empty, overlap in guest physical
   * space, exceed their buffer, or are misaligned.
   */
  constructor(regions: readonly RegionSpec[]) {
    if (regions.length === 0) throw new RangeError('guest memory needs at least one region');
    if (regions.length > MAX_REGIONS) throw new RangeError(`at most ${MAX_REGIONS} regions`);
    const n = regions.length;
    this.start = new Float64Array(n);
    this.end = new Float64Array(n);
    this.base = new Float64Array(n);
    this.userStart = new Float64Array(n).fill(-1);
    regions.forEach((r, i) => {
      const off = r.bufferOffset ?? 0;
      if (!(r.size > 0) || !Number.isSafeInteger(r.size)) throw new RangeError(`region ${i}: size must be a positive integer`);
      // The region's end must be a safe integer too: then every address in it is
      // exact, and a rounded addr+len (>= 2^53) can never compare <= end.
      if (!Number.isSafeInteger(r.guestPhysAddr) || r.guestPhysAddr < 0 || !Number.isSafeInteger(r.guestPhysAddr + r.size))
        throw new RangeError(`region ${i}: bad guest physical address`);
      if (!Number.isSafeInteger(off) || off < 0 || off % 8 !== 0 || off + r.size > r.buffer.byteLength)
        throw new RangeError(`region ${i}: does not fit its buffer`);
      if (r.userAddr !== undefined && (!Number.isSafeInteger(r.userAddr) || r.userAddr < 0 || !Number.isSafeInteger(r.userAddr + r.size)))
        throw new RangeError(`region ${i}: bad user address`);
      this.bytes.push(bytesOf(r.buffer));
      this.start[i] = r.guestPhysAddr;
      this.end[i] = r.guestPhysAddr + r.size;
      this.base[i] = off;
      if (r.userAddr !== undefined) this.userStart[i] = r.userAddr;
    });
    for (let i = 0; i < n; i++)
      for (let j = i + 1; j < n; j++)
        if (this.start[i] < this.end[j] && this.start[j] < this.end[i])
          throw new RangeError(`regions ${i} and ${j} overlap in guest physical space`);
    this.specs = regions.map((r) => ({ ...r }));
  }

  get regionCount(): number {
    return this.start.length;
  }

  /**
   * Find the region holding all of `[addr, addr+len)`. Returns the region
   * index and leaves the byte offset into `bytes[index]` in {@link off};
   * returns -1 when no single region holds it. Hot path: no allocation.
   */
  find(addr: number, len: number): number {
    let r = this.last;
    const end = addr + len;
    if (addr >= this.start[r] && end <= this.end[r] && len >= 0) {
      this.off = this.base[r] + (addr - this.start[r]);
      return r;
    }
    const n = this.start.length;
    for (r = 0; r < n; r++) {
      if (addr >= this.start[r] && end <= this.end[r] && len >= 0) {
        this.last = r;
        this.off = this.base[r] + (addr - this.start[r]);
        return r;
      }
    }
    return -1;
  }

  /**
   * The region holding byte `addr` (for a buffer that continues into the
   * next region): its index, with the byte offset left in {@link off}; -1
   * when no region holds it. The piece ends at `end[index]`.
   */
  findStart(addr: number): number {
    const n = this.start.length;
    for (let r = 0; r < n; r++) {
      if (addr >= this.start[r] && addr < this.end[r]) {
        this.off = this.base[r] + (addr - this.start[r]);
        return r;
      }
    }
    return -1;
  }

  /** Like {@link find} but throws {@link GuestMemoryError} instead of returning -1. */
  translate(addr: number, len: number): number {
    const r = this.find(addr, len);
    if (r < 0) throw new GuestMemoryError(addr, len);
    return r;
  }

  /**
   * vhost-user: translate a front-end virtual address (as in SET_VRING_ADDR)
   * to a guest physical address. @throws GuestMemoryError when outside every region.
   */
  userToGuest(uaddr: number, len: number): number {
    for (let r = 0; r < this.start.length; r++) {
      const u = this.userStart[r];
      if (u >= 0 && len >= 0 && uaddr >= u && uaddr + len <= u + (this.end[r] - this.start[r])) return this.start[r] + (uaddr - u);
    }
    throw new GuestMemoryError(uaddr, len, 'is no front-end address inside the memory table');
  }

  /** A fresh copy of guest bytes (control path only). @throws GuestMemoryError */
  read(addr: number, len: number): Uint8Array {
    const r = this.translate(addr, len);
    return this.bytes[r].u8.slice(this.off, this.off + len);
  }

  /** Copy `data` into guest memory at `addr` (control path only). @throws GuestMemoryError */
  write(addr: number, data: Uint8Array): void {
    const r = this.translate(addr, data.length);
    this.bytes[r].u8.set(data, this.off);
  }
}
