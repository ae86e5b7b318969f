/**
 * The HTTP side of observing a running `serve` or `loopback`: one node:http
 * server per address, serving (as enabled) `/metrics` (Prometheus text
 * format, prom-client), and the live page: `/` (page.ts), `/events`
 * (server-sent events, one `stats` event a second), `/stats.json` (one
 * snapshot), `/uplot.js` and `/uplot.css` (from node_modules). `--metrics`
 * and `--http` given the same address share one server.
 *
 * Each `stats` event is JSON: `{ t (ms since the epoch), kind, pid, state,
 * uptimeSeconds, features[], ringFormat, pairs, activePairs, rxPackets,
 * txPackets, per: [{ pair, rxPps, txPps, rxBps, txBps (bit/s), drops,
 * dropsPerSecond, rxFill, txFill (0..1) }] }`.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Observed, Snapshot } from '../observe/snapshot.js';
import { metricsRegistry } from './metrics.js';
import { PAGE_HTML } from './page.js';

/** HOST:PORT ([v6]:PORT allowed; PORT 0 picks a free port). @throws Error with a one-line reason. */
export function parseHostPort(option: string, v: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${option} must be HOST:PORT (for example 127.0.0.1:9100, [::1]:9100; port 0..65535)`);
  return { host: m[1] ?? m[2], port };
}

export interface ObserveServer {
  /** http://HOST:PORT of the bound server. */
  url: string;
  close(): Promise<void>;
}

/** Rates per pair from two snapshots `dt` seconds apart. */
export function liveEvent(s: Snapshot, prev: Snapshot | null, dt: number): Record<string, unknown> {
  const x = s.xstats, px = prev?.xstats;
  const rate = (k: string) => (px && dt > 0 ? Math.max(0, ((x[k] ?? 0) - (px[k] ?? 0)) / dt) : 0);
  const fill = (p: number, dir: string) => s.rings.find((r) => r.pair === p && r.dir === dir)?.fill ?? 0;
  let rxPackets = 0, txPackets = 0;
  const per = Array.from({ length: s.pairs }, (_, p) => {
    rxPackets += x[`rx_q${p}_packets`] ?? 0;
    txPackets += x[`tx_q${p}_packets`] ?? 0;
    return {
      pair: p, rxPps: rate(`rx_q${p}_packets`), txPps: rate(`tx_q${p}_packets`),
      rxBps: rate(`rx_q${p}_bytes`) * 8, txBps: rate(`tx_q${p}_bytes`) * 8,
      drops: x[`rx_q${p}_drops`] ?? 0, dropsPerSecond: rate(`rx_q${p}_drops`),
      rxFill: fill(p, 'rx'), txFill: fill(p, 'tx'),
    };
  });
  return {
    t: Date.parse(s.time), kind: s.kind, pid: s.pid, state: s.connection.state, uptimeSeconds: s.uptimeSeconds, features: s.features,
    ringFormat: s.ringFormat, pairs: s.pairs, activePairs: s.activePairs, rxPackets, txPackets, per,
  };
}

const require = createRequire(import.meta.url);
let assets: { js: string; css: string } | null = null;
function uplot(): { js: string; css: string } {
  assets ??= { js: readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'), css: readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8') };
  return assets;
}

/**
 * Serve `src` at `host:port`: `/metrics` when `metrics`, the live page when `page`.
 * @throws Error (one line) when the address cannot be bound.
 */
export async function startObserveServer(src: Observed, addr: { host: string; port: number }, what: { metrics: boolean; page: boolean }): Promise<ObserveServer> {
  const registry: Registry | null = what.metrics ? metricsRegistry(src) : null;
  const clients = new Set<http.ServerResponse>();
  let last: Record<string, unknown> | null = null;
  let prev: Snapshot | null = null;
  let prevAt = 0;
  const tick = () => {
    const now = Date.now();
    const s = src.snapshot();
    last = liveEvent(s, prev, (now - prevAt) / 1000);
    prev = s;
    prevAt = now;
    const line = `event: stats\ndata: ${JSON.stringify(last)}\n\n`;
    for (const c of clients) c.write(line);
  };
  const timer = what.page ? setInterval(tick, 1000) : null;
  timer?.unref();
  if (what.page) tick();

  const server = http.createServer(async (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    try {
      if (path === '/metrics' && registry) {
        const body = await registry.metrics();
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(body);
      } else if (what.page && path === '/') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(PAGE_HTML);
      } else if (what.page && path === '/uplot.js') {
        res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'max-age=3600' });
        res.end(uplot().js);
      } else if (what.page && path === '/uplot.css') {
        res.writeHead(200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'max-age=3600' });
        res.end(uplot().css);
      } else if (what.page && path === '/favicon.ico') {
        res.writeHead(204);
        res.end();
      } else if (what.page && path === '/stats.json') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(src.snapshot()));
      } else if (what.page && path === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        res.write('retry: 1000\n\n');
        if (last) res.write(`event: stats\ndata: ${JSON.stringify(last)}\n\n`);
        clients.add(res);
        req.on('close', () => clients.delete(res));
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end(`not found; try ${[registry ? '/metrics' : '', what.page ? '/' : ''].filter(Boolean).join(' or ')}\n`);
      }
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`${e instanceof Error ? e.message : String(e)}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${addr.host}:${addr.port}: ${e.code ?? e.message}`)));
    server.listen(addr.port, addr.host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    url: `http://${host}:${a.port}`,
    close: async () => {
      if (timer) clearInterval(timer);
      for (const c of clients) c.end();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
