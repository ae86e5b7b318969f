/**
 * Generic (device-independent) virtio feature bits and device status bits
 * (virtio spec §6 "Reserved Feature Bits", §2.1 "Device Status Field",
 * §2.2 "Feature Bits").
 *
 * Feature sets are 64-bit-or-wider bitmasks held in a `bigint`: bit N of the
 * set is `1n << BigInt(N)`. Every `VIRTIO_F_*` constant here is such a
 * single-bit *mask* (not a bit number), so sets compose with `|` and test with
 * `&`. Feature negotiation runs a handful of times per device reset, so bigint
 * cost does not matter; nothing here is on a per-packet path.
 *
 * Transports expose features 32 bits at a time (`device_feature_select` /
 * `driver_feature_select`, each word little-endian): see {@link featureWord}
 * and {@link withFeatureWord}.
 */

/** Single-bit feature mask for bit number `n` (0 ≤ n < 128). Throws RangeError otherwise. */
export function featureBit(n: number): bigint {
  if (!Number.isInteger(n) || n < 0 || n >= 128) throw new RangeError(`feature bit ${n} out of range`);
  return 1n << BigInt(n);
}

// Legacy-only bits (§6, legacy interface); listed so logs can name them.
/** Legacy: notify when the avail ring is empty (bit 24). Not offered by non-transitional devices. */
export const VIRTIO_F_NOTIFY_ON_EMPTY = 1n << 24n;
/** Legacy: any descriptor layout (bit 27). Implied by VIRTIO_F_VERSION_1. */
export const VIRTIO_F_ANY_LAYOUT = 1n << 27n;

/** Bit 28: the driver may use descriptors with VIRTQ_DESC_F_INDIRECT. */
export const VIRTIO_F_INDIRECT_DESC = 1n << 28n;
/** Bit 29: `used_event` / `avail_event` notification suppression. */
export const VIRTIO_F_EVENT_IDX = 1n << 29n;
/** Bit 32: compliance with virtio 1.x (little-endian everything, FEATURES_OK handshake). */
export const VIRTIO_F_VERSION_1 = 1n << 32n;
/** Bit 33: the device is behind a platform IOMMU / access restrictions. */
export const VIRTIO_F_ACCESS_PLATFORM = 1n << 33n;
/** Bit 34: packed virtqueue layout. */
export const VIRTIO_F_RING_PACKED = 1n << 34n;
/** Bit 35: buffers are used by the device in the order they were made available. */
export const VIRTIO_F_IN_ORDER = 1n << 35n;
/** Bit 36: memory accesses need platform (not just compiler) ordering. */
export const VIRTIO_F_ORDER_PLATFORM = 1n << 36n;
/** Bit 37: the device supports SR-IOV virtual functions. */
export const VIRTIO_F_SR_IOV = 1n << 37n;
/** Bit 38: the driver passes extra data (next avail index) in notifications. */
export const VIRTIO_F_NOTIFICATION_DATA = 1n << 38n;
/** Bit 39: the driver uses device-supplied notification config data. */
export const VIRTIO_F_NOTIF_CONFIG_DATA = 1n << 39n;
/** Bit 40: individual virtqueues can be reset. */
export const VIRTIO_F_RING_RESET = 1n << 40n;
/** Bit 41: the device exposes administration virtqueues. */
export const VIRTIO_F_ADMIN_VQ = 1n << 41n;
/** Bit 43: the device can be suspended via the SUSPEND status bit. */
export const VIRTIO_F_SUSPEND = 1n << 43n;

/** A name table for {@link featureNames}: `[mask, name]` pairs, each mask a single bit. */
export type FeatureTable = ReadonlyArray<readonly [bigint, string]>;

/** Names of the generic feature bits above, ascending by bit. */
export const VIRTIO_FEATURE_NAMES: FeatureTable = [
  [VIRTIO_F_NOTIFY_ON_EMPTY, 'VIRTIO_F_NOTIFY_ON_EMPTY'],
  [VIRTIO_F_ANY_LAYOUT, 'VIRTIO_F_ANY_LAYOUT'],
  [VIRTIO_F_INDIRECT_DESC, 'VIRTIO_F_INDIRECT_DESC'],
  [VIRTIO_F_EVENT_IDX, 'VIRTIO_F_EVENT_IDX'],
  [VIRTIO_F_VERSION_1, 'VIRTIO_F_VERSION_1'],
  [VIRTIO_F_ACCESS_PLATFORM, 'VIRTIO_F_ACCESS_PLATFORM'],
  [VIRTIO_F_RING_PACKED, 'VIRTIO_F_RING_PACKED'],
  [VIRTIO_F_IN_ORDER, 'VIRTIO_F_IN_ORDER'],
  [VIRTIO_F_ORDER_PLATFORM, 'VIRTIO_F_ORDER_PLATFORM'],
  [VIRTIO_F_SR_IOV, 'VIRTIO_F_SR_IOV'],
  [VIRTIO_F_NOTIFICATION_DATA, 'VIRTIO_F_NOTIFICATION_DATA'],
  [VIRTIO_F_NOTIF_CONFIG_DATA, 'VIRTIO_F_NOTIF_CONFIG_DATA'],
  [VIRTIO_F_RING_RESET, 'VIRTIO_F_RING_RESET'],
  [VIRTIO_F_ADMIN_VQ, 'VIRTIO_F_ADMIN_VQ'],
  [VIRTIO_F_SUSPEND, 'VIRTIO_F_SUSPEND'],
];

/**
 * True when every bit of `bit` is set in `f`.
 *
 * `bit` is either a mask (`bigint`, e.g. `VIRTIO_F_VERSION_1`, possibly with
 * several bits: all must be present) or a bit number (`number`, e.g. `32`).
 * A zero mask is trivially present. Throws RangeError for a bad bit number.
 */
export function hasFeature(f: bigint, bit: bigint | number): boolean {
  const m = typeof bit === 'number' ? featureBit(bit) : bit;
  return (f & m) === m;
}

/** True when at least one bit of mask `mask` is set in `f`. */
export function hasAnyFeature(f: bigint, mask: bigint): boolean {
  return (f & mask) !== 0n;
}

/**
 * The negotiated feature set: the bits both offered by the device and wanted
 * by the driver (`deviceOffered & driverWanted`). Device-specific dependency
 * clean-up is separate (for virtio-net: `sanitizeDriverFeatures` in
 * `net/features.ts`). Throws RangeError if either set is negative.
 */
export function negotiate(deviceOffered: bigint, driverWanted: bigint): bigint {
  if (deviceOffered < 0n || driverWanted < 0n) throw new RangeError('feature sets must be non-negative');
  return deviceOffered & driverWanted;
}

/**
 * Names of the bits set in `f`, ascending by bit number, for logs. Bits named
 * in none of `tables` are rendered as `bit<N>`. Later tables do not override
 * earlier ones (first match wins). Throws RangeError if `f` is negative.
 */
export function featureNames(f: bigint, ...tables: FeatureTable[]): string[] {
  if (f < 0n) throw new RangeError('feature set must be non-negative');
  const out: string[] = [];
  for (let n = 0n, rest = f; rest !== 0n; n++, rest >>= 1n) {
    if ((rest & 1n) === 0n) continue;
    const m = 1n << n;
    let name: string | undefined;
    for (const t of tables) {
      const hit = t.find(([mask]) => mask === m);
      if (hit) { name = hit[1]; break; }
    }
    out.push(name ?? `bit${n}`);
  }
  return out;
}

/** Bit numbers set in `f`, ascending. */
export function featureBitNumbers(f: bigint): number[] {
  const out: number[] = [];
  for (let n = 0, rest = f; rest > 0n; n++, rest >>= 1n) if (rest & 1n) out.push(n);
  return out;
}

/**
 * The 32-bit word `sel` of feature set `f` (bits 32·sel … 32·sel+31), as the
 * transports' `device_feature` register shows it for `device_feature_select
 * = sel`. Returned as an unsigned number (0 … 2^32-1).
 */
export function featureWord(f: bigint, sel: number): number {
  if (!Number.isInteger(sel) || sel < 0) throw new RangeError(`feature select ${sel} out of range`);
  return Number((f >> BigInt(32 * sel)) & 0xffff_ffffn);
}

/** `f` with 32-bit word `sel` replaced by `value` (as a driver write of `driver_feature`). */
export function withFeatureWord(f: bigint, sel: number, value: number): bigint {
  if (!Number.isInteger(sel) || sel < 0) throw new RangeError(`feature select ${sel} out of range`);
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw new RangeError(`feature word ${value} out of range`);
  const shift = BigInt(32 * sel);
  return (f & ~(0xffff_ffffn << shift)) | (BigInt(value) << shift);
}

// ---------------------------------------------------------------------------
// Device status (§2.1), a u8 register: plain numbers.

/** Status bit 1: the guest OS has found the device. */
export const VIRTIO_STATUS_ACKNOWLEDGE = 1;
/** Status bit 2: the guest OS knows how to drive the device. */
export const VIRTIO_STATUS_DRIVER = 2;
/** Status bit 4: the driver is set up and ready to drive the device. */
export const VIRTIO_STATUS_DRIVER_OK = 4;
/** Status bit 8: the driver has acknowledged the features it understands; negotiation complete. */
export const VIRTIO_STATUS_FEATURES_OK = 8;
/** Status bit 16: the device is (being) suspended (needs VIRTIO_F_SUSPEND). */
export const VIRTIO_STATUS_SUSPEND = 16;
/** Status bit 64: the device hit an error it cannot recover from without reset. */
export const VIRTIO_STATUS_DEVICE_NEEDS_RESET = 64;
/** Status bit 128: the driver gave up on the device. */
export const VIRTIO_STATUS_FAILED = 128;

/** The status bits as one object, for `DeviceStatus.DRIVER_OK` style use. */
export const DeviceStatus = {
  ACKNOWLEDGE: VIRTIO_STATUS_ACKNOWLEDGE,
  DRIVER: VIRTIO_STATUS_DRIVER,
  DRIVER_OK: VIRTIO_STATUS_DRIVER_OK,
  FEATURES_OK: VIRTIO_STATUS_FEATURES_OK,
  SUSPEND: VIRTIO_STATUS_SUSPEND,
  DEVICE_NEEDS_RESET: VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  FAILED: VIRTIO_STATUS_FAILED,
} as const;

/** Names of the bits set in device status `s` (0…255), ascending; unknown bits as `bit<N>`. */
export function statusNames(s: number): string[] {
  if (!Number.isInteger(s) || s < 0 || s > 0xff) throw new RangeError(`device status ${s} out of range`);
  const out: string[] = [];
  for (let n = 0; n < 8; n++) {
    const m = 1 << n;
    if (!(s & m)) continue;
    const e = Object.entries(DeviceStatus).find(([, v]) => v === m);
    out.push(e ? e[0] : `bit${n}`);
  }
  return out;
}
