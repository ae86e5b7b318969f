/**
 * `--log-level` and pino on `loopback` and `attach` (as on serve): with
 * `--json` every log line is one JSON object with level and time, one of
 * them per connection with the negotiated features; `--log-level warn`
 * drops the info lines; loopback keeps stdout for its one JSON summary
 * (log lines go to stderr), attach writes its JSON lines on stdout like
 * serve. attach's back-end is serve, in this process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostAvailable } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import type { LoopbackResult } from '../src/cli/loopback.js';
import type { AttachResult } from '../src/cli/attach.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function run(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const c = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  c.stdout.on('data', (d) => (out += d));
  c.stderr.on('data', (d) => (err += d));
  return new Promise((resolve) => c.once('exit', (code) => resolve({ code, out, err })));
}

type LogLine = { level: string; time: string; log: string; event?: string; features?: string[] };
const jsonLines = (text: string) => text.split('\n').filter((l) => l.startsWith('{"level"')).map((l) => JSON.parse(l) as LogLine);

test('loopback --json --log-level: JSON log lines on stderr (one "connection" line with the features), the summary alone on stdout; warn drops info', { timeout: 60_000 }, async () => {
  const [info, warn] = await Promise.all(['info', 'warn'].map((level) => run(['loopback', '--queues', '1', '--duration', '0.2', '--json', '--log-level', level, '--control', join(tmpdir(), `vmq-log-${process.pid}-${level}.sock`)])));
  for (const r of [info, warn]) {
    assert.equal(r.code, 0, r.err);
    const summary = JSON.parse(r.out) as LoopbackResult; // stdout is exactly one JSON document
    assert.ok(summary.ok);
  }
  const lines = jsonLines(info.err);
  assert.ok(lines.length >= 2, info.err);
  for (const l of lines) assert.ok(l.level && !Number.isNaN(Date.parse(l.time)) && typeof l.log === 'string', JSON.stringify(l));
  const conn = lines.filter((l) => l.event === 'connection');
  assert.equal(conn.length, 1, info.err);
  assert.ok(conn[0].features!.includes('VIRTIO_F_VERSION_1'), JSON.stringify(conn[0]));
  assert.ok(lines.some((l) => /control socket: /.test(l.log)));
  assert.deepEqual(jsonLines(warn.err).filter((l) => l.level === 'info'), [], 'no info lines at --log-level warn');
});

test('attach --json: pino JSON lines on stdout, one per back-end connection with the negotiated features', { skip: hostAvailable() ? false : 'the native addon (src/host) is not built', timeout: 60_000 }, async () => {
  const socket = join(tmpdir(), `vmq-log-attach-${process.pid}.sock`);
  const be = new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'loopback' }, log: () => {} });
  await be.start();
  try {
    const args = (level: string) => ['attach', '--socket', socket, '--queues', '2', '--duration', '0.2', '--json', '--no-reconnect', '--log-level', level,
      '--control', join(tmpdir(), `vmq-log-attach-${process.pid}-${level}.sock`)];
    const info = await run(args('info'));
    assert.equal(info.code, 0, info.out + info.err);
    const lines = jsonLines(info.out);
    const conn = lines.filter((l) => l.event === 'connection');
    assert.equal(conn.length, 1, info.out);
    assert.equal(conn[0].level, 'info');
    assert.match(conn[0].log, /^attach: back-end connection 1: 2 of 2 queue pairs, split rings, negotiated with the back-end: .*VIRTIO_NET_F_MQ/);
    assert.ok(conn[0].features!.includes('VIRTIO_NET_F_MQ'));
    const summary = JSON.parse(info.out.slice(info.out.lastIndexOf('\n{\n') + 1)) as AttachResult; // the pretty-printed summary ends stdout
    assert.ok(summary.ok, summary.problems.join('; '));
    // (--log-level warn dropping info lines is the same logger: checked on loopback above and on serve in observe-cli.test.ts)
  } finally {
    await be.stop();
  }
});
