/**
 * Link state of `serve`'s netdev (virtio-net §5.1.4 `VIRTIO_NET_S_LINK_UP`):
 * a netdev whose device can disappear under a running back-end (a TAP
 * deleted with `ip link del`) is watched, and re-opened when a device of
 * that name is back (re-created by the operator). The session turns the
 * link down while the netdev is gone and up again once its pairs run on
 * the new queue fds (session.ts: `setNetdevLink`, `replaceNetdev`).
 *
 * Detection: the device's ifindex polled every {@link LINK_POLL_MS} ms
 * (missing: gone; a different one: deleted and re-created in between), and
 * a pair worker's report (tap.ts: EBADFD on a queue fd) for a check at once.
 */
import { EventEmitter } from 'node:events';
import type { NetdevSpec } from '../../netdev/spec.js';

/** How often the device's presence is checked, ms. */
export const LINK_POLL_MS = 100;

/** What serve knows about a netdev that can disappear and come back (a TAP). */
export interface NetdevWatch {
  /** Interface name (for log lines). */
  readonly name: string;
  /** The device's identity now (its ifindex), or null when there is no device of that name. */
  identity(): number | null;
  /**
   * Open the device again (it is present): the new spec. The old spec's
   * resources stay open until {@link release}.
   * @throws Error when it cannot be opened (tried again at the next poll)
   */
  reopen(): NetdevSpec;
  /** Close what `spec` holds (the queue fds of a TAP that went away). */
  release(spec: NetdevSpec): void;
}

export interface NetdevLinkEvents {
  /** The device went away (`why`: "gone" or "replaced"). */
  down: [why: string];
  /** It is back, opened as `spec`; `done` must be called once nothing uses the previous spec any more. */
  up: [spec: NetdevSpec, done: () => void];
}

/**
 * The current netdev spec and whether its device is there. Without a
 * watch (loopback, sink, generator, pcap) the link is always up.
 */
export class NetdevLink extends EventEmitter<NetdevLinkEvents> {
  private timer: ReturnType<typeof setInterval> | undefined;
  private id: number | null;
  private upNow = true;
  private stopped = false;

  constructor(public spec: NetdevSpec, private readonly watch: NetdevWatch | undefined, private readonly log: (line: string, detail?: Record<string, unknown>) => void) {
    super();
    this.id = watch ? watch.identity() : null;
  }

  /** True while the netdev's device is there. */
  get up(): boolean {
    return this.upNow;
  }

  /** Start watching (a no-op without a watch). */
  start(): void {
    if (!this.watch || this.timer) return;
    this.timer = setInterval(() => this.check(), LINK_POLL_MS);
    this.timer.unref();
  }

  /** Check now (a worker saw EBADFD). */
  check(): void {
    const w = this.watch;
    if (!w || this.stopped) return;
    const id = w.identity();
    if (this.upNow) {
      if (id !== null && id === this.id) return;
      this.upNow = false;
      const why = id === null ? 'gone' : 'replaced';
      this.log(`netdev: ${w.name} ${why === 'gone' ? 'is gone' : 'was deleted and re-created'}: link down`, { event: 'link', up: false, netdev: w.name, why });
      this.emit('down', why);
    }
    if (id === null) return;
    let spec: NetdevSpec;
    try {
      spec = w.reopen();
    } catch (e) {
      this.log(`netdev: ${w.name} is back but cannot be opened: ${(e as Error).message}; trying again`);
      return;
    }
    const old = this.spec;
    this.spec = spec;
    this.id = id;
    this.upNow = true;
    this.log(`netdev: ${w.name} is back (ifindex ${id}): re-opened, link up`, { event: 'link', up: true, netdev: w.name });
    let released = false;
    const done = () => {
      if (released) return;
      released = true;
      w.release(old);
    };
    if (this.listenerCount('up') === 0) done();
    else this.emit('up', spec, done);
  }

  /** Stop watching. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
