/** Runs one target's fuzz loop in a worker thread, so the runner's watchdog can see a hung case. */
import { parentPort, workerData } from 'node:worker_threads';
import { fuzz } from './engine.js';
import { target } from './targets/index.js';

const d = workerData as { name: string; cases: number; seconds: number; seed: number; current: SharedArrayBuffer; counter: SharedArrayBuffer };
const t = target(d.name);
await t.setup?.();
const r = await fuzz(t, {
  cases: d.cases, seconds: d.seconds, seed: d.seed,
  current: new Uint8Array(d.current), counter: new Int32Array(d.counter),
  onBatch: (cases, ms) => parentPort!.postMessage({ type: 'progress', cases, ms }),
});
await t.teardown?.();
parentPort!.postMessage({ type: 'done', result: { ...r, stats: t.stats } });
