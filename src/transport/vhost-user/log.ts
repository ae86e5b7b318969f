/**
 * The back-end's side of VHOST_USER_SET_LOG_BASE with
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD (vhost-user.rst "Migration", "Log
 * description"): map the front-end's log fd, `mmap_size` bytes from
 * `mmap_offset`, shared and writable, as one SharedArrayBuffer that every
 * pair worker marks with atomics (virtio/dirty-log.ts).
 *
 * A log that cannot be what it claims is a {@link DirtyLogError}, never a
 * crash: a size of 0 or above {@link MAX_LOG_BYTES}, an fd shorter than
 * offset + size (touching the missing pages would SIGBUS), an fd that cannot
 * be mapped. The session answers it by closing that connection (the request
 * has an explicit reply, so no failure reply exists).
 */
import { mmapShared } from '../../host/index.js';
import { VHOST_LOG_PAGE } from '../../virtio/dirty-log.js';

/**
 * Largest log accepted: 1 GiB of bitmap covers 32 TiB of guest physical
 * address space (QEMU sizes the log to the highest guest address: 16 KiB for
 * a 512 MiB guest).
 */
export const MAX_LOG_BYTES = 2 ** 30;

/** Why a log was refused: `BAD_SIZE` (0 or above the limit), `MAP_FAILED` (short fd, not mappable). */
export class DirtyLogError extends Error {
  override readonly name = 'DirtyLogError';
  constructor(readonly code: 'BAD_SIZE' | 'MAP_FAILED', message: string, cause?: unknown) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause });
  }
}

/** A mapped log: `size` bytes in `buffer` (byte 0 logs guest page 0). */
export interface MappedLog {
  buffer: SharedArrayBuffer;
  size: number;
  /** Guest physical bytes covered (size · 8 · 4096). */
  coverage: number;
}

/**
 * Map the log `[offset, offset+size)` of `fd` (MAP_SHARED, read/write). The
 * fd is not closed (the caller closes it; the mapping outlives it).
 * @throws DirtyLogError
 */
export function mapDirtyLog(fd: number, size: number, offset: number): MappedLog {
  if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_LOG_BYTES)
    throw new DirtyLogError('BAD_SIZE', `log size ${size} bytes is outside 1..${MAX_LOG_BYTES}`);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new DirtyLogError('BAD_SIZE', `log offset ${offset} is not a byte offset`);
  let buffer: SharedArrayBuffer;
  try {
    buffer = mmapShared(fd, size, offset);
  } catch (e) {
    throw new DirtyLogError('MAP_FAILED', `log fd ${fd} [${offset}, +${size}): ${(e as Error).message}`, e);
  }
  return { buffer, size, coverage: size * 8 * VHOST_LOG_PAGE };
}
