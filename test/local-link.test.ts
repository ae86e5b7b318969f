/**
 * Link status and GUEST_ANNOUNCE in the local transport (§5.1.4, §5.1.6.5.4):
 * the device changes VIRTIO_NET_S_LINK_UP or raises VIRTIO_NET_S_ANNOUNCE, the
 * transport delivers the configuration change notification, the driver
 * reads the config again and acknowledges an announcement with
 * VIRTIO_NET_CTRL_ANNOUNCE_ACK, which clears the bit in the device.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalNet } from '../src/transport/local/local-net.js';
import { NET_DEVICE_FEATURES } from '../src/net/device.js';
import { VIRTIO_NET_F_GUEST_ANNOUNCE } from '../src/net/features.js';
import { VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP, decodeNetConfig } from '../src/net/config.js';
import { encodeAnnounceAck, VIRTIO_NET_ERR } from '../src/net/ctrl.js';

test('local transport: link down/up reaches the driver through the configuration change notification; GUEST_ANNOUNCE is acknowledged with ANNOUNCE_ACK', async () => {
  const net = new LocalNet({ pairs: 1, netdev: { kind: 'loopback' }, source: () => ({ kind: 'none' }) });
  const seen: { linkUp: boolean; announced: boolean }[] = [];
  net.on('config-change', (r) => seen.push(r));
  await net.start();
  try {
    assert.ok(net.driver.features & VIRTIO_NET_F_GUEST_ANNOUNCE, 'GUEST_ANNOUNCE negotiated');
    assert.equal(net.driver.linkUp, true);
    assert.equal(await net.setLink(false), false, 'the driver reads link down');
    assert.equal(decodeNetConfig(net.device.readConfig(), net.driver.features).status & VIRTIO_NET_S_LINK_UP, 0);
    assert.equal(await net.setLink(false), false, 'no change, no notification');
    assert.equal(await net.setLink(true), true, 'the driver reads link up');
    assert.deepEqual(seen, [{ linkUp: false, announced: false }, { linkUp: true, announced: false }]);

    assert.equal(await net.announce(), true, 'announcement acknowledged');
    assert.equal(net.device.config.status & VIRTIO_NET_S_ANNOUNCE, 0, 'ANNOUNCE cleared by the ACK');
    assert.equal(net.device.config.status & VIRTIO_NET_S_LINK_UP, VIRTIO_NET_S_LINK_UP, 'link stays up');
    assert.deepEqual(seen.at(-1), { linkUp: true, announced: true });
    // A second ACK with nothing pending is refused (as QEMU does).
    assert.equal(await net.driver.command(encodeAnnounceAck()), VIRTIO_NET_ERR);
  } finally {
    await net.stop();
  }
});

test('local transport: without GUEST_ANNOUNCE negotiated the device asks for no announcement', async () => {
  const net = new LocalNet({ pairs: 1, netdev: { kind: 'loopback' }, source: () => ({ kind: 'none' }), deviceFeatures: NET_DEVICE_FEATURES & ~VIRTIO_NET_F_GUEST_ANNOUNCE });
  await net.start();
  try {
    assert.equal(await net.announce(), false);
    assert.equal(net.device.config.status & VIRTIO_NET_S_ANNOUNCE, 0);
  } finally {
    await net.stop();
  }
});
