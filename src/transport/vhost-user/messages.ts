/**
 * vhost-user message codec (pure: no I/O, never closes an fd).
 *
 * Spec: /work/shared/ref/vhost-user.rst, "Message Specification", "Front-end
 * message types", "Back-end message types" and "VHOST_USER_PROTOCOL_F_REPLY_ACK";
 * requests 41..43 and back-end requests 6..8 from the upstream version of that
 * document (see constants.ts). Little-endian throughout (payloads.ts).
 *
 * What is here:
 *  - {@link decodeRequest}: back-end side, validates a front-end request (header
 *    flags, request code, exact payload size, fd count, field ranges) and returns a
 *    {@link VhostUserMessage} (discriminated on `type`).
 *  - {@link encodeRequest}: front-end side, the inverse (bytes + fds to attach).
 *  - Reply encoders for the back-end ({@link encodeU64Reply}, {@link encodeReplyAck},
 *    {@link encodeVringBaseReply}, {@link encodeGetConfigReply}, {@link encodeStatusReply}, ...)
 *    and {@link decodeReply} for the front-end.
 *  - The back-end channel: {@link encodeBackendRequest} / {@link decodeBackendRequest},
 *    {@link encodeBackendReplyAck} / {@link decodeBackendReply}.
 *  - Re-exports of the constants, payload codecs, the error type and the framer.
 *
 * File descriptors: a decoder either returns a message, which then owns every fd
 * that was passed in (all listed in its `fds`, and each also in the typed field
 * it belongs to), or throws a {@link VhostUserProtocolError} whose `fds` lists
 * every fd that was passed in. Either way the caller ends up holding each fd
 * exactly once and must close what it does not keep. No decoder throws anything
 * else (an unexpected internal exception is wrapped into a `BAD_FIELD` error
 * that still carries the fds).
 *
 * Every encoder checks its own output with the matching decoder, so nothing
 * this module encodes would be refused by it; a bad argument is a `RangeError`.
 */

import {
  VHOST_USER_FLAGS_KNOWN,
  VHOST_USER_HEADER_SIZE,
  VHOST_USER_MAX_PAYLOAD_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_REQUESTS_WITH_REPLY,
  VHOST_USER_VERSION,
  VHOST_USER_VERSION_MASK,
  VHOST_IOTLB_ACCESS_FAIL,
  VHOST_IOTLB_INVALIDATE,
  VHOST_IOTLB_MISS,
  VHOST_IOTLB_UPDATE,
  VhostUserBackendRequest,
  VhostUserRequest,
  backendRequestName,
  requestName,
  type VhostUserBackendRequestName,
  type VhostUserRequestName,
} from './constants.js';
import { VhostUserProtocolError } from './errors.js';
import {
  U64_PAYLOAD_SIZE,
  decodeConfigSpace,
  decodeInflight,
  decodeIotlbMsg,
  decodeLog,
  decodeMemoryTable,
  decodeSharedObject,
  decodeSingleMemoryRegion,
  decodeTransferState,
  decodeU64,
  decodeVringAddr,
  decodeVringArea,
  decodeVringFileU64,
  decodeVringState,
  encodeConfigSpace,
  encodeHeader,
  encodeInflight,
  encodeIotlbMsg,
  encodeLog,
  encodeMemoryTable,
  encodeSharedObject,
  encodeSingleMemoryRegion,
  encodeTransferState,
  encodeU64,
  encodeVringAddr,
  encodeVringArea,
  encodeVringFileU64,
  encodeVringState,
  expectLength,
  fail,
  safeNumber,
  type DecodeContext,
  type VhostIotlbMsg,
  type VhostUserConfigSpace,
  type VhostUserHeader,
  type VhostUserInflight,
  type VhostUserMemoryRegion,
  type VhostUserMemoryRegionDesc,
  type VhostVringAddr,
} from './payloads.js';

export * from './constants.js';
export * from './errors.js';
export * from './framer.js';
// Payload layouts and their codecs (payloads.ts also holds internal helpers, not re-exported).
export {
  INFLIGHT_SIZE,
  IOTLB_MSG_SIZE,
  LOG_SIZE,
  MEMORY_REGION_SIZE,
  MEMORY_TABLE_HDR_SIZE,
  SHARED_OBJECT_SIZE,
  SINGLE_MEMORY_REGION_SIZE,
  TRANSFER_STATE_SIZE,
  U64_PAYLOAD_SIZE,
  VRING_ADDR_SIZE,
  VRING_AREA_SIZE,
  VRING_STATE_SIZE,
  checkNoGuestOverlap,
  decodeConfigSpace,
  decodeHeader,
  decodeInflight,
  decodeIotlbMsg,
  decodeLog,
  decodeMemoryTable,
  decodeSharedObject,
  decodeSingleMemoryRegion,
  decodeTransferState,
  decodeU64,
  decodeVringAddr,
  decodeVringArea,
  decodeVringFileU64,
  decodeVringState,
  encodeConfigSpace,
  encodeHeader,
  encodeInflight,
  encodeIotlbMsg,
  encodeLog,
  encodeMemoryTable,
  encodeSharedObject,
  encodeSingleMemoryRegion,
  encodeTransferState,
  encodeU64,
  encodeVringAddr,
  encodeVringArea,
  encodeVringFileU64,
  encodeVringState,
} from './payloads.js';
export type {
  DecodeContext,
  VhostIotlbMsg,
  VhostUserConfigSpace,
  VhostUserHeader,
  VhostUserInflight,
  VhostUserLog,
  VhostUserMemoryRegion,
  VhostUserMemoryRegionDesc,
  VhostUserTransferState,
  VhostUserVringArea,
  VhostVringAddr,
  VhostVringFile,
  VhostVringState,
} from './payloads.js';

// ---------------------------------------------------------------------------
// Common
// ---------------------------------------------------------------------------

/** An encoded message: write `bytes` (header + payload) in ONE sendmsg with `fds` as SCM_RIGHTS. */
export interface EncodedVhostUserMessage {
  bytes: Uint8Array;
  fds: number[];
}

/** Fields every decoded message has. */
interface MessageBase<T extends string, R extends number> {
  type: T;
  /** Request code from the header. */
  request: R;
  /** NEED_REPLY (flags bit 3): the sender wants a REPLY_ACK (when the request has no explicit reply). */
  needReply: boolean;
  /** Every fd that came with the message, in order: now owned by the receiver. */
  fds: readonly number[];
}

type EmptyBody = Record<never, never>;

/** A vring fd message body (SET_VRING_KICK / CALL / ERR). */
export interface VringFdBody {
  /** Vring index, bits 0-7 of the u64 payload. */
  index: number;
  /** The eventfd, or null when the NOFD bit (bit 8) is set (then no fd is attached). */
  fd: number | null;
}

/** A memory region identified for removal (REM_MEM_REG): the spec ignores the mmap offset. */
export type VhostUserMemoryRegionId = Omit<VhostUserMemoryRegionDesc, 'mmapOffset'>;

/** Payload fields of each front-end request, by name (see {@link VhostUserMessage}). */
export interface VhostUserRequestBodies {
  /** Payload: none. Reply: u64 features. */
  GET_FEATURES: EmptyBody;
  /** Payload: u64 features (bigint; virtio feature bits go up to 63+). */
  SET_FEATURES: { features: bigint };
  SET_OWNER: EmptyBody;
  /** Deprecated (spec): ignore it or disable all rings. */
  RESET_OWNER: EmptyBody;
  /** Payload: memory table, 1..8 regions; exactly one fd per region (`regions[i].fd === fds[i]`). */
  SET_MEM_TABLE: { regions: VhostUserMemoryRegion[] };
  /**
   * Payload: log description (16 bytes) + 1 fd: the shared-memory (LOG_SHMFD)
   * form, the only one DPDK accepts. The legacy form (u64 log base, no fd) is
   * refused with `BAD_SIZE`. Reply: u64 0 ({@link encodeSetLogBaseReply}).
   */
  SET_LOG_BASE: { mmapSize: number; mmapOffset: number; fd: number };
  /** Payload: none; 1 fd (eventfd signalled when the log changes). */
  SET_LOG_FD: { fd: number };
  /** Payload: vring state; `index` raw, `num` = ring size, raw (the caller checks power of two / <= 32768). */
  SET_VRING_NUM: { index: number; num: number };
  /** Payload: vring address (40 bytes). */
  SET_VRING_ADDR: VhostVringAddr;
  /** Payload: vring state; `num` = next avail index (split) or packed indices + wrap counters (see VhostVringState). */
  SET_VRING_BASE: { index: number; num: number };
  /** Payload: vring state; `num` is ignored (DPDK virtio-user fills it). Reply: vring state. Stops the ring. */
  GET_VRING_BASE: { index: number };
  /** Payload: u64 index/NOFD; 1 fd unless NOFD, then 0. */
  SET_VRING_KICK: VringFdBody;
  SET_VRING_CALL: VringFdBody;
  SET_VRING_ERR: VringFdBody;
  /** Payload: none. Reply: u64 protocol features. */
  GET_PROTOCOL_FEATURES: EmptyBody;
  /** Payload: u64 protocol features. */
  SET_PROTOCOL_FEATURES: { features: bigint };
  /** Payload: none. Reply: u64 max queue count. */
  GET_QUEUE_NUM: EmptyBody;
  /** Payload: vring state; num must be 0 or 1 (`BAD_FIELD` otherwise). */
  SET_VRING_ENABLE: { index: number; enable: boolean };
  /** Payload: u64 whose first 6 bytes are the guest MAC (the other 2 are ignored). */
  SEND_RARP: { mac: Uint8Array };
  /** Payload: u64 MTU (raw; DPDK accepts 68..65535). */
  NET_SET_MTU: { mtu: number };
  /** Payload: none; 1 fd (the back-end channel socket). */
  SET_BACKEND_REQ_FD: { fd: number };
  /** Payload: IOTLB message whose type is UPDATE (2) or INVALIDATE (3). */
  IOTLB_MSG: { iotlb: VhostIotlbMsg };
  /** Payload: vring state; num 0 = little-endian, 1 = big-endian, others refused. */
  SET_VRING_ENDIAN: { index: number; bigEndian: boolean };
  /** Payload: config space header + `size` placeholder bytes (ignored). Reply: config space. */
  GET_CONFIG: { offset: number; size: number; flags: number };
  /** Payload: config space (data.length = size). */
  SET_CONFIG: VhostUserConfigSpace;
  /** Payload: crypto session description; its layout is not in the spec, so it is returned opaque (a copy). */
  CREATE_CRYPTO_SESSION: { session: Uint8Array };
  /** Payload: u64 session id. */
  CLOSE_CRYPTO_SESSION: { sessionId: bigint };
  /** Payload: none. Reply: the userfaultfd. */
  POSTCOPY_ADVISE: EmptyBody;
  POSTCOPY_LISTEN: EmptyBody;
  /** Payload: none. Reply: u64 (0 = success). */
  POSTCOPY_END: EmptyBody;
  /** Payload: inflight description, of which only numQueues / queueSize are meaningful. Reply: inflight + fd. */
  GET_INFLIGHT_FD: { numQueues: number; queueSize: number };
  /** Payload: inflight description; 1 fd. */
  SET_INFLIGHT_FD: VhostUserInflight & { fd: number };
  /** Payload: none; 1 fd (vhost-user-gpu socket). */
  GPU_SET_SOCKET: { fd: number };
  RESET_DEVICE: EmptyBody;
  /** Payload: vring state with num = 0 (reserved). In-band kick. */
  VRING_KICK: { index: number };
  /** Payload: none. Reply: u64. */
  GET_MAX_MEM_SLOTS: EmptyBody;
  /** Payload: single memory region; exactly 1 fd. */
  ADD_MEM_REG: { region: VhostUserMemoryRegion };
  /**
   * Payload: single memory region (mmap offset ignored). The spec lets a
   * back-end accept one stray fd "for compatibility with existing incorrect
   * implementations"; it MUST close it unused: that is `strayFd`.
   */
  REM_MEM_REG: { region: VhostUserMemoryRegionId; strayFd: number | null };
  /** Payload: u64 holding the 8-bit virtio device status (values > 0xff refused). */
  SET_STATUS: { status: number };
  /** Payload: none. Reply: u64 status. */
  GET_STATUS: EmptyBody;
  /** Payload: 16-byte UUID. Reply: dma-buf fd or none. */
  GET_SHARED_OBJECT: { uuid: string };
  /** Payload: transfer direction / phase; 1 fd. Reply: u64 (bits 0-7 error, bit 8 NOFD) + optional fd. */
  SET_DEVICE_STATE_FD: { direction: number; phase: number; fd: number };
  /** Payload: none. Reply: u64 (0 = success). */
  CHECK_DEVICE_STATE: EmptyBody;
}

/**
 * A decoded, validated front-end request. Discriminate on `type`, e.g.
 * `{ type: 'SET_VRING_NUM', request: 8, needReply: false, fds: [], index: 0, num: 256 }`.
 */
export type VhostUserMessage = {
  [K in VhostUserRequestName]: MessageBase<K, (typeof VhostUserRequest)[K]> & VhostUserRequestBodies[K];
}[VhostUserRequestName];

/** The variant of {@link VhostUserMessage} with the given type. */
export type VhostUserMessageOf<K extends VhostUserRequestName> = Extract<VhostUserMessage, { type: K }>;

/** What {@link encodeRequest} takes: a message without `request`/`fds` (derived), `needReply` optional. */
export type VhostUserRequestInit = {
  [K in VhostUserRequestName]: { type: K; needReply?: boolean } & VhostUserRequestBodies[K];
}[VhostUserRequestName];

/** The error context of a message (request, NEED_REPLY, fds). */
function contextOf(header: VhostUserHeader, fds: readonly number[]): DecodeContext {
  return { request: header.request, needReply: (header.flags & VHOST_USER_NEED_REPLY_MASK) !== 0, fds };
}

/**
 * Validate the flags of a request header (front-end request on the main
 * channel, or back-end request on the back-end channel): version 1, REPLY
 * clear, no reserved bit; and that `payload` has the header's size.
 */
function checkRequestHeader(header: VhostUserHeader, payload: Uint8Array, ctx: DecodeContext): void {
  checkFlags(header, ctx, false);
  if (payload.byteLength !== header.size) fail(ctx, 'BAD_SIZE', `payload is ${payload.byteLength} bytes but header size is ${header.size}`);
  if (header.size > VHOST_USER_MAX_PAYLOAD_SIZE) fail(ctx, 'OVERSIZED', `payload size ${header.size} above ${VHOST_USER_MAX_PAYLOAD_SIZE}`);
}

function checkFlags(header: VhostUserHeader, ctx: DecodeContext, reply: boolean): void {
  const f = header.flags;
  if ((f & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) {
    fail(ctx, 'BAD_VERSION', `flags 0x${f.toString(16)}: version ${f & VHOST_USER_VERSION_MASK}, expected ${VHOST_USER_VERSION}`);
  }
  if ((f & ~VHOST_USER_FLAGS_KNOWN) !== 0) fail(ctx, 'BAD_FLAGS', `flags 0x${f.toString(16)} has reserved bits set`);
  if (reply) {
    if ((f & VHOST_USER_REPLY_MASK) === 0) fail(ctx, 'BAD_FLAGS', `reply flags 0x${f.toString(16)} lack the REPLY bit`);
    if ((f & VHOST_USER_NEED_REPLY_MASK) !== 0) fail(ctx, 'BAD_FLAGS', `reply flags 0x${f.toString(16)} have NEED_REPLY set`);
  } else if ((f & VHOST_USER_REPLY_MASK) !== 0) {
    fail(ctx, 'BAD_FLAGS', `request flags 0x${f.toString(16)} have the REPLY bit set`);
  }
}

function expectFds(ctx: DecodeContext, n: number, what: string): void {
  const got = ctx.fds?.length ?? 0;
  if (got !== n) fail(ctx, 'BAD_FD_COUNT', `${what} takes ${n} fd${n === 1 ? '' : 's'}, got ${got}`);
}

function expectEmpty(payload: Uint8Array, what: string, ctx: DecodeContext): void {
  expectLength(payload, 0, what, ctx);
}

/** Run a decoder so that it can only throw VhostUserProtocolError (carrying the fds). */
function guarded<T>(ctx: DecodeContext, body: () => T): T {
  try {
    return body();
  } catch (e) {
    if (e instanceof VhostUserProtocolError) throw e;
    throw new VhostUserProtocolError('BAD_FIELD', `internal decode failure: ${(e as Error)?.message ?? String(e)}`, { ...ctx, cause: e });
  }
}

function message<K extends VhostUserRequestName>(
  type: K,
  ctx: DecodeContext,
  body: VhostUserRequestBodies[K],
): VhostUserMessageOf<K> {
  return {
    type,
    request: VhostUserRequest[type],
    needReply: ctx.needReply ?? false,
    fds: Object.freeze([...(ctx.fds ?? [])]),
    ...body,
  } as unknown as VhostUserMessageOf<K>;
}

// ---------------------------------------------------------------------------
// Front-end requests: decode (back-end side)
// ---------------------------------------------------------------------------

/**
 * Decode and validate one front-end request, before anything acts on it.
 *
 * `header` is the 12-byte header, `payload` exactly `header.size` bytes
 * following it, `fds` the fds that arrived with it (from
 * {@link VhostUserFramer}). Checks, in order: flags (version 1 else
 * `BAD_VERSION`; REPLY or a reserved bit set → `BAD_FLAGS`), payload length
 * (`BAD_SIZE`, `OVERSIZED`), request code (`UNKNOWN_REQUEST`), then per
 * request the exact payload size or allowed range (`BAD_SIZE`), fd count
 * (`BAD_FD_COUNT`) and field ranges (`BAD_FIELD`, `UNSAFE_INTEGER`) as
 * documented on {@link VhostUserRequestBodies}.
 *
 * Vring indices are returned raw (u32) for the caller to check against its
 * queue count, except for SET_VRING_KICK/CALL/ERR where the index is bits 0-7
 * of the u64 (bits above 8 refused).
 *
 * @throws VhostUserProtocolError; its `fds` are all of `fds`, `request` the
 *   header's request code and `needReply` its NEED_REPLY flag, so the caller
 *   can send a failing REPLY_ACK or close the connection, and close the fds.
 */
export function decodeRequest(header: VhostUserHeader, payload: Uint8Array, fds: readonly number[] = []): VhostUserMessage {
  const ctx = contextOf(header, fds);
  return guarded(ctx, () => {
    checkRequestHeader(header, payload, ctx);
    const name = requestName(header.request);
    if (name === undefined) fail(ctx, 'UNKNOWN_REQUEST', `unknown front-end request ${header.request}`);
    return decodeBody(name, payload, ctx);
  });
}

function vringFd(name: 'SET_VRING_KICK' | 'SET_VRING_CALL' | 'SET_VRING_ERR', payload: Uint8Array, ctx: DecodeContext): VhostUserMessage {
  const file = decodeVringFileU64(decodeU64(payload, ctx), ctx);
  expectFds(ctx, file.noFd ? 0 : 1, `${name} with${file.noFd ? '' : 'out'} the NOFD bit`);
  return message(name, ctx, { index: file.index, fd: file.noFd ? null : ctx.fds![0]! });
}

function decodeBody(name: VhostUserRequestName, payload: Uint8Array, ctx: DecodeContext): VhostUserMessage {
  const fd0 = (): number => ctx.fds![0]!;
  switch (name) {
    // --- no payload, no fd
    case 'GET_FEATURES':
    case 'SET_OWNER':
    case 'RESET_OWNER':
    case 'GET_PROTOCOL_FEATURES':
    case 'GET_QUEUE_NUM':
    case 'POSTCOPY_ADVISE':
    case 'POSTCOPY_LISTEN':
    case 'POSTCOPY_END':
    case 'RESET_DEVICE':
    case 'GET_MAX_MEM_SLOTS':
    case 'GET_STATUS':
    case 'CHECK_DEVICE_STATE':
      expectEmpty(payload, name, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, {});

    // --- no payload, one fd
    case 'SET_LOG_FD':
    case 'SET_BACKEND_REQ_FD':
    case 'GPU_SET_SOCKET':
      expectEmpty(payload, name, ctx);
      expectFds(ctx, 1, name);
      return message(name, ctx, { fd: fd0() });

    case 'SET_FEATURES':
    case 'SET_PROTOCOL_FEATURES': {
      const features = decodeU64(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { features });
    }

    case 'SET_MEM_TABLE': {
      const regions = decodeMemoryTable(payload, ctx);
      expectFds(ctx, regions.length, `SET_MEM_TABLE with ${regions.length} regions`);
      return message(name, ctx, { regions: regions.map((r, i) => ({ ...r, fd: ctx.fds![i]! })) });
    }

    case 'SET_LOG_BASE': {
      const log = decodeLog(payload, ctx);
      expectFds(ctx, 1, name);
      return message(name, ctx, { mmapSize: log.mmapSize, mmapOffset: log.mmapOffset, fd: fd0() });
    }

    case 'SET_VRING_NUM':
    case 'SET_VRING_BASE': {
      const s = decodeVringState(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { index: s.index, num: s.num });
    }

    case 'GET_VRING_BASE': {
      // `num` carries nothing for the back-end, and DPDK 22.11's virtio-user
      // sends its ring's index there (seen: 3744): ignore it, as QEMU's and
      // DPDK's own back-ends do.
      const s = decodeVringState(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { index: s.index });
    }
    case 'VRING_KICK': {
      const s = decodeVringState(payload, ctx);
      expectFds(ctx, 0, name);
      if (s.num !== 0) fail(ctx, 'BAD_FIELD', `${name} num ${s.num}: the field is reserved and must be 0`);
      return message(name, ctx, { index: s.index });
    }

    case 'SET_VRING_ENABLE': {
      const s = decodeVringState(payload, ctx);
      expectFds(ctx, 0, name);
      if (s.num > 1) fail(ctx, 'BAD_FIELD', `SET_VRING_ENABLE num ${s.num} not 0 or 1`);
      return message(name, ctx, { index: s.index, enable: s.num === 1 });
    }

    case 'SET_VRING_ENDIAN': {
      const s = decodeVringState(payload, ctx);
      expectFds(ctx, 0, name);
      if (s.num > 1) fail(ctx, 'BAD_FIELD', `SET_VRING_ENDIAN num ${s.num} not 0 (little) or 1 (big)`);
      return message(name, ctx, { index: s.index, bigEndian: s.num === 1 });
    }

    case 'SET_VRING_ADDR': {
      const a = decodeVringAddr(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, a);
    }

    case 'SET_VRING_KICK':
    case 'SET_VRING_CALL':
    case 'SET_VRING_ERR':
      return vringFd(name, payload, ctx);

    case 'SEND_RARP':
      expectLength(payload, U64_PAYLOAD_SIZE, name, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { mac: payload.slice(0, 6) });

    case 'NET_SET_MTU': {
      const mtu = safeNumber(decodeU64(payload, ctx), 'MTU', ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { mtu });
    }

    case 'IOTLB_MSG': {
      const iotlb = decodeIotlbMsg(payload, ctx);
      expectFds(ctx, 0, name);
      if (iotlb.type !== VHOST_IOTLB_UPDATE && iotlb.type !== VHOST_IOTLB_INVALIDATE) {
        fail(ctx, 'BAD_FIELD', `front-end IOTLB message type ${iotlb.type} is not UPDATE (2) or INVALIDATE (3)`);
      }
      return message(name, ctx, { iotlb });
    }

    case 'GET_CONFIG': {
      const c = decodeConfigSpace(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { offset: c.offset, size: c.data.byteLength, flags: c.flags });
    }

    case 'SET_CONFIG': {
      const c = decodeConfigSpace(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, c);
    }

    case 'CREATE_CRYPTO_SESSION':
      expectFds(ctx, 0, name);
      return message(name, ctx, { session: payload.slice() });

    case 'CLOSE_CRYPTO_SESSION': {
      const sessionId = decodeU64(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { sessionId });
    }

    case 'GET_INFLIGHT_FD': {
      const i = decodeInflight(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { numQueues: i.numQueues, queueSize: i.queueSize });
    }

    case 'SET_INFLIGHT_FD': {
      const i = decodeInflight(payload, ctx);
      expectFds(ctx, 1, name);
      return message(name, ctx, { ...i, fd: fd0() });
    }

    case 'ADD_MEM_REG': {
      const r = decodeSingleMemoryRegion(payload, ctx);
      expectFds(ctx, 1, name);
      return message(name, ctx, { region: { ...r, fd: fd0() } });
    }

    case 'REM_MEM_REG': {
      const n = ctx.fds?.length ?? 0;
      if (n > 1) fail(ctx, 'BAD_FD_COUNT', `REM_MEM_REG takes no fd (one tolerated), got ${n}`);
      const r = decodeSingleMemoryRegion(payload, ctx);
      return message(name, ctx, { region: { guestAddr: r.guestAddr, size: r.size, userAddr: r.userAddr }, strayFd: n === 1 ? fd0() : null });
    }

    case 'SET_STATUS': {
      const v = decodeU64(payload, ctx);
      expectFds(ctx, 0, name);
      if (v > 0xffn) fail(ctx, 'BAD_FIELD', `SET_STATUS 0x${v.toString(16)}: the virtio device status is 8 bits`);
      return message(name, ctx, { status: Number(v) });
    }

    case 'GET_SHARED_OBJECT': {
      const uuid = decodeSharedObject(payload, ctx);
      expectFds(ctx, 0, name);
      return message(name, ctx, { uuid });
    }

    case 'SET_DEVICE_STATE_FD': {
      const t = decodeTransferState(payload, ctx);
      expectFds(ctx, 1, name);
      return message(name, ctx, { direction: t.direction, phase: t.phase, fd: fd0() });
    }
  }
}

// ---------------------------------------------------------------------------
// Front-end requests: encode (front-end side)
// ---------------------------------------------------------------------------

function frame(request: number, flags: number, payload: Uint8Array, fds: number[]): EncodedVhostUserMessage {
  if (payload.byteLength > VHOST_USER_MAX_PAYLOAD_SIZE) {
    throw new RangeError(`payload of ${payload.byteLength} bytes above ${VHOST_USER_MAX_PAYLOAD_SIZE}`);
  }
  const bytes = new Uint8Array(VHOST_USER_HEADER_SIZE + payload.byteLength);
  encodeHeader({ request, flags, size: payload.byteLength }, bytes, 0);
  bytes.set(payload, VHOST_USER_HEADER_SIZE);
  return { bytes, fds };
}

function checkFd(fd: number, what: string): number {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw new RangeError(`${what}: ${fd} is not a file descriptor`);
  return fd;
}

/** Run `decode` over an encoding we produced; turn a refusal into a RangeError (caller bug). */
function selfCheck(what: string, decode: () => unknown): void {
  try {
    decode();
  } catch (e) {
    if (e instanceof VhostUserProtocolError) throw new RangeError(`refusing to encode an invalid ${what}: ${e.message}`, { cause: e });
    throw e;
  }
}

function requestPayload(init: VhostUserRequestInit): { payload: Uint8Array; fds: number[] } {
  const none = new Uint8Array(0);
  switch (init.type) {
    case 'GET_FEATURES':
    case 'SET_OWNER':
    case 'RESET_OWNER':
    case 'GET_PROTOCOL_FEATURES':
    case 'GET_QUEUE_NUM':
    case 'POSTCOPY_ADVISE':
    case 'POSTCOPY_LISTEN':
    case 'POSTCOPY_END':
    case 'RESET_DEVICE':
    case 'GET_MAX_MEM_SLOTS':
    case 'GET_STATUS':
    case 'CHECK_DEVICE_STATE':
      return { payload: none, fds: [] };
    case 'SET_LOG_FD':
    case 'SET_BACKEND_REQ_FD':
    case 'GPU_SET_SOCKET':
      return { payload: none, fds: [checkFd(init.fd, init.type)] };
    case 'SET_FEATURES':
    case 'SET_PROTOCOL_FEATURES':
      return { payload: encodeU64(init.features), fds: [] };
    case 'SET_MEM_TABLE':
      return { payload: encodeMemoryTable(init.regions), fds: init.regions.map((r, i) => checkFd(r.fd, `region ${i} fd`)) };
    case 'SET_LOG_BASE':
      return { payload: encodeLog(init), fds: [checkFd(init.fd, init.type)] };
    case 'SET_VRING_NUM':
    case 'SET_VRING_BASE':
      return { payload: encodeVringState(init), fds: [] };
    case 'GET_VRING_BASE':
    case 'VRING_KICK':
      return { payload: encodeVringState({ index: init.index, num: 0 }), fds: [] };
    case 'SET_VRING_ENABLE':
      return { payload: encodeVringState({ index: init.index, num: init.enable ? 1 : 0 }), fds: [] };
    case 'SET_VRING_ENDIAN':
      return { payload: encodeVringState({ index: init.index, num: init.bigEndian ? 1 : 0 }), fds: [] };
    case 'SET_VRING_ADDR':
      return { payload: encodeVringAddr(init), fds: [] };
    case 'SET_VRING_KICK':
    case 'SET_VRING_CALL':
    case 'SET_VRING_ERR':
      return {
        payload: encodeU64(encodeVringFileU64({ index: init.index, noFd: init.fd === null })),
        fds: init.fd === null ? [] : [checkFd(init.fd, init.type)],
      };
    case 'SEND_RARP': {
      if (init.mac.byteLength !== 6) throw new RangeError(`SEND_RARP mac must be 6 bytes, got ${init.mac.byteLength}`);
      const payload = new Uint8Array(U64_PAYLOAD_SIZE);
      payload.set(init.mac);
      return { payload, fds: [] };
    }
    case 'NET_SET_MTU':
      return { payload: encodeU64(init.mtu), fds: [] };
    case 'IOTLB_MSG':
      return { payload: encodeIotlbMsg(init.iotlb), fds: [] };
    case 'GET_CONFIG':
      return { payload: encodeConfigSpace({ offset: init.offset, flags: init.flags, data: new Uint8Array(init.size) }), fds: [] };
    case 'SET_CONFIG':
      return { payload: encodeConfigSpace(init), fds: [] };
    case 'CREATE_CRYPTO_SESSION':
      return { payload: init.session.slice(), fds: [] };
    case 'CLOSE_CRYPTO_SESSION':
      return { payload: encodeU64(init.sessionId), fds: [] };
    case 'GET_INFLIGHT_FD':
      return { payload: encodeInflight({ mmapSize: 0, mmapOffset: 0, numQueues: init.numQueues, queueSize: init.queueSize }), fds: [] };
    case 'SET_INFLIGHT_FD':
      return { payload: encodeInflight(init), fds: [checkFd(init.fd, init.type)] };
    case 'ADD_MEM_REG':
      return { payload: encodeSingleMemoryRegion(init.region), fds: [checkFd(init.region.fd, 'ADD_MEM_REG fd')] };
    case 'REM_MEM_REG':
      return {
        payload: encodeSingleMemoryRegion({ ...init.region, mmapOffset: 0 }),
        fds: init.strayFd === null ? [] : [checkFd(init.strayFd, 'REM_MEM_REG stray fd')],
      };
    case 'SET_STATUS':
      return { payload: encodeU64(init.status), fds: [] };
    case 'GET_SHARED_OBJECT':
      return { payload: encodeSharedObject(init.uuid), fds: [] };
    case 'SET_DEVICE_STATE_FD':
      return { payload: encodeTransferState(init), fds: [checkFd(init.fd, init.type)] };
  }
}

/**
 * Encode a front-end request: header (flags = version 1, plus NEED_REPLY if
 * `init.needReply`) + payload, and the fds to attach in the same sendmsg
 * (region fds in region order for SET_MEM_TABLE; none for a vring fd message
 * whose `fd` is null, which sets the NOFD bit).
 *
 * @throws RangeError if a field does not fit the wire format or the message
 *   would be refused by {@link decodeRequest}.
 */
export function encodeRequest(init: VhostUserRequestInit): EncodedVhostUserMessage {
  const { payload, fds } = requestPayload(init);
  const flags = VHOST_USER_VERSION | (init.needReply ? VHOST_USER_NEED_REPLY_MASK : 0);
  const out = frame(VhostUserRequest[init.type], flags, payload, fds);
  selfCheck(init.type, () => decodeRequest({ request: VhostUserRequest[init.type], flags, size: payload.byteLength }, payload, fds));
  return out;
}

// ---------------------------------------------------------------------------
// Replies to front-end requests: encode (back-end side)
// ---------------------------------------------------------------------------

const REPLY_FLAGS = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;

function reply(request: number, payload: Uint8Array, fds: number[] = []): EncodedVhostUserMessage {
  const out = frame(request, REPLY_FLAGS, payload, fds);
  selfCheck(`reply to request ${request}`, () =>
    decodeReply(request, { request, flags: REPLY_FLAGS, size: payload.byteLength }, payload, fds),
  );
  return out;
}

/**
 * A u64 reply (flags = version 1 | REPLY): GET_FEATURES / GET_PROTOCOL_FEATURES
 * (feature masks), GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, POSTCOPY_END,
 * CHECK_DEVICE_STATE, or a REPLY_ACK (see {@link encodeReplyAck}).
 */
export function encodeU64Reply(request: number, value: bigint | number): EncodedVhostUserMessage {
  return reply(request, encodeU64(value));
}

/**
 * A REPLY_ACK (spec "VHOST_USER_PROTOCOL_F_REPLY_ACK"): u64 `result`,
 * 0 = success, non-zero = failure. Send it for a request with NEED_REPLY set
 * that has no explicit reply (see `VHOST_USER_REQUESTS_WITH_REPLY`).
 */
export function encodeReplyAck(request: number, result: bigint | number = 0): EncodedVhostUserMessage {
  return encodeU64Reply(request, result);
}

/** GET_VRING_BASE reply: vring state {index, num = the ring's next avail index (or packed indices)}. */
export function encodeVringBaseReply(index: number, num: number): EncodedVhostUserMessage {
  return reply(VhostUserRequest.GET_VRING_BASE, encodeVringState({ index, num }));
}

/**
 * GET_CONFIG reply: the config space (its offset/size must match the
 * request), or `null` to report an error, which the spec encodes as an empty
 * payload.
 */
export function encodeGetConfigReply(config: VhostUserConfigSpace | null): EncodedVhostUserMessage {
  return reply(VhostUserRequest.GET_CONFIG, config === null ? new Uint8Array(0) : encodeConfigSpace(config));
}

/** GET_STATUS reply: the 8-bit device status in a u64. */
export function encodeStatusReply(status: number): EncodedVhostUserMessage {
  if (!Number.isInteger(status) || status < 0 || status > 0xff) throw new RangeError(`device status ${status} is not 8 bits`);
  return reply(VhostUserRequest.GET_STATUS, encodeU64(status));
}

/**
 * SET_LOG_BASE reply: u64 0. QEMU only checks the reply's request code,
 * rust-vmm front-ends require a u64 ack, and DPDK sends an empty payload;
 * a u64 0 satisfies all of them.
 */
export function encodeSetLogBaseReply(): EncodedVhostUserMessage {
  return reply(VhostUserRequest.SET_LOG_BASE, encodeU64(0));
}

/** GET_INFLIGHT_FD reply: inflight description + the fd of the shared inflight buffer. */
export function encodeInflightFdReply(inflight: VhostUserInflight, fd: number): EncodedVhostUserMessage {
  return reply(VhostUserRequest.GET_INFLIGHT_FD, encodeInflight(inflight), [checkFd(fd, 'inflight fd')]);
}

/** POSTCOPY_ADVISE reply: no payload, the userfaultfd attached. */
export function encodePostcopyAdviseReply(userfaultFd: number): EncodedVhostUserMessage {
  return reply(VhostUserRequest.POSTCOPY_ADVISE, new Uint8Array(0), [checkFd(userfaultFd, 'userfaultfd')]);
}

/**
 * SET_DEVICE_STATE_FD reply: u64 with bits 0-7 = `error` (0 success) and bit 8
 * (NOFD) set unless the back-end supplies its own transfer fd. An error reply
 * must not carry an fd.
 */
export function encodeSetDeviceStateFdReply(error: number, fd: number | null): EncodedVhostUserMessage {
  if (!Number.isInteger(error) || error < 0 || error > 0xff) throw new RangeError(`device state error ${error} is not 8 bits`);
  const value = BigInt(error) | (fd === null ? 0x100n : 0n);
  return reply(VhostUserRequest.SET_DEVICE_STATE_FD, encodeU64(value), fd === null ? [] : [checkFd(fd, 'device state fd')]);
}

/** GET_SHARED_OBJECT reply: u64 0 with the dma-buf fd, or u64 1 and no fd when the UUID is unknown. */
export function encodeGetSharedObjectReply(fd: number | null): EncodedVhostUserMessage {
  return reply(VhostUserRequest.GET_SHARED_OBJECT, encodeU64(fd === null ? 1 : 0), fd === null ? [] : [checkFd(fd, 'dma-buf fd')]);
}

// ---------------------------------------------------------------------------
// Replies to front-end requests: decode (front-end side)
// ---------------------------------------------------------------------------

interface ReplyBase<T extends string> {
  type: T;
  /** Request code (that of the request this answers). */
  request: number;
  /** Fds attached to the reply: owned by the receiver. */
  fds: readonly number[];
}

/** A decoded reply from the back-end (see {@link decodeReply}). */
export type VhostUserReply =
  | (ReplyBase<'GET_FEATURES'> & { features: bigint })
  | (ReplyBase<'GET_PROTOCOL_FEATURES'> & { features: bigint })
  | (ReplyBase<'GET_QUEUE_NUM'> & { queueNum: number })
  | (ReplyBase<'GET_MAX_MEM_SLOTS'> & { maxMemSlots: number })
  | (ReplyBase<'GET_STATUS'> & { status: number })
  | (ReplyBase<'GET_VRING_BASE'> & { index: number; num: number })
  /** `config` null: the back-end reported an error (empty payload). */
  | (ReplyBase<'GET_CONFIG'> & { config: VhostUserConfigSpace | null })
  | (ReplyBase<'GET_INFLIGHT_FD'> & { inflight: VhostUserInflight; fd: number })
  | (ReplyBase<'POSTCOPY_ADVISE'> & { fd: number })
  | (ReplyBase<'SET_DEVICE_STATE_FD'> & { error: number; fd: number | null })
  | (ReplyBase<'GET_SHARED_OBJECT'> & { fd: number | null })
  | (ReplyBase<'CREATE_CRYPTO_SESSION'> & { session: Uint8Array })
  /**
   * A u64 acknowledgement: REPLY_ACK for any request sent with NEED_REPLY, and
   * the u64 replies of SET_LOG_BASE, POSTCOPY_END and CHECK_DEVICE_STATE.
   * `result` 0 = success.
   */
  | (ReplyBase<'ACK'> & { of: VhostUserRequestName; result: bigint });

/**
 * Decode and validate the back-end's reply to the front-end request
 * `sentRequest` (front-end side). Flags must be exactly version 1 | REPLY
 * (`BAD_VERSION`/`BAD_FLAGS`), the request code must equal `sentRequest`
 * (`UNEXPECTED_REPLY`), and payload size / fds must match the reply format
 * of that request. Requests without an explicit reply get a u64 REPLY_ACK
 * (`type: 'ACK'`).
 *
 * @throws VhostUserProtocolError carrying all `fds`.
 */
export function decodeReply(sentRequest: number, header: VhostUserHeader, payload: Uint8Array, fds: readonly number[] = []): VhostUserReply {
  const ctx: DecodeContext = { request: header.request, needReply: false, fds };
  return guarded(ctx, () => {
    checkFlags(header, ctx, true);
    if (payload.byteLength !== header.size) fail(ctx, 'BAD_SIZE', `payload is ${payload.byteLength} bytes but header size is ${header.size}`);
    if (header.size > VHOST_USER_MAX_PAYLOAD_SIZE) fail(ctx, 'OVERSIZED', `payload size ${header.size} above ${VHOST_USER_MAX_PAYLOAD_SIZE}`);
    const name = requestName(sentRequest);
    if (name === undefined) fail(ctx, 'UNKNOWN_REQUEST', `unknown front-end request ${sentRequest}`);
    if (header.request !== sentRequest) fail(ctx, 'UNEXPECTED_REPLY', `reply for request ${header.request}, expected ${sentRequest} (${name})`);
    const base = { request: sentRequest, fds: Object.freeze([...fds]) };
    const nFds = fds.length;
    const noFd = (): void => expectFds(ctx, 0, `${name} reply`);
    switch (name) {
      case 'GET_FEATURES':
      case 'GET_PROTOCOL_FEATURES': {
        const features = decodeU64(payload, ctx);
        noFd();
        return { type: name, ...base, features };
      }
      case 'GET_QUEUE_NUM': {
        const queueNum = safeNumber(decodeU64(payload, ctx), 'queue count', ctx);
        noFd();
        return { type: name, ...base, queueNum };
      }
      case 'GET_MAX_MEM_SLOTS': {
        const maxMemSlots = safeNumber(decodeU64(payload, ctx), 'max memory slots', ctx);
        noFd();
        return { type: name, ...base, maxMemSlots };
      }
      case 'GET_STATUS': {
        const v = decodeU64(payload, ctx);
        noFd();
        if (v > 0xffn) fail(ctx, 'BAD_FIELD', `GET_STATUS reply 0x${v.toString(16)} is not 8 bits`);
        return { type: name, ...base, status: Number(v) };
      }
      case 'GET_VRING_BASE': {
        const s = decodeVringState(payload, ctx);
        noFd();
        return { type: name, ...base, index: s.index, num: s.num };
      }
      case 'GET_CONFIG': {
        noFd();
        return { type: name, ...base, config: payload.byteLength === 0 ? null : decodeConfigSpace(payload, ctx) };
      }
      case 'GET_INFLIGHT_FD': {
        const inflight = decodeInflight(payload, ctx);
        expectFds(ctx, 1, 'GET_INFLIGHT_FD reply');
        return { type: name, ...base, inflight, fd: fds[0]! };
      }
      case 'POSTCOPY_ADVISE': {
        // The userfaultfd is the reply; implementations send no payload or a u64.
        if (payload.byteLength !== 0 && payload.byteLength !== U64_PAYLOAD_SIZE) {
          fail(ctx, 'BAD_SIZE', `POSTCOPY_ADVISE reply payload is ${payload.byteLength} bytes, expected 0 or 8`);
        }
        expectFds(ctx, 1, 'POSTCOPY_ADVISE reply');
        return { type: name, ...base, fd: fds[0]! };
      }
      case 'SET_DEVICE_STATE_FD': {
        const v = decodeU64(payload, ctx);
        if ((v & ~0x1ffn) !== 0n) fail(ctx, 'BAD_FIELD', `SET_DEVICE_STATE_FD reply 0x${v.toString(16)} has bits above 8 set`);
        const error = Number(v & 0xffn);
        const hasFd = (v & 0x100n) === 0n;
        expectFds(ctx, hasFd ? 1 : 0, `SET_DEVICE_STATE_FD reply with${hasFd ? 'out' : ''} the NOFD bit`);
        if (error !== 0 && hasFd) fail(ctx, 'BAD_FIELD', 'SET_DEVICE_STATE_FD reply reports an error and returns an fd');
        return { type: name, ...base, error, fd: hasFd ? fds[0]! : null };
      }
      case 'GET_SHARED_OBJECT': {
        // The spec's reply is "dma-buf fd" (present on success); QEMU ignores the payload.
        if (payload.byteLength !== 0 && payload.byteLength !== U64_PAYLOAD_SIZE) {
          fail(ctx, 'BAD_SIZE', `GET_SHARED_OBJECT reply payload is ${payload.byteLength} bytes, expected 0 or 8`);
        }
        if (nFds > 1) fail(ctx, 'BAD_FD_COUNT', `GET_SHARED_OBJECT reply takes 0 or 1 fd, got ${nFds}`);
        return { type: name, ...base, fd: nFds === 1 ? fds[0]! : null };
      }
      case 'CREATE_CRYPTO_SESSION':
        noFd();
        return { type: name, ...base, session: payload.slice() };
      case 'SET_LOG_BASE': {
        // DPDK answers with an empty payload, libvhost-user and rust-vmm with a u64.
        noFd();
        const result = payload.byteLength === 0 ? 0n : decodeU64(payload, ctx);
        return { type: 'ACK', ...base, of: name, result };
      }
      default: {
        const result = decodeU64(payload, ctx);
        noFd();
        return { type: 'ACK', ...base, of: name, result };
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Back-end channel: back-end requests
// ---------------------------------------------------------------------------

/** Payload fields of each back-end request, by name (without the `BACKEND_` prefix). */
export interface VhostUserBackendRequestBodies {
  /** Payload: IOTLB message whose type is MISS (1) or ACCESS_FAIL (4). */
  IOTLB_MSG: { iotlb: VhostIotlbMsg };
  /** Payload: none. */
  CONFIG_CHANGE_MSG: EmptyBody;
  /** Payload: vring area; 1 fd (to mmap) unless its NOFD bit is set (de-register), then 0. */
  VRING_HOST_NOTIFIER_MSG: { index: number; size: number; offset: number; fd: number | null };
  /** Payload: vring state with num = 0 (reserved). In-band call. */
  VRING_CALL: { index: number };
  /** Payload: vring state with num = 0 (reserved). */
  VRING_ERR: { index: number };
  /** Payload: 16-byte UUID. */
  SHARED_OBJECT_ADD: { uuid: string };
  SHARED_OBJECT_REMOVE: { uuid: string };
  /** Payload: 16-byte UUID. Reply: u64 (0 = success) + the dma-buf fd on success. */
  SHARED_OBJECT_LOOKUP: { uuid: string };
}

/** A decoded, validated back-end request; `type` is `BACKEND_` + the request name. */
export type VhostUserBackendMessage = {
  [K in VhostUserBackendRequestName]: MessageBase<`BACKEND_${K}`, (typeof VhostUserBackendRequest)[K]> & VhostUserBackendRequestBodies[K];
}[VhostUserBackendRequestName];

/** What {@link encodeBackendRequest} takes. */
export type VhostUserBackendRequestInit = {
  [K in VhostUserBackendRequestName]: { type: `BACKEND_${K}`; needReply?: boolean } & VhostUserBackendRequestBodies[K];
}[VhostUserBackendRequestName];

function backendMessage<K extends VhostUserBackendRequestName>(
  name: K,
  ctx: DecodeContext,
  body: VhostUserBackendRequestBodies[K],
): VhostUserBackendMessage {
  return {
    type: `BACKEND_${name}`,
    request: VhostUserBackendRequest[name],
    needReply: ctx.needReply ?? false,
    fds: Object.freeze([...(ctx.fds ?? [])]),
    ...body,
  } as unknown as VhostUserBackendMessage;
}

/**
 * Decode and validate a back-end request received on the back-end channel
 * (front-end side). Same header checks as {@link decodeRequest}; request codes
 * are those of {@link VhostUserBackendRequest}.
 *
 * @throws VhostUserProtocolError carrying all `fds`.
 */
export function decodeBackendRequest(header: VhostUserHeader, payload: Uint8Array, fds: readonly number[] = []): VhostUserBackendMessage {
  const ctx = contextOf(header, fds);
  return guarded(ctx, () => {
    checkRequestHeader(header, payload, ctx);
    const name = backendRequestName(header.request);
    if (name === undefined) fail(ctx, 'UNKNOWN_REQUEST', `unknown back-end request ${header.request}`);
    switch (name) {
      case 'IOTLB_MSG': {
        const iotlb = decodeIotlbMsg(payload, ctx);
        expectFds(ctx, 0, name);
        if (iotlb.type !== VHOST_IOTLB_MISS && iotlb.type !== VHOST_IOTLB_ACCESS_FAIL) {
          fail(ctx, 'BAD_FIELD', `back-end IOTLB message type ${iotlb.type} is not MISS (1) or ACCESS_FAIL (4)`);
        }
        return backendMessage(name, ctx, { iotlb });
      }
      case 'CONFIG_CHANGE_MSG':
        expectEmpty(payload, name, ctx);
        expectFds(ctx, 0, name);
        return backendMessage(name, ctx, {});
      case 'VRING_HOST_NOTIFIER_MSG': {
        const a = decodeVringArea(payload, ctx);
        expectFds(ctx, a.noFd ? 0 : 1, `${name} with${a.noFd ? '' : 'out'} the NOFD bit`);
        return backendMessage(name, ctx, { index: a.index, size: a.size, offset: a.offset, fd: a.noFd ? null : fds[0]! });
      }
      case 'VRING_CALL':
      case 'VRING_ERR': {
        const s = decodeVringState(payload, ctx);
        expectFds(ctx, 0, name);
        if (s.num !== 0) fail(ctx, 'BAD_FIELD', `BACKEND_${name} num ${s.num}: the field is reserved and must be 0`);
        return backendMessage(name, ctx, { index: s.index });
      }
      case 'SHARED_OBJECT_ADD':
      case 'SHARED_OBJECT_REMOVE':
      case 'SHARED_OBJECT_LOOKUP': {
        const uuid = decodeSharedObject(payload, ctx);
        expectFds(ctx, 0, name);
        return backendMessage(name, ctx, { uuid });
      }
    }
  });
}

/**
 * Encode a back-end request for the back-end channel (back-end side).
 * @throws RangeError on invalid fields (anything {@link decodeBackendRequest} would refuse).
 */
export function encodeBackendRequest(init: VhostUserBackendRequestInit): EncodedVhostUserMessage {
  let payload: Uint8Array;
  let fds: number[] = [];
  switch (init.type) {
    case 'BACKEND_IOTLB_MSG':
      payload = encodeIotlbMsg(init.iotlb);
      break;
    case 'BACKEND_CONFIG_CHANGE_MSG':
      payload = new Uint8Array(0);
      break;
    case 'BACKEND_VRING_HOST_NOTIFIER_MSG':
      payload = encodeVringArea({ index: init.index, noFd: init.fd === null, size: init.size, offset: init.offset });
      fds = init.fd === null ? [] : [checkFd(init.fd, 'host notifier fd')];
      break;
    case 'BACKEND_VRING_CALL':
    case 'BACKEND_VRING_ERR':
      payload = encodeVringState({ index: init.index, num: 0 });
      break;
    case 'BACKEND_SHARED_OBJECT_ADD':
    case 'BACKEND_SHARED_OBJECT_REMOVE':
    case 'BACKEND_SHARED_OBJECT_LOOKUP':
      payload = encodeSharedObject(init.uuid);
      break;
  }
  const request = VhostUserBackendRequest[init.type.slice('BACKEND_'.length) as VhostUserBackendRequestName];
  const flags = VHOST_USER_VERSION | (init.needReply ? VHOST_USER_NEED_REPLY_MASK : 0);
  const out = frame(request, flags, payload, fds);
  selfCheck(init.type, () => decodeBackendRequest({ request, flags, size: payload.byteLength }, payload, fds));
  return out;
}

/** A decoded front-end reply on the back-end channel. */
export type VhostUserBackendReply =
  | (ReplyBase<'BACKEND_ACK'> & { of: VhostUserBackendRequestName; result: bigint })
  /** `fd` present iff `result` is 0 (the spec sends no fd on failure). */
  | (ReplyBase<'BACKEND_SHARED_OBJECT_LOOKUP'> & { result: bigint; fd: number | null });

/**
 * Front-end side: a REPLY_ACK (u64 result, 0 = success) to back-end request
 * `request`, flags version 1 | REPLY.
 */
export function encodeBackendReplyAck(request: number, result: bigint | number = 0): EncodedVhostUserMessage {
  const payload = encodeU64(result);
  const out = frame(request, REPLY_FLAGS, payload, []);
  selfCheck(`back-end reply ${request}`, () => decodeBackendReply(request, { request, flags: REPLY_FLAGS, size: 8 }, payload, []));
  return out;
}

/** Front-end side: SHARED_OBJECT_LOOKUP reply, u64 0 + the dma-buf fd, or a non-zero `result` and no fd. */
export function encodeSharedObjectLookupReply(result: bigint | number, fd: number | null): EncodedVhostUserMessage {
  const request = VhostUserBackendRequest.SHARED_OBJECT_LOOKUP;
  const payload = encodeU64(result);
  const fds = fd === null ? [] : [checkFd(fd, 'dma-buf fd')];
  const out = frame(request, REPLY_FLAGS, payload, fds);
  selfCheck('SHARED_OBJECT_LOOKUP reply', () => decodeBackendReply(request, { request, flags: REPLY_FLAGS, size: 8 }, payload, fds));
  return out;
}

/**
 * Back-end side: decode the front-end's reply to back-end request
 * `sentRequest`: flags version 1 | REPLY, same request code, u64 payload, no fd
 * (SHARED_OBJECT_LOOKUP: one fd iff result is 0).
 *
 * @throws VhostUserProtocolError carrying all `fds`.
 */
export function decodeBackendReply(sentRequest: number, header: VhostUserHeader, payload: Uint8Array, fds: readonly number[] = []): VhostUserBackendReply {
  const ctx: DecodeContext = { request: header.request, needReply: false, fds };
  return guarded(ctx, () => {
    checkFlags(header, ctx, true);
    if (payload.byteLength !== header.size) fail(ctx, 'BAD_SIZE', `payload is ${payload.byteLength} bytes but header size is ${header.size}`);
    const name = backendRequestName(sentRequest);
    if (name === undefined) fail(ctx, 'UNKNOWN_REQUEST', `unknown back-end request ${sentRequest}`);
    if (header.request !== sentRequest) fail(ctx, 'UNEXPECTED_REPLY', `reply for back-end request ${header.request}, expected ${sentRequest} (${name})`);
    const result = decodeU64(payload, ctx);
    const base = { request: sentRequest, fds: Object.freeze([...fds]) };
    if (name === 'SHARED_OBJECT_LOOKUP') {
      expectFds(ctx, result === 0n ? 1 : 0, `SHARED_OBJECT_LOOKUP reply with result ${result}`);
      return { type: 'BACKEND_SHARED_OBJECT_LOOKUP', ...base, result, fd: result === 0n ? fds[0]! : null };
    }
    expectFds(ctx, 0, `BACKEND_${name} reply`);
    return { type: 'BACKEND_ACK', ...base, of: name, result };
  });
}

// ---------------------------------------------------------------------------
// Helpers for the caller's REPLY_ACK logic
// ---------------------------------------------------------------------------

/** True if front-end request `request` always gets an explicit reply (NEED_REPLY then changes nothing). */
export function hasExplicitReply(request: number): boolean {
  return VHOST_USER_REQUESTS_WITH_REPLY.has(request);
}

/**
 * True if the back-end must answer `msg` with a REPLY_ACK ({@link encodeReplyAck}):
 * NEED_REPLY is set and the request has no explicit reply of its own.
 */
export function needsReplyAck(msg: { request: number; needReply: boolean }): boolean {
  return msg.needReply && !hasExplicitReply(msg.request);
}
