/**
 * One vhost-user front-end connection, back-end side (vhost-user.rst): the
 * negotiated features, the memory table mapped as SharedArrayBuffers, the
 * state of every vring, and one worker per queue pair that runs while both
 * of its rings are started and enabled ("Ring states": a ring starts on its
 * kick fd, and with VHOST_USER_F_PROTOCOL_FEATURES also needs
 * SET_VRING_ENABLE 1; GET_VRING_BASE stops it).
 *
 * Every message is decoded and validated (messages.ts) before it acts. A bad
 * message gets a failure reply when the front-end asked for one
 * (REPLY_ACK / NEED_REPLY); otherwise the connection is closed, with one log
 * line either way. Received fds are always either kept (and closed when
 * replaced or at the end) or closed at once.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { close, eventfdCreate, eventfdWrite, guestMappingFaults, mmapShared, releaseShared, sendmsg, setNonblock, tunSetQueue, writevFrames } from '../../host/index.js';
import { makeRarpFrame } from '../../net/rarp.js';
import { GuestMemory, type RegionSpec } from '../../virtio/memory.js';
import {
  VIRTIO_F_EVENT_IDX, VIRTIO_F_IN_ORDER, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureNames, VIRTIO_FEATURE_NAMES,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
} from '../../virtio/features.js';
import type { QueueLayout, QueueState, RingFormat } from '../../virtio/queue.js';

import { MAX_QUEUE_SIZE, queuePartBytes, queueSizeProblem, ringFeatures, ringFormat } from '../../virtio/ring.js';
import { defaultNetConfig, encodeNetConfig, VIRTIO_NET_S_LINK_UP } from '../../net/config.js';
import {
  NET_FEATURE_NAMES, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
} from '../../net/features.js';
import { netHdrSize } from '../../net/hdr.js';
import { NET_OFFLOAD_FEATURES } from '../../net/offloads.js';
import { offloadOptions, applyTapOffloads } from './net-offloads.js';
import { activePairCount } from './active-pairs.js';
import { splitResumeBase } from './split-resume.js';
import { DeviceSteering } from '../../net/steering.js';
import type { RssConfig } from '../../net/rss.js';
import { FrameRing } from '../../net/frame-ring.js';
import type { NetdevSpec } from '../../netdev/spec.js';
import {
  decodeRequest, encodeGetConfigReply, encodeHeader, encodeReplyAck, encodeStatusReply, encodeU64, encodeU64Reply, encodeVringBaseReply,
  VHOST_USER_HEADER_SIZE, VHOST_USER_REPLY_MASK, VHOST_USER_VERSION,
  hasExplicitReply, VhostUserFramer, VhostUserProtocolError,
  VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
  VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_NET_MTU, VHOST_USER_PROTOCOL_F_RARP, VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_PROTOCOL_F_STATUS, requestName,
  VHOST_USER_PROTOCOL_F_BACKEND_REQ, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG,
  encodeSetLogBaseReply, VHOST_F_LOG_ALL, VHOST_USER_PROTOCOL_F_LOG_SHMFD,
  type EncodedVhostUserMessage, type VhostUserMessage, type VhostUserMemoryRegion, type VhostUserFrame,
} from './messages.js';
import type { PairControl, PairWorkerData, PairWorkerReport } from './pair-worker.js';
import { encodeInflightFdReply, VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD } from './messages.js';
import { createInflightBuffer, inflightOffset, mapInflightBuffer, type InflightBuffer } from './inflight-region.js';
import { InflightError } from '../../virtio/inflight/region.js';
import { mapDirtyLog, type MappedLog } from './log.js';
import { DirtyLog } from '../../virtio/dirty-log.js';

/** VMQ_TRACE_VHOST=1: one log line per request received (debugging a front-end's sequence). */
const TRACE = process.env.VMQ_TRACE_VHOST === '1';

/** A request in one line: its type and its scalar fields (TRACE). */
function describeMessage(m: VhostUserMessage): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(m)) {
    if (k === 'type' || k === 'request' || k === 'fds' || k === 'needReply') continue;
    if (typeof v === 'number' || typeof v === 'boolean') parts.push(`${k}=${v}`);
    else if (typeof v === 'bigint') parts.push(`${k}=0x${v.toString(16)}`);
  }
  return `${m.type} ${parts.join(' ')}`;
}

/** VHOST_F_LOG_ALL as a feature mask: the front-end is migrating the guest; every device write is logged. */
export const LOG_ALL_MASK = 1n << BigInt(VHOST_F_LOG_ALL);

/** Virtio features the back-end offers (what NetDevicePair implements; the front-end keeps the controlq). */
export const VHOST_NET_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_IN_ORDER | VIRTIO_F_RING_PACKED |
  VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_MTU | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MQ |
  VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_CTRL_RX | NET_OFFLOAD_FEATURES | VHOST_USER_F_PROTOCOL_FEATURES_MASK |
  (1n << BigInt(VHOST_F_LOG_ALL));

/**
 * Protocol features offered (vhost-user.rst "Protocol features"). Not CONFIG:
 * virtio-net's config space belongs to the front-end (QEMU warns when a net
 * back-end offers it); GET_CONFIG is still answered if sent.
 */
export const VHOST_NET_PROTOCOL_FEATURES =
  (1n << BigInt(VHOST_USER_PROTOCOL_F_MQ)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_NET_MTU)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_RARP)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_STATUS)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_LOG_SHMFD)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD));

/**
 * Offered as well with `configNotify` (serve --config-notify): BACKEND_REQ and
 * CONFIG, so that a front-end that takes them hears of link changes
 * (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, then GET_CONFIG's status).
 */
export const VHOST_NET_CONFIG_NOTIFY_FEATURES =
  (1n << BigInt(VHOST_USER_PROTOCOL_F_BACKEND_REQ)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_CONFIG));

/** Memory slots offered with CONFIGURE_MEM_SLOTS (GuestMemory's limit). */
export const MAX_MEM_SLOTS = 509;

export interface SessionOptions {
  pairs: number;
  maxQueueSize: number;
  netdev: NetdevSpec;
  mode: 'busy' | 'notify';
  budget: number;
  mac: Uint8Array;
  mtu: number;
  rss: RssConfig | null;
  /** Per-pair device counters (DEV_STAT_COUNT each), shared with the workers. */
  stats: SharedArrayBuffer;
  /** One log line; `detail` carries the same facts as fields (serve --json prints them). */
  log: (line: string, detail?: Record<string, unknown>) => void;
  /** Capture rings by pair (transport/capture.ts). */
  capture?: SharedArrayBuffer[];
  /** --strict: strict-only ring checks in the workers (virtio/conformance.ts). */
  strict?: boolean;
  /** Every queue error a pair worker reports (code as errors.ts names it), with the negotiated ring format: conformance checks. */
  onQueueError?: (queue: number, code: string, message: string, format: RingFormat) => void;
  /** Whether the netdev's device is there now (link.ts); default true. */
  linkUp?: boolean;
  /** A pair worker found the netdev's device gone (EBADFD on a TAP queue): check the link now. */
  onNetdevGone?: () => void;
  /** Offer BACKEND_REQ + CONFIG and send CONFIG_CHANGE_MSG on link changes (VHOST_NET_CONFIG_NOTIFY_FEATURES). */
  configNotify?: boolean;
  /** The first queue pair of this connection started: the front-end runs the device (serve turns the TAP's carrier on). */
  onRunning?: () => void;
}

/** What {@link Session.inspect} returns. */
export interface SessionView {
  status: number;
  mem: GuestMemory | null;
  runningPairs: number;
  regions: { guestAddr: number; size: number; userAddr: number }[];
  vrings: { index: number; num: number; started: boolean; enabled: boolean; running: boolean; base: QueueState; layout: QueueLayout | null }[];
}

/** A failure that ends the request with an error reply, or the connection when no reply was asked for. */
class RequestError extends Error {}

interface Vring {
  num: number;
  /** Where the ring stands (SET_VRING_BASE / where its worker stopped): split u16 indexes, packed position | wrap << 15. */
  avail: number;
  used: number;
  addr: { desc: number; avail: number; used: number } | null; // front-end user addresses
  /** log_guest_addr when SET_VRING_ADDR set VHOST_VRING_F_LOG, else -1 (dirty logging, log.ts). */
  logAddr: number;
  kick: number; // eventfd, -1 none, -2 NOFD (poll the ring)
  call: number;
  err: number;
  started: boolean; // has a kick (or NOFD) and was not stopped by GET_VRING_BASE since
  enabled: boolean;
}

interface PairRunner {
  worker: Worker;
  control: Int32Array;
  wakeFd: number;
  port: MessageChannel['port1'];
  stopped: Promise<void>;
  /** Control messages applied in place (`log`, `call`): the last generation asked, the answers awaited. */
  gen: number;
  acks: Map<number, (applied: boolean) => void>;
  /** Whether the worker marks a dirty log now. */
  logging: boolean;
}

export class Session {
  features = 0n;
  protocolFeatures = 0n;
  status = 0;
  private mtu: number;
  /** Mapped regions; `refs` counts identical ADD_MEM_REGs (one per QEMU vhost device). */
  private memRegions: { spec: RegionSpec; desc: VhostUserMemoryRegion; refs: number }[] = [];
  private mem: GuestMemory | null = null;
  private readonly vrings: Vring[];
  private readonly runners: (PairRunner | null)[];
  private readonly wakeFds: number[];
  private readonly framer = new VhostUserFramer();
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** The front-end hung up: queued requests are dropped (their fds closed). */
  private peerGone = false;
  private faultTimer: ReturnType<typeof setInterval> | undefined;
  private readonly inbox: SharedArrayBuffer[][];
  private readonly afs = DeviceSteering.newAfsBuffer();
  /** Pairs whose TAP queue is detached (TUNSETQUEUE) because the front-end disabled them. */
  private readonly tapDetached = new Set<number>();
  /** Enabled queue pairs as steering sees them (activePairCount). */
  private activePairs = 0;
  /** The inflight buffer (GET/SET_INFLIGHT_FD), tracked into while INFLIGHT_SHMFD is negotiated. */
  private inflight: InflightBuffer | null = null;
  /** The netdev the pairs run on (replaced when a deleted TAP is re-opened: replaceNetdev). */
  private netdev: NetdevSpec;
  /** VIRTIO_NET_S_LINK_UP as GET_CONFIG reports it (§5.1.4): the netdev's device is there. */
  private linkUp: boolean;
  /** A queue pair started on this connection ({@link SessionOptions.onRunning} called). */
  private running = false;
  /** The back-end channel (SET_BACKEND_REQ_FD), -1 none. */
  private backendReqFd = -1;
  /** The dirty log of SET_LOG_BASE (live migration), and SET_LOG_FD's eventfd (kept, unused: the log is shared memory). */
  private dirtyLog: MappedLog | null = null;
  private logFd = -1;
  /** Resolves when the connection is closed (by either side). */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(readonly fd: number, private readonly o: SessionOptions) {
    this.mtu = o.mtu;
    this.netdev = o.netdev;
    this.linkUp = o.linkUp ?? true;
    this.vrings = Array.from({ length: 2 * o.pairs }, () => ({
      num: 0, avail: 0, used: 0, addr: null, logAddr: -1, kick: -1, call: -1, err: -1, started: false, enabled: false,
    }));
    this.runners = new Array(o.pairs).fill(null);
    // Out of fds part-way (EMFILE) throws with none of ours left open.
    this.wakeFds = [];
    try {
      for (let p = 0; p < o.pairs; p++) this.wakeFds.push(eventfdCreate(0, { nonblock: true }));
    } catch (e) {
      for (const fd of this.wakeFds) safeClose(fd);
      throw e;
    }
    this.inbox = Array.from({ length: o.pairs }, () => Array.from({ length: o.pairs }, () => new FrameRing(256 * 1024).buffer));
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** Queue pairs whose worker is running (both rings started and enabled). */
  get runningPairs(): number {
    return this.runners.filter((r) => r !== null).length;
  }

  /**
   * For operators (`virtio-mq stats`): the device status, the memory table,
   * every vring's setup and guest physical layout (null until usable), and
   * the mapped guest memory (null before SET_MEM_TABLE) to read rings from.
   */
  inspect(): SessionView {
    return {
      status: this.status, mem: this.mem, runningPairs: this.runningPairs,
      regions: this.memRegions.map((r) => ({ guestAddr: r.desc.guestAddr, size: r.desc.size, userAddr: r.desc.userAddr })),
      vrings: this.vrings.map((v, i) => {
        let layout: QueueLayout | null = null;
        if (this.mem && v.addr && v.num > 0) try { layout = this.layoutOf(i); } catch { /* not usable yet */ }
        return { index: i, num: v.num, started: v.started, enabled: v.enabled, running: this.runners[i >> 1] !== null, base: { avail: v.avail, used: v.used }, layout };
      }),
    };
  }

  /** Bytes and fds from the socket. Messages are handled one after another, in order. */
  receive(bytes: Uint8Array, fds: number[]): void {
    if (this.closed) {
      for (const fd of fds) safeClose(fd);
      return;
    }
    this.framer.push(bytes, fds);
    for (;;) {
      let frame: VhostUserFrame | undefined;
      try {
        frame = this.framer.next();
      } catch (e) {
        const pe = e as VhostUserProtocolError;
        for (const fd of pe.fds ?? []) safeClose(fd);
        this.o.log(`vhost-user: closing connection: ${pe.message}`);
        // After the messages before it (a close racing a handler would leave that handler's fds behind).
        this.chain = this.chain.then(() => this.close());
        return;
      }
      if (!frame) return;
      const f = frame;
      // A throw escaping a handler must not leave the chain rejected (every later message would be skipped).
      this.chain = this.chain.then(() => this.handleFrame(f)).catch((e: unknown) => {
        this.o.log(`vhost-user: internal error: ${e instanceof Error ? e.message : String(e)}; closing connection`);
        return this.close();
      });
    }
  }

  /** The front-end went away (EOF, or the socket failed mid-message). */
  peerClosed(reason: string): void {
    // Requests still queued are moot (no reply can reach a closed peer) and may be slow (each
    // SET_VRING_KICK on a running ring restarts its pair): skip them, so the next front-end is not kept waiting.
    this.peerGone = true;
    try {
      this.framer.end();
    } catch (e) {
      const pe = e as VhostUserProtocolError;
      for (const fd of pe.fds ?? []) safeClose(fd);
      reason = `${reason} in the middle of a message (${pe.message})`;
    }
    this.o.log(`vhost-user: front-end disconnected: ${reason}`);
    this.chain = this.chain.then(() => this.close());
  }

  private async handleFrame(f: VhostUserFrame): Promise<void> {
    if (this.closed || this.peerGone) {
      for (const fd of f.fds) safeClose(fd);
      return;
    }
    let msg: VhostUserMessage;
    try {
      msg = decodeRequest(f.header, f.payload, f.fds);
      if (TRACE) this.o.log(`vhost-user: <- ${describeMessage(msg)}`);
    } catch (e) {
      const pe = e as VhostUserProtocolError;
      for (const fd of pe.fds ?? f.fds) safeClose(fd);
      const name = requestName(f.header.request) ?? `request ${f.header.request}`;
      if (pe.needReply && !hasExplicitReply(f.header.request)) {
        this.o.log(`vhost-user: ${name}: ${pe.code}: ${pe.message} (failure reply sent)`);
        this.send(failureAck(f.header.request));
      } else {
        this.o.log(`vhost-user: ${name}: ${pe.code}: ${pe.message}; closing connection`);
        await this.close();
      }
      return;
    }
    try {
      const reply = await this.handle(msg);
      if (reply) this.send(reply);
      else if (msg.needReply && !hasExplicitReply(msg.request)) this.send(encodeReplyAck(msg.request, 0));
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (msg.needReply && !hasExplicitReply(msg.request)) {
        this.o.log(`vhost-user: ${msg.type}: ${why} (failure reply sent)`);
        this.send(encodeReplyAck(msg.request, 1));
      } else {
        this.o.log(`vhost-user: ${msg.type}: ${why}; closing connection`);
        await this.close();
      }
    }
  }

  /** One handler per request; returns the explicit reply, if the request has one. */
  private async handle(m: VhostUserMessage): Promise<EncodedVhostUserMessage | void> {
    switch (m.type) {
      case 'GET_FEATURES':
        return encodeU64Reply(m.request, VHOST_NET_FEATURES);
      case 'SET_FEATURES': {
        const extra = m.features & ~VHOST_NET_FEATURES;
        if (extra) throw new RequestError(`features not offered: ${featureNames(extra, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES).join(' ')}`);
        const changed = m.features !== this.features;
        // VHOST_F_LOG_ALL alone (a migration starts or ends): the device features are the same; the running pairs switch logging in place.
        const logOnly = (m.features ^ this.features) === LOG_ALL_MASK;
        this.features = m.features;
        if (changed && !logOnly) {
          const names = this.featureNames();
          this.o.log(`vhost-user: front-end features: ${names.join(' ')}`, { event: 'features', ring: ringFormat(this.features), features: names });
        }
        if (logOnly || (changed && (this.features & LOG_ALL_MASK))) this.logLogging();
        if (changed && !logOnly) applyTapOffloads(this.netdev, this.features, this.o.log);
        if (logOnly) await this.relog(this.runningList());
        else if (changed) await this.restartRunning();
        return;
      }
      case 'GET_PROTOCOL_FEATURES':
        return encodeU64Reply(m.request, this.offeredProtocolFeatures());
      case 'SET_PROTOCOL_FEATURES':
        if (m.features & ~this.offeredProtocolFeatures()) throw new RequestError('protocol features not offered');
        this.protocolFeatures = m.features;
        return;
      case 'SET_OWNER':
        return;
      case 'RESET_OWNER':
      case 'RESET_DEVICE':
        await this.stopAll();
        for (const v of this.vrings) Object.assign(v, { started: false, enabled: false, avail: 0, used: 0 });
        this.status = 0;
        this.dropInflight(); // a reset device has nothing in flight (the spec: a new buffer after a VM reset)
        return;
      case 'GET_QUEUE_NUM':
        return encodeU64Reply(m.request, this.o.pairs);
      case 'GET_MAX_MEM_SLOTS':
        return encodeU64Reply(m.request, MAX_MEM_SLOTS);
      case 'SET_MEM_TABLE':
        await this.setMemory(m.regions);
        return;
      case 'ADD_MEM_REG': {
        // QEMU (7.2) runs one vhost device per queue pair on the same socket, and
        // each adds the same regions: an identical region is counted, not mapped again.
        const same = this.memRegions.find((r) => sameRegion(r.desc, m.region));
        if (same) {
          safeClose(m.region.fd);
          same.refs++;
          return;
        }
        await this.setMemory([...this.memRegions.map((r) => r.desc), m.region], [m.region]);
        return;
      }
      case 'REM_MEM_REG': {
        if (m.strayFd !== null) safeClose(m.strayFd);
        const r = this.memRegions.find((x) => sameRegion(x.desc, m.region));
        if (!r) throw new RequestError('REM_MEM_REG: no such region');
        if (--r.refs > 0) return;
        await this.setMemory(this.memRegions.filter((x) => x !== r).map((x) => x.desc), []);
        return;
      }
      case 'SET_VRING_NUM': {
        const v = this.vring(m.index);
        // Split rings need a power of two (§2.7), packed rings any size (§2.8.10.1).
        const problem = queueSizeProblem(ringFormat(this.features), m.num, Math.min(MAX_QUEUE_SIZE, this.o.maxQueueSize));
        if (problem) throw new RequestError(`vring ${m.index}: ${problem}`);
        v.num = m.num;
        return;
      }
      case 'SET_VRING_ADDR': {
        const v = this.vring(m.index);
        const same = v.addr !== null && v.addr.desc === m.descUserAddr && v.addr.avail === m.availUserAddr && v.addr.used === m.usedUserAddr;
        const logAddr = v.logAddr;
        v.addr = { desc: m.descUserAddr, avail: m.availUserAddr, used: m.usedUserAddr };
        v.logAddr = (m.flags & 1) !== 0 ? m.logGuestAddr : -1; // VHOST_VRING_F_LOG
        if (this.mem && v.num > 0) {
          const l = this.layoutOf(m.index); // check now: throws when outside every region
          if (v.logAddr >= 0 && v.logAddr !== l.deviceAddr)
            this.o.log(`vhost-user: vring ${m.index}: used-ring writes logged at log_guest_addr 0x${v.logAddr.toString(16)} (the ring is at guest address 0x${l.deviceAddr.toString(16)})`);
        }
        // A running ring moves to the new addresses; a ring that was waiting for valid ones starts.
        // The same addresses (QEMU sets VHOST_VRING_F_LOG when a migration starts): logging switches in place.
        if (this.runners[m.index >> 1] && same) {
          if (v.logAddr !== logAddr) await this.relog([m.index >> 1]);
        } else if (this.runners[m.index >> 1]) await this.restartPair(m.index >> 1);
        else await this.maybeStart(m.index >> 1);
        return;
      }
      case 'SET_VRING_BASE': {
        const v = this.vring(m.index);
        const s = decodeVringBase(m.num, ringFormat(this.features) === 'packed');
        if (ringFormat(this.features) === 'packed' && v.num > 0 && ((s.avail & 0x7fff) >= v.num || (s.used & 0x7fff) >= v.num))
          throw new RequestError(`vring ${m.index}: base position ${s.avail & 0x7fff} outside a ${v.num}-entry packed ring`);
        v.avail = s.avail;
        v.used = s.used;
        return;
      }
      case 'GET_VRING_BASE': {
        const v = this.vring(m.index);
        await this.stopPair(m.index >> 1);
        v.started = false;
        this.markStoppedRing(m.index);
        const packed = ringFormat(this.features) === 'packed';
        this.o.log(`vhost-user: vring ${m.index} stopped at ${packed ? `avail ${describePacked(v.avail)}, used ${describePacked(v.used)}` : `avail index ${v.avail}${v.used !== v.avail ? ` (used index ${v.used}: chains in flight)` : ""}`}`);
        return encodeVringBaseReply(m.index, encodeVringBase({ avail: v.avail, used: v.used }, packed));
      }
      case 'SET_VRING_KICK': {
        const v = this.vring(m.index, m.fd);
        // A running worker polls the old kick fd: stop it before that fd is
        // closed (and its number reused), then restart it with the new one.
        await this.stopPair(m.index >> 1);
        if (!this.keepFd(m.fd)) return;
        if (v.kick >= 0) safeClose(v.kick);
        v.kick = m.fd ?? -2;
        v.started = true;
        if (!(this.features & VHOST_USER_F_PROTOCOL_FEATURES_MASK)) v.enabled = true; // no SET_VRING_ENABLE without protocol features
        await this.maybeStart(m.index >> 1);
        this.postActivePairs();
        return;
      }
      case 'SET_VRING_CALL': {
        const v = this.vring(m.index, m.fd);
        const pair = m.index >> 1;
        if (!this.keepFd(m.fd)) return;
        const fd = m.fd ?? -1;
        // A running worker takes the new fd between two rounds (QEMU sends one right after starting
        // a ring, e.g. on the migration destination: no restart); the old fd is closed only once the
        // worker no longer writes it. A worker that does not answer is stopped and started again.
        if (this.runners[pair] && !(await this.applyInPlace(pair, (gen) => ({ type: 'call', gen, ring: (m.index & 1) as 0 | 1, fd })))) {
          await this.stopPair(pair);
          if (v.call >= 0 && v.call !== fd) safeClose(v.call);
          v.call = fd;
          await this.maybeStart(pair);
          return;
        }
        if (v.call >= 0 && v.call !== fd) safeClose(v.call);
        v.call = fd;
        return;
      }
      case 'SET_VRING_ERR': {
        const v = this.vring(m.index, m.fd);
        if (!this.keepFd(m.fd)) return;
        if (v.err >= 0) safeClose(v.err);
        v.err = m.fd ?? -1;
        return;
      }
      case 'SET_VRING_ENABLE': {
        const v = this.vring(m.index);
        if (v.enabled === m.enable) return;
        v.enabled = m.enable;
        this.o.log(`vhost-user: vring ${m.index} ${m.enable ? 'enabled' : 'disabled'}`);
        if (m.enable) await this.maybeStart(m.index >> 1);
        else {
          await this.stopPair(m.index >> 1);
          this.setTapQueue(m.index >> 1, false);
        }
        this.postActivePairs();
        return;
      }
      case 'SET_LOG_BASE': {
        let log: MappedLog;
        try {
          log = mapDirtyLog(m.fd, m.mmapSize, m.mmapOffset);
        } finally {
          safeClose(m.fd); // the mapping keeps the log
        }
        const top = this.memRegions.reduce((x, r) => Math.max(x, r.desc.guestAddr + r.desc.size), 0);
        this.o.log(`vhost-user: dirty log: ${log.size} bytes (covers ${Math.round(log.coverage / 2 ** 20)} MiB of guest memory)`, { event: 'dirty-log', bytes: log.size });
        if (top > log.coverage) this.o.log(`vhost-user: dirty log covers [0, 0x${log.coverage.toString(16)}) but guest memory reaches 0x${top.toString(16)}: writes above are not logged`);
        const old = this.dirtyLog;
        this.dirtyLog = log;
        // Workers marking the old log move to the new one (their last marks in the old are done) before the reply: the front-end syncs the old log after it.
        if (this.features & LOG_ALL_MASK) await this.relog(this.runningList());
        // No worker marks the old mapping any more: unmap it now (QEMU sends the same log once per vhost device).
        if (old) releaseShared(old.buffer);
        return encodeSetLogBaseReply();
      }
      case 'SET_LOG_FD':
        if (!this.keepFd(m.fd)) return;
        if (this.logFd >= 0) safeClose(this.logFd);
        this.logFd = m.fd;
        return;
      case 'SEND_RARP':
        this.sendRarp(m.mac);
        return;
      case 'SET_BACKEND_REQ_FD':
        if (!this.keepFd(m.fd)) return;
        if (this.backendReqFd >= 0) safeClose(this.backendReqFd);
        this.backendReqFd = m.fd;
        return;
      case 'NET_SET_MTU':
        if (m.mtu < 68 || m.mtu > 65535) throw new RequestError(`MTU ${m.mtu} out of range 68..65535`);
        this.mtu = m.mtu;
        return;
      case 'GET_CONFIG': {
        const cfg = encodeNetConfig(defaultNetConfig({ mac: this.o.mac, maxVirtqueuePairs: this.o.pairs, mtu: this.mtu, status: this.linkUp ? VIRTIO_NET_S_LINK_UP : 0 }));
        const data = new Uint8Array(m.size);
        data.set(cfg.subarray(Math.min(m.offset, cfg.length), Math.min(m.offset + m.size, cfg.length)));
        return encodeGetConfigReply({ offset: m.offset, flags: m.flags, data });
      }
      case 'SET_CONFIG':
        return; // virtio-net config is read-only for the driver
      case 'SET_STATUS':
        this.status = m.status;
        this.o.log(`vhost-user: device status 0x${m.status.toString(16)}`);
        return;
      case 'GET_STATUS':
        return encodeStatusReply(this.status);
      case 'GET_INFLIGHT_FD':
      case 'SET_INFLIGHT_FD':
        return this.inflightRequest(m);
      default: {
        for (const fd of m.fds) safeClose(fd);
        throw new RequestError(`${m.type} is not supported by this back-end`);
      }
    }
  }

  // ---- link status, RARP ----------------------------------------------------

  private offeredProtocolFeatures(): bigint {
    return this.o.configNotify ? VHOST_NET_PROTOCOL_FEATURES | VHOST_NET_CONFIG_NOTIFY_FEATURES : VHOST_NET_PROTOCOL_FEATURES;
  }

  /** VIRTIO_NET_S_LINK_UP as the front-end reads it now (GET_CONFIG). */
  get link(): boolean {
    return this.linkUp;
  }

  /**
   * The netdev's device went away (false) or is back (true): GET_CONFIG's
   * status follows (§5.1.4), and a front-end that negotiated BACKEND_REQ and
   * CONFIG and gave a back-end channel gets VHOST_USER_BACKEND_CONFIG_CHANGE_MSG
   * (no payload, no reply asked), after which it reads the config again
   * and raises the guest's configuration change notification (§5.1.6.x).
   */
  setLink(up: boolean): void {
    if (this.closed || up === this.linkUp) return;
    this.linkUp = up;
    const want = VHOST_NET_CONFIG_NOTIFY_FEATURES;
    const notify = (this.protocolFeatures & want) === want && this.backendReqFd >= 0;
    this.o.log(`vhost-user: link ${up ? 'up' : 'down'}${notify ? ' (CONFIG_CHANGE_MSG sent)' : ''}`, { event: 'link', up, notified: notify });
    if (!notify) return;
    const bytes = new Uint8Array(VHOST_USER_HEADER_SIZE);
    encodeHeader({ request: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, flags: VHOST_USER_VERSION, size: 0 }, bytes, 0);
    try {
      if (sendmsg(this.backendReqFd, bytes) === null) this.o.log('vhost-user: back-end channel full: CONFIG_CHANGE_MSG not sent');
    } catch (e) {
      this.o.log(`vhost-user: back-end channel: ${(e as Error).message}; closed`);
      safeClose(this.backendReqFd);
      this.backendReqFd = -1;
    }
  }

  /**
   * The netdev's device is back, opened as `spec` (link.ts): the running
   * pairs stop, move to the new queue fds (with the offloads the driver
   * negotiated) and start again where their rings stood; the link is up.
   * Resolves once no worker uses the previous spec any more.
   */
  async replaceNetdev(spec: NetdevSpec): Promise<void> {
    const run = () => this.restartWith(spec);
    // In order with the front-end's requests (a handler may be starting a pair right now).
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    await p;
  }

  private async restartWith(spec: NetdevSpec): Promise<void> {
    if (this.closed) return;
    const running = await this.stopAll();
    this.netdev = spec;
    this.tapDetached.clear();
    if (this.features) applyTapOffloads(spec, this.features, this.o.log);
    for (const p of running) await this.maybeStart(p);
    // Pairs the front-end disabled keep their new TAP queue detached too.
    for (let p = 0; p < this.o.pairs; p++) if (!this.runners[p] && !this.vrings[2 * p].enabled) this.setTapQueue(p, false);
    this.setLink(true);
  }

  /**
   * SEND_RARP (vhost-user.rst, with VHOST_USER_PROTOCOL_F_RARP): send the
   * RARP announcement of `mac` (net/rarp.ts, as DPDK's vhost does) out of the
   * netdev, as if the guest had sent it, so that switches and bridges
   * learn where the guest's MAC is. A TAP gets it on its first queue (with a
   * zero virtio_net_hdr); other netdevs have no wire to announce on.
   */
  private sendRarp(mac: Uint8Array): void {
    const text = [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
    const nd = this.netdev;
    if (nd.kind !== 'tap' || nd.fds.length === 0) {
      this.o.log(`vhost-user: SEND_RARP for ${text}: netdev ${nd.kind} has no wire to announce on`);
      return;
    }
    if (!this.linkUp) {
      this.o.log(`vhost-user: SEND_RARP for ${text}: the TAP is gone; not sent`);
      return;
    }
    const frame = makeRarpFrame(mac);
    const buf = new SharedArrayBuffer(nd.hdrLen + frame.length);
    new Uint8Array(buf).set(frame, nd.hdrLen); // virtio_net_hdr all zero: no offload asked
    try {
      const n = writevFrames(nd.fds[0], buf, Float64Array.of(0), Uint32Array.of(buf.byteLength), 1, 0);
      this.o.log(`vhost-user: SEND_RARP for ${text}: ${n === 1 ? 'RARP announcement sent on the TAP' : 'the TAP queue is full; not sent'}`, { event: 'rarp', mac: text, sent: n === 1 });
    } catch (e) {
      this.o.log(`vhost-user: SEND_RARP for ${text}: ${(e as Error).message}`);
    }
  }

  // ---- vrings and workers -------------------------------------------------

  /**
   * A kick, call or error fd about to be kept: false (and the fd closed) when
   * the session closed meanwhile. Kept fds are made non-blocking: a call or
   * error fd whose counter is full (or a full pipe) must never block a worker
   * or the control plane (EAGAIN: a notification is already pending).
   */
  private keepFd(fd: number | null): boolean {
    if (fd === null) return !this.closed;
    if (this.closed) {
      safeClose(fd);
      return false;
    }
    try {
      setNonblock(fd, true);
    } catch (e) {
      this.o.log(`vhost-user: fd ${fd}: O_NONBLOCK: ${(e as Error).message}`);
    }
    return true;
  }

  /**
   * A fault of queue `queue` (a malformed chain, a kick or call fd that does
   * not work), as front-ends expect it (vhost-user.rst SET_VRING_ERR,
   * virtio §2.1.2): DEVICE_NEEDS_RESET in the device status and a signal on
   * the ring's error eventfd. The other pairs keep running.
   */
  private fault(queue: number, why: string): void {
    this.o.log(`vhost-user: queue ${queue} stopped: ${why}`, { event: 'queue-error', queue });
    if (this.closed) return;
    if (!(this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)) {
      this.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
      this.o.log(`vhost-user: device status 0x${this.status.toString(16)} (DEVICE_NEEDS_RESET)`);
    }
    const err = this.vrings[queue]?.err ?? -1;
    if (err >= 0) {
      try {
        eventfdWrite(err, 1);
      } catch (e) {
        this.o.log(`vhost-user: vring ${queue}: error fd: ${(e as Error).message}`);
      }
    }
  }

  /** The vring `index`, or a RequestError (closing `fd`) when it does not exist. */
  private vring(index: number, fd?: number | null): Vring {
    const v = this.vrings[index];
    if (!v) {
      if (fd !== undefined && fd !== null) safeClose(fd);
      throw new RequestError(`vring ${index} does not exist (${this.vrings.length} vrings: ${this.o.pairs} queue pairs)`);
    }
    return v;
  }

  /**
   * Guest physical layout of vring `index` from its user addresses
   * (SET_VRING_ADDR: for a packed ring the descriptor ring, the driver
   * event suppression area in `avail` and the device's in `used`).
   * @throws GuestMemoryError, RequestError (a size the negotiated format does not allow)
   */
  private layoutOf(index: number): QueueLayout {
    const v = this.vrings[index];
    const mem = this.mem!;
    const a = v.addr!;
    const format = ringFormat(this.features);
    const problem = queueSizeProblem(format, v.num);
    if (problem) throw new RequestError(`vring ${index}: ${problem}`);
    const bytes = queuePartBytes(format, v.num);
    return {
      format,
      size: v.num,
      descAddr: mem.userToGuest(a.desc, bytes.desc),
      driverAddr: mem.userToGuest(a.avail, bytes.driver),
      deviceAddr: mem.userToGuest(a.used, bytes.device),
    };
  }

  /**
   * What pair `pair`'s worker is to mark: with VHOST_F_LOG_ALL and a
   * SET_LOG_BASE log, the log and where each ring's used-ring writes are
   * logged (SET_VRING_ADDR log_guest_addr, -1: the ring's address); else null.
   */
  private logFor(pair: number): NonNullable<PairWorkerData['dirtyLog']> | null {
    if (!(this.features & LOG_ALL_MASK) || !this.dirtyLog) return null;
    const rx = this.vrings[2 * pair], tx = this.vrings[2 * pair + 1];
    return { buffer: this.dirtyLog.buffer, offset: 0, size: this.dirtyLog.size, rxUsedLogAddr: rx.logAddr, txUsedLogAddr: tx.logAddr };
  }

  /**
   * Dirty logging changed (VHOST_F_LOG_ALL on or off, a new SET_LOG_BASE log,
   * a ring's log_guest_addr): each running pair in `pairs` switches in place
   * between two poll rounds (pair-worker.ts), as DPDK's vhost reads the
   * feature bit per burst; no restart, so traffic goes on while a migration
   * starts. Resolves once every worker answered that it marks what
   * {@link logFor} says (the front-end relies on that when it gets its
   * reply). A worker that does not answer within 2 s is restarted instead.
   */
  private async relog(pairs: number[]): Promise<void> {
    await Promise.all(pairs.map(async (p) => {
      const r = this.runners[p];
      if (!r) return;
      const log = this.logFor(p);
      if (await this.applyInPlace(p, (gen) => ({ type: 'log', gen, log }))) {
        if (r.logging !== (log !== null)) this.o.log(`vhost-user: queue pair ${p} ${log ? 'logs its writes (dirty logging, switched in place)' : 'no longer logs its writes'}`);
        r.logging = log !== null;
      } else if (this.runners[p] === r) {
        this.o.log(`vhost-user: queue pair ${p}: no answer to a dirty logging switch within 2 s; restarting it`);
        await this.restartPair(p);
      }
    }));
  }

  /**
   * Post a control message of a new generation to pair `p`'s running worker
   * and wait until the worker applied it between two of its rounds
   * (pair-worker.ts `applied`). False when no worker runs, it stopped, or it
   * did not answer within 2 s.
   */
  private async applyInPlace(p: number, make: (gen: number) => PairControl): Promise<boolean> {
    const r = this.runners[p];
    if (!r) return false;
    const gen = ++r.gen;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const applied = new Promise<boolean>((res) => {
      r.acks.set(gen, res);
      timer = setTimeout(() => res(false), 2000);
    });
    r.port.postMessage(make(gen));
    Atomics.store(r.control, 1, gen);
    eventfdWrite(r.wakeFd, 1);
    const ok = await applied;
    clearTimeout(timer);
    r.acks.delete(gen);
    return ok;
  }

  /** Pairs whose worker runs now. */
  private runningList(): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.runners.length; p++) if (this.runners[p]) out.push(p);
    return out;
  }

  /**
   * Migrating (VHOST_F_LOG_ALL with a log): the ring `index` just stopped
   * (GET_VRING_BASE, before the front-end's final log sync), so mark its whole
   * device-written part once more: the split used ring (at log_guest_addr
   * when given), or the packed descriptor ring and device event area. The
   * workers marked every write already; this makes the final ring state
   * travel even if a page was missed, at the cost of a few pages.
   */
  private markStoppedRing(index: number): void {
    if (!(this.features & LOG_ALL_MASK) || !this.dirtyLog || !this.mem) return;
    const v = this.vrings[index];
    if (!v.addr || v.num === 0) return;
    let l: QueueLayout;
    try {
      l = this.layoutOf(index);
    } catch {
      return;
    }
    const log = new DirtyLog(this.dirtyLog.buffer, 0, this.dirtyLog.size);
    const bytes = queuePartBytes(l.format, l.size);
    if (l.format === 'packed') {
      log.mark(l.descAddr, bytes.desc);
      log.mark(l.deviceAddr, bytes.device);
    } else log.mark(v.logAddr >= 0 ? v.logAddr : l.deviceAddr, bytes.device);
  }

  /** One line when VHOST_F_LOG_ALL goes on or off (the front-end starts or ends a migration). */
  private logLogging(): void {
    const on = (this.features & LOG_ALL_MASK) !== 0n;
    if (on && !this.dirtyLog) this.o.log('vhost-user: VHOST_F_LOG_ALL without a SET_LOG_BASE log: device writes are NOT logged', { event: 'dirty-logging', on, log: false });
    else this.o.log(`vhost-user: dirty logging ${on ? 'on (live migration)' : 'off'}`, { event: 'dirty-logging', on });
  }

  /** The negotiated virtio features by their spec names (the protocol-features bit left out). */
  featureNames(): string[] {
    return featureNames(this.features & ~VHOST_USER_F_PROTOCOL_FEATURES_MASK & ~LOG_ALL_MASK, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES);
  }

  private ready(index: number): boolean {
    const v = this.vrings[index];
    return v.started && v.enabled && v.num > 0 && v.addr !== null && this.mem !== null;
  }

  private async maybeStart(pair: number): Promise<void> {
    if (this.closed || this.runners[pair] || !this.ready(2 * pair) || !this.ready(2 * pair + 1)) return;
    this.setTapQueue(pair, true);
    const rx = this.vrings[2 * pair], tx = this.vrings[2 * pair + 1];
    if (ringFormat(this.features) === 'split') for (const i of [2 * pair, 2 * pair + 1]) this.checkSplitBase(i);
    const data: PairWorkerData = {
      pair, maxPairs: this.o.pairs, activePairs: activePairCount(this.vrings),
      ...offloadOptions(this.features, this.mtu),
      regions: this.memRegions.map((r) => r.spec),
      rx: this.layoutOf(2 * pair), tx: this.layoutOf(2 * pair + 1),
      rxBase: { avail: rx.avail, used: rx.used }, txBase: { avail: tx.avail, used: tx.used },
      rings: ringFeatures(this.features),
      mrgRxbuf: (this.features & VIRTIO_NET_F_MRG_RXBUF) !== 0n,
      hdrLen: netHdrSize(this.features),
      kickFds: [rx.kick >= 0 ? rx.kick : -1, tx.kick >= 0 ? tx.kick : -1],
      callFds: [rx.call, tx.call],
      wakeFd: this.wakeFds[pair], wakeFds: this.wakeFds,
      mode: this.o.mode, budget: this.o.budget, stats: this.o.stats, afs: this.afs,
      inboxes: this.inbox.map((row) => row[pair]), outboxes: this.inbox[pair],
      netdev: this.netdev, rss: this.o.rss,
      control: new SharedArrayBuffer(8), port: undefined as never,
      capture: this.o.capture?.[pair], strict: this.o.strict,
      dirtyLog: this.logFor(pair) ?? undefined,
    };
    const inf = this.inflightFor(pair);
    if (inf) data.inflight = inf;
    const { port1, port2 } = new MessageChannel();
    data.port = port2;
    const worker = new Worker(new URL('./pair-worker.js', import.meta.url), { workerData: data, transferList: [port2] });
    let resolveStopped!: () => void;
    const runner: PairRunner = {
      worker, control: new Int32Array(data.control), wakeFd: this.wakeFds[pair], port: port1,
      stopped: new Promise((r) => (resolveStopped = r)),
      gen: 0, acks: new Map(), logging: data.dirtyLog !== undefined,
    };
    const gone = () => {
      for (const ack of runner.acks.values()) ack(false);
      runner.acks.clear();
      resolveStopped();
    };
    worker.on('message', (r: PairWorkerReport) => {
      if (r.type === 'queue-error') {
        this.o.onQueueError?.(r.queue, r.code, r.message, ringFormat(this.features));
        this.fault(r.queue, `${r.code}: ${r.message}`);
      }
      else if (r.type === 'inflight') {
        const fmt = ringFormat(this.features);
        const pos = (x: number) => (fmt === 'packed' ? describePacked(x) : String(x));
        this.o.log(`vhost-user: queue pair ${pair} resumed from the inflight region: ${r.txCompleted} transmitq chains completed unsent, ${r.rxRequeued} receiveq chains offered again (avail ${pos(r.rx.avail)}/${pos(r.tx.avail)}, used ${pos(r.rx.used)}/${pos(r.tx.used)})`,
          { event: 'inflight-resume', pair, txCompleted: r.txCompleted, rxRequeued: r.rxRequeued });
      }
      else if (r.type === 'netdev-gone') this.o.onNetdevGone?.();
      else if (r.type === 'applied') {
        runner.acks.get(r.gen)?.(true);
        runner.acks.delete(r.gen);
      }
      else if (r.type === 'stopped') {
        Object.assign(this.vrings[2 * pair], { avail: r.rx.avail, used: r.rx.used });
        Object.assign(this.vrings[2 * pair + 1], { avail: r.tx.avail, used: r.tx.used });
        gone();
      }
    });
    worker.on('error', (e) => {
      this.o.log(`vhost-user: pair ${pair} worker failed: ${e.message}`);
      gone();
    });
    worker.on('exit', () => gone());
    this.runners[pair] = runner;
    if (!this.running) {
      this.running = true;
      this.o.onRunning?.();
    }
    const fmt = ringFormat(this.features);
    const pos = (x: number) => (fmt === 'packed' ? describePacked(x) : String(x));
    this.o.log(`vhost-user: queue pair ${pair} started (${fmt} rings, receiveq ${rx.num} / transmitq ${tx.num} descriptors, avail ${pos(rx.avail)}/${pos(tx.avail)}${data.dirtyLog ? ', dirty logging' : ''})`);
  }

  /**
   * GET_INFLIGHT_FD (a new zeroed buffer: its fd goes back with the reply)
   * and SET_INFLIGHT_FD (the front-end's buffer after a restart), with
   * INFLIGHT_SHMFD negotiated. Running pairs are stopped and restarted on
   * the new buffer. A bad description or fd is an InflightError (its code
   * in the log line): a failure reply, or the connection ends.
   */
  private async inflightRequest(m: Extract<VhostUserMessage, { type: 'GET_INFLIGHT_FD' | 'SET_INFLIGHT_FD' }>): Promise<void> {
    const fd = m.type === 'SET_INFLIGHT_FD' ? m.fd : -1;
    if (!(this.protocolFeatures & (1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)))) {
      if (fd >= 0) safeClose(fd);
      throw new RequestError(`${m.type} without VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD negotiated`);
    }
    let next: InflightBuffer;
    let reply: { fd: number; desc: Parameters<typeof encodeInflightFdReply>[0] } | null = null;
    try {
      if (m.type === 'SET_INFLIGHT_FD') next = mapInflightBuffer(m, m.fd, 2 * this.o.pairs);
      else {
        const c = createInflightBuffer(m.numQueues, m.queueSize, 2 * this.o.pairs);
        next = c.inflight;
        reply = { fd: c.fd, desc: c.desc };
      }
    } catch (e) {
      throw new RequestError(e instanceof InflightError ? `${e.code}: ${e.message}` : `inflight buffer: ${(e as Error).message}`);
    }
    const running = await this.stopAll();
    this.dropInflight();
    this.inflight = next;
    this.o.log(`vhost-user: inflight buffer ${m.type === 'GET_INFLIGHT_FD' ? 'created' : 'from the front-end'}: ${next.numQueues} queues of ${next.queueSize} entries (${next.buffer.byteLength} bytes)`);
    if (reply) {
      this.send(encodeInflightFdReply(reply.desc, reply.fd));
      safeClose(reply.fd); // the front-end has its own copy now; the mapping keeps the memory
    }
    for (const p of running) await this.maybeStart(p);
  }

  /** The inflight regions of pair `pair`'s rings for its worker, when tracking is on and the buffer has them. */
  private inflightFor(pair: number): PairWorkerData['inflight'] {
    const b = this.inflight;
    if (!b || !(this.protocolFeatures & (1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)))) return undefined;
    const rx = inflightOffset(b, 2 * pair), tx = inflightOffset(b, 2 * pair + 1);
    return rx < 0 || tx < 0 ? undefined : { buffer: b.buffer, queueSize: b.queueSize, rx, tx };
  }

  /** Unmap the inflight buffer (workers stopped): the front-end keeps its copy. */
  private dropInflight(): void {
    if (this.inflight) releaseShared(this.inflight.buffer);
    this.inflight = null;
  }

  /** A split ring's base that cannot be right resumes from its used index (split-resume.ts). */
  private checkSplitBase(index: number): void {
    const v = this.vrings[index];
    const base = { avail: v.avail, used: v.used };
    const next = splitResumeBase(this.mem!, this.layoutOf(index), base);
    if (next === base) return;
    this.o.log(`vhost-user: vring ${index}: base ${v.avail} does not fit the ring (used index ${next.used}): resuming from the used index`, { event: 'vring-resume', vring: index, base: v.avail, used: next.used });
    v.avail = next.avail;
    v.used = next.used;
  }

  /**
   * A TAP netdev: detach the queue of a pair the front-end disabled (a
   * guest's `ethtool -L`), attach it again when the pair starts, as QEMU's
   * tap does (TUNSETQUEUE). An attached queue nobody reads still gets its
   * share of the host's frames (the kernel spreads flows over every
   * attached queue), and they would wait there until the pair came back.
   */
  private setTapQueue(pair: number, attach: boolean): void {
    const nd = this.netdev;
    if (nd.kind !== 'tap' || nd.fds[pair] === undefined || this.tapDetached.has(pair) !== attach) return;
    try {
      tunSetQueue(nd.fds[pair], attach);
      if (attach) this.tapDetached.delete(pair);
      else this.tapDetached.add(pair);
      this.o.log(`vhost-user: TAP queue ${pair} ${attach ? 'attached' : 'detached'}`);
    } catch (e) {
      this.o.log(`vhost-user: TAP queue ${pair}: TUNSETQUEUE ${attach ? 'attach' : 'detach'} failed: ${(e as Error).message}`);
    }
  }

  /**
   * SET_VRING_ENABLE changed which pairs run: every running worker's
   * steering now picks among the enabled pairs only (how QEMU and
   * virtio-user carry VQ_PAIRS_SET, §5.1.6.5.5).
   */
  private postActivePairs(): void {
    const pairs = activePairCount(this.vrings);
    if (pairs === this.activePairs) return;
    this.activePairs = pairs;
    this.o.log(`vhost-user: ${pairs} active queue pairs`, { event: 'active-pairs', pairs });
    for (const r of this.runners) {
      if (!r) continue;
      r.port.postMessage({ type: 'active', pairs });
      eventfdWrite(r.wakeFd, 1);
    }
  }

  private async stopPair(pair: number): Promise<void> {
    const r = this.runners[pair];
    if (!r) return;
    this.runners[pair] = null;
    Atomics.store(r.control, 0, 1);
    eventfdWrite(r.wakeFd, 1);
    const t = setTimeout(() => void r.worker.terminate(), 3000);
    // A worker stuck in a system call cannot be terminated: never let it hang the control plane.
    let giveUp!: ReturnType<typeof setTimeout>;
    const stuck = await Promise.race([
      r.stopped.then(() => false),
      new Promise<boolean>((res) => (giveUp = setTimeout(() => res(true), 5000))),
    ]);
    clearTimeout(t);
    clearTimeout(giveUp);
    if (stuck) this.o.log(`vhost-user: queue pair ${pair}: worker did not stop within 5 s; abandoned`);
    r.port.close();
    this.o.log(`vhost-user: queue pair ${pair} stopped (avail ${this.vrings[2 * pair].avail}/${this.vrings[2 * pair + 1].avail})`);
  }

  private async restartPair(pair: number): Promise<void> {
    await this.stopPair(pair);
    await this.maybeStart(pair);
  }

  private async stopAll(): Promise<number[]> {
    const running: number[] = [];
    for (let p = 0; p < this.runners.length; p++) if (this.runners[p]) running.push(p);
    await Promise.all(running.map((p) => this.stopPair(p)));
    return running;
  }

  private async restartRunning(): Promise<void> {
    for (const p of await this.stopAll()) await this.maybeStart(p);
  }

  /**
   * Replace the memory table (SET_MEM_TABLE, or ADD/REM_MEM_REG applied to
   * the current one) on a live device: workers are stopped first, the new
   * regions mapped, and the workers restarted where their rings stood.
   * `fresh` are the regions whose fds are new (mapped then closed); the rest
   * keep their existing mappings.
   */
  private async setMemory(regions: VhostUserMemoryRegion[], fresh: VhostUserMemoryRegion[] = regions): Promise<void> {
    const running = await this.stopAll();
    const next: { spec: RegionSpec; desc: VhostUserMemoryRegion; refs: number }[] = [];
    let ok = false;
    try {
      for (const d of regions) {
        const old = fresh.includes(d) ? undefined : this.memRegions.find((r) => r.desc === d);
        const buffer = old ? old.spec.buffer : mmapShared(d.fd, d.size, d.mmapOffset);
        next.push({ spec: { guestPhysAddr: d.guestAddr, size: d.size, buffer, userAddr: d.userAddr }, desc: d, refs: old?.refs ?? 1 });
      }
      this.mem = new GuestMemory(next.map((r) => r.spec)); // rejects overlaps
      ok = true;
    } finally {
      for (const d of fresh) safeClose(d.fd); // the mapping keeps the memory; the fd is not needed
      // Refused: the table is unchanged, so the pairs that were running run on.
      if (!ok) for (const p of running) await this.maybeStart(p);
    }
    // Mappings no longer in the table go now (not at GC): their memory is the front-end's to free.
    for (const r of this.memRegions) if (!next.some((x) => x.spec.buffer === r.spec.buffer)) releaseShared(r.spec.buffer as SharedArrayBuffer);
    this.memRegions = next;
    this.faultTimer ??= setInterval(() => this.checkMemoryFaults(), 100).unref();
    this.o.log(`vhost-user: memory table: ${next.map((r) => `[0x${r.desc.guestAddr.toString(16)}, +${r.desc.size >= 1 << 20 ? `${Math.round(r.desc.size / 2 ** 20)} MiB` : `${Math.round(r.desc.size / 1024)} KiB`}]`).join(' ')}`);
    for (const p of running) await this.maybeStart(p);
  }

  /**
   * A front-end that shrinks a memory file after SET_MEM_TABLE makes every
   * access past the new end SIGBUS; the addon absorbs those inside guest
   * mappings (a zero page) and counts them: drop that front-end.
   */
  private checkMemoryFaults(): void {
    if (this.closed) return;
    const i = this.memRegions.findIndex((r) => guestMappingFaults(r.spec.buffer as SharedArrayBuffer) > 0);
    if (i < 0) return;
    const d = this.memRegions[i].desc;
    this.o.log(`vhost-user: memory region ${i} [0x${d.guestAddr.toString(16)}, +${d.size}): SIGBUS: the front-end's memory file shrank under the mapping; closing connection`, { event: 'memory-fault', region: i });
    void this.close();
  }

  private send(m: EncodedVhostUserMessage): void {
    if (this.closed) return;
    try {
      for (let tries = 0; sendmsg(this.fd, m.bytes, m.fds) === null; tries++) {
        if (tries > 1000) throw new Error('socket send buffer full');
      }
    } catch (e) {
      this.o.log(`vhost-user: reply failed: ${(e as Error).message}`);
      void this.close();
    }
  }

  /**
   * Stop every ring, unmap memory (the SABs are dropped), close every fd this
   * session holds but the socket: its owner closes that once nothing reads it
   * any more (`done`).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.stopAll();
    // The TAP's queue fds outlive this connection: the next one starts with every queue attached (and the
    // kernel refuses the carrier on, TUNSETCARRIER EPERM, while none is).
    for (const p of [...this.tapDetached]) this.setTapQueue(p, true);
    for (const fd of this.framer.abort()) safeClose(fd);
    for (const v of this.vrings) {
      for (const fd of [v.kick, v.call, v.err]) if (fd >= 0) safeClose(fd);
      v.kick = v.call = v.err = -1;
    }
    for (const fd of this.wakeFds) safeClose(fd);
    this.dropInflight();
    if (this.backendReqFd >= 0) safeClose(this.backendReqFd);
    this.backendReqFd = -1;
    if (this.logFd >= 0) safeClose(this.logFd);
    this.logFd = -1;
    if (this.dirtyLog) releaseShared(this.dirtyLog.buffer); // the workers are stopped
    this.dirtyLog = null;
    if (this.faultTimer) clearInterval(this.faultTimer);
    // The workers are stopped: drop the guest's pages now rather than when GC gets to the buffers (RSS grew per connection).
    for (const r of this.memRegions) releaseShared(r.spec.buffer as SharedArrayBuffer);
    this.memRegions = [];
    this.mem = null;
    // The socket itself is closed by its owner once its reader has stopped (backend.ts).
    this.resolveDone();
  }

}

/**
 * A failing REPLY_ACK for any request code: encodeReplyAck checks its output
 * with decodeReply, which refuses request codes it does not know, and an
 * unknown request sent with NEED_REPLY must still get its failure reply.
 */
function failureAck(request: number): EncodedVhostUserMessage {
  if (requestName(request) !== undefined) return encodeReplyAck(request, 1);
  const bytes = new Uint8Array(VHOST_USER_HEADER_SIZE + 8);
  encodeHeader({ request, flags: VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, size: 8 }, bytes, 0);
  bytes.set(encodeU64(1), VHOST_USER_HEADER_SIZE);
  return { bytes, fds: [] };
}

/** Same guest physical range at the same front-end address (the mmap offset may differ per fd). */
function sameRegion(a: { guestAddr: number; size: number; userAddr: number }, b: { guestAddr: number; size: number; userAddr: number }): boolean {
  return a.guestAddr === b.guestAddr && a.size === b.size && a.userAddr === b.userAddr;
}

/**
 * The vring base of SET_VRING_BASE as a {@link QueueState}: split, the u16
 * next available index (used starts there too); packed, bits 0-14 the
 * position and bit 15 the wrap counter of the next available descriptor,
 * and in bits 16-31 the same for the used position when the front-end sends
 * it (QEMU does; DPDK's virtio-user sends only the lower half, and then the
 * used position is the available one, as DPDK's vhost assumes). A split
 * ring ignores the upper half.
 */
export function decodeVringBase(num: number, packed: boolean): QueueState {
  const avail = num & 0xffff;
  if (!packed) return { avail, used: avail };
  const used = num >>> 16;
  return { avail, used: used !== 0 ? used : avail };
}

/** The reply of GET_VRING_BASE: split, the next available index; packed, avail | used << 16 (QEMU's format). */
export function encodeVringBase(s: QueueState, packed: boolean): number {
  return packed ? ((s.avail & 0xffff) | ((s.used & 0xffff) << 16)) >>> 0 : s.avail & 0xffff;
}

/** "position N wrap W" for a packed ring position word. */
function describePacked(x: number): string {
  return `${x & 0x7fff} (wrap ${x >>> 15 & 1})`;
}

function safeClose(fd: number): void {
  try {
    close(fd);
  } catch {
    /* already closed */
  }
}
