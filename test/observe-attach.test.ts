/**
 * A running `attach` is observable like serve and loopback: its control
 * socket (0600) answers `stats` with the driver's per-queue counters under
 * the xstats names (rx_qN_packets is receiveqN, tx_qN_packets transmitqN),
 * the features negotiated with the back-end, the connection and the rings;
 * `/metrics` carries the same counters with role="attach". The back-end is
 * serve, in this process, over a real unix socket.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostAvailable } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { attach } from '../src/cli/attach.js';
import { ControlClient } from '../src/cli/control/client.js';
import type { Snapshot } from '../src/cli/observe/snapshot.js';

const skip = hostAvailable() ? false : 'the native addon (src/host) is not built';

async function until<T>(f: () => Promise<T | undefined>, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('attach: control socket 0600, stats shows driver counters that move, features, connection and rings; /metrics role="attach"', { skip, timeout: 60_000 }, async () => {
  const socket = join(tmpdir(), `vmq-obs-attach-${process.pid}.sock`);
  const control = join(tmpdir(), `vmq-obs-attach-${process.pid}-ctl.sock`);
  const logs: string[] = [];
  const be = new VhostUserBackend({ socket, pairs: 2, netdev: { kind: 'loopback' }, log: (l) => logs.push(l) });
  await be.start();
  let stop!: () => void;
  const stopSignal = new Promise<void>((r) => (stop = r));
  try {
    const run = attach({
      socket, server: false, queues: 2, ring: 'split', inOrder: false, mrgRxbuf: false, queueSize: 256, rss: false,
      netdev: 'generator,flows=8,size=128', duration: 60, mode: 'notify', json: true, reconnect: false,
      observe: { control, metrics: '127.0.0.1:0' },
    }, () => {}, { log: (l) => logs.push(l), stopSignal });
    const c = await until(async () => ControlClient.connect(control), 'the control socket');
    try {
      assert.equal(lstatSync(control).mode & 0o777, 0o600);
      const snap = async () => (await c.request('stats')) as Snapshot;
      const a = await until(async () => {
        const s = await snap();
        return s.xstats.tx_q0_packets > 0 && s.xstats.tx_q1_packets > 0 ? s : undefined;
      }, 'traffic on both pairs');
      assert.equal(a.kind, 'attach');
      assert.equal(a.connection.state, 'running');
      assert.equal(a.connection.sessions, 1);
      assert.equal(a.pairs, 2);
      assert.equal(a.activePairs, 2);
      assert.ok(a.features.includes('VIRTIO_NET_F_MQ') && a.features.includes('VIRTIO_F_VERSION_1'), a.features.join(' '));
      assert.equal(a.ringFormat, 'split');
      assert.deepEqual(a.rings.map((r) => r.name), ['receiveq1', 'transmitq1', 'receiveq2', 'transmitq2']);
      assert.ok(a.rings.every((r) => r.size === 256 && r.availIdx !== null && r.usedIdx !== null));
      assert.equal(a.memory.length, 1);
      const b = await until(async () => {
        const s = await snap();
        return s.xstats.rx_q0_packets > a.xstats.rx_q0_packets && s.xstats.tx_q0_packets > a.xstats.tx_q0_packets ? s : undefined;
      }, 'counters moving');
      assert.ok(b.xstats.rx_q1_packets >= a.xstats.rx_q1_packets);
      const url = /metrics: (http:\S+)/.exec(logs.join('\n'))?.[1];
      assert.ok(url, 'the metrics URL is logged');
      const text = await (await fetch(url)).text();
      assert.match(text, /^virtio_mq_packets_total\{(?=[^}]*direction="tx")(?=[^}]*pair="0")[^}]*\} [1-9]\d*$/m);
      assert.match(text, /role="attach"/);
    } finally {
      c.close();
      stop();
    }
    const r = await run;
    assert.deepEqual(r.problems, [], logs.join('\n'));
    assert.throws(() => lstatSync(control), /ENOENT/, 'the control socket is removed at the end');
  } finally {
    await be.stop();
  }
});
