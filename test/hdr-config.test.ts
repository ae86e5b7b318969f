import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import {
  VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_HASH_TUNNEL,
  VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO,
  VIRTIO_NET_F_IPSEC,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_OUT_NET_HEADER,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_SPEED_DUPLEX,
  VIRTIO_NET_F_STATUS,
} from '../src/net/features.js';
import {
  NetHdr,
  type NetHdrFields,
  VIRTIO_NET_HASH_REPORT_TCPv4,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4,
  clearNetHdr,
  getNetHdrFlags,
  getNetHdrGsoType,
  getNumBuffers,
  netHdrSize,
  readNetHdr,
  readNetHdrView,
  setNetHdrHash,
  setNumBuffers,
  writeNetHdr,
  writeNetHdrView,
} from '../src/net/hdr.js';
import {
  NET_CONFIG_SIZE,
  type NetConfig,
  VIRTIO_NET_DUPLEX_UNKNOWN,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_NET_SPEED_UNKNOWN,
  decodeNetConfig,
  defaultNetConfig,
  encodeNetConfig,
  netConfigSize,
  validateNetConfig,
} from '../src/net/config.js';

const SIZES = [10, 12, 20, 24, 32] as const;

test('netHdrSize per negotiated features', () => {
  const cases: [bigint, number][] = [
    [0n, 10],
    [VIRTIO_NET_F_MRG_RXBUF, 12],
    [VIRTIO_F_VERSION_1, 12],
    [VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF, 12],
    [VIRTIO_F_VERSION_1 | VIRTIO_NET_F_HASH_REPORT, 20],
    [VIRTIO_F_VERSION_1 | VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO, 24],
    [VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO | VIRTIO_NET_F_HASH_REPORT, 24],
    [VIRTIO_F_VERSION_1 | VIRTIO_NET_F_OUT_NET_HEADER, 32],
    [VIRTIO_F_VERSION_1 | VIRTIO_NET_F_IPSEC, 32],
  ];
  for (const [f, n] of cases) assert.equal(netHdrSize(f), n);
});

test('virtio_net_hdr golden layout (little-endian, spec offsets)', () => {
  const h = new NetHdr(20);
  h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  h.gsoType = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
  h.hdrLen = 0x0102;
  h.gsoSize = 0x0304;
  h.csumStart = 34;
  h.csumOffset = 16;
  h.numBuffers = 3;
  h.hashValue = 0xdeadbeef;
  h.hashReport = VIRTIO_NET_HASH_REPORT_TCPv4;
  const buf = new Uint8Array(24).fill(0xee);
  h.writeTo(buf, 2);
  assert.deepEqual(
    [...buf],
    [0xee, 0xee, 1, 0x81, 0x02, 0x01, 0x04, 0x03, 34, 0, 16, 0, 3, 0, 0xef, 0xbe, 0xad, 0xde, 2, 0, 0, 0, 0xee, 0xee],
  );
  assert.equal(getNetHdrFlags(buf, 2), 1);
  assert.equal(getNetHdrGsoType(buf, 2), 0x81);
  assert.equal(getNumBuffers(buf, 2), 3);
  setNumBuffers(buf, 2, 0x1234);
  assert.deepEqual([...buf.subarray(12, 14)], [0x34, 0x12]);
  setNetHdrHash(buf, 2, 0x01020304, 9);
  assert.deepEqual([...buf.subarray(14, 22)], [4, 3, 2, 1, 9, 0, 0, 0]);

  const t = new NetHdr(32);
  t.gsoType = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4;
  t.outerThOffset = 0x1122;
  t.innerNhOffset = 0x3344;
  t.outerNhOffset = 14;
  t.ipsecResourceId = 0x0a0b0c0d;
  t.ipsecResourceType = 0x0203;
  const b32 = new Uint8Array(32);
  t.writeTo(b32, 0);
  assert.deepEqual([...b32.subarray(20, 32)], [0x22, 0x11, 0x44, 0x33, 14, 0, 0x0d, 0x0c, 0x0b, 0x0a, 0x03, 0x02]);
  assert.equal(new NetHdr(32).readFrom(b32, 0).gsoProtocol, VIRTIO_NET_HDR_GSO_TCPV4);
});

test('10-byte legacy header: no num_buffers field, reads as 1; smaller headers do not touch later bytes', () => {
  const buf = new Uint8Array(12).fill(0xaa);
  const h = new NetHdr(10);
  h.numBuffers = 7;
  h.writeTo(buf, 0);
  assert.deepEqual([...buf.subarray(10)], [0xaa, 0xaa]);
  assert.equal(new NetHdr(10).readFrom(buf, 0).numBuffers, 1);
  const b12 = new Uint8Array(20).fill(0xaa);
  new NetHdr(12).writeTo(b12, 0);
  assert.ok(b12.subarray(12).every((x) => x === 0xaa));
  const r = new NetHdr(12).readFrom(b12, 0);
  assert.equal(r.hashValue, 0);
  assert.equal(r.hashReport, 0);
});

test('clearNetHdr zeroes and sets num_buffers', () => {
  const b = new Uint8Array(20).fill(9);
  clearNetHdr(b, 0, 20);
  assert.deepEqual([...b], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const c = new Uint8Array(10).fill(9);
  clearNetHdr(c, 0, 10, 5);
  assert.ok(c.every((x) => x === 0));
});

test('header bounds and size errors are RangeErrors', () => {
  const b = new Uint8Array(12);
  const h = new NetHdr(12);
  assert.throws(() => h.readFrom(b, 1), RangeError);
  assert.throws(() => h.writeTo(b, -1), RangeError);
  assert.throws(() => readNetHdr(b, 0, 11, h), RangeError);
  assert.throws(() => new NetHdr(16), RangeError);
  assert.throws(() => getNumBuffers(new Uint8Array(11), 0), RangeError);
  assert.throws(() => setNetHdrHash(new Uint8Array(19), 0, 0, 0), RangeError);
  assert.throws(() => writeNetHdrView(new DataView(new ArrayBuffer(20)), 4, 20, h), RangeError);
  assert.equal(NetHdr.forFeatures(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_HASH_REPORT).size, 20);
});

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const hdrArb = fc.record({
  flags: u8, gsoType: u8, hdrLen: u16, gsoSize: u16, csumStart: u16, csumOffset: u16, numBuffers: u16,
  hashValue: u32, hashReport: u16, outerThOffset: u16, innerNhOffset: u16, outerNhOffset: u16,
  ipsecResourceId: u32, ipsecResourceType: u16,
});

function expectedAfter(size: number, h: NetHdrFields): NetHdrFields {
  return {
    ...h,
    numBuffers: size >= 12 ? h.numBuffers : 1,
    hashValue: size >= 20 ? h.hashValue : 0,
    hashReport: size >= 20 ? h.hashReport : 0,
    outerThOffset: size >= 24 ? h.outerThOffset : 0,
    innerNhOffset: size >= 24 ? h.innerNhOffset : 0,
    outerNhOffset: size >= 32 ? h.outerNhOffset : 0,
    ipsecResourceId: size >= 32 ? h.ipsecResourceId : 0,
    ipsecResourceType: size >= 32 ? h.ipsecResourceType : 0,
  };
}

test('header round trip: Uint8Array and DataView paths agree byte for byte', () => {
  fc.assert(fc.property(fc.constantFrom(...SIZES), fc.integer({ min: 0, max: 9 }), hdrArb, (size, off, h) => {
    const a = new Uint8Array(off + size + 3);
    const bBuf = new ArrayBuffer(off + size + 3 + 5);
    const dv = new DataView(bBuf, 5); // view not at buffer start
    writeNetHdr(a, off, size, h);
    writeNetHdrView(dv, off, size, h);
    assert.deepEqual(a, new Uint8Array(bBuf, 5));
    const want = expectedAfter(size, h);
    const r1 = readNetHdr(a, off, size, new NetHdr(size));
    const r2 = readNetHdrView(dv, off, size, new NetHdr(size));
    for (const k of Object.keys(want) as (keyof NetHdrFields)[]) {
      assert.equal(r1[k], want[k], k);
      assert.equal(r2[k], want[k], k);
    }
  }), { numRuns: 300 });
});

test('NetHdr.reset restores defaults', () => {
  const h = new NetHdr(20);
  h.flags = 3; h.numBuffers = 9; h.hashValue = 5;
  h.reset();
  assert.equal(h.flags, 0);
  assert.equal(h.numBuffers, 1);
  assert.equal(h.hashValue, 0);
  assert.equal(h.needsCsum, false);
  assert.equal(h.dataValid, false);
});

// ---------------------------------------------------------------------------
// Config

const ALL_CFG_FEATURES = VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MQ | VIRTIO_NET_F_MTU |
  VIRTIO_NET_F_SPEED_DUPLEX | VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT | VIRTIO_NET_F_HASH_TUNNEL;

test('virtio_net_config golden layout', () => {
  const cfg: NetConfig = {
    mac: Uint8Array.of(1, 2, 3, 4, 5, 6),
    status: VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE,
    maxVirtqueuePairs: 0x0102,
    mtu: 0x05dc,
    speed: 0x0a0b0c0d,
    duplex: 1,
    rssMaxKeySize: 40,
    rssMaxIndirectionTableLength: 128,
    supportedHashTypes: 0x1ff,
    supportedTunnelTypes: 0x11223344,
  };
  const b = encodeNetConfig(cfg);
  assert.equal(b.length, NET_CONFIG_SIZE);
  assert.deepEqual([...b], [
    1, 2, 3, 4, 5, 6, // mac @0
    3, 0, // status @6
    2, 1, // max_virtqueue_pairs @8
    0xdc, 0x05, // mtu @10
    0x0d, 0x0c, 0x0b, 0x0a, // speed @12
    1, // duplex @16
    40, // rss_max_key_size @17
    128, 0, // rss_max_indirection_table_length @18
    0xff, 0x01, 0, 0, // supported_hash_types @20
    0x44, 0x33, 0x22, 0x11, // supported_tunnel_types @24
  ]);
  assert.deepEqual(decodeNetConfig(b, ALL_CFG_FEATURES), cfg);
});

test('config round trip with all fields present', () => {
  const cfgArb = fc.record({
    mac: fc.uint8Array({ minLength: 6, maxLength: 6 }),
    status: u16, maxVirtqueuePairs: u16, mtu: u16, speed: u32, duplex: u8, rssMaxKeySize: u8,
    rssMaxIndirectionTableLength: u16, supportedHashTypes: u32, supportedTunnelTypes: u32,
  });
  fc.assert(fc.property(cfgArb, (cfg) => {
    assert.deepEqual(decodeNetConfig(encodeNetConfig(cfg), ALL_CFG_FEATURES), { ...cfg }); // fc records have a null prototype
  }));
});

test('decodeNetConfig: absent fields get driver defaults; short config space is a RangeError', () => {
  const cfg = defaultNetConfig({ status: 0, maxVirtqueuePairs: 8, mtu: 9000, speed: 1000, duplex: 1 });
  const b = encodeNetConfig(cfg);
  const d = decodeNetConfig(b, VIRTIO_NET_F_MAC);
  assert.deepEqual(d.mac, cfg.mac);
  assert.equal(d.status, VIRTIO_NET_S_LINK_UP);
  assert.equal(d.maxVirtqueuePairs, 1);
  assert.equal(d.mtu, 0);
  assert.equal(d.speed, VIRTIO_NET_SPEED_UNKNOWN);
  assert.equal(d.duplex, VIRTIO_NET_DUPLEX_UNKNOWN);
  assert.equal(d.rssMaxKeySize, 0);
  assert.equal(d.supportedHashTypes, 0);
  // RSS implies max_virtqueue_pairs; HASH_REPORT alone exposes key size and hash types but not the table length.
  assert.equal(decodeNetConfig(b, VIRTIO_NET_F_RSS).maxVirtqueuePairs, 8);
  const hr = decodeNetConfig(b, VIRTIO_NET_F_HASH_REPORT);
  assert.equal(hr.rssMaxKeySize, 40);
  assert.equal(hr.rssMaxIndirectionTableLength, 0);
  assert.equal(hr.supportedHashTypes, 0x1ff);
  assert.equal(decodeNetConfig(b, VIRTIO_NET_F_STATUS).status, 0);
  // The decoded mac is a copy.
  const m = decodeNetConfig(b, 0n).mac;
  m[0] = 0x99;
  assert.equal(b[0], cfg.mac[0]);
  // Sizes.
  assert.equal(netConfigSize(0n), 6);
  assert.equal(netConfigSize(VIRTIO_NET_F_STATUS), 8);
  assert.equal(netConfigSize(VIRTIO_NET_F_MQ), 10);
  assert.equal(netConfigSize(VIRTIO_NET_F_MTU | VIRTIO_NET_F_STATUS), 12);
  assert.equal(netConfigSize(VIRTIO_NET_F_SPEED_DUPLEX), 17);
  assert.equal(netConfigSize(VIRTIO_NET_F_HASH_REPORT), 24);
  assert.equal(netConfigSize(ALL_CFG_FEATURES), 28);
  assert.throws(() => decodeNetConfig(b.subarray(0, 9), VIRTIO_NET_F_MQ), RangeError);
  assert.doesNotThrow(() => decodeNetConfig(b.subarray(0, 10), VIRTIO_NET_F_MQ));
  // Works on a subarray with a nonzero byteOffset.
  const shifted = new Uint8Array(40);
  shifted.set(b, 7);
  assert.deepEqual(decodeNetConfig(shifted.subarray(7), ALL_CFG_FEATURES), cfg);
});

test('encodeNetConfig rejects unrepresentable values; validateNetConfig checks device-normative limits', () => {
  assert.throws(() => encodeNetConfig(defaultNetConfig({ mac: new Uint8Array(5) })), RangeError);
  assert.throws(() => encodeNetConfig(defaultNetConfig({ mtu: 65536 })), RangeError);
  assert.throws(() => encodeNetConfig(defaultNetConfig({ speed: -1 })), RangeError);
  assert.throws(() => encodeNetConfig(defaultNetConfig({ duplex: 1.5 })), RangeError);
  assert.deepEqual(validateNetConfig(defaultNetConfig(), ALL_CFG_FEATURES), []);
  assert.equal(validateNetConfig(defaultNetConfig({ maxVirtqueuePairs: 0 }), VIRTIO_NET_F_MQ).length, 1);
  assert.equal(validateNetConfig(defaultNetConfig({ maxVirtqueuePairs: 0x8001 }), VIRTIO_NET_F_MQ).length, 1);
  assert.equal(validateNetConfig(defaultNetConfig({ mtu: 67 }), VIRTIO_NET_F_MTU).length, 1);
  assert.equal(validateNetConfig(defaultNetConfig({ rssMaxKeySize: 39 }), VIRTIO_NET_F_HASH_REPORT).length, 1);
  assert.equal(validateNetConfig(defaultNetConfig({ rssMaxIndirectionTableLength: 64 }), VIRTIO_NET_F_RSS).length, 1);
  assert.deepEqual(validateNetConfig(defaultNetConfig({ rssMaxIndirectionTableLength: 64 }), VIRTIO_NET_F_HASH_REPORT), []);
});
