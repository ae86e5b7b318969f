/**
 * Worker thread serving one queue pair on the device side of the local
 * transport: builds the pair's rings over the shared guest memory and runs
 * {@link NetDevicePair.poll} until told to stop, busy-polling or sleeping on
 * its doorbell (notify mode, with EVENT_IDX suppression).
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { GuestMemory, type RegionSpec } from '../../virtio/memory.js';
import { SplitDeviceQueue } from '../../virtio/split/device.js';
import type { SplitQueueLayout } from '../../virtio/split/layout.js';
import { NetDevicePair, type PairNotifier } from '../../net/device-pair.js';
import { DevStat, DEV_STAT_COUNT } from '../../net/stats.js';
import { DeviceSteering } from '../../net/steering.js';
import type { RssConfig } from '../../net/rss.js';
import type { PairBackend } from '../../net/backend.js';
import { FrameRing } from './frame-ring.js';
import { CTL_ACTIVE_PAIRS, CTL_GEN, CTL_STOP, SharedControl } from './shared.js';
import { makeBackend, type BackendSpec } from './backends.js';
import { makeRxFilter, type FilterSpec } from './filter-spec.js';

export interface DeviceWorkerData {
  pair: number;
  maxPairs: number;
  regions: RegionSpec[];
  rx: SplitQueueLayout;
  tx: SplitQueueLayout;
  eventIdx: boolean;
  indirect: boolean;
  mrgRxbuf: boolean;
  hdrLen: number;
  maxFrame: number;
  mode: 'busy' | 'notify';
  budget: number;
  control: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  afs: SharedArrayBuffer;
  /** inboxes[p]: ring from pair p into this pair (inboxes[pair] is the backlog). */
  inboxes: SharedArrayBuffer[];
  /** outboxes[p]: ring from this pair into pair p. */
  outboxes: SharedArrayBuffer[];
  backend: BackendSpec;
  rss: RssConfig | null;
  filter: FilterSpec | null;
  port: MessagePort;
}

/** Control messages the main thread sends a device worker. */
export type DeviceWorkerMessage =
  | { type: 'rss'; cfg: RssConfig | null }
  | { type: 'filter'; spec: FilterSpec | null };

const d = workerData as DeviceWorkerData;
const mem = new GuestMemory(d.regions);
const ctl = new SharedControl(d.maxPairs, d.control);
const stats = new Float64Array(d.stats);
const statBase = d.pair * DEV_STAT_COUNT;
const opts = { eventIdx: d.eventIdx, indirect: d.indirect };
const rxq = new SplitDeviceQueue(mem, d.rx, { ...opts, index: 2 * d.pair });
const txq = new SplitDeviceQueue(mem, d.tx, { ...opts, index: 2 * d.pair + 1 });
const steering = new DeviceSteering(ctl.get(CTL_ACTIVE_PAIRS), d.afs);
steering.setRss(d.rss);
steering.setFilter(d.filter ? makeRxFilter(d.filter) : null);
const backend: PairBackend = makeBackend(d.backend, d.pair, d.maxPairs);
const notifier: PairNotifier = {
  notifyQueue: (q) => ctl.ring(ctl.drvBell(q >> 1)), // one driver worker owns both queues of a pair
  wakeDevice: (p) => ctl.ring(ctl.devBell(p)),
};
const inboxes = d.inboxes.map((b) => new FrameRing(b));
// The backlog is both this pair's inbox from itself and its outbox to itself: one object.
const outboxes = d.outboxes.map((b, p) => (p === d.pair ? inboxes[p] : new FrameRing(b)));
const dev = new NetDevicePair(
  mem, rxq, txq, backend, steering, inboxes, outboxes, notifier, stats, statBase,
  { pair: d.pair, hdrLen: d.hdrLen, mrgRxbuf: d.mrgRxbuf, maxFrame: d.maxFrame },
);
dev.onQueueError = (queue, err) => {
  parentPort?.postMessage({ type: 'queue-error', side: 'device', queue, code: (err as { code?: string }).code ?? 'ERROR', message: err.message });
};

let gen = ctl.get(CTL_GEN);
function control(): void {
  gen = ctl.get(CTL_GEN);
  steering.activePairs = ctl.get(CTL_ACTIVE_PAIRS);
  dev.active = d.pair < steering.activePairs;
  for (let m = receiveMessageOnPort(d.port); m; m = receiveMessageOnPort(d.port)) {
    const msg = m.message as DeviceWorkerMessage;
    if (msg.type === 'rss') steering.setRss(msg.cfg);
    else if (msg.type === 'filter') steering.setFilter(msg.spec ? makeRxFilter(msg.spec) : null);
  }
  Atomics.store(ctl.words, ctl.genAck(d.pair), gen); // the control plane may wait for this
}
control();

const words = ctl.words;
const bell = ctl.devBell(d.pair);
const busy = d.mode === 'busy';
const budget = d.budget;
for (;;) {
  if (Atomics.load(words, CTL_GEN) !== gen) control();
  if (Atomics.load(words, CTL_STOP) !== 0) break; // checked every round: a backend may never go idle
  const work = dev.poll(budget);
  if (work > 0) continue;
  if (busy) continue;
  const seen = Atomics.load(words, bell);
  dev.enableNotifications();
  if (dev.hasWork()) continue;
  if (Atomics.wait(words, bell, seen, 50) !== 'timed-out') stats[statBase + DevStat.kicks]++;
}
backend.close?.();
parentPort?.postMessage({ type: 'exit', pair: d.pair });
