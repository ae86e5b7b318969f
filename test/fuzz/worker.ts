/**
 * Runs one target's fuzz loop in a child process (`fork` from run.ts), so
 * the runner survives and reports whatever kills or hangs it (a SIGBUS, an
 * abort in the addon, an endless loop). The case counter and the current
 * input live in a file under /dev/shm that both map (see run.ts).
 */
import fs from 'node:fs';
import { fuzz } from './engine.js';
import { target } from './targets/index.js';
import { hostAvailable, mmapShared } from '../../src/host/index.js';

const d = JSON.parse(process.argv[2]) as { name: string; cases: number; seconds: number; seed: number; shm: string; shmSize: number };
let shared: SharedArrayBuffer;
if (hostAvailable()) {
  const fd = fs.openSync(d.shm, 'r+');
  shared = mmapShared(fd, d.shmSize);
  fs.closeSync(fd);
} else {
  shared = new SharedArrayBuffer(d.shmSize); // no addon: the runner sees progress only through messages
  process.send!({ type: 'noshm' });
}
const t = target(d.name);
await t.setup?.();
const r = await fuzz(t, {
  cases: d.cases, seconds: d.seconds, seed: d.seed,
  current: new Uint8Array(shared, 4), counter: new Int32Array(shared, 0, 1),
  onBatch: (cases, ms) => process.send!({ type: 'progress', cases, ms }),
});
await t.teardown?.();
process.send!({ type: 'done', result: { ...r, stats: t.stats } }, () => process.exit(0));
