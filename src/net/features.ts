/**
 * virtio-net feature bits (spec §5.1.3 "Feature bits"), their dependency rules
 * (§5.1.3.1 "Feature bit requirements") and driver-side clean-up of a feature
 * set before FEATURES_OK.
 *
 * Like the generic bits in `virtio/features.ts`, every `VIRTIO_NET_F_*` here is
 * a single-bit `bigint` mask (`1n << N`), not a bit number.
 */
import type { FeatureTable } from '../virtio/features.js';

/** Bit 0: device handles packets with partial checksum (TX checksum offload). */
export const VIRTIO_NET_F_CSUM = 1n << 0n;
/** Bit 1: driver handles packets with partial checksum (RX). */
export const VIRTIO_NET_F_GUEST_CSUM = 1n << 1n;
/** Bit 2: control channel offloads reconfiguration (VIRTIO_NET_CTRL_GUEST_OFFLOADS). */
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 1n << 2n;
/** Bit 3: device reports its maximum MTU in config `mtu`. */
export const VIRTIO_NET_F_MTU = 1n << 3n;
/** Bit 5: device has a given MAC address in config `mac`. */
export const VIRTIO_NET_F_MAC = 1n << 5n;
/** Bit 6 (legacy only): device handles packets with any GSO type. */
export const VIRTIO_NET_F_GSO = 1n << 6n;
/** Bit 7: driver can receive TSOv4. */
export const VIRTIO_NET_F_GUEST_TSO4 = 1n << 7n;
/** Bit 8: driver can receive TSOv6. */
export const VIRTIO_NET_F_GUEST_TSO6 = 1n << 8n;
/** Bit 9: driver can receive TSO with ECN. */
export const VIRTIO_NET_F_GUEST_ECN = 1n << 9n;
/** Bit 10: driver can receive UFO. */
export const VIRTIO_NET_F_GUEST_UFO = 1n << 10n;
/** Bit 11: device can receive TSOv4 (TX segmentation offload). */
export const VIRTIO_NET_F_HOST_TSO4 = 1n << 11n;
/** Bit 12: device can receive TSOv6. */
export const VIRTIO_NET_F_HOST_TSO6 = 1n << 12n;
/** Bit 13: device can receive TSO with ECN. */
export const VIRTIO_NET_F_HOST_ECN = 1n << 13n;
/** Bit 14: device can receive UFO. */
export const VIRTIO_NET_F_HOST_UFO = 1n << 14n;
/** Bit 15: driver can merge receive buffers (`num_buffers`). */
export const VIRTIO_NET_F_MRG_RXBUF = 1n << 15n;
/** Bit 16: config `status` is available. */
export const VIRTIO_NET_F_STATUS = 1n << 16n;
/** Bit 17: control virtqueue is available. */
export const VIRTIO_NET_F_CTRL_VQ = 1n << 17n;
/** Bit 18: control channel RX mode (PROMISC, ALLMULTI) and MAC filter support. */
export const VIRTIO_NET_F_CTRL_RX = 1n << 18n;
/** Bit 19: control channel VLAN filtering. */
export const VIRTIO_NET_F_CTRL_VLAN = 1n << 19n;
/** Bit 20: control channel RX extra modes (ALLUNI, NOMULTI, NOUNI, NOBCAST). */
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 1n << 20n;
/** Bit 21: driver can send gratuitous packets (VIRTIO_NET_S_ANNOUNCE / CTRL_ANNOUNCE). */
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 1n << 21n;
/** Bit 22: multiqueue with automatic receive steering. */
export const VIRTIO_NET_F_MQ = 1n << 22n;
/** Bit 23: set MAC address through the control channel. */
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 1n << 23n;
/** Bit 41 (legacy only): device coalesces TCP/IPv4 packets. */
export const VIRTIO_NET_F_GUEST_RSC4 = 1n << 41n;
/** Bit 42 (legacy only): device coalesces TCP/IPv6 packets. */
export const VIRTIO_NET_F_GUEST_RSC6 = 1n << 42n;
/** Bit 50: device-level statistics through the control virtqueue. */
export const VIRTIO_NET_F_DEVICE_STATS = 1n << 50n;
/** Bit 51: inner header hash for encapsulated packets. */
export const VIRTIO_NET_F_HASH_TUNNEL = 1n << 51n;
/** Bit 52: per-virtqueue notification coalescing. */
export const VIRTIO_NET_F_VQ_NOTF_COAL = 1n << 52n;
/** Bit 53: notification coalescing. */
export const VIRTIO_NET_F_NOTF_COAL = 1n << 53n;
/** Bit 54: driver can receive USOv4. */
export const VIRTIO_NET_F_GUEST_USO4 = 1n << 54n;
/** Bit 55: driver can receive USOv6. */
export const VIRTIO_NET_F_GUEST_USO6 = 1n << 55n;
/** Bit 56: device can receive USO. */
export const VIRTIO_NET_F_HOST_USO = 1n << 56n;
/** Bit 57: device reports per-packet hash value and type (20-byte header). */
export const VIRTIO_NET_F_HASH_REPORT = 1n << 57n;
/** Bit 59: driver provides the exact `hdr_len`. */
export const VIRTIO_NET_F_GUEST_HDRLEN = 1n << 59n;
/** Bit 60: RSS with Toeplitz hash and configurable steering. */
export const VIRTIO_NET_F_RSS = 1n << 60n;
/** Bit 61: device reports coalesced segments / duplicated ACKs (RSC_INFO). */
export const VIRTIO_NET_F_RSC_EXT = 1n << 61n;
/** Bit 62: device may act as standby for a primary device with the same MAC. */
export const VIRTIO_NET_F_STANDBY = 1n << 62n;
/** Bit 63: device reports `speed` and `duplex`. */
export const VIRTIO_NET_F_SPEED_DUPLEX = 1n << 63n;
/** Bit 64: multiple RSS contexts. */
export const VIRTIO_NET_F_RSS_CONTEXT = 1n << 64n;
/** Bit 65: driver can receive GSO packets carried by a UDP tunnel. */
export const VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO = 1n << 65n;
/** Bit 66: driver handles UDP-tunnelled packets with partial outer checksum. */
export const VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM = 1n << 66n;
/** Bit 67: device can receive GSO packets carried by a UDP tunnel. */
export const VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO = 1n << 67n;
/** Bit 68: device handles UDP-tunnelled packets with partial outer checksum. */
export const VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM = 1n << 68n;
/** Bit 69: driver can provide `outer_nh_offset` (32-byte header). */
export const VIRTIO_NET_F_OUT_NET_HEADER = 1n << 69n;
/** Bit 70: inline IPsec processing (32-byte header). */
export const VIRTIO_NET_F_IPSEC = 1n << 70n;

/** Names of every VIRTIO_NET_F_* bit, ascending by bit number. */
export const NET_FEATURE_NAMES: FeatureTable = [
  [VIRTIO_NET_F_CSUM, 'VIRTIO_NET_F_CSUM'],
  [VIRTIO_NET_F_GUEST_CSUM, 'VIRTIO_NET_F_GUEST_CSUM'],
  [VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, 'VIRTIO_NET_F_CTRL_GUEST_OFFLOADS'],
  [VIRTIO_NET_F_MTU, 'VIRTIO_NET_F_MTU'],
  [VIRTIO_NET_F_MAC, 'VIRTIO_NET_F_MAC'],
  [VIRTIO_NET_F_GSO, 'VIRTIO_NET_F_GSO'],
  [VIRTIO_NET_F_GUEST_TSO4, 'VIRTIO_NET_F_GUEST_TSO4'],
  [VIRTIO_NET_F_GUEST_TSO6, 'VIRTIO_NET_F_GUEST_TSO6'],
  [VIRTIO_NET_F_GUEST_ECN, 'VIRTIO_NET_F_GUEST_ECN'],
  [VIRTIO_NET_F_GUEST_UFO, 'VIRTIO_NET_F_GUEST_UFO'],
  [VIRTIO_NET_F_HOST_TSO4, 'VIRTIO_NET_F_HOST_TSO4'],
  [VIRTIO_NET_F_HOST_TSO6, 'VIRTIO_NET_F_HOST_TSO6'],
  [VIRTIO_NET_F_HOST_ECN, 'VIRTIO_NET_F_HOST_ECN'],
  [VIRTIO_NET_F_HOST_UFO, 'VIRTIO_NET_F_HOST_UFO'],
  [VIRTIO_NET_F_MRG_RXBUF, 'VIRTIO_NET_F_MRG_RXBUF'],
  [VIRTIO_NET_F_STATUS, 'VIRTIO_NET_F_STATUS'],
  [VIRTIO_NET_F_CTRL_VQ, 'VIRTIO_NET_F_CTRL_VQ'],
  [VIRTIO_NET_F_CTRL_RX, 'VIRTIO_NET_F_CTRL_RX'],
  [VIRTIO_NET_F_CTRL_VLAN, 'VIRTIO_NET_F_CTRL_VLAN'],
  [VIRTIO_NET_F_CTRL_RX_EXTRA, 'VIRTIO_NET_F_CTRL_RX_EXTRA'],
  [VIRTIO_NET_F_GUEST_ANNOUNCE, 'VIRTIO_NET_F_GUEST_ANNOUNCE'],
  [VIRTIO_NET_F_MQ, 'VIRTIO_NET_F_MQ'],
  [VIRTIO_NET_F_CTRL_MAC_ADDR, 'VIRTIO_NET_F_CTRL_MAC_ADDR'],
  [VIRTIO_NET_F_GUEST_RSC4, 'VIRTIO_NET_F_GUEST_RSC4'],
  [VIRTIO_NET_F_GUEST_RSC6, 'VIRTIO_NET_F_GUEST_RSC6'],
  [VIRTIO_NET_F_DEVICE_STATS, 'VIRTIO_NET_F_DEVICE_STATS'],
  [VIRTIO_NET_F_HASH_TUNNEL, 'VIRTIO_NET_F_HASH_TUNNEL'],
  [VIRTIO_NET_F_VQ_NOTF_COAL, 'VIRTIO_NET_F_VQ_NOTF_COAL'],
  [VIRTIO_NET_F_NOTF_COAL, 'VIRTIO_NET_F_NOTF_COAL'],
  [VIRTIO_NET_F_GUEST_USO4, 'VIRTIO_NET_F_GUEST_USO4'],
  [VIRTIO_NET_F_GUEST_USO6, 'VIRTIO_NET_F_GUEST_USO6'],
  [VIRTIO_NET_F_HOST_USO, 'VIRTIO_NET_F_HOST_USO'],
  [VIRTIO_NET_F_HASH_REPORT, 'VIRTIO_NET_F_HASH_REPORT'],
  [VIRTIO_NET_F_GUEST_HDRLEN, 'VIRTIO_NET_F_GUEST_HDRLEN'],
  [VIRTIO_NET_F_RSS, 'VIRTIO_NET_F_RSS'],
  [VIRTIO_NET_F_RSC_EXT, 'VIRTIO_NET_F_RSC_EXT'],
  [VIRTIO_NET_F_STANDBY, 'VIRTIO_NET_F_STANDBY'],
  [VIRTIO_NET_F_SPEED_DUPLEX, 'VIRTIO_NET_F_SPEED_DUPLEX'],
  [VIRTIO_NET_F_RSS_CONTEXT, 'VIRTIO_NET_F_RSS_CONTEXT'],
  [VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO, 'VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO'],
  [VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM, 'VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM'],
  [VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO, 'VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO'],
  [VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM, 'VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM'],
  [VIRTIO_NET_F_OUT_NET_HEADER, 'VIRTIO_NET_F_OUT_NET_HEADER'],
  [VIRTIO_NET_F_IPSEC, 'VIRTIO_NET_F_IPSEC'],
];

/** Name of a single-bit net feature mask, or undefined. */
export function netFeatureName(mask: bigint): string | undefined {
  return NET_FEATURE_NAMES.find(([m]) => m === mask)?.[1];
}

/**
 * One dependency rule: `feature` requires every bit of `all` and at least one
 * bit of `any` (each part only when present/nonzero).
 */
export interface NetFeatureDependency {
  readonly feature: bigint;
  readonly all?: bigint;
  readonly any?: bigint;
  /** Where the rule comes from. */
  readonly source: 'spec' | 'spec-should' | 'implied';
}

/**
 * The dependency rules, in the order of spec §5.1.3.1 "Feature bit requirements"
 * (source `spec`), plus the §5.1.4 driver SHOULD NOTs for HASH_REPORT and
 * CTRL_RX_EXTRA without CTRL_VQ (`spec-should`), plus control-queue-only
 * features the list omits, which cannot work without a control virtqueue
 * (`implied`: CTRL_GUEST_OFFLOADS, DEVICE_STATS).
 */
export const NET_FEATURE_DEPENDENCIES: readonly NetFeatureDependency[] = [
  { feature: VIRTIO_NET_F_GUEST_TSO4, all: VIRTIO_NET_F_GUEST_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_GUEST_TSO6, all: VIRTIO_NET_F_GUEST_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_GUEST_ECN, any: VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6, source: 'spec' },
  { feature: VIRTIO_NET_F_GUEST_UFO, all: VIRTIO_NET_F_GUEST_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_GUEST_USO4, all: VIRTIO_NET_F_GUEST_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_GUEST_USO6, all: VIRTIO_NET_F_GUEST_CSUM, source: 'spec' },
  {
    feature: VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO,
    all: VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_USO4 | VIRTIO_NET_F_GUEST_USO6,
    source: 'spec',
  },
  { feature: VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM, all: VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO, source: 'spec' },
  { feature: VIRTIO_NET_F_HOST_TSO4, all: VIRTIO_NET_F_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_HOST_TSO6, all: VIRTIO_NET_F_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_HOST_ECN, any: VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6, source: 'spec' },
  { feature: VIRTIO_NET_F_HOST_UFO, all: VIRTIO_NET_F_CSUM, source: 'spec' },
  { feature: VIRTIO_NET_F_HOST_USO, all: VIRTIO_NET_F_CSUM, source: 'spec' },
  {
    feature: VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO,
    all: VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_USO,
    source: 'spec',
  },
  { feature: VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM, all: VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO, source: 'spec' },
  { feature: VIRTIO_NET_F_CTRL_RX, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_CTRL_VLAN, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_GUEST_ANNOUNCE, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_MQ, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_CTRL_MAC_ADDR, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_NOTF_COAL, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_RSC_EXT, any: VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6, source: 'spec' },
  { feature: VIRTIO_NET_F_RSS, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  { feature: VIRTIO_NET_F_VQ_NOTF_COAL, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec' },
  {
    feature: VIRTIO_NET_F_HASH_TUNNEL,
    all: VIRTIO_NET_F_CTRL_VQ,
    any: VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT,
    source: 'spec',
  },
  { feature: VIRTIO_NET_F_RSS_CONTEXT, all: VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_RSS, source: 'spec' },
  { feature: VIRTIO_NET_F_HASH_REPORT, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec-should' },
  { feature: VIRTIO_NET_F_CTRL_RX_EXTRA, all: VIRTIO_NET_F_CTRL_VQ, source: 'spec-should' },
  { feature: VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, all: VIRTIO_NET_F_CTRL_VQ, source: 'implied' },
  { feature: VIRTIO_NET_F_DEVICE_STATS, all: VIRTIO_NET_F_CTRL_VQ, source: 'implied' },
];

function maskNames(mask: bigint, joiner: string): string {
  const names: string[] = [];
  for (const [m, n] of NET_FEATURE_NAMES) if (mask & m) names.push(n);
  return names.join(joiner);
}

function violates(f: bigint, d: NetFeatureDependency): boolean {
  if ((f & d.feature) === 0n) return false;
  if (d.all !== undefined && (f & d.all) !== d.all) return true;
  if (d.any !== undefined && (f & d.any) === 0n) return true;
  return false;
}

/**
 * The dependency violations in net feature set `f`, one human-readable string
 * per violated rule of {@link NET_FEATURE_DEPENDENCIES}, e.g.
 * `"VIRTIO_NET_F_MQ requires VIRTIO_NET_F_CTRL_VQ"`. Empty when `f` is
 * consistent. Generic (transport) bits in `f` are ignored. Never throws.
 */
export function validateNetFeatures(f: bigint): string[] {
  const out: string[] = [];
  for (const d of NET_FEATURE_DEPENDENCIES) {
    if (!violates(f, d)) continue;
    const parts: string[] = [];
    if (d.all !== undefined && (f & d.all) !== d.all) parts.push(maskNames(d.all & ~f, ' and '));
    if (d.any !== undefined && (f & d.any) === 0n) parts.push(`one of ${maskNames(d.any, ', ')}`);
    out.push(`${netFeatureName(d.feature) ?? 'feature'} requires ${parts.join(' and ')}`);
  }
  return out;
}

/** Device config values {@link sanitizeDriverFeatures} may consult. */
export interface SanitizeConfig {
  /** Config `mtu` (valid when VIRTIO_NET_F_MTU is offered). */
  readonly mtu?: number;
}

/** Smallest MTU the Linux driver accepts from config (ETH_MIN_MTU); below it VIRTIO_NET_F_MTU is dropped. */
export const MIN_MTU = 68;

/**
 * The feature set a driver should write back: `offered & wanted`, then — until
 * nothing changes — every feature whose dependencies
 * ({@link NET_FEATURE_DEPENDENCIES}) are missing is dropped, so e.g. losing
 * GUEST_CSUM also drops GUEST_TSO4/6, then GUEST_ECN. The result satisfies
 * `validateNetFeatures(result).length === 0` and is a subset of both inputs.
 *
 * Linux-driver fixups also applied (drivers/net/virtio_net.c virtnet_validate):
 *   - VIRTIO_NET_F_STANDBY without VIRTIO_NET_F_MAC is dropped;
 *   - VIRTIO_NET_F_MTU is dropped when `cfg.mtu` is given and < {@link MIN_MTU}.
 * Where Linux's virtnet_validate_features *refuses* a device that offers a
 * control-queue feature without VIRTIO_NET_F_CTRL_VQ, this drops the feature
 * instead (the device stays usable without it). Generic bits pass through
 * untouched. Throws RangeError if either set is negative.
 */
export function sanitizeDriverFeatures(offered: bigint, wanted: bigint, cfg: SanitizeConfig = {}): bigint {
  if (offered < 0n || wanted < 0n) throw new RangeError('feature sets must be non-negative');
  let f = offered & wanted;
  if ((f & VIRTIO_NET_F_STANDBY) && !(f & VIRTIO_NET_F_MAC)) f &= ~VIRTIO_NET_F_STANDBY;
  if ((f & VIRTIO_NET_F_MTU) && cfg.mtu !== undefined && cfg.mtu < MIN_MTU) f &= ~VIRTIO_NET_F_MTU;
  for (;;) {
    let next = f;
    for (const d of NET_FEATURE_DEPENDENCIES) if (violates(next, d)) next &= ~d.feature;
    if (next === f) return f;
    f = next;
  }
}

/**
 * Guest offloads (VIRTIO_NET_CTRL_GUEST_OFFLOADS, §5.1.6.5 "Offloads State
 * Configuration"): the le64 offload bitmask uses the feature bit numbers,
 * except the UDP tunnel offloads, whose features are bits 65/66 but whose
 * offload bits are 46/47 (so they fit in 64 bits).
 */
export const GUEST_OFFLOAD_UDP_TUNNEL_GSO = 1n << 46n;
/** Offload bit 47 ↔ VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM (feature bit 66). */
export const GUEST_OFFLOAD_UDP_TUNNEL_GSO_CSUM = 1n << 47n;

/** Guest offload features whose offload bit equals their feature bit. */
const DIRECT_OFFLOADS =
  VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_ECN |
  VIRTIO_NET_F_GUEST_UFO | VIRTIO_NET_F_GUEST_USO4 | VIRTIO_NET_F_GUEST_USO6;

/**
 * The guest-offload bitmask enabled by negotiating feature set `f`: the
 * guest offload features in `f`, with bits 65/66 mapped to offload bits 46/47.
 * This is both the device's initial offload state and the set of offloads a
 * VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET may enable.
 */
export function guestOffloadsFromFeatures(f: bigint): bigint {
  let o = f & DIRECT_OFFLOADS;
  if (f & VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO) o |= GUEST_OFFLOAD_UDP_TUNNEL_GSO;
  if (f & VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM) o |= GUEST_OFFLOAD_UDP_TUNNEL_GSO_CSUM;
  return o;
}
