/**
 * `virtio-mq serve`: run the vhost-user back-end until SIGINT/SIGTERM, with a
 * live per-queue view (pps, Mbit/s, drops, kicks, calls) once a second.
 */
import { VhostUserBackend } from '../transport/vhost-user/backend.js';
import { DevStat } from '../net/stats.js';
import { openNetdev } from './netdev-spec.js';
import { parseRss } from './rss-spec.js';
import { makeLogger, type LogLevel } from './log.js';
import { startObserving, type ObserveOptions } from './observe/setup.js';
import { registerCaptureCommands } from './observe/capture-command.js';
import { ServeObserved } from './observe/serve-observed.js';
import { ConformanceMonitor, formatConformance, formatViolation } from '../virtio/conformance.js';
import { QueueCapture, describeCapture, type CaptureDirection } from '../transport/capture.js';

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
  logLevel?: LogLevel;
  /** Control socket path (default under $XDG_RUNTIME_DIR or the temp directory). */
  control?: string;
  /** HOST:PORT for /metrics and the live page. */
  metrics?: string;
  http?: string;
  /** Write a pcapng capture of the queues here (transport/capture.ts). */
  capture?: string;
  captureQueue?: number;
  captureDir?: CaptureDirection;
  captureSnaplen?: number;
  /** Strict conformance: report every spec rule the front-end's driver breaks (virtio/conformance.ts). */
  strict?: boolean;
  /** Group id the socket is shared with (0660), resolved from --group. */
  group?: number;
  /** --config-notify: offer BACKEND_REQ + CONFIG, CONFIG_CHANGE_MSG on link changes. */
  configNotify?: boolean;
}

export async function runServe(o: ServeOptions): Promise<void> {
  const { log } = makeLogger({ json: o.json, level: o.logLevel });
  const rss = o.rss === undefined || o.rss === false ? null : parseRss(o.rss === true ? '' : o.rss, o.queues);
  const netdev = openNetdev(o.netdev, o.queues, 12, o.mtu);
  const capture = new QueueCapture(o.queues);
  // Across front-end connections: one report for the process.
  const conformance = o.strict ? new ConformanceMonitor((r) => log(formatViolation(r), { event: 'conformance', rule: r.id, section: r.section, queue: r.first.queue, values: r.first.values })) : null;
  const backend = new VhostUserBackend({
    socket: o.socket, client: o.client, group: o.group, pairs: o.queues, maxQueueSize: o.queueSize, netdev: netdev.spec, mode: o.mode, rss, log, mtu: o.mtu,
    capture: capture.buffers, strict: o.strict, netdevWatch: netdev.watch, configNotify: o.configNotify,
    onQueueError: conformance ? (queue, code, message, format) => void conformance.recordRingError(code, message, queue, format) : undefined,
  });
  // A TAP's carrier follows whether a front-end runs the device: off before the first connection and after a
  // disconnect (NO-CARRIER: routes and bridges react), on once the front-end's first queue pair starts.
  let carrierFailed = false;
  const carrier = (on: boolean, why: string) => {
    if (!netdev.carrier || carrierFailed) return;
    try {
      netdev.carrier(on);
      log(`netdev: carrier ${on ? 'on' : 'off'} (${why})`, { event: 'carrier', on });
    } catch (e) {
      // A kernel without TUNSETCARRIER (before 4.19: EINVAL): stop trying. Otherwise (the TAP gone meanwhile)
      // the next change tries again, and a re-opened TAP gets the carrier last asked for.
      const code = (e as { code?: string }).code;
      carrierFailed = code === 'EINVAL' || code === 'ENOTTY';
      log(`netdev: cannot set the TAP's carrier ${on ? 'on' : 'off'} (${(e as Error).message})${carrierFailed ? '; it stays up whether a front-end runs or not' : ''}`);
    }
  };
  carrier(false, 'no front-end');
  backend.on('running', () => carrier(true, 'a front-end runs the device'));
  backend.on('session-end', () => carrier(false, 'no front-end'));
  if (o.capture) {
    capture.start(o.capture, { queue: o.captureQueue, dir: o.captureDir, snaplen: o.captureSnaplen });
    log(`capturing ${o.captureQueue === undefined ? 'every queue pair' : `queue pair ${o.captureQueue}`} (${o.captureDir ?? 'both'}) to ${o.capture}`);
  }
  log(`serving ${o.queues} queue pairs on ${o.socket}${o.client ? ' (client)' : ''}, netdev ${netdev.describe}, ${o.mode} mode${rss ? ', RSS' : ''}`);
  // Observable before the back-end starts (with --client, start() waits for the first connection).
  const observed = new ServeObserved(backend, { socket: o.socket, client: o.client, log, capture, conformance });
  const observing = await startObserving(observed, { control: o.control, metrics: o.metrics, http: o.http } satisfies ObserveOptions, log).catch((e) => {
    netdev.close();
    throw e;
  });
  registerCaptureCommands(observing.control, capture, log);
  const signalled = new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  const shutdown = async (sig: string) => {
    log(`${sig}: shutting down`);
    observed.stop();
    await observing.close();
    await backend.stop();
    netdev.close();
    if (capture.active) {
      const c = await capture.stop();
      log(describeCapture(c), { event: 'capture', ...c });
    }
    if (conformance) {
      const rep = conformance.report();
      if (o.json) console.log(JSON.stringify({ time: new Date().toISOString(), conformance: rep }));
      else console.error(formatConformance(rep));
    }
  };
  try {
    // A signal while --client still waits for its first connection ends serve too.
    const early = await Promise.race([backend.start().then(() => null), signalled]);
    if (early !== null) return await shutdown(early);
  } catch (e) {
    await observing.close();
    netdev.close();
    throw e;
  }
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
    observed.tick();
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
  const sig = await signalled;
  clearInterval(timer);
  await shutdown(sig);
}
