/**
 * Packed virtqueue layout (virtio spec v1.4 §2.8). All fields little-endian;
 * like the split ring this code uses host-order typed arrays (little-endian
 * hosts only, checked in split/layout.ts and again here).
 *
 * | part                      | size (bytes) | alignment |
 * | descriptor ring           | 16 × size    | 16        |
 * | driver event suppression  | 4            | 4         |  le16 off_wrap, le16 flags (§2.8.14)
 * | device event suppression  | 4            | 4         |
 *
 * A descriptor (§2.8.13): addr u64 @0, len u32 @8, id u16 @12, flags u16 @14.
 * As Int32 words: w0 = addr low, w1 = addr high, w2 = len, w3 = id | flags << 16,
 * so one Atomics.store / Atomics.load of w3 publishes / reads id and flags together.
 * An event suppression structure is one Int32 word: off_wrap | flags << 16.
 */
import { QueueConfigError } from '../errors.js';
import type { QueueLayout } from '../queue.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('virtio-mq needs a little-endian host');

/** §2.8.6 descriptor flags (same values as the split ring's). */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** §2.8.1: available / used marks, compared against the ring wrap counters. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;

/** §2.8.10 Descriptor Ring Change Event Flags. */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Only valid with VIRTIO_F_EVENT_IDX: notify when the descriptor at off_wrap is made available / used. */
export const RING_EVENT_FLAGS_DESC = 2;

/** Bit 15 of off_wrap and of a packed {@link QueueState} value: the wrap counter. */
export const WRAP_SHIFT = 15;
/** Bits 0-14: a ring position. */
export const POS_MASK = 0x7fff;

/** §2.8: packed virtqueues have up to 2^15 entries; any size, not only powers of two (§2.8.10.1). */
export const MAX_PACKED_QUEUE_SIZE = 32768;

/**
 * How many chains (device `pending()`) or used entries (driver
 * `usedPending()`) a scan counts at most: the counts are "up to this many".
 */
export const SCAN_LIMIT = 64;

/** Bytes of the descriptor ring of a `size`-entry queue (§2.8.10.1). */
export const packedDescBytes = (size: number): number => 16 * size;
/** Bytes of one event suppression structure (§2.8.10.1, §2.8.14). */
export const EVENT_SUPPRESS_BYTES = 4;

/**
 * Check a packed layout (§2.8.10.1, §2.8.10.2).
 * @throws QueueConfigError when `format` is not 'packed', the size is not an
 * integer in 1..32768, or a part is misaligned (ring 16 bytes, event areas 4).
 */
export function checkPackedLayout(layout: QueueLayout): void {
  const { size } = layout;
  if (layout.format !== 'packed') throw new QueueConfigError(`layout format '${layout.format}' is not 'packed'`);
  if (!Number.isInteger(size) || size < 1 || size > MAX_PACKED_QUEUE_SIZE)
    throw new QueueConfigError(`packed queue size ${size} is not an integer in 1..${MAX_PACKED_QUEUE_SIZE}`);
  for (const [name, addr, align] of [
    ['descriptor ring', layout.descAddr, 16],
    ['driver event suppression area', layout.driverAddr, 4],
    ['device event suppression area', layout.deviceAddr, 4],
  ] as const) {
    if (!Number.isSafeInteger(addr) || addr < 0) throw new QueueConfigError(`${name} address ${addr} is not a guest physical address`);
    if (addr % align !== 0) throw new QueueConfigError(`${name} at 0x${addr.toString(16)} is not ${align}-byte aligned`);
  }
}

/** Bytes needed to place one packed queue contiguously (ring | driver area | device area), rounded up to 16. */
export function packedQueueBytes(size: number): number {
  return Math.ceil((packedDescBytes(size) + 2 * EVENT_SUPPRESS_BYTES) / 16) * 16;
}

/** Lay one packed queue out contiguously at `base` (16-byte aligned): ring, then driver area, then device area. */
export function contiguousPackedLayout(base: number, size: number): QueueLayout {
  const descAddr = base;
  const driverAddr = base + packedDescBytes(size);
  return { format: 'packed', size, descAddr, driverAddr, deviceAddr: driverAddr + EVENT_SUPPRESS_BYTES };
}

/**
 * Event-index decision for a packed ring (§2.8.10, RING_EVENT_FLAGS_DESC),
 * as Linux `virtqueue_kick_prepare_packed` and DPDK `vhost_vring_call_packed`
 * compute it: the side that just moved its position forward by `n`
 * descriptors (1..size) to ring position `pos` with wrap counter `wrap`
 * notifies when the descriptor named by `offWrap` (bits 0-14 offset, bit 15
 * wrap counter) lies in the `n` positions it just passed.
 *
 * The event offset is converted to the current lap: with a different wrap
 * counter it is in the previous lap (offset - size); then the split ring's
 * vring_need_event window test is applied in u16 arithmetic.
 */
export function packedNeedEvent(offWrap: number, pos: number, wrap: number, n: number, size: number): boolean {
  let ev = offWrap & POS_MASK;
  if (((offWrap >>> WRAP_SHIFT) & 1) !== wrap) ev -= size;
  return ((pos - ev - 1) & 0xffff) < n;
}
