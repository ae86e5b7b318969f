/**
 * Interop, offloads negotiated with DPDK's virtio-user: testpmd
 * (`net_tap` + `net_virtio_user`, started with `--rx-offloads` and
 * `--tx-offloads` carrying TCP/UDP checksum and TCP TSO) in namespace B
 * against `serve --netdev tap` in namespace A:
 *
 *   ns B: TAP ── testpmd net_tap ⇄ csum engine ⇄ net_virtio_user ══ vhost-user ══ serve ── TAP :ns A
 *
 * The `csum` forwarding engine does what io forwarding cannot with offloads
 * on: frames from net_tap are merged by testpmd's GRO and sent to serve as
 * TSO frames with partial checksums (virtio-user's HOST_TSO4/CSUM), and
 * partial checksums serve hands virtio-user (GUEST_CSUM: serve's TAP gets
 * TUNSETOFFLOAD csum) are completed in software before net_tap, which has
 * no vnet header. `--rx-offloads=0xc` (TCP and UDP checksum), not
 * `--enable-rx-cksum`: that one asks for the IPv4 header checksum too,
 * which virtio-user does not offer, so testpmd fails to configure the port
 * and virtio-user keeps the features of its probe (no offloads).
 * `csum mac-swap off` on both ports: by default testpmd
 * 22.11's csum engine rewrites both MAC addresses of every frame (its
 * `fwd_mac_swap`), so the kernel on either side dropped every frame, ARP
 * included, and the first ping failed.
 *
 * Asserts: serve logs the offload features virtio-user accepted and the
 * TAP's offloads; ping both ways; iperf3 (single stream and -P 4) moves
 * traffic both ways. Everything the test creates is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { sh } from './host.js';

function hasIperf3(): boolean {
  try {
    execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const skip = interopSkipReason() ?? (hasIperf3() ? undefined : 'iperf3 not installed (scripts/install-peers.sh)');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** iperf3 -P `streams` from `clientNs` to `serverNs`; returns received bits/s. */
function iperf(serverNs: string, addr: string, clientNs: string, streams: number): number {
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', addr], { stdio: 'ignore' });
  try {
    execFileSync('sleep', ['0.5']);
    const out = sh(['ip', 'netns', 'exec', clientNs, 'timeout', '30', 'iperf3', '-c', addr, '-P', String(streams), '-t', '2', '-J'], 40_000);
    return JSON.parse(out).end.sum_received.bits_per_second as number;
  } finally {
    server.kill('SIGKILL');
  }
}

/** RTE_ETH_TX_OFFLOAD_UDP_CKSUM | TCP_CKSUM | TCP_TSO | MULTI_SEGS (rte_ethdev.h). */
const TX_OFFLOADS = 0x4 | 0x8 | 0x20 | 0x8000;
/** RTE_ETH_RX_OFFLOAD_UDP_CKSUM | TCP_CKSUM: virtio-user then accepts GUEST_CSUM. */
const RX_OFFLOADS = 0x4 | 0x8;

test('DPDK virtio-user with checksum --rx-offloads and TSO/checksum --tx-offloads (csum engine + net_tap) ⇄ serve --netdev tap: offloads negotiated, ping and iperf3 both ways', { skip, timeout: 180_000 }, async () => {
  const id = `${process.pid % 10000}`;
  const nsA = `vmqOA${id}`, nsB = `vmqOB${id}`, tapA = `vmqoa${id}`, tapB = `vmqob${id}`;
  const A = '198.18.14.1', B = '198.18.14.2';
  const socket = tmpSocketPath('vu-offl');
  let serve: ChildProcess | undefined;
  let tp: Testpmd | undefined;
  let serveLog = '';
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    serve = spawn('ip', ['netns', 'exec', nsA, process.execPath, cli, 'serve', '--socket', socket, '--queues', '2', '--netdev', `tap,ifname=${tapA}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    serve.stderr!.on('data', (b: Buffer) => (serveLog += b.toString()));
    const until = Date.now() + 15_000;
    while (!serveLog.includes('listening on') && Date.now() < until) await sleep(50);
    assert.ok(serveLog.includes('listening on'), `serve did not start:\n${serveLog}`);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'addr', 'add', `${A}/24`, 'dev', tapA]);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'link', 'set', tapA, 'up']);
    tp = await Testpmd.start({
      name: `vuoffl${id}`, netns: nsB, lcores: '0@1,1@0', rxq: 2, txq: 2,
      vdevs: [`net_tap0,iface=${tapB}`, `net_virtio_user0,path=${socket},queues=2,cq=1,mrg_rxbuf=1`],
      extraApp: ['--forward-mode=csum', `--rx-offloads=0x${RX_OFFLOADS.toString(16)}`, `--tx-offloads=0x${TX_OFFLOADS.toString(16)}`],
    });
    assert.doesNotMatch(tp.logs, /Fail to configure|Start ports failed/, `testpmd configured both ports with the offloads:\n${tp.logs.slice(-3000)}`);
    // Port 0 = net_tap (plain frames: checksums in software), port 1 = virtio-user (partial checksums, TSO of GRO-merged frames).
    for (const c of ['port stop all', 'csum mac-swap off 0', 'csum mac-swap off 1', 'csum set ip sw 1', 'csum set tcp hw 1', 'csum set udp hw 1',
      'tso set 1448 1', 'set port 0 gro on', 'port start all']) {
      const out = await tp.cmd(c);
      assert.doesNotMatch(out, /error|invalid|not supported|bad arguments/i, `testpmd '${c}': ${out}`);
    }
    await tp.start();
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'addr', 'add', `${B}/24`, 'dev', tapB]);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'link', 'set', tapB, 'up']);
    // The offloads virtio-user accepted, as serve logs them (virtio-user probes without offloads, then
    // renegotiates when testpmd configures the port), and the TAP's TUNSETOFFLOAD from GUEST_CSUM.
    const withCsum = /front-end features: (.*\bVIRTIO_NET_F_CSUM\b.*)/;
    const by = Date.now() + 10_000;
    while (!withCsum.test(serveLog) && Date.now() < by) await sleep(50);
    const features = withCsum.exec(serveLog)?.[1] ?? '';
    for (const f of ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_GUEST_CSUM'])
      assert.match(features, new RegExp(`\\b${f}\\b`), `virtio-user negotiated ${f}: ${features}\n${serveLog}`);
    assert.match(serveLog, /TAP offloads 0x[0-9a-f]+ \(driver accepts: csum/);
    assert.match(sh(['ip', 'netns', 'exec', nsB, 'ping', '-c', '3', '-W', '3', A]), / 0% packet loss/);
    assert.match(sh(['ip', 'netns', 'exec', nsA, 'ping', '-c', '3', '-W', '3', B]), / 0% packet loss/);
    const rates: string[] = [];
    for (const streams of [1, 4]) {
      const bToA = iperf(nsA, A, nsB, streams);
      const aToB = iperf(nsB, B, nsA, streams);
      assert.ok(bToA > 1e6, `-P ${streams} virtio-user→serve ${bToA} bit/s`);
      assert.ok(aToB > 1e6, `-P ${streams} serve→virtio-user ${aToB} bit/s`);
      rates.push(`-P ${streams}: virtio-user→serve ${(bToA / 1e6).toFixed(0)} Mbit/s, serve→virtio-user ${(aToB / 1e6).toFixed(0)} Mbit/s`);
    }
    console.log(`# iperf3 through testpmd virtio-user (offloads, csum engine) ⇄ serve: ${rates.join('; ')}`);
  } finally {
    await tp?.quit().catch(() => tp?.kill());
    if (serve && serve.exitCode === null) {
      serve.kill('SIGTERM');
      for (let i = 0; i < 40 && serve.exitCode === null; i++) await sleep(50);
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
