/**
 * Offload feature plumbing: the offer is consistent (§5.1.3.1), the driver's
 * dependency clean-up drops TSO/UFO/USO with their checksum feature, RX
 * offload bits and TUNSETOFFLOAD flags follow the accepted GUEST_ offloads
 * (as QEMU's tap_fd_set_offload), and the vhost-user back-end's active pair
 * count is the leading run of enabled pairs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  sanitizeDriverFeatures, validateNetFeatures, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_USO, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
} from '../src/net/features.js';
import { NET_OFFLOAD_FEATURES, rxOffloadBits, RX_OFFLOAD_CSUM, RX_OFFLOAD_TSO4, RX_OFFLOAD_TSO6, RX_OFFLOAD_ECN, RX_OFFLOAD_UFO, RX_OFFLOAD_USO4 } from '../src/net/offloads.js';
import { VHOST_NET_FEATURES } from '../src/transport/vhost-user/session.js';
import { NET_DEVICE_FEATURES } from '../src/net/device.js';
import { offloadOptions } from '../src/transport/vhost-user/net-offloads.js';
import { activePairCount } from '../src/transport/vhost-user/active-pairs.js';
import { tunOffloadFlags } from '../src/netdev/tap-offload.js';

test('both device offers include every offload and stay consistent', () => {
  for (const offer of [VHOST_NET_FEATURES, NET_DEVICE_FEATURES]) {
    assert.equal(offer & NET_OFFLOAD_FEATURES, NET_OFFLOAD_FEATURES);
    assert.deepEqual(validateNetFeatures(offer), []);
  }
});

test('a driver without the checksum features loses the segmentation offloads that depend on them', () => {
  const f = sanitizeDriverFeatures(NET_OFFLOAD_FEATURES | VIRTIO_NET_F_CTRL_VQ, (NET_OFFLOAD_FEATURES | VIRTIO_NET_F_CTRL_VQ) & ~(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM));
  assert.equal(f & (VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_USO | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_GUEST_USO4), 0n);
  assert.ok(f & VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
  assert.deepEqual(validateNetFeatures(VIRTIO_NET_F_GUEST_TSO4), ['VIRTIO_NET_F_GUEST_TSO4 requires VIRTIO_NET_F_GUEST_CSUM']);
});

test('RX offload bits and TUNSETOFFLOAD flags follow the accepted GUEST_ offloads', () => {
  const all = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_GUEST_UFO;
  const rx = rxOffloadBits(all);
  assert.equal(rx, RX_OFFLOAD_CSUM | RX_OFFLOAD_TSO4 | RX_OFFLOAD_TSO6 | RX_OFFLOAD_ECN | RX_OFFLOAD_UFO);
  assert.equal(tunOffloadFlags(rx), 0x1f, 'TUN_F_CSUM | TSO4 | TSO6 | TSO_ECN | UFO, what QEMU sets for the same guest');
  assert.equal(tunOffloadFlags(rxOffloadBits(VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_USO4)), 0x21);
  assert.equal(tunOffloadFlags(RX_OFFLOAD_TSO4 | RX_OFFLOAD_USO4), 0, 'nothing without the checksum offload');
  assert.equal(tunOffloadFlags(0), 0);
});

test('per-worker options: TX offload with VIRTIO_NET_F_CSUM, frames up to 64 KiB with HOST_ segmentation, else the MTU', () => {
  assert.deepEqual(offloadOptions(0n, 1500), { txOffload: false, rxOffloads: 0, maxFrame: 1518 });
  assert.deepEqual(offloadOptions(0n, 9000), { txOffload: false, rxOffloads: 0, maxFrame: 9018 });
  const o = offloadOptions(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_GUEST_CSUM, 1500);
  assert.equal(o.txOffload, true);
  assert.equal(o.rxOffloads, RX_OFFLOAD_CSUM);
  assert.ok(o.maxFrame > 65536);
});

test('active pairs: up to the last pair with both rings enabled, at least 1', () => {
  const v = (bits: string) => [...bits].map((b) => ({ enabled: b === '1' }));
  assert.equal(activePairCount(v('11111111')), 4);
  assert.equal(activePairCount(v('11110000')), 2, 'ethtool -L 2');
  assert.equal(activePairCount(v('11111110')), 3, 'pair 3 half enabled');
  assert.equal(activePairCount(v('00000000')), 1);
  assert.equal(activePairCount(v('00111100')), 3, 'pair 0 disabled for a moment: pairs 1 and 2 still run and keep their frames');
});
