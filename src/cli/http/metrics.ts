/**
 * Prometheus metrics of a running `serve`, `attach` or `loopback` (prom-client): every
 * per-pair counter of the {@link Snapshot} as `virtio_mq_<name>_total`
 * labelled `pair` (0-based) and `direction` (rx = receiveqN, tx =
 * transmitqN; absent for pair-wide counters), the gauges (backlog, ring
 * fill, in flight, active pairs, connection), and prom-client's default
 * process metrics (CPU, memory, event loop lag, handles); capture frames
 * and capture drops per pair and direction, and with --strict the
 * violations per spec rule. Counters stay monotonic across front-end
 * reconnects (serve accumulates them).
 */
import { Registry, Counter, Gauge, collectDefaultMetrics } from 'prom-client';
import type { Observed, Snapshot } from '../observe/snapshot.js';

/** A registry whose every scrape reads one fresh snapshot of `src`. */
export function metricsRegistry(src: Observed): Registry {
  const reg = new Registry();
  reg.setDefaultLabels({ role: src.kind });
  collectDefaultMetrics({ register: reg, prefix: 'virtio_mq_' });
  // One snapshot per scrape, shared by every metric's collect().
  let snap: Snapshot | null = null;
  let snapAt = 0;
  const get = (): Snapshot => {
    const now = Date.now();
    if (!snap || now - snapAt > 100) {
      snap = src.snapshot();
      snapAt = now;
    }
    return snap;
  };
  const byName = new Map<string, typeof src.defs[number][]>();
  for (const d of src.defs) byName.set(d.name, [...(byName.get(d.name) ?? []), d]);
  for (const [name, defs] of byName) {
    const withDir = defs.some((d) => d.dir !== null);
    const labelNames = withDir ? ['pair', 'direction'] : ['pair'];
    const help = defs.map((d) => (d.dir ? `${d.dir}: ${d.help}` : d.help)).join('; ');
    const fill = (m: Counter<string> | Gauge<string>) => {
      const s = get();
      m.reset();
      for (let p = 0; p < s.pairs; p++)
        for (const d of defs) {
          const v = s.xstats[d.dir ? `${d.dir}_q${p}_${d.name}` : `q${p}_${d.name}`] ?? 0;
          const labels = d.dir ? { pair: String(p), direction: d.dir } : { pair: String(p) };
          if (m instanceof Counter) m.inc(labels, v);
          else m.set(labels, v);
        }
    };
    if (defs[0].gauge) new Gauge({ name: `virtio_mq_${name}`, help, labelNames, registers: [reg], collect() { fill(this); } });
    else new Counter({ name: `virtio_mq_${name}_total`, help, labelNames, registers: [reg], collect() { fill(this); } });
  }
  new Gauge({
    name: 'virtio_mq_ring_in_flight', help: 'buffers made available by the driver and not yet used by the device', labelNames: ['pair', 'direction'], registers: [reg],
    collect() {
      this.reset();
      for (const r of get().rings) if (r.inFlight !== undefined && r.inFlight !== null) this.set({ pair: String(r.pair), direction: r.dir }, r.inFlight);
    },
  });
  new Gauge({
    name: 'virtio_mq_ring_fill_ratio', help: 'in-flight buffers / queue size (0..1)', labelNames: ['pair', 'direction'], registers: [reg],
    collect() {
      this.reset();
      for (const r of get().rings) if (r.fill !== undefined) this.set({ pair: String(r.pair), direction: r.dir }, r.fill);
    },
  });
  new Gauge({ name: 'virtio_mq_queue_pairs', help: 'queue pairs offered', registers: [reg], collect() { this.set(get().pairs); } });
  new Gauge({ name: 'virtio_mq_active_queue_pairs', help: 'queue pairs in use now', registers: [reg], collect() { this.set(get().activePairs); } });
  new Gauge({ name: 'virtio_mq_connected', help: '1 while a front-end is connected', registers: [reg], collect() { this.set(get().connection.connectedSeconds === null ? 0 : 1); } });
  new Counter({ name: 'virtio_mq_connections_total', help: 'front-end connections so far', registers: [reg], collect() { this.reset(); this.inc(get().connection.sessions); } });
  new Gauge({ name: 'virtio_mq_uptime_seconds', help: 'seconds since the process started serving', registers: [reg], collect() { this.set(get().uptimeSeconds); } });
  new Gauge({
    name: 'virtio_mq_feature', help: 'negotiated features by spec name (1 = negotiated)', labelNames: ['name'], registers: [reg],
    collect() {
      this.reset();
      for (const f of get().features) this.set({ name: f }, 1);
    },
  });
  // Capture (transport/capture.ts): frames captured and capture drops per pair and direction, monotonic.
  const captureCounter = (name: string, help: string, rx: 'rxCaptured' | 'rxDrops', tx: 'txCaptured' | 'txDrops') => new Counter({
    name, help, labelNames: ['pair', 'direction'], registers: [reg],
    collect() {
      this.reset();
      for (const c of get().capture ?? []) {
        this.inc({ pair: String(c.pair), direction: 'rx' }, c[rx]);
        this.inc({ pair: String(c.pair), direction: 'tx' }, c[tx]);
      }
    },
  });
  captureCounter('virtio_mq_capture_frames_total', 'frames copied into the capture (rx: taken from receiveqN, tx: made available on transmitqN)', 'rxCaptured', 'txCaptured');
  captureCounter('virtio_mq_capture_drops_total', 'frames the capture dropped because its ring was full (the data path never waits for the capture)', 'rxDrops', 'txDrops');
  // --strict (virtio/conformance.ts): violations per rule; every rule appears once broken.
  new Gauge({ name: 'virtio_mq_strict', help: '1 when --strict conformance checking is on', registers: [reg], collect() { this.set(get().conformance ? 1 : 0); } });
  new Counter({
    name: 'virtio_mq_strict_violations_total', help: 'violations of the spec counted by --strict, per rule (id, section, the end that broke it)',
    labelNames: ['rule', 'section', 'by'], registers: [reg],
    collect() {
      this.reset();
      for (const r of get().conformance?.rules ?? []) this.inc({ rule: r.id, section: r.section, by: r.by }, r.count);
    },
  });
  return reg;
}
