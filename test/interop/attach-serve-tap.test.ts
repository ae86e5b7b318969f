/**
 * Interop, real TCP through both ends of virtio-mq: `attach --netdev tap
 * --offloads` (a multi-queue TAP in namespace B: the process is a
 * virtio-user + TAP exception path) drives `serve --netdev tap` (a
 * multi-queue TAP in namespace A) over vhost-user:
 *
 *   ns B: TAP ── attach ══ vhost-user ══ serve ── TAP :ns A
 *
 * With offloads both TAPs carry the kernel's partial checksums and 64 KiB
 * GSO frames through unchanged: the test asserts the offloads were
 * negotiated (attach and serve log the features and the TUNSETOFFLOAD
 * flags; `ethtool -k` on both TAPs shows TCP segmentation offload on),
 * ping works both ways, and iperf3 (single stream and -P 4) completes in
 * both directions. With `--mtu 9000` on both ends a 9000-byte IP packet
 * (ping -M do -s 8972) crosses unfragmented both ways. Everything the test
 * creates (namespaces, processes, socket) is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { interopSkipReason } from './testpmd.js';
import { hasCommand } from './host.js';
import { NetnsLab, iperf3 } from './netns.js';

const skip = interopSkipReason() ?? (hasCommand('iperf3') ? (hasCommand('ethtool') ? undefined : 'ethtool not installed') : 'iperf3 not installed (scripts/install-peers.sh)');

for (const mtu of [1500, 9000]) test(`real TCP: attach --netdev tap --offloads${mtu !== 1500 ? ` --mtu ${mtu}` : ''} ⇄ serve --netdev tap between two namespaces`, { skip, timeout: 180_000 }, async () => {
  const lab = new NetnsLab('S', mtu === 1500 ? 's' : 'j');
  const A = '198.18.11.1', B = '198.18.11.2';
  const mtuArgs = mtu !== 1500 ? ['--mtu', String(mtu)] : [];
  try {
    const socket = lab.socket('att-srv');
    const nsA = lab.netns('A'), nsB = lab.netns('B'), tapA = lab.ifname('a'), tapB = lab.ifname('b');
    const serve = lab.cli(nsA, ['serve', '--socket', socket, '--queues', '4', '--netdev', `tap,ifname=${tapA}`, ...mtuArgs]);
    assert.ok(await serve.waitFor('listening on', 15_000), `serve did not start:\n${serve.log}`);
    const attach = lab.cli(nsB, ['attach', '--socket', socket, '--queues', '4', '--offloads', ...mtuArgs, '--netdev', `tap,ifname=${tapB}`, '--duration', '600']);
    assert.ok(await attach.waitFor('TAP offloads', 20_000), `attach did not connect:\n${attach.log}\n${serve.log}`);
    // Offloads negotiated on both ends (the features the driver accepted, and each TAP's TUNSETOFFLOAD).
    for (const f of ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_GUEST_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_GUEST_TSO4', 'VIRTIO_NET_F_MRG_RXBUF'])
      assert.match(attach.log, new RegExp(`negotiated with the back-end: .*${f}\\b`), `attach negotiated ${f}`);
    assert.match(attach.log, /TAP offloads 0x[0-9a-f]+ \(the back-end accepts: csum tso4 tso6/);
    assert.ok(await serve.waitFor(/TAP offloads 0x[0-9a-f]+ \(driver accepts: csum tso4 tso6/, 5000), `serve set the TAP's offloads:\n${serve.log}`);
    if (mtu !== 1500) assert.match(attach.log, /negotiated with the back-end: .*VIRTIO_NET_F_MTU\b/);
    for (const [ns, tap] of [[nsA, tapA], [nsB, tapB]] as const) {
      assert.match(ns.exec(['ethtool', '-k', tap]), /tcp-segmentation-offload: on/, `${tap}: TSO on`);
      if (mtu !== 1500) assert.match(ns.exec(['ip', 'link', 'show', tap]), new RegExp(`mtu ${mtu}\\b`), `${tap}: MTU ${mtu}`);
    }
    nsA.up(tapA, `${A}/24`);
    nsB.up(tapB, `${B}/24`);
    assert.match(nsB.ping(A), / 0% packet loss/);
    assert.match(nsA.ping(B), / 0% packet loss/);
    if (mtu !== 1500) {
      // 8972 bytes of ICMP payload + 28 = a 9000-byte IP packet, don't fragment: one 9014-byte frame each way.
      assert.match(nsB.ping(A, ['-M', 'do', '-s', String(mtu - 28)]), / 0% packet loss/);
      assert.match(nsA.ping(B, ['-M', 'do', '-s', String(mtu - 28)]), / 0% packet loss/);
    }
    const rates: string[] = [];
    for (const streams of mtu === 1500 ? [1, 4] : [4]) {
      const bToA = await iperf3(nsA, A, nsB, { streams, seconds: 2 });
      const aToB = await iperf3(nsB, B, nsA, { streams, seconds: 2 });
      assert.ok(bToA > 1e6, `-P ${streams} B→A ${bToA} bit/s`);
      assert.ok(aToB > 1e6, `-P ${streams} A→B ${aToB} bit/s`);
      rates.push(`-P ${streams}: attach→serve ${(bToA / 1e6).toFixed(0)} Mbit/s, serve→attach ${(aToB / 1e6).toFixed(0)} Mbit/s`);
    }
    console.log(`# iperf3 through attach ⇄ serve (offloads, MTU ${mtu}): ${rates.join('; ')}`);
    assert.equal(await attach.stop(), 0, `attach exits 0 on SIGTERM:\n${attach.log.slice(-3000)}`);
  } finally {
    await lab.close();
  }
});
