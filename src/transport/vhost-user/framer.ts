/**
 * Stream framer for vhost-user: turns the byte chunks and fds returned by
 * successive recvmsg() calls on a unix stream socket into whole messages
 * (12-byte header + `size` payload bytes + the fds sent with them).
 *
 * Fd attribution. Senders (QEMU, DPDK, rust-vmm, libvhost-user) attach a
 * message's fds to the sendmsg() that carries its header, so the kernel hands
 * them out with the recvmsg() that returns the header's first byte; and Linux
 * stops a stream recvmsg() right after the first skb that carried fds. Hence:
 * the fds pushed with a chunk belong to the LAST message whose header begins
 * inside that chunk. If no header begins in it (fds sent with a continuation,
 * which no known peer does), they go to the message in progress; an empty
 * chunk with fds at a message boundary gives them to the next message. Fds
 * are never dropped: every fd pushed comes back exactly once, in a frame, in
 * an error's `fds`, or from {@link VhostUserFramer.abort}.
 *
 * The framer only frames: it refuses a header whose `size` exceeds the
 * payload limit (the stream cannot be resynchronised after that) and leaves
 * all other validation to decodeRequest / decodeReply.
 */

import { VHOST_USER_HEADER_SIZE, VHOST_USER_MAX_PAYLOAD_SIZE, VHOST_USER_NEED_REPLY_MASK } from './constants.js';
import { VhostUserProtocolError, type VhostUserErrorCode } from './errors.js';
import { decodeHeader, type VhostUserHeader } from './payloads.js';

/** One complete message off the stream. */
export interface VhostUserFrame {
  header: VhostUserHeader;
  /** Exactly `header.size` bytes (a copy owned by the caller). */
  payload: Uint8Array;
  /** Fds that arrived with the message (see the attribution rule above); owned by the caller. */
  fds: number[];
}

export interface VhostUserFramerOptions {
  /** Largest accepted payload; default {@link VHOST_USER_MAX_PAYLOAD_SIZE} (4096). */
  maxPayloadSize?: number;
}

interface PendingMessage {
  /** Stream offset of the header's first byte. */
  start: number;
  /** Known once its 12 header bytes have arrived. */
  header: VhostUserHeader | null;
  /** The header's size is above the limit: nothing after it can be framed. */
  oversized: boolean;
  fds: number[];
}

/**
 * Incremental vhost-user framer.
 *
 * ```ts
 * const framer = new VhostUserFramer();
 * // on each recvmsg() result { bytes, fds } (bytes.length === 0 means EOF):
 * if (bytes.length === 0) framer.end(); else framer.push(bytes, fds);
 * for (const f of framer.frames()) handle(decodeRequest(f.header, f.payload, f.fds));
 * ```
 *
 * Errors are {@link VhostUserProtocolError}s whose `fds` hand back every fd
 * the framer still held; after one the framer is closed and the connection
 * must be dropped.
 */
export class VhostUserFramer {
  readonly maxPayloadSize: number;

  #data = new Uint8Array(256);
  /** Stream offset of #data[0]. */
  #dataStart = 0;
  /** Stream offset of the first byte not yet returned in a frame. */
  #head = 0;
  /** Stream offset one past the last byte pushed. */
  #end = 0;
  /** Messages not yet returned, in stream order; only the last one may lack its header. */
  #pending: PendingMessage[] = [];
  /** Stream offset of the next message start after the last pending one (when that one is complete). */
  #scanPos = 0;
  #state: 'open' | 'failed' | 'ended' = 'open';
  #failureCode: VhostUserErrorCode = 'TRUNCATED';

  constructor(options: VhostUserFramerOptions = {}) {
    const max = options.maxPayloadSize ?? VHOST_USER_MAX_PAYLOAD_SIZE;
    if (!Number.isInteger(max) || max < 0 || max > 0xffffffff) throw new RangeError(`maxPayloadSize ${max} is not a u32`);
    this.maxPayloadSize = max;
  }

  /** Bytes received but not yet returned in a frame. */
  get pendingBytes(): number {
    return this.#end - this.#head;
  }

  /** Fds received but not yet returned in a frame. */
  get pendingFdCount(): number {
    return this.#pending.reduce((n, m) => n + m.fds.length, 0);
  }

  /**
   * Append one received chunk and the fds that came with it (the result of one
   * recvmsg()). Does not throw on bad data; errors surface from {@link next}.
   *
   * @throws VhostUserProtocolError (with these `fds`) if the framer already
   *   failed or ended: the caller keeps ownership of the fds it tried to push.
   */
  push(chunk: Uint8Array, fds: readonly number[] = []): void {
    if (this.#state !== 'open') {
      throw new VhostUserProtocolError(this.#state === 'failed' ? this.#failureCode : 'TRUNCATED', `push after the framer was ${this.#state}`, { fds });
    }
    const chunkStart = this.#end;
    this.#append(chunk);
    this.#scan();
    if (fds.length > 0) this.#target(chunkStart).fds.push(...fds);
  }

  /**
   * The next complete message, or undefined if more bytes are needed.
   *
   * @throws VhostUserProtocolError `OVERSIZED` when the next header announces
   *   a payload above {@link maxPayloadSize}; its `fds` are all fds the framer
   *   held, `request`/`needReply` those of the offending header. The framer
   *   is failed afterwards (every later call throws with no fds).
   */
  next(): VhostUserFrame | undefined {
    if (this.#state === 'failed') throw new VhostUserProtocolError(this.#failureCode, 'the framer already failed', {});
    if (this.#state === 'ended') return undefined;
    const m = this.#pending[0];
    if (m === undefined || m.header === null) return undefined;
    if (m.oversized) {
      const fds = this.#takeAllFds();
      this.#state = 'failed';
      this.#failureCode = 'OVERSIZED';
      throw new VhostUserProtocolError('OVERSIZED', `header announces a ${m.header.size}-byte payload, limit is ${this.maxPayloadSize}`, {
        request: m.header.request,
        needReply: (m.header.flags & VHOST_USER_NEED_REPLY_MASK) !== 0,
        fds,
      });
    }
    const stop = m.start + VHOST_USER_HEADER_SIZE + m.header.size;
    if (stop > this.#end) return undefined;
    const payload = this.#data.slice(m.start + VHOST_USER_HEADER_SIZE - this.#dataStart, stop - this.#dataStart);
    this.#pending.shift();
    this.#head = stop;
    return { header: m.header, payload, fds: m.fds };
  }

  /** Every complete message available now (a generator over {@link next}; throws like it). */
  *frames(): Generator<VhostUserFrame, void, void> {
    for (let f = this.next(); f !== undefined; f = this.next()) yield f;
  }

  /**
   * The peer closed the connection. Fine if nothing is held; otherwise (a
   * message cut short, or frames / fds not taken yet: drain with
   * {@link next} first) throws `TRUNCATED` listing every fd still held, so
   * they can be closed. The framer is ended either way.
   */
  end(): void {
    if (this.#state !== 'open') {
      this.#state = 'ended';
      return;
    }
    const bytes = this.pendingBytes;
    const first = this.#pending[0];
    const fds = this.#takeAllFds();
    this.#state = 'ended';
    if (bytes > 0 || fds.length > 0) {
      const header = first?.header ?? null;
      const what = header === null ? `a partial header` : `request ${header.request} (${VHOST_USER_HEADER_SIZE + header.size} bytes announced)`;
      throw new VhostUserProtocolError('TRUNCATED', `peer disconnected with ${bytes} bytes of ${what} and ${fds.length} fds pending`, {
        request: header?.request,
        needReply: header !== null && (header.flags & VHOST_USER_NEED_REPLY_MASK) !== 0,
        fds,
      });
    }
  }

  /** Drop everything (e.g. when closing the connection for another reason) and return the fds still held, to be closed. */
  abort(): number[] {
    const fds = this.#takeAllFds();
    this.#state = 'ended';
    return fds;
  }

  #takeAllFds(): number[] {
    const fds = this.#pending.flatMap((m) => m.fds);
    this.#pending = [];
    this.#head = this.#end;
    this.#scanPos = this.#end;
    this.#data = new Uint8Array(256);
    this.#dataStart = this.#end;
    return fds;
  }

  #append(chunk: Uint8Array): void {
    const used = this.#end - this.#dataStart;
    if (used + chunk.byteLength > this.#data.byteLength) {
      // Drop the bytes already returned, then grow if still needed.
      const live = this.#end - this.#head;
      let cap = this.#data.byteLength;
      while (cap < live + chunk.byteLength) cap *= 2;
      const from = this.#head - this.#dataStart;
      if (cap === this.#data.byteLength) {
        this.#data.copyWithin(0, from, used);
      } else {
        const grown = new Uint8Array(cap);
        grown.set(this.#data.subarray(from, used), 0);
        this.#data = grown;
      }
      this.#dataStart = this.#head;
    }
    this.#data.set(chunk, this.#end - this.#dataStart);
    this.#end += chunk.byteLength;
  }

  /** Extend #pending with every message start now known (headers parsed as they complete). */
  #scan(): void {
    for (;;) {
      const last = this.#pending[this.#pending.length - 1];
      if (last !== undefined && last.header === null) {
        if (this.#end - last.start < VHOST_USER_HEADER_SIZE) return;
        last.header = decodeHeader(this.#data, last.start - this.#dataStart);
        if (last.header.size > this.maxPayloadSize) {
          last.oversized = true;
          return;
        }
        this.#scanPos = last.start + VHOST_USER_HEADER_SIZE + last.header.size;
        continue;
      }
      if (last?.oversized) return;
      if (this.#scanPos >= this.#end) return;
      this.#pending.push({ start: this.#scanPos, header: null, oversized: false, fds: [] });
    }
  }

  /** The message that gets the fds of the chunk that started at stream offset `chunkStart`. */
  #target(chunkStart: number): PendingMessage {
    for (let i = this.#pending.length - 1; i >= 0; i--) {
      const m = this.#pending[i]!;
      if (m.start < chunkStart) break;
      if (m.start < this.#end) return m; // last header beginning inside the chunk
    }
    const last = this.#pending[this.#pending.length - 1];
    const atBoundary =
      last === undefined || (last.header !== null && !last.oversized && last.start + VHOST_USER_HEADER_SIZE + last.header.size <= chunkStart);
    if (!atBoundary) return last!; // continuation of the message in progress
    // Empty chunk at a message boundary: the fds precede the next message's bytes.
    const m: PendingMessage = { start: this.#scanPos, header: null, oversized: false, fds: [] };
    this.#pending.push(m);
    return m;
  }
}
