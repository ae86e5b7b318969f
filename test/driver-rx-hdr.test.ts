/**
 * The driver hands each received frame's virtio_net_hdr to its consumer
 * (at src[off - hdrLen, off)), for single-buffer and MRG_RXBUF frames alike
 * (a TAP behind the driver writes header + frame in one writev); and the
 * helpers `attach --offloads` uses: which TAP offloads the HOST_ features
 * allow, and the front-end's buffer sizes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { GuestAllocator } from '../src/virtio/alloc.js';
import { contiguousQueueLayout, createDeviceQueue, createDriverQueue, queueBytes } from '../src/virtio/ring.js';
import { NetDriverPair } from '../src/net/driver-pair.js';
import { DRV_STAT_COUNT, StatsBlock } from '../src/net/stats.js';
import {
  VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_USO,
} from '../src/net/features.js';
import {
  hostOffloadBits, RX_OFFLOAD_CSUM, RX_OFFLOAD_TSO4, RX_OFFLOAD_TSO6, RX_OFFLOAD_USO4, RX_OFFLOAD_USO6,
} from '../src/net/offloads.js';
import { frontendBufSizes } from '../src/transport/vhost-user/front-end.js';

const HDR = 12, BUF = 256, QS = 8;

function rig() {
  const size = 1 << 20;
  const mem = new GuestMemory([{ guestPhysAddr: 0, size, buffer: new SharedArrayBuffer(size) }]);
  const alloc = new GuestAllocator(4096, size);
  const feats = { eventIdx: false, inOrder: false, indirect: false };
  const lay = () => contiguousQueueLayout('split', alloc.alloc(queueBytes('split', QS), 4096), QS);
  const rxL = lay(), txL = lay();
  const rxBufAddr = alloc.alloc(QS * BUF, 64), txBufAddr = alloc.alloc(QS * BUF, 64);
  const drv = new NetDriverPair(mem, createDriverQueue(mem, rxL, { ...feats, index: 0 }), createDriverQueue(mem, txL, { ...feats, index: 1 }),
    new StatsBlock(1, DRV_STAT_COUNT).counters, 0, { pair: 0, hdrLen: HDR, mrgRxbuf: true, txBufAddr, txBufSize: BUF, rxBufAddr, rxBufSize: BUF });
  const dev = createDeviceQueue(mem, rxL, { ...feats, index: 0 });
  drv.refillRx();
  drv.flushRx();
  /** Device side: write `frame` behind `hdr` over as many receive buffers as it takes (num_buffers set). */
  const receive = (hdr: Uint8Array, frame: Uint8Array) => {
    const all = new Uint8Array(HDR + frame.length);
    all.set(hdr);
    all.set(frame, HDR);
    const n = Math.ceil(all.length / BUF);
    all[10] = n & 0xff;
    all[11] = n >> 8;
    for (let i = 0; i < n; i++) {
      const r = dev.popSingle(2, 1);
      assert.ok(r >= 0, 'a receive buffer is available');
      const part = all.subarray(i * BUF, Math.min(all.length, (i + 1) * BUF));
      mem.bytes[r].u8.set(part, dev.singleOff);
      dev.pushUsed(dev.singleId, part.length, 1);
    }
    dev.publish();
  };
  return { drv, receive };
}

for (const len of [100, 700]) test(`pollRx: the consumer finds the virtio_net_hdr right before a ${len}-byte frame (${len + HDR > BUF ? 'MRG_RXBUF, 3 buffers' : 'one buffer'})`, () => {
  const { drv, receive } = rig();
  // A GSO header as a device with GUEST_TSO4 writes it: NEEDS_CSUM, TCPV4, hdr_len 54, gso_size 1448, csum_start 34, csum_offset 16.
  const hdr = Uint8Array.of(1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0);
  const frame = Uint8Array.from({ length: len }, (_, i) => (i * 7 + 3) & 0xff);
  receive(hdr, frame);
  const got: { hdr: number[]; frame: number[] }[] = [];
  const n = drv.pollRx(16, (src, off, l) => got.push({ hdr: [...src.u8.subarray(off - HDR, off - 2)], frame: [...src.u8.subarray(off, off + l)] }));
  assert.equal(n, 1);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0].hdr, [...hdr.subarray(0, 10)], 'flags, gso_type, hdr_len, gso_size, csum_start, csum_offset as the device wrote them');
  assert.deepEqual(got[0].frame, [...frame]);
});

test('hostOffloadBits: the TAP offloads a driver may take from its kernel are the HOST_ features (and CSUM) it negotiated', () => {
  assert.equal(hostOffloadBits(0n), 0);
  assert.equal(hostOffloadBits(VIRTIO_NET_F_GUEST_TSO4), 0, 'GUEST_ features are the other direction');
  assert.equal(hostOffloadBits(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6), RX_OFFLOAD_CSUM | RX_OFFLOAD_TSO4 | RX_OFFLOAD_TSO6);
  assert.equal(hostOffloadBits(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_USO), RX_OFFLOAD_CSUM | RX_OFFLOAD_USO4 | RX_OFFLOAD_USO6);
});

test('frontendBufSizes: TX 2176 (a stride off the cache sets) and RX 2048 by default, MTU-sized frames, 64 KiB TX buffers with HOST_ offloads, 2048 RX with MRG_RXBUF', () => {
  assert.deepEqual(frontendBufSizes({}), { tx: 2176, rx: 2048 });
  const j = frontendBufSizes({ mtu: 9000 });
  assert.ok(j.tx >= 12 + 14 + 4 + 9000 && j.rx === j.tx, `jumbo: ${JSON.stringify(j)}`);
  assert.deepEqual(frontendBufSizes({ mtu: 9000, mrgRxbuf: true }), { tx: j.tx, rx: 2048 });
  const o = frontendBufSizes({ offloads: VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4, mrgRxbuf: true });
  assert.ok(o.tx >= 12 + 14 + 65535, `a 64 KiB GSO frame fits one TX buffer: ${o.tx}`);
  assert.equal(o.rx, 2048);
});
