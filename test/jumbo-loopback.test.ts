/**
 * Big frames and offload negotiation over the local transport: `loopback
 * --mtu 9000 --size 9014` (and the largest, --mtu 9714 --size 9728) moves
 * jumbo frames byte-exact through split and packed rings, spread over
 * mergeable RX buffers; the device offers VIRTIO_NET_F_MTU with config mtu,
 * and with --offloads the driver negotiates the checksum and segmentation
 * offloads with their dependencies (§5.1.3.1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loopback, type LoopbackOptions } from '../src/cli/loopback.js';
import { LocalNet } from '../src/transport/local/local-net.js';
import { validateNetFeatures } from '../src/net/features.js';

const base: LoopbackOptions = { queues: 2, flows: 8, size: 9014, mtu: 9000, duration: 0.5, rss: false, mode: 'notify', queueSize: 256, json: true };
const quiet = () => {};

for (const ring of ['split', 'packed'] as const) {
  test(`${ring}: --mtu 9000 --size 9014 --offloads: every jumbo frame back intact, MTU and offloads negotiated`, async () => {
    const r = await loopback({ ...base, ring, offloads: true }, quiet);
    assert.deepEqual(r.problems, []);
    assert.ok(r.ok);
    assert.ok(r.txPackets > 50, `sent ${r.txPackets}`);
    assert.equal(r.rxPackets, r.txPackets);
    for (const f of ['VIRTIO_NET_F_MTU', 'VIRTIO_NET_F_MRG_RXBUF', 'VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_GUEST_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_GUEST_TSO6', 'VIRTIO_NET_F_HOST_USO', 'VIRTIO_NET_F_CTRL_GUEST_OFFLOADS'])
      assert.ok(r.features.includes(f), `${f} in ${r.features.join(' ')}`);
  });
}

test('the largest frame: --mtu 9714 --size 9728 over 1024-byte RX buffers (10 merged buffers a frame)', async () => {
  const r = await loopback({ ...base, mtu: 9714, size: 9728, rxBufferSize: 1024 }, quiet);
  assert.deepEqual(r.problems, []);
  assert.ok(r.ok && r.txPackets > 20 && r.rxPackets === r.txPackets, `${r.txPackets} sent, ${r.rxPackets} back`);
  assert.ok(!r.features.includes('VIRTIO_NET_F_CSUM'), 'no offloads without --offloads');
});

test('config mtu and a consistent offload set: what the device offers and the driver accepts', async () => {
  const net = new LocalNet({ pairs: 1, netdev: { kind: 'sink' }, source: () => ({ kind: 'none' }), mtu: 9000 });
  assert.equal(net.device.config.mtu, 9000);
  assert.deepEqual(validateNetFeatures(net.device.offered), [], 'the offer itself is consistent');
});
