/**
 * Everything that lets an operator observe a running `serve`, `attach` or `loopback`,
 * started together: the control socket (always; `stats` registered), and,
 * when asked, the Prometheus endpoint and the live page (one HTTP server
 * when both name the same address).
 */
import { ControlServer } from '../control/server.js';
import { defaultControlPath, sweepStaleControlSockets } from '../control/client.js';
import { parseHostPort, startObserveServer, type ObserveServer } from '../http/server.js';
import type { Observed } from './snapshot.js';

export interface ObserveOptions {
  /** Control socket path (default {@link defaultControlPath}). */
  control?: string;
  /** HOST:PORT for /metrics. */
  metrics?: string;
  /** HOST:PORT for the live page. */
  http?: string;
}

export interface Observing {
  control: ControlServer;
  /** Bound URLs: metrics (…/metrics) and page (…/), when enabled. */
  metricsUrl?: string;
  pageUrl?: string;
  close(): Promise<void>;
}

/**
 * Start observing `src`. `say` gets one line per endpoint (the path or URL).
 * @throws Error (one line) when a socket or address cannot be bound; what was started is closed again.
 */
export async function startObserving(src: Observed, o: ObserveOptions, say: (line: string, detail?: Record<string, unknown>) => void): Promise<Observing> {
  const control = new ControlServer();
  control.register('stats', () => src.snapshot(), 'counters (xstats names), features, rings, memory, connection, uptime');
  const servers: ObserveServer[] = [];
  const result: Observing = {
    control,
    close: async () => {
      await Promise.all(servers.map((s) => s.close()));
      await control.close();
    },
  };
  try {
    // A process killed with SIGKILL leaves its default socket behind: the next one to start removes those.
    if (o.control === undefined) sweepStaleControlSockets();
    const path = o.control ?? defaultControlPath();
    await control.listen(path);
    say(`control socket: ${path} (virtio-mq stats --control ${path})`, { event: 'control', path });
    const m = o.metrics ? parseHostPort('--metrics', o.metrics) : null;
    const h = o.http ? parseHostPort('--http', o.http) : null;
    const shared = m && h && m.host === h.host && m.port === h.port && m.port !== 0;
    if (m) {
      const s = await startObserveServer(src, m, { metrics: true, page: !!shared });
      servers.push(s);
      result.metricsUrl = `${s.url}/metrics`;
      say(`metrics: ${result.metricsUrl}`, { event: 'metrics', url: result.metricsUrl });
      if (shared) result.pageUrl = `${s.url}/`;
    }
    if (h && !shared) {
      const s = await startObserveServer(src, h, { metrics: false, page: true });
      servers.push(s);
      result.pageUrl = `${s.url}/`;
    }
    if (result.pageUrl) say(`live page: ${result.pageUrl}`, { event: 'http', url: result.pageUrl });
  } catch (e) {
    await result.close();
    throw e;
  }
  return result;
}
