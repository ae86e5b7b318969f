/**
 * `vhost-codec`: the vhost-user message codec (framer.ts, messages.ts,
 * payloads.ts) against any byte stream, cut into any chunks, with fd
 * numbers attached to any chunk.
 *
 * Checks per case: every fd pushed comes back exactly once (in a frame, an
 * error's `fds`, or from end/abort); frames have exactly `size` payload
 * bytes and together are a prefix of the stream; decodeRequest,
 * decodeReply and decodeBackendRequest throw only VhostUserProtocolError
 * and never wrap an internal exception (`internal decode failure`); an
 * accepted request keeps the frame's fds and survives encodeRequest →
 * decodeRequest unchanged.
 */
import { isDeepStrictEqual } from 'node:util';
import {
  VhostUserFramer, VhostUserProtocolError, VhostUserRequest, decodeBackendRequest, decodeReply, decodeRequest, encodeRequest,
  encodeHeader,
  type VhostUserMessage, type VhostUserRequestInit,
} from '../../../src/transport/vhost-user/messages.js';
import { ByteSource } from '../bytes.js';
import { FuzzFinding } from '../guarded.js';
import type { FuzzTarget } from '../target.js';

const stats = { frames: 0, accepted: 0, refused: 0, framerErrors: 0 };
const CODES = Object.values(VhostUserRequest) as number[];

function checkProtocolError(e: unknown, where: string): VhostUserProtocolError {
  if (!(e instanceof VhostUserProtocolError)) throw new FuzzFinding(`${where} threw ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
  if (e.message.includes('internal decode failure')) throw new FuzzFinding(`${where}: ${e.message}\n${(e.cause as Error)?.stack ?? ''}`);
  return e;
}

/** The message again, as an encodeRequest init (decoded fields are the init's, plus request and fds). */
function initOf(m: VhostUserMessage): VhostUserRequestInit {
  const { request: _r, fds: _f, ...rest } = m as VhostUserMessage & Record<string, unknown>;
  return rest as unknown as VhostUserRequestInit;
}

function strip(m: VhostUserMessage): unknown {
  const { fds: _f, ...rest } = m as VhostUserMessage & Record<string, unknown>;
  return rest;
}

export const vhostCodecTarget: FuzzTarget = {
  name: 'vhost-codec',
  description: 'vhost-user framer + request/reply/back-end-request decoders + encode round trip',
  maxLen: 2048,
  stats,
  one(data) {
    const s = new ByteSource(data);
    const sentRequest = s.pick(CODES);
    const framer = new VhostUserFramer({ maxPayloadSize: s.u8() < 16 ? s.u16() : undefined });
    const stream = data.subarray(Math.min(data.length, 3));
    const pushed = new Set<number>();
    const back: number[] = [];
    let fdNo = 1000;
    let off = 0;
    let failed = false;
    const frames: Uint8Array[] = [];
    const cs = new ByteSource(stream.slice().reverse()); // chunking decisions from the tail
    while (off < stream.length && !failed) {
      const n = Math.min(stream.length - off, 1 + (cs.u8() < 128 ? cs.below(16) : cs.below(600)));
      const fds: number[] = [];
      for (let k = cs.u8() < 200 ? 0 : 1 + cs.below(4); k > 0; k--) fds.push(fdNo++);
      fds.forEach((f) => pushed.add(f));
      framer.push(stream.subarray(off, off + n), fds);
      off += n;
      try {
        for (const f of framer.frames()) {
          if (f.payload.length !== f.header.size) throw new FuzzFinding(`frame payload ${f.payload.length} bytes, header size ${f.header.size}`);
          back.push(...f.fds);
          const raw = new Uint8Array(12 + f.payload.length);
          encodeHeader(f.header, raw, 0);
          raw.set(f.payload, 12);
          frames.push(raw);
          decodeAll(f.header, f.payload, f.fds, sentRequest);
        }
      } catch (e) {
        if (e instanceof FuzzFinding) throw e;
        back.push(...checkProtocolError(e, 'framer.next').fds);
        stats.framerErrors++;
        failed = true;
      }
    }
    if (!failed) {
      try {
        framer.end();
      } catch (e) {
        back.push(...checkProtocolError(e, 'framer.end').fds);
      }
    }
    back.push(...framer.abort());
    // fd conservation
    if (back.length !== pushed.size || new Set(back).size !== back.length || back.some((f) => !pushed.has(f)))
      throw new FuzzFinding(`fds pushed ${[...pushed]} came back as ${back}`);
    // frames are the stream's prefix
    let at = 0;
    for (const f of frames) {
      for (let i = 0; i < f.length; i++) if (f[i] !== stream[at + i]) throw new FuzzFinding(`frame bytes differ from the stream at ${at + i}`);
      at += f.length;
    }
  },
  seeds() {
    const msgs: VhostUserRequestInit[] = [
      { type: 'SET_OWNER' }, { type: 'GET_FEATURES' }, { type: 'SET_FEATURES', features: 0x1_3000_0000n },
      { type: 'GET_PROTOCOL_FEATURES' }, { type: 'SET_PROTOCOL_FEATURES', features: 0x3n, needReply: true },
      { type: 'SET_VRING_NUM', index: 1, num: 256 }, { type: 'SET_VRING_BASE', index: 0, num: 0 },
      { type: 'SET_VRING_ADDR', index: 0, flags: 0, descUserAddr: 0x7f0000000000, usedUserAddr: 0x7f0000001000, availUserAddr: 0x7f0000002000, logGuestAddr: 0 },
      { type: 'SET_VRING_ENABLE', index: 1, num: 1 }, { type: 'GET_VRING_BASE', index: 0, num: 0 },
      { type: 'SET_VRING_KICK', index: 0, fd: 900 }, { type: 'SET_VRING_CALL', index: 1, fd: null },
      { type: 'SET_MEM_TABLE', regions: [{ guestAddr: 0, size: 0x100000, userAddr: 0x7f0000000000, mmapOffset: 0, fd: 901 }] },
      { type: 'GET_QUEUE_NUM' }, { type: 'SET_STATUS', status: 0xf }, { type: 'GET_STATUS' },
    ] as VhostUserRequestInit[];
    const out: Uint8Array[] = [];
    for (let i = 0; i < msgs.length; i++) {
      const m = encodeRequest(msgs[i]);
      out.push(Uint8Array.from([i, 0, 0, ...m.bytes]));
    }
    const all = out.map((b) => b.subarray(3));
    const joined = new Uint8Array(all.reduce((n, b) => n + b.length, 3));
    let o = 3;
    for (const b of all) {
      joined.set(b, o);
      o += b.length;
    }
    out.push(joined);
    return out;
  },
};

function decodeAll(header: { request: number; flags: number; size: number }, payload: Uint8Array, fds: number[], sentRequest: number): void {
  let m: VhostUserMessage | null = null;
  try {
    m = decodeRequest(header, payload, fds);
  } catch (e) {
    const pe = checkProtocolError(e, 'decodeRequest');
    stats.refused++;
    if (!isDeepStrictEqual([...pe.fds], fds)) throw new FuzzFinding(`decodeRequest error carries fds ${pe.fds}, the message had ${fds}`);
  }
  stats.frames++;
  if (m) {
    stats.accepted++;
    if (!isDeepStrictEqual([...m.fds], fds)) throw new FuzzFinding(`decoded ${m.type} carries fds ${m.fds}, the message had ${fds}`);
    let again: VhostUserMessage;
    try {
      const enc = encodeRequest(initOf(m));
      const h = { request: new DataView(enc.bytes.buffer, enc.bytes.byteOffset).getUint32(0, true), flags: new DataView(enc.bytes.buffer, enc.bytes.byteOffset).getUint32(4, true), size: enc.bytes.length - 12 };
      again = decodeRequest(h, enc.bytes.subarray(12), enc.fds);
    } catch (e) {
      throw new FuzzFinding(`an accepted ${m.type} does not re-encode: ${(e as Error).message}\n${JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`);
    }
    if (!isDeepStrictEqual(strip(again), strip(m))) throw new FuzzFinding(`${m.type} changed in an encode/decode round trip`);
  }
  try {
    decodeReply(sentRequest, header, payload, fds);
  } catch (e) {
    checkProtocolError(e, 'decodeReply');
  }
  try {
    decodeBackendRequest(header, payload, fds);
  } catch (e) {
    checkProtocolError(e, 'decodeBackendRequest');
  }
}
