/**
 * The vhost-user front-end against hostile or broken back-ends (a scripted
 * back-end in this process): a reply of the wrong size, a reply to another
 * request, a back-end that never answers, a used id the driver never made
 * available, a used length beyond the buffer. Each ends in a typed
 * VhostUserFrontendError, one log line naming it, and a clean disconnect
 * (the back-end sees EOF); nothing crashes or hangs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostAvailable } from '../src/host/index.js';
import {
  encodeHeader, encodeReplyAck, encodeU64Reply, VhostUserRequest, VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_NET_MTU,
  VHOST_USER_PROTOCOL_F_REPLY_ACK, type VhostUserMessage,
} from '../src/transport/vhost-user/messages.js';
import { VIRTIO_NET_F_MTU } from '../src/net/features.js';
import { VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import { VhostUserFrontend, VhostUserFrontendError } from '../src/transport/vhost-user/front-end.js';
import { FakeBackend, type Reply } from './support/fake-backend.js';

const skip = hostAvailable() ? false : 'the native addon (src/host) is not built';

/** A raw reply: header (version 1 | REPLY) for `request` and `payload`. */
function rawReply(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + payload.length);
  encodeHeader({ request, flags: 0x5, size: payload.length }, out, 0);
  out.set(payload, 12);
  return out;
}

async function expectFailure(answer: (m: VhostUserMessage, be: FakeBackend) => Reply, code: string, pattern: RegExp, after?: (be: FakeBackend) => void, replyTimeoutMs = 5000) {
  const be = new FakeBackend(answer);
  const logs: string[] = [];
  const fe = new VhostUserFrontend({ socket: be.path, pairs: 1, source: () => ({ kind: 'none' }), replyTimeoutMs, reconnect: true, log: (l) => logs.push(l) });
  try {
    if (after) {
      await fe.start();
      after(be);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no error event')), 5000);
        fe.once('error', () => { clearTimeout(t); resolve(); });
      });
      assert.ok(fe.failure instanceof VhostUserFrontendError);
    } else {
      await assert.rejects(fe.start(), (e: unknown) => e instanceof VhostUserFrontendError && e.code === code && pattern.test(e.message));
    }
    assert.equal(fe.failure?.code, code);
    assert.match(fe.failure!.message, pattern);
    assert.equal(logs.filter((l) => l.includes(fe.failure!.message)).length, 1, `one log line names it: ${logs.join(' | ')}`);
    await be.closed();
    assert.equal(fe.connected, false);
  } finally {
    await fe.stop();
    be.stop();
  }
}

test('a reply of the wrong size: PROTOCOL error, log line, disconnect', { skip, timeout: 30_000 }, async () => {
  await expectFailure((m) => (m.type === 'GET_FEATURES' ? rawReply(m.request, new Uint8Array(4)) : 'ack'), 'PROTOCOL', /GET_FEATURES.*BAD_SIZE/);
});

test('a reply to another request: PROTOCOL error (UNEXPECTED_REPLY), disconnect', { skip, timeout: 30_000 }, async () => {
  await expectFailure(
    (m) => (m.type === 'GET_PROTOCOL_FEATURES' ? encodeU64Reply(VhostUserRequest.GET_FEATURES, 0).bytes : 'ack'),
    'PROTOCOL', /GET_PROTOCOL_FEATURES.*UNEXPECTED_REPLY/,
  );
});

test('a back-end that never answers: TIMEOUT, disconnect, no hang', { skip, timeout: 30_000 }, async () => {
  // 2 s: every other request is answered well within it, even on a loaded machine.
  await expectFailure((m) => (m.type === 'SET_MEM_TABLE' ? 'none' : 'ack'), 'TIMEOUT', /SET_MEM_TABLE: no reply within 2000 ms/, undefined, 2000);
});

test('a refused request (REPLY_ACK failure): REFUSED, disconnect', { skip, timeout: 30_000 }, async () => {
  await expectFailure((m) => (m.type === 'SET_VRING_ADDR' ? encodeReplyAck(m.request, 1).bytes : 'ack'), 'REFUSED', /SET_VRING_ADDR/);
});

test('a used id the driver never made available: QUEUE error (USED_ID_INVALID), disconnect', { skip, timeout: 30_000 }, async () => {
  await expectFailure(() => 'ack', 'QUEUE', /USED_ID_INVALID/, (be) => be.use(0, 300, 64));
});

test('a used length beyond the buffer: QUEUE error (USED_LEN_INVALID), disconnect', { skip, timeout: 30_000 }, async () => {
  await expectFailure(() => 'ack', 'QUEUE', /USED_LEN_INVALID/, (be) => be.use(0, 0, 100_000));
});

test('--mtu: NET_SET_MTU (REPLY_ACK) before SET_FEATURES to a back-end with VIRTIO_NET_F_MTU and the NET_MTU protocol feature; config mtu for the driver', { skip, timeout: 30_000 }, async () => {
  for (const mtu of [9000, undefined]) {
    const seen: VhostUserMessage[] = [];
    const be = new FakeBackend((m) => {
      seen.push(m);
      if (m.type === 'GET_FEATURES') return encodeU64Reply(m.request, VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MTU | VHOST_USER_F_PROTOCOL_FEATURES_MASK).bytes;
      if (m.type === 'GET_PROTOCOL_FEATURES') return encodeU64Reply(m.request, (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)) | (1n << BigInt(VHOST_USER_PROTOCOL_F_NET_MTU))).bytes;
      return 'ack';
    });
    const fe = new VhostUserFrontend({ socket: be.path, pairs: 1, source: () => ({ kind: 'none' }), mtu, log: () => {} });
    try {
      await fe.start();
      const types = seen.map((m) => m.type);
      const set = seen.find((m) => m.type === 'NET_SET_MTU');
      const proto = seen.find((m) => m.type === 'SET_PROTOCOL_FEATURES') as Extract<VhostUserMessage, { type: 'SET_PROTOCOL_FEATURES' }>;
      if (mtu) {
        assert.ok(set && set.type === 'NET_SET_MTU' && set.mtu === mtu && set.needReply, `NET_SET_MTU ${mtu} asking for a reply: ${types.join(' ')}`);
        assert.ok(types.indexOf('NET_SET_MTU') < types.indexOf('SET_FEATURES'));
        assert.ok(proto.features & (1n << BigInt(VHOST_USER_PROTOCOL_F_NET_MTU)));
        assert.ok(fe.negotiated & VIRTIO_NET_F_MTU);
        assert.equal(fe.driver.config.mtu, mtu);
      } else {
        assert.equal(set, undefined, 'no NET_SET_MTU without --mtu');
        assert.equal(proto.features & (1n << BigInt(VHOST_USER_PROTOCOL_F_NET_MTU)), 0n);
      }
    } finally {
      await fe.stop();
      be.stop();
    }
  }
});
