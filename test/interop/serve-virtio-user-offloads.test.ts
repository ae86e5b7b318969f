/**
 * Interop, offloads negotiated with DPDK's virtio-user: testpmd
 * (`net_tap` + `net_virtio_user`, started with `--rx-offloads` and
 * `--tx-offloads` carrying TCP/UDP checksum and TCP TSO) in namespace B
 * against `serve --netdev tap` in namespace A:
 *
 *   ns B: TAP ── testpmd net_tap ⇄ csum engine ⇄ net_virtio_user ══ vhost-user ══ serve ── TAP :ns A
 *
 * The `csum` forwarding engine does what io forwarding cannot with offloads
 * on: frames from net_tap are merged by testpmd's GRO and sent to serve as
 * TSO frames with partial checksums (virtio-user's HOST_TSO4/CSUM), and
 * partial checksums serve hands virtio-user (GUEST_CSUM: serve's TAP gets
 * TUNSETOFFLOAD csum) are completed in software before net_tap, which has
 * no vnet header. `--rx-offloads=0xc` (TCP and UDP checksum), not
 * `--enable-rx-cksum`: that one asks for the IPv4 header checksum too,
 * which virtio-user does not offer, so testpmd fails to configure the port
 * and virtio-user keeps the features of its probe (no offloads).
 * `csum mac-swap off` on both ports: by default testpmd
 * 22.11's csum engine rewrites both MAC addresses of every frame (its
 * `fwd_mac_swap`), so the kernel on either side dropped every frame, ARP
 * included, and the first ping failed.
 *
 * Asserts: serve logs the offload features virtio-user accepted and the
 * TAP's offloads; ping both ways; iperf3 (single stream and -P 4) moves
 * traffic both ways. Everything the test creates is removed afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Testpmd, interopSkipReason } from './testpmd.js';
import { hasCommand } from './host.js';
import { NetnsLab, iperf3 } from './netns.js';

const skip = interopSkipReason() ?? (hasCommand('iperf3') ? undefined : 'iperf3 not installed (scripts/install-peers.sh)');

/** RTE_ETH_TX_OFFLOAD_UDP_CKSUM | TCP_CKSUM | TCP_TSO | MULTI_SEGS (rte_ethdev.h). */
const TX_OFFLOADS = 0x4 | 0x8 | 0x20 | 0x8000;
/** RTE_ETH_RX_OFFLOAD_UDP_CKSUM | TCP_CKSUM: virtio-user then accepts GUEST_CSUM. */
const RX_OFFLOADS = 0x4 | 0x8;

test('DPDK virtio-user with checksum --rx-offloads and TSO/checksum --tx-offloads (csum engine + net_tap) ⇄ serve --netdev tap: offloads negotiated, ping and iperf3 both ways', { skip, timeout: 180_000 }, async () => {
  const lab = new NetnsLab('O');
  const A = '198.18.14.1', B = '198.18.14.2';
  try {
    const socket = lab.socket('vu-offl');
    const nsA = lab.netns('A'), nsB = lab.netns('B'), tapA = lab.ifname('a'), tapB = lab.ifname('b');
    const serve = lab.cli(nsA, ['serve', '--socket', socket, '--queues', '2', '--netdev', `tap,ifname=${tapA}`]);
    assert.ok(await serve.waitFor('listening on', 15_000), `serve did not start:\n${serve.log}`);
    nsA.up(tapA, `${A}/24`);
    const tp = await Testpmd.start({
      name: 'vuoffl', netns: nsB.name, lcores: '0@1,1@0', rxq: 2, txq: 2,
      vdevs: [`net_tap0,iface=${tapB}`, `net_virtio_user0,path=${socket},queues=2,cq=1,mrg_rxbuf=1`],
      extraApp: ['--forward-mode=csum', `--rx-offloads=0x${RX_OFFLOADS.toString(16)}`, `--tx-offloads=0x${TX_OFFLOADS.toString(16)}`],
    });
    lab.defer(() => tp.quit().catch(() => tp.kill()));
    assert.doesNotMatch(tp.logs, /Fail to configure|Start ports failed/, `testpmd configured both ports with the offloads:\n${tp.logs.slice(-3000)}`);
    // Port 0 = net_tap (plain frames: checksums in software), port 1 = virtio-user (partial checksums, TSO of GRO-merged frames).
    for (const c of ['port stop all', 'csum mac-swap off 0', 'csum mac-swap off 1', 'csum set ip sw 1', 'csum set tcp hw 1', 'csum set udp hw 1',
      'tso set 1448 1', 'set port 0 gro on', 'port start all']) {
      const out = await tp.cmd(c);
      assert.doesNotMatch(out, /error|invalid|not supported|bad arguments/i, `testpmd '${c}': ${out}`);
    }
    await tp.start();
    nsB.up(tapB, `${B}/24`);
    // The offloads virtio-user accepted, as serve logs them (virtio-user probes without offloads, then
    // renegotiates when testpmd configures the port), and the TAP's TUNSETOFFLOAD from GUEST_CSUM.
    const withCsum = /front-end features: (.*\bVIRTIO_NET_F_CSUM\b.*)/;
    await serve.waitFor(withCsum, 10_000);
    const features = withCsum.exec(serve.log)?.[1] ?? '';
    for (const f of ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_GUEST_CSUM'])
      assert.match(features, new RegExp(`\\b${f}\\b`), `virtio-user negotiated ${f}: ${features}\n${serve.log}`);
    assert.match(serve.log, /TAP offloads 0x[0-9a-f]+ \(driver accepts: csum/);
    assert.match(nsB.ping(A), / 0% packet loss/);
    assert.match(nsA.ping(B), / 0% packet loss/);
    const rates: string[] = [];
    for (const streams of [1, 4]) {
      const bToA = await iperf3(nsA, A, nsB, { streams, seconds: 2 });
      const aToB = await iperf3(nsB, B, nsA, { streams, seconds: 2 });
      assert.ok(bToA > 1e6, `-P ${streams} virtio-user→serve ${bToA} bit/s`);
      assert.ok(aToB > 1e6, `-P ${streams} serve→virtio-user ${aToB} bit/s`);
      rates.push(`-P ${streams}: virtio-user→serve ${(bToA / 1e6).toFixed(0)} Mbit/s, serve→virtio-user ${(aToB / 1e6).toFixed(0)} Mbit/s`);
    }
    console.log(`# iperf3 through testpmd virtio-user (offloads, csum engine) ⇄ serve: ${rates.join('; ')}`);
  } finally {
    await lab.close();
  }
});
