/**
 * Typed-array views over a packed virtqueue's three parts (spec v1.4 §2.8),
 * made once per queue from its layout: both halves read and write the ring
 * and the two event suppression structures through these, as Int32 word
 * indexes into the region's whole buffer.
 */
import { QueueConfigError } from '../errors.js';
import type { GuestMemory } from '../memory.js';
import type { QueueLayout } from '../queue.js';
import { EVENT_SUPPRESS_BYTES, packedDescBytes } from './layout.js';

export class PackedRingViews {
  /** Descriptor ring: Int32 view of its region; `descW` = word index of descriptor 0 (4 words per descriptor). */
  readonly desc: Int32Array;
  readonly descW: number;
  /** Driver Event Suppression structure (driverAddr): one word, off_wrap | flags << 16. */
  readonly drvEvt: Int32Array;
  readonly drvEvtW: number;
  /** Device Event Suppression structure (deviceAddr): one word, off_wrap | flags << 16. */
  readonly devEvt: Int32Array;
  readonly devEvtW: number;

  /**
   * @param zero the driver zeroes all three parts at setup (§2.8.13: the ring is zero-initialized).
   * @throws GuestMemoryError when a part is not wholly inside one region; QueueConfigError when misaligned in it.
   */
  constructor(mem: GuestMemory, layout: QueueLayout, zero: boolean) {
    const part = (addr: number, bytes: number): number => {
      const r = mem.translate(addr, bytes);
      if ((mem.off & 3) !== 0) throw new QueueConfigError(`ring part at 0x${addr.toString(16)} is not word-aligned in its region`);
      if (zero) mem.bytes[r].u8.fill(0, mem.off, mem.off + bytes);
      return r;
    };
    let r = part(layout.descAddr, packedDescBytes(layout.size));
    this.desc = mem.bytes[r].i32;
    this.descW = mem.off >>> 2;
    r = part(layout.driverAddr, EVENT_SUPPRESS_BYTES);
    this.drvEvt = mem.bytes[r].i32;
    this.drvEvtW = mem.off >>> 2;
    r = part(layout.deviceAddr, EVENT_SUPPRESS_BYTES);
    this.devEvt = mem.bytes[r].i32;
    this.devEvtW = mem.off >>> 2;
  }
}
