/**
 * `vhost-session`: the vhost-user session state machine (session.ts, with
 * its pair workers on the sink netdev) driven in-process over a socketpair
 * by a hostile front-end: sequences of requests with mutated fields, sizes,
 * flags and attached fds, including fds of the wrong kind (an eventfd or a
 * socket as guest memory, a memfd or /dev/null as a kick fd, too many or too
 * few fds), often after a well-formed handshake (with some of its fields
 * mutated) so the rings start and the pair workers run.
 *
 * Every case ends with the front-end hanging up (EOF, sometimes mid-message).
 * Checks: the session ends (its `done` resolves within 10 s: no handler or
 * worker hung), every reply is a well-formed vhost-user reply, and once it
 * ended the process is back to the open fds and threads it had before the
 * case (nothing leaked: every fd sent was closed, every pair worker exited).
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { close, eventfdCreate, memfdCreate, recvmsg, socketPair, hostAvailable } from '../../../src/host/index.js';
import { Session, VHOST_NET_FEATURES } from '../../../src/transport/vhost-user/session.js';
import {
  VhostUserFramer, VhostUserRequest, decodeReply, encodeHeader, encodeRequest, VHOST_USER_VERSION, VHOST_USER_NEED_REPLY_MASK, VHOST_USER_REPLY_MASK,
  VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_MQ, VHOST_USER_PROTOCOL_F_REPLY_ACK, VHOST_USER_PROTOCOL_F_STATUS,
  VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, type VhostUserRequestInit,
} from '../../../src/transport/vhost-user/messages.js';
import { StatsBlock, DEV_STAT_COUNT } from '../../../src/net/stats.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from '../../../src/virtio/features.js';
import { VIRTIO_NET_F_MRG_RXBUF } from '../../../src/net/features.js';
import { contiguousQueueLayout, queueBytes } from '../../../src/virtio/ring.js';
import { inflightBufferBytes, inflightQueueBytes } from '../../../src/virtio/inflight/region.js';
import { ByteSource, INTERESTING_U32 } from '../bytes.js';
import { FuzzFinding } from '../guarded.js';
import type { FuzzTarget } from '../target.js';

const PAIRS = 2;
const MEM = 1 << 20;
const UVA = 0x7f00_0000_0000;
const GPA = 0x10_0000;
const RING = 64;
const CODES = Object.values(VhostUserRequest) as number[];
const stats = { cases: 0, messages: 0, replies: 0, pairsStarted: 0, closedBySession: 0, shrinks: 0, memoryFaults: 0, inflightResumes: 0, inflightErrors: 0 };

/** Fds of every kind a front-end could send; the session owns them once sent. */
type FdKind = 'eventfd' | 'memfd' | 'memfd-small' | 'devnull' | 'socket' | 'dir';
const FD_KINDS: FdKind[] = ['eventfd', 'eventfd', 'memfd', 'memfd-small', 'devnull', 'socket', 'dir'];

function makeFd(kind: FdKind, extra: number[]): number {
  switch (kind) {
    case 'eventfd': return eventfdCreate(0, { nonblock: true });
    case 'memfd': return memfdCreate('vmq-fuzz', MEM);
    case 'memfd-small': return memfdCreate('vmq-fuzz', 4096);
    case 'devnull': return fs.openSync('/dev/null', 'r+');
    case 'dir': return fs.openSync('/tmp', 'r');
    case 'socket': {
      const [x, y] = socketPair({ nonblock: true });
      extra.push(y);
      return x;
    }
  }
}

function fieldU32(s: ByteSource, good: number): number {
  const k = s.u8();
  return k < 200 ? good : k < 240 ? s.pick(INTERESTING_U32) : s.u32();
}

function fieldU64(s: ByteSource, good: number): number {
  const k = s.u8();
  return k < 220 ? good : k < 240 ? s.pick([0, 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, UVA - 1, UVA + MEM, UVA + MEM - 1]) : s.u32() * 2 ** 20;
}

interface Plan {
  /** One stream of bytes (split into sends) with fds attached to some sends. */
  sends: { bytes: Uint8Array; fds: number[] }[];
  /** Fds on guest memfds the harness may ftruncate under the session. */
  shrinkFds: number[];
}

/** A well-formed handshake (fields mutated now and then) that starts both pairs. */
function handshake(s: ByteSource, plan: Plan, extra: number[]): void {
  const packed = s.u8() < 96;
  let features = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_NET_F_MRG_RXBUF | VHOST_USER_F_PROTOCOL_FEATURES_MASK | (packed ? VIRTIO_F_RING_PACKED : 0n);
  if (s.u8() < 16) features = VHOST_NET_FEATURES;
  const inflight = s.u8() < 80;
  const protocol = (1n << BigInt(VHOST_USER_PROTOCOL_F_MQ)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_STATUS)) |
    (inflight ? 1n << BigInt(VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) : 0n);
  const add = (init: VhostUserRequestInit): void => {
    try {
      const m = encodeRequest(init);
      plan.sends.push({ bytes: m.bytes, fds: [...m.fds] });
    } catch (e) {
      if (process.env.FUZZ_DEBUG) console.error(`(harness: ${init.type} not encoded: ${(e as Error).message})`);
      // a mutated field the encoder refuses: the fds it was given are still ours to pass or close
      const i = init as { fd?: number | null; regions?: { fd: number }[] };
      if (i.fd != null) extra.push(i.fd);
      for (const r of i.regions ?? []) extra.push(r.fd);
    }
  };
  add({ type: 'SET_OWNER' });
  add({ type: 'GET_FEATURES' });
  add({ type: 'SET_FEATURES', features });
  add({ type: 'SET_PROTOCOL_FEATURES', features: protocol });
  const memKind: FdKind = s.u8() < 240 ? 'memfd' : s.pick(FD_KINDS);
  const memfd = makeFd(memKind, extra);
  // a second fd on the same file, to shrink it later (a hostile front-end's ftruncate)
  if (s.u8() < 64 && memKind === 'memfd') plan.shrinkFds.push(fs.openSync(`/proc/self/fd/${memfd}`, 'r+'));
  add({ type: 'SET_MEM_TABLE', regions: [{ guestAddr: GPA, size: fieldU64(s, MEM), userAddr: fieldU64(s, UVA), mmapOffset: s.u8() < 250 ? 0 : s.pick([4096, MEM, 1]), fd: memfd }], needReply: s.bool() });
  if (inflight) {
    // INFLIGHT_SHMFD: a buffer from serve (GET), or one a "previous back-end" left, maybe with garbage in it
    // (recovery must refuse or resolve any content: typed errors, no hang, no access outside the buffer).
    const numQueues = fieldU32(s, 2 * PAIRS), queueSize = fieldU32(s, RING);
    if (s.bool()) add({ type: 'GET_INFLIGHT_FD', numQueues, queueSize });
    else {
      const bytes = inflightBufferBytes(2 * PAIRS, RING);
      const fd = s.u8() < 230 ? memfdCreate('vmq-fuzz-inflight', s.u8() < 240 ? bytes : s.below(bytes)) : makeFd(s.pick(FD_KINDS), extra);
      if (s.u8() < 160) {
        const header = s.bool();
        const junk = s.bytes(header ? 16 + s.below(48) : s.below(64));
        const at = s.below(2 * PAIRS) * inflightQueueBytes(RING) + (header ? 0 : s.below(inflightQueueBytes(RING)));
        if (header && junk.length >= 16 && s.u8() < 200) {
          junk[8] = 1; // version 1: a used region
          junk[9] = 0;
          if (s.u8() < 200) [junk[10], junk[11]] = [RING, 0]; // desc_num right
        }
        try {
          fs.writeSync(fd, junk, 0, junk.length, at);
        } catch {
          // not a file
        }
      }
      add({ type: 'SET_INFLIGHT_FD', mmapSize: fieldU64(s, bytes), mmapOffset: s.u8() < 240 ? 0 : s.pick([4096, 1, bytes]), numQueues, queueSize, fd, needReply: s.bool() });
    }
  }
  const format = packed ? 'packed' : 'split';
  for (let q = 0; q < 2 * PAIRS; q++) {
    const base = 0x1000 + q * 0x4000;
    const l = contiguousQueueLayout(format, GPA + base, RING);
    if (queueBytes(format, RING) > 0x4000) throw new Error('ring spacing');
    const uva = (gpa: number) => UVA + (gpa - GPA);
    add({ type: 'SET_VRING_NUM', index: fieldU32(s, q), num: fieldU32(s, RING) });
    add({ type: 'SET_VRING_ADDR', index: fieldU32(s, q), flags: 0, descUserAddr: fieldU64(s, uva(l.descAddr)), availUserAddr: fieldU64(s, uva(l.driverAddr)), usedUserAddr: fieldU64(s, uva(l.deviceAddr)), logGuestAddr: 0 });
    add({ type: 'SET_VRING_BASE', index: fieldU32(s, q), num: fieldU32(s, 0) });
    add({ type: 'SET_VRING_KICK', index: q, fd: makeFd(s.u8() < 230 ? 'eventfd' : s.pick(FD_KINDS), extra) });
    add({ type: 'SET_VRING_CALL', index: q, fd: makeFd(s.u8() < 230 ? 'eventfd' : s.pick(FD_KINDS), extra) });
    if (s.u8() < 64) add({ type: 'SET_VRING_ERR', index: q, fd: makeFd('eventfd', extra) });
    add({ type: 'SET_VRING_ENABLE', index: fieldU32(s, q), enable: s.u8() < 240 });
  }
  if (s.bool()) add({ type: 'SET_STATUS', status: 0xf, needReply: true });
}

/** One hostile message: a structured request with mutated fields, or raw bytes; fds of any kind. */
function hostileMessage(s: ByteSource, plan: Plan, extra: number[]): void {
  const k = s.u8();
  const code = k < 230 ? s.pick(CODES) : s.u32();
  let flags = VHOST_USER_VERSION | (s.u8() < 200 ? VHOST_USER_NEED_REPLY_MASK : 0);
  if (s.u8() < 12) flags = s.u32();
  let payload: Uint8Array;
  const kind = s.u8();
  if (kind < 128) {
    // fields of the right shapes: a u64, a vring state, a vring address, a memory region/table
    const dv = (n: number) => {
      const b = new Uint8Array(n);
      return [b, new DataView(b.buffer)] as const;
    };
    const sh = s.below(5);
    if (sh === 0) {
      const [b, d] = dv(8);
      d.setUint32(0, s.u8() < 200 ? s.below(2 * PAIRS + 1) | (s.u8() < 32 ? 0x100 : 0) : s.u32(), true);
      d.setUint32(4, s.u8() < 230 ? 0 : s.u32(), true);
      payload = b;
    } else if (sh === 1) {
      const [b, d] = dv(8);
      d.setUint32(0, s.u8() < 220 ? s.below(2 * PAIRS + 1) : s.u32(), true);
      d.setUint32(4, s.u8() < 128 ? s.pick([0, 1, 64, 256, 0xffff, 0x8000, 0x10000, 32768, 3]) : s.u32(), true);
      payload = b;
    } else if (sh === 2) {
      const [b, d] = dv(40);
      d.setUint32(0, s.below(2 * PAIRS + 1), true);
      for (let i = 8; i < 40; i += 8) {
        const v = fieldU64(s, UVA + s.below(MEM));
        d.setUint32(i, v % 2 ** 32, true);
        d.setUint32(i + 4, Math.floor(v / 2 ** 32), true);
      }
      payload = b;
    } else {
      const n = sh === 3 ? 1 + s.below(3) : 1;
      const [b, d] = dv(sh === 3 ? 8 + 32 * n : 40);
      let o = 0;
      if (sh === 3) {
        d.setUint32(0, s.u8() < 230 ? n : s.u32(), true);
        o = 8;
      } else o = 8;
      for (let i = 0; i < n; i++, o += 32) {
        const put = (at: number, v: number) => {
          d.setUint32(at, v % 2 ** 32, true);
          d.setUint32(at + 4, Math.floor(v / 2 ** 32), true);
        };
        put(o, fieldU64(s, GPA + i * 2 * MEM));
        put(o + 8, s.u8() < 128 ? MEM : s.pick([0, 4096, MEM + 4096, 2 * MEM, 1]));
        put(o + 16, fieldU64(s, UVA + i * 2 * MEM));
        put(o + 24, s.u8() < 220 ? 0 : s.pick([4096, MEM, 1, 2 ** 40]));
      }
      payload = b;
    }
    if (s.u8() < 16) payload = payload.subarray(0, s.below(payload.length + 1));
  } else {
    payload = s.bytes(s.u8() < 240 ? s.below(64) : s.below(300));
  }
  const bytes = new Uint8Array(12 + payload.length);
  encodeHeader({ request: code >>> 0, flags: flags >>> 0, size: s.u8() < 248 ? payload.length : s.pick([0, 1, 4096, 4097, 0xffffffff]) }, bytes, 0);
  bytes.set(payload, 12);
  const fds: number[] = [];
  const nfds = s.u8() < 128 ? 0 : s.u8() < 200 ? 1 : s.below(5);
  for (let i = 0; i < nfds; i++) fds.push(makeFd(s.pick(FD_KINDS), extra));
  plan.sends.push({ bytes, fds });
}

function countDir(p: string): number {
  return fs.readdirSync(p).length;
}

export const vhostSessionTarget: FuzzTarget = {
  name: 'vhost-session',
  description: 'the vhost-user session state machine with its pair workers, driven by a hostile front-end (fields, sizes, fds of the wrong kind)',
  maxLen: 800,
  async: true,
  stats,
  setup() {
    if (!hostAvailable()) throw new Error('vhost-session needs the native addon (npm install builds it)');
  },
  async one(data) {
    const s = new ByteSource(data);
    stats.cases++;
    const fdsBefore = countDir('/proc/self/fd');
    const threadsBefore = countDir('/proc/self/task');
    const [a, b] = socketPair({ nonblock: true });
    const extra: number[] = [];
    const logs: string[] = [];
    const session = new Session(a, {
      pairs: PAIRS, maxQueueSize: 1024, netdev: { kind: 'sink' }, mode: 'notify', budget: 64,
      mac: Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56), mtu: 1500, rss: null,
      stats: new StatsBlock(PAIRS, DEV_STAT_COUNT).buffer, log: (l) => (process.env.FUZZ_DEBUG ? console.error(l) : logs.push(l)),
    });
    const plan: Plan = { sends: [], shrinkFds: [] };
    try {
      if (s.u8() < 100) handshake(s, plan, extra);
      for (let i = 0; i < 12 && s.left > 0; i++) {
        if (s.u8() < 200) hostileMessage(s, plan, extra);
        else if (s.left > 0) handshake(s, plan, extra);
      }
      // the stream, cut into chunks; each send's fds go with the chunk holding its first byte
      const framer = new VhostUserFramer({ maxPayloadSize: 1 << 20 });
      let replies = 0;
      const drain = (): void => {
        for (;;) {
          let r;
          try {
            r = recvmsg(b, 65536, 16);
          } catch {
            return;
          }
          if (r === null || r.bytes.length === 0) return;
          framer.push(new Uint8Array(r.bytes), r.fds);
          for (const f of framer.frames()) {
            try {
              // with its fds: a reply that must carry one (GET_INFLIGHT_FD) is checked for it; they are closed below
              if (CODES.includes(f.header.request)) decodeReply(f.header.request, f.header, f.payload, f.fds);
              // an unknown request sent with NEED_REPLY gets a failing REPLY_ACK (session.ts failureAck)
              else if (f.header.flags !== (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK) || f.payload.length !== 8) throw new Error(`flags 0x${f.header.flags.toString(16)}, ${f.payload.length} bytes`);
            } catch (e) {
              throw new FuzzFinding(`malformed reply to request ${f.header.request}: ${(e as Error).message}`);
            } finally {
              for (const fd of f.fds) close(fd);
            }
            replies++;
          }
        }
      };
      const cut = s.u8() < 200;
      for (const m of plan.sends) {
        stats.messages++;
        if (cut && m.bytes.length > 13 && s.bool()) {
          const at = 1 + s.below(m.bytes.length - 1);
          session.receive(m.bytes.subarray(0, at), m.fds);
          session.receive(m.bytes.subarray(at), []);
        } else session.receive(m.bytes, m.fds);
        if (s.u8() < 32) await sleep(s.below(3));
        if (plan.shrinkFds.length > 0 && s.u8() >= 232) {
          fs.ftruncateSync(s.pick(plan.shrinkFds), s.pick([0, 4096, 0x2000, MEM / 2]));
          stats.shrinks++;
        }
        drain();
      }
      // let the handlers (and any started pair) run a moment, then hang up
      const settle = Date.now() + 5;
      while (Date.now() < settle) await sleep(1);
      drain();
      session.peerClosed('EOF');
      const ended = await Promise.race([session.done.then(() => true), sleep(10_000).then(() => false)]);
      if (!ended) throw new FuzzFinding(`the session did not end within 10 s after EOF (running pairs ${session.runningPairs})\n${logs.slice(-20).join('\n')}`);
      if (logs.some((l) => l.includes('closing connection') || l.includes('reply failed'))) stats.closedBySession++;
      if (logs.some((l) => l.includes('SIGBUS'))) stats.memoryFaults++;
      if (logs.some((l) => /queue pair \d started/.test(l))) stats.pairsStarted++;
      if (logs.some((l) => /resumed from the inflight region/.test(l))) stats.inflightResumes++;
      if (logs.some((l) => /INFLIGHT_[A-Z_]+:/.test(l))) stats.inflightErrors++;
      drain();
      stats.replies += replies;
    } finally {
      close(a);
      close(b);
      for (const fd of extra) close(fd);
      for (const fd of plan.shrinkFds) fs.closeSync(fd);
    }
    // back to the fds and threads of before (workers exit, and close theirs, asynchronously)
    const until = Date.now() + 5000;
    let fds = countDir('/proc/self/fd'), threads = countDir('/proc/self/task');
    while ((fds > fdsBefore || threads > threadsBefore) && Date.now() < until) {
      await sleep(5);
      fds = countDir('/proc/self/fd');
      threads = countDir('/proc/self/task');
    }
    if (fds > fdsBefore) throw new FuzzFinding(`fd leak: ${fds - fdsBefore} fds more than before the case\n${logs.slice(-20).join('\n')}`);
    if (threads > threadsBefore) throw new FuzzFinding(`thread leak: ${threads - threadsBefore} threads more than before the case (a worker did not exit)\n${logs.slice(-20).join('\n')}`);
  },
  seeds() {
    // a handshake alone; a handshake then a few hostile messages; hostile messages alone
    return [
      Uint8Array.from([0, ...new Array(120).fill(0)]),
      Uint8Array.from([0, ...new Array(120).fill(0), 0, 230, 0, 0, 0, 0, 0, 5, 1, 1, 0]),
      Uint8Array.from([200, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 50, 0, 2, 128, 255, 3]),
    ];
  },
};
