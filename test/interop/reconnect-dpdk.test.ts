/**
 * Interop: DPDK's virtio-user as a listening front-end (`server=1`) keeps
 * its device through `serve --client` restarts. testpmd sends (txonly)
 * through serve into a persistent TAP while the test stops serve with
 * SIGTERM and starts it again, then kills it with SIGKILL and starts it
 * again; the new serve connects, virtio-user replays the setup, and frames
 * reach the TAP again, with split rings and with packed rings. The time
 * without frames (the TAP's rx_packets sampled every 20 ms) is printed for
 * each restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { sh } from './host.js';
import { stopProcess } from './netns.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(cond: () => boolean, what: string, timeoutMs: number, diag: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) assert.fail(`timed out (${timeoutMs / 1000} s) waiting for ${what}${diag()}`);
    await sleep(20);
  }
}

/** `sig`, then SIGKILL after 5 s; resolves once the child has exited. */
async function stopProc(p: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  await stopProcess(p, 5000, sig);
}

for (const packed of [false, true]) test(`DPDK virtio-user server=1${packed ? ' packed_vq=1' : ''} keeps its device through serve --client restarts (SIGTERM, SIGKILL): frames reach the TAP again, time without frames printed`, { skip: interopSkipReason(), timeout: 120_000 }, async () => {
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const ns = `vmqRd${id}`, tap = `vmqd${id}`;
  const socket = tmpSocketPath('rcdpdk');
  const serves: { proc: ChildProcess; text: string }[] = [];
  let sampler: ChildProcess | undefined;
  let tp: Testpmd | undefined;
  /** rx_packets of the TAP, with when each sample arrived. */
  const samples: { at: number; n: number }[] = [];
  const diag = () => `\n--- testpmd ---\n${tp?.logs.slice(-3000) ?? ''}\n${serves.map((s, i) => `--- serve #${i + 1} ---\n${s.text.slice(-2500)}`).join('\n')}`;
  const startServe = () => {
    const s = { proc: spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'serve', '--client', '--socket', socket, '--netdev', `tap,ifname=${tap}`], { stdio: ['ignore', 'ignore', 'pipe'] }), text: '' };
    s.proc.stderr!.on('data', (b: Buffer) => (s.text += b.toString()));
    serves.push(s);
    return s;
  };
  try {
    sh(['ip', 'netns', 'add', ns]);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap', 'multi_queue']);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', tap, 'up']);
    // virtio-user (server=1) listens and waits for its back-end before testpmd's prompt.
    const starting = Testpmd.start({
      name: `rcd${id}`, lcores: '0@1,1@0', forwardMode: 'txonly', txpkts: 64,
      vdevs: [`net_virtio_user0,path=${socket},queues=1,server=1${packed ? ',packed_vq=1' : ''}`], timeoutMs: 110_000, startTimeoutMs: 40_000,
    });
    starting.catch(() => undefined);
    await waitUntil(() => existsSync(socket), 'virtio-user to listen', 30_000, diag);
    let cur = startServe();
    tp = await starting;
    await tp.start();
    sampler = spawn('ip', ['netns', 'exec', ns, 'sh', '-c', `while :; do cat /sys/class/net/${tap}/statistics/rx_packets; sleep 0.02; done`], { stdio: ['ignore', 'pipe', 'ignore'] });
    let partial = '';
    sampler.stdout!.on('data', (b: Buffer) => {
      const parts = (partial + b.toString()).split('\n');
      partial = parts.pop()!;
      const at = Date.now();
      for (const p of parts) if (/^\d+$/.test(p)) samples.push({ at, n: Number(p) });
    });
    const last = () => samples.at(-1)?.n ?? 0;
    await waitUntil(() => last() > 1000, 'frames from testpmd on the TAP', 20_000, diag);

    const figures: string[] = [];
    for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
      const from = samples.length;
      const tEvent = Date.now();
      await stopProc(cur.proc, sig);
      cur = startServe();
      const next = cur;
      await waitUntil(() => next.text.includes('queue pair 0 started'), `the restarted serve (--client) to run pair 0 (${sig})`, 20_000, diag);
      const ready = Date.now();
      const base = last();
      await waitUntil(() => last() > base + 1000, `frames on the TAP after ${sig} + restart`, 20_000, diag);
      // Longest stretch without a new frame, from just before the event until frames flowed again.
      let gap = 0;
      for (let i = Math.max(1, from - 1); i < samples.length; i++) {
        let j = i;
        while (j < samples.length && samples[j].n === samples[i - 1].n) j++;
        if (j > i && j < samples.length) gap = Math.max(gap, samples[j].at - samples[i - 1].at);
        i = j;
      }
      figures.push(`${sig} + restart: no frames for ${(gap / 1000).toFixed(2)} s (serve running again ${((ready - tEvent) / 1000).toFixed(2)} s after the signal)`);
    }
    assert.ok(tp.alive, `testpmd still runs${diag()}`);
    const st = await tp.portStats(0);
    assert.ok(st.tx_packets > 0, `testpmd sent frames${diag()}`);
    console.log(`# DPDK virtio-user server=1${packed ? ' packed_vq=1' : ''} / serve --client (txonly 64 B into a TAP): ${figures.join('; ')}`);
  } finally {
    if (sampler) await stopProc(sampler, 'SIGKILL');
    if (tp) await tp.quit().catch(() => tp!.kill());
    for (const s of serves) await stopProc(s.proc, 'SIGTERM');
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      /* not created */
    }
    rmSync(socket, { force: true });
  }
});
