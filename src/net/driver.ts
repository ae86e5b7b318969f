/**
 * The virtio-net driver's control plane (spec v1.4 §3.1 device
 * initialisation, §5.1.5, §5.1.6.5): negotiates features (falling back to
 * one queue pair when the device lacks VIRTIO_NET_F_MQ), lays out every
 * queue pair's rings and buffers in guest memory, sets DRIVER_OK, and only
 * then sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (§5.1.6.5.5: the device starts
 * with one pair). Per-pair data paths ({@link NetDriverPair}) run in workers
 * and are built from {@link NetDriver.pairSetup}.
 */
import { GuestAllocator } from '../virtio/alloc.js';
import {
  VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_STATUS_ACKNOWLEDGE,
  VIRTIO_STATUS_DRIVER, VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_FAILED, VIRTIO_STATUS_FEATURES_OK,
} from '../virtio/features.js';
import type { GuestMemory } from '../virtio/memory.js';
import type { DriverQueue, QueueLayout, RingFeatures, RingFormat } from '../virtio/queue.js';
import { contiguousQueueLayout, createDriverQueue, queueBytes, ringFeatures, ringFormat } from '../virtio/ring.js';
import type { VirtioTransport } from '../virtio/transport.js';
import { decodeNetConfig, VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP, type NetConfig } from './config.js';
import {
  encodeAnnounceAck, encodeMqVqPairsSet, encodeRssConfig, VIRTIO_NET_OK, type RssConfigCommand,
} from './ctrl.js';
import {
  sanitizeDriverFeatures, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_RSS, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_GUEST_ANNOUNCE,
} from './features.js';
import { netHdrSize } from './hdr.js';

export interface NetDriverOptions {
  /** Queue pairs wanted (capped by max_virtqueue_pairs). */
  pairs: number;
  /** Queue Size for receiveqs and transmitqs (capped by the device). Default 256. */
  queueSize?: number;
  /** Features the driver would like (negotiated against the offer, dependencies enforced). */
  wanted?: bigint;
  /**
   * Ring format (§2.7 split, §2.8 packed). Default 'split'. 'packed' needs
   * the device to offer VIRTIO_F_RING_PACKED (else init fails).
   */
  ring?: RingFormat;
  /** Ask for VIRTIO_F_IN_ORDER (used when the device offers it). Default false. */
  inOrder?: boolean;
  /** Bytes per TX buffer (header + frame). Default 2048. */
  txBufSize?: number;
  /** Bytes per RX buffer. Default 2048 (1514-byte frames + header). */
  rxBufSize?: number;
}

/** Features this driver implements. */
export const NET_DRIVER_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_RING_PACKED | VIRTIO_F_IN_ORDER | VIRTIO_NET_F_MAC | VIRTIO_NET_F_MTU |
  VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_CTRL_RX |
  VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS | VIRTIO_NET_F_GUEST_ANNOUNCE;

/** What a driver-side worker needs to run one pair. */
export interface PairSetup {
  pair: number;
  rx: QueueLayout;
  tx: QueueLayout;
  txBufAddr: number;
  txBufSize: number;
  rxBufAddr: number;
  rxBufSize: number;
}

/** Thrown when initialisation fails (§3.1.1: the driver sets FAILED). */
export class DriverInitError extends Error {}

export class NetDriver {
  features = 0n;
  config!: NetConfig;
  /** Pairs set up (rings exist for them). */
  pairs = 1;
  /** Pairs in use after VQ_PAIRS_SET. */
  activePairs = 1;
  hdrLen = 12;
  readonly queueSize: number;
  private readonly setups: PairSetup[] = [];
  private ctrlq: DriverQueue | null = null;
  private ctrlBuf = 0;
  private ctrlIndex = -1;
  private ctrlLock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly t: VirtioTransport,
    private readonly mem: GuestMemory,
    private readonly alloc: GuestAllocator,
    private readonly opts: NetDriverOptions,
  ) {
    this.queueSize = opts.queueSize ?? 256;
  }

  /** The negotiated ring features (format, event index, in-order, indirect). */
  get rings(): RingFeatures {
    return ringFeatures(this.features);
  }
  get eventIdx(): boolean {
    return (this.features & VIRTIO_F_EVENT_IDX) !== 0n;
  }
  get indirect(): boolean {
    return (this.features & VIRTIO_F_INDIRECT_DESC) !== 0n;
  }
  get mrgRxbuf(): boolean {
    return (this.features & VIRTIO_NET_F_MRG_RXBUF) !== 0n;
  }
  get hasMq(): boolean {
    return (this.features & VIRTIO_NET_F_MQ) !== 0n;
  }
  get hasRss(): boolean {
    return (this.features & VIRTIO_NET_F_RSS) !== 0n;
  }

  /**
   * §3.1.1 steps 1-8, then VQ_PAIRS_SET. Every queue pair's rings are
   * allocated and handed to the device; buffers are allocated per pair.
   * @throws DriverInitError when the device refuses FEATURES_OK or a control command fails.
   */
  async init(): Promise<void> {
    const t = this.t;
    t.setStatus(0);
    t.setStatus(VIRTIO_STATUS_ACKNOWLEDGE);
    t.setStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    const offered = t.deviceFeatures();
    let wanted = this.opts.wanted ?? NET_DRIVER_FEATURES;
    if ((this.opts.ring ?? 'split') === 'split') wanted &= ~VIRTIO_F_RING_PACKED;
    if (!this.opts.inOrder) wanted &= ~VIRTIO_F_IN_ORDER;
    const f = sanitizeDriverFeatures(offered, wanted);
    if ((f & VIRTIO_F_VERSION_1) === 0n) this.failInit('device does not offer VIRTIO_F_VERSION_1');
    if (this.opts.ring === 'packed' && (f & VIRTIO_F_RING_PACKED) === 0n) this.failInit('device does not offer VIRTIO_F_RING_PACKED');
    t.setDriverFeatures(f);
    t.setStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    if (!(t.getStatus() & VIRTIO_STATUS_FEATURES_OK)) this.failInit('device did not accept the features (FEATURES_OK cleared)');
    this.features = f;
    this.hdrLen = netHdrSize(f);
    this.config = decodeNetConfig(t.readConfig(), f);
    // Without MQ the device has exactly one pair (§5.1.5), whatever we asked for: fall back.
    const max = this.hasMq ? this.config.maxVirtqueuePairs : 1;
    this.pairs = Math.max(1, Math.min(this.opts.pairs, max));
    const txBufSize = this.opts.txBufSize ?? 2048;
    const rxBufSize = this.opts.rxBufSize ?? 2048;
    const format = ringFormat(f);
    const layout = (size: number) => contiguousQueueLayout(format, this.alloc.alloc(queueBytes(format, size), 4096), size);
    for (let p = 0; p < this.pairs; p++) {
      const rx = layout(Math.min(this.queueSize, t.queueMaxSize(2 * p)));
      const tx = layout(Math.min(this.queueSize, t.queueMaxSize(2 * p + 1)));
      const rxSize = rx.size, txSize = tx.size;
      const rxBufAddr = this.alloc.alloc(rxSize * rxBufSize, 64);
      const txBufAddr = this.alloc.alloc(txSize * txBufSize, 64);
      this.setups.push({ pair: p, rx, tx, rxBufAddr, rxBufSize, txBufAddr, txBufSize });
      t.setQueue(2 * p, rx);
      t.setQueue(2 * p + 1, tx);
    }
    if (this.features & VIRTIO_NET_F_CTRL_VQ) {
      this.ctrlIndex = 2 * (this.hasMq ? this.config.maxVirtqueuePairs : 1);
      const ctrl = layout(Math.min(64, t.queueMaxSize(this.ctrlIndex)));
      this.ctrlq = createDriverQueue(this.mem, ctrl, { ...this.rings, index: this.ctrlIndex });
      this.ctrlBuf = this.alloc.alloc(4096, 64);
      t.setQueue(this.ctrlIndex, ctrl);
    }
    t.setStatus(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    // §5.1.6.5.5: only after DRIVER_OK, and only with MQ; the device starts with one pair.
    if (this.hasMq && this.pairs > 1) await this.setActivePairs(this.pairs);
  }

  /** Ring and buffer addresses of pair `p` (for its worker). */
  pairSetup(p: number): PairSetup {
    return this.setups[p];
  }

  /**
   * VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (§5.1.6.5.5). Callers that must keep flows
   * in order quiesce TX first (the local transport does).
   * @throws RangeError outside 1..pairs; DriverInitError when the device answers ERR.
   */
  async setActivePairs(n: number): Promise<void> {
    if (!(n >= 1 && n <= this.pairs)) throw new RangeError(`active pairs ${n} outside 1..${this.pairs}`);
    if (!this.hasMq) throw new RangeError('VIRTIO_NET_F_MQ not negotiated');
    const ack = await this.command(encodeMqVqPairsSet(n));
    if (ack !== VIRTIO_NET_OK) throw new DriverInitError(`device refused VQ_PAIRS_SET ${n}`);
    this.activePairs = n;
  }

  /** VIRTIO_NET_S_LINK_UP in the config read last (§5.1.4; always up without VIRTIO_NET_F_STATUS). */
  get linkUp(): boolean {
    return (this.config.status & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /**
   * The configuration change notification (§2.5): read the config space
   * again (link status), and when the device asks for an announcement
   * (VIRTIO_NET_S_ANNOUNCE, with VIRTIO_NET_F_GUEST_ANNOUNCE) acknowledge it
   * with VIRTIO_NET_CTRL_ANNOUNCE_ACK (§5.1.6.5.4), which clears the bit.
   * (This driver sends no gratuitous frames of its own: it has no IP
   * address; the acknowledgement is what the device waits for.)
   * Returns the link status and whether an announcement was acknowledged.
   * @throws Error when the controlq does not answer.
   */
  async configChanged(): Promise<{ linkUp: boolean; announced: boolean }> {
    this.config = decodeNetConfig(this.t.readConfig(), this.features);
    let announced = false;
    if ((this.features & VIRTIO_NET_F_GUEST_ANNOUNCE) && (this.config.status & VIRTIO_NET_S_ANNOUNCE) && this.ctrlq) {
      announced = (await this.command(encodeAnnounceAck())) === VIRTIO_NET_OK;
    }
    return { linkUp: this.linkUp, announced };
  }

  /** VIRTIO_NET_CTRL_MQ_RSS_CONFIG (§5.1.6.5.7.1). @throws DriverInitError when refused. */
  async setRss(cfg: RssConfigCommand): Promise<void> {
    if (!this.hasRss) throw new RangeError('VIRTIO_NET_F_RSS not negotiated');
    const ack = await this.command(encodeRssConfig(cfg));
    if (ack !== VIRTIO_NET_OK) throw new DriverInitError('device refused RSS_CONFIG');
    this.activePairs = cfg.maxTxVq;
  }

  /**
   * Send one controlq command (class, command, data as encoded by ctrl.ts)
   * and wait for the device's ack byte (§5.1.6.5): command bytes in a
   * device-readable descriptor, one device-writable ack byte after them.
   * Returns the ack (VIRTIO_NET_OK or VIRTIO_NET_ERR).
   * @throws Error when there is no controlq or the device does not answer in `timeoutMs`.
   */
  command(cmd: Uint8Array, timeoutMs = 5000): Promise<number> {
    // Serialise: one command buffer, one chain in flight (Linux holds the ctrl lock likewise).
    const run = this.ctrlLock.then(() => this.commandNow(cmd, timeoutMs));
    this.ctrlLock = run.catch(() => undefined);
    return run;
  }

  private async commandNow(cmd: Uint8Array, timeoutMs: number): Promise<number> {
    const q = this.ctrlq;
    if (!q) throw new Error('no controlq (VIRTIO_NET_F_CTRL_VQ not negotiated)');
    if (cmd.length > 4000) throw new RangeError('controlq command too long');
    const ackAddr = this.ctrlBuf + 4064;
    this.mem.write(this.ctrlBuf, cmd);
    this.mem.write(ackAddr, Uint8Array.of(0xff));
    if (q.add([{ addr: this.ctrlBuf, len: cmd.length, writable: false }, { addr: ackAddr, len: 1, writable: true }], 0) < 0)
      throw new Error('controlq full: a previous command is still outstanding');
    q.publish();
    this.t.notify(this.ctrlIndex);
    const deadline = Date.now() + timeoutMs;
    while (q.usedPending() === 0) {
      if (Date.now() > deadline) throw new Error('controlq: device did not answer');
      await new Promise((r) => setImmediate(r));
    }
    q.popUsed();
    return this.mem.read(ackAddr, 1)[0];
  }

  private failInit(msg: string): never {
    this.t.setStatus(this.t.getStatus() | VIRTIO_STATUS_FAILED);
    throw new DriverInitError(msg);
  }
}
