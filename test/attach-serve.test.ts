/**
 * `attach` (the vhost-user front-end) against `serve` (the back-end), both in
 * this process over a real unix socket, memfd guest memory and eventfds:
 * 4 queue pairs, split and packed rings, RSS on the back-end (TX queues
 * chosen by the same RSS), a pair-count change under traffic (VQ_PAIRS_SET
 * turned into SET_VRING_ENABLE), both socket roles, and a back-end that is
 * stopped and started again under traffic. Every frame that comes back is
 * checked byte-exact and in order per flow by the generator.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostAvailable } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { VhostUserFrontend } from '../src/transport/vhost-user/front-end.js';
import { attach, type AttachOptions } from '../src/cli/attach.js';
import { parseRss } from '../src/cli/rss-spec.js';
import { DrvStat } from '../src/net/stats.js';
import { prepareGeneratorTraffic, assignFlows } from '../src/traffic/generator-source.js';
import { TxQueueSelector } from '../src/net/tx-select.js';

const skip = hostAvailable() ? false : 'the native addon (src/host) is not built';
let seq = 0;
const sock = () => join(tmpdir(), `vmq-attach-${process.pid}-${++seq}.sock`);

async function waitFor(cond: () => boolean, what: string, ms = 10000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const base = (socket: string, o: Partial<AttachOptions>): AttachOptions => ({
  socket, server: false, queues: 4, ring: 'split', inOrder: false, mrgRxbuf: false, queueSize: 256, rss: false,
  netdev: 'generator,flows=32,size=200', duration: 1.2, mode: 'notify', json: true, reconnect: false, ...o,
});

for (const ring of ['split', 'packed'] as const) {
  test(`attach ↔ serve, ${ring}: 4 pairs, RSS, VQ_PAIRS_SET 4 → 2 under traffic, every frame back byte-exact and in order`, { skip, timeout: 60_000 }, async () => {
    const socket = sock();
    const logs: string[] = [];
    const be = new VhostUserBackend({ socket, pairs: 4, netdev: { kind: 'loopback' }, rss: parseRss('', 4), log: (l) => logs.push(l) });
    await be.start();
    try {
      const r = await attach(base(socket, { ring, rss: true, resize: 2, mrgRxbuf: ring === 'packed', inOrder: ring === 'packed' }), () => {}, { log: (l) => logs.push(l) });
      assert.deepEqual(r.problems, [], logs.join('\n'));
      assert.ok(r.ok);
      assert.equal(r.pairs, 4);
      assert.equal(r.activePairs, 2, 'the pair-count change took effect');
      assert.ok(r.features.includes('VIRTIO_NET_F_MQ'));
      assert.equal(r.features.includes('VIRTIO_F_RING_PACKED'), ring === 'packed');
      assert.ok(r.txPackets > 1000, `traffic flowed (${r.txPackets})`);
      assert.equal(r.rxPackets, r.txPackets, 'every frame came back');
      assert.equal(r.drops, 0);
      for (const p of r.perPair) {
        assert.ok(p.txPackets > 0 && p.rxPackets > 0, `pair ${p.pair} carried traffic before the change`);
        assert.equal(p.bad + p.outOfOrder + p.gaps, 0, `pair ${p.pair}: nothing altered, reordered or missing`);
        // RSS on both sides: each flow comes back on the pair that sent it.
        assert.equal(p.rxPackets, p.txPackets, `pair ${p.pair}: RX on the pair that sent`);
      }
      assert.ok(logs.some((l) => /vring 4 disabled/.test(l)), 'serve saw SET_VRING_ENABLE 0 on pair 2');
    } finally {
      await be.stop();
    }
  });
}

test('attach --server ↔ serve --client: the back-end connects, traffic checked', { skip, timeout: 60_000 }, async () => {
  const socket = sock();
  const logs: string[] = [];
  const be = new VhostUserBackend({ socket, client: true, pairs: 2, netdev: { kind: 'loopback' }, log: (l) => logs.push(l) });
  const run = attach(base(socket, { server: true, queues: 2, duration: 0.8 }), () => {}, { log: (l) => logs.push(l) });
  // The front-end listens first; serve --client retries until the socket is there.
  const started = be.start();
  try {
    const r = await run;
    await started;
    assert.deepEqual(r.problems, [], logs.join('\n'));
    assert.equal(r.pairs, 2);
    assert.ok(r.rxPackets > 1000);
    assert.equal(r.rxPackets, r.txPackets);
  } finally {
    await be.stop();
  }
});

for (const ring of ['split', 'packed'] as const) {
  test(`reconnect, ${ring}: serve stopped and started again under traffic; attach holds, resumes, counts what was lost`, { skip, timeout: 60_000 }, async () => {
    const socket = sock();
    const logs: string[] = [];
    const mk = () => new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'loopback' }, log: (l) => logs.push(`BE ${l}`) });
    let be = mk();
    await be.start();
    const spec = prepareGeneratorTraffic({ flows: 16, frameSize: 128, proto: 'udp', ipVersion: 4 });
    const sel = new TxQueueSelector({ steering: null });
    assignFlows(spec, (f) => sel.select(f, 0, f.length, 2));
    const fe = new VhostUserFrontend({ socket, pairs: 2, ring, source: () => spec, log: (l) => logs.push(`FE ${l}`) });
    try {
      await fe.start();
      const s = fe.stats;
      await waitFor(() => s.total(DrvStat.rxPackets) > 5000, 'traffic before the restart');
      await be.stop();
      await waitFor(() => !fe.connected, 'the front-end to see the back-end go');
      const heldTx = s.total(DrvStat.txPackets);
      await new Promise((r) => setTimeout(r, 100)); // a stretch with no back-end (not a condition: the gap itself)
      assert.equal(s.total(DrvStat.txPackets), heldTx, 'nothing is sent while no back-end is there');
      be = mk();
      await be.start();
      await waitFor(() => fe.connected, 'the front-end to resume on the new back-end');
      const rxAtResume = s.total(DrvStat.rxPackets);
      await waitFor(() => s.total(DrvStat.rxPackets) > rxAtResume + 5000, 'traffic after the restart');
      await fe.stopTx();
      await waitFor(() => s.total(DrvStat.txPackets) === s.total(DrvStat.rxPackets) + s.total(DrvStat.rxGaps), 'in-flight frames to come back');
      assert.equal(fe.connections, 2);
      assert.equal(fe.failure, null);
      assert.equal(s.total(DrvStat.rxBad), 0, 'nothing altered');
      assert.equal(s.total(DrvStat.rxOutOfOrder), 0, 'nothing reordered or duplicated');
      // What the first back-end held when it stopped is counted as lost (gaps), and only that.
      assert.equal(s.total(DrvStat.txPackets) - s.total(DrvStat.rxPackets), s.total(DrvStat.rxGaps));
      assert.ok(logs.some((l) => /rings resumed/.test(l)), logs.join('\n'));
    } finally {
      await fe.stop();
      await be.stop();
    }
  });
}

test('attach --adaptive ↔ serve: the pair count rises from 1 under load, every frame back in order', { skip, timeout: 60_000 }, async () => {
  const socket = sock();
  const logs: string[] = [];
  const be = new VhostUserBackend({ socket, pairs: 4, netdev: { kind: 'loopback' }, log: (l) => logs.push(l) });
  await be.start();
  try {
    const r = await attach(base(socket, { adaptive: true, duration: 4 }), () => {}, { log: (l) => logs.push(l) });
    assert.deepEqual(r.problems, [], logs.join('\n'));
    assert.equal(r.drops, 0);
    assert.equal(r.rxPackets, r.txPackets);
    assert.ok(r.adaptiveChanges.length >= 1, `the count changed: ${JSON.stringify(r.adaptiveChanges)}\n${logs.join('\n')}`);
    assert.deepEqual(r.adaptiveChanges[0], { ...r.adaptiveChanges[0], from: 1, to: 2 }, 'first change: 1 → 2');
    for (const c of r.adaptiveChanges) assert.equal(Math.abs(c.to - c.from), 1, 'one step at a time');
    assert.equal(r.activePairs, r.adaptiveChanges.at(-1)!.to);
    assert.ok(logs.some((l) => /adaptive: active pairs 1 → 2/.test(l)));
  } finally {
    await be.stop();
  }
});
