/**
 * `serve --group NAME`: the vhost-user socket shared with one group (0660,
 * owned by that group), as QEMU users run the front-end under another
 * account of a shared group.
 *
 * No window: the socket is bound, chowned and chmodded inside a fresh
 * private directory (mkdtemp, 0700, next to the final path), where no other
 * user can reach it, and only then hard-linked to its final path. link()
 * never replaces anything (EEXIST), so a file or socket that appeared at the
 * path in the meantime is refused, not overwritten; the private directory
 * is removed either way.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, mkdtempSync, readFileSync, rmdirSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { close, unixListen } from '../../host/index.js';

/**
 * The gid of a group name or number, or null when there is none. Names go
 * through NSS (`getent group`), falling back to /etc/group.
 */
export function resolveGroup(name: string): number | null {
  if (/^\d+$/.test(name)) {
    const gid = Number(name);
    return Number.isSafeInteger(gid) && gid < 2 ** 32 - 1 ? gid : null;
  }
  const parse = (text: string): number | null => {
    for (const line of text.split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f.length >= 3 && /^\d+$/.test(f[2])) return Number(f[2]);
    }
    return null;
  };
  try {
    return parse(execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    try {
      return parse(readFileSync('/etc/group', 'utf8'));
    } catch {
      return null;
    }
  }
}

/**
 * Listen on `path` with a socket of mode 0660 owned by group `gid`.
 * Returns the non-blocking listening fd.
 * @throws Error (one line) when the group cannot be set (not a member), or
 *   something appeared at `path` (EEXIST); HostError from bind/listen.
 */
export function listenForGroup(path: string, gid: number): number {
  const dir = mkdtempSync(join(dirname(path), '.vmq-sock-'));
  const tmp = join(dir, 's');
  let fd = -1;
  try {
    const oldMask = isMainThread ? process.umask(0o177) : undefined;
    try {
      fd = unixListen(tmp, { mode: 0o600, nonblock: true });
    } finally {
      if (oldMask !== undefined) process.umask(oldMask);
    }
    try {
      chownSync(tmp, -1, gid);
    } catch (e) {
      throw new Error(`vhost-user: cannot give ${path} to group ${gid}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (serve must run as root or as a member of that group)`);
    }
    chmodSync(tmp, 0o660);
    try {
      linkSync(tmp, path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new Error(`vhost-user: ${path}: ${code === 'EEXIST' ? 'something appeared there while the socket was being created: refusing to replace it' : code}`);
    }
    const done = fd;
    fd = -1;
    return done;
  } finally {
    if (fd >= 0) close(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* not created */
    }
    rmdirSync(dir);
  }
}
