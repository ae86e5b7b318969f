/**
 * Interop, DPDK's virtio driver with offloads: testpmd's virtio-user asks
 * for checksum and TSO offloads (`--enable-rx-cksum`, `--tx-offloads` with
 * TCP_TSO | TCP_CKSUM | UDP_CKSUM) and forwards with its `csum` engine, so
 * the frames it sends to `serve --netdev tap` carry partial checksums
 * (VIRTIO_NET_HDR_F_NEEDS_CSUM) and TSO headers, which serve passes to the
 * kernel's TAP unchanged:
 *
 *   ns B: TAP b ── testpmd (net_tap ⇄ net_virtio_user, csum fwd) ══ vhost-user ══ serve ── TAP a :ns A
 *
 * serve negotiates VIRTIO_NET_F_CSUM, HOST_TSO4/6 and GUEST_CSUM with
 * virtio-user; ping and iperf3 (TCP, both ways) work, and A's kernel counts
 * no bad checksum. Everything created is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const skip = interopSkipReason() ?? (has('iperf3', ['--version']) ? undefined : 'iperf3 not installed (scripts/install-peers.sh)') ?? (has('nstat', ['-V']) ? undefined : 'nstat (iproute2) not installed');

function sh(args: string[], timeout = 30_000): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
}

function nstat(ns: string, name: string): number {
  const j = JSON.parse(sh(['ip', 'netns', 'exec', ns, 'nstat', '-az', '--json'])) as { kernel: Record<string, number> };
  return j.kernel[name] ?? 0;
}

/** iperf3 -P 2 from `client` ns to `server` ns; returns received bits/s. */
async function iperf(serverNs: string, addr: string, clientNs: string): Promise<number> {
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', addr], { stdio: 'ignore' });
  try {
    const until = Date.now() + 10_000;
    for (;;) {
      try {
        const out = sh(['ip', 'netns', 'exec', clientNs, 'timeout', '30', 'iperf3', '-c', addr, '-P', '2', '-t', '3', '-J'], 40_000);
        return JSON.parse(out).end.sum_received.bits_per_second as number;
      } catch (e) {
        if (Date.now() > until) throw e;
        await sleep(200); // server not listening yet
      }
    }
  } finally {
    server.kill('SIGKILL');
  }
}

test('DPDK virtio-user with checksum and TSO offloads (csum forwarding) into serve --netdev tap: offloads negotiated, ping and iperf3 both ways, no bad checksum', { skip, timeout: 180_000 }, async () => {
  const id = `${process.pid % 10000}o`;
  const nsA = `vmqOA${id}`, nsB = `vmqOB${id}`, tapA = `vmqoa${id}`, tapB = `vmqob${id}`;
  const socket = tmpSocketPath('tap-offl');
  let serve: ChildProcess | undefined;
  let tp: Testpmd | undefined;
  const serveLog: string[] = [];
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    serve = spawn('ip', ['netns', 'exec', nsA, process.execPath, cli, 'serve', '--socket', socket, '--queues', '2', '--netdev', `tap,ifname=${tapA}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    serve.stdout!.resume();
    serve.stderr!.on('data', (b: Buffer) => serveLog.push(b.toString()));
    const until = Date.now() + 10_000;
    while (!serveLog.join('').includes('listening on') && Date.now() < until) await sleep(50);
    assert.ok(serveLog.join('').includes('listening on'), `serve did not start:\n${serveLog.join('')}`);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'addr', 'add', '198.18.11.1/24', 'dev', tapA]);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'link', 'set', tapA, 'up']);
    tp = await Testpmd.start({
      name: `tapoffl${id}`, netns: nsB, lcores: '0@1,1@0', rxq: 2, txq: 2,
      vdevs: [`net_tap0,iface=${tapB}`, `net_virtio_user0,path=${socket},queues=2,cq=1`],
      // 0x2c: TCP_TSO | TCP_CKSUM | UDP_CKSUM (both ports have them); RX checksum offload on.
      extraApp: ['--enable-rx-cksum', '--tx-offloads=0x2c'],
    });
    await tp.cmd('set fwd csum');
    await tp.cmd('port stop all');
    for (const p of [0, 1]) {
      await tp.cmd(`csum set tcp hw ${p}`);
      await tp.cmd(`csum set udp hw ${p}`);
    }
    await tp.cmd('tso set 1448 1');
    await tp.cmd('port start all');
    await tp.start();
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'addr', 'add', '198.18.11.2/24', 'dev', tapB]);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'link', 'set', tapB, 'up']);
    const features = () => serveLog.join('').split('\n').filter((l) => l.includes('front-end features:')).at(-1) ?? '';
    const bad0 = nstat(nsA, 'TcpInCsumErrors') + nstat(nsA, 'UdpInCsumErrors');
    assert.match(sh(['ip', 'netns', 'exec', nsB, 'ping', '-c', '3', '-W', '3', '198.18.11.1']), / 0% packet loss/);
    const bToA = await iperf(nsA, '198.18.11.1', nsB);
    const aToB = await iperf(nsB, '198.18.11.2', nsA);
    const f = features();
    for (const name of ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_GUEST_CSUM'])
      assert.ok(f.includes(name), `serve negotiated ${name} with virtio-user: ${f}`);
    assert.ok(bToA > 1e6, `B→A ${bToA} bit/s`);
    assert.ok(aToB > 1e6, `A→B ${aToB} bit/s`);
    assert.equal(nstat(nsA, 'TcpInCsumErrors') + nstat(nsA, 'UdpInCsumErrors') - bad0, 0, 'A\'s kernel found no bad checksum');
    console.log(`# iperf3 -P 2 through testpmd (csum fwd, TSO and checksum offloads) + serve: B→A ${(bToA / 1e6).toFixed(0)} Mbit/s, A→B ${(aToB / 1e6).toFixed(0)} Mbit/s`);
  } finally {
    await tp?.quit().catch(() => tp?.kill());
    if (serve && serve.exitCode === null) {
      serve.kill('SIGTERM');
      for (let i = 0; i < 30 && serve.exitCode === null; i++) await sleep(50);
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
