/**
 * The operator's view of a running `loopback`: device and driver counters
 * of the local transport, the negotiated features, every ring (device
 * positions as its worker published them, driver indexes from guest
 * memory) and the one guest memory region.
 */
import type { LocalNet } from '../../transport/local/local-net.js';
import { DEV_STAT_COUNT, DRV_STAT_COUNT, DevStat } from '../../net/stats.js';
import { featureNames, VIRTIO_FEATURE_NAMES } from '../../virtio/features.js';
import { NET_FEATURE_NAMES } from '../../net/features.js';
import { ringFormat } from '../../virtio/ring.js';
import { viewRing } from '../../virtio/ring-view.js';
import { DEV_STATS, DRV_STATS, buildXstats, extrasSnapshot, queueName, type ObserveExtras, type Observed, type RingEntry, type Snapshot } from './snapshot.js';

export class LoopbackObserved implements Observed {
  readonly kind = 'loopback';
  readonly defs = [...DEV_STATS, ...DRV_STATS];
  readonly pairs: number;
  private readonly started = Date.now();
  private stopping = false;

  constructor(private readonly net: LocalNet, private readonly extras: ObserveExtras = {}) {
    this.pairs = net.devStats.pairs;
  }

  stop(): void {
    this.stopping = true;
  }

  snapshot(): Snapshot {
    const now = Date.now();
    const net = this.net;
    const dev = net.devStats.counters;
    const features = net.driver.features;
    const rings: RingEntry[] = [];
    for (let q = 0; q < 2 * this.pairs; q++) {
      const layout = net.device.layouts[q];
      if (!layout) continue;
      const b = (q >> 1) * DEV_STAT_COUNT;
      const pos = q & 1 ? { avail: dev[b + DevStat.txAvailPos], used: dev[b + DevStat.txUsedPos] } : { avail: dev[b + DevStat.rxAvailPos], used: dev[b + DevStat.rxUsedPos] };
      rings.push({ queue: q, name: queueName(q), pair: q >> 1, dir: q & 1 ? 'tx' : 'rx', started: true, enabled: true, running: !this.stopping, ...viewRing(net.mem, layout, pos) });
    }
    return {
      kind: 'loopback', pid: process.pid, time: new Date(now).toISOString(), uptimeSeconds: (now - this.started) / 1000,
      connection: { state: this.stopping ? 'stopping' : 'running', sessions: 1, connectedSeconds: (now - this.started) / 1000 },
      features: featureNames(features, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES),
      ringFormat: features ? ringFormat(features) : null,
      pairs: this.pairs, activePairs: net.driver.activePairs,
      xstats: buildXstats(this.defs, this.pairs, dev, DEV_STAT_COUNT, net.drvStats.counters, DRV_STAT_COUNT),
      rings,
      memory: net.mem.specs.map((r) => ({ guestAddr: r.guestPhysAddr, size: r.size })),
      ...extrasSnapshot({ conformance: net.conformance, ...this.extras }),
    };
  }
}
