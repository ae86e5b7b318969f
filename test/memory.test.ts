import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory, MAX_REGIONS, type RegionSpec } from '../src/virtio/memory.js';
import { GuestMemoryError, VirtioError } from '../src/virtio/errors.js';

const TWO32 = 2 ** 32;
const TWO53 = 2 ** 53;

/**
 * Four regions, three in one SharedArrayBuffer and one in its own ArrayBuffer:
 *   r0  gpa [0x1000, 0x2000)             buffer sab @ 0x0000   user 0x7f00_0000_0000
 *   r1  gpa [0x2000, 0x2800)  (adjacent)  buffer sab @ 0x4000   user 0x7f00_0010_0000
 *   r2  gpa [4 GiB, 4 GiB + 0x2000)       buffer sab @ 0x8000   (no user address)
 *   r3  gpa [0x10000, 0x10100)            own buffer @ 8        user 0
 */
const R0 = 0x1000, R1 = 0x2000, R2 = TWO32, R3 = 0x10000;
const U0 = 0x7f0000000000, U1 = 0x7f0000100000;
function fourRegions(): { mem: GuestMemory; sab: SharedArrayBuffer; ab: ArrayBuffer } {
  const sab = new SharedArrayBuffer(0x10000);
  const ab = new ArrayBuffer(0x200);
  const mem = new GuestMemory([
    { guestPhysAddr: R0, size: 0x1000, buffer: sab, bufferOffset: 0, userAddr: U0 },
    { guestPhysAddr: R1, size: 0x800, buffer: sab, bufferOffset: 0x4000, userAddr: U1 },
    { guestPhysAddr: R2, size: 0x2000, buffer: sab, bufferOffset: 0x8000 },
    { guestPhysAddr: R3, size: 0x100, buffer: ab, bufferOffset: 8, userAddr: 0 },
  ]);
  return { mem, sab, ab };
}

function throwsGuest(fn: () => unknown, addr: number, len: number): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof GuestMemoryError, `expected GuestMemoryError, got ${String(e)}`);
    assert.ok(e instanceof VirtioError);
    assert.equal(e.code, 'GUEST_MEMORY_OUT_OF_RANGE');
    assert.equal(e.addr, addr);
    assert.equal(e.len, len);
    return true;
  });
}

describe('GuestMemory construction', () => {
  test('exposes per-region start/end/base/userStart', () => {
    const { mem } = fourRegions();
    assert.equal(mem.regionCount, 4);
    assert.deepEqual([...mem.start], [R0, R1, R2, R3]);
    assert.deepEqual([...mem.end], [R0 + 0x1000, R1 + 0x800, R2 + 0x2000, R3 + 0x100]);
    assert.deepEqual([...mem.base], [0, 0x4000, 0x8000, 8]);
    assert.deepEqual([...mem.userStart], [U0, U1, -1, 0]);
    assert.equal(mem.specs.length, 4);
    assert.equal(mem.bytes[0].u8.buffer, mem.bytes[2].u8.buffer, 'regions sharing a buffer share its views');
  });

  test('overlapping regions are rejected (partial, identical, containment), adjacent ones accepted', () => {
    const buf = new ArrayBuffer(0x10000);
    const mk = (a: [number, number], b: [number, number]) =>
      new GuestMemory([
        { guestPhysAddr: a[0], size: a[1], buffer: buf },
        { guestPhysAddr: b[0], size: b[1], buffer: buf, bufferOffset: 0x8000 },
      ]);
    assert.throws(() => mk([0x1000, 0x1000], [0x1800, 0x1000]), RangeError); // partial, second starts inside
    assert.throws(() => mk([0x1800, 0x1000], [0x1000, 0x1000]), RangeError); // partial, first starts inside
    assert.throws(() => mk([0x1000, 0x1000], [0x1000, 0x1000]), RangeError); // identical
    assert.throws(() => mk([0x1000, 0x4000], [0x2000, 0x100]), RangeError); // containment
    assert.throws(() => mk([0x2000, 0x100], [0x1000, 0x4000]), RangeError); // contained
    assert.throws(() => mk([0x1000, 0x1000], [0x1fff, 0x10]), RangeError); // one byte of overlap
    // Overlap of a non-neighbouring pair among three.
    assert.throws(() => new GuestMemory([
      { guestPhysAddr: 0, size: 0x100, buffer: buf },
      { guestPhysAddr: 0x1000, size: 0x100, buffer: buf, bufferOffset: 0x100 },
      { guestPhysAddr: 0x80, size: 0x100, buffer: buf, bufferOffset: 0x200 },
    ]), /regions 0 and 2 overlap/);
    const ok = mk([0x1000, 0x1000], [0x2000, 0x1000]); // touching is fine
    assert.equal(ok.regionCount, 2);
  });

  test('invalid regions are rejected with RangeError', () => {
    const buf = new ArrayBuffer(0x1000);
    const bad: RegionSpec[][] = [
      [],
      [{ guestPhysAddr: 0, size: 0, buffer: buf }],
      [{ guestPhysAddr: 0, size: -8, buffer: buf }],
      [{ guestPhysAddr: 0, size: 1.5, buffer: buf }],
      [{ guestPhysAddr: -0x1000, size: 0x100, buffer: buf }],
      [{ guestPhysAddr: 0.5, size: 0x100, buffer: buf }],
      [{ guestPhysAddr: TWO53, size: 0x100, buffer: buf }],
      [{ guestPhysAddr: 0, size: 0x1001, buffer: buf }], // larger than its buffer
      [{ guestPhysAddr: 0, size: 0x100, buffer: buf, bufferOffset: 4 }], // not a multiple of 8
      [{ guestPhysAddr: 0, size: 0x100, buffer: buf, bufferOffset: 0xf08 }], // runs past the buffer
      [{ guestPhysAddr: 0, size: 0x100, buffer: buf, bufferOffset: -8 }], // negative offset (-8 % 8 is -0)
      [{ guestPhysAddr: 0, size: 0x100, buffer: buf, bufferOffset: Number.NaN }],
      // A region whose end is not a safe integer: addresses in it would not be exact.
      [{ guestPhysAddr: TWO53 - 0x100, size: 0x100, buffer: buf }],
      [{ guestPhysAddr: 0, size: 0x100, buffer: buf, userAddr: -0x1000 }],
      [{ guestPhysAddr: 0, size: 0x100, buffer: buf, userAddr: TWO53 }],
    ];
    for (const regions of bad) assert.throws(() => new GuestMemory(regions), RangeError, JSON.stringify(regions.map((r) => ({ ...r, buffer: undefined }))));
    const many: RegionSpec[] = [];
    const big = new ArrayBuffer(8 * (MAX_REGIONS + 1));
    for (let i = 0; i <= MAX_REGIONS; i++) many.push({ guestPhysAddr: i * 0x1000, size: 8, buffer: big, bufferOffset: 8 * i });
    assert.throws(() => new GuestMemory(many), RangeError);
    assert.equal(new GuestMemory(many.slice(0, MAX_REGIONS)).regionCount, MAX_REGIONS);
  });

  test('specs are a copy that rebuilds an equivalent memory over the same buffers', () => {
    const { mem } = fourRegions();
    const again = new GuestMemory(mem.specs);
    again.write(R2 + 0x10, Uint8Array.of(1, 2, 3));
    assert.deepEqual([...mem.read(R2 + 0x10, 3)], [1, 2, 3]);
    for (const [a, l] of [[R0, 1], [R1 + 5, 4], [R2 + 0x1fff, 1], [R3, 0x100]] as const) {
      assert.equal(again.translate(a, l), mem.translate(a, l));
      assert.equal(again.off, mem.off);
    }
  });
});

describe('GuestMemory.translate', () => {
  test('maps both edges of every region through bufferOffset', () => {
    const { mem } = fourRegions();
    const cases: [addr: number, len: number, region: number, off: number][] = [
      [R0, 1, 0, 0],
      [R0 + 0xfff, 1, 0, 0xfff],
      [R0, 0x1000, 0, 0], // the whole region
      [R1, 1, 1, 0x4000],
      [R1 + 0x7ff, 1, 1, 0x47ff],
      [R1, 0x800, 1, 0x4000],
      [R2, 8, 2, 0x8000],
      [R2 + 0x1ff8, 8, 2, 0x9ff8],
      [R2 + 0x123, 0x1000, 2, 0x8123],
      [R3, 0x100, 3, 8],
      [R3 + 0xff, 1, 3, 0x107],
    ];
    for (const [addr, len, region, off] of cases) {
      assert.equal(mem.translate(addr, len), region, `translate(0x${addr.toString(16)}, ${len})`);
      assert.equal(mem.off, off);
      assert.equal(mem.find(addr, len), region);
      assert.equal(mem.off, off);
    }
  });

  test('len 0 is accepted anywhere inside a region including its end, rejected outside', () => {
    const { mem } = fourRegions();
    assert.equal(mem.translate(R2, 0), 2);
    assert.equal(mem.off, 0x8000);
    assert.equal(mem.translate(R2 + 0x2000, 0), 2, 'empty access at the exclusive end');
    assert.equal(mem.off, 0xa000);
    assert.equal(mem.translate(R3 + 0x100, 0), 3);
    assert.equal(mem.off, 0x108);
    throwsGuest(() => mem.translate(0x500, 0), 0x500, 0); // below every region
    throwsGuest(() => mem.translate(R1 + 0x801, 0), R1 + 0x801, 0); // in the gap after r1
    throwsGuest(() => mem.translate(R2 + 0x2001, 0), R2 + 0x2001, 0);
    assert.equal(mem.find(R2 - 1, 0), -1);
  });

  test('an access crossing a region boundary throws instead of clamping', () => {
    const { mem } = fourRegions();
    const crossing: [number, number][] = [
      [R0 + 0xfff, 2], // r0 -> r1: contiguous in guest physical space, but two regions
      [R0, 0x1001],
      [R0, 0x1800], // exactly r0 + r1
      [R1 + 0x7ff, 2], // r1 -> gap
      [R1 + 0x800, 1], // first byte past r1
      [R0 - 1, 2], // gap -> r0
      [R0 - 1, 1],
      [R2 + 0x1ff8, 9],
      [R2 - 8, 16],
      [R2, 0x2001],
      [R3 + 0x80, 0x81],
      [R3, TWO32],
    ];
    for (const [addr, len] of crossing) {
      throwsGuest(() => mem.translate(addr, len), addr, len);
      assert.equal(mem.find(addr, len), -1);
      throwsGuest(() => mem.read(addr, len), addr, len);
    }
  });

  test('a failed lookup leaves the region cache usable', () => {
    const { mem } = fourRegions();
    assert.equal(mem.translate(R2 + 4, 4), 2); // warm the cache on r2
    assert.equal(mem.find(R2 + 0x1ffc, 8), -1); // near-miss on the cached region
    assert.equal(mem.translate(R0 + 4, 4), 0);
    assert.equal(mem.off, 4);
    assert.equal(mem.translate(R2 + 4, 4), 2);
    assert.equal(mem.off, 0x8004);
  });

  test('negative addresses and lengths, NaN and infinities are rejected', () => {
    const sab = new SharedArrayBuffer(0x1000);
    const mem = new GuestMemory([{ guestPhysAddr: 0, size: 0x1000, buffer: sab }]);
    assert.equal(mem.translate(0, 0x1000), 0);
    throwsGuest(() => mem.translate(-1, 1), -1, 1);
    throwsGuest(() => mem.translate(-1, 2), -1, 2); // would end inside the region
    throwsGuest(() => mem.translate(-0x1000, 0x1000), -0x1000, 0x1000);
    throwsGuest(() => mem.translate(0x10, -1), 0x10, -1);
    throwsGuest(() => mem.translate(0x10, -0x10), 0x10, -0x10);
    throwsGuest(() => mem.translate(Number.NaN, 1), Number.NaN, 1);
    throwsGuest(() => mem.translate(0, Number.NaN), 0, Number.NaN);
    throwsGuest(() => mem.translate(0, Infinity), 0, Infinity);
    throwsGuest(() => mem.translate(-Infinity, Infinity), -Infinity, Infinity);
  });

  test('addresses at or above 2^53 match no region; the top of the safe range stays exact', () => {
    const { mem } = fourRegions();
    for (const a of [TWO53, TWO53 + 2, 2 ** 63, 2 ** 63 + R2, 2 ** 64 - 2048, 2 ** 64, 2 ** 64 + R0])
      throwsGuest(() => mem.translate(a, 1), a, 1);
    // A u64 with the high half set must not alias the low 32 bits (r0 lives at 0x1000).
    throwsGuest(() => mem.translate(TWO32 * 0x1000 + R0, 4), TWO32 * 0x1000 + R0, 4);
    // r2 sits at exactly 2^32: the 33rd bit is significant.
    assert.equal(mem.translate(TWO32 + 0x10, 4), 2);
    throwsGuest(() => mem.translate(0x10, 4), 0x10, 4);

    // A region ending at 2^53 - 1 (the largest end allowed).
    const top = TWO53 - 1;
    const hi = new GuestMemory([{ guestPhysAddr: top - 0x1000, size: 0x1000, buffer: new ArrayBuffer(0x2000), bufferOffset: 0x800 }]);
    assert.equal(hi.translate(top - 1, 1), 0, 'last byte');
    assert.equal(hi.off, 0x800 + 0xfff);
    assert.equal(hi.translate(top, 0), 0);
    throwsGuest(() => hi.translate(top - 1, 2), top - 1, 2);
    throwsGuest(() => hi.translate(top - 1, 3), top - 1, 3); // (2^53 - 2) + 3 rounds to 2^53 - must still fail
    throwsGuest(() => hi.translate(top, 1), top, 1);
    throwsGuest(() => hi.translate(TWO53, 0), TWO53, 0);
    throwsGuest(() => hi.translate(TWO53 + 2, 0), TWO53 + 2, 0);
  });
});

describe('GuestMemory.read / write', () => {
  test('write lands at bufferOffset + (addr - gpa) in the backing buffer; read returns a copy', () => {
    const { mem, sab, ab } = fourRegions();
    mem.write(R1 + 0x10, Uint8Array.of(0xde, 0xad, 0xbe, 0xef));
    assert.deepEqual([...new Uint8Array(sab, 0x4010, 4)], [0xde, 0xad, 0xbe, 0xef]);
    mem.write(R3 + 0xfc, Uint8Array.of(9, 8, 7, 6));
    assert.deepEqual([...new Uint8Array(ab, 8 + 0xfc, 4)], [9, 8, 7, 6]);
    mem.write(R2 + 0x1ffe, Uint8Array.of(0x55, 0x66));
    assert.deepEqual([...new Uint8Array(sab, 0x9ffe, 2)], [0x55, 0x66]);
    const copy = mem.read(R1 + 0x10, 4);
    assert.deepEqual([...copy], [0xde, 0xad, 0xbe, 0xef]);
    copy[0] = 0;
    assert.equal(new Uint8Array(sab)[0x4010], 0xde, 'read() must not alias guest memory');
    assert.equal(mem.read(R0, 0).length, 0);
  });

  test('a write crossing a boundary throws and writes nothing', () => {
    const { mem, sab } = fourRegions();
    const before = new Uint8Array(sab).slice();
    throwsGuest(() => mem.write(R0 + 0xffe, Uint8Array.of(1, 2, 3, 4)), R0 + 0xffe, 4);
    throwsGuest(() => mem.write(R1 + 0x7ff, Uint8Array.of(1, 2)), R1 + 0x7ff, 2);
    throwsGuest(() => mem.write(TWO53, Uint8Array.of(1)), TWO53, 1);
    assert.deepEqual(new Uint8Array(sab), before);
  });
});

describe('GuestMemory.userToGuest', () => {
  test('translates front-end virtual addresses of regions that have one', () => {
    const { mem } = fourRegions();
    assert.equal(mem.userToGuest(U0, 1), R0);
    assert.equal(mem.userToGuest(U0 + 0xfff, 1), R0 + 0xfff);
    assert.equal(mem.userToGuest(U0, 0x1000), R0);
    assert.equal(mem.userToGuest(U1 + 0x10, 0x7f0), R1 + 0x10);
    assert.equal(mem.userToGuest(U1 + 0x800, 0), R1 + 0x800);
    assert.equal(mem.userToGuest(0, 0x100), R3, 'userAddr 0 is a real address, not "absent"');
    assert.equal(mem.userToGuest(0x80, 0x10), R3 + 0x80);
  });

  test('rejects addresses outside, crossing the end, and regions without a user address', () => {
    const { mem } = fourRegions();
    const bad: [number, number][] = [
      [U0 - 1, 1],
      [U0 + 0xfff, 2], // crossing the end of r0 (the next user range does not follow it)
      [U0, 0x1001],
      [U1 + 0x800, 1],
      [U1 + 0x400, 0x401],
      [0x100, 1], // r3 user range is [0, 0x100)
      [R2, 1], // r2 has no user address: its guest address is no user address either
      [-1, 1],
      [U0 + 0x10, -1], // negative length
    ];
    for (const [u, l] of bad)
      assert.throws(() => mem.userToGuest(u, l), (e: unknown) => e instanceof GuestMemoryError && e.addr === u && e.len === l, `userToGuest(0x${u.toString(16)}, ${l})`);
  });

  test('a translated user address is a valid guest address', () => {
    const { mem } = fourRegions();
    const g = mem.userToGuest(U1 + 0x100, 0x20);
    assert.equal(mem.translate(g, 0x20), 1);
    assert.equal(mem.off, 0x4100);
  });
});
