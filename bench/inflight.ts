/**
 * `node dist/bench/inflight.js [--seconds S] [--pairs N]`: what inflight I/O
 * tracking (vhost-user INFLIGHT_SHMFD) costs `serve`. attach's front-end and
 * serve's back-end in this process (each with its worker threads), the
 * generator's frames through serve's loopback netdev and back, split and
 * packed rings, with and without the front-end negotiating INFLIGHT_SHMFD
 * (serve then tracks every chain in the shared buffer, or runs the plain
 * device queues). Prints frames per second received back by the driver over
 * the window (after 1 s of warm-up) and the CPU share other processes took
 * meanwhile (/proc/stat busy time minus this process's): rows with a large
 * share are noisy.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { VhostUserFrontend } from '../src/transport/vhost-user/front-end.js';
import { DrvStat } from '../src/net/stats.js';
import { prepareGeneratorTraffic, assignFlows } from '../src/traffic/generator-source.js';
import { TxQueueSelector } from '../src/net/tx-select.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const seconds = opt('--seconds', 5);
const pairs = opt('--pairs', 2);

function cpu(): { busy: number; total: number; self: number } {
  const f = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const s = readFileSync('/proc/self/stat', 'latin1');
  const g = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { busy: total - f[3] - f[4], total, self: Number(g[11]) + Number(g[12]) };
}

async function one(ring: 'split' | 'packed', inflight: boolean): Promise<{ fps: number; other: number; tracked: boolean }> {
  const socket = join(tmpdir(), `vmq-bench-inflight-${process.pid}.sock`);
  const logs: string[] = [];
  const be = new VhostUserBackend({ socket, pairs, netdev: { kind: 'loopback' }, log: (l) => logs.push(l) });
  await be.start();
  const spec = prepareGeneratorTraffic({ flows: 16, frameSize: 128, proto: 'udp', ipVersion: 4 });
  const sel = new TxQueueSelector({ steering: null });
  assignFlows(spec, (f) => sel.select(f, 0, f.length, pairs));
  const fe = new VhostUserFrontend({ socket, pairs, ring, inflight, source: () => spec, log: (l) => logs.push(l) });
  try {
    await fe.start();
    await new Promise((r) => setTimeout(r, 1000));
    const rx0 = fe.stats.total(DrvStat.rxPackets), c0 = cpu(), t0 = Date.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const rx1 = fe.stats.total(DrvStat.rxPackets), c1 = cpu(), t1 = Date.now();
    const total = c1.total - c0.total;
    const other = total > 0 ? Math.max(0, (c1.busy - c0.busy) - (c1.self - c0.self)) / total : 0;
    return { fps: (rx1 - rx0) / ((t1 - t0) / 1000), other, tracked: logs.some((l) => /inflight buffer from the front-end/.test(l)) };
  } finally {
    await fe.stop();
    await be.stop();
  }
}

console.log(`inflight tracking cost: attach ↔ serve (loopback), ${pairs} pairs, 128-byte frames, ${seconds} s windows`);
console.log('ring    inflight  tracked  frames/s   other CPU');
for (const ring of ['split', 'packed'] as const) {
  for (const inflight of [false, true]) {
    const r = await one(ring, inflight);
    console.log(`${ring.padEnd(8)}${String(inflight).padEnd(10)}${String(r.tracked).padEnd(9)}${Math.round(r.fps).toString().padStart(9)}   ${(r.other * 100).toFixed(1)} %`);
  }
}
