/**
 * The virtio-net device's control plane (spec v1.4 §5.1): feature offer and
 * acceptance, device status, config space, queue addresses, and the controlq
 * (§5.1.6.5). The data path of each queue pair is a {@link NetDevicePair}
 * in that pair's worker; this object tells the workers what changed through
 * the 'control' event.
 *
 * Queue numbering (§5.1.2): receiveqN = 2(N-1), transmitqN = 2(N-1)+1,
 * controlq = 2 × max_virtqueue_pairs.
 */
import { EventEmitter } from 'node:events';
import {
  VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET, VIRTIO_STATUS_DRIVER_OK, VIRTIO_STATUS_FEATURES_OK,
} from '../virtio/features.js';
import type { GuestMemory } from '../virtio/memory.js';
import { DescChain } from '../virtio/chain.js';
import { bytesOf } from '../virtio/copy.js';
import type { DeviceQueue, QueueLayout } from '../virtio/queue.js';
import { createDeviceQueue, queueSizeProblem, ringFeatures, ringFormat } from '../virtio/ring.js';
import { defaultNetConfig, encodeNetConfig, VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP, type NetConfig } from './config.js';
import { applyControlCommand, createControlState, VIRTIO_NET_ERR, type ControlState } from './ctrl.js';
import {
  VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_STATUS, VIRTIO_NET_F_GUEST_ANNOUNCE, validateNetFeatures,
} from './features.js';
import { netHdrSize } from './hdr.js';
import { NET_OFFLOAD_FEATURES } from './offloads.js';

export interface NetDeviceOptions {
  /** max_virtqueue_pairs (1..0x8000). */
  maxPairs: number;
  mac?: Uint8Array;
  mtu?: number;
  /** Largest Queue Size accepted (≤ 32768; split rings need a power of two). Default 1024. */
  maxQueueSize?: number;
  /** Replace the default feature offer. */
  features?: bigint;
}

/** Features offered by default: what this device implements. */
export const NET_DEVICE_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_RING_PACKED | VIRTIO_F_IN_ORDER |
  VIRTIO_NET_F_MAC | VIRTIO_NET_F_MTU | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MRG_RXBUF |
  VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_CTRL_RX | VIRTIO_NET_F_CTRL_VLAN | VIRTIO_NET_F_CTRL_MAC_ADDR |
  VIRTIO_NET_F_GUEST_ANNOUNCE | VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS | NET_OFFLOAD_FEATURES;

export interface NetDeviceEvents {
  /** The controlq changed state (RX filters, RSS, active pairs). */
  control: [ControlState];
  /** A controlq command was refused (VIRTIO_NET_ERR). */
  'control-error': [string];
  /** A queue was stopped by a malformed chain; status has DEVICE_NEEDS_RESET. */
  'queue-error': [number, Error];
  'driver-ok': [];
  reset: [];
  /** The config space changed (link status, an announcement asked): the transport raises the configuration change notification (§4.1.4.5 ISR bit 1 under PCI; §2.5). */
  'config-change': [];
}

export class NetDevice extends EventEmitter<NetDeviceEvents> {
  readonly offered: bigint;
  readonly maxPairs: number;
  readonly maxQueueSize: number;
  readonly config: NetConfig;
  features = 0n;
  status = 0;
  ctrl: ControlState;
  readonly layouts: (QueueLayout | null)[];
  private ctrlq: DeviceQueue | null = null;
  private ctrlChain: DescChain | null = null;
  /** Sees every controlq command (class, command, data) before it is applied: strict conformance checks (net/conformance.ts). */
  onCommand: ((cmd: Uint8Array) => void) | null = null;

  constructor(opts: NetDeviceOptions) {
    super();
    if (!(opts.maxPairs >= 1 && opts.maxPairs <= 0x8000)) throw new RangeError('maxPairs must be 1..32768');
    this.maxPairs = opts.maxPairs;
    this.maxQueueSize = opts.maxQueueSize ?? 1024;
    let offered = opts.features ?? NET_DEVICE_FEATURES;
    if (opts.maxPairs === 1) offered &= ~(VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS);
    this.offered = offered;
    this.config = defaultNetConfig({
      mac: opts.mac ?? Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56),
      maxVirtqueuePairs: opts.maxPairs,
      mtu: opts.mtu ?? 1500,
    });
    this.ctrl = createControlState(0n, this.config);
    this.layouts = new Array(this.numQueues).fill(null);
  }

  /** receiveqs + transmitqs + the controlq (if CTRL_VQ is offered). */
  get numQueues(): number {
    return 2 * this.maxPairs + ((this.offered & VIRTIO_NET_F_CTRL_VQ) !== 0n ? 1 : 0);
  }

  get controlqIndex(): number {
    return 2 * this.maxPairs;
  }

  /** virtio_net_hdr size for the negotiated features (§5.1.6.1). */
  get hdrLen(): number {
    return netHdrSize(this.features);
  }

  /** Config space bytes (§5.1.4), little-endian. */
  readConfig(): Uint8Array {
    return encodeNetConfig(this.config);
  }

  /**
   * Accept the driver's features unless they are not a subset of the offer
   * or break a dependency (§5.1.3.1); then FEATURES_OK will not stick (§3.1.1).
   */
  setDriverFeatures(f: bigint): boolean {
    if ((f & ~this.offered) !== 0n || validateNetFeatures(f).length > 0 || (f & VIRTIO_F_VERSION_1) === 0n) {
      this.features = -1n;
      return false;
    }
    this.features = f;
    return true;
  }

  /** Status write (§2.1, §3.1.1). Writing 0 resets the device. */
  setStatus(s: number): void {
    if (s === 0) {
      this.reset();
      return;
    }
    if ((s & VIRTIO_STATUS_FEATURES_OK) && !(this.status & VIRTIO_STATUS_FEATURES_OK)) {
      if (this.features < 0n) s &= ~VIRTIO_STATUS_FEATURES_OK;
      else this.ctrl = createControlState(this.features, this.config);
    }
    const wasOk = (this.status & VIRTIO_STATUS_DRIVER_OK) !== 0;
    this.status = s | (this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
    if (!wasOk && (s & VIRTIO_STATUS_DRIVER_OK)) this.emit('driver-ok');
  }

  /**
   * Link status (§5.1.4 VIRTIO_NET_S_LINK_UP in `status`): a change updates
   * the config space and emits 'config-change'. Returns whether it changed.
   */
  setLink(up: boolean): boolean {
    const s = up ? this.config.status | VIRTIO_NET_S_LINK_UP : this.config.status & ~VIRTIO_NET_S_LINK_UP;
    if (s === this.config.status) return false;
    this.config.status = s;
    this.emit('config-change');
    return true;
  }

  /**
   * Ask the driver to announce itself (§5.1.6.5.4, after a migration or a
   * reconnect): with VIRTIO_NET_F_GUEST_ANNOUNCE (and STATUS) negotiated,
   * VIRTIO_NET_S_ANNOUNCE is set in `status` until the driver answers
   * VIRTIO_NET_CTRL_ANNOUNCE_ACK, and 'config-change' is emitted. Returns
   * false (nothing asked) when the feature was not negotiated.
   */
  announce(): boolean {
    if (this.features <= 0n || !(this.features & VIRTIO_NET_F_GUEST_ANNOUNCE) || !(this.features & VIRTIO_NET_F_STATUS)) return false;
    this.config.status |= VIRTIO_NET_S_ANNOUNCE;
    this.ctrl.announcePending = true;
    this.emit('config-change');
    return true;
  }

  reset(): void {
    this.config.status &= ~VIRTIO_NET_S_ANNOUNCE;
    this.status = 0;
    this.features = 0n;
    this.layouts.fill(null);
    this.ctrlq = null;
    this.ctrl = createControlState(0n, this.config);
    this.emit('reset');
  }

  /**
   * Queue address registers for queue `index` (§4.1.4.3); the ring format
   * must be the negotiated one (VIRTIO_F_RING_PACKED).
   * @throws RangeError for a bad index, size or format.
   */
  setQueue(index: number, layout: QueueLayout): void {
    if (!(index >= 0 && index < this.numQueues)) throw new RangeError(`queue ${index} does not exist (device has ${this.numQueues})`);
    const problem = queueSizeProblem(layout.format, layout.size, this.maxQueueSize);
    if (problem) throw new RangeError(problem);
    if (this.features > 0n && layout.format !== ringFormat(this.features))
      throw new RangeError(`queue ${index}: a ${layout.format} ring, but the negotiated format is ${ringFormat(this.features)}`);
    this.layouts[index] = { ...layout };
    if (index === this.controlqIndex) this.ctrlq = null;
  }

  /** Report a stopped queue: DEVICE_NEEDS_RESET (§2.1.2) and a 'queue-error' event. */
  queueFailed(index: number, err: Error): void {
    this.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
    this.emit('queue-error', index, err);
  }

  /**
   * Serve every pending controlq command (§5.1.6.5): read the command from
   * the device-readable buffers, apply it, write the ack byte into the first
   * device-writable byte. A malformed chain stops the controlq (reported);
   * a bad command only gets VIRTIO_NET_ERR. Returns commands served.
   */
  processControlq(mem: GuestMemory): number {
    const layout = this.layouts[this.controlqIndex];
    if (!layout || this.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) return 0;
    let q = this.ctrlq;
    let chain = this.ctrlChain;
    try {
      if (!q || !chain) {
        q = this.ctrlq = createDeviceQueue(mem, layout, { ...ringFeatures(this.features), index: this.controlqIndex });
        chain = this.ctrlChain = new DescChain(mem);
      }
    } catch (e) {
      this.queueFailed(this.controlqIndex, e instanceof Error ? e : new Error(String(e)));
      return 0;
    }
    let served = 0;
    try {
      while (q.pending() > 0) {
        q.pop(chain);
        if (chain.readableBytes > 65536) throw new RangeError(`controlq command of ${chain.readableBytes} bytes`);
        const buf = bytesOf(new ArrayBuffer((chain.readableBytes + 3) & ~3));
        chain.readTo(buf, 0, 0, chain.readableBytes);
        const cmd = buf.u8.subarray(0, chain.readableBytes);
        this.onCommand?.(cmd);
        let ack: number = VIRTIO_NET_ERR;
        if (chain.writableBytes < 1) {
          this.emit('control-error', 'controlq command without a device-writable ack byte');
        } else {
          const res = applyControlCommand(this.ctrl, this.features, this.config, cmd);
          ack = res.ack;
          if (!this.ctrl.announcePending) this.config.status &= ~VIRTIO_NET_S_ANNOUNCE; // ANNOUNCE_ACK
          if (res.error) this.emit('control-error', res.error);
          if (res.changed) {
            this.config.mac = this.ctrl.mac.slice();
            this.emit('control', this.ctrl);
          }
          chain.writeByte(0, ack);
        }
        q.pushUsed(chain.id, chain.writableBytes < 1 ? 0 : 1, chain.descs);
        served++;
      }
    } catch (e) {
      // A malformed chain (VirtioError) or an unexpected fault: stop the controlq only.
      this.queueFailed(this.controlqIndex, e instanceof Error ? e : new Error(String(e)));
    }
    q.publish();
    return served;
  }
}
