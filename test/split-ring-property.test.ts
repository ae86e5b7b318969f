import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { SplitDeviceQueue } from '../src/virtio/split/device.js';
import { SplitDriverQueue, type BufferSpec } from '../src/virtio/split/driver.js';
import { contiguousLayout, type SplitQueueLayout } from '../src/virtio/split/layout.js';

// Guest memory: rings, two buffer regions (one above 4 GiB), one region for indirect tables.
const RING = 0x10000, DATA = 0x40000000, HIGH = 0x100000000, TABLES = 0x2000000;
const REGION = 0x10000;
const OFF = { ring: 0, data: REGION, high: 2 * REGION, tables: 3 * REGION };
const R = { ring: 0, data: 1, high: 2, tables: 3 };

function makeMemory(): GuestMemory {
  const sab = new SharedArrayBuffer(4 * REGION);
  return new GuestMemory([
    { guestPhysAddr: RING, size: REGION, buffer: sab, bufferOffset: OFF.ring },
    { guestPhysAddr: DATA, size: REGION, buffer: sab, bufferOffset: OFF.data },
    { guestPhysAddr: HIGH, size: REGION, buffer: sab, bufferOffset: OFF.high },
    { guestPhysAddr: TABLES, size: REGION, buffer: sab, bufferOffset: OFF.tables },
  ]);
}

const MEM = makeMemory(); // the driver constructor zeroes the rings, so one memory serves every run

interface Cfg { size: number; eventIdx: boolean; indirect: boolean; start: number }

interface Rig {
  mem: GuestMemory;
  layout: SplitQueueLayout;
  drv: SplitDriverQueue;
  dev: SplitDeviceQueue;
  chain: DescChain;
  view: DataView; // over the ring region's buffer
}

const u16 = (rig: Rig, gpa: number) => rig.view.getUint16(OFF.ring + gpa - RING, true);
const put16 = (rig: Rig, gpa: number, v: number) => rig.view.setUint16(OFF.ring + gpa - RING, v, true);

/** Fresh queues whose ring indices all start at cfg.start (as if that many chains had round-tripped). */
function rig(cfg: Cfg): Rig {
  const layout = contiguousLayout(RING, cfg.size);
  const o = { eventIdx: cfg.eventIdx, indirect: cfg.indirect, index: 1 };
  const drv = new SplitDriverQueue(MEM, layout, o);
  const dev = new SplitDeviceQueue(new GuestMemory(MEM.specs), layout, o);
  const r: Rig = { mem: MEM, layout, drv, dev, chain: new DescChain(MEM, cfg.size), view: new DataView(MEM.bytes[R.ring].u8.buffer) };
  if (cfg.start !== 0) {
    drv.availIdx = cfg.start;
    drv.publish();
    drv.lastUsedIdx = cfg.start;
    put16(r, layout.usedAddr + 2, cfg.start);
    dev.setBase(cfg.start, cfg.start);
    put16(r, layout.availAddr + 4 + 2 * cfg.size, cfg.start); // used_event
    put16(r, layout.usedAddr + 4 + 8 * cfg.size, cfg.start); // avail_event
  }
  return r;
}

/** The spec's window, computed by enumeration: is `event` one of old .. new-1 (mod 2^16)? */
function inWindow(event: number, newIdx: number, oldIdx: number): boolean {
  for (let i = oldIdx; i !== newIdx; i = (i + 1) & 0xffff) if (i === event) return true;
  return false;
}

const whereOf = (addr: number): [number, number] =>
  addr >= HIGH ? [R.high, OFF.high + addr - HIGH] : [R.data, OFF.data + addr - DATA];

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------
type BufGen = { len: number; off: number; high: boolean };
type Op =
  | { t: 'add'; bufs: BufGen[]; nRead: number; indirect: boolean; overlong: boolean }
  | { t: 'addOne'; buf: BufGen; writable: boolean }
  | { t: 'dpub' }
  | { t: 'pop'; k: number }
  | { t: 'complete'; picks: { pick: number; lenSel: number }[] }
  | { t: 'upub' }
  | { t: 'reclaim'; k: number }
  | { t: 'drvNotify'; enable: boolean }
  | { t: 'devNotify'; enable: boolean };

const bufArb: fc.Arbitrary<BufGen> = fc.record({ len: fc.integer({ min: 0, max: 2048 }), off: fc.nat(), high: fc.boolean() });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('add' as const), bufs: fc.array(bufArb, { minLength: 1, maxLength: 4 }), nRead: fc.nat(4), indirect: fc.boolean(),
      overlong: fc.nat(15).map((x) => x === 0), // otherwise the chain is cut to the queue size
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('addOne' as const), buf: bufArb, writable: fc.boolean() }) },
  { weight: 3, arbitrary: fc.constant({ t: 'dpub' as const }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('pop' as const), k: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('complete' as const), picks: fc.array(fc.record({ pick: fc.nat(), lenSel: fc.nat() }), { minLength: 1, maxLength: 6 }) }) },
  { weight: 3, arbitrary: fc.constant({ t: 'upub' as const }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('reclaim' as const), k: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('drvNotify' as const), enable: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('devNotify' as const), enable: fc.boolean() }) },
);
const cfgArb: fc.Arbitrary<Cfg> = fc.record({
  size: fc.constantFrom(1, 2, 4, 8, 16),
  eventIdx: fc.boolean(),
  indirect: fc.boolean(),
  start: fc.oneof(fc.constant(0), fc.integer({ min: 0xffc0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })),
});

const addrOf = (b: BufGen) => (b.high ? HIGH : DATA) + (b.off % (REGION - b.len + 1));

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------
interface Rec { head: number; token: number; bufs: BufferSpec[]; descs: number; writable: number; indirect: boolean }
interface Done { rec: Rec; len: number }

class Model {
  outstanding = new Map<number, Rec>(); // head -> chain, from add until reclaim
  unpublished: Rec[] = [];
  avail: Rec[] = []; // published, not popped
  inflight: Rec[] = []; // popped by the device
  pushed: Done[] = []; // pushUsed, not published
  used: Done[] = []; // published, not reclaimed
  adds = 0; availPublished = 0; pops = 0; pushes = 0; usedPublished = 0; reclaims = 0;
  token = 0;
  popCount = new Map<number, number>(); // token -> times popped
  reclaimed = new Set<number>();
  // Notification state each side has written.
  usedNoNotify = false; availEvent: number; // device -> driver
  availNoInterrupt = false; usedEvent: number; // driver -> device
  constructor(readonly cfg: Cfg) {
    this.availEvent = cfg.start;
    this.usedEvent = cfg.start;
  }
  idx(n: number): number { return (this.cfg.start + n) & 0xffff; }
  descsOut(): number { let s = 0; for (const r of this.outstanding.values()) s += r.descs; return s; }
}

function popAndCheck(r: Rig, m: Model): void {
  const rec = m.avail.shift()!;
  r.dev.pop(r.chain);
  const c = r.chain;
  assert.equal(c.id, rec.head, 'popped chains come in avail order');
  assert.equal(c.count, rec.bufs.length);
  assert.equal(c.readable, rec.bufs.filter((b) => !b.writable).length);
  assert.equal(c.writableBytes, rec.writable);
  rec.bufs.forEach((b, i) => {
    const [reg, off] = whereOf(b.addr);
    assert.equal(c.region[i], reg);
    assert.equal(c.offset[i], off);
    assert.equal(c.len[i], b.len);
  });
  m.pops++;
  m.popCount.set(rec.token, (m.popCount.get(rec.token) ?? 0) + 1);
  m.inflight.push(rec);
}

function pushUsed(r: Rig, m: Model, rec: Rec, len: number): void {
  r.dev.pushUsed(rec.head, len);
  m.pushes++;
  m.pushed.push({ rec, len });
}

function devicePublish(r: Rig, m: Model): void {
  const expect = m.pushed.length === 0 ? false
    : m.cfg.eventIdx ? inWindow(m.usedEvent, m.idx(m.pushes), m.idx(m.usedPublished)) : !m.availNoInterrupt;
  assert.equal(r.dev.publish(), expect, 'device publish() notification decision');
  m.used.push(...m.pushed);
  m.usedPublished = m.pushes;
  m.pushed = [];
}

function driverPublish(r: Rig, m: Model): void {
  const expect = m.unpublished.length === 0 ? false
    : m.cfg.eventIdx ? inWindow(m.availEvent, m.idx(m.adds), m.idx(m.availPublished)) : !m.usedNoNotify;
  assert.equal(r.drv.publish(), expect, 'driver publish() notification decision');
  m.avail.push(...m.unpublished);
  m.availPublished = m.adds;
  m.unpublished = [];
}

function reclaimOne(r: Rig, m: Model): void {
  const d = m.used.shift()!;
  assert.equal(r.drv.popUsed(), d.rec.head, 'used entries come back in used-ring order');
  assert.equal(r.drv.usedLen, d.len);
  assert.equal(r.drv.usedToken, d.rec.token);
  assert.ok(!m.reclaimed.has(d.rec.token), 'reclaimed once');
  m.reclaimed.add(d.rec.token);
  m.outstanding.delete(d.rec.head);
  m.reclaims++;
}

function apply(r: Rig, m: Model, op: Op): void {
  const { drv, dev } = r;
  switch (op.t) {
    case 'add':
    case 'addOne': {
      const gens = op.t === 'add' ? (op.overlong ? op.bufs : op.bufs.slice(0, m.cfg.size)) : [op.buf];
      const nRead = op.t === 'add' ? Math.min(op.nRead, gens.length) : op.writable ? 0 : 1;
      const bufs: BufferSpec[] = gens.map((g, i) => ({ addr: addrOf(g), len: g.len, writable: i >= nRead }));
      const useInd = op.t === 'add' && op.indirect && m.cfg.indirect;
      const descs = useInd ? 1 : bufs.length;
      const token = ++m.token;
      const table = TABLES + 64 * (token % 1024);
      if (bufs.length > m.cfg.size) {
        assert.throws(() => drv.add(bufs, token, useInd ? table : undefined), RangeError);
        return;
      }
      const head = op.t === 'add' ? drv.add(bufs, token, op.indirect ? table : undefined) : drv.addOne(bufs[0].addr, bufs[0].len, bufs[0].writable, token);
      if (descs > m.cfg.size - m.descsOut()) { assert.equal(head, -1, 'add fails exactly when too few descriptors are free'); return; }
      assert.ok(head >= 0 && head < m.cfg.size, `add returned ${head}`);
      assert.ok(!m.outstanding.has(head), `head ${head} handed out twice`);
      const rec: Rec = { head, token, bufs, descs, writable: bufs.filter((b) => b.writable).reduce((s, b) => s + b.len, 0), indirect: useInd };
      m.outstanding.set(head, rec);
      m.unpublished.push(rec);
      m.adds++;
      return;
    }
    case 'dpub': return driverPublish(r, m);
    case 'pop': {
      const n = Math.min(op.k, dev.pending());
      for (let i = 0; i < n; i++) popAndCheck(r, m);
      return;
    }
    case 'complete':
      for (const { pick, lenSel } of op.picks) {
        if (m.inflight.length === 0) break;
        const [rec] = m.inflight.splice(pick % m.inflight.length, 1);
        pushUsed(r, m, rec, lenSel % (rec.writable + 1));
      }
      return;
    case 'upub': return devicePublish(r, m);
    case 'reclaim': {
      const n = Math.min(op.k, drv.usedPending());
      for (let i = 0; i < n; i++) reclaimOne(r, m);
      return;
    }
    case 'drvNotify':
      drv.setNotification(op.enable);
      if (m.cfg.eventIdx) { if (op.enable) m.usedEvent = m.idx(m.reclaims); } else m.availNoInterrupt = !op.enable;
      return;
    case 'devNotify':
      dev.setNotification(op.enable);
      if (m.cfg.eventIdx) { if (op.enable) m.availEvent = m.idx(m.pops); } else m.usedNoNotify = !op.enable;
      return;
  }
}

function checkInvariants(r: Rig, m: Model): void {
  const { drv, dev, layout } = r;
  const size = m.cfg.size;
  assert.equal(drv.numFree + m.descsOut(), size, 'numFree + outstanding descriptors == size');
  const pending = dev.pending();
  assert.ok(pending <= size, 'pending() never exceeds the queue size');
  assert.equal(pending, m.avail.length);
  assert.equal(drv.usedPending(), m.used.length);
  assert.equal(drv.availIdx, m.idx(m.adds));
  assert.equal(u16(r, layout.availAddr + 2), m.idx(m.availPublished), 'avail->idx');
  assert.equal(dev.lastAvailIdx, m.idx(m.pops));
  assert.equal(dev.usedIdx, m.idx(m.pushes));
  assert.equal(u16(r, layout.usedAddr + 2), m.idx(m.usedPublished), 'used->idx');
  assert.equal(drv.lastUsedIdx, m.idx(m.reclaims));
  // The descriptors of outstanding direct chains (followed through the raw
  // `next` fields the driver wrote) are pairwise disjoint.
  const owner = new Int32Array(size).fill(-1);
  let count = 0;
  for (const rec of m.outstanding.values()) {
    let d = rec.head;
    for (let i = 0; i < rec.descs; i++) {
      assert.equal(owner[d], -1, `descriptor ${d} belongs to two outstanding chains`);
      owner[d] = rec.head;
      count++;
      if (i + 1 < rec.descs) d = u16(r, layout.descAddr + 16 * d + 14);
    }
  }
  assert.equal(count, size - drv.numFree);
}

/** Publish, pop, complete and reclaim everything left. */
function drain(r: Rig, m: Model): void {
  driverPublish(r, m);
  while (m.avail.length) popAndCheck(r, m);
  while (m.inflight.length) { const rec = m.inflight.shift()!; pushUsed(r, m, rec, rec.writable); }
  devicePublish(r, m);
  while (m.used.length) reclaimOne(r, m);
  checkInvariants(r, m);
}

test('model-based: random add / publish / pop / complete / reclaim sequences match the model', () => {
  fc.assert(
    fc.property(cfgArb, fc.array(opArb, { maxLength: 100, size: 'max' }), (cfg, ops) => {
      const r = rig(cfg);
      const m = new Model(cfg);
      checkInvariants(r, m);
      for (const op of ops) {
        apply(r, m, op);
        checkInvariants(r, m);
      }
      drain(r, m);
      assert.equal(m.outstanding.size, 0);
      assert.equal(r.drv.numFree, cfg.size);
      for (let t = 1; t <= m.token; t++) {
        const added = m.popCount.has(t) || m.reclaimed.has(t);
        if (added) {
          assert.equal(m.popCount.get(t), 1, `token ${t} popped exactly once`);
          assert.ok(m.reclaimed.has(t), `token ${t} reclaimed`);
        }
      }
      assert.equal(m.popCount.size, m.adds, 'every chain added was popped');
      assert.equal(m.reclaimed.size, m.adds);
    }),
    { numRuns: 1000 },
  );
});

test('model-based: long runs starting just below the 16-bit wrap', () => {
  fc.assert(
    fc.property(
      fc.record({ size: fc.constantFrom(1, 2, 4, 8), eventIdx: fc.boolean(), indirect: fc.boolean(), start: fc.integer({ min: 0xffe0, max: 0xffff }) }),
      fc.array(opArb, { minLength: 150, maxLength: 400, size: 'max' }),
      (cfg, ops) => {
        const r = rig(cfg);
        const m = new Model(cfg);
        for (const op of ops) {
          apply(r, m, op);
          checkInvariants(r, m);
        }
        drain(r, m);
        assert.equal(m.reclaimed.size, m.adds);
      },
    ),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------
// No lost wake-ups: both sides sleep, and are woken only when the other
// side's publish() says so. With the documented protocol (enable, then
// re-check) no published work may ever be left unnoticed.
// ---------------------------------------------------------------------------
type WakeOp =
  | { t: 'produce'; n: number; len: number }
  | { t: 'timer'; k: number };

test('no lost notifications: work published is always noticed (with and without EVENT_IDX)', () => {
  const wakeOp: fc.Arbitrary<WakeOp> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ t: fc.constant('produce' as const), n: fc.integer({ min: 1, max: 10 }), len: fc.integer({ min: 1, max: 1500 }) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('timer' as const), k: fc.integer({ min: 0, max: 10 }) }) },
  );
  fc.assert(
    fc.property(cfgArb, fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.array(wakeOp, { maxLength: 80, size: 'max' }), (cfg, holdPattern, ops) => {
      const r = rig(cfg);
      const { drv, dev, chain } = r;
      const held: { head: number; len: number }[] = []; // popped, not yet completed by the device
      let kicks = 0, irqs = 0, devRuns = 0, produced = 0, consumed = 0;

      const driverIrq = () => {
        irqs++;
        for (;;) {
          drv.setNotification(false);
          let n = drv.usedPending();
          while (n-- > 0) { drv.popUsed(); consumed++; }
          drv.setNotification(true);
          if (drv.usedPending() === 0) return;
        }
      };
      const completeHeld = (k: number) => {
        for (let i = 0; i < k && held.length; i++) { const h = held.shift()!; dev.pushUsed(h.head, h.len); }
        if (dev.publish()) driverIrq();
      };
      const deviceRun = () => {
        kicks++;
        for (;;) {
          dev.setNotification(false);
          let n = dev.pending();
          assert.ok(n <= cfg.size);
          while (n-- > 0) {
            dev.pop(chain);
            held.push({ head: chain.id, len: chain.writableBytes });
          }
          // Complete part of what is held, per a generated pattern; keep the rest.
          completeHeld(holdPattern[devRuns++ % holdPattern.length] % (held.length + 1));
          dev.setNotification(true);
          if (dev.pending() === 0) return;
        }
      };

      for (const op of ops) {
        if (op.t === 'produce') {
          for (let i = 0; i < op.n; i++) {
            if (drv.addOne(DATA + 64 * (i % 64), op.len, true, produced) < 0) break;
            produced++;
          }
          if (drv.publish()) deviceRun();
        } else {
          completeHeld(op.k);
        }
        // Nothing published is left unnoticed by a sleeping side.
        assert.equal(dev.pending(), 0, 'device missed an available-buffer notification');
        assert.equal(drv.usedPending(), 0, 'driver missed a used-buffer notification');
        assert.equal(drv.numFree + held.length, cfg.size);
      }
      completeHeld(held.length);
      assert.equal(drv.usedPending(), 0);
      assert.equal(consumed, produced);
      assert.equal(drv.numFree, cfg.size);
      assert.ok(kicks <= produced && irqs <= produced);
    }),
    { numRuns: 300 },
  );
});

test('EVENT_IDX suppresses: a device that never re-arms gets exactly one kick per 65536 indices', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff }), fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 60, size: 'max' }), (start, batches) => {
      const r = rig({ size: 4, eventIdx: true, indirect: false, start });
      const { drv, dev, chain } = r;
      let kicks = 0;
      for (const b of batches) {
        for (let i = 0; i < b; i++) drv.addOne(DATA, 8, false, i);
        if (drv.publish()) kicks++;
        while (dev.pending()) { dev.pop(chain); dev.pushUsed(chain.id, 0); }
        dev.publish();
        while (drv.usedPending()) drv.popUsed();
      }
      // avail_event stayed at `start`: only the publish whose window covered it notified.
      assert.equal(kicks, 1);
    }),
    { numRuns: 200 },
  );
});
