/**
 * Strict conformance, virtio-net rules (spec v1.4 draft §5.1, and the
 * device initialization rule of §3.1.1 they build on): the controlq
 * commands and notifications a device sees from a driver that breaks them.
 * Ring rules and the monitor are in src/virtio/conformance.ts.
 *
 * Checked by the device's control plane (the main thread), never on a data
 * path: each controlq command once, through {@link NetDevice.onCommand}.
 *
 * The other direction (attach --strict, the driver checks the device):
 * `num_buffers` rules (§5.1.9.4.1), from the NumBuffersError a driver's
 * receiveq stops on (driver-pair.ts), recorded with the ring rules a driver
 * checks by {@link recordDeviceError}.
 */
import type { ConformanceMonitor, SpecRule } from '../virtio/conformance.js';
import { VIRTIO_STATUS_DRIVER_OK } from '../virtio/features.js';
import { ringFormat } from '../virtio/ring.js';
import type { RingFormat } from '../virtio/queue.js';
import { VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET } from './ctrl.js';
import type { NetDevice } from './device.js';

const AUTO_RX = 'Driver Requirements: Automatic receive steering in multiqueue mode';
const INCOMING = 'Device Requirements: Processing of Incoming Packets';

export const NET_RULES = {
  notifyBeforeDriverOk: {
    id: 'init.notify-before-driver-ok', section: '3.1.1', title: 'Driver Requirements: Device Initialization', by: 'driver', normative: true,
    words: 'The driver MUST NOT send any buffer available notifications to the device before setting DRIVER_OK.',
  },
  vqPairsRange: {
    id: 'net.vq-pairs-range', section: '5.1.9.5.6.1', title: AUTO_RX, by: 'driver', normative: true,
    words: 'The driver MUST NOT request a virtqueue_pairs of 0 or greater than max_virtqueue_pairs in the device configuration space.',
  },
  vqPairsUnconfigured: {
    id: 'net.vq-pairs-unconfigured', section: '5.1.9.5.6.1', title: AUTO_RX, by: 'driver', normative: true,
    words: 'The driver MUST configure the virtqueues before enabling them with the VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET command.',
  },
  // ---- broken by the device, checked by the driver (attach --strict) ----
  numBuffersBeyond: {
    id: 'net.num-buffers', section: '5.1.9.4.1', title: INCOMING, by: 'device', normative: true,
    words: 'If VIRTIO_NET_F_MRG_RXBUF has been negotiated, the device MUST set num_buffers to indicate the number of buffers the packet (including the header) is spread over.',
  },
  numBuffersTogether: {
    id: 'net.num-buffers-together', section: '5.1.9.4.1', title: INCOMING, by: 'device', normative: true,
    words: 'The device MUST use all buffers used by a single receive packet together, such that at least num_buffers are observed by driver as used.',
  },
} as const satisfies Record<string, SpecRule>;

/** The device rule a driver-side virtio-net error (driver-pair.ts NumBuffersError) breaks; null for other codes. */
export function netDeviceRuleFor(code: string): SpecRule | null {
  if (code === 'NUM_BUFFERS_BEYOND_AVAILABLE') return NET_RULES.numBuffersBeyond;
  if (code === 'NUM_BUFFERS_NOT_USED_TOGETHER') return NET_RULES.numBuffersTogether;
  return null;
}

/**
 * Record an error a driver's queue pair stopped on (attach --strict: the
 * device broke a rule): virtio-net rules first, then the ring rules
 * (USED_ID_INVALID, USED_LEN_INVALID, USED_IDX_JUMP). Returns the rule, or
 * null when the code is no device rule's (nothing is counted then).
 */
export function recordDeviceError(monitor: ConformanceMonitor, code: string, message: string, queue: number, format: RingFormat): SpecRule | null {
  const net = netDeviceRuleFor(code);
  if (!net) return monitor.recordRingError(code, message, queue, format, 'driver');
  monitor.record(net, queue, message.replace(/^queue -?\d+: /, ''));
  return net;
}

/** A rule broken and the offending values. */
export interface NetViolation {
  rule: SpecRule;
  values: string;
}

/**
 * The rules one controlq command breaks (`cmd` = class, command, data as the
 * device read them), given the device status and configuration when it
 * was processed. `configured(q)` says whether virtqueue q has its addresses.
 */
export function checkControlCommand(cmd: Uint8Array, status: number, maxPairs: number, configured: (q: number) => boolean): NetViolation[] {
  const out: NetViolation[] = [];
  const name = cmd.length >= 2 && cmd[0] === VIRTIO_NET_CTRL_MQ && cmd[1] === VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET ? 'VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET' : `controlq command class ${cmd[0] ?? '?'} command ${cmd[1] ?? '?'}`;
  if ((status & VIRTIO_STATUS_DRIVER_OK) === 0)
    out.push({ rule: NET_RULES.notifyBeforeDriverOk, values: `${name} made available with device status 0x${status.toString(16)} (DRIVER_OK not set)` });
  if (name === 'VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET' && cmd.length === 4) {
    const pairs = cmd[2] | (cmd[3] << 8);
    if (pairs === 0 || pairs > maxPairs) {
      out.push({ rule: NET_RULES.vqPairsRange, values: `virtqueue_pairs ${pairs}, max_virtqueue_pairs ${maxPairs}` });
    } else {
      const missing: string[] = [];
      for (let p = 0; p < pairs; p++) {
        if (!configured(2 * p)) missing.push(`receiveq${p + 1}`);
        if (!configured(2 * p + 1)) missing.push(`transmitq${p + 1}`);
      }
      if (missing.length > 0) out.push({ rule: NET_RULES.vqPairsUnconfigured, values: `virtqueue_pairs ${pairs}, not configured: ${missing.join(' ')}` });
    }
  }
  return out;
}

/**
 * Check every controlq command `device` processes (and its controlq's ring
 * errors) into `monitor`. Only the control plane calls this; the data
 * queues' ring errors come from the workers (ConformanceMonitor.recordRingError).
 */
export function attachNetConformance(device: NetDevice, monitor: ConformanceMonitor): void {
  device.onCommand = (cmd) => {
    for (const v of checkControlCommand(cmd, device.status, device.maxPairs, (q) => device.layouts[q] != null)) monitor.record(v.rule, device.controlqIndex, v.values);
  };
  device.on('queue-error', (q, e) => {
    if (q !== device.controlqIndex) return;
    const code = (e as { code?: string }).code;
    if (code) monitor.recordRingError(code, e.message, q, ringFormat(device.features));
  });
}

/** A buffer available notification for `queue` (a data queue): a violation before DRIVER_OK (§3.1.1). */
export function checkNotify(monitor: ConformanceMonitor, status: number, queue: number): void {
  if ((status & VIRTIO_STATUS_DRIVER_OK) === 0)
    monitor.record(NET_RULES.notifyBeforeDriverOk, queue, `notification for queue ${queue} with device status 0x${status.toString(16)} (DRIVER_OK not set)`);
}
