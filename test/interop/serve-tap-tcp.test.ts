/**
 * Interop, real TCP: Linux TCP from namespace B goes through DPDK testpmd
 * (net_tap in B ⇄ net_virtio_user, io forwarding) into `virtio-mq serve
 * --netdev tap` (a multi-queue TAP in namespace A) and back:
 *
 *   ns B: vmqB-tap ── testpmd ── virtio-user ══ vhost-user ══ serve ── TAP vmqA-tap :ns A
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

for (const ring of ['split', 'packed'] as const) test(`real TCP through testpmd (net_tap + virtio-user, ${ring} rings) into serve --netdev tap: ping and iperf3 -P 4 both ways`, { skip, timeout: 180_000 }, async () => {
  const id = `${process.pid % 10000}${ring[0]}`;
  const nsA = `vmqA${id}`, nsB = `vmqB${id}`, tapA = `vmqa${id}`, tapB = `vmqb${id}`;
  const socket = tmpSocketPath('tap-tcp');
  let serve: ChildProcess | undefined;
  let tp: Testpmd | undefined;
  const serveLog: string[] = [];
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    serve = spawn('ip', ['netns', 'exec', nsA, process.execPath, cli, 'serve', '--socket', socket, '--queues', '2', '--netdev', `tap,ifname=${tapA}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    serve.stderr!.on('data', (b: Buffer) => serveLog.push(b.toString()));
    const until = Date.now() + 10_000;
    while (!serveLog.join('').includes('listening on') && Date.now() < until) await sleep(50);
    assert.ok(serveLog.join('').includes('listening on'), `serve did not start:\n${serveLog.join('')}`);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'addr', 'add', '198.18.7.1/24', 'dev', tapA]);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'link', 'set', tapA, 'up']);
    tp = await Testpmd.start({
      name: `taptcp${id}`, netns: nsB, lcores: '0@1,1@0', rxq: 2, txq: 2, forwardMode: 'io',
      vdevs: [`net_tap0,iface=${tapB}`, `net_virtio_user0,path=${socket},queues=2,cq=1${ring === 'packed' ? ',packed_vq=1' : ''}`],
    });
    await tp.start();
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'addr', 'add', '198.18.7.2/24', 'dev', tapB]);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'link', 'set', tapB, 'up']);
    // ping both ways (the first may wait for ARP).
    const pingB = sh(['ip', 'netns', 'exec', nsB, 'ping', '-c', '3', '-W', '3', '198.18.7.1']);
    assert.match(pingB, / 0% packet loss/);
    const pingA = sh(['ip', 'netns', 'exec', nsA, 'ping', '-c', '3', '-W', '3', '198.18.7.2']);
    assert.match(pingA, / 0% packet loss/);
    const bToA = iperf(nsA, '198.18.7.1', nsB);
    const aToB = iperf(nsB, '198.18.7.2', nsA);
    assert.ok(bToA > 1e6, `B→A ${bToA} bit/s`);
    assert.ok(aToB > 1e6, `A→B ${aToB} bit/s`);
    assert.equal(/front-end features: .*VIRTIO_F_RING_PACKED/.test(serveLog.join('')), ring === 'packed', 'serve negotiated the ring format asked for');
    console.log(`# iperf3 -P 4 through testpmd + serve (${ring}): B→A ${(bToA / 1e6).toFixed(0)} Mbit/s, A→B ${(aToB / 1e6).toFixed(0)} Mbit/s`);
  } finally {
    await tp?.quit().catch(() => undefined);
    if (serve && serve.exitCode === null) {
      serve.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1500));
      if (serve.exitCode === null) serve.kill('SIGKILL');
    }
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
