/**
 * `virtio-mq stats`: read a running `serve`, `attach` or `loopback` through its
 * control socket and print its counters (xstats names), negotiated
 * features, ring states, memory regions, connection state and uptime; with
 * `--watch`, again every second (with per-second rates); with `--json`, the
 * snapshot as JSON (one line per snapshot with --watch).
 */
import { ControlClient, findControlPath } from './control/client.js';
import type { Snapshot } from './observe/snapshot.js';

export interface StatsOptions {
  control?: string;
  watch: boolean;
  json: boolean;
  /** Seconds between snapshots with --watch. */
  interval: number;
}

export async function runStats(o: StatsOptions): Promise<void> {
  const path = o.control ?? findControlPath();
  const c = await ControlClient.connect(path);
  try {
    let prev: { s: Snapshot; at: number } | null = null;
    let stop = false;
    const onSig = () => {
      stop = true;
      c.close();
    };
    if (o.watch) process.once('SIGINT', onSig);
    for (;;) {
      let s: Snapshot;
      try {
        s = (await c.request('stats')) as Snapshot;
      } catch (e) {
        if (stop) return;
        throw e;
      }
      const at = Date.now();
      if (o.json) process.stdout.write(o.watch ? `${JSON.stringify(s)}\n` : `${JSON.stringify(s, null, 2)}\n`);
      else process.stdout.write(`${o.watch ? '\x1b[2J\x1b[H' : ''}${formatSnapshot(s, prev ? { s: prev.s, dt: (at - prev.at) / 1000 } : null)}`);
      if (!o.watch) return;
      prev = { s, at };
      await new Promise((r) => setTimeout(r, o.interval * 1000));
      if (stop) return;
    }
  } finally {
    c.close();
  }
}

const num = (n: number | null | undefined) => (n === null || n === undefined ? '-' : String(n));

/** The human-readable form of a snapshot (rates when `prev` is given). */
export function formatSnapshot(s: Snapshot, prev: { s: Snapshot; dt: number } | null): string {
  const c = s.connection;
  let out = `virtio-mq ${s.kind} (pid ${s.pid}), up ${s.uptimeSeconds.toFixed(0)} s, ${c.state}`;
  if (c.socket) out += ` on ${c.socket}`;
  out += `, ${c.sessions} front-end connection${c.sessions === 1 ? '' : 's'}${c.connectedSeconds !== null ? ` (this one ${c.connectedSeconds.toFixed(0)} s)` : ''}\n`;
  out += `queue pairs: ${s.activePairs} active of ${s.pairs}${s.ringFormat ? `, ${s.ringFormat} rings` : ''}\n`;
  out += `features: ${s.features.length ? s.features.join(' ') : '(not negotiated)'}\n`;
  if (s.memory.length) out += `memory: ${s.memory.map((m) => `[0x${m.guestAddr.toString(16)}, +${m.size >= 1 << 20 ? `${(m.size / 2 ** 20).toFixed(0)} MiB` : `${(m.size / 1024).toFixed(0)} KiB`}]`).join(' ')}\n`;
  // Counters: one row per pair, one column per counter suffix.
  const cols = new Map<string, string>(); // column title -> xstat pattern with {p}
  for (const k of Object.keys(s.xstats)) {
    const m = /^(?:(rx|tx)_)?q(\d+)_(\w+)$/.exec(k);
    if (m && m[2] === '0') cols.set(`${m[1] ? `${m[1]}_` : ''}${m[3]}`, k.replace(/q0_/, 'q{p}_'));
  }
  const titles = [...cols.keys()];
  const w = titles.map((t) => Math.max(t.length, 8));
  out += `\n${'pair'.padStart(4)} ${titles.map((t, i) => t.padStart(w[i])).join(' ')}\n`;
  for (let p = 0; p < s.pairs; p++)
    out += `${String(p).padStart(4)} ${titles.map((t, i) => String(s.xstats[cols.get(t)!.replace('{p}', String(p))] ?? 0).padStart(w[i])).join(' ')}\n`;
  if (prev && prev.dt > 0) {
    out += `\n${'pair'.padStart(4)} ${'RX pkt/s'.padStart(10)} ${'TX pkt/s'.padStart(10)} ${'RX Mbit/s'.padStart(10)} ${'TX Mbit/s'.padStart(10)}\n`;
    const r = (k: string) => ((s.xstats[k] ?? 0) - (prev.s.xstats[k] ?? 0)) / prev.dt;
    for (let p = 0; p < s.pairs; p++)
      out += `${String(p).padStart(4)} ${r(`rx_q${p}_packets`).toFixed(0).padStart(10)} ${r(`tx_q${p}_packets`).toFixed(0).padStart(10)} ${((r(`rx_q${p}_bytes`) * 8) / 1e6).toFixed(1).padStart(10)} ${((r(`tx_q${p}_bytes`) * 8) / 1e6).toFixed(1).padStart(10)}\n`;
  }
  if (s.rings.length) {
    out += `\n${'ring'.padEnd(11)} ${'size'.padStart(6)} ${'state'.padEnd(16)} ${'avail'.padStart(12)} ${'used'.padStart(12)} ${'pending'.padStart(8)} ${'in flight'.padStart(9)} ${'fill'.padStart(5)}\n`;
    for (const r of s.rings) {
      const state = r.running ? 'running' : `${r.started ? 'started' : 'stopped'},${r.enabled ? 'enabled' : 'disabled'}`;
      const avail = r.format === 'packed' ? `${num(r.availPos)} w${num(r.availWrap)}` : `${num(r.lastAvailIdx)}/${num(r.availIdx)}`;
      const used = r.format === 'packed' ? `${num(r.usedPos)} w${num(r.usedWrap)}` : num(r.usedIdx);
      out += `${r.name.padEnd(11)} ${num(r.size).padStart(6)} ${state.padEnd(16)} ${avail.padStart(12)} ${used.padStart(12)} ${num(r.pending).padStart(8)} ${num(r.inFlight).padStart(9)} ${`${((r.fill ?? 0) * 100).toFixed(0)}%`.padStart(5)}\n`;
    }
    out += '(split avail: the device\'s next index / the driver\'s avail->idx; packed: position and wrap counter)\n';
  }
  if (s.capture) {
    const cap = s.capture.filter((c) => c.rxCaptured + c.txCaptured + c.rxDrops + c.txDrops > 0);
    if (cap.length) {
      out += `\n${'pair'.padStart(4)} ${'capture rx'.padStart(11)} ${'rx drops'.padStart(9)} ${'capture tx'.padStart(11)} ${'tx drops'.padStart(9)}\n`;
      for (const c of cap) out += `${String(c.pair).padStart(4)} ${String(c.rxCaptured).padStart(11)} ${String(c.rxDrops).padStart(9)} ${String(c.txCaptured).padStart(11)} ${String(c.txDrops).padStart(9)}\n`;
    }
  }
  if (s.conformance) {
    const c = s.conformance;
    out += `\nstrict: ${c.violations} violation${c.violations === 1 ? '' : 's'} of the spec\n`;
    for (const r of c.rules) out += `  §${r.section} ${r.title} (${r.id}, by the ${r.by}): ${r.count}\n`;
  }
  return out;
}
