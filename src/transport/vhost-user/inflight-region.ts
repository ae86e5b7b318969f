/**
 * The inflight buffer of a vhost-user session (vhost-user.rst
 * VHOST_USER_GET_INFLIGHT_FD / VHOST_USER_SET_INFLIGHT_FD, protocol feature
 * INFLIGHT_SHMFD): allocated here as a memfd for GET_INFLIGHT_FD (zeroed:
 * every queue region at version 0), or mapped from the front-end's fd for
 * SET_INFLIGHT_FD after a restart. The per-queue format is in
 * virtio/inflight/region.ts; this file only sizes, checks, creates and maps.
 */
import { fstatSync } from 'node:fs';
import { close, memfdCreate, mmapShared } from '../../host/index.js';
import { checkInflightDescription, inflightBufferBytes, inflightQueueBytes, InflightError } from '../../virtio/inflight/region.js';
import type { VhostUserInflight } from './messages.js';

/** A mapped inflight buffer: `numQueues` regions for queues of up to `queueSize` entries. */
export interface InflightBuffer {
  buffer: SharedArrayBuffer;
  numQueues: number;
  queueSize: number;
}

/** Byte offset of queue `q`'s region in `b`, or -1 when the buffer has no region for it. */
export function inflightOffset(b: InflightBuffer, q: number): number {
  return q < b.numQueues ? q * inflightQueueBytes(b.queueSize) : -1;
}

/**
 * GET_INFLIGHT_FD: a new zeroed memfd of `numQueues` × the per-queue size,
 * mapped. The caller sends `fd` with `desc` and closes it.
 * @throws InflightError INFLIGHT_QUEUES / INFLIGHT_QUEUE_SIZE (numQueues outside 1..maxQueues, queueSize outside 1..32768); HostError (memfd, mmap)
 */
export function createInflightBuffer(numQueues: number, queueSize: number, maxQueues: number): { fd: number; desc: VhostUserInflight; inflight: InflightBuffer } {
  checkInflightDescription(numQueues, queueSize, null, maxQueues);
  const size = inflightBufferBytes(numQueues, queueSize);
  const fd = memfdCreate('virtio-mq-inflight', size);
  try {
    const buffer = mmapShared(fd, size, 0);
    return { fd, desc: { mmapSize: size, mmapOffset: 0, numQueues, queueSize }, inflight: { buffer, numQueues, queueSize } };
  } catch (e) {
    close(fd);
    throw e;
  }
}

/**
 * SET_INFLIGHT_FD: map the front-end's buffer. `fd` is always closed.
 * @throws InflightError INFLIGHT_QUEUES, INFLIGHT_QUEUE_SIZE, INFLIGHT_SIZE (mmap_size not numQueues × the
 *   per-queue size, or the file shorter than mmap_offset + mmap_size); HostError (mmap refused)
 */
export function mapInflightBuffer(desc: VhostUserInflight, fd: number, maxQueues: number): InflightBuffer {
  try {
    checkInflightDescription(desc.numQueues, desc.queueSize, desc.mmapSize, maxQueues);
    let fileSize: number;
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new InflightError('INFLIGHT_SIZE', 'the inflight fd is not a memory file');
      fileSize = st.size;
    } catch (e) {
      if (e instanceof InflightError) throw e;
      throw new InflightError('INFLIGHT_SIZE', `the inflight fd cannot be examined: ${(e as Error).message}`);
    }
    if (fileSize < desc.mmapOffset + desc.mmapSize)
      throw new InflightError('INFLIGHT_SIZE', `the inflight file has ${fileSize} bytes, mmap_offset ${desc.mmapOffset} + mmap_size ${desc.mmapSize} needs more`);
    return { buffer: mmapShared(fd, desc.mmapSize, desc.mmapOffset), numQueues: desc.numQueues, queueSize: desc.queueSize };
  } finally {
    try {
      close(fd);
    } catch {
      /* already closed */
    }
  }
}
