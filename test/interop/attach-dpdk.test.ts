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

/** One cell of the matrix: one testpmd with two vhost ports, both socket roles at once. */
interface Cell {
  ring: 'split' | 'packed';
  pairs: 1 | 2 | 4;
  mrg: boolean;
}

/** Both socket roles of a cell; in_order alternates between them so every cell runs with and without it. */
interface Role {
  /** testpmd connects (client=1) and attach listens (--server). */
  attachServer: boolean;
  inOrder: boolean;
}

const matrix: Cell[] = ([1, 2, 4] as const).flatMap((pairs) =>
  (['split', 'packed'] as const).flatMap((ring) => [false, true].map((mrg) => ({ ring, pairs, mrg }))));

/** Resolves once `n` callers have arrived. */
function barrier(n: number): () => Promise<void> {
  let arrived = 0;
  let open!: () => void;
  const all = new Promise<void>((r) => (open = r));
  return () => {
    if (++arrived === n) open();
    return all;
  };
}

/**
 * One testpmd per cell: port 0 is a vhost server (attach connects), port 1 a
 * vhost client (`client=1`, attach --server); `--port-topology=loop` makes io
 * forwarding send each port's frames back on the port and queue they came
 * from. Both attach runs share one process and the 2 s traffic window.
 */
async function runCell(c: Cell): Promise<void> {
  pin('1');
  const tag = `${c.ring[0]}${c.pairs}${+c.mrg}-${process.pid}`;
  const roles: Role[] = [{ attachServer: false, inOrder: c.pairs % 2 === 1 }, { attachServer: true, inOrder: c.pairs % 2 === 0 }];
  const sockets = roles.map((r) => tmpSocketPath(`att${r.attachServer ? 's' : 'c'}${tag}`));
  const logs: string[][] = roles.map(() => []);
  let tp: Testpmd | undefined;
  const tpRx: number[][] = [], tpTx: number[][] = [];
  try {
    // testpmd first: with client=1 its vhost port retries the connection every second until
    // attach --server listens (a front-end that connected while testpmd was still starting its
    // ports stalled testpmd before its first prompt; see the note at the end of this file).
    tp = await Testpmd.start({
      name: `att${tag}`, lcores: '0@1,1@0', rxq: c.pairs, txq: c.pairs, forwardMode: 'io', extraApp: ['--port-topology=loop'],
      vdevs: [`net_vhost0,iface=${sockets[0]},queues=${c.pairs}`, `net_vhost1,iface=${sockets[1]},queues=${c.pairs},client=1`], timeoutMs: 120_000,
    });
    const peer = tp;
    let stopAttach!: () => void;
    const stopSignal = new Promise<void>((r) => (stopAttach = r));
    // Both runs stop TX and drain; then testpmd stops forwarding and its counters are read once.
    const bothDrained = barrier(2);
    let counters: Promise<void> | undefined;
    const runs = roles.map((role, i) => attach({
      socket: sockets[i], server: role.attachServer, queues: c.pairs, ring: c.ring, inOrder: role.inOrder, mrgRxbuf: c.mrg, queueSize: 256, rss: false,
      netdev: 'generator,flows=64,size=128', duration: 120, mode: 'notify', json: true, reconnect: false, connectTimeout: 30,
    }, () => {}, {
      log: (l) => logs[i].push(l),
      stopSignal,
      beforeStop: async (fe) => {
        await bothDrained();
        counters ??= (async () => {
          await peer.stop();
          for (const port of [0, 1]) {
            const x = await peer.xstats(port);
            tpRx[port] = Array.from({ length: c.pairs }, (_, q) => x[`rx_q${q}_packets`] ?? NaN);
            tpTx[port] = Array.from({ length: c.pairs }, (_, q) => x[`tx_q${q}_packets`] ?? NaN);
          }
        })();
        await counters;
        // Let attach take what testpmd already put on its receiveqs.
        const want = tpTx[i].reduce((a, b) => a + b, 0);
        await waitFor(() => fe.stats.total(DrvStat.rxPackets) >= want, 'attach to take what testpmd sent', 5000).catch(() => {});
      },
    }));
    await waitFor(() => logs.every((l) => l.some((x) => /connected to the back-end/.test(x))), 'both attach runs to connect (testpmd client=1 to attach --server)', 30_000);
    await tp.start();
    setTimeout(stopAttach, 2000);
    const results = await Promise.all(runs);
    results.forEach((r, i) => {
      const role = roles[i];
      const diag = () => `\n--- attach (${role.attachServer ? '--server' : 'client'}) ---\n${logs[i].slice(-40).join('\n')}\n--- testpmd (tail) ---\n${peer.logs.slice(-3000)}`;
      assert.deepEqual(r.problems, [], `attach reported problems${diag()}`);
      assert.equal(r.pairs, c.pairs, `queue pairs${diag()}`);
      assert.equal(r.features.includes('VIRTIO_F_RING_PACKED'), c.ring === 'packed', `ring format: ${r.features}`);
      assert.equal(r.features.includes('VIRTIO_NET_F_MRG_RXBUF'), c.mrg, `mrg_rxbuf: ${r.features}`);
      assert.equal(r.features.includes('VIRTIO_F_IN_ORDER'), role.inOrder, `in_order: ${r.features}`);
      const aTx = r.perPair.map((p) => p.txPackets);
      const aRx = r.perPair.map((p) => p.rxPackets);
      assert.ok(aTx.every((n) => n > 0), `attach sent on every queue: ${aTx}${diag()}`);
      assert.ok(aRx.every((n) => n > 0), `attach received on every queue: ${aRx}${diag()}`);
      assert.deepEqual(tpRx[i], aTx, `per queue: testpmd port ${i} rx_qN_packets == attach transmitqN frames${diag()}`);
      assert.deepEqual(tpTx[i], aRx, `per queue: testpmd port ${i} tx_qN_packets == attach receiveqN frames${diag()}`);
      for (const p of r.perPair) assert.equal(p.bad + p.outOfOrder, 0, `pair ${p.pair}: nothing altered or reordered`);
      console.log(`# ${c.ring} ${c.pairs}p mrg=${+c.mrg} in_order=${+role.inOrder} ${role.attachServer ? 'attach --server' : 'testpmd server'}: tx ${aTx.join('/')} rx ${aRx.join('/')} drops ${r.drops}`);
    });
  } finally {
    await tp?.quit();
    for (const s of sockets) rmSync(s, { force: true });
    pin('0-1');
  }
}

const cellName = (c: Cell) =>
  `${c.pairs} pair(s), ${c.ring}, mrg_rxbuf=${+c.mrg}, both socket roles (in_order=${c.pairs % 2} as client, ${1 - (c.pairs % 2)} as --server): per-queue counts agree`;

for (const c of matrix) {
  test(`attach ⇄ testpmd net_vhost io: ${cellName(c)}`, { skip, timeout: 120_000 }, () => runCell(c));
}

for (const ring of ['split', 'packed'] as const) {
  test(`attach --adaptive ⇄ testpmd net_vhost io, 4 pairs, ${ring}: the pair count rises under load and falls back to 1 when TX stops; per-queue counts agree`, { skip, timeout: 120_000 }, async () => {
    pin('1');
    const socket = tmpSocketPath(`attad${ring[0]}-${process.pid}`);
    const logs: string[] = [];
    let tp: Testpmd | undefined;
    let tpRx: number[] = [], tpTx: number[] = [];
    try {
      tp = await Testpmd.start({
        name: `attad${ring[0]}${process.pid}`, lcores: '0@1,1@0', rxq: 4, txq: 4, forwardMode: 'io', vdevs: [`net_vhost0,iface=${socket},queues=4`], timeoutMs: 120_000,
      });
      await tp.start();
      const peer = tp;
      let stopAttach!: () => void;
      const stopSignal = new Promise<void>((r) => (stopAttach = r));
      let frontEnd: VhostUserFrontend | undefined;
      const run = attach({
        socket, server: false, queues: 4, ring, inOrder: false, mrgRxbuf: false, queueSize: 256, rss: false, adaptive: true,
        netdev: 'generator,flows=64,size=128', duration: 120, mode: 'notify', json: true, reconnect: false, connectTimeout: 30,
      }, () => {}, {
        log: (l) => logs.push(l),
        stopSignal,
        onStarted: (fe) => (frontEnd = fe),
        beforeStop: async (fe) => {
          await peer.stop();
          const x = await peer.xstats(0);
          tpRx = Array.from({ length: 4 }, (_, q) => x[`rx_q${q}_packets`] ?? NaN);
          tpTx = Array.from({ length: 4 }, (_, q) => x[`tx_q${q}_packets`] ?? NaN);
          const want = tpTx.reduce((a, b) => a + b, 0);
          await waitFor(() => fe.stats.total(DrvStat.rxPackets) >= want, 'attach to take what testpmd sent', 5000).catch(() => {});
        },
      });
      const rises = () => logs.filter((l) => /adaptive: active pairs \d → \d/.test(l)).length;
      try {
        // Under load (every pair sends as fast as the rings allow) the count rises from 1.
        await waitFor(() => frontEnd !== undefined && frontEnd.driver.activePairs >= 2, 'the active pair count to rise under load', 40_000);
        // The raised pair carries traffic (flows were re-assigned to it).
        await waitFor(() => frontEnd!.stats.get(1, DrvStat.txPackets) >= 10_000, 'pair 1 to carry traffic after the rise', 20_000);
        // Idle: no TX at all; the count steps down to 1 (one step per 3 light intervals).
        await frontEnd!.stopTx();
        await waitFor(() => frontEnd!.driver.activePairs === 1, 'the active pair count to fall back to 1 when idle', 40_000);
      } finally {
        stopAttach();
      }
      const r = await run;
      const diag = () => `\n--- attach ---\n${logs.slice(-40).join('\n')}\n--- testpmd (tail) ---\n${peer.logs.slice(-3000)}`;
      assert.deepEqual(r.problems, [], `attach reported problems${diag()}`);
      assert.ok(rises() >= 2, `changes logged${diag()}`);
      const changes = r.adaptiveChanges;
      assert.equal(changes[0].from, 1, `starts with 1 pair: ${JSON.stringify(changes)}`);
      assert.ok(changes[0].to === 2, `first change 1 → 2: ${JSON.stringify(changes)}`);
      for (let i = 0; i < changes.length; i++) {
        assert.equal(Math.abs(changes[i].to - changes[i].from), 1, `one step at a time: ${JSON.stringify(changes)}`);
        if (i > 0) assert.equal(changes[i].from, changes[i - 1].to, `changes chain: ${JSON.stringify(changes)}`);
      }
      assert.equal(changes.at(-1)!.to, 1, `ends at 1 pair: ${JSON.stringify(changes)}`);
      assert.equal(r.activePairs, 1);
      const aTx = r.perPair.map((p) => p.txPackets);
      const aRx = r.perPair.map((p) => p.rxPackets);
      assert.ok(aTx[0] > 0 && aTx[1] >= 10_000, `pairs 0 and 1 sent: ${aTx}`);
      assert.deepEqual(tpRx, aTx, `per queue: testpmd rx_qN_packets == attach transmitqN frames${diag()}`);
      assert.deepEqual(tpTx, aRx, `per queue: testpmd tx_qN_packets == attach receiveqN frames${diag()}`);
      for (const p of r.perPair) assert.equal(p.bad + p.outOfOrder, 0, `pair ${p.pair}: nothing altered or reordered`);
      console.log(`# adaptive ${ring}: ${changes.map((x) => `${x.from}→${x.to}`).join(' ')}; tx ${aTx.join('/')} rx ${aRx.join('/')}`);
    } finally {
      await tp?.quit();
      rmSync(socket, { force: true });
      pin('0-1');
    }
  });
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
      await fe.stopTx();
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

/*
 * Note: testpmd (DPDK 22.11) started with `client=1` while attach --server is
 * already listening stalled before its first prompt (3 of 4 runs of one cell
 * once); started first, it never did. Why, from DPDK 22.11's source: net_vhost
 * calls rte_vhost_driver_start() from eth_dev_configure(), i.e. on testpmd's
 * main thread inside start_port(), and in client mode vhost_user_start_client()
 * connects synchronously there; when the connect succeeds at once it adds the
 * connection right away (vhost_user_add_connection), so the whole vhost-user
 * handshake (SET_VRING_* handled with every virtqueue's access lock held,
 * vring_state_changed and new_device raising QUEUE_STATE/LSC events into the
 * ethdev) runs on the vhost-events thread while the main thread is still
 * setting up queues and starting the port: new_device() can run before the
 * queues exist ("RX/TX queues not exist yet") and races eth_dev_start() on
 * `started`/`dev_attached`. Which wait the main thread is stuck in was not
 * confirmed (no backtrace of a stalled testpmd yet; to get one: start
 * attach --server, then testpmd client=1, then `gdb -p PID -batch -ex
 * "thread apply all bt"`). When the connect fails instead, the reconnect thread retries once a second,
 * and the handshake happens with the port started and testpmd at its prompt.
 * DPDK 24.07 added RTE_VHOST_USER_ASYNC_CONNECT (commit ff8989c46a) to take
 * that first connect off the caller's thread. So: start testpmd first (as the
 * matrix does), or make attach --server listen after testpmd's ports started.
 */
