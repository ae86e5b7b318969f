/**
 * Worker thread serving one queue pair on the driver side of the local
 * transport: the shared driver loop ({@link runDriverLoop}) with Atomics
 * doorbells as notifications: stocks receiveqN, sends the traffic source's
 * frames on transmitqN, checks every received frame, and sleeps on its
 * doorbell when idle (notify mode) or spins (busy mode).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory, type RegionSpec } from '../../virtio/memory.js';
import type { QueueLayout, RingFeatures } from '../../virtio/queue.js';
import { createDriverQueue } from '../../virtio/ring.js';
import { NetDriverPair } from '../../net/driver-pair.js';
import { DrvStat, DRV_STAT_COUNT } from '../../net/stats.js';
import { SharedControl } from './shared.js';
import { runDriverLoop, type DriverNotify } from '../driver-loop.js';
import { makeSource, type SourceSpec } from './sources.js';

export interface DriverWorkerData {
  pair: number;
  maxPairs: number;
  regions: RegionSpec[];
  rx: QueueLayout;
  tx: QueueLayout;
  /** The negotiated ring features: they pick the queue implementation. */
  rings: RingFeatures;
  mrgRxbuf: boolean;
  hdrLen: number;
  txBufAddr: number;
  txBufSize: number;
  rxBufAddr: number;
  rxBufSize: number;
  /** The driver set up these rings already (and stocked receiveqN): attach without zeroing. */
  mode: 'busy' | 'notify';
  budget: number;
  control: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  source: SourceSpec;
}

const d = workerData as DriverWorkerData;
const mem = new GuestMemory(d.regions);
const ctl = new SharedControl(d.maxPairs, d.control);
const stats = new Float64Array(d.stats);
const statBase = d.pair * DRV_STAT_COUNT;
const rxq = createDriverQueue(mem, d.rx, { ...d.rings, index: 2 * d.pair });
const txq = createDriverQueue(mem, d.tx, { ...d.rings, index: 2 * d.pair + 1 });
const drv = new NetDriverPair(mem, rxq, txq, stats, statBase, {
  pair: d.pair, hdrLen: d.hdrLen, mrgRxbuf: d.mrgRxbuf,
  txBufAddr: d.txBufAddr, txBufSize: d.txBufSize, rxBufAddr: d.rxBufAddr, rxBufSize: d.rxBufSize,
});
const source = makeSource(d.source, d.pair, {
  bad: () => { stats[statBase + DrvStat.rxBad]++; },
  outOfOrder: () => { stats[statBase + DrvStat.rxOutOfOrder]++; },
  gap: (n) => { stats[statBase + DrvStat.rxGaps] += n; },
});

const bell = ctl.drvBell(d.pair);
const devBell = ctl.devBell(d.pair);
const words = ctl.words;
// The local transport's notifications: one Atomics doorbell each way per pair.
const notify: DriverNotify = {
  kick: () => ctl.ring(devBell),
  arm: () => Atomics.load(words, bell),
  sleep: (seen, ms) => Atomics.wait(words, bell, seen, ms) !== 'timed-out',
};

runDriverLoop(drv, source, notify, {
  pair: d.pair, busy: d.mode === 'busy', budget: d.budget, ctl, stats, statBase,
  onReady: () => parentPort?.postMessage({ type: 'ready', pair: d.pair }),
  onError: (e) => parentPort?.postMessage({ type: 'queue-error', side: 'driver', queue: -1, code: (e as { code?: string }).code ?? 'ERROR', message: e.message }),
});
parentPort?.postMessage({ type: 'exit', pair: d.pair });
