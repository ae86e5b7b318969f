/**
 * Shared fixtures of the packed-ring tests (no tests here, no side effects on
 * import): guest memory with canaries, a driver/device pair over it, and raw access to descriptors and event suppression areas.
 */
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/virtio/memory.js';
import { DescChain } from '../../src/virtio/chain.js';
import type { BufferSpec, QueueLayout, QueueOptions } from '../../src/virtio/queue.js';
import { PackedDeviceQueue } from '../../src/virtio/packed/device.js';
import { PackedDriverQueue } from '../../src/virtio/packed/driver.js';
import { contiguousPackedLayout } from '../../src/virtio/packed/layout.js';

// ---------------------------------------------------------------------------
// Guest memory: four regions in one SharedArrayBuffer, each at a non-zero
// buffer offset, out of order in the buffer.
//   RING gpa 0x0010_0000, 0x90000 (room for a 32768-entry ring)
//   DATA gpa 0x4000_0000, 256 KiB
//   ADJ  gpa right after DATA, 64 KiB: adjacent in guest physical space, elsewhere in the buffer
//   HIGH gpa 0x1_0000_0000, 64 KiB (above 4 GiB)
// Canary bytes (0xa5) fill every gap of the buffer between regions.
// ---------------------------------------------------------------------------
export const RING = 0x100000, RING_SIZE = 0x90000;
export const DATA = 0x40000000, DATA_SIZE = 0x40000;
export const ADJ = DATA + DATA_SIZE, ADJ_SIZE = 0x10000;
export const HIGH = 0x100000000, HIGH_SIZE = 0x10000;
export const OFF = {
  ring: 0x40,
  adj: 0x40 + RING_SIZE + 0x40,
  data: 0x40 + RING_SIZE + 0x40 + ADJ_SIZE + 0x40,
  high: 0x40 + RING_SIZE + 0x40 + ADJ_SIZE + 0x40 + DATA_SIZE + 0x40,
};
export const BUF_BYTES = OFF.high + HIGH_SIZE + 0x40;
export const R = { ring: 0, data: 1, adj: 2, high: 3 };
export const CANARY = 0xa5;

export function makeMemory(): GuestMemory {
  const sab = new SharedArrayBuffer(BUF_BYTES);
  const u8 = new Uint8Array(sab);
  u8.fill(CANARY);
  for (const [off, size] of [[OFF.ring, RING_SIZE], [OFF.adj, ADJ_SIZE], [OFF.data, DATA_SIZE], [OFF.high, HIGH_SIZE]]) u8.fill(0, off, off + size);
  return new GuestMemory([
    { guestPhysAddr: RING, size: RING_SIZE, buffer: sab, bufferOffset: OFF.ring },
    { guestPhysAddr: DATA, size: DATA_SIZE, buffer: sab, bufferOffset: OFF.data },
    { guestPhysAddr: ADJ, size: ADJ_SIZE, buffer: sab, bufferOffset: OFF.adj },
    { guestPhysAddr: HIGH, size: HIGH_SIZE, buffer: sab, bufferOffset: OFF.high },
  ]);
}

/** Every byte of the buffer outside the four regions still holds the canary. */
export function assertCanaries(mem: GuestMemory): void {
  const u8 = mem.bytes[0].u8;
  const regions = [[OFF.ring, RING_SIZE], [OFF.adj, ADJ_SIZE], [OFF.data, DATA_SIZE], [OFF.high, HIGH_SIZE]].sort((a, b) => a[0] - b[0]);
  let at = 0;
  for (const [off, size] of regions) {
    for (let i = at; i < off; i++) assert.equal(u8[i], CANARY, `canary byte at buffer offset 0x${i.toString(16)} overwritten`);
    at = off + size;
  }
  for (let i = at; i < u8.length; i++) assert.equal(u8[i], CANARY, `canary byte at buffer offset 0x${i.toString(16)} overwritten`);
}

/** Expected (region, buffer offset) of a guest address. */
export function where(addr: number): [number, number] {
  if (addr >= HIGH) return [R.high, OFF.high + addr - HIGH];
  if (addr >= ADJ) return [R.adj, OFF.adj + addr - ADJ];
  if (addr >= DATA) return [R.data, OFF.data + addr - DATA];
  return [R.ring, OFF.ring + addr - RING];
}

export interface Pair {
  mem: GuestMemory;
  layout: QueueLayout;
  drv: PackedDriverQueue;
  dev: PackedDeviceQueue;
  chain: DescChain;
  opts: QueueOptions;
}

export function pair(size: number, opts: Partial<QueueOptions> = {}, mem = makeMemory(), layout = contiguousPackedLayout(RING, size)): Pair {
  const o: QueueOptions = { eventIdx: false, indirect: false, inOrder: false, index: 5, ...opts };
  const drv = new PackedDriverQueue(mem, layout, o);
  // The device gets its own GuestMemory over the same buffers, as a worker would.
  const devMem = new GuestMemory(mem.specs);
  const dev = new PackedDeviceQueue(devMem, layout, o);
  return { mem, layout, drv, dev, chain: new DescChain(devMem, 4), opts: o };
}

/** A raw descriptor as stored in the ring. */
export interface RawDesc { addr: number; len: number; id: number; flags: number }

export function readDesc(mem: GuestMemory, addr: number): RawDesc {
  const v = new DataView(mem.read(addr, 16).buffer);
  return { addr: v.getUint32(4, true) * 2 ** 32 + v.getUint32(0, true), len: v.getUint32(8, true), id: v.getUint16(12, true), flags: v.getUint16(14, true) };
}

export function writeDesc(mem: GuestMemory, addr: number, d: RawDesc): void {
  const v = new DataView(new ArrayBuffer(16));
  v.setUint32(0, d.addr % 2 ** 32, true);
  v.setUint32(4, Math.floor(d.addr / 2 ** 32), true);
  v.setUint32(8, d.len, true);
  v.setUint16(12, d.id, true);
  v.setUint16(14, d.flags, true);
  mem.write(addr, new Uint8Array(v.buffer));
}

/** Event suppression structure: [off_wrap, flags]. */
export function readEvent(mem: GuestMemory, addr: number): [number, number] {
  const v = new DataView(mem.read(addr, 4).buffer);
  return [v.getUint16(0, true), v.getUint16(2, true)];
}

export function writeEvent(mem: GuestMemory, addr: number, offWrap: number, flags: number): void {
  const v = new DataView(new ArrayBuffer(4));
  v.setUint16(0, offWrap, true);
  v.setUint16(2, flags, true);
  mem.write(addr, new Uint8Array(v.buffer));
}

/** Check the device's chain against the buffers the driver added (no region crossing). */
export function assertChain(c: DescChain, id: number, descs: number, bufs: readonly BufferSpec[]): void {
  assert.equal(c.id, id, 'chain id');
  assert.equal(c.descs, descs, 'chain descs');
  assert.equal(c.count, bufs.length, 'piece count');
  const readable = bufs.filter((b) => !b.writable);
  assert.equal(c.readable, readable.length, 'readable count');
  assert.equal(c.readableBytes, readable.reduce((s, b) => s + b.len, 0));
  assert.equal(c.writableBytes, bufs.filter((b) => b.writable).reduce((s, b) => s + b.len, 0));
  bufs.forEach((b, i) => {
    const [r, off] = where(b.addr);
    assert.equal(c.region[i], r, `piece ${i} region`);
    assert.equal(c.offset[i], off, `piece ${i} offset`);
    assert.equal(c.len[i], b.len, `piece ${i} len`);
  });
}

/** Deterministic pseudo-random numbers (xorshift32) for loops that need variety. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s;
  };
}
