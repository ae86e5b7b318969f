/**
 * Builds one queue pair's device side inside its worker, the same for every
 * transport (local and vhost-user): guest memory over the posted regions,
 * the receiveq/transmitq device halves, steering, the netdev, the inboxes
 * from the other pairs, and the {@link NetDevicePair} that runs them. Only
 * the notifications differ per transport (the `notifier`).
 */
import { GuestMemory, type RegionSpec } from '../virtio/memory.js';
import type { DeviceQueue, QueueLayout, QueueState, RingFeatures } from '../virtio/queue.js';
import { createDeviceQueue, createInflightDeviceQueue, withDirtyLog } from '../virtio/ring.js';
import type { InflightRestore } from '../virtio/inflight/restore.js';
import { DirtyLog } from '../virtio/dirty-log.js';
import { NetDevicePair, type PairNotifier } from '../net/device-pair.js';
import { DEV_STAT_COUNT } from '../net/stats.js';
import { DeviceSteering } from '../net/steering.js';
import type { RssConfig } from '../net/rss.js';
import type { Netdev } from '../net/netdev.js';
import { FrameRing } from '../net/frame-ring.js';
import { CaptureRing } from '../net/capture-ring.js';
import { makeNetdev, type NetdevSpec } from '../netdev/spec.js';

/** What every device-side pair worker is given (structured-clonable). */
export interface DevicePairData {
  pair: number;
  maxPairs: number;
  regions: RegionSpec[];
  rx: QueueLayout;
  tx: QueueLayout;
  /** The negotiated ring features: they pick the queue implementation. */
  rings: RingFeatures;
  mrgRxbuf: boolean;
  hdrLen: number;
  /** VIRTIO_NET_F_CSUM negotiated: the driver may send partial checksums and GSO frames (offloads.ts). */
  txOffload?: boolean;
  /** RX_OFFLOAD_* bits the driver accepts (offloads.ts). */
  rxOffloads?: number;
  /** Largest frame without header the transmitqs carry (bytes): 14 + MTU (+ 4 VLAN), or 64 KiB with GSO. Default 65535. */
  maxFrame?: number;
  /** Per-pair device counters (DEV_STAT_COUNT each). */
  stats: SharedArrayBuffer;
  /** The automatic flow steering table shared by all pairs. */
  afs: SharedArrayBuffer;
  /** inboxes[p]: FrameRing from pair p into this pair (inboxes[pair] is the backlog). */
  inboxes: SharedArrayBuffer[];
  /** outboxes[p]: FrameRing from this pair into pair p. */
  outboxes: SharedArrayBuffer[];
  netdev: NetdevSpec;
  rss: RssConfig | null;
  /** This pair's capture ring (transport/capture.ts), if the process can capture. */
  capture?: SharedArrayBuffer;
  /** --strict: the strict-only conformance checks (virtio/conformance.ts) in the device queues. */
  strict?: boolean;
  /**
   * Inflight I/O tracking (vhost-user INFLIGHT_SHMFD): the mapped inflight
   * buffer, the queue_size its regions were made for, and the byte offsets
   * of the receiveq's and transmitq's regions (virtio/inflight/region.ts).
   */
  inflight?: { buffer: SharedArrayBuffer; queueSize: number; rx: number; tx: number };
  /**
   * Live migration (vhost-user VHOST_F_LOG_ALL with a SET_LOG_BASE log): the
   * shared dirty log (`size` bytes from `offset` in `buffer`) and, per ring,
   * where used-ring byte 0 is logged (log_guest_addr with VHOST_VRING_F_LOG,
   * or -1: the ring's guest address). The queues become logging ones.
   */
  dirtyLog?: { buffer: SharedArrayBuffer; offset: number; size: number; rxUsedLogAddr: number; txUsedLogAddr: number };
}

export interface BuiltDevicePair {
  dev: NetDevicePair;
  rxq: DeviceQueue;
  txq: DeviceQueue;
  steering: DeviceSteering;
  netdev: Netdev;
  /** With inflight tracking: what starting on the regions did (receiveq requeued, transmitq completed). */
  inflight?: { rx: InflightRestore; tx: InflightRestore };
}

/**
 * @param bases ring positions to start from (vhost-user SET_VRING_BASE); default 0.
 * @throws QueueConfigError / GuestMemoryError when a ring does not fit guest memory;
 *   InflightError when a ring does not fit its inflight region or the region is corrupt.
 */
export function buildDevicePair(
  d: DevicePairData,
  activePairs: number,
  notifier: PairNotifier,
  bases?: { rx: QueueState; tx: QueueState },
): BuiltDevicePair {
  const mem = new GuestMemory(d.regions);
  const inf = d.inflight;
  // Live migration: every write the queues make is marked in the shared dirty log (a wrapper, picked once).
  const log = d.dirtyLog ? new DirtyLog(d.dirtyLog.buffer, d.dirtyLog.offset, d.dirtyLog.size) : undefined;
  const rxOpts = { ...d.rings, index: 2 * d.pair, strict: d.strict, dirtyLog: log && { log, usedLogAddr: d.dirtyLog!.rxUsedLogAddr } };
  const txOpts = { ...d.rings, index: 2 * d.pair + 1, strict: d.strict, dirtyLog: log && { log, usedLogAddr: d.dirtyLog!.txUsedLogAddr } };
  const rxi = inf ? createInflightDeviceQueue(mem, d.rx, rxOpts, { buffer: inf.buffer, offset: inf.rx, queueSize: inf.queueSize }) : null;
  const txi = inf ? createInflightDeviceQueue(mem, d.tx, txOpts, { buffer: inf.buffer, offset: inf.tx, queueSize: inf.queueSize }) : null;
  const rxq = rxi ? withDirtyLog(rxi, mem, d.rx, rxOpts) : createDeviceQueue(mem, d.rx, rxOpts);
  const txq = txi ? withDirtyLog(txi, mem, d.tx, txOpts) : createDeviceQueue(mem, d.tx, txOpts);
  if (bases) {
    rxq.setState(bases.rx);
    txq.setState(bases.tx);
  }
  // After a restart the transmitq's chains in flight are completed unsent (a frame never goes out twice) and
  // the receiveq's are offered again (the driver never saw them filled): vhost-user.rst "Inflight I/O tracking".
  const restored = rxi && txi ? { rx: rxi.restoreInflight('requeue'), tx: txi.restoreInflight('complete') } : undefined;
  if (restored?.tx.notify) notifier.notifyQueue(2 * d.pair + 1);
  const steering = new DeviceSteering(activePairs, d.afs);
  steering.setRss(d.rss);
  const netdev = makeNetdev(d.netdev, d.pair, d.maxPairs);
  const inboxes = d.inboxes.map((b) => new FrameRing(b));
  // The backlog is both this pair's inbox from itself and its outbox to itself: one object.
  const outboxes = d.outboxes.map((b, p) => (p === d.pair ? inboxes[p] : new FrameRing(b)));
  const dev = new NetDevicePair(mem, rxq, txq, netdev, steering, inboxes, outboxes, notifier, new Float64Array(d.stats), d.pair * DEV_STAT_COUNT, {
    pair: d.pair, hdrLen: d.hdrLen, mrgRxbuf: d.mrgRxbuf, maxFrame: d.maxFrame ?? 65535,
    txOffload: d.txOffload === true, rxOffloads: d.rxOffloads ?? 0,
  });
  dev.active = d.pair < activePairs;
  if (d.capture) dev.tap = new CaptureRing(d.capture);
  return { dev, rxq, txq, steering, netdev, inflight: restored };
}
