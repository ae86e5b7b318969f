import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { DescriptorError, VirtioError, type DescriptorErrorCode } from '../src/virtio/errors.js';
import type { QueueOptions } from '../src/virtio/queue.js';
import { PackedDeviceQueue } from '../src/virtio/packed/device.js';
import { PackedDriverQueue } from '../src/virtio/packed/driver.js';
import {
  contiguousPackedLayout, VIRTQ_DESC_F_AVAIL as AVAIL, VIRTQ_DESC_F_INDIRECT as IND, VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_USED as USED, VIRTQ_DESC_F_WRITE as WRITE,
} from '../src/virtio/packed/layout.js';
import {
  ADJ, ADJ_SIZE, DATA, DATA_SIZE, HIGH, HIGH_SIZE, OFF, R, RING, assertCanaries, makeMemory, readDesc, writeDesc, writeEvent,
} from './support/packed.js';

const SIZE = 8;
const QUEUE = 3;
const TWO32 = 2 ** 32;

/** One descriptor as a hand-crafting driver writes it; flags without AVAIL/USED (added per wrap counter). */
interface D { addr: number | [number, number]; len: number; id?: number; flags?: number }

/** A device queue over a ring written by hand (no driver half), tracking the raw driver's position and wrap. */
class RawRing {
  readonly mem = makeMemory();
  readonly layout;
  readonly dev: PackedDeviceQueue;
  readonly chain: DescChain;
  pos = 0;
  wrap = 1;
  constructor(readonly size = SIZE, opts: Partial<QueueOptions> = {}) {
    this.layout = contiguousPackedLayout(RING, size);
    this.dev = new PackedDeviceQueue(this.mem, this.layout, { indirect: true, eventIdx: false, inOrder: false, index: QUEUE, ...opts });
    this.chain = new DescChain(this.mem, 2);
  }

  /** Write raw descriptor fields at ring position `pos`. */
  raw(pos: number, d: D, flags: number): void {
    const [lo, hi] = typeof d.addr === 'number' ? [d.addr % TWO32, Math.floor(d.addr / TWO32)] : d.addr;
    writeDesc(this.mem, this.layout.descAddr + 16 * pos, { addr: hi * TWO32 + lo, len: d.len, id: d.id ?? 0, flags });
  }

  /** Make a chain available at the raw driver position, the first descriptor last (§2.8.6). */
  offer(...descs: D[]): void {
    let first = -1, firstFlags = 0;
    for (const d of descs) {
      const f = (d.flags ?? 0) | (this.wrap ? AVAIL : USED);
      if (first < 0) { first = this.pos; firstFlags = f; this.raw(this.pos, d, 0); } else this.raw(this.pos, d, f);
      if (++this.pos === this.size) { this.pos = 0; this.wrap ^= 1; }
    }
    const d0 = readDesc(this.mem, this.layout.descAddr + 16 * first);
    writeDesc(this.mem, this.layout.descAddr + 16 * first, { ...d0, flags: firstFlags });
  }

  /** Write a table of descriptors (16 bytes each) at guest address `addr`. */
  table(addr: number, descs: D[]): void {
    descs.forEach((d, i) => {
      const [lo, hi] = typeof d.addr === 'number' ? [d.addr % TWO32, Math.floor(d.addr / TWO32)] : d.addr;
      writeDesc(this.mem, addr + 16 * i, { addr: hi * TWO32 + lo, len: d.len, id: d.id ?? 0, flags: d.flags ?? 0 });
    });
  }

  /** Expect the next pop() to throw DescriptorError `code`, the whole chain consumed. */
  expectPopError(code: DescriptorErrorCode, descIndex?: number): DescriptorError {
    assert.ok(this.dev.pending() >= 1, 'the malformed chain counts as available');
    let caught: unknown;
    try { this.dev.pop(this.chain); } catch (e) { caught = e; }
    assert.ok(caught instanceof DescriptorError, `expected DescriptorError ${code}, got ${String(caught)}`);
    assert.ok(caught instanceof VirtioError);
    assert.equal(caught.code, code, caught.message);
    assert.equal(caught.queue, QUEUE);
    assert.match(caught.message, new RegExp(`^queue ${QUEUE}: `));
    if (descIndex !== undefined) assert.equal(caught.descIndex, descIndex, 'descIndex');
    assert.equal(this.dev.state().avail, this.pos | (this.wrap << 15), 'the whole chain is consumed');
    assert.equal(this.dev.pending(), 0);
    return caught;
  }

  /** A well-formed chain offered after an error is popped and used normally. */
  expectUsable(id = 0): void {
    const two = this.size >= 2;
    if (two) this.offer({ addr: DATA + 0x40, len: 16, flags: NEXT }, { addr: DATA + 0x80, len: 32, id, flags: WRITE });
    else this.offer({ addr: DATA + 0x80, len: 32, id, flags: WRITE });
    assert.equal(this.dev.pending(), 1);
    this.dev.pop(this.chain);
    assert.equal(this.chain.id, id);
    assert.equal(this.chain.descs, two ? 2 : 1);
    assert.equal(this.chain.count, two ? 2 : 1);
    assert.equal(this.chain.readable, two ? 1 : 0);
    assert.equal(this.chain.len[two ? 1 : 0], 32);
    assert.equal(this.chain.offset[two ? 1 : 0], OFF.data + 0x80);
    assert.equal(this.dev.pending(), 0);
    const used = this.dev.state().used & 0x7fff;
    this.dev.pushUsed(id, 32, this.chain.descs);
    assert.equal(this.dev.publish(), true);
    const u = readDesc(this.mem, this.layout.descAddr + 16 * used);
    assert.equal(u.id, id);
    assert.equal(u.len, 32);
  }
}

describe('device: CHAIN_TOO_LONG', () => {
  for (const size of [1, 5, SIZE, 256]) {
    test(`a ring of ${size} descriptors all marked NEXT: no hang, the whole ring consumed`, () => {
      const q = new RawRing(size);
      q.offer(...Array.from({ length: size }, (_, i) => ({ addr: DATA + i, len: 1, id: i, flags: NEXT })));
      assert.equal(q.dev.pending(), 1);
      assert.equal(q.dev.pending(), 1, 'stable');
      q.expectPopError('CHAIN_TOO_LONG');
      assert.equal(q.dev.state().avail, 0, 'same position, wrap counter flipped');
      q.expectUsable(size - 1);
    });
  }

  test('a chain of exactly the queue size is fine', () => {
    const q = new RawRing();
    q.offer(...Array.from({ length: SIZE }, (_, i) => ({ addr: DATA + i, len: 1, id: 5, flags: i + 1 < SIZE ? NEXT : WRITE })));
    q.dev.pop(q.chain);
    assert.equal(q.chain.descs, SIZE);
    assert.equal(q.chain.id, 5);
    assert.equal(q.chain.count, SIZE);
  });

  test('NEXT running into the next lap after a partly used ring', () => {
    const q = new RawRing();
    q.offer({ addr: DATA, len: 4 }, { addr: DATA, len: 4, id: 1 }, { addr: DATA, len: 4, id: 2 });
    for (let i = 0; i < 3; i++) q.dev.pop(q.chain);
    for (let i = 0; i < 3; i++) q.dev.pushUsed(i, 0, 1);
    q.dev.publish();
    q.offer(...Array.from({ length: SIZE }, () => ({ addr: DATA, len: 4, id: 3, flags: NEXT })));
    q.expectPopError('CHAIN_TOO_LONG');
    q.expectUsable(4);
  });

  test('an indirect table with more entries than the queue size', () => {
    const q = new RawRing();
    q.table(DATA + 0x1000, Array.from({ length: SIZE + 1 }, () => ({ addr: DATA, len: 1 })));
    q.offer({ addr: DATA + 0x1000, len: 16 * (SIZE + 1), id: 1, flags: IND });
    q.expectPopError('CHAIN_TOO_LONG', 0);
    q.offer({ addr: DATA + 0x1000, len: 16 * SIZE, id: 1, flags: IND });
    q.dev.pop(q.chain);
    assert.equal(q.chain.count, SIZE, 'exactly the queue size is fine');
    assert.equal(q.chain.descs, 1);
    q.expectUsable();
  });
});

describe('device: indirect descriptors', () => {
  test('NESTED_INDIRECT: an indirect descriptor inside an indirect table', () => {
    const q = new RawRing();
    q.table(DATA + 0x1000, [{ addr: DATA, len: 8 }, { addr: DATA + 0x2000, len: 16, flags: IND }]);
    q.offer({ addr: DATA + 0x1000, len: 32, flags: IND });
    q.expectPopError('NESTED_INDIRECT', 1);
    q.expectUsable();
  });

  test('INDIRECT_WITH_NEXT: INDIRECT | NEXT, and an indirect descriptor at the end of a chain', () => {
    const q = new RawRing();
    q.table(DATA + 0x1000, [{ addr: DATA, len: 8 }]);
    q.offer({ addr: DATA + 0x1000, len: 16, flags: IND | NEXT }, { addr: DATA, len: 8, id: 2 });
    q.expectPopError('INDIRECT_WITH_NEXT', 0);
    q.offer({ addr: DATA, len: 8, flags: NEXT }, { addr: DATA + 0x1000, len: 16, id: 2, flags: IND });
    q.expectPopError('INDIRECT_WITH_NEXT', 3);
    q.expectUsable();
  });

  test('INDIRECT_BAD_LENGTH: 0, 8, 17', () => {
    const q = new RawRing();
    for (const len of [0, 8, 17, 0xfffffff8 + 1]) {
      q.offer({ addr: DATA + 0x1000, len, flags: IND });
      q.expectPopError('INDIRECT_BAD_LENGTH');
    }
    q.expectUsable();
  });

  test('INDIRECT_NOT_NEGOTIATED: the device did not offer VIRTIO_F_INDIRECT_DESC', () => {
    const q = new RawRing(SIZE, { indirect: false });
    q.table(DATA + 0x1000, [{ addr: DATA, len: 8 }]);
    q.offer({ addr: DATA + 0x1000, len: 16, flags: IND });
    q.expectPopError('INDIRECT_NOT_NEGOTIATED', 0);
    q.offer({ addr: DATA + 0x1000, len: 16, flags: IND | NEXT }, { addr: DATA, len: 4 });
    q.expectPopError('INDIRECT_NOT_NEGOTIATED', 1);
    q.expectUsable();
  });
});

describe('device: READABLE_AFTER_WRITABLE', () => {
  test('writable then readable, direct and in a table; a zero-length writable first', () => {
    const q = new RawRing();
    q.offer({ addr: DATA, len: 8, flags: WRITE | NEXT }, { addr: DATA, len: 8, flags: NEXT }, { addr: DATA, len: 8, id: 1 });
    q.expectPopError('READABLE_AFTER_WRITABLE', 1);
    q.offer({ addr: DATA, len: 0, flags: WRITE | NEXT }, { addr: DATA, len: 8, id: 1 });
    q.expectPopError('READABLE_AFTER_WRITABLE', 4);
    q.table(DATA + 0x1000, [{ addr: DATA, len: 8 }, { addr: DATA, len: 8, flags: WRITE }, { addr: DATA, len: 8 }]);
    q.offer({ addr: DATA + 0x1000, len: 48, flags: IND });
    q.expectPopError('READABLE_AFTER_WRITABLE', 2);
    q.expectUsable();
  });
});

describe('device: BUFFER_OUT_OF_RANGE', () => {
  test('address outside every region, or crossing a region end into nothing', () => {
    const q = new RawRing();
    const cases: [number, number][] = [
      [0, 8], [0x1000, 1], [RING - 1, 2], [DATA - 1, 2], [DATA, DATA_SIZE + ADJ_SIZE + 1], [ADJ + ADJ_SIZE - 1, 2],
      [HIGH + HIGH_SIZE - 16, 17], [HIGH, 0xffffffff], [HIGH + HIGH_SIZE + 1, 0], [2 ** 52, 8],
    ];
    for (const [addr, len] of cases) {
      q.offer({ addr: DATA, len: 4, flags: NEXT }, { addr, len, id: 1, flags: WRITE });
      q.expectPopError('BUFFER_OUT_OF_RANGE', (q.pos + SIZE - 1) % SIZE);
    }
    q.expectUsable();
  });

  test('crossing from DATA into the adjacent region is two pieces; the boundaries themselves are fine', () => {
    const q = new RawRing();
    q.offer({ addr: DATA + DATA_SIZE - 8, len: 8 + ADJ_SIZE, id: 2, flags: WRITE });
    q.dev.pop(q.chain);
    assert.equal(q.chain.count, 2);
    assert.deepEqual([q.chain.region[0], q.chain.region[1]], [R.data, R.adj]);
    assert.deepEqual([q.chain.len[0], q.chain.len[1]], [8, ADJ_SIZE]);
  });

  test('64-bit addresses with high bits set do not alias the low 32 bits', () => {
    const q = new RawRing();
    for (const hi of [2, 0x100, 0x1fffff, 0x200000, 0x80000000, 0xffffffff]) {
      q.offer({ addr: [DATA, hi], len: 8 });
      q.expectPopError('BUFFER_OUT_OF_RANGE');
    }
    q.expectUsable();
  });

  test('indirect table outside memory, crossing the end of memory, above 2^53; a buffer in a table outside memory', () => {
    const q = new RawRing();
    q.offer({ addr: 0x100, len: 32, flags: IND });
    q.expectPopError('BUFFER_OUT_OF_RANGE');
    q.offer({ addr: ADJ + ADJ_SIZE - 16, len: 32, flags: IND });
    q.expectPopError('BUFFER_OUT_OF_RANGE');
    q.offer({ addr: [DATA, 0x80000000], len: 16, flags: IND });
    q.expectPopError('BUFFER_OUT_OF_RANGE');
    q.table(DATA + 0x1003, [{ addr: DATA, len: 8 }, { addr: [0, 2], len: 8 }]);
    q.offer({ addr: DATA + 0x1003, len: 32, flags: IND });
    q.expectPopError('BUFFER_OUT_OF_RANGE', 1);
    q.expectUsable();
  });
});

describe('device: buffer ids', () => {
  test('ID_OUT_OF_RANGE: the Buffer ID of the last descriptor >= queue size (the first one is ignored)', () => {
    const q = new RawRing();
    for (const id of [SIZE, SIZE + 1, 0x7fff, 0xffff]) {
      q.offer({ addr: DATA, len: 8, id: 1, flags: NEXT }, { addr: DATA, len: 8, id });
      q.expectPopError('ID_OUT_OF_RANGE');
    }
    q.offer({ addr: DATA, len: 8, id: 0xffff, flags: NEXT }, { addr: DATA, len: 8, id: 6 });
    q.dev.pop(q.chain);
    assert.equal(q.chain.id, 6);
    q.dev.pushUsed(6, 0, 2);
    q.expectUsable();
  });

  test('ID_IN_FLIGHT: an id popped and not yet used; fine again once used; rewind releases it', () => {
    const q = new RawRing();
    q.offer({ addr: DATA, len: 8, id: 4 });
    q.dev.pop(q.chain);
    q.offer({ addr: DATA, len: 8, id: 4, flags: NEXT }, { addr: DATA, len: 8, id: 4 });
    q.expectPopError('ID_IN_FLIGHT');
    q.dev.pushUsed(4, 0, 1);
    q.offer({ addr: DATA, len: 8, id: 4 });
    const m = q.dev.mark();
    q.dev.pop(q.chain);
    assert.equal(q.chain.id, 4);
    q.dev.rewind(m);
    q.dev.pop(q.chain);
    assert.equal(q.chain.id, 4, 'rewind gave the id back');
    q.dev.pushUsed(4, 0, 1);
    q.expectUsable(4);
  });
});

describe('device: CHAIN_BYTES_TOO_LARGE', () => {
  // Buffers may overlap: 4097 descriptors of 1 MiB each are 2^32 + 2^20 bytes.
  const BIG = 0x10000000, BIG_SIZE = 0x100000;
  function bigRing(): { mem: GuestMemory; dev: PackedDeviceQueue; put: (pos: number, addr: number, len: number, flags: number) => void } {
    const size = 8200;
    const sab = new SharedArrayBuffer(0x40000 + BIG_SIZE);
    const mem = new GuestMemory([
      { guestPhysAddr: RING, size: 0x40000, buffer: sab },
      { guestPhysAddr: BIG, size: BIG_SIZE, buffer: sab, bufferOffset: 0x40000 },
    ]);
    const layout = contiguousPackedLayout(RING, size);
    const dev = new PackedDeviceQueue(mem, layout, { indirect: true, eventIdx: false, inOrder: false, index: QUEUE });
    const put = (pos: number, addr: number, len: number, flags: number) => writeDesc(mem, layout.descAddr + 16 * pos, { addr, len, id: 1, flags });
    return { mem, dev, put };
  }

  test('a direct chain over 2^32 bytes; exactly 2^32 is fine', () => {
    const { mem, dev, put } = bigRing();
    for (const [n, lastLen, ok] of [[4097, BIG_SIZE, false], [4096, BIG_SIZE, true]] as const) {
      const base = ok ? 4097 : 0;
      for (let i = n - 1; i >= 0; i--) put(base + i, BIG, i + 1 < n ? BIG_SIZE : lastLen, AVAIL | (i + 1 < n ? NEXT : 0));
      assert.equal(dev.pending(), 1);
      const c = new DescChain(mem);
      let caught: unknown;
      try { dev.pop(c); } catch (e) { caught = e; }
      if (ok) {
        assert.equal(caught, undefined);
        assert.equal(c.readableBytes, TWO32);
        assert.equal(dev.state().avail, 0x8000 | 8193);
      } else {
        assert.ok(caught instanceof DescriptorError && caught.code === 'CHAIN_BYTES_TOO_LARGE', String(caught));
        assert.equal(caught.queue, QUEUE);
        assert.equal(dev.state().avail, 0x8000 | 4097, 'consumed');
      }
    }
  });

  test('an indirect table over 2^32 bytes', () => {
    const { mem, dev, put } = bigRing();
    const table = BIG + 0x800;
    for (let i = 0; i < 4097; i++) writeDesc(mem, table + 16 * i, { addr: BIG, len: BIG_SIZE, id: 0, flags: WRITE });
    put(0, table, 16 * 4097, AVAIL | IND);
    let caught: unknown;
    try { dev.pop(new DescChain(mem)); } catch (e) { caught = e; }
    assert.ok(caught instanceof DescriptorError && caught.code === 'CHAIN_BYTES_TOO_LARGE', String(caught));
    assert.equal(caught.descIndex, 4096);
  });
});

describe('device: writes stay inside the ring', () => {
  test('after every kind of malformed chain, only the ring changed: canaries and buffers intact', () => {
    const q = new RawRing(5, { eventIdx: true, inOrder: true });
    q.table(DATA + 0x1000, [{ addr: DATA, len: 8 }, { addr: DATA, len: 8, flags: IND }]);
    const data = q.mem.read(DATA, DATA_SIZE), adj = q.mem.read(ADJ, ADJ_SIZE), high = q.mem.read(HIGH, HIGH_SIZE);
    const bad: D[][] = [
      [{ addr: 0, len: 8 }],
      [{ addr: DATA + 0x1000, len: 32, flags: IND }],
      [{ addr: DATA, len: 8, flags: NEXT }, { addr: DATA, len: 8, id: 0xffff }],
      [{ addr: ADJ + ADJ_SIZE - 4, len: 8, flags: WRITE }],
      [{ addr: DATA, len: 8, flags: WRITE | NEXT }, { addr: DATA, len: 8 }],
    ];
    for (let round = 0; round < 20; round++) {
      for (const chain of bad) {
        q.offer(...chain);
        assert.throws(() => q.dev.pop(q.chain), DescriptorError);
        q.dev.setNotification(round % 2 === 0);
      }
      q.expectUsable(round % 5);
    }
    assert.deepEqual(q.mem.read(DATA, DATA_SIZE), data);
    assert.deepEqual(q.mem.read(ADJ, ADJ_SIZE), adj);
    assert.deepEqual(q.mem.read(HIGH, HIGH_SIZE), high);
    assertCanaries(q.mem);
  });
});

// ---------------------------------------------------------------------------
// Driver side: a device that returns bogus used descriptors.
// ---------------------------------------------------------------------------
describe('driver: bogus used descriptors', () => {
  function drv(size: number, opts: Partial<QueueOptions> = {}) {
    const mem = makeMemory();
    const layout = contiguousPackedLayout(RING, size);
    const d = new PackedDriverQueue(mem, layout, { indirect: false, eventIdx: false, inOrder: false, index: QUEUE, ...opts });
    // A raw device: write used descriptor (id, len) at ring position pos with wrap counter wrap.
    const use = (pos: number, wrap: number, id: number, len: number) =>
      writeDesc(mem, layout.descAddr + 16 * pos, { addr: 0, len, id, flags: (wrap ? AVAIL | USED : 0) | (len ? WRITE : 0) });
    return { mem, d, use };
  }
  const expectErr = (f: () => unknown, code: DescriptorErrorCode) => {
    let caught: unknown;
    try { f(); } catch (e) { caught = e; }
    assert.ok(caught instanceof DescriptorError, String(caught));
    assert.equal(caught.code, code);
    assert.equal(caught.queue, QUEUE);
  };

  test('USED_ID_INVALID: id >= size, an id never made available, an id added but not published, a duplicate', () => {
    const { d, use } = drv(4);
    assert.equal(d.addOne(DATA, 8, true, 10), 0);
    assert.equal(d.addOne(DATA, 8, true, 11), 1);
    d.publish();
    assert.equal(d.addOne(DATA, 8, true, 12), 2); // not published
    use(0, 1, 7, 0);
    assert.equal(d.usedPending(), 1, 'counted; popUsed refuses it');
    expectErr(() => d.popUsed(), 'USED_ID_INVALID');
    use(1, 1, 3, 0);
    expectErr(() => d.popUsed(), 'USED_ID_INVALID');
    use(2, 1, 2, 0);
    expectErr(() => d.popUsed(), 'USED_ID_INVALID');
    assert.equal(d.numFree, 1, 'nothing freed');
    use(3, 1, 1, 4);
    assert.equal(d.popUsed(), 1);
    assert.equal(d.usedToken, 11);
    assert.equal(d.usedLen, 4);
    use(0, 0, 1, 0);
    expectErr(() => d.popUsed(), 'USED_ID_INVALID'); // a duplicate of a reclaimed id
    assert.equal(d.numFree, 2);
  });

  test('USED_LEN_INVALID: len above the writable bytes; still reclaimed with usedLen 0; len without WRITE is ignored', () => {
    const { d, use, mem } = drv(3);
    d.add([{ addr: DATA, len: 8, writable: false }, { addr: DATA, len: 100, writable: true }], 5);
    d.publish();
    use(0, 1, 0, 101);
    expectErr(() => d.popUsed(), 'USED_LEN_INVALID');
    assert.equal(d.usedToken, 5);
    assert.equal(d.usedLen, 0);
    assert.equal(d.numFree, 3);
    // The queue keeps working: a size-3 ring goes round.
    let pos = 2, wrap = 1;
    for (let i = 0; i < 10; i++) {
      const id = d.addOne(DATA, 8, false, 20 + i);
      d.publish();
      writeDesc(mem, RING + 16 * pos, { addr: 0, len: 999, id, flags: wrap ? AVAIL | USED : 0 }); // no WRITE: len ignored
      assert.equal(d.usedPending(), 1);
      assert.equal(d.popUsed(), id);
      assert.equal(d.usedLen, 0);
      assert.equal(d.usedToken, 20 + i);
      if (++pos === 3) { pos = 0; wrap ^= 1; }
    }
    assert.equal(d.numFree, 3);
  });

  test('in-order: an id that is not the start of an outstanding chain is refused', () => {
    const { d, use } = drv(6, { inOrder: true });
    d.add([{ addr: DATA, len: 8, writable: false }, { addr: DATA, len: 8, writable: false }], 1); // id 0, slots 0-1
    d.addOne(DATA, 8, false, 2); // id 2
    d.publish();
    d.addOne(DATA, 8, false, 3); // id 3, unpublished
    let pos = 0;
    for (const bad of [1, 3, 5, 6]) {
      use(pos++, 1, bad, 0); // each refused entry moves the read position one slot
      assert.equal(d.usedPending(), 1);
      expectErr(() => d.popUsed(), 'USED_ID_INVALID');
    }
    assert.equal(d.numFree, 2);
  });
});

// ---------------------------------------------------------------------------
// Fuzz: random descriptor rings.
// ---------------------------------------------------------------------------
const KNOWN: readonly string[] = [
  'CHAIN_TOO_LONG', 'CHAIN_BYTES_TOO_LARGE', 'INDIRECT_NOT_NEGOTIATED', 'NESTED_INDIRECT', 'INDIRECT_WITH_NEXT',
  'INDIRECT_BAD_LENGTH', 'READABLE_AFTER_WRITABLE', 'BUFFER_OUT_OF_RANGE', 'ID_OUT_OF_RANGE', 'ID_IN_FLIGHT',
];

/** Every piece of `c` lies inside its region (region index valid, offset and length within it). */
function assertInside(mem: GuestMemory, c: DescChain): void {
  assert.ok(c.count >= 1);
  assert.ok(c.id >= 0 && c.descs >= 1);
  for (let i = 0; i < c.count; i++) {
    const r = c.region[i];
    assert.ok(r >= 0 && r < mem.regionCount, `piece ${i}: region ${r}`);
    const lo = mem.base[r], hi = mem.base[r] + (mem.end[r] - mem.start[r]);
    assert.ok(c.offset[i] >= lo && c.offset[i] + c.len[i] <= hi, `piece ${i} [${c.offset[i]}, +${c.len[i]}) outside region ${r}`);
  }
  assert.equal(c.readableBytes + c.writableBytes, Array.from(c.len.subarray(0, c.count)).reduce((s, x) => s + x, 0));
}

/** What the fuzz tests saw, so they can assert they reached both outcomes. */
const seen = new Map<string, number>();
const count = (k: string) => seen.set(k, (seen.get(k) ?? 0) + 1);

/** Drain the device: pop everything it thinks available, using some chains; fails when it does not stop by itself. */
function drainRandom(mem: GuestMemory, dev: PackedDeviceQueue, chain: DescChain, useMask: number): { ok: number; errors: number } {
  let ok = 0, errors = 0;
  for (let iter = 0; iter < 4 * dev.size + 8; iter++) {
    const n = dev.pending();
    assert.ok(n >= 0);
    if (n === 0) return { ok, errors };
    try {
      dev.pop(chain);
      assertInside(mem, chain);
      ok++;
      count(chain.descs > 1 ? 'ok-chain' : 'ok');
      if ((useMask >>> (iter & 31)) & 1) dev.pushUsed(chain.id, chain.writableBytes, chain.descs);
    } catch (e) {
      assert.ok(e instanceof DescriptorError, `not a DescriptorError: ${String(e)}`);
      assert.ok(KNOWN.includes(e.code), e.code);
      assert.equal(e.queue, QUEUE);
      errors++;
      count(e.code);
    }
    dev.publish();
  }
  assert.fail('the device kept finding chains: more pops than a ring can hold');
}

// Interesting values for descriptor fields.
const addrArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: DATA, max: DATA + 0x10000 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, RING, DATA + DATA_SIZE - 8, ADJ - 4, ADJ + ADJ_SIZE - 1, HIGH, HIGH + HIGH_SIZE - 16, DATA + 0x3001) },
  { weight: 1, arbitrary: fc.integer({ min: DATA, max: DATA + DATA_SIZE + ADJ_SIZE }) },
  { weight: 1, arbitrary: fc.tuple(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff })).map(([lo, hi]) => hi * TWO32 + lo) },
);
const lenArb = fc.oneof(
  { weight: 6, arbitrary: fc.nat({ max: 0x800 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 16, 17, 32, 48, 4096, 0xffffffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
);
const descArb = fc.record({
  addr: addrArb,
  len: lenArb,
  id: fc.oneof(fc.nat({ max: 8 }), fc.nat({ max: 0xffff })),
  flags: fc.oneof(
    fc.constantFrom(0, NEXT, WRITE, IND, NEXT | WRITE, IND | NEXT).map((f) => [f, true] as const), // with matching avail bits
    fc.nat({ max: 0xffff }).map((f) => [f, false] as const), // raw flags
  ),
});

test('fuzz: structured random rings give valid chains or DescriptorErrors, never anything else, never a hang', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 40 }),
      fc.array(descArb, { minLength: 1, maxLength: 40 }),
      fc.array(descArb, { minLength: 1, maxLength: 12 }), // indirect table contents
      fc.boolean(), fc.boolean(), fc.nat(), fc.integer({ min: 0, max: 3 }),
      (size, descs, tableDescs, indirect, inOrder, useMask, laps) => {
        const mem = makeMemory();
        const layout = contiguousPackedLayout(RING, size);
        const dev = new PackedDeviceQueue(mem, layout, { indirect, inOrder, eventIdx: true, index: QUEUE });
        const chain = new DescChain(mem, 1);
        // A table the ring's indirect descriptors may point at (DATA + 0x3001: misaligned).
        tableDescs.forEach((d, i) => writeDesc(mem, DATA + 0x3001 + 16 * i, { addr: d.addr, len: d.len, id: d.id, flags: d.flags[0] }));
        for (let lap = 0; lap <= laps; lap++) {
          // Marked descriptors are available as the device sees each slot: its wrap counter from its position on, the other before.
          const st = dev.state().avail, devPos = st & 0x7fff, devWrap = st >>> 15;
          for (let i = 0; i < size; i++) {
            const d = descs[(i + lap * size) % descs.length];
            const f = d.flags[0], marked = d.flags[1];
            const wrap = i >= devPos ? devWrap : devWrap ^ 1;
            const flags = marked ? (f & ~(AVAIL | USED)) | (wrap ? AVAIL : USED) : f;
            writeDesc(mem, layout.descAddr + 16 * i, { addr: d.addr, len: d.len, id: d.id, flags });
          }
          const t0 = Date.now();
          drainRandom(mem, dev, chain, useMask);
          assert.ok(Date.now() - t0 < 2000, 'bounded time');
        }
        assertCanaries(mem);
      },
    ),
    { numRuns: 400 },
  );
  // The generator reaches valid chains (single and multi-descriptor) and most error codes.
  assert.ok((seen.get('ok') ?? 0) > 50 && (seen.get('ok-chain') ?? 0) > 5, JSON.stringify([...seen]));
  const codes = KNOWN.filter((c) => seen.has(c));
  assert.ok(codes.length >= 7, `error codes reached: ${codes.join(', ')}`);
});

test('fuzz: raw random bytes as the descriptor ring and the driver event area', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }).chain((size) => fc.tuple(fc.constant(size), fc.uint8Array({ minLength: 16 * size + 4, maxLength: 16 * size + 4 }))),
      fc.boolean(), fc.boolean(), fc.nat(),
      ([size, bytes], indirect, eventIdx, useMask) => {
        const mem = makeMemory();
        const layout = contiguousPackedLayout(RING, size);
        mem.write(layout.descAddr, bytes);
        const dev = new PackedDeviceQueue(mem, layout, { indirect, inOrder: false, eventIdx, index: QUEUE });
        const chain = new DescChain(mem, 1);
        drainRandom(mem, dev, chain, useMask);
        // Notification decisions never throw whatever the driver area holds.
        writeEvent(mem, layout.driverAddr, bytes[0] | (bytes[1] << 8), bytes[2] | (bytes[3] << 8));
        dev.pushUsed(0, 0, 1);
        assert.equal(typeof dev.publish(), 'boolean');
        assertCanaries(mem);
      },
    ),
    { numRuns: 1000 },
  );
  assert.ok(seen.get('BUFFER_OUT_OF_RANGE')! > 0);
});
