/**
 * Builds one queue pair's device side inside its worker, the same for every
 * transport (local and vhost-user): guest memory over the posted regions,
 * the receiveq/transmitq device halves, steering, the netdev, the inboxes
 * from the other pairs, and the {@link NetDevicePair} that runs them. Only
 * the notifications differ per transport (the `notifier`).
 */
import { GuestMemory, type RegionSpec } from '../virtio/memory.js';
import { SplitDeviceQueue } from '../virtio/split/device.js';
import type { SplitQueueLayout } from '../virtio/split/layout.js';
import { NetDevicePair, type PairNotifier } from '../net/device-pair.js';
import { DEV_STAT_COUNT } from '../net/stats.js';
import { DeviceSteering } from '../net/steering.js';
import type { RssConfig } from '../net/rss.js';
import type { PairBackend } from '../net/backend.js';
import { FrameRing } from './frame-ring.js';
import { makeBackend, type BackendSpec } from '../netdev/spec.js';

/** What every device-side pair worker is given (structured-clonable). */
export interface DevicePairData {
  pair: number;
  maxPairs: number;
  regions: RegionSpec[];
  rx: SplitQueueLayout;
  tx: SplitQueueLayout;
  eventIdx: boolean;
  indirect: boolean;
  mrgRxbuf: boolean;
  hdrLen: number;
  /** Per-pair device counters (DEV_STAT_COUNT each). */
  stats: SharedArrayBuffer;
  /** The automatic flow steering table shared by all pairs. */
  afs: SharedArrayBuffer;
  /** inboxes[p]: FrameRing from pair p into this pair (inboxes[pair] is the backlog). */
  inboxes: SharedArrayBuffer[];
  /** outboxes[p]: FrameRing from this pair into pair p. */
  outboxes: SharedArrayBuffer[];
  backend: BackendSpec;
  rss: RssConfig | null;
}

export interface BuiltDevicePair {
  dev: NetDevicePair;
  rxq: SplitDeviceQueue;
  txq: SplitDeviceQueue;
  steering: DeviceSteering;
  backend: PairBackend;
}

/**
 * @param bases ring positions to start from (vhost-user SET_VRING_BASE); default 0.
 * @throws QueueConfigError / GuestMemoryError when a ring does not fit guest memory.
 */
export function buildDevicePair(
  d: DevicePairData,
  activePairs: number,
  notifier: PairNotifier,
  bases?: { rx: { avail: number; used: number }; tx: { avail: number; used: number } },
): BuiltDevicePair {
  const mem = new GuestMemory(d.regions);
  const opts = { eventIdx: d.eventIdx, indirect: d.indirect };
  const rxq = new SplitDeviceQueue(mem, d.rx, { ...opts, index: 2 * d.pair });
  const txq = new SplitDeviceQueue(mem, d.tx, { ...opts, index: 2 * d.pair + 1 });
  if (bases) {
    rxq.setBase(bases.rx.avail, bases.rx.used);
    txq.setBase(bases.tx.avail, bases.tx.used);
  }
  const steering = new DeviceSteering(activePairs, d.afs);
  steering.setRss(d.rss);
  const backend = makeBackend(d.backend, d.pair, d.maxPairs);
  const inboxes = d.inboxes.map((b) => new FrameRing(b));
  // The backlog is both this pair's inbox from itself and its outbox to itself: one object.
  const outboxes = d.outboxes.map((b, p) => (p === d.pair ? inboxes[p] : new FrameRing(b)));
  const dev = new NetDevicePair(mem, rxq, txq, backend, steering, inboxes, outboxes, notifier, new Float64Array(d.stats), d.pair * DEV_STAT_COUNT, {
    pair: d.pair, hdrLen: d.hdrLen, mrgRxbuf: d.mrgRxbuf, maxFrame: 65535,
  });
  dev.active = d.pair < activePairs;
  return { dev, rxq, txq, steering, backend };
}
