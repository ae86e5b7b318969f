/**
 * Worker thread running one queue pair of the vhost-user front-end
 * (`virtio-mq attach`): the shared driver loop ({@link runDriverLoop}) with
 * eventfds as notifications (vhost-user.rst "Kick and call"): it writes the
 * ring's kick eventfd when the back-end wants an available-buffer
 * notification, and sleeps in poll(2) on the two call eventfds and its wake
 * eventfd.
 *
 * Hold handshake (reconnect): while the hold word is odd the link is down:
 * the pair sends nothing, reclaims whatever the back-end still returned,
 * and, once nothing used is waiting, stores where each ring stands for the
 * next back-end (receiveq and transmitq `used` positions, which become
 * SET_VRING_BASE) and acks the hold epoch. Chains made available and not
 * used stay on the rings: the next back-end processes them again.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory } from '../../virtio/memory.js';
import { createDriverQueue } from '../../virtio/ring.js';
import { NetDriverPair } from '../../net/driver-pair.js';
import { DrvStat, DRV_STAT_COUNT } from '../../net/stats.js';
import { eventfdRead, eventfdWrite, pollFdsInto } from '../../host/index.js';
import { SharedControl } from '../local/shared.js';
import { makeSource, type SourceSpec } from '../local/sources.js';
import { TapSource, type TapTrafficSpec } from '../../traffic/tap-source.js';
import type { DriverWorkerData } from '../local/driver-worker.js';
import { runDriverLoop, type DriverNotify } from '../driver-loop.js';
import { holdWord } from './front-end-link.js';
import { CaptureRing } from '../../net/capture-ring.js';

export interface FrontendWorkerData extends Omit<DriverWorkerData, 'source'> {
  /** What the pair sends and checks; 'tap': a TAP queue per pair (the kernel's traffic). */
  source: SourceSpec | TapTrafficSpec;
  /** Kick eventfds of receiveqN and transmitqN (written by this worker). */
  kickFds: [number, number];
  /** Call eventfds of receiveqN and transmitqN (polled by this worker). */
  callFds: [number, number];
  /** Eventfd that wakes this worker (stop, hold, control changes). */
  wakeFd: number;
  /** Int32 words: [0] hold epoch (odd: link down); per pair p at 1 + 3p: acked epoch, receiveq used, transmitq used. */
  link: SharedArrayBuffer;
  /** This pair's capture ring (QueueCapture.buffers[pair], transport/capture.ts), if the process can capture. */
  capture?: SharedArrayBuffer;
}


export type FrontendWorkerMessage =
  | { type: 'ready'; pair: number }
  | { type: 'queue-error'; pair: number; queue: number; code: string; message: string }
  | { type: 'exit'; pair: number };

const d = workerData as FrontendWorkerData;
const mem = new GuestMemory(d.regions);
const ctl = new SharedControl(d.maxPairs, d.control);
const stats = new Float64Array(d.stats);
const statBase = d.pair * DRV_STAT_COUNT;
const link = new Int32Array(d.link);
const rxq = createDriverQueue(mem, d.rx, { ...d.rings, index: 2 * d.pair });
const txq = createDriverQueue(mem, d.tx, { ...d.rings, index: 2 * d.pair + 1 });
const drv = new NetDriverPair(mem, rxq, txq, stats, statBase, {
  pair: d.pair, hdrLen: d.hdrLen, mrgRxbuf: d.mrgRxbuf,
  txBufAddr: d.txBufAddr, txBufSize: d.txBufSize, rxBufAddr: d.rxBufAddr, rxBufSize: d.rxBufSize,
});
const spec = d.source;
const tap = spec.kind === 'tap' ? new TapSource(spec, d.pair) : null;
const source = tap ?? makeSource(spec as SourceSpec, d.pair, {
  bad: () => { stats[statBase + DrvStat.rxBad]++; },
  outOfOrder: () => { stats[statBase + DrvStat.rxOutOfOrder]++; },
  gap: (n) => { stats[statBase + DrvStat.rxGaps] += n; },
});

const kickFds = d.kickFds;
// poll(2) sets: call fds and wake fd, plus the TAP queue while the transmitq has room
// (a readable TAP with a full transmitq would spin us).
const fdsAll = Int32Array.from([d.callFds[0], d.callFds[1], d.wakeFd, ...(tap?.waitFds ?? [])]);
const fdsNoTap = fdsAll.subarray(0, 3);
const revents = new Uint16Array(fdsAll.length);
const notify: DriverNotify = {
  kick: (q) => {
    // Non-blocking: false (EAGAIN) means the counter is full, a kick is pending anyway.
    eventfdWrite(kickFds[q], 1);
  },
  arm: () => 0,
  sleep: (_token, ms) => {
    const fds = tap && drv.txInFlight < txq.size ? fdsAll : fdsNoTap;
    if (pollFdsInto(fds, ms, revents) === 0) return false;
    let call = false;
    for (let i = 0; i < 3; i++) {
      if (revents[i] === 0) continue;
      eventfdRead(fds[i]);
      if (i < 2) call = true;
    }
    return call;
  },
};

const w = holdWord(d.pair);
runDriverLoop(drv, source, notify, {
  pair: d.pair, busy: d.mode === 'busy', budget: d.budget, ctl, stats, statBase,
  txAllowed: () => (Atomics.load(link, 0) & 1) === 0,
  idle: () => {
    const epoch = Atomics.load(link, 0);
    if ((epoch & 1) === 0 || Atomics.load(link, w) === epoch || drv.hasUsed()) return;
    link[w + 1] = rxq.state().used;
    link[w + 2] = txq.state().used;
    Atomics.store(link, w, epoch);
    Atomics.notify(link, w);
  },
  capture: d.capture ? new CaptureRing(d.capture) : undefined,
  onReady: () => parentPort?.postMessage({ type: 'ready', pair: d.pair } satisfies FrontendWorkerMessage),
  onError: (e) => parentPort?.postMessage({
    type: 'queue-error', pair: d.pair, queue: (e as { queue?: number }).queue ?? -1, code: (e as { code?: string }).code ?? 'ERROR', message: e.message,
  } satisfies FrontendWorkerMessage),
});
parentPort?.postMessage({ type: 'exit', pair: d.pair } satisfies FrontendWorkerMessage);
