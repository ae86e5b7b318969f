/**
 * Capture on the driver side: `attach --capture` against `serve` (in this
 * process, over a real unix socket) writes a pcapng file with one interface
 * per queue pair and the direction in each packet's flags, seen from the
 * driver (inbound = taken from receiveqN, outbound = made available on
 * transmitqN); every frame either end of the tap saw is written or counted
 * as a capture drop. And `virtio-mq capture --control` against a running
 * attach captures one pair and direction while it runs, with the capture
 * counters in `stats` and `/metrics`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostAvailable } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { attach, type AttachOptions } from '../src/cli/attach.js';
import { readPcapFile } from '../src/netdev/pcap.js';
import { ControlClient } from '../src/cli/control/client.js';
import type { Snapshot } from '../src/cli/observe/snapshot.js';
import type { CaptureSummary } from '../src/transport/capture.js';
import { parsePromText } from './support/prom-text.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const skip = hostAvailable() ? false : 'the native addon (src/host) is not built';
const tsharkMissing = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).error ? 'tshark is not installed (Debian package tshark; .ci/run installs it)' : false;

const options = (socket: string, o: Partial<AttachOptions>): AttachOptions => ({
  socket, server: false, queues: 2, ring: 'split', inOrder: false, mrgRxbuf: false, queueSize: 256, rss: false,
  netdev: 'generator,flows=8,size=200', duration: 0.2, mode: 'notify', json: true, reconnect: false, ...o,
});

/** `tshark` fields interface id and direction (1 inbound, 2 outbound) per frame, counted. */
function tsharkKinds(file: string): Map<string, number> {
  // Only the frame layer is needed (interface, flags, length): no dissection above Ethernet.
  const out = execFileSync('tshark', ['-r', file, '-n', '--disable-protocol', 'eth', '-T', 'fields', '-e', 'frame.interface_id', '-e', 'frame.packet_flags_direction', '-e', 'frame.len'],
    { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 256 << 20 }).toString().trim();
  const kinds = new Map<string, number>();
  for (const l of out ? out.split('\n') : []) {
    const k = l.split('\t').map(Number).join(' ');
    kinds.set(k, (kinds.get(k) ?? 0) + 1);
  }
  return kinds;
}

test('attach --capture: one interface per pair, inbound = receiveqN, outbound = transmitqN; every frame written or counted as a drop', { skip, timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), `vmq-attach-cap-${process.pid}-`));
  const socket = join(dir, 'vhost.sock');
  const file = join(dir, 'attach.pcapng');
  const be = new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'loopback' }, log: () => {} });
  await be.start();
  try {
    const logs: string[] = [];
    // Small rings and a short run: a few thousand frames, so tshark reads the file quickly.
    const r = await attach(options(socket, { capture: file, queueSize: 64, duration: 0.3 }), () => {}, { log: (l) => logs.push(l) });
    assert.deepEqual(r.problems, [], logs.join('\n'));
    const s = r.capture!;
    assert.ok(s, 'the capture summary is part of the result');
    assert.equal(s.file, file);
    assert.deepEqual(s.queues.map((q) => q.pair), [0, 1]);
    for (const q of s.queues) {
      const p = r.perPair[q.pair];
      assert.ok(p.txPackets > 0 && p.rxPackets > 0, `pair ${q.pair} carried traffic`);
      // The capture ran from before the first frame to after the workers stopped: nothing slips past the tap.
      assert.equal(q.txFrames + q.txDrops, p.txPackets, `pair ${q.pair}: every transmitted frame written or dropped`);
      assert.equal(q.rxFrames + q.rxDrops, p.rxPackets, `pair ${q.pair}: every received frame written or dropped`);
    }
    assert.ok(s.frames > 0);
    assert.ok(logs.some((l) => /attach: capture .*attach\.pcapng: \d+ frames/.test(l)), logs.join('\n'));
    // Our own reader: every frame a whole 200-byte generator frame (no virtio_net_hdr).
    const cap = readPcapFile(file);
    assert.equal(cap.count, s.frames);
    for (let i = 0; i < cap.count; i++) assert.equal(cap.lengths[i], 200, `frame ${i}`);
    if (tsharkMissing) {
      t.skip(tsharkMissing);
      return;
    }
    const kinds = tsharkKinds(file);
    const expect = new Map<string, number>();
    for (const q of s.queues) {
      if (q.rxFrames) expect.set(`${q.pair} 1 200`, q.rxFrames);
      if (q.txFrames) expect.set(`${q.pair} 2 200`, q.txFrames);
    }
    assert.deepEqual(kinds, expect, 'interface = pair, inbound = receiveq, outbound = transmitq, as the summary counts them');
  } finally {
    await be.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('virtio-mq capture --control against a running attach: pair 1, tx only; capture counters in stats and /metrics', { skip, timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), `vmq-attach-capcmd-${process.pid}-`));
  const socket = join(dir, 'vhost.sock');
  const control = join(dir, 'ctl.sock');
  const file = join(dir, 'q1-tx.pcapng');
  const be = new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'loopback' }, log: () => {} });
  await be.start();
  let stop!: () => void;
  const stopSignal = new Promise<void>((r) => (stop = r));
  const logs: string[] = [];
  const run = attach(options(socket, { duration: 60, observe: { control, metrics: '127.0.0.1:0' } }), () => {}, { log: (l) => logs.push(l), stopSignal });
  try {
    // The command line's capture, for 0.2 s, against this process's control socket.
    const deadline = Date.now() + 15_000;
    while (!logs.some((l) => /back-end connection 1: /.test(l))) {
      assert.ok(Date.now() < deadline, `attach runs: ${logs.join('\n')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const child = spawn(process.execPath, [MAIN, 'capture', '--control', control, '--queue', '1', '--dir', 'tx', '--duration', '0.2', '--json', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 0, err);
    const s = JSON.parse(out) as CaptureSummary;
    assert.equal(s.file, file);
    assert.deepEqual(s.queues.map((q) => q.pair), [1]);
    const q1 = s.queues[0];
    assert.ok(q1.txFrames > 0, `transmitq2 frames written: ${q1.txFrames}`);
    assert.equal(q1.rxFrames + q1.rxDrops, 0, 'no receiveq frames');
    // The same counters, monotonic since start, in stats and /metrics.
    const c = await ControlClient.connect(control);
    let snap: Snapshot;
    try {
      snap = (await c.request('stats')) as Snapshot;
    } finally {
      c.close();
    }
    const cs = snap.capture!;
    assert.deepEqual(cs.map((x) => x.pair), [0, 1]);
    assert.equal(cs[0].rxCaptured + cs[0].txCaptured + cs[0].rxDrops + cs[0].txDrops, 0, 'pair 0 never captured');
    assert.ok(cs[1].txCaptured >= q1.txFrames, 'every frame written was captured');
    assert.equal(cs[1].txDrops, q1.txDrops);
    const url = /metrics: (http:\S+)/.exec(logs.join('\n'))?.[1];
    assert.ok(url, 'the metrics URL is logged');
    const fams = parsePromText(await (await fetch(url)).text());
    const frames = fams.get('virtio_mq_capture_frames_total');
    assert.equal(frames?.type, 'counter');
    const sample = (pair: string, direction: string) => frames!.samples.find((x) => x.labels.pair === pair && x.labels.direction === direction)?.value;
    assert.equal(sample('1', 'tx'), cs[1].txCaptured);
    assert.equal(sample('0', 'rx'), 0);
    assert.equal(fams.get('virtio_mq_capture_drops_total')?.type, 'counter');
    assert.equal(fams.get('virtio_mq_strict')?.samples[0]?.value, 0, 'strict off');
    // The file holds what the summary says (tshark reads interface ids and directions in the test above).
    const cap = readPcapFile(file);
    assert.equal(cap.count, s.frames);
    for (let i = 0; i < cap.count; i++) assert.equal(cap.lengths[i], 200, `frame ${i}`);
  } finally {
    stop();
    const r = await run;
    await be.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(r.problems, [], logs.join('\n'));
  }
});
