/**
 * The operator's view of a running `attach` (the vhost-user front-end): the
 * driver's counters per queue pair under the same xstats names as serve and
 * loopback (`rx_qN` is receiveqN, `tx_qN` is transmitqN), the features
 * negotiated with the back-end, the connection, every ring as the driver
 * sees it in guest memory, and the one guest memory region (the memfd the
 * front-end shares with SET_MEM_TABLE).
 */
import { DRV_STAT_COUNT, DrvStat } from '../../net/stats.js';
import { featureNames, VIRTIO_FEATURE_NAMES } from '../../virtio/features.js';
import { NET_FEATURE_NAMES } from '../../net/features.js';
import { ringFormat } from '../../virtio/ring.js';
import { viewRing } from '../../virtio/ring-view.js';
import type { VhostUserFrontend } from '../../transport/vhost-user/front-end.js';
import { buildXstats, extrasSnapshot, queueName, type ObserveExtras, type Observed, type RingEntry, type Snapshot, type StatDef } from './snapshot.js';

/** Driver-side statistics of attach (kept in the front-end's StatsBlock). */
export const ATTACH_STATS: readonly StatDef[] = [
  { dir: 'rx', name: 'packets', side: 'dev', index: DrvStat.rxPackets, help: 'frames the driver took from receiveqN' },
  { dir: 'rx', name: 'bytes', side: 'dev', index: DrvStat.rxBytes, help: 'frame bytes the driver took from receiveqN (without virtio_net_hdr)' },
  { dir: 'rx', name: 'bad', side: 'dev', index: DrvStat.rxBad, help: 'frames the driver found altered or unknown' },
  { dir: 'rx', name: 'gaps', side: 'dev', index: DrvStat.rxGaps, help: 'frames missing from a flow (lost by the back-end or while none was connected)' },
  { dir: 'rx', name: 'out_of_order', side: 'dev', index: DrvStat.rxOutOfOrder, help: 'frames that came back out of their flow order' },
  { dir: 'tx', name: 'packets', side: 'dev', index: DrvStat.txPackets, help: 'frames the driver made available on transmitqN' },
  { dir: 'tx', name: 'bytes', side: 'dev', index: DrvStat.txBytes, help: 'frame bytes made available on transmitqN (without virtio_net_hdr)' },
  { dir: 'tx', name: 'ring_full', side: 'dev', index: DrvStat.txRingFull, help: 'times the driver found transmitqN without a free descriptor' },
  { dir: null, name: 'kicks', side: 'dev', index: DrvStat.kicksSent, help: 'available-buffer notifications (kick eventfd writes) sent' },
  { dir: null, name: 'notifications_suppressed', side: 'dev', index: DrvStat.kicksSuppressed, help: 'available-buffer notifications the back-end suppressed (EVENT_IDX, flags)' },
  { dir: null, name: 'calls', side: 'dev', index: DrvStat.interrupts, help: 'used-buffer notifications (call eventfds) the driver woke up on' },
  { dir: null, name: 'errors', side: 'dev', index: DrvStat.errors, help: 'ring errors the driver saw (the pair stops at the first)' },
];

export class AttachObserved implements Observed {
  readonly kind = 'attach';
  readonly defs = ATTACH_STATS;
  readonly pairs: number;
  private readonly started = Date.now();
  private connectedAt: number | null = null;
  private stopping = false;

  constructor(private readonly fe: VhostUserFrontend, private readonly extras: ObserveExtras = {}) {
    this.pairs = fe.stats.pairs;
    if (fe.connected) this.connectedAt = Date.now();
    fe.on('connected', () => (this.connectedAt = Date.now()));
    fe.on('disconnected', () => (this.connectedAt = null));
  }

  stop(): void {
    this.stopping = true;
  }

  snapshot(): Snapshot {
    const now = Date.now();
    const fe = this.fe;
    const drv = fe.driver;
    const features = fe.negotiated ?? 0n;
    const rings: RingEntry[] = [];
    for (let p = 0; drv && p < drv.pairs; p++) {
      const setup = drv.pairSetup(p);
      for (const [q, layout] of [[2 * p, setup.rx], [2 * p + 1, setup.tx]] as const) {
        // A front-end cannot see where the back-end reads: split rings show the indexes in guest
        // memory (avail->idx, used->idx, in flight between them); packed rings only their size.
        const v = layout.format === 'split' ? viewRing(fe.mem, layout, { avail: 0, used: 0 }) : null;
        rings.push({
          queue: q, name: queueName(q), pair: p, dir: q & 1 ? 'tx' : 'rx', started: true, enabled: p < drv.activePairs, running: fe.connected && !this.stopping,
          format: layout.format, size: layout.size, availIdx: v?.availIdx ?? null, usedIdx: v?.usedIdx ?? null,
          pending: null, inFlight: v?.inFlight ?? null, fill: v?.fill ?? 0,
        });
      }
    }
    const state = this.stopping ? 'stopping' : fe.connected ? 'running' : 'connecting';
    return {
      kind: 'attach', pid: process.pid, time: new Date(now).toISOString(), uptimeSeconds: (now - this.started) / 1000,
      connection: { state, sessions: fe.connections, connectedSeconds: this.connectedAt === null ? null : (now - this.connectedAt) / 1000 },
      features: featureNames(features, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES),
      ringFormat: features ? ringFormat(features) : null,
      pairs: this.pairs, activePairs: drv?.activePairs ?? 0,
      xstats: buildXstats(this.defs, this.pairs, fe.stats.counters, DRV_STAT_COUNT),
      rings,
      memory: fe.mem ? fe.mem.specs.map((r) => ({ guestAddr: r.guestPhysAddr, size: r.size })) : [],
      ...extrasSnapshot(this.extras),
    };
  }
}
