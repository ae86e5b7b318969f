/**
 * The vhost-user front-end (vhost-user.rst, front-end side): the driver end
 * of `virtio-mq attach`, driving any vhost-user back-end (DPDK's vhost PMD,
 * `virtio-mq serve`, ...) over a unix socket, as DPDK's virtio-user does.
 *
 * - Guest memory is one memfd this process creates and maps
 *   (SharedArrayBuffer), passed to the back-end with SET_MEM_TABLE: guest
 *   physical address 0, user address {@link FRONTEND_USER_ADDR} (a
 *   translation base only: vring addresses are front-end user addresses).
 * - {@link NetDriver} negotiates and lays out the rings against an emulated
 *   device view ({@link NetDevice}): the back-end's features and queue count,
 *   plus a control queue this front-end serves itself, like virtio-user with
 *   `cq=1`: VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET becomes SET_VRING_ENABLE on the
 *   pairs' rings (no vhost-user back-end for net serves a controlq ring).
 *   CTRL_VQ / CTRL_RX are never passed to the back-end.
 * - Messages, in the order virtio-user sends them: GET_FEATURES,
 *   GET/SET_PROTOCOL_FEATURES (MQ, REPLY_ACK, STATUS where offered; NET_MTU
 *   with the `mtu` option), GET_QUEUE_NUM, SET_OWNER, NET_SET_MTU (with
 *   `mtu`, when VIRTIO_NET_F_MTU and NET_MTU were negotiated, as QEMU's
 *   host_mtu), SET_FEATURES, SET_STATUS, SET_MEM_TABLE, per
 *   ring SET_VRING_CALL/NUM/BASE/ADDR/KICK, SET_VRING_ENABLE for the active
 *   pairs, SET_STATUS with DRIVER_OK. With REPLY_ACK every request without
 *   an explicit reply asks for one and a refusal is an error.
 * - One worker per queue pair (front-end-worker.ts) owns its rings; kick and
 *   call eventfds are created once and passed again on every connection.
 * - Reconnect, in both socket roles: when the back-end goes away the pairs
 *   hold (no TX, rings kept), and on the next connection the setup is
 *   replayed with SET_VRING_BASE at each ring's used position: chains made
 *   available and never used are processed by the new back-end; nothing the
 *   driver holds is lost. On a clean stop each ring is disabled and
 *   GET_VRING_BASE'd on the way out.
 * - A bad back-end (a reply of the wrong size or request, a refused
 *   request, no reply within the timeout, a used id never made available, a
 *   used length beyond the buffer) is a {@link VhostUserFrontendError}, one
 *   log line, and a clean disconnect; a protocol or ring error is fatal (no
 *   reconnect: the rings can no longer be trusted).
 */
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { isMainThread, Worker } from 'node:worker_threads';
import {
  close, eventfdCreate, eventfdWrite, memfdCreate, mmapShared, sendmsg, setNonblock, unixConnect, unixListen, type HostError,
} from '../../host/index.js';
import { GuestAllocator } from '../../virtio/alloc.js';
import { GuestMemory } from '../../virtio/memory.js';
import {
  VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1,
  VIRTIO_STATUS_ACKNOWLEDGE, VIRTIO_STATUS_DRIVER, VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_FEATURES_OK,
} from '../../virtio/features.js';
import type { RingFormat } from '../../virtio/queue.js';
import type { VirtioTransport } from '../../virtio/transport.js';
import { NetDevice } from '../../net/device.js';
import { NetDriver } from '../../net/driver.js';
import {
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
} from '../../net/features.js';
import { DRV_STAT_COUNT, StatsBlock } from '../../net/stats.js';
import { GUEST_OFFLOAD_FEATURES, HOST_OFFLOAD_FEATURES } from '../../net/offloads.js';
import { CTL_ACTIVE_PAIRS, CTL_STOP, CTL_TX_STOP, SharedControl } from '../local/shared.js';
import { changeActivePairs } from '../pair-change.js';
import { stopTxAcked } from '../tx-stop.js';
import { claimSocketPath } from '../socket-path.js';
import type { SourceSpec } from '../local/sources.js';
import type { TapTrafficSpec } from '../../traffic/tap-source.js';
import {
  decodeReply, encodeRequest, hasExplicitReply, VhostUserFramer, VhostUserProtocolError, VhostUserRequest,
  VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_NET_MTU, VHOST_USER_PROTOCOL_F_REPLY_ACK, VHOST_USER_PROTOCOL_F_STATUS,
  VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, type VhostUserInflight,
  type VhostUserFrame, type VhostUserReply, type VhostUserRequestInit,
} from './messages.js';
import type { SocketWorkerData, SocketWorkerEvent } from './socket-worker.js';
import type { FrontendWorkerData, FrontendWorkerMessage } from './front-end-worker.js';
import { holdWord, linkWords } from './front-end-link.js';

/** Receive buffer size (bytes, one per receiveq descriptor). */
const RX_BUF_BYTES = 2048;
/**
 * Transmit buffer size and stride (bytes): 2048 + 128, as DPDK's mbufs. With
 * a 2048-byte stride every buffer's first lines fall in the same few cache
 * sets (the ring's 1024 buffers then miss the cache on every frame); the
 * extra 128 bytes spread them over the sets.
 */
const TX_BUF_BYTES = 2048 + 128;

/** User address of guest physical address 0 in SET_MEM_TABLE (any page-aligned value works: it is a translation base). */
export const FRONTEND_USER_ADDR = 0x7e0000000000;

/** Protocol features this front-end uses (vhost-user.rst "Protocol features"). */
export const FRONTEND_PROTOCOL_FEATURES =
  (1n << BigInt(VHOST_USER_PROTOCOL_F_MQ)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_STATUS)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD));

/**
 * Virtio features this front-end may pass to a back-end: the ring and
 * virtio-net data path features the driver implements (never CTRL_VQ /
 * CTRL_RX: the control queue is served here).
 */
export const FRONTEND_BACKEND_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_RING_PACKED | VIRTIO_F_IN_ORDER |
  VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_MTU | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MQ |
  HOST_OFFLOAD_FEATURES | GUEST_OFFLOAD_FEATURES;

/**
 * Bytes per driver TX / RX buffer (header + frame) for a front-end's options:
 * TX_BUF_BYTES (2176) / RX_BUF_BYTES (2048) for 1514-byte frames; room for 14 + 4 + `mtu` bytes of frame above
 * that; 65600 for TX when the driver may send GSO frames (HOST_ offloads:
 * up to 64 KiB + Ethernet header in one buffer). RX buffers stay 2048 with
 * MRG_RXBUF (a big frame spans several) and hold a whole frame without it.
 */
export function frontendBufSizes(o: { mtu?: number; offloads?: bigint; mrgRxbuf?: boolean }): { tx: number; rx: number } {
  const frame = Math.ceil((20 + 14 + 4 + (o.mtu || 1500)) / 64) * 64;
  const tx = (o.offloads ?? 0n) & HOST_OFFLOAD_FEATURES ? 65600 : Math.max(TX_BUF_BYTES, frame);
  return { tx, rx: o.mrgRxbuf ? RX_BUF_BYTES : Math.max(RX_BUF_BYTES, frame) };
}

/**
 * Why the front-end gave up on a back-end:
 * - `TIMEOUT`     no reply (or no connection) within the time allowed
 * - `PROTOCOL`    a reply of the wrong size, flags or request (the codec's VhostUserProtocolError is the cause)
 * - `REFUSED`     the back-end answered a REPLY_ACK with a failure
 * - `NEGOTIATION` the back-end lacks something the driver needs (VERSION_1, the ring format, enough queues),
 *                 or a reconnecting back-end offers less than the first one did
 * - `QUEUE`       the back-end broke a ring (a used id never made available, a used length beyond the buffer)
 * - `CLOSED`      the connection went away while a reply was awaited
 */
export type VhostUserFrontendErrorCode = 'TIMEOUT' | 'PROTOCOL' | 'REFUSED' | 'NEGOTIATION' | 'QUEUE' | 'CLOSED';

export class VhostUserFrontendError extends Error {
  override readonly name = 'VhostUserFrontendError';
  constructor(readonly code: VhostUserFrontendErrorCode, message: string, cause?: unknown) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause });
  }
}

export interface VhostUserFrontendOptions {
  socket: string;
  /** Listen on the socket (the back-end connects, e.g. testpmd `net_vhost ... client=1`). Default false: connect. */
  server?: boolean;
  /** Queue pairs wanted (capped by the back-end's GET_QUEUE_NUM). */
  pairs: number;
  /** Queue Size of every receiveq/transmitq. Default 256. */
  queueSize?: number;
  ring?: RingFormat;
  inOrder?: boolean;
  /** Negotiate VIRTIO_NET_F_MRG_RXBUF (when offered). Default false. */
  mrgRxbuf?: boolean;
  /** Ask for VIRTIO_F_EVENT_IDX / VIRTIO_F_INDIRECT_DESC when offered. Default true. */
  eventIdx?: boolean;
  indirect?: boolean;
  mac?: Uint8Array;
  /**
   * Offload features (offloads.ts: HOST_ and GUEST_ checksum/segmentation
   * bits, spec §5.1.3) the driver negotiates when the back-end offers them.
   * Default 0n: none. GUEST_ segmentation (TSO/UFO/USO) needs MRG_RXBUF and
   * is dropped without it (no big-buffer RX here).
   */
  offloads?: bigint;
  /**
   * Device MTU (68..9714): config `mtu` of the emulated device
   * (VIRTIO_NET_F_MTU where the back-end offers it) and, where the back-end
   * has VHOST_USER_PROTOCOL_F_NET_MTU, NET_SET_MTU to it (as QEMU's
   * `host_mtu` does). Buffers are sized for 14 + 4 + mtu bytes. Default: 0 (1500, no NET_SET_MTU).
   */
  mtu?: number;
  mode?: 'busy' | 'notify';
  budget?: number;
  /** What each pair sends and checks ('tap': the kernel's traffic through a TAP queue per pair). */
  source: (pair: number) => SourceSpec | TapTrafficSpec;
  /** Milliseconds to wait for each reply. Default 5000. */
  replyTimeoutMs?: number;
  /** Milliseconds to wait for the first connection. Default 10000. */
  connectTimeoutMs?: number;
  /** Reconnect when the back-end goes away. Default true. */
  reconnect?: boolean;
  /**
   * Negotiate VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD when offered: GET_INFLIGHT_FD
   * on the first connection, the same fd back with SET_INFLIGHT_FD on every
   * connection, so a restarted back-end knows what the dead one had in flight. Default true.
   */
  inflight?: boolean;
  log?: (line: string) => void;
  /** Capture rings by pair (QueueCapture.buffers, transport/capture.ts): the pairs tap their frames (driver-tap.ts). */
  capture?: SharedArrayBuffer[];
}

interface Connection {
  fd: number;
  framer: VhostUserFramer;
  frames: VhostUserFrame[];
  waiter: (() => void) | null;
  reader: Worker;
  readerWake: number;
  readerExited: Promise<void>;
  closed: boolean;
  closeReason: string;
}

export interface FrontendEvents {
  connected: [number];
  disconnected: [string];
  error: [VhostUserFrontendError];
  /** A pair's ring error, as its worker reported it (before the front-end fails on it): virtqueue index, code, message. */
  'queue-error': [{ pair: number; queue: number; code: string; message: string }];
}

export class VhostUserFrontend extends EventEmitter<FrontendEvents> {
  readonly stats: StatsBlock;
  readonly ctl: SharedControl;
  driver!: NetDriver;
  mem!: GuestMemory;
  /** Connections made so far (1 after start). */
  connections = 0;
  /** The fatal error that ended the front-end, if any. */
  failure: VhostUserFrontendError | null = null;
  backendFeatures = 0n;
  backendProtocolFeatures = 0n;
  /** Features passed to the back-end with SET_FEATURES. */
  negotiated = 0n;
  backendQueuePairs = 1;
  private readonly o: Required<Omit<VhostUserFrontendOptions, 'mac' | 'log' | 'capture'>> & Pick<VhostUserFrontendOptions, 'mac' | 'capture'>;
  private readonly log: (line: string) => void;
  private memFd = -1;
  private memSize = 0;
  /** The back-end's inflight buffer (GET_INFLIGHT_FD), kept across reconnects (-1: none yet). */
  private inflightFd = -1;
  private inflightDesc: VhostUserInflight | null = null;
  private device!: NetDevice;
  private kickFds: number[] = [];
  private callFds: number[] = [];
  private wakeFds: number[] = [];
  private readonly link: Int32Array;
  private workers: Worker[] = [];
  private workerExits: Promise<void>[] = [];
  private conn: Connection | null = null;
  private listenFd = -1;
  private acceptor: { worker: Worker; wakeFd: number } | null = null;
  private accepted: number[] = [];
  private acceptWaiter: (() => void) | null = null;
  private stopping = false;
  private reconnecting: Promise<void> | null = null;
  /** Active pairs as the back-end last saw them (rings enabled). */
  private enabledPairs = 0;
  private ctrlWork: Promise<void> = Promise.resolve();

  constructor(opts: VhostUserFrontendOptions) {
    super();
    if (!(opts.pairs >= 1 && opts.pairs <= 128)) throw new RangeError('pairs must be 1..128');
    this.o = {
      server: false, queueSize: 256, ring: 'split', inOrder: false, mrgRxbuf: false, eventIdx: true, indirect: true,
      mode: 'notify', budget: 64, replyTimeoutMs: 5000, connectTimeoutMs: 10000, reconnect: true, inflight: true, offloads: 0n, mtu: 0, ...opts,
    };
    this.log = opts.log ?? ((l) => console.error(l));
    this.stats = new StatsBlock(opts.pairs, DRV_STAT_COUNT);
    this.ctl = new SharedControl(opts.pairs);
    this.link = new Int32Array(new SharedArrayBuffer(4 * linkWords(opts.pairs)));
    this.link[0] = 1; // held until the first connection is set up
  }

  /** True while a back-end is connected and set up. */
  get connected(): boolean {
    return this.conn !== null && !this.conn.closed && (Atomics.load(this.link, 0) & 1) === 0;
  }

  /**
   * Create guest memory, connect (or listen and accept), negotiate, set up
   * every ring, start the pair workers. Resolves once traffic can flow.
   * @throws VhostUserFrontendError (the front-end is stopped then), HostError for socket/memfd failures.
   */
  async start(): Promise<void> {
    const { pairs, queueSize } = this.o;
    const buf = frontendBufSizes(this.o);
    const bytes = pairs * (queueSize * (buf.tx + buf.rx + 128) + 2 * (queueSize * 24 + 8192)) + (1 << 20);
    this.memSize = Math.ceil(bytes / (2 << 20)) * (2 << 20);
    this.memFd = memfdCreate('virtio-mq-attach', this.memSize);
    const sab = mmapShared(this.memFd, this.memSize);
    this.mem = new GuestMemory([{ guestPhysAddr: 0, size: this.memSize, buffer: sab }]);
    for (let q = 0; q < 2 * pairs; q++) {
      this.kickFds.push(eventfdCreate(0, { nonblock: true }));
      this.callFds.push(eventfdCreate(0, { nonblock: true }));
    }
    for (let p = 0; p < pairs; p++) this.wakeFds.push(eventfdCreate(0, { nonblock: true }));
    try {
      if (this.o.server) await this.listen();
      const fd = await this.nextConnection(this.o.connectTimeoutMs);
      await this.setUp(fd, true);
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  // -------------------------------------------------------------------------
  // Connections

  private async listen(): Promise<void> {
    const path = this.o.socket;
    await claimSocketPath(path, 'vhost-user:', this.log);
    const oldMask = isMainThread ? process.umask(0o177) : undefined;
    try {
      this.listenFd = unixListen(path, { mode: 0o600, nonblock: true });
    } finally {
      if (oldMask !== undefined) process.umask(oldMask);
    }
    this.log(`vhost-user front-end: listening on ${path}`);
    this.startAcceptor(eventfdCreate(0, { nonblock: true }));
  }

  /** The accept worker; one that cannot load (every fd in use) is logged and started again 100 ms later. */
  private startAcceptor(wakeFd: number): void {
    const worker = new Worker(new URL('./socket-worker.js', import.meta.url), {
      workerData: { mode: 'accept', fd: this.listenFd, wakeFd } satisfies SocketWorkerData,
    });
    worker.unref();
    worker.on('message', (e: SocketWorkerEvent) => {
      if (e.type === 'accepted') {
        this.accepted.push(e.fd);
        this.acceptWaiter?.();
      } else if (e.type === 'error') this.log(`vhost-user front-end: accept: ${e.message}`);
    });
    worker.on('error', (e) => {
      if (this.acceptor?.worker !== worker) return;
      this.log(`vhost-user front-end: accept worker failed: ${e.message}; starting it again in 100 ms`);
      setTimeout(() => {
        if (!this.stopping && this.acceptor?.worker === worker) this.startAcceptor(wakeFd);
      }, 100).unref();
    });
    this.acceptor = { worker, wakeFd };
  }

  /** The next back-end connection: accepted (server) or connected with retries (client). */
  private async nextConnection(timeoutMs: number): Promise<number> {
    const until = Date.now() + timeoutMs;
    let delay = 20;
    for (;;) {
      if (this.stopping) throw new VhostUserFrontendError('CLOSED', 'stopping');
      if (this.o.server) {
        const fd = this.accepted.shift();
        if (fd !== undefined) return fd;
        if (Date.now() > until) throw new VhostUserFrontendError('TIMEOUT', `no back-end connected to ${this.o.socket} within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.min(200, Math.max(1, until - Date.now())));
          this.acceptWaiter = () => { clearTimeout(t); r(); };
        });
        this.acceptWaiter = null;
        continue;
      }
      try {
        return unixConnect(this.o.socket);
      } catch (e) {
        const code = (e as HostError).code;
        if (code !== 'ENOENT' && code !== 'ECONNREFUSED' && code !== 'EAGAIN') throw e;
        if (Date.now() > until) throw new VhostUserFrontendError('TIMEOUT', `cannot connect to ${this.o.socket} within ${timeoutMs} ms (${code})`);
        await sleep(Math.min(delay, Math.max(1, until - Date.now())));
        delay = Math.min(500, delay * 2);
      }
    }
  }

  private open(fd: number): Connection {
    setNonblock(fd, true);
    const readerWake = eventfdCreate(0, { nonblock: true });
    const reader = new Worker(new URL('./socket-worker.js', import.meta.url), {
      workerData: { mode: 'read', fd, wakeFd: readerWake } satisfies SocketWorkerData,
    });
    reader.unref();
    const c: Connection = {
      fd, framer: new VhostUserFramer(), frames: [], waiter: null, reader, readerWake,
      readerExited: new Promise((r) => reader.once('exit', () => r())), closed: false, closeReason: '',
    };
    // A reader that cannot start (its module not loadable with every fd in use) loses this connection, not the process.
    reader.on('error', (e) => void this.lost(c, `socket reader failed: ${e.message}`));
    reader.on('message', (e: SocketWorkerEvent) => {
      if (c.closed) {
        if (e.type === 'data') for (const f of e.fds) safeClose(f);
        return;
      }
      if (e.type === 'data') {
        try {
          c.framer.push(e.bytes, e.fds);
          for (let f = c.framer.next(); f; f = c.framer.next()) c.frames.push(f);
        } catch (err) {
          const pe = err as VhostUserProtocolError;
          for (const f of pe.fds ?? []) safeClose(f);
          this.fail(new VhostUserFrontendError('PROTOCOL', `bad message from the back-end: ${pe.message}`, pe));
          return;
        }
        if (c.frames.length > 0 && !c.waiter) {
          const f = c.frames.shift()!;
          for (const x of f.fds) safeClose(x);
          this.fail(new VhostUserFrontendError('PROTOCOL', `unexpected message from the back-end (request ${f.header.request}) while no reply was awaited`));
          return;
        }
        c.waiter?.();
      } else {
        const why = e.type === 'eof' ? 'the back-end closed the connection' : `socket error ${e.type === 'error' ? `${e.code}: ${e.message}` : ''}`;
        void this.lost(c, why);
      }
    });
    this.conn = c;
    return c;
  }

  /** Close a connection (idempotent): stop its reader before the fd number can be reused. */
  private async closeConn(c: Connection, reason: string): Promise<void> {
    if (c.closed) return;
    c.closed = true;
    c.closeReason = reason;
    c.waiter?.();
    c.reader.ref(); // unref'd while it reads; its exit is awaited now, which must keep the process alive
    eventfdWrite(c.readerWake, 1);
    await c.readerExited;
    close(c.readerWake);
    close(c.fd);
    for (const f of c.frames) for (const x of f.fds) safeClose(x);
    for (const x of c.framer.abort()) safeClose(x);
    c.frames = [];
    if (this.conn === c) this.conn = null;
  }

  /** The back-end went away: hold the pairs and (unless stopping) wait for the next one. */
  private async lost(c: Connection, why: string): Promise<void> {
    if (c.closed) return;
    this.log(`vhost-user front-end: ${why}`);
    this.hold();
    await this.closeConn(c, why);
    this.emit('disconnected', why);
    if (this.stopping || !this.o.reconnect || this.failure || this.reconnecting) return;
    this.reconnecting = this.reconnectLoop().finally(() => (this.reconnecting = null));
  }

  private async reconnectLoop(): Promise<void> {
    while (!this.stopping && !this.failure) {
      let fd: number;
      try {
        fd = await this.nextConnection(60_000);
      } catch (e) {
        if (this.stopping) return;
        if (e instanceof VhostUserFrontendError && e.code === 'TIMEOUT') continue;
        this.log(`vhost-user front-end: reconnect: ${(e as Error).message}`);
        await sleep(500);
        continue;
      }
      try {
        await this.setUp(fd, false);
        return;
      } catch (e) {
        // setUp failed: fail() already logged and closed; a fatal error ends the loop.
        if (this.failure || this.stopping) return;
        this.log(`vhost-user front-end: set-up failed: ${(e as Error).message}; waiting for the next back-end`);
      }
    }
  }

  /** A fatal error: log it, disconnect cleanly, do not reconnect. */
  private fail(e: VhostUserFrontendError): void {
    if (!this.failure) {
      this.failure = e;
      this.log(`vhost-user front-end: ${e.message}; disconnecting`);
      this.emit('error', e);
    }
    this.hold();
    const c = this.conn;
    if (c) void this.closeConn(c, e.message).then(() => this.emit('disconnected', e.message));
  }

  // -------------------------------------------------------------------------
  // Requests

  private send(c: Connection, init: VhostUserRequestInit): void {
    if (c.closed) throw new VhostUserFrontendError('CLOSED', `${init.type}: ${c.closeReason || 'connection closed'}`);
    const m = encodeRequest(init);
    let off = 0;
    let fds: number[] = m.fds;
    const until = Date.now() + this.o.replyTimeoutMs;
    while (off < m.bytes.length) {
      let n: number | null;
      try {
        n = sendmsg(c.fd, m.bytes.subarray(off), fds);
      } catch (e) {
        throw new VhostUserFrontendError('CLOSED', `${init.type}: ${(e as Error).message}`, e);
      }
      if (n === null) {
        if (Date.now() > until) throw new VhostUserFrontendError('TIMEOUT', `${init.type}: the back-end does not read its socket`);
        continue; // messages are small: the socket buffer drains quickly
      }
      off += n;
      fds = [];
    }
  }

  private async reply(c: Connection, request: number, what: string): Promise<VhostUserReply> {
    const until = Date.now() + this.o.replyTimeoutMs;
    while (c.frames.length === 0) {
      if (c.closed) throw new VhostUserFrontendError('CLOSED', `${what}: ${c.closeReason || 'connection closed'} before the reply`);
      const left = until - Date.now();
      if (left <= 0) throw new VhostUserFrontendError('TIMEOUT', `${what}: no reply within ${this.o.replyTimeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        c.waiter = () => { clearTimeout(t); r(); };
      });
      c.waiter = null;
    }
    const f = c.frames.shift()!;
    try {
      return decodeReply(request, f.header, f.payload, f.fds);
    } catch (e) {
      for (const x of f.fds) safeClose(x);
      throw new VhostUserFrontendError('PROTOCOL', `${what}: ${(e as Error).message}`, e);
    }
  }

  /**
   * Send one request; await its explicit reply, or its REPLY_ACK when
   * REPLY_ACK was negotiated. Any failure is fatal for the connection.
   */
  private async request(c: Connection, init: VhostUserRequestInit): Promise<VhostUserReply | null> {
    const code = VhostUserRequest[init.type];
    const explicit = hasExplicitReply(code);
    const ack = !explicit && this.replyAck;
    try {
      this.send(c, ack ? ({ ...init, needReply: true } as VhostUserRequestInit) : init);
      if (!explicit && !ack) return null;
      const r = await this.reply(c, code, init.type);
      if (ack) {
        if (r.type !== 'ACK') throw new VhostUserFrontendError('PROTOCOL', `${init.type}: expected a REPLY_ACK, got ${r.type}`);
        if (r.result !== 0n) throw new VhostUserFrontendError('REFUSED', `${init.type}: the back-end refused it (REPLY_ACK ${r.result})`);
      }
      return r;
    } catch (e) {
      const fe = e instanceof VhostUserFrontendError ? e : new VhostUserFrontendError('PROTOCOL', `${init.type}: ${(e as Error).message}`, e);
      if (fe.code === 'CLOSED' && !this.failure) {
        void this.lost(c, fe.message);
      } else this.fail(fe);
      throw fe;
    }
  }

  private replyAck = false;

  private get protocolFeaturesOn(): boolean {
    return (this.backendFeatures & VHOST_USER_F_PROTOCOL_FEATURES_MASK) !== 0n;
  }

  private hasProtocol(bit: number): boolean {
    return (this.backendProtocolFeatures & (1n << BigInt(bit))) !== 0n;
  }

  // -------------------------------------------------------------------------
  // Set-up

  /** Negotiate on a new connection; the first time also run the driver's initialisation and start the pairs. */
  private async setUp(fd: number, first: boolean): Promise<void> {
    const c = this.open(fd);
    this.replyAck = false;
    const get = async <T extends VhostUserReply['type']>(init: VhostUserRequestInit, type: T) => {
      const r = await this.request(c, init);
      if (!r || r.type !== type) throw new VhostUserFrontendError('PROTOCOL', `${init.type}: unexpected reply`);
      return r as Extract<VhostUserReply, { type: T }>;
    };
    const features = (await get({ type: 'GET_FEATURES' }, 'GET_FEATURES')).features;
    let protocol = 0n;
    if (features & VHOST_USER_F_PROTOCOL_FEATURES_MASK) {
      const offered = (await get({ type: 'GET_PROTOCOL_FEATURES' }, 'GET_PROTOCOL_FEATURES')).features;
      protocol = offered & (FRONTEND_PROTOCOL_FEATURES | (this.o.mtu ? 1n << BigInt(VHOST_USER_PROTOCOL_F_NET_MTU) : 0n));
      if (!this.o.inflight) protocol &= ~(1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD));
      await this.request(c, { type: 'SET_PROTOCOL_FEATURES', features: protocol });
    }
    this.backendProtocolFeatures = protocol;
    this.replyAck = (protocol & (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK))) !== 0n;
    let queuePairs = 1;
    if (this.hasProtocol(VHOST_USER_PROTOCOL_F_MQ) && (features & VIRTIO_NET_F_MQ)) {
      queuePairs = (await get({ type: 'GET_QUEUE_NUM' }, 'GET_QUEUE_NUM')).queueNum;
      if (queuePairs < 1) throw this.failWith('NEGOTIATION', `GET_QUEUE_NUM answered ${queuePairs}`);
    }
    await this.request(c, { type: 'SET_OWNER' });
    if (first) {
      this.backendFeatures = features;
      this.backendQueuePairs = queuePairs;
      await this.initDriver();
    } else {
      const missing = this.negotiated & ~features & ~VHOST_USER_F_PROTOCOL_FEATURES_MASK;
      if (missing !== 0n) throw this.failWith('NEGOTIATION', `the new back-end lacks features 0x${missing.toString(16)} the rings use`);
      if (queuePairs < this.driver.pairs) throw this.failWith('NEGOTIATION', `the new back-end has ${queuePairs} queue pairs, the driver uses ${this.driver.pairs}`);
      this.backendFeatures = features;
    }
    const status = this.hasProtocol(VHOST_USER_PROTOCOL_F_STATUS);
    // QEMU's host_mtu: the MTU goes to a back-end that takes it, when the driver accepted VIRTIO_NET_F_MTU.
    if (this.o.mtu && (this.negotiated & VIRTIO_NET_F_MTU) && this.hasProtocol(VHOST_USER_PROTOCOL_F_NET_MTU)) {
      await this.request(c, { type: 'NET_SET_MTU', mtu: this.o.mtu });
    }
    await this.request(c, { type: 'SET_FEATURES', features: this.negotiated | (features & VHOST_USER_F_PROTOCOL_FEATURES_MASK) });
    if (status) {
      await this.request(c, { type: 'SET_STATUS', status: VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK });
    }
    await this.request(c, {
      type: 'SET_MEM_TABLE',
      regions: [{ guestAddr: 0, size: this.memSize, userAddr: FRONTEND_USER_ADDR, mmapOffset: 0, fd: this.memFd }],
    });
    if (this.hasProtocol(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)) {
      // As QEMU's vhost-user-blk: one buffer for the device's life, given to every back-end before its rings start.
      if (this.inflightFd < 0) {
        const r = await get({ type: 'GET_INFLIGHT_FD', numQueues: 2 * this.driver.pairs, queueSize: this.o.queueSize }, 'GET_INFLIGHT_FD');
        this.inflightFd = r.fd;
        this.inflightDesc = r.inflight;
        this.log(`vhost-user front-end: inflight buffer from the back-end: ${r.inflight.numQueues} queues, ${r.inflight.mmapSize} bytes`);
      }
      await this.request(c, { type: 'SET_INFLIGHT_FD', ...this.inflightDesc!, fd: this.inflightFd });
    }
    if (first) await this.startWorkers();
    const bases = await this.heldBases();
    const drv = this.driver;
    for (let p = 0; p < drv.pairs; p++) {
      const s = drv.pairSetup(p);
      for (const [i, layout] of [[2 * p, s.rx], [2 * p + 1, s.tx]] as const) {
        await this.request(c, { type: 'SET_VRING_CALL', index: i, fd: this.callFds[i] });
        await this.request(c, { type: 'SET_VRING_NUM', index: i, num: layout.size });
        const base = bases[i];
        await this.request(c, { type: 'SET_VRING_BASE', index: i, num: base & 0xffff });
        await this.request(c, {
          type: 'SET_VRING_ADDR', index: i, flags: 0,
          descUserAddr: FRONTEND_USER_ADDR + layout.descAddr, usedUserAddr: FRONTEND_USER_ADDR + layout.deviceAddr,
          availUserAddr: FRONTEND_USER_ADDR + layout.driverAddr, logGuestAddr: 0,
        });
        await this.request(c, { type: 'SET_VRING_KICK', index: i, fd: this.kickFds[i] });
      }
    }
    this.enabledPairs = this.protocolFeaturesOn ? 0 : drv.pairs;
    await this.enablePairs(c, drv.activePairs);
    if (status) {
      await this.request(c, {
        type: 'SET_STATUS', status: VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK,
      });
    }
    this.connections++;
    this.log(`vhost-user front-end: connected to the back-end (connection ${this.connections}), ${drv.pairs} pairs, ${drv.activePairs} active${first ? '' : ', rings resumed'}`);
    this.release();
    this.emit('connected', this.connections);
  }

  private failWith(code: VhostUserFrontendErrorCode, msg: string): VhostUserFrontendError {
    const e = new VhostUserFrontendError(code, msg);
    this.fail(e);
    return e;
  }

  /**
   * The driver's initialisation (§3.1.1) against the emulated device view:
   * the back-end's offer (data path features only) plus the control queue
   * served here, config space built here (MAC, STATUS link up, max pairs).
   */
  private async initDriver(): Promise<void> {
    const offer = this.backendFeatures & FRONTEND_BACKEND_FEATURES;
    const pairs = Math.max(1, Math.min(this.o.pairs, this.backendQueuePairs));
    let devFeatures = offer | VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS;
    if (pairs > 1 && (offer & VIRTIO_NET_F_MQ)) devFeatures |= VIRTIO_NET_F_MQ;
    else devFeatures &= ~VIRTIO_NET_F_MQ;
    this.device = new NetDevice({ maxPairs: pairs, mac: this.o.mac, maxQueueSize: 32768, features: devFeatures, mtu: this.o.mtu || undefined });
    this.device.on('control', (s) => {
      const n = s.activePairs;
      this.ctrlWork = this.ctrlWork.then(async () => {
        const c = this.conn;
        if (c && !c.closed && this.enabledPairs > 0) await this.enablePairs(c, n);
      }).catch(() => undefined);
    });
    const alloc = new GuestAllocator(4096, this.memSize);
    let wanted = devFeatures;
    if (!this.o.mrgRxbuf) wanted &= ~VIRTIO_NET_F_MRG_RXBUF;
    if (!this.o.eventIdx) wanted &= ~VIRTIO_F_EVENT_IDX;
    if (!this.o.indirect) wanted &= ~VIRTIO_F_INDIRECT_DESC;
    let offloads = this.o.offloads & (HOST_OFFLOAD_FEATURES | GUEST_OFFLOAD_FEATURES);
    if (!this.o.mrgRxbuf) offloads &= ~GUEST_OFFLOAD_FEATURES | VIRTIO_NET_F_GUEST_CSUM;
    wanted &= ~(HOST_OFFLOAD_FEATURES | GUEST_OFFLOAD_FEATURES) | offloads;
    const buf = frontendBufSizes(this.o);
    const dev = this.device;
    const t: VirtioTransport = {
      deviceFeatures: () => dev.offered,
      setDriverFeatures: (f) => void dev.setDriverFeatures(f),
      getStatus: () => dev.status,
      setStatus: (s) => dev.setStatus(s),
      readConfig: () => dev.readConfig(),
      numQueues: () => dev.numQueues,
      queueMaxSize: () => 32768,
      setQueue: (i, l) => dev.setQueue(i, l),
      notify: (i) => {
        if (i === dev.controlqIndex) dev.processControlq(this.mem);
      },
    };
    this.driver = new NetDriver(t, this.mem, alloc, {
      pairs, queueSize: this.o.queueSize, wanted, ring: this.o.ring, inOrder: this.o.inOrder, txBufSize: buf.tx, rxBufSize: buf.rx,
    });
    try {
      await this.driver.init();
    } catch (e) {
      throw this.failWith('NEGOTIATION', (e as Error).message);
    }
    this.negotiated = this.driver.features & FRONTEND_BACKEND_FEATURES & this.backendFeatures;
    this.ctl.set(CTL_ACTIVE_PAIRS, this.driver.activePairs);
  }

  private async startWorkers(): Promise<void> {
    const drv = this.driver;
    const ready: Promise<void>[] = [];
    for (let p = 0; p < drv.pairs; p++) {
      const s = drv.pairSetup(p);
      const data: FrontendWorkerData = {
        pair: p, maxPairs: this.o.pairs, regions: [...this.mem.specs], rx: s.rx, tx: s.tx,
        rings: drv.rings, mrgRxbuf: drv.mrgRxbuf, hdrLen: drv.hdrLen,
        txBufAddr: s.txBufAddr, txBufSize: s.txBufSize, rxBufAddr: s.rxBufAddr, rxBufSize: s.rxBufSize,
        mode: this.o.mode, budget: this.o.budget, control: this.ctl.buffer, stats: this.stats.buffer,
        source: this.o.source(p),
        kickFds: [this.kickFds[2 * p], this.kickFds[2 * p + 1]], callFds: [this.callFds[2 * p], this.callFds[2 * p + 1]],
        wakeFd: this.wakeFds[p], link: this.link.buffer as SharedArrayBuffer, capture: this.o.capture?.[p],
      };
      const w = new Worker(new URL('./front-end-worker.js', import.meta.url), { workerData: data });
      this.workerExits.push(new Promise((r) => w.once('exit', () => r())));
      ready.push(new Promise((res, rej) => {
        w.on('message', (m: FrontendWorkerMessage) => {
          if (m.type === 'ready') res();
          else if (m.type === 'queue-error') {
            this.emit('queue-error', { pair: p, queue: m.queue, code: m.code, message: m.message });
            this.fail(new VhostUserFrontendError('QUEUE', `pair ${p}: ${m.code}: ${m.message}`));
          }
        });
        w.once('error', (e) => {
          this.fail(new VhostUserFrontendError('QUEUE', `pair ${p} worker crashed: ${e.message}`));
          rej(e);
        });
      }));
      this.workers.push(w);
    }
    await Promise.all(ready);
  }

  private wakeWorkers(): void {
    for (const fd of this.wakeFds) eventfdWrite(fd, 1);
  }

  /** Link down: the pairs stop sending and report where their rings stand. */
  private hold(): void {
    const e = Atomics.load(this.link, 0);
    if ((e & 1) === 0) Atomics.store(this.link, 0, e + 1);
    this.wakeWorkers();
  }

  private release(): void {
    const e = Atomics.load(this.link, 0);
    if ((e & 1) === 1) Atomics.store(this.link, 0, e + 1);
    this.wakeWorkers();
  }

  /** Wait until every pair acked the current hold; returns each ring's used position (by queue index). */
  private async heldBases(): Promise<number[]> {
    const epoch = Atomics.load(this.link, 0);
    if ((epoch & 1) === 0) throw new Error('internal: heldBases without a hold');
    const until = Date.now() + 5000;
    const bases: number[] = [];
    for (let p = 0; p < this.driver.pairs; p++) {
      const w = holdWord(p);
      while (Atomics.load(this.link, w) !== epoch) {
        if (Date.now() > until) throw this.failWith('QUEUE', `pair ${p} did not settle its rings for the hold`);
        this.wakeWorkers();
        await sleep(1);
      }
      bases.push(this.link[w + 1], this.link[w + 2]);
    }
    return bases;
  }

  /** SET_VRING_ENABLE so that exactly pairs 0..n-1 are enabled (virtio-user's VQ_PAIRS_SET without a controlq). */
  private async enablePairs(c: Connection, n: number): Promise<void> {
    if (!this.protocolFeaturesOn) return; // rings start enabled without protocol features
    const from = this.enabledPairs;
    if (n > from) {
      for (let p = from; p < n; p++) {
        await this.request(c, { type: 'SET_VRING_ENABLE', index: 2 * p, enable: true });
        await this.request(c, { type: 'SET_VRING_ENABLE', index: 2 * p + 1, enable: true });
      }
    } else {
      for (let p = n; p < from; p++) {
        await this.request(c, { type: 'SET_VRING_ENABLE', index: 2 * p, enable: false });
        await this.request(c, { type: 'SET_VRING_ENABLE', index: 2 * p + 1, enable: false });
      }
    }
    this.enabledPairs = n;
  }

  // -------------------------------------------------------------------------
  // Run time

  /**
   * Change the active pair count without reordering any flow: pause TX on
   * every pair, wait until every transmitq is drained and `inFlight()` says
   * nothing is between TX and RX, send VQ_PAIRS_SET on the (emulated)
   * controlq, which enables/disables the pairs' rings on the back-end, call
   * `beforeResume` (re-assign flows), then resume.
   * @throws Error when a pair does not drain in `timeoutMs`.
   */
  async setActivePairs(n: number, inFlight: () => number, beforeResume: () => void = () => {}, timeoutMs = 10000): Promise<void> {
    await changeActivePairs({
      ctl: this.ctl, pairs: this.driver.pairs, wake: () => this.wakeWorkers(), inFlight, beforeResume, timeoutMs,
      apply: async () => {
        await this.driver.setActivePairs(n);
        await this.ctrlWork;
        this.ctl.set(CTL_ACTIVE_PAIRS, n);
      },
    });
  }

  /**
   * Stop new TX on every pair. Resolves once every pair worker has done its
   * last TX round (tx-stop.ts), so the TX counters are final; at once when
   * no worker runs (not connected yet, or failed), at most `timeoutMs`
   * later for a worker that does not answer.
   */
  async stopTx(timeoutMs = 2000): Promise<void> {
    const running = this.failure ? 0 : Math.min(this.workers.length, this.ctl.maxPairs);
    if (running === 0) this.ctl.set(CTL_TX_STOP, 1);
    else await stopTxAcked(this.ctl, running, () => this.wakeWorkers(), timeoutMs);
  }

  /**
   * Stop: disable every ring and GET_VRING_BASE it (when connected), close
   * the connection, stop the workers, close every fd, remove the socket
   * (server). Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.acceptWaiter?.();
    const c = this.conn;
    if (c && !c.closed && !this.failure && this.driver) {
      try {
        this.hold();
        for (let p = 0; p < this.driver.pairs; p++) {
          for (const i of [2 * p, 2 * p + 1]) {
            if (this.protocolFeaturesOn) await this.request(c, { type: 'SET_VRING_ENABLE', index: i, enable: false });
            const r = await this.request(c, { type: 'GET_VRING_BASE', index: i });
            if (r && r.type === 'GET_VRING_BASE' && i < 2) this.log(`vhost-user front-end: vring ${i} stopped at ${r.num & 0xffff}`);
          }
        }
      } catch {
        // logged by request(); go on closing
      }
    }
    if (this.conn) await this.closeConn(this.conn, 'stopped');
    await this.reconnecting;
    this.ctl.set(CTL_STOP, 1);
    this.wakeWorkers();
    await Promise.all(this.workerExits.map((p, i) => {
      const t = setTimeout(() => void this.workers[i].terminate(), 3000);
      return p.then(() => clearTimeout(t));
    }));
    if (this.acceptor) {
      eventfdWrite(this.acceptor.wakeFd, 1);
      await this.acceptor.worker.terminate().catch(() => undefined);
      close(this.acceptor.wakeFd);
      this.acceptor = null;
    }
    for (const fd of this.accepted.splice(0)) safeClose(fd);
    if (this.listenFd >= 0) {
      close(this.listenFd);
      this.listenFd = -1;
      try {
        unlinkSync(this.o.socket);
      } catch {
        // already gone
      }
    }
    for (const fd of [...this.kickFds, ...this.callFds, ...this.wakeFds]) safeClose(fd);
    this.kickFds = [];
    this.callFds = [];
    this.wakeFds = [];
    if (this.memFd >= 0) safeClose(this.memFd);
    this.memFd = -1;
    if (this.inflightFd >= 0) safeClose(this.inflightFd);
    this.inflightFd = -1;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function safeClose(fd: number): void {
  try {
    close(fd);
  } catch {
    // already closed
  }
}
