/**
 * The device enforces the receive filters the driver sets over the controlq
 * (§5.1.6.5.1-2) on real traffic: loopback netdev, generated flows sent by
 * the driver workers, RX checked byte-exact by them. Generated frames go to
 * 02:00:00:00:00:01 (or broadcast / multicast below), never to the device's
 * own MAC, so with promiscuous mode off only the MAC table lets them in.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalNet } from '../src/transport/local/local-net.js';
import { DevStat, DrvStat } from '../src/net/stats.js';
import { TxQueueSelector } from '../src/net/tx-select.js';
import {
  encodeMacAddrSet, encodeMacTableSet, encodeRxMode, VIRTIO_NET_CTRL_RX_ALLUNI, VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_ERR, VIRTIO_NET_OK,
} from '../src/net/ctrl.js';
import { assignFlows, prepareGeneratorTraffic, type GeneratorTrafficSpec } from '../src/traffic/generator-source.js';
import type { GeneratorOptions } from '../src/netdev/generator.js';

const GEN_DST = Uint8Array.of(0x02, 0, 0, 0, 0, 0x01);
const OTHER = Uint8Array.of(0x02, 0, 0, 0, 0, 0x99);
const MCAST = Uint8Array.of(0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Wait until `value()` stayed the same for `quietMs` (frames in flight when a filter changed have arrived). */
async function settle(what: string, value: () => number, quietMs = 100, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let v = value();
  let since = Date.now();
  for (;;) {
    await sleep(10);
    const now = value();
    if (now !== v) {
      v = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return;
    }
    if (Date.now() > until) throw new Error(`${what} did not settle`);
  }
}

interface Counts { tx: number; rx: number; filtered: number; rxPair: number[]; filteredPair: number[] }

function counts(net: LocalNet): Counts {
  const pairs = net.driver.pairs;
  return {
    tx: net.drvStats.total(DrvStat.txPackets),
    rx: net.drvStats.total(DrvStat.rxPackets),
    filtered: net.devStats.total(DevStat.rxFiltered),
    rxPair: Array.from({ length: pairs }, (_, p) => net.drvStats.get(p, DrvStat.rxPackets)),
    filteredPair: Array.from({ length: pairs }, (_, p) => net.devStats.get(p, DevStat.rxFiltered)),
  };
}

/** Counter growth over `ms`. */
async function over(net: LocalNet, ms: number): Promise<Counts> {
  const a = counts(net);
  await sleep(ms);
  const b = counts(net);
  return {
    tx: b.tx - a.tx, rx: b.rx - a.rx, filtered: b.filtered - a.filtered,
    rxPair: b.rxPair.map((v, i) => v - a.rxPair[i]), filteredPair: b.filteredPair.map((v, i) => v - a.filteredPair[i]),
  };
}

function traffic(gen: GeneratorOptions, pairOf: (frame: Uint8Array) => number): GeneratorTrafficSpec {
  const spec = prepareGeneratorTraffic(gen);
  assignFlows(spec, pairOf);
  return spec;
}

/** Stop sending, wait until every frame sent was received or filtered, and check nothing was lost or altered. */
async function drainAndCheck(net: LocalNet): Promise<Counts> {
  await net.stopTx();
  const inFlight = () => net.drvStats.total(DrvStat.txPackets) - net.drvStats.total(DrvStat.rxPackets)
    - net.devStats.total(DevStat.rxFiltered) - net.devStats.total(DevStat.rxDrops);
  await waitFor('frames in flight', () => inFlight() === 0);
  const c = counts(net);
  assert.equal(c.tx, c.rx + c.filtered, 'every frame sent was received or filtered');
  assert.equal(net.devStats.total(DevStat.rxDrops), 0);
  assert.equal(net.drvStats.total(DrvStat.rxBad), 0, 'what got through is intact');
  assert.deepEqual(net.errors, []);
  return c;
}

for (const ring of ['split', 'packed'] as const) {
  test(`${ring} rings: unicast filtering: PROMISC off filters frames for a foreign MAC; MAC_TABLE_SET / MAC_ADDR_SET let them in again`, async () => {
    const pairs = 2;
    const flows = 8;
    const selector = new TxQueueSelector();
    const spec = traffic({ flows, frameSize: 128 }, (f) => selector.select(f, 0, f.length, pairs));
    const flowPair = new Int32Array(spec.flowPair);
    for (let p = 0; p < pairs; p++) assert.ok(flowPair.includes(p), `some flow transmits on pair ${p}`);
    const net = new LocalNet({ pairs, netdev: { kind: 'loopback' }, source: () => spec, ring });
    const refused: string[] = [];
    net.on('control-error', (m) => refused.push(m));
    await net.start();
    try {
      assert.notDeepEqual(net.device.config.mac, GEN_DST, 'the generator does not send to the device MAC');
      assert.equal(net.device.ctrl.promisc, true, 'promiscuous after reset (QEMU default)');
      await waitFor('traffic', () => counts(net).rx > 500);
      let d = await over(net, 150);
      assert.ok(d.rx > 0);
      assert.equal(d.filtered, 0, 'promiscuous: nothing filtered');

      // 1. Promiscuous off: the frames are for neither the own MAC nor the (empty) table.
      assert.equal(await net.driver.command(encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, false)), VIRTIO_NET_OK);
      assert.equal(net.device.ctrl.promisc, false);
      await waitFor('filtered frames', () => counts(net).filtered > 0);
      await settle('RX after PROMISC off', () => counts(net).rx);
      d = await over(net, 200);
      assert.equal(d.rx, 0, 'nothing received with the filter on');
      assert.ok(d.filtered > 100, `filtered ${d.filtered}`);
      assert.ok(d.tx > 100, 'the driver kept sending');
      for (let p = 0; p < pairs; p++) assert.ok(d.filteredPair[p] > 0, `pair ${p} filters too`);

      // ALLUNI needs CTRL_RX_EXTRA, which this device does not offer: refused, still filtered.
      assert.equal(await net.driver.command(encodeRxMode(VIRTIO_NET_CTRL_RX_ALLUNI, true)), VIRTIO_NET_ERR);
      assert.equal(refused.length, 1);
      d = await over(net, 100);
      assert.equal(d.rx, 0);

      // 2. The generator's destination in the unicast table: received again.
      assert.equal(await net.driver.command(encodeMacTableSet([GEN_DST], [])), VIRTIO_NET_OK);
      const before = counts(net).rx;
      await waitFor('RX again', () => counts(net).rx > before);
      await settle('filtering after MAC_TABLE_SET', () => counts(net).filtered);
      d = await over(net, 200);
      assert.ok(d.rx > 100, `received ${d.rx}`);
      assert.equal(d.filtered, 0);
      for (let p = 0; p < pairs; p++) assert.ok(d.rxPair[p] > 0, `pair ${p} receives`);

      // 3. A table without it: filtered again.
      assert.equal(await net.driver.command(encodeMacTableSet([OTHER], [MCAST])), VIRTIO_NET_OK);
      await settle('RX after MAC_TABLE_SET without the address', () => counts(net).rx);
      d = await over(net, 200);
      assert.equal(d.rx, 0);
      assert.ok(d.filtered > 100);

      // 4. Make it the device's own MAC: accepted as such.
      assert.equal(await net.driver.command(encodeMacAddrSet(GEN_DST)), VIRTIO_NET_OK);
      assert.deepEqual(net.device.config.mac, GEN_DST);
      await settle('filtering after MAC_ADDR_SET', () => counts(net).filtered);
      d = await over(net, 200);
      assert.ok(d.rx > 100);
      assert.equal(d.filtered, 0);

      const c = await drainAndCheck(net);
      assert.ok(c.filtered > 200);
      // Two filtered windows: each flow has at most two gaps, nothing else out of order.
      const ooo = net.drvStats.total(DrvStat.rxOutOfOrder);
      assert.ok(ooo <= 2 * flows, `${ooo} out-of-order frames`);
    } finally {
      await net.stop();
    }
  });

  test(`${ring} rings: broadcast passes with PROMISC off; multicast only once in the multicast table`, async () => {
    // Pair 0 sends to broadcast, pair 1 to a multicast group. Loopback without RSS brings
    // each frame back on the pair that sent it, so each pair checks its own flows.
    const bcast = traffic({ flows: 4, frameSize: 100, dstMac: 'ff:ff:ff:ff:ff:ff' }, () => 0);
    const mcast = traffic({ flows: 4, frameSize: 100, dstMac: '01:00:5e:00:00:fb' }, () => 1);
    const net = new LocalNet({ pairs: 2, netdev: { kind: 'loopback' }, source: (p) => (p === 0 ? bcast : mcast), ring });
    await net.start();
    try {
      await waitFor('traffic on both pairs', () => counts(net).rxPair.every((n) => n > 200));
      assert.equal(await net.driver.command(encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, false)), VIRTIO_NET_OK);
      await waitFor('multicast filtered', () => counts(net).filteredPair[1] > 0);
      await settle('multicast RX after PROMISC off', () => counts(net).rxPair[1]);
      let d = await over(net, 200);
      assert.ok(d.rxPair[0] > 100, 'broadcast still received');
      assert.equal(d.filteredPair[0], 0);
      assert.equal(d.rxPair[1], 0, 'multicast not in the table: filtered');
      assert.ok(d.filteredPair[1] > 100);

      assert.equal(await net.driver.command(encodeMacTableSet([], [MCAST])), VIRTIO_NET_OK);
      await settle('multicast filtering after MAC_TABLE_SET', () => counts(net).filteredPair[1]);
      d = await over(net, 200);
      assert.ok(d.rxPair[1] > 100, 'multicast group joined: received');
      assert.equal(d.filtered, 0);
      assert.ok(d.rxPair[0] > 100);

      const c = await drainAndCheck(net);
      assert.equal(c.filteredPair[0], 0, 'no broadcast frame was ever filtered');
      assert.ok(net.drvStats.get(0, DrvStat.rxOutOfOrder) === 0, 'broadcast flows complete and in order');
      assert.ok(net.drvStats.get(1, DrvStat.rxOutOfOrder) <= 4, 'one gap per multicast flow at most');
    } finally {
      await net.stop();
    }
  });
}
