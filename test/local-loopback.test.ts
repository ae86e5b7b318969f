/**
 * End to end over the local transport: driver and device in worker threads,
 * every frame checked byte-exact and in order per flow by the driver side.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loopback, type LoopbackOptions } from '../src/cli/loopback.js';
import { LocalNet } from '../src/transport/local/local-net.js';
import { DevStat } from '../src/net/stats.js';
import { NET_DEVICE_FEATURES } from '../src/net/device.js';
import { VIRTIO_NET_F_MQ, VIRTIO_NET_F_RSS } from '../src/net/features.js';
import { createDriverQueue } from '../src/virtio/ring.js';
import { VIRTIO_STATUS_DEVICE_NEEDS_RESET } from '../src/virtio/features.js';
import { encodeCtrlCommand, encodeMqVqPairsSet, VIRTIO_NET_ERR, VIRTIO_NET_OK, VIRTIO_NET_CTRL_MQ } from '../src/net/ctrl.js';

const base: LoopbackOptions = { queues: 4, flows: 16, size: 256, duration: 0.5, rss: false, mode: 'notify', queueSize: 256, json: true };
const quiet = () => {};

/** Every ring format the local transport runs on, and in-order on each (spec §2.7, §2.8, VIRTIO_F_IN_ORDER). */
const rings: { ring: 'split' | 'packed'; inOrder: boolean; queueSize: number }[] = [
  { ring: 'split', inOrder: false, queueSize: 256 },
  { ring: 'split', inOrder: true, queueSize: 256 },
  { ring: 'packed', inOrder: false, queueSize: 250 }, // packed rings need no power of two
  { ring: 'packed', inOrder: true, queueSize: 256 },
];

for (const { ring, inOrder, queueSize } of rings) {
  const name = `${ring}${inOrder ? ' in-order' : ''}`;
  const opts: LoopbackOptions = { ...base, ring, inOrder, queueSize };

  test(`${name}: 4 pairs, automatic flow steering: every frame back intact, RX on the pair its TX used`, async () => {
    const r = await loopback(opts, quiet);
    assert.deepEqual(r.problems, []);
    assert.ok(r.ok);
    assert.ok(r.txPackets >= 16, `sent ${r.txPackets}: every flow at least once`); // a count, not a rate: a loaded machine sends less in 0.5 s
    assert.equal(r.rxPackets, r.txPackets);
    assert.equal(r.features.includes('VIRTIO_F_RING_PACKED'), ring === 'packed', r.features.join(' '));
    assert.equal(r.features.includes('VIRTIO_F_IN_ORDER'), inOrder, r.features.join(' '));
    const busy = r.perPair.filter((p) => p.txPackets > 0);
    assert.ok(busy.length >= 3, `16 flows should use at least 3 of 4 pairs, used ${busy.length}`);
    // Loopback without RSS: a flow's RX lands on the pair its TX used.
    for (const p of r.perPair) assert.equal(p.rxPackets, p.txPackets, `pair ${p.pair}`);
  });

  test(`${name}: RSS programmed through the controlq steers RX by the indirection table; nothing lost or reordered`, async () => {
    const r = await loopback({ ...opts, rss: true }, quiet);
    assert.deepEqual(r.problems, []);
    assert.ok(r.perPair.filter((p) => p.rxPackets > 0).length >= 2);
  });

  test(`${name}: changing the active pair count at run time (VQ_PAIRS_SET 4 -> 2) reorders no flow`, async () => {
    const r = await loopback({ ...opts, duration: 0.8, resize: 2 }, quiet);
    assert.deepEqual(r.problems, []);
    assert.ok(r.perPair[2].txPackets + r.perPair[3].txPackets > 0, 'pairs 3 and 4 carried traffic before the change');
  });

  test(`${name}: one pair, busy mode, 1514-byte frames over 512-byte RX buffers (MRG_RXBUF, num_buffers 3)`, async () => {
    const r = await loopback({ ...opts, queues: 1, size: 1514, mode: 'busy', rxBufferSize: 512 }, quiet);
    assert.deepEqual(r.problems, []);
    assert.ok(r.rxPackets > 0);
    assert.equal(r.perPair[0].rxBuffers, 3 * r.rxPackets, 'each 12-byte header + 1514-byte frame took three 512-byte buffers');
  });
}

test('busy mode: the driver keeps used-buffer notifications off while it polls (packed: none at all; split with EVENT_IDX: one per queue)', async () => {
  // A packed ring starts with RING_EVENT_FLAGS_ENABLE (§2.8.10): a polling driver that never turns it
  // off makes its device notify on every publish (a syscall per burst for a vhost-user back-end).
  for (const ring of ['split', 'packed'] as const) {
    const r = await loopback({ ...base, queues: 2, mode: 'busy', duration: 0.3, ring, queueSize: 256 }, quiet);
    assert.deepEqual(r.problems, []);
    for (const p of r.perPair) {
      assert.ok(p.rxPackets > 0, `${ring} pair ${p.pair} carried traffic`);
      assert.ok(p.suppressed > 0, `${ring} pair ${p.pair}: publishes without a notification`);
      // Split: the first publish on each queue crosses the initial used_event 0 (§2.7.10), none after it.
      assert.ok(p.notifications <= (ring === 'packed' ? 0 : 2), `${ring} pair ${p.pair}: ${p.notifications} notifications`);
    }
  }
});

test('a device without VIRTIO_NET_F_MQ: the driver falls back to one pair', async () => {
  const net = new LocalNet({
    pairs: 4, netdev: { kind: 'loopback' }, source: () => ({ kind: 'none' }),
    deviceFeatures: NET_DEVICE_FEATURES & ~(VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS),
  });
  await net.start();
  try {
    assert.equal(net.driver.pairs, 1);
    assert.equal(net.driver.activePairs, 1);
    assert.equal(net.driver.hasMq, false);
  } finally {
    await net.stop();
  }
});

test('a bad control command gets VIRTIO_NET_ERR and changes nothing; a good one after it works', async () => {
  const net = new LocalNet({ pairs: 2, netdev: { kind: 'loopback' }, source: () => ({ kind: 'none' }) });
  const errors: string[] = [];
  net.on('control-error', (m) => errors.push(m));
  await net.start();
  try {
    assert.equal(net.device.ctrl.activePairs, 2);
    assert.equal(await net.driver.command(encodeMqVqPairsSet(3)), VIRTIO_NET_ERR); // > max_virtqueue_pairs
    assert.equal(await net.driver.command(encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, 0, Uint8Array.of(1))), VIRTIO_NET_ERR); // short
    assert.equal(await net.driver.command(Uint8Array.of(99, 0)), VIRTIO_NET_ERR); // unknown class
    assert.equal(net.device.ctrl.activePairs, 2);
    assert.equal(errors.length, 3);
    assert.equal(await net.driver.command(encodeMqVqPairsSet(1)), VIRTIO_NET_OK);
    assert.equal(net.device.ctrl.activePairs, 1);
  } finally {
    await net.stop();
  }
});

test('a malformed chain on one transmitq stops only that queue: reported, DEVICE_NEEDS_RESET, the other pair runs on', async () => {
  const net = new LocalNet({ pairs: 2, netdev: { kind: 'sink' }, source: () => ({ kind: 'none' }) });
  const reports: { side: string; queue: number; code: string }[] = [];
  net.on('queue-error', (e) => reports.push(e));
  await net.start();
  try {
    const opts = net.driver.rings;
    // Play a broken driver on transmitq2: a buffer far outside guest memory.
    const s1 = net.driver.pairSetup(1);
    const bad = createDriverQueue(net.mem, s1.tx, { ...opts, index: 3 });
    bad.addOne(2 ** 40, 64, false, 0);
    bad.publish();
    net.ctl.ring(net.ctl.devBell(1));
    // And a good frame on transmitq1.
    const s0 = net.driver.pairSetup(0);
    const good = createDriverQueue(net.mem, s0.tx, { ...opts, index: 1 });
    net.mem.write(s0.txBufAddr, new Uint8Array(12 + 60).fill(0xab, 12));
    good.addOne(s0.txBufAddr, 72, false, 0);
    good.publish();
    net.ctl.ring(net.ctl.devBell(0));
    const until = Date.now() + 5000;
    while ((reports.filter((r) => r.side === 'device').length === 0 || net.devStats.get(0, DevStat.txPackets) === 0) && Date.now() < until)
      await new Promise((r) => setTimeout(r, 10));
    const dev = reports.filter((r) => r.side === 'device');
    assert.equal(dev.length, 1);
    assert.equal(dev[0].queue, 3);
    assert.equal(dev[0].code, 'BUFFER_OUT_OF_RANGE');
    assert.ok(net.device.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    assert.equal(net.devStats.get(1, DevStat.errors), 1);
    assert.equal(net.devStats.get(0, DevStat.txPackets), 1, 'pair 1 still consumed its frame');
    assert.equal(net.devStats.get(0, DevStat.txBytes), 60);
  } finally {
    await net.stop();
  }
});
