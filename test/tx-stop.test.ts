/**
 * The acknowledged TX stop (src/transport/tx-stop.ts): once stopTx()
 * resolves, no pair sends again, so "sent − received" is what is really in
 * flight. Before it, a worker inside a round that had read CTL_TX_STOP as 0
 * could put one more budget on its transmitq after the caller had seen 0 in
 * flight and stopped everything: loopback's "… VQ_PAIRS_SET 4 -> 2 …" case
 * then reported "64 frames lost" (4 of 100 runs next to two CPU hogs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runDriverLoop, type DriverNotify } from '../src/transport/driver-loop.js';
import { CTL_ACTIVE_PAIRS, CTL_STOP, CTL_TX_STOP, SharedControl } from '../src/transport/local/shared.js';
import { stopTxAcked } from '../src/transport/tx-stop.js';
import type { NetDriverPair } from '../src/net/driver-pair.js';
import type { TrafficSource } from '../src/traffic/source.js';
import { LocalNet } from '../src/transport/local/local-net.js';
import { prepareGeneratorTraffic } from '../src/traffic/generator-source.js';
import { DrvStat } from '../src/net/stats.js';

test('driver loop: the TX stop is acked only in a round after the last one that sent', () => {
  const ctl = new SharedControl(1);
  ctl.set(CTL_ACTIVE_PAIRS, 1);
  const ackAtFill: number[] = [];
  // The stop arrives while the third round is sending (the main thread sets it between the worker's read and its fill).
  const source = {
    fill: () => {
      ackAtFill.push(ctl.get(ctl.txStopAck(0)));
      if (ackAtFill.length === 3) ctl.set(CTL_TX_STOP, 1);
      return 8;
    },
    consume: () => {}, reassign: () => {}, exhausted: () => false,
  } as unknown as TrafficSource;
  const drv = {
    txq: { numFree: 256 }, error: null, txInFlight: 0,
    refillRx: () => {}, flushRx: () => false, reclaimTx: () => 0, flushTx: () => false, pollRx: () => 0,
    setInterrupts: () => {}, hasUsed: () => false,
  } as unknown as NetDriverPair;
  let sleeps = 0;
  const notify: DriverNotify = {
    kick: () => {}, arm: () => 0,
    sleep: () => {
      if (ctl.get(ctl.txStopAck(0)) === 1 || ++sleeps > 20) ctl.set(CTL_STOP, 1);
      return false;
    },
  };
  runDriverLoop(drv, source, notify, { pair: 0, busy: false, budget: 8, ctl, stats: new Float64Array(16), statBase: 0, onError: () => {} });
  assert.deepEqual(ackAtFill, [0, 0, 0], 'three rounds sent, none after the stop, and the ack came after all of them');
  assert.equal(ctl.get(ctl.txStopAck(0)), 1);
});

test('stopTxAcked: names the pairs that did not ack by the deadline; resolves at once when all did', async () => {
  const ctl = new SharedControl(3);
  ctl.set(ctl.txStopAck(0), 1);
  ctl.set(ctl.txStopAck(2), 1);
  let wakes = 0;
  assert.deepEqual(await stopTxAcked(ctl, 3, () => { wakes++; }, 30), [1]);
  assert.equal(ctl.get(CTL_TX_STOP), 1);
  assert.ok(wakes >= 1, 'the workers were woken');
  ctl.set(ctl.txStopAck(1), 1);
  assert.deepEqual(await stopTxAcked(ctl, 3, () => {}, 10_000), []);
});

test('LocalNet: after stopTx() resolves the TX totals are final and every frame comes back', async () => {
  const traffic = prepareGeneratorTraffic({ flows: 8, frameSize: 128, proto: 'udp', ipVersion: 4 });
  const net = new LocalNet({ pairs: 2, netdev: { kind: 'loopback' }, source: () => traffic });
  await net.start();
  try {
    const deadline = Date.now() + 10_000;
    while (net.drvStats.total(DrvStat.txPackets) < 2000) {
      assert.ok(Date.now() < deadline, 'traffic flows');
      await new Promise((r) => setTimeout(r, 5));
    }
    await net.stopTx();
    for (let p = 0; p < 2; p++) assert.equal(net.ctl.get(net.ctl.txStopAck(p)), 1, `pair ${p} acked`);
    const tx = net.drvStats.total(DrvStat.txPackets);
    while (net.drvStats.total(DrvStat.rxPackets) < tx) {
      assert.ok(Date.now() < deadline, `frames in flight: ${tx - net.drvStats.total(DrvStat.rxPackets)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(net.drvStats.total(DrvStat.txPackets), tx, 'nothing sent after the stop');
    assert.equal(net.drvStats.total(DrvStat.rxPackets), tx);
  } finally {
    await net.stop();
  }
});
