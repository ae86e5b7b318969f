/**
 * What a virtio driver sees of its device through a transport (spec v1.4
 * §4: PCI common configuration, MMIO registers, or vhost-user messages):
 * feature words, device status, config space, queue setup and notifications.
 */
import type { QueueLayout } from './queue.js';

export interface VirtioTransport {
  /** Device feature bits (§2.2). */
  deviceFeatures(): bigint;
  /** Driver feature bits: written before FEATURES_OK (§3.1.1 step 5). */
  setDriverFeatures(features: bigint): void;
  /** Device status (§2.1). */
  getStatus(): number;
  setStatus(status: number): void;
  /** Device-specific configuration space (§4.1.4.6 / §5.1.4 for net). */
  readConfig(): Uint8Array;
  /** Virtqueues the device has (§4.1.4.3 num_queues). */
  numQueues(): number;
  /** Largest Queue Size the device accepts for queue `index`. */
  queueMaxSize(index: number): number;
  /** Tell the device where queue `index` lives and enable it (§4.1.5.1.3). */
  setQueue(index: number, layout: QueueLayout): void;
  /** Available-buffer notification for queue `index` (§2.9). */
  notify(index: number): void;
}
