/**
 * The client side of the control socket (see server.ts for the protocol),
 * and where sockets are by default: `$XDG_RUNTIME_DIR/virtio-mq-PID.sock`,
 * or `$TMPDIR/virtio-mq-PID.sock` (os.tmpdir()) without XDG_RUNTIME_DIR.
 */
import net from 'node:net';
import { readdirSync, lstatSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

/** The directory default control sockets live in. */
export function controlDir(): string {
  return process.env.XDG_RUNTIME_DIR || tmpdir();
}

/** The default control socket of process `pid`. */
export function defaultControlPath(pid = process.pid): string {
  return join(controlDir(), `virtio-mq-${pid}.sock`);
}

/** Default control sockets (`virtio-mq-PID.sock`, sockets only) in `dir`, each with whether its process is alive. */
function defaultSockets(dir: string): { name: string; alive: boolean }[] {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    /* none */
  }
  const found: { name: string; alive: boolean }[] = [];
  for (const name of names) {
    const m = /^virtio-mq-(\d+)\.sock$/.exec(name);
    if (!m) continue;
    try {
      if (!lstatSync(join(dir, name)).isSocket()) continue;
    } catch {
      continue;
    }
    let alive = true;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    found.push({ name, alive });
  }
  return found;
}

/**
 * Remove the default control sockets in {@link controlDir} whose process
 * is gone (killed with SIGKILL, it could not remove its own). Never throws.
 * @returns the paths removed
 */
export function sweepStaleControlSockets(): string[] {
  const dir = controlDir();
  const removed: string[] = [];
  for (const s of defaultSockets(dir)) {
    if (s.alive) continue;
    try {
      unlinkSync(join(dir, s.name));
      removed.push(join(dir, s.name));
    } catch {
      /* gone already, or not ours to remove */
    }
  }
  return removed;
}

/**
 * The control socket to use when none was named: the only
 * `virtio-mq-PID.sock` in {@link controlDir} whose process is alive.
 * @throws Error naming the candidates when there are none or several.
 */
export function findControlPath(): string {
  const dir = controlDir();
  const live = defaultSockets(dir).filter((s) => s.alive).map((s) => s.name);
  if (live.length === 0) throw new Error(`no running virtio-mq found in ${dir} (give --control PATH)`);
  if (live.length > 1) throw new Error(`several running virtio-mq in ${dir}: ${live.join(', ')} (give --control PATH)`);
  return join(dir, live[0]);
}

/** One connection to a control socket; requests are answered in order. */
export class ControlClient {
  private readonly sock: net.Socket;
  private buf = '';
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; onEvent?: (e: unknown) => void }>();
  private failure: Error | null = null;

  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => this.data(c));
    const fail = (e: Error) => {
      this.failure = e;
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    };
    sock.on('error', (e) => fail(new Error(`control socket: ${e.message}`)));
    sock.on('close', () => fail(new Error('control socket closed')));
  }

  /** Connect to `path`. @throws Error (one line) when nobody listens there. */
  static connect(path: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once('connect', () => resolve(new ControlClient(s)));
      s.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`control socket ${path}: ${e.code === 'ENOENT' ? 'no such socket' : e.code === 'ECONNREFUSED' ? 'nobody listening' : e.message}`)));
    });
  }

  /** Send `cmd` and resolve with its result. @throws Error with the server's message for `ok: false`. */
  request(cmd: string, args: Record<string, unknown> = {}, onEvent?: (e: unknown) => void): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, onEvent });
      this.sock.write(`${JSON.stringify({ id, cmd, args })}\n`);
    });
  }

  private data(chunk: string): void {
    this.buf += chunk;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      let msg: { id: number; ok?: boolean; result?: unknown; error?: string; event?: unknown };
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      const w = this.waiting.get(msg.id);
      if (!w) continue;
      if ('event' in msg && msg.ok === undefined) {
        w.onEvent?.(msg.event);
        continue;
      }
      this.waiting.delete(msg.id);
      if (msg.ok) w.resolve(msg.result);
      else w.reject(new Error(msg.error ?? 'request failed'));
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
