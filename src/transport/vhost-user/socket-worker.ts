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
  | { type: 'error'; code: string; message: string };

const d = workerData as SocketWorkerData;
const fds = Int32Array.of(d.fd, d.wakeFd);
const revents = new Uint16Array(2);
const post = (e: SocketWorkerEvent) => parentPort!.postMessage(e);

loop: for (;;) {
  pollFdsInto(fds, -1, revents);
  if (revents[1] !== 0) {
    eventfdRead(d.wakeFd);
    break;
  }
  try {
    if (d.mode === 'accept') {
      for (let fd = unixAccept(d.fd, { nonblock: true }); fd !== null; fd = unixAccept(d.fd, { nonblock: true })) post({ type: 'accepted', fd });
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
