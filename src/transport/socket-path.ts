/**
 * Taking a unix socket path to listen on, for every listener of the project
 * (the vhost-user back-end `serve`, `attach --server`, the control socket).
 *
 * A path that holds nothing is free. A socket nobody listens on (a process
 * that died without removing it) is stale and is removed. Everything else is
 * refused with an Error that says what is there: a regular file, a directory
 * or a symbolic link (never followed), or a socket someone still accepts
 * connections on (found by connecting to it). Pure Node (`node:net`): the
 * control socket of `loopback` must not load the native addon.
 */
import net from 'node:net';
import { lstatSync, unlinkSync, type Stats } from 'node:fs';

/**
 * Make `path` free for bind(): remove a stale socket there, refuse anything
 * else.
 *
 * @param what  how errors and the log name the listener, e.g. `vhost-user:`,
 *              `control socket`.
 * @param log   told when a stale socket is removed.
 * @returns     once the path is free.
 * @throws Error `WHAT PATH exists and is a regular file|a directory|a symbolic link|not a socket: refusing to replace it ...`,
 *               `WHAT PATH is in use (another process accepts connections there): refusing to take it over`,
 *               or `WHAT PATH: cannot tell whether the socket there is in use (connect: CODE)`; lstat errors other than ENOENT as thrown.
 */
export async function claimSocketPath(path: string, what: string, log?: (line: string) => void): Promise<void> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) {
    const kind = st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'not a socket';
    throw new Error(`${what} ${path} exists and is ${kind}: refusing to replace it (remove it, or choose another path)`);
  }
  const code = await new Promise<string | null>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(null);
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'EIO'));
  });
  if (code === null) throw new Error(`${what} ${path} is in use (another process accepts connections there): refusing to take it over`);
  if (code !== 'ECONNREFUSED') throw new Error(`${what} ${path}: cannot tell whether the socket there is in use (connect: ${code}): refusing to replace it`);
  unlinkSync(path);
  log?.(`${what} removed a stale socket at ${path} (nobody listening)`);
}
