import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as host from '../src/host/index.js';
import { HostError } from '../src/host/index.js';

const HOST_URL = new URL('../src/host/index.js', import.meta.url).href;
const PAGE = host.pageSize();
const NO_SUCH_FD = 1_000_000; // above any RLIMIT_NOFILE: always EBADF

// ---------------------------------------------------------------------------
// helpers

interface WorkerRun<T> {
  worker: Worker;
  /** Messages the body sent with post(...) before returning. */
  next(): Promise<unknown>;
  result: Promise<T>;
}

/**
 * Run `body` (an async function body; `host`, `data`, `post` in scope) in a
 * worker thread that imports the compiled host module itself.
 */
function runWorker<T>(body: string, data: Record<string, unknown>): WorkerRun<T> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const post = (m) => parentPort.postMessage({ kind: 'msg', m });
    import(workerData.hostUrl)
      .then(async (host) => { const data = workerData.data; ${body} })
      .then((r) => parentPort.postMessage({ kind: 'done', r }),
            (e) => parentPort.postMessage({ kind: 'fail', e: String((e && e.stack) || e) }));`;
  const worker = new Worker(code, { eval: true, workerData: { hostUrl: HOST_URL, data } });
  const queue: unknown[] = [];
  const waiters: ((m: unknown) => void)[] = [];
  let settle!: { resolve: (v: T) => void; reject: (e: Error) => void };
  const result = new Promise<T>((resolve, reject) => (settle = { resolve, reject }));
  worker.on('message', (msg: { kind: string; m?: unknown; r?: T; e?: string }) => {
    if (msg.kind === 'msg') {
      const w = waiters.shift();
      if (w) w(msg.m);
      else queue.push(msg.m);
    } else if (msg.kind === 'done') settle.resolve(msg.r as T);
    else settle.reject(new Error(`worker failed: ${msg.e}`));
  });
  worker.on('error', (e) => settle.reject(e));
  worker.on('exit', (c) => settle.reject(new Error(`worker exited (${c}) without a result`)));
  const next = (): Promise<unknown> =>
    queue.length > 0 ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r));
  return { worker, next, result };
}

function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function assertHostError(fn: () => unknown, code: string, syscall?: string): HostError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof HostError, `expected HostError ${code}, got ${String(caught)}`);
  assert.ok(caught instanceof Error);
  assert.equal(caught.code, code);
  assert.equal(caught.name, 'HostError');
  assert.equal(typeof caught.errno, 'number');
  if (syscall !== undefined) assert.equal(caught.syscall, syscall);
  return caught;
}

/** Read everything currently available on a non-blocking stream fd. */
function drain(fd: number): Buffer {
  const parts: Buffer[] = [];
  for (;;) {
    const r = host.recvmsg(fd, 65536, 0);
    if (r === null || r.bytes.length === 0) break;
    parts.push(r.bytes);
  }
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------

describe('host: memfd + mmap', () => {
  test('two SharedArrayBuffers over the same memfd see each other; unaligned offsets', () => {
    const size = 3 * PAGE;
    const fd = host.memfdCreate('vmq-test-mem', size);
    try {
      assert.equal(fs.fstatSync(fd).size, size);
      const a = new Uint8Array(host.mmapShared(fd, size, 0));
      const bSab = host.mmapShared(fd, 2 * PAGE, 0, { populate: true });
      assert.ok(bSab instanceof SharedArrayBuffer);
      assert.equal(bSab.byteLength, 2 * PAGE);
      const b = new Uint8Array(bSab);
      a[10] = 7;
      assert.equal(b[10], 7);
      b[100] = 9;
      assert.equal(a[100], 9);

      // vhost-user style mmap_offset: not page aligned, SAB starts inside the mapping.
      const c = new Uint8Array(host.mmapShared(fd, 1000, PAGE + 5));
      assert.equal(c.length, 1000);
      a[PAGE + 5] = 0x5a;
      assert.equal(c[0], 0x5a);
      c[999] = 0xa5;
      assert.equal(a[PAGE + 5 + 999], 0xa5);
      // Atomics work on the mapping.
      const i32 = new Int32Array(a.buffer, 2 * PAGE, 4);
      Atomics.store(i32, 1, 42);
      assert.equal(Atomics.add(new Int32Array(b.buffer, 2 * PAGE - 16, 4), 0, 1), 0);
      assert.equal(Atomics.load(i32, 1), 42);
    } finally {
      host.close(fd); // the mappings stay valid after close
    }
  });

  test('argument and range errors', () => {
    const fd = host.memfdCreate('vmq-test-mem2', PAGE);
    try {
      assert.throws(() => host.mmapShared(fd, 0, 0), RangeError);
      assert.throws(() => host.mmapShared(fd, PAGE, 1), RangeError, 'past end of file');
      assert.throws(() => host.mmapShared(fd, 2 * PAGE, 0), RangeError, 'past end of file');
      assert.throws(() => host.mmapShared(fd, 16, -1), RangeError);
      assert.throws(() => host.mmapShared(fd, 16, 0.5), RangeError);
      assertHostError(() => host.mmapShared(NO_SUCH_FD, PAGE, 0), 'EBADF');
    } finally {
      host.close(fd);
    }
  });

  test('the mapping is released by the backing store deleter after GC', () => {
    const script = `
      import * as host from ${JSON.stringify(HOST_URL)};
      import fs from 'node:fs';
      const count = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('vmq-gc-probe')).length;
      const fd = host.memfdCreate('vmq-gc-probe', 1 << 20);
      let sab = host.mmapShared(fd, (1 << 20) - 100, 100);
      new Uint8Array(sab)[0] = 1;
      host.close(fd);
      const before = count();
      sab = null;
      for (let i = 0; i < 20 && count() > 0; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)); }
      console.log(JSON.stringify({ before, after: count() }));`;
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 5000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim()), { before: 1, after: 0 });
  });
});

describe('host: worker threads', () => {
  test('SAB posted to a worker; addon loaded there; Atomics pair up; frames sent from the worker', async () => {
    const fd = host.memfdCreate('vmq-test-worker', PAGE);
    const sab = host.mmapShared(fd, PAGE, 0);
    const other = new Uint8Array(host.mmapShared(fd, PAGE, 0)); // second mapping, same fd
    host.close(fd);
    const u8 = new Uint8Array(sab);
    for (let i = 0; i < 64; i++) u8[256 + i] = i;
    const [a, b] = host.socketPair({ nonblock: true });
    try {
      const run = runWorker<{ sum: number; wait: string; sent: number; errCode: string; isHostError: boolean }>(
        `
        const u8 = new Uint8Array(data.sab);
        let sum = 0;
        for (let i = 0; i < 64; i++) sum += u8[256 + i];
        u8[1] = 0xee;                       // visible to the main thread
        const i32 = new Int32Array(data.sab);
        post('ready');
        const wait = Atomics.wait(i32, 100, 0, 5000);   // main notifies on the same backing store
        const sent = host.writevFrames(data.fd, data.sab,
          new Float64Array([256, 300]), new Uint32Array([16, 4]), 2);
        let errCode = '', isHostError = false;
        try { host.close(${NO_SUCH_FD}); } catch (e) { errCode = e.code; isHostError = e instanceof host.HostError; }
        return { sum, wait, sent, errCode, isHostError };`,
        { sab, fd: a },
      );
      assert.equal(await run.next(), 'ready');
      assert.equal(u8[1], 0xee);
      assert.equal(other[1], 0xee);
      const i32 = new Int32Array(sab);
      Atomics.store(i32, 100, 1);
      // The worker may not be parked yet: notify until it is (or it saw the store first).
      let settled = false;
      void run.result.then(
        () => (settled = true),
        () => (settled = true),
      );
      while (!settled && Atomics.notify(i32, 100) === 0) await sleep(1);
      const r = await run.result;
      await run.worker.terminate();
      assert.equal(r.sum, (63 * 64) / 2);
      assert.ok(r.wait === 'ok' || r.wait === 'not-equal', r.wait);
      assert.equal(r.sent, 2);
      assert.equal(r.errCode, 'EBADF');
      assert.equal(r.isHostError, true);
      const got = drain(b);
      assert.deepEqual([...got], [...u8.subarray(256, 272), ...u8.subarray(300, 304)]);
    } finally {
      host.close(a);
      host.close(b);
    }
  });

  test('pollFds in a worker wakes on an eventfd write from the main thread', async () => {
    const e1 = host.eventfdCreate(0, { nonblock: true });
    const e2 = host.eventfdCreate(0, { nonblock: true });
    try {
      const run = runWorker<{ ready: number[]; ms: number; value: number | null }>(
        `
        const t0 = Date.now();
        post('polling');
        const ready = host.pollFds(new Int32Array([data.e1, data.e2]), 5000);
        const ms = Date.now() - t0;
        return { ready, ms, value: host.eventfdRead(data.e2) };`,
        { e1, e2 },
      );
      assert.equal(await run.next(), 'polling');
      await sleep(40);
      assert.equal(host.eventfdWrite(e2, 3), true);
      const r = await run.result;
      await run.worker.terminate();
      assert.deepEqual(r.ready, [1]);
      assert.equal(r.value, 3);
      assert.ok(r.ms >= 35 && r.ms < 4000, `woke after ${r.ms} ms`);
    } finally {
      host.close(e1);
      host.close(e2);
    }
  });

  test('pollFds timeout, events/revents, POLLNVAL', () => {
    const e = host.eventfdCreate(0, { nonblock: true });
    try {
      const fds = new Int32Array([e, -1]);
      assert.deepEqual(host.pollFds(fds, 0), []);
      const t0 = Date.now();
      assert.deepEqual(host.pollFds(fds, 30), []);
      assert.ok(Date.now() - t0 >= 25);
      // An eventfd is always writable.
      assert.deepEqual(host.pollFds(fds, 0, { events: host.POLLOUT }), [0]);
      host.eventfdWrite(e);
      const revents = new Uint16Array(2);
      assert.equal(host.pollFdsInto(fds, 0, revents), 1);
      assert.equal(revents[0]! & host.POLLIN, host.POLLIN);
      assert.equal(revents[1], 0);
      assert.equal(
        host.pollFdsInto(new Int32Array([NO_SUCH_FD]), 0, revents, new Uint16Array([host.POLLIN])),
        1,
      );
      assert.equal(revents[0], host.POLLNVAL);
      assertHostError(() => host.pollFds(new Int32Array([NO_SUCH_FD]), 0), 'EBADF', 'poll');
    } finally {
      host.close(e);
    }
  });
});

describe('host: eventfd and errors', () => {
  test('eventfd write/read/EAGAIN, semaphore mode', () => {
    const e = host.eventfdCreate(0, { nonblock: true });
    try {
      assert.equal(host.eventfdRead(e), null);
      host.eventfdWrite(e, 2);
      host.eventfdWrite(e);
      assert.equal(host.eventfdRead(e), 3);
      assert.equal(host.eventfdRead(e), null);
    } finally {
      host.close(e);
    }
    const s = host.eventfdCreate(2, { nonblock: true, semaphore: true });
    try {
      assert.equal(host.eventfdRead(s), 1);
      assert.equal(host.eventfdRead(s), 1);
      assert.equal(host.eventfdRead(s), null);
    } finally {
      host.close(s);
    }
  });

  test('bad fd -> HostError EBADF; bad arguments -> TypeError/RangeError', () => {
    const err = assertHostError(() => host.close(NO_SUCH_FD), 'EBADF', 'close');
    assert.equal(err.errno, 9);
    assert.match(err.message, /EBADF/);
    assertHostError(() => host.eventfdRead(NO_SUCH_FD), 'EBADF', 'read');
    assertHostError(() => host.eventfdWrite(NO_SUCH_FD, 1), 'EBADF', 'write');
    assertHostError(() => host.setNonblock(NO_SUCH_FD), 'EBADF', 'fcntl');
    assertHostError(() => host.recvmsg(NO_SUCH_FD), 'EBADF', 'recvmsg');
    assertHostError(() => host.tunSetVnetHdrSize(NO_SUCH_FD, 12), 'EBADF', 'ioctl');
    const e = host.eventfdCreate();
    host.close(e);
    assertHostError(() => host.close(e), 'EBADF');
    assert.throws(() => host.close('3' as unknown as number), TypeError);
    assert.throws(() => host.eventfdWrite(0, 0), RangeError);
    assert.throws(() => host.memfdCreate('x', -1), RangeError);
    assert.throws(() => host.tunOpen('a-name-longer-than-15'), RangeError);
  });
});

describe('host: unix sockets and SCM_RIGHTS', () => {
  test('listen (0600) / accept / connect; an eventfd passed over the socket works', () => {
    const sockPath = path.join(os.tmpdir(), `vmq-host-${process.pid}.sock`);
    fs.rmSync(sockPath, { force: true });
    const lfd = host.unixListen(sockPath, { nonblock: true });
    const fds: number[] = [lfd];
    try {
      const st = fs.statSync(sockPath);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o600);
      assert.equal(host.unixAccept(lfd), null); // EAGAIN
      const client = host.unixConnect(sockPath);
      fds.push(client);
      const server = host.unixAccept(lfd, { nonblock: true });
      assert.ok(server !== null);
      fds.push(server);

      const efd = host.eventfdCreate(0, { nonblock: true });
      fds.push(efd);
      assert.throws(() => host.sendmsg(client, new Uint8Array(0), [efd]), RangeError);
      assert.equal(host.sendmsg(client, Buffer.from('hello'), [efd]), 5);
      const msg = host.recvmsg(server, 64, 4);
      assert.ok(msg !== null);
      assert.equal(msg.bytes.toString(), 'hello');
      assert.equal(msg.fds.length, 1);
      const received = msg.fds[0]!;
      fds.push(received);
      assert.notEqual(received, efd);
      // The received fd is the same eventfd.
      host.eventfdWrite(received, 41);
      host.eventfdWrite(efd, 1);
      assert.equal(host.eventfdRead(efd), 42);
      // MSG_CMSG_CLOEXEC
      const fdinfo = fs.readFileSync(`/proc/self/fdinfo/${received}`, 'utf8');
      const flags = parseInt(/flags:\s+([0-7]+)/.exec(fdinfo)![1]!, 8);
      assert.ok(flags & 0o2000000, 'O_CLOEXEC set');

      assert.equal(host.recvmsg(server), null); // EAGAIN
      host.close(client);
      fds.splice(fds.indexOf(client), 1);
      const eof = host.recvmsg(server);
      assert.ok(eof !== null);
      assert.equal(eof.bytes.length, 0);
      assertHostError(() => host.sendmsg(server, Buffer.from('x')), 'EPIPE', 'sendmsg');
      assertHostError(() => host.unixListen(sockPath), 'EADDRINUSE', 'bind');
    } finally {
      for (const fd of fds) host.close(fd);
      fs.rmSync(sockPath, { force: true });
    }
  });

  test('socketpair: several fds in one message; MSG_CTRUNC closes what arrived and throws', () => {
    const [a, b] = host.socketPair({ nonblock: true });
    const e = [host.eventfdCreate(), host.eventfdCreate(), host.eventfdCreate()];
    try {
      assert.equal(host.sendmsg(a, Buffer.from([1, 2]), new Int32Array(e)), 2);
      const r = host.recvmsg(b, 16, 8);
      assert.ok(r !== null);
      assert.deepEqual([...r.bytes], [1, 2]);
      assert.equal(r.fds.length, 3);
      r.fds.forEach((fd) => host.close(fd));

      const before = openFdCount();
      assert.equal(host.sendmsg(a, Buffer.from([3]), e), 1);
      const err = assertHostError(() => host.recvmsg(b, 16, 1), 'EMSGSIZE', 'recvmsg');
      assert.match(err.message, /MSG_CTRUNC/);
      assert.equal(openFdCount(), before, 'received fds were closed');
      assert.equal(host.recvmsg(b, 16, 1), null);
    } finally {
      [a, b, ...e].forEach((fd) => host.close(fd));
    }
  });
});

describe('host: batched frame I/O (socketpair)', () => {
  test('writevFrames / writevFramesSg / readFrames with bounds checks', () => {
    const [a, b] = host.socketPair({ nonblock: true });
    try {
      const sab = new SharedArrayBuffer(1024);
      const u8 = new Uint8Array(sab);
      for (let i = 0; i < u8.length; i++) u8[i] = i & 0xff;

      assert.equal(host.writevFrames(a, sab, new Float64Array([0, 10, 1000]), new Uint32Array([3, 2, 24]), 3), 3);
      assert.deepEqual([...drain(b)], [0, 1, 2, 10, 11, ...u8.subarray(1000, 1024)]);
      // start: frames [1, 3)
      assert.equal(host.writevFrames(a, sab, new Float64Array([0, 5, 7]), new Uint32Array([1, 1, 1]), 2, 1), 2);
      assert.deepEqual([...drain(b)], [5, 7]);

      // Scatter-gather: frame 0 = 2 segments, frame 1 = 1 segment.
      const sg = host.writevFramesSg(
        a,
        sab,
        new Float64Array([100, 200, 300]),
        new Uint32Array([2, 3, 1]),
        new Uint32Array([2, 1]),
        2,
      );
      assert.equal(sg, 2);
      assert.deepEqual([...drain(b)], [100, 101, 200, 201, 202, 44]);

      // Bounds: nothing is written when any frame is out of range.
      const bad: [number, number][] = [
        [1020, 5],
        [1025, 0],
        [-1, 1],
        [0.5, 1],
        [Number.NaN, 1],
      ];
      for (const [off, len] of bad) {
        assert.throws(
          () => host.writevFrames(a, sab, new Float64Array([0, off]), new Uint32Array([1, len]), 2),
          RangeError,
          `off ${off} len ${len}`,
        );
      }
      assert.throws(() => host.writevFrames(a, sab, new Float64Array(1), new Uint32Array(1), 2), RangeError);
      assert.throws(() => host.writevFrames(a, sab, new Float64Array(2), new Uint32Array(2), 2, 1), RangeError);
      assert.throws(
        () => host.writevFramesSg(a, sab, new Float64Array(4), new Uint32Array(4), new Uint32Array([0]), 1),
        RangeError,
      );
      assert.throws(
        () => host.writevFrames(a, new Uint8Array(8) as unknown as SharedArrayBuffer, new Float64Array(1), new Uint32Array(1), 1),
        TypeError,
      );
      assert.equal(host.recvmsg(b), null, 'nothing was written');

      // readFrames: EAGAIN -> 0; then reads into the SAB (plain ArrayBuffer also accepted).
      const outLens = new Uint32Array(2);
      assert.equal(host.readFrames(b, sab, new Float64Array([512]), new Uint32Array([16]), outLens, 1), 0);
      host.sendmsg(a, Buffer.from([9, 8, 7]));
      const ab = new ArrayBuffer(64);
      assert.equal(host.readFrames(b, ab, new Float64Array([0, 32]), new Uint32Array([16, 16]), outLens, 2), 1);
      assert.equal(outLens[0], 3);
      assert.deepEqual([...new Uint8Array(ab, 0, 3)], [9, 8, 7]);
      assert.throws(
        () => host.readFrames(b, ab, new Float64Array([60]), new Uint32Array([16]), outLens, 1),
        RangeError,
      );
      // Scatter read.
      host.sendmsg(a, Buffer.from([1, 2, 3, 4, 5]));
      const sgLens = new Uint32Array(1);
      assert.equal(
        host.readFramesSg(b, sab, new Float64Array([600, 700]), new Uint32Array([2, 8]), new Uint32Array([2]), sgLens, 1),
        1,
      );
      assert.equal(sgLens[0], 5);
      assert.deepEqual([...u8.subarray(600, 602), ...u8.subarray(700, 703)], [1, 2, 3, 4, 5]);
      // A non-EAGAIN error on the first frame throws.
      assertHostError(
        () => host.writevFrames(NO_SUCH_FD, sab, new Float64Array(1), new Uint32Array([1]), 1),
        'EBADF',
        'writev',
      );
    } finally {
      host.close(a);
      host.close(b);
    }
  });
});

// ---------------------------------------------------------------------------
// TAP

function tapSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'needs root (CAP_NET_ADMIN) to create a TAP';
  if (!fs.existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  return undefined;
}

function haveCmd(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

function ip(...args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 5000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

const VNET_HDR = 12;

/** vnet header (zeros: no csum/GSO) + an Ethernet frame. */
function frameAt(u8: Uint8Array, off: number, dst: number[], src: number[], ethType: number, payload: number[]): number {
  u8.fill(0, off, off + VNET_HDR);
  const f = off + VNET_HDR;
  u8.set(dst, f);
  u8.set(src, f + 6);
  u8[f + 12] = ethType >> 8;
  u8[f + 13] = ethType & 0xff;
  u8.set(payload, f + 14);
  const len = Math.max(14 + payload.length, 60);
  u8.fill(0, f + 14 + payload.length, f + len);
  return VNET_HDR + len;
}

describe('host: multi-queue TAP', { skip: tapSkipReason() }, () => {
  test('2 queues: detach/attach; write frames -> kernel rx_packets; read kernel frames (fresh netns)', async (t) => {
    const name = `vmqt${process.pid}`;
    let q0: host.TunHandle;
    try {
      q0 = host.tunOpen(name, { nonblock: true });
    } catch (e) {
      if (e instanceof HostError && (e.code === 'EPERM' || e.code === 'EACCES')) {
        t.skip(`cannot create a TAP here (${e.code})`);
        return;
      }
      throw e;
    }
    const fds = [q0.fd];
    const useNetns = haveCmd('ip', ['-V']);
    const ns = `vmqt${process.pid}`;
    let nsCreated = false;
    let ping: ChildProcess | undefined;
    try {
      const q1 = host.tunOpen(name, { nonblock: true });
      fds.push(q1.fd);
      assert.equal(q0.name, name);
      assert.equal(q1.name, name);
      const tunFlags = parseInt(fs.readFileSync(`/sys/class/net/${name}/tun_flags`, 'utf8'), 16);
      assert.ok(tunFlags & 0x0100, 'IFF_MULTI_QUEUE');
      assert.ok(tunFlags & 0x4000, 'IFF_VNET_HDR');
      assert.ok(tunFlags & 0x0002 && tunFlags & 0x1000, 'IFF_TAP | IFF_NO_PI');
      for (const q of [q0, q1]) {
        host.tunSetVnetHdrSize(q.fd, VNET_HDR);
        host.tunSetOffload(q.fd, host.TUN_F_CSUM | host.TUN_F_TSO4 | host.TUN_F_TSO6 | host.TUN_F_TSO_ECN);
      }
      assertHostError(() => host.tunSetOffload(q0.fd, 0x80000), 'EINVAL', 'ioctl');
      // TUNSETQUEUE: a detached queue disappears from the device, attaching brings it back.
      const queues = (): string[] => fs.readdirSync(`/sys/class/net/${name}/queues`).sort();
      assert.deepEqual(queues(), ['rx-0', 'rx-1', 'tx-0', 'tx-1']);
      host.tunSetQueue(q1.fd, false);
      assert.deepEqual(queues(), ['rx-0', 'tx-0']);
      assertHostError(() => host.tunSetQueue(q1.fd, false), 'EINVAL', 'ioctl');
      host.tunSetQueue(q1.fd, true);
      assert.deepEqual(queues(), ['rx-0', 'rx-1', 'tx-0', 'tx-1']);

      let rxPackets: () => number;
      if (useNetns) {
        // Keep the host's namespace untouched: move the TAP into a fresh one.
        ip('netns', 'add', ns);
        nsCreated = true;
        ip('link', 'set', 'dev', name, 'netns', ns);
        ip('-n', ns, 'link', 'set', 'dev', name, 'up');
        rxPackets = () => {
          const j = JSON.parse(ip('-n', ns, '-j', '-s', 'link', 'show', 'dev', name)) as {
            stats64: { rx: { packets: number } };
          }[];
          return j[0]!.stats64.rx.packets;
        };
      } else {
        t.diagnostic('iproute2 missing: bringing the TAP up in the current namespace');
        host.linkSetUp(name, true);
        rxPackets = () => Number(fs.readFileSync(`/sys/class/net/${name}/statistics/rx_packets`, 'utf8'));
      }

      const sab = new SharedArrayBuffer(64 * 1024);
      const u8 = new Uint8Array(sab);
      const bcast = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
      const mac = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
      const offs = new Float64Array([0, 2048, 4096]);
      const lens = new Uint32Array(3);
      for (let i = 0; i < 3; i++) lens[i] = frameAt(u8, offs[i]!, bcast, mac, 0x88b5, [i, 1, 2, 3]);

      const rx0 = rxPackets();
      assert.equal(host.writevFrames(q0.fd, sab, offs, lens, 3), 3);
      assert.equal(rxPackets(), rx0 + 3);
      // Scatter-gather on queue 1: vnet header and frame in separate segments.
      assert.equal(
        host.writevFramesSg(
          q1.fd,
          sab,
          new Float64Array([0, VNET_HDR, 20]),
          new Uint32Array([VNET_HDR, 8, lens[0]! - VNET_HDR - 8]),
          new Uint32Array([3]),
          1,
        ),
        1,
      );
      assert.equal(rxPackets(), rx0 + 4);

      // The read half is its own subtest, so that without ping it is reported as skipped, not passed.
      const readSkip = !useNetns
        ? 'needs iproute2 (ip netns)'
        : !haveCmd('ping', ['-V'])
          ? 'needs ping (iputils-ping: scripts/install-peers.sh or .ci/run installs it)'
          : false;
      await t.test('read half: the kernel ARPs and pings out of the TAP, frames read on the queue fds', { skip: readSkip }, () => {
        // Read half: ping a neighbour on the TAP's subnet from inside the netns.
        // The kernel ARPs for it (frame out of the TAP = readable on a queue fd),
        // we answer with an ARP reply, and the ICMP echo request follows.
        ip('-n', ns, 'addr', 'add', '198.18.0.1/30', 'dev', name);
        const ourIp = [198, 18, 0, 2];
        ping = spawn('ip', ['netns', 'exec', ns, 'ping', '-n', '-c', '1', '-W', '3', '198.18.0.2'], {
          stdio: 'ignore',
        });
        const pollSet = new Int32Array([q0.fd, q1.fd]);
        const rdOffs = new Float64Array([8192, 8192 + 4096, 8192 + 8192, 8192 + 12288]);
        const caps = new Uint32Array([4096, 4096, 4096, 4096]);
        const outLens = new Uint32Array(4);
        const waitFor = (pred: (f: Uint8Array) => boolean): Uint8Array => {
          const deadline = Date.now() + 4000;
          while (Date.now() < deadline) {
            for (const i of host.pollFds(pollSet, 100)) {
              const n = host.readFrames(pollSet[i]!, sab, rdOffs, caps, outLens, 4);
              for (let k = 0; k < n; k++) {
                const f = u8.subarray(rdOffs[k]! + VNET_HDR, rdOffs[k]! + outLens[k]!);
                if (pred(f)) return f.slice();
              }
            }
          }
          throw new Error('expected frame not seen on any queue');
        };
        const arpReq = waitFor(
          (f) => f[12] === 0x08 && f[13] === 0x06 && f[21] === 1 && f.subarray(38, 42).join() === ourIp.join(),
        );
        const theirMac = [...arpReq.subarray(6, 12)];
        const arpReply = [
          0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02, // htype, ptype, hlen, plen, op=reply
          ...mac, ...ourIp, // sender
          ...theirMac, ...arpReq.subarray(28, 32), // target
        ];
        const replyLen = frameAt(u8, 0, theirMac, mac, 0x0806, arpReply);
        assert.equal(host.writevFrames(q0.fd, sab, new Float64Array([0]), new Uint32Array([replyLen]), 1), 1);
        const echo = waitFor(
          (f) =>
            f[12] === 0x08 && f[13] === 0x00 && f[14 + 9] === 1 && f.subarray(30, 34).join() === ourIp.join(),
        );
        assert.deepEqual([...echo.subarray(0, 6)], mac, 'echo request addressed to the MAC we answered with');
        assert.equal(echo[34], 8, 'ICMP echo request');
      });
    } finally {
      ping?.kill();
      for (const fd of fds) host.close(fd);
      // Non-persistent TAP: gone with its last fd.
      if (nsCreated) {
        const r = spawnSync('ip', ['-n', ns, 'link', 'show', 'dev', name], { stdio: 'ignore' });
        spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
        assert.notEqual(r.status, 0, 'TAP deleted');
      } else {
        assert.equal(fs.existsSync(`/sys/class/net/${name}`), false, 'TAP deleted');
      }
    }
  });
});
