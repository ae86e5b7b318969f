import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { DescriptorError, GuestMemoryError, QueueConfigError } from '../src/virtio/errors.js';
import type { BufferSpec } from '../src/virtio/queue.js';
import { PackedDeviceQueue } from '../src/virtio/packed/device.js';
import { PackedDriverQueue } from '../src/virtio/packed/driver.js';
import {
  checkPackedLayout, contiguousPackedLayout, packedDescBytes, packedNeedEvent, packedQueueBytes, EVENT_SUPPRESS_BYTES,
  RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, SCAN_LIMIT,
  VIRTQ_DESC_F_AVAIL as AVAIL, VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_USED as USED, VIRTQ_DESC_F_WRITE as WRITE,
} from '../src/virtio/packed/layout.js';
import {
  ADJ, DATA, DATA_SIZE, HIGH, OFF, R, RING, assertCanaries, assertChain, makeMemory, pair, readDesc, readEvent, rng, where, writeEvent,
  type Pair,
} from './support/packed.js';

const descAt = (p: Pair, pos: number) => readDesc(p.mem, p.layout.descAddr + 16 * pos);
const S = (avail: number, used: number) => ({ avail, used });

/** One full round trip of a chain through both halves; returns the id. */
function roundTrip(p: Pair, bufs: readonly BufferSpec[], token: number, written: number, table?: number): number {
  const { drv, dev, chain } = p;
  const free = drv.numFree;
  const id = drv.add(bufs, token, table);
  assert.ok(id >= 0 && id < drv.size, `id ${id}`);
  const descs = table !== undefined && p.opts.indirect ? 1 : bufs.length;
  assert.equal(drv.numFree, free - descs);
  assert.equal(dev.pending(), 0, 'not visible before publish');
  drv.publish();
  assert.equal(dev.pending(), 1);
  dev.pop(chain);
  assertChain(chain, id, descs, bufs);
  dev.pushUsed(chain.id, written, chain.descs);
  assert.equal(drv.usedPending(), 0, 'not visible before publish');
  dev.publish();
  assert.equal(drv.usedPending(), 1);
  assert.equal(drv.popUsed(), id);
  assert.equal(drv.usedLen, written);
  assert.equal(drv.usedToken, token);
  assert.equal(drv.numFree, free);
  assert.equal(drv.usedPending(), 0);
  return id;
}

describe('packed layout', () => {
  test('part sizes and a contiguous layout', () => {
    assert.equal(packedDescBytes(1), 16);
    assert.equal(packedDescBytes(1000), 16000);
    assert.equal(EVENT_SUPPRESS_BYTES, 4);
    assert.equal(packedQueueBytes(1), 32);
    assert.equal(packedQueueBytes(3), 64);
    assert.equal(packedQueueBytes(256), 4112);
    const l = contiguousPackedLayout(0x2000, 5);
    assert.deepEqual(l, { format: 'packed', size: 5, descAddr: 0x2000, driverAddr: 0x2050, deviceAddr: 0x2054 });
    assert.ok(l.deviceAddr + 4 <= 0x2000 + packedQueueBytes(5));
    checkPackedLayout(l);
  });

  test('checkPackedLayout: any size 1..32768, aligned parts, packed format', () => {
    for (const size of [1, 2, 3, 5, 255, 1000, 32767, 32768]) checkPackedLayout(contiguousPackedLayout(0x1000, size));
    for (const size of [0, -1, 32769, 65536, 1.5, NaN])
      assert.throws(() => checkPackedLayout(contiguousPackedLayout(0x1000, size)), QueueConfigError, `size ${size}`);
    const ok = contiguousPackedLayout(0x1000, 8);
    assert.throws(() => checkPackedLayout({ ...ok, descAddr: 0x1008 }), QueueConfigError);
    assert.throws(() => checkPackedLayout({ ...ok, driverAddr: ok.driverAddr + 2 }), QueueConfigError);
    assert.throws(() => checkPackedLayout({ ...ok, deviceAddr: ok.deviceAddr + 1 }), QueueConfigError);
    assert.throws(() => checkPackedLayout({ ...ok, format: 'split' }), QueueConfigError);
    checkPackedLayout({ ...ok, driverAddr: 0x9004, deviceAddr: 0x8000 }); // parts anywhere, 4-aligned
  });

  test('constructors reject bad layouts; a part outside memory is a GuestMemoryError', () => {
    const mem = makeMemory();
    const o = { eventIdx: false, indirect: false, inOrder: false };
    assert.throws(() => new PackedDriverQueue(mem, contiguousPackedLayout(RING, 0), o), QueueConfigError);
    assert.throws(() => new PackedDeviceQueue(mem, { ...contiguousPackedLayout(RING, 4), descAddr: RING + 8 }, o), QueueConfigError);
    assert.throws(() => new PackedDeviceQueue(mem, contiguousPackedLayout(0x1000, 4), o), GuestMemoryError);
    assert.throws(() => new PackedDriverQueue(mem, { ...contiguousPackedLayout(RING, 4), deviceAddr: 0x20 }, o), GuestMemoryError);
  });

  test('packedNeedEvent equals an enumeration of the positions passed, across wraps', () => {
    for (const size of [1, 3, 5, 8, 1000, 32768]) {
      const r = rng(size);
      for (let t = 0; t < 400; t++) {
        const pos = r() % size, wrap = r() & 1, n = 1 + (r() % size);
        const evPos = r() % size, evWrap = r() & 1;
        // Walk back n positions from (pos, wrap): is (evPos, evWrap) among them?
        let p = pos, w = wrap, hit = false;
        for (let i = 0; i < n; i++) {
          if (p === 0) { p = size - 1; w ^= 1; } else p--;
          if (p === evPos && w === evWrap) hit = true;
        }
        assert.equal(packedNeedEvent(evPos | (evWrap << 15), pos, wrap, n, size), hit, `size ${size} pos ${pos}/${wrap} n ${n} ev ${evPos}/${evWrap}`);
      }
    }
  });
});

describe('packed ring round trips', () => {
  test('single buffer: raw descriptor, chain, used descriptor, state()', () => {
    const p = pair(4);
    const { drv, dev, chain, mem } = p;
    assert.deepEqual(drv.state(), S(0x8000, 0x8000), 'wrap counters start at 1');
    assert.deepEqual(dev.state(), S(0x8000, 0x8000));
    assert.equal(drv.numFree, 4);
    assert.equal(drv.peekFreeId(), 0);
    const id = drv.addOne(DATA + 0x100, 64, false, 77);
    assert.equal(id, 0);
    assert.deepEqual(drv.state(), S(0x8001, 0x8000));
    assert.equal(drv.unpublished, true);
    // The first descriptor of the batch has its flags deferred to publish().
    assert.deepEqual(descAt(p, 0), { addr: DATA + 0x100, len: 64, id: 0, flags: 0 });
    assert.equal(dev.pending(), 0);
    assert.equal(drv.publish(), true, 'flags ENABLE: notify');
    assert.equal(drv.unpublished, false);
    assert.deepEqual(descAt(p, 0), { addr: DATA + 0x100, len: 64, id: 0, flags: AVAIL });
    assert.equal(drv.publish(), false, 'nothing new');
    assert.equal(dev.pending(), 1);
    dev.pop(chain);
    assertChain(chain, 0, 1, [{ addr: DATA + 0x100, len: 64, writable: false }]);
    assert.deepEqual(dev.state(), S(0x8001, 0x8000));
    dev.pushUsed(chain.id, 0, chain.descs);
    assert.equal(dev.unpublished, true);
    assert.deepEqual(dev.state(), S(0x8001, 0x8001), 'unpublished used entries count');
    assert.equal(descAt(p, 0).flags, AVAIL, 'used flags deferred to publish');
    assert.equal(drv.usedPending(), 0);
    assert.equal(dev.publish(), true);
    assert.equal(dev.unpublished, false);
    assert.deepEqual(descAt(p, 0), { addr: DATA + 0x100, len: 0, id: 0, flags: AVAIL | USED }, 'no WRITE flag for len 0');
    assert.equal(drv.usedPending(), 1);
    assert.equal(drv.popUsed(), 0);
    assert.equal(drv.usedToken, 77);
    assert.equal(drv.usedLen, 0);
    assert.deepEqual(drv.state(), S(0x8001, 0x8001));
    assert.equal(drv.numFree, 4);
    assertCanaries(mem);
  });

  test('multi-descriptor chain: NEXT on all but the last, the id in the last, readable first', () => {
    const p = pair(8);
    const bufs: BufferSpec[] = [
      { addr: DATA + 0x1000, len: 10, writable: false },
      { addr: HIGH + 0x20, len: 20, writable: false },
      { addr: DATA + 0x2000, len: 1500, writable: true },
    ];
    const id = p.drv.add(bufs, 5);
    p.drv.publish();
    assert.deepEqual(descAt(p, 0), { addr: DATA + 0x1000, len: 10, id, flags: AVAIL | NEXT });
    assert.deepEqual(descAt(p, 1), { addr: HIGH + 0x20, len: 20, id, flags: AVAIL | NEXT });
    assert.deepEqual(descAt(p, 2), { addr: DATA + 0x2000, len: 1500, id, flags: AVAIL | WRITE });
    assert.equal(p.drv.numFree, 5);
    assert.equal(p.dev.pending(), 1);
    p.dev.pop(p.chain);
    assertChain(p.chain, id, 3, bufs);
    p.dev.pushUsed(p.chain.id, 1234, p.chain.descs);
    p.dev.publish();
    assert.deepEqual(descAt(p, 0), { addr: DATA + 0x1000, len: 1234, id, flags: AVAIL | USED | WRITE });
    assert.deepEqual(p.dev.state(), S(0x8003, 0x8003));
    assert.equal(p.drv.popUsed(), id);
    assert.equal(p.drv.usedLen, 1234);
    assert.equal(p.drv.usedToken, 5);
    assert.equal(p.drv.numFree, 8);
    // The chain's bytes are reachable through the DescChain reader/writer.
    const src = new Uint8Array(30).map((_, i) => i + 1);
    p.mem.write(DATA + 0x1000, src.subarray(0, 10));
    p.mem.write(HIGH + 0x20, src.subarray(10));
    const out = new Uint8Array(30);
    assert.equal(p.chain.readTo({ u8: out, i32: new Int32Array(out.buffer, 0, 7) }, 0, 0, 30), 30);
    assert.deepEqual(out, src);
  });

  test('a batch of chains becomes visible at once: the first descriptor is made available last', () => {
    const p = pair(8);
    p.drv.addOne(DATA, 8, false, 1);
    p.drv.add([{ addr: DATA, len: 8, writable: false }, { addr: DATA + 8, len: 8, writable: true }], 2);
    p.drv.addOne(DATA, 8, true, 3);
    assert.equal(descAt(p, 0).flags, 0);
    assert.equal(descAt(p, 1).flags, AVAIL | NEXT, 'later descriptors written at once');
    assert.equal(p.dev.pending(), 0);
    p.drv.publish();
    assert.equal(p.dev.pending(), 3);
    const ids: number[] = [];
    while (p.dev.pending() > 0) { p.dev.pop(p.chain); ids.push(p.chain.id); }
    assert.deepEqual(ids, [0, 1, 2]);
    // Device side: complete out of order in one batch.
    p.dev.pushUsed(2, 8, 1);
    p.dev.pushUsed(0, 0, 1);
    p.dev.pushUsed(1, 8, 2);
    // Nothing is written into the ring before publish(): the driver's available descriptors stay as they were.
    assert.deepEqual(descAt(p, 0), { addr: DATA, len: 8, id: 0, flags: AVAIL }, 'first used descriptor deferred');
    assert.deepEqual(descAt(p, 1), { addr: DATA, len: 8, id: 1, flags: AVAIL | NEXT }, 'the others deferred too');
    assert.deepEqual(descAt(p, 2), { addr: DATA + 8, len: 8, id: 1, flags: AVAIL | WRITE });
    assert.equal(p.drv.usedPending(), 0, 'the driver sees nothing of a partial batch');
    p.dev.publish();
    assert.deepEqual(descAt(p, 0), { addr: DATA, len: 8, id: 2, flags: AVAIL | USED | WRITE });
    assert.deepEqual(descAt(p, 1), { addr: DATA, len: 0, id: 0, flags: AVAIL | USED }, 'len 0: no WRITE');
    assert.deepEqual(descAt(p, 2), { addr: DATA + 8, len: 8, id: 1, flags: AVAIL | USED | WRITE });
    assert.equal(p.drv.usedPending(), 3);
    const got: [number, number, number][] = [];
    while (p.drv.usedPending() > 0) { const id = p.drv.popUsed(); got.push([id, p.drv.usedLen, p.drv.usedToken]); }
    assert.deepEqual(got, [[2, 8, 3], [0, 0, 1], [1, 8, 2]]);
    assert.equal(p.drv.numFree, 8);
    assert.deepEqual(p.drv.state(), S(0x8004, 0x8004));
  });

  test('free ids are reused; the ring fills up exactly', () => {
    const p = pair(3);
    assert.equal(p.drv.addOne(DATA, 1, false, 0), 0);
    assert.equal(p.drv.add([{ addr: DATA, len: 1, writable: false }, { addr: DATA, len: 1, writable: false }], 1), 1);
    assert.equal(p.drv.numFree, 0);
    assert.equal(p.drv.peekFreeId(), -1);
    assert.equal(p.drv.addOne(DATA, 1, false, 2), -1);
    assert.equal(p.drv.add([{ addr: DATA, len: 1, writable: false }], 2), -1);
    p.drv.publish();
    p.dev.pop(p.chain);
    p.dev.pop(p.chain);
    p.dev.pushUsed(1, 0, 2);
    p.dev.publish();
    assert.equal(p.drv.popUsed(), 1);
    assert.equal(p.drv.numFree, 2);
    assert.equal(p.drv.peekFreeId(), 1, 'the id just freed is used next');
    assert.equal(p.drv.add([{ addr: DATA, len: 3, writable: false }, { addr: DATA, len: 4, writable: false }], 9), 1);
    assert.equal(p.drv.numFree, 0);
    p.drv.publish();
    // Written at positions 0 and 1 of the next lap: wrap counter 0, so AVAIL clear and USED set.
    assert.deepEqual(descAt(p, 0), { addr: DATA, len: 3, id: 1, flags: USED | NEXT });
    assert.deepEqual(descAt(p, 1), { addr: DATA, len: 4, id: 1, flags: USED });
    assert.deepEqual(p.drv.state(), S(0x0002, 0x8002));
    assert.equal(p.dev.pending(), 1);
    p.dev.pop(p.chain);
    assert.equal(p.chain.id, 1);
    assert.equal(p.chain.descs, 2);
    assert.deepEqual(p.dev.state(), S(0x0002, 0x8002));
  });

  test('add() rejects empty, over-long and readable-after-writable chains', () => {
    const p = pair(4);
    assert.throws(() => p.drv.add([], 0), RangeError);
    assert.throws(() => p.drv.add(Array.from({ length: 5 }, () => ({ addr: DATA, len: 1, writable: false })), 0), RangeError);
    assert.throws(() => p.drv.add([{ addr: DATA, len: 1, writable: true }, { addr: DATA, len: 1, writable: false }], 0), RangeError);
    assert.equal(p.drv.numFree, 4);
    assert.equal(p.drv.unpublished, false);
  });

  test('a buffer crossing two adjacent regions becomes two pieces', () => {
    const p = pair(4);
    const id = p.drv.add([{ addr: ADJ - 100, len: 300, writable: true }], 1);
    p.drv.publish();
    p.dev.pop(p.chain);
    assert.equal(p.chain.id, id);
    assert.equal(p.chain.count, 2);
    assert.deepEqual([p.chain.region[0], p.chain.offset[0], p.chain.len[0]], [R.data, OFF.data + DATA_SIZE - 100, 100]);
    assert.deepEqual([p.chain.region[1], p.chain.offset[1], p.chain.len[1]], [R.adj, OFF.adj, 200]);
    assert.equal(p.chain.writableBytes, 300);
    const src = new Uint8Array(300).map((_, i) => (i * 7) & 0xff);
    assert.equal(p.chain.writeFrom(0, { u8: src, i32: new Int32Array(src.buffer, 0, 75) }, 0, 300), 300);
    assert.deepEqual(p.mem.read(ADJ - 100, 100), src.subarray(0, 100));
    assert.deepEqual(p.mem.read(ADJ, 200), src.subarray(100));
    assertCanaries(p.mem);
  });
});

describe('indirect descriptors (§2.8.8)', () => {
  const bufs: BufferSpec[] = [
    { addr: DATA + 0x100, len: 14, writable: false },
    { addr: HIGH + 0x40, len: 100, writable: false },
    { addr: DATA + 0x800, len: 1500, writable: true },
    { addr: DATA + 0x1000, len: 12, writable: true },
  ];

  for (const [name, table] of [
    ['aligned table', DATA + 0x8000],
    ['misaligned table (odd address)', DATA + 0x9003],
    ['table above 4 GiB', HIGH + 0x1006],
    ['table crossing into the adjacent region', ADJ - 24],
  ] as const) {
    test(`${name}: one ring slot, the entries in order`, () => {
      const p = pair(4, { indirect: true });
      const id = p.drv.add(bufs, 42, table);
      p.drv.publish();
      assert.equal(p.drv.numFree, 3, 'one slot');
      assert.deepEqual(descAt(p, 0), { addr: table, len: 64, id, flags: AVAIL | IND });
      // Table entries: only WRITE set, id 0.
      for (let i = 0; i < 4; i++) {
        assert.deepEqual(tableEntry(p, table, i),
          { addr: bufs[i].addr, len: bufs[i].len, id: 0, flags: bufs[i].writable ? WRITE : 0 });
      }
      p.dev.pop(p.chain);
      assertChain(p.chain, id, 1, bufs);
      p.dev.pushUsed(p.chain.id, 1512, p.chain.descs);
      p.dev.publish();
      assert.equal(p.drv.popUsed(), id);
      assert.equal(p.drv.usedLen, 1512);
      assert.equal(p.drv.usedToken, 42);
      assert.equal(p.drv.numFree, 4);
      assertCanaries(p.mem);
    });
  }

  test('a table written by hand with NEXT flags and ids (reserved, ignored) and a buffer crossing regions', () => {
    const p = pair(4, { indirect: true });
    const table = DATA + 0x7001;
    const raw = new DataView(new ArrayBuffer(48));
    const entries = [[DATA + 0x10, 8, NEXT], [ADJ - 8, 24, WRITE | NEXT], [DATA + 0x40, 4, WRITE | (1 << 9)]];
    entries.forEach(([a, l, f], i) => {
      raw.setUint32(16 * i, a % 2 ** 32, true);
      raw.setUint32(16 * i + 8, l, true);
      raw.setUint16(16 * i + 12, 0xbeef, true);
      raw.setUint16(16 * i + 14, f, true);
    });
    p.mem.write(table, new Uint8Array(raw.buffer));
    // The ring descriptor, by hand: id 3, INDIRECT (+ WRITE, which is reserved and ignored).
    const v = new DataView(new ArrayBuffer(16));
    v.setUint32(0, table % 2 ** 32, true);
    v.setUint32(8, 48, true);
    v.setUint16(12, 3, true);
    v.setUint16(14, AVAIL | IND | WRITE, true);
    p.mem.write(p.layout.descAddr, new Uint8Array(v.buffer));
    assert.equal(p.dev.pending(), 1);
    p.dev.pop(p.chain);
    assert.equal(p.chain.id, 3);
    assert.equal(p.chain.descs, 1);
    assert.equal(p.chain.count, 4, 'the crossing buffer is two pieces');
    assert.equal(p.chain.readable, 1);
    assert.deepEqual(Array.from(p.chain.len.subarray(0, 4)), [8, 8, 16, 4]);
    assert.deepEqual([p.chain.region[1], p.chain.region[2]], [R.data, R.adj]);
    assert.equal(p.chain.writableBytes, 28);
  });

  test('without VIRTIO_F_INDIRECT_DESC the driver makes a direct chain', () => {
    const p = pair(8, { indirect: false });
    const id = p.drv.add(bufs, 1, DATA + 0x8000);
    assert.equal(p.drv.numFree, 4);
    p.drv.publish();
    p.dev.pop(p.chain);
    assertChain(p.chain, id, 4, bufs);
  });

  test('an indirect table as long as the queue size is fine; the table memory is untouched when the ring is full', () => {
    const p = pair(4, { indirect: true });
    const four = bufs.slice();
    roundTrip(p, four, 1, 0, DATA + 0x8000);
    for (let i = 0; i < 4; i++) p.drv.addOne(DATA, 1, false, i);
    const before = p.mem.read(DATA + 0xa000, 64);
    assert.equal(p.drv.add(four, 9, DATA + 0xa000), -1);
    assert.deepEqual(p.mem.read(DATA + 0xa000, 64), before);
    const q = pair(4, { indirect: true });
    assert.throws(() => q.drv.add(four, 9, 0x10), GuestMemoryError, 'table outside guest memory');
    assert.throws(() => q.drv.add(four, 9, ADJ + 0x10000 - 32), GuestMemoryError, 'table running off the end of memory');
    assert.equal(q.drv.numFree, 4);
    assert.equal(q.drv.unpublished, false);
  });
});

/** Entry i of an indirect table, read byte by byte (the table may cross regions). */
function tableEntry(p: Pair, table: number, i: number) {
  const b = new Uint8Array(16);
  for (let k = 0; k < 16; k++) b[k] = p.mem.read(table + 16 * i + k, 1)[0];
  const v = new DataView(b.buffer);
  return { addr: v.getUint32(4, true) * 2 ** 32 + v.getUint32(0, true), len: v.getUint32(8, true), id: v.getUint16(12, true), flags: v.getUint16(14, true) };
}

describe('non-power-of-two sizes across many wraps', () => {
  for (const size of [1, 3, 5, 255, 1000]) {
    test(`size ${size}: mixed chains, state() tracks position and wrap`, () => {
      const p = pair(size, { indirect: true });
      const r = rng(size * 977);
      let pos = 0, wrap = 1; // expected driver/device position
      const laps = size > 100 ? 6 : 40;
      let token = 0;
      while (token < laps * size || pos !== 0) {
        const n = 1 + (r() % Math.min(size, 4));
        const useTable = r() % 4 === 0;
        const bufs: BufferSpec[] = [];
        for (let i = 0; i < n; i++) bufs.push({ addr: (i & 1 ? HIGH : DATA) + 64 * (r() % 512), len: 1 + (r() % 1500), writable: i >= n - (r() % (n + 1)) });
        for (let i = 1; i < n; i++) if (bufs[i - 1].writable) bufs[i].writable = true;
        const written = r() % (bufs.filter((b) => b.writable).reduce((s, b) => s + b.len, 0) + 1);
        const table = useTable ? DATA + 0x20000 + (r() % 0x1000) : undefined;
        roundTrip(p, bufs, token++, written, table);
        const slots = useTable ? 1 : n;
        pos += slots;
        if (pos >= size) { pos -= size; wrap ^= 1; }
        const s = pos | (wrap << 15);
        assert.deepEqual(p.drv.state(), S(s, s));
        assert.deepEqual(p.dev.state(), S(s, s));
      }
      assert.equal(p.drv.numFree, size);
      assertCanaries(p.mem);
    });
  }

  test('size 5: ring kept full, completions out of order, many wraps', () => {
    const p = pair(5);
    const r = rng(5);
    const held: { id: number; descs: number; tok: number }[] = [];
    const out = new Map<number, number>(); // token -> expected len
    let token = 0, reclaimed = 0;
    for (let round = 0; round < 2000; round++) {
      for (;;) {
        const n = 1 + (r() % 2);
        if (p.drv.numFree < n) break;
        const bufs = Array.from({ length: n }, (_, i) => ({ addr: DATA + 16 * i, len: 16, writable: i === n - 1 }));
        assert.ok(p.drv.add(bufs, token) >= 0);
        out.set(token++, -1);
      }
      p.drv.publish();
      while (p.dev.pending() > 0) {
        p.dev.pop(p.chain);
        held.push({ id: p.chain.id, descs: p.chain.descs, tok: -1 });
      }
      const k = r() % (held.length + 1);
      for (let i = 0; i < k; i++) {
        const [h] = held.splice(r() % held.length, 1);
        p.dev.pushUsed(h.id, 16, h.descs);
      }
      p.dev.publish();
      while (p.drv.usedPending() > 0) {
        p.drv.popUsed();
        assert.equal(p.drv.usedLen, 16);
        assert.ok(out.has(p.drv.usedToken), 'token returned once');
        out.delete(p.drv.usedToken);
        reclaimed++;
      }
      assert.equal(p.drv.numFree + held.reduce((s, h) => s + h.descs, 0), 5);
    }
    assert.equal(out.size, held.length);
    assert.ok(reclaimed > 1000);
  });
});

describe('mark / rewind', () => {
  test('chains popped since mark() come back, ids no longer in flight', () => {
    const p = pair(7);
    for (let i = 0; i < 4; i++) p.drv.add([{ addr: DATA + i, len: 1, writable: false }, { addr: DATA, len: 2, writable: true }].slice(0, 1 + (i & 1)), i);
    p.drv.publish();
    assert.equal(p.dev.pending(), 4);
    p.dev.pop(p.chain);
    const m = p.dev.mark();
    assert.equal(m, 0x8001);
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) { p.dev.pop(p.chain); ids.push(p.chain.id); }
    assert.deepEqual(ids, [1, 2, 3]);
    assert.equal(p.dev.state().avail, 0x8006);
    assert.equal(p.dev.pending(), 0);
    p.dev.rewind(m);
    assert.equal(p.dev.state().avail, 0x8001);
    assert.equal(p.dev.pending(), 3);
    const again: number[] = [];
    while (p.dev.pending() > 0) { p.dev.pop(p.chain); again.push(p.chain.id); }
    assert.deepEqual(again, ids, 'popped again without ID_IN_FLIGHT');
    // Rewinding to the current position is a no-op; a bogus mark is refused.
    p.dev.rewind(p.dev.mark());
    assert.equal(p.dev.pending(), 0);
    // More than a lap behind: only a driver that rewrote descriptors the device holds gets there, so it is the driver's fault (typed).
    assert.throws(() => p.dev.rewind(0x0002), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_JUMP', 'more than a lap behind');
    assert.throws(() => p.dev.rewind(0x8007), RangeError, 'position >= size');
  });

  test('rewind after a whole lap of pops, and rewind keeps earlier ids in flight', () => {
    const p = pair(3);
    const o = rng(3);
    for (let lap = 0; lap < 5; lap++) {
      for (let i = 0; i < 3; i++) p.drv.addOne(DATA, 4, false, i);
      p.drv.publish();
      const m = p.dev.mark();
      for (let i = 0; i < 3; i++) p.dev.pop(p.chain);
      assert.equal(p.dev.mark(), m ^ 0x8000, 'same position, other wrap');
      p.dev.rewind(m);
      assert.equal(p.dev.pending(), 3);
      p.dev.pop(p.chain);
      const m2 = p.dev.mark();
      p.dev.pop(p.chain);
      p.dev.rewind(m2);
      p.dev.pop(p.chain);
      p.dev.pop(p.chain);
      assert.equal(p.dev.pending(), 0);
      for (const id of [0, 1, 2].sort(() => (o() & 1) - 0.5)) p.dev.pushUsed(id, 0, 1);
      p.dev.publish();
      while (p.drv.usedPending() > 0) p.drv.popUsed();
      assert.equal(p.drv.numFree, 3);
    }
  });

  test('pending() keeps a count ahead and stays right after rewind', () => {
    const p = pair(200);
    for (let i = 0; i < 150; i++) p.drv.addOne(DATA, 4, false, i);
    p.drv.publish();
    assert.equal(p.dev.pending(), SCAN_LIMIT, 'counted up to the scan limit');
    const m = p.dev.mark();
    for (let i = 0; i < 100; i++) p.dev.pop(p.chain);
    assert.equal(p.dev.pending(), 50);
    p.dev.rewind(m);
    assert.equal(p.dev.pending(), SCAN_LIMIT);
    for (let i = 0; i < 150; i++) { p.dev.pop(p.chain); assert.equal(p.chain.id, i); }
    assert.equal(p.dev.pending(), 0);
  });
});

describe('event suppression (§2.8.10)', () => {
  test('driver → device: ENABLE, DISABLE, and the raw structure', () => {
    const p = pair(4);
    assert.deepEqual(readEvent(p.mem, p.layout.driverAddr), [0, RING_EVENT_FLAGS_ENABLE], 'zeroed by the driver');
    p.drv.setNotification(false);
    assert.deepEqual(readEvent(p.mem, p.layout.driverAddr), [0, RING_EVENT_FLAGS_DISABLE]);
    p.drv.addOne(DATA, 4, false, 0);
    p.drv.publish();
    p.dev.pop(p.chain);
    p.dev.pushUsed(p.chain.id, 0, 1);
    assert.equal(p.dev.publish(), false, 'DISABLE');
    p.drv.popUsed();
    p.drv.setNotification(true);
    assert.deepEqual(readEvent(p.mem, p.layout.driverAddr), [0, RING_EVENT_FLAGS_ENABLE]);
    p.drv.addOne(DATA, 4, false, 0);
    p.drv.publish();
    p.dev.pop(p.chain);
    p.dev.pushUsed(p.chain.id, 0, 1);
    assert.equal(p.dev.publish(), true, 'ENABLE');
    assert.equal(p.dev.publish(), false, 'nothing new');
  });

  test('device → driver: ENABLE, DISABLE, and the raw structure', () => {
    const p = pair(4);
    assert.deepEqual(readEvent(p.mem, p.layout.deviceAddr), [0, RING_EVENT_FLAGS_ENABLE]);
    p.dev.setNotification(false);
    assert.deepEqual(readEvent(p.mem, p.layout.deviceAddr), [0, RING_EVENT_FLAGS_DISABLE]);
    p.drv.addOne(DATA, 4, false, 0);
    assert.equal(p.drv.publish(), false);
    p.dev.setNotification(true);
    assert.deepEqual(readEvent(p.mem, p.layout.deviceAddr), [0, RING_EVENT_FLAGS_ENABLE]);
    p.drv.addOne(DATA, 4, false, 1);
    assert.equal(p.drv.publish(), true);
    // Reserved flag value 3 is not DISABLE: notify.
    writeEvent(p.mem, p.layout.deviceAddr, 0, 3);
    p.drv.addOne(DATA, 4, false, 2);
    assert.equal(p.drv.publish(), true);
  });

  test('device → driver with EVENT_IDX: a kick exactly when the event descriptor is made available', () => {
    const size = 5;
    const p = pair(size, { eventIdx: true });
    const r = rng(11);
    let pos = 0, wrap = 1; // driver's avail position
    let devPos = 0, devWrap = 1;
    for (let t = 0; t < 600; t++) {
      // The device arms at its read position (after draining), or sometimes leaves an old event.
      if (r() % 3 !== 0) {
        p.dev.setNotification(true);
        assert.deepEqual(readEvent(p.mem, p.layout.deviceAddr), [devPos | (devWrap << 15), RING_EVENT_FLAGS_DESC]);
      }
      const [offWrap, flags] = readEvent(p.mem, p.layout.deviceAddr);
      const n = 1 + (r() % size);
      let expect = flags !== RING_EVENT_FLAGS_DESC; // ENABLE until the device first arms
      for (let i = 0; i < n; i++) {
        if (flags === RING_EVENT_FLAGS_DESC && offWrap === (pos | (wrap << 15))) expect = true;
        p.drv.addOne(DATA, 4, false, i);
        if (++pos === size) { pos = 0; wrap ^= 1; }
      }
      assert.equal(p.drv.publish(), expect, `t ${t}`);
      while (p.dev.pending() > 0) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, 0, 1); if (++devPos === size) { devPos = 0; devWrap ^= 1; } }
      p.dev.publish();
      while (p.drv.usedPending() > 0) p.drv.popUsed();
    }
  });

  test('driver → device with EVENT_IDX: a used-buffer notification exactly when the event descriptor is used', () => {
    for (const inOrder of [false, true]) {
      const size = 7;
      const p = pair(size, { eventIdx: true, inOrder });
      const r = rng(inOrder ? 5 : 6);
      let usedPos = 0, usedWrap = 1; // where the device's used position is
      let notified = 0;
      for (let t = 0; t < 600; t++) {
        const k = 1 + (r() % 3);
        for (let i = 0; i < k && p.drv.numFree >= 2; i++) p.drv.add([{ addr: DATA, len: 4, writable: false }, { addr: DATA, len: 4, writable: true }].slice(0, 1 + (r() & 1)), i);
        p.drv.publish();
        if (r() % 3 !== 0) {
          p.drv.setNotification(true);
          const [ow, f] = readEvent(p.mem, p.layout.driverAddr);
          assert.equal(f, RING_EVENT_FLAGS_DESC);
          assert.equal(ow, p.drv.state().used, 'event at the next used position');
        }
        const [offWrap, flags] = readEvent(p.mem, p.layout.driverAddr);
        let expect = flags !== RING_EVENT_FLAGS_DESC; // ENABLE until the driver first arms
        while (p.dev.pending() > 0) {
          p.dev.pop(p.chain);
          p.dev.pushUsed(p.chain.id, r() % 2 ? 0 : p.chain.writableBytes, p.chain.descs);
          for (let i = 0; i < p.chain.descs; i++) {
            if (flags === RING_EVENT_FLAGS_DESC && offWrap === (usedPos | (usedWrap << 15))) expect = true;
            if (++usedPos === size) { usedPos = 0; usedWrap ^= 1; }
          }
        }
        const got = p.dev.publish();
        assert.equal(got, expect, `inOrder ${inOrder} t ${t}`);
        if (got) notified++;
        while (p.drv.usedPending() > 0) p.drv.popUsed();
        assert.equal(p.drv.numFree, size);
      }
      assert.ok(notified > 50 && notified < 600, `notified ${notified}`);
    }
  });

  test('EVENT_IDX: disabling writes DISABLE; DESC without EVENT_IDX counts as ENABLE', () => {
    const p = pair(4, { eventIdx: true });
    p.drv.setNotification(false);
    p.dev.setNotification(false);
    assert.deepEqual(readEvent(p.mem, p.layout.driverAddr), [0, RING_EVENT_FLAGS_DISABLE]);
    assert.deepEqual(readEvent(p.mem, p.layout.deviceAddr), [0, RING_EVENT_FLAGS_DISABLE]);
    p.drv.addOne(DATA, 1, false, 0);
    assert.equal(p.drv.publish(), false);
    const q = pair(4, { eventIdx: false });
    writeEvent(q.mem, q.layout.deviceAddr, 0x8003, RING_EVENT_FLAGS_DESC);
    q.drv.addOne(DATA, 1, false, 0);
    assert.equal(q.drv.publish(), true);
  });
});

describe('in-order (§2.8.12)', () => {
  test('device writes one used descriptor for a run of len-0 chains; the driver frees them all in order', () => {
    const p = pair(8, { inOrder: true });
    const ids: number[] = [];
    ids.push(p.drv.addOne(DATA, 4, false, 100));
    ids.push(p.drv.add([{ addr: DATA, len: 4, writable: false }, { addr: DATA, len: 4, writable: false }], 101));
    ids.push(p.drv.addOne(DATA, 4, false, 102));
    assert.deepEqual(ids, [0, 1, 3], 'in-order ids are ring positions');
    p.drv.publish();
    while (p.dev.pending() > 0) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, 0, p.chain.descs); }
    assert.deepEqual(p.dev.state(), S(0x8004, 0x8004));
    p.dev.publish();
    assert.deepEqual(descAt(p, 0), { addr: DATA, len: 0, id: 3, flags: AVAIL | USED }, 'one used descriptor with the last id');
    assert.equal(descAt(p, 1).flags, AVAIL | NEXT, 'skipped descriptors untouched');
    assert.equal(descAt(p, 3).flags, AVAIL);
    assert.equal(p.drv.usedPending(), 3);
    const got: number[][] = [];
    while (p.drv.usedPending() > 0) {
      const id = p.drv.popUsed();
      got.push([id, p.drv.usedToken, p.drv.usedLen, p.drv.numFree]);
    }
    assert.deepEqual(got, [[0, 100, 0, 5], [1, 101, 0, 7], [3, 102, 0, 8]]);
    assert.deepEqual(p.drv.state(), S(0x8004, 0x8004));
  });

  test('a run ending with a non-zero len carries it; the next run starts after it', () => {
    const p = pair(6, { inOrder: true });
    for (let i = 0; i < 5; i++) p.drv.addOne(DATA + 64 * i, 64, true, i);
    p.drv.publish();
    const lens = [0, 0, 40, 0, 30];
    for (let i = 0; i < 5; i++) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, lens[i], 1); }
    p.dev.publish();
    assert.deepEqual(descAt(p, 0), { addr: DATA, len: 40, id: 2, flags: AVAIL | USED | WRITE });
    assert.deepEqual(descAt(p, 3), { addr: DATA + 192, len: 30, id: 4, flags: AVAIL | USED | WRITE });
    assert.equal(p.drv.usedPending(), 5);
    const got: number[][] = [];
    while (p.drv.usedPending() > 0) { const id = p.drv.popUsed(); got.push([id, p.drv.usedLen, p.drv.usedToken]); }
    assert.deepEqual(got, [[0, 0, 0], [1, 0, 1], [2, 40, 2], [3, 0, 3], [4, 30, 4]]);
    assert.equal(p.drv.numFree, 6);
    // Across the wrap: a run of 4 starting at position 5.
    for (let i = 0; i < 4; i++) assert.equal(p.drv.addOne(DATA, 64, false, 10 + i), (5 + i) % 6);
    p.drv.publish();
    while (p.dev.pending() > 0) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, 0, 1); }
    assert.equal(p.drv.usedPending(), 0, 'an open run is not visible before publish');
    p.dev.publish();
    assert.deepEqual(descAt(p, 5), { addr: DATA, len: 0, id: 2, flags: AVAIL | USED });
    assert.equal(p.drv.usedPending(), 4);
    const toks: number[] = [];
    while (p.drv.usedPending() > 0) { p.drv.popUsed(); toks.push(p.drv.usedToken); }
    assert.deepEqual(toks, [10, 11, 12, 13]);
    assert.deepEqual(p.drv.state(), S(0x0003, 0x0003));
    assert.deepEqual(p.dev.state(), S(0x0003, 0x0003));
  });

  test('usedPending() during a batch counts what is left plus later used descriptors', () => {
    const p = pair(8, { inOrder: true });
    for (let i = 0; i < 6; i++) p.drv.addOne(DATA, 4, true, i);
    p.drv.publish();
    for (let i = 0; i < 3; i++) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, 0, 1); }
    p.dev.publish();
    assert.equal(p.drv.usedPending(), 3);
    assert.equal(p.drv.popUsed(), 0);
    assert.equal(p.drv.usedPending(), 2);
    for (let i = 0; i < 3; i++) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, i === 1 ? 4 : 0, 1); }
    p.dev.publish();
    assert.equal(p.drv.usedPending(), 5);
    const got: number[] = [];
    while (p.drv.usedPending() > 0) { got.push(p.drv.popUsed()); }
    assert.deepEqual(got, [1, 2, 3, 4, 5]);
    assert.equal(p.drv.numFree, 8);
  });

  test('in-order with indirect chains and a whole ring in one used descriptor', () => {
    const p = pair(4, { inOrder: true, indirect: true });
    for (let lap = 0; lap < 10; lap++) {
      for (let i = 0; i < 4; i++) {
        const id = p.drv.add([{ addr: DATA, len: 4, writable: false }, { addr: DATA + 4, len: 4, writable: false }], 10 * lap + i, DATA + 0x1000 + 32 * i);
        assert.equal(id, i);
      }
      p.drv.publish();
      while (p.dev.pending() > 0) { p.dev.pop(p.chain); assert.equal(p.chain.count, 2); p.dev.pushUsed(p.chain.id, 0, 1); }
      p.dev.publish();
      assert.equal(descAt(p, 0).id, 3);
      assert.equal(p.drv.usedPending(), 4);
      for (let i = 0; i < 4; i++) { assert.equal(p.drv.popUsed(), i); assert.equal(p.drv.usedToken, 10 * lap + i); }
      assert.deepEqual(p.drv.state(), S((lap & 1 ? 1 : 0) << 15, (lap & 1 ? 1 : 0) << 15));
    }
  });
});

describe('queue size 32768 and setState', () => {
  test('size 32768: the whole ring in one batch, three laps', () => {
    const size = 32768;
    const p = pair(size, { eventIdx: true });
    for (let lap = 0; lap < 3; lap++) {
      for (let i = 0; i < size; i++) assert.ok(p.drv.addOne(DATA + (i & 0xff), 16, (i & 1) === 1, i) >= 0);
      assert.equal(p.drv.addOne(DATA, 16, false, 0), -1);
      p.drv.publish();
      assert.equal(p.dev.pending(), SCAN_LIMIT);
      let popped = 0;
      while (p.dev.pending() > 0) { p.dev.pop(p.chain); p.dev.pushUsed(p.chain.id, p.chain.writableBytes, 1); popped++; }
      assert.equal(popped, size);
      const wrap = lap & 1 ? 1 : 0;
      assert.deepEqual(p.dev.state(), S(wrap << 15, wrap << 15));
      p.dev.publish();
      let n = 0;
      while (p.drv.usedPending() > 0) { p.drv.popUsed(); assert.equal(p.drv.usedLen, p.drv.usedToken & 1 ? 16 : 0); n++; }
      assert.equal(n, size);
      assert.equal(p.drv.numFree, size);
      assert.deepEqual(p.drv.state(), S(wrap << 15, wrap << 15));
    }
    assertCanaries(p.mem);
  });

  test('setState restarts the device at a saved position; bad states are refused', () => {
    const p = pair(5);
    for (let i = 0; i < 3; i++) roundTrip(p, [{ addr: DATA, len: 8, writable: false }], i, 0);
    const saved = p.dev.state();
    assert.deepEqual(saved, S(0x8003, 0x8003));
    const dev2 = new PackedDeviceQueue(new GuestMemory(p.mem.specs), p.layout, p.opts);
    dev2.setState(saved);
    assert.deepEqual(dev2.state(), saved);
    p.drv.addOne(DATA + 8, 8, false, 9);
    p.drv.publish();
    assert.equal(dev2.pending(), 1);
    const c = new DescChain(new GuestMemory(p.mem.specs));
    dev2.pop(c);
    assert.equal(c.offset[0], where(DATA + 8)[1]);
    dev2.pushUsed(c.id, 0, 1);
    dev2.publish();
    assert.equal(p.drv.popUsed(), c.id);
    assert.equal(p.drv.usedToken, 9);
    for (const bad of [S(5, 0), S(0x8005, 0), S(0, 0x10000), S(-1, 0)]) assert.throws(() => dev2.setState(bad), QueueConfigError);
  });

  test('pushUsed refuses ids and slot counts outside the queue; pop() with nothing available is a RangeError', () => {
    const p = pair(4);
    assert.throws(() => p.dev.pushUsed(4, 0, 1), RangeError);
    assert.throws(() => p.dev.pushUsed(0, 0, 0), RangeError);
    assert.throws(() => p.dev.pushUsed(0, 0, 5), RangeError);
    assert.throws(() => p.dev.pop(p.chain), RangeError);
    assert.equal(p.dev.unpublished, false);
    assert.ok(!(new RangeError() instanceof DescriptorError));
  });
});
