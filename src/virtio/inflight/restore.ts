/**
 * What a device queue with inflight tracking did when it started on an
 * inflight region (vhost-user.rst "Inflight I/O tracking", "When
 * reconnecting"), and the interface both ring formats' tracking queues add
 * to {@link DeviceQueue}.
 */
import type { DeviceQueue } from '../queue.js';

export interface InflightRestore {
  /** The region was never used (version 0) and was laid out now: nothing to recover. */
  fresh: boolean;
  /** Chains the dead back-end had taken and not returned: completed (len 0) or requeued. */
  chains: number;
  /** The completions published want a used-buffer notification. */
  notify: boolean;
}

/**
 * How a queue's chains in flight are resolved after a restart:
 * `complete` returns them used with length 0 without processing them again
 * (at most once: a net transmitq's frame is never sent twice); `requeue`
 * gives them back to be popped again (a receiveq's buffers, which the driver
 * has not seen filled).
 */
export type InflightMode = 'complete' | 'requeue';

export interface InflightDeviceQueue extends DeviceQueue {
  /** @throws InflightError for a region this ring cannot have written. */
  restoreInflight(mode: InflightMode): InflightRestore;
}
