import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescriptorError, VirtioError, type DescriptorErrorCode } from '../src/virtio/errors.js';
import { DescChain } from '../src/virtio/chain.js';
import { SplitDeviceQueue } from '../src/virtio/split/device.js';
import { SplitDriverQueue, type BufferSpec } from '../src/virtio/split/driver.js';
import {
  contiguousLayout, VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE,
} from '../src/virtio/split/layout.js';

// Guest memory: rings at RING; DATA and ADJ are adjacent in guest physical
// space but separate regions (in different spots of the buffer); TOP is the
// last region; nothing exists between 0 and RING, or between ADJ's end and TOP.
const RING = 0x10000, RING_SIZE = 0x10000;
const DATA = 0x200000, DATA_SIZE = 0x10000;
const ADJ = DATA + DATA_SIZE, ADJ_SIZE = 0x1000;
const TOP = 0x7fff0000, TOP_SIZE = 0x10000;
const SIZE = 8;
const QUEUE = 3;

function makeMemory(): GuestMemory {
  const sab = new SharedArrayBuffer(0x40000);
  return new GuestMemory([
    { guestPhysAddr: RING, size: RING_SIZE, buffer: sab, bufferOffset: 0 },
    { guestPhysAddr: DATA, size: DATA_SIZE, buffer: sab, bufferOffset: 0x20000 },
    { guestPhysAddr: ADJ, size: ADJ_SIZE, buffer: sab, bufferOffset: 0x10000 },
    { guestPhysAddr: TOP, size: TOP_SIZE, buffer: sab, bufferOffset: 0x30000 },
  ]);
}

/** A device queue over guest memory written by hand, with a raw driver side. */
class RawRing {
  readonly mem = makeMemory();
  readonly layout = contiguousLayout(RING, SIZE);
  readonly dev: SplitDeviceQueue;
  readonly chain = new DescChain(this.mem, 2 * SIZE);
  availIdx = 0;
  constructor(indirect = true, eventIdx = false) {
    this.dev = new SplitDeviceQueue(this.mem, this.layout, { indirect, eventIdx, index: QUEUE });
  }

  /** Write descriptor `i` of the table at `table` (default: the ring's). `addr` may be given as [lo, hi]. */
  desc(i: number, addr: number | [number, number], len: number, flags: number, next = 0, table = this.layout.descAddr): void {
    const [lo, hi] = typeof addr === 'number' ? [addr % 2 ** 32, Math.floor(addr / 2 ** 32)] : addr;
    const b = new DataView(new ArrayBuffer(16));
    b.setUint32(0, lo, true);
    b.setUint32(4, hi, true);
    b.setUint32(8, len, true);
    b.setUint16(12, flags, true);
    b.setUint16(14, next, true);
    this.mem.write(table + 16 * i, new Uint8Array(b.buffer));
  }

  /** Put heads in the available ring and publish avail->idx. */
  offer(...heads: number[]): void {
    for (const h of heads) {
      this.put16(this.layout.availAddr + 4 + 2 * (this.availIdx % SIZE), h);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.put16(this.layout.availAddr + 2, this.availIdx);
  }

  put16(addr: number, v: number): void {
    this.mem.write(addr, Uint8Array.of(v & 0xff, v >>> 8));
  }

  /** Offer `head` and expect pop() to throw DescriptorError `code` (for descriptor `descIndex` if given). */
  expectPopError(head: number, code: DescriptorErrorCode, descIndex?: number): DescriptorError {
    this.offer(head);
    assert.equal(this.dev.pending(), 1);
    const before = this.dev.lastAvailIdx;
    let caught: unknown;
    try { this.dev.pop(this.chain); } catch (e) { caught = e; }
    assert.ok(caught instanceof DescriptorError, `expected DescriptorError ${code}, got ${String(caught)}`);
    assert.ok(caught instanceof VirtioError);
    assert.equal(caught.code, code, caught.message);
    assert.equal(caught.queue, QUEUE);
    assert.match(caught.message, new RegExp(`^queue ${QUEUE}: `));
    if (descIndex !== undefined) assert.equal(caught.descIndex, descIndex, 'descIndex');
    // The slot is consumed: the queue does not return the bad chain again.
    assert.equal(this.dev.lastAvailIdx, (before + 1) & 0xffff);
    assert.equal(this.dev.pending(), 0);
    return caught;
  }

  /** A well-formed chain offered after an error is popped normally. */
  expectUsable(): void {
    const h = 7;
    this.desc(h, DATA + 0x40, 16, NEXT, 6);
    this.desc(6, DATA + 0x80, 32, WRITE);
    this.offer(h);
    assert.equal(this.dev.pending(), 1);
    this.dev.pop(this.chain);
    assert.equal(this.chain.id, h);
    assert.equal(this.chain.count, 2);
    assert.equal(this.chain.readable, 1);
    assert.equal(this.chain.len[0], 16);
    assert.equal(this.chain.len[1], 32);
    assert.equal(this.chain.offset[0], 0x20040);
    assert.equal(this.dev.pending(), 0);
    // And the used side still works.
    this.dev.pushUsed(h, 32);
    assert.equal(this.dev.publish(), true);
  }
}

describe('device: DESC_INDEX_OUT_OF_RANGE', () => {
  test('head index >= queue size', () => {
    const q = new RawRing();
    q.expectPopError(SIZE, 'DESC_INDEX_OUT_OF_RANGE', SIZE);
    q.expectUsable();
    q.expectPopError(0xffff, 'DESC_INDEX_OUT_OF_RANGE', 0xffff);
    q.expectUsable();
  });

  test('next index >= queue size, in the ring and inside an indirect table', () => {
    const q = new RawRing();
    q.desc(0, DATA, 8, NEXT, 1);
    q.desc(1, DATA, 8, NEXT, SIZE);
    q.expectPopError(0, 'DESC_INDEX_OUT_OF_RANGE', SIZE);
    q.expectUsable();
    // Inside a 3-entry table, next = 3 is out of range even though 3 < queue size.
    const T = DATA + 0x1000;
    q.desc(2, T, 48, IND);
    q.desc(0, DATA, 8, NEXT, 1, T);
    q.desc(1, DATA, 8, NEXT, 3, T);
    q.desc(2, DATA, 8, 0, 0, T);
    q.expectPopError(2, 'DESC_INDEX_OUT_OF_RANGE', 3);
    q.expectUsable();
  });
});

describe('device: CHAIN_TOO_LONG', () => {
  test('a loop a -> b -> a, and a self-loop', () => {
    const q = new RawRing();
    q.desc(2, DATA, 8, NEXT, 3);
    q.desc(3, DATA + 8, 8, NEXT, 2);
    q.expectPopError(2, 'CHAIN_TOO_LONG');
    q.expectUsable();
    q.desc(4, DATA, 8, WRITE | NEXT, 4);
    q.expectPopError(4, 'CHAIN_TOO_LONG', 4);
    q.expectUsable();
  });

  test('a chain of exactly the queue size is fine; a loop through all of it is not', () => {
    const q = new RawRing();
    for (let i = 0; i < SIZE; i++) q.desc(i, DATA + 16 * i, 16, i < SIZE - 1 ? NEXT : 0, i + 1);
    q.offer(0);
    q.dev.pop(q.chain);
    assert.equal(q.chain.count, SIZE);
    assert.equal(q.chain.readableBytes, 16 * SIZE);
    q.desc(SIZE - 1, DATA, 16, NEXT, 0);
    q.expectPopError(0, 'CHAIN_TOO_LONG');
    q.expectUsable();
  });

  test('an indirect table with more entries than the queue size', () => {
    const q = new RawRing();
    const T = DATA + 0x2000;
    for (let i = 0; i <= SIZE; i++) q.desc(i, DATA, 4, i < SIZE ? NEXT : 0, i + 1, T);
    q.desc(1, T, 16 * (SIZE + 1), IND);
    q.expectPopError(1, 'CHAIN_TOO_LONG', 1);
    q.expectUsable();
    // Exactly the queue size is accepted.
    q.desc(SIZE - 1, DATA, 4, 0, 0, T);
    q.desc(1, T, 16 * SIZE, IND);
    q.offer(1);
    q.dev.pop(q.chain);
    assert.equal(q.chain.count, SIZE);
  });

  test('a loop inside an indirect table', () => {
    const q = new RawRing();
    const T = DATA + 0x3000;
    q.desc(0, DATA, 4, NEXT, 1, T);
    q.desc(1, DATA, 4, NEXT, 0, T);
    q.desc(5, T, 32, IND);
    q.expectPopError(5, 'CHAIN_TOO_LONG');
    q.expectUsable();
  });
});

describe('device: indirect descriptor errors', () => {
  test('an indirect table need not be aligned, and may cross into an adjacent region', () => {
    for (const table of [DATA + 0x103, DATA + DATA_SIZE - 16]) {
      const q = new RawRing();
      q.desc(0, DATA + 0x400, 12, NEXT, 1, table);
      q.desc(1, DATA + 0x800, 100, WRITE, 0, table);
      q.desc(3, table, 32, IND);
      q.offer(3);
      q.dev.pop(q.chain);
      assert.equal(q.chain.id, 3);
      assert.equal(q.chain.descs, 1, 'an indirect chain takes one slot of the table');
      assert.equal(q.chain.count, 2);
      assert.equal(q.chain.readableBytes, 12);
      assert.equal(q.chain.writableBytes, 100);
      assert.equal(q.chain.offset[1], 0x20800);
      q.expectUsable();
    }
  });

  test('NESTED_INDIRECT: an indirect descriptor inside an indirect table', () => {
    const q = new RawRing();
    const T = DATA + 0x1000, T2 = DATA + 0x1100;
    q.desc(0, DATA, 4, NEXT, 1, T);
    q.desc(1, T2, 16, IND, 0, T);
    q.desc(0, DATA, 4, 0, 0, T2);
    q.desc(0, T, 32, IND);
    q.expectPopError(0, 'NESTED_INDIRECT', 1);
    q.expectUsable();
  });

  test('INDIRECT_WITH_NEXT: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT', () => {
    const q = new RawRing();
    const T = DATA + 0x1000;
    q.desc(0, DATA, 4, 0, 0, T);
    q.desc(3, T, 16, IND | NEXT, 4);
    q.desc(4, DATA, 4, 0);
    q.expectPopError(3, 'INDIRECT_WITH_NEXT', 3);
    q.expectUsable();
  });

  test('INDIRECT_BAD_LENGTH: 0 and 17 (and 8)', () => {
    const q = new RawRing();
    const T = DATA + 0x1000;
    q.desc(0, DATA, 4, 0, 0, T);
    for (const len of [0, 17, 8]) {
      q.desc(2, T, len, IND);
      q.expectPopError(2, 'INDIRECT_BAD_LENGTH', 2);
      q.expectUsable();
    }
  });

  test('INDIRECT_NOT_NEGOTIATED: the device did not offer VIRTIO_F_INDIRECT_DESC', () => {
    const q = new RawRing(false);
    const T = DATA + 0x1000;
    q.desc(0, DATA, 4, 0, 0, T);
    q.desc(1, T, 16, IND);
    q.expectPopError(1, 'INDIRECT_NOT_NEGOTIATED', 1);
    q.expectUsable();
    // The same chain is fine on a device that negotiated it.
    const ok = new RawRing(true);
    ok.desc(0, DATA, 4, 0, 0, T);
    ok.desc(1, T, 16, IND);
    ok.offer(1);
    ok.dev.pop(ok.chain);
    assert.equal(ok.chain.count, 1);
  });
});

describe('device: READABLE_AFTER_WRITABLE', () => {
  test('writable then readable', () => {
    const q = new RawRing();
    q.desc(0, DATA, 8, NEXT, 1);
    q.desc(1, DATA + 8, 8, WRITE | NEXT, 2);
    q.desc(2, DATA + 16, 8, 0);
    q.expectPopError(0, 'READABLE_AFTER_WRITABLE', 2);
    q.expectUsable();
  });

  test('a zero-length writable descriptor first, then a readable one', () => {
    const q = new RawRing();
    q.desc(0, DATA, 0, WRITE | NEXT, 1);
    q.desc(1, DATA, 8, 0);
    q.expectPopError(0, 'READABLE_AFTER_WRITABLE', 1);
    q.expectUsable();
  });

  test('inside an indirect table, and across a direct prefix into the table', () => {
    const q = new RawRing();
    const T = DATA + 0x1000;
    q.desc(0, DATA, 8, WRITE | NEXT, 1, T);
    q.desc(1, DATA, 8, 0, 0, T);
    q.desc(4, T, 32, IND);
    q.expectPopError(4, 'READABLE_AFTER_WRITABLE', 1);
    q.expectUsable();
    // Writable direct descriptor followed by a table that starts readable.
    const T2 = DATA + 0x1100;
    q.desc(0, DATA, 8, 0, 0, T2);
    q.desc(4, DATA, 8, WRITE | NEXT, 5);
    q.desc(5, T2, 16, IND);
    q.expectPopError(4, 'READABLE_AFTER_WRITABLE', 0);
    q.expectUsable();
  });
});

describe('device: BUFFER_OUT_OF_RANGE', () => {
  test('address outside every region', () => {
    const q = new RawRing();
    for (const addr of [0, 0x1000, RING - 1, ADJ + ADJ_SIZE, TOP - 8, TOP + TOP_SIZE]) {
      q.desc(0, addr, 8, 0);
      q.expectPopError(0, 'BUFFER_OUT_OF_RANGE', 0);
    }
    q.expectUsable();
  });

  test('a buffer crossing into an adjacent region is served in pieces, in guest address order', () => {
    const q = new RawRing();
    // DATA -> ADJ: contiguous guest addresses, two regions (in reverse order in the backing buffer).
    q.desc(1, DATA, 4, NEXT, 2);
    q.desc(2, DATA + DATA_SIZE - 8, 24, WRITE);
    q.offer(1);
    q.dev.pop(q.chain);
    const c = q.chain;
    assert.equal(c.count, 3, 'one readable piece, the writable buffer in two');
    assert.deepEqual([...c.len.subarray(0, 3)], [4, 8, 16]);
    assert.deepEqual([...c.region.subarray(1, 3)], [1, 2]);
    assert.equal(c.writableBytes, 24);
    const src = new Uint8Array(24).map((_, i) => i + 1);
    assert.equal(c.writeFrom(0, { u8: src, i32: new Int32Array(src.buffer) }, 0, 24), 24);
    assert.deepEqual([...q.mem.read(DATA + DATA_SIZE - 8, 8)], [...src.subarray(0, 8)]);
    assert.deepEqual([...q.mem.read(ADJ, 16)], [...src.subarray(8)]);
    q.expectUsable();
  });

  test('address + len crossing the end of a region into no region (and the end of memory)', () => {
    const q = new RawRing();
    const cases: [number, number][] = [
      [ADJ + ADJ_SIZE - 1, 2],
      [TOP + TOP_SIZE - 16, 17],
      [TOP, 0xffffffff],
      [DATA - 1, 2],
    ];
    for (const [addr, len] of cases) {
      q.desc(1, DATA, 4, NEXT, 2);
      q.desc(2, addr, len, WRITE);
      q.expectPopError(1, 'BUFFER_OUT_OF_RANGE', 2);
    }
    q.expectUsable();
    // The boundaries themselves are fine.
    q.desc(1, DATA + DATA_SIZE - 8, 8, NEXT, 2);
    q.desc(2, ADJ, ADJ_SIZE, WRITE);
    q.offer(1);
    q.dev.pop(q.chain);
    assert.deepEqual([...q.chain.region.subarray(0, 2)], [1, 2]);
    assert.equal(q.chain.offset[1], 0x10000);
  });

  test('64-bit addresses with high bits set do not alias the low 32 bits', () => {
    const q = new RawRing();
    for (const hi of [1, 0x100, 0x1fffff, 0x200000, 0x80000000, 0xffffffff]) {
      q.desc(0, [DATA, hi], 8, 0); // low half is a valid address
      q.expectPopError(0, 'BUFFER_OUT_OF_RANGE', 0);
    }
    q.expectUsable();
  });

  test('indirect table outside memory or crossing a region end', () => {
    const q = new RawRing();
    q.desc(0, 0x100, 32, IND);
    q.expectPopError(0, 'BUFFER_OUT_OF_RANGE', 0);
    q.desc(0, DATA + DATA_SIZE - 16, 32, IND);
    q.expectPopError(0, 'BUFFER_OUT_OF_RANGE', 0);
    q.desc(0, [DATA, 0x80000000], 16, IND);
    q.expectPopError(0, 'BUFFER_OUT_OF_RANGE', 0);
    q.expectUsable();
  });
});

describe('device: AVAIL_IDX_JUMP', () => {
  test('avail idx more than the queue size ahead; exactly the queue size is fine', () => {
    const q = new RawRing();
    for (let i = 0; i < SIZE; i++) q.desc(i, DATA + 8 * i, 8, 0);
    for (const jump of [SIZE + 1, 0x8000, 0xffff]) {
      q.put16(q.layout.availAddr + 2, jump);
      assert.throws(() => q.dev.pending(), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_JUMP' && e.queue === QUEUE);
      assert.throws(() => q.dev.pending(), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_JUMP', 'still reported, not hidden');
      assert.equal(q.dev.lastAvailIdx, 0, 'nothing consumed');
    }
    // The driver corrects avail->idx: the queue recovers.
    q.put16(q.layout.availAddr + 2, 0);
    assert.equal(q.dev.pending(), 0);
    q.offer(0, 1, 2, 3, 4, 5, 6, 7);
    assert.equal(q.dev.pending(), SIZE);
    for (let i = 0; i < SIZE; i++) { q.dev.pop(q.chain); assert.equal(q.chain.id, i); }
    q.expectUsable();
  });

  test('a jump across the 16-bit wrap', () => {
    const q = new RawRing();
    q.dev.setBase(0xfffc);
    q.availIdx = 0xfffc;
    q.put16(q.layout.availAddr + 2, 0xfffc + SIZE - 0x10000); // 4: exactly SIZE ahead
    assert.equal(q.dev.pending(), SIZE);
    q.put16(q.layout.availAddr + 2, 0xfffc + SIZE + 1 - 0x10000);
    assert.throws(() => q.dev.pending(), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_JUMP');
    q.put16(q.layout.availAddr + 2, 0xfffc);
    q.expectUsable();
  });
});

// ---------------------------------------------------------------------------
// Driver side: a device that writes a bogus used ring.
// ---------------------------------------------------------------------------

class BogusDevice {
  readonly mem = makeMemory();
  readonly layout = contiguousLayout(RING, SIZE);
  readonly drv = new SplitDriverQueue(this.mem, this.layout, { eventIdx: false, indirect: true, index: QUEUE });
  usedIdx = 0;

  /** Write used element {id, len} and publish used->idx. */
  used(id: number, len: number, publish = true): void {
    const b = new DataView(new ArrayBuffer(8));
    b.setUint32(0, id, true);
    b.setUint32(4, len, true);
    this.mem.write(this.layout.usedAddr + 4 + 8 * (this.usedIdx % SIZE), new Uint8Array(b.buffer));
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    if (publish) this.setUsedIdx(this.usedIdx);
  }

  setUsedIdx(v: number): void {
    this.mem.write(this.layout.usedAddr + 2, Uint8Array.of(v & 0xff, v >>> 8));
  }

  add(n: number, writable: number, token: number): number {
    const bufs: BufferSpec[] = Array.from({ length: n }, (_, i) => ({ addr: DATA + 0x100 * i, len: i === n - 1 ? writable : 8, writable: i === n - 1 && writable > 0 }));
    const h = this.drv.add(bufs, token);
    assert.ok(h >= 0);
    return h;
  }

  expectPopUsedError(code: DescriptorErrorCode): void {
    assert.throws(() => this.drv.popUsed(), (e: unknown) => {
      assert.ok(e instanceof DescriptorError, String(e));
      assert.equal(e.code, code, e.message);
      assert.equal(e.queue, QUEUE);
      return true;
    });
  }
}

describe('driver: USED_ID_INVALID', () => {
  test('id >= queue size, an id never made available, a non-head descriptor, a duplicate', () => {
    const d = new BogusDevice();
    const { drv } = d;
    const h = d.add(3, 100, 11); // descriptors 0, 1, 2; head 0
    assert.equal(h, 0);
    drv.publish();
    for (const bogus of [SIZE, 0xffffffff, 5 /* free descriptor */, 1 /* middle of the chain */]) {
      d.used(bogus, 0);
      assert.equal(drv.usedPending(), 1);
      d.expectPopUsedError('USED_ID_INVALID');
      assert.equal(drv.usedPending(), 0, 'slot consumed');
      assert.equal(drv.numFree, SIZE - 3, 'nothing freed');
    }
    // The real completion still works.
    d.used(h, 100);
    assert.equal(drv.popUsed(), h);
    assert.equal(drv.usedLen, 100);
    assert.equal(drv.usedToken, 11);
    assert.equal(drv.numFree, SIZE);
    // Returning the same id twice.
    const h2 = d.add(1, 10, 12);
    const keep = d.add(1, 10, 13); // stays outstanding, so the index bound is not what fails
    assert.notEqual(keep, h2);
    drv.publish();
    d.used(h2, 1);
    assert.equal(drv.popUsed(), h2);
    d.used(h2, 1);
    d.expectPopUsedError('USED_ID_INVALID');
    assert.equal(drv.numFree, SIZE - 1);
    d.used(keep, 10);
    assert.equal(drv.popUsed(), keep);
    assert.equal(drv.usedToken, 13);
    assert.equal(drv.numFree, SIZE);
  });
});

describe('driver: USED_LEN_INVALID', () => {
  test('len larger than the writable bytes; the chain is still reclaimed and the queue stays usable', () => {
    const d = new BogusDevice();
    const { drv } = d;
    const h = d.add(2, 100, 21);
    const r = d.add(1, 0, 22); // readable-only chain
    drv.publish();
    assert.equal(drv.numFree, SIZE - 3);
    d.used(h, 101);
    d.expectPopUsedError('USED_LEN_INVALID');
    assert.equal(drv.usedToken, 21, 'token of the rejected completion is reported');
    assert.equal(drv.usedLen, 0);
    assert.equal(drv.numFree, SIZE - 1, 'the returned chain is freed, not leaked');
    d.used(r, 1);
    d.expectPopUsedError('USED_LEN_INVALID');
    assert.equal(drv.usedToken, 22);
    assert.equal(drv.numFree, SIZE);
    assert.equal(drv.usedPending(), 0);
    // Exactly the writable size is accepted; indirect chains are checked the same way.
    const i = drv.add([{ addr: DATA, len: 8, writable: false }, { addr: DATA + 8, len: 64, writable: true }], 23, DATA + 0x1000);
    drv.publish();
    d.used(i, 65);
    d.expectPopUsedError('USED_LEN_INVALID');
    const j = drv.add([{ addr: DATA, len: 8, writable: false }, { addr: DATA + 8, len: 64, writable: true }], 24, DATA + 0x1000);
    drv.publish();
    d.used(j, 64);
    assert.equal(drv.popUsed(), j);
    assert.equal(drv.usedLen, 64);
    assert.equal(drv.usedToken, 24);
    assert.equal(drv.numFree, SIZE);
  });

  test('a size-1 queue keeps working after a bad len (no leaked descriptor)', () => {
    const mem = makeMemory();
    const layout = contiguousLayout(RING, 1);
    const drv = new SplitDriverQueue(mem, layout, { eventIdx: false, indirect: false });
    const dev = new SplitDeviceQueue(mem, layout, { eventIdx: false, indirect: false });
    const chain = new DescChain(mem, 1);
    for (let i = 0; i < 4; i++) {
      assert.equal(drv.addOne(DATA, 16, true, i), 0);
      drv.publish();
      dev.pop(chain);
      dev.pushUsed(chain.id, i % 2 === 0 ? 17 : 16);
      dev.publish();
      if (i % 2 === 0) assert.throws(() => drv.popUsed(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_LEN_INVALID');
      else { assert.equal(drv.popUsed(), 0); assert.equal(drv.usedLen, 16); }
      assert.equal(drv.usedToken, i);
      assert.equal(drv.numFree, 1);
    }
  });
});

describe('driver: USED_IDX_JUMP', () => {
  test('used idx ahead of the chains made available, counted in chains not descriptors', () => {
    const d = new BogusDevice();
    const { drv } = d;
    const h = d.add(3, 64, 31); // one chain, three descriptors
    drv.publish();
    d.used(h, 1, false);
    d.used(h, 1, false);
    d.setUsedIdx(2);
    assert.throws(() => drv.usedPending(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_IDX_JUMP' && e.queue === QUEUE);
    for (const v of [SIZE + 1, 0x8000, 0xffff]) {
      d.setUsedIdx(v);
      assert.throws(() => drv.usedPending(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_IDX_JUMP');
    }
    // Corrected used->idx: the one real completion is reclaimed.
    d.setUsedIdx(1);
    assert.equal(drv.usedPending(), 1);
    assert.equal(drv.popUsed(), h);
    assert.equal(drv.usedToken, 31);
    assert.equal(drv.numFree, SIZE);
  });

  test('chains added but not yet published cannot be completed', () => {
    const d = new BogusDevice();
    const { drv } = d;
    const a = d.add(1, 8, 41);
    drv.publish();
    const b = d.add(1, 8, 42); // not published
    d.used(a, 8, false);
    d.used(b, 8, false);
    d.setUsedIdx(2);
    assert.throws(() => drv.usedPending(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_IDX_JUMP');
    drv.publish();
    assert.equal(drv.usedPending(), 2);
    assert.equal(drv.popUsed(), a);
    assert.equal(drv.popUsed(), b);
    assert.equal(drv.numFree, SIZE);
  });

  test('nothing outstanding: any used idx movement is a jump', () => {
    const d = new BogusDevice();
    d.setUsedIdx(1);
    assert.throws(() => d.drv.usedPending(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_IDX_JUMP');
    d.setUsedIdx(0);
    assert.equal(d.drv.usedPending(), 0);
  });
});
