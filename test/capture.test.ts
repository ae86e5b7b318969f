/**
 * Per-queue capture (`--capture`): the capture ring, the pcapng file as
 * tshark reads it (one interface per queue pair, direction in the packet
 * flags, the frame bytes), the queue/direction/snap length filters, and a
 * stalled writer that must not slow the data path (drops counted instead).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createHash } from 'node:crypto';
import { loopback, type LoopbackOptions } from '../src/cli/loopback.js';
import { CaptureRing, CAPTURE_RX, CAPTURE_TX, DIR_RX, DIR_TX, CaptureCount } from '../src/net/capture-ring.js';
import { writePcapFile, readPcapFile } from '../src/netdev/pcap.js';
import { TxQueueSelector } from '../src/net/tx-select.js';
import { bytesOf } from '../src/virtio/copy.js';

const tsharkMissing = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).error ? 'tshark is not installed (Debian package tshark; .ci/run installs it)' : false;

/** A UDP/IPv4 frame of `len` bytes for flow `i` (distinct ports), payload bytes derived from `i`. */
function udpFrame(i: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00], 0);
  const ip = 14;
  f[ip] = 0x45;
  const ipLen = len - 14;
  f[ip + 2] = ipLen >> 8; f[ip + 3] = ipLen & 0xff;
  f[ip + 8] = 64; f[ip + 9] = 17;
  f.set([10, 0, 0, 1, 10, 0, 1, 1], ip + 12);
  const udp = ip + 20;
  const sport = 1000 + i, dport = 2000 + (i % 7);
  f[udp] = sport >> 8; f[udp + 1] = sport & 0xff; f[udp + 2] = dport >> 8; f[udp + 3] = dport & 0xff;
  const udpLen = len - udp;
  f[udp + 4] = udpLen >> 8; f[udp + 5] = udpLen & 0xff;
  for (let k = udp + 8; k < len; k++) f[k] = (k * 31 + i * 7) & 0xff;
  return f;
}

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

interface TsharkPacket { iface: number; dir: number; bytes: string; len: number }

/** Every packet as tshark reads it: interface id, epb_flags direction and length on the wire (fields), raw bytes (JSON with -x). */
function tsharkRead(file: string): TsharkPacket[] {
  const fields = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.interface_id', '-e', 'frame.packet_flags_direction', '-e', 'frame.len'],
    { maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n');
  const json = JSON.parse(execFileSync('tshark', ['-r', file, '-T', 'json', '-x'], { maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'ignore'] }).toString()) as
    { _source: { layers: { frame_raw: [string] } } }[];
  assert.equal(json.length, fields.length);
  return fields.map((line, i) => {
    const [iface, dir, len] = line.split('\t');
    return { iface: Number(iface), dir: Number(dir), len: Number(len), bytes: json[i]._source.layers.frame_raw[0] };
  });
}

/** Sorted short digests of hex frames (keeps assertion messages short). */
const digests = (hexes: string[]) => hexes.map((h) => createHash('sha256').update(h).digest('hex').slice(0, 12)).sort();

test('CaptureRing: records come out as put, a full ring counts drops, the mask gates capture', () => {
  const ring = new CaptureRing(4096);
  const consumer = new CaptureRing(ring.buffer);
  const src = bytesOf(new ArrayBuffer(2048));
  for (let i = 0; i < 2048; i++) src.u8[i] = (i * 7 + 3) & 0xff;
  ring.refresh();
  assert.equal(ring.rx || ring.tx, false, 'off until the consumer sets the mask');
  consumer.setMask(CAPTURE_RX | CAPTURE_TX, 100);
  ring.refresh();
  assert.ok(ring.rx && ring.tx);
  let put = 0;
  for (let i = 0; i < 100; i++) {
    ring.put(i & 1 ? DIR_TX : DIR_RX, src, i, 60 + i);
    put++;
  }
  const c = ring.counts;
  const captured = c[CaptureCount.rxFrames] + c[CaptureCount.txFrames];
  const dropped = c[CaptureCount.rxDrops] + c[CaptureCount.txDrops];
  assert.equal(captured + dropped, put);
  assert.ok(dropped > 0, 'a 4 KiB ring cannot hold 100 frames: drops counted');
  let n = 0;
  while (consumer.next()) {
    assert.equal(consumer.dir, n & 1 ? DIR_TX : DIR_RX);
    assert.equal(consumer.origLen, 60 + n);
    assert.equal(consumer.capLen, Math.min(100, 60 + n), 'snap length applied');
    assert.deepEqual(consumer.u8.subarray(consumer.dataOff, consumer.dataOff + consumer.capLen), src.u8.subarray(n, n + consumer.capLen));
    assert.ok(consumer.tsHi > 0, 'a real timestamp (µs since the epoch needs more than 32 bits)');
    consumer.consume();
    n++;
  }
  assert.equal(n, captured);
  // After draining, there is room again, across the wrap.
  for (let i = 0; i < 50; i++) {
    ring.put(DIR_RX, src, 0, 200);
    assert.ok(consumer.next());
    assert.equal(consumer.origLen, 200);
    consumer.consume();
  }
  assert.equal(consumer.next(), false);
});

test('loopback --capture: tshark reads one interface per queue pair, the direction in each packet\'s flags and the exact frames', { skip: tsharkMissing, timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), `vmq-capture-${process.pid}-`));
  try {
    const pairs = 2;
    const frames = Array.from({ length: 48 }, (_, i) => udpFrame(i, 60 + ((i * 37) % 1400)));
    const input = join(dir, 'in.pcap');
    writePcapFile(input, frames);
    const sel = new TxQueueSelector({ steering: null });
    const pairOf = frames.map((f) => sel.select(f, 0, f.length, pairs));
    assert.ok(new Set(pairOf).size === 2, 'the 48 flows use both pairs');
    const base: LoopbackOptions = { queues: pairs, flows: 0, size: 0, duration: 1, pcap: input, rss: false, mode: 'notify', queueSize: 256, json: true };

    // Both directions, every pair.
    const file = join(dir, 'all.pcapng');
    const r = await loopback({ ...base, capture: file }, () => {});
    assert.deepEqual(r.problems, []);
    assert.equal(r.capture?.drops, 0);
    assert.equal(r.capture?.frames, 2 * frames.length);
    const pk = tsharkRead(file);
    assert.equal(pk.length, 2 * frames.length);
    for (let p = 0; p < pairs; p++) {
      const sent = digests(frames.filter((_, i) => pairOf[i] === p).map(hex));
      const tx = digests(pk.filter((x) => x.iface === p && x.dir === 2).map((x) => x.bytes));
      const rx = digests(pk.filter((x) => x.iface === p && x.dir === 1).map((x) => x.bytes));
      assert.deepEqual(tx, sent, `pair ${p}: transmitq frames (outbound) are the frames the driver sent on it`);
      assert.deepEqual(rx, sent, `pair ${p}: receiveq frames (inbound) are those frames looped back (automatic flow steering: same pair)`);
      assert.equal(r.capture!.queues[p].txFrames, sent.length);
      assert.equal(r.capture!.queues[p].rxFrames, sent.length);
    }
    assert.ok(pk.every((x) => x.dir === 1 || x.dir === 2), 'every packet has a direction');
    // Our own reader reads the file too (interfaces, options and the statistics blocks are skipped).
    assert.equal(readPcapFile(file).count, 2 * frames.length);

    // One queue, one direction, a snap length.
    const one = join(dir, 'q1.pcapng');
    const r1 = await loopback({ ...base, capture: one, captureQueue: 1, captureDir: 'rx', captureSnaplen: 100 }, () => {});
    assert.deepEqual(r1.problems, []);
    const pk1 = tsharkRead(one);
    const sent1 = frames.filter((_, i) => pairOf[i] === 1);
    assert.equal(pk1.length, sent1.length);
    assert.ok(pk1.every((x) => x.iface === 1 && x.dir === 1));
    assert.deepEqual(digests(pk1.map((x) => x.bytes)), digests(sent1.map((f) => hex(f.subarray(0, 100)))), 'cut to 100 bytes');
    assert.deepEqual(pk1.map((x) => x.len).sort(), sent1.map((f) => f.length).sort(), 'the length on the wire is kept');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a stalled capture writer never blocks the data path: every frame still goes round, frames the capture could not keep are counted as drops', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), `vmq-capture-stall-${process.pid}-`));
  try {
    // 40000 frames of 512 bytes: each is captured twice (transmitq and receiveq) into its pair's 4 MiB ring,
    // which holds about 7800 records of this size: with a stuck writer most must be dropped, however fast the machine.
    const n = 40_000;
    const input = join(dir, 'in.pcap');
    writePcapFile(input, Array.from({ length: n }, (_, i) => udpFrame(i, 512)));
    let chunks = 0;
    // A writer that takes the first chunks and then never completes a write (a stuck disk).
    const stuck = new Writable({
      highWaterMark: 64 << 10,
      write(_chunk, _enc, cb) {
        if (++chunks <= 2) cb();
      },
    });
    const r = await loopback({ queues: 2, flows: 0, size: 0, duration: 1, pcap: input, rss: false, mode: 'notify', queueSize: 256, json: true, capture: stuck }, () => {});
    assert.deepEqual(r.problems, [], 'every frame came back, in order');
    assert.equal(r.rxPackets, n);
    const c = r.capture!;
    assert.ok(c.drops > n, `the capture dropped most frames: ${JSON.stringify(c.queues)}`);
    for (const q of c.queues) {
      const p = r.perPair[q.pair];
      // Every frame the device moved was either kept or counted as a capture drop.
      assert.equal(q.txFrames + q.txDrops, p.txPackets, `pair ${q.pair} TX`);
      assert.equal(q.rxFrames + q.rxDrops, p.rxPackets, `pair ${q.pair} RX`);
    }
    stuck.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const BAD_CAPTURE: [string[], RegExp][] = [
  [['loopback', '--capture-queue', '1'], /need --capture FILE/],
  [['loopback', '--capture', '/nonexistent-dir/x.pcapng'], /--capture .*does not exist/],
  [['loopback', '--capture', '/tmp'], /--capture \/tmp: is a directory/],
  [['loopback', '--queues', '2', '--capture', '/tmp/vmq-x.pcapng', '--capture-queue', '2'], /--capture-queue 2: queue pairs are 0\.\.1/],
  [['loopback', '--capture', '/tmp/vmq-x.pcapng', '--capture-dir', 'up'], /--capture-dir/],
  [['loopback', '--capture', '/tmp/vmq-x.pcapng', '--capture-snaplen', '0'], /--capture-snaplen/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--capture', '/tmp/vmq-x.pcapng', '--capture-queue', '1'], /--capture-queue 1: queue pairs are 0\.\.0/],
];

for (const [args, why] of BAD_CAPTURE) {
  test(`bad capture option: virtio-mq ${args.join(' ')} → one line, exit 2`, () => {
    const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.signal, null);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^virtio-mq: /);
    assert.match(lines[0], why);
    assert.equal(r.status, 2);
  });
}

test('serve --capture --strict: the file has one interface per queue pair and is ended at SIGINT; the strict report is printed', { skip: tsharkMissing || (process.platform !== 'linux' ? 'serve needs Linux' : false), timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), `vmq-capture-serve-${process.pid}-`));
  const socket = join(dir, 'vmq.sock');
  const file = join(dir, 'serve.pcapng');
  const child = spawn(process.execPath, [MAIN, 'serve', '--socket', socket, '--queues', '3', '--netdev', 'sink', '--capture', file, '--strict'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    const deadline = Date.now() + 20_000;
    while (!existsSync(socket)) {
      assert.ok(Date.now() < deadline, `serve did not listen:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /capturing every queue pair \(both\) to /);
    assert.match(stderr, /capture .*serve\.pcapng: 0 frames \(rx 0, tx 0\), 0 dropped by the capture/);
    assert.match(stderr, /strict conformance: no violations of the spec/);
    const info = execFileSync('capinfos', ['-M', file], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
    assert.match(info, /Number of interfaces in file: 3/);
    for (let q = 0; q < 3; q++) assert.match(info, new RegExp(`Name = q${q}\\b`));
    assert.equal(readPcapFile(file).count, 0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
