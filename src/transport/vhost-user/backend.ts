/**
 * `virtio-mq serve`: a vhost-user back-end (vhost-user.rst) for QEMU,
 * cloud-hypervisor or DPDK's virtio-user. It listens on a unix socket
 * (created 0600) or, with `client`, connects to one and reconnects with
 * back-off; each front-end connection is a {@link Session}. One front-end at
 * a time: a second connection waits until the first has gone.
 */
import { EventEmitter } from 'node:events';
import { unlinkSync, existsSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { Worker } from 'node:worker_threads';
import { close, eventfdCreate, eventfdWrite, unixConnect, unixListen, setNonblock } from '../../host/index.js';
import { StatsBlock, DEV_STAT_COUNT } from '../../net/stats.js';
import type { RssConfig } from '../../net/rss.js';
import type { NetdevSpec } from '../../netdev/spec.js';
import type { RingFormat } from '../../virtio/queue.js';
import { claimSocketPath } from '../socket-path.js';
import { Session } from './session.js';
import { listenForGroup } from './group.js';
import { NetdevLink, type NetdevWatch } from './link.js';
import type { SocketWorkerData, SocketWorkerEvent } from './socket-worker.js';

export interface VhostUserBackendOptions {
  socket: string;
  /** Connect to the socket instead of listening on it (front-end is the server). */
  client?: boolean;
  /** Share the socket with this group id: created 0660 owned by it (see group.ts); default 0600. */
  group?: number;
  /** Queue pairs offered (GET_QUEUE_NUM). */
  pairs: number;
  /** Largest vring size accepted (SET_VRING_NUM). Default 32768. */
  maxQueueSize?: number;
  netdev: NetdevSpec;
  mode?: 'busy' | 'notify';
  budget?: number;
  mac?: Uint8Array;
  mtu?: number;
  rss?: RssConfig | null;
  /** Connections accepted while one is served, at most (more are closed with a log line). Default 16. */
  maxWaiting?: number;
  /** One log line; `detail` carries the same facts as fields (serve --json prints them). */
  log?: (line: string, detail?: Record<string, unknown>) => void;
  /** Capture rings by pair (QueueCapture.buffers, transport/capture.ts). */
  capture?: SharedArrayBuffer[];
  /** --strict: strict-only ring checks in the workers, and every queue error reported here (virtio/conformance.ts). */
  strict?: boolean;
  onQueueError?: (queue: number, code: string, message: string, format: RingFormat) => void;
  /** The netdev's device can go away and come back (a TAP): watched, re-opened, the link follows (link.ts). */
  netdevWatch?: NetdevWatch;
  /** Offer BACKEND_REQ + CONFIG and tell the front-end of link changes (CONFIG_CHANGE_MSG). */
  configNotify?: boolean;
}

/** `running`: the session's front-end started its first queue pair (runs the device); `session-end`: it is gone. */
export class VhostUserBackend extends EventEmitter<{ session: [Session]; running: [Session]; 'session-end': [Session] }> {
  readonly stats: StatsBlock;
  session: Session | null = null;
  private listenFd = -1;
  /** The accept worker (null while one that failed to load waits to be started again) and its wake eventfd. */
  private acceptor: { worker: Worker | null; wakeFd: number } | null = null;
  private readonly waiting: number[] = [];
  private stopping = false;
  /** Resolves once the current (or last) session's socket and reader are gone. */
  private sessionEnded: Promise<void> = Promise.resolve();
  private readonly log: (line: string, detail?: Record<string, unknown>) => void;
  /** The netdev now and whether its device is there (link.ts). */
  readonly link: NetdevLink;

  constructor(private readonly o: VhostUserBackendOptions) {
    super();
    if (!(o.pairs >= 1 && o.pairs <= 256)) throw new RangeError('pairs must be 1..256');
    this.stats = new StatsBlock(o.pairs, DEV_STAT_COUNT);
    this.log = o.log ?? ((l) => console.error(l));
    this.link = new NetdevLink(o.netdev, o.netdevWatch, this.log);
    this.link.on('down', () => this.session?.setLink(false));
    this.link.on('up', (spec, done) => {
      const s = this.session;
      if (!s) return done();
      s.replaceNetdev(spec).catch((e: unknown) => this.log(`vhost-user: moving to the re-opened netdev failed: ${(e as Error).message}`)).finally(done);
    });
  }

  /** Listen (or connect). Resolves once the socket exists (server) or the first connection is up (client). */
  async start(): Promise<void> {
    this.link.start();
    if (this.o.client) {
      await this.connectLoop();
      return;
    }
    await claimSocketPath(this.o.socket, 'vhost-user:', this.log);
    // 0600 from bind() on: no window in which another user could connect to,
    // or replace, a socket created with the process's umask.
    if (this.o.group !== undefined) {
      this.listenFd = listenForGroup(this.o.socket, this.o.group);
    } else {
      const oldMask = isMainThread ? process.umask(0o177) : undefined;
      try {
        this.listenFd = unixListen(this.o.socket, { mode: 0o600, nonblock: true });
      } finally {
        if (oldMask !== undefined) process.umask(oldMask);
      }
    }
    this.log(`vhost-user: listening on ${this.o.socket} (${this.o.pairs} queue pairs${this.o.group !== undefined ? `, mode 0660 group ${this.o.group}` : ''})`);
    await this.startAcceptor(eventfdCreate(0, { nonblock: true }));
  }

  /**
   * The accept worker on the listening socket. Resolves once its module is
   * loaded and it waits for connections. A worker that cannot load (every fd
   * in use: EMFILE opening its module) is logged and started again 100 ms
   * later, for as long as serve runs: the listener is never left unserved.
   */
  private startAcceptor(wakeFd: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const retry = (why: string) => {
        this.log(`vhost-user: accept worker failed: ${why}; starting it again in 100 ms`);
        if (this.acceptor) this.acceptor.worker = null;
        setTimeout(() => {
          if (this.stopping) return resolve();
          void this.startAcceptor(wakeFd).then(resolve);
        }, 100);
      };
      let worker: Worker;
      try {
        worker = this.socketWorker({ mode: 'accept', fd: this.listenFd, wakeFd });
      } catch (e) {
        this.acceptor = { worker: null, wakeFd };
        return retry((e as Error).message);
      }
      this.acceptor = { worker, wakeFd };
      worker.on('error', (e) => {
        if (this.acceptor?.worker === worker) retry(e.message);
      });
      worker.on('message', (e: SocketWorkerEvent) => {
        if (e.type === 'ready') resolve();
        else if (e.type === 'accepted') {
          const cap = this.o.maxWaiting ?? 16;
          if (this.waiting.length >= cap && (this.session || this.stopping)) {
            close(e.fd);
            this.log(`vhost-user: ${cap} front-ends already waiting: closed a new connection`);
            return;
          }
          this.waiting.push(e.fd);
          this.nextSession();
        } else if (e.type === 'error') {
          this.log(e.code === 'RECOVERED' ? `vhost-user: ${e.message}` : `vhost-user: accept failed: ${e.message}`);
        }
      });
    });
  }

  private socketWorker(data: SocketWorkerData): Worker {
    const w = new Worker(new URL('./socket-worker.js', import.meta.url), { workerData: data });
    w.unref();
    return w;
  }

  private nextSession(): void {
    if (this.session || this.stopping) return;
    const fd = this.waiting.shift();
    if (fd === undefined) return;
    this.serve(fd);
  }

  private serve(fd: number): void {
    // Out of fds (EMFILE) anywhere in setting up the session is a reason to
    // turn this front-end away, never to die.
    let wakeFd = -1;
    let session: Session;
    try {
      setNonblock(fd, true);
      wakeFd = eventfdCreate(0, { nonblock: true });
      new Float64Array(this.stats.buffer).fill(0);
      session = new Session(fd, {
        pairs: this.o.pairs, maxQueueSize: this.o.maxQueueSize ?? 32768, netdev: this.link.spec,
        linkUp: this.link.up, onNetdevGone: () => this.link.check(), configNotify: this.o.configNotify,
        mode: this.o.mode ?? 'notify', budget: this.o.budget ?? 64, mac: this.o.mac ?? Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56),
        mtu: this.o.mtu ?? 1500, rss: this.o.rss ?? null, stats: this.stats.buffer, log: this.log,
        capture: this.o.capture, strict: this.o.strict, onQueueError: this.o.onQueueError,
        onRunning: () => this.emit('running', session),
      });
    } catch (e) {
      this.log(`vhost-user: cannot serve the front-end on fd ${fd}: ${(e as Error).message}; connection closed`);
      if (wakeFd >= 0) close(wakeFd);
      close(fd);
      // Client mode: try again after a pause (fds may be free by then); server mode: the next waiting front-end.
      if (this.o.client) setTimeout(() => void (this.stopping || this.connectLoop()), 1000);
      else this.nextSession();
      return;
    }
    this.session = session;
    this.log(`vhost-user: front-end connected (fd ${fd})`);
    const worker = this.socketWorker({ mode: 'read', fd, wakeFd });
    // A reader that cannot start (its module not loadable with every fd in use) ends the session, not the process.
    worker.on('error', (e) => session.peerClosed(`socket reader failed: ${e.message}`));
    // The reader exits on its own (EOF, error) or when woken; every message it
    // posted before exiting is delivered before 'exit' (fds in them included).
    const readerExited = new Promise<void>((r) => worker.once('exit', () => r()));
    worker.on('message', (e: SocketWorkerEvent) => {
      if (e.type === 'data') session.receive(e.bytes, e.fds);
      else if (e.type === 'eof') session.peerClosed('EOF');
      else if (e.type === 'error') session.peerClosed(`${e.code}: ${e.message}`);
    });
    this.emit('session', session);
    const ended = session.done.then(async () => {
      // Stop the reader BEFORE closing the socket: a reader still calling
      // recvmsg on the fd number would read the next front-end's socket
      // once the number is reused.
      worker.ref(); // unref'd while it reads; awaiting its exit must keep the process alive
      eventfdWrite(wakeFd, 1);
      await readerExited;
      close(wakeFd);
      close(fd);
      if (this.session === session) this.session = null;
      this.emit('session-end', session);
      this.log('vhost-user: connection closed; ready for the next front-end');
      if (this.o.client && !this.stopping) void this.connectLoop();
      else this.nextSession();
    });
    this.sessionEnded = ended;
  }

  /**
   * Client mode: connect, retrying with exponential back-off (50 ms .. 1 s,
   * for ever): a front-end that comes back (QEMU restarted with
   * `server=on`) waits at most about a second for serve.
   */
  private async connectLoop(): Promise<void> {
    let delay = 50;
    while (!this.stopping) {
      try {
        const fd = unixConnect(this.o.socket);
        this.serve(fd);
        return;
      } catch (e) {
        this.log(`vhost-user: connect ${this.o.socket}: ${(e as Error).message}; retrying in ${delay} ms`);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(1000, delay * 2);
      }
    }
  }

  /** Close the current session, stop listening, remove the socket. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.link.stop();
    if (this.session) await this.session.close();
    await this.sessionEnded;
    for (const fd of this.waiting.splice(0)) close(fd);
    if (this.acceptor) {
      eventfdWrite(this.acceptor.wakeFd, 1);
      await this.acceptor.worker?.terminate().catch(() => undefined);
      close(this.acceptor.wakeFd);
      this.acceptor = null;
    }
    if (this.listenFd >= 0) {
      close(this.listenFd);
      this.listenFd = -1;
      if (existsSync(this.o.socket)) unlinkSync(this.o.socket);
    }
  }
}
