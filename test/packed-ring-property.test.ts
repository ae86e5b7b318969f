import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import type { BufferSpec } from '../src/virtio/queue.js';
import { PackedDeviceQueue } from '../src/virtio/packed/device.js';
import { PackedDriverQueue } from '../src/virtio/packed/driver.js';
import { contiguousPackedLayout, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, SCAN_LIMIT } from '../src/virtio/packed/layout.js';
import { DATA, HIGH, RING, assertCanaries, makeMemory, readEvent, where } from './support/packed.js';

const MEM = makeMemory(); // the driver constructor zeroes the ring parts, so one memory serves every run
const TABLES = DATA + 0x20000;

interface Cfg { size: number; eventIdx: boolean; indirect: boolean; inOrder: boolean }

interface Rig {
  mem: GuestMemory;
  drv: PackedDriverQueue;
  dev: PackedDeviceQueue;
  chain: DescChain;
  driverAddr: number;
  deviceAddr: number;
}

function rig(cfg: Cfg): Rig {
  const layout = contiguousPackedLayout(RING, cfg.size);
  const o = { eventIdx: cfg.eventIdx, indirect: cfg.indirect, inOrder: cfg.inOrder, index: 1 };
  const drv = new PackedDriverQueue(MEM, layout, o);
  const devMem = new GuestMemory(MEM.specs);
  const dev = new PackedDeviceQueue(devMem, layout, o);
  return { mem: MEM, drv, dev, chain: new DescChain(devMem, 1), driverAddr: layout.driverAddr, deviceAddr: layout.deviceAddr };
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------
type BufGen = { len: number; off: number; high: boolean };
type Op =
  | { t: 'add'; bufs: BufGen[]; nRead: number; indirect: boolean }
  | { t: 'addOne'; buf: BufGen; writable: boolean }
  | { t: 'dpub' }
  | { t: 'pop'; k: number }
  | { t: 'popRewind'; k: number }
  | { t: 'complete'; picks: { pick: number; lenSel: number; zero: boolean }[] }
  | { t: 'upub' }
  | { t: 'reclaim'; k: number }
  | { t: 'drvNotify'; enable: boolean }
  | { t: 'devNotify'; enable: boolean };

const bufArb: fc.Arbitrary<BufGen> = fc.record({ len: fc.integer({ min: 0, max: 2048 }), off: fc.nat(), high: fc.boolean() });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('add' as const), bufs: fc.array(bufArb, { minLength: 1, maxLength: 4 }), nRead: fc.nat(4), indirect: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('addOne' as const), buf: bufArb, writable: fc.boolean() }) },
  { weight: 3, arbitrary: fc.constant({ t: 'dpub' as const }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('pop' as const), k: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('popRewind' as const), k: fc.integer({ min: 1, max: 8 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('complete' as const),
      picks: fc.array(fc.record({ pick: fc.nat(), lenSel: fc.nat(), zero: fc.boolean() }), { minLength: 1, maxLength: 8 }),
    }),
  },
  { weight: 3, arbitrary: fc.constant({ t: 'upub' as const }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('reclaim' as const), k: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('drvNotify' as const), enable: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('devNotify' as const), enable: fc.boolean() }) },
);
const sizeArb = fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 300 }), fc.constantFrom(3, 5, 7, 255, 256, 300));
const cfgArb: fc.Arbitrary<Cfg> = fc.record({ size: sizeArb, eventIdx: fc.boolean(), indirect: fc.boolean(), inOrder: fc.boolean() });

const addrOf = (b: BufGen) => (b.high ? HIGH + (b.off % (0x10000 - b.len + 1)) : DATA + (b.off % (0x10000 - b.len + 1)));

// ---------------------------------------------------------------------------
// Model: slot counters are free-running descriptor counts; pos|wrap<<15 derives from them.
// ---------------------------------------------------------------------------
interface Rec { id: number; token: number; bufs: BufferSpec[]; descs: number; writable: number }
interface Batch { end: number } // used-slot counter after the batch's last chain
interface Done { rec: Rec; len: number; batch: Batch }

class Model {
  outstanding = new Map<number, Rec>(); // id -> chain, from add until reclaim
  unpublished: Rec[] = [];
  avail: Rec[] = [];
  inflight: Rec[] = [];
  pushed: Done[] = [];
  used: Done[] = [];
  addSlots = 0; availPubSlots = 0; popSlots = 0; pushSlots = 0; usedPubSlots = 0; reclaimSlots = 0;
  token = 0;
  adds = 0;
  popCount = new Map<number, number>();
  reclaimed: number[] = []; // tokens in reclaim order
  added: number[] = []; // tokens in add order
  run: Batch | null = null; // in-order: the open run of zero-length chains
  lastReclaimedBatch: Batch | null = null;
  // Event suppression structures as each side last wrote them: [flags, off_wrap].
  devEvt: [number, number] = [RING_EVENT_FLAGS_ENABLE, 0]; // written by the device, read by the driver
  drvEvt: [number, number] = [RING_EVENT_FLAGS_ENABLE, 0];
  constructor(readonly cfg: Cfg) {}
  pw(c: number): number { const s = this.cfg.size; return (c % s) | ((1 ^ (Math.floor(c / s) & 1)) << 15); }
  descsOut(): number { let s = 0; for (const r of this.outstanding.values()) s += r.descs; return s; }
  /** Does moving a side from slot counter `from` to `to` pass the event descriptor? */
  crosses(evt: [number, number], from: number, to: number): boolean {
    if (from === to) return false;
    if (!(this.cfg.eventIdx && evt[0] === RING_EVENT_FLAGS_DESC)) return evt[0] !== RING_EVENT_FLAGS_DISABLE;
    for (let c = from; c < to; c++) if (this.pw(c) === evt[1]) return true;
    return false;
  }
}

function checkPop(r: Rig, rec: Rec): void {
  const c = r.chain;
  assert.equal(c.id, rec.id, 'chains are popped in ring order');
  assert.equal(c.descs, rec.descs);
  assert.equal(c.count, rec.bufs.length);
  assert.equal(c.readable, rec.bufs.filter((b) => !b.writable).length);
  assert.equal(c.writableBytes, rec.writable);
  rec.bufs.forEach((b, i) => {
    const [reg, off] = where(b.addr);
    assert.equal(c.region[i], reg);
    assert.equal(c.offset[i], off);
    assert.equal(c.len[i], b.len);
  });
}

function driverPublish(r: Rig, m: Model): void {
  const expect = m.unpublished.length > 0 && m.crosses(m.devEvt, m.availPubSlots, m.addSlots);
  assert.equal(r.drv.publish(), expect, 'driver publish() notification decision');
  m.avail.push(...m.unpublished);
  m.unpublished = [];
  m.availPubSlots = m.addSlots;
}

function devicePublish(r: Rig, m: Model): void {
  const expect = m.pushed.length > 0 && m.crosses(m.drvEvt, m.usedPubSlots, m.pushSlots);
  assert.equal(r.dev.publish(), expect, 'device publish() notification decision');
  if (m.run) { m.run.end = m.pushSlots; m.run = null; }
  m.used.push(...m.pushed);
  m.pushed = [];
  m.usedPubSlots = m.pushSlots;
}

function pushOne(r: Rig, m: Model, rec: Rec, len: number): void {
  r.dev.pushUsed(rec.id, len, rec.descs);
  m.pushSlots += rec.descs;
  let batch: Batch;
  if (m.cfg.inOrder) {
    if (!m.run) m.run = { end: -1 };
    batch = m.run;
    if (len !== 0) { batch.end = m.pushSlots; m.run = null; }
  } else batch = { end: m.pushSlots };
  m.pushed.push({ rec, len, batch });
}

function reclaimOne(r: Rig, m: Model): void {
  const d = m.used.shift()!;
  assert.equal(r.drv.popUsed(), d.rec.id, 'used buffers come back in used order');
  assert.equal(r.drv.usedLen, d.len);
  assert.equal(r.drv.usedToken, d.rec.token);
  m.reclaimed.push(d.rec.token);
  m.outstanding.delete(d.rec.id);
  m.reclaimSlots += d.rec.descs;
  m.lastReclaimedBatch = d.batch;
}

function apply(r: Rig, m: Model, op: Op): void {
  const { drv, dev } = r;
  const size = m.cfg.size;
  switch (op.t) {
    case 'add':
    case 'addOne': {
      const gens = op.t === 'add' ? op.bufs.slice(0, size) : [op.buf];
      const nRead = op.t === 'add' ? Math.min(op.nRead, gens.length) : op.writable ? 0 : 1;
      const bufs: BufferSpec[] = gens.map((g, i) => ({ addr: addrOf(g), len: g.len, writable: i >= nRead }));
      const useInd = op.t === 'add' && op.indirect && m.cfg.indirect;
      const descs = useInd ? 1 : bufs.length;
      const token = ++m.token;
      const table = TABLES + 1 + 80 * (token % 1024); // misaligned tables
      assert.equal(drv.peekFreeId() === -1, drv.numFree === 0);
      const peek = drv.peekFreeId();
      const id = op.t === 'add' ? drv.add(bufs, token, op.indirect ? table : undefined) : drv.addOne(bufs[0].addr, bufs[0].len, bufs[0].writable, token);
      if (descs > size - m.descsOut()) { assert.equal(id, -1, 'add fails exactly when too few slots are free'); return; }
      assert.equal(id, peek, 'peekFreeId() named the id');
      assert.ok(id >= 0 && id < size);
      assert.ok(!m.outstanding.has(id), `id ${id} handed out twice`);
      if (m.cfg.inOrder) assert.equal(id, m.addSlots % size, 'in-order ids are ring positions');
      const rec: Rec = { id, token, bufs, descs, writable: bufs.filter((b) => b.writable).reduce((s, b) => s + b.len, 0) };
      m.outstanding.set(id, rec);
      m.unpublished.push(rec);
      m.added.push(token);
      m.addSlots += descs;
      m.adds++;
      return;
    }
    case 'dpub': return driverPublish(r, m);
    case 'pop': {
      const n = Math.min(op.k, dev.pending());
      for (let i = 0; i < n; i++) {
        const rec = m.avail.shift()!;
        dev.pop(r.chain);
        checkPop(r, rec);
        m.popCount.set(rec.token, (m.popCount.get(rec.token) ?? 0) + 1);
        m.inflight.push(rec);
        m.popSlots += rec.descs;
      }
      return;
    }
    case 'popRewind': {
      const mark = dev.mark();
      const n = Math.min(op.k, dev.pending());
      for (let i = 0; i < n; i++) { dev.pop(r.chain); checkPop(r, m.avail[i]); }
      dev.rewind(mark);
      assert.equal(dev.state().avail, m.pw(m.popSlots), 'rewind restores the read position');
      return;
    }
    case 'complete':
      for (const { pick, lenSel, zero } of op.picks) {
        if (m.inflight.length === 0) break;
        const [rec] = m.inflight.splice(m.cfg.inOrder ? 0 : pick % m.inflight.length, 1);
        pushOne(r, m, rec, zero ? 0 : lenSel % (rec.writable + 1));
      }
      return;
    case 'upub': return devicePublish(r, m);
    case 'reclaim': {
      const n = Math.min(op.k, drv.usedPending());
      for (let i = 0; i < n; i++) reclaimOne(r, m);
      return;
    }
    case 'drvNotify': {
      drv.setNotification(op.enable);
      const [offWrap, flags] = readEvent(r.mem, r.driverAddr);
      if (!op.enable) assert.equal(flags, RING_EVENT_FLAGS_DISABLE);
      else if (!m.cfg.eventIdx) assert.equal(flags, RING_EVENT_FLAGS_ENABLE);
      else {
        assert.equal(flags, RING_EVENT_FLAGS_DESC);
        // The next used descriptor is read after the batch being handed out, else at the reclaim position.
        const mid = m.used.length > 0 && m.used[0].batch === m.lastReclaimedBatch;
        assert.equal(offWrap, m.pw(mid ? m.used[0].batch.end : m.reclaimSlots), 'driver event offset');
      }
      m.drvEvt = [flags, offWrap];
      return;
    }
    case 'devNotify': {
      dev.setNotification(op.enable);
      const [offWrap, flags] = readEvent(r.mem, r.deviceAddr);
      if (!op.enable) assert.equal(flags, RING_EVENT_FLAGS_DISABLE);
      else if (!m.cfg.eventIdx) assert.equal(flags, RING_EVENT_FLAGS_ENABLE);
      else { assert.equal(flags, RING_EVENT_FLAGS_DESC); assert.equal(offWrap, m.pw(m.popSlots), 'device event offset'); }
      m.devEvt = [flags, offWrap];
      return;
    }
  }
}

function checkInvariants(r: Rig, m: Model): void {
  const { drv, dev } = r;
  const size = m.cfg.size;
  assert.equal(drv.numFree, size - m.descsOut(), 'numFree + outstanding slots == size');
  assert.equal(dev.pending(), Math.min(m.avail.length, SCAN_LIMIT), 'pending()');
  assert.equal(drv.usedPending(), Math.min(m.used.length, SCAN_LIMIT), 'usedPending()');
  assert.equal(drv.unpublished, m.unpublished.length > 0);
  assert.equal(dev.unpublished, m.pushed.length > 0);
  assert.deepEqual(drv.state(), { avail: m.pw(m.addSlots), used: m.pw(m.reclaimSlots) });
  assert.deepEqual(dev.state(), { avail: m.pw(m.popSlots), used: m.pw(m.pushSlots) });
}

/** Publish, pop, complete and reclaim everything left. */
function drain(r: Rig, m: Model): void {
  driverPublish(r, m);
  while (m.avail.length) apply(r, m, { t: 'pop', k: 8 });
  while (m.inflight.length) pushOne(r, m, m.inflight.shift()!, 0);
  devicePublish(r, m);
  while (m.used.length) reclaimOne(r, m);
  checkInvariants(r, m);
}

function run(cfg: Cfg, ops: Op[]): Model {
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
  // Every token made available came back exactly once (in add order with VIRTIO_F_IN_ORDER).
  assert.equal(m.reclaimed.length, m.adds);
  assert.deepEqual([...m.reclaimed].sort((a, b) => a - b), [...m.added].sort((a, b) => a - b));
  for (const t of m.added) assert.equal(m.popCount.get(t), 1, `token ${t} popped exactly once`);
  if (cfg.inOrder) assert.deepEqual(m.reclaimed, m.added);
  return m;
}

test('model-based: random add / publish / pop / rewind / complete / reclaim sequences match the model', () => {
  fc.assert(
    fc.property(cfgArb, fc.array(opArb, { maxLength: 150, size: 'max' }), (cfg, ops) => { run(cfg, ops); }),
    { numRuns: 1000 },
  );
  assertCanaries(MEM);
});

test('model-based: long runs on small odd sizes wrap many times', () => {
  let wraps = 0;
  fc.assert(
    fc.property(
      fc.record({ size: fc.constantFrom(1, 2, 3, 5, 6, 7), eventIdx: fc.boolean(), indirect: fc.boolean(), inOrder: fc.boolean() }),
      fc.array(opArb, { minLength: 300, maxLength: 600, size: 'max' }),
      (cfg, ops) => {
        const m = run(cfg, ops);
        wraps += Math.floor(m.addSlots / cfg.size);
      },
    ),
    { numRuns: 250 },
  );
  assert.ok(wraps > 1000, `wraps ${wraps}`);
});

// No lost wake-ups: both sides sleep and are woken only when the other side's
// publish() says so; with enable-then-recheck nothing published goes unnoticed.
test('no lost notifications (EVENT_IDX on and off, in-order on and off)', () => {
  const wakeOp = fc.oneof(
    { weight: 3, arbitrary: fc.record({ t: fc.constant('produce' as const), n: fc.integer({ min: 1, max: 10 }), len: fc.integer({ min: 1, max: 1500 }) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('timer' as const), k: fc.integer({ min: 0, max: 10 }) }) },
  );
  fc.assert(
    fc.property(cfgArb, fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.array(wakeOp, { maxLength: 80, size: 'max' }), (cfg, holdPattern, ops) => {
      const r = rig(cfg);
      const { drv, dev, chain } = r;
      const held: { id: number; len: number; descs: number }[] = [];
      let produced = 0, consumed = 0, devRuns = 0;
      const driverIrq = () => {
        for (;;) {
          drv.setNotification(false);
          let n = drv.usedPending();
          while (n-- > 0) { drv.popUsed(); consumed++; }
          drv.setNotification(true);
          if (drv.usedPending() === 0) return;
        }
      };
      const completeHeld = (k: number) => {
        for (let i = 0; i < k && held.length; i++) { const h = held.shift()!; dev.pushUsed(h.id, h.len, h.descs); }
        if (dev.publish()) driverIrq();
      };
      const deviceRun = () => {
        for (;;) {
          dev.setNotification(false);
          let n = dev.pending();
          while (n-- > 0) { dev.pop(chain); held.push({ id: chain.id, len: chain.writableBytes, descs: chain.descs }); }
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
        } else completeHeld(op.k);
        assert.equal(dev.pending(), 0, 'device missed an available-buffer notification');
        assert.equal(drv.usedPending(), 0, 'driver missed a used-buffer notification');
        assert.equal(drv.numFree + held.length, cfg.size);
      }
      completeHeld(held.length);
      assert.equal(drv.usedPending(), 0);
      assert.equal(consumed, produced);
      assert.equal(drv.numFree, cfg.size);
    }),
    { numRuns: 300 },
  );
});
