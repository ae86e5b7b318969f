/**
 * What an operator sees of a running `serve`, `attach` or `loopback`: one
 * {@link Snapshot}, the same for `virtio-mq stats`, `/metrics` and the live
 * page. Counters are named as DPDK names its xstats (`rx_q0_packets`,
 * `tx_q2_bytes`), from the device's side of each virtqueue: `rx_qN` is
 * receiveqN (frames the device gives the driver), `tx_qN` is transmitqN
 * (frames the driver gives the device); `qN_` counters belong to the pair.
 */
import { DevStat, DrvStat } from '../../net/stats.js';
import type { RingView } from '../../virtio/ring-view.js';
import type { QueueCapture } from '../../transport/capture.js';
import type { ConformanceMonitor } from '../../virtio/conformance.js';

/** One counter (or gauge) of a queue pair: where it is kept, its xstats name and its help text. */
export interface StatDef {
  /** rx, tx, or null for the pair as a whole. */
  dir: 'rx' | 'tx' | null;
  /** xstats suffix and Prometheus name stem. */
  name: string;
  /** Which block and index holds it. */
  side: 'dev' | 'drv';
  index: number;
  gauge?: boolean;
  help: string;
}

/** Device-side statistics (serve and loopback). */
export const DEV_STATS: readonly StatDef[] = [
  { dir: 'rx', name: 'packets', side: 'dev', index: DevStat.rxPackets, help: 'frames placed in receiveqN' },
  { dir: 'rx', name: 'bytes', side: 'dev', index: DevStat.rxBytes, help: 'frame bytes placed in receiveqN (without virtio_net_hdr)' },
  { dir: 'rx', name: 'buffers', side: 'dev', index: DevStat.rxBuffers, help: 'receiveqN buffers used (more than frames with MRG_RXBUF)' },
  { dir: 'rx', name: 'drops', side: 'dev', index: DevStat.rxDrops, help: 'frames dropped: no receiveqN buffer and the backlog full' },
  { dir: 'rx', name: 'filtered', side: 'dev', index: DevStat.rxFiltered, help: 'frames the RX filter (promiscuous, MAC, VLAN tables) refused' },
  { dir: 'rx', name: 'ring_full', side: 'dev', index: DevStat.rxRingFull, help: 'frames that found receiveqN without a free buffer and waited in the backlog' },
  { dir: 'rx', name: 'backlog', side: 'dev', index: DevStat.backlog, gauge: true, help: 'frames waiting for receiveqN buffers now' },
  { dir: 'tx', name: 'packets', side: 'dev', index: DevStat.txPackets, help: 'frames consumed from transmitqN' },
  { dir: 'tx', name: 'bytes', side: 'dev', index: DevStat.txBytes, help: 'frame bytes consumed from transmitqN (without virtio_net_hdr)' },
  { dir: null, name: 'kicks', side: 'dev', index: DevStat.kicks, help: 'available-buffer notifications (kicks) the device woke up on' },
  { dir: null, name: 'calls', side: 'dev', index: DevStat.notifySent, help: 'used-buffer notifications (calls, interrupts) sent to the driver' },
  { dir: null, name: 'notifications_suppressed', side: 'dev', index: DevStat.notifySuppressed, help: 'used-buffer notifications the driver suppressed (EVENT_IDX, flags)' },
  { dir: null, name: 'errors', side: 'dev', index: DevStat.errors, help: 'malformed chains (the queue stops at the first)' },
];

/** Driver-side statistics loopback adds (its driver runs in the same process). */
export const DRV_STATS: readonly StatDef[] = [
  { dir: 'tx', name: 'ring_full', side: 'drv', index: DrvStat.txRingFull, help: 'times the driver found transmitqN without a free descriptor' },
  { dir: 'rx', name: 'bad', side: 'drv', index: DrvStat.rxBad, help: 'frames the driver found altered or unknown' },
];

/** The xstats name of `def` for pair `p`: `rx_q0_packets`, `q3_kicks`. */
export function xstatName(def: StatDef, p: number): string {
  return def.dir ? `${def.dir}_q${p}_${def.name}` : `q${p}_${def.name}`;
}

/** One virtqueue's state, as `stats` shows it. */
export interface RingEntry extends Partial<RingView> {
  /** Virtqueue index (receiveqN = 2N, transmitqN = 2N+1, counted from 0). */
  queue: number;
  /** The spec's name: receiveq1, transmitq1, ... (§5.1.2). */
  name: string;
  pair: number;
  dir: 'rx' | 'tx';
  /** vhost-user ring state (vhost-user.rst "Ring states"); loopback rings are always both. */
  started: boolean;
  enabled: boolean;
  /** Its pair's worker runs. */
  running: boolean;
}

export interface Snapshot {
  kind: 'serve' | 'loopback' | 'attach';
  pid: number;
  /** ISO 8601 time of the snapshot. */
  time: string;
  uptimeSeconds: number;
  connection: {
    /** serve: listening, connecting (client mode), connected (no pair running yet), running; loopback: running. */
    state: 'listening' | 'connecting' | 'connected' | 'running' | 'stopping';
    /** Front-end connections so far (loopback: 1). */
    sessions: number;
    /** Seconds since the current front-end connected (null without one). */
    connectedSeconds: number | null;
    /** The vhost-user socket (serve). */
    socket?: string;
  };
  /** Negotiated features by their spec names (empty before negotiation). */
  features: string[];
  /** Ring format negotiated (VIRTIO_F_RING_PACKED), null before negotiation. */
  ringFormat: 'split' | 'packed' | null;
  /** Queue pairs offered / existing. */
  pairs: number;
  /** Queue pairs in use now (serve: pairs whose worker runs; loopback: VQ_PAIRS_SET). */
  activePairs: number;
  /** Counters by xstats name; monotonic across front-end reconnects (gauges excepted). */
  xstats: Record<string, number>;
  rings: RingEntry[];
  /** Guest memory regions (guest physical address, bytes, the front-end's user address). */
  memory: { guestAddr: number; size: number; userAddr?: number }[];
  /**
   * Capture counters per queue pair since the process started (monotonic;
   * transport/capture.ts): frames captured and frames the capture dropped
   * (its ring full), by direction. Absent when the process cannot capture.
   */
  capture?: CaptureStat[];
  /** With --strict: violations of the spec counted so far, in total and per rule (virtio/conformance.ts). */
  conformance?: ConformanceStat;
}

export interface CaptureStat {
  pair: number;
  rxCaptured: number;
  txCaptured: number;
  rxDrops: number;
  txDrops: number;
}

export interface ConformanceStat {
  violations: number;
  rules: { id: string; section: string; title: string; by: 'driver' | 'device'; count: number }[];
}

/** What a process observes besides its queues: its capture rings and, with --strict, its conformance monitor. */
export interface ObserveExtras {
  capture?: QueueCapture | null;
  conformance?: ConformanceMonitor | null;
}

/** The snapshot fields {@link ObserveExtras} give. */
export function extrasSnapshot(e: ObserveExtras): Pick<Snapshot, 'capture' | 'conformance'> {
  const out: Pick<Snapshot, 'capture' | 'conformance'> = {};
  if (e.capture) out.capture = e.capture.counters();
  if (e.conformance) {
    const rep = e.conformance.report();
    out.conformance = { violations: rep.violations, rules: rep.rules.map((r) => ({ id: r.id, section: r.section, title: r.title, by: r.by, count: r.count })) };
  }
  return out;
}

/** Anything a snapshot can be taken of: a running serve, attach or loopback. */
export interface Observed {
  readonly kind: 'serve' | 'loopback' | 'attach';
  readonly pairs: number;
  /** The stat definitions its xstats carry (in order). */
  readonly defs: readonly StatDef[];
  snapshot(): Snapshot;
}

/** xstats of `pairs` pairs from the device counters `dev` (and driver counters `drv`), `width` doubles per pair each. */
export function buildXstats(defs: readonly StatDef[], pairs: number, dev: Float64Array, devWidth: number, drv?: Float64Array, drvWidth = 0): Record<string, number> {
  const out: Record<string, number> = {};
  for (let p = 0; p < pairs; p++)
    for (const d of defs) out[xstatName(d, p)] = d.side === 'dev' ? dev[p * devWidth + d.index] : drv ? drv[p * drvWidth + d.index] : 0;
  return out;
}

/** The spec's name of virtqueue `q` (§5.1.2: receiveq1 = 0, transmitq1 = 1, ...). */
export function queueName(q: number): string {
  return `${q & 1 ? 'transmitq' : 'receiveq'}${(q >> 1) + 1}`;
}
