/**
 * The driver queues' TX hot path (DriverQueue.addTied, reclaimInOrder)
 * against the per-chain path (addOne, popUsed): for split and packed rings,
 * with and without VIRTIO_F_IN_ORDER, two queues over two copies of the same
 * guest memory, one driven each way, a real device half completing chains in
 * random runs. After every step the ring memory, the free counts and the
 * queue state must be identical, and every buffer must reach the device
 * with its address and length. Likewise popUsedIfAny and popUsedBurst (the
 * RX path) against usedPending + popUsed: the same ids, lengths and tokens,
 * then -1 / a short burst; recycleBurst against popUsedBurst + addTied; and
 * NetDriverPair's in-order RX path, split and packed (pollRxTied: bursts,
 * buffers re-added in the same pass or with addTied) against the per-chain
 * one (pollRxEach): the same frames, counters, ring memory and state, and a
 * lying device's bad id or len still refused after the frames before it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { createDeviceQueue, createDriverQueue, contiguousQueueLayout, queueBytes } from '../src/virtio/ring.js';
import type { DeviceQueue, DriverQueue, QueueLayout } from '../src/virtio/queue.js';
import { DescriptorError } from '../src/virtio/errors.js';
import { NetDriverPair } from '../src/net/driver-pair.js';
import { DRV_STAT_COUNT } from '../src/net/stats.js';

/** One region below and across 4 GiB (buffers whose address needs the high word too). */
const GPA = 0xfff00000;
const REGION = 0x110000;

interface Side {
  mem: GuestMemory;
  u8: Uint8Array;
  drv: DriverQueue;
  dev: DeviceQueue;
  chain: DescChain;
}

function side(format: 'split' | 'packed', size: number, inOrder: boolean): Side & { layout: QueueLayout } {
  const sab = new SharedArrayBuffer(REGION);
  const mem = new GuestMemory([{ guestPhysAddr: GPA, size: REGION, buffer: sab }]);
  const layout = contiguousQueueLayout(format, GPA, size);
  const o = { eventIdx: false, indirect: false, inOrder, index: 1 };
  const drv = createDriverQueue(mem, layout, o);
  const devMem = new GuestMemory(mem.specs);
  const dev = createDeviceQueue(devMem, layout, o);
  return { mem, u8: new Uint8Array(sab), drv, dev, chain: new DescChain(devMem, 4), layout };
}

/**
 * Driver: add up to `st.add` 512-byte buffers (tokens from `token`) and publish; device: complete up to
 * `st.complete` chains with lengths `st.lens[i]` and publish.
 */
function addAndComplete(s: Side, st: { add: number; complete: number; lens: number[] }, token: number): void {
  for (let i = 0; i < st.add; i++) {
    const id = s.drv.peekFreeId();
    if (id < 0) break;
    s.drv.addOne(GPA + 0x1000 + 512 * id, 512, true, token + i);
  }
  s.drv.publish();
  for (let i = 0; i < st.complete && s.dev.pending() > 0; i++) {
    s.dev.pop(s.chain);
    s.dev.pushUsed(s.chain.id, st.lens[i], 1);
  }
  s.dev.publish();
}

type Op = { t: 'add'; n: number } | { t: 'publish' } | { t: 'complete'; n: number } | { t: 'reclaim' };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('add' as const), n: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 3, arbitrary: fc.constant({ t: 'publish' as const }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('complete' as const), n: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 3, arbitrary: fc.constant({ t: 'reclaim' as const }) },
);

function ringBytes(s: Side & { layout: QueueLayout }, format: 'split' | 'packed', size: number): Uint8Array {
  return s.u8.subarray(0, queueBytes(format, size));
}

for (const format of ['split', 'packed'] as const) {
  for (const inOrder of [true, false]) {
    describe(`${format} driver queue${inOrder ? ' with IN_ORDER' : ''}: addTied / reclaimInOrder`, () => {
      test('the same ring writes, ids, free counts and state as addOne / popUsed, in random runs', () => {
        fc.assert(
          fc.property(
            fc.constantFrom(8, 16, 64),
            fc.constantFrom(0x1000, 0xfe000), // buffers below 4 GiB, or crossing it
            fc.array(opArb, { minLength: 1, maxLength: 60 }),
            (size, bufOff, ops) => {
              const stride = 0x100 * (format === 'packed' ? 3 : 1); // any stride; packed sizes need not be powers of two
              const a = side(format, size, inOrder); // per chain
              const b = side(format, size, inOrder); // tied runs
              const addr0 = GPA + bufOff;
              const ids = new Uint16Array(size);
              let seen = 0;
              for (const op of ops) {
                if (op.t === 'add') {
                  const len = 60 + op.n;
                  const want: number[] = [];
                  for (let i = 0; i < op.n; i++) {
                    const id = a.drv.peekFreeId();
                    if (id < 0) break;
                    assert.equal(a.drv.addOne(addr0 + id * stride, len, false, id), id);
                    want.push(id);
                  }
                  const k = b.drv.addTied(ids, op.n, addr0, stride, len, false);
                  assert.deepEqual(Array.from(ids.subarray(0, k)), want, 'the ids addOne would have used');
                } else if (op.t === 'publish') {
                  assert.equal(b.drv.publish(), a.drv.publish());
                } else if (op.t === 'complete') {
                  for (const s of [a, b]) {
                    for (let i = 0; i < op.n && s.dev.pending() > 0; i++) {
                      s.dev.pop(s.chain);
                      assert.equal(s.chain.count, 1);
                      const id = s.chain.id;
                      const addr = Number(s.mem.specs[0].guestPhysAddr) + s.chain.offset[0];
                      if (s === b) {
                        assert.equal(addr, addr0 + id * stride, 'buffer address tied to the id');
                        seen++;
                      }
                      s.dev.pushUsed(id, 0, 1);
                    }
                    s.dev.publish();
                  }
                } else {
                  let n = 0;
                  for (let p = a.drv.usedPending(); p > 0; p = a.drv.usedPending()) for (; p > 0; p--, n++) a.drv.popUsed();
                  assert.equal(b.drv.reclaimInOrder(), n, 'chains reclaimed');
                }
                assert.equal(b.drv.numFree, a.drv.numFree);
                assert.deepEqual(b.drv.state(), a.drv.state());
                assert.deepEqual(ringBytes(b, format, size), ringBytes(a, format, size), `ring memory after ${op.t}`);
              }
              return seen >= 0;
            },
          ),
          { numRuns: 60 },
        );
      });
    });
  }
}

for (const format of ['split', 'packed'] as const) {
  for (const inOrder of [true, false]) {
    test(`${format}${inOrder ? ' in-order' : ''}: popUsedIfAny returns what usedPending + popUsed return, then -1`, () => {
      fc.assert(
        fc.property(fc.array(fc.record({ add: fc.nat(12), complete: fc.nat(12), lens: fc.array(fc.nat(300), { minLength: 12, maxLength: 12 }), take: fc.nat(14) }), { minLength: 1, maxLength: 25 }), (steps) => {
          const size = 16;
          const a = side(format, size, inOrder); // usedPending + popUsed
          const b = side(format, size, inOrder); // popUsedIfAny
          let token = 0;
          for (const st of steps) {
            for (const s of [a, b]) addAndComplete(s, st, token);
            token += st.add;
            for (let i = 0; i < st.take; i++) {
              const want = a.drv.usedPending() > 0 ? a.drv.popUsed() : -1;
              assert.equal(b.drv.popUsedIfAny(), want);
              if (want < 0) break;
              assert.equal(b.drv.usedLen, a.drv.usedLen);
              assert.equal(b.drv.usedToken, a.drv.usedToken);
            }
            assert.equal(b.drv.numFree, a.drv.numFree);
            assert.deepEqual(b.drv.state(), a.drv.state());
          }
        }),
        { numRuns: 60 },
      );
    });
  }
}

describe('reclaimInOrder refuses a lying device', () => {
  test('split: used->idx beyond what was made available is USED_IDX_JUMP, nothing reclaimed', () => {
    const s = side('split', 8, true);
    const ids = new Uint16Array(8);
    assert.equal(s.drv.addTied(ids, 3, GPA + 0x1000, 0x100, 64, false), 3);
    s.drv.publish();
    // used->idx = 5 with 3 chains outstanding.
    const usedIdx = s.layout.deviceAddr - GPA + 2;
    s.u8[usedIdx] = 5;
    assert.throws(() => s.drv.reclaimInOrder(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_IDX_JUMP');
    assert.equal(s.drv.numFree, 5);
  });

  test('split in-order: used elements are not read (ids the device wrote do not matter), used->idx counts', () => {
    const s = side('split', 8, true);
    const ids = new Uint16Array(8);
    assert.equal(s.drv.addTied(ids, 6, GPA + 0x1000, 0x100, 64, false), 6);
    s.drv.publish();
    const used = s.layout.deviceAddr - GPA;
    for (let i = 0; i < 8; i++) s.u8[used + 4 + 8 * i] = 0xee; // garbage ids
    s.u8[used + 2] = 4;
    assert.equal(s.drv.reclaimInOrder(), 4);
    assert.equal(s.drv.numFree, 6);
    assert.deepEqual(s.drv.state(), { avail: 6, used: 4 });
  });

  test('packed in-order: a used descriptor naming a chain that is not outstanding is USED_ID_INVALID', () => {
    const s = side('packed', 8, true);
    const ids = new Uint16Array(8);
    assert.equal(s.drv.addTied(ids, 2, GPA + 0x1000, 0x100, 64, false), 2);
    s.drv.publish();
    // Descriptor 0 marked used (AVAIL = USED = 1) with id 5, never made available.
    const d = s.layout.descAddr - GPA;
    s.u8[d + 12] = 5;
    s.u8[d + 13] = 0;
    s.u8[d + 14] = 0x80;
    s.u8[d + 15] = 0x80;
    assert.throws(() => s.drv.reclaimInOrder(), (e: unknown) => e instanceof DescriptorError && e.code === 'USED_ID_INVALID');
    assert.equal(s.drv.numFree, 6, 'nothing reclaimed');
  });
});

for (const format of ['split', 'packed'] as const) {
  for (const inOrder of [true, false]) {
    test(`${format}${inOrder ? ' in-order' : ''}: popUsedBurst returns what usedPending + popUsed return, in bursts of any size`, () => {
      fc.assert(
        fc.property(fc.array(fc.record({ add: fc.nat(12), complete: fc.nat(12), lens: fc.array(fc.nat(300), { minLength: 12, maxLength: 12 }), max: fc.integer({ min: 1, max: 16 }) }), { minLength: 1, maxLength: 25 }), (steps) => {
          const size = 16;
          const a = side(format, size, inOrder); // usedPending + popUsed
          const b = side(format, size, inOrder); // popUsedBurst
          const toks = new Int32Array(size), lens = new Int32Array(size);
          let token = 0;
          for (const st of steps) {
            for (const s of [a, b]) addAndComplete(s, st, token); // lens 0: in-order packed devices write one used descriptor for a run (§2.8.12)
            token += st.add;
            const k = b.drv.popUsedBurst(toks, lens, st.max);
            assert.ok(k >= 0 && k <= st.max);
            for (let i = 0; i < k; i++) {
              assert.ok(a.drv.usedPending() > 0, 'the burst took no more than was used');
              a.drv.popUsed();
              assert.equal(toks[i], a.drv.usedToken);
              assert.equal(lens[i], a.drv.usedLen);
            }
            if (k < st.max) assert.equal(a.drv.usedPending(), 0, 'a short burst left nothing used');
            assert.equal(b.drv.numFree, a.drv.numFree);
            assert.deepEqual(b.drv.state(), a.drv.state());
          }
        }),
        { numRuns: 60 },
      );
    });
  }
}

for (const format of ['split', 'packed'] as const) test(`${format} in-order: recycleBurst writes and leaves what popUsedBurst + addTied of the chains it took write and leave`, () => {
  fc.assert(
    fc.property(
      format === 'split' ? fc.constantFrom(8, 16, 32) : fc.constantFrom(8, 12, 16), // split: a power of two
      fc.array(fc.record({ complete: fc.nat(16), lens: fc.array(fc.nat(300), { minLength: 16, maxLength: 16 }), max: fc.integer({ min: 1, max: 16 }), publish: fc.boolean() }), { minLength: 1, maxLength: 25 }),
      (size, steps) => {
        const a = side(format, size, true); // popUsedBurst + addTied
        const b = side(format, size, true); // recycleBurst (+ addTied of what it left)
        const addr0 = GPA + 0x2000, stride = 0x200, len = 0x180;
        const ids = new Uint16Array(size), ta = new Int32Array(size), la = new Int32Array(size), tb = new Int32Array(size), lb = new Int32Array(size);
        for (const s of [a, b]) {
          s.drv.addTied(ids, size, addr0, stride, len, true);
          s.drv.publish();
        }
        for (const st of steps) {
          for (const s of [a, b]) {
            // lens 0 make one used entry for a run (§2.7.9, §2.8.12): the per-chain path takes those.
            for (let i = 0; i < st.complete && s.dev.pending() > 0; i++) {
              s.dev.pop(s.chain);
              s.dev.pushUsed(s.chain.id, st.lens[i] % (len + 1), 1);
            }
            s.dev.publish();
          }
          const freeA = a.drv.numFree, freeB = b.drv.numFree;
          const ka = a.drv.popUsedBurst(ta, la, st.max);
          a.drv.addTied(ids, a.drv.numFree - freeA, addr0, stride, len, true);
          const kb = b.drv.recycleBurst(tb, lb, st.max, addr0, stride, len);
          b.drv.addTied(ids, b.drv.numFree - freeB, addr0, stride, len, true);
          assert.equal(kb, ka, 'chains taken');
          assert.deepEqual(Array.from(tb.subarray(0, kb)), Array.from(ta.subarray(0, ka)), 'tokens');
          assert.deepEqual(Array.from(lb.subarray(0, kb)), Array.from(la.subarray(0, ka)), 'used lengths');
          if (st.publish) assert.equal(b.drv.publish(), a.drv.publish());
          assert.equal(b.drv.numFree, a.drv.numFree);
          assert.equal(b.drv.unpublished, a.drv.unpublished);
          assert.deepEqual(b.drv.state(), a.drv.state());
          assert.deepEqual(ringBytes(b, format, size), ringBytes(a, format, size), 'ring memory');
        }
      },
    ),
    { numRuns: 80 },
  );
});

/**
 * NetDriverPair's RX paths on an in-order receiveq, split and packed: pollRxTied (bursts,
 * buffers re-added with addTied at the end) against pollRxEach (one chain at
 * a time, re-added at once), each over its own copy of guest memory, with a
 * device writing frames of one to three MRG_RXBUF buffers in random runs.
 */
for (const format of ['split', 'packed'] as const) describe(`${format} in-order receiveq: pollRxTied against pollRxEach`, () => {
  const size = 32, bufSize = 256, hdrLen = 12;
  const rxBufOff = 0x4000, txBufOff = 0x10000;
  interface RxSide extends Side { pair: NetDriverPair; stats: Float64Array; got: number[][] }
  function rxSide(tied: boolean): RxSide & { layout: QueueLayout } {
    const s = side(format, size, true);
    const o = { eventIdx: false, indirect: false, inOrder: true };
    const txq = createDriverQueue(s.mem, contiguousQueueLayout(format, GPA + 0x2000, size), { ...o, index: 1 });
    const stats = new Float64Array(DRV_STAT_COUNT);
    const pair = new NetDriverPair(s.mem, s.drv, txq, stats, 0, {
      pair: 0, hdrLen, mrgRxbuf: true, txBufAddr: GPA + txBufOff, txBufSize: bufSize, rxBufAddr: GPA + rxBufOff, rxBufSize: bufSize,
    });
    assert.equal(pair.pollRx === pair.pollRxTied, true, 'in-order takes the tied path');
    if (!tied) pair.pollRx = pair.pollRxEach;
    pair.refillRx();
    pair.flushRx();
    return { ...s, pair, stats, got: [] };
  }
  /** The device side: one frame of `nb` buffers, buffer j carrying lens[j] bytes (the first with the header), payload bytes from `seed`. */
  function deliver(s: RxSide, nb: number, lens: number[], seed: number): boolean {
    if (s.dev.pending() < nb) return false;
    for (let j = 0; j < nb; j++) {
      s.dev.pop(s.chain);
      const at = s.chain.offset[0];
      const len = Math.min(lens[j], bufSize);
      for (let x = 0; x < len; x++) s.u8[at + x] = (seed + 7 * j + x) & 0xff;
      // num_buffers: nb in the frame's first buffer; 1 where a later buffer has header bytes (the driver
      // reads a header there only when the device's len-0 batch or a short first buffer made it take one).
      if (len >= hdrLen) {
        s.u8[at + 10] = j === 0 ? nb : 1;
        s.u8[at + 11] = 0;
      }
      s.dev.pushUsed(s.chain.id, len, 1);
    }
    return true;
  }
  const consumer = (s: RxSide) => (src: { u8: Uint8Array }, off: number, len: number) => {
    s.got.push([len, ...src.u8.subarray(off - hdrLen, off + len)]);
  };

  // The first buffer's len: mostly a header and a frame; sometimes 0 (an in-order batch, §2.8.12) or a short one (rxBad).
  const lenArb = fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: hdrLen }) }, { weight: 12, arbitrary: fc.integer({ min: hdrLen, max: 300 }) });
  test('the same frames, counters, ring memory and queue state after every poll', () => {
    let compared = 0;
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            frames: fc.array(fc.record({ nb: fc.integer({ min: 1, max: 3 }), lens: fc.tuple(lenArb, fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 300 })) }), { maxLength: 12 }),
            budget: fc.integer({ min: 1, max: 40 }),
            publishDevice: fc.boolean(),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        (steps) => {
          const a = rxSide(false), b = rxSide(true);
          const ca = consumer(a), cb = consumer(b);
          let seed = 0;
          for (const st of steps) {
            for (const f of st.frames) {
              seed++;
              const da = deliver(a, f.nb, f.lens, seed);
              assert.equal(deliver(b, f.nb, f.lens, seed), da);
            }
            if (st.publishDevice) {
              a.dev.publish();
              b.dev.publish();
            }
            assert.equal(b.pair.pollRx(st.budget, cb), a.pair.pollRx(st.budget, ca), 'frames taken');
            assert.equal(b.pair.error?.message, a.pair.error?.message, 'the same ring error, if any');
            assert.deepEqual(b.got, a.got, 'frames consumed');
            assert.deepEqual(Array.from(b.stats), Array.from(a.stats), 'counters');
            // A ring error stops the pair (the front-end fails): the tied path may have
            // taken more used chains by then, so the ring is compared only without one.
            if (a.pair.error) break;
            assert.equal(b.pair.flushRx(), a.pair.flushRx());
            assert.equal(b.drv.numFree, a.drv.numFree);
            assert.deepEqual(b.drv.state(), a.drv.state());
            assert.deepEqual(ringBytes(b, format, size), ringBytes(a, format, size), 'receiveq ring memory');
            compared++;
          }
        },
      ),
      { numRuns: 80 },
    );
    assert.ok(compared >= 50, `ring memory compared after ${compared} polls`);
  });

  for (const lie of ['id', 'len'] as const) {
    test(`a used ${lie === 'id' ? 'id that is not outstanding' : 'length beyond the buffer'} in the middle of a run: the frames before it, then ${lie === 'id' ? 'USED_ID_INVALID' : 'USED_LEN_INVALID'}`, () => {
      for (const tied of [false, true]) {
        const s = rxSide(tied);
        const c = consumer(s);
        for (let i = 0; i < 5; i++) assert.ok(deliver(s, 1, [hdrLen + 60], i));
        s.dev.publish();
        // The fourth used entry's id or len rewritten behind the device's back (packed: descriptor 3's
        // id at byte 12, len at 8; split: used element 3 after flags and idx, id at 0, len at 4).
        const w = format === 'packed' ? s.layout.descAddr - GPA + 16 * 3 : s.layout.deviceAddr - GPA + 4 + 8 * 3;
        const idAt = format === 'packed' ? 12 : 0, lenAt = format === 'packed' ? 8 : 4;
        if (lie === 'id') s.u8[w + idAt] = 40; // beyond the 32 ids
        else s.u8[w + lenAt] = 0x01, s.u8[w + lenAt + 1] = 0x10; // len 0x1001 > 256
        s.pair.pollRx(32, c);
        assert.equal(s.got.length, 3, `${tied ? 'tied' : 'each'}: the frames before the bad descriptor`);
        assert.ok(s.pair.error instanceof DescriptorError);
        assert.equal((s.pair.error as DescriptorError).code, lie === 'id' ? 'USED_ID_INVALID' : 'USED_LEN_INVALID');
      }
    });
  }
});
