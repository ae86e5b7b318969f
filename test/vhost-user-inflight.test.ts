/**
 * serve's GET_INFLIGHT_FD / SET_INFLIGHT_FD (vhost-user.rst, protocol
 * feature INFLIGHT_SHMFD) over a real socket, back-end in this process:
 * the buffer it hands out (a memfd of num_queues × the per-queue size,
 * zeroed), and bad input: a wrong mmap_size, a memfd shorter than the
 * description, a num_queues the device does not have, a queue_size of 0,
 * the requests without the protocol feature. Each gets a failure REPLY_ACK
 * (NEED_REPLY) or ends that connection, with the InflightError's code in
 * the log; serve goes on serving the next front-end. And a region that no
 * ring of this size can have written, handed to a restarted serve by
 * `attach`'s front-end: that ring is faulted (DEVICE_NEEDS_RESET), nothing
 * else stops.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { close, hostAvailable, memfdCreate, mmapShared } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, VHOST_USER_PROTOCOL_F_REPLY_ACK, VhostUserRequest } from '../src/transport/vhost-user/messages.js';
import { inflightBufferBytes } from '../src/virtio/inflight/region.js';
import { VhostFrontend, waitFor } from './support/vhost-frontend.js';
import { VhostUserFrontend } from '../src/transport/vhost-user/front-end.js';
import { DrvStat } from '../src/net/stats.js';
import { prepareGeneratorTraffic, assignFlows } from '../src/traffic/generator-source.js';

const skip = hostAvailable() ? false : 'the native addon (src/host) is not built';
const PROTO = (1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK));

async function failAck(fe: VhostFrontend, request: number): Promise<void> {
  const f = await fe.recv();
  assert.equal(f.header.request, request);
  assert.equal(f.payload.byteLength, 8);
  assert.notEqual(new DataView(f.payload.buffer, f.payload.byteOffset, 8).getBigUint64(0, true), 0n, 'REPLY_ACK reports failure');
}

async function negotiated(socket: string): Promise<VhostFrontend> {
  const fe = await VhostFrontend.connect(socket);
  const f = await fe.request({ type: 'GET_FEATURES' });
  assert.equal(f.type, 'GET_FEATURES');
  const p = await fe.request({ type: 'GET_PROTOCOL_FEATURES' });
  assert.ok(p.type === 'GET_PROTOCOL_FEATURES' && (p.features & PROTO) === PROTO, 'INFLIGHT_SHMFD offered');
  await fe.send({ type: 'SET_PROTOCOL_FEATURES', features: PROTO });
  return fe;
}

test('GET_INFLIGHT_FD / SET_INFLIGHT_FD: a zeroed memfd of the right size; bad descriptions and fds are typed errors; serve serves on', { skip, timeout: 30_000 }, async () => {
  const logs: string[] = [];
  const socket = join(tmpdir(), `vmq-inflight-${process.pid}.sock`);
  const be = new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'sink' }, log: (l) => logs.push(l) });
  await be.start();
  const R = VhostUserRequest;
  const size = inflightBufferBytes(4, 256);
  try {
    // Without the protocol feature: GET has its own reply, so the connection ends.
    let fe = await VhostFrontend.connect(socket);
    await fe.send({ type: 'GET_INFLIGHT_FD', numQueues: 4, queueSize: 256 });
    await fe.waitClosed();
    fe.close();
    assert.ok(logs.some((l) => /GET_INFLIGHT_FD without VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD negotiated/.test(l)), logs.join('\n'));

    fe = await negotiated(socket);
    const r = await fe.request({ type: 'GET_INFLIGHT_FD', numQueues: 4, queueSize: 256 });
    assert.equal(r.type, 'GET_INFLIGHT_FD');
    if (r.type !== 'GET_INFLIGHT_FD') return;
    assert.deepEqual(r.inflight, { mmapSize: size, mmapOffset: 0, numQueues: 4, queueSize: 256 });
    assert.equal(fstatSync(r.fd).size, size, 'the memfd is mmap_size bytes');
    const view = new Uint8Array(mmapShared(r.fd, size));
    assert.ok(view.every((b) => b === 0), 'every region at version 0');
    // The front-end's own buffer back: accepted.
    await fe.ack({ type: 'SET_INFLIGHT_FD', ...r.inflight, fd: r.fd });

    // Bad descriptions with NEED_REPLY: a failure reply, the connection stays.
    const bad: [string, Parameters<typeof fe.send>[0], RegExp][] = [
      ['mmap_size not 4 × the per-queue size', { type: 'SET_INFLIGHT_FD', mmapSize: size - 64, mmapOffset: 0, numQueues: 4, queueSize: 256, fd: r.fd, needReply: true }, /INFLIGHT_SIZE: mmap_size/],
      ['more queues than the device has', { type: 'SET_INFLIGHT_FD', mmapSize: inflightBufferBytes(5, 256), mmapOffset: 0, numQueues: 5, queueSize: 256, fd: r.fd, needReply: true }, /INFLIGHT_QUEUES: num_queues 5/],
      ['queue_size 0', { type: 'SET_INFLIGHT_FD', mmapSize: 0, mmapOffset: 0, numQueues: 4, queueSize: 0, fd: r.fd, needReply: true }, /INFLIGHT_QUEUE_SIZE/],
      ['the region past the end of the file', { type: 'SET_INFLIGHT_FD', mmapSize: size, mmapOffset: 4096, numQueues: 4, queueSize: 256, fd: r.fd, needReply: true }, /INFLIGHT_SIZE: the inflight file has/],
    ];
    for (const [what, m, log] of bad) {
      await fe.send(m);
      await failAck(fe, R.SET_INFLIGHT_FD);
      assert.ok(logs.some((l) => log.test(l)), `${what}: logged\n${logs.join('\n')}`);
    }
    const short = memfdCreate('vmq-test-short-inflight', size / 2);
    try {
      await fe.send({ type: 'SET_INFLIGHT_FD', mmapSize: size, mmapOffset: 0, numQueues: 4, queueSize: 256, fd: short, needReply: true });
      await failAck(fe, R.SET_INFLIGHT_FD);
      assert.ok(logs.some((l) => new RegExp(`INFLIGHT_SIZE: the inflight file has ${size / 2} bytes`).test(l)), 'a short memfd: logged');
    } finally {
      close(short);
    }
    assert.equal((await fe.request({ type: 'GET_FEATURES' })).type, 'GET_FEATURES', 'the connection still works');
    // Without NEED_REPLY: the connection ends.
    await fe.send({ type: 'SET_INFLIGHT_FD', mmapSize: size + 64, mmapOffset: 0, numQueues: 4, queueSize: 256, fd: r.fd });
    await fe.waitClosed();
    fe.close();
    // A GET with a bad queue count (its own reply: the connection ends).
    fe = await negotiated(socket);
    await fe.send({ type: 'GET_INFLIGHT_FD', numQueues: 0, queueSize: 256 });
    await fe.waitClosed();
    fe.close();
    assert.ok(logs.some((l) => /GET_INFLIGHT_FD: INFLIGHT_QUEUES: num_queues 0/.test(l)), logs.join('\n'));
    close(r.fd);
    // serve serves the next front-end.
    fe = await negotiated(socket);
    const again = await fe.request({ type: 'GET_INFLIGHT_FD', numQueues: 2, queueSize: 64 });
    assert.ok(again.type === 'GET_INFLIGHT_FD' && again.inflight.mmapSize === inflightBufferBytes(2, 64));
    if (again.type === 'GET_INFLIGHT_FD') close(again.fd);
    fe.close();
  } finally {
    await be.stop();
  }
});

test('a corrupt inflight region handed to a restarted serve faults that queue pair (INFLIGHT_CORRUPT, DEVICE_NEEDS_RESET); the process and the connection go on', { skip, timeout: 30_000 }, async () => {
  const socket = join(tmpdir(), `vmq-inflight-corrupt-${process.pid}.sock`);
  const logs: string[] = [];
  const mk = () => new VhostUserBackend({ socket, pairs: 1, netdev: { kind: 'loopback' }, log: (l) => logs.push(l) });
  let be = mk();
  await be.start();
  const spec = prepareGeneratorTraffic({ flows: 4, frameSize: 128, proto: 'udp', ipVersion: 4 });
  assignFlows(spec, () => 0);
  const fe = new VhostUserFrontend({ socket, pairs: 1, source: () => spec, log: (l) => logs.push(`FE ${l}`) });
  try {
    await fe.start();
    await waitFor(() => fe.stats.total(DrvStat.rxPackets) > 1000, 'traffic');
    await be.stop();
    await waitFor(() => !fe.connected, 'the front-end to see serve go');
    // The front-end's buffer (GET_INFLIGHT_FD on the first connection): the receiveq's region now claims 7 descriptors.
    const fd = (fe as unknown as { inflightFd: number }).inflightFd;
    assert.ok(fd >= 0, 'the front-end kept the inflight fd');
    const region = new DataView(mmapShared(fd, inflightBufferBytes(2, 256)));
    assert.equal(region.getUint16(8, true), 1, 'the receiveq region is in use (version 1)');
    region.setUint16(10, 7, true);
    be = mk();
    await be.start();
    await waitFor(() => logs.some((l) => /queue 0 stopped: INFLIGHT_CORRUPT: inflight region for 7 descriptors, the ring has 256/.test(l)), `the fault\n${logs.join('\n')}`);
    assert.ok(logs.some((l) => /DEVICE_NEEDS_RESET/.test(l)), 'the device asks for a reset');
    assert.ok(fe.connected && fe.failure === null, 'the connection stays');
  } finally {
    await fe.stop();
    await be.stop();
  }
});
