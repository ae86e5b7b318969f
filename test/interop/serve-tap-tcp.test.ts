/**
 * Interop, real TCP: Linux TCP from namespace B goes through DPDK testpmd
 * (net_tap in B ⇄ net_virtio_user, io forwarding) into `virtio-mq serve
 * --netdev tap` (a multi-queue TAP in namespace A) and back:
 *
 *   ns B: vmqB-tap ── testpmd ── virtio-user ══ vhost-user ══ serve ── TAP vmqA-tap :ns A
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

for (const ring of ['split', 'packed'] as const) test(`real TCP through testpmd (net_tap + virtio-user, ${ring} rings) into serve --netdev tap: ping and iperf3 -P 4 both ways`, { skip, timeout: 180_000 }, async () => {
  const lab = new NetnsLab('', ring[0]);
  try {
    const socket = lab.socket('tap-tcp');
    const nsA = lab.netns('A'), nsB = lab.netns('B'), tapA = lab.ifname('a'), tapB = lab.ifname('b');
    const serve = lab.cli(nsA, ['serve', '--socket', socket, '--queues', '2', '--netdev', `tap,ifname=${tapA}`]);
    assert.ok(await serve.waitFor('listening on', 10_000), `serve did not start:\n${serve.log}`);
    nsA.up(tapA, '198.18.7.1/24');
    const tp = await Testpmd.start({
      name: `taptcp${ring[0]}`, netns: nsB.name, lcores: '0@1,1@0', rxq: 2, txq: 2, forwardMode: 'io',
      vdevs: [`net_tap0,iface=${tapB}`, `net_virtio_user0,path=${socket},queues=2,cq=1${ring === 'packed' ? ',packed_vq=1' : ''}`],
    });
    lab.defer(() => tp.quit().catch(() => undefined));
    await tp.start();
    nsB.up(tapB, '198.18.7.2/24');
    // ping both ways (the first may wait for ARP).
    const pingB = nsB.ping('198.18.7.1');
    assert.match(pingB, / 0% packet loss/);
    const pingA = nsA.ping('198.18.7.2');
    assert.match(pingA, / 0% packet loss/);
    const bToA = await iperf3(nsA, '198.18.7.1', nsB, { streams: 4, seconds: 3 });
    const aToB = await iperf3(nsB, '198.18.7.2', nsA, { streams: 4, seconds: 3 });
    assert.ok(bToA > 1e6, `B→A ${bToA} bit/s`);
    assert.ok(aToB > 1e6, `A→B ${aToB} bit/s`);
    assert.equal(/front-end features: .*VIRTIO_F_RING_PACKED/.test(serve.log), ring === 'packed', 'serve negotiated the ring format asked for');
    console.log(`# iperf3 -P 4 through testpmd + serve (${ring}): B→A ${(bToA / 1e6).toFixed(0)} Mbit/s, A→B ${(aToB / 1e6).toFixed(0)} Mbit/s`);
  } finally {
    await lab.close();
  }
});
