/**
 * Strict conformance (`--strict`): a deliberately faulty driver breaks one
 * rule at a time, through the same device path the workers run
 * (buildDevicePair → NetDevicePair.poll → onQueueError), the controlq of
 * NetDevice, and the driver queues for a faulty device; the report must name
 * the rule's section and words and the offending values, once per rule,
 * with counts. End to end, `loopback --strict` with a well-behaved driver
 * reports nothing, and a transmitq whose avail->idx is moved backwards
 * under the running workers is reported as §2.7.6.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildDevicePair, type DevicePairData } from '../src/transport/device-pair-setup.js';
import { contiguousQueueLayout, createDeviceQueue } from '../src/virtio/ring.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { DescChain } from '../src/virtio/chain.js';
import { ConformanceMonitor, RING_RULES, formatConformance, type SpecRule } from '../src/virtio/conformance.js';
import { NET_RULES, attachNetConformance } from '../src/net/conformance.js';
import { DescriptorError } from '../src/virtio/errors.js';
import { StatsBlock, DEV_STAT_COUNT, DrvStat, DevStat } from '../src/net/stats.js';
import { DeviceSteering } from '../src/net/steering.js';
import { FrameRing } from '../src/net/frame-ring.js';
import type { RingFormat } from '../src/virtio/queue.js';
import { SplitDriverQueue } from '../src/virtio/split/driver.js';
import { NetDevice } from '../src/net/device.js';
import {
  VIRTIO_F_VERSION_1, VIRTIO_STATUS_ACKNOWLEDGE, VIRTIO_STATUS_DRIVER, VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_FEATURES_OK,
} from '../src/virtio/features.js';
import { VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ } from '../src/net/features.js';
import { encodeMqVqPairsSet, VIRTIO_NET_OK } from '../src/net/ctrl.js';
import { LocalNet } from '../src/transport/local/local-net.js';
import { prepareGeneratorTraffic } from '../src/traffic/generator-source.js';
import { loopback } from '../src/cli/loopback.js';
import { LoopbackObserved } from '../src/cli/observe/loopback-observed.js';
import { formatSnapshot } from '../src/cli/stats.js';
import { metricsRegistry } from '../src/cli/http/metrics.js';
import { parsePromText } from './support/prom-text.js';

const SIZE = 8;
const NEXT = 1, WRITE = 2, INDIRECT = 4;
const P_AVAIL = 1 << 7; // packed VIRTQ_DESC_F_AVAIL (wrap counter 1)
const RX_BASE = 0x1000, TX_BASE = 0x4000, DATA = 0x10000;

/** The spec text shipped with the repository: every rule's words must be in it (markup aside). */
const specDir = fileURLToPath(new URL('../../../shared/ref/virtio-spec/', import.meta.url));
function specText(): string | null {
  try {
    return ['split-ring.tex', 'packed-ring.tex', 'content.tex', 'device-types_net_description.tex']
      .map((f) => readFileSync(specDir + f, 'utf8')).join('\n');
  } catch {
    return null;
  }
}

/** One device queue pair as a worker builds it (strict), over guest memory the test writes as a faulty driver. */
class FaultyDriver {
  readonly mem: GuestMemory;
  readonly monitor = new ConformanceMonitor();
  readonly built: ReturnType<typeof buildDevicePair>;
  readonly tx;
  private txAvail = 0;
  private pos = 0;

  constructor(readonly format: RingFormat, opts: { indirect?: boolean; strict?: boolean } = {}) {
    const sab = new SharedArrayBuffer(1 << 20);
    const regions = [{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }];
    this.mem = new GuestMemory(regions);
    const rx = contiguousQueueLayout(format, RX_BASE, SIZE);
    this.tx = contiguousQueueLayout(format, TX_BASE, SIZE);
    const backlog = new FrameRing(65536).buffer;
    const d: DevicePairData = {
      pair: 0, maxPairs: 1, regions, rx, tx: this.tx,
      rings: { packed: format === 'packed', eventIdx: false, inOrder: false, indirect: opts.indirect ?? true },
      mrgRxbuf: true, hdrLen: 12, stats: new StatsBlock(1, DEV_STAT_COUNT).buffer, afs: DeviceSteering.newAfsBuffer(),
      inboxes: [backlog], outboxes: [backlog], netdev: { kind: 'sink' }, rss: null, strict: opts.strict ?? true,
    };
    this.built = buildDevicePair(d, 1, { notifyQueue: () => {}, wakeDevice: () => {} });
    this.built.dev.onQueueError = (q, e) => {
      const code = (e as DescriptorError).code;
      this.monitor.recordRingError(code, e.message, q, format);
      this.errors.push(code);
    };
  }

  readonly errors: string[] = [];

  /** Split: descriptor `i` of the transmitq's table (or of a table at `table`). */
  desc(i: number, addr: number, len: number, flags: number, next = 0, table = this.tx.descAddr): void {
    const v = new DataView(new ArrayBuffer(16));
    v.setUint32(0, addr, true);
    v.setUint32(8, len, true);
    v.setUint16(12, flags, true);
    v.setUint16(14, next, true);
    this.mem.write(table + 16 * i, new Uint8Array(v.buffer));
  }

  /** Split: put heads in the available ring and publish avail->idx. */
  offer(...heads: number[]): void {
    for (const h of heads) {
      this.mem.write(this.tx.driverAddr + 4 + 2 * (this.txAvail % SIZE), Uint8Array.of(h & 0xff, h >> 8));
      this.txAvail = (this.txAvail + 1) & 0xffff;
    }
    this.setAvailIdx(this.txAvail);
  }

  setAvailIdx(v: number): void {
    this.mem.write(this.tx.driverAddr + 2, Uint8Array.of(v & 0xff, v >> 8));
  }

  /** Packed: the next descriptor in the transmitq's ring, made available (wrap counter 1: AVAIL set, USED clear). */
  packed(addr: number, len: number, id: number, flags: number): void {
    const v = new DataView(new ArrayBuffer(16));
    v.setUint32(0, addr, true);
    v.setUint32(8, len, true);
    v.setUint16(12, id, true);
    v.setUint16(14, flags | P_AVAIL, true);
    this.mem.write(this.tx.descAddr + 16 * this.pos++, new Uint8Array(v.buffer));
  }

  poll(): void {
    this.built.dev.poll(64);
  }

  /** The one rule reported, with the section, words and values as the report prints them. */
  expectRule(rule: SpecRule, queue: number, values: RegExp): void {
    const rep = this.monitor.report();
    assert.equal(rep.rules.length, 1, formatConformance(rep));
    const r = rep.rules[0];
    assert.equal(r.id, rule.id);
    assert.equal(r.section, rule.section);
    assert.equal(r.first.queue, queue);
    assert.match(r.first.values, values);
    const text = formatConformance(rep);
    assert.ok(text.includes(`§${rule.section} ${rule.title}`), text);
    assert.ok(text.includes(rule.words), text);
  }
}

const HDR_AND_FRAME = 12 + 60;

test('split transmitq: each malformed chain is reported with its rule (§2.7.4.2, §2.7.5.2, §2.7.5.3, §2.7.5.3.1)', () => {
  const cases: { name: string; build: (f: FaultyDriver) => void; rule: SpecRule; values: RegExp; indirect?: boolean }[] = [
    {
      name: 'a device-writable descriptor before a device-readable one',
      build: (f) => { f.desc(0, DATA, 64, WRITE | NEXT, 1); f.desc(1, DATA + 64, HDR_AND_FRAME, 0); f.offer(0); },
      rule: RING_RULES.splitFraming, values: /device-readable descriptor after a device-writable one/,
    },
    {
      name: 'a descriptor chain loop',
      build: (f) => { f.desc(0, DATA, 40, NEXT, 1); f.desc(1, DATA + 64, 40, NEXT, 0); f.offer(0); },
      rule: RING_RULES.splitLoop, values: /exceeds 8 descriptors/,
    },
    {
      name: 'VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC', indirect: false,
      build: (f) => { f.desc(0, DATA, 32, INDIRECT); f.offer(0); },
      rule: RING_RULES.splitIndirectFeature, values: /without VIRTIO_F_INDIRECT_DESC/,
    },
    {
      name: 'an indirect descriptor inside an indirect table',
      build: (f) => { f.desc(0, DATA, 32, INDIRECT); f.desc(0, DATA + 0x100, 16, INDIRECT, 0, DATA); f.offer(0); },
      rule: RING_RULES.splitIndirectNested, values: /inside an indirect table/,
    },
    {
      name: 'VIRTQ_DESC_F_INDIRECT with VIRTQ_DESC_F_NEXT',
      build: (f) => { f.desc(0, DATA, 32, INDIRECT | NEXT, 1); f.offer(0); },
      rule: RING_RULES.splitIndirectNext, values: /together with VIRTQ_DESC_F_NEXT/,
    },
    {
      name: 'an indirect table longer than the queue size',
      build: (f) => { f.desc(0, DATA, 16 * (SIZE + 1), INDIRECT); f.offer(0); },
      rule: RING_RULES.splitChainQueueSize, values: /indirect table of 9 entries exceeds queue size 8/,
    },
    {
      name: 'more buffers made available than the queue size',
      build: (f) => { f.setAvailIdx(SIZE + 1); },
      rule: RING_RULES.splitAvailOverrun, values: /avail idx ran 9 entries ahead of a 8-entry queue/,
    },
  ];
  for (const c of cases) {
    const f = new FaultyDriver('split', { indirect: c.indirect });
    c.build(f);
    f.poll();
    assert.equal(f.errors.length, 1, c.name);
    f.expectRule(c.rule, 1, c.values);
  }
});

test('split transmitq: avail->idx written backwards is §2.7.6.1 with --strict, and only AVAIL_IDX_JUMP (today\'s behaviour) without', () => {
  for (const strict of [true, false]) {
    const f = new FaultyDriver('split', { strict });
    for (let i = 0; i < 3; i++) f.desc(i, DATA + 128 * i, HDR_AND_FRAME, 0);
    f.offer(0, 1, 2);
    f.poll();
    assert.deepEqual(f.errors, [], 'three good frames');
    assert.equal(f.built.txq.state().avail, 3);
    f.setAvailIdx(1); // "unexpose" two buffers
    f.poll();
    if (strict) f.expectRule(RING_RULES.splitAvailDecrement, 1, /avail idx went from 3 back to 1/);
    else assert.deepEqual(f.errors, ['AVAIL_IDX_JUMP']);
  }
  // Backwards before the device popped what it had been shown: the plain queue cannot even tell.
  const f = new FaultyDriver('split');
  for (let i = 0; i < 4; i++) f.desc(i, DATA + 128 * i, HDR_AND_FRAME, 0);
  f.offer(0, 1, 2, 3);
  assert.equal(f.built.txq.pending(), 4);
  f.setAvailIdx(2);
  assert.throws(() => f.built.txq.pending(), (e: unknown) => e instanceof DescriptorError && e.code === 'AVAIL_IDX_DECREMENT' && /from 4 back to 2/.test(e.message));
});

test('packed transmitq: framing and a Buffer ID still in flight are reported with their rules (§2.8.17, §2.8)', () => {
  const f = new FaultyDriver('packed');
  f.packed(DATA, 64, 0, WRITE | NEXT);
  f.packed(DATA + 64, HDR_AND_FRAME, 0, 0);
  f.poll();
  f.expectRule(RING_RULES.packedFraming, 1, /device-readable descriptor after a device-writable one/);

  // Buffer ID reuse: the device pops buffer 3, then finds buffer 3 made available again before it was used.
  const sab = new SharedArrayBuffer(1 << 16);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const layout = contiguousQueueLayout('packed', 0x1000, SIZE);
  const q = createDeviceQueue(mem, layout, { eventIdx: false, inOrder: false, indirect: false, index: 0, strict: true });
  for (let i = 0; i < 2; i++) {
    const v = new DataView(new ArrayBuffer(16));
    v.setUint32(0, 0x8000 + 256 * i, true);
    v.setUint32(8, 256, true);
    v.setUint16(12, 3, true);
    v.setUint16(14, WRITE | P_AVAIL, true);
    mem.write(layout.descAddr + 16 * i, new Uint8Array(v.buffer));
  }
  const chain = new DescChain(mem);
  const mon = new ConformanceMonitor();
  q.pop(chain);
  assert.equal(chain.id, 3);
  assert.throws(() => q.pop(chain), (e: unknown) => {
    assert.ok(e instanceof DescriptorError);
    assert.equal(mon.recordRingError(e.code, e.message, 0, 'packed'), RING_RULES.packedBufferIdInFlight);
    return true;
  });
  assert.match(formatConformance(mon.report()), /§2\.8 Packed Virtqueues .*\n.*Buffer ID.*\n.*buffer id 3 is already in flight/);
});

test('controlq: VQ_PAIRS_SET before DRIVER_OK (§3.1.1), out of range and before the queues are configured (§5.1.9.5.6.1)', () => {
  const sab = new SharedArrayBuffer(1 << 20);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const dev = new NetDevice({ maxPairs: 2 });
  const first: string[] = [];
  const monitor = new ConformanceMonitor((r) => first.push(r.id));
  attachNetConformance(dev, monitor);
  assert.ok(dev.setDriverFeatures(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_MQ));
  dev.setStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
  const layout = contiguousQueueLayout('split', 0x1000, SIZE);
  dev.setQueue(dev.controlqIndex, layout);
  // Pair 1's queues are configured; pair 2's are not.
  dev.setQueue(0, contiguousQueueLayout('split', 0x10000, SIZE));
  dev.setQueue(1, contiguousQueueLayout('split', 0x20000, SIZE));
  const drv = new SplitDriverQueue(mem, { size: SIZE, descAddr: layout.descAddr, availAddr: layout.driverAddr, usedAddr: layout.deviceAddr }, { eventIdx: false, indirect: false });
  const send = (pairs: number) => {
    const cmd = encodeMqVqPairsSet(pairs);
    mem.write(0x8000, cmd);
    drv.add([{ addr: 0x8000, len: cmd.length, writable: false }, { addr: 0x8100, len: 1, writable: true }], 0);
    drv.publish();
    dev.processControlq(mem);
    assert.equal(drv.popUsed() >= 0, true);
    return mem.read(0x8100, 1)[0];
  };
  send(1); // before DRIVER_OK (the device still acks it: today's behaviour is kept)
  assert.deepEqual(first, [NET_RULES.notifyBeforeDriverOk.id]);
  dev.setStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
  assert.notEqual(send(3), VIRTIO_NET_OK, 'refused as before');
  send(0);
  assert.equal(send(2), VIRTIO_NET_OK);
  const rep = monitor.report();
  assert.deepEqual(rep.rules.map((r) => [r.id, r.section, r.count]), [
    ['init.notify-before-driver-ok', '3.1.1', 1],
    ['net.vq-pairs-range', '5.1.9.5.6.1', 2],
    ['net.vq-pairs-unconfigured', '5.1.9.5.6.1', 1],
  ]);
  assert.equal(rep.violations, 4);
  assert.match(rep.rules[0].first.values, /VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET made available with device status 0xb \(DRIVER_OK not set\)/);
  assert.match(rep.rules[1].first.values, /virtqueue_pairs 3, max_virtqueue_pairs 2/);
  assert.match(rep.rules[2].first.values, /virtqueue_pairs 2, not configured: receiveq2 transmitq2/);
  assert.deepEqual(JSON.parse(JSON.stringify(rep)), rep, 'the report is plain JSON');
});

test('driver side: a device returning a used id never made available (§2.7.8) or a length beyond the buffer (§2.7.8.2)', () => {
  const sab = new SharedArrayBuffer(1 << 16);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const l = contiguousQueueLayout('split', 0x1000, SIZE);
  const drv = new SplitDriverQueue(mem, { size: SIZE, descAddr: l.descAddr, availAddr: l.driverAddr, usedAddr: l.deviceAddr }, { eventIdx: false, indirect: false, index: 0 });
  const mon = new ConformanceMonitor();
  const h = drv.add([{ addr: 0x8000, len: 100, writable: true }], 7);
  drv.publish();
  let usedIdx = 0;
  const used = (id: number, len: number) => {
    const v = new DataView(new ArrayBuffer(8));
    v.setUint32(0, id, true);
    v.setUint32(4, len, true);
    mem.write(l.deviceAddr + 4 + 8 * (usedIdx % SIZE), new Uint8Array(v.buffer));
    usedIdx++;
    mem.write(l.deviceAddr + 2, Uint8Array.of(usedIdx & 0xff, usedIdx >> 8));
  };
  const expect = (rule: SpecRule) => {
    assert.equal(drv.usedPending(), 1);
    assert.throws(() => drv.popUsed(), (e: unknown) => e instanceof DescriptorError && mon.recordRingError(e.code, e.message, 0, 'split', 'driver') === rule);
  };
  used(h + 3, 10);
  expect(RING_RULES.splitUsedId);
  used(h, 101);
  expect(RING_RULES.splitUsedLen);
  const rep = mon.report();
  assert.deepEqual(rep.rules.map((r) => [r.section, r.by]), [['2.7.8', 'device'], ['2.7.8.2', 'device']]);
});

test('every rule quotes the spec text in the repository', (t) => {
  const text = specText();
  if (text === null) {
    t.skip(`spec text not found at ${specDir}`);
    return;
  }
  const flat = text.replace(/\\field\{([^}]*)\}/g, '$1').replace(/\$2\^\{32\}\$/g, '2^32').replace(/``|''/g, '"').replace(/\s+/g, ' ');
  for (const r of [...Object.values(RING_RULES), ...Object.values(NET_RULES)]) {
    for (const part of r.words.split(' [...] ')) {
      const words = part.replace(/\s+/g, ' ').replace(/;$/, '');
      assert.ok(flat.includes(words), `${r.id} (§${r.section}): "${words}" is not in the spec text`);
    }
  }
});

test('loopback --strict: a conforming driver gets an empty report', async () => {
  const r = await loopback({ queues: 2, flows: 8, size: 128, duration: 0.5, rss: false, mode: 'notify', queueSize: 256, json: true, strict: true, resize: 1 }, () => {});
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.conformance, { strict: true, violations: 0, rules: [] });
});

test('local transport, strict: avail->idx moved backwards under the running device worker is reported as §2.7.6.1 on transmitq1', { timeout: 30_000 }, async () => {
  const spec = prepareGeneratorTraffic({ flows: 4, frameSize: 128, proto: 'udp', ipVersion: 4 });
  const net = new LocalNet({ pairs: 1, queueSize: 64, netdev: { kind: 'loopback' }, source: () => spec, strict: true });
  const seen: string[] = [];
  net.on('conformance', (r) => seen.push(`§${r.section}`));
  await net.start();
  try {
    const deadline = Date.now() + 10_000;
    while (net.drvStats.total(DrvStat.rxPackets) < 1000) {
      assert.ok(Date.now() < deadline, 'traffic flows');
      await new Promise((r) => setTimeout(r, 5));
    }
    await net.stopTx();
    const inFlight = () => net.drvStats.total(DrvStat.txPackets) - net.drvStats.total(DrvStat.rxPackets) - net.devStats.total(DevStat.rxDrops);
    while (inFlight() > 0) {
      assert.ok(Date.now() < deadline, 'drained');
      await new Promise((r) => setTimeout(r, 5));
    }
    const idxAddr = net.device.layouts[1]!.driverAddr + 2;
    const b = net.mem.read(idxAddr, 2);
    const idx = b[0] | (b[1] << 8);
    const back = (idx - 5) & 0xffff;
    net.mem.write(idxAddr, Uint8Array.of(back & 0xff, back >> 8));
    net.ctl.ring(net.ctl.devBell(0));
    while (net.conformance!.total === 0) {
      assert.ok(Date.now() < deadline, 'the device worker reports it');
      await new Promise((r) => setTimeout(r, 5));
    }
    // What an operator sees: `stats` (the snapshot and its text) and /metrics count the violation per rule.
    const observed = new LoopbackObserved(net);
    const snap = observed.snapshot();
    assert.deepEqual(snap.conformance, { violations: 1, rules: [{ id: 'split.avail-idx-decrement', section: '2.7.6.1', title: RING_RULES.splitAvailDecrement.title, by: 'driver', count: 1 }] });
    assert.match(formatSnapshot(snap, null), /strict: 1 violation of the spec\n  §2\.7\.6\.1 Driver Requirements: The Virtqueue Available Ring \(split\.avail-idx-decrement, by the driver\): 1\n/);
    // (only the strict families: prom-client's event loop lag reads "Nan" before its first sample, which the strict test parser refuses)
    const fams = parsePromText((await metricsRegistry(observed).metrics()).split('\n').filter((l) => l.includes('virtio_mq_strict')).join('\n'));
    assert.equal(fams.get('virtio_mq_strict')?.samples[0]?.value, 1);
    const v = fams.get('virtio_mq_strict_violations_total');
    assert.equal(v?.type, 'counter');
    assert.deepEqual(v!.samples.map((x) => [x.labels.rule, x.labels.section, x.labels.by, x.labels.role, x.value]), [['split.avail-idx-decrement', '2.7.6.1', 'driver', 'loopback', 1]]);
  } finally {
    await net.stop();
  }
  const rep = net.conformance!.report();
  assert.equal(rep.rules.length, 1, formatConformance(rep));
  assert.equal(rep.rules[0].id, RING_RULES.splitAvailDecrement.id);
  assert.equal(rep.rules[0].first.queue, 1);
  assert.match(rep.rules[0].first.values, /avail idx went from \d+ back to \d+/);
  assert.deepEqual(seen, ['§2.7.6.1'], 'reported once, as it happened');
});
