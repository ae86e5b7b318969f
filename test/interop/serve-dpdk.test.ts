/**
 * Interop: `virtio-mq serve` (the vhost-user back-end, in this process)
 * against DPDK testpmd's virtio-user driver, split rings (§2.7) and packed
 * rings (§2.8, `packed_vq=1`), over a matrix of queue pairs × mrg_rxbuf ×
 * in_order (× queue_size for packed). Per queue, in each direction, the
 * counts must match exactly apart from drops the back-end reports:
 *
 * - txonly: testpmd's tx_qN_good_packets == frames the back-end consumed on transmitqN;
 * - rxonly: the back-end's generator (steered by RSS over all pairs) ==
 *   testpmd's rx_qN_good_packets;
 * - io: generated frames go to testpmd and come back: RX and TX both match.
 *
 * Every run also checks the negotiated features serve logs ("front-end
 * features:": VIRTIO_F_RING_PACKED exactly for packed runs, IN_ORDER and
 * MRG_RXBUF as asked), the ring size each pair started with, and testpmd's
 * `quit`: virtio-user disables every ring and sends GET_VRING_BASE for each;
 * serve must answer every one (testpmd prints no "Failed to get vring base" /
 * "Failed to stop device"), and for packed rings the answer is consistent: a
 * position inside the ring and nothing in flight (avail == used, wrap
 * counters included).
 *
 * testpmd's forwarding lcore gets CPU 0, this process (and so every worker
 * it creates afterwards) CPU 1, as the peer guide asks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { Testpmd, interopSkipReason, tmpSocketPath } from './testpmd.js';
import { settle } from './host.js';
import { VhostUserBackend } from '../../src/transport/vhost-user/backend.js';
import { DevStat } from '../../src/net/stats.js';
import { newGate, openGate, closeGate } from '../../src/netdev/generator-netdev.js';
import { DEFAULT_RSS_KEY } from '../../src/net/toeplitz.js';
import { VIRTIO_NET_HASH_TYPE_ALL } from '../../src/net/rss.js';

const skip = interopSkipReason();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pin(cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
  } catch {
    /* taskset missing: run unpinned */
  }
}

interface MatrixCase {
  ring: 'split' | 'packed';
  pairs: 1 | 2 | 4;
  mrg: 0 | 1;
  inOrder: 0 | 1;
  queueSize: 256 | 1024;
}

/** What virtio-user reports when a GET_VRING_BASE (or the stop around it) fails. */
const TESTPMD_STOP_ERRORS = /Failed to get vring base|Failed to stop device|Unexpected (?:request type|payload size|ring index)/;

/**
 * One matrix cell: serve with `pairs` pairs and a generator netdev, testpmd's
 * virtio-user connected to it with the cell's devargs, then txonly, rxonly
 * and io with exact per-queue counts, then testpmd's quit.
 */
async function runMatrixCase(c: MatrixCase): Promise<void> {
  const { ring, pairs, mrg, inOrder, queueSize } = c;
  const packed = ring === 'packed';
  const tag = `${packed ? 'p' : 's'}${pairs}${mrg}${inOrder}${queueSize === 1024 ? 'k' : ''}`;
  pin('1');
  const socket = tmpSocketPath(`serve-${tag}`);
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
      name: `serve${tag}`, lcores: '0@1,1@0', rxq: pairs, txq: pairs, txpkts: 64,
      vdevs: [`net_virtio_user0,path=${socket},queues=${pairs},cq=1,queue_size=${queueSize},mrg_rxbuf=${mrg},in_order=${inOrder},packed_vq=${packed ? 1 : 0}`],
      // A multi-queue split-ring virtio-user sender needs it to keep its mbufs in cache (the peer guide).
      extraApp: pairs > 1 && !packed ? ['--txfreet=224'] : [],
      timeoutMs: 180_000,
    });
    const peer = tp;
    const diag = () => `\n--- serve ---\n${logs.slice(-60).join('\n')}\n--- testpmd (tail) ---\n${peer.logs.slice(-3000)}`;
    const until = Date.now() + 15_000;
    while ((backend.session?.runningPairs ?? 0) < 1 && Date.now() < until) await sleep(50);
    assert.ok(backend.session, `no front-end connected${diag()}`);
    // virtio-user enables pair 1 at start; with cq=1 it enables the rest when testpmd sets up its queues.
    while (backend.session!.runningPairs < pairs && Date.now() < until) await sleep(50);
    assert.equal(backend.session!.runningPairs, pairs, `running pairs${diag()}`);

    // The features virtio-user negotiated, as serve logged them (the last SET_FEATURES counts).
    const featLine = logs.filter((l) => l.includes('front-end features:')).at(-1);
    assert.ok(featLine, `serve logged no "front-end features:" line${diag()}`);
    const feats = new Set(featLine.slice(featLine.indexOf('front-end features:') + 19).trim().split(/\s+/));
    assert.equal(feats.has('VIRTIO_F_RING_PACKED'), packed, `VIRTIO_F_RING_PACKED ${packed ? 'missing from' : 'in'} "${featLine}"`);
    assert.equal(feats.has('VIRTIO_F_IN_ORDER'), inOrder === 1, `VIRTIO_F_IN_ORDER vs in_order=${inOrder}: "${featLine}"`);
    assert.equal(feats.has('VIRTIO_NET_F_MRG_RXBUF'), mrg === 1, `VIRTIO_NET_F_MRG_RXBUF vs mrg_rxbuf=${mrg}: "${featLine}"`);
    for (let p = 0; p < pairs; p++) {
      assert.ok(
        logs.some((l) => l.includes(`queue pair ${p} started (${ring} rings, receiveq ${queueSize} / transmitq ${queueSize} descriptors`)),
        `pair ${p} did not start with ${ring} rings of ${queueSize}${diag()}`,
      );
    }

    const s = backend.stats;
    const per = (k: number) => Array.from({ length: pairs }, (_, q) => s.get(q, k));
    const xq = async (dir: 'rx' | 'tx') => {
      const x = await peer.xstats(0);
      return Array.from({ length: pairs }, (_, q) => x[`${dir}_q${q}_good_packets`] ?? NaN);
    };
    const minus = (a: number[], b: number[]) => a.map((v, i) => v - b[i]);

    // 1. txonly: testpmd sends on every queue; the back-end consumes.
    await peer.cmd('set fwd txonly');
    await peer.start();
    await sleep(1500);
    await peer.stop();
    await settle(() => s.total(DevStat.txPackets));
    const tpTx = await xq('tx');
    assert.ok(tpTx.every((n) => n > 0), `testpmd sent on every queue: ${tpTx}${diag()}`);
    assert.deepEqual(per(DevStat.txPackets), tpTx, 'per-queue TX: back-end consumed exactly what testpmd sent');
    assert.equal(s.total(DevStat.errors), 0, `malformed chains${diag()}`);

    // 2. rxonly: the back-end generates, RSS spreads over the pairs, testpmd counts.
    const rx0 = await xq('rx');
    const dev0 = per(DevStat.rxPackets);
    await peer.cmd('set fwd rxonly');
    await peer.start();
    openGate(gate);
    await sleep(1500);
    closeGate(gate);
    await settle(() => s.total(DevStat.rxPackets));
    await sleep(300);
    await peer.stop();
    const devRx = minus(per(DevStat.rxPackets), dev0);
    const tpRx = minus(await xq('rx'), rx0);
    assert.ok(devRx.every((n) => n > 0), `every pair received generated frames: ${devRx}${diag()}`);
    assert.deepEqual(tpRx, devRx, `per-queue RX: testpmd got exactly what the back-end delivered (drops reported: ${s.total(DevStat.rxDrops)})`);

    // 3. io: generated frames go out and come back.
    const rx1 = await xq('rx'), tx1 = await xq('tx');
    const devRx1 = per(DevStat.rxPackets), devTx1 = per(DevStat.txPackets);
    await peer.cmd('set fwd io');
    await peer.start();
    openGate(gate);
    await sleep(1500);
    closeGate(gate);
    await settle(() => s.total(DevStat.rxPackets) + s.total(DevStat.txPackets));
    await sleep(300);
    await peer.stop();
    await settle(() => s.total(DevStat.txPackets));
    const ioDevRx = minus(per(DevStat.rxPackets), devRx1), ioDevTx = minus(per(DevStat.txPackets), devTx1);
    const ioTpRx = minus(await xq('rx'), rx1), ioTpTx = minus(await xq('tx'), tx1);
    assert.ok(ioDevRx.every((n) => n > 0), `io: every pair received generated frames: ${ioDevRx}${diag()}`);
    assert.deepEqual(ioTpRx, ioDevRx, 'io: testpmd received what the back-end delivered');
    assert.deepEqual(ioDevTx, ioTpTx, 'io: the back-end consumed what testpmd forwarded back');
    assert.equal(s.total(DevStat.errors), 0, `malformed chains${diag()}`);

    console.log(`# ${ring} ${pairs}p mrg=${mrg} in_order=${inOrder} qs=${queueSize}: txonly ${tpTx.join('/')}, rxonly ${devRx.join('/')}, io rx ${ioDevRx.join('/')} tx ${ioDevTx.join('/')}`);

    // 4. quit: virtio-user disables every ring, then GET_VRING_BASE each; serve answers them all.
    const exit = await peer.quit();
    tp = undefined;
    const end = Date.now() + 10_000;
    while (backend.session && Date.now() < end) await sleep(50);
    const log = logs.join('\n');
    assert.equal(exit.code, 0, `testpmd exit ${JSON.stringify(exit)}${diag()}`);
    assert.doesNotMatch(peer.logs, TESTPMD_STOP_ERRORS, `virtio-user's stop failed${diag()}`);
    assert.doesNotMatch(log, /closing connection|failure reply|stopped: /, `no request refused, no queue stopped${diag()}`);
    for (let v = 0; v < 2 * pairs; v++) {
      if (!packed) {
        assert.match(log, new RegExp(`vring ${v} stopped at avail index \\d+`));
        continue;
      }
      const m = new RegExp(`vring ${v} stopped at avail (\\d+) \\(wrap ([01])\\), used (\\d+) \\(wrap ([01])\\)`).exec(log);
      assert.ok(m, `no GET_VRING_BASE answer for vring ${v}${diag()}`);
      const [avail, availWrap, used, usedWrap] = m.slice(1).map(Number);
      assert.ok(avail < queueSize && used < queueSize, `vring ${v}: positions inside the ring: ${m[0]}`);
      assert.deepEqual([used, usedWrap], [avail, availWrap], `vring ${v}: nothing in flight at stop: ${m[0]}`);
    }
  } finally {
    await tp?.quit();
    await backend.stop();
    rmSync(socket, { force: true });
    pin('0-1');
  }
}

const caseName = (c: MatrixCase) =>
  `${c.pairs} pair(s), mrg_rxbuf=${c.mrg}, in_order=${c.inOrder}${c.ring === 'packed' ? `, queue_size=${c.queueSize}` : ''}: per-queue counts match`;

/** Split rings (queue_size 256): each pairs value with both mrg_rxbuf and both in_order values. */
const splitMatrix: MatrixCase[] = [
  { ring: 'split', pairs: 1, mrg: 0, inOrder: 0, queueSize: 256 },
  { ring: 'split', pairs: 1, mrg: 1, inOrder: 1, queueSize: 256 },
  { ring: 'split', pairs: 2, mrg: 1, inOrder: 0, queueSize: 256 },
  { ring: 'split', pairs: 2, mrg: 0, inOrder: 1, queueSize: 256 },
  { ring: 'split', pairs: 4, mrg: 1, inOrder: 1, queueSize: 256 },
  { ring: 'split', pairs: 4, mrg: 0, inOrder: 0, queueSize: 256 },
];

/**
 * Packed rings: the full product (3 × 2 × 2 × 2 = 24 cells, ~10 s each) is
 * replaced by a pairwise covering subset: every value of every dimension
 * appears, and so does every pair of values of any two dimensions (pairs ×
 * mrg_rxbuf, pairs × in_order, pairs × queue_size, mrg_rxbuf × in_order,
 * mrg_rxbuf × queue_size, in_order × queue_size), in the first six rows;
 * the seventh adds the heaviest cell (4 pairs, mrg_rxbuf, in_order, 1024).
 * Every row runs txonly, rxonly and io, so the forwarding modes are covered
 * with every row.
 */
const packedMatrix: MatrixCase[] = [
  { ring: 'packed', pairs: 1, mrg: 0, inOrder: 0, queueSize: 256 },
  { ring: 'packed', pairs: 1, mrg: 1, inOrder: 1, queueSize: 1024 },
  { ring: 'packed', pairs: 2, mrg: 0, inOrder: 1, queueSize: 256 },
  { ring: 'packed', pairs: 2, mrg: 1, inOrder: 0, queueSize: 1024 },
  { ring: 'packed', pairs: 4, mrg: 0, inOrder: 1, queueSize: 1024 },
  { ring: 'packed', pairs: 4, mrg: 1, inOrder: 0, queueSize: 256 },
  { ring: 'packed', pairs: 4, mrg: 1, inOrder: 1, queueSize: 1024 },
];

for (const c of splitMatrix) {
  test(`testpmd virtio-user ⇄ serve: ${caseName(c)}`, { skip, timeout: 120_000 }, () => runMatrixCase(c));
}
for (const c of packedMatrix) {
  test(`testpmd virtio-user packed_vq=1 ⇄ serve: ${caseName(c)}`, { skip, timeout: 120_000 }, () => runMatrixCase(c));
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
