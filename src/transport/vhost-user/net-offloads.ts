/**
 * What the vhost-user back-end derives from the negotiated features for its
 * queue pair workers: the offloads (VIRTIO_NET_F_CSUM and the GUEST_
 * offloads, spec §5.1.6.2 and §5.1.6.4), the largest frame, and the TAP's
 * TUNSETOFFLOAD.
 */
import { VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_HOST_USO } from '../../net/features.js';
import { rxOffloadBits, rxOffloadNames } from '../../net/offloads.js';
import type { NetdevSpec } from '../../netdev/spec.js';
import { setTapOffloads } from '../../netdev/tap-offload.js';

/** Largest frame without GSO for an MTU: Ethernet header + MTU + one VLAN tag (bytes). */
export function maxFrameForMtu(mtu: number): number {
  return 14 + 4 + mtu;
}

/** Per-worker options from features `f` and the MTU in effect. */
export function offloadOptions(f: bigint, mtu: number): { txOffload: boolean; rxOffloads: number; maxFrame: number } {
  const gso = (f & (VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_UFO | VIRTIO_NET_F_HOST_USO)) !== 0n;
  return {
    txOffload: (f & VIRTIO_NET_F_CSUM) !== 0n,
    rxOffloads: rxOffloadBits(f),
    maxFrame: Math.max(gso ? 65536 + 128 : 0, maxFrameForMtu(mtu), 1518),
  };
}

/** TUNSETOFFLOAD on a TAP netdev's queues from the negotiated GUEST_ offloads (one log line). */
export function applyTapOffloads(netdev: NetdevSpec, f: bigint, log: (line: string) => void): void {
  if (netdev.kind !== 'tap') return;
  const rx = rxOffloadBits(f);
  try {
    const flags = setTapOffloads(netdev.fds, rx);
    log(`vhost-user: TAP offloads 0x${flags.toString(16)} (driver accepts: ${rxOffloadNames(rx).join(' ') || 'none'})`);
  } catch (e) {
    log(`vhost-user: TAP offloads: TUNSETOFFLOAD failed: ${(e as Error).message}`);
  }
}
