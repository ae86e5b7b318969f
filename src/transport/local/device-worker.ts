/**
 * Worker thread serving one queue pair on the device side of the local
 * transport: builds the pair's rings over the shared guest memory and runs
 * {@link NetDevicePair.poll} until told to stop, busy-polling or sleeping on
 * its doorbell (notify mode, with EVENT_IDX suppression).
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import type { PairNotifier } from '../../net/device-pair.js';
import { DevStat, DEV_STAT_COUNT, publishRingState } from '../../net/stats.js';
import type { RssConfig } from '../../net/rss.js';
import { CTL_ACTIVE_PAIRS, CTL_GEN, CTL_STOP, SharedControl } from './shared.js';
import { buildDevicePair, type DevicePairData } from '../device-pair-setup.js';
import { makeRxFilter, type FilterSpec } from './filter-spec.js';

export interface DeviceWorkerData extends DevicePairData {
  mode: 'busy' | 'notify';
  budget: number;
  control: SharedArrayBuffer;
  filter: FilterSpec | null;
  port: MessagePort;
}

/** Control messages the main thread sends a device worker. */
export type DeviceWorkerMessage =
  | { type: 'rss'; cfg: RssConfig | null }
  | { type: 'filter'; spec: FilterSpec | null };

const d = workerData as DeviceWorkerData;
const ctl = new SharedControl(d.maxPairs, d.control);
const stats = new Float64Array(d.stats);
const statBase = d.pair * DEV_STAT_COUNT;
const notifier: PairNotifier = {
  notifyQueue: (q) => ctl.ring(ctl.drvBell(q >> 1)), // one driver worker owns both queues of a pair
  wakeDevice: (p) => ctl.ring(ctl.devBell(p)),
};
const { dev, rxq, txq, steering, netdev } = buildDevicePair(d, ctl.get(CTL_ACTIVE_PAIRS), notifier);
steering.setFilter(d.filter ? makeRxFilter(d.filter) : null);
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
// Kicks only while asleep: off while polling.
dev.disableNotifications();
let armed = false;
let rounds = 0;
for (;;) {
  if (Atomics.load(words, CTL_GEN) !== gen) control();
  if ((++rounds & 63) === 0) publishRingState(stats, statBase, rxq, txq);
  if (Atomics.load(words, CTL_STOP) !== 0) break; // checked every round: a netdev may never go idle
  if (armed) {
    dev.disableNotifications();
    armed = false;
  }
  const work = dev.poll(budget);
  if (work > 0) continue;
  if (busy) continue;
  const seen = Atomics.load(words, bell);
  dev.enableNotifications();
  armed = true;
  if (dev.hasWork()) continue;
  publishRingState(stats, statBase, rxq, txq);
  if (Atomics.wait(words, bell, seen, 50) !== 'timed-out') stats[statBase + DevStat.kicks]++;
}
netdev.close?.();
parentPort?.postMessage({ type: 'exit', pair: d.pair });
