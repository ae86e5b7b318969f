import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  DeviceStatus,
  VIRTIO_FEATURE_NAMES,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_NOTIFICATION_DATA,
  VIRTIO_F_ORDER_PLATFORM,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_SR_IOV,
  VIRTIO_F_VERSION_1,
  featureBit,
  featureBitNumbers,
  featureNames,
  featureWord,
  hasAnyFeature,
  hasFeature,
  negotiate,
  statusNames,
  withFeatureWord,
} from '../src/virtio/features.js';
import {
  GUEST_OFFLOAD_UDP_TUNNEL_GSO,
  NET_FEATURE_DEPENDENCIES,
  NET_FEATURE_NAMES,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_GUEST_USO4,
  VIRTIO_NET_F_GUEST_USO6,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_HASH_TUNNEL,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_RSC_EXT,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_RSS_CONTEXT,
  VIRTIO_NET_F_SPEED_DUPLEX,
  VIRTIO_NET_F_STANDBY,
  VIRTIO_NET_F_STATUS,
  guestOffloadsFromFeatures,
  sanitizeDriverFeatures,
  validateNetFeatures,
} from '../src/net/features.js';

const SPEC = '/work/shared/ref/virtio-spec';

test('generic feature bits have the spec bit numbers', () => {
  const expect: [bigint, number][] = [
    [VIRTIO_F_INDIRECT_DESC, 28], [VIRTIO_F_EVENT_IDX, 29], [VIRTIO_F_VERSION_1, 32],
    [VIRTIO_F_ACCESS_PLATFORM, 33], [VIRTIO_F_RING_PACKED, 34], [VIRTIO_F_IN_ORDER, 35],
    [VIRTIO_F_ORDER_PLATFORM, 36], [VIRTIO_F_SR_IOV, 37], [VIRTIO_F_NOTIFICATION_DATA, 38],
    [VIRTIO_F_RING_RESET, 40],
  ];
  for (const [m, n] of expect) assert.equal(m, 1n << BigInt(n));
  assert.deepEqual(DeviceStatus, {
    ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, SUSPEND: 16, DEVICE_NEEDS_RESET: 64, FAILED: 128,
  });
});

test('net feature bits match the spec text', { skip: !existsSync(`${SPEC}/device-types_net_description.tex`) }, () => {
  const tex = readFileSync(`${SPEC}/device-types_net_description.tex`, 'utf8');
  const re = /\\item\[(VIRTIO_NET_F_[A-Z0-9_]+)\s*\((\d+)\)\]/g;
  const fromSpec = new Map<string, number>();
  for (const m of tex.matchAll(re)) fromSpec.set(m[1]!, Number(m[2]));
  assert.ok(fromSpec.size >= 45, `parsed ${fromSpec.size} feature items`);
  const ours = new Map(NET_FEATURE_NAMES.map(([m, n]) => [n, featureBitNumbers(m)[0]!]));
  for (const [name, bit] of fromSpec) assert.equal(ours.get(name), bit, name);
  for (const [name] of ours) assert.ok(fromSpec.has(name), `${name} not in spec`);
});

test('generic feature bits match the spec text', { skip: !existsSync(`${SPEC}/content.tex`) }, () => {
  const tex = readFileSync(`${SPEC}/content.tex`, 'utf8');
  for (const m of tex.matchAll(/\\item\[(VIRTIO_F_[A-Z0-9_]+)\s*\((\d+)\)\]/g)) {
    const hit = VIRTIO_FEATURE_NAMES.find(([, n]) => n === m[1]);
    assert.ok(hit, `${m[1]} missing`);
    assert.equal(hit[0], 1n << BigInt(m[2]!), m[1]);
  }
});

test('hasFeature / hasAnyFeature / negotiate', () => {
  const f = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MQ | VIRTIO_NET_F_CTRL_VQ;
  assert.equal(hasFeature(f, VIRTIO_F_VERSION_1), true);
  assert.equal(hasFeature(f, 32), true);
  assert.equal(hasFeature(f, 33), false);
  assert.equal(hasFeature(f, VIRTIO_NET_F_MQ | VIRTIO_NET_F_CTRL_VQ), true);
  assert.equal(hasFeature(f, VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS), false);
  assert.equal(hasAnyFeature(f, VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS), true);
  assert.equal(negotiate(f, VIRTIO_F_VERSION_1 | VIRTIO_NET_F_RSS), VIRTIO_F_VERSION_1);
  assert.throws(() => hasFeature(f, -1), RangeError);
  assert.throws(() => featureBit(128), RangeError);
  assert.throws(() => negotiate(-1n, 0n), RangeError);
  fc.assert(fc.property(fc.bigInt(0n, (1n << 80n) - 1n), fc.bigInt(0n, (1n << 80n) - 1n), (a, b) => {
    const n = negotiate(a, b);
    return (n & ~a) === 0n && (n & ~b) === 0n && negotiate(b, a) === n;
  }));
});

test('featureNames and statusNames', () => {
  const f = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_CSUM | (1n << 4n) | VIRTIO_NET_F_RSS_CONTEXT;
  assert.deepEqual(featureNames(f, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES), [
    'VIRTIO_NET_F_CSUM', 'bit4', 'VIRTIO_NET_F_MAC', 'VIRTIO_F_VERSION_1', 'VIRTIO_NET_F_RSS_CONTEXT',
  ]);
  assert.deepEqual(featureNames(0n), []);
  assert.deepEqual(featureNames(1n << 3n), ['bit3']);
  assert.deepEqual(statusNames(1 | 2 | 4 | 8 | 32), ['ACKNOWLEDGE', 'DRIVER', 'DRIVER_OK', 'FEATURES_OK', 'bit5']);
  assert.throws(() => statusNames(256), RangeError);
});

test('featureWord / withFeatureWord split and join 32-bit words', () => {
  fc.assert(fc.property(fc.bigInt(0n, (1n << 96n) - 1n), (f) => {
    const w = [0, 1, 2].map((s) => featureWord(f, s));
    let g = 0n;
    for (let s = 0; s < 3; s++) g = withFeatureWord(g, s, w[s]!);
    return g === f && w.every((x) => x >= 0 && x <= 0xffff_ffff);
  }));
  assert.equal(featureWord(VIRTIO_F_VERSION_1, 1), 1);
  assert.equal(featureWord(1n << 31n, 0), 0x8000_0000);
  assert.throws(() => withFeatureWord(0n, 0, 2 ** 32), RangeError);
});

test('validateNetFeatures reports each spec requirement', () => {
  const cases: [bigint, string[]][] = [
    [0n, []],
    [VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS | VIRTIO_NET_F_CTRL_RX, []],
    [VIRTIO_NET_F_MQ, ['VIRTIO_NET_F_MQ requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_RSS, ['VIRTIO_NET_F_RSS requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_CTRL_RX, ['VIRTIO_NET_F_CTRL_RX requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_CTRL_VLAN, ['VIRTIO_NET_F_CTRL_VLAN requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_GUEST_ANNOUNCE, ['VIRTIO_NET_F_GUEST_ANNOUNCE requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_CTRL_MAC_ADDR, ['VIRTIO_NET_F_CTRL_MAC_ADDR requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_HASH_REPORT, ['VIRTIO_NET_F_HASH_REPORT requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_CTRL_RX_EXTRA, ['VIRTIO_NET_F_CTRL_RX_EXTRA requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, ['VIRTIO_NET_F_CTRL_GUEST_OFFLOADS requires VIRTIO_NET_F_CTRL_VQ']],
    [VIRTIO_NET_F_GUEST_TSO4, ['VIRTIO_NET_F_GUEST_TSO4 requires VIRTIO_NET_F_GUEST_CSUM']],
    [VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_ECN,
      ['VIRTIO_NET_F_GUEST_ECN requires one of VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6']],
    [VIRTIO_NET_F_HOST_ECN | VIRTIO_NET_F_CSUM,
      ['VIRTIO_NET_F_HOST_ECN requires one of VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6']],
    [VIRTIO_NET_F_RSC_EXT, ['VIRTIO_NET_F_RSC_EXT requires one of VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6']],
    [VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,
      ['VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO requires VIRTIO_NET_F_GUEST_TSO6 and VIRTIO_NET_F_GUEST_USO4 and VIRTIO_NET_F_GUEST_USO6']],
    [VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_HASH_TUNNEL,
      ['VIRTIO_NET_F_HASH_TUNNEL requires one of VIRTIO_NET_F_HASH_REPORT, VIRTIO_NET_F_RSS']],
    [VIRTIO_NET_F_RSS_CONTEXT, ['VIRTIO_NET_F_RSS_CONTEXT requires VIRTIO_NET_F_CTRL_VQ and VIRTIO_NET_F_RSS']],
  ];
  for (const [f, want] of cases) assert.deepEqual(validateNetFeatures(f), want, featureNames(f, NET_FEATURE_NAMES).join('|'));
  // Several at once.
  assert.equal(validateNetFeatures(VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS | VIRTIO_NET_F_GUEST_UFO).length, 3);
});

test('sanitizeDriverFeatures drops features with missing dependencies, transitively', () => {
  const base = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MRG_RXBUF;
  // Device offers MQ/RSS but no control queue: both go; generic bits stay.
  assert.equal(sanitizeDriverFeatures(base | VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS, ~0n & ((1n << 80n) - 1n)), base);
  // Device lacks GUEST_CSUM: TSO4/6, UFO, USO, then ECN, then UDP tunnel all go.
  const guest = VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_GUEST_UFO |
    VIRTIO_NET_F_GUEST_USO4 | VIRTIO_NET_F_GUEST_USO6 | VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO;
  assert.equal(sanitizeDriverFeatures(base | guest, base | guest | VIRTIO_NET_F_GUEST_CSUM), base);
  assert.equal(
    sanitizeDriverFeatures(base | guest | VIRTIO_NET_F_GUEST_CSUM, base | guest | VIRTIO_NET_F_GUEST_CSUM),
    base | guest | VIRTIO_NET_F_GUEST_CSUM,
  );
  // Driver does not want CTRL_VQ: everything that needs it goes.
  const ctrl = VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_CTRL_RX | VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT;
  assert.equal(sanitizeDriverFeatures(base | ctrl, base | ctrl & ~VIRTIO_NET_F_CTRL_VQ), base);
  // Linux fixups: STANDBY needs MAC; MTU below 68 is dropped.
  assert.equal(sanitizeDriverFeatures(VIRTIO_NET_F_STANDBY, ~0n & 0xffff_ffff_ffff_ffffn), 0n);
  assert.equal(sanitizeDriverFeatures(VIRTIO_NET_F_STANDBY | VIRTIO_NET_F_MAC, VIRTIO_NET_F_STANDBY | VIRTIO_NET_F_MAC),
    VIRTIO_NET_F_STANDBY | VIRTIO_NET_F_MAC);
  assert.equal(sanitizeDriverFeatures(VIRTIO_NET_F_MTU, VIRTIO_NET_F_MTU, { mtu: 60 }), 0n);
  assert.equal(sanitizeDriverFeatures(VIRTIO_NET_F_MTU, VIRTIO_NET_F_MTU, { mtu: 1500 }), VIRTIO_NET_F_MTU);
  // HOST_ECN survives with one of HOST_TSO4/6.
  const host = VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_ECN | VIRTIO_NET_F_RSC_EXT;
  assert.equal(sanitizeDriverFeatures(host, host), host);
  assert.equal(sanitizeDriverFeatures(host, host & ~VIRTIO_NET_F_CSUM), 0n);
  assert.equal(sanitizeDriverFeatures(VIRTIO_NET_F_SPEED_DUPLEX, VIRTIO_NET_F_SPEED_DUPLEX), VIRTIO_NET_F_SPEED_DUPLEX);
});

test('sanitizeDriverFeatures: result is valid, a subset, idempotent, and the identity on valid sets', () => {
  const netBits = NET_FEATURE_NAMES.map(([m]) => m);
  const anySet = fc.subarray(netBits).map((ms) => ms.reduce((a, b) => a | b, 0n));
  fc.assert(fc.property(anySet, anySet, fc.option(fc.integer({ min: 0, max: 9000 }), { nil: undefined }), (off, want, mtu) => {
    const s = sanitizeDriverFeatures(off, want, { mtu });
    assert.deepEqual(validateNetFeatures(s), []);
    assert.equal(s & ~(off & want), 0n);
    assert.equal(sanitizeDriverFeatures(s, s, { mtu }), s);
    const both = off & want;
    const fixups = ((both & VIRTIO_NET_F_STANDBY) && !(both & VIRTIO_NET_F_MAC)) ||
      ((both & VIRTIO_NET_F_MTU) && mtu !== undefined && mtu < 68);
    if (validateNetFeatures(both).length === 0 && !fixups) assert.equal(s, both);
    // Every kept feature has all of its required features kept.
    for (const d of NET_FEATURE_DEPENDENCIES) {
      if (s & d.feature) assert.ok(d.all === undefined || (s & d.all) === d.all);
    }
  }), { numRuns: 500 });
});

test('guest offloads map tunnel features 65/66 to offload bits 46/47', () => {
  const f = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO | VIRTIO_NET_F_MQ;
  assert.equal(
    guestOffloadsFromFeatures(f),
    VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | GUEST_OFFLOAD_UDP_TUNNEL_GSO,
  );
  assert.equal(GUEST_OFFLOAD_UDP_TUNNEL_GSO, 1n << 46n);
  assert.equal(guestOffloadsFromFeatures(VIRTIO_NET_F_CTRL_RX | VIRTIO_NET_F_HOST_TSO4), 0n);
});
