/**
 * Observing a running process from the command line: `loopback` opens its
 * control socket (0600) and `virtio-mq stats` reads counters that move,
 * ring states, features and memory; `/metrics` is valid Prometheus text
 * with per-queue labels and process metrics; `serve` logs JSON lines with
 * levels (and `--log-level` drops the lower ones); bad values of the new
 * options are one line and exit 2.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parsePromText } from './support/prom-text.js';
import { ControlClient } from '../src/cli/control/client.js';
import type { Snapshot } from '../src/cli/observe/snapshot.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
let seq = 0;
const tmp = (tag: string) => path.join(os.tmpdir(), `vmq-obs-${process.pid}-${tag}-${seq++}.sock`);

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** A running CLI process with its output collected. */
function start(args: string[]): { child: ChildProcess; out: () => string; err: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

async function until<T>(f: () => T | undefined | null | false, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function stats(control: string): Snapshot {
  const r = cli(['stats', '--json', '--control', control]);
  assert.equal(r.status, 0, `stats failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Snapshot;
}

test('loopback: control socket 0600, stats --json counters move, rings and features shown; /metrics parses with per-queue labels', { timeout: 60_000 }, async () => {
  const control = tmp('lb');
  const p = start(['loopback', '--queues', '2', '--duration', '60', '--control', control, '--metrics', '127.0.0.1:0']);
  try {
    await until(() => /metrics: http/.test(p.err()), 'the control socket and metrics lines');
    const st = fs.lstatSync(control);
    assert.ok(st.isSocket(), 'a socket at --control');
    assert.equal(st.mode & 0o777, 0o600, 'mode 0600');
    const a = stats(control); // the command line once; then the same request in-process (quicker)
    const c = await ControlClient.connect(control);
    const req = async () => (await c.request('stats')) as Snapshot;
    assert.equal(a.kind, 'loopback');
    assert.equal(a.pid, p.child.pid);
    assert.equal(a.pairs, 2);
    assert.equal(a.activePairs, 2);
    assert.ok(a.features.includes('VIRTIO_F_VERSION_1') && a.features.includes('VIRTIO_NET_F_MQ'), `features by spec name: ${a.features}`);
    assert.equal(a.ringFormat, 'split');
    assert.equal(a.connection.state, 'running');
    assert.ok(a.memory.length === 1 && a.memory[0].size > 0, 'one guest memory region');
    for (const k of ['rx_q0_packets', 'rx_q1_bytes', 'tx_q0_packets', 'tx_q1_bytes', 'rx_q0_drops', 'q0_kicks', 'q1_calls', 'q0_notifications_suppressed', 'rx_q0_ring_full', 'tx_q1_ring_full'])
      assert.equal(typeof a.xstats[k], 'number', `xstat ${k}`);
    assert.deepEqual(a.rings.map((r) => r.name), ['receiveq1', 'transmitq1', 'receiveq2', 'transmitq2']);
    for (const r of a.rings) {
      assert.equal(r.size, 256);
      assert.equal(r.format, 'split');
      assert.ok(typeof r.availIdx === 'number' && typeof r.usedIdx === 'number' && typeof r.lastAvailIdx === 'number', `${r.name}: indexes`);
      assert.ok(r.inFlight !== null && r.inFlight! >= 0 && r.inFlight! <= 256, `${r.name}: in flight ${r.inFlight}`);
      assert.equal(r.inFlight, (r.availIdx! - r.usedIdx! + 65536) % 65536, `${r.name}: in flight = avail->idx - used->idx`);
    }
    // The counters move while traffic flows.
    let b = await req();
    for (const end = Date.now() + 15_000; !(b.xstats.rx_q0_packets > a.xstats.rx_q0_packets && b.xstats.tx_q1_packets > a.xstats.tx_q1_packets); b = await req()) {
      if (Date.now() > end) assert.fail('rx_q0_packets and tx_q1_packets did not grow');
      await sleep(50);
    }
    c.close();
    assert.ok(b.uptimeSeconds > a.uptimeSeconds);
    // The text form.
    const text = cli(['stats', '--control', control]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /virtio-mq loopback \(pid \d+\)/);
    assert.match(text.stdout, /rx_packets/);
    assert.match(text.stdout, /receiveq1 +256 running/);
    // --watch --json: one snapshot per line, counters never going back; SIGINT ends it with status 0.
    const w = start(['stats', '--watch', '--json', '--interval', '0.2', '--control', control]);
    const snaps = await until(() => {
      const l = w.out().split('\n').filter(Boolean);
      return l.length >= 3 ? l.slice(0, 3).map((x) => JSON.parse(x) as Snapshot) : null;
    }, `three --watch lines (${w.err()})`);
    w.child.kill('SIGINT');
    assert.equal(await w.exited, 0, w.err());
    for (let i = 1; i < snaps.length; i++) {
      assert.ok(snaps[i].uptimeSeconds > snaps[i - 1].uptimeSeconds, 'a new snapshot each time');
      assert.ok(snaps[i].xstats.rx_q0_packets >= snaps[i - 1].xstats.rx_q0_packets, 'monotonic');
    }
    // Prometheus.
    const url = (/metrics: (http:\/\/\S+\/metrics)/.exec(p.err()) ?? [])[1];
    assert.ok(url, `metrics URL printed: ${p.err()}`);
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const fams = parsePromText(await res.text());
    const pk = fams.get('virtio_mq_packets_total');
    assert.equal(pk?.type, 'counter');
    const labels = pk!.samples.map((s) => `${s.labels.pair}/${s.labels.direction}`).sort();
    assert.deepEqual(labels, ['0/rx', '0/tx', '1/rx', '1/tx'], 'one sample per pair and direction');
    assert.ok(pk!.samples.every((s) => s.value > 0), 'packets counted');
    assert.equal(fams.get('virtio_mq_kicks_total')?.samples.length, 2, 'pair-wide counters: one per pair');
    assert.equal(fams.get('virtio_mq_ring_fill_ratio')?.type, 'gauge');
    assert.equal(fams.get('virtio_mq_active_queue_pairs')?.samples[0].value, 2);
    assert.ok(fams.get('virtio_mq_process_cpu_user_seconds_total') && fams.get('virtio_mq_nodejs_eventloop_lag_seconds'), 'process metrics');
    assert.ok(fams.get('virtio_mq_feature')?.samples.some((s) => s.labels.name === 'VIRTIO_NET_F_MQ'), 'features as labels');
  } finally {
    p.child.kill('SIGINT'); // it stops sending, checks every frame in flight, exits
    const code = await p.exited;
    assert.equal(code, 0, `loopback ended OK: ${p.out().slice(-400)}`);
  }
  assert.equal(fs.existsSync(control), false, 'the control socket is removed at exit');
});

test('serve --json: JSON log lines with level and time; --log-level warn drops info; stats reads a listening serve', { timeout: 60_000 }, async (t) => {
  const probe = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(new URL('../src/host/index.js', import.meta.url).href)})`]);
  if (probe.status !== 0) {
    t.skip('the native addon (src/host) is not built: serve cannot run');
    return;
  }
  for (const level of ['info', 'warn']) {
    const socket = tmp('vu'), control = tmp('srv');
    const p = start(['serve', '--socket', socket, '--netdev', 'sink', '--json', '--log-level', level, '--control', control]);
    try {
      await until(() => fs.existsSync(control), 'the control socket');
      const c = await ControlClient.connect(control);
      const s = (await c.request('stats')) as Snapshot;
      c.close();
      assert.equal(s.kind, 'serve');
      assert.equal(s.connection.state, 'listening');
      assert.equal(s.connection.sessions, 0);
      assert.equal(s.connection.socket, socket);
      assert.deepEqual(s.rings, []);
      assert.equal(s.xstats.tx_q0_packets, 0);
    } finally {
      p.child.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    }
    const lines = p.out().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: string; time: string; log: string });
    if (level === 'info') {
      assert.ok(lines.some((l) => /control socket: /.test(l.log)), 'the control socket path is logged');
      assert.ok(lines.some((l) => /vhost-user: listening on /.test(l.log)), 'the listening line');
      for (const l of lines) {
        assert.ok(['info', 'warn', 'error'].includes(l.level), `level ${l.level}`);
        assert.ok(!Number.isNaN(Date.parse(l.time)), `ISO time ${l.time}`);
      }
    } else assert.deepEqual(lines.filter((l) => l.level === 'info'), [], 'no info lines at --log-level warn');
    assert.equal(fs.existsSync(control), false, 'control socket removed');
  }
});

test('the default control socket: $XDG_RUNTIME_DIR/virtio-mq-PID.sock, found by stats without --control; SIGINT ends loopback cleanly', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmq-xdg-${process.pid}-`));
  const env = { ...process.env, XDG_RUNTIME_DIR: dir };
  const child = spawn(process.execPath, [MAIN, 'loopback', '--queues', '1', '--duration', '60', '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '', out = '';
  child.stderr.on('data', (d) => (err += d));
  child.stdout.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  try {
    const expected = path.join(dir, `virtio-mq-${child.pid}.sock`);
    await until(() => err.includes(`control socket: ${expected}`), `the default path in ${err}`);
    const r = spawnSync(process.execPath, [MAIN, 'stats', '--json'], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as Snapshot).pid, child.pid, 'stats found it without --control');
  } finally {
    child.kill('SIGINT');
  }
  assert.equal(await exited, 0, `loopback ended OK after SIGINT: ${err}`);
  const summary = JSON.parse(out) as { ok: boolean; seconds: number; rxPackets: number };
  assert.ok(summary.ok && summary.rxPackets > 0 && summary.seconds < 30, 'stopped early, every frame back');
  assert.deepEqual(fs.readdirSync(dir), [], 'the socket is removed');
  const none = spawnSync(process.execPath, [MAIN, 'stats'], { env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(none.status, 1);
  assert.match(none.stderr, /^virtio-mq: no running virtio-mq found in .* \(give --control PATH\)\n$/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a default control socket left by a SIGKILLed process is removed by the next one that starts; a live one is kept', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmq-xdg-${process.pid}-`));
  const env = { ...process.env, XDG_RUNTIME_DIR: dir };
  const run = () => {
    const child = spawn(process.execPath, [MAIN, 'loopback', '--queues', '1', '--duration', '60', '--json'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const sock = path.join(dir, `virtio-mq-${child.pid}.sock`);
    return { child, sock, exited, err: () => err };
  };
  const killed = run(), live = run();
  let next: ReturnType<typeof run> | undefined;
  try {
    await until(() => fs.existsSync(killed.sock) && fs.existsSync(live.sock), 'both control sockets');
    killed.child.kill('SIGKILL');
    await killed.exited;
    assert.ok(fs.existsSync(killed.sock), 'SIGKILL leaves the socket behind');
    next = run();
    await until(() => next!.err().includes(`control socket: ${next!.sock}`), 'the third process listening');
    assert.equal(fs.existsSync(killed.sock), false, 'the stale socket was removed');
    assert.ok(fs.existsSync(live.sock), 'the live process keeps its socket');
  } finally {
    for (const p of [live, next]) p?.child.kill('SIGINT');
    await Promise.all([live.exited, next?.exited]);
  }
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing left');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('serve --client: observable (state connecting) before any front-end; SIGINT then ends it cleanly', { timeout: 60_000 }, async (t) => {
  const probe = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(new URL('../src/host/index.js', import.meta.url).href)})`]);
  if (probe.status !== 0) {
    t.skip('the native addon (src/host) is not built: serve cannot run');
    return;
  }
  const socket = tmp('nobody'), control = tmp('client');
  const p = start(['serve', '--socket', socket, '--client', '--netdev', 'sink', '--control', control]);
  try {
    await until(() => fs.existsSync(control), 'the control socket');
    const c = await ControlClient.connect(control);
    const s = (await c.request('stats')) as Snapshot;
    c.close();
    assert.equal(s.connection.state, 'connecting');
    assert.equal(s.connection.sessions, 0);
  } finally {
    p.child.kill('SIGINT');
  }
  assert.equal(await p.exited, 0, p.err());
  assert.match(p.err(), /SIGINT: shutting down/);
  assert.equal(fs.existsSync(control), false, 'control socket removed');
});

test('stats without a process: one line, exit 1', () => {
  const r = cli(['stats', '--control', tmp('none')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^virtio-mq: control socket .*no such socket\n$/);
});

test('an address in use: one line, exit 2, nothing left behind', async () => {
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const port = (busy.address() as net.AddressInfo).port;
  const control = tmp('busy');
  try {
    const r = cli(['loopback', '--duration', '1', '--control', control, '--metrics', `127.0.0.1:${port}`]);
    assert.equal(r.status, 2);
    const lines = r.stderr.split('\n').filter((l) => l && !/control socket: /.test(l));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^virtio-mq: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
    assert.equal(fs.existsSync(control), false, 'control socket removed');
  } finally {
    busy.close();
  }
});

const BAD: [string[], RegExp][] = [
  [['loopback', '--metrics', 'nope'], /--metrics must be HOST:PORT/],
  [['loopback', '--metrics', ':9100'], /--metrics must be HOST:PORT/],
  [['loopback', '--http', '127.0.0.1:99999'], /--http must be HOST:PORT/],
  [['loopback', '--control', '/nonexistent-dir/x.sock'], /--control .*does not exist/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--log-level', 'loud'], /--log-level must be one of/],
  [['loopback', '--log-level', 'loud'], /--log-level must be one of/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--log-level', 'loud'], /--log-level must be one of/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--capture-queue', '0'], /need --capture FILE/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--capture', '/nonexistent-dir/x.pcapng'], /--capture .*does not exist/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--capture', '/tmp/x.pcapng', '--capture-dir', 'up'], /--capture-dir must be rx, tx or both/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--queues', '2', '--capture', '/tmp/x.pcapng', '--capture-queue', '2'], /--capture-queue 2: queue pairs are 0\.\.1/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--capture', '/tmp/x.pcapng', '--capture-snaplen', '0'], /--capture-snaplen/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--http', 'localhost'], /--http must be HOST:PORT/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--control', '/nonexistent-dir/x.sock'], /--control .*does not exist/],
  [['stats', '--interval', '0'], /--interval/],
  [['stats', '--bogus'], /unknown option '--bogus'/],
];

for (const [args, why] of BAD) {
  test(`bad value: virtio-mq ${args.join(' ')} → one line, exit 2`, () => {
    const r = cli(args);
    assert.equal(r.signal, null, 'it must not run until the timeout');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `exactly one line on stderr, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^virtio-mq: /);
    assert.match(lines[0]!, why);
    assert.equal(r.status, 2);
  });
}
