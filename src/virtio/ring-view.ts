/**
 * A read-only look at where a virtqueue stands, for operators (`virtio-mq
 * stats`, the live page): the device's own positions (as its worker last
 * published them, see {@link QueueState}) combined with what the driver has
 * written to guest memory. Never writes guest memory; never throws for a
 * ring outside guest memory (the fields read from memory are then null).
 *
 * - split (§2.7): `availIdx` is the driver's avail->idx (§2.7.6),
 *   `usedIdx` the device's used->idx (§2.7.8), `lastAvailIdx` the next
 *   available-ring entry the device reads. `pending` = availIdx −
 *   lastAvailIdx (buffers made available the device has not taken yet),
 *   `inFlight` = availIdx − usedIdx (buffers the driver gave and has not
 *   had back), all modulo 2^16.
 * - packed (§2.8): positions are descriptor-ring slots with their wrap
 *   counters (§2.8.1). `pending` counts descriptor slots from the device's
 *   available position that the driver has made available (AVAIL bit =
 *   wrap counter, USED bit ≠ wrap counter, §2.8.1); `inFlight` adds the
 *   slots the device took and has not marked used yet.
 */
import type { GuestMemory } from './memory.js';
import type { QueueLayout, QueueState } from './queue.js';

export interface RingView {
  format: 'split' | 'packed';
  /** Queue Size (descriptors). */
  size: number;
  /** split: avail->idx (u16) as the driver last wrote it; null when unreadable. */
  availIdx: number | null;
  /** split: used->idx (u16) in guest memory; null when unreadable. */
  usedIdx: number | null;
  /** split: next available-ring index the device reads (last_avail_idx, u16). */
  lastAvailIdx?: number;
  /** packed: next descriptor slot the device reads, and its wrap counter (0/1). */
  availPos?: number;
  availWrap?: number;
  /** packed: next descriptor slot the device writes as used, and its wrap counter. */
  usedPos?: number;
  usedWrap?: number;
  /** Made available, not yet taken by the device (buffers; packed: descriptor slots); null when unreadable. */
  pending: number | null;
  /** Made available, not yet used (returned) by the device; null when unreadable. */
  inFlight: number | null;
  /** inFlight / size, 0..1 (0 when unknown). */
  fill: number;
}

const AVAIL = 1 << 7;
const USED = 1 << 15;

/** The little-endian u16 at guest address `addr`, or null outside guest memory (no copy, never throws). */
function u16(mem: GuestMemory, addr: number): number | null {
  const r = mem.find(addr, 2);
  if (r < 0) return null;
  const u8 = mem.bytes[r].u8;
  return u8[mem.off] | (u8[mem.off + 1] << 8);
}

/**
 * The state of one ring. `dev` is the device's QueueState (split u16
 * indexes; packed position | wrap << 15).
 */
export function viewRing(mem: GuestMemory, layout: QueueLayout, dev: QueueState): RingView {
  const size = layout.size;
  if (layout.format === 'split') {
    const availIdx = u16(mem, layout.driverAddr + 2);
    const usedIdx = u16(mem, layout.deviceAddr + 2);
    const last = dev.avail & 0xffff;
    const pending = availIdx === null ? null : (availIdx - last) & 0xffff;
    const inFlight = availIdx === null || usedIdx === null ? null : (availIdx - usedIdx) & 0xffff;
    return { format: 'split', size, availIdx, usedIdx, lastAvailIdx: last, pending, inFlight, fill: inFlight === null ? 0 : Math.min(1, inFlight / size) };
  }
  const availPos = dev.avail & 0x7fff, availWrap = (dev.avail >> 15) & 1;
  const usedPos = dev.used & 0x7fff, usedWrap = (dev.used >> 15) & 1;
  // Slots the device has read and not yet written back as used.
  const taken = (availPos + (availWrap === usedWrap ? 0 : size) - usedPos + size * 2) % (size * 2);
  // The descriptor ring lies in one region (the transport checked it): read its flags in place.
  const r = mem.find(layout.descAddr, 16 * size);
  let pending: number | null = r < 0 ? null : 0;
  const u8 = r < 0 ? null : mem.bytes[r].u8, base = mem.off + 14;
  let pos = availPos, wrap = availWrap;
  for (let i = 0; u8 !== null && i < size; i++) {
    const flags = u8[base + 16 * pos] | (u8[base + 16 * pos + 1] << 8);
    const a = (flags & AVAIL) !== 0 ? 1 : 0, u = (flags & USED) !== 0 ? 1 : 0;
    if (a !== wrap || u === wrap) break;
    pending!++;
    if (++pos === size) {
      pos = 0;
      wrap ^= 1;
    }
  }
  const inFlight = pending === null ? null : Math.min(size, pending + taken);
  return {
    format: 'packed', size, availIdx: null, usedIdx: null, availPos, availWrap, usedPos, usedWrap,
    pending, inFlight, fill: inFlight === null ? 0 : Math.min(1, inFlight / size),
  };
}
