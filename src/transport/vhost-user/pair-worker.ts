/**
 * Worker thread serving one queue pair of the vhost-user back-end: the same
 * {@link NetDevicePair} as the local transport, with the front-end's
 * notifications as eventfds (vhost-user.rst "Ring states", "Kick and call"):
 * it sleeps in poll(2) on the two kick fds, its wake fd and the netdev's fds,
 * and signals a call fd when the driver wants a used-buffer notification
 * (EVENT_IDX honoured by NetDevicePair). On stop it reports where each ring
 * stands, which GET_VRING_BASE returns.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { GuestMemory, type RegionSpec } from '../../virtio/memory.js';
import { SplitDeviceQueue } from '../../virtio/split/device.js';
import type { SplitQueueLayout } from '../../virtio/split/layout.js';
import { NetDevicePair, type PairNotifier } from '../../net/device-pair.js';
import { DevStat, DEV_STAT_COUNT } from '../../net/stats.js';
import { DeviceSteering } from '../../net/steering.js';
import type { RssConfig } from '../../net/rss.js';
import { FrameRing } from '../local/frame-ring.js';
import { makeBackend, type BackendSpec } from '../local/backends.js';
import { eventfdRead, eventfdWrite, pollFdsInto } from '../../host/index.js';

export interface PairWorkerData {
  pair: number;
  maxPairs: number;
  activePairs: number;
  regions: RegionSpec[];
  rx: SplitQueueLayout;
  tx: SplitQueueLayout;
  /** Ring positions to start from (SET_VRING_BASE, or where a stopped worker left off). */
  rxBase: { avail: number; used: number };
  txBase: { avail: number; used: number };
  eventIdx: boolean;
  indirect: boolean;
  mrgRxbuf: boolean;
  hdrLen: number;
  /** Kick eventfds of receiveqN and transmitqN (-1: none, poll the ring). */
  kickFds: [number, number];
  /** Call eventfds (-1: the front-end wants no calls). */
  callFds: [number, number];
  /** Eventfd that wakes this worker (stop, control, a frame in its inbox). */
  wakeFd: number;
  /** Wake eventfds of every pair's worker, by pair (to signal an inbox push). */
  wakeFds: number[];
  mode: 'busy' | 'notify';
  budget: number;
  stats: SharedArrayBuffer;
  afs: SharedArrayBuffer;
  inboxes: SharedArrayBuffer[];
  outboxes: SharedArrayBuffer[];
  backend: BackendSpec;
  rss: RssConfig | null;
  /** Int32 [stop] shared with the control plane. */
  control: SharedArrayBuffer;
  port: MessagePort;
}

/** What a worker posts: queue errors while running, its ring positions when stopped. */
export type PairWorkerReport =
  | { type: 'queue-error'; pair: number; queue: number; code: string; message: string }
  | { type: 'stopped'; pair: number; rx: { avail: number; used: number }; tx: { avail: number; used: number } };

const d = workerData as PairWorkerData;
const mem = new GuestMemory(d.regions);
const stats = new Float64Array(d.stats);
const statBase = d.pair * DEV_STAT_COUNT;
const control = new Int32Array(d.control);
const opts = { eventIdx: d.eventIdx, indirect: d.indirect };
const rxq = new SplitDeviceQueue(mem, d.rx, { ...opts, index: 2 * d.pair });
const txq = new SplitDeviceQueue(mem, d.tx, { ...opts, index: 2 * d.pair + 1 });
rxq.setBase(d.rxBase.avail, d.rxBase.used);
txq.setBase(d.txBase.avail, d.txBase.used);
const steering = new DeviceSteering(d.activePairs, d.afs);
steering.setRss(d.rss);
const backend = makeBackend(d.backend, d.pair, d.maxPairs);
const notifier: PairNotifier = {
  notifyQueue: (q) => {
    const fd = d.callFds[q & 1];
    if (fd >= 0) eventfdWrite(fd, 1);
  },
  wakeDevice: (p) => {
    const fd = d.wakeFds[p];
    if (fd >= 0) eventfdWrite(fd, 1);
  },
};
const inboxes = d.inboxes.map((b) => new FrameRing(b));
const outboxes = d.outboxes.map((b, p) => (p === d.pair ? inboxes[p] : new FrameRing(b)));
const dev = new NetDevicePair(mem, rxq, txq, backend, steering, inboxes, outboxes, notifier, stats, statBase, {
  pair: d.pair, hdrLen: d.hdrLen, mrgRxbuf: d.mrgRxbuf, maxFrame: 65535,
});
dev.active = d.pair < d.activePairs;
dev.onQueueError = (queue, err) => {
  parentPort?.postMessage({ type: 'queue-error', pair: d.pair, queue, code: (err as { code?: string }).code ?? 'ERROR', message: err.message } satisfies PairWorkerReport);
};

// poll(2) sets: kick fds, wake fd, then the netdev's fds, which are left out
// while the receiveq has no buffers (else a readable TAP would spin us).
const kicks = d.kickFds.filter((fd) => fd >= 0);
const fdsAll = Int32Array.from([...kicks, d.wakeFd, ...(backend.waitFds ?? [])]);
const fdsNoNet = fdsAll.subarray(0, kicks.length + 1);
const revents = new Uint16Array(fdsAll.length);
const nKicks = kicks.length;
const busy = d.mode === 'busy' || nKicks < 2; // a ring without a kick fd must be polled
const budget = d.budget;

function drainControl(): void {
  for (let m = receiveMessageOnPort(d.port); m; m = receiveMessageOnPort(d.port)) {
    const msg = m.message as { type: 'rss'; cfg: RssConfig | null } | { type: 'active'; pairs: number };
    if (msg.type === 'rss') steering.setRss(msg.cfg);
    else {
      steering.activePairs = msg.pairs;
      dev.active = d.pair < msg.pairs;
    }
  }
}

let rounds = 0;
for (;;) {
  if (Atomics.load(control, 0) !== 0) break;
  if ((++rounds & 63) === 0) drainControl();
  const work = dev.poll(budget);
  if (work > 0) continue;
  if (busy) continue;
  dev.enableNotifications();
  if (dev.hasWork()) continue;
  const fds = dev.room() > 0 ? fdsAll : fdsNoNet;
  const n = pollFdsInto(fds, 100, revents);
  if (n > 0) {
    for (let i = 0; i < nKicks; i++) {
      if (revents[i] !== 0 && eventfdRead(fds[i]) !== null) stats[statBase + DevStat.kicks]++;
    }
    if (revents[nKicks] !== 0) {
      eventfdRead(d.wakeFd);
      drainControl();
    }
  }
}
backend.flush?.();
backend.close?.();
parentPort?.postMessage({
  type: 'stopped', pair: d.pair,
  rx: { avail: rxq.lastAvailIdx, used: rxq.usedIdx },
  tx: { avail: txq.lastAvailIdx, used: txq.usedIdx },
} satisfies PairWorkerReport);
