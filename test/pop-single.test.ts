/**
 * The one-descriptor fast path of both device queues (popSingle): it takes
 * only a valid single-buffer chain, answers -2 when nothing is available,
 * and leaves every other chain (hostile ones included) to pop(), which
 * still reports them as DescriptorErrors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { DescriptorError } from '../src/virtio/errors.js';
import { createDeviceQueue, createDriverQueue, contiguousQueueLayout } from '../src/virtio/ring.js';
import { SplitDeviceQueue } from '../src/virtio/split/device.js';
import { PackedDeviceQueue } from '../src/virtio/packed/device.js';

const SIZE = 8;
function setup(format: 'split' | 'packed') {
  const sab = new SharedArrayBuffer(1 << 20);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const layout = contiguousQueueLayout(format, 0x1000, SIZE);
  const opts = { eventIdx: false, indirect: true, inOrder: false, index: 3 };
  const drv = createDriverQueue(mem, layout, opts);
  const dev = createDeviceQueue(mem, layout, opts) as SplitDeviceQueue | PackedDeviceQueue;
  return { mem, drv, dev, layout };
}

for (const format of ['split', 'packed'] as const) {
  test(`${format}: popSingle takes valid one-buffer chains, -2 when empty, -1 for anything else`, () => {
    const { mem, drv, dev } = setup(format);
    const chain = new DescChain(mem);
    assert.equal(dev.popSingle(2, 64), -2, 'nothing available');
    const id0 = drv.addOne(0x40000, 2048, true, 0);
    drv.publish();
    assert.equal(dev.popSingle(0, 12), -1, 'a writable buffer is not a TX buffer');
    assert.equal(dev.popSingle(2, 4096), -1, 'too short');
    assert.equal(dev.popSingle(2, 64), 0, 'region 0');
    assert.equal(dev.singleId, id0);
    assert.equal(dev.singleOff, 0x40000);
    assert.equal(dev.singleLen, 2048);
    assert.equal(dev.popSingle(2, 64), -2, 'popped');
    dev.pushUsed(id0, 76, 1);
    dev.publish();
    // Outside guest memory: not taken by the fast path; pop() reports it.
    drv.addOne(0xfff000, 2048, true, 1);
    drv.publish();
    assert.equal(dev.popSingle(2, 64), -1);
    assert.throws(() => dev.pop(chain), (e: unknown) => e instanceof DescriptorError && e.code === 'BUFFER_OUT_OF_RANGE' && e.queue === 3);
    assert.equal(dev.popSingle(2, 64), -2, 'the bad chain was consumed by pop()');
    // A two-descriptor chain goes through pop().
    drv.add([{ addr: 0x50000, len: 12, writable: true }, { addr: 0x50100, len: 2048, writable: true }], 2);
    drv.publish();
    assert.equal(dev.popSingle(2, 64), -1);
    dev.pop(chain);
    assert.equal(chain.count, 2);
  });
}

test('split: popSingle reports an avail idx jump as AVAIL_IDX_JUMP, as pending() does', () => {
  const { mem, dev, layout } = setup('split');
  const u16 = new Uint16Array(mem.bytes[0].u8.buffer);
  u16[(layout.driverAddr + 2) >> 1] = SIZE + 1;
  assert.throws(() => dev.popSingle(2, 64), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_JUMP');
  assert.throws(() => dev.pending(), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_JUMP');
});

test('split: a descriptor index out of range is left to pop()', () => {
  const { mem, drv, dev, layout } = setup('split');
  drv.addOne(0x40000, 2048, true, 0);
  drv.publish();
  const u16 = new Uint16Array(mem.bytes[0].u8.buffer);
  u16[(layout.driverAddr + 4) >> 1] = SIZE + 3; // ring[0]: a head beyond the table
  assert.equal(dev.popSingle(2, 64), -1);
  assert.throws(() => dev.pop(new DescChain(mem)), (e: unknown) => e instanceof DescriptorError && e.code === 'DESC_INDEX_OUT_OF_RANGE');
});
