/**
 * Dirty-page logging for live migration (vhost-user.rst "Migration"):
 * DirtyLog's bit layout, and the logging device queues (virtio/logged-queue.ts)
 * over split and packed rings: after the device receives into random chains
 * (RX: pop / popSingle, partial writes, rewinds, mergeable-style runs) or
 * completes transmit chains (TX), every guest page whose bytes changed is
 * marked in the log, and no page is marked that the device did not write
 * (the used ring or descriptor ring, the event structures, the first `len`
 * writable bytes of each used chain). log_guest_addr moves the used ring's
 * marks; without a log the plain queue classes are picked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { DirtyLog, VHOST_LOG_PAGE } from '../src/virtio/dirty-log.js';
import { LoggedDeviceQueue } from '../src/virtio/logged-queue.js';
import { contiguousQueueLayout, createDeviceQueue, createDriverQueue, queueBytes } from '../src/virtio/ring.js';
import { SplitDeviceQueue } from '../src/virtio/split/device.js';
import { PackedDeviceQueue } from '../src/virtio/packed/device.js';
import type { BufferSpec, DeviceQueue, DriverQueue, QueueLayout, RingFormat } from '../src/virtio/queue.js';

test('DirtyLog: bit p%8 of byte p/8 per 4 KiB page, ranges span pages, pages past the end are counted and never written', () => {
  const sab = new SharedArrayBuffer(16);
  const log = new DirtyLog(sab, 8, 4); // 4 bytes: pages 0..31
  log.mark(9 * VHOST_LOG_PAGE + 100, 1);
  assert.deepEqual([...new Uint8Array(sab)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0b10, 0, 0, 0, 0, 0, 0]);
  log.mark(VHOST_LOG_PAGE - 1, 2); // pages 0 and 1
  log.mark(5 * VHOST_LOG_PAGE, 0); // nothing
  assert.deepEqual(log.dirtyPages(), [0, 1, 9]);
  // As a little-endian u64, bit N of the log is page N (QEMU reads it that way).
  assert.equal(new DataView(sab).getBigUint64(8, true), (1n << 0n) | (1n << 1n) | (1n << 9n));
  log.mark(30 * VHOST_LOG_PAGE, 4 * VHOST_LOG_PAGE); // pages 30..33: 32 and 33 are past the end
  assert.deepEqual(log.dirtyPages(), [0, 1, 9, 30, 31]);
  assert.equal(log.dropped, 2);
  assert.deepEqual([...new Uint8Array(sab, 0, 8)], new Array(8).fill(0), 'nothing written before the log');
  assert.deepEqual([...new Uint8Array(sab, 12, 4)], new Array(4).fill(0), 'nothing written after the log');
  // Above 2^32 bytes (page numbers past 2^20) and far past the end: counted, no wrap-around into low pages.
  log.mark(2 ** 40, 1);
  assert.equal(log.dropped, 3);
  assert.deepEqual(log.dirtyPages(), [0, 1, 9, 30, 31]);
  assert.throws(() => new DirtyLog(sab, 8, 9), RangeError);
});

// ---------------------------------------------------------------------------
// Guest memory: two regions adjacent in guest physical space (a buffer may
// cross from one into the other), at odd offsets of one SharedArrayBuffer in
// reverse order, so a page is a guest physical page, not a buffer one.
//   R0 gpa 0x00000, 0x40000 bytes at buffer offset 0x30048
//   R1 gpa 0x40000, 0x20000 bytes at buffer offset 0x8
// Rings at 0x1f00 (parts cross page boundaries), buffers in [0x10000, 0x60000).

const R0 = { gpa: 0, size: 0x40000, off: 0x30048 };
const R1 = { gpa: 0x40000, size: 0x20000, off: 0x8 };
const RING_AT = 0x1f00;
const DATA_LO = 0x10000, DATA_HI = 0x60000;
const LOG_BYTES = 64; // pages 0..511: guest memory and the log_guest_addr below
const USED_LOG_ADDR = 0x100000 + 0x123; // outside guest memory, inside the log (vhost-user.rst allows that)

function makeMemory(): GuestMemory {
  const sab = new SharedArrayBuffer(R0.off + R0.size + 8);
  return new GuestMemory([
    { guestPhysAddr: R0.gpa, size: R0.size, buffer: sab, bufferOffset: R0.off },
    { guestPhysAddr: R1.gpa, size: R1.size, buffer: sab, bufferOffset: R1.off },
  ]);
}

/** A copy of every region's bytes. */
function snapshot(mem: GuestMemory): Uint8Array[] {
  return mem.specs.map((s) => new Uint8Array(s.buffer, s.bufferOffset ?? 0, s.size).slice());
}

/** Guest pages whose bytes differ from `before`. */
function changedPages(mem: GuestMemory, before: Uint8Array[]): Set<number> {
  const out = new Set<number>();
  mem.specs.forEach((s, r) => {
    const now = new Uint8Array(s.buffer, s.bufferOffset ?? 0, s.size);
    const old = before[r];
    for (let i = 0; i < s.size; i++) if (now[i] !== old[i]) out.add(Math.floor((s.guestPhysAddr + i) / VHOST_LOG_PAGE));
  });
  return out;
}

/** Zero guest bytes [addr, addr+len), across regions. */
function zero(mem: GuestMemory, addr: number, len: number): void {
  while (len > 0) {
    const r = mem.findStart(addr);
    assert.ok(r >= 0);
    const n = Math.min(len, mem.end[r] - addr);
    mem.bytes[r].u8.fill(0, mem.off, mem.off + n);
    addr += n;
    len -= n;
  }
}

function pagesOf(addr: number, len: number, into: Set<number>): void {
  if (len <= 0) return;
  for (let p = Math.floor(addr / VHOST_LOG_PAGE); p <= Math.floor((addr + len - 1) / VHOST_LOG_PAGE); p++) into.add(p);
}

interface Cfg { format: RingFormat; size: number; eventIdx: boolean; inOrder: boolean; logAddr: boolean }

interface Rig {
  mem: GuestMemory;
  layout: QueueLayout;
  drv: DriverQueue;
  dev: DeviceQueue;
  log: DirtyLog;
  chain: DescChain;
  /** Driver's record of each outstanding chain by token. */
  bufs: Map<number, BufferSpec[]>;
}

function rig(cfg: Cfg): Rig {
  const mem = makeMemory();
  const layout = contiguousQueueLayout(cfg.format, RING_AT, cfg.size);
  assert.ok(RING_AT + queueBytes(cfg.format, cfg.size) <= DATA_LO);
  const o = { eventIdx: cfg.eventIdx, indirect: false, inOrder: cfg.inOrder, index: 0 };
  const drv = createDriverQueue(mem, layout, o);
  const log = new DirtyLog(new SharedArrayBuffer(LOG_BYTES));
  const devMem = new GuestMemory(mem.specs);
  const dev = createDeviceQueue(devMem, layout, { ...o, dirtyLog: { log, usedLogAddr: cfg.logAddr ? USED_LOG_ADDR : -1 } });
  assert.ok(dev instanceof LoggedDeviceQueue);
  return { mem, layout, drv, dev, log, chain: new DescChain(devMem, 1), bufs: new Map() };
}

/** Pages the device may write besides buffers: split, the used ring (at log_guest_addr when given); packed, the descriptor ring and device event area. */
function ringPages(cfg: Cfg, layout: QueueLayout): Set<number> {
  const s = new Set<number>();
  if (cfg.format === 'split') pagesOf(cfg.logAddr ? USED_LOG_ADDR : layout.deviceAddr, 6 + 8 * cfg.size, s);
  else {
    pagesOf(layout.descAddr, 16 * cfg.size, s);
    pagesOf(layout.deviceAddr, 4, s);
  }
  return s;
}

type Step = { bufs: { off: number; len: number }[]; single: boolean; frac: number; rewind: boolean; notify: number };

const stepArb: fc.Arbitrary<Step> = fc.record({
  bufs: fc.array(fc.record({ off: fc.nat(), len: fc.integer({ min: 1, max: 9000 }) }), { minLength: 1, maxLength: 4 }),
  single: fc.boolean(),
  frac: fc.double({ min: 0, max: 1, noNaN: true }),
  rewind: fc.boolean(),
  notify: fc.integer({ min: 0, max: 2 }),
});
const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  format: fc.constantFrom<RingFormat>('split', 'packed'),
  size: fc.constantFrom(4, 8, 16, 256),
  eventIdx: fc.boolean(),
  inOrder: fc.boolean(),
  logAddr: fc.boolean(),
}).map((c) => (c.format === 'packed' && c.size === 16 ? { ...c, size: 13 } : c));

/**
 * One round: the driver reclaims what was used and adds chains (its own
 * writes, before the snapshot); the device pops them (popSingle or pop),
 * writes bytes 1..255 into the first `len` writable bytes of each (buffers
 * were zeroed), returns them, publishes and sets its notifications. The log
 * must then hold every changed page, and only pages the device wrote.
 */
function rxRound(r: Rig, cfg: Cfg, steps: Step[], seed: number): void {
  const { drv, dev, log, mem } = r;
  while (drv.usedPending() > 0) { drv.popUsed(); r.bufs.delete(drv.usedToken); }
  let token = seed * 1000;
  for (const s of steps) {
    if (drv.numFree < s.bufs.length) break;
    const bufs = s.bufs.map((b) => {
      const addr = DATA_LO + (b.off % (DATA_HI - DATA_LO - b.len));
      return { addr, len: b.len, writable: true };
    });
    for (const b of bufs) zero(mem, b.addr, b.len); // a driver write
    const t = token++;
    if (drv.add(bufs, t) < 0) break;
    r.bufs.set(t, bufs);
  }
  drv.publish();
  const before = snapshot(mem);
  log.clear();
  const allowed = ringPages(cfg, r.layout);
  let k = 0;
  let fill = (seed % 255) + 1;
  for (const s of steps) {
    if (dev.pending() === 0) break;
    const m = dev.mark();
    let id: number, descs: number, writable: number;
    const pieces: { region: number; off: number; len: number }[] = [];
    const reg = s.single ? dev.popSingle(2, 1) : -1;
    if (reg >= 0) {
      id = dev.singleId; descs = 1; writable = dev.singleLen;
      pieces.push({ region: reg, off: dev.singleOff, len: dev.singleLen });
    } else {
      dev.pop(r.chain);
      id = r.chain.id; descs = r.chain.descs; writable = r.chain.writableBytes;
      for (let i = r.chain.readable; i < r.chain.count; i++) pieces.push({ region: r.chain.region[i], off: r.chain.offset[i], len: r.chain.len[i] });
    }
    const len = Math.floor(s.frac * writable);
    // Write `len` bytes over the pieces (what the net layer does), then return the chain or give it back.
    let left = len;
    for (const p of pieces) {
      const n = Math.min(left, p.len);
      const u8 = mem.bytes[p.region].u8;
      for (let i = 0; i < n; i++) u8[p.off + i] = fill;
      if (!s.rewind) pagesOf(mem.start[p.region] + (p.off - mem.base[p.region]), n, allowed);
      left -= n;
    }
    fill = (fill % 255) + 1;
    if (s.rewind) {
      // Given back: not used, so its bytes need no mark now (they will be rewritten when it is used). Undo them so the diff ignores them.
      for (const p of pieces) {
        const o = p.off - mem.base[p.region];
        mem.bytes[p.region].u8.set(before[p.region].subarray(o, o + p.len), p.off);
      }
      dev.rewind(m);
      break; // the same chain comes next
    }
    dev.pushUsed(id, len, descs);
    if (++k % 3 === 0) dev.publish();
    if (s.notify > 0) dev.setNotification(s.notify === 2);
  }
  dev.publish();
  const changed = changedPages(mem, before);
  const dirty = new Set(log.dirtyPages());
  for (const p of changed) {
    // A used-ring page changes at its own address; with log_guest_addr it is logged there instead.
    const ringPage = cfg.format === 'split' && cfg.logAddr && p >= Math.floor(r.layout.deviceAddr / VHOST_LOG_PAGE) && p <= Math.floor((r.layout.deviceAddr + 6 + 8 * cfg.size - 1) / VHOST_LOG_PAGE) && p < Math.floor(DATA_LO / VHOST_LOG_PAGE);
    if (!ringPage) assert.ok(dirty.has(p), `page ${p} (0x${(p * VHOST_LOG_PAGE).toString(16)}) changed but is not in the log; dirty ${[...dirty]}`);
  }
  for (const p of dirty) assert.ok(allowed.has(p), `page ${p} (0x${(p * VHOST_LOG_PAGE).toString(16)}) logged but the device never wrote there; allowed ${[...allowed]}`);
  if (k > 0 && cfg.format === 'split') assert.ok(dirty.has(Math.floor(((cfg.logAddr ? USED_LOG_ADDR : r.layout.deviceAddr) + 2) / VHOST_LOG_PAGE)), 'used->idx page logged');
  assert.equal(log.dropped, 0);
}

test('logging queues (split and packed, RX): after random chains are received into, exactly the written pages are in the log', () => {
  fc.assert(
    fc.property(cfgArb, fc.array(fc.array(stepArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 4 }), (cfg, rounds) => {
      const r = rig(cfg);
      rounds.forEach((steps, i) => rxRound(r, cfg, steps, i + 1));
    }),
    { numRuns: 60 },
  );
});

test('logging queues (split and packed, TX): completing transmit chains logs only the ring, never the buffers', () => {
  for (const format of ['split', 'packed'] as const) {
    for (const logAddr of [false, true]) {
      const cfg: Cfg = { format, size: 16, eventIdx: true, inOrder: format === 'packed', logAddr };
      const r = rig(cfg);
      for (let round = 0; round < 5; round++) {
        while (r.drv.usedPending() > 0) r.drv.popUsed();
        for (let i = 0; i < 6; i++) {
          const addr = DATA_LO + 0x3000 * (i + round);
          r.mem.write(addr, new Uint8Array(1500).fill(0x40 + i));
          assert.ok(r.drv.add([{ addr, len: 14, writable: false }, { addr: addr + 14, len: 1486, writable: false }], i) >= 0);
        }
        r.drv.publish();
        const before = snapshot(r.mem);
        r.log.clear();
        while (r.dev.pending() > 0) {
          r.dev.pop(r.chain);
          r.dev.pushUsed(r.chain.id, 0, r.chain.descs);
        }
        r.dev.publish();
        r.dev.setNotification(true);
        const dirty = r.log.dirtyPages();
        const ring = ringPages(cfg, r.layout);
        assert.ok(dirty.length > 0, `${format}: the used entries were logged`);
        for (const p of dirty) assert.ok(ring.has(p), `${format}: page ${p} logged outside the ring`);
        for (const p of changedPages(r.mem, before)) {
          if (format === 'packed' || !logAddr) assert.ok(dirty.includes(p), `${format}: changed page ${p} not logged`);
          else assert.ok(!dirty.includes(p), 'split with log_guest_addr: the used ring is logged there, not at its own page');
        }
        if (format === 'split' && logAddr) assert.ok(dirty.includes(Math.floor((USED_LOG_ADDR + 2) / VHOST_LOG_PAGE)), 'used->idx logged at log_guest_addr + 2');
      }
    }
  }
});

test('logging queues: notifications are logged where they are written (split flags / avail_event, packed device event area)', () => {
  for (const format of ['split', 'packed'] as const) {
    for (const eventIdx of [false, true]) {
      const cfg: Cfg = { format, size: 256, eventIdx, inOrder: false, logAddr: false };
      const r = rig(cfg);
      r.log.clear();
      r.dev.setNotification(true);
      const l = r.layout;
      const at = format === 'packed' ? l.deviceAddr : eventIdx ? l.deviceAddr + 4 + 8 * 256 : l.deviceAddr;
      assert.deepEqual(r.log.dirtyPages(), [Math.floor(at / VHOST_LOG_PAGE)], `${format} eventIdx=${eventIdx}`);
    }
  }
});

test('without a dirty log the plain queue classes are picked (the hot loop is unchanged)', () => {
  const mem = makeMemory();
  const o = { eventIdx: true, indirect: true, inOrder: false };
  assert.ok(createDeviceQueue(mem, contiguousQueueLayout('split', RING_AT, 64), o) instanceof SplitDeviceQueue);
  assert.ok(createDeviceQueue(mem, contiguousQueueLayout('packed', RING_AT, 64), o) instanceof PackedDeviceQueue);
});

test('logging queues: publish asks the inner queue for its state once after start (no allocation per publish), and used entries the inner queue completed before the first publish (inflight restore) are logged too', () => {
  for (const format of ['split', 'packed'] as const) {
    const size = 16;
    const mem = makeMemory();
    const layout = contiguousQueueLayout(format, RING_AT, size);
    const o = { eventIdx: true, indirect: false, inOrder: false, index: 0 };
    const drv = createDriverQueue(mem, layout, o);
    const devMem = new GuestMemory(mem.specs);
    const inner = createDeviceQueue(devMem, layout, o);
    let stateCalls = 0;
    const counted = new Proxy(inner, {
      get(t, k) {
        if (k === 'state') stateCalls++;
        const v = Reflect.get(t, k, t) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const log = new DirtyLog(new SharedArrayBuffer(LOG_BYTES));
    const dev = new LoggedDeviceQueue(counted, devMem, layout, true, { log, usedLogAddr: -1 });
    dev.setState(inner.state()); // as a worker starting from SET_VRING_BASE does (packed: wrap counters 1)
    const chain = new DescChain(devMem, 1);
    const ring = ringPages({ format, size, eventIdx: true, inOrder: false, logAddr: false }, layout);
    for (let round = 0; round < 6; round++) {
      while (drv.usedPending() > 0) drv.popUsed();
      for (let i = 0; i < 5; i++) assert.ok(drv.add([{ addr: DATA_LO + 0x1000 * i, len: 64, writable: false }], i) >= 0, `${format} round ${round}: add ${i} (free ${drv.numFree})`);
      drv.publish();
      const before = snapshot(mem);
      log.clear();
      // Round 0: the first chain is completed on the inner queue itself (as restoreInflight does), behind the wrapper's back.
      while (dev.pending() > 0) {
        dev.pop(chain);
        if (round === 0 && chain.id === 0) inner.pushUsed(chain.id, 0, chain.descs);
        else dev.pushUsed(chain.id, 0, chain.descs);
      }
      const calls = stateCalls;
      dev.publish();
      if (round > 0) assert.equal(stateCalls, calls, `${format}: no state() in publish once running`);
      for (const p of changedPages(mem, before)) assert.ok(log.isDirty(p), `${format} round ${round}: changed page ${p} not logged`);
      for (const p of log.dirtyPages()) assert.ok(ring.has(p), `${format}: page ${p} logged outside the ring`);
    }
    assert.equal(drv.usedPending(), 5, `${format}: the last round's chains came back`);
  }
});
