/**
 * Interop: `virtio-mq attach` (the vhost-user front-end, in this process)
 * against DPDK testpmd's vhost PMD (`net_vhost`), io forwarding: attach
 * sends generated flows on every queue pair, testpmd sends each frame back
 * on the queue it came from, attach checks every frame byte-exact and in
 * order per flow. Per queue, the counts agree exactly: testpmd's
 * `rx_qN_packets` == frames attach made available on transmitqN, and
 * testpmd's `tx_qN_packets` == frames attach took from receiveqN.
 *
 * Matrix (every value of every dimension, both socket roles, < 1 min):
 * 1, 2 and 4 queue pairs × split/packed × mrg_rxbuf 0/1 (× in_order), with
 * testpmd as the server and as the client (`client=1`, attach `--server`).
 *
 * Reconnect: testpmd quits under traffic and is started again on the same
 * socket; attach holds its rings, resumes on the new testpmd
 * (SET_VRING_BASE at the used positions), and counts what was lost while no
 * back-end was there as drops (per-flow sequence gaps), nothing reordered.
 *
 * testpmd's forwarding lcore gets CPU 0, this process (and so every worker
 * it creates afterwards) CPU 1, as the peer guide asks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { attach } from '../../src/cli/attach.js';
import { VhostUserFrontend } from '../../src/transport/vhost-user/front-end.js';
import { DrvStat } from '../../src/net/stats.js';
import { prepareGeneratorTraffic, assignFlows } from '../../src/traffic/generator-source.js';
import { TxQueueSelector } from '../../src/net/tx-select.js';

const skip = interopSkipReason();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pin(cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
  } catch {
    /* taskset missing: run unpinned */
  }
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface Cell {
  ring: 'split' | 'packed';
  pairs: 1 | 2 | 4;
  mrg: boolean;
  inOrder: boolean;
  /** testpmd connects (client=1) and attach listens (--server). */
  attachServer: boolean;
}

const matrix: Cell[] = [
  { ring: 'split', pairs: 1, mrg: false, inOrder: false, attachServer: false },
  { ring: 'packed', pairs: 1, mrg: true, inOrder: true, attachServer: true },
  { ring: 'split', pairs: 2, mrg: true, inOrder: true, attachServer: true },
  { ring: 'packed', pairs: 2, mrg: false, inOrder: false, attachServer: false },
  { ring: 'split', pairs: 4, mrg: true, inOrder: false, attachServer: false },
  { ring: 'packed', pairs: 4, mrg: true, inOrder: false, attachServer: true },
  { ring: 'packed', pairs: 4, mrg: false, inOrder: true, attachServer: false },
];

async function runCell(c: Cell): Promise<void> {
  pin('1');
  const socket = tmpSocketPath(`att-${c.ring[0]}${c.pairs}`);
  const logs: string[] = [];
  let tp: Testpmd | undefined;
  let tpRx: number[] = [], tpTx: number[] = [];
  const startTestpmd = () => Testpmd.start({
    name: `att${c.ring[0]}${c.pairs}`, lcores: '0@1,1@0', rxq: c.pairs, txq: c.pairs, forwardMode: 'io',
    vdevs: [`net_vhost0,iface=${socket},queues=${c.pairs}${c.attachServer ? ',client=1' : ''}`], timeoutMs: 120_000,
  });
  try {
    // testpmd first in both roles. With client=1 its vhost port retries the connection every
    // second until attach --server listens: a front-end that connected while testpmd was still
    // starting its port stalled testpmd before its first prompt (DPDK 22.11; 3 of 4 runs of one
    // cell), so the vhost-user handshake happens only once testpmd sits at its prompt.
    tp = await startTestpmd();
    if (!c.attachServer) await tp.start();
    // attach sends until 2 s after testpmd forwards (a stop signal, not --duration: with
    // attach --server the link comes up whenever testpmd's reconnect timer fires).
    let stopAttach!: () => void;
    const stopSignal = new Promise<void>((r) => (stopAttach = r));
    if (!c.attachServer) setTimeout(stopAttach, 2000);
    const run = attach({
      socket, server: c.attachServer, queues: c.pairs, ring: c.ring, inOrder: c.inOrder, mrgRxbuf: c.mrg, queueSize: 256, rss: false,
      netdev: 'generator,flows=64,size=128', duration: 120, mode: 'notify', json: true, reconnect: false, connectTimeout: 30,
    }, () => {}, {
      log: (l) => logs.push(l),
      stopSignal,
      // While attach is still connected (testpmd's vhost counters go with the device): stop
      // forwarding, read them, and let attach take what testpmd already put on its receiveqs.
      beforeStop: async (fe) => {
        await tp!.stop();
        const x = await tp!.xstats(0);
        tpRx = Array.from({ length: c.pairs }, (_, q) => x[`rx_q${q}_packets`] ?? NaN);
        tpTx = Array.from({ length: c.pairs }, (_, q) => x[`tx_q${q}_packets`] ?? NaN);
        const want = tpTx.reduce((a, b) => a + b, 0);
        await waitFor(() => fe.stats.total(DrvStat.rxPackets) >= want, 'attach to take what testpmd sent', 5000).catch(() => {});
      },
    });
    if (c.attachServer) {
      await waitFor(() => logs.some((l) => /connected to the back-end/.test(l)), 'testpmd (client=1) to connect to attach --server', 30_000);
      await tp.start();
      setTimeout(stopAttach, 2000);
    }
    const r = await run;
    const peer = tp!;
    const diag = () => `\n--- attach ---\n${logs.slice(-40).join('\n')}\n--- testpmd (tail) ---\n${peer.logs.slice(-3000)}`;
    assert.deepEqual(r.problems, [], `attach reported problems${diag()}`);
    assert.equal(r.pairs, c.pairs, `queue pairs${diag()}`);
    assert.equal(r.features.includes('VIRTIO_F_RING_PACKED'), c.ring === 'packed', `ring format: ${r.features}`);
    assert.equal(r.features.includes('VIRTIO_NET_F_MRG_RXBUF'), c.mrg, `mrg_rxbuf: ${r.features}`);
    assert.equal(r.features.includes('VIRTIO_F_IN_ORDER'), c.inOrder, `in_order: ${r.features}`);
    const aTx = r.perPair.map((p) => p.txPackets);
    const aRx = r.perPair.map((p) => p.rxPackets);
    assert.ok(aTx.every((n) => n > 0), `attach sent on every queue: ${aTx}${diag()}`);
    assert.ok(aRx.every((n) => n > 0), `attach received on every queue: ${aRx}${diag()}`);
    assert.deepEqual(tpRx, aTx, `per queue: testpmd rx_qN_packets == attach transmitqN frames${diag()}`);
    assert.deepEqual(tpTx, aRx, `per queue: testpmd tx_qN_packets == attach receiveqN frames${diag()}`);
    for (const p of r.perPair) assert.equal(p.bad + p.outOfOrder, 0, `pair ${p.pair}: nothing altered or reordered`);
    console.log(`# ${c.ring} ${c.pairs}p mrg=${+c.mrg} in_order=${+c.inOrder} ${c.attachServer ? 'attach --server' : 'testpmd server'}: tx ${aTx.join('/')} rx ${aRx.join('/')} drops ${r.drops}`);
  } finally {
    await tp?.quit();
    rmSync(socket, { force: true });
    pin('0-1');
  }
}

const cellName = (c: Cell) =>
  `${c.pairs} pair(s), ${c.ring}, mrg_rxbuf=${+c.mrg}, in_order=${+c.inOrder}, ${c.attachServer ? 'attach --server / testpmd client=1' : 'testpmd server'}: per-queue counts agree`;

for (const c of matrix) {
  test(`attach ⇄ testpmd net_vhost io: ${cellName(c)}`, { skip, timeout: 120_000 }, () => runCell(c));
}

for (const ring of ['split', 'packed'] as const) {
  test(`attach ⇄ testpmd net_vhost, ${ring}: testpmd quits under traffic and starts again; attach resumes and counts the loss`, { skip, timeout: 120_000 }, async () => {
    pin('1');
    const socket = tmpSocketPath(`attrc${ring[0]}`);
    const logs: string[] = [];
    const startTestpmd = async () => {
      const t = await Testpmd.start({
        name: `attrc${ring[0]}`, lcores: '0@1,1@0', rxq: 2, txq: 2, forwardMode: 'io', vdevs: [`net_vhost0,iface=${socket},queues=2`], timeoutMs: 120_000,
      });
      await t.start();
      return t;
    };
    let tp: Testpmd | undefined = await startTestpmd();
    const spec = prepareGeneratorTraffic({ flows: 32, frameSize: 128, proto: 'udp', ipVersion: 4 });
    const sel = new TxQueueSelector({ steering: null });
    assignFlows(spec, (f) => sel.select(f, 0, f.length, 2));
    const fe = new VhostUserFrontend({ socket, pairs: 2, ring, source: () => spec, log: (l) => logs.push(l) });
    try {
      await fe.start();
      const s = fe.stats;
      await waitFor(() => s.total(DrvStat.rxPackets) > 20_000, 'traffic through the first testpmd');
      await tp.quit();
      tp = undefined;
      await waitFor(() => !fe.connected, 'attach to see testpmd go');
      const rxBefore = s.total(DrvStat.rxPackets);
      tp = await startTestpmd();
      await waitFor(() => fe.connected, 'attach to resume on the new testpmd');
      await waitFor(() => s.total(DrvStat.rxPackets) > rxBefore + 20_000, 'traffic through the second testpmd');
      fe.stopTx();
      await waitFor(() => s.total(DrvStat.txPackets) === s.total(DrvStat.rxPackets) + s.total(DrvStat.rxGaps), 'the rings to drain');
      const diag = `\n${logs.join('\n')}`;
      assert.equal(fe.connections, 2, diag);
      assert.equal(fe.failure, null, diag);
      assert.equal(s.total(DrvStat.rxBad), 0, 'nothing altered');
      assert.equal(s.total(DrvStat.rxOutOfOrder), 0, 'nothing reordered or duplicated');
      assert.ok(logs.some((l) => /rings resumed/.test(l)), diag);
      const lost = s.total(DrvStat.txPackets) - s.total(DrvStat.rxPackets);
      assert.equal(lost, s.total(DrvStat.rxGaps), 'what did not come back is exactly what the flows miss');
      console.log(`# reconnect ${ring}: sent ${s.total(DrvStat.txPackets)}, received ${s.total(DrvStat.rxPackets)}, lost while testpmd was away: ${lost}`);
    } finally {
      await fe.stop();
      await tp?.quit();
      rmSync(socket, { force: true });
      pin('0-1');
    }
  });
}
