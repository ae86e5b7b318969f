/**
 * Interop, real TCP through the front-end: `virtio-mq attach --netdev tap`
 * (a multi-queue TAP in namespace A: the process is a virtio-user + TAP
 * exception path) drives DPDK testpmd's vhost PMD, which forwards (io) to
 * its TAP PMD in namespace B:
 *
 *   ns A: TAP vmqa ── attach ══ vhost-user ══ testpmd net_vhost ── net_tap vmqb :ns B
 *
 * ping works and `iperf3 -P 4` completes in both directions. Everything the
 * test creates (namespaces, processes, socket) is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Testpmd, interopSkipReason } from './testpmd.js';
import { hasCommand } from './host.js';
import { NetnsLab, iperf3 } from './netns.js';

const skip = interopSkipReason() ?? (hasCommand('iperf3') ? undefined : 'iperf3 not installed (scripts/install-peers.sh)');

for (const ring of ['split', 'packed'] as const) test(`real TCP: attach --netdev tap (${ring}) through testpmd net_vhost + net_tap: ping and iperf3 -P 4 both ways`, { skip, timeout: 180_000 }, async () => {
  const lab = new NetnsLab('F', ring[0]);
  try {
    const socket = lab.socket('att-tap');
    const nsA = lab.netns('A'), nsB = lab.netns('B'), tapA = lab.ifname('a'), tapB = lab.ifname('b');
    const tp = await Testpmd.start({
      name: `atttap${ring[0]}`, netns: nsB.name, lcores: '0@1,1@0', rxq: 2, txq: 2, forwardMode: 'io',
      vdevs: [`net_vhost0,iface=${socket},queues=2`, `net_tap0,iface=${tapB}`],
    });
    lab.defer(() => tp.quit().catch(() => undefined));
    await tp.start();
    const attach = lab.cli(nsA, ['attach', '--socket', socket, '--queues', '2', '--ring', ring, '--netdev', `tap,ifname=${tapA}`, '--duration', '600'], { stdout: true });
    assert.ok(await attach.waitFor('connected to the back-end', 20_000), `attach did not connect:\n${attach.log}\n${tp.logs.slice(-2000)}`);
    nsA.up(tapA, '198.18.9.1/24');
    nsB.up(tapB, '198.18.9.2/24');
    const pingA = nsA.ping('198.18.9.2');
    assert.match(pingA, / 0% packet loss/);
    const pingB = nsB.ping('198.18.9.1');
    assert.match(pingB, / 0% packet loss/);
    const aToB = await iperf3(nsB, '198.18.9.2', nsA, { streams: 4, seconds: 3 });
    const bToA = await iperf3(nsA, '198.18.9.1', nsB, { streams: 4, seconds: 3 });
    assert.ok(aToB > 1e6, `A→B ${aToB} bit/s`);
    assert.ok(bToA > 1e6, `B→A ${bToA} bit/s`);
    assert.equal(/negotiated with the back-end: .*VIRTIO_F_RING_PACKED/.test(attach.log), ring === 'packed', 'the ring format asked for');
    console.log(`# iperf3 -P 4 through attach + testpmd (${ring}): A→B ${(aToB / 1e6).toFixed(0)} Mbit/s, B→A ${(bToA / 1e6).toFixed(0)} Mbit/s`);
    assert.equal(await attach.stop(), 0, `attach exits 0 on SIGTERM:\n${attach.log.slice(-3000)}`);
  } finally {
    await lab.close();
  }
});
