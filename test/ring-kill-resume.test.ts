/**
 * A device killed mid-batch and a new one resuming at the driver's used
 * position over the same memory, without an inflight buffer (vhost-user:
 * `serve` SIGKILLed, the front-end giving the next one SET_VRING_BASE = its
 * used position, as QEMU and attach do). The driver queue lives on (it is
 * the front-end's). Checked: the pair goes on for several laps of the ring,
 * every chain the driver made available comes back exactly once, and no
 * length beyond what the chain can hold.
 *
 * Packed rings (§2.8): the kill comes (a) after the device pushed a batch
 * used and before publish(), and (b) inside publish(), after each store of
 * its documented order (entries after the first: len and word 3, len first
 * unless it grows the slot's; then the first one's len and word 3, in one
 * 8-byte store when the len grows the slot's). Killed between an entry's
 * two stores, that one chain may come back with another len (never beyond
 * what it holds). (b) replays the stores one by one from
 * what publish() wrote. Split rings (§2.7): (a); the device writes only its
 * used ring there, never the driver's descriptors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DescChain } from '../src/virtio/chain.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { createDeviceQueue, createDriverQueue, contiguousQueueLayout } from '../src/virtio/ring.js';
import type { DeviceQueue, DriverQueue, QueueLayout, QueueOptions, RingFormat } from '../src/virtio/queue.js';
import { DATA, RING, makeMemory } from './support/packed.js';

const SIZE = 16;
const WRITE = 2;
/** Bytes the device reports written into a chain that holds `cap` (0 for some, so in-order runs form). */
const written = (cap: number): number => (cap % 24 === 0 ? 0 : cap - 3);

interface Rig {
  mem: GuestMemory;
  layout: QueueLayout;
  opts: QueueOptions;
  drv: DriverQueue;
  dev: DeviceQueue;
  chain: DescChain;
  next: number;
  /** Per token: capacity, head buffer length, times it came back. */
  cap: Map<number, number>;
  head: Map<number, number>;
  back: Map<number, number>;
  /** Tokens that came back with a len other than written(cap). */
  odd: number[];
  oddLen: number[];
}

function rig(format: RingFormat, inOrder: boolean): Rig {
  const mem = makeMemory();
  const layout = contiguousQueueLayout(format, RING, SIZE);
  const opts: QueueOptions = { eventIdx: false, indirect: false, inOrder, index: 0 };
  const drv = createDriverQueue(mem, layout, opts);
  const devMem = new GuestMemory(mem.specs);
  return { mem, layout, opts, drv, dev: createDeviceQueue(devMem, layout, opts), chain: new DescChain(devMem, 4), next: 0, cap: new Map(), head: new Map(), back: new Map(), odd: [], oddLen: [] };
}

/** Driver: fill the ring (chains of 1 and 2 writable descriptors, various sizes) and publish. */
function refill(r: Rig): void {
  for (;;) {
    const t = r.next;
    const two = t % 3 === 1;
    if (r.drv.numFree < (two ? 2 : 1)) break;
    const base = DATA + 256 * (t % 512);
    const len0 = two ? 12 : 40 + 8 * (t % 5);
    const bufs = two ? [{ addr: base, len: len0, writable: true }, { addr: base + 64, len: 60 + 4 * (t % 4), writable: true }] : [{ addr: base, len: len0, writable: true }];
    assert.ok(r.drv.add(bufs, t) >= 0);
    r.cap.set(t, bufs.reduce((s, b) => s + b.len, 0));
    r.head.set(t, len0);
    r.next++;
  }
  r.drv.publish();
}

/** Driver: reclaim every used buffer. */
function reclaim(r: Rig): void {
  while (r.drv.usedPending() > 0) {
    r.drv.popUsed();
    const t = r.drv.usedToken, len = r.drv.usedLen;
    r.back.set(t, (r.back.get(t) ?? 0) + 1);
    const cap = r.cap.get(t)!;
    assert.ok(len <= cap, `token ${t}: len ${len} > ${cap}`);
    if (len !== written(cap) && !(r.opts.inOrder && len === 0)) {
      r.odd.push(t);
      r.oddLen.push(len);
    }
  }
}

/** Device: pop up to `max` chains (the single-buffer fast path first, as NetDevicePair) and push each used. */
function consume(r: Rig, max: number): number {
  const { dev, chain } = r;
  let n = 0;
  for (; n < max; n++) {
    const s = dev.popSingle(WRITE, 1);
    if (s >= 0) {
      dev.pushUsed(dev.singleId, written(dev.singleLen), 1);
      continue;
    }
    if (s === -2 || dev.pending() === 0) break;
    dev.pop(chain);
    dev.pushUsed(chain.id, written(chain.writableBytes), chain.descs);
  }
  return n;
}

/** Run the pair until `laps` ring laps of chains came back after the restart, then drain; check exactly once. */
function goOn(r: Rig, laps: number, what: string): void {
  const from = r.back.size;
  for (let round = 0; r.back.size < from + laps * SIZE; round++) {
    assert.ok(round < 50 * laps * SIZE, `${what}: stalled (${r.back.size - from} chains back after the restart)`);
    refill(r);
    consume(r, 3 + (round % 4));
    r.dev.publish();
    reclaim(r);
  }
  // Drain: nothing new made available, everything outstanding comes back.
  for (let round = 0; r.back.size < r.next; round++) {
    assert.ok(round < 4 * SIZE, `${what}: ${r.next - r.back.size} chains never came back`);
    consume(r, SIZE);
    r.dev.publish();
    reclaim(r);
  }
  for (const [t, k] of r.back) assert.equal(k, 1, `${what}: token ${t} came back ${k} times`);
  assert.equal(r.back.size, r.next, what);
}

/** A new device queue over the same memory, at the driver's used position (what SET_VRING_BASE carries). */
function restart(r: Rig): void {
  const u = r.drv.state().used;
  r.dev = createDeviceQueue(new GuestMemory(r.mem.specs), r.layout, r.opts);
  r.dev.setState({ avail: u, used: u });
}

/** Traffic until the rings stand at `warm` chains in (at least; exactly with `exact`), then a batch of `batch` chains popped and pushed used. */
function toBatch(r: Rig, warm: number, batch: number, exact = false): void {
  while (r.back.size < warm) {
    refill(r);
    consume(r, exact ? Math.min(4, warm - r.back.size) : 4);
    r.dev.publish();
    reclaim(r);
  }
  refill(r);
  assert.equal(consume(r, batch), batch);
}

const variants = [
  { format: 'packed' as const, inOrder: false },
  { format: 'packed' as const, inOrder: true },
  { format: 'split' as const, inOrder: false },
  { format: 'split' as const, inOrder: true },
];

for (const v of variants) {
  test(`${v.format}${v.inOrder ? ' in-order' : ''}: killed after pushing a batch used, before publish(); the next device goes on, every chain back once`, () => {
    for (const warm of [0, 5, 13, 21]) {
      for (const batch of [1, 2, 4, 7]) {
        const r = rig(v.format, v.inOrder);
        toBatch(r, warm, batch);
        // Killed here: the batch never published.
        restart(r);
        goOn(r, 3, `warm ${warm} batch ${batch}`);
        assert.deepEqual(r.odd, [], 'every len as written');
      }
    }
  });
}

for (const inOrder of [false, true]) {
  test(`packed${inOrder ? ' in-order' : ''}: killed inside publish() after each of its stores; the next device keeps the used descriptors written ahead`, () => {
    let adopted = 0, runs = 0, grown = 0;
    for (const warm of [0, 6, 7, 11]) { // 7: the batch starts with a two-descriptor chain (its first buffer smaller than what it gets)
      for (const batch of [2, 3, 5]) {
        // The stores publish() makes, learnt from a run that is not killed.
        const probe = rig('packed', inOrder);
        toBatch(probe, warm, batch, true);
        const words = new Int32Array(probe.mem.specs[0].buffer, probe.mem.specs[0].bufferOffset, (16 * SIZE) / 4);
        const before = Int32Array.from(words);
        probe.dev.publish();
        const changed: number[] = [];
        for (let i = 0; i < words.length; i++) if (words[i] !== before[i]) changed.push(i);
        const slots = [...new Set(changed.map((i) => i >> 2))];
        // publish() order: every entry after the first (ring order from the first) word 3 then len; the first's len, then word 3.
        const start = probe.drv.state().used & 0x7fff; // the batch's first used descriptor goes there
        const order = slots.slice().sort((a, b) => ((a - start + SIZE) % SIZE) - ((b - start + SIZE) % SIZE));
        // Steps of stores: one or two words each.
        const stores: [number, number][][] = [];
        for (const s of order.slice(1)) {
          const lenStore: [number, number] = [4 * s + 2, words[4 * s + 2]], w3Store: [number, number] = [4 * s + 3, words[4 * s + 3]];
          // len first when it does not exceed the len the slot had, else word 3 first.
          if (words[4 * s + 2] >>> 0 <= before[4 * s + 2] >>> 0) stores.push([lenStore], [w3Store]);
          else stores.push([w3Store], [lenStore]);
        }
        const f = order[0], entrySteps = stores.length;
        // The first entry: len then word 3 when len does not grow the slot's, else both in one 8-byte store.
        const firstSplit = words[4 * f + 2] >>> 0 <= before[4 * f + 2] >>> 0;
        if (firstSplit) stores.push([[4 * f + 2, words[4 * f + 2]]], [[4 * f + 3, words[4 * f + 3]]]);
        else stores.push([[4 * f + 2, words[4 * f + 2]], [4 * f + 3, words[4 * f + 3]]]);
        if (!firstSplit) grown++;
        for (let k = 0; k <= stores.length; k++) {
          // Killed between the first entry's two stores: the chain there is offered again with the dead
          // device's len as its first buffer's length, which is never more than that buffer held.
          const firstLenOnly = firstSplit && k === entrySteps + 1;
          runs++;
          const r = rig('packed', inOrder);
          toBatch(r, warm, batch, true);
          const w = new Int32Array(r.mem.specs[0].buffer, r.mem.specs[0].bufferOffset, (16 * SIZE) / 4);
          assert.deepEqual(Array.from(w), Array.from(before), 'the same run up to the batch');
          for (let i = 0; i < k; i++) for (const [at, v] of stores[i]) w[at] = v;
          // Killed after k stores: the driver takes what it can see, then the next device starts.
          reclaim(r);
          restart(r);
          goOn(r, 3, `warm ${warm} batch ${batch}, killed after store ${k} of ${stores.length}`);
          adopted += (r.dev as unknown as { adoptedUsed: number }).adoptedUsed;
          // Only a kill between an entry's word 3 and its len leaves that entry's len as the driver wrote it.
          const between = k < entrySteps && k % 2 === 1;
          assert.ok(r.odd.length <= (between || firstLenOnly ? 1 : 0), `lens not as written: ${r.odd.join(',')} (k ${k})`);
        }
      }
    }
    assert.ok(adopted > 0, 'some kills left used descriptors ahead that the next device kept');
    assert.ok(runs >= 9 * 5, `kill points run: ${runs}`);
    assert.ok(grown > 0, 'some batches had a first entry whose len grew its slot (one 8-byte store)');
  });
}

test('packed: a ring whose every slot reads used in the device\'s lap (a driver writing garbage) keeps the worker going: one lap kept at most per call', () => {
  const r = rig('packed', false);
  const w = new Int32Array(r.mem.specs[0].buffer, r.mem.specs[0].bufferOffset, (16 * SIZE) / 4);
  for (let s = 0; s < SIZE; s++) w[4 * s + 3] = (s % 3) | ((0x80 | 0x8000) << 16); // AVAIL = USED = 1, ids 0..2
  const dev = r.dev as DeviceQueue & { adoptedUsed: number };
  assert.equal(dev.popSingle(WRITE, 1), -2, 'nothing available');
  assert.equal(dev.pending(), 0);
  assert.ok(dev.adoptedUsed >= SIZE && dev.adoptedUsed <= 2 * SIZE, `kept ${dev.adoptedUsed} slots`);
  assert.equal(dev.state().avail, dev.state().used, 'read and used positions together');
  dev.publish();
  assert.equal(dev.pending(), 0, 'nothing more: the slots now read as the previous lap');
});

test('packed: a used len that grows its slot\'s (first buffer smaller than the chain) goes out with its flags in one 8-byte store, both words right', () => {
  for (const inOrder of [false, true]) {
    const r = rig('packed', inOrder);
    const words = new Int32Array(r.mem.specs[0].buffer, r.mem.specs[0].bufferOffset, (16 * SIZE) / 4);
    // Two chains, the first one of two descriptors (12 + 100 bytes), so the batch's first entry grows its slot's len.
    assert.ok(r.drv.add([{ addr: DATA, len: 12, writable: true }, { addr: DATA + 64, len: 100, writable: true }], 7) >= 0);
    assert.ok(r.drv.add([{ addr: DATA + 256, len: 40, writable: true }], 8) >= 0);
    r.drv.publish();
    for (const len of [80, 30]) {
      r.dev.pop(r.chain);
      r.dev.pushUsed(r.chain.id, len, r.chain.descs);
    }
    assert.equal(words[2] >>> 0, 12, 'nothing written before publish()');
    r.dev.publish();
    assert.equal(words[2], 80, 'slot 0: the used len');
    assert.equal(words[3] & 0xffff, 0, 'slot 0: the Buffer ID');
    assert.equal((words[3] >>> 16) & 0x8080, 0x8080, 'slot 0: AVAIL = USED = the wrap counter (1)');
    const got: [number, number][] = [];
    while (r.drv.usedPending() > 0) {
      r.drv.popUsed();
      got.push([r.drv.usedToken, r.drv.usedLen]);
    }
    assert.deepEqual(got, [[7, 80], [8, 30]]);
  }
});
