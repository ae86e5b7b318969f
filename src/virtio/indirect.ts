/**
 * Access to an indirect descriptor table (spec v1.4 §2.7.5.3 split, §2.8.8
 * packed): 16-byte entries read as four little-endian u32 words. The spec
 * asks no alignment of the table, and a table may cross from one guest
 * memory region into the next; such a table is copied into a scratch buffer
 * first (rare), an aligned one in one region is read in place.
 */
import type { GuestMemory } from './memory.js';

export class IndirectTable {
  /** Words of the table: entry i's words are `words[base + 4i .. base + 4i + 3]`. */
  words: Int32Array = new Int32Array(0);
  base = 0;
  private scratch: Int32Array = new Int32Array(0);
  private scratch8: Uint8Array = new Uint8Array(0);

  constructor(private readonly mem: GuestMemory) {}

  /**
   * Point {@link words}/{@link base} at the table `[addr, addr+len)` (guest
   * physical; `len` a multiple of 16). Returns false when any byte of it lies
   * outside guest memory.
   */
  load(addr: number, len: number): boolean {
    const mem = this.mem;
    const r = mem.find(addr, len);
    if (r >= 0 && (mem.off & 3) === 0) {
      this.words = mem.bytes[r].i32;
      this.base = mem.off >>> 2;
      return true;
    }
    if (this.scratch8.length < len) {
      this.scratch8 = new Uint8Array(Math.max(len, 2 * this.scratch8.length));
      this.scratch = new Int32Array(this.scratch8.buffer);
    }
    if (r >= 0) {
      this.scratch8.set(mem.bytes[r].u8.subarray(mem.off, mem.off + len));
    } else {
      let at = addr, done = 0;
      while (done < len) {
        const p = mem.findStart(at);
        if (p < 0) return false;
        const n = Math.min(len - done, mem.end[p] - at);
        this.scratch8.set(mem.bytes[p].u8.subarray(mem.off, mem.off + n), done);
        done += n;
        at += n;
      }
    }
    this.words = this.scratch;
    this.base = 0;
    return true;
  }
}
