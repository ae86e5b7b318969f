/**
 * Live migration starts and ends under traffic, as QEMU drives it: with a
 * pair running (loopback netdev), SET_LOG_BASE, SET_FEATURES with
 * VHOST_F_LOG_ALL and SET_VRING_ADDR with VHOST_VRING_F_LOG (same ring
 * addresses) switch the running worker to its logging queues in place: no
 * restart (no "stopped" line, the ring positions run on), and from the reply
 * on every used-ring and receive-buffer write is in the log. A second
 * SET_LOG_BASE moves the marks to the new log and unmaps the old one; the
 * end of the connection unmaps the last one. LOG_ALL off switches back in
 * place. SET_VRING_CALL on the running pair also switches in place.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { close, eventfdCreate, eventfdRead, eventfdWrite, memfdCreate, mmapShared } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import {
  VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_LOG_SHMFD, VHOST_USER_PROTOCOL_F_REPLY_ACK,
} from '../src/transport/vhost-user/messages.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { contiguousQueueLayout, createDriverQueue, queueBytes } from '../src/virtio/ring.js';
import type { DriverQueue, QueueLayout } from '../src/virtio/queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import { DirtyLog, VHOST_LOG_PAGE } from '../src/virtio/dirty-log.js';
import { VhostFrontend, waitFor } from './support/vhost-frontend.js';

const FEATURES = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VHOST_USER_F_PROTOCOL_FEATURES_MASK;
const LOG_ALL = 1n << BigInt(VHOST_F_LOG_ALL);
const PROTOCOL = (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_LOG_SHMFD));
const HDR = 12;
const RING = 64;
const GPA = 0x200000;
const UVA = 0x7f00_0000_0000;
const SIZE = 1 << 20;
const SLOT = 2048;

/** Mappings of memfd `name` in this process (the back-end runs here too). */
function mappings(name: string): number {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name} `)).length;
}

class Ring {
  readonly layout: QueueLayout;
  readonly drv: DriverQueue;
  readonly kick = eventfdCreate(0, { nonblock: true });
  readonly call = eventfdCreate(0, { nonblock: true });
  readonly pool: number;
  constructor(readonly mem: GuestMemory, readonly index: number, at: number) {
    this.layout = contiguousQueueLayout('split', at, RING);
    this.drv = createDriverQueue(mem, this.layout, { eventIdx: true, indirect: false, inOrder: false, index });
    this.pool = at + Math.ceil(queueBytes('split', RING) / 4096) * 4096;
  }
  addr(): { descUserAddr: number; availUserAddr: number; usedUserAddr: number } {
    const u = (g: number) => UVA + (g - GPA);
    return { descUserAddr: u(this.layout.descAddr), availUserAddr: u(this.layout.driverAddr), usedUserAddr: u(this.layout.deviceAddr) };
  }
}

test('dirty logging switches in place on a running pair (no restart), follows a new log, and unmaps the logs it no longer uses', async () => {
  const logs: string[] = [];
  const socket = path.join(os.tmpdir(), `vmq-dls-${process.pid}.sock`);
  const backend = new VhostUserBackend({ socket, log: (l) => logs.push(l), pairs: 1, netdev: { kind: 'loopback' } });
  await backend.start();
  const memFd = memfdCreate('vmq-dls-guest', SIZE);
  const mem = new GuestMemory([{ guestPhysAddr: GPA, size: SIZE, buffer: mmapShared(memFd, SIZE, 0), userAddr: UVA }]);
  const rx = new Ring(mem, 0, GPA);
  const tx = new Ring(mem, 1, GPA + SIZE / 2);
  const names = [`vmq-dls-log1-${process.pid}`, `vmq-dls-log2-${process.pid}`];
  const logFds: number[] = [];
  const fe = await VhostFrontend.connect(socket);
  let sent = 0, received = 0, completed = 0;
  /** One driver round: RX buffers topped up, received frames checked, TX reclaimed, `n` frames sent. */
  const step = (n: number) => {
    while (rx.drv.usedPending() > 0) {
      const head = rx.drv.popUsed();
      const b = mem.read(rx.pool + head * SLOT + HDR, rx.drv.usedLen - HDR);
      assert.equal(new DataView(b.buffer, b.byteOffset).getUint32(14), received, 'frames come back in order, once each');
      received++;
    }
    let posted = 0;
    while (rx.drv.numFree > 0) {
      rx.drv.addOne(rx.pool + rx.drv.peekFreeId() * SLOT, SLOT, true, 0);
      posted++;
    }
    if (posted) rx.drv.publish();
    rx.drv.setNotification(true);
    while (tx.drv.usedPending() > 0) {
      tx.drv.popUsed();
      completed++;
    }
    let added = 0;
    for (; added < n && tx.drv.numFree > 0; added++) {
      const a = tx.pool + tx.drv.peekFreeId() * SLOT;
      const f = new Uint8Array(HDR + 100);
      f.set([0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2, 0x88, 0xb5], HDR);
      new DataView(f.buffer).setUint32(HDR + 14, sent++);
      mem.write(a, f);
      tx.drv.addOne(a, f.length, false, 0);
    }
    if (added) tx.drv.publish();
    eventfdWrite(tx.kick, 1);
    eventfdWrite(rx.kick, 1);
  };
  /** Traffic until `k` more frames made the round trip. */
  const traffic = async (k: number, what: string) => {
    const goal = received + k;
    const end = Date.now() + 5000;
    while (received < goal) {
      step(8);
      if (Date.now() > end) assert.fail(`${what}: ${received}/${goal} frames back\n${logs.join('\n')}`);
      await sleep(1);
    }
  };
  const newLog = (i: number) => {
    const fd = memfdCreate(names[i], 4096);
    logFds.push(fd);
    return { fd, log: new DirtyLog(mmapShared(fd, 4096, 0)) };
  };
  try {
    await fe.send({ type: 'SET_OWNER' });
    await fe.send({ type: 'SET_FEATURES', features: FEATURES });
    await fe.send({ type: 'SET_PROTOCOL_FEATURES', features: PROTOCOL });
    await fe.ack({ type: 'SET_MEM_TABLE', regions: [{ guestAddr: GPA, size: SIZE, userAddr: UVA, mmapOffset: 0, fd: memFd }] });
    for (const r of [rx, tx]) {
      await fe.ack({ type: 'SET_VRING_NUM', index: r.index, num: RING });
      await fe.ack({ type: 'SET_VRING_ADDR', index: r.index, flags: 0, ...r.addr(), logGuestAddr: 0 });
      await fe.ack({ type: 'SET_VRING_BASE', index: r.index, num: 0 });
      await fe.ack({ type: 'SET_VRING_KICK', index: r.index, fd: r.kick });
      await fe.ack({ type: 'SET_VRING_CALL', index: r.index, fd: r.call });
      await fe.ack({ type: 'SET_VRING_ENABLE', index: r.index, enable: true });
    }
    await traffic(100, 'before the migration');
    const startsBefore = logs.filter((l) => /queue pair 0 (started|stopped)/.test(l)).length;

    // The migration starts (QEMU's vhost_dev_log_resize, vhost_dev_set_log): log, LOG_ALL, F_LOG per ring.
    const l1 = newLog(0);
    assert.equal((await fe.request({ type: 'SET_LOG_BASE', mmapSize: 4096, mmapOffset: 0, fd: l1.fd })).type, 'ACK');
    assert.equal(mappings(names[0]), 2, 'the back-end mapped log 1');
    await fe.ack({ type: 'SET_FEATURES', features: FEATURES | LOG_ALL });
    for (const r of [rx, tx]) await fe.ack({ type: 'SET_VRING_ADDR', index: r.index, flags: 1, ...r.addr(), logGuestAddr: r.layout.deviceAddr });
    assert.ok(logs.some((l) => /queue pair 0 logs its writes/.test(l)), logs.join('\n'));
    // From the replies on, every write is marked: clear the log, run traffic, find the pages written.
    l1.log.clear();
    await traffic(100, 'while logging');
    const page = (a: number) => Math.floor(a / VHOST_LOG_PAGE);
    for (const r of [rx, tx]) assert.ok(l1.log.isDirty(page(r.layout.deviceAddr)), `vring ${r.index}: used ring page logged`);
    assert.ok(l1.log.isDirty(page(rx.pool)), 'receive buffers logged');
    assert.ok(!l1.log.isDirty(page(tx.pool)), 'transmit buffers (read only) not logged');

    // A new log (QEMU resizes it): marks go there, the old mapping is gone.
    const l2 = newLog(1);
    assert.equal((await fe.request({ type: 'SET_LOG_BASE', mmapSize: 4096, mmapOffset: 0, fd: l2.fd })).type, 'ACK');
    assert.equal(mappings(names[0]), 1, 'the back-end unmapped log 1 (only this test maps it now)');
    assert.equal(mappings(names[1]), 2, 'the back-end mapped log 2');
    l1.log.clear();
    await traffic(100, 'on the new log');
    assert.deepEqual(l1.log.dirtyPages(), [], 'nothing marked in the old log');
    assert.ok(l2.log.isDirty(page(rx.layout.deviceAddr)), 'the new log gets the marks');

    // The migration ends (or fails): logging off, in place too.
    await fe.ack({ type: 'SET_FEATURES', features: FEATURES });
    assert.ok(logs.some((l) => /queue pair 0 no longer logs its writes/.test(l)), logs.join('\n'));
    l2.log.clear();
    await traffic(100, 'after logging');
    assert.deepEqual(l2.log.dirtyPages(), [], 'no marks once logging is off');

    // A new call fd for each running ring (QEMU sends them right after starting the rings, e.g. on a
    // migration destination): taken in place, and the worker signals the new fd.
    const calls = [eventfdCreate(0, { nonblock: true }), eventfdCreate(0, { nonblock: true })];
    logFds.push(...calls);
    for (const r of [rx, tx]) await fe.ack({ type: 'SET_VRING_CALL', index: r.index, fd: calls[r.index] });
    await traffic(100, 'after the new call fds');
    eventfdRead(rx.call); // what the old fd got before the switch
    await traffic(100, 'after the new call fds, again');
    assert.ok((eventfdRead(calls[0]) ?? 0) > 0, 'the new receiveq call fd is signalled (the driver asks for used-buffer notifications there)');
    assert.equal(eventfdRead(rx.call), null, 'the old call fd is no longer signalled');

    // None of it restarted the pair: one worker all along, and the rings ran on without a lost or repeated frame.
    assert.equal(logs.filter((l) => /queue pair 0 (started|stopped)/.test(l)).length, startsBefore, logs.join('\n'));
    assert.ok(completed >= received, 'every frame received was completed on the transmitq first');

    // The end of the connection unmaps the log.
    fe.close();
    await waitFor(() => backend.session === null, 'the session to end');
    assert.equal(mappings(names[1]), 1, 'the back-end unmapped log 2 at the end of the connection');
  } finally {
    fe.close();
    await backend.stop();
    for (const fd of [memFd, rx.kick, rx.call, tx.kick, tx.call, ...logFds]) close(fd);
  }
});
