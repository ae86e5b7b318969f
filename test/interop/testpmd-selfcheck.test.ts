/**
 * Self-check of the testpmd harness, DPDK against DPDK (no virtio-mq code):
 * a vhost testpmd (rxonly) and a virtio-user testpmd (txonly, 2 queue pairs)
 * on one vhost-user socket. Proves the harness can start, drive, read per-queue
 * xstats from and tear down both roles on this machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { Testpmd, interopSkipReason, parseForwardStats, tmpSocketPath } from './testpmd.js';

const skip = interopSkipReason();

test('testpmd harness: virtio-user txonly -> vhost rxonly over 2 queue pairs', { skip: skip ?? false, timeout: 30_000 }, async (t) => {
  const sock = tmpSocketPath('selfcheck');
  let vhost: Testpmd | undefined;
  let virtio: Testpmd | undefined;
  try {
    vhost = await Testpmd.start({
      name: 'vhost',
      vdevs: [`net_vhost0,iface=${sock},queues=2`],
      lcores: '0@0,1@1',
      rxq: 2,
      txq: 2,
      forwardMode: 'rxonly',
      timeoutMs: 60_000,
    });

    virtio = await Testpmd.start({
      name: 'virtio',
      vdevs: [`net_virtio_user0,path=${sock},queues=2,cq=1`],
      lcores: '0@1,1@0',
      rxq: 2,
      txq: 2,
      forwardMode: 'txonly',
      txpkts: 64,
      timeoutMs: 60_000,
    });
    // The vhost side logs this once virtio-user has set the device up (DRIVER_OK).
    await vhost.waitForOutput('virtio is now ready for processing', 10_000);
    // Start the busy pollers only now: a forwarding lcore spinning on the CPU
    // where the other testpmd initialises slows its start-up from ~1.5 s to ~5 s.
    await vhost.start();
    await virtio.start();
    await new Promise((r) => setTimeout(r, 2_000));

    // Sender first, so the receiver has drained everything in flight when it stops.
    const virtioStop = await virtio.stop();
    await new Promise((r) => setTimeout(r, 200));
    const vhostStop = await vhost.stop();

    const vx = await vhost.xstats(0);
    const ux = await virtio.xstats(0);
    const vs = await vhost.portStats(0);
    const us = await virtio.portStats(0);
    const summary = {
      vhost_rx_q0_packets: vx.rx_q0_packets,
      vhost_rx_q1_packets: vx.rx_q1_packets,
      vhost_rx_packets: vs.rx_packets,
      virtio_tx_q0_good_packets: ux.tx_q0_good_packets,
      virtio_tx_q1_good_packets: ux.tx_q1_good_packets,
      virtio_tx_packets: us.tx_packets,
      virtio_fwd: parseForwardStats(virtioStop),
      vhost_fwd: parseForwardStats(vhostStop),
    };
    t.diagnostic(JSON.stringify(summary));

    assert.ok((vx.rx_q0_packets ?? 0) > 0, `vhost rx_q0_packets > 0: ${JSON.stringify(summary)}`);
    assert.ok((vx.rx_q1_packets ?? 0) > 0, `vhost rx_q1_packets > 0: ${JSON.stringify(summary)}`);
    assert.ok((vs.rx_packets ?? 0) > 0);
    assert.ok(
      (vs.rx_packets ?? 0) <= (us.tx_packets ?? 0),
      `vhost rx ${vs.rx_packets} must not exceed virtio tx ${us.tx_packets}`,
    );
    assert.equal(vs.rx_packets, (vx.rx_q0_packets ?? 0) + (vx.rx_q1_packets ?? 0));
    assert.equal(us.tx_packets, (ux.tx_q0_good_packets ?? 0) + (ux.tx_q1_good_packets ?? 0));
    // The harness saw testpmd's vhost-user message log.
    assert.match(vhost.logs, /read message VHOST_USER_SET_MEM_TABLE/);

    // Clean shutdown: the sender (front-end) first, then the device.
    const ue = await virtio.quit();
    const ve = await vhost.quit();
    t.diagnostic(`exit virtio=${JSON.stringify(ue)} vhost=${JSON.stringify(ve)}`);
    assert.equal(virtio.alive, false);
    assert.equal(vhost.alive, false);
  } finally {
    await virtio?.quit(5_000);
    await vhost?.quit(5_000);
    rmSync(sock, { force: true });
  }
});
