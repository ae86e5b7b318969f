/**
 * Interop: `virtio-mq serve` (the vhost-user back-end, in this process)
 * against DPDK testpmd's virtio-user driver, split rings, over a matrix of
 * queue pairs × mrg_rxbuf × in_order. Per queue, in each direction, the
 * counts must match exactly apart from drops the back-end reports:
 *
 * - txonly: testpmd's tx_qN_good_packets == frames the back-end consumed on transmitqN;
 * - rxonly: the back-end's generator (steered by RSS over all pairs) ==
 *   testpmd's rx_qN_good_packets;
 * - io: generated frames go to testpmd and come back: RX and TX both match.
 *
 * testpmd's forwarding lcore gets CPU 0, this process (and so every worker
 * it creates afterwards) CPU 1, as the peer guide asks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { VhostUserBackend } from '../../src/transport/vhost-user/backend.js';
import { DevStat } from '../../src/net/stats.js';
import { newGate, openGate, closeGate } from '../../src/netdev/generator-netdev.js';
import { DEFAULT_RSS_KEY } from '../../src/net/toeplitz.js';
import { VIRTIO_NET_HASH_TYPE_ALL } from '../../src/net/rss.js';

const skip = interopSkipReason();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until `read()` stops changing (the rings have drained). */
async function settle(read: () => number, ms = 300, timeout = 10_000): Promise<number> {
  const until = Date.now() + timeout;
  let v = read();
  for (;;) {
    await sleep(ms);
    const w = read();
    if (w === v || Date.now() > until) return w;
    v = w;
  }
}

function pin(cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
  } catch {
    /* taskset missing: run unpinned */
  }
}

const matrix: { pairs: number; mrg: 0 | 1; inOrder: 0 | 1 }[] = [
  { pairs: 1, mrg: 0, inOrder: 0 },
  { pairs: 1, mrg: 1, inOrder: 1 },
  { pairs: 2, mrg: 1, inOrder: 0 },
  { pairs: 2, mrg: 0, inOrder: 1 },
  { pairs: 4, mrg: 1, inOrder: 1 },
  { pairs: 4, mrg: 0, inOrder: 0 },
];

for (const { pairs, mrg, inOrder } of matrix) {
  test(`testpmd virtio-user ⇄ serve: ${pairs} pair(s), mrg_rxbuf=${mrg}, in_order=${inOrder}: per-queue counts match`, { skip, timeout: 120_000 }, async () => {
    pin('1');
    const socket = tmpSocketPath(`serve-${pairs}-${mrg}${inOrder}`);
    const gate = newGate();
    const logs: string[] = [];
    const backend = new VhostUserBackend({
      socket, pairs, mode: 'notify', log: (l) => logs.push(l),
      netdev: { kind: 'generator', flows: 64, size: 64, gate },
      rss: { key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_HASH_TYPE_ALL, indirectionTable: Uint16Array.from({ length: 128 }, (_, i) => i % pairs), unclassifiedQueue: 0 },
    });
    await backend.start();
    let tp: Testpmd | undefined;
    try {
      tp = await Testpmd.start({
        name: `serve${pairs}${mrg}${inOrder}`, lcores: '0@1,1@0', rxq: pairs, txq: pairs, txpkts: 64,
        vdevs: [`net_virtio_user0,path=${socket},queues=${pairs},cq=1,queue_size=256,mrg_rxbuf=${mrg},in_order=${inOrder}`],
        extraApp: pairs > 1 ? ['--txfreet=224'] : [],
      });
      const until = Date.now() + 15_000;
      while ((backend.session?.runningPairs ?? 0) < 1 && Date.now() < until) await sleep(50);
      assert.ok(backend.session, `no front-end connected:\n${logs.join('\n')}`);
      // virtio-user enables pair 1 at start; with cq=1 it enables the rest when testpmd sets up its queues.
      while (backend.session!.runningPairs < pairs && Date.now() < until) await sleep(50);
      assert.equal(backend.session!.runningPairs, pairs, `running pairs\n${logs.join('\n')}`);
      const s = backend.stats;
      const per = (k: number) => Array.from({ length: pairs }, (_, q) => s.get(q, k));
      const xq = async (dir: 'rx' | 'tx') => {
        const x = await tp!.xstats(0);
        return Array.from({ length: pairs }, (_, q) => x[`${dir}_q${q}_good_packets`] ?? NaN);
      };
      const minus = (a: number[], b: number[]) => a.map((v, i) => v - b[i]);

      // 1. txonly: testpmd sends on every queue; the back-end consumes.
      await tp.cmd('set fwd txonly');
      await tp.start();
      await sleep(1500);
      await tp.stop();
      await settle(() => s.total(DevStat.txPackets));
      const tpTx = await xq('tx');
      assert.ok(tpTx.every((n) => n > 0), `testpmd sent on every queue: ${tpTx}`);
      assert.deepEqual(per(DevStat.txPackets), tpTx, 'per-queue TX: back-end consumed exactly what testpmd sent');
      assert.equal(s.total(DevStat.errors), 0);

      // 2. rxonly: the back-end generates, RSS spreads over the pairs, testpmd counts.
      const rx0 = await xq('rx');
      const dev0 = per(DevStat.rxPackets);
      await tp.cmd('set fwd rxonly');
      await tp.start();
      openGate(gate);
      await sleep(1500);
      closeGate(gate);
      await settle(() => s.total(DevStat.rxPackets));
      await sleep(300);
      await tp.stop();
      const devRx = minus(per(DevStat.rxPackets), dev0);
      const tpRx = minus(await xq('rx'), rx0);
      assert.ok(devRx.every((n) => n > 0), `every pair received generated frames: ${devRx}`);
      assert.deepEqual(tpRx, devRx, `per-queue RX: testpmd got exactly what the back-end delivered (drops reported: ${s.total(DevStat.rxDrops)})`);

      // 3. io: generated frames go out and come back.
      const rx1 = await xq('rx'), tx1 = await xq('tx');
      const devRx1 = per(DevStat.rxPackets), devTx1 = per(DevStat.txPackets);
      await tp.cmd('set fwd io');
      await tp.start();
      openGate(gate);
      await sleep(1500);
      closeGate(gate);
      await settle(() => s.total(DevStat.rxPackets) + s.total(DevStat.txPackets));
      await sleep(300);
      await tp.stop();
      await settle(() => s.total(DevStat.txPackets));
      const ioDevRx = minus(per(DevStat.rxPackets), devRx1), ioDevTx = minus(per(DevStat.txPackets), devTx1);
      const ioTpRx = minus(await xq('rx'), rx1), ioTpTx = minus(await xq('tx'), tx1);
      assert.ok(ioDevRx.every((n) => n > 0));
      assert.deepEqual(ioTpRx, ioDevRx, 'io: testpmd received what the back-end delivered');
      assert.deepEqual(ioDevTx, ioTpTx, 'io: the back-end consumed what testpmd forwarded back');
      assert.equal(s.total(DevStat.errors), 0);

      // 4. quit: virtio-user disables every ring, then GET_VRING_BASE each; serve answers them all.
      await tp.quit();
      tp = undefined;
      const end = Date.now() + 10_000;
      while (backend.session && Date.now() < end) await sleep(50);
      const log = logs.join('\n');
      assert.doesNotMatch(log, /closing connection|failure reply/, 'no request refused');
      for (let v = 0; v < 2 * pairs; v++) assert.match(log, new RegExp(`vring ${v} stopped at avail index \\d+`));
    } finally {
      await tp?.quit();
      await backend.stop();
      rmSync(socket, { force: true });
      pin('0-1');
    }
  });
}

test('serve --client connects to virtio-user in server mode (server=1), serves it, and reconnects after it quits', { skip, timeout: 120_000 }, async () => {
  const socket = tmpSocketPath('client');
  const logs: string[] = [];
  let tp: Testpmd | undefined;
  const backend = new VhostUserBackend({ socket, client: true, pairs: 1, netdev: { kind: 'loopback' }, log: (l) => logs.push(l) });
  try {
    // serve keeps trying to connect (with back-off) until virtio-user listens; testpmd prompts once connected.
    const connecting = backend.start();
    tp = await Testpmd.start({ name: 'client', lcores: '0@1,1@0', forwardMode: 'io', vdevs: [`net_virtio_user0,path=${socket},queues=1,cq=1,server=1`] });
    await connecting;
    const until = Date.now() + 15_000;
    while ((backend.session?.runningPairs ?? 0) < 1 && Date.now() < until) await sleep(50);
    assert.equal(backend.session?.runningPairs, 1, logs.join('\n'));
    await tp.start(true);
    await sleep(1000);
    await tp.stop();
    const x = await tp.xstats(0);
    assert.ok(x.rx_q0_good_packets > 0 && x.tx_q0_good_packets > 0, 'frames loop through serve');
    await tp.quit();
    tp = undefined;
    // The front-end went away: serve goes back to connecting, with back-off.
    const t2 = Date.now() + 10_000;
    while (!logs.some((l) => l.includes('retrying in')) && Date.now() < t2) await sleep(50);
    assert.ok(logs.some((l) => l.includes('retrying in')), logs.join('\n'));
  } finally {
    await tp?.quit();
    await backend.stop();
    rmSync(socket, { force: true });
  }
});
