/**
 * The control socket (src/cli/control): mode 0600 from bind() on whatever
 * the umask, newline-delimited JSON requests answered in order, commands
 * registered by name (`help` lists them), errors as `ok: false` replies
 * (never a crash), events streamed before a reply, a stale socket replaced
 * and a live one or a non-socket refused, the file removed on close.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { ControlServer } from '../src/cli/control/server.js';
import { ControlClient, defaultControlPath } from '../src/cli/control/client.js';

let seq = 0;
const sockPath = () => path.join(os.tmpdir(), `vmq-ctl-${process.pid}-${seq++}.sock`);

/** One raw request line, its reply lines until `ok` appears. */
async function raw(p: string, line: string): Promise<Record<string, unknown>[]> {
  const s = net.connect(p);
  s.setEncoding('utf8');
  let buf = '';
  const out: Record<string, unknown>[] = [];
  await new Promise<void>((resolve, reject) => {
    s.on('error', reject);
    s.on('data', (c: string) => {
      buf += c;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const o = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        out.push(o);
        if ('ok' in o) resolve();
      }
    });
    s.write(line);
  });
  s.destroy();
  return out;
}

test('the socket is created 0600 even with umask 000, and removed on close', async () => {
  const p = sockPath();
  const old = process.umask(0);
  const srv = new ControlServer();
  try {
    await srv.listen(p);
  } finally {
    process.umask(old);
  }
  try {
    const st = fs.lstatSync(p);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`);
    assert.equal(process.umask(), old, 'the umask is restored');
  } finally {
    await srv.close();
  }
  assert.equal(fs.existsSync(p), false, 'socket file removed');
});

test('commands: registered handlers, help, errors as ok:false, requests answered in order, events before the reply', async () => {
  const p = sockPath();
  const srv = new ControlServer();
  srv.register('echo', (args) => args, 'echo the arguments');
  srv.register('slow', async (args) => {
    await new Promise((r) => setTimeout(r, 20));
    return args.n;
  });
  srv.register('fail', () => {
    throw new Error('it failed');
  });
  srv.register('stream', (args, ctx) => {
    for (let i = 0; i < Number(args.n); i++) ctx.send({ i });
    return 'done';
  });
  await srv.listen(p);
  const c = await ControlClient.connect(p);
  try {
    assert.deepEqual(await c.request('echo', { a: 1, b: 'x' }), { a: 1, b: 'x' });
    const help = (await c.request('help')) as { name: string; help: string }[];
    assert.deepEqual(help.map((h) => h.name).sort(), ['echo', 'fail', 'help', 'slow', 'stream']);
    assert.equal(help.find((h) => h.name === 'echo')?.help, 'echo the arguments');
    await assert.rejects(c.request('fail'), /it failed/);
    await assert.rejects(c.request('nope'), /unknown command "nope"/);
    // Several requests in flight on one connection: answered in order.
    const order: number[] = [];
    await Promise.all([1, 2, 3].map((n) => c.request('slow', { n }).then((v) => order.push(v as number))));
    assert.deepEqual(order, [1, 2, 3]);
    const events: unknown[] = [];
    assert.equal(await c.request('stream', { n: 3 }, (e) => events.push(e)), 'done');
    assert.deepEqual(events, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    // Malformed requests: error replies, and the server still serves.
    assert.match(String((await raw(p, 'not json\n'))[0].error), /not JSON/);
    assert.match(String((await raw(p, '{"id":7}\n'))[0].error), /no "cmd"/);
    assert.match(String((await raw(p, '{"id":8,"cmd":"echo","args":[1]}\n'))[0].error), /"args" must be an object/);
    assert.deepEqual(await raw(p, '{"id":9,"cmd":"echo","args":{"z":1}}\n'), [{ id: 9, ok: true, result: { z: 1 } }]);
  } finally {
    c.close();
    await srv.close();
  }
});

test('a client that shuts down its side after the request (echo ... | socat) still gets every reply, then EOF', async () => {
  const p = sockPath();
  const srv = new ControlServer();
  srv.register('later', async () => {
    await new Promise((r) => setTimeout(r, 30));
    return 'late';
  });
  await srv.listen(p);
  try {
    const s = net.connect(p);
    s.setEncoding('utf8');
    let got = '';
    s.on('data', (d: string) => (got += d));
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.end('{"id":1,"cmd":"later"}\n{"id":2,"cmd":"help"}'); // the last line without its newline
    await closed;
    const lines = got.trim().split('\n').map((l) => JSON.parse(l) as { id: number; ok: boolean; result: unknown });
    assert.deepEqual(lines.map((l) => [l.id, l.ok]), [[1, true], [2, true]]);
    assert.equal(lines[0].result, 'late');
  } finally {
    await srv.close();
  }
});

test('a stale socket is replaced; a live socket and a regular file are refused', async () => {
  const p = sockPath();
  // Stale: the socket of a process that died without removing it (SIGKILL).
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.ok(fs.existsSync(p), 'a stale socket file exists');
  const a = new ControlServer();
  await a.listen(p);
  try {
    const b = new ControlServer();
    await assert.rejects(b.listen(p), /is in use \(another process accepts connections there\): refusing to take it over/);
  } finally {
    await a.close();
  }
  const f = sockPath();
  fs.writeFileSync(f, 'not a socket');
  try {
    await assert.rejects(new ControlServer().listen(f), /is a regular file: refusing to replace it/);
    assert.equal(fs.readFileSync(f, 'utf8'), 'not a socket', 'the file is left alone');
  } finally {
    fs.unlinkSync(f);
  }
});

test('the default path is under $XDG_RUNTIME_DIR (or the temp directory) and names the pid', () => {
  const old = process.env.XDG_RUNTIME_DIR;
  try {
    process.env.XDG_RUNTIME_DIR = '/run/user/4242';
    assert.equal(defaultControlPath(123), '/run/user/4242/virtio-mq-123.sock');
    delete process.env.XDG_RUNTIME_DIR;
    assert.equal(defaultControlPath(123), path.join(os.tmpdir(), 'virtio-mq-123.sock'));
  } finally {
    if (old === undefined) delete process.env.XDG_RUNTIME_DIR;
    else process.env.XDG_RUNTIME_DIR = old;
  }
});
