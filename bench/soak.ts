/**
 * Reconnect soak for `virtio-mq serve` (issue 10):
 *
 *   npm run build && node dist/bench/soak.js [--cycles 1000] [--pairs 4] [--every 100] [--json]
 *
 * Starts `serve --netdev loopback` as a child process and runs `cycles`
 * front-end connections against it, rotating through four kinds:
 *   clean:     handshake, traffic on every pair (frames looped back and
 *              received), GET_VRING_BASE on every ring, close;
 *   abrupt:    handshake, traffic queued, close with frames in flight;
 *   handshake: close in the middle of the handshake (after a random step);
 *   fds:       handshake, then a burst of fd-carrying messages and close at once.
 * Every `every` cycles (and at the start and the end) it records serve's open
 * fds (/proc/PID/fd), threads (/proc/PID/task) and resident memory (VmRSS),
 * once they have settled, and prints a row. The summary compares the end
 * with the baseline taken after one warm-up cycle.
 *
 * {@link runSoak} is also what test/soak.test.ts runs (a short version).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { close, eventfdCreate, eventfdWrite, memfdCreate, mmapShared } from '../src/host/index.js';
import { VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_REPLY_ACK, type VhostUserRequestInit } from '../src/transport/vhost-user/messages.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { contiguousQueueLayout, createDriverQueue, queueBytes } from '../src/virtio/ring.js';
import type { DriverQueue } from '../src/virtio/queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import { VIRTIO_NET_F_MRG_RXBUF } from '../src/net/features.js';
import { VhostFrontend } from './support/vhost-frontend.js';

const FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_NET_F_MRG_RXBUF | VHOST_USER_F_PROTOCOL_FEATURES_MASK;
const PROTOCOL = (1n << BigInt(VHOST_USER_PROTOCOL_F_MQ)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK));
const HDR = 12;
const RING = 256;
const GPA = 0x100000;
const UVA = 0x7f00_0000_0000;
const MEM = 8 << 20;
const FRAMES = 32;
const BUF = 2048;

export interface SoakSample {
  cycle: number;
  fds: number;
  threads: number;
  rssKiB: number;
  /** Guest-memory mappings (the soak's memfds) serve still has. */
  guestMaps: number;
}

export interface SoakResult {
  samples: SoakSample[];
  baseline: SoakSample;
  end: SoakSample;
  kinds: Record<string, number>;
  framesLooped: number;
  serveLog: string[];
}

/** One queue as the driver sees it. */
interface Vq {
  index: number;
  drv: DriverQueue;
  kick: number;
  call: number;
  layout: ReturnType<typeof contiguousQueueLayout>;
  pool: number;
}

class Guest {
  readonly fd = memfdCreate('vmq-soak', MEM);
  readonly mem = new GuestMemory([{ guestPhysAddr: GPA, size: MEM, buffer: mmapShared(this.fd, MEM), userAddr: UVA }]);
  private next = 0;
  alloc(n: number, align = 4096): number {
    const off = Math.ceil(this.next / align) * align;
    if (off + n > MEM) throw new RangeError('soak guest memory exhausted');
    this.next = off + n;
    return GPA + off;
  }
  vq(index: number): Vq {
    const layout = contiguousQueueLayout('split', this.alloc(queueBytes('split', RING)), RING);
    return {
      index, layout,
      drv: createDriverQueue(this.mem, layout, { eventIdx: true, indirect: false, inOrder: false, index }),
      kick: eventfdCreate(0, { nonblock: true }), call: eventfdCreate(0, { nonblock: true }),
      pool: this.alloc(RING * BUF),
    };
  }
  close(vqs: Vq[]): void {
    for (const v of vqs) {
      close(v.kick);
      close(v.call);
    }
    close(this.fd);
  }
}

const uva = (gpa: number): number => UVA + (gpa - GPA);

/** The handshake as a list of requests (the `handshake` kind stops after a random number of them). */
function handshakeSteps(g: Guest, vqs: Vq[], pairs: number): VhostUserRequestInit[] {
  const steps: VhostUserRequestInit[] = [
    { type: 'SET_OWNER' },
    { type: 'SET_FEATURES', features: FEATURES },
    { type: 'SET_PROTOCOL_FEATURES', features: PROTOCOL },
    { type: 'SET_MEM_TABLE', regions: [{ guestAddr: GPA, size: MEM, userAddr: UVA, mmapOffset: 0, fd: g.fd }] },
  ];
  for (const v of vqs.slice(0, 2 * pairs)) {
    steps.push(
      { type: 'SET_VRING_NUM', index: v.index, num: RING },
      { type: 'SET_VRING_ADDR', index: v.index, flags: 0, descUserAddr: uva(v.layout.descAddr), availUserAddr: uva(v.layout.driverAddr), usedUserAddr: uva(v.layout.deviceAddr), logGuestAddr: 0 },
      { type: 'SET_VRING_BASE', index: v.index, num: 0 },
      { type: 'SET_VRING_KICK', index: v.index, fd: v.kick },
      { type: 'SET_VRING_CALL', index: v.index, fd: v.call },
    );
  }
  for (const v of vqs.slice(0, 2 * pairs)) steps.push({ type: 'SET_VRING_ENABLE', index: v.index, enable: true });
  return steps;
}

function frame(pair: number, seq: number): Uint8Array {
  const f = new Uint8Array(64 + ((seq * 37) % 1400));
  f.set([0x52, 0x54, 0, 0, 0, pair + 1, 0x52, 0x54, 0, 0, 1, pair + 1, 0x88, 0xb5]);
  f[14] = seq & 0xff;
  return f;
}

/** Post RX buffers, queue TX frames; returns frames received so far on every receiveq. */
function driverStep(g: Guest, rx: Vq, tx: Vq, frames: Uint8Array[]): number {
  let got = 0;
  while (rx.drv.usedPending() > 0) {
    rx.drv.popUsed();
    got++;
  }
  while (tx.drv.usedPending() > 0) tx.drv.popUsed();
  let added = 0;
  while (rx.drv.numFree > 0) {
    const id = rx.drv.peekFreeId();
    rx.drv.addOne(rx.pool + id * BUF, BUF, true, id);
    added++;
  }
  if (added) {
    rx.drv.publish();
    eventfdWrite(rx.kick, 1);
  }
  let sent = 0;
  while (frames.length > 0 && tx.drv.numFree > 0) {
    const f = frames.shift()!;
    const id = tx.drv.peekFreeId();
    const a = tx.pool + id * BUF;
    g.mem.write(a, new Uint8Array(HDR));
    g.mem.write(a + HDR, f);
    tx.drv.addOne(a, HDR + f.length, false, id);
    sent++;
  }
  if (sent) {
    tx.drv.publish();
    eventfdWrite(tx.kick, 1);
  }
  return got;
}

type Kind = 'clean' | 'abrupt' | 'handshake' | 'fds';
const KINDS: Kind[] = ['clean', 'abrupt', 'handshake', 'fds'];

async function cycle(socket: string, pairs: number, kind: Kind, n: number): Promise<number> {
  const g = new Guest();
  const vqs = Array.from({ length: 2 * pairs }, (_, i) => g.vq(i));
  const fe = await VhostFrontend.connect(socket, 10_000);
  let looped = 0;
  try {
    const f = await fe.request({ type: 'GET_FEATURES' }, 10_000); // also: the previous connection is gone
    if (f.type !== 'GET_FEATURES') throw new Error(`GET_FEATURES answered with ${f.type}`);
    const steps = handshakeSteps(g, vqs, pairs);
    const stop = kind === 'handshake' ? 1 + (n * 7919) % (steps.length - 1) : steps.length;
    for (const s of steps.slice(0, stop)) await fe.send(s);
    if (kind === 'handshake') return 0;
    if (kind === 'fds') {
      for (let i = 0; i < 50; i++) await fe.send({ type: 'SET_VRING_CALL', index: i % (2 * pairs), fd: vqs[i % vqs.length].call });
      return 0;
    }
    const queued = Array.from({ length: pairs }, (_, p) => Array.from({ length: FRAMES }, (_, i) => frame(p, i)));
    const want = pairs * FRAMES;
    const until = Date.now() + 10_000;
    let received = 0;
    for (;;) {
      for (let p = 0; p < pairs; p++) received += driverStep(g, vqs[2 * p], vqs[2 * p + 1], queued[p]);
      if (kind === 'abrupt' && received > 0) return received;
      if (received >= want) break;
      if (Date.now() > until) throw new Error(`cycle ${n}: ${received} of ${want} frames looped back in 10 s`);
      await sleep(1);
    }
    looped = received;
    for (const v of vqs) {
      const r = await fe.request({ type: 'GET_VRING_BASE', index: v.index }, 10_000);
      if (r.type !== 'GET_VRING_BASE') throw new Error(`GET_VRING_BASE answered with ${r.type}`);
    }
    return looped;
  } finally {
    fe.close();
    g.close(vqs);
  }
}

function countDir(p: string): number {
  try {
    return fs.readdirSync(p).length;
  } catch {
    return -1;
  }
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : -1;
}

/** serve's fds, threads and RSS once the fd and thread counts have stopped moving (workers exit asynchronously). */
async function sample(pid: number, cycleNo: number, socket: string): Promise<SoakSample> {
  // a probe connection answered means the previous session has been torn down
  const fe = await VhostFrontend.connect(socket, 10_000);
  try {
    await fe.request({ type: 'GET_FEATURES' }, 10_000);
  } finally {
    fe.close();
  }
  let prev = '';
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const now = `${countDir(`/proc/${pid}/fd`)}/${countDir(`/proc/${pid}/task`)}`;
    if (now === prev) break;
    prev = now;
  }
  const guestMaps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('memfd:vmq-soak')).length;
  return { cycle: cycleNo, fds: countDir(`/proc/${pid}/fd`), threads: countDir(`/proc/${pid}/task`), rssKiB: rssKiB(pid), guestMaps };
}

export async function runSoak(o: { cycles: number; pairs: number; every: number; onSample?: (s: SoakSample) => void }): Promise<SoakResult> {
  const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const socket = path.join(os.tmpdir(), `vmq-soak-${process.pid}.sock`);
  const serve: ChildProcess = spawn(process.execPath, [main, 'serve', '--socket', socket, '--queues', String(o.pairs), '--netdev', 'loopback'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const serveLog: string[] = [];
  serve.stderr!.setEncoding('utf8');
  serve.stderr!.on('data', (d: string) => {
    serveLog.push(...d.split('\n').filter((l) => l));
    if (serveLog.length > 5000) serveLog.splice(0, serveLog.length - 5000);
  });
  const exited = new Promise<void>((r) => serve.once('exit', () => r()));
  const kinds: Record<string, number> = {};
  const samples: SoakSample[] = [];
  let framesLooped = 0;
  try {
    framesLooped += await cycle(socket, o.pairs, 'clean', 0); // warm-up
    const baseline = await sample(serve.pid!, 0, socket);
    samples.push(baseline);
    o.onSample?.(baseline);
    for (let n = 1; n <= o.cycles; n++) {
      if (serve.exitCode !== null) throw new Error(`serve exited (${serve.exitCode}) at cycle ${n}`);
      const kind = KINDS[n % KINDS.length];
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      framesLooped += await cycle(socket, o.pairs, kind, n);
      if (n % o.every === 0 || n === o.cycles) {
        const s = await sample(serve.pid!, n, socket);
        samples.push(s);
        o.onSample?.(s);
      }
    }
    return { samples, baseline, end: samples[samples.length - 1], kinds, framesLooped, serveLog };
  } catch (e) {
    (e as Error).message += `\n--- serve log (last 30 lines) ---\n${serveLog.slice(-30).join('\n')}`;
    throw e;
  } finally {
    serve.kill('SIGINT');
    const t = setTimeout(() => serve.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
    fs.rmSync(socket, { force: true });
  }
}

async function cli(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, def: number): number => {
    const i = args.indexOf(`--${name}`);
    if (i < 0) return def;
    const v = Number(args[i + 1]);
    if (!Number.isInteger(v) || v < 1) {
      console.error(`virtio-mq soak: --${name} ${args[i + 1]} is not a positive integer`);
      process.exit(2);
    }
    return v;
  };
  const json = args.includes('--json');
  const cycles = opt('cycles', 1000), pairs = opt('pairs', 4), every = opt('every', 100);
  const t0 = Date.now();
  if (!json) console.log(`soak: ${cycles} cycles against serve --queues ${pairs} --netdev loopback (clean / abrupt / mid-handshake / fd burst)\n${'cycle'.padStart(6)} ${'fds'.padStart(5)} ${'threads'.padStart(8)} ${'RSS MiB'.padStart(8)} ${'guest maps'.padStart(10)}`);
  const r = await runSoak({
    cycles, pairs, every,
    onSample: (s) => {
      if (!json) console.log(`${String(s.cycle).padStart(6)} ${String(s.fds).padStart(5)} ${String(s.threads).padStart(8)} ${(s.rssKiB / 1024).toFixed(1).padStart(8)} ${String(s.guestMaps).padStart(10)}`);
    },
  });
  const secs = (Date.now() - t0) / 1000;
  if (json) console.log(JSON.stringify({ cycles, pairs, seconds: secs, ...r, serveLog: undefined }));
  else {
    console.log(`done in ${secs.toFixed(0)} s: ${JSON.stringify(r.kinds)}, ${r.framesLooped} frames looped back`);
    console.log(`fds ${r.baseline.fds} -> ${r.end.fds}, threads ${r.baseline.threads} -> ${r.end.threads}, RSS ${(r.baseline.rssKiB / 1024).toFixed(1)} -> ${(r.end.rssKiB / 1024).toFixed(1)} MiB (max ${(Math.max(...r.samples.map((s) => s.rssKiB)) / 1024).toFixed(1)} MiB)`);
    const errs = r.serveLog.filter((l) => /internal error|unexpected|worker failed|did not stop/.test(l));
    if (errs.length) console.log(`serve logged ${errs.length} unexpected lines, e.g.:\n${errs.slice(0, 5).join('\n')}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await cli();
