/**
 * Picks the queue implementation once per negotiated feature set (spec v1.4
 * §2.7 split, §2.8 packed; VIRTIO_F_RING_PACKED, EVENT_IDX, IN_ORDER,
 * INDIRECT_DESC), as DPDK picks its burst functions: a worker builds its
 * queues here and its hot loop only ever sees that one class. Also the
 * format-neutral layout arithmetic the transports need (part sizes, a
 * contiguous layout, the size rule).
 */
import type { GuestMemory } from './memory.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED } from './features.js';
import type { DeviceQueue, DriverQueue, QueueLayout, QueueOptions, RingFeatures, RingFormat } from './queue.js';
import { SplitDeviceQueue } from './split/device.js';
import { StrictSplitDeviceQueue } from './split/strict-device.js';
import { SplitDriverQueue } from './split/driver.js';
import { availRingBytes, descTableBytes, splitQueueBytes, usedRingBytes, MAX_QUEUE_SIZE, type SplitQueueLayout } from './split/layout.js';
import { PackedDeviceQueue } from './packed/device.js';
import { LoggedDeviceQueue } from './logged-queue.js';
import { PackedDriverQueue } from './packed/driver.js';
import { EVENT_SUPPRESS_BYTES, packedDescBytes, packedQueueBytes, contiguousPackedLayout } from './packed/layout.js';
import { InflightSplitDeviceQueue } from './inflight/split-device.js';
import { InflightPackedDeviceQueue } from './inflight/packed-device.js';
import type { InflightSlot } from './inflight/region.js';
import type { InflightDeviceQueue } from './inflight/restore.js';

export { MAX_QUEUE_SIZE };

/** The ring features in a negotiated feature set. */
export function ringFeatures(f: bigint): RingFeatures {
  return {
    packed: (f & VIRTIO_F_RING_PACKED) !== 0n,
    eventIdx: (f & VIRTIO_F_EVENT_IDX) !== 0n,
    inOrder: (f & VIRTIO_F_IN_ORDER) !== 0n,
    indirect: (f & VIRTIO_F_INDIRECT_DESC) !== 0n,
  };
}

/** The ring format a feature set selects. */
export function ringFormat(f: bigint): RingFormat {
  return (f & VIRTIO_F_RING_PACKED) !== 0n ? 'packed' : 'split';
}

function splitLayout(l: QueueLayout): SplitQueueLayout {
  return { size: l.size, descAddr: l.descAddr, availAddr: l.driverAddr, usedAddr: l.deviceAddr };
}

/**
 * The device half for `layout.format`; with `opts.dirtyLog` (live migration)
 * wrapped in the {@link LoggedDeviceQueue} that marks every write in the log.
 * @throws QueueConfigError (size, alignment), GuestMemoryError (a part outside guest memory).
 */
export function createDeviceQueue(mem: GuestMemory, layout: QueueLayout, opts: QueueOptions): DeviceQueue {
  if (opts.dirtyLog) return withDirtyLog(createDeviceQueue(mem, layout, { ...opts, dirtyLog: undefined }), mem, layout, opts);
  if (layout.format === 'packed') return new PackedDeviceQueue(mem, layout, opts);
  return opts.strict ? new StrictSplitDeviceQueue(mem, splitLayout(layout), opts) : new SplitDeviceQueue(mem, splitLayout(layout), opts);
}

/**
 * `q` (any device queue of `layout`, inflight-tracking ones included) wrapped
 * in the {@link LoggedDeviceQueue} that marks its writes in `opts.dirtyLog`;
 * `q` itself without one.
 */
export function withDirtyLog(q: DeviceQueue, mem: GuestMemory, layout: QueueLayout, opts: QueueOptions): DeviceQueue {
  return opts.dirtyLog ? new LoggedDeviceQueue(q, mem, layout, opts.eventIdx, opts.dirtyLog) : q;
}

/**
 * The device half for `layout.format` with inflight I/O tracking in `slot`
 * (vhost-user VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD; inflight/region.ts).
 * Picked once, like the others: a queue without tracking never pays for it.
 * `opts.strict` is not combined with tracking.
 * @throws QueueConfigError, GuestMemoryError, InflightError (the ring does not fit the slot)
 */
export function createInflightDeviceQueue(mem: GuestMemory, layout: QueueLayout, opts: QueueOptions, slot: InflightSlot): InflightDeviceQueue {
  if (layout.format === 'packed') return new InflightPackedDeviceQueue(mem, layout, opts, slot);
  return new InflightSplitDeviceQueue(mem, splitLayout(layout), opts, slot);
}

/**
 * The driver half for `layout.format`; zeroes the queue's parts.
 * @throws QueueConfigError, GuestMemoryError
 */
export function createDriverQueue(mem: GuestMemory, layout: QueueLayout, opts: QueueOptions): DriverQueue {
  return layout.format === 'packed' ? new PackedDriverQueue(mem, layout, opts) : new SplitDriverQueue(mem, splitLayout(layout), opts);
}

/** Bytes of each part: descriptor table/ring, driver area, device area (§2.7, §2.8.10). */
export function queuePartBytes(format: RingFormat, size: number): { desc: number; driver: number; device: number } {
  return format === 'packed'
    ? { desc: packedDescBytes(size), driver: EVENT_SUPPRESS_BYTES, device: EVENT_SUPPRESS_BYTES }
    : { desc: descTableBytes(size), driver: availRingBytes(size), device: usedRingBytes(size) };
}

/** Bytes to place one queue contiguously (see {@link contiguousQueueLayout}). */
export function queueBytes(format: RingFormat, size: number): number {
  return format === 'packed' ? packedQueueBytes(size) : splitQueueBytes(size);
}

/** Lay one queue out contiguously at `base` (16-byte aligned guest physical address). */
export function contiguousQueueLayout(format: RingFormat, base: number, size: number): QueueLayout {
  if (format === 'packed') return contiguousPackedLayout(base, size);
  const descAddr = base;
  const driverAddr = base + descTableBytes(size);
  const deviceAddr = Math.ceil((driverAddr + availRingBytes(size)) / 4) * 4;
  return { format, size, descAddr, driverAddr, deviceAddr };
}

/**
 * Why `size` is not a valid Queue Size for `format`, or null: split needs a
 * power of two in 1..32768 (§2.7), packed any size in 1..32768 (§2.8.10.1).
 */
export function queueSizeProblem(format: RingFormat, size: number, max = MAX_QUEUE_SIZE): string | null {
  if (!Number.isInteger(size) || size < 1 || size > max) return `queue size ${size} is outside 1..${max}`;
  if (format === 'split' && (size & (size - 1)) !== 0) return `queue size ${size} is not a power of two (split ring)`;
  return null;
}
