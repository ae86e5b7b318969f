/**
 * Interop, real TCP through the front-end: `virtio-mq attach --netdev tap`
 * (a multi-queue TAP in namespace A: the process is a virtio-user + TAP
 * exception path) drives DPDK testpmd's vhost PMD, which forwards (io) to
 * its TAP PMD in namespace B:
 *
 *   ns A: TAP vmqa ── attach ══ vhost-user ══ testpmd net_vhost ── net_tap vmqb :ns B
 *
 * ping works and `iperf3 -P 4` completes in both directions. Everything the
 * test creates (namespaces, processes, socket) is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { sh } from './host.js';

const skip = interopSkipReason() ?? (hasIperf3() ? undefined : 'iperf3 not installed (scripts/install-peers.sh)');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function hasIperf3(): boolean {
  try {
    execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** iperf3 -P 4 from `client` ns to `server` ns; returns received bits/s. */
function iperf(serverNs: string, addr: string, clientNs: string): number {
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', addr], { stdio: 'ignore' });
  try {
    execFileSync('sleep', ['0.5']);
    const out = sh(['ip', 'netns', 'exec', clientNs, 'timeout', '30', 'iperf3', '-c', addr, '-P', '4', '-t', '3', '-J'], 40_000);
    return JSON.parse(out).end.sum_received.bits_per_second as number;
  } finally {
    server.kill('SIGKILL');
  }
}

for (const ring of ['split', 'packed'] as const) test(`real TCP: attach --netdev tap (${ring}) through testpmd net_vhost + net_tap: ping and iperf3 -P 4 both ways`, { skip, timeout: 180_000 }, async () => {
  const id = `${process.pid % 10000}${ring[0]}`;
  const nsA = `vmqFA${id}`, nsB = `vmqFB${id}`, tapA = `vmqfa${id}`, tapB = `vmqfb${id}`;
  const socket = tmpSocketPath('att-tap');
  let attach: ChildProcess | undefined;
  let tp: Testpmd | undefined;
  let log = '';
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    tp = await Testpmd.start({
      name: `atttap${id}`, netns: nsB, lcores: '0@1,1@0', rxq: 2, txq: 2, forwardMode: 'io',
      vdevs: [`net_vhost0,iface=${socket},queues=2`, `net_tap0,iface=${tapB}`],
    });
    await tp.start();
    attach = spawn('ip', ['netns', 'exec', nsA, process.execPath, cli, 'attach', '--socket', socket, '--queues', '2', '--ring', ring,
      '--netdev', `tap,ifname=${tapA}`, '--duration', '600'], { stdio: ['ignore', 'pipe', 'pipe'] });
    attach.stdout!.on('data', (b: Buffer) => (log += b.toString()));
    attach.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    const until = Date.now() + 20_000;
    while (!log.includes('connected to the back-end') && Date.now() < until) await sleep(50);
    assert.ok(log.includes('connected to the back-end'), `attach did not connect:\n${log}\n${tp.logs.slice(-2000)}`);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'addr', 'add', '198.18.9.1/24', 'dev', tapA]);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'link', 'set', tapA, 'up']);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'addr', 'add', '198.18.9.2/24', 'dev', tapB]);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'link', 'set', tapB, 'up']);
    const pingA = sh(['ip', 'netns', 'exec', nsA, 'ping', '-c', '3', '-W', '3', '198.18.9.2']);
    assert.match(pingA, / 0% packet loss/);
    const pingB = sh(['ip', 'netns', 'exec', nsB, 'ping', '-c', '3', '-W', '3', '198.18.9.1']);
    assert.match(pingB, / 0% packet loss/);
    const aToB = iperf(nsB, '198.18.9.2', nsA);
    const bToA = iperf(nsA, '198.18.9.1', nsB);
    assert.ok(aToB > 1e6, `A→B ${aToB} bit/s`);
    assert.ok(bToA > 1e6, `B→A ${bToA} bit/s`);
    assert.equal(/negotiated with the back-end: .*VIRTIO_F_RING_PACKED/.test(log), ring === 'packed', 'the ring format asked for');
    console.log(`# iperf3 -P 4 through attach + testpmd (${ring}): A→B ${(aToB / 1e6).toFixed(0)} Mbit/s, B→A ${(bToA / 1e6).toFixed(0)} Mbit/s`);
    attach.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => attach!.once('exit', (c) => r(c)));
    assert.equal(code, 0, `attach exits 0 on SIGTERM:\n${log.slice(-3000)}`);
  } finally {
    if (attach && attach.exitCode === null) {
      attach.kill('SIGKILL');
    }
    await tp?.quit().catch(() => undefined);
    for (const ns of [nsA, nsB]) {
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch {
        /* not created */
      }
    }
    rmSync(socket, { force: true });
  }
});
