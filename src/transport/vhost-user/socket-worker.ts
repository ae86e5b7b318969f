/**
 * Reads one vhost-user unix socket for the main thread: blocks in poll(2) on
 * the socket and a wake eventfd, does recvmsg (bytes + SCM_RIGHTS fds), and
 * posts each chunk to the main thread, which frames and handles messages.
 * In 'accept' mode it waits on a listening socket and posts each accepted fd.
 * fds are process-wide numbers: posting them between threads is safe.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { eventfdRead, pollFdsInto, recvmsg, unixAccept, HostError } from '../../host/index.js';

export interface SocketWorkerData {
  mode: 'read' | 'accept';
  fd: number;
  /** Written by the main thread to make this worker exit. */
  wakeFd: number;
}

export type SocketWorkerEvent =
  | { type: 'data'; bytes: Uint8Array; fds: number[] }
  | { type: 'accepted'; fd: number }
  | { type: 'eof' }
  /** accept mode: the module is loaded and the loop about to wait (posted once, first). */
  | { type: 'ready' }
  | { type: 'error'; code: string; message: string };

/** accept4 failures that say "not now" (fd limits, memory): back off and retry; the listener stays. */
const TRANSIENT_ACCEPT = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);
/** accept4 failures of one connection (it went away before we took it): just go on. */
const CONNECTION_ACCEPT = new Set(['ECONNABORTED', 'EPROTO', 'EPERM', 'EINTR']);

const d = workerData as SocketWorkerData;
const fds = Int32Array.of(d.fd, d.wakeFd);
const revents = new Uint16Array(2);
const post = (e: SocketWorkerEvent) => parentPort!.postMessage(e);

/**
 * Accept every waiting connection. On EMFILE and the like, wait (on the wake
 * fd only, else the readable listener would spin us) with back-off from
 * 10 ms to 1 s and try again, reporting each streak once. Returns false when
 * woken to stop.
 */
function acceptAll(): boolean {
  let delay = 10;
  let reported = false;
  for (;;) {
    let fd: number | null;
    try {
      fd = unixAccept(d.fd, { nonblock: true });
    } catch (e) {
      const he = e as HostError;
      if (CONNECTION_ACCEPT.has(he.code)) continue;
      if (!TRANSIENT_ACCEPT.has(he.code)) throw e;
      if (!reported) post({ type: 'error', code: he.code, message: `${he.message}; retrying with back-off until fds are free` });
      reported = true;
      if (pollFdsInto(wakeOnly, delay, wakeRevents) > 0) {
        eventfdRead(d.wakeFd);
        return false;
      }
      delay = Math.min(1000, delay * 2);
      continue;
    }
    if (fd === null) {
      if (reported) post({ type: 'error', code: 'RECOVERED', message: 'accepting again' });
      return true;
    }
    if (reported) {
      post({ type: 'error', code: 'RECOVERED', message: 'accepting again' });
      reported = false;
    }
    delay = 10;
    post({ type: 'accepted', fd });
  }
}
const wakeOnly = Int32Array.of(d.wakeFd);
const wakeRevents = new Uint16Array(1);

if (d.mode === 'accept') post({ type: 'ready' });

loop: for (;;) {
  pollFdsInto(fds, -1, revents);
  if (revents[1] !== 0) {
    eventfdRead(d.wakeFd);
    break;
  }
  try {
    if (d.mode === 'accept') {
      if (!acceptAll()) break;
      continue;
    }
    // A bounded batch, then poll again: a front-end that never stops sending
    // must not keep the reader from seeing its wake fd (stop).
    for (let i = 0; i < 64; i++) {
      const r = recvmsg(d.fd, 65536, 16);
      if (r === null) break; // EAGAIN: wait again
      if (r.bytes.length === 0) {
        post({ type: 'eof' });
        break loop;
      }
      post({ type: 'data', bytes: new Uint8Array(r.bytes), fds: r.fds });
    }
  } catch (e) {
    const he = e as HostError;
    post({ type: 'error', code: he.code ?? 'ERROR', message: he.message });
    break;
  }
}
