/**
 * TUNSETOFFLOAD for a TAP behind the device: the kernel may hand the device
 * partial checksums and GSO frames only when the driver accepted them
 * (VIRTIO_NET_F_GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO,
 * GUEST_USO4/6, or the set of VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET), as
 * QEMU's tap_fd_set_offload does: the frames then pass to the driver with
 * the kernel's virtio_net_hdr unchanged.
 */
import { tunSetOffload, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, TUN_F_USO4, TUN_F_USO6 } from '../host/index.js';
import { RX_OFFLOAD_CSUM, RX_OFFLOAD_ECN, RX_OFFLOAD_TSO4, RX_OFFLOAD_TSO6, RX_OFFLOAD_UFO, RX_OFFLOAD_USO4, RX_OFFLOAD_USO6 } from '../net/offloads.js';

/**
 * TUN_F_* flags for RX offload bits (RX_OFFLOAD_*, offloads.ts). The kernel
 * takes segmentation flags only together with TUN_F_CSUM, so without
 * GUEST_CSUM the result is 0.
 */
export function tunOffloadFlags(rx: number): number {
  if (!(rx & RX_OFFLOAD_CSUM)) return 0;
  let f = TUN_F_CSUM;
  if (rx & RX_OFFLOAD_TSO4) f |= TUN_F_TSO4;
  if (rx & RX_OFFLOAD_TSO6) f |= TUN_F_TSO6;
  if (rx & RX_OFFLOAD_ECN) f |= TUN_F_TSO_ECN;
  if (rx & RX_OFFLOAD_UFO) f |= TUN_F_UFO;
  if (rx & RX_OFFLOAD_USO4) f |= TUN_F_USO4;
  if (rx & RX_OFFLOAD_USO6) f |= TUN_F_USO6;
  return f;
}

/**
 * Apply TUNSETOFFLOAD to every queue fd. A kernel without USO (before 6.2)
 * refuses TUN_F_USO4/6 with EINVAL: the flags are then applied without them.
 * Returns the flags in effect. @throws HostError when even that fails.
 */
export function setTapOffloads(fds: readonly number[], rx: number): number {
  let flags = tunOffloadFlags(rx);
  for (const fd of fds) {
    try {
      tunSetOffload(fd, flags);
    } catch (e) {
      if (!(flags & (TUN_F_USO4 | TUN_F_USO6))) throw e;
      flags &= ~(TUN_F_USO4 | TUN_F_USO6);
      tunSetOffload(fd, flags);
    }
  }
  return flags;
}
