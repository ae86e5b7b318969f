/**
 * DriverQueue.setState (the driver side of a vhost-user reconnect): a driver
 * queue rebuilt over rings that carried traffic resumes from the saved
 * position with a device queue restored to the same position (split u16
 * indexes; packed position | wrap << 15), across the wrap, and refuses
 * positions outside the ring.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { QueueConfigError } from '../src/virtio/errors.js';
import { createDeviceQueue, createDriverQueue, contiguousQueueLayout } from '../src/virtio/ring.js';
import type { DeviceQueue, DriverQueue } from '../src/virtio/queue.js';

const SIZE = 8;

for (const format of ['split', 'packed'] as const) {
  for (const inOrder of [false, true]) {
    test(`${format}${inOrder ? ' in-order' : ''}: setState resumes a drained ring on a new driver queue and device queue`, () => {
      const sab = new SharedArrayBuffer(1 << 20);
      const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
      const layout = contiguousQueueLayout(format, 0x1000, SIZE);
      const opts = { eventIdx: true, indirect: false, inOrder, index: 1 };
      let drv: DriverQueue = createDriverQueue(mem, layout, opts);
      let dev: DeviceQueue = createDeviceQueue(mem, layout, opts);
      const chain = new DescChain(mem);
      let sent = 0;
      // Round trips of 5 chains: each round the ring moves on, wrapping several times.
      const round = () => {
        for (let i = 0; i < 5; i++) assert.ok(drv.addOne(0x10000 + 64 * (sent + i), 64, true, 1000 + sent + i) >= 0);
        drv.publish();
        for (let i = 0; i < 5; i++) {
          assert.ok(dev.pending() > 0);
          dev.pop(chain);
          dev.pushUsed(chain.id, 10 + i, chain.descs);
        }
        dev.publish();
        for (let i = 0; i < 5; i++) {
          assert.ok(drv.usedPending() > 0);
          drv.popUsed();
          assert.equal(drv.usedToken, 1000 + sent + i);
          assert.equal(drv.usedLen, 10 + i);
        }
        assert.equal(drv.usedPending(), 0);
        sent += 5;
      };
      round();
      round();
      round(); // 15 chains on an 8-entry ring: past the wrap
      const s = drv.state();
      assert.equal(s.avail, s.used, 'drained: nothing outstanding');
      if (format === 'split') assert.equal(s.avail, 15);
      else assert.equal(s.avail, (15 % SIZE) | (0 << 15), 'position 7, wrap counter flipped once');
      // Reconnect: new queue objects over the same memory (constructors zero the rings), restored.
      drv = createDriverQueue(mem, layout, opts);
      dev = createDeviceQueue(mem, layout, opts);
      drv.setState(s);
      dev.setState({ avail: s.used, used: s.used });
      assert.deepEqual(drv.state(), s);
      assert.equal(drv.numFree, SIZE);
      round();
      round();
      assert.deepEqual(dev.state(), drv.state());
    });
  }

  test(`${format}: setState forgets outstanding chains and refuses positions outside the ring`, () => {
    const sab = new SharedArrayBuffer(1 << 20);
    const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
    const drv = createDriverQueue(mem, contiguousQueueLayout(format, 0x1000, SIZE), { eventIdx: false, indirect: false, inOrder: false });
    for (let i = 0; i < 3; i++) drv.addOne(0x10000, 64, true, i);
    drv.publish();
    assert.equal(drv.numFree, SIZE - 3);
    drv.setState({ avail: 0, used: 0 });
    assert.equal(drv.numFree, SIZE);
    assert.equal(drv.usedPending(), 0);
    const bad = format === 'split' ? { avail: 0x10000, used: 0 } : { avail: SIZE, used: 0 };
    assert.throws(() => drv.setState(bad), QueueConfigError);
    if (format === 'split') assert.throws(() => drv.setState({ avail: 20, used: 2 }), QueueConfigError, 'used more than a ring behind');
  });
}
