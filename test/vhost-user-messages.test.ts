import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  VHOST_USER_HEADER_SIZE,
  VHOST_USER_MAX_PAYLOAD_SIZE,
  VHOST_USER_NEED_REPLY_MASK,
  VHOST_USER_PROTOCOL_FEATURE_NAMES,
  VHOST_USER_PROTOCOL_F_DEVICE_STATE,
  VHOST_USER_PROTOCOL_F_STATUS,
  VHOST_USER_REPLY_MASK,
  VHOST_USER_VERSION,
  VHOST_USER_VRING_NOFD_MASK,
  VhostUserBackendRequest,
  VhostUserFramer,
  VhostUserProtocolError,
  VhostUserRequest,
  decodeBackendReply,
  decodeBackendRequest,
  decodeHeader,
  decodeReply,
  decodeRequest,
  encodeBackendReplyAck,
  encodeBackendRequest,
  encodeGetConfigReply,
  encodeGetSharedObjectReply,
  encodeHeader,
  encodeInflightFdReply,
  encodePostcopyAdviseReply,
  encodeReplyAck,
  encodeRequest,
  encodeSetDeviceStateFdReply,
  encodeSetLogBaseReply,
  encodeSharedObjectLookupReply,
  encodeStatusReply,
  encodeU64Reply,
  encodeVringBaseReply,
  needsReplyAck,
  requestName,
  type EncodedVhostUserMessage,
  type VhostUserBackendRequestInit,
  type VhostUserErrorCode,
  type VhostUserFrame,
  type VhostUserHeader,
  type VhostUserMemoryRegion,
  type VhostUserRequestInit,
  type VhostUserRequestName,
} from '../src/transport/vhost-user/messages.js';

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

const V = VHOST_USER_VERSION;
const GiB = 0x4000_0000;

function split(enc: EncodedVhostUserMessage): { header: VhostUserHeader; payload: Uint8Array; fds: number[] } {
  const header = decodeHeader(enc.bytes);
  assert.equal(enc.bytes.byteLength, VHOST_USER_HEADER_SIZE + header.size);
  return { header, payload: enc.bytes.subarray(VHOST_USER_HEADER_SIZE), fds: enc.fds };
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** Little-endian byte builder: [bits, value] pairs. */
function le(...fields: Array<[8 | 16 | 32 | 64, number | bigint]>): Uint8Array {
  const size = fields.reduce((n, [b]) => n + b / 8, 0);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let off = 0;
  for (const [bits, v] of fields) {
    if (bits === 8) dv.setUint8(off, Number(v));
    else if (bits === 16) dv.setUint16(off, Number(v), true);
    else if (bits === 32) dv.setUint32(off, Number(v), true);
    else dv.setBigUint64(off, BigInt(v), true);
    off += bits / 8;
  }
  return out;
}

function hdr(request: number, payload: Uint8Array, flags = V): VhostUserHeader {
  return { request, flags, size: payload.byteLength };
}

/** Call `fn`, expect a VhostUserProtocolError with `code` that hands back exactly `fds`. */
function expectRefusal(fn: () => unknown, code: VhostUserErrorCode, fds: readonly number[], request?: number): VhostUserProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof VhostUserProtocolError, `expected VhostUserProtocolError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.deepEqual([...caught.fds], [...fds], 'the error hands back every received fd');
  if (request !== undefined) assert.equal(caught.request, request);
  return caught;
}

function region(guestAddr: number, size: number, userAddr: number, mmapOffset: number, fd: number): VhostUserMemoryRegion {
  return { guestAddr, size, userAddr, mmapOffset, fd };
}

/** One or more samples of every front-end request. */
const SAMPLES: VhostUserRequestInit[] = [
  { type: 'GET_FEATURES' },
  { type: 'SET_FEATURES', features: (1n << 63n) | (1n << 32n) | (1n << 30n) | 1n },
  { type: 'SET_OWNER' },
  { type: 'RESET_OWNER' },
  {
    type: 'SET_MEM_TABLE',
    regions: [region(0, 2 * GiB, 0x7f00_0000_0000, 0, 100), region(4 * GiB, GiB, 0x7f80_0000_0000, 2 * GiB, 101)],
  },
  {
    type: 'SET_MEM_TABLE',
    needReply: true,
    regions: Array.from({ length: 8 }, (_, i) => region(i * 0x10_0000, 0x10_0000, 0x7000_0000_0000 + i * 0x20_0000, i * 4096, 200 + i)),
  },
  { type: 'SET_LOG_BASE', mmapSize: 0x10_0000, mmapOffset: 0x1000, fd: 102 },
  { type: 'SET_LOG_FD', fd: 103 },
  { type: 'SET_VRING_NUM', index: 3, num: 256 },
  {
    type: 'SET_VRING_ADDR',
    index: 1,
    flags: 1,
    descUserAddr: 0x7f00_0000_1000,
    usedUserAddr: 0x7f00_0000_3000,
    availUserAddr: 0x7f00_0000_2000,
    logGuestAddr: 0x3000,
  },
  { type: 'SET_VRING_BASE', index: 1, num: 0x8000_8005 },
  { type: 'GET_VRING_BASE', index: 7 },
  { type: 'SET_VRING_KICK', index: 5, fd: 104 },
  { type: 'SET_VRING_KICK', index: 6, fd: null },
  { type: 'SET_VRING_CALL', index: 255, fd: null },
  { type: 'SET_VRING_CALL', index: 4, fd: 111, needReply: true },
  { type: 'SET_VRING_ERR', index: 0, fd: 105 },
  { type: 'GET_PROTOCOL_FEATURES' },
  { type: 'SET_PROTOCOL_FEATURES', features: (1n << BigInt(VHOST_USER_PROTOCOL_F_DEVICE_STATE + 1)) - 1n },
  { type: 'GET_QUEUE_NUM' },
  { type: 'SET_VRING_ENABLE', index: 2, enable: true },
  { type: 'SET_VRING_ENABLE', index: 3, enable: false },
  { type: 'SEND_RARP', mac: Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56) },
  { type: 'NET_SET_MTU', mtu: 9000, needReply: true },
  { type: 'SET_BACKEND_REQ_FD', fd: 106 },
  { type: 'IOTLB_MSG', needReply: true, iotlb: { iova: 0x1000n, size: 0x2000n, uaddr: 0x7f00_0000_0000n, perm: 3, type: 2 } },
  { type: 'IOTLB_MSG', iotlb: { iova: 0n, size: (1n << 64n) - 1n, uaddr: 0n, perm: 0, type: 3 } },
  { type: 'SET_VRING_ENDIAN', index: 0, bigEndian: true },
  { type: 'GET_CONFIG', offset: 0, size: 12, flags: 0 },
  { type: 'SET_CONFIG', offset: 6, flags: 1, data: Uint8Array.of(1, 0) },
  { type: 'CREATE_CRYPTO_SESSION', session: Uint8Array.of(1, 2, 3, 4, 5) },
  { type: 'CLOSE_CRYPTO_SESSION', sessionId: 42n },
  { type: 'POSTCOPY_ADVISE' },
  { type: 'POSTCOPY_LISTEN' },
  { type: 'POSTCOPY_END' },
  { type: 'GET_INFLIGHT_FD', numQueues: 4, queueSize: 256 },
  { type: 'SET_INFLIGHT_FD', mmapSize: 0x4000, mmapOffset: 0, numQueues: 4, queueSize: 256, fd: 107 },
  { type: 'GPU_SET_SOCKET', fd: 108 },
  { type: 'RESET_DEVICE' },
  { type: 'VRING_KICK', index: 1 },
  { type: 'GET_MAX_MEM_SLOTS' },
  { type: 'ADD_MEM_REG', region: region(8 * GiB, GiB, 0x7f40_0000_0000, 0, 109) },
  { type: 'REM_MEM_REG', region: { guestAddr: 8 * GiB, size: GiB, userAddr: 0x7f40_0000_0000 }, strayFd: null },
  { type: 'REM_MEM_REG', region: { guestAddr: 8 * GiB, size: GiB, userAddr: 0x7f40_0000_0000 }, strayFd: 112 },
  { type: 'SET_STATUS', status: 0x0f },
  { type: 'GET_STATUS' },
  { type: 'GET_SHARED_OBJECT', uuid: '123e4567-e89b-12d3-a456-426614174000' },
  { type: 'SET_DEVICE_STATE_FD', direction: 1, phase: 0, fd: 110 },
  { type: 'CHECK_DEVICE_STATE' },
];

function expectedDecode(init: VhostUserRequestInit, enc: EncodedVhostUserMessage): object {
  return { ...init, request: VhostUserRequest[init.type], needReply: init.needReply ?? false, fds: enc.fds };
}

// ---------------------------------------------------------------------------
// constants and header
// ---------------------------------------------------------------------------

test('request codes: front-end 1..43 and back-end 1..8 are dense and named; protocol feature bits 0..19', () => {
  const codes = Object.values(VhostUserRequest).sort((a, b) => a - b);
  assert.deepEqual(codes, Array.from({ length: 43 }, (_, i) => i + 1));
  assert.equal(VhostUserRequest.SET_DEVICE_STATE_FD, 42);
  assert.equal(VhostUserRequest.CHECK_DEVICE_STATE, 43);
  assert.equal(VhostUserRequest.GET_SHARED_OBJECT, 41);
  assert.equal(VhostUserRequest.SET_LOG_BASE, 6);
  assert.deepEqual(Object.values(VhostUserBackendRequest).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(requestName(21), 'SET_BACKEND_REQ_FD');
  assert.equal(requestName(44), undefined);
  assert.equal(VHOST_USER_PROTOCOL_FEATURE_NAMES.length, 20);
  assert.equal(VHOST_USER_PROTOCOL_FEATURE_NAMES[VHOST_USER_PROTOCOL_F_STATUS], 'STATUS');
  assert.equal(VHOST_USER_VRING_NOFD_MASK, 0x100);
  // every request has a sample
  const sampled = new Set(SAMPLES.map((s) => s.type));
  for (const name of Object.keys(VhostUserRequest)) assert.ok(sampled.has(name as VhostUserRequestName), `sample for ${name}`);
});

test('header: 12 bytes, request/flags/size u32 little-endian', () => {
  const h = { request: 0x0102_0304, flags: 0x0000_0009, size: 0x0000_0100 };
  const bytes = encodeHeader(h);
  assert.equal(hex(bytes), '04030201' + '09000000' + '00010000');
  assert.deepEqual(decodeHeader(bytes), h);
  assert.throws(() => decodeHeader(bytes.subarray(0, 11)), RangeError);
  assert.throws(() => encodeHeader({ request: -1, flags: 0, size: 0 }), RangeError);
});

test('known encodings: byte offsets match the spec layouts', () => {
  // SET_VRING_NUM {index 1, num 256} with NEED_REPLY: flags 0x9
  assert.equal(
    hex(encodeRequest({ type: 'SET_VRING_NUM', index: 1, num: 256, needReply: true }).bytes),
    '08000000' + '09000000' + '08000000' + '01000000' + '00010000',
  );
  // SET_VRING_KICK index 3 with NOFD: u64 0x103, no fds
  const kick = encodeRequest({ type: 'SET_VRING_KICK', index: 3, fd: null });
  assert.equal(hex(kick.bytes), '0c000000' + '01000000' + '08000000' + '0301000000000000');
  assert.deepEqual(kick.fds, []);
  // SET_VRING_ADDR: index @0, flags @4, desc @8, used @16, avail @24, log @32 -> 40 bytes
  const addr = encodeRequest({ type: 'SET_VRING_ADDR', index: 2, flags: 0, descUserAddr: 0x1000, usedUserAddr: 0x3000, availUserAddr: 0x2000, logGuestAddr: 0 });
  assert.equal(
    hex(addr.bytes),
    '09000000' + '01000000' + '28000000' + '02000000' + '00000000' +
      '0010000000000000' + '0030000000000000' + '0020000000000000' + '0000000000000000',
  );
  // SET_MEM_TABLE with one region: nregions @0, padding @4, region @8: guest, size, user, mmap_offset
  const mt = le([32, 1], [32, 0], [64, 0x10_0000], [64, 0x20_0000], [64, 0x7f00_0000_0000], [64, 0x1000]);
  const msg = decodeRequest(hdr(5, mt), mt, [7]);
  assert.deepEqual(msg, {
    type: 'SET_MEM_TABLE',
    request: 5,
    needReply: false,
    fds: [7],
    regions: [{ guestAddr: 0x10_0000, size: 0x20_0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0x1000, fd: 7 }],
  });
  // GET_FEATURES reply: request 1, flags version|REPLY = 5, size 8, u64
  assert.equal(hex(encodeU64Reply(1, (1n << 32n) | (1n << 30n)).bytes), '01000000' + '05000000' + '08000000' + '0000004001000000');
  // IOTLB: iova, size, uaddr, perm @24, type @25, 32 bytes
  const iotlb = encodeRequest({ type: 'IOTLB_MSG', iotlb: { iova: 1n, size: 2n, uaddr: 3n, perm: 1, type: 3 } });
  assert.equal(hex(split(iotlb).payload), '0100000000000000' + '0200000000000000' + '0300000000000000' + '0103000000000000');
  // inflight: mmap_size, mmap_offset, num_queues u16 @16, queue_size u16 @18, padded to 24
  const infl = encodeRequest({ type: 'SET_INFLIGHT_FD', mmapSize: 0x100, mmapOffset: 0x10, numQueues: 2, queueSize: 128, fd: 3 });
  assert.equal(hex(split(infl).payload), '0001000000000000' + '1000000000000000' + '0200' + '8000' + '00000000');
  // shared object: UUID bytes in RFC 4122 order
  assert.equal(hex(split(encodeRequest({ type: 'GET_SHARED_OBJECT', uuid: '00112233-4455-6677-8899-AABBCCDDEEFF' })).payload), '00112233445566778899aabbccddeeff');
});

// ---------------------------------------------------------------------------
// round trips
// ---------------------------------------------------------------------------

test('every front-end request round-trips encodeRequest -> decodeRequest', () => {
  for (const init of SAMPLES) {
    const enc = encodeRequest(init);
    const { header, payload, fds } = split(enc);
    assert.equal(header.request, VhostUserRequest[init.type]);
    assert.equal(header.flags, V | (init.needReply ? VHOST_USER_NEED_REPLY_MASK : 0));
    const msg = decodeRequest(header, payload, fds);
    assert.deepEqual(msg, expectedDecode(init, enc), init.type);
  }
});

test('fd lists: SET_MEM_TABLE attaches one fd per region in order, NOFD vring messages none', () => {
  const mt = SAMPLES.find((s) => s.type === 'SET_MEM_TABLE' && s.regions.length === 8)!;
  const enc = encodeRequest(mt);
  assert.deepEqual(enc.fds, [200, 201, 202, 203, 204, 205, 206, 207]);
  const msg = decodeRequest(...(Object.values(split(enc)) as [VhostUserHeader, Uint8Array, number[]]));
  assert.equal(msg.type, 'SET_MEM_TABLE');
  if (msg.type === 'SET_MEM_TABLE') assert.deepEqual(msg.regions.map((r) => r.fd), enc.fds);
  assert.deepEqual(encodeRequest({ type: 'SET_VRING_ERR', index: 1, fd: null }).fds, []);
  assert.deepEqual(encodeRequest({ type: 'SET_VRING_ERR', index: 1, fd: 9 }).fds, [9]);
});

const arbAddr = fc.integer({ min: 0, max: 2 ** 47 });
const arbU32 = fc.integer({ min: 0, max: 0xffff_ffff });

test('property: random SET_MEM_TABLE / ADD_MEM_REG / SET_VRING_ADDR / SET_CONFIG / vring fd messages round-trip', () => {
  const arbRegions = fc
    .array(fc.record({ gap: fc.integer({ min: 0, max: 2 ** 32 }), size: fc.integer({ min: 1, max: 2 ** 36 }), user: arbAddr, off: fc.integer({ min: 0, max: 2 ** 40 }) }), {
      minLength: 1,
      maxLength: 8,
    })
    .chain((rs) => {
      let at = 0;
      const regions = rs.map((r, i) => {
        const reg = region(at + r.gap, r.size, r.user, r.off, 10 + i);
        at += r.gap + r.size;
        return reg;
      });
      // any order: the overlap check must not depend on sorted input
      return fc.shuffledSubarray(regions, { minLength: regions.length, maxLength: regions.length });
    });
  const arbInit: fc.Arbitrary<VhostUserRequestInit> = fc.oneof(
    fc.record({ type: fc.constant('SET_MEM_TABLE' as const), regions: arbRegions, needReply: fc.boolean() }),
    arbRegions.map((rs) => ({ type: 'ADD_MEM_REG' as const, region: rs[0]! })),
    fc.record({
      type: fc.constant('SET_VRING_ADDR' as const),
      index: arbU32,
      flags: fc.constantFrom(0, 1),
      descUserAddr: arbAddr,
      usedUserAddr: arbAddr,
      availUserAddr: arbAddr,
      logGuestAddr: arbAddr,
    }),
    fc
      .record({ offset: fc.integer({ min: 0, max: 256 }), flags: fc.constantFrom(0, 1), data: fc.uint8Array({ maxLength: 256 }) })
      .filter((c) => c.offset + c.data.length <= 256)
      .map((c) => ({ type: 'SET_CONFIG' as const, ...c })),
    fc.record({
      type: fc.constantFrom('SET_VRING_KICK' as const, 'SET_VRING_CALL' as const, 'SET_VRING_ERR' as const),
      index: fc.integer({ min: 0, max: 255 }),
      fd: fc.option(fc.integer({ min: 0, max: 1 << 20 }), { nil: null }),
    }),
    fc.record({ type: fc.constant('SET_FEATURES' as const), features: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
    fc.record({ type: fc.constantFrom('SET_VRING_NUM' as const, 'SET_VRING_BASE' as const), index: arbU32, num: arbU32 }),
  );
  fc.assert(
    fc.property(arbInit, (init) => {
      const enc = encodeRequest(init);
      const { header, payload, fds } = split(enc);
      assert.deepEqual(decodeRequest(header, payload, fds), expectedDecode(init, enc));
    }),
    { numRuns: 500 },
  );
});

test('every back-end request round-trips encodeBackendRequest -> decodeBackendRequest', () => {
  const uuid = 'a0b1c2d3-e4f5-0617-2839-4a5b6c7d8e9f';
  const samples: VhostUserBackendRequestInit[] = [
    { type: 'BACKEND_IOTLB_MSG', iotlb: { iova: 0x8000n, size: 0n, uaddr: 0n, perm: 1, type: 1 } },
    { type: 'BACKEND_IOTLB_MSG', needReply: true, iotlb: { iova: 0x8000n, size: 0n, uaddr: 0n, perm: 2, type: 4 } },
    { type: 'BACKEND_CONFIG_CHANGE_MSG', needReply: true },
    { type: 'BACKEND_VRING_HOST_NOTIFIER_MSG', index: 3, size: 4096, offset: 0x3000, fd: 50 },
    { type: 'BACKEND_VRING_HOST_NOTIFIER_MSG', index: 3, size: 0, offset: 0, fd: null },
    { type: 'BACKEND_VRING_CALL', index: 1 },
    { type: 'BACKEND_VRING_ERR', index: 2 },
    { type: 'BACKEND_SHARED_OBJECT_ADD', uuid },
    { type: 'BACKEND_SHARED_OBJECT_REMOVE', uuid },
    { type: 'BACKEND_SHARED_OBJECT_LOOKUP', uuid, needReply: true },
  ];
  const covered = new Set(samples.map((s) => s.type));
  for (const k of Object.keys(VhostUserBackendRequest)) assert.ok(covered.has(`BACKEND_${k}` as VhostUserBackendRequestInit['type']));
  for (const init of samples) {
    const enc = encodeBackendRequest(init);
    const { header, payload, fds } = split(enc);
    const request = VhostUserBackendRequest[init.type.slice(8) as keyof typeof VhostUserBackendRequest];
    assert.equal(header.request, request);
    assert.deepEqual(decodeBackendRequest(header, payload, fds), { ...init, request, needReply: init.needReply ?? false, fds: enc.fds });
  }
  // direction-specific IOTLB types
  const miss = encodeIotlbPayload(2);
  expectRefusal(() => decodeBackendRequest(hdr(1, miss), miss, []), 'BAD_FIELD', []);
  const upd = encodeIotlbPayload(1);
  expectRefusal(() => decodeRequest(hdr(22, upd), upd, []), 'BAD_FIELD', []);
  assert.throws(() => encodeBackendRequest({ type: 'BACKEND_IOTLB_MSG', iotlb: { iova: 0n, size: 0n, uaddr: 0n, perm: 0, type: 2 } }), RangeError);
});

function encodeIotlbPayload(type: number, perm = 1): Uint8Array {
  return le([64, 0x1000], [64, 0x1000], [64, 0x7000_0000], [8, perm], [8, type], [16, 0], [32, 0]);
}

// ---------------------------------------------------------------------------
// replies
// ---------------------------------------------------------------------------

test('back-end reply encoders: flags version|REPLY, decoded by decodeReply', () => {
  const cases: Array<[EncodedVhostUserMessage, number, object]> = [
    [encodeU64Reply(1, 0x1_4000_0000n), 1, { type: 'GET_FEATURES', features: 0x1_4000_0000n }],
    [encodeU64Reply(15, 0xffffn), 15, { type: 'GET_PROTOCOL_FEATURES', features: 0xffffn }],
    [encodeU64Reply(17, 8), 17, { type: 'GET_QUEUE_NUM', queueNum: 8 }],
    [encodeU64Reply(36, 32), 36, { type: 'GET_MAX_MEM_SLOTS', maxMemSlots: 32 }],
    [encodeStatusReply(0x0f), 40, { type: 'GET_STATUS', status: 0x0f }],
    [encodeVringBaseReply(3, 0x1234), 11, { type: 'GET_VRING_BASE', index: 3, num: 0x1234 }],
    [encodeGetConfigReply({ offset: 0, flags: 0, data: Uint8Array.of(0x52, 0x54, 0, 1, 2, 3) }), 24, { type: 'GET_CONFIG', config: { offset: 0, flags: 0, data: Uint8Array.of(0x52, 0x54, 0, 1, 2, 3) } }],
    [encodeGetConfigReply(null), 24, { type: 'GET_CONFIG', config: null }],
    [encodeReplyAck(8), 8, { type: 'ACK', of: 'SET_VRING_NUM', result: 0n }],
    [encodeReplyAck(5, 1), 5, { type: 'ACK', of: 'SET_MEM_TABLE', result: 1n }],
    [encodeSetLogBaseReply(), 6, { type: 'ACK', of: 'SET_LOG_BASE', result: 0n }],
    [encodeU64Reply(30, 0), 30, { type: 'ACK', of: 'POSTCOPY_END', result: 0n }],
    [encodeU64Reply(43, 0), 43, { type: 'ACK', of: 'CHECK_DEVICE_STATE', result: 0n }],
    [encodeInflightFdReply({ mmapSize: 0x2000, mmapOffset: 0, numQueues: 2, queueSize: 256 }, 77), 31, { type: 'GET_INFLIGHT_FD', inflight: { mmapSize: 0x2000, mmapOffset: 0, numQueues: 2, queueSize: 256 }, fd: 77 }],
    [encodePostcopyAdviseReply(78), 28, { type: 'POSTCOPY_ADVISE', fd: 78 }],
    [encodeSetDeviceStateFdReply(0, 79), 42, { type: 'SET_DEVICE_STATE_FD', error: 0, fd: 79 }],
    [encodeSetDeviceStateFdReply(0, null), 42, { type: 'SET_DEVICE_STATE_FD', error: 0, fd: null }],
    [encodeSetDeviceStateFdReply(5, null), 42, { type: 'SET_DEVICE_STATE_FD', error: 5, fd: null }],
    [encodeGetSharedObjectReply(80), 41, { type: 'GET_SHARED_OBJECT', fd: 80 }],
    [encodeGetSharedObjectReply(null), 41, { type: 'GET_SHARED_OBJECT', fd: null }],
  ];
  for (const [enc, request, body] of cases) {
    const { header, payload, fds } = split(enc);
    assert.equal(header.flags, V | VHOST_USER_REPLY_MASK, 'reply flags are exactly 0x5');
    assert.equal(header.request, request);
    assert.deepEqual(decodeReply(request, header, payload, fds), { ...body, request, fds: enc.fds });
  }
  // DPDK answers SET_LOG_BASE with an empty payload
  const empty = new Uint8Array(0);
  assert.deepEqual(decodeReply(6, hdr(6, empty, 5), empty, []), { type: 'ACK', of: 'SET_LOG_BASE', result: 0n, request: 6, fds: [] });
  // invalid reply encodings are refused up front
  assert.throws(() => encodeStatusReply(0x100), RangeError);
  assert.throws(() => encodeSetDeviceStateFdReply(1, 9), RangeError, 'an error reply must not carry an fd');
  assert.throws(() => encodeGetConfigReply({ offset: 250, flags: 0, data: new Uint8Array(8) }), RangeError);
});

test('decodeReply refuses replies that do not match the request, lack REPLY, or carry fds they should not', () => {
  const ack = split(encodeReplyAck(8));
  expectRefusal(() => decodeReply(9, ack.header, ack.payload, [4]), 'UNEXPECTED_REPLY', [4], 8);
  expectRefusal(() => decodeReply(8, { ...ack.header, flags: V }, ack.payload, []), 'BAD_FLAGS', []);
  expectRefusal(() => decodeReply(8, { ...ack.header, flags: V | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK }, ack.payload, []), 'BAD_FLAGS', []);
  expectRefusal(() => decodeReply(8, { ...ack.header, flags: 2 | VHOST_USER_REPLY_MASK }, ack.payload, []), 'BAD_VERSION', []);
  expectRefusal(() => decodeReply(8, ack.header, ack.payload, [5]), 'BAD_FD_COUNT', [5]);
  const feat = split(encodeU64Reply(1, 1n));
  expectRefusal(() => decodeReply(1, { ...feat.header, size: 4 }, feat.payload.subarray(0, 4), []), 'BAD_SIZE', []);
  const st = encodeU64(0x100);
  expectRefusal(() => decodeReply(40, hdr(40, st, 5), st, []), 'BAD_FIELD', []);
  const inf = split(encodeInflightFdReply({ mmapSize: 1, mmapOffset: 0, numQueues: 1, queueSize: 1 }, 3));
  expectRefusal(() => decodeReply(31, inf.header, inf.payload, []), 'BAD_FD_COUNT', []);
  const needsFd = encodeU64(0n); // success with NOFD clear: the back-end's transfer fd must be attached
  expectRefusal(() => decodeReply(42, hdr(42, needsFd, 5), needsFd, []), 'BAD_FD_COUNT', []);
  const errNoFd = encodeU64(0x101n); // error 1 + NOFD: fine without an fd
  assert.deepEqual(decodeReply(42, hdr(42, errNoFd, 5), errNoFd, []), { type: 'SET_DEVICE_STATE_FD', error: 1, fd: null, request: 42, fds: [] });
  const errWithFd = encodeU64(0x01n);
  expectRefusal(() => decodeReply(42, hdr(42, errWithFd, 5), errWithFd, [8]), 'BAD_FIELD', [8]);
});

function encodeU64(v: number | bigint): Uint8Array {
  return le([64, v]);
}

test('back-end channel replies: REPLY_ACK and SHARED_OBJECT_LOOKUP', () => {
  const ack = encodeBackendReplyAck(VhostUserBackendRequest.CONFIG_CHANGE_MSG, 0);
  const a = split(ack);
  assert.equal(a.header.flags, 5);
  assert.deepEqual(decodeBackendReply(2, a.header, a.payload, a.fds), { type: 'BACKEND_ACK', of: 'CONFIG_CHANGE_MSG', result: 0n, request: 2, fds: [] });
  const ok = split(encodeSharedObjectLookupReply(0, 33));
  assert.deepEqual(decodeBackendReply(8, ok.header, ok.payload, ok.fds), { type: 'BACKEND_SHARED_OBJECT_LOOKUP', result: 0n, fd: 33, request: 8, fds: [33] });
  const ko = split(encodeSharedObjectLookupReply(1, null));
  assert.deepEqual(decodeBackendReply(8, ko.header, ko.payload, ko.fds), { type: 'BACKEND_SHARED_OBJECT_LOOKUP', result: 1n, fd: null, request: 8, fds: [] });
  expectRefusal(() => decodeBackendReply(8, ko.header, ko.payload, [12]), 'BAD_FD_COUNT', [12]);
  expectRefusal(() => decodeBackendReply(3, a.header, a.payload, []), 'UNEXPECTED_REPLY', []);
  assert.throws(() => encodeSharedObjectLookupReply(1, 4), RangeError);
});

test('needsReplyAck: NEED_REPLY only matters for requests without an explicit reply', () => {
  const m = (init: VhostUserRequestInit) => {
    const s = split(encodeRequest(init));
    return decodeRequest(s.header, s.payload, s.fds);
  };
  assert.equal(needsReplyAck(m({ type: 'SET_VRING_NUM', index: 0, num: 8, needReply: true })), true);
  assert.equal(needsReplyAck(m({ type: 'SET_VRING_NUM', index: 0, num: 8 })), false);
  assert.equal(needsReplyAck(m({ type: 'GET_FEATURES', needReply: true })), false);
  assert.equal(needsReplyAck(m({ type: 'GET_VRING_BASE', index: 0, needReply: true })), false);
});

// ---------------------------------------------------------------------------
// validation failures
// ---------------------------------------------------------------------------

test('wrong payload size: one byte more or less than the request takes is BAD_SIZE, fds handed back', () => {
  for (const init of SAMPLES) {
    if (init.type === 'CREATE_CRYPTO_SESSION') continue; // opaque payload, any size
    const { header, payload, fds } = split(encodeRequest(init));
    const longer = new Uint8Array(payload.byteLength + 1);
    longer.set(payload);
    expectRefusal(() => decodeRequest({ ...header, size: longer.byteLength }, longer, fds), 'BAD_SIZE', fds, header.request);
    if (payload.byteLength > 0) {
      const shorter = payload.slice(0, payload.byteLength - 1);
      expectRefusal(() => decodeRequest({ ...header, size: shorter.byteLength }, shorter, fds), 'BAD_SIZE', fds, header.request);
    }
  }
  // header size disagreeing with the payload handed in
  const { header, payload } = split(encodeRequest({ type: 'SET_VRING_NUM', index: 0, num: 1 }));
  expectRefusal(() => decodeRequest({ ...header, size: 16 }, payload, [3]), 'BAD_SIZE', [3]);
  // SET_LOG_BASE's legacy u64 form (no fd) is refused like DPDK does
  const legacy = le([64, 0x1000]);
  expectRefusal(() => decodeRequest(hdr(6, legacy), legacy, []), 'BAD_SIZE', []);
  // payload above the codec limit
  const huge = new Uint8Array(VHOST_USER_MAX_PAYLOAD_SIZE + 1);
  expectRefusal(() => decodeRequest(hdr(26, huge), huge, [1]), 'OVERSIZED', [1]);
});

test('more fds than the request takes (or fewer) is BAD_FD_COUNT and every fd is handed back', () => {
  for (const init of SAMPLES) {
    const { header, payload, fds } = split(encodeRequest(init));
    if (init.type === 'REM_MEM_REG') {
      // no fd SHOULD be sent, one stray fd is tolerated (spec) and surfaced so it gets closed; two are not
      assert.equal((decodeRequest(header, payload, []) as { strayFd: number | null }).strayFd, null);
      const msg = decodeRequest(header, payload, [900]);
      assert.ok(msg.type === 'REM_MEM_REG' && msg.strayFd === 900);
      expectRefusal(() => decodeRequest(header, payload, [900, 901]), 'BAD_FD_COUNT', [900, 901], header.request);
      continue;
    }
    const extra = [...fds, 999];
    expectRefusal(() => decodeRequest(header, payload, extra), 'BAD_FD_COUNT', extra, header.request);
    if (fds.length > 0) {
      const fewer = fds.slice(0, -1);
      expectRefusal(() => decodeRequest(header, payload, fewer), 'BAD_FD_COUNT', fewer, header.request);
    }
  }
});

test('SET_VRING_KICK/CALL/ERR: index in bits 0-7, NOFD bit decides the fd count, other bits refused', () => {
  for (const request of [12, 13, 14]) {
    const withFd = le([64, 7]);
    assert.deepEqual(decodeRequest(hdr(request, withFd), withFd, [40]), {
      type: requestName(request),
      request,
      needReply: false,
      fds: [40],
      index: 7,
      fd: 40,
    });
    const noFd = le([64, 7 | VHOST_USER_VRING_NOFD_MASK]);
    assert.equal((decodeRequest(hdr(request, noFd), noFd, []) as { fd: number | null }).fd, null);
    expectRefusal(() => decodeRequest(hdr(request, noFd), noFd, [41]), 'BAD_FD_COUNT', [41], request);
    expectRefusal(() => decodeRequest(hdr(request, withFd), withFd, []), 'BAD_FD_COUNT', [], request);
    const reserved = le([64, 0x207]);
    expectRefusal(() => decodeRequest(hdr(request, reserved), reserved, [42]), 'BAD_FIELD', [42], request);
    const high = le([64, 1n << 40n]);
    expectRefusal(() => decodeRequest(hdr(request, high), high, [43]), 'BAD_FIELD', [43], request);
  }
  assert.throws(() => encodeRequest({ type: 'SET_VRING_KICK', index: 256, fd: 3 }), RangeError);
});

function memTable(regions: Array<[number | bigint, number | bigint, number | bigint, number | bigint]>, nregions = regions.length): Uint8Array {
  return le([32, nregions], [32, 0], ...regions.flatMap(([g, s, u, o]) => [[64, g], [64, s], [64, u], [64, o]] as Array<[64, number | bigint]>));
}

test('SET_MEM_TABLE: nregions 1..8, zero-size, overlapping, wrapping and >2^53 regions are refused', () => {
  const ok: [number, number, number, number] = [0, 0x1000, 0x7000_0000, 0];
  const fds9 = [1, 2, 3, 4, 5, 6, 7, 8, 9];
  // nregions 0
  const zero = memTable([]);
  expectRefusal(() => decodeRequest(hdr(5, zero), zero, []), 'BAD_FIELD', [], 5);
  // nregions 9 (payload sized for 9)
  const nine = memTable(Array.from({ length: 9 }, (_, i) => [i * 0x1000, 0x1000, 0x7000_0000 + i * 0x1000, 0] as [number, number, number, number]));
  expectRefusal(() => decodeRequest(hdr(5, nine), nine, fds9), 'BAD_FIELD', fds9, 5);
  // nregions says 2 but one region present
  const short = memTable([ok], 2);
  expectRefusal(() => decodeRequest(hdr(5, short), short, [1, 2]), 'BAD_SIZE', [1, 2], 5);
  // zero-size region
  const z = memTable([ok, [0x10_0000, 0, 0x8000_0000, 0]]);
  expectRefusal(() => decodeRequest(hdr(5, z), z, [1, 2]), 'BAD_FIELD', [1, 2], 5);
  // overlap in guest physical space (listed out of order)
  const ov = memTable([[0x10_0000, 0x10_0000, 0x8000_0000, 0], ok, [0x1f_f000, 0x2000, 0x9000_0000, 0]]);
  const e = expectRefusal(() => decodeRequest(hdr(5, ov), ov, [1, 2, 3]), 'BAD_FIELD', [1, 2, 3], 5);
  assert.match(e.message, /overlap/);
  // adjacent (touching) regions are fine
  const adj = memTable([ok, [0x1000, 0x1000, 0x9000_0000, 0]]);
  assert.equal(decodeRequest(hdr(5, adj), adj, [1, 2]).type, 'SET_MEM_TABLE');
  // guest_addr + size wraps past 2^64
  const wrapG = memTable([[(1n << 64n) - 0x1000n, 0x2000, 0x7000_0000, 0]]);
  expectRefusal(() => decodeRequest(hdr(5, wrapG), wrapG, [1]), 'BAD_FIELD', [1], 5);
  // user_addr + size wraps
  const wrapU = memTable([[0, 0x2000, (1n << 64n) - 0x1000n, 0]]);
  expectRefusal(() => decodeRequest(hdr(5, wrapU), wrapU, [1]), 'BAD_FIELD', [1], 5);
  // mmap_offset + size wraps
  const wrapO = memTable([[0, 0x2000, 0x7000_0000, (1n << 64n) - 1n]]);
  expectRefusal(() => decodeRequest(hdr(5, wrapO), wrapO, [1]), 'BAD_FIELD', [1], 5);
  // addresses that do not fit a JS number (>= 2^53)
  const big = memTable([[0, 0x1000, 1n << 60n, 0]]);
  expectRefusal(() => decodeRequest(hdr(5, big), big, [1]), 'UNSAFE_INTEGER', [1], 5);
  const bigEnd = memTable([[2 ** 53 - 0x1000, 0x2000, 0x7000_0000, 0]]);
  expectRefusal(() => decodeRequest(hdr(5, bigEnd), bigEnd, [1]), 'UNSAFE_INTEGER', [1], 5);
  // fd count must equal nregions
  const two = memTable([ok, [0x1000, 0x1000, 0x9000_0000, 0]]);
  expectRefusal(() => decodeRequest(hdr(5, two), two, [1]), 'BAD_FD_COUNT', [1], 5);
  // the encoder refuses the same things
  assert.throws(() => encodeRequest({ type: 'SET_MEM_TABLE', regions: [] }), RangeError);
  assert.throws(() => encodeRequest({ type: 'SET_MEM_TABLE', regions: Array.from({ length: 9 }, (_, i) => region(i * 4096, 4096, 0, 0, i)) }), RangeError);
  assert.throws(() => encodeRequest({ type: 'SET_MEM_TABLE', regions: [region(0, 0x2000, 0, 0, 1), region(0x1000, 0x1000, 0, 0, 2)] }), RangeError);
  assert.throws(() => encodeRequest({ type: 'SET_MEM_TABLE', regions: [region(0, 0, 0, 0, 1)] }), RangeError);
});

test('ADD_MEM_REG / REM_MEM_REG: single region payload, same region checks', () => {
  const single = (g: number | bigint, s: number | bigint, u: number | bigint, o: number | bigint) => le([64, 0], [64, g], [64, s], [64, u], [64, o]);
  const z = single(0, 0, 0x1000, 0);
  expectRefusal(() => decodeRequest(hdr(37, z), z, [5]), 'BAD_FIELD', [5], 37);
  const wrap = single((1n << 64n) - 1n, 2, 0x1000, 0);
  expectRefusal(() => decodeRequest(hdr(37, wrap), wrap, [5]), 'BAD_FIELD', [5], 37);
  const ok = single(0x1000, 0x1000, 0x7000_0000, 0x10);
  expectRefusal(() => decodeRequest(hdr(37, ok), ok, []), 'BAD_FD_COUNT', [], 37);
  assert.deepEqual(decodeRequest(hdr(38, ok), ok, []), {
    type: 'REM_MEM_REG',
    request: 38,
    needReply: false,
    fds: [],
    region: { guestAddr: 0x1000, size: 0x1000, userAddr: 0x7000_0000 },
    strayFd: null,
  });
  const zr = single(0x1000, 0, 0x7000_0000, 0);
  expectRefusal(() => decodeRequest(hdr(38, zr), zr, [6]), 'BAD_FIELD', [6], 38);
});

test('unknown request codes are UNKNOWN_REQUEST with the request number and the fds', () => {
  for (const request of [0, 44, 45, 100, 0xffff_ffff]) {
    const e = expectRefusal(() => decodeRequest({ request, flags: V | VHOST_USER_NEED_REPLY_MASK, size: 0 }, new Uint8Array(0), [3, 4]), 'UNKNOWN_REQUEST', [3, 4], request);
    assert.equal(e.needReply, true, 'NEED_REPLY is reported so the caller can send a failing REPLY_ACK');
  }
  expectRefusal(() => decodeBackendRequest({ request: 9, flags: V, size: 0 }, new Uint8Array(0), [7]), 'UNKNOWN_REQUEST', [7], 9);
});

test('header flags: version must be 1, REPLY and reserved bits refused on requests', () => {
  const { header, payload, fds } = split(encodeRequest({ type: 'SET_VRING_CALL', index: 1, fd: 50 }));
  for (const version of [0, 2, 3]) {
    expectRefusal(() => decodeRequest({ ...header, flags: version }, payload, fds), 'BAD_VERSION', fds, 13);
  }
  expectRefusal(() => decodeRequest({ ...header, flags: V | VHOST_USER_REPLY_MASK }, payload, fds), 'BAD_FLAGS', fds, 13);
  expectRefusal(() => decodeRequest({ ...header, flags: V | 0x10 }, payload, fds), 'BAD_FLAGS', fds, 13);
  expectRefusal(() => decodeRequest({ ...header, flags: V | 0x8000_0000 }, payload, fds), 'BAD_FLAGS', fds, 13);
});

test('field ranges of the small payloads', () => {
  const st = (request: number, index: number, num: number) => {
    const p = le([32, index], [32, num]);
    return () => decodeRequest(hdr(request, p), p, []);
  };
  expectRefusal(st(18, 0, 2), 'BAD_FIELD', [], 18); // SET_VRING_ENABLE num 0/1
  expectRefusal(st(23, 0, 2), 'BAD_FIELD', [], 23); // SET_VRING_ENDIAN num 0/1
  // GET_VRING_BASE: num is ignored (DPDK 22.11 virtio-user sends its ring index there)
  assert.deepEqual(st(11, 2, 3744)(), { ...(st(11, 2, 3744)() as object), type: 'GET_VRING_BASE', index: 2 });
  expectRefusal(st(35, 0, 1), 'BAD_FIELD', [], 35); // VRING_KICK num reserved
  // vring indices are returned raw for the caller to check
  assert.equal((st(8, 0xffff_ffff, 256)() as { index: number }).index, 0xffff_ffff);
  // SET_STATUS is 8 bits in a u64
  const status = le([64, 0x100]);
  expectRefusal(() => decodeRequest(hdr(39, status), status, []), 'BAD_FIELD', [], 39);
  // SET_VRING_ADDR: unknown flags, addresses >= 2^53
  const addr = (flags: number, desc: bigint) => le([32, 0], [32, flags], [64, desc], [64, 0x2000], [64, 0x3000], [64, 0]);
  expectRefusal(() => decodeRequest(hdr(9, addr(2, 0x1000n)), addr(2, 0x1000n), []), 'BAD_FIELD', [], 9);
  expectRefusal(() => decodeRequest(hdr(9, addr(0, 1n << 53n)), addr(0, 1n << 53n), []), 'UNSAFE_INTEGER', [], 9);
  assert.equal(decodeRequest(hdr(9, addr(0, BigInt(Number.MAX_SAFE_INTEGER))), addr(0, BigInt(Number.MAX_SAFE_INTEGER)), []).type, 'SET_VRING_ADDR');
  // IOTLB: perm, type
  const perm = encodeIotlbPayload(2, 4);
  expectRefusal(() => decodeRequest(hdr(22, perm), perm, []), 'BAD_FIELD', [], 22);
  const type0 = encodeIotlbPayload(0);
  expectRefusal(() => decodeRequest(hdr(22, type0), type0, []), 'BAD_FIELD', [], 22);
  // config: size > 256, offset + size > 256, flags not 0/1
  const cfg = (offset: number, size: number, flags: number) => {
    const p = new Uint8Array(12 + size);
    p.set(le([32, offset], [32, size], [32, flags]));
    return p;
  };
  for (const [o, s, f] of [[0, 257, 0], [200, 57, 0], [0, 4, 2]] as const) {
    const p = cfg(o, s, f);
    expectRefusal(() => decodeRequest(hdr(25, p), p, []), 'BAD_FIELD', [], 25);
  }
  const cfgSizeLie = le([32, 0], [32, 8], [32, 0]); // claims 8 bytes, carries none
  expectRefusal(() => decodeRequest(hdr(25, cfgSizeLie), cfgSizeLie, []), 'BAD_SIZE', [], 25);
  // device state transfer parameters
  for (const [d, ph] of [[2, 0], [0, 1]]) {
    const p = le([32, d!], [32, ph!]);
    expectRefusal(() => decodeRequest(hdr(42, p), p, [9]), 'BAD_FIELD', [9], 42);
  }
  // log: offset + size wraps
  const log = le([64, 0x1000], [64, (1n << 64n) - 0x800n]);
  expectRefusal(() => decodeRequest(hdr(6, log), log, [9]), 'BAD_FIELD', [9], 6);
  // MTU that is not a safe integer
  const mtu = le([64, 1n << 60n]);
  expectRefusal(() => decodeRequest(hdr(20, mtu), mtu, []), 'UNSAFE_INTEGER', [], 20);
});

test('property: any header/payload/fds either decodes (owning exactly the fds) or is refused handing back exactly the fds', () => {
  const arbFds = fc.uniqueArray(fc.integer({ min: 0, max: 4096 }), { maxLength: 10 });
  const arbRandom = fc.record({
    request: fc.oneof(fc.integer({ min: 0, max: 46 }), arbU32),
    flags: fc.oneof(fc.constantFrom(1, 9, 5, 0, 2), arbU32),
    payload: fc.uint8Array({ maxLength: 300 }),
    fds: arbFds,
  });
  // mutations of valid messages reach deeper into the validators
  const arbMutated = fc.record({
    i: fc.integer({ min: 0, max: SAMPLES.length - 1 }),
    flips: fc.array(fc.record({ at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), { maxLength: 3 }),
    fds: arbFds,
  }).map(({ i, flips, fds }) => {
    const { header, payload } = split(encodeRequest(SAMPLES[i]!));
    const p = payload.slice();
    for (const f of flips) if (p.length > 0) p[f.at % p.length]! ^= 1 << f.bit;
    return { request: header.request, flags: header.flags, payload: p, fds };
  });
  fc.assert(
    fc.property(fc.oneof(arbRandom, arbMutated), ({ request, flags, payload, fds }) => {
      const header = { request, flags, size: payload.byteLength };
      let msg;
      try {
        msg = decodeRequest(header, payload, fds);
      } catch (e) {
        assert.ok(e instanceof VhostUserProtocolError, String(e));
        assert.deepEqual([...e.fds], fds);
        assert.equal(e.request, request);
        return;
      }
      assert.deepEqual([...msg.fds], fds);
      assert.equal(msg.request, request);
      // every fd of an accepted message is reachable from its typed fields too
      const typed = JSON.stringify(msg, (_k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? [] : v));
      for (const fd of fds) assert.ok(new RegExp(`"(fd|strayFd)":${fd}\\b`).test(typed), `fd ${fd} of ${msg.type} is in a typed field`);
    }),
    { numRuns: 3000 },
  );
});

// ---------------------------------------------------------------------------
// framer
// ---------------------------------------------------------------------------

interface WireMsg {
  bytes: Uint8Array;
  fds: number[];
}

/** Arbitrary well-framed messages (the framer does not look past the header's size) with unique fds. */
const arbWire: fc.Arbitrary<WireMsg[]> = fc
  .array(
    fc.oneof(
      fc.record({ request: arbU32, flags: arbU32, payload: fc.uint8Array({ maxLength: 200 }), nfds: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ request: arbU32, flags: arbU32, payload: fc.uint8Array({ minLength: 300, maxLength: 4096 }), nfds: fc.integer({ min: 0, max: 1 }) }),
      fc.integer({ min: 0, max: SAMPLES.length - 1 }),
    ),
    { maxLength: 12 },
  )
  .map((items) => {
    let nextFd = 1000;
    return items.map((it) => {
      if (typeof it === 'number') {
        const enc = encodeRequest(SAMPLES[it]!);
        return { bytes: enc.bytes, fds: enc.fds.map(() => nextFd++) };
      }
      const bytes = new Uint8Array(12 + it.payload.byteLength);
      encodeHeader({ request: it.request, flags: it.flags, size: it.payload.byteLength }, bytes);
      bytes.set(it.payload, 12);
      return { bytes, fds: Array.from({ length: it.nfds }, () => nextFd++) };
    });
  });

/**
 * Cut the concatenated stream like a unix stream socket would: at the random
 * `cuts`, and also right after each message that carries fds (Linux ends a
 * recvmsg() after the skb that carried SCM_RIGHTS); each chunk carries the
 * fds of the message whose header begins in it.
 */
function chunkStream(msgs: WireMsg[], cuts: number[]): Array<{ bytes: Uint8Array; fds: number[] }> {
  const total = msgs.reduce((n, m) => n + m.bytes.byteLength, 0);
  const stream = new Uint8Array(total);
  const starts: number[] = [];
  const points = new Set<number>();
  let at = 0;
  for (const m of msgs) {
    starts.push(at);
    stream.set(m.bytes, at);
    at += m.bytes.byteLength;
    if (m.fds.length > 0) points.add(at);
  }
  for (const c of cuts) if (total > 0) points.add(c % total);
  points.add(total);
  points.delete(0);
  const sorted = [...points].sort((a, b) => a - b);
  const chunks: Array<{ bytes: Uint8Array; fds: number[] }> = [];
  let prev = 0;
  for (const p of sorted) {
    const fds = msgs.flatMap((m, i) => (starts[i]! >= prev && starts[i]! < p ? m.fds : []));
    chunks.push({ bytes: stream.subarray(prev, p), fds });
    prev = p;
  }
  return chunks;
}

function expectFrames(frames: VhostUserFrame[], msgs: WireMsg[]): void {
  assert.equal(frames.length, msgs.length);
  frames.forEach((f, i) => {
    const m = msgs[i]!;
    assert.deepEqual(f.header, decodeHeader(m.bytes));
    assert.deepEqual(f.payload, m.bytes.subarray(12));
    assert.deepEqual(f.fds, m.fds);
  });
}

test('framer property: any chunking of a message stream yields the same messages with their fds', () => {
  fc.assert(
    fc.property(arbWire, fc.array(fc.nat(), { maxLength: 40 }), fc.boolean(), (msgs, cuts, drainLate) => {
      const framer = new VhostUserFramer();
      const frames: VhostUserFrame[] = [];
      for (const c of chunkStream(msgs, cuts)) {
        framer.push(c.bytes, c.fds);
        if (!drainLate) frames.push(...framer.frames());
      }
      frames.push(...framer.frames());
      expectFrames(frames, msgs);
      assert.equal(framer.pendingBytes, 0);
      assert.equal(framer.pendingFdCount, 0);
      framer.end(); // nothing pending: no error
    }),
    { numRuns: 400 },
  );
});

test('framer: byte-at-a-time and all-at-once delivery', () => {
  const msgs: WireMsg[] = SAMPLES.map((s) => encodeRequest(s));
  for (const size of [1, 7, 13, 1 << 20]) {
    const framer = new VhostUserFramer();
    const frames: VhostUserFrame[] = [];
    for (const m of msgs) {
      for (let off = 0; off < m.bytes.byteLength; off += size) {
        framer.push(m.bytes.subarray(off, off + size), off === 0 ? m.fds : []);
        frames.push(...framer.frames());
      }
    }
    expectFrames(frames, msgs);
    // and each frame decodes to what was encoded
    frames.forEach((f, i) => assert.deepEqual(decodeRequest(f.header, f.payload, f.fds), expectedDecode(SAMPLES[i]!, msgs[i]!)));
  }
});

test('framer fd attribution: the last header starting in a chunk gets its fds', () => {
  const a = encodeRequest({ type: 'SET_VRING_NUM', index: 0, num: 8 });
  const b = encodeRequest({ type: 'SET_VRING_KICK', index: 0, fd: 5 });
  const c = encodeRequest({ type: 'SET_VRING_CALL', index: 0, fd: 6 });
  // [a][b] in one recvmsg with b's fd
  let framer = new VhostUserFramer();
  framer.push(Buffer.concat([a.bytes, b.bytes]), [5]);
  let frames = [...framer.frames()];
  assert.deepEqual(frames.map((f) => f.fds), [[], [5]]);
  // [tail of a][b] with b's fd
  framer = new VhostUserFramer();
  framer.push(a.bytes.subarray(0, 5));
  framer.push(Buffer.concat([a.bytes.subarray(5), b.bytes]), [5]);
  frames = [...framer.frames()];
  assert.deepEqual(frames.map((f) => f.fds), [[], [5]]);
  // fds sent with a continuation (no header begins in the chunk) go to the message in progress
  framer = new VhostUserFramer();
  framer.push(c.bytes.subarray(0, 14));
  framer.push(c.bytes.subarray(14), [6]);
  assert.deepEqual([...framer.frames()].map((f) => f.fds), [[6]]);
  // an empty chunk with fds at a boundary gives them to the next message
  framer = new VhostUserFramer();
  framer.push(a.bytes);
  framer.push(new Uint8Array(0), [6]);
  framer.push(c.bytes);
  assert.deepEqual([...framer.frames()].map((f) => f.fds), [[], [6]]);
  // split header: fds come with the chunk holding the first header byte
  framer = new VhostUserFramer();
  framer.push(b.bytes.subarray(0, 3), [5]);
  assert.equal(framer.next(), undefined);
  framer.push(b.bytes.subarray(3));
  assert.deepEqual([...framer.frames()].map((f) => f.fds), [[5]]);
});

test('framer end(): a peer that disconnects mid-message is TRUNCATED and the unclaimed fds are listed', () => {
  const a = encodeRequest({ type: 'SET_VRING_NUM', index: 0, num: 8 });
  const mt = encodeRequest(SAMPLES[4]!); // SET_MEM_TABLE with fds 100, 101
  // mid-payload
  let framer = new VhostUserFramer();
  framer.push(a.bytes);
  framer.push(mt.bytes.subarray(0, 30), mt.fds);
  assert.deepEqual([...framer.frames()].length, 1);
  let e = expectRefusal(() => framer.end(), 'TRUNCATED', [100, 101], 5);
  assert.match(e.message, /30 bytes of request 5 \(84 bytes announced\)/);
  // mid-header
  framer = new VhostUserFramer();
  framer.push(mt.bytes.subarray(0, 4), mt.fds);
  e = expectRefusal(() => framer.end(), 'TRUNCATED', [100, 101]);
  assert.equal(e.request, undefined);
  // stray fds with no bytes
  framer = new VhostUserFramer();
  framer.push(new Uint8Array(0), [3]);
  expectRefusal(() => framer.end(), 'TRUNCATED', [3]);
  // a clean end
  framer = new VhostUserFramer();
  framer.push(mt.bytes, mt.fds);
  assert.equal([...framer.frames()].length, 1);
  framer.end();
  // push after end hands the fds back
  expectRefusal(() => framer.push(a.bytes, [4]), 'TRUNCATED', [4]);
});

test('framer property: cutting the stream anywhere, end() reports exactly the fds of the cut message', () => {
  fc.assert(
    fc.property(arbWire.filter((m) => m.length > 0), fc.nat(), fc.array(fc.nat(), { maxLength: 10 }), (msgs, cutSeed, cuts) => {
      const total = msgs.reduce((n, m) => n + m.bytes.byteLength, 0);
      const cut = cutSeed % total; // stream ends before byte `cut`
      const framer = new VhostUserFramer();
      let sent = 0;
      for (const c of chunkStream(msgs, [...cuts, cut])) {
        if (sent >= cut) break;
        framer.push(c.bytes, c.fds);
        sent += c.bytes.byteLength;
      }
      const frames = [...framer.frames()];
      let at = 0;
      const complete: WireMsg[] = [];
      let cutMsg: WireMsg | undefined;
      for (const m of msgs) {
        if (at + m.bytes.byteLength <= cut) complete.push(m);
        else if (at < cut) cutMsg = m;
        at += m.bytes.byteLength;
      }
      expectFrames(frames, complete);
      if (cutMsg === undefined) framer.end();
      else expectRefusal(() => framer.end(), 'TRUNCATED', cutMsg.fds);
    }),
    { numRuns: 300 },
  );
});

test('framer: an oversized header fails after the frames before it, handing back every fd held', () => {
  const a = encodeRequest({ type: 'SET_VRING_KICK', index: 1, fd: 20 });
  const bad = encodeHeader({ request: 5, flags: V | VHOST_USER_NEED_REPLY_MASK, size: VHOST_USER_MAX_PAYLOAD_SIZE + 1 });
  const framer = new VhostUserFramer();
  framer.push(a.bytes, [20]);
  framer.push(bad, [21, 22]);
  framer.push(new Uint8Array(100), [23]);
  const it = framer.frames();
  const first = it.next();
  assert.ok(!first.done && first.value.fds[0] === 20);
  const e = expectRefusal(() => it.next(), 'OVERSIZED', [21, 22, 23], 5);
  assert.equal(e.needReply, true);
  expectRefusal(() => framer.next(), 'OVERSIZED', []);
  expectRefusal(() => framer.push(a.bytes, [24]), 'OVERSIZED', [24]);
  // a custom limit
  const small = new VhostUserFramer({ maxPayloadSize: 8 });
  small.push(encodeRequest({ type: 'SET_CONFIG', offset: 0, flags: 0, data: new Uint8Array(4) }).bytes);
  expectRefusal(() => small.next(), 'OVERSIZED', []);
});

test('framer abort() returns every fd it holds', () => {
  const mt = encodeRequest(SAMPLES[4]!);
  const framer = new VhostUserFramer();
  framer.push(mt.bytes, mt.fds); // complete but not taken
  framer.push(encodeRequest({ type: 'SET_LOG_FD', fd: 1 }).bytes.subarray(0, 6), [7]);
  assert.equal(framer.pendingFdCount, 3);
  assert.deepEqual(framer.abort(), [100, 101, 7]);
  assert.equal(framer.next(), undefined);
  framer.end(); // already ended: no error
});
