/**
 * Split virtqueue layout (virtio spec v1.4 §2.7). All fields little-endian;
 * this code uses host-order typed arrays, so it requires a little-endian host
 * (checked at load time: every platform Node supports in practice is LE).
 *
 * | part            | size (bytes)   | alignment |
 * | descriptor table| 16 × size      | 16        |
 * | available ring  | 6 + 2 × size   | 2         |  flags u16, idx u16, ring[size] u16, used_event u16
 * | used ring       | 6 + 8 × size   | 4         |  flags u16, idx u16, ring[size] {id u32, len u32}, avail_event u16
 *
 * A descriptor (§2.7.5): addr u64 @0, len u32 @8, flags u16 @12, next u16 @14.
 */
import { QueueConfigError } from '../errors.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('virtio-mq needs a little-endian host');

/** §2.7.5 descriptor flags. */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** §2.7.6 available ring flag: driver asks for no used-buffer notifications. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8 used ring flag: device asks for no available-buffer notifications. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Largest split queue size (§2.7: Queue Size up to 32768). */
export const MAX_QUEUE_SIZE = 32768;

export const descTableBytes = (size: number): number => 16 * size;
export const availRingBytes = (size: number): number => 6 + 2 * size;
export const usedRingBytes = (size: number): number => 6 + 8 * size;

/** Where a split virtqueue's three parts sit, as guest physical addresses. */
export interface SplitQueueLayout {
  /** Queue Size: a power of two, 1..32768. */
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

/** @throws QueueConfigError for a size that is not a power of two in 1..32768 or a misaligned part (§2.7). */
export function checkLayout(l: SplitQueueLayout): void {
  const { size } = l;
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0)
    throw new QueueConfigError(`queue size ${size} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
  if (l.descAddr % 16 !== 0) throw new QueueConfigError(`descriptor table at 0x${l.descAddr.toString(16)} is not 16-byte aligned`);
  if (l.availAddr % 2 !== 0) throw new QueueConfigError(`available ring at 0x${l.availAddr.toString(16)} is not 2-byte aligned`);
  if (l.usedAddr % 4 !== 0) throw new QueueConfigError(`used ring at 0x${l.usedAddr.toString(16)} is not 4-byte aligned`);
}

/**
 * The spec's vring_need_event (§2.7.7.2 / §2.7.10): with event-index
 * suppression, notify when `event_idx` lies in [old, new). All u16 arithmetic.
 */
export function needEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Bytes needed to place one split queue contiguously (desc | avail | pad | used). */
export function splitQueueBytes(size: number): number {
  return alignUp(alignUp(descTableBytes(size) + availRingBytes(size), 4) + usedRingBytes(size), 16);
}

/** Lay one queue out contiguously at `base` (16-byte aligned). */
export function contiguousLayout(base: number, size: number): SplitQueueLayout {
  const descAddr = base;
  const availAddr = base + descTableBytes(size);
  const usedAddr = alignUp(availAddr + availRingBytes(size), 4);
  return { size, descAddr, availAddr, usedAddr };
}

export function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}
