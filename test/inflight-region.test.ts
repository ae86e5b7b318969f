/**
 * Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking"): the byte
 * layout of the split and packed queue regions (little-endian, the spec's
 * field offsets), the size arithmetic, and crash consistency: a device
 * queue with tracking is "killed" before every one of its ordered stores
 * (each Atomics.store: the commit points of the region and of the ring) in a
 * scripted run of pops, rewinds, used pushes and publishes, then a new
 * queue starts on the same ring and region memory as a restarted back-end
 * would (SET_VRING_BASE at the driver's used position, then recovery), and
 * finishes the work. Every chain the driver made available must come back
 * used exactly once; in `complete` mode (a transmitq) no chain is processed
 * twice; in `requeue` mode (a receiveq) every chain is processed and the
 * driver sees the length of its last processing.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { contiguousQueueLayout, createDriverQueue, createInflightDeviceQueue, queueBytes } from '../src/virtio/ring.js';
import type { DriverQueue, RingFormat } from '../src/virtio/queue.js';
import {
  checkInflightDescription, inflightBufferBytes, inflightQueueBytes, inflightSlot, InflightError, InflightPackedRegion, InflightSplitRegion,
} from '../src/virtio/inflight/region.js';
import type { InflightDeviceQueue, InflightMode } from '../src/virtio/inflight/restore.js';

describe('inflight region layout', () => {
  test('per-queue and buffer sizes: the packed format, 64-byte aligned; descriptions checked', () => {
    assert.equal(inflightQueueBytes(1), 64);
    assert.equal(inflightQueueBytes(256), 32 + 32 * 256 + 32); // 8224 rounded up to 8256
    assert.equal(inflightQueueBytes(256) % 64, 0);
    assert.ok(inflightQueueBytes(256) >= 16 + 16 * 256, 'room for the split format too');
    assert.equal(inflightBufferBytes(4, 256), 4 * inflightQueueBytes(256));
    checkInflightDescription(4, 256, inflightBufferBytes(4, 256), 4);
    checkInflightDescription(2, 256, null, 4);
    const code = (f: () => void) => { try { f(); } catch (e) { assert.ok(e instanceof InflightError); return e.code; } return 'none'; };
    assert.equal(code(() => checkInflightDescription(0, 256, null, 4)), 'INFLIGHT_QUEUES');
    assert.equal(code(() => checkInflightDescription(5, 256, null, 4)), 'INFLIGHT_QUEUES');
    assert.equal(code(() => checkInflightDescription(2, 0, null, 4)), 'INFLIGHT_QUEUE_SIZE');
    assert.equal(code(() => checkInflightDescription(2, 256, inflightBufferBytes(2, 256) - 64, 4)), 'INFLIGHT_SIZE');
    assert.equal(code(() => new InflightSplitRegion(inflightSlot(new ArrayBuffer(64), 0, 4), 8)), 'INFLIGHT_QUEUE_SIZE');
    assert.equal(code(() => new InflightSplitRegion(inflightSlot(new ArrayBuffer(64), 1, 4), 4)), 'INFLIGHT_SIZE');
  });

  test('split region: QueueRegionSplit / DescStateSplit fields at the spec offsets, little-endian', () => {
    const buf = new SharedArrayBuffer(inflightBufferBytes(2, 8));
    const r = new InflightSplitRegion(inflightSlot(buf, 1, 8), 8);
    r.init(0xfffe);
    const dv = new DataView(buf, inflightQueueBytes(8));
    assert.equal(dv.getBigUint64(0, true), 0n, 'features');
    assert.equal(dv.getUint16(8, true), 1, 'version');
    assert.equal(dv.getUint16(10, true), 8, 'desc_num');
    assert.equal(dv.getUint16(14, true), 0xfffe, 'used_idx');
    r.counter = 0x1_0000_0002;
    r.take(5);
    assert.equal(dv.getUint8(16 + 16 * 5), 1, 'desc[5].inflight');
    assert.equal(dv.getBigUint64(16 + 16 * 5 + 8, true), 0x1_0000_0002n, 'desc[5].counter');
    r.take(3);
    r.link(5);
    r.link(3);
    assert.equal(dv.getUint16(12, true), 3, 'last_batch_head');
    assert.equal(dv.getUint16(16 + 16 * 3 + 6, true), 5, 'desc[3].next → the previous head');
    r.settle(2, 0x0000);
    assert.equal(dv.getUint8(16 + 16 * 5), 0);
    assert.equal(dv.getUint8(16 + 16 * 3), 0);
    assert.equal(dv.getUint16(14, true), 0, 'used_idx wrapped');
    assert.deepEqual([...new Uint8Array(buf, 0, inflightQueueBytes(8))].filter((b) => b !== 0), [], 'queue 0 untouched');
  });

  test('packed region: QueueRegionPacked / DescStatePacked fields at the spec offsets, little-endian', () => {
    const buf = new SharedArrayBuffer(inflightBufferBytes(1, 4));
    const r = new InflightPackedRegion(inflightSlot(buf, 0, 4), 4);
    r.init(3, 0);
    const dv = new DataView(buf);
    assert.equal(dv.getUint16(8, true), 1, 'version');
    assert.equal(dv.getUint16(10, true), 4, 'desc_num');
    assert.equal(dv.getUint16(16, true), 3, 'used_idx');
    assert.equal(dv.getUint16(18, true), 3, 'old_used_idx');
    assert.equal(dv.getUint8(20), 0, 'used_wrap_counter');
    assert.equal(dv.getUint8(21), 0, 'old_used_wrap_counter');
    for (let i = 0; i < 4; i++) assert.equal(dv.getUint16(32 + 32 * i + 2, true), (i + 1) % 4, `desc[${i}].next: the free list`);
    r.counter = 7;
    // A chain of two descriptors: entries 0 (head) and 1.
    r.takeDesc(0, false, 0x1_2345_6780, 0x100, 9, 0x8001);
    r.takeDesc(1, true, 0x2000, 0x80, 2, 0x8002);
    const e = (i: number, off: number) => 32 + 32 * i + off;
    assert.equal(dv.getUint8(e(0, 0)), 1, 'head inflight');
    assert.equal(dv.getUint16(e(0, 4), true), 1, 'head last → entry 1');
    assert.equal(dv.getUint16(e(0, 6), true), 2, 'head num');
    assert.equal(dv.getBigUint64(e(0, 8), true), 7n, 'head counter');
    assert.equal(dv.getUint16(e(0, 16), true), 9, 'desc 0 id');
    assert.equal(dv.getUint16(e(0, 18), true), 0x8001, 'desc 0 flags');
    assert.equal(dv.getUint32(e(0, 20), true), 0x100, 'desc 0 len');
    assert.equal(dv.getBigUint64(e(0, 24), true), 0x1_2345_6780n, 'desc 0 addr');
    assert.equal(dv.getUint16(e(1, 16), true), 2, 'desc 1 id (the Buffer ID)');
    assert.equal(r.idOf(0), 2);
    assert.equal(dv.getUint16(12, true), 2, 'free_head');
    assert.equal(dv.getUint16(14, true), 2, 'old_free_head');
    r.ret(0);
    r.advance(1, 1);
    assert.equal(dv.getUint16(12, true), 0, 'free_head: the returned head');
    assert.equal(dv.getUint16(e(1, 2), true), 2, 'desc[last].next → the old free head');
    assert.equal(dv.getUint16(16, true), 1);
    assert.equal(dv.getUint8(20), 1);
    r.settle([0], 1);
    assert.equal(dv.getUint8(e(0, 0)), 0);
    assert.equal(dv.getUint16(14, true), 0, 'old_free_head');
    assert.equal(dv.getUint16(18, true), 1, 'old_used_idx');
    assert.equal(dv.getUint8(21), 1, 'old_used_wrap_counter');
  });
});

// ---------------------------------------------------------------------------
// Crash replay

class Crash extends Error {}
const realStore = Atomics.store;
let budget = -1; // stores left before the crash; -1: not armed
(Atomics as { store: unknown }).store = (a: Int32Array, i: number, v: number): number => {
  if (budget >= 0 && budget-- === 0) throw new Crash('killed');
  return realStore(a, i, v);
};

const SIZE = 16;
const CHAINS = 10;

interface World {
  mem: GuestMemory;
  layout: ReturnType<typeof contiguousQueueLayout>;
  region: SharedArrayBuffer;
  drv: DriverQueue;
  /** Driver id → token, of the chains outstanding. */
  token: Map<number, number>;
  /** Times each token came back used, and the used length the driver saw. */
  used: number[];
  lens: number[];
  /** Times the device processed each token (TX: sent; RX: filled). */
  processed: number[];
}

function world(format: RingFormat, inOrder: boolean): World {
  const size = 1 << 20;
  const mem = new GuestMemory([{ guestPhysAddr: 0, size, buffer: new SharedArrayBuffer(size) }]);
  const layout = contiguousQueueLayout(format, 0x1000, SIZE);
  assert.ok(0x1000 + queueBytes(format, SIZE) < 0x10000);
  const opts = { eventIdx: false, inOrder, indirect: false, index: 1 };
  const drv = createDriverQueue(mem, layout, opts);
  const w: World = {
    mem, layout, region: new SharedArrayBuffer(inflightBufferBytes(2, SIZE)), drv, token: new Map(),
    used: new Array(CHAINS).fill(0), lens: new Array(CHAINS).fill(-1), processed: new Array(CHAINS).fill(0),
  };
  // Chains of 1, 2 or 3 descriptors (15 descriptors in all), device-writable so a length can be returned.
  for (let t = 0; t < CHAINS; t++) {
    const n = [1, 2, 1, 3, 1, 1, 2, 1, 2, 1][t];
    const bufs = Array.from({ length: n }, (_, k) => ({ addr: 0x10000 + t * 0x1000 + k * 0x100, len: 0x100, writable: true }));
    const id = n === 1 ? drv.addOne(bufs[0].addr, bufs[0].len, true, t) : drv.add(bufs, t);
    assert.ok(id >= 0);
    w.token.set(id, t);
  }
  drv.publish();
  return w;
}

function device(w: World, format: RingFormat, inOrder: boolean): InflightDeviceQueue {
  return createInflightDeviceQueue(w.mem, w.layout, { eventIdx: false, inOrder, indirect: false, index: 1 }, inflightSlot(w.region, 1, SIZE));
}

function reclaim(w: World): void {
  while (w.drv.usedPending() > 0) {
    w.drv.popUsed();
    w.used[w.drv.usedToken]++;
    w.lens[w.drv.usedToken] = w.drv.usedLen;
  }
}

/** The device's work: pops (fast path and walked), a rewind, used pushes, publishes, as NetDevicePair interleaves them. */
function script(w: World, q: InflightDeviceQueue, chain: DescChain): void {
  const popOne = (): [number, number] => {
    const r = q.popSingle(2, 1);
    if (r >= 0) return [q.singleId, 1];
    assert.equal(r, -1);
    q.pop(chain);
    return [chain.id, chain.descs];
  };
  const done = (c: [number, number]) => {
    const t = w.token.get(c[0])!;
    w.processed[t]++;
    q.pushUsed(c[0], 10 + w.processed[t], c[1]);
  };
  const a = popOne(), b = popOne(), c = popOne();
  done(a);
  done(b);
  q.publish();
  const m = q.mark();
  popOne();
  popOne();
  q.rewind(m); // backpressure: given back, popped again below
  done(c);
  const d = popOne(), e = popOne();
  done(d);
  q.publish();
  done(e);
  for (;;) {
    const n = q.pending();
    if (n === 0) break;
    done(popOne());
    if (q.pending() % 2 === 0) q.publish();
  }
  q.publish();
}

/** After a restart: process whatever is pending. */
function finish(w: World, q: InflightDeviceQueue, chain: DescChain): void {
  while (q.pending() > 0) {
    q.pop(chain);
    const t = w.token.get(chain.id)!;
    w.processed[t]++;
    q.pushUsed(chain.id, 10 + w.processed[t], chain.descs);
  }
  q.publish();
}

/**
 * One scenario: the device's lives, the i-th "killed" before its
 * `budgets[i]`-th ordered store (-1: it runs to the end). Life 0 runs the
 * script on a fresh region; each later one starts as a restarted back-end
 * (SET_VRING_BASE at the driver's used position, then recovery) and
 * processes what is pending. Returns the world and whether life 0 crashed.
 */
function lives(format: RingFormat, mode: InflightMode, inOrder: boolean, budgets: number[]): { w: World; crashed: boolean[]; last: InflightDeviceQueue } {
  const w = world(format, inOrder);
  const chain = new DescChain(w.mem);
  const crashed: boolean[] = [];
  let q = device(w, format, inOrder);
  for (let i = 0; i < budgets.length; i++) {
    if (i > 0) q = device(w, format, inOrder);
    let c = false;
    try {
      if (i === 0) {
        q.setState({ avail: format === 'packed' ? 1 << 15 : 0, used: format === 'packed' ? 1 << 15 : 0 });
        assert.equal(q.restoreInflight(mode).fresh, true);
      } else {
        const base = w.drv.state().used;
        q.setState({ avail: base, used: base });
      }
      budget = budgets[i];
      if (i === 0) script(w, q, chain);
      else {
        // (A region found at version 0 here is one the previous life was laying out afresh, with nothing in flight.)
        q.restoreInflight(mode);
        finish(w, q, chain);
      }
    } catch (e) {
      if (!(e instanceof Crash)) throw e;
      c = true;
    } finally {
      budget = -1;
    }
    crashed.push(c);
    reclaim(w);
    if (!c) break;
  }
  return { w, crashed, last: q };
}

function check(format: RingFormat, mode: InflightMode, inOrder: boolean, budgets: number[]): boolean[] {
  const { w, crashed, last } = lives(format, mode, inOrder, budgets);
  const ctx = `${format} ${mode}${inOrder ? ' in-order' : ''}, crashes before stores ${budgets.join(', ')}: used ${w.used} processed ${w.processed}`;
  assert.equal(crashed[crashed.length - 1], false, `the last life ran to the end (${ctx})`);
  assert.deepEqual(w.used, new Array(CHAINS).fill(1), `every chain used exactly once (${ctx})`);
  assert.equal(w.drv.numFree, SIZE, ctx);
  if (mode === 'complete') {
    assert.ok(w.processed.every((n) => n <= 1), `nothing processed twice (${ctx})`);
  } else {
    assert.ok(w.processed.every((n) => n >= 1), `every buffer filled (${ctx})`);
    w.lens.forEach((len, t) => assert.equal(len, 10 + w.processed[t], `the driver sees the last fill (${ctx})`));
  }
  if (crashed.length > 1) {
    // One more start on the region finds nothing in flight and leaves the ring where it stood.
    const q = device(w, format, inOrder);
    const s = last.state();
    q.setState(s);
    assert.deepEqual(q.restoreInflight(mode), { fresh: false, chains: 0, notify: false }, ctx);
    assert.deepEqual(q.state(), s, ctx);
  }
  return crashed;
}

/** Crash before every store of the first life; for every 12th such point also before every store of the recovery after it. */
function replay(format: RingFormat, mode: InflightMode, inOrder: boolean): number {
  let scenarios = 0;
  for (let at = 0; ; at++) {
    const first = check(format, mode, inOrder, [at, -1]);
    scenarios++;
    if (!first[0]) {
      assert.ok(at > 10, `${at} crash points`);
      return scenarios;
    }
    if (at % 12 !== 5) continue;
    for (let at2 = 0; ; at2++) {
      const c = check(format, mode, inOrder, [at, at2, -1]);
      scenarios++;
      if (!c[1]) break;
    }
  }
}

describe('inflight tracking survives a crash before any store, and a second one during the recovery', () => {
  for (const format of ['split', 'packed'] as const) {
    for (const mode of ['complete', 'requeue'] as const) {
      for (const inOrder of [false, true]) {
        test(`${format}, ${mode}${inOrder ? ', IN_ORDER' : ''}`, () => {
          replay(format, mode, inOrder);
        });
      }
    }
  }
});
