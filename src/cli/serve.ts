/**
 * `virtio-mq serve`: run the vhost-user back-end until SIGINT/SIGTERM, with a
 * live per-queue view (pps, Mbit/s, drops, kicks, calls) once a second.
 */
import { VhostUserBackend } from '../transport/vhost-user/backend.js';
import { DevStat } from '../net/stats.js';
import { openNetdev } from './netdev-spec.js';
import { parseRss } from './rss-spec.js';

export interface ServeOptions {
  socket: string;
  client: boolean;
  queues: number;
  queueSize: number;
  netdev: string;
  /** RSS for frames from the netdev: true (defaults) or `key=HEX,types=a+b,table=N`. */
  rss?: string | boolean;
  mode: 'busy' | 'notify';
  /** MTU (config mtu; the TAP's MTU). Default 1500. */
  mtu?: number;
  json: boolean;
}

export async function runServe(o: ServeOptions): Promise<void> {
  const log = (line: string, detail?: Record<string, unknown>) =>
    o.json ? console.log(JSON.stringify({ time: new Date().toISOString(), log: line, ...detail })) : console.error(`${new Date().toISOString()} ${line}`);
  const rss = o.rss === undefined || o.rss === false ? null : parseRss(o.rss === true ? '' : o.rss, o.queues);
  const netdev = openNetdev(o.netdev, o.queues, 12, o.mtu);
  const backend = new VhostUserBackend({
    socket: o.socket, client: o.client, pairs: o.queues, maxQueueSize: o.queueSize, netdev: netdev.spec, mode: o.mode, rss, log, mtu: o.mtu,
  });
  log(`serving ${o.queues} queue pairs on ${o.socket}${o.client ? ' (client)' : ''}, netdev ${netdev.describe}, ${o.mode} mode${rss ? ', RSS' : ''}`);
  await backend.start();
  const s = backend.stats;
  let last = s.snapshot();
  let lastT = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    const snap = s.snapshot();
    const dt = (now - lastT) / 1000;
    const rate = (p: number, k: number) => (snap[p * s.width + k] - last[p * s.width + k]) / dt;
    const rows = Array.from({ length: o.queues }, (_, p) => ({
      pair: p,
      rxPps: rate(p, DevStat.rxPackets), txPps: rate(p, DevStat.txPackets),
      rxMbps: (rate(p, DevStat.rxBytes) * 8) / 1e6, txMbps: (rate(p, DevStat.txBytes) * 8) / 1e6,
      drops: snap[p * s.width + DevStat.rxDrops], kicks: snap[p * s.width + DevStat.kicks], calls: snap[p * s.width + DevStat.notifySent],
      errors: snap[p * s.width + DevStat.errors],
    }));
    last = snap;
    lastT = now;
    if (!backend.session) return;
    if (o.json) {
      console.log(JSON.stringify({ time: new Date().toISOString(), pairs: rows }));
      return;
    }
    let out = `${'pair'.padStart(4)} ${'RX kpps'.padStart(9)} ${'TX kpps'.padStart(9)} ${'RX Mb/s'.padStart(9)} ${'TX Mb/s'.padStart(9)} ${'drops'.padStart(8)} ${'kicks'.padStart(9)} ${'calls'.padStart(9)}\n`;
    for (const r of rows)
      out += `${String(r.pair).padStart(4)} ${(r.rxPps / 1e3).toFixed(1).padStart(9)} ${(r.txPps / 1e3).toFixed(1).padStart(9)} ${r.rxMbps.toFixed(1).padStart(9)} ${r.txMbps.toFixed(1).padStart(9)} ${String(r.drops).padStart(8)} ${String(r.kicks).padStart(9)} ${String(r.calls).padStart(9)}${r.errors ? '  QUEUE ERROR' : ''}\n`;
    process.stdout.write(out);
  }, 1000);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log(`${sig}: shutting down`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  clearInterval(timer);
  await backend.stop();
  netdev.close();
}
