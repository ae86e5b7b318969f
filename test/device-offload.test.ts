/**
 * NetDevicePair with offloads (spec §5.1.6.2, §5.1.6.4):
 * - a netdev without a vnet header gets software-completed checksums and
 *   segmented frames when VIRTIO_NET_F_CSUM is negotiated, resumed without
 *   duplicates after backpressure;
 * - a netdev with a vnet header (the TAP) gets multi-descriptor chains as
 *   scatter pieces (no gather copy) and the driver's header unchanged;
 * - frames a netdev reads for its own pair (receiveOwn) reach the driver
 *   with the netdev's header as far as the driver accepted those offloads,
 *   over mergeable buffers for 64 KiB frames.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { SplitDriverQueue } from '../src/virtio/split/driver.js';
import { SplitDeviceQueue } from '../src/virtio/split/device.js';
import { contiguousLayout, splitQueueBytes } from '../src/virtio/split/layout.js';
import { NetDevicePair } from '../src/net/device-pair.js';
import { DeviceSteering } from '../src/net/steering.js';
import { DEV_STAT_COUNT, DevStat } from '../src/net/stats.js';
import { FrameRing } from '../src/net/frame-ring.js';
import type { Netdev } from '../src/net/netdev.js';
import type { Bytes } from '../src/virtio/copy.js';
import { RX_OFFLOAD_CSUM, RX_OFFLOAD_TSO4 } from '../src/net/offloads.js';
import { VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../src/net/hdr.js';
import { be32, frame, l4Valid } from './support/frames.js';

class RecordingNetdev implements Netdev {
  readonly externalRx = false;
  written: Uint8Array[] = [];
  sg: Uint8Array[][] = [];
  accept = Infinity;
  constructor(readonly wantsHeader: boolean, withSg = false) {
    if (withSg) this.transmitSg = (buf, offs, lens, count) => {
      this.sg.push(Array.from({ length: count }, (_, i) => buf.u8.slice(offs[i], offs[i] + lens[i])));
      return true;
    };
  }
  transmitSg?: Netdev['transmitSg'];
  transmit(src: Bytes, off: number, len: number): boolean {
    if (this.accept <= 0) return false;
    this.accept--;
    this.written.push(src.u8.slice(off, off + len));
    return true;
  }
  poll(): number {
    return 0;
  }
  busy(): boolean {
    return false;
  }
}

function rig(netdev: Netdev, o: { txOffload?: boolean; rxOffloads?: number; mrg?: boolean; qsize?: number }) {
  const sab = new SharedArrayBuffer(4 << 20);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
  const opts = { eventIdx: true, indirect: true };
  const n = o.qsize ?? 64;
  const tx = contiguousLayout(0x1000, n), rx = contiguousLayout(0x1000 + splitQueueBytes(n), n);
  const drvTx = new SplitDriverQueue(mem, tx, opts);
  const drvRx = new SplitDriverQueue(mem, rx, opts);
  const backlog = new FrameRing(256 * 1024);
  const stats = new Float64Array(DEV_STAT_COUNT);
  const dev = new NetDevicePair(mem, new SplitDeviceQueue(mem, rx, opts), new SplitDeviceQueue(mem, tx, opts), netdev,
    new DeviceSteering(1, DeviceSteering.newAfsBuffer()), [backlog], [backlog],
    { notifyQueue: () => {}, wakeDevice: () => {} }, stats, 0,
    { pair: 0, hdrLen: 12, mrgRxbuf: o.mrg ?? false, maxFrame: 65535, txOffload: o.txOffload, rxOffloads: o.rxOffloads });
  let addr = 0x100000;
  const put = (bytes: Uint8Array) => {
    mem.write(addr, bytes);
    const a = addr;
    addr += (bytes.length + 4095) & ~4095;
    return a;
  };
  return { mem, drvTx, drvRx, dev, stats, put };
}

/** The next used RX buffer: its token (the buffer index given to addOne) and the bytes written. */
function nextUsed(q: SplitDriverQueue): { id: number; len: number } | undefined {
  if (q.usedPending() === 0) return undefined;
  q.popUsed();
  return { id: q.usedToken as number, len: q.usedLen };
}

function vnetHdr(flags: number, gsoType: number, gsoSize: number, csumStart: number, csumOffset: number): Uint8Array {
  const h = new Uint8Array(12);
  h[0] = flags; h[1] = gsoType;
  h[4] = gsoSize & 0xff; h[5] = gsoSize >> 8;
  h[6] = csumStart & 0xff; h[7] = csumStart >> 8;
  h[8] = csumOffset & 0xff; h[9] = csumOffset >> 8;
  return h;
}

test('TX to a netdev without a vnet header: NEEDS_CSUM completed and a TSO frame from a 3-descriptor chain segmented, each with valid checksums', () => {
  const nd = new RecordingNetdev(false);
  const { drvTx, dev, stats, put } = rig(nd, { txOffload: true });
  const payload = Uint8Array.from({ length: 20000 }, (_, i) => (i * 7) & 0xff);
  const { f, l4 } = frame(false, true, payload);
  const h = vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1448, l4, 16);
  drvTx.add([
    { addr: put(h), len: 12, writable: false },
    { addr: put(f.subarray(0, 54)), len: 54, writable: false },
    { addr: put(f.subarray(54)), len: f.length - 54, writable: false },
  ], 0);
  const small = frame(true, false, Uint8Array.from({ length: 100 }, (_, i) => i));
  const hs = vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, small.l4, 6);
  const one = new Uint8Array(12 + small.f.length);
  one.set(hs);
  one.set(small.f, 12);
  drvTx.add([{ addr: put(one), len: one.length, writable: false }], 1);
  drvTx.publish();
  dev.poll(64);
  const want = Math.ceil(20000 / 1448);
  assert.equal(nd.written.length, want + 1);
  const got: number[] = [];
  nd.written.slice(0, want).forEach((s, i) => {
    assert.ok(s.length <= 14 + 1500, `segment ${i}: ${s.length} bytes`);
    assert.ok(l4Valid(s, false, l4, 6), `segment ${i} checksum`);
    got.push(...s.subarray(l4 + 20));
  });
  assert.deepEqual(Uint8Array.from(got), payload);
  assert.ok(l4Valid(nd.written[want], true, small.l4, 17), 'UDP/IPv6 checksum completed');
  assert.equal(stats[DevStat.txPackets], 2, 'counted as the two frames the driver sent');
  assert.equal(drvTx.usedPending(), 2);
});

test('TX software segmentation under backpressure: the chain is offered again and resumes after the segments already sent', () => {
  const nd = new RecordingNetdev(false);
  const { drvTx, dev, put } = rig(nd, { txOffload: true });
  const payload = Uint8Array.from({ length: 10000 }, (_, i) => i & 0xff);
  const { f, l4 } = frame(false, true, payload);
  const buf = new Uint8Array(12 + f.length);
  buf.set(vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1000, l4, 16));
  buf.set(f, 12);
  drvTx.add([{ addr: put(buf), len: buf.length, writable: false }], 0);
  drvTx.publish();
  nd.accept = 3;
  dev.poll(64);
  assert.equal(nd.written.length, 3);
  assert.equal(drvTx.usedPending(), 0, 'not used while segments are pending');
  nd.accept = Infinity;
  dev.poll(64);
  assert.equal(nd.written.length, 10);
  assert.deepEqual(nd.written.map((s) => (be32(s, l4 + 4) - be32(nd.written[0], l4 + 4) + 2 ** 32) % 2 ** 32), [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
  assert.equal(drvTx.usedPending(), 1);
});

test('TX without VIRTIO_NET_F_CSUM: the header is not looked at (frames pass unchanged); a malformed GSO request is counted, not sent', () => {
  const nd = new RecordingNetdev(false);
  const { drvTx, dev, stats, put } = rig(nd, { txOffload: true });
  const bad = new Uint8Array(12 + 60);
  bad.set(vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 100, 34, 16));
  drvTx.add([{ addr: put(bad), len: bad.length, writable: false }], 0);
  drvTx.publish();
  dev.poll(64);
  assert.equal(nd.written.length, 0);
  assert.equal(stats[DevStat.errors], 1);
  assert.equal(drvTx.usedPending(), 1, 'the chain is returned');

  const nd2 = new RecordingNetdev(false);
  const r2 = rig(nd2, { txOffload: false });
  r2.drvTx.add([{ addr: r2.put(bad), len: bad.length, writable: false }], 0);
  r2.drvTx.publish();
  r2.dev.poll(64);
  assert.deepEqual(nd2.written, [bad.subarray(12)]);
});

test('TX to a netdev with a vnet header and transmitSg: a multi-descriptor chain goes as its pieces, header first and unchanged', () => {
  const nd = new RecordingNetdev(true, true);
  const { drvTx, dev, put } = rig(nd, { txOffload: true });
  const { f, l4 } = frame(false, true, new Uint8Array(5000).fill(9));
  const h = vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1448, l4, 16);
  const first = new Uint8Array(12 + 54);
  first.set(h);
  first.set(f.subarray(0, 54), 12);
  drvTx.add([{ addr: put(first), len: first.length, writable: false }, { addr: put(f.subarray(54)), len: f.length - 54, writable: false }], 0);
  drvTx.publish();
  dev.poll(64);
  assert.equal(nd.written.length, 0, 'no gathered copy');
  assert.equal(nd.sg.length, 1);
  assert.deepEqual(nd.sg[0][0], first);
  assert.deepEqual(nd.sg[0][1], f.subarray(54));
});

test('receiveOwn: the netdev header reaches the driver as far as it accepted the offloads; a 64 KiB GSO frame spans mergeable buffers', () => {
  for (const [rxOffloads, expectFlags] of [[RX_OFFLOAD_CSUM | RX_OFFLOAD_TSO4, VIRTIO_NET_HDR_F_NEEDS_CSUM], [0, 0]] as const) {
    const { mem, drvRx, dev, stats } = rig(new RecordingNetdev(true), { rxOffloads, mrg: true, qsize: 64 });
    for (let i = 0; i < 64; i++) drvRx.addOne(0x200000 + i * 2048, 2048, true, i);
    drvRx.publish();
    const { f, l4 } = frame(false, true, Uint8Array.from({ length: 60000 }, (_, i) => (i * 11) & 0xff));
    const src = new Uint8Array(12 + f.length + 4);
    // A plain frame with DATA_VALID: flags survive only with GUEST_CSUM.
    const plain = new Uint8Array(12 + 60);
    plain[0] = VIRTIO_NET_HDR_F_DATA_VALID;
    plain.fill(0x55, 12);
    const pb = { u8: plain, i32: new Int32Array(plain.buffer, 0, plain.length >> 2) };
    src.set(vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1448, l4, 16));
    src.set(f, 12);
    const sb = { u8: src, i32: new Int32Array(src.buffer, 0, src.length >> 2) };
    if (rxOffloads === 0) {
      assert.ok(dev.receiveOwn(sb, 12, f.length, 0), 'a GSO frame the driver did not accept is consumed (dropped)');
      assert.equal(stats[DevStat.rxDrops], 1);
      assert.ok(dev.receiveOwn(pb, 12, 60, 0));
      dev.poll(1); // publish
      const u = nextUsed(drvRx)!;
      const got = mem.read(0x200000 + u.id * 2048, u.len);
      assert.equal(got[0], 0, 'flags cleared without GUEST_CSUM');
      assert.deepEqual(got.subarray(12), plain.subarray(12));
      continue;
    }
    assert.ok(dev.receiveOwn(sb, 12, f.length, 0));
    dev.poll(1); // publish
    const used: { id: number; len: number }[] = [];
    for (let u = nextUsed(drvRx); u; u = nextUsed(drvRx)) used.push(u);
    const bytes: number[] = [];
    for (const u of used) bytes.push(...mem.read(0x200000 + u.id * 2048, u.len));
    const out = Uint8Array.from(bytes);
    assert.equal(out[0], expectFlags);
    assert.equal(out[1], VIRTIO_NET_HDR_GSO_TCPV4);
    assert.equal(out[4] | (out[5] << 8), 1448, 'gso_size');
    assert.equal(out[6] | (out[7] << 8), l4, 'csum_start');
    assert.equal(out[10] | (out[11] << 8), used.length, 'num_buffers');
    assert.equal(used.length, Math.ceil((12 + f.length) / 2048));
    assert.deepEqual(out.subarray(12), f);
  }
});

/** What readv would do: spread `data` over the reserved pieces, the rest into `tail`. Returns bytes placed in the pieces. */
function scatter(dev: NetDevicePair, segs: number, data: Uint8Array, tail: Uint8Array): number {
  let at = 0;
  for (let i = 0; i < segs && at < data.length; i++) {
    const n = Math.min(dev.directCaps[i], data.length - at);
    dev.directBuf!.u8.set(data.subarray(at, at + n), dev.directOffs[i]);
    at += n;
  }
  tail.set(data.subarray(at));
  return at;
}

test('direct receive: a frame read into reserved buffers (mergeable), its tail copied into further buffers, unused buffers given back; a shortage spills the frame whole', () => {
  const { mem, drvRx, dev, stats } = rig(new RecordingNetdev(true), { rxOffloads: RX_OFFLOAD_CSUM | RX_OFFLOAD_TSO4, mrg: true, qsize: 64 });
  for (let i = 0; i < 40; i++) drvRx.addOne(0x200000 + i * 2048, 2048, true, i);
  drvRx.publish();
  const tailBuf = new SharedArrayBuffer(70000), tail = { u8: new Uint8Array(tailBuf), i32: new Int32Array(tailBuf) };
  const spillBuf = new SharedArrayBuffer(70000), spill = { u8: new Uint8Array(spillBuf), i32: new Int32Array(spillBuf) };
  const { f, l4 } = frame(false, true, Uint8Array.from({ length: 30000 }, (_, i) => (i * 5) & 0xff));
  const data = new Uint8Array(12 + f.length);
  data.set(vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1448, l4, 16));
  data.set(f, 12);
  // A small frame first: reserve 8 KiB (4 buffers), use 1, give 3 back.
  const small = new Uint8Array(12 + 100).fill(0x66);
  small.fill(0, 0, 12);
  let segs = dev.reserveRx(8192);
  assert.equal(segs, 4);
  scatter(dev, segs, small, tail.u8);
  assert.equal(dev.commitRx(small.length, tail, 0, spill, 0), 1);
  // The big one: reserve 4 KiB, 30 KiB more goes to the tail and into further buffers.
  segs = dev.reserveRx(4096);
  assert.equal(segs, 2);
  scatter(dev, segs, data, tail.u8);
  assert.equal(dev.commitRx(data.length, tail, 0, spill, 0), 1);
  dev.poll(1);
  const used: { id: number; len: number }[] = [];
  for (let u = nextUsed(drvRx); u; u = nextUsed(drvRx)) used.push(u);
  assert.equal(used[0].id, 0, 'the small frame took the first buffer');
  assert.deepEqual(mem.read(0x200000, used[0].len).subarray(12), small.subarray(12));
  assert.equal(mem.read(0x200000, 12)[10], 1, 'num_buffers 1');
  const rest = used.slice(1);
  assert.deepEqual(rest.map((u) => u.id), Array.from({ length: rest.length }, (_, i) => i + 1), 'the big frame continues right after: the unused reservations were given back');
  const out = Uint8Array.from(rest.flatMap((u) => [...mem.read(0x200000 + u.id * 2048, u.len)]));
  assert.equal(out[10] | (out[11] << 8), rest.length, 'num_buffers');
  assert.equal(rest.length, Math.ceil(data.length / 2048));
  assert.equal(out[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
  assert.deepEqual(out.subarray(12), f);
  assert.equal(stats[DevStat.rxPackets], 2, 'both frames counted');

  // Only 40 - 17 buffers left: a 64 KiB frame does not fit; it is spilled whole and nothing is consumed.
  const left = 40 - 1 - rest.length;
  const big = frame(false, true, new Uint8Array(60000).fill(3));
  const bigData = new Uint8Array(12 + big.f.length);
  bigData.set(vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1448, big.l4, 16));
  bigData.set(big.f, 12);
  segs = dev.reserveRx(bigData.length);
  assert.equal(segs, left);
  scatter(dev, segs, bigData, tail.u8);
  assert.equal(dev.commitRx(bigData.length, tail, 0, spill, 0), -1);
  assert.deepEqual(spill.u8.subarray(0, bigData.length), bigData);
  assert.equal(dev.room(), left, 'every reserved buffer given back');
  // A GSO type the driver did not accept: dropped, buffers given back.
  segs = dev.reserveRx(100);
  const v6 = new Uint8Array(12 + 100);
  v6.set(vnetHdr(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 1448, 54, 16));
  scatter(dev, segs, v6, tail.u8);
  assert.equal(dev.commitRx(v6.length, tail, 0, spill, 0), 0);
  assert.equal(dev.room(), left);
  assert.equal(stats[DevStat.rxDrops], 1);
});
