/**
 * The device half of a virtqueue while the front-end migrates the guest
 * (vhost-user.rst "Migration", VHOST_F_LOG_ALL): the same queue (split or
 * packed, any ring features), wrapped so that every write the device makes
 * into guest memory marks its pages in the {@link DirtyLog}, after the write:
 *
 * - buffers: the first `len` device-writable bytes of every chain returned
 *   with {@link pushUsed} (`len` is the bytes written, §2.7.8 / §2.8.7:
 *   virtio_net_hdr with num_buffers, the frame). The chain's writable pieces
 *   are remembered by id when it is popped; the net layer writes a chain
 *   (memcpy, readv from a TAP) before it returns it, so the marks follow the
 *   data. A chain given back with rewind() was not used: the driver ignores
 *   what was written there, and it is marked when it is used later.
 * - split used ring (§2.7.8): the used elements published and used->idx at
 *   {@link publish}, `flags` or avail_event at {@link setNotification}; by
 *   `log_guest_addr` when the front-end set VHOST_VRING_F_LOG with
 *   SET_VRING_ADDR ("the write to first byte of the used ring is logged at
 *   this offset"), else by the ring's guest physical address.
 * - packed ring (§2.8.7, §2.8.10): the used descriptors published (16 bytes
 *   each, in the descriptor ring) at {@link publish}, the Device Event
 *   Suppression structure at {@link setNotification}, by guest physical
 *   address.
 *
 * Picked by ring.ts when the pair starts with VHOST_F_LOG_ALL, and put on
 * (or taken off, {@link inner}) a running pair between two poll rounds when
 * logging starts or ends, as DPDK's vhost switches per burst: the pair is
 * not restarted, so the guest's traffic goes on while migration begins. The
 * worker's hot loop without logging never sees this class. A separate class
 * rather than a flag: the plain queues stay exactly as fast as before.
 *
 * Chains popped before the wrapper was put on are not known to it (their
 * writable pieces were not recorded): put it on only when none is in
 * flight (between NetDevicePair.poll rounds, which use every chain they pop
 * or give it back).
 */
import type { DescChain } from './chain.js';
import type { DirtyLog } from './dirty-log.js';
import type { GuestMemory } from './memory.js';
import type { DeviceQueue, QueueLayout, QueueState } from './queue.js';

/** What the logging variant needs (QueueOptions.dirtyLog). */
export interface QueueDirtyLog {
  log: DirtyLog;
  /**
   * Split rings: the address the used ring's byte 0 is logged at
   * (SET_VRING_ADDR log_guest_addr with VHOST_VRING_F_LOG), or -1 for the
   * ring's own guest physical address. Packed rings ignore it.
   */
  usedLogAddr: number;
}

const POS_MASK = 0x7fff;

export class LoggedDeviceQueue implements DeviceQueue {
  readonly size: number;
  readonly index: number;
  private readonly log: DirtyLog;
  private readonly packed: boolean;
  private readonly eventIdx: boolean;
  /** Split: where used-ring byte 0 is logged. Packed: the descriptor ring's guest address. */
  private readonly ringLog: number;
  /** Packed: the Device Event Suppression structure's guest address. */
  private readonly devEvt: number;
  /** Per chain id: its writable pieces as [guest address, length, ...] (from the last pop of that id). */
  private readonly pieces: number[][];
  /** The used position at the last publish (split: used->idx; packed: position | wrap << 15). */
  private pub: number;
  /**
   * Used slots pushed since the last publish (split: elements; packed:
   * descriptors, as the used position advances by each chain's count):
   * publish marks [pub, pub + pushed) without asking the inner queue for its
   * state (state() allocates).
   */
  private pushed = 0;
  /**
   * Whether `pub + pushed` is where the inner queue's used position stands.
   * Not until the first publish after construction or setState: an inflight
   * queue may complete chains on the inner queue in between (restoreInflight),
   * so that publish measures the distance once with state().
   */
  private exact = false;

  /** @param inner the queue whose writes are logged (exposed: the worker takes the wrapper off when logging ends). */
  constructor(readonly inner: DeviceQueue, private readonly mem: GuestMemory, layout: QueueLayout, eventIdx: boolean, opts: QueueDirtyLog) {
    this.size = inner.size;
    this.index = inner.index;
    this.log = opts.log;
    this.packed = layout.format === 'packed';
    this.eventIdx = eventIdx;
    this.ringLog = this.packed ? layout.descAddr : opts.usedLogAddr >= 0 ? opts.usedLogAddr : layout.deviceAddr;
    this.devEvt = layout.deviceAddr;
    this.pieces = Array.from({ length: inner.size }, () => []);
    this.pub = inner.state().used;
  }

  get singleId(): number {
    return this.inner.singleId;
  }

  get singleOff(): number {
    return this.inner.singleOff;
  }

  get singleLen(): number {
    return this.inner.singleLen;
  }

  get unpublished(): boolean {
    return this.inner.unpublished;
  }

  pending(): number {
    return this.inner.pending();
  }

  pop(chain: DescChain): void {
    this.inner.pop(chain);
    const p = this.pieces[chain.id];
    if (p === undefined) return; // an id the queue would refuse at pushUsed
    p.length = 0;
    const mem = this.mem;
    for (let i = chain.readable; i < chain.count; i++) {
      const r = chain.region[i];
      p.push(mem.start[r] + (chain.offset[i] - mem.base[r]), chain.len[i]);
    }
  }

  popSingle(write: number, minLen: number): number {
    const r = this.inner.popSingle(write, minLen);
    if (r >= 0) {
      const p = this.pieces[this.inner.singleId];
      if (p !== undefined) {
        p.length = 0;
        if (write !== 0) p.push(this.mem.start[r] + (this.inner.singleOff - this.mem.base[r]), this.inner.singleLen);
      }
    }
    return r;
  }

  mark(): number {
    return this.inner.mark();
  }

  rewind(m: number): void {
    this.inner.rewind(m);
  }

  /** Marks the first `len` writable bytes of chain `id`, then returns it. */
  pushUsed(id: number, len: number, descs: number): void {
    if (len > 0) {
      const p = this.pieces[id];
      if (p !== undefined) {
        let left = len;
        for (let i = 0; i < p.length && left > 0; i += 2) {
          const n = Math.min(left, p[i + 1]);
          this.log.mark(p[i], n);
          left -= n;
        }
      }
    }
    this.inner.pushUsed(id, len, descs);
    this.pushed += this.packed ? descs : 1;
  }

  /** Publishes, then marks the used elements / descriptors written since the last publish and (split) used->idx. No allocation. */
  publish(): boolean {
    const size = this.size;
    if (!this.exact) {
      this.exact = true;
      const to = this.inner.state().used, from = this.pub;
      this.pushed = this.packed
        ? ((to & POS_MASK) + (to >>> 15 & 1) * size - (from & POS_MASK) - (from >>> 15 & 1) * size + 2 * size) % (2 * size)
        : (to - from) & 0xffff;
    }
    const notify = this.inner.publish();
    const count = this.pushed;
    if (count === 0) return notify;
    this.pushed = 0;
    const before = this.pub;
    if (this.packed) {
      const from = before & POS_MASK;
      const first = Math.min(count, size - from);
      this.markDescs(from, first);
      if (count > first) this.markDescs(0, Math.min(count - first, size));
      let pos = from + count, wrap = before >>> 15 & 1;
      while (pos >= size) {
        pos -= size;
        wrap ^= 1;
      }
      this.pub = pos | (wrap << 15);
    } else {
      const from = before % size;
      const first = Math.min(count, size - from);
      this.log.mark(this.ringLog + 4 + 8 * from, 8 * first);
      if (count > first) this.log.mark(this.ringLog + 4, 8 * Math.min(count - first, size));
      this.log.mark(this.ringLog + 2, 2); // used->idx
      this.pub = (before + count) & 0xffff;
    }
    return notify;
  }

  private markDescs(pos: number, n: number): void {
    if (n > 0) this.log.mark(this.ringLog + 16 * pos, 16 * n);
  }

  /** Sets the notification state, then marks what it wrote (split: flags or avail_event; packed: the device event structure). */
  setNotification(enable: boolean): void {
    this.inner.setNotification(enable);
    if (this.packed) this.log.mark(this.devEvt, 4);
    else if (!this.eventIdx) this.log.mark(this.ringLog, 2);
    else if (enable) this.log.mark(this.ringLog + 4 + 8 * this.size, 2);
  }

  state(): QueueState {
    return this.inner.state();
  }

  setState(s: QueueState): void {
    this.inner.setState(s);
    this.pub = this.inner.state().used;
    this.pushed = 0;
    this.exact = false;
  }
}
