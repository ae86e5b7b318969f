/**
 * split-resume.ts: a split ring's SET_VRING_BASE that cannot be right (DPDK
 * virtio-user reconnecting in server mode sends 0) resumes from used->idx;
 * a plausible base is kept.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../src/virtio/memory.js';
import { splitResumeBase } from '../src/transport/vhost-user/split-resume.js';
import type { QueueLayout } from '../src/virtio/queue.js';

function ring(availIdx: number, usedIdx: number, size = 256): { mem: GuestMemory; layout: QueueLayout } {
  const buf = new SharedArrayBuffer(1 << 16);
  const mem = new GuestMemory([{ guestPhysAddr: 0, size: buf.byteLength, buffer: buf }]);
  const layout: QueueLayout = { format: 'split', size, descAddr: 0, driverAddr: 0x4000, deviceAddr: 0x8000 };
  mem.write(layout.driverAddr + 2, Uint8Array.of(availIdx & 0xff, availIdx >> 8));
  mem.write(layout.deviceAddr + 2, Uint8Array.of(usedIdx & 0xff, usedIdx >> 8));
  return { mem, layout };
}

test('split ring base: virtio-user\'s 0 after reconnect resumes from used->idx; consistent or plausible bases are kept', () => {
  // virtio-user server=1 reconnecting: avail 19008, used 18752, base 0.
  let r = ring(19008, 18752);
  assert.deepEqual(splitResumeBase(r.mem, r.layout, { avail: 0, used: 0 }), { avail: 18752, used: 18752 });
  // …also when the avail index happens to be within a ring of 0 (wrapped): base 0 with a used index that is not 0.
  r = ring(65530 + 10 - 65536, 65530);
  assert.deepEqual(splitResumeBase(r.mem, r.layout, { avail: 0, used: 0 }), { avail: 65530, used: 65530 });
  // An impossible non-zero base (more than a ring's worth outstanding).
  r = ring(5000, 4990);
  assert.deepEqual(splitResumeBase(r.mem, r.layout, { avail: 1000, used: 1000 }), { avail: 4990, used: 4990 });
  // QEMU's base (its last avail restored from used->idx): kept.
  r = ring(3198, 3180);
  const q = { avail: 3180, used: 3180 };
  assert.equal(splitResumeBase(r.mem, r.layout, q), q);
  // Our own GET_VRING_BASE with entries in flight (avail ahead of used, within the ring): kept.
  r = ring(3198, 3180);
  const g = { avail: 3190, used: 3190 };
  assert.equal(splitResumeBase(r.mem, r.layout, g), g);
  // A fresh ring.
  r = ring(0, 0);
  const z = { avail: 0, used: 0 };
  assert.equal(splitResumeBase(r.mem, r.layout, z), z);
});
