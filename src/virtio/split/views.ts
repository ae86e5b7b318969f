/**
 * Typed-array views over a split virtqueue's three parts (spec v1.4 §2.7),
 * made once per queue from its layout: both halves read and write the rings
 * through these, as word/half-word indexes into the region's whole buffer.
 */
import { QueueConfigError } from '../errors.js';
import type { GuestMemory } from '../memory.js';
import { availRingBytes, descTableBytes, usedRingBytes, type SplitQueueLayout } from './layout.js';

export class SplitRingViews {
  /** Descriptor table: Int32 view of its region; `descW` = word index of entry 0 (4 words per entry). */
  readonly desc: Int32Array;
  readonly descW: number;
  /** Available ring: u16 view; `availH` = index of `flags` (idx +1, ring +2, used_event +2+size). */
  readonly avail: Uint16Array;
  readonly availH: number;
  /** Used ring: u16 view (`usedH` = index of `flags`; idx +1; avail_event +2+4·size) and u32 view of the elements (`usedElemW` = word of ring[0].id). */
  readonly used16: Uint16Array;
  readonly usedH: number;
  readonly used32: Uint32Array;
  readonly usedElemW: number;

  /**
   * @param zero the driver zeroes all three parts at setup (§2.7.8: used flags start at 0).
   * @throws GuestMemoryError when a part is not wholly inside one region; QueueConfigError when misaligned in it.
   */
  constructor(mem: GuestMemory, layout: SplitQueueLayout, zero: boolean) {
    const size = layout.size;
    const buf = (r: number) => mem.bytes[r].u8.buffer;
    const part = (addr: number, bytes: number): number => {
      const r = mem.translate(addr, bytes);
      if (zero) mem.bytes[r].u8.fill(0, mem.off, mem.off + bytes);
      return r;
    };
    let r = part(layout.descAddr, descTableBytes(size));
    this.desc = mem.bytes[r].i32;
    this.descW = mem.off / 4;
    r = part(layout.availAddr, availRingBytes(size));
    this.avail = new Uint16Array(buf(r), 0, buf(r).byteLength >>> 1);
    this.availH = mem.off / 2;
    r = part(layout.usedAddr, usedRingBytes(size));
    this.used16 = new Uint16Array(buf(r), 0, buf(r).byteLength >>> 1);
    this.usedH = mem.off / 2;
    this.used32 = new Uint32Array(buf(r), 0, buf(r).byteLength >>> 2);
    this.usedElemW = mem.off / 4 + 1;
    if (!Number.isInteger(this.descW) || !Number.isInteger(this.availH) || !Number.isInteger(this.usedElemW))
      throw new QueueConfigError('ring not aligned in its region');
  }
}
