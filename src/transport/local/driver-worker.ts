/**
 * Worker thread serving one queue pair on the driver side of the local
 * transport: stocks receiveqN, sends the traffic source's frames on
 * transmitqN, checks every received frame, and sleeps on its doorbell when
 * idle (notify mode) or spins (busy mode).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestMemory, type RegionSpec } from '../../virtio/memory.js';
import type { QueueLayout, RingFeatures } from '../../virtio/queue.js';
import { createDriverQueue } from '../../virtio/ring.js';
import { NetDriverPair } from '../../net/driver-pair.js';
import { DrvStat, DRV_STAT_COUNT } from '../../net/stats.js';
import { CTL_ACTIVE_PAIRS, CTL_PAUSE, CTL_STOP, CTL_TX_STOP, SharedControl } from './shared.js';
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
const consume = (src: Parameters<typeof source.consume>[0], off: number, len: number) => source.consume(src, off, len);

const words = ctl.words;
const bell = ctl.drvBell(d.pair);
const devBell = ctl.devBell(d.pair);
const busy = d.mode === 'busy';
const budget = d.budget;
// CTL_PAUSE is odd while the control plane changes the active pair count:
// stop TX, ack once the transmitq is drained, and re-read the flow
// assignment when it turns even again.
let pauseSeen = Atomics.load(words, CTL_PAUSE);
let reported = false;

drv.refillRx();
if (drv.flushRx()) ctl.ring(devBell);
parentPort?.postMessage({ type: 'ready', pair: d.pair });

for (;;) {
  let work = drv.reclaimTx();
  const pause = Atomics.load(words, CTL_PAUSE);
  const paused = (pause & 1) === 1;
  if (pause !== pauseSeen && !paused) source.reassign();
  pauseSeen = pause;
  const active = d.pair < Atomics.load(words, CTL_ACTIVE_PAIRS);
  if (!paused && active && Atomics.load(words, CTL_TX_STOP) === 0 && !drv.error) {
    const n = source.fill(drv, budget);
    work += n;
    if (drv.flushTx()) ctl.ring(devBell);
  }
  const r = drv.pollRx(budget, consume);
  if (r > 0) {
    work += r;
    if (drv.flushRx()) ctl.ring(devBell);
  }
  if (drv.error && !reported) {
    reported = true;
    parentPort?.postMessage({ type: 'queue-error', side: 'driver', queue: -1, code: (drv.error as { code?: string }).code ?? 'ERROR', message: drv.error.message });
  }
  if (work > 0) continue;
  if (paused && drv.txInFlight === 0 && Atomics.load(words, ctl.ack(d.pair)) !== pause) {
    Atomics.store(words, ctl.ack(d.pair), pause);
    Atomics.notify(words, ctl.ack(d.pair));
  }
  if (Atomics.load(words, CTL_STOP) !== 0) break;
  if (busy) continue;
  const seen = Atomics.load(words, bell);
  drv.setInterrupts(true);
  if (drv.hasUsed()) continue;
  if (Atomics.wait(words, bell, seen, 50) !== 'timed-out') stats[statBase + DrvStat.interrupts]++;
}
parentPort?.postMessage({ type: 'exit', pair: d.pair });
