/**
 * Interop, the kernel's GSO frames: the device's software checksum and
 * segmentation (src/net/gso.ts, what `serve` does for netdevs without a
 * vnet header) run on frames the Linux kernel produced, and the receiving
 * kernel judges the result.
 *
 *   ns A: TAP a (IFF_VNET_HDR, TUNSETOFFLOAD csum+tso4/6+uso4/6) ─┐
 *                                                  userspace bridge (test/support/tap-bridge.ts)
 *   ns B: TAP b (IFF_VNET_HDR, no offloads)  ──────────────────────┘
 *
 * TCP over IPv4 and IPv6 (iperf3) and UDP with UDP_SEGMENT (python3) go
 * from A to B: the kernel of A hands over 64 KiB TSO/USO frames with
 * partial checksums; every one is segmented in software and written to B as
 * plain frames of at most 14 + 1500 bytes. B's kernel checks every
 * checksum: the transfers complete, B counts no checksum error
 * (TcpInCsumErrors, Udp InCsumErrors), and every datagram arrives.
 * Everything created (namespaces, TAPs) is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import { BridgeStat, type TapBridgeData } from '../support/tap-bridge.js';
import { sh } from './host.js';

function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function hostModule(): Promise<typeof import('../../src/host/index.js') | null> {
  try {
    const h = await import('../../src/host/index.js');
    return h.hostAvailable() ? h : null;
  } catch {
    return null;
  }
}

const host = await hostModule();
const skip =
  process.platform !== 'linux' ? 'Linux only'
  : process.getuid?.() !== 0 ? 'needs root (network namespaces, TAPs)'
  : host === null ? 'the native addon is not built'
  : !has('ip', ['-V']) ? 'iproute2 not installed'
  : !has('iperf3', ['--version']) ? 'iperf3 not installed (scripts/install-peers.sh)'
  : !has('python3', ['--version']) ? 'python3 not installed'
  : !has('nstat', ['-V']) ? 'nstat (iproute2) not installed'
  : undefined;

/** One counter of `nstat -az` in namespace `ns` (absolute value). */
function nstat(ns: string, name: string): number {
  const out = sh(['ip', 'netns', 'exec', ns, 'nstat', '-az', '--json']);
  const j = JSON.parse(out) as { kernel: Record<string, number> };
  return j.kernel[name] ?? 0;
}

const UDP_SENDER = `
import socket, sys
dst, port, n, seg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 103, seg)  # UDP_SEGMENT
payload = bytes((i * 7) & 0xff for i in range(seg * 40))
for k in range(n):
    s.sendto(payload, (dst, port))
`;
const UDP_RECEIVER = `
import socket, sys, select
addr, port, want, seg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ':' in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((addr, port))
print('ready', flush=True)
got = 0; good = 0
while got < want:
    r, _, _ = select.select([s], [], [], 5)
    if not r: break
    d = s.recv(65536)
    got += 1
    if len(d) == seg: good += 1
print(got, good, flush=True)
`;

test('software segmentation and checksums on kernel-made GSO frames: TCP v4/v6 and UDP_SEGMENT cross to a second kernel intact', { skip, timeout: 120_000 }, async (t) => {
  const h = host!;
  const id = `${process.pid % 100000}`;
  const nsA = `vmqgA${id}`, nsB = `vmqgB${id}`, tapA = `vmqga${id}`, tapB = `vmqgb${id}`;
  let worker: Worker | undefined;
  const control = new SharedArrayBuffer(4);
  const stats = new SharedArrayBuffer(8 * 16);
  const st = new Float64Array(stats);
  const fds: number[] = [];
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    const a = h.tunOpen(tapA, { multiQueue: false, vnetHdr: true, nonblock: true });
    fds.push(a.fd);
    const b = h.tunOpen(tapB, { multiQueue: false, vnetHdr: true, nonblock: true });
    fds.push(b.fd);
    for (const fd of fds) h.tunSetVnetHdrSize(fd, 12);
    let offl = h.TUN_F_CSUM | h.TUN_F_TSO4 | h.TUN_F_TSO6 | h.TUN_F_USO4 | h.TUN_F_USO6;
    let uso = true;
    try {
      h.tunSetOffload(a.fd, offl);
    } catch {
      offl &= ~(h.TUN_F_USO4 | h.TUN_F_USO6); // kernel before 6.2
      uso = false;
      h.tunSetOffload(a.fd, offl);
    }
    h.tunSetOffload(b.fd, 0);
    sh(['ip', 'link', 'set', tapA, 'netns', nsA]);
    sh(['ip', 'link', 'set', tapB, 'netns', nsB]);
    for (const [ns, dev, v4, v6] of [[nsA, tapA, '198.18.9.1/24', 'fd00:9::1/64'], [nsB, tapB, '198.18.9.2/24', 'fd00:9::2/64']]) {
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
      sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', v4, 'dev', dev]);
      sh(['ip', 'netns', 'exec', ns, 'ip', '-6', 'addr', 'add', v6, 'dev', dev, 'nodad']);
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', dev, 'up']);
    }
    const data: TapBridgeData = { fdA: a.fd, fdB: b.fd, mode: 'soft', control, stats, maxOut: 14 + 1500 };
    worker = new Worker(new URL('../support/tap-bridge.js', import.meta.url), { workerData: data });
    const workerFailed = new Promise<never>((_, rej) => worker!.once('error', rej));
    void workerFailed.catch(() => undefined);
    const csumErrB0 = nstat(nsB, 'TcpInCsumErrors') + nstat(nsB, 'UdpInCsumErrors') + nstat(nsB, 'Udp6InCsumErrors');

    // TCP, IPv4 then IPv6: 16 MB each way A→B through the software segmentation.
    for (const [addr, fam] of [['198.18.9.2', '-4'], ['fd00:9::2', '-6']] as const) {
      const server = spawn('ip', ['netns', 'exec', nsB, 'iperf3', '-s', '-1', '-B', addr], { stdio: 'ignore' });
      try {
        let out = '';
        const until = Date.now() + 10_000;
        for (;;) {
          try {
            out = sh(['ip', 'netns', 'exec', nsA, 'timeout', '40', 'iperf3', fam, '-c', addr, '-n', '16M', '-J'], 50_000);
            break;
          } catch (e) {
            if (Date.now() > until) throw e;
            await sleep(200); // the server is not listening yet
          }
        }
        const r = JSON.parse(out) as { end: { sum_sent: { bytes: number }; sum_received: { bytes: number; bits_per_second: number } } };
        // iperf3 -n ends when the sender has sent 16 MiB; the receiver's count stops at that moment too.
        assert.ok(r.end.sum_sent.bytes >= 16 * 2 ** 20, `TCP ${fam}: A sent ${r.end.sum_sent.bytes} bytes`);
        assert.ok(r.end.sum_received.bytes >= 8 * 2 ** 20, `TCP ${fam}: B received ${r.end.sum_received.bytes} bytes`);
        t.diagnostic(`TCP ${fam}: ${(r.end.sum_received.bits_per_second / 1e6).toFixed(0)} Mbit/s through software segmentation`);
      } finally {
        server.kill('SIGKILL');
      }
    }
    assert.ok(st[BridgeStat.gsoTcp4] > 0, 'the kernel handed over TSOv4 frames');
    assert.ok(st[BridgeStat.gsoTcp6] > 0, 'the kernel handed over TSOv6 frames');
    assert.ok(st[BridgeStat.largestIn] > 1514, `frames above the MTU arrived (largest ${st[BridgeStat.largestIn]})`);

    // UDP with UDP_SEGMENT (USO): 200 sends of 40 × 1200-byte datagrams each.
    if (uso) {
      for (const addr of ['198.18.9.2', 'fd00:9::2']) {
        const n = 200, seg = 1200, want = n * 40;
        const rx = spawn('ip', ['netns', 'exec', nsB, 'python3', '-c', UDP_RECEIVER, addr, '5301', String(want), String(seg)], { stdio: ['ignore', 'pipe', 'inherit'] });
        let rxOut = '';
        rx.stdout!.on('data', (c: Buffer) => (rxOut += c.toString()));
        const until = Date.now() + 10_000;
        while (!rxOut.includes('ready') && Date.now() < until) await sleep(20);
        assert.ok(rxOut.includes('ready'), 'UDP receiver started');
        const uso0 = st[BridgeStat.gsoUdpL4];
        sh(['ip', 'netns', 'exec', nsA, 'python3', '-c', UDP_SENDER, addr, '5301', String(n), String(seg)]);
        const code = await new Promise<number | null>((r) => rx.once('exit', r));
        assert.equal(code, 0);
        const [got, good] = rxOut.trim().split('\n').pop()!.split(' ').map(Number);
        assert.ok(st[BridgeStat.gsoUdpL4] > uso0, 'the kernel handed over USO frames');
        // UDP may lose datagrams to a full socket buffer; every one that arrives must be whole.
        assert.equal(good, got, 'every datagram received has the segment size');
        assert.ok(got >= want * 0.9, `UDP ${addr}: ${got} of ${want} datagrams arrived`);
        t.diagnostic(`UDP_SEGMENT ${addr}: ${got}/${want} datagrams`);
      }
    } else t.diagnostic('kernel without TUN_F_USO: UDP_SEGMENT part skipped');

    const csumErrB = nstat(nsB, 'TcpInCsumErrors') + nstat(nsB, 'UdpInCsumErrors') + nstat(nsB, 'Udp6InCsumErrors');
    assert.equal(csumErrB - csumErrB0, 0, 'the receiving kernel found no bad checksum');
    assert.equal(st[BridgeStat.refused], 0, 'no kernel frame was refused by the software path');
    assert.equal(st[BridgeStat.oversize], 0, 'every output frame fits the 1500-byte MTU');
    assert.ok(st[BridgeStat.needsCsum] > 0, 'partial checksums were completed');
    t.diagnostic(`frames from A: ${st[BridgeStat.framesA]} (TSOv4 ${st[BridgeStat.gsoTcp4]}, TSOv6 ${st[BridgeStat.gsoTcp6]}, USO ${st[BridgeStat.gsoUdpL4]}, NEEDS_CSUM ${st[BridgeStat.needsCsum]}), segments out ${st[BridgeStat.segmentsOut]}, largest in ${st[BridgeStat.largestIn]} B`);
  } finally {
    Atomics.store(new Int32Array(control), 0, 1);
    if (worker) await new Promise((r) => { worker!.once('exit', r); setTimeout(() => void worker!.terminate(), 2000); });
    for (const fd of fds) {
      try {
        h.close(fd);
      } catch {
        /* closed */
      }
    }
    for (const ns of [nsA, nsB]) {
      try {
        sh(['ip', 'netns', 'del', ns]);
      } catch {
        /* not created */
      }
    }
  }
});
