/**
 * `virtio-mq capture` against a running process, as dpdk-pdump attaches to
 * a running port: the control socket's `capture` command writes a pcapng
 * file of one queue pair and direction while `loopback` keeps running, the
 * summary counts what was written and dropped, tshark reads the file, and a
 * second capture while one runs is refused with one line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CaptureSummary } from '../src/transport/capture.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const tsharkMissing = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).error ? 'tshark is not installed (Debian package tshark; .ci/run installs it)' : false;

function start(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; out: string; err: string }> } {
  const c = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  c.stdout!.on('data', (d) => (out += d));
  c.stderr!.on('data', (d) => (err += d));
  return { child: c, done: new Promise((resolve) => c.once('exit', (code) => resolve({ code, out, err }))) };
}
const run = (args: string[]) => start(args).done;

async function until(f: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test('capture --control: one queue pair, rx only, from a running loopback; tshark reads it; a second capture is refused', { timeout: 90_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-capcmd-'));
  const control = join(dir, 'ctl.sock');
  const file = join(dir, 'q1.pcapng');
  let child: ChildProcess | null = null;
  try {
    child = spawn(process.execPath, [MAIN, 'loopback', '--queues', '2', '--duration', '60', '--control', control], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    await until(() => /control socket: /.test(err), 'the control socket line');

    // Runs until Ctrl-C (SIGINT: capture-stop on a second connection).
    const first = start(['capture', '--control', control, '--queue', '1', '--dir', 'rx', '--json', file]);
    await until(() => existsSync(file), 'the capture file');
    const second = await run(['capture', '--control', control, '--duration', '1', join(dir, 'other.pcapng')]);
    assert.equal(second.code, 1);
    assert.match(second.err, /^virtio-mq: .*already running.*\n$/);
    assert.equal(existsSync(join(dir, 'other.pcapng')), false);
    await until(() => statSync(file).size > 64 * 1024, 'frames in the capture file');
    first.child.kill('SIGINT');

    const r = await first.done;
    assert.equal(r.code, 0, r.err);
    const s = JSON.parse(r.out) as CaptureSummary;
    assert.equal(s.file, file);
    for (const q of s.queues) if (q.pair !== 1) assert.equal(q.rxFrames + q.txFrames + q.rxDrops + q.txDrops, 0, `pair ${q.pair} not captured`);
    const q1 = s.queues.find((q) => q.pair === 1)!;
    assert.ok(q1, 'pair 1 in the summary');
    assert.equal(q1.txFrames + q1.txDrops, 0, 'no transmitq frames');
    assert.ok(q1.rxFrames > 0, `pair 1 receiveq frames written: ${q1.rxFrames}`);
    assert.equal(s.frames, q1.rxFrames);

    if (tsharkMissing) {
      t.skip(tsharkMissing); // the capture ran and was counted; only reading it back needs tshark
    } else {
      const lines = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.interface_id', '-e', 'frame.packet_flags_direction'], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 512 << 20 })
        .toString().trim().split('\n');
      assert.equal(lines.length, s.frames, 'tshark reads every frame written');
      const kinds = new Set(lines.map((l) => l.split('\t').map(Number).join(' '))); // direction prints as 0x00000001
      assert.deepEqual([...kinds], ['1 1'], 'interface 1, inbound only');
    }
    assert.equal(child.exitCode, null, 'loopback still running after the capture');
  } finally {
    child?.kill('SIGINT');
    if (child && child.exitCode === null) await new Promise((r) => child!.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('capture: no running process, or a bad value, is one line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-capcmd-'));
  try {
    const r = await run(['capture', '--control', join(dir, 'none.sock'), join(dir, 'x.pcapng')]);
    assert.equal(r.code, 1);
    assert.match(r.err, /^virtio-mq: control socket .*: no such socket\n$/);
    const bad = await run(['capture', '--dir', 'up', join(dir, 'x.pcapng')]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /^virtio-mq: --dir must be rx, tx or both\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
