/**
 * `node dist/bench/ring-ops.js [--seconds S] [--batch B] [--size N]`: the
 * cost of the queue code alone, in one thread (no workers, no scheduling,
 * so the figure moves little on a shared machine): per chain, the driver
 * adds a one-descriptor chain (addOne) and publishes every B, the device
 * pops it (popSingle), pushes it used and publishes every B, the driver
 * reclaims it. For split and packed rings, with and without
 * VIRTIO_F_IN_ORDER. Prints nanoseconds per chain (best of 5 windows) and
 * the CPU share other processes took meanwhile (/proc/stat busy time minus
 * this process's).
 */
import { readFileSync } from 'node:fs';
import { GuestMemory } from '../src/virtio/memory.js';
import { createDeviceQueue, createDriverQueue, contiguousQueueLayout, queueBytes } from '../src/virtio/ring.js';
import type { RingFormat } from '../src/virtio/queue.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const seconds = opt('--seconds', 1);
const batch = opt('--batch', 32);
const size = opt('--size', 256);

function cpu(): { busy: number; total: number; self: number } {
  const f = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const s = readFileSync('/proc/self/stat', 'latin1');
  const t = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { busy: total - f[3] - f[4], total, self: Number(t[11]) + Number(t[12]) };
}

function run(format: RingFormat, inOrder: boolean): { ns: number; others: number } {
  const ringBytes = queueBytes(format, size);
  const buf = new SharedArrayBuffer(ringBytes + 0x10000 + 4096);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: buf.byteLength, buffer: buf, bufferOffset: 0 }]);
  const layout = contiguousQueueLayout(format, 0, size);
  const opts = { eventIdx: true, indirect: false, inOrder, index: 0 };
  const drv = createDriverQueue(mem, layout, opts);
  const dev = createDeviceQueue(new GuestMemory(mem.specs), layout, opts);
  const data = Math.ceil(ringBytes / 4096) * 4096;
  const b = Math.min(batch, size);
  const round = (): void => {
    for (let i = 0; i < b; i++) drv.addOne(data + 64 * i, 64, true, i);
    drv.publish();
    for (let i = 0; i < b; i++) {
      if (dev.popSingle(2, 12) < 0) throw new Error('popSingle failed');
      dev.pushUsed(dev.singleId, 60, 1);
    }
    dev.publish();
    for (let i = 0; i < b; i++) drv.popUsed();
  };
  for (let i = 0; i < 20000; i++) round(); // warm-up: optimized code
  let best = Infinity;
  const c0 = cpu();
  for (let w = 0; w < 5; w++) {
    const until = performance.now() + (seconds * 1000) / 5;
    let chains = 0;
    const t0 = performance.now();
    while (performance.now() < until) {
      for (let k = 0; k < 100; k++) round();
      chains += 100 * b;
    }
    best = Math.min(best, ((performance.now() - t0) * 1e6) / chains);
  }
  const c1 = cpu();
  const total = c1.total - c0.total;
  return { ns: best, others: total > 0 ? Math.max(0, (c1.busy - c0.busy - (c1.self - c0.self)) / total) : NaN };
}

console.log(`ring-ops: one thread, queue size ${size}, batch ${batch}, one-descriptor chains, best of 5 windows of ${seconds / 5} s`);
console.log('ring            ns/chain  other CPU');
for (const [format, inOrder] of [['split', false], ['split', true], ['packed', false], ['packed', true]] as const) {
  const r = run(format, inOrder);
  console.log(`${(format + (inOrder ? '-inorder' : '')).padEnd(15)} ${r.ns.toFixed(1).padStart(8)}  ${(r.others * 100).toFixed(1).padStart(7)} %`);
}
