/**
 * A scripted vhost-user back-end in the test process (tests of the
 * front-end against hostile or broken back-ends): it accepts one
 * connection, answers every request the normal way unless `answer` says
 * otherwise, maps the front-end's memory, and can write the used rings
 * (split) as a faulty device would.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unlinkSync } from 'node:fs';
import {
  close, eventfdWrite, mmapShared, recvmsg, sendmsg, unixAccept, unixListen, type HostError,
} from '../../src/host/index.js';
import {
  decodeRequest, encodeReplyAck, encodeU64Reply, hasExplicitReply, VhostUserFramer,
  VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_PROTOCOL_F_REPLY_ACK, type VhostUserMessage,
} from '../../src/transport/vhost-user/messages.js';
import { FRONTEND_USER_ADDR } from '../../src/transport/vhost-user/front-end.js';
import { VIRTIO_F_VERSION_1 } from '../../src/virtio/features.js';

let seq = 0;

export type Reply = Uint8Array | 'ack' | 'none';

/** A scripted back-end: `answer` decides each reply ('ack': the normal reply). */
export class FakeBackend {
  readonly path = join(tmpdir(), `vmq-hostile-${process.pid}-${++seq}.sock`);
  private readonly listenFd: number;
  fd = -1;
  eof = false;
  mem: SharedArrayBuffer | null = null;
  used = new Map<number, number>(); // vring index -> guest address of its used ring
  call = new Map<number, number>();
  private readonly framer = new VhostUserFramer();
  private timer: NodeJS.Timeout | null = null;
  private readonly held: number[] = [];

  /** Virtio features GET_FEATURES offers (VHOST_USER_F_PROTOCOL_FEATURES is added). */
  features = VIRTIO_F_VERSION_1;
  desc = new Map<number, number>(); // vring index -> guest address of its descriptor table

  constructor(private readonly answer: (m: VhostUserMessage, be: FakeBackend) => Reply) {
    this.listenFd = unixListen(this.path, { nonblock: true });
    this.timer = setInterval(() => this.pump(), 2);
  }

  private pump(): void {
    if (this.fd < 0) {
      const fd = unixAccept(this.listenFd, { nonblock: true });
      if (fd === null) return;
      this.fd = fd;
    }
    if (this.eof) return;
    for (;;) {
      let r;
      try {
        r = recvmsg(this.fd, 65536, 16);
      } catch (e) {
        if ((e as HostError).code === 'ECONNRESET') this.eof = true;
        return;
      }
      if (r === null) break;
      if (r.bytes.length === 0) {
        this.eof = true;
        return;
      }
      this.framer.push(new Uint8Array(r.bytes), r.fds);
    }
    for (let f = this.framer.next(); f; f = this.framer.next()) {
      const m = decodeRequest(f.header, f.payload, f.fds);
      this.held.push(...m.fds);
      if (m.type === 'SET_MEM_TABLE') this.mem = mmapShared(m.regions[0].fd, m.regions[0].size);
      if (m.type === 'SET_VRING_ADDR') {
        this.used.set(m.index, m.usedUserAddr - FRONTEND_USER_ADDR);
        this.desc.set(m.index, m.descUserAddr - FRONTEND_USER_ADDR);
      }
      if (m.type === 'SET_VRING_CALL' && m.fd !== null) this.call.set(m.index, m.fd);
      const a = this.answer(m, this);
      if (a === 'none') continue;
      if (a !== 'ack') {
        sendmsg(this.fd, a);
        continue;
      }
      if (m.type === 'GET_FEATURES') sendmsg(this.fd, encodeU64Reply(m.request, this.features | VHOST_USER_F_PROTOCOL_FEATURES_MASK).bytes);
      else if (m.type === 'GET_PROTOCOL_FEATURES') sendmsg(this.fd, encodeU64Reply(m.request, 1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)).bytes);
      else if (m.type === 'GET_VRING_BASE') sendmsg(this.fd, encodeU64Reply(m.request, 0).bytes);
      else if (m.needReply && !hasExplicitReply(m.request)) sendmsg(this.fd, encodeReplyAck(m.request, 0).bytes);
    }
  }

  /** Write used element 0 of vring `index` (split ring) and signal its call fd. */
  use(index: number, id: number, len: number): void {
    const at = this.used.get(index)!;
    const dv = new DataView(this.mem!);
    dv.setUint32(at + 4, id, true);
    dv.setUint32(at + 8, len, true);
    dv.setUint16(at + 2, 1, true);
    eventfdWrite(this.call.get(index)!, 1);
  }

  /** Set vring `index`'s used->idx (split ring) and signal its call fd. */
  setUsedIdx(index: number, idx: number): void {
    new DataView(this.mem!).setUint16(this.used.get(index)! + 2, idx, true);
    eventfdWrite(this.call.get(index)!, 1);
  }

  /** Write `bytes` into the buffer of descriptor `id` of vring `index` (split ring), at `offset`. */
  writeBuffer(index: number, id: number, offset: number, bytes: Uint8Array): void {
    const dv = new DataView(this.mem!);
    const addr = Number(dv.getBigUint64(this.desc.get(index)! + 16 * id, true));
    new Uint8Array(this.mem!).set(bytes, addr + offset);
  }

  async closed(ms = 5000): Promise<void> {
    const until = Date.now() + ms;
    while (!this.eof) {
      if (Date.now() > until) throw new Error('the front-end did not close the connection');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.fd >= 0) close(this.fd);
    close(this.listenFd);
    for (const fd of this.held) {
      try {
        close(fd);
      } catch {
        // the test closed it
      }
    }
    try {
      unlinkSync(this.path);
    } catch {
      // gone
    }
  }
}

