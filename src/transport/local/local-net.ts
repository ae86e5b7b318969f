/**
 * The local transport: a whole virtio-net system in one Node process, with
 * no root and no native code. Guest memory is one SharedArrayBuffer; the
 * device and the driver each run one worker thread per queue pair; the main
 * thread is the control plane of both (feature negotiation, queue setup,
 * controlq) and reads the statistics the workers keep in shared memory.
 *
 * The main thread plays the role of a PCI transport between
 * {@link NetDriver} and {@link NetDevice}: register writes are method calls,
 * a controlq notification runs the device's controlq handler, a data queue
 * notification rings the pair's doorbell.
 */
import { Worker, MessageChannel, type MessagePort } from 'node:worker_threads';
import { EventEmitter } from 'node:events';
import { GuestAllocator } from '../../virtio/alloc.js';
import { GuestMemory } from '../../virtio/memory.js';
import { NetDevice } from '../../net/device.js';
import { NetDriver } from '../../net/driver.js';
import { DEV_STAT_COUNT, DRV_STAT_COUNT, StatsBlock } from '../../net/stats.js';
import { DeviceSteering } from '../../net/steering.js';
import type { RssConfig } from '../../net/rss.js';
import type { ControlState } from '../../net/ctrl.js';
import type { RssConfigCommand } from '../../net/ctrl.js';
import type { VirtioTransport } from '../../virtio/transport.js';
import type { QueueLayout, RingFormat } from '../../virtio/queue.js';
import { FrameRing } from '../../net/frame-ring.js';
import { ConformanceMonitor, type RuleReport } from '../../virtio/conformance.js';
import { attachNetConformance, checkNotify } from '../../net/conformance.js';
import { CTL_ACTIVE_PAIRS, CTL_GEN, CTL_STOP, SharedControl } from './shared.js';
import { stopTxAcked } from '../tx-stop.js';
import type { NetdevSpec } from '../../netdev/spec.js';
import type { SourceSpec } from './sources.js';
import { VIRTIO_NET_F_CSUM } from '../../net/features.js';
import { rxOffloadBits } from '../../net/offloads.js';
import type { DeviceWorkerData, DeviceWorkerMessage } from './device-worker.js';
import type { DriverWorkerData } from './driver-worker.js';
import { changeActivePairs } from '../pair-change.js';

/** TX buffer bytes for an MTU: virtio_net_hdr (12) + Ethernet (14) + VLAN (4) + MTU, at least 2048, a multiple of 64. */
export function localTxBufSize(mtu: number): number {
  return Math.max(2048, Math.ceil((12 + 14 + 4 + mtu) / 64) * 64);
}

export interface LocalNetOptions {
  /** Queue pairs (device max_virtqueue_pairs and what the driver asks for). */
  pairs: number;
  /** Queue Size of every receiveq/transmitq. Default 256 (split: a power of two; packed: any size up to 32768). */
  queueSize?: number;
  /** Ring format the driver negotiates (§2.7 split, §2.8 packed). Default 'split'. */
  ring?: RingFormat;
  /** Negotiate VIRTIO_F_IN_ORDER. Default false. */
  inOrder?: boolean;
  mode?: 'busy' | 'notify';
  /** What the device's netdev is. */
  netdev: NetdevSpec;
  /** What each driver pair sends and checks. */
  source: (pair: number) => SourceSpec;
  /** Device features to offer (default: all the device implements). */
  deviceFeatures?: bigint;
  /** Driver features wanted (default: all the driver implements). */
  driverFeatures?: bigint;
  /** Frames per poll round. Default 64. */
  budget?: number;
  /** Bytes per RX buffer the driver posts (default 2048; smaller makes MRG_RXBUF frames span buffers). */
  rxBufSize?: number;
  /** Bytes per cross-pair inbox / backlog. Default 256 KiB. */
  inboxBytes?: number;
  /** Capture rings by pair (QueueCapture.buffers, transport/capture.ts). */
  capture?: SharedArrayBuffer[];
  /**
   * Strict conformance (virtio/conformance.ts, net/conformance.ts): every
   * spec rule either end breaks is counted in {@link LocalNet.conformance}
   * and reported once through the 'conformance' event.
   */
  strict?: boolean;
  /** Device config `mtu` (VIRTIO_NET_F_MTU), 68..9714; the driver's TX buffers hold 14 + 4 + mtu bytes of frame. Default 1500. */
  mtu?: number;
}

export interface QueueErrorReport {
  side: 'device' | 'driver';
  queue: number;
  code: string;
  message: string;
}

export class LocalNet extends EventEmitter<{
  'queue-error': [QueueErrorReport]; 'control-error': [string]; conformance: [RuleReport];
  /** The driver handled a configuration change notification: the link status it read, whether it acknowledged an announcement. */
  'config-change': [{ linkUp: boolean; announced: boolean }];
}> {
  readonly device: NetDevice;
  readonly driver: NetDriver;
  /** Configuration change notifications, delivered in order (setLink, announce). */
  private configIrq: Promise<void> = Promise.resolve();
  readonly mem: GuestMemory;
  readonly ctl: SharedControl;
  readonly devStats: StatsBlock;
  readonly drvStats: StatsBlock;
  readonly errors: QueueErrorReport[] = [];
  /** With `strict`: the violations either end made. */
  readonly conformance: ConformanceMonitor | null;
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private deviceStarted = false;
  private readonly opts: Required<Omit<LocalNetOptions, 'deviceFeatures' | 'driverFeatures' | 'rxBufSize' | 'ring' | 'inOrder' | 'capture' | 'strict' | 'mtu'>> & LocalNetOptions;

  constructor(opts: LocalNetOptions) {
    super();
    this.opts = { queueSize: 256, mode: 'notify', budget: 64, inboxBytes: 256 * 1024, ...opts };
    const { pairs, queueSize } = this.opts;
    this.device = new NetDevice({ maxPairs: pairs, maxQueueSize: Math.max(queueSize, 64), features: opts.deviceFeatures, mtu: opts.mtu });
    if (queueSize > 32768 || !(queueSize >= 1)) throw new RangeError(`queue size ${queueSize} is outside 1..32768`);
    const txBufSize = localTxBufSize(opts.mtu ?? 1500);
    // Guest memory: rings + 2 × queueSize buffers of 2 KiB (or the RX / TX buffer size, if larger) per pair, plus the controlq.
    const bufBytes = Math.max(2048, opts.rxBufSize ?? 0, txBufSize);
    const bytes = pairs * (2 * queueSize * bufBytes + 2 * (queueSize * 24 + 8192)) + (1 << 20);
    const sab = new SharedArrayBuffer(Math.ceil(bytes / 4096) * 4096);
    this.mem = new GuestMemory([{ guestPhysAddr: 0, size: sab.byteLength, buffer: sab }]);
    const alloc = new GuestAllocator(4096, sab.byteLength); // keep guest address 0 unused
    this.driver = new NetDriver(this.transport(), this.mem, alloc, {
      pairs, queueSize, wanted: opts.driverFeatures, rxBufSize: opts.rxBufSize, txBufSize, ring: opts.ring, inOrder: opts.inOrder,
    });
    this.ctl = new SharedControl(pairs);
    this.devStats = new StatsBlock(pairs, DEV_STAT_COUNT);
    this.drvStats = new StatsBlock(pairs, DRV_STAT_COUNT);
    this.device.on('control', (s) => this.pushControl(s));
    this.device.on('control-error', (m) => this.emit('control-error', m));
    // The configuration change interrupt: delivered to the driver after the device's change (never inside it).
    this.device.on('config-change', () => {
      const run = () => new Promise<void>((r) => setImmediate(r)).then(() => this.driver.configChanged()).then((r) => void this.emit('config-change', r));
      this.configIrq = this.configIrq.then(run, run);
      this.configIrq.catch((e: unknown) => this.emit('control-error', `configuration change: ${(e as Error).message}`));
    });
    this.conformance = opts.strict ? new ConformanceMonitor((r) => this.emit('conformance', r)) : null;
    if (this.conformance) attachNetConformance(this.device, this.conformance);
  }

  /** The register-level view the driver has of the device. */
  private transport(): VirtioTransport {
    const dev = this.device;
    return {
      deviceFeatures: () => dev.offered,
      setDriverFeatures: (f) => void dev.setDriverFeatures(f),
      getStatus: () => dev.status,
      setStatus: (s) => dev.setStatus(s),
      readConfig: () => dev.readConfig(),
      numQueues: () => dev.numQueues,
      queueMaxSize: () => dev.maxQueueSize,
      setQueue: (i: number, l: QueueLayout) => dev.setQueue(i, l),
      notify: (i: number) => {
        if (this.conformance && i !== dev.controlqIndex) checkNotify(this.conformance, dev.status, i);
        if (i === dev.controlqIndex) dev.processControlq(this.mem);
        else this.ctl.ring(this.ctl.devBell(i >> 1));
      },
    };
  }

  /**
   * Negotiate, set up every pair, DRIVER_OK, VQ_PAIRS_SET; then start the
   * driver workers (they stock the receiveqs) and the device workers.
   */
  async start(): Promise<void> {
    await this.driver.init();
    const { pairs } = this.opts;
    const drv = this.driver;
    this.ctl.set(CTL_ACTIVE_PAIRS, drv.activePairs);
    const ready: Promise<void>[] = [];
    for (let p = 0; p < drv.pairs; p++) {
      const s = drv.pairSetup(p);
      const data: DriverWorkerData = {
        pair: p, maxPairs: pairs, regions: [...this.mem.specs], rx: s.rx, tx: s.tx,
        rings: drv.rings, mrgRxbuf: drv.mrgRxbuf, hdrLen: drv.hdrLen,
        txBufAddr: s.txBufAddr, txBufSize: s.txBufSize, rxBufAddr: s.rxBufAddr, rxBufSize: s.rxBufSize,
        mode: this.opts.mode, budget: this.opts.budget, control: this.ctl.buffer, stats: this.drvStats.buffer,
        source: this.opts.source(p),
      };
      const w = this.spawn('driver-worker.js', data);
      ready.push(new Promise((res) => w.once('message', () => res())));
    }
    await Promise.all(ready);
    // Cross-pair inboxes: box[from][to]; box[p][p] is pair p's backlog.
    const box: SharedArrayBuffer[][] = [];
    for (let from = 0; from < drv.pairs; from++) {
      box.push([]);
      for (let to = 0; to < drv.pairs; to++) box[from].push(new FrameRing(this.opts.inboxBytes).buffer);
    }
    const afs = DeviceSteering.newAfsBuffer();
    const dev = this.device;
    for (let p = 0; p < drv.pairs; p++) {
      const { port1, port2 } = new MessageChannel();
      this.ports.push(port1);
      const data: DeviceWorkerData = {
        pair: p, maxPairs: pairs, regions: [...this.mem.specs], rx: dev.layouts[2 * p]!, tx: dev.layouts[2 * p + 1]!,
        rings: drv.rings, mrgRxbuf: drv.mrgRxbuf, hdrLen: dev.hdrLen,
        txOffload: (dev.features & VIRTIO_NET_F_CSUM) !== 0n, rxOffloads: rxOffloadBits(dev.features),
        mode: this.opts.mode, budget: this.opts.budget,
        control: this.ctl.buffer, stats: this.devStats.buffer, afs,
        inboxes: box.map((row) => row[p]), outboxes: box[p],
        netdev: this.opts.netdev, rss: rssOf(dev.ctrl), filter: dev.ctrl, port: port2,
        capture: this.opts.capture?.[p], strict: this.opts.strict,
      };
      this.spawn('device-worker.js', data, [port2]);
    }
    this.deviceStarted = true;
  }

  private spawn(file: string, data: DeviceWorkerData | DriverWorkerData, transfer: MessagePort[] = []): Worker {
    const w = new Worker(new URL(`./${file}`, import.meta.url), { workerData: data, transferList: transfer });
    w.on('message', (m: { type: string } & QueueErrorReport) => {
      if (m.type === 'queue-error') {
        const r = { side: m.side, queue: m.queue, code: m.code, message: m.message };
        this.errors.push(r);
        this.conformance?.recordRingError(m.code, m.message, m.queue, this.driver.rings.packed ? 'packed' : 'split', m.side);
        if (m.side === 'device' && m.queue >= 0) this.device.queueFailed(m.queue, new Error(m.message));
        this.emit('queue-error', r);
      }
    });
    w.on('error', (e) => {
      const r = { side: file.startsWith('device') ? 'device' as const : 'driver' as const, queue: -1, code: 'WORKER_CRASH', message: String(e?.stack ?? e) };
      this.errors.push(r);
      this.emit('queue-error', r);
    });
    this.workers.push(w);
    return w;
  }

  /**
   * Tell the device workers about a controlq change. {@link settled} resolves
   * once every device worker has applied it.
   */
  private pushControl(s: ControlState): void {
    this.ctl.set(CTL_ACTIVE_PAIRS, s.activePairs);
    const rss = rssOf(s);
    for (const port of this.ports) {
      port.postMessage({ type: 'rss', cfg: rss } satisfies DeviceWorkerMessage);
      port.postMessage({ type: 'filter', spec: s } satisfies DeviceWorkerMessage);
    }
    Atomics.add(this.ctl.words, CTL_GEN, 1);
    this.ctl.wakeAll();
  }

  /** Resolves when every device worker has applied the latest control change (RSS, filters, active pairs). */
  async settled(timeoutMs = 5000): Promise<void> {
    const gen = this.ctl.get(CTL_GEN);
    const deadline = Date.now() + timeoutMs;
    for (let p = 0; p < this.driver.pairs; p++) {
      while (this.deviceStarted && this.ctl.get(this.ctl.genAck(p)) !== gen) {
        if (Date.now() > deadline) throw new Error(`device worker ${p} did not apply control generation ${gen}`);
        this.ctl.wakeAll();
        await sleep(1);
      }
    }
  }

  /**
   * Change the active pair count at run time without reordering any flow:
   * stop TX on every pair, wait until every transmitq is drained and every
   * frame in flight was received, send VQ_PAIRS_SET, call `beforeResume`
   * (re-assign flows to pairs), then let the pairs pick up their new flows. `inFlight()` says how many frames are still
   * between TX and RX (0 when drained).
   */
  async setActivePairs(n: number, inFlight: () => number, beforeResume: () => void = () => {}, timeoutMs = 10000): Promise<void> {
    await changeActivePairs({
      ctl: this.ctl, pairs: this.driver.pairs, wake: () => this.ctl.wakeAll(), inFlight, beforeResume, timeoutMs,
      apply: async () => {
        await this.driver.setActivePairs(n);
        await this.settled();
      },
    });
  }

  /**
   * Link status as the device reports it (§5.1.4 VIRTIO_NET_S_LINK_UP): the
   * driver gets the configuration change notification and reads it.
   * Resolves once the driver has handled it; returns the status it read.
   */
  async setLink(up: boolean): Promise<boolean> {
    this.device.setLink(up);
    await this.configIrq.catch(() => undefined);
    return this.driver.linkUp;
  }

  /**
   * VIRTIO_NET_F_GUEST_ANNOUNCE (§5.1.6.5.4): the device sets
   * VIRTIO_NET_S_ANNOUNCE and notifies; the driver answers
   * VIRTIO_NET_CTRL_ANNOUNCE_ACK. Resolves true once acknowledged (the bit
   * is clear again), false when GUEST_ANNOUNCE was not negotiated.
   */
  async announce(): Promise<boolean> {
    if (!this.device.announce()) return false;
    await this.configIrq.catch(() => undefined);
    return !this.device.ctrl.announcePending;
  }

  /** Program RSS through the controlq (the driver side of §5.1.6.5.7.1). */
  async setRss(cmd: RssConfigCommand): Promise<void> {
    await this.driver.setRss(cmd);
    await this.settled();
  }

  /**
   * Stop new TX on every pair. Resolves once every driver worker has done
   * its last TX round (tx-stop.ts), so the TX counters are final; at most
   * `timeoutMs` later for a worker that does not answer.
   */
  async stopTx(timeoutMs = 2000): Promise<void> {
    await stopTxAcked(this.ctl, this.driver.pairs, () => this.ctl.wakeAll(), timeoutMs);
  }

  /** Stop every worker and wait for them to exit. */
  async stop(): Promise<void> {
    this.ctl.set(CTL_STOP, 1);
    this.ctl.wakeAll();
    const exits = this.workers.map((w) => new Promise<void>((res) => {
      const t = setTimeout(() => void w.terminate().then(() => res()), 3000);
      w.once('exit', () => { clearTimeout(t); res(); });
    }));
    await Promise.all(exits);
    for (const p of this.ports) p.close();
  }
}

function rssOf(s: ControlState): RssConfig | null {
  if (!s.rss || !s.rss.redirect) return null;
  return { key: s.rss.key, hashTypes: s.rss.hashTypes, indirectionTable: s.rss.indirectionTable, unclassifiedQueue: s.rss.unclassifiedQueue };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
