/**
 * Software checksum and segmentation (src/net/csum.ts, src/net/gso.ts) on
 * synthetic frames; test/interop/gso-kernel.test.ts runs the same code on
 * frames the Linux kernel made and lets a second kernel check the result.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { csumAdd, foldCsum, internetChecksum, completePartialCsum } from '../src/net/csum.js';
import { SoftOffload, GsoError } from '../src/net/gso.js';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
} from '../src/net/hdr.js';

import { be16, be32, frame, l4Valid } from './support/frames.js';

test('internet checksum: the RFC 1071 example and an odd length', () => {
  const b = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);
  assert.equal(foldCsum(csumAdd(b, 0, 8)), 0xddf2);
  assert.equal(internetChecksum(b, 0, 8), (~0xddf2) & 0xffff);
  assert.equal(foldCsum(csumAdd(Uint8Array.of(1, 2, 3), 0, 3)), 0x0102 + 0x0300);
});

test('NEEDS_CSUM: the partial checksum is completed (TCP and UDP over IPv4 and IPv6), the source left untouched', () => {
  const sw = new SoftOffload();
  for (const v6 of [false, true]) for (const tcp of [false, true]) {
    const { f, l4 } = frame(v6, tcp, Uint8Array.from({ length: 333 }, (_, i) => i * 13));
    const copy = f.slice();
    const out: Uint8Array[] = [];
    const n = sw.process(f, 0, f.length, { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_NONE, gsoSize: 0, csumStart: l4, csumOffset: tcp ? 16 : 6 },
      (b, o, l) => { out.push(b.u8.slice(o, o + l)); return true; });
    assert.equal(n, 1);
    assert.deepEqual(f, copy, 'source unchanged');
    assert.ok(l4Valid(out[0], v6, l4, tcp ? 6 : 17), `v6=${v6} tcp=${tcp}`);
  }
  const bad = new Uint8Array(60);
  assert.equal(completePartialCsum(bad, 0, 60, 50, 16), false, 'checksum field past the end');
  assert.throws(() => sw.process(bad, 0, 60, { flags: 1, gsoType: 0, gsoSize: 0, csumStart: 50, csumOffset: 16 }, () => true), GsoError);
});

test('TSO v4/v6: segments carry the payload in order, with valid checksums, IPv4 ids +1, sequence numbers, FIN/PSH last and CWR first', () => {
  fc.assert(fc.property(fc.boolean(), fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 20000 }), (v6, mss, plen) => {
    const payload = Uint8Array.from({ length: plen }, (_, i) => (i * 31 + 7) & 0xff);
    const { f, l4 } = frame(v6, true, payload, 0x80 | 0x18 | 0x01); // CWR PSH ACK FIN
    const sw = new SoftOffload();
    const h = { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: (v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4) | VIRTIO_NET_HDR_GSO_ECN, gsoSize: mss, csumStart: l4, csumOffset: 16 };
    const segs: Uint8Array[] = [];
    const n = sw.process(f, 0, f.length, h, (b, o, l) => { segs.push(b.u8.slice(o, o + l)); return true; });
    const want = Math.ceil(plen / mss);
    assert.equal(n, want);
    assert.equal(sw.count(f, 0, f.length, h), want);
    const got: number[] = [];
    segs.forEach((s, i) => {
      assert.ok(l4Valid(s, v6, l4, 6), `segment ${i} TCP checksum`);
      if (!v6) {
        assert.equal(internetChecksum(s, 14, 20), 0, 'IPv4 header checksum');
        assert.equal(be16(s, 16), s.length - 14, 'IPv4 total length');
        assert.equal(be16(s, 18), (0x1234 + i) & 0xffff, 'IPv4 id');
      } else assert.equal(be16(s, 18), s.length - 54, 'IPv6 payload length');
      assert.equal(be32(s, l4 + 4), (0xffffff00 + i * mss) % 2 ** 32, 'sequence number');
      const fl = s[l4 + 13];
      assert.equal((fl & 0x09) !== 0, i === n - 1, 'FIN/PSH on the last segment only');
      assert.equal((fl & 0x80) !== 0, i === 0, 'CWR on the first only');
      assert.ok(s.length - l4 - 20 <= mss);
      got.push(...s.subarray(l4 + 20));
    });
    assert.deepEqual(Uint8Array.from(got), payload);
  }), { numRuns: 60 });
});

test('USO: datagrams of gso_size with their UDP length and checksum; UFO over IPv4: 8-byte aligned fragments that reassemble', () => {
  const sw = new SoftOffload();
  for (const v6 of [false, true]) {
    const payload = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff);
    const { f, l4 } = frame(v6, false, payload);
    const segs: Uint8Array[] = [];
    sw.process(f, 0, f.length, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_UDP_L4, gsoSize: 1200, csumStart: l4, csumOffset: 6 }, (b, o, l) => { segs.push(b.u8.slice(o, o + l)); return true; });
    assert.equal(segs.length, 5);
    const got: number[] = [];
    for (const s of segs) {
      assert.ok(l4Valid(s, v6, l4, 17));
      assert.equal(be16(s, l4 + 4), s.length - l4);
      got.push(...s.subarray(l4 + 8));
    }
    assert.deepEqual(Uint8Array.from(got), payload);
  }
  const payload = Uint8Array.from({ length: 4000 }, (_, i) => (i * 3) & 0xff);
  const { f, l4 } = frame(false, false, payload);
  const frags: Uint8Array[] = [];
  sw.process(f, 0, f.length, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_UDP, gsoSize: 1480, csumStart: l4, csumOffset: 6 }, (b, o, l) => { frags.push(b.u8.slice(o, o + l)); return true; });
  assert.equal(frags.length, 3);
  const whole = new Uint8Array(8 + payload.length);
  frags.forEach((s, i) => {
    assert.equal(internetChecksum(s, 14, 20), 0);
    const fo = be16(s, 20);
    assert.equal((fo & 0x2000) !== 0, i < 2, 'MF on all but the last');
    whole.set(s.subarray(34), (fo & 0x1fff) * 8);
  });
  // The reassembled datagram's UDP checksum verifies over the full pseudo header.
  const re = new Uint8Array(34 + whole.length);
  re.set(f.subarray(0, 34));
  re.set(whole, 34);
  assert.ok(l4Valid(re, false, 34, 17));
  assert.deepEqual(whole.subarray(8), payload);
});

test('refused frames: gso_size 0, a GSO type that does not match the frame, UFO over IPv6, a frame that is not IP', () => {
  const sw = new SoftOffload();
  const { f, l4 } = frame(false, true, new Uint8Array(3000));
  const emit = () => true;
  assert.throws(() => sw.process(f, 0, f.length, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 0, csumStart: l4, csumOffset: 16 }, emit), GsoError);
  assert.throws(() => sw.process(f, 0, f.length, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1000, csumStart: l4, csumOffset: 16 }, emit), GsoError);
  assert.throws(() => sw.process(f, 0, f.length, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_UDP_L4, gsoSize: 1000, csumStart: l4, csumOffset: 16 }, emit), GsoError);
  const u6 = frame(true, false, new Uint8Array(3000));
  assert.throws(() => sw.process(u6.f, 0, u6.f.length, { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_UDP, gsoSize: 1000, csumStart: u6.l4, csumOffset: 6 }, emit), GsoError);
  const arp = new Uint8Array(60);
  arp[12] = 0x08; arp[13] = 0x06;
  assert.throws(() => sw.process(arp, 0, 60, { flags: 0, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 100, csumStart: 0, csumOffset: 0 }, emit), GsoError);
  // Random bytes never throw anything but GsoError, nor emit beyond the input's size.
  fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 500 }), (b, g, size, cs) => {
    try {
      sw.process(b, 0, b.length, { flags: 1, gsoType: g, gsoSize: size & 0xffff, csumStart: cs, csumOffset: 6 }, (_x, _o, l) => { assert.ok(l <= b.length); return true; });
    } catch (e) {
      assert.ok(e instanceof GsoError, String(e));
    }
  }), { numRuns: 500 });
});

test('backpressure: a refused segment is resumed with skip, nothing sent twice', () => {
  const sw = new SoftOffload();
  const { f, l4 } = frame(false, true, Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff));
  const h = { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1000, csumStart: l4, csumOffset: 16 };
  const seqs: number[] = [];
  let budget = 2;
  const emit = (b: { u8: Uint8Array }, o: number) => { if (budget-- <= 0) return false; seqs.push(be32(b.u8, o + l4 + 4)); return true; };
  const first = sw.process(f, 0, f.length, h, emit);
  assert.equal(first, 2);
  budget = 100;
  assert.equal(sw.process(f, 0, f.length, h, emit, first), 5);
  assert.deepEqual(seqs.map((s) => (s - 0xffffff00 + 2 ** 32) % 2 ** 32), [0, 1000, 2000, 3000, 4000]);
});
