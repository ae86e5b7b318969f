/**
 * The control socket of a running `serve` or `loopback` (and later
 * `attach`): a unix stream socket, mode 0600 from bind() on, that speaks
 * newline-delimited JSON.
 *
 * Request, one line:  `{"id": 1, "cmd": "stats", "args": {...}}`
 * Reply, one line:    `{"id": 1, "ok": true, "result": ...}` or
 *                     `{"id": 1, "ok": false, "error": "one line"}`
 * A command may also stream events before its reply (for example a
 * capture): `{"id": 1, "event": ...}` lines, through {@link ControlContext.send}.
 *
 * Commands are registered by name ({@link ControlServer.register}); `help`
 * lists them. A client may send several requests on one connection; they
 * are answered in order. Lines over 1 MiB, bad JSON or unknown commands get
 * an error reply (never a crash); a client that sent a line over the limit
 * is disconnected.
 */
import net from 'node:net';
import { unlinkSync, chmodSync } from 'node:fs';
import { claimSocketPath } from '../../transport/socket-path.js';

/** What a handler gets besides its arguments. */
export interface ControlContext {
  /** Send an event line `{"id", "event"}` before the reply (false once the client is gone). */
  send(event: unknown): boolean;
  /** Resolves when the client disconnects (a streaming command stops then). */
  readonly closed: Promise<void>;
}

/** A command: its arguments (the request's `args`, an object) to its result (any JSON value). Throw an Error to reply `ok: false`. */
export type ControlHandler = (args: Record<string, unknown>, ctx: ControlContext) => unknown | Promise<unknown>;

const MAX_LINE = 1 << 20;

export class ControlServer {
  private readonly handlers = new Map<string, { fn: ControlHandler; help: string }>();
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  path = '';

  constructor() {
    this.register('help', () => [...this.handlers].map(([name, h]) => ({ name, help: h.help })), 'list the commands');
  }

  /** Add a command (replacing one of the same name). */
  register(name: string, fn: ControlHandler, help = ''): void {
    this.handlers.set(name, { fn, help });
  }

  /**
   * Listen on `path`, created 0600 (the umask is 0177 while bind() runs, so
   * no other user can connect in between). A stale socket there (nobody
   * listening) is replaced; anything else is refused with an Error.
   */
  async listen(path: string): Promise<void> {
    await claimSocketPath(path, 'control socket');
    // Half-open: a client may send its requests and shut down its side (`echo ... | socat`); replies follow, then the server ends.
    const server = net.createServer({ allowHalfOpen: true }, (s) => this.serve(s));
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(path, 0o600); // already so; states the contract
    server.on('error', () => undefined);
    this.server = server;
    this.path = path;
  }

  private serve(s: net.Socket): void {
    this.sockets.add(s);
    let buf = '';
    let chain: Promise<void> = Promise.resolve();
    let resolveClosed!: () => void;
    const closed = new Promise<void>((r) => (resolveClosed = r));
    s.setEncoding('utf8');
    s.on('error', () => undefined);
    s.on('close', () => {
      this.sockets.delete(s);
      resolveClosed();
    });
    s.on('end', () => {
      // A last request without its newline still counts.
      if (buf.trim() !== '') {
        const line = buf;
        chain = chain.then(() => this.handleLine(s, line, closed));
      }
      buf = '';
      void chain.then(() => s.end());
    });
    s.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        chain = chain.then(() => this.handleLine(s, line, closed));
      }
      if (buf.length > MAX_LINE) {
        write(s, { id: null, ok: false, error: `request line longer than ${MAX_LINE} bytes` });
        s.end();
        buf = '';
      }
    });
  }

  private async handleLine(s: net.Socket, line: string, closed: Promise<void>): Promise<void> {
    let id: unknown = null;
    try {
      let req: { id?: unknown; cmd?: unknown; args?: unknown };
      try {
        req = JSON.parse(line);
      } catch {
        throw new Error('request is not JSON');
      }
      if (typeof req !== 'object' || req === null) throw new Error('request must be a JSON object');
      id = req.id ?? null;
      if (typeof req.cmd !== 'string') throw new Error('request has no "cmd" string');
      const h = this.handlers.get(req.cmd);
      if (!h) throw new Error(`unknown command "${req.cmd}" (known: ${[...this.handlers.keys()].join(', ')})`);
      const args = req.args === undefined ? {} : req.args;
      if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new Error('"args" must be an object');
      const ctx: ControlContext = { send: (event) => !s.destroyed && write(s, { id, event }), closed };
      const result = await h.fn(args as Record<string, unknown>, ctx);
      write(s, { id, ok: true, result: result ?? null });
    } catch (e) {
      write(s, { id, ok: false, error: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Stop listening, disconnect every client, remove the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r())); // removes the socket file
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}

function write(s: net.Socket, obj: unknown): boolean {
  if (s.destroyed) return false;
  s.write(`${JSON.stringify(obj)}\n`);
  return true;
}
