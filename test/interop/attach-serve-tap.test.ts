/**
 * Interop, real TCP through both ends of virtio-mq: `attach --netdev tap
 * --offloads` (a multi-queue TAP in namespace B: the process is a
 * virtio-user + TAP exception path) drives `serve --netdev tap` (a
 * multi-queue TAP in namespace A) over vhost-user:
 *
 *   ns B: TAP ── attach ══ vhost-user ══ serve ── TAP :ns A
 *
 * With offloads both TAPs carry the kernel's partial checksums and 64 KiB
 * GSO frames through unchanged: the test asserts the offloads were
 * negotiated (attach and serve log the features and the TUNSETOFFLOAD
 * flags; `ethtool -k` on both TAPs shows TCP segmentation offload on),
 * ping works both ways, and iperf3 (single stream and -P 4) completes in
 * both directions. With `--mtu 9000` on both ends a 9000-byte IP packet
 * (ping -M do -s 8972) crosses unfragmented both ways. Everything the test
 * creates (namespaces, processes, socket) is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { interopSkipReason, tmpSocketPath } from './testpmd.js';
import { sh } from './host.js';

function has(cmd: string, arg = '--version'): boolean {
  try {
    execFileSync(cmd, [arg], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const skip = interopSkipReason() ?? (has('iperf3') ? (has('ethtool') ? undefined : 'ethtool not installed') : 'iperf3 not installed (scripts/install-peers.sh)');
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

async function waitLog(log: () => string, what: string | RegExp, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  const hit = () => (typeof what === 'string' ? log().includes(what) : what.test(log()));
  while (!hit() && Date.now() < until) await sleep(50);
  return hit();
}

async function stop(p: ChildProcess | undefined): Promise<number | null> {
  if (!p || p.exitCode !== null) return p?.exitCode ?? null;
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  const code = await exited;
  clearTimeout(t);
  return code;
}

for (const mtu of [1500, 9000]) test(`real TCP: attach --netdev tap --offloads${mtu !== 1500 ? ` --mtu ${mtu}` : ''} ⇄ serve --netdev tap between two namespaces`, { skip, timeout: 180_000 }, async () => {
  const id = `${process.pid % 10000}${mtu === 1500 ? 's' : 'j'}`;
  const nsA = `vmqSA${id}`, nsB = `vmqSB${id}`, tapA = `vmqsa${id}`, tapB = `vmqsb${id}`;
  const A = '198.18.11.1', B = '198.18.11.2';
  const socket = tmpSocketPath('att-srv');
  const mtuArgs = mtu !== 1500 ? ['--mtu', String(mtu)] : [];
  let serve: ChildProcess | undefined, attach: ChildProcess | undefined;
  let serveLog = '', attachLog = '';
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    serve = spawn('ip', ['netns', 'exec', nsA, process.execPath, cli, 'serve', '--socket', socket, '--queues', '4', '--netdev', `tap,ifname=${tapA}`, ...mtuArgs],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    serve.stderr!.on('data', (b: Buffer) => (serveLog += b.toString()));
    assert.ok(await waitLog(() => serveLog, 'listening on', 15_000), `serve did not start:\n${serveLog}`);
    attach = spawn('ip', ['netns', 'exec', nsB, process.execPath, cli, 'attach', '--socket', socket, '--queues', '4', '--offloads', ...mtuArgs,
      '--netdev', `tap,ifname=${tapB}`, '--duration', '600'], { stdio: ['ignore', 'ignore', 'pipe'] });
    attach.stderr!.on('data', (b: Buffer) => (attachLog += b.toString()));
    assert.ok(await waitLog(() => attachLog, 'TAP offloads', 20_000), `attach did not connect:\n${attachLog}\n${serveLog}`);
    // Offloads negotiated on both ends (the features the driver accepted, and each TAP's TUNSETOFFLOAD).
    for (const f of ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_GUEST_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_GUEST_TSO4', 'VIRTIO_NET_F_MRG_RXBUF'])
      assert.match(attachLog, new RegExp(`negotiated with the back-end: .*${f}\\b`), `attach negotiated ${f}`);
    assert.match(attachLog, /TAP offloads 0x[0-9a-f]+ \(the back-end accepts: csum tso4 tso6/);
    assert.ok(await waitLog(() => serveLog, /TAP offloads 0x[0-9a-f]+ \(driver accepts: csum tso4 tso6/, 5000), `serve set the TAP's offloads:\n${serveLog}`);
    if (mtu !== 1500) assert.match(attachLog, /negotiated with the back-end: .*VIRTIO_NET_F_MTU\b/);
    for (const [ns, tap] of [[nsA, tapA], [nsB, tapB]]) {
      assert.match(sh(['ip', 'netns', 'exec', ns, 'ethtool', '-k', tap]), /tcp-segmentation-offload: on/, `${tap}: TSO on`);
      if (mtu !== 1500) assert.match(sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'show', tap]), new RegExp(`mtu ${mtu}\\b`), `${tap}: MTU ${mtu}`);
    }
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'addr', 'add', `${A}/24`, 'dev', tapA]);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'link', 'set', tapA, 'up']);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'addr', 'add', `${B}/24`, 'dev', tapB]);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'link', 'set', tapB, 'up']);
    assert.match(sh(['ip', 'netns', 'exec', nsB, 'ping', '-c', '3', '-W', '3', A]), / 0% packet loss/);
    assert.match(sh(['ip', 'netns', 'exec', nsA, 'ping', '-c', '3', '-W', '3', B]), / 0% packet loss/);
    if (mtu !== 1500) {
      // 8972 bytes of ICMP payload + 28 = a 9000-byte IP packet, don't fragment: one 9014-byte frame each way.
      assert.match(sh(['ip', 'netns', 'exec', nsB, 'ping', '-c', '3', '-W', '3', '-M', 'do', '-s', String(mtu - 28), A]), / 0% packet loss/);
      assert.match(sh(['ip', 'netns', 'exec', nsA, 'ping', '-c', '3', '-W', '3', '-M', 'do', '-s', String(mtu - 28), B]), / 0% packet loss/);
    }
    const rates: string[] = [];
    for (const streams of mtu === 1500 ? [1, 4] : [4]) {
      const bToA = iperf(nsA, A, nsB, streams);
      const aToB = iperf(nsB, B, nsA, streams);
      assert.ok(bToA > 1e6, `-P ${streams} B→A ${bToA} bit/s`);
      assert.ok(aToB > 1e6, `-P ${streams} A→B ${aToB} bit/s`);
      rates.push(`-P ${streams}: attach→serve ${(bToA / 1e6).toFixed(0)} Mbit/s, serve→attach ${(aToB / 1e6).toFixed(0)} Mbit/s`);
    }
    console.log(`# iperf3 through attach ⇄ serve (offloads, MTU ${mtu}): ${rates.join('; ')}`);
    assert.equal(await stop(attach), 0, `attach exits 0 on SIGTERM:\n${attachLog.slice(-3000)}`);
  } finally {
    await stop(attach);
    await stop(serve);
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
