/**
 * Interop: per-queue capture and strict conformance of `serve` (the
 * vhost-user back-end, in this process) with DPDK testpmd's virtio-user as
 * the driver, split and packed rings, 2 queue pairs.
 *
 * - A capture started and stopped at run time (the API a control-socket
 *   command calls) on every queue: tshark reads one interface per queue
 *   pair, outbound packets (transmitq) while testpmd sends (txonly), inbound
 *   (receiveq) while serve's generator sends (rxonly); per queue and
 *   direction, frames written + capture drops == frames the back-end moved.
 * - A capture of one queue and one direction holds nothing else.
 * - With strict checks on, a conforming driver (virtio-user) breaks no rule.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { settle } from './host.js';
import { VhostUserBackend } from '../../src/transport/vhost-user/backend.js';
import { DevStat } from '../../src/net/stats.js';
import { newGate, openGate, closeGate } from '../../src/netdev/generator-netdev.js';
import { DEFAULT_RSS_KEY } from '../../src/net/toeplitz.js';
import { VIRTIO_NET_HASH_TYPE_ALL } from '../../src/net/rss.js';
import { QueueCapture } from '../../src/transport/capture.js';
import { ConformanceMonitor, formatConformance } from '../../src/virtio/conformance.js';

const skip = interopSkipReason() ?? (spawnSync('tshark', ['-v'], { stdio: 'ignore' }).error ? 'tshark is not installed (Debian package tshark; .ci/run installs it)' : false);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Packets per "interface_id direction" as tshark reads them (direction 0x00000001 inbound, 0x00000002 outbound). */
function tsharkCounts(file: string): Map<string, number> {
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.interface_id', '-e', 'frame.packet_flags_direction'],
    { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const m = new Map<string, number>();
  for (const line of out.split('\n')) {
    if (!line) continue;
    const [iface, dir] = line.split('\t');
    const k = `${iface} ${Number(dir) === 1 ? 'in' : Number(dir) === 2 ? 'out' : dir}`;
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

for (const ring of ['split', 'packed'] as const) {
  test(`serve (${ring} rings) with testpmd: capture started at run time, read by tshark per queue and direction; --strict finds no violation`, { skip, timeout: 180_000 }, async () => {
    const pairs = 2;
    const socket = tmpSocketPath(`cap-${ring}`);
    const dir = mkdtempSync(join(tmpdir(), `vmq-serve-capture-${process.pid}-`));
    const gate = newGate();
    const logs: string[] = [];
    const capture = new QueueCapture(pairs);
    const strict = new ConformanceMonitor();
    const backend = new VhostUserBackend({
      socket, pairs, mode: 'notify', log: (l) => logs.push(l),
      netdev: { kind: 'generator', flows: 64, size: 64, gate },
      rss: { key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_HASH_TYPE_ALL, indirectionTable: Uint16Array.from({ length: 128 }, (_, i) => i % pairs), unclassifiedQueue: 0 },
      capture: capture.buffers, strict: true,
      onQueueError: (q, code, message, format) => void strict.recordRingError(code, message, q, format),
    });
    await backend.start();
    let tp: Testpmd | undefined;
    try {
      tp = await Testpmd.start({
        name: `cap${ring[0]}`, lcores: '0@1,1@0', rxq: pairs, txq: pairs, txpkts: 64,
        vdevs: [`net_virtio_user0,path=${socket},queues=${pairs},cq=1,packed_vq=${ring === 'packed' ? 1 : 0}`],
        extraApp: ring === 'split' ? ['--txfreet=224'] : [],
      });
      const peer = tp;
      const diag = () => `\n--- serve ---\n${logs.slice(-40).join('\n')}\n--- testpmd (tail) ---\n${peer.logs.slice(-2000)}`;
      const until = Date.now() + 15_000;
      while ((backend.session?.runningPairs ?? 0) < pairs && Date.now() < until) await sleep(50);
      assert.equal(backend.session?.runningPairs, pairs, `running pairs${diag()}`);
      const s = backend.stats;
      const per = (k: number) => Array.from({ length: pairs }, (_, q) => s.get(q, k));

      // Every queue, both directions: txonly then rxonly inside one capture.
      const file = join(dir, 'all.pcapng');
      const tx0 = per(DevStat.txPackets), rx0 = per(DevStat.rxPackets);
      capture.start(file);
      await peer.cmd('set fwd txonly');
      await peer.start();
      await sleep(1000);
      await peer.stop();
      await settle(() => s.total(DevStat.txPackets));
      await peer.cmd('set fwd rxonly');
      await peer.start();
      openGate(gate);
      await sleep(1000);
      closeGate(gate);
      await settle(() => s.total(DevStat.rxPackets));
      await peer.stop();
      const sum = await capture.stop();
      const moved = { tx: per(DevStat.txPackets).map((v, q) => v - tx0[q]), rx: per(DevStat.rxPackets).map((v, q) => v - rx0[q]) };
      const counts = tsharkCounts(file);
      for (let q = 0; q < pairs; q++) {
        const c = sum.queues[q];
        assert.ok(moved.tx[q] > 0 && moved.rx[q] > 0, `queue ${q} carried traffic both ways: ${JSON.stringify(moved)}${diag()}`);
        assert.equal(c.txFrames + c.txDrops, moved.tx[q], `queue ${q} TX: written + dropped = consumed`);
        assert.equal(c.rxFrames + c.rxDrops, moved.rx[q], `queue ${q} RX: written + dropped = delivered`);
        assert.ok(c.txFrames > 0 && c.rxFrames > 0, `queue ${q}: frames written both ways ${JSON.stringify(c)}`);
        assert.equal(counts.get(`${q} out`) ?? 0, c.txFrames, `tshark: interface ${q} outbound`);
        assert.equal(counts.get(`${q} in`) ?? 0, c.rxFrames, `tshark: interface ${q} inbound`);
      }
      assert.equal([...counts.values()].reduce((a, b) => a + b, 0), sum.frames, `nothing else in the file: ${JSON.stringify([...counts])}`);
      console.log(`# ${ring}: captured ${sum.frames} frames, ${sum.drops} capture drops (${JSON.stringify(sum.queues)})`);

      // One queue, one direction.
      const one = join(dir, 'q1-rx.pcapng');
      capture.start(one, { queue: 1, dir: 'rx', snaplen: 60 });
      await peer.cmd('set fwd io');
      await peer.start();
      openGate(gate);
      await sleep(800);
      closeGate(gate);
      await settle(() => s.total(DevStat.rxPackets) + s.total(DevStat.txPackets));
      await peer.stop();
      const sum1 = await capture.stop();
      const c1 = tsharkCounts(one);
      assert.deepEqual([...c1.keys()], ['1 in'], `only queue pair 1, inbound: ${JSON.stringify([...c1])}`);
      assert.equal(c1.get('1 in'), sum1.queues[0].rxFrames);
      assert.ok(sum1.queues[0].rxFrames > 0);

      const exit = await peer.quit();
      tp = undefined;
      assert.equal(exit.code, 0);
      assert.equal(strict.total, 0, formatConformance(strict.report()));
      assert.equal(s.total(DevStat.errors), 0, `queue errors${diag()}`);
    } finally {
      await tp?.quit();
      await backend.stop();
      rmSync(socket, { force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
