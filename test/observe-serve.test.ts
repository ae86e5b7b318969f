/**
 * Observing a running `serve` (VhostUserBackend + ServeObserved) driven by
 * an in-process vhost-user front-end (test/support/vhost-frontend.ts) over
 * memfd guest memory: `stats` over the control socket shows the counters,
 * each ring's indexes and in-flight count, the memory table, features and
 * connection state; one log line per front-end connection names the
 * negotiated features; counters (stats and /metrics) keep growing across a
 * front-end reconnect instead of starting again from 0.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { close, eventfdCreate, eventfdWrite, memfdCreate, mmapShared } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_REPLY_ACK } from '../src/transport/vhost-user/messages.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { contiguousQueueLayout, createDriverQueue, queueBytes } from '../src/virtio/ring.js';
import type { DriverQueue, QueueLayout } from '../src/virtio/queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import { ServeObserved } from '../src/cli/observe/serve-observed.js';
import { startObserving } from '../src/cli/observe/setup.js';
import { ControlClient } from '../src/cli/control/client.js';
import type { Snapshot } from '../src/cli/observe/snapshot.js';
import { VhostFrontend, waitFor } from './support/vhost-frontend.js';
import { parsePromText } from './support/prom-text.js';

const FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VHOST_USER_F_PROTOCOL_FEATURES_MASK;
const PROTOCOL = (1n << BigInt(VHOST_USER_PROTOCOL_F_MQ)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK));
const GPA = 0x100000, UVA = 0x7f00_0000_0000, SIZE = 4 << 20, RING = 64, HDR = 12;

/** One front-end connection: guest memory, receiveq1 and transmitq1 (split, EVENT_IDX), set up and enabled. */
class Frontend {
  readonly fd = memfdCreate('vmq-obs-guest', SIZE);
  readonly mem = new GuestMemory([{ guestPhysAddr: GPA, size: SIZE, buffer: mmapShared(this.fd, SIZE, 0), userAddr: UVA }]);
  private next = 0;
  readonly layouts: QueueLayout[] = [];
  readonly queues: DriverQueue[] = [];
  readonly kicks = [eventfdCreate(0, { nonblock: true }), eventfdCreate(0, { nonblock: true })];
  readonly calls = [eventfdCreate(0, { nonblock: true }), eventfdCreate(0, { nonblock: true })];
  fe!: VhostFrontend;
  sentBytes = 0;

  alloc(bytes: number, align = 4096): number {
    const off = Math.ceil(this.next / align) * align;
    this.next = off + bytes;
    return GPA + off;
  }

  async connect(socket: string, rxBuffers: number): Promise<void> {
    for (let q = 0; q < 2; q++) {
      const l = contiguousQueueLayout('split', this.alloc(queueBytes('split', RING)), RING);
      this.layouts.push(l);
      this.queues.push(createDriverQueue(this.mem, l, { eventIdx: true, indirect: false, inOrder: false, index: q }));
    }
    for (let i = 0; i < rxBuffers; i++) this.queues[0].addOne(this.alloc(2048, 64), 2048, true, i);
    this.queues[0].publish();
    const fe = (this.fe = await VhostFrontend.connect(socket));
    await fe.send({ type: 'SET_OWNER' });
    await fe.request({ type: 'GET_FEATURES' });
    await fe.send({ type: 'SET_FEATURES', features: FEATURES });
    await fe.request({ type: 'GET_PROTOCOL_FEATURES' });
    await fe.send({ type: 'SET_PROTOCOL_FEATURES', features: PROTOCOL });
    await fe.ack({ type: 'SET_MEM_TABLE', regions: [{ guestAddr: GPA, size: SIZE, userAddr: UVA, mmapOffset: 0, fd: this.fd }] });
    const uva = (gpa: number) => UVA + (gpa - GPA);
    for (let q = 0; q < 2; q++) {
      const l = this.layouts[q];
      await fe.ack({ type: 'SET_VRING_NUM', index: q, num: RING });
      await fe.ack({ type: 'SET_VRING_ADDR', index: q, flags: 0, descUserAddr: uva(l.descAddr), availUserAddr: uva(l.driverAddr), usedUserAddr: uva(l.deviceAddr), logGuestAddr: 0 });
      await fe.ack({ type: 'SET_VRING_BASE', index: q, num: 0 });
      await fe.ack({ type: 'SET_VRING_KICK', index: q, fd: this.kicks[q] });
      await fe.ack({ type: 'SET_VRING_CALL', index: q, fd: this.calls[q] });
    }
    for (let q = 0; q < 2; q++) await fe.ack({ type: 'SET_VRING_ENABLE', index: q, enable: true });
  }

  /** Transmit `n` frames on transmitq1 and wait until the device used them all. */
  async transmit(n: number): Promise<void> {
    const tx = this.queues[1];
    let done = 0, sent = 0;
    const until = Date.now() + 10_000;
    while (done < n) {
      while (sent < n && tx.numFree > 0) {
        const len = 60 + (sent % 7) * 100;
        const a = this.alloc(HDR + len, 64);
        this.mem.write(a, new Uint8Array(HDR + len).fill(0x42, HDR));
        tx.addOne(a, HDR + len, false, sent++);
        this.sentBytes += len;
      }
      if (tx.publish()) eventfdWrite(this.kicks[1], 1);
      while (tx.usedPending() > 0) {
        tx.popUsed();
        done++;
      }
      if (Date.now() > until) throw new Error(`only ${done} of ${n} frames used`);
      await sleep(2);
    }
  }

  private closed = false;

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fe?.close();
    for (const fd of [this.fd, ...this.kicks, ...this.calls]) close(fd);
  }
}

test('serve: stats shows counters, ring indexes, memory and features; counters stay monotonic across a front-end reconnect (stats and /metrics)', { timeout: 60_000 }, async () => {
  const socket = path.join(os.tmpdir(), `vmq-obs-vu-${process.pid}.sock`);
  const control = path.join(os.tmpdir(), `vmq-obs-ctl-${process.pid}.sock`);
  const logs: { line: string; detail?: Record<string, unknown> }[] = [];
  const log = (line: string, detail?: Record<string, unknown>) => logs.push({ line, detail });
  const backend = new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'sink' }, log });
  const observed = new ServeObserved(backend, { socket, client: false, log });
  await backend.start();
  const obs = await startObserving(observed, { control, metrics: '127.0.0.1:0' }, log);
  const client = await ControlClient.connect(control);
  const stats = async () => (await client.request('stats')) as Snapshot;
  const fronts: Frontend[] = [];
  try {
    let s = await stats();
    assert.equal(s.connection.state, 'listening');
    assert.equal(s.connection.sessions, 0);

    // First front-end: 40 frames on transmitq1, 16 RX buffers posted on receiveq1.
    const a = new Frontend();
    fronts.push(a);
    await a.connect(socket, 16);
    await a.transmit(40);
    await waitFor(() => observed.snapshot().rings.find((r) => r.name === 'transmitq1')?.usedIdx === 40 && observed.snapshot().xstats.tx_q0_packets === 40, 'transmitq1 used->idx 40');
    s = await stats();
    assert.equal(s.kind, 'serve');
    assert.equal(s.connection.state, 'running');
    assert.equal(s.connection.sessions, 1);
    assert.equal(s.activePairs, 1, 'pair 0 runs, pair 1 was never set up');
    assert.ok(s.features.includes('VIRTIO_F_EVENT_IDX') && s.features.includes('VIRTIO_F_VERSION_1'), `features ${s.features}`);
    assert.equal(s.ringFormat, 'split');
    assert.equal(s.xstats.tx_q0_packets, 40);
    assert.equal(s.xstats.tx_q0_bytes, a.sentBytes);
    assert.equal(s.xstats.tx_q1_packets, 0);
    assert.deepEqual(s.memory, [{ guestAddr: GPA, size: SIZE, userAddr: UVA }]);
    const tx = s.rings.find((r) => r.name === 'transmitq1')!;
    assert.deepEqual({ size: tx.size, running: tx.running, availIdx: tx.availIdx, usedIdx: tx.usedIdx, inFlight: tx.inFlight },
      { size: RING, running: true, availIdx: 40, usedIdx: 40, inFlight: 0 });
    await waitFor(() => observed.snapshot().rings.find((r) => r.name === 'receiveq1')?.lastAvailIdx === 0, 'receiveq1 state');
    const rx = (await stats()).rings.find((r) => r.name === 'receiveq1')!;
    assert.deepEqual({ availIdx: rx.availIdx, usedIdx: rx.usedIdx, lastAvailIdx: rx.lastAvailIdx, pending: rx.pending, inFlight: rx.inFlight, fill: rx.fill },
      { availIdx: 16, usedIdx: 0, lastAvailIdx: 0, pending: 16, inFlight: 16, fill: 16 / RING }, 'receiveq1: 16 buffers posted, none used');
    const rq2 = s.rings.find((r) => r.name === 'receiveq2')!;
    assert.deepEqual({ started: rq2.started, enabled: rq2.enabled, running: rq2.running }, { started: false, enabled: false, running: false });
    observed.tick();
    observed.tick();
    const conn = logs.filter((l) => l.detail?.event === 'connection');
    assert.equal(conn.length, 1, 'one connection line per front-end');
    assert.match(conn[0].line, /front-end 1 running: 1 of 2 queue pairs, split rings, features .*VIRTIO_F_EVENT_IDX/);

    // The front-end goes away: totals stay.
    a.close();
    await waitFor(() => backend.session === null, 'the session to end');
    s = await stats();
    assert.equal(s.connection.state, 'listening');
    assert.equal(s.xstats.tx_q0_packets, 40, 'counters survive the disconnect');
    assert.deepEqual(s.rings, []);

    // Second front-end: 25 more frames; counters continue from 40.
    const b = new Frontend();
    fronts.push(b);
    await b.connect(socket, 8);
    await b.transmit(25);
    await waitFor(() => observed.snapshot().xstats.tx_q0_packets === 65, 'tx_q0_packets 65');
    s = await stats();
    assert.equal(s.connection.sessions, 2);
    assert.equal(s.xstats.tx_q0_bytes, a.sentBytes + b.sentBytes);
    assert.equal(s.rings.find((r) => r.name === 'transmitq1')?.usedIdx, 25, 'the ring itself starts again');
    observed.tick();
    assert.equal(logs.filter((l) => l.detail?.event === 'connection').length, 2, 'a connection line for the second front-end');

    const fams = parsePromText(await (await fetch(obs.metricsUrl!)).text());
    const txPk = fams.get('virtio_mq_packets_total')!.samples.find((x) => x.labels.pair === '0' && x.labels.direction === 'tx');
    assert.equal(txPk?.value, 65, '/metrics: monotonic across the reconnect');
    assert.equal(fams.get('virtio_mq_connections_total')?.samples[0].value, 2);
    assert.equal(fams.get('virtio_mq_connected')?.samples[0].value, 1);
  } finally {
    client.close();
    await obs.close();
    await backend.stop();
    for (const f of fronts) f.close();
  }
});
