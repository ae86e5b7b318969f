/**
 * The active pair count of a vhost-user back-end, derived from which rings
 * the front-end enabled (vhost-user.rst SET_VRING_ENABLE; a front-end
 * without a controlq in the back-end carries VQ_PAIRS_SET this way,
 * §5.1.6.5.5).
 */

/**
 * Pairs steering may pick: up to the last pair whose receiveq and transmitq
 * are both enabled, at least 1 (QEMU's `ethtool -L N` enables pairs
 * 0..N-1). A running pair is never beyond it, so a loopback frame stays on
 * the pair that sent it while a front-end disables and enables rings one
 * by one (DPDK's virtio-user around a memory table change).
 */
export function activePairCount(vrings: readonly { enabled: boolean }[]): number {
  let n = 0;
  for (let p = 0; 2 * p + 1 < vrings.length; p++) if (vrings[2 * p]!.enabled && vrings[2 * p + 1]!.enabled) n = p + 1;
  return Math.max(1, n);
}
