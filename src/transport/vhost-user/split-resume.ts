/**
 * Where a split ring resumes when the front-end's SET_VRING_BASE cannot be
 * right. DPDK's virtio-user, reconnecting in server mode (`server=1`) to a
 * restarted back-end, keeps its rings but sends base 0 for every split ring;
 * its avail index is then thousands of entries past that base, which no
 * ring of `num` entries can have outstanding (§2.7.13: at most `num`). Like
 * DPDK's vhost library (which resumes from used->idx whenever the two
 * differ), the ring then resumes at its used index (§2.7.8, written only by
 * the device): every buffer the device had returned stays returned, and the
 * ones after it are taken again (a transmitted frame the old back-end had
 * not yet marked used may go out twice; a receive buffer is simply filled).
 * Unlike DPDK, a plausible base (avail - base <= num, or a consistent used
 * index) is kept: it is what QEMU and a GET_VRING_BASE of ours hand back.
 */
import type { GuestMemory } from '../../virtio/memory.js';
import type { QueueLayout, QueueState } from '../../virtio/queue.js';

/**
 * The base to start split ring `layout` from, given the front-end's `base`:
 * `base` itself, or `{ avail: used, used }` from the ring's used index when
 * `base` is impossible (avail - base > num, or base 0 with a used index
 * that is not 0). Reads avail->idx and used->idx (little-endian u16 at
 * offset 2 of each ring) from guest memory.
 * @throws GuestMemoryError when the rings are outside guest memory
 */
export function splitResumeBase(mem: GuestMemory, layout: QueueLayout, base: QueueState): QueueState {
  const u16 = (addr: number) => {
    const b = mem.read(addr + 2, 2);
    return b[0] | (b[1] << 8);
  };
  const availIdx = u16(layout.driverAddr);
  const usedIdx = u16(layout.deviceAddr);
  if (usedIdx === (base.used & 0xffff)) return base;
  const outstanding = (availIdx - base.avail) & 0xffff;
  if (outstanding <= layout.size && base.avail !== 0) return base;
  return { avail: usedIdx, used: usedIdx };
}
