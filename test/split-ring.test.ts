import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { GuestMemoryError, QueueConfigError } from '../src/virtio/errors.js';
import { DescChain } from '../src/virtio/chain.js';
import { SplitDeviceQueue, type SplitQueueOptions } from '../src/virtio/split/device.js';
import { SplitDriverQueue, type BufferSpec } from '../src/virtio/split/driver.js';
import {
  contiguousLayout, needEvent, splitQueueBytes, type SplitQueueLayout,
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY,
} from '../src/virtio/split/layout.js';

// ---------------------------------------------------------------------------
// Guest memory used by every test: three regions in one SharedArrayBuffer,
// non-contiguous in guest physical space, each at a non-zero buffer offset.
//   RING  gpa 0x0010_0000, 1 MiB + 64 KiB   buffer @ 0x8         (rings: room for a 32768 queue)
//   DATA  gpa 0x4000_0000, 256 KiB          buffer @ RING_SIZE+8 (packet buffers)
//   HIGH  gpa 0x1_0000_0000, 64 KiB         buffer @ ...         (above 4 GiB: buffers + indirect tables)
// ---------------------------------------------------------------------------
const RING = 0x100000, RING_SIZE = 0x110000;
const DATA = 0x40000000, DATA_SIZE = 0x40000;
const HIGH = 0x100000000, HIGH_SIZE = 0x10000;
const RING_OFF = 8, DATA_OFF = RING_OFF + RING_SIZE + 8, HIGH_OFF = DATA_OFF + DATA_SIZE + 16;
const R_RING = 0, R_DATA = 1, R_HIGH = 2;

function makeMemory(): GuestMemory {
  const sab = new SharedArrayBuffer(HIGH_OFF + HIGH_SIZE);
  return new GuestMemory([
    { guestPhysAddr: RING, size: RING_SIZE, buffer: sab, bufferOffset: RING_OFF },
    { guestPhysAddr: DATA, size: DATA_SIZE, buffer: sab, bufferOffset: DATA_OFF },
    { guestPhysAddr: HIGH, size: HIGH_SIZE, buffer: sab, bufferOffset: HIGH_OFF },
  ]);
}

/** Expected (region, buffer offset) of a guest address in {@link makeMemory}. */
function where(addr: number): [number, number] {
  if (addr >= HIGH) return [R_HIGH, HIGH_OFF + addr - HIGH];
  if (addr >= DATA) return [R_DATA, DATA_OFF + addr - DATA];
  return [R_RING, RING_OFF + addr - RING];
}

interface Pair {
  mem: GuestMemory;
  layout: SplitQueueLayout;
  drv: SplitDriverQueue;
  dev: SplitDeviceQueue;
  chain: DescChain;
}

function pair(size: number, opts: Partial<SplitQueueOptions> = {}, layout = contiguousLayout(RING, size)): Pair {
  const mem = makeMemory();
  const o: SplitQueueOptions = { eventIdx: false, indirect: false, index: 5, ...opts };
  const drv = new SplitDriverQueue(mem, layout, o);
  // The device gets its own GuestMemory over the same buffers, as a worker would.
  const dev = new SplitDeviceQueue(new GuestMemory(mem.specs), layout, o);
  return { mem, layout, drv, dev, chain: new DescChain(mem, Math.max(size, 8)) };
}

// Raw ring field access (little-endian u16 in guest memory).
const u16 = (mem: GuestMemory, addr: number): number => { const b = mem.read(addr, 2); return b[0] | (b[1] << 8); };
const put16 = (mem: GuestMemory, addr: number, v: number): void => mem.write(addr, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff));
const availFlags = (p: Pair) => u16(p.mem, p.layout.availAddr);
const availIdxRaw = (p: Pair) => u16(p.mem, p.layout.availAddr + 2);
const usedEventAddr = (p: Pair) => p.layout.availAddr + 4 + 2 * p.layout.size;
const usedFlags = (p: Pair) => u16(p.mem, p.layout.usedAddr);
const usedIdxRaw = (p: Pair) => u16(p.mem, p.layout.usedAddr + 2);
const availEventAddr = (p: Pair) => p.layout.usedAddr + 4 + 8 * p.layout.size;

function fill(mem: GuestMemory, addr: number, len: number, seed: number): Uint8Array {
  const data = new Uint8Array(len);
  for (let i = 0; i < len; i++) data[i] = (seed * 31 + i * 7) & 0xff;
  mem.write(addr, data);
  return data;
}

/** The device's view of buffer i of the chain it popped. */
function devBytes(p: Pair, i: number): Uint8Array {
  const c = p.chain;
  return p.mem.bytes[c.region[i]].u8.subarray(c.offset[i], c.offset[i] + c.len[i]);
}

function assertChain(p: Pair, head: number, bufs: readonly BufferSpec[]): void {
  const c = p.chain;
  assert.equal(c.id, head, 'chain head');
  assert.equal(c.count, bufs.length, 'buffer count');
  const readable = bufs.filter((b) => !b.writable);
  assert.equal(c.readable, readable.length, 'readable count');
  assert.equal(c.readableBytes, readable.reduce((s, b) => s + b.len, 0));
  assert.equal(c.writableBytes, bufs.filter((b) => b.writable).reduce((s, b) => s + b.len, 0));
  bufs.forEach((b, i) => {
    const [r, off] = where(b.addr);
    assert.equal(c.region[i], r, `buffer ${i} region`);
    assert.equal(c.offset[i], off, `buffer ${i} offset`);
    assert.equal(c.len[i], b.len, `buffer ${i} len`);
  });
}

/** Move both halves to ring index `start` as if that many chains had already round-tripped. */
function startAt(p: Pair, start: number): void {
  p.drv.availIdx = start;
  p.drv.publish(); // publishes avail->idx = start with nothing new for the device
  p.drv.lastUsedIdx = start;
  put16(p.mem, p.layout.usedAddr + 2, start); // used->idx as the device left it
  p.dev.setBase(start, start);
  if (p.drv.eventIdx) {
    put16(p.mem, usedEventAddr(p), start);
    put16(p.mem, availEventAddr(p), start);
  }
  assert.equal(p.dev.pending(), 0);
  assert.equal(p.drv.usedPending(), 0);
}

/** One full round trip of a chain; returns the head. */
function roundTrip(p: Pair, bufs: readonly BufferSpec[], token: number, written: number, table?: number): number {
  const { drv, dev, chain } = p;
  const free = drv.numFree;
  const head = drv.add(bufs, token, table);
  assert.ok(head >= 0 && head < drv.size);
  drv.publish();
  assert.equal(dev.pending(), 1);
  dev.pop(chain);
  assertChain(p, head, bufs);
  dev.pushUsed(chain.id, written);
  dev.publish();
  assert.equal(drv.usedPending(), 1);
  assert.equal(drv.popUsed(), head);
  assert.equal(drv.usedLen, written);
  assert.equal(drv.usedToken, token);
  assert.equal(drv.numFree, free);
  return head;
}

describe('split ring round trips', () => {
  test('single buffer: add -> publish -> pending/pop -> pushUsed/publish -> usedPending/popUsed', () => {
    const p = pair(8);
    const { drv, dev, chain, mem } = p;
    const payload = fill(mem, DATA + 0x100, 64, 1);
    assert.equal(drv.numFree, 8);
    const head = drv.add([{ addr: DATA + 0x100, len: 64, writable: false }], 77);
    assert.equal(head, 0);
    assert.equal(drv.numFree, 7);
    assert.equal(dev.pending(), 0, 'invisible before publish');
    assert.equal(availIdxRaw(p), 0);
    assert.equal(drv.publish(), true, 'device has not suppressed notifications');
    assert.equal(availIdxRaw(p), 1);
    assert.equal(drv.publish(), false, 'nothing new to publish');
    assert.equal(dev.pending(), 1);
    dev.pop(chain);
    assert.equal(dev.pending(), 0);
    assert.equal(dev.lastAvailIdx, 1);
    assertChain(p, head, [{ addr: DATA + 0x100, len: 64, writable: false }]);
    assert.deepEqual(devBytes(p, 0), payload);
    dev.pushUsed(chain.id, 0);
    assert.equal(drv.usedPending(), 0, 'invisible before publish');
    assert.equal(dev.publish(), true);
    assert.equal(usedIdxRaw(p), 1);
    assert.equal(dev.publish(), false);
    assert.equal(drv.usedPending(), 1);
    assert.equal(drv.popUsed(), head);
    assert.equal(drv.usedLen, 0);
    assert.equal(drv.usedToken, 77);
    assert.equal(drv.numFree, 8);
    assert.equal(drv.usedPending(), 0);
  });

  test('addOne (hot path) round trip with a writable buffer above 4 GiB', () => {
    const p = pair(4);
    const { drv, dev, chain, mem } = p;
    const head = drv.addOne(HIGH + 0x40, 1500, true, 9);
    assert.equal(drv.numFree, 3);
    drv.publish();
    dev.pop(chain);
    assertChain(p, head, [{ addr: HIGH + 0x40, len: 1500, writable: true }]);
    const frame = new Uint8Array(60).map((_, i) => 0xa0 ^ i);
    mem.bytes[chain.region[0]].u8.set(frame, chain.offset[0]);
    dev.pushUsed(chain.id, 60);
    dev.publish();
    assert.equal(drv.popUsed(), head);
    assert.equal(drv.usedLen, 60);
    assert.equal(drv.usedToken, 9);
    assert.deepEqual(mem.read(HIGH + 0x40, 60), frame);
    assert.equal(drv.numFree, 4);
  });

  test('chained buffers across regions: readable part read, writable part written, counts and lens', () => {
    const p = pair(8);
    const { drv, dev, chain, mem } = p;
    const bufs: BufferSpec[] = [
      { addr: DATA + 0x1000, len: 12, writable: false },
      { addr: HIGH + 0x200, len: 100, writable: false },
      { addr: DATA + 0x3000, len: 0x800, writable: true },
      { addr: HIGH + 0x1000, len: 64, writable: true },
    ];
    const hdr = fill(mem, bufs[0].addr, 12, 2);
    const body = fill(mem, bufs[1].addr, 100, 3);
    const head = drv.add(bufs, 1234);
    assert.equal(drv.numFree, 4);
    // The descriptors the driver wrote are linked with NEXT, readable before writable.
    const d0 = mem.read(p.layout.descAddr + 16 * head, 16);
    assert.equal(d0[12] & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE), VIRTQ_DESC_F_NEXT);
    assert.equal(drv.publish(), true);
    dev.pop(chain);
    assertChain(p, head, bufs);
    assert.deepEqual(devBytes(p, 0), hdr);
    assert.deepEqual(devBytes(p, 1), body);
    // Device writes 0x800 + 10 bytes across both writable buffers.
    const out = new Uint8Array(0x80a).map((_, i) => (i * 13) & 0xff);
    mem.bytes[chain.region[2]].u8.set(out.subarray(0, 0x800), chain.offset[2]);
    mem.bytes[chain.region[3]].u8.set(out.subarray(0x800), chain.offset[3]);
    dev.pushUsed(chain.id, out.length);
    assert.equal(dev.publish(), true);
    assert.equal(drv.usedPending(), 1);
    assert.equal(drv.popUsed(), head);
    assert.equal(drv.usedLen, 0x80a);
    assert.equal(drv.usedToken, 1234);
    assert.equal(drv.numFree, 8);
    assert.deepEqual(mem.read(DATA + 0x3000, 0x800), out.subarray(0, 0x800));
    assert.deepEqual(mem.read(HIGH + 0x1000, 10), out.subarray(0x800));
  });

  test('several chains outstanding, completed out of order, free list stays consistent', () => {
    const p = pair(8);
    const { drv, dev, chain } = p;
    const chains = [1, 3, 2, 2].map((n, k) =>
      Array.from({ length: n }, (_, i): BufferSpec => ({ addr: DATA + 0x1000 * k + 0x100 * i, len: 16 + i, writable: i === n - 1 && n > 1 })));
    const heads = chains.map((b, k) => drv.add(b, 100 + k));
    assert.equal(drv.numFree, 0);
    assert.equal(new Set(heads).size, 4);
    assert.equal(drv.add([{ addr: DATA, len: 1, writable: false }], 0), -1, 'queue is full');
    assert.equal(drv.addOne(DATA, 1, false, 0), -1);
    drv.publish();
    assert.equal(dev.pending(), 4);
    const popped: number[] = [];
    for (let k = 0; k < 4; k++) {
      dev.pop(chain);
      assertChain(p, heads[k], chains[k]);
      popped.push(chain.id);
    }
    for (const k of [2, 0, 3, 1]) dev.pushUsed(popped[k], chains[k].at(-1)!.writable ? 5 : 0);
    dev.publish();
    assert.equal(drv.usedPending(), 4);
    const order: number[] = [];
    for (let k = 0; k < 4; k++) {
      const h = drv.popUsed();
      order.push(drv.usedToken - 100);
      assert.equal(h, heads[drv.usedToken - 100]);
    }
    assert.deepEqual(order, [2, 0, 3, 1]);
    assert.equal(drv.numFree, 8);
    // The freed descriptors can all be reused by one long chain.
    const long = Array.from({ length: 8 }, (_, i): BufferSpec => ({ addr: HIGH + 64 * i, len: 64, writable: i >= 5 }));
    roundTrip(p, long, 42, 3 * 64);
  });

  test('a chain longer than numFree is refused; longer than the queue is a RangeError', () => {
    const p = pair(4);
    const { drv } = p;
    const b = (n: number) => Array.from({ length: n }, (): BufferSpec => ({ addr: DATA, len: 8, writable: false }));
    drv.add(b(3), 1);
    assert.equal(drv.add(b(2), 2), -1);
    assert.equal(drv.numFree, 1);
    assert.throws(() => drv.add(b(5), 3), RangeError);
    assert.throws(() => drv.add([], 3), RangeError);
    assert.throws(() => drv.add([{ addr: DATA, len: 8, writable: true }, { addr: DATA, len: 8, writable: false }], 3), RangeError);
    assert.equal(drv.numFree, 1);
    assert.equal(drv.availIdx, 1, 'refused adds do not touch the ring');
  });
});

describe('indirect descriptors', () => {
  test('add with indirectTable uses one ring descriptor and round-trips the whole chain', () => {
    const p = pair(8, { indirect: true });
    const { drv, dev, chain, mem, layout } = p;
    const bufs: BufferSpec[] = [
      { addr: DATA + 0x10, len: 10, writable: false },
      { addr: HIGH + 0x100, len: 20, writable: false },
      { addr: DATA + 0x800, len: 300, writable: true },
      { addr: HIGH + 0x400, len: 40, writable: true },
      { addr: DATA + 0x2000, len: 50, writable: true },
    ];
    const table = HIGH + 0x8000;
    const head = drv.add(bufs, 555, table);
    assert.equal(drv.numFree, 7, 'one ring descriptor for five buffers');
    const d = new DataView(mem.read(layout.descAddr + 16 * head, 16).buffer);
    assert.equal(d.getUint32(0, true) + d.getUint32(4, true) * 2 ** 32, table);
    assert.equal(d.getUint32(8, true), 16 * bufs.length);
    assert.equal(d.getUint16(12, true), VIRTQ_DESC_F_INDIRECT);
    // Table entries as the spec lays them out.
    const t = new DataView(mem.read(table, 16 * bufs.length).buffer);
    for (let i = 0; i < bufs.length; i++) {
      assert.equal(t.getUint32(16 * i, true) + t.getUint32(16 * i + 4, true) * 2 ** 32, bufs[i].addr);
      assert.equal(t.getUint32(16 * i + 8, true), bufs[i].len);
      const last = i === bufs.length - 1;
      assert.equal(t.getUint16(16 * i + 12, true), (bufs[i].writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT));
      if (!last) assert.equal(t.getUint16(16 * i + 14, true), i + 1);
    }
    drv.publish();
    dev.pop(chain);
    assertChain(p, head, bufs);
    dev.pushUsed(head, 390);
    dev.publish();
    assert.equal(drv.popUsed(), head);
    assert.equal(drv.usedLen, 390);
    assert.equal(drv.usedToken, 555);
    assert.equal(drv.numFree, 8);
    // A table with more entries than the queue size would be a chain longer than the queue (§2.7.5.3.1).
    const nine = Array.from({ length: 9 }, (): BufferSpec => ({ addr: DATA, len: 1, writable: false }));
    assert.throws(() => drv.add(nine, 1, table), RangeError);
    assert.equal(drv.numFree, 8);
  });

  test('indirect chains reuse one ring descriptor; usedLen up to the writable bytes is accepted', () => {
    const p = pair(2, { indirect: true });
    const bufs: BufferSpec[] = [{ addr: DATA, len: 8, writable: false }, { addr: DATA + 8, len: 100, writable: true }];
    roundTrip(p, bufs, 1, 100, HIGH);
    roundTrip(p, bufs, 2, 0, HIGH + 0x100);
    roundTrip(p, bufs, 3, 50, HIGH + 0x200);
    assert.equal(p.drv.numFree, 2);
  });

  test('more indirect chains than the queue has descriptors: full queue returns -1 before touching the table', () => {
    const p = pair(2, { indirect: true });
    const { drv, mem } = p;
    const bufs: BufferSpec[] = [{ addr: DATA, len: 8, writable: false }, { addr: DATA, len: 8, writable: true }];
    assert.ok(drv.add(bufs, 1, HIGH) >= 0);
    assert.ok(drv.add(bufs, 2, HIGH + 0x40) >= 0);
    fill(mem, HIGH + 0x80, 32, 9);
    const before = mem.read(HIGH + 0x80, 32);
    assert.equal(drv.add(bufs, 3, HIGH + 0x80), -1);
    assert.deepEqual(mem.read(HIGH + 0x80, 32), before, 'table memory untouched when the add fails');
  });

  test('without VIRTIO_F_INDIRECT_DESC, indirectTable is ignored and a direct chain is used', () => {
    const p = pair(4, { indirect: false });
    const bufs: BufferSpec[] = [{ addr: DATA, len: 8, writable: false }, { addr: DATA + 8, len: 8, writable: true }];
    const head = p.drv.add(bufs, 1, HIGH);
    assert.equal(p.drv.numFree, 2);
    assert.equal(p.mem.read(p.layout.descAddr + 16 * head + 12, 1)[0] & VIRTQ_DESC_F_INDIRECT, 0);
    p.drv.publish();
    p.dev.pop(p.chain);
    assertChain(p, head, bufs);
  });

  test('device walks direct descriptors followed by one indirect descriptor (§2.7.5.3.2)', () => {
    const p = pair(4, { indirect: true });
    const { mem, layout, dev, chain } = p;
    const desc = (tbl: number, i: number, addr: number, len: number, flags: number, next: number) => {
      const b = new DataView(new ArrayBuffer(16));
      b.setUint32(0, addr % 2 ** 32, true); b.setUint32(4, Math.floor(addr / 2 ** 32), true);
      b.setUint32(8, len, true); b.setUint16(12, flags, true); b.setUint16(14, next, true);
      mem.write(tbl + 16 * i, new Uint8Array(b.buffer));
    };
    desc(layout.descAddr, 2, DATA, 10, VIRTQ_DESC_F_NEXT, 3);
    desc(layout.descAddr, 3, HIGH + 0x800, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0); // WRITE must be ignored
    desc(HIGH + 0x800, 0, DATA + 0x10, 20, VIRTQ_DESC_F_NEXT, 1);
    desc(HIGH + 0x800, 1, DATA + 0x40, 30, VIRTQ_DESC_F_WRITE, 0);
    put16(mem, layout.availAddr + 4, 2);
    put16(mem, layout.availAddr + 2, 1);
    dev.pop(chain);
    assertChain(p, 2, [
      { addr: DATA, len: 10, writable: false },
      { addr: DATA + 0x10, len: 20, writable: false },
      { addr: DATA + 0x40, len: 30, writable: true },
    ]);
  });
});

describe('index wrap at 65536', () => {
  test('> 70000 round trips through a 4-entry queue, batched and out of order', () => {
    const p = pair(4);
    const { drv, dev, chain } = p;
    let adds = 0, reclaims = 0, token = 0;
    const inflight: number[] = [];
    const lens = new Map<number, number>();
    const tokens = new Map<number, number>();
    for (let round = 0; adds < 70_500; round++) {
      const batch = 1 + (round % 3);
      for (let k = 0; k < batch; k++) {
        const n = 1 + ((round + k) % 2);
        const bufs: BufferSpec[] = n === 1
          ? [{ addr: DATA + 64 * k, len: 64, writable: true }]
          : [{ addr: DATA + 64 * k, len: 16, writable: false }, { addr: HIGH + 64 * k, len: 48, writable: true }];
        const h = drv.add(bufs, ++token);
        if (h < 0) { assert.ok(drv.numFree < n); break; }
        tokens.set(h, token);
        adds++;
      }
      drv.publish();
      assert.equal(availIdxRaw(p), adds & 0xffff);
      const n = dev.pending();
      for (let k = 0; k < n; k++) {
        dev.pop(chain);
        inflight.push(chain.id);
        lens.set(chain.id, (chain.id * 7 + round) % (chain.writableBytes + 1));
      }
      // Complete in reverse order.
      while (inflight.length) { const h = inflight.pop()!; dev.pushUsed(h, lens.get(h)!); }
      dev.publish();
      const m = drv.usedPending();
      for (let k = 0; k < m; k++) {
        const h = drv.popUsed();
        assert.equal(drv.usedLen, lens.get(h));
        assert.equal(drv.usedToken, tokens.get(h));
        reclaims++;
      }
      assert.equal(drv.numFree, 4);
      assert.equal(drv.availIdx, adds & 0xffff);
      assert.equal(dev.lastAvailIdx, adds & 0xffff);
      assert.equal(dev.usedIdx, reclaims & 0xffff);
      assert.equal(drv.lastUsedIdx, reclaims & 0xffff);
      assert.equal(usedIdxRaw(p), reclaims & 0xffff);
    }
    assert.ok(adds > 65536 && reclaims === adds);
  });

  test('starting from ring indices near 65535 (setBase on the device, ring idx fields preset)', () => {
    for (const eventIdx of [false, true]) {
      const p = pair(4, { eventIdx });
      startAt(p, 0xfffd);
      const seen: number[] = [];
      for (let i = 0; i < 6; i++) {
        const bufs: BufferSpec[] = [{ addr: DATA + 8 * i, len: 8, writable: false }, { addr: DATA + 0x100, len: 32, writable: true }];
        roundTrip(p, bufs, 1000 + i, i);
        seen.push(availIdxRaw(p));
        assert.equal(usedIdxRaw(p), availIdxRaw(p));
      }
      assert.deepEqual(seen, [0xfffe, 0xffff, 0, 1, 2, 3]);
      assert.equal(p.dev.lastAvailIdx, 3);
      assert.equal(p.drv.lastUsedIdx, 3);
    }
  });

  test('pending() and usedPending() count across the wrap', () => {
    const p = pair(8);
    startAt(p, 0xfffe);
    const { drv, dev, chain } = p;
    for (let i = 0; i < 5; i++) drv.addOne(DATA, 8, true, i);
    drv.publish();
    assert.equal(availIdxRaw(p), 3);
    assert.equal(dev.pending(), 5);
    for (let i = 0; i < 5; i++) { dev.pop(chain); dev.pushUsed(chain.id, 8); }
    dev.publish();
    assert.equal(drv.usedPending(), 5);
    for (let i = 0; i < 5; i++) { drv.popUsed(); assert.equal(drv.usedToken, i); }
    assert.equal(drv.numFree, 8);
  });
});

describe('queue sizes', () => {
  for (const size of [1, 2, 256, 32768]) {
    test(`size ${size}: fill the whole queue twice, complete in reverse order`, () => {
      const p = pair(size);
      const { drv, dev, chain } = p;
      for (let round = 0; round < 2; round++) {
        const heads = new Uint8Array(size);
        for (let i = 0; i < size; i++) assert.notEqual(drv.addOne(DATA + (i & 0xfff) * 8, 8, true, round * size + i), -1);
        assert.equal(drv.numFree, 0);
        assert.equal(drv.addOne(DATA, 8, true, -1), -1);
        assert.equal(drv.publish(), true);
        assert.equal(dev.pending(), size);
        const order: number[] = [];
        for (let i = 0; i < size; i++) {
          dev.pop(chain);
          assert.equal(chain.count, 1);
          assert.equal(heads[chain.id], 0, 'every head popped once');
          heads[chain.id] = 1;
          order.push(chain.id);
        }
        assert.equal(dev.pending(), 0);
        for (let i = size - 1; i >= 0; i--) dev.pushUsed(order[i], i & 7);
        assert.equal(dev.publish(), true);
        assert.equal(drv.usedPending(), size);
        for (let i = size - 1; i >= 0; i--) {
          assert.equal(drv.popUsed(), order[i]);
          assert.equal(drv.usedLen, i & 7);
          assert.equal(drv.usedToken, round * size + i, 'first round: head i carried token i');
        }
        assert.equal(drv.numFree, size);
        assert.equal(drv.availIdx, ((round + 1) * size) & 0xffff);
      }
    });
  }

  test('sizes that are not a power of two in 1..32768 are rejected with QueueConfigError', () => {
    const mem = makeMemory();
    for (const size of [0, 3, 6, 100, 65536, 32769, -1, 1.5, Number.NaN]) {
      const layout = { size, descAddr: RING, availAddr: RING + 0x80000, usedAddr: RING + 0x90000 };
      assert.throws(() => new SplitDriverQueue(mem, layout, { eventIdx: false, indirect: false }), QueueConfigError, `driver size ${size}`);
      assert.throws(() => new SplitDeviceQueue(mem, layout, { eventIdx: false, indirect: false }), QueueConfigError, `device size ${size}`);
    }
  });

  test('misaligned parts are rejected with QueueConfigError; 4-aligned used / 2-aligned avail accepted', () => {
    const mem = makeMemory();
    const base = contiguousLayout(RING, 8);
    const o = { eventIdx: false, indirect: false };
    for (const bad of [
      { ...base, descAddr: base.descAddr + 8 },
      { ...base, descAddr: base.descAddr + 4 },
      { ...base, availAddr: base.availAddr + 1 },
      { ...base, usedAddr: base.usedAddr + 2 },
      { ...base, usedAddr: base.usedAddr + 1 },
    ]) {
      assert.throws(() => new SplitDriverQueue(mem, bad, o), QueueConfigError);
      assert.throws(() => new SplitDeviceQueue(mem, bad, o), QueueConfigError);
    }
    // Parts in three different regions, minimally aligned.
    const split = { size: 8, descAddr: HIGH + 0x10, availAddr: DATA + 0x2, usedAddr: RING + 0x4 };
    const p = pair(8, {}, split);
    roundTrip(p, [{ addr: DATA + 0x1000, len: 4, writable: true }], 1, 4);
    assert.equal(usedIdxRaw(p), 1);
    assert.equal(availIdxRaw(p), 1);
  });

  test('ring parts outside guest memory or straddling a region end are GuestMemoryError', () => {
    const mem = makeMemory();
    const o = { eventIdx: false, indirect: false };
    const base = contiguousLayout(RING, 8);
    for (const bad of [
      { ...base, descAddr: 0x1000 },
      { ...base, availAddr: HIGH + HIGH_SIZE - 8 }, // 22 bytes needed
      { ...base, usedAddr: DATA + DATA_SIZE - 64 }, // 70 bytes needed
      { ...base, descAddr: 2 ** 53 + 16 },
    ]) {
      assert.throws(() => new SplitDriverQueue(mem, bad, o), GuestMemoryError);
      assert.throws(() => new SplitDeviceQueue(mem, bad, o), GuestMemoryError);
    }
  });

  test('a ring whose guest address is aligned but whose buffer offset is not is rejected', () => {
    // Region starts at an odd guest address: a 2-aligned gpa lands on an odd byte of the buffer.
    const sab = new SharedArrayBuffer(0x3000);
    const mem = new GuestMemory([
      { guestPhysAddr: 0x10000, size: 0x1000, buffer: sab },
      { guestPhysAddr: 0x20001, size: 0x1000, buffer: sab, bufferOffset: 0x1000 },
    ]);
    const layout = { size: 4, descAddr: 0x10000, availAddr: 0x20002, usedAddr: 0x10100 };
    const o = { eventIdx: false, indirect: false };
    assert.throws(() => new SplitDeviceQueue(mem, layout, o), QueueConfigError);
    assert.throws(() => new SplitDriverQueue(mem, layout, o), QueueConfigError);
    assert.throws(() => new SplitDriverQueue(mem, { ...layout, availAddr: 0x10080, descAddr: 0x20010 }, o), QueueConfigError);
  });

  test('splitQueueBytes covers contiguousLayout for every size', () => {
    for (let size = 1; size <= 32768; size *= 2) {
      const l = contiguousLayout(0, size);
      assert.ok(l.usedAddr + 6 + 8 * size <= splitQueueBytes(size));
      assert.equal(l.availAddr, 16 * size);
      assert.equal(l.usedAddr % 4, 0);
    }
    assert.ok(splitQueueBytes(32768) <= RING_SIZE);
  });
});

/** Spec definition, independent of needEvent's arithmetic: is `event` one of old, old+1, ..., new-1 (mod 2^16)? */
function inWindow(event: number, newIdx: number, oldIdx: number): boolean {
  for (let i = oldIdx; i !== newIdx; i = (i + 1) & 0xffff) if (i === event) return true;
  return false;
}

describe('needEvent', () => {
  test('edge cases', () => {
    // old = 10, new = 13
    assert.equal(needEvent(10, 13, 10), true, 'event == old');
    assert.equal(needEvent(12, 13, 10), true, 'event == new - 1');
    assert.equal(needEvent(13, 13, 10), false, 'event == new');
    assert.equal(needEvent(9, 13, 10), false, 'event == old - 1');
    assert.equal(needEvent(14, 13, 10), false);
    assert.equal(needEvent(10, 10, 10), false, 'nothing new');
    // Wrap: old = 0xfffe, new = 1 (three entries 0xfffe, 0xffff, 0)
    assert.equal(needEvent(0xfffe, 1, 0xfffe), true);
    assert.equal(needEvent(0xffff, 1, 0xfffe), true);
    assert.equal(needEvent(0, 1, 0xfffe), true);
    assert.equal(needEvent(1, 1, 0xfffe), false);
    assert.equal(needEvent(0xfffd, 1, 0xfffe), false);
    // old = 0xffff, new = 0
    assert.equal(needEvent(0xffff, 0, 0xffff), true);
    assert.equal(needEvent(0, 0, 0xffff), false);
    // Spec example (§2.7.7.2): used_event 0 -> notify when the first buffer is used (idx 0 -> 1).
    assert.equal(needEvent(0, 1, 0), true);
    assert.equal(needEvent(0, 2, 1), false);
  });

  test('agrees with the spec window on many (event, new, old) triples', () => {
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 8;
    for (let i = 0; i < 20000; i++) {
      const old = rnd() & 0xffff;
      const n = i % 3 === 0 ? rnd() % 5 : rnd() % 40000;
      const nw = (old + n) & 0xffff;
      const ev = i % 2 === 0 ? (old + (rnd() % (n + 3)) - 1) & 0xffff : rnd() & 0xffff;
      assert.equal(needEvent(ev, nw, old), inWindow(ev, nw, old), `needEvent(${ev}, ${nw}, ${old})`);
    }
  });
});

describe('notification suppression without EVENT_IDX', () => {
  test('driver publish() follows VIRTQ_USED_F_NO_NOTIFY set by device setNotification()', () => {
    const p = pair(8);
    const { drv, dev } = p;
    drv.addOne(DATA, 8, false, 0);
    assert.equal(drv.publish(), true);
    dev.setNotification(false);
    assert.equal(usedFlags(p), VIRTQ_USED_F_NO_NOTIFY);
    drv.addOne(DATA, 8, false, 1);
    assert.equal(drv.publish(), false);
    drv.addOne(DATA, 8, false, 2);
    drv.addOne(DATA, 8, false, 3);
    assert.equal(drv.publish(), false);
    dev.setNotification(true);
    assert.equal(usedFlags(p), 0);
    assert.equal(drv.publish(), false, 'nothing new: no notification even when enabled');
    drv.addOne(DATA, 8, false, 4);
    assert.equal(drv.publish(), true);
    assert.equal(dev.pending(), 5);
  });

  test('device publish() follows VIRTQ_AVAIL_F_NO_INTERRUPT set by driver setNotification()', () => {
    const p = pair(8);
    const { drv, dev, chain } = p;
    for (let i = 0; i < 4; i++) drv.addOne(DATA, 8, true, i);
    drv.publish();
    const complete = () => { dev.pop(chain); dev.pushUsed(chain.id, 1); };
    complete();
    assert.equal(dev.publish(), true);
    drv.setNotification(false);
    assert.equal(availFlags(p), VIRTQ_AVAIL_F_NO_INTERRUPT);
    complete();
    assert.equal(dev.publish(), false);
    drv.setNotification(true);
    assert.equal(availFlags(p), 0);
    assert.equal(dev.publish(), false, 'nothing new');
    complete();
    complete();
    assert.equal(dev.publish(), true);
    assert.equal(drv.usedPending(), 4);
  });

  test('the event fields are ignored and not written when EVENT_IDX is off', () => {
    const p = pair(8);
    const { drv, dev, chain, mem } = p;
    put16(mem, usedEventAddr(p), 0x1234);
    put16(mem, availEventAddr(p), 0x4321);
    drv.setNotification(true);
    dev.setNotification(true);
    assert.equal(u16(mem, usedEventAddr(p)), 0x1234);
    assert.equal(u16(mem, availEventAddr(p)), 0x4321);
    for (let i = 0; i < 3; i++) {
      drv.addOne(DATA, 8, true, i);
      assert.equal(drv.publish(), true, 'avail_event ignored');
      dev.pop(chain);
      dev.pushUsed(chain.id, 0);
      assert.equal(dev.publish(), true, 'used_event ignored');
    }
  });
});

describe('notification suppression with EVENT_IDX', () => {
  test('setNotification(true) writes the next index to read into the event field', () => {
    const p = pair(8, { eventIdx: true });
    const { drv, dev, chain, mem } = p;
    for (let i = 0; i < 3; i++) drv.addOne(DATA, 8, true, i);
    drv.publish();
    dev.pop(chain); dev.pushUsed(chain.id, 0);
    dev.pop(chain); dev.pushUsed(chain.id, 0);
    dev.publish();
    dev.setNotification(true);
    assert.equal(u16(mem, availEventAddr(p)), 2);
    drv.popUsed();
    drv.setNotification(true);
    assert.equal(u16(mem, usedEventAddr(p)), 1);
    // Disabling with EVENT_IDX leaves the event fields alone.
    dev.setNotification(false);
    drv.setNotification(false);
    assert.equal(u16(mem, availEventAddr(p)), 2);
    assert.equal(u16(mem, usedEventAddr(p)), 1);
  });

  test('driver publish(): event == old notifies, event == new-1 notifies, event == new does not; flags ignored', () => {
    // [old, batch, avail_event]
    const cases: [number, number, number][] = [
      [10, 1, 10], [10, 3, 10], [10, 3, 12], [10, 3, 13], [10, 3, 9], [10, 3, 11], [10, 3, 0x800a],
      [0, 1, 0], [0, 1, 1], [0, 1, 0xffff],
      // wrap-around
      [0xfffe, 3, 0xfffe], [0xfffe, 3, 0xffff], [0xfffe, 3, 0], [0xfffe, 3, 1], [0xfffe, 3, 0xfffd],
      [0xffff, 1, 0xffff], [0xffff, 1, 0], [0xffff, 2, 0], [0xffff, 2, 1],
    ];
    for (const [old, batch, ev] of cases) {
      const p = pair(8, { eventIdx: true });
      startAt(p, old);
      for (let i = 0; i < batch; i++) p.drv.addOne(DATA, 8, false, i);
      put16(p.mem, availEventAddr(p), ev);
      put16(p.mem, p.layout.usedAddr, VIRTQ_USED_F_NO_NOTIFY); // must be ignored with EVENT_IDX
      const newIdx = (old + batch) & 0xffff;
      assert.equal(p.drv.publish(), inWindow(ev, newIdx, old), `old=${old} new=${newIdx} avail_event=${ev}`);
      assert.equal(p.dev.pending(), batch);
    }
  });

  test('device publish(): the same edges for used_event; flags ignored', () => {
    const cases: [number, number, number][] = [
      [20, 1, 20], [20, 4, 20], [20, 4, 23], [20, 4, 24], [20, 4, 19], [20, 4, 0x8014],
      [0xfffe, 3, 0xfffe], [0xfffe, 3, 0], [0xfffe, 3, 1], [0xfffe, 3, 0xfffd], [0xffff, 1, 0xffff], [0xffff, 1, 0],
    ];
    for (const [old, batch, ev] of cases) {
      const p = pair(8, { eventIdx: true });
      startAt(p, old);
      for (let i = 0; i < batch; i++) p.drv.addOne(DATA, 8, true, i);
      p.drv.publish();
      for (let i = 0; i < batch; i++) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, 4); }
      put16(p.mem, usedEventAddr(p), ev);
      put16(p.mem, p.layout.availAddr, VIRTQ_AVAIL_F_NO_INTERRUPT); // must be ignored with EVENT_IDX
      const newIdx = (old + batch) & 0xffff;
      assert.equal(p.dev.publish(), inWindow(ev, newIdx, old), `old=${old} new=${newIdx} used_event=${ev}`);
      assert.equal(p.dev.publish(), false, 'nothing new');
      assert.equal(p.drv.usedPending(), batch);
    }
  });

  test('publish() compares against the previous publish, not the previous add', () => {
    const p = pair(8, { eventIdx: true });
    const { drv, dev, chain } = p;
    dev.setNotification(true); // avail_event = 0
    drv.addOne(DATA, 8, false, 0);
    drv.addOne(DATA, 8, false, 1);
    assert.equal(drv.publish(), true, 'window [0, 2) contains avail_event 0');
    drv.addOne(DATA, 8, false, 2);
    assert.equal(drv.publish(), false, 'window [2, 3) does not; device has not re-armed');
    dev.pop(chain); dev.pop(chain); dev.pop(chain);
    dev.setNotification(true); // avail_event = 3
    assert.equal(dev.pending(), 0);
    drv.addOne(DATA, 8, false, 3);
    assert.equal(drv.publish(), true);
    drv.addOne(DATA, 8, false, 4);
    assert.equal(drv.publish(), false);
  });

  test('interrupt suppression flow: the driver re-arms used_event and rechecks', () => {
    const p = pair(8, { eventIdx: true });
    const { drv, dev, chain } = p;
    for (let i = 0; i < 6; i++) drv.addOne(DATA, 8, true, i);
    drv.publish();
    drv.setNotification(true); // used_event = 0
    dev.pop(chain); dev.pushUsed(chain.id, 1);
    assert.equal(dev.publish(), true);
    dev.pop(chain); dev.pushUsed(chain.id, 1);
    assert.equal(dev.publish(), false, 'driver has not consumed and re-armed');
    assert.equal(drv.usedPending(), 2);
    drv.popUsed(); drv.popUsed();
    drv.setNotification(true); // used_event = 2
    assert.equal(drv.usedPending(), 0);
    dev.pop(chain); dev.pushUsed(chain.id, 1);
    dev.pop(chain); dev.pushUsed(chain.id, 1);
    assert.equal(dev.publish(), true, 'window [2, 4) contains used_event 2');
  });
});

// ---------------------------------------------------------------------------
// VIRTIO_F_IN_ORDER (§2.7.9): the device writes one used element for a run of
// zero-length chains, in the run's first slot, with the last chain's id; the
// driver uses descriptors in ring order and completes the whole run.
// ---------------------------------------------------------------------------
describe('split ring with VIRTIO_F_IN_ORDER', () => {
  const usedElem = (p: Pair, slot: number) => {
    const b = p.mem.read(p.layout.usedAddr + 4 + 8 * slot, 8);
    const v = new DataView(b.buffer);
    return { id: v.getUint32(0, true), len: v.getUint32(4, true) };
  };

  test('a run of zero-length chains is one used element; the driver reclaims every chain in order with its token', () => {
    const p = pair(8, { inOrder: true });
    const { drv, dev, chain } = p;
    for (let i = 0; i < 5; i++) assert.equal(drv.addOne(DATA + 64 * i, 64, false, 100 + i), i, 'descriptors in ring order');
    drv.publish();
    put16(p.mem, p.layout.usedAddr + 4 + 8 * 1, 0xdead); // slots after the first must not be needed
    for (let i = 0; i < 5; i++) { dev.pop(chain); dev.pushUsed(chain.id, 0, chain.descs); }
    dev.publish();
    assert.equal(usedIdxRaw(p), 5, 'used->idx advances by the run length');
    assert.deepEqual(usedElem(p, 0), { id: 4, len: 0 }, 'one element, in the first slot, naming the last chain');
    assert.equal(drv.usedPending(), 5);
    for (let i = 0; i < 5; i++) {
      assert.equal(drv.popUsed(), i);
      assert.equal(drv.usedToken, 100 + i);
      assert.equal(drv.usedLen, 0);
    }
    assert.equal(drv.usedPending(), 0);
    assert.equal(drv.numFree, 8);
  });

  test('a run may end in a chain with data: it carries its length; written RX chains each get their element', () => {
    const p = pair(8, { inOrder: true });
    const { drv, dev, chain } = p;
    for (let i = 0; i < 6; i++) drv.addOne(DATA + 64 * i, 64, true, i);
    drv.publish();
    const lens = [0, 0, 8, 16, 0, 4];
    for (const len of lens) { dev.pop(chain); dev.pushUsed(chain.id, len, chain.descs); }
    dev.publish();
    assert.equal(usedIdxRaw(p), 6);
    assert.deepEqual(usedElem(p, 0), { id: 2, len: 8 });
    assert.deepEqual(usedElem(p, 3), { id: 3, len: 16 });
    assert.deepEqual(usedElem(p, 4), { id: 5, len: 4 });
    const got: number[] = [];
    while (drv.usedPending() > 0) { drv.popUsed(); got.push(drv.usedLen); }
    assert.deepEqual(got, lens);
  });

  test('multi-descriptor chains stay in ring order across many wraps', () => {
    const p = pair(8, { inOrder: true });
    const { drv, dev, chain } = p;
    let next = 0; // the descriptor the next chain must start at
    for (let round = 0; round < 50; round++) {
      const n = 1 + (round % 3);
      const bufs: BufferSpec[] = Array.from({ length: n }, (_, i) => ({ addr: DATA + 256 * i, len: 16, writable: i === n - 1 }));
      const head = drv.add(bufs, round);
      assert.equal(head, next, `round ${round}: head in ring order`);
      next = (next + n) % 8;
      drv.publish();
      dev.pop(chain);
      assert.equal(chain.id, head);
      assert.equal(chain.descs, n);
      dev.pushUsed(chain.id, round % 2 === 0 ? 0 : 16, chain.descs);
      dev.publish();
      assert.equal(drv.popUsed(), head);
      assert.equal(drv.usedToken, round);
      assert.equal(drv.numFree, 8);
    }
  });

  test('a used id that is not among the chains the run covers is refused', () => {
    const p = pair(8, { inOrder: true });
    const { drv } = p;
    for (let i = 0; i < 3; i++) drv.addOne(DATA + 64 * i, 64, false, i);
    drv.publish();
    // A hostile device: used->idx says 2, but the element names chain 2 (the third).
    p.mem.write(p.layout.usedAddr + 4, Uint8Array.of(2, 0, 0, 0, 0, 0, 0, 0));
    put16(p.mem, p.layout.usedAddr + 2, 2);
    assert.throws(() => drv.popUsed(), (e: Error & { code?: string }) => e.code === 'USED_ID_INVALID');
  });

  test('state() reports where each half stands', () => {
    const p = pair(8, { inOrder: true });
    const { drv, dev, chain } = p;
    for (let i = 0; i < 3; i++) drv.addOne(DATA + 64 * i, 64, false, i);
    drv.publish();
    dev.pop(chain); dev.pushUsed(chain.id, 0, chain.descs);
    assert.deepEqual(dev.state(), { avail: 1, used: 1 }, 'pushed entries count as used');
    assert.deepEqual(drv.state(), { avail: 3, used: 0 });
    const m = dev.mark();
    dev.pop(chain); dev.pop(chain);
    dev.rewind(m);
    assert.equal(dev.pending(), 2, 'rewind gives the chains back');
  });
});
