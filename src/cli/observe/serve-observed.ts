/**
 * The operator's view of a running `serve`: device counters accumulated
 * over every front-end connection (the back-end zeroes its counters for each
 * new session; the totals of ended sessions are kept here, so counters never
 * go backwards), the current session's features, rings and memory table.
 */
import type { VhostUserBackend } from '../../transport/vhost-user/backend.js';
import type { Session } from '../../transport/vhost-user/session.js';
import { DEV_STAT_COUNT, DevStat } from '../../net/stats.js';
import { ringFormat } from '../../virtio/ring.js';
import { viewRing } from '../../virtio/ring-view.js';
import { DEV_STATS, buildXstats, extrasSnapshot, queueName, type ObserveExtras, type Observed, type RingEntry, type Snapshot } from './snapshot.js';

export class ServeObserved implements Observed {
  readonly kind = 'serve';
  readonly defs = DEV_STATS;
  readonly pairs: number;
  private readonly base: Float64Array;
  private readonly started = Date.now();
  private sessions = 0;
  private connectedAt: number | null = null;
  /** The live counters belong to an ended session (already in `base`) until the next one starts. */
  private ended = true;
  private stopping = false;
  private readonly gauges = new Set(DEV_STATS.filter((d) => d.gauge).map((d) => d.index));
  /** Sessions whose negotiated features were logged (once per connection). */
  private logged = new WeakSet<Session>();

  constructor(
    private readonly backend: VhostUserBackend,
    private readonly o: { socket: string; client: boolean; log?: (line: string, detail?: Record<string, unknown>) => void } & ObserveExtras,
  ) {
    this.pairs = backend.stats.pairs;
    this.base = new Float64Array(this.pairs * DEV_STAT_COUNT);
    backend.on('session', () => {
      this.sessions++;
      this.connectedAt = Date.now();
      this.ended = false;
    });
    backend.on('session-end', () => {
      // Workers have stopped: the counters are final. Gauges are not totals.
      const live = backend.stats.counters;
      for (let i = 0; i < this.base.length; i++) if (!this.gauges.has(i % DEV_STAT_COUNT) && i % DEV_STAT_COUNT < DevStat.rxAvailPos) this.base[i] += live[i];
      this.ended = true;
      this.connectedAt = null;
    });
  }

  /** Mark the process as shutting down (connection state `stopping`). */
  stop(): void {
    this.stopping = true;
  }

  /**
   * Log once per front-end connection, when its first queue pair runs, the
   * negotiated features (serve calls this once a second).
   */
  tick(): void {
    const s = this.backend.session;
    if (!s || this.logged.has(s) || s.runningPairs === 0) return;
    this.logged.add(s);
    const features = s.featureNames();
    this.o.log?.(`vhost-user: front-end ${this.sessions} running: ${s.runningPairs} of ${this.pairs} queue pairs, ${ringFormat(s.features)} rings, features ${features.join(' ')}`,
      { event: 'connection', session: this.sessions, pairs: s.runningPairs, ring: ringFormat(s.features), features });
  }

  snapshot(): Snapshot {
    const now = Date.now();
    const live = this.backend.stats.counters;
    const total = new Float64Array(this.base.length);
    for (let i = 0; i < total.length; i++) {
      const k = i % DEV_STAT_COUNT;
      total[i] = this.gauges.has(k) ? (this.ended ? 0 : live[i]) : this.base[i] + (this.ended ? 0 : live[i]);
    }
    const session = this.ended ? null : this.backend.session;
    const view = session?.inspect();
    const rings: RingEntry[] = [];
    if (session && view) {
      const format = ringFormat(session.features);
      for (const v of view.vrings) {
        const pair = v.index >> 1;
        const b = pair * DEV_STAT_COUNT;
        const dev = !v.running ? v.base
          : v.index & 1 ? { avail: live[b + DevStat.txAvailPos], used: live[b + DevStat.txUsedPos] }
          : { avail: live[b + DevStat.rxAvailPos], used: live[b + DevStat.rxUsedPos] };
        const entry: RingEntry = { queue: v.index, name: queueName(v.index), pair, dir: v.index & 1 ? 'tx' : 'rx', started: v.started, enabled: v.enabled, running: v.running, size: v.num, format };
        if (v.layout && view.mem) Object.assign(entry, viewRing(view.mem, v.layout, dev));
        rings.push(entry);
      }
    }
    const state = this.stopping ? 'stopping' : session ? (view && view.runningPairs > 0 ? 'running' : 'connected') : this.o.client ? 'connecting' : 'listening';
    return {
      kind: 'serve', pid: process.pid, time: new Date(now).toISOString(), uptimeSeconds: (now - this.started) / 1000,
      connection: { state, sessions: this.sessions, connectedSeconds: this.connectedAt === null ? null : (now - this.connectedAt) / 1000, socket: this.o.socket },
      features: session ? session.featureNames() : [],
      ringFormat: session && session.features ? ringFormat(session.features) : null,
      pairs: this.pairs, activePairs: view?.runningPairs ?? 0,
      xstats: buildXstats(this.defs, this.pairs, total, DEV_STAT_COUNT),
      rings,
      memory: view?.regions ?? [],
      ...extrasSnapshot(this.o),
    };
  }
}
