/**
 * The generator and pcap netdevs: first in-thread against a scripted
 * receive path (exact backpressure / drop semantics), then end to end over
 * the local transport (device and driver in worker threads), with a
 * driver-side checker that verifies every received frame byte-exact and in
 * order per flow.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RxPort } from '../src/net/netdev.js';
import type { Bytes } from '../src/virtio/copy.js';
import { FlowKey, parseFlow } from '../src/net/flow.js';
import { RssSteering, VIRTIO_NET_RSS_HASH_TYPE_ALL } from '../src/net/rss.js';
import { DEFAULT_RSS_KEY } from '../src/net/toeplitz.js';
import { AFS_TABLE_SIZE, symmetricFlowHash } from '../src/net/steering.js';
import { TxQueueSelector } from '../src/net/tx-select.js';
import { DevStat, DrvStat } from '../src/net/stats.js';
import { TrafficGenerator, type GeneratorOptions } from '../src/netdev/generator.js';
import { PcapCapture, readPcapFile, writePcapFile } from '../src/netdev/pcap.js';
import {
  GEN_STAT_COUNT, GenStat, GeneratorNetdev, generatorOptionsOf, newGate, newGeneratorStats, openGate,
  type GeneratorNetdevSpec,
} from '../src/netdev/generator-netdev.js';
import {
  MAX_REPLAY_FRAME, PCAP_STAT_COUNT, PcapNetdev, PcapStat, mergePairCaptures, newPcapStats, pcapPairPath, replayOwner,
} from '../src/netdev/pcap-netdev.js';
import { LocalNet } from '../src/transport/local/local-net.js';
import { assignFlows, prepareGeneratorTraffic, type GeneratorTrafficSpec } from '../src/traffic/generator-source.js';
import { preparePcapTraffic } from '../src/traffic/pcap-source.js';

// ---- helpers -----------------------------------------------------------------

/** A receive path that records what it takes and refuses the offers `refuse(n)` says (n counts every offer). */
class ScriptedRx implements RxPort {
  frames: Uint8Array[] = [];
  offers = 0;
  drops = 0;
  constructor(private readonly refuse: (n: number) => boolean = () => false) {}
  receive(src: Bytes, off: number, len: number, originPair: number): boolean {
    assert.equal(originPair, -1, 'netdev frames are external');
    if (this.refuse(this.offers++)) return false;
    this.frames.push(src.u8.slice(off, off + len));
    return true;
  }
  receiveOwn(src: Bytes, off: number, len: number): boolean {
    return this.receive(src, off, len, -1);
  }
  room(): number {
    return 1 << 20; // the scripted receive path always has buffers; refusals are scripted
  }
  drop(): void {
    this.drops++;
  }
}

function bytesOfFrame(f: Uint8Array): Bytes {
  const ab = new ArrayBuffer((f.length + 3) & ~3);
  const u8 = new Uint8Array(ab);
  u8.set(f);
  return { u8, i32: new Int32Array(ab) };
}

/** Frames of `flows` interleaved flows, frame k = (flow k % flows, seq k / flows). */
function generatedFrames(opts: GeneratorOptions, count: number): Uint8Array[] {
  const g = new TrafficGenerator(opts);
  const buf = new Uint8Array(g.maxFrameLength);
  const out: Uint8Array[] = [];
  for (let k = 0; k < count; k++) {
    const len = g.writeFrame(k % g.flows, Math.floor(k / g.flows), buf, 0);
    out.push(buf.slice(0, len));
  }
  return out;
}

/** A driver-side checker: a GeneratorSource that owns no flow (sends nothing) and checks every frame it receives. */
function checkerFor(gen: GeneratorOptions): GeneratorTrafficSpec {
  const spec = prepareGeneratorTraffic(gen);
  new Int32Array(spec.flowPair).fill(-1);
  return spec;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function sumStat(buf: SharedArrayBuffer, width: number, pairs: number, stat: number): number {
  const a = new Float64Array(buf);
  let s = 0;
  for (let p = 0; p < pairs; p++) s += a[p * width + stat];
  return s;
}

function perPair(net: LocalNet, stat: number): number[] {
  return Array.from({ length: net.driver.pairs }, (_, p) => net.drvStats.get(p, stat));
}

// ---- GeneratorNetdev in-thread ---------------------------------------------------

test('generator: each pair generates a disjoint share of the flows, every flow with seq 0..perFlow-1 in order', () => {
  const spec: GeneratorNetdevSpec = { kind: 'generator', flows: 10, size: 100, proto: 'mixed', ipVersion: 'mixed', perFlow: 4 };
  const check = new TrafficGenerator(generatorOptionsOf(spec));
  const seqs = new Map<number, number[]>();
  let total = 0;
  for (let pair = 0; pair < 3; pair++) {
    const b = new GeneratorNetdev(spec, pair, 3);
    assert.ok(b.externalRx);
    assert.deepEqual([...b.flows], Array.from({ length: 10 }, (_, f) => f).filter((f) => f % 3 === pair));
    const rx = new ScriptedRx();
    let rounds = 0;
    while (b.busy()) {
      assert.ok(b.poll(rx, 7) > 0);
      assert.ok(++rounds < 100);
    }
    assert.equal(b.poll(rx, 7), 0, 'nothing after perFlow frames per flow');
    assert.equal(rx.frames.length, b.flows.length * 4);
    assert.equal(b.stat(GenStat.generated), rx.frames.length);
    assert.equal(b.stat(GenStat.accepted), rx.frames.length);
    assert.equal(b.stat(GenStat.done), 1);
    for (const f of rx.frames) {
      const r = check.inspect(f);
      assert.ok(r.ok, r.error);
      assert.equal(r.flow % 3, pair);
      if (!seqs.has(r.flow)) seqs.set(r.flow, []);
      seqs.get(r.flow)!.push(r.seq);
    }
    total += rx.frames.length;
  }
  assert.equal(total, 40);
  assert.equal(seqs.size, 10);
  for (const [f, s] of seqs) assert.deepEqual(s, [0, 1, 2, 3], `flow ${f}`);
});

test('generator: refused frames are dropped and counted (onFull drop) or offered again (onFull retry)', () => {
  const base: GeneratorNetdevSpec = { kind: 'generator', flows: 4, size: 64, perFlow: 30 };
  const check = new TrafficGenerator(generatorOptionsOf(base));
  const refuseEveryThird = (n: number) => n % 3 === 2;

  const stats = newGeneratorStats(2);
  const drop = new GeneratorNetdev({ ...base, stats }, 1, 2); // flows 1 and 3
  const rx1 = new ScriptedRx(refuseEveryThird);
  while (drop.busy()) drop.poll(rx1, 16);
  assert.equal(drop.stat(GenStat.generated), 60);
  assert.equal(rx1.drops, 20, 'every third of 60 offers refused, each one rx.drop()');
  assert.equal(drop.stat(GenStat.dropped), 20);
  assert.equal(drop.stat(GenStat.accepted), 40);
  assert.equal(new Float64Array(stats)[1 * GEN_STAT_COUNT + GenStat.dropped], 20, 'counters land in the shared block at the pair');
  // Sequence numbers still increase per flow (with gaps where frames were dropped).
  const last = new Map<number, number>();
  for (const f of rx1.frames) {
    assert.ok(check.checkFrame(f, 0, f.length) >= 0);
    assert.ok(check.seq > (last.get(check.flow) ?? -1));
    last.set(check.flow, check.seq);
  }

  // A receive path that takes nothing: drops are not work, so the device worker sees an idle round.
  const stuck = new GeneratorNetdev(base, 0, 2);
  const none = new ScriptedRx(() => true);
  assert.equal(stuck.poll(none, 16), 0);
  assert.equal(none.drops, 16);
  assert.equal(stuck.stat(GenStat.generated), 16);

  const retry = new GeneratorNetdev({ ...base, onFull: 'retry' }, 1, 2);
  const rx2 = new ScriptedRx(refuseEveryThird);
  let polls = 0;
  while (retry.busy()) {
    retry.poll(rx2, 16);
    assert.ok(++polls < 1000);
  }
  assert.equal(rx2.drops, 0);
  assert.equal(retry.stat(GenStat.dropped), 0);
  assert.equal(retry.stat(GenStat.generated), 60);
  assert.equal(retry.stat(GenStat.retries), rx2.offers - 60);
  const got = rx2.frames.map((f) => (check.checkFrame(f, 0, f.length), `${check.flow}:${check.seq}`));
  const want: string[] = [];
  for (let s = 0; s < 30; s++) for (const f of [1, 3]) want.push(`${f}:${s}`);
  assert.deepEqual(got, want, 'lossless and in generation order');
});

test('generator: nothing is generated until the gate opens; endless without perFlow', () => {
  const gate = newGate();
  const b = new GeneratorNetdev({ kind: 'generator', flows: 2, size: 64, gate }, 0, 1);
  const rx = new ScriptedRx();
  assert.equal(b.busy(), false, 'a closed gate lets the worker sleep');
  assert.equal(b.poll(rx, 8), 0);
  assert.equal(rx.offers, 0);
  openGate(gate);
  assert.equal(b.busy(), true);
  for (let i = 0; i < 50; i++) assert.equal(b.poll(rx, 8), 8);
  assert.equal(b.busy(), true, 'no perFlow: endless');
  assert.equal(rx.frames.length, 400);
});

test('generator: transmitted frames are counted, and ours checked byte-exact', () => {
  const spec: GeneratorNetdevSpec = { kind: 'generator', flows: 3, size: 128, proto: 'tcp' };
  const b = new GeneratorNetdev(spec, 0, 1);
  const [good, other] = generatedFrames(generatorOptionsOf(spec), 2);
  const bad = good.slice();
  bad[100] ^= 0x40; // a payload bit flipped
  const foreign = new Uint8Array(60).fill(0xff); // broadcast, ethertype 0xffff
  for (const f of [good, other, bad, foreign]) assert.equal(b.transmit(bytesOfFrame(f), 0, f.length), true);
  assert.equal(b.stat(GenStat.txFrames), 4);
  assert.equal(b.stat(GenStat.txOk), 2);
  assert.equal(b.stat(GenStat.txBad), 1);
});

// ---- PcapNetdev in-thread ---------------------------------------------------------

test('pcap replay: shares are disjoint, cover the capture, keep each flow on one pair; backpressure loses nothing', () => {
  const frames = generatedFrames({ flows: 8, frameSize: 90, proto: 'mixed', ipVersion: 'mixed' }, 120);
  const cap = captureOf(frames);
  const sab = cap.toSharedArrayBuffer();
  const stats = newPcapStats(3);
  const owner = new Map<string, number>();
  const seen = new Set<number>();
  const probe = new TrafficGenerator({ flows: 8, frameSize: 90, proto: 'mixed', ipVersion: 'mixed' });
  for (let pair = 0; pair < 3; pair++) {
    const b = new PcapNetdev({ kind: 'pcap', read: sab, stats }, pair, 3);
    assert.ok(b.externalRx);
    for (const i of b.share) {
      assert.ok(!seen.has(i), `frame ${i} replayed by two pairs`);
      seen.add(i);
      assert.equal(replayOwner(cap, i, 3, 'flow'), pair);
      assert.ok(probe.checkFrame(frames[i], 0, frames[i].length) >= 0);
      const prev = owner.get(String(probe.flow));
      assert.ok(prev === undefined || prev === pair, `flow ${probe.flow} split over pairs`);
      owner.set(String(probe.flow), pair);
    }
    const rx = new ScriptedRx((n) => n % 2 === 1); // refuse every other offer
    let polls = 0;
    while (b.busy()) {
      b.poll(rx, 5);
      assert.ok(++polls < 10_000);
    }
    assert.equal(rx.drops, 0);
    assert.deepEqual(rx.frames, [...b.share].map((i) => frames[i]), 'the share, in capture order, each frame once');
    assert.equal(b.stat(PcapStat.replayed), b.share.length);
    assert.equal(b.stat(PcapStat.rounds), 1);
    assert.ok(b.stat(PcapStat.retries) > 0);
    assert.equal(b.poll(rx, 5), 0, 'replayed once');
  }
  assert.equal(seen.size, 120);
  assert.equal(sumStat(stats, PCAP_STAT_COUNT, 3, PcapStat.replayed), 120);
  assert.ok(new Set(owner.values()).size >= 2, '8 flows should not all hash to one pair');
});

test('pcap replay: index split, rounds, loop, and frames too large for any receive path', () => {
  const frames = generatedFrames({ flows: 4, frameSize: 64 }, 10);
  const sab = captureOf(frames).toSharedArrayBuffer();
  const b = new PcapNetdev({ kind: 'pcap', read: sab, split: 'index', rounds: 2 }, 1, 3);
  assert.deepEqual([...b.share], [1, 4, 7]);
  const rx = new ScriptedRx();
  while (b.busy()) b.poll(rx, 2);
  assert.deepEqual(rx.frames, [1, 4, 7, 1, 4, 7].map((i) => frames[i]));
  assert.equal(b.stat(PcapStat.rounds), 2);

  const l = new PcapNetdev({ kind: 'pcap', read: sab, loop: true }, 0, 1);
  const rx2 = new ScriptedRx();
  for (let i = 0; i < 10; i++) l.poll(rx2, 7);
  assert.equal(rx2.frames.length, 70);
  assert.ok(l.busy());
  assert.equal(l.stat(PcapStat.rounds), 7);
  assert.deepEqual(rx2.frames[10], frames[0]);

  // A 70000-byte frame between two normal ones: dropped, the others replayed.
  const huge = new Uint8Array(MAX_REPLAY_FRAME + 4465).fill(7);
  const big = new PcapNetdev({ kind: 'pcap', read: captureOf([frames[0], huge, frames[1]]).toSharedArrayBuffer() }, 0, 1);
  const rx3 = new ScriptedRx();
  while (big.busy()) big.poll(rx3, 8);
  assert.deepEqual(rx3.frames, [frames[0], frames[1]]);
  assert.equal(rx3.drops, 1);
  assert.equal(big.stat(PcapStat.dropped), 1);
});

test('pcap record: one file per pair, flushed when TX goes idle, merged by timestamp', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-pcapw-'));
  try {
    const path = join(dir, 'tx.pcap');
    assert.equal(pcapPairPath(path, 1), join(dir, 'tx.q1.pcap'));
    assert.equal(pcapPairPath(join(dir, 'cap'), 0), join(dir, 'cap.q0'));
    const frames = generatedFrames({ flows: 3, frameSize: 200 }, 9);
    const b0 = new PcapNetdev({ kind: 'pcap', write: path }, 0, 2);
    const b1 = new PcapNetdev({ kind: 'pcap', write: path }, 1, 2);
    assert.equal(b0.externalRx, false);
    assert.equal(b0.busy(), false);
    const rx = new ScriptedRx();
    frames.forEach((f, i) => (i % 3 === 1 ? b1 : b0).transmit(bytesOfFrame(f), 0, f.length));
    // One poll after TX (a busy round), one in an idle round: flushed.
    assert.equal(b0.poll(rx, 8), 0);
    assert.equal(b0.poll(rx, 8), 0);
    assert.equal(rx.offers, 0, 'a record-only netdev offers nothing to RX');
    assert.equal(readPcapFile(b0.writePath!).count, 6, 'flushed before close');
    b0.close();
    b1.close();
    b1.close(); // idempotent
    const c0 = readPcapFile(pcapPairPath(path, 0));
    const c1 = readPcapFile(pcapPairPath(path, 1));
    assert.deepEqual(c0.frames, frames.filter((_, i) => i % 3 !== 1));
    assert.deepEqual(c1.frames, frames.filter((_, i) => i % 3 === 1));
    const now = BigInt(Date.now()) * 1_000_000n;
    assert.ok(c0.timestamps[0] > now - 60_000_000_000n && c0.timestamps[0] <= now + 1_000_000_000n, 'wall-clock timestamps');
    const merged = join(dir, 'all.pcap');
    assert.equal(mergePairCaptures(path, 3, merged), 9, 'a missing pair file is skipped');
    const m = readPcapFile(merged);
    for (let i = 1; i < m.count; i++) assert.ok(m.timestamps[i] >= m.timestamps[i - 1]);
    assert.deepEqual(new Set(m.frames.map((f) => f.join())), new Set(frames.map((f) => f.join())));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function captureOf(frames: Uint8Array[]): PcapCapture {
  let total = 0;
  for (const f of frames) total += f.length;
  const data = new Uint8Array(total);
  const offsets = new Uint32Array(frames.length);
  const lengths = new Uint32Array(frames.length);
  let o = 0;
  frames.forEach((f, i) => {
    data.set(f, o);
    offsets[i] = o;
    lengths[i] = f.length;
    o += f.length;
  });
  return new PcapCapture('pcap', frames.length, data, offsets, lengths, lengths.slice(), new BigInt64Array(frames.length));
}

// ---- end to end over the local transport ----------------------------------------------

test('e2e generator, no RSS, 4 pairs: flows nobody transmitted land on receiveq1, all of them, intact and in order', async () => {
  const spec: GeneratorNetdevSpec = { kind: 'generator', flows: 16, size: 128, perFlow: 200, onFull: 'retry', stats: newGeneratorStats(4) };
  const checker = checkerFor(generatorOptionsOf(spec));
  const net = new LocalNet({ pairs: 4, netdev: spec, source: () => checker });
  await net.start();
  try {
    const total = 16 * 200;
    await waitFor('all generated frames', () => net.drvStats.total(DrvStat.rxPackets) >= total);
    await sleep(50);
    assert.deepEqual(perPair(net, DrvStat.rxPackets), [total, 0, 0, 0]);
    assert.equal(net.drvStats.total(DrvStat.rxBad), 0);
    assert.equal(net.drvStats.total(DrvStat.rxOutOfOrder), 0);
    assert.deepEqual([...new Int32Array(checker.rxSeq)], new Array(16).fill(200), 'every flow complete');
    for (let p = 0; p < 4; p++) assert.equal(new Float64Array(spec.stats!)[p * GEN_STAT_COUNT + GenStat.generated], 4 * 200, `pair ${p} generated its 4 flows`);
    assert.equal(net.devStats.total(DevStat.rxDrops), 0);
    assert.deepEqual(net.errors, []);
  } finally {
    await net.stop();
  }
});

test('e2e generator with RSS: each driver pair receives exactly the flows the indirection table gives it', async () => {
  const pairs = 4;
  const gate = newGate();
  const spec: GeneratorNetdevSpec = {
    kind: 'generator', flows: 24, size: 96, proto: 'mixed', ipVersion: 'mixed', perFlow: 150, onFull: 'retry', gate, stats: newGeneratorStats(pairs),
  };
  const opts = generatorOptionsOf(spec);
  // Pair 1 is left out of the table: it must receive nothing.
  const table = Uint16Array.from({ length: 128 }, (_, i) => [0, 2, 3][i % 3]);
  const rssCfg = { key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_RSS_HASH_TYPE_ALL, indirectionTable: table, unclassifiedQueue: 0 };
  const expected = new Array(pairs).fill(0);
  const flowQueue = rssQueues(opts, rssCfg, pairs);
  flowQueue.forEach((q) => (expected[q] += spec.perFlow!));
  assert.equal(expected[1], 0);
  assert.ok(expected[0] > 0 && expected[2] > 0 && expected[3] > 0, `24 flows spread over 0, 2, 3: ${expected}`);

  const checker = checkerFor(opts);
  const net = new LocalNet({ pairs, queueSize: 64, netdev: spec, source: () => checker });
  await net.start();
  try {
    await net.setRss({ ...rssCfg, maxTxVq: pairs }); // resolves once every device worker applied it
    openGate(gate);
    net.ctl.wakeAll();
    await waitFor('all generated frames', () => net.drvStats.total(DrvStat.rxPackets) >= 24 * 150);
    await sleep(50);
    assert.deepEqual(perPair(net, DrvStat.rxPackets), expected);
    assert.deepEqual([...new Int32Array(checker.rxSeq)], new Array(24).fill(150));
    assert.equal(net.drvStats.total(DrvStat.rxBad), 0);
    assert.equal(net.drvStats.total(DrvStat.rxOutOfOrder), 0);
    assert.equal(sumStat(spec.stats!, GEN_STAT_COUNT, pairs, GenStat.dropped), 0);
    assert.deepEqual(net.errors, []);
  } finally {
    await net.stop();
  }
});

test('e2e generator with automatic flow steering: external frames follow the pair each flow transmits on', async () => {
  const pairs = 4;
  const flows = 12;
  const gate = newGate();
  const spec: GeneratorNetdevSpec = { kind: 'generator', flows, size: 80, perFlow: 100, onFull: 'retry', gate, stats: newGeneratorStats(pairs) };
  const opts = generatorOptionsOf(spec);
  // Precondition: the 12 flows occupy distinct AFS slots (deterministic).
  const slots = new Set<number>();
  const g = new TrafficGenerator(opts);
  const buf = new Uint8Array(g.maxFrameLength);
  const key = new FlowKey();
  for (let f = 0; f < flows; f++) {
    const len = g.writeFrame(f, 0, buf, 0);
    parseFlow(buf, 0, len, key);
    slots.add(symmetricFlowHash(key, buf, 0) & (AFS_TABLE_SIZE - 1));
  }
  assert.equal(slots.size, flows);

  // The driver sends each flow on a pair of its own choosing (not the generator's owner pair).
  const traffic = prepareGeneratorTraffic(opts);
  const flowPair = new Int32Array(traffic.flowPair);
  for (let f = 0; f < flows; f++) flowPair[f] = (3 * f + 1) % pairs;
  const expected = new Array(pairs).fill(0);
  for (let f = 0; f < flows; f++) expected[flowPair[f]] += 100;

  const net = new LocalNet({ pairs, netdev: spec, source: () => traffic });
  await net.start();
  try {
    // Once a pair's device worker consumed as many frames as it has flows, it has seen each of them (round robin).
    await waitFor('every flow transmitted once', () =>
      [0, 1, 2, 3].every((p) => net.devStats.get(p, DevStat.txPackets) >= expected[p] / 100));
    openGate(gate);
    net.ctl.wakeAll();
    await waitFor('all generated frames', () => net.drvStats.total(DrvStat.rxPackets) >= flows * 100);
    await net.stopTx();
    await waitFor('the transmitqs drained', () => net.devStats.total(DevStat.txPackets) === net.drvStats.total(DrvStat.txPackets));
    assert.deepEqual(perPair(net, DrvStat.rxPackets), expected);
    assert.deepEqual([...new Int32Array(traffic.rxSeq)], new Array(flows).fill(100));
    assert.equal(net.drvStats.total(DrvStat.rxBad), 0);
    assert.equal(net.drvStats.total(DrvStat.rxOutOfOrder), 0);
    // The generator checked what the driver sent: all of it ours and intact.
    const txFrames = sumStat(spec.stats!, GEN_STAT_COUNT, pairs, GenStat.txFrames);
    assert.equal(txFrames, net.devStats.total(DevStat.txPackets));
    assert.ok(txFrames > 0);
    assert.equal(sumStat(spec.stats!, GEN_STAT_COUNT, pairs, GenStat.txOk), txFrames);
    assert.equal(sumStat(spec.stats!, GEN_STAT_COUNT, pairs, GenStat.txBad), 0);
  } finally {
    await net.stop();
  }
});

test('e2e generator dropping on a full receive path: every frame is either received or counted as a drop', async () => {
  const pairs = 2;
  const spec: GeneratorNetdevSpec = { kind: 'generator', flows: 8, size: 64, perFlow: 2500, stats: newGeneratorStats(pairs) };
  const checker = checkerFor(generatorOptionsOf(spec));
  // Small rings and inboxes so the generator outruns the driver.
  const net = new LocalNet({ pairs, queueSize: 64, inboxBytes: 4096, netdev: spec, source: () => checker });
  await net.start();
  try {
    const total = 8 * 2500;
    const accounted = () => net.drvStats.total(DrvStat.rxPackets) + net.devStats.total(DevStat.rxDrops);
    await waitFor('every frame received or dropped', () => accounted() >= total);
    await sleep(50);
    assert.equal(accounted(), total);
    const dropped = sumStat(spec.stats!, GEN_STAT_COUNT, pairs, GenStat.dropped);
    assert.equal(dropped, net.devStats.total(DevStat.rxDrops), 'every wire drop reached rx.drop()');
    assert.equal(sumStat(spec.stats!, GEN_STAT_COUNT, pairs, GenStat.generated), total);
    assert.equal(net.drvStats.total(DrvStat.rxBad), 0);
    // Without reordering, each sequence gap swallowed at least one dropped frame.
    assert.ok(net.drvStats.total(DrvStat.rxOutOfOrder) <= dropped);
    for (const s of new Int32Array(checker.rxSeq)) assert.ok(s <= 2500);
    assert.ok(net.drvStats.total(DrvStat.rxPackets) > 0);
    console.log(`# drop test: ${dropped} of ${total} frames dropped`);
  } finally {
    await net.stop();
  }
});

test('e2e pcap replay: a PcapWriter capture arrives complete, byte-exact, each flow in capture order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-replay-'));
  const pairs = 4;
  try {
    const file = join(dir, 'in.pcap');
    const frames = generatedFrames({ flows: 20, frameSize: 150, proto: 'mixed', ipVersion: 'mixed' }, 400);
    assert.equal(writePcapFile(file, frames), 400);
    const cap = readPcapFile(file);
    const gate = newGate();
    const stats = newPcapStats(pairs);
    // Checker: PcapSource that sends nothing (no frame assigned to any pair) and checks what arrives.
    const checker = preparePcapTraffic(cap.frames, () => -1);
    const net = new LocalNet({
      pairs, queueSize: 64, netdev: { kind: 'pcap', read: cap.toSharedArrayBuffer(), gate, stats }, source: () => checker,
    });
    await net.start();
    try {
      const table = Uint16Array.from({ length: 128 }, (_, i) => i % pairs);
      await net.setRss({ key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_RSS_HASH_TYPE_ALL, indirectionTable: table, unclassifiedQueue: 0, maxTxVq: pairs });
      openGate(gate);
      net.ctl.wakeAll();
      await waitFor('the whole capture', () => net.drvStats.total(DrvStat.rxPackets) >= 400);
      await sleep(50);
      assert.equal(net.drvStats.total(DrvStat.rxPackets), 400);
      assert.equal(net.drvStats.total(DrvStat.rxBad), 0);
      assert.equal(net.drvStats.total(DrvStat.rxOutOfOrder), 0);
      assert.equal(net.devStats.total(DevStat.rxDrops), 0);
      assert.equal(sumStat(stats, PCAP_STAT_COUNT, pairs, PcapStat.replayed), 400);
      assert.equal(sumStat(stats, PCAP_STAT_COUNT, pairs, PcapStat.share), 400);
      assert.ok(perPair(net, DrvStat.rxPackets).filter((n) => n > 0).length >= 3, 'RSS spread the replay');
      // Per pair: exactly the frames RSS picks for it.
      const opts = { flows: 20, frameSize: 150, proto: 'mixed' as const, ipVersion: 'mixed' as const };
      const q = rssQueues(opts, { key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_RSS_HASH_TYPE_ALL, indirectionTable: table, unclassifiedQueue: 0 }, pairs);
      const expected = new Array(pairs).fill(0);
      for (let k = 0; k < 400; k++) expected[q[k % 20]]++;
      assert.deepEqual(perPair(net, DrvStat.rxPackets), expected);
      assert.deepEqual(net.errors, []);
    } finally {
      await net.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('e2e pcap record: generated driver traffic lands in the per-pair files, complete, intact, in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-record-'));
  const pairs = 3;
  try {
    const path = join(dir, 'tx.pcap');
    const opts: GeneratorOptions = { flows: 12, frameSize: 200, proto: 'mixed' };
    const traffic = prepareGeneratorTraffic(opts);
    const selector = new TxQueueSelector();
    assignFlows(traffic, (f) => selector.select(f, 0, f.length, pairs));
    const stats = newPcapStats(pairs);
    const net = new LocalNet({ pairs, netdev: { kind: 'pcap', write: path, stats }, source: () => traffic });
    await net.start();
    let sent: number[];
    try {
      await waitFor('some traffic', () => net.drvStats.total(DrvStat.txPackets) > 3000);
      await net.stopTx();
      await waitFor('transmitqs drained', () => {
        const tx = net.drvStats.total(DrvStat.txPackets);
        return tx > 0 && net.devStats.total(DevStat.txPackets) === tx;
      });
      sent = Array.from({ length: pairs }, (_, p) => net.drvStats.get(p, DrvStat.txPackets));
      assert.deepEqual(net.errors, []);
    } finally {
      await net.stop(); // device workers close their writers
    }
    const g = new TrafficGenerator(opts);
    const flowPair = new Int32Array(traffic.flowPair);
    const txSeq = new Int32Array(traffic.txSeq);
    let total = 0;
    for (let p = 0; p < pairs; p++) {
      const file = pcapPairPath(path, p);
      assert.ok(existsSync(file), `pair ${p} created ${file}`);
      const c = readPcapFile(file);
      assert.equal(c.count, sent[p], `pair ${p}: every frame it transmitted`);
      assert.equal(new Float64Array(stats)[p * PCAP_STAT_COUNT + PcapStat.written], sent[p]);
      const next = new Map<number, number>();
      for (const f of c) {
        const r = g.inspect(f);
        assert.ok(r.ok, `pair ${p}: ${r.error}`);
        assert.equal(flowPair[r.flow], p, `flow ${r.flow} recorded by the pair that sent it`);
        assert.equal(r.seq, next.get(r.flow) ?? 0, `flow ${r.flow} in order, no gap`);
        next.set(r.flow, r.seq + 1);
      }
      for (const [f, n] of next) assert.equal(n, txSeq[f], `flow ${f}: all ${txSeq[f]} frames`);
      total += c.count;
    }
    assert.equal(total, sent.reduce((a, b) => a + b, 0));
    assert.ok(sent.filter((n) => n > 0).length >= 2, `12 flows over 3 pairs: ${sent}`);
    assert.equal(mergePairCaptures(path, pairs, join(dir, 'all.pcap')), total);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The receive queue RSS picks for each flow's frames (as the device computes it). */
function rssQueues(opts: GeneratorOptions, cfg: ConstructorParameters<typeof RssSteering>[0], activePairs: number): number[] {
  const rss = new RssSteering(cfg);
  const g = new TrafficGenerator(opts);
  const buf = new Uint8Array(g.maxFrameLength);
  const key = new FlowKey();
  return Array.from({ length: g.flows }, (_, f) => {
    const len = g.writeFrame(f, 0, buf, 0);
    parseFlow(buf, 0, len, key);
    const q = rss.selectQueue(key);
    return q < activePairs ? q : q % activePairs;
  });
}

test('generator template mode: prebuilt frames per flow, only the sequence number changes', () => {
  const g = new GeneratorNetdev({ kind: 'generator', flows: 4, size: 64, template: true, perFlow: 3 }, 0, 2);
  const seen: { flow: number; seq: number; bytes: Uint8Array }[] = [];
  const rx = {
    receive(src: { u8: Uint8Array }, off: number, len: number) {
      const f = src.u8.subarray(off, off + len);
      const dv = new DataView(f.buffer, f.byteOffset, len);
      seen.push({ flow: dv.getUint32(44), seq: dv.getUint32(48), bytes: f.slice() }); // payload fields are big-endian
      return true;
    },
    drop() {},
    room() { return 1 << 20; },
  };
  while (g.busy()) g.poll(rx as never, 64);
  // pair 0 of 2 owns flows 0 and 2; three rounds each, in round-robin order
  assert.deepEqual(seen.map((s) => [s.flow, s.seq]), [[0, 0], [2, 0], [0, 1], [2, 1], [0, 2], [2, 2]]);
  for (const s of seen) assert.equal(s.bytes.length, 64);
  // Apart from the sequence number, a flow's frames are identical (a template).
  const a = seen[0].bytes.slice(), c = seen[4].bytes.slice();
  a.fill(0, 48, 52);
  c.fill(0, 48, 52);
  assert.deepEqual(a, c);
});
