/**
 * Real input: capture real TCP/UDP/ICMP between two network namespaces
 * (scripts/capture-traffic.sh), then replay it through 4 queue pairs. Every
 * frame must come back byte-exact, each flow in order, and the 8 iperf3 TCP
 * flows must be spread so that no pair carries more than half of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loopback } from '../src/cli/loopback.js';
import { captureSkipReason } from './support/capture.js';

const skip = captureSkipReason() ?? false;

test('captured iperf3 traffic through 4 pairs, split and packed rings: byte-exact, in order, TCP flows spread', { skip, timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-cap-'));
  try {
    const pcap = join(dir, 'traffic.pcap');
    execFileSync('bash', ['scripts/capture-traffic.sh', pcap, '3'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 150_000 });
    // The same capture over split and packed rings (spec §2.7, §2.8).
    for (const ring of ['split', 'packed'] as const) {
      const r = await loopback({ queues: 4, flows: 0, size: 0, duration: 0, pcap, rss: false, mode: 'notify', queueSize: 256, ring, json: true }, () => {});
      assert.deepEqual(r.problems, [], ring);
      assert.equal(r.features.includes('VIRTIO_F_RING_PACKED'), ring === 'packed');
      assert.ok(r.txPackets > 1000, `${ring}: replayed ${r.txPackets} frames`);
      assert.equal(r.rxPackets, r.txPackets, ring);
      const tcp = r.tcpFlowsPerPair!;
      const total = tcp.reduce((a, b) => a + b, 0);
      assert.ok(total >= 8, `expected >= 8 TCP flows, got ${total}`);
      // iperf3 -P 8 data flows (plus control connections): no pair may carry more than half.
      for (const n of tcp) assert.ok(n <= total / 2, `TCP flows per pair ${tcp.join(' ')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
