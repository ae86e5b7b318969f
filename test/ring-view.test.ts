/**
 * viewRing (src/virtio/ring-view.ts), the operator's look at a ring: for a
 * split and a packed ring driven by the real driver and device halves, the
 * driver's and device's indexes, the wrap counters, pending and in-flight
 * counts match what was made available, taken and used, across a wrap.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { contiguousQueueLayout, createDeviceQueue, createDriverQueue, queueBytes } from '../src/virtio/ring.js';
import { viewRing } from '../src/virtio/ring-view.js';

const SIZE = 8;

for (const format of ['split', 'packed'] as const) test(`${format}: indexes, pending and in flight follow add / pop / use, across a wrap`, () => {
  const sab = new SharedArrayBuffer(1 << 16);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const layout = contiguousQueueLayout(format, 0, SIZE);
  const opts = { eventIdx: true, indirect: false, inOrder: false, index: 1 };
  const drv = createDriverQueue(mem, layout, opts);
  const dev = createDeviceQueue(mem, layout, opts);
  const buf = queueBytes(format, SIZE) + 4096;
  let added = 0, taken = 0, used = 0;
  const add = (n: number) => {
    for (let i = 0; i < n; i++) assert.ok(drv.addOne(buf + 64 * (added++ % SIZE), 64, false, 0) >= 0);
    drv.publish();
  };
  const take = (n: number) => {
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      assert.ok(dev.popSingle(0, 0) >= 0, 'a single-descriptor chain');
      ids.push(dev.singleId);
      taken++;
    }
    return ids;
  };
  const use = (ids: number[]) => {
    for (const id of ids) {
      dev.pushUsed(id, 0, 1);
      used++;
    }
    dev.publish();
    while (drv.usedPending() > 0) drv.popUsed();
  };
  const check = (what: string) => {
    const v = viewRing(mem, layout, dev.state());
    assert.equal(v.format, format);
    assert.equal(v.size, SIZE);
    assert.equal(v.pending, added - taken, `${what}: pending`);
    assert.equal(v.inFlight, added - used, `${what}: in flight`);
    assert.equal(v.fill, (added - used) / SIZE, `${what}: fill`);
    if (format === 'split') {
      assert.deepEqual([v.availIdx, v.lastAvailIdx, v.usedIdx], [added & 0xffff, taken & 0xffff, used & 0xffff], `${what}: split indexes`);
    } else {
      assert.deepEqual([v.availPos, v.availWrap], [taken % SIZE, 1 - (Math.floor(taken / SIZE) & 1)], `${what}: packed avail position and wrap counter`);
      assert.deepEqual([v.usedPos, v.usedWrap], [used % SIZE, 1 - (Math.floor(used / SIZE) & 1)], `${what}: packed used position and wrap counter`);
    }
  };
  check('empty');
  add(5);
  check('5 available');
  const ids = take(2);
  check('2 taken');
  use(ids.slice(0, 1));
  check('1 used');
  use(ids.slice(1));
  use(take(3));
  check('all used');
  add(6); // wraps the ring (positions 5..10)
  check('6 more, across the wrap');
  const more = take(4);
  use(more);
  check('4 of them used');
  add(6); // every descriptor available: the ring is full
  assert.equal(added - used, SIZE);
  check('full');
});
