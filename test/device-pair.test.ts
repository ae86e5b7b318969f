/**
 * NetDevicePair details that the end-to-end runs do not isolate: a netdev
 * that batches its writes until flush() (like the TAP netdev) must see every
 * frame intact, including frames gathered from multi-descriptor chains.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { SplitDriverQueue } from '../src/virtio/split/driver.js';
import { SplitDeviceQueue } from '../src/virtio/split/device.js';
import { contiguousLayout, splitQueueBytes } from '../src/virtio/split/layout.js';
import { NetDevicePair } from '../src/net/device-pair.js';
import { DeviceSteering } from '../src/net/steering.js';
import { DEV_STAT_COUNT, DevStat } from '../src/net/stats.js';
import { FrameRing } from '../src/net/frame-ring.js';
import type { Netdev } from '../src/net/netdev.js';
import type { Bytes } from '../src/virtio/copy.js';

/** A netdev that, like the TAP one, only records (src, off, len) and copies the bytes at flush(). */
class BatchingNetdev implements Netdev {
  readonly externalRx = false;
  readonly wantsHeader = true;
  private pending: { src: Bytes; off: number; len: number }[] = [];
  written: Uint8Array[] = [];
  transmit(src: Bytes, off: number, len: number): boolean {
    this.pending.push({ src, off, len });
    return true;
  }
  flush(): void {
    for (const p of this.pending) this.written.push(p.src.u8.slice(p.off, p.off + p.len));
    this.pending = [];
  }
  poll(): number {
    return 0;
  }
  busy(): boolean {
    return false;
  }
}

test('a batching netdev gets header + frame intact for single- and multi-descriptor TX chains in one round', () => {
  const sab = new SharedArrayBuffer(1 << 20);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const opts = { eventIdx: true, indirect: true };
  const tx = contiguousLayout(0x1000, 64), rx = contiguousLayout(0x1000 + splitQueueBytes(64), 64);
  const drvTx = new SplitDriverQueue(mem, tx, opts);
  new SplitDriverQueue(mem, rx, opts); // zeroes the receiveq
  const netdev = new BatchingNetdev();
  const backlog = new FrameRing(64 * 1024);
  const dev = new NetDevicePair(mem, new SplitDeviceQueue(mem, rx, opts), new SplitDeviceQueue(mem, tx, opts), netdev,
    new DeviceSteering(1, DeviceSteering.newAfsBuffer()), [backlog], [backlog],
    { notifyQueue: () => {}, wakeDevice: () => {} }, new Float64Array(DEV_STAT_COUNT), 0,
    { pair: 0, hdrLen: 12, mrgRxbuf: false, maxFrame: 65535 });
  const frames = [0x11, 0x22, 0x33, 0x44].map((v, i) => {
    const f = new Uint8Array(12 + 60 + i).fill(v);
    f.fill(0, 0, 12); // virtio_net_hdr
    return f;
  });
  let addr = 0x40000;
  const put = (bytes: Uint8Array) => {
    mem.write(addr, bytes);
    const a = addr;
    addr += 256;
    return a;
  };
  // 1: one descriptor; 2: header and frame in two; 3: frame split over three; 4: indirect table of two.
  drvTx.add([{ addr: put(frames[0]), len: frames[0].length, writable: false }], 0);
  drvTx.add([{ addr: put(frames[1].subarray(0, 12)), len: 12, writable: false }, { addr: put(frames[1].subarray(12)), len: frames[1].length - 12, writable: false }], 1);
  drvTx.add([
    { addr: put(frames[2].subarray(0, 20)), len: 20, writable: false },
    { addr: put(frames[2].subarray(20, 40)), len: 20, writable: false },
    { addr: put(frames[2].subarray(40)), len: frames[2].length - 40, writable: false },
  ], 2);
  drvTx.add([{ addr: put(frames[3].subarray(0, 12)), len: 12, writable: false }, { addr: put(frames[3].subarray(12)), len: frames[3].length - 12, writable: false }], 3, 0x80000);
  drvTx.publish();
  dev.poll(64);
  assert.equal(netdev.written.length, 4);
  netdev.written.forEach((w, i) => assert.deepEqual(w, frames[i], `frame ${i + 1}`));
  assert.equal(drvTx.usedPending(), 4, 'every chain returned');
});

test('the receive path reports its room: RX buffers available, none while the backlog holds frames', () => {
  const sab = new SharedArrayBuffer(1 << 20);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const opts = { eventIdx: true, indirect: false };
  const tx = contiguousLayout(0x1000, 16), rx = contiguousLayout(0x1000 + splitQueueBytes(16), 16);
  new SplitDriverQueue(mem, tx, opts);
  const drvRx = new SplitDriverQueue(mem, rx, opts);
  const backlog = new FrameRing(64 * 1024);
  const stats = new Float64Array(DEV_STAT_COUNT);
  const dev = new NetDevicePair(mem, new SplitDeviceQueue(mem, rx, opts), new SplitDeviceQueue(mem, tx, opts), new BatchingNetdev(),
    new DeviceSteering(1, DeviceSteering.newAfsBuffer()), [backlog], [backlog],
    { notifyQueue: () => {}, wakeDevice: () => {} }, stats, 0,
    { pair: 0, hdrLen: 12, mrgRxbuf: false, maxFrame: 65535 });
  assert.equal(dev.room(), 0, 'no RX buffers yet');
  for (let i = 0; i < 3; i++) drvRx.addOne(0x40000 + i * 2048, 2048, true, i);
  drvRx.publish();
  assert.equal(dev.room(), 3);
  const frame = { u8: new Uint8Array(64).fill(7), i32: new Int32Array(16) };
  for (let i = 0; i < 5; i++) assert.ok(dev.receive(frame, 0, 64, 0));
  assert.equal(stats[DevStat.rxPackets], 3, 'three delivered');
  assert.equal(stats[DevStat.backlog], 2, 'two wait in the backlog');
  assert.equal(dev.room(), 0);
});

test('a pair restarted with frames in its RX backlog delivers them before any new frame (the backlog outlives the worker)', () => {
  const sab = new SharedArrayBuffer(1 << 20);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const opts = { eventIdx: false, indirect: false };
  const tx = contiguousLayout(0x1000, 16), rx = contiguousLayout(0x1000 + splitQueueBytes(16), 16);
  new SplitDriverQueue(mem, tx, opts);
  const drvRx = new SplitDriverQueue(mem, rx, opts);
  const backlog = new FrameRing(64 * 1024);
  const stats = new Float64Array(DEV_STAT_COUNT);
  const pairOn = (rxState?: ReturnType<SplitDeviceQueue['state']>) => {
    const rxq = new SplitDeviceQueue(mem, rx, opts);
    if (rxState) rxq.setState(rxState);
    const dev = new NetDevicePair(mem, rxq, new SplitDeviceQueue(mem, tx, opts), new BatchingNetdev(),
      new DeviceSteering(1, DeviceSteering.newAfsBuffer()), [backlog], [backlog],
      { notifyQueue: () => {}, wakeDevice: () => {} }, stats, 0,
      { pair: 0, hdrLen: 12, mrgRxbuf: false, maxFrame: 65535 });
    return { dev, rxq };
  };
  const got: number[] = [];
  let nextBuf = 0;
  const post = (n: number) => {
    for (let i = 0; i < n; i++, nextBuf++) drvRx.addOne(0x40000 + (nextBuf % 16) * 2048, 2048, true, nextBuf % 16);
    drvRx.publish();
  };
  const reap = () => {
    while (drvRx.usedPending() > 0) {
      drvRx.popUsed();
      got.push(mem.bytes[0].u8[0x40000 + drvRx.usedToken * 2048 + 12]);
    }
  };
  const frame = (v: number) => {
    const b = new ArrayBuffer(64);
    new Uint8Array(b).fill(v);
    return { u8: new Uint8Array(b), i32: new Int32Array(b) };
  };

  // First worker: one RX buffer, three frames: frame 0 delivered, 1 and 2 wait in the backlog.
  const a = pairOn();
  post(1);
  for (const v of [0, 1, 2]) assert.ok(a.dev.receive(frame(v), 0, 64, 0));
  a.dev.poll(64);
  reap();
  assert.equal(stats[DevStat.backlog], 2);
  // The pair restarts (a new worker) where its rings stood; the backlog is the same shared ring.
  const b = pairOn(a.rxq.state());
  assert.ok(b.dev.receive(frame(3), 0, 64, 0), 'frame 3 (no RX buffer) waits behind 1 and 2');
  post(1);
  b.dev.poll(64); // delivers 1; 2 and 3 still wait
  reap();
  post(1);
  assert.ok(b.dev.receive(frame(4), 0, 64, 0), 'frame 4 must not overtake 2 and 3');
  for (let i = 0; i < 4; i++) {
    post(1);
    b.dev.poll(64);
    reap();
  }
  assert.deepEqual(got, [0, 1, 2, 3, 4], 'every frame once, in order');
  assert.equal(stats[DevStat.backlog], 0, 'backlog empty');
  assert.equal(b.dev.room(), 2, 'and the room is the RX buffers left (7 posted, 5 used)');
});
