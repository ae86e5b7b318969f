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
import type { PairNotifier } from '../../net/device-pair.js';
import { DevStat, DEV_STAT_COUNT, publishRingState } from '../../net/stats.js';
import type { RssConfig } from '../../net/rss.js';
import { buildDevicePair, type DevicePairData } from '../device-pair-setup.js';
import { eventfdRead, eventfdWrite, pollFdsInto, POLLNVAL } from '../../host/index.js';
import type { QueueState } from '../../virtio/queue.js';
import { GuestMemory } from '../../virtio/memory.js';
import { DirtyLog } from '../../virtio/dirty-log.js';
import { LoggedDeviceQueue } from '../../virtio/logged-queue.js';
import { withDirtyLog } from '../../virtio/ring.js';

/** Messages on a worker's control port (posted by the session). */
export type PairControl =
  | { type: 'rss'; cfg: RssConfig | null }
  | { type: 'active'; pairs: number }
  /** Mark `log` from the next round on (null: stop marking); generation `gen` is also stored in control[1]. */
  | { type: 'log'; gen: number; log: DevicePairData['dirtyLog'] | null }
  /** Signal the receiveq's (ring 0) or transmitq's (ring 1) used buffers on `fd` from now on (SET_VRING_CALL on a running pair); `gen` as for `log`. */
  | { type: 'call'; gen: number; ring: 0 | 1; fd: number };

export interface PairWorkerData extends DevicePairData {
  activePairs: number;
  /** Ring positions to start from (SET_VRING_BASE, or where a stopped worker left off). */
  rxBase: QueueState;
  txBase: QueueState;
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
  /**
   * Int32 [stop, control generation] shared with the control plane: a
   * generation other than the last one applied means a `log` or `call`
   * message waits on the port (checked every round, so a switch never waits
   * for a batch of 64); the worker answers each with `applied`.
   */
  control: SharedArrayBuffer;
  port: MessagePort;
}

/** What a worker posts: queue errors while running, its ring positions when stopped. */
export type PairWorkerReport =
  | { type: 'queue-error'; pair: number; queue: number; code: string; message: string }
  | { type: 'stopped'; pair: number; rx: QueueState; tx: QueueState }
  /** Started on a used inflight region: chains requeued on the receiveq, completed unsent on the transmitq, where the rings start. */
  | { type: 'inflight'; pair: number; rxRequeued: number; txCompleted: number; rx: QueueState; tx: QueueState }
  /** The `log` or `call` control message of generation `gen` is applied: from the next round on this pair marks the log it named (or none), or signals the new call fd. */
  | { type: 'applied'; pair: number; gen: number }
  /** The netdev's device went away (a deleted TAP): link.ts re-opens it when it is back. */
  | { type: 'netdev-gone'; pair: number };

const d = workerData as PairWorkerData;
const stats = new Float64Array(d.stats);
const statBase = d.pair * DEV_STAT_COUNT;
const control = new Int32Array(d.control);
/**
 * A fault of one ring's notification fds (a kick fd that is no eventfd or
 * went away, a call fd that cannot be written): reported like a queue error
 * (the control plane marks the device DEVICE_NEEDS_RESET and signals the
 * ring's error fd); this worker stops using that fd and keeps running.
 */
function fdFault(queue: number, what: string, e: unknown): void {
  const err = e as { code?: string; message?: string };
  parentPort?.postMessage({ type: 'queue-error', pair: d.pair, queue, code: err.code ?? 'ERROR', message: `${what}: ${err.message ?? String(e)}` } satisfies PairWorkerReport);
}
const notifier: PairNotifier = {
  notifyQueue: (q) => {
    const fd = d.callFds[q & 1];
    if (fd < 0) return;
    // The call fd is non-blocking (the session sets O_NONBLOCK): false (EAGAIN)
    // means the counter is full, i.e. the front-end has a notification pending.
    try {
      eventfdWrite(fd, 1);
    } catch (e) {
      d.callFds[q & 1] = -1;
      fdFault(2 * d.pair + (q & 1), 'call fd', e);
    }
  },
  wakeDevice: (p) => {
    const fd = d.wakeFds[p];
    if (fd >= 0) eventfdWrite(fd, 1);
  },
};
let built: ReturnType<typeof buildDevicePair>;
try {
  built = buildDevicePair(d, d.activePairs, notifier, { rx: d.rxBase, tx: d.txBase });
} catch (e) {
  // A ring that does not fit (or a corrupt inflight region): the pair does not start; the control plane faults it.
  const err = e as { code?: string; message?: string };
  parentPort?.postMessage({ type: 'queue-error', pair: d.pair, queue: 2 * d.pair, code: err.code ?? 'ERROR', message: err.message ?? String(e) } satisfies PairWorkerReport);
  parentPort?.postMessage({ type: 'stopped', pair: d.pair, rx: d.rxBase, tx: d.txBase } satisfies PairWorkerReport);
  process.exit(0);
}
const { dev, steering, netdev } = built;
let { rxq, txq } = built;
// Live migration: the dirty-logging wrapper goes on and off in place (no restart): the plain queues under it.
const plainRx = rxq instanceof LoggedDeviceQueue ? rxq.inner : rxq;
const plainTx = txq instanceof LoggedDeviceQueue ? txq.inner : txq;
let logMem: GuestMemory | null = null;
let ctlGen = 0;

/** Start marking `log` (or stop, null): between two poll rounds, when no chain is in flight. */
function setDirtyLog(log: PairWorkerData['dirtyLog'] | null): void {
  if (!log) {
    rxq = plainRx;
    txq = plainTx;
  } else {
    logMem ??= new GuestMemory(d.regions);
    const dl = new DirtyLog(log.buffer, log.offset, log.size);
    rxq = withDirtyLog(plainRx, logMem, d.rx, { ...d.rings, index: 2 * d.pair, dirtyLog: { log: dl, usedLogAddr: log.rxUsedLogAddr } });
    txq = withDirtyLog(plainTx, logMem, d.tx, { ...d.rings, index: 2 * d.pair + 1, dirtyLog: { log: dl, usedLogAddr: log.txUsedLogAddr } });
  }
  dev.setQueues(rxq, txq);
}
if (built.inflight && !(built.inflight.rx.fresh && built.inflight.tx.fresh)) {
  parentPort?.postMessage({ type: 'inflight', pair: d.pair, rxRequeued: built.inflight.rx.chains, txCompleted: built.inflight.tx.chains, rx: rxq.state(), tx: txq.state() } satisfies PairWorkerReport);
}
// Under vhost-user a worker runs only while its rings are enabled: it is active even when an
// earlier pair is disabled (activePairs, up to the last enabled pair, is for steering).
dev.active = true;
dev.onQueueError = (queue, err) => {
  parentPort?.postMessage({ type: 'queue-error', pair: d.pair, queue, code: (err as { code?: string }).code ?? 'ERROR', message: err.message } satisfies PairWorkerReport);
};

netdev.onGone = () => parentPort?.postMessage({ type: 'netdev-gone', pair: d.pair } satisfies PairWorkerReport);

// poll(2) sets: kick fds, wake fd, then the netdev's fds, which are left out
// while the receiveq has no buffers (else a readable TAP would spin us).
const kicks: number[] = [];
const kickQueues: number[] = [];
d.kickFds.forEach((fd, i) => {
  if (fd < 0) return;
  kicks.push(fd);
  kickQueues.push(2 * d.pair + i);
});
const fdsAll = Int32Array.from([...kicks, d.wakeFd, ...(netdev.waitFds ?? [])]);
const fdsNoNet = fdsAll.subarray(0, kicks.length + 1);
const revents = new Uint16Array(fdsAll.length);
const nKicks = kicks.length;
const busy = d.mode === 'busy' || nKicks < 2; // a ring without a kick fd must be polled
const budget = d.budget;

function drainControl(): void {
  for (let m = receiveMessageOnPort(d.port); m; m = receiveMessageOnPort(d.port)) {
    const msg = m.message as PairControl;
    if (msg.type === 'rss') steering.setRss(msg.cfg);
    else if (msg.type === 'log' || msg.type === 'call') {
      if (msg.type === 'log') setDirtyLog(msg.log);
      else d.callFds[msg.ring] = msg.fd; // the notifier reads it per notification; the old fd is not touched again
      ctlGen = msg.gen;
      parentPort?.postMessage({ type: 'applied', pair: d.pair, gen: msg.gen } satisfies PairWorkerReport);
    } else steering.activePairs = msg.pairs; // steering's choice; this pair runs because its rings are enabled
  }
}

let rounds = 0;
// Kicks only while asleep: off while polling (a kick per burst costs the front-end a syscall).
dev.disableNotifications();
let armed = false;
for (;;) {
  if (Atomics.load(control, 0) !== 0) break;
  if (Atomics.load(control, 1) !== ctlGen) drainControl(); // dirty logging on/off, a new call fd: now, between two rounds
  if ((++rounds & 63) === 0) {
    drainControl();
    publishRingState(stats, statBase, rxq, txq);
  }
  if (armed) {
    dev.disableNotifications();
    armed = false;
  }
  const work = dev.poll(budget);
  if (work > 0) continue;
  if (busy) continue;
  dev.enableNotifications();
  armed = true;
  if (dev.hasWork()) continue;
  publishRingState(stats, statBase, rxq, txq);
  const fds = dev.room() > 0 && !netdev.gone ? fdsAll : fdsNoNet;
  const n = pollFdsInto(fds, 100, revents);
  if (n > 0) {
    for (let i = 0; i < nKicks; i++) {
      if (revents[i] === 0) continue;
      try {
        if (revents[i] & POLLNVAL) throw Object.assign(new Error('not an open fd (POLLNVAL)'), { code: 'EBADF' });
        if (eventfdRead(fds[i]) !== null) stats[statBase + DevStat.kicks]++;
      } catch (e) {
        // Not an eventfd (/dev/null, a socket, a closed fd): report it and stop
        // polling it (negative fds are ignored by poll); the ring is still
        // served on the 100 ms poll timeout until the front-end resets it.
        fdsAll[i] = -1;
        fdFault(kickQueues[i], 'kick fd', e);
      }
    }
    if (revents[nKicks] !== 0) {
      eventfdRead(d.wakeFd);
      drainControl();
    }
  }
}
netdev.flush?.();
netdev.close?.();
parentPort?.postMessage({
  type: 'stopped', pair: d.pair,
  rx: rxq.state(),
  tx: txq.state(),
} satisfies PairWorkerReport);
