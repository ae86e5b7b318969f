/**
 * A minimal vhost-user front-end for tests (no tests here, no side effects on
 * import: `node --test` loads every .js under dist/test).
 *
 * The back-end under test runs its session on the main thread of the same
 * process, so nothing here may block: the socket is non-blocking and replies
 * are awaited by polling recvmsg with short timer sleeps.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { close, recvmsg, sendmsg, unixConnect, type HostError } from '../../src/host/index.js';
import {
  VhostUserFramer, VhostUserRequest, decodeReply, encodeRequest, hasExplicitReply,
  type VhostUserFrame, type VhostUserReply, type VhostUserRequestInit,
} from '../../src/transport/vhost-user/messages.js';

/** The back-end closed the connection while we waited for something else. */
export class ConnectionClosedError extends Error {
  override readonly name = 'ConnectionClosedError';
}

const POLL_MS = 2;

/** Poll `cond` every few ms until it is true; throws (with `what`) after `timeoutMs`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

export class VhostFrontend {
  private readonly framer = new VhostUserFramer();
  private eof = false;
  private closedFd = false;

  private constructor(readonly fd: number) {}

  /** Connect (retrying while the socket does not exist yet / refuses) with a non-blocking fd. */
  static async connect(path: string, timeoutMs = 3000): Promise<VhostFrontend> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        return new VhostFrontend(unixConnect(path, { nonblock: true }));
      } catch (e) {
        const code = (e as HostError).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED' && code !== 'EAGAIN') || Date.now() > until) throw e;
        await sleep(10);
      }
    }
  }

  /** True once the back-end closed the connection (EOF or reset seen). */
  get peerClosed(): boolean {
    this.pump();
    return this.eof;
  }

  /** Send raw bytes (any content: malformed messages too), fds attached to the first byte. */
  async sendRaw(bytes: Uint8Array, fds: readonly number[] = [], timeoutMs = 2000): Promise<void> {
    const until = Date.now() + timeoutMs;
    let off = 0;
    let pendingFds = fds;
    while (off < bytes.byteLength) {
      const n = sendmsg(this.fd, bytes.subarray(off), pendingFds);
      if (n === null) {
        if (Date.now() > until) throw new Error('send timed out (socket buffer full)');
        await sleep(POLL_MS);
        continue;
      }
      off += n;
      pendingFds = [];
    }
  }

  /** Encode and send one request (its fds travel with it). */
  async send(init: VhostUserRequestInit): Promise<void> {
    const m = encodeRequest(init);
    await this.sendRaw(m.bytes, m.fds);
  }

  /** Drain the socket into the framer without blocking. */
  private pump(): void {
    if (this.eof || this.closedFd) return;
    for (;;) {
      let r;
      try {
        r = recvmsg(this.fd, 65536, 16);
      } catch (e) {
        const code = (e as HostError).code;
        if (code === 'ECONNRESET' || code === 'EPIPE') {
          this.eof = true;
          return;
        }
        throw e;
      }
      if (r === null) return;
      if (r.bytes.length === 0) {
        this.eof = true;
        return;
      }
      this.framer.push(new Uint8Array(r.bytes), r.fds);
    }
  }

  /**
   * The next whole message from the back-end (raw: header, payload, fds).
   * @throws ConnectionClosedError when the back-end closed the connection first.
   */
  async recv(timeoutMs = 5000): Promise<VhostUserFrame> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      this.pump();
      const f = this.framer.next();
      if (f) return f;
      if (this.eof) throw new ConnectionClosedError('the back-end closed the connection');
      if (Date.now() > until) throw new Error(`no reply within ${timeoutMs} ms`);
      await sleep(POLL_MS);
    }
  }

  /** Send `init`, then await and decode its reply (explicit reply, or REPLY_ACK when needReply is set). */
  async request(init: VhostUserRequestInit, timeoutMs = 5000): Promise<VhostUserReply> {
    await this.send(init);
    const code = VhostUserRequest[init.type];
    if (!hasExplicitReply(code) && !init.needReply) throw new Error(`${init.type} without needReply gets no reply`);
    const f = await this.recv(timeoutMs);
    return decodeReply(code, f.header, f.payload, f.fds);
  }

  /** Send `init` with NEED_REPLY and require a successful REPLY_ACK. */
  async ack(init: VhostUserRequestInit, timeoutMs = 5000): Promise<void> {
    const r = await this.request({ ...init, needReply: true } as VhostUserRequestInit, timeoutMs);
    if (r.type !== 'ACK') throw new Error(`${init.type}: expected a REPLY_ACK, got ${r.type}`);
    if (r.result !== 0n) throw new Error(`${init.type}: the back-end answered REPLY_ACK ${r.result}`);
  }

  /**
   * Resolve once the back-end has closed the connection.
   * @throws if a message arrives instead, or on timeout.
   */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      this.pump();
      const f = this.framer.next();
      if (f) throw new Error(`expected the connection to close, got a message (request ${f.header.request})`);
      if (this.eof) return;
      if (Date.now() > until) throw new Error(`the connection was not closed within ${timeoutMs} ms`);
      await sleep(POLL_MS);
    }
  }

  /** Close our end (idempotent); fds still held by the framer are closed too. */
  close(): void {
    if (this.closedFd) return;
    this.closedFd = true;
    for (const fd of this.framer.abort()) close(fd);
    close(this.fd);
  }
}
