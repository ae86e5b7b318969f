/**
 * Checksum and segmentation offloads (spec §5.1.3 feature bits, §5.1.6.2
 * "Packet Transmission", §5.1.6.4 "Processing of Incoming Packets",
 * §5.1.6.5.6 "Offloads State Configuration"): which feature bits the device
 * implements, and the compact RX offload set a device queue pair checks
 * per frame.
 */
import {
  VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4,
  VIRTIO_NET_F_GUEST_USO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_HOST_USO,
} from './features.js';

/** Device side, TX: the driver may send partial checksums and GSO frames (the device completes / segments them, or its netdev does). */
export const HOST_OFFLOAD_FEATURES =
  VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_ECN |
  VIRTIO_NET_F_HOST_UFO | VIRTIO_NET_F_HOST_USO;

/** Device side, RX: the device may hand the driver partial checksums and GSO frames (when its netdev produces them). */
export const GUEST_OFFLOAD_FEATURES =
  VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_ECN |
  VIRTIO_NET_F_GUEST_UFO | VIRTIO_NET_F_GUEST_USO4 | VIRTIO_NET_F_GUEST_USO6;

/** Every offload feature the device offers (with CTRL_GUEST_OFFLOADS, which needs CTRL_VQ). */
export const NET_OFFLOAD_FEATURES = HOST_OFFLOAD_FEATURES | GUEST_OFFLOAD_FEATURES | VIRTIO_NET_F_CTRL_GUEST_OFFLOADS;

/** RX offload bits (a number, for the per-frame check in the data path). */
export const RX_OFFLOAD_CSUM = 1;
export const RX_OFFLOAD_TSO4 = 2;
export const RX_OFFLOAD_TSO6 = 4;
export const RX_OFFLOAD_ECN = 8;
export const RX_OFFLOAD_UFO = 16;
export const RX_OFFLOAD_USO4 = 32;
export const RX_OFFLOAD_USO6 = 64;

const RX_MAP: readonly [bigint, number][] = [
  [VIRTIO_NET_F_GUEST_CSUM, RX_OFFLOAD_CSUM],
  [VIRTIO_NET_F_GUEST_TSO4, RX_OFFLOAD_TSO4],
  [VIRTIO_NET_F_GUEST_TSO6, RX_OFFLOAD_TSO6],
  [VIRTIO_NET_F_GUEST_ECN, RX_OFFLOAD_ECN],
  [VIRTIO_NET_F_GUEST_UFO, RX_OFFLOAD_UFO],
  [VIRTIO_NET_F_GUEST_USO4, RX_OFFLOAD_USO4],
  [VIRTIO_NET_F_GUEST_USO6, RX_OFFLOAD_USO6],
];

/**
 * RX_OFFLOAD_* bits of a guest offload state: negotiated features, or the
 * le64 bitmask of VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (same bit numbers for
 * these offloads, §5.1.6.5.6).
 */
export function rxOffloadBits(guestOffloads: bigint): number {
  let b = 0;
  for (const [f, bit] of RX_MAP) if (guestOffloads & f) b |= bit;
  return b;
}

const TX_MAP: readonly [bigint, number][] = [
  [VIRTIO_NET_F_CSUM, RX_OFFLOAD_CSUM],
  [VIRTIO_NET_F_HOST_TSO4, RX_OFFLOAD_TSO4],
  [VIRTIO_NET_F_HOST_TSO6, RX_OFFLOAD_TSO6],
  [VIRTIO_NET_F_HOST_ECN, RX_OFFLOAD_ECN],
  [VIRTIO_NET_F_HOST_UFO, RX_OFFLOAD_UFO],
  [VIRTIO_NET_F_HOST_USO, RX_OFFLOAD_USO4 | RX_OFFLOAD_USO6],
];

/**
 * The same bits for the driver's side of a TAP (`attach --netdev tap`):
 * what the driver may send, i.e. the HOST_ offloads and CSUM among the
 * negotiated features (§5.1.6.2), as the offloads a TAP may hand its reader
 * (TUNSETOFFLOAD, tap-offload.ts).
 */
export function hostOffloadBits(features: bigint): number {
  let b = 0;
  for (const [f, bit] of TX_MAP) if (features & f) b |= bit;
  return b;
}

/** Names of the RX_OFFLOAD_* bits set in `b` (for logs). */
export function rxOffloadNames(b: number): string[] {
  const n: string[] = [];
  if (b & RX_OFFLOAD_CSUM) n.push('csum');
  if (b & RX_OFFLOAD_TSO4) n.push('tso4');
  if (b & RX_OFFLOAD_TSO6) n.push('tso6');
  if (b & RX_OFFLOAD_ECN) n.push('ecn');
  if (b & RX_OFFLOAD_UFO) n.push('ufo');
  if (b & RX_OFFLOAD_USO4) n.push('uso4');
  if (b & RX_OFFLOAD_USO6) n.push('uso6');
  return n;
}
