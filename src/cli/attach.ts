/**
 * `virtio-mq attach`: the driver end as a vhost-user front-end, against any
 * vhost-user back-end (DPDK's vhost PMD, `virtio-mq serve`, ...), in client
 * (default) or server (`--server`) socket role, with the same live
 * per-queue view as `serve` and `loopback`.
 *
 * Traffic (`--netdev`):
 * - `generator[,flows=F][,size=S][,proto=udp|tcp|mixed]` (default): generated
 *   flows, every frame that comes back checked byte-exact and in order per
 *   flow, as `loopback` does. The exit status is 1 when anything came back
 *   altered or reordered (or nothing came back at all); frames the back-end
 *   dropped (or that were lost while no back-end was there) are counted and
 *   reported as drops, not failures.
 * - `pcap,file=F`: replay a capture, checked the same way.
 * - `sink`: send nothing, count what arrives (e.g. testpmd txonly).
 * - `txonly[,size=S]`: send one prebuilt frame per pair as fast as the
 *   rings allow, count what comes back unchecked (benchmarks).
 * - `tap,ifname=NAME`: a multi-queue TAP, one queue per pair: the process is
 *   a virtio-user + TAP exception path, the kernel's traffic crosses the
 *   vhost-user link (runs until SIGINT/SIGTERM or --duration).
 */
import { VhostUserFrontend, type VhostUserFrontendError } from '../transport/vhost-user/front-end.js';
import { DrvStat } from '../net/stats.js';
import { TxQueueSelector } from '../net/tx-select.js';
import { DEFAULT_RSS_KEY } from '../net/toeplitz.js';
import { VIRTIO_NET_HASH_TYPE_ALL } from '../net/config.js';
import { RssSteering } from '../net/rss.js';
import { FlowKey, parseFlow } from '../net/flow.js';
import { readPcapFile } from '../netdev/pcap.js';
import { prepareGeneratorTraffic, assignFlows, type GeneratorTrafficSpec } from '../traffic/generator-source.js';
import { preparePcapTraffic, type PcapTrafficSpec } from '../traffic/pcap-source.js';
import { benchTraffic, type BenchTrafficSpec } from '../traffic/bench-source.js';
import type { SourceSpec } from '../transport/local/sources.js';
import type { RingFormat } from '../virtio/queue.js';
import { featureNames, VIRTIO_FEATURE_NAMES } from '../virtio/features.js';
import { NET_FEATURE_NAMES } from '../net/features.js';
import { parseNetdev } from './netdev-spec.js';
import { AdaptivePairs } from '../net/adaptive-pairs.js';
import type { TapTrafficSpec } from '../traffic/tap-source.js';
import { startObserving, type ObserveOptions } from './observe/setup.js';
import { AttachObserved } from './observe/attach-observed.js';
import { close, linkSetUp, tunOpen, tunSetOffload, tunSetQueue, tunSetVnetHdrSize } from '../host/index.js';
import { registerCaptureCommands } from './observe/capture-command.js';
import { QueueCapture, describeCapture, type CaptureDirection, type CaptureSummary } from '../transport/capture.js';
import { ConformanceMonitor, formatConformance, formatViolation, type ConformanceReport } from '../virtio/conformance.js';
import { recordDeviceError } from '../net/conformance.js';
import { ringFormat } from '../virtio/ring.js';
import { makeLogger, type LogLevel } from './log.js';
import { setLinkMtu } from './netdev-spec.js';
import { setTapOffloads } from '../netdev/tap-offload.js';
import { GUEST_OFFLOAD_FEATURES, HOST_OFFLOAD_FEATURES, hostOffloadBits, rxOffloadNames } from '../net/offloads.js';
import { VIRTIO_NET_F_MTU } from '../net/features.js';

export interface AttachOptions {
  socket: string;
  server: boolean;
  queues: number;
  ring: RingFormat;
  inOrder: boolean;
  mrgRxbuf: boolean;
  queueSize: number;
  /** MAC address of the driver's config space (aa:bb:cc:dd:ee:ff). */
  mac?: string;
  rss: boolean;
  netdev: string;
  /**
   * Negotiate the checksum and segmentation offloads the back-end offers
   * (offloads.ts): HOST_ ones always, GUEST_ ones only with `--netdev tap`
   * (its vnet header takes partial checksums and GSO frames; MRG_RXBUF is
   * then asked for too). The TAP's TUNSETOFFLOAD follows the HOST_ offloads
   * negotiated. Default false.
   */
  offloads?: boolean;
  /** Device MTU, 68..9714 (config mtu, NET_SET_MTU, the TAP's MTU). Default 1500. */
  mtu?: number;
  duration: number;
  /** Halfway through, change the active pair count (SET_VRING_ENABLE on the back-end). */
  resize?: number;
  /** Raise and lower the active pair count by load (start with 1), see AdaptivePairs. */
  adaptive?: boolean;
  mode: 'busy' | 'notify';
  json: boolean;
  /** Milliseconds to wait for each back-end reply. */
  replyTimeout?: number;
  /** Seconds to wait for the first connection. */
  connectTimeout?: number;
  /** Reconnect when the back-end goes away (default true). */
  reconnect?: boolean;
  /** Control socket, /metrics and the live page while it runs (the command line always opens the control socket). */
  observe?: ObserveOptions;
  /**
   * Write a pcapng capture of the queues here (transport/capture.ts,
   * driver-tap.ts): interface N = queue pair N, inbound = frames the driver
   * took from receiveqN, outbound = frames it made available on transmitqN.
   */
  capture?: string;
  captureQueue?: number;
  captureDir?: CaptureDirection;
  captureSnaplen?: number;
  /** Strict conformance: report every spec rule the back-end (the device) breaks (virtio/conformance.ts, net/conformance.ts). */
  strict?: boolean;
  /** Log lines at this level and above (pino, cli/log.ts). Default info. */
  logLevel?: LogLevel;
}

export interface AttachResult {
  ok: boolean;
  problems: string[];
  pairs: number;
  activePairs: number;
  features: string[];
  seconds: number;
  connections: number;
  txPackets: number;
  rxPackets: number;
  /** Frames sent and never received (dropped by the back-end, or lost while no back-end was there). */
  drops: number;
  perPair: { pair: number; txPackets: number; rxPackets: number; rxBytes: number; gaps: number; bad: number; outOfOrder: number; kicks: number; interrupts: number }[];
  /** Resident set size of this process at the end (bytes). */
  rssBytes: number;
  /** Pair count changes --adaptive made, in order. */
  adaptiveChanges: { from: number; to: number; kpps: number; txRingFull: number }[];
  /** What --capture (or a capture the run ended) wrote and dropped. */
  capture?: CaptureSummary;
  /** --strict: the conformance report (rules the back-end broke). */
  conformance?: ConformanceReport;
}

/** Parse `aa:bb:cc:dd:ee:ff`. @throws Error for anything else. */
export function parseMac(text: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i.exec(text);
  if (!m) throw new Error(`--mac ${text}: not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return Uint8Array.from(m.slice(1).map((h) => parseInt(h, 16)));
}

/** What `--netdev` means for attach: the traffic each pair sends and checks. */
export function attachTraffic(text: string, pairs: number, select: (f: Uint8Array, pairs: number) => number, open = true, mtu = 1500): {
  kind: 'generator' | 'pcap' | 'sink' | 'tap'; spec: GeneratorTrafficSpec | PcapTrafficSpec | TapTrafficSpec | BenchTrafficSpec | { kind: 'none' }; describe: string;
  close?: () => void;
} {
  const { kind, opts } = parseNetdev(text);
  const known = (keys: string[]) => {
    for (const k of opts.keys()) if (!keys.includes(k)) throw new Error(`--netdev ${kind}: unknown option ${k}`);
  };
  const num = (k: string, dflt: number, min: number, max: number): number => {
    const v = opts.get(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--netdev ${kind}: ${k}=${v} is not an integer in ${min}..${max}`);
    return n;
  };
  switch (kind) {
    case 'generator': {
      known(['flows', 'size', 'proto']);
      const proto = (opts.get('proto') ?? 'udp') as 'udp' | 'tcp' | 'mixed';
      if (!['udp', 'tcp', 'mixed'].includes(proto)) throw new Error(`--netdev generator: proto=${proto} is not udp, tcp or mixed`);
      const flows = num('flows', 16, 1, 65536), size = num('size', 256, 60, 1514);
      const spec = prepareGeneratorTraffic({ flows, frameSize: size, proto, ipVersion: 4 });
      assignFlows(spec, (f) => select(f, pairs));
      return { kind, spec, describe: `generator ${flows} flows × ${size} B` };
    }
    case 'pcap': {
      known(['file']);
      const file = opts.get('file');
      if (!file) throw new Error('--netdev pcap needs file=CAPTURE');
      const frames = readPcapFile(file).frames;
      if (frames.some((f) => f.length > 2048 - 12)) throw new Error(`--netdev pcap: ${file} has frames above ${2048 - 12} bytes`);
      return { kind, spec: preparePcapTraffic(frames, (f) => select(f, pairs)), describe: `pcap ${file} (${frames.length} frames)` };
    }
    case 'sink':
      known([]);
      return { kind, spec: { kind: 'none' }, describe: 'sink (receive only)' };
    case 'txonly': {
      // A packet generator's send loop (testpmd txonly): one prebuilt frame per pair, copied and
      // stamped per packet; what comes back is counted, not checked. For benchmarks.
      known(['size']);
      const size = num('size', 64, 60, 1514);
      return { kind: 'sink', spec: benchTraffic(size, false), describe: `txonly ${size} B (not checked)` };
    }
    case 'tap': {
      known(['ifname']);
      const ifname = opts.get('ifname');
      if (!ifname) throw new Error('--netdev tap needs ifname=NAME');
      if (!open) return { kind, spec: { kind: 'tap', fds: [], hdrLen: 12 }, describe: `tap ${ifname}` };
      // One queue per pair, vnet header of 12 bytes (VIRTIO_F_VERSION_1), no offloads until negotiated (attach sets them).
      const fds: number[] = [];
      try {
        for (let p = 0; p < pairs; p++) {
          const t = tunOpen(ifname, { multiQueue: true, vnetHdr: true, nonblock: true });
          fds.push(t.fd);
          tunSetVnetHdrSize(t.fd, 12);
          tunSetOffload(t.fd, 0);
        }
        if (mtu !== 1500) setLinkMtu(ifname, mtu);
        linkSetUp(ifname, true);
      } catch (e) {
        for (const fd of fds) close(fd);
        throw e;
      }
      return { kind, spec: { kind: 'tap', fds, hdrLen: 12 }, describe: `tap ${ifname} (${pairs} queues)`, close: () => fds.forEach((fd) => close(fd)) };
    }
    default:
      throw new Error(`--netdev ${kind}: unknown (generator, pcap, sink, txonly, tap)`);
  }
}

/** Run attach; prints a live table (unless --json) and a summary. Returns true when nothing came back altered or reordered. */
export async function runAttach(o: AttachOptions): Promise<boolean> {
  const { log } = makeLogger({ json: o.json, level: o.logLevel });
  const r = await attach(o, o.json ? (s) => console.log(JSON.stringify(s)) : (s) => process.stdout.write(typeof s === 'string' ? s : ''), {
    log,
    signals: true,
  });
  if (o.json) console.log(JSON.stringify(r, null, 2));
  else printSummary(r);
  return r.ok;
}

/** The job; `out` receives the live view (a string, or a row object with --json). */
export async function attach(
  o: AttachOptions,
  out: (s: string | Record<string, unknown>) => void,
  env: {
    /** One log line, with its facts as fields (pino in the command line). */
    log: (l: string, detail?: Record<string, unknown>) => void;
    signals?: boolean;
    stopSignal?: Promise<void>;
    /** Called after TX stopped and the rings drained, before the front-end disconnects (tests read the peer's counters here). */
    beforeStop?: (fe: VhostUserFrontend) => Promise<void>;
    /** Called once the front-end is up, before traffic is sampled (tests stop TX mid-run with fe.stopTx()). */
    onStarted?: (fe: VhostUserFrontend) => void;
  } = { log: () => {} },
): Promise<AttachResult> {
  const pairs = o.queues;
  const rssTable = Uint16Array.from({ length: 128 }, (_, i) => i % pairs);
  const rssCfg = { key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_HASH_TYPE_ALL, indirectionTable: rssTable, unclassifiedQueue: 0 };
  // TX queue selection: a flow hash; with --rss the RSS queue of the frame
  // itself (default key, all hash types, 128-entry table), so a back-end
  // that loops frames back and steers them by the same RSS (`serve --rss`)
  // returns each flow on the pair that sent it.
  const selector = new TxQueueSelector({ steering: null });
  const rss = new RssSteering(rssCfg);
  const flow = new FlowKey();
  const select = (f: Uint8Array, n: number) => {
    if (o.rss && n > 1 && parseFlow(f, 0, f.length, flow)) {
      const q = rss.selectQueue(flow);
      return q < n ? q : q % n;
    }
    return selector.select(f, 0, f.length, n);
  };
  const traffic = attachTraffic(o.netdev, pairs, select, true, o.mtu ?? 1500);
  const tap = traffic.kind === 'tap';
  const offloads = o.offloads ? HOST_OFFLOAD_FEATURES | (tap ? GUEST_OFFLOAD_FEATURES : 0n) : 0n;
  // Capture rings for the process's lifetime (a capture can start at run time through the control socket).
  const capture = new QueueCapture(pairs);
  const fe = new VhostUserFrontend({
    socket: o.socket, server: o.server, pairs, queueSize: o.queueSize, ring: o.ring, inOrder: o.inOrder, mrgRxbuf: o.mrgRxbuf || (tap && !!o.offloads),
    offloads, mtu: o.mtu !== undefined && o.mtu !== 1500 ? o.mtu : undefined,
    mac: o.mac ? parseMac(o.mac) : undefined, mode: o.mode, source: () => traffic.spec as SourceSpec | TapTrafficSpec,
    replyTimeoutMs: o.replyTimeout ?? 5000, connectTimeoutMs: (o.connectTimeout ?? 30) * 1000, reconnect: o.reconnect ?? true, log: env.log,
    capture: capture.buffers,
  });
  // --strict: a ring or num_buffers error the driver stops on is a device rule broken; reported once per rule.
  const conformance = o.strict ? new ConformanceMonitor((r) => env.log(formatViolation(r), { event: 'conformance', rule: r.id, section: r.section, queue: r.first.queue, values: r.first.values })) : null;
  if (conformance) fe.on('queue-error', (e) => void recordDeviceError(conformance, e.code, e.message, e.queue, fe.negotiated ? ringFormat(fe.negotiated) : o.ring));
  env.log(`attach: ${o.server ? 'listening on' : 'connecting to'} ${o.socket}, ${pairs} queue pairs, ${o.ring} rings, ${traffic.describe}`);
  try {
    if (o.capture) {
      capture.start(o.capture, { queue: o.captureQueue, dir: o.captureDir, snaplen: o.captureSnaplen });
      env.log(`attach: capturing ${o.captureQueue === undefined ? 'every queue pair' : `queue pair ${o.captureQueue}`} (${o.captureDir ?? 'both'}) to ${o.capture}`);
    }
    await fe.start();
  } catch (e) {
    traffic.close?.();
    if (capture.active) await capture.stop().catch(() => undefined);
    throw e;
  }
  const observed = o.observe ? new AttachObserved(fe, { capture, conformance }) : null;
  const observing = observed ? await startObserving(observed, o.observe!, env.log).catch(async (e) => {
    await fe.stop();
    traffic.close?.();
    if (capture.active) await capture.stop().catch(() => undefined);
    throw e;
  }) : null;
  if (observing) registerCaptureCommands(observing.control, capture, env.log);
  const drv = fe.driver;
  // A TAP queue no pair reads would strand the kernel's frames: detach the queues beyond the back-end's pairs.
  if (traffic.kind === 'tap') for (const fd of (traffic.spec as TapTrafficSpec).fds.slice(drv.pairs)) tunSetQueue(fd, false);
  const features = featureNames(fe.negotiated, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES);
  // One line per back-end connection with what it negotiated (the same on every reconnect: the rings keep their features).
  const ring = ringFormat(fe.negotiated);
  const connectionLine = (n: number) => env.log(
    `attach: back-end connection ${n}: ${drv.activePairs} of ${drv.pairs} queue pairs, ${ring} rings, negotiated with the back-end: ${features.join(' ')}`,
    { event: 'connection', connection: n, pairs: drv.pairs, activePairs: drv.activePairs, ring, features },
  );
  connectionLine(fe.connections);
  fe.on('connected', connectionLine);
  if (tap && o.offloads) {
    // What the kernel may hand this TAP reader: exactly what the driver may send (HOST_ offloads accepted).
    const bits = hostOffloadBits(fe.negotiated);
    const flags = setTapOffloads((traffic.spec as TapTrafficSpec).fds, bits);
    env.log(`attach: TAP offloads 0x${flags.toString(16)} (the back-end accepts: ${rxOffloadNames(bits).join(' ') || 'none'})`);
  }
  if (o.mtu !== undefined && o.mtu !== 1500 && !(fe.negotiated & VIRTIO_NET_F_MTU)) env.log(`attach: the back-end does not offer VIRTIO_NET_F_MTU: --mtu ${o.mtu} sizes the buffers${tap ? ' and the TAP' : ''} only`);
  if (o.rss) env.log('attach: the back-end does not offer VIRTIO_NET_F_RSS: --rss chooses transmit queues by the RSS hash; the back-end steers by its own');
  if (drv.pairs < pairs) env.log(`attach: the back-end has ${drv.pairs} queue pairs (asked for ${pairs})`);
  const s = fe.stats;
  // Frames between TX and RX (for a reorder-free pair change): sent, minus received, minus known lost.
  const inFlight = () => s.total(DrvStat.txPackets) - s.total(DrvStat.rxPackets) - s.total(DrvStat.rxGaps);
  let stopped = false;
  const stopPromise = new Promise<void>((resolve) => {
    if (env.signals) {
      const stop = (sig: string) => {
        env.log(`${sig}: stopping`);
        stopped = true;
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    }
    void env.stopSignal?.then(() => {
      stopped = true;
      resolve();
    });
    fe.on('error', () => resolve());
    // --no-reconnect: the back-end going away ends the run (what came back until then is checked).
    fe.on('disconnected', (why) => {
      if (o.reconnect !== false) return;
      env.log(`attach: the back-end went away (${why}); not reconnecting`);
      stopped = true;
      resolve();
    });
  });
  const reassign = (n: number) => () => {
    if (traffic.kind === 'generator') assignFlows(traffic.spec as GeneratorTrafficSpec, (f) => select(f, n));
  };
  const adaptive = o.adaptive && drv.pairs > 1 ? new AdaptivePairs({ maxPairs: drv.pairs }) : null;
  const adaptiveChanges: AttachResult['adaptiveChanges'] = [];
  if (adaptive && drv.activePairs > 1) {
    await fe.setActivePairs(1, inFlight, reassign(1));
    env.log('attach: adaptive pair count: starting with 1 active pair');
  }
  env.onStarted?.(fe);
  const t0 = Date.now();
  let last = s.snapshot();
  let lastT = t0;
  let resized = false;
  const sendFor = o.duration * 1000;
  const problems: string[] = [];
  while (!stopped && !fe.failure) {
    await Promise.race([sleep(Math.min(1000, Math.max(1, t0 + sendFor - Date.now()))), stopPromise]);
    const now = Date.now();
    const snap = s.snapshot();
    const dt = (now - lastT) / 1000;
    if (dt >= 0.5) {
      const rows = Array.from({ length: drv.pairs }, (_, p) => {
        const d = (k: number) => (snap[p * s.width + k] - last[p * s.width + k]) / dt;
        return {
          pair: p, txPps: d(DrvStat.txPackets), rxPps: d(DrvStat.rxPackets), rxMbps: (d(DrvStat.rxBytes) * 8) / 1e6, txMbps: (d(DrvStat.txBytes) * 8) / 1e6,
          gaps: snap[p * s.width + DrvStat.rxGaps], kicks: snap[p * s.width + DrvStat.kicksSent], interrupts: snap[p * s.width + DrvStat.interrupts],
        };
      });
      if (o.json) out({ time: new Date().toISOString(), connected: fe.connected, activePairs: drv.activePairs, pairs: rows });
      else {
        let t = `\n${((now - t0) / 1000).toFixed(1)} s${fe.connected ? '' : '  (no back-end: holding)'}\n`;
        t += `${'pair'.padStart(4)} ${'TX kpps'.padStart(9)} ${'RX kpps'.padStart(9)} ${'TX Mb/s'.padStart(9)} ${'RX Mb/s'.padStart(9)} ${'drops'.padStart(8)} ${'kicks'.padStart(9)} ${'irqs'.padStart(9)}\n`;
        for (const r of rows)
          t += `${String(r.pair).padStart(4)} ${(r.txPps / 1e3).toFixed(1).padStart(9)} ${(r.rxPps / 1e3).toFixed(1).padStart(9)} ${r.txMbps.toFixed(1).padStart(9)} ${r.rxMbps.toFixed(1).padStart(9)} ${String(r.gaps).padStart(8)} ${String(r.kicks).padStart(9)} ${String(r.interrupts).padStart(9)}${r.pair >= drv.activePairs ? '  (inactive)' : ''}\n`;
        out(t);
      }
      if (adaptive && fe.connected && !fe.failure) {
        const delta = (k: number) => {
          let d = 0;
          for (let p = 0; p < drv.pairs; p++) d += snap[p * s.width + k] - last[p * s.width + k];
          return d;
        };
        const sample = { txFrames: delta(DrvStat.txPackets), txRingFull: delta(DrvStat.txRingFull), seconds: dt };
        const from = drv.activePairs;
        const to = adaptive.next(from, sample);
        if (to !== from) {
          try {
            await fe.setActivePairs(to, inFlight, reassign(to));
            adaptiveChanges.push({ from, to, kpps: sample.txFrames / dt / 1e3, txRingFull: sample.txRingFull });
            env.log(`attach: adaptive: active pairs ${from} → ${to} (${(sample.txFrames / dt / 1e3).toFixed(1)} kpps, transmitq full ${sample.txRingFull} times)`);
            if (!o.json) out(`\nadaptive: active pairs ${from} → ${to}\n`);
          } catch (e) {
            problems.push(`adaptive pair count change to ${to} failed: ${(e as Error).message}`);
          }
        }
      }
      last = s.snapshot();
      lastT = Date.now();
    }
    if (o.resize !== undefined && !resized && now - t0 >= sendFor / 2 && fe.connected) {
      resized = true;
      const n = Math.min(o.resize, drv.pairs);
      try {
        await fe.setActivePairs(n, inFlight, reassign(n));
        env.log(`attach: VQ_PAIRS_SET ${n}: active pairs now ${drv.activePairs}`);
      } catch (e) {
        problems.push(`pair count change to ${n} failed: ${(e as Error).message}`);
      }
    }
    if (now - t0 >= sendFor) break;
    if (traffic.kind === 'pcap' && s.total(DrvStat.rxPackets) + s.total(DrvStat.rxBad) + s.total(DrvStat.rxGaps) >= (traffic.spec as PcapTrafficSpec).count) break;
  }
  await fe.stopTx();
  // Let what is in flight come back (up to 2 s, less once nothing moves for 500 ms: a pair the back-end
  // has just started, after a pair change near the end, may take a few hundred ms on a loaded machine).
  const drainBy = Date.now() + 2000;
  let lastRx = -1, still = Date.now();
  while (traffic.kind !== 'sink' && traffic.kind !== 'tap' && inFlight() > 0 && Date.now() < drainBy && fe.connected) {
    const rx = s.total(DrvStat.rxPackets);
    if (rx !== lastRx) {
      lastRx = rx;
      still = Date.now();
    } else if (Date.now() - still > 500) break;
    await sleep(5);
  }
  const seconds = (Date.now() - t0) / 1000;
  const activePairs = drv.activePairs;
  let captured: CaptureSummary | undefined;
  try {
    await env.beforeStop?.(fe);
  } finally {
    observed?.stop();
    await observing?.close();
    await fe.stop();
    traffic.close?.();
    if (capture.active) {
      try {
        captured = await capture.stop();
        env.log(`attach: ${describeCapture(captured)}`, { event: 'capture', ...captured });
      } catch (e) {
        problems.push((e as Error).message);
      }
    }
  }

  const tx = s.total(DrvStat.txPackets), rx = s.total(DrvStat.rxPackets);
  if (fe.failure) problems.push(`back-end failure: ${(fe.failure as VhostUserFrontendError).message}`);
  if (traffic.kind !== 'sink' && traffic.kind !== 'tap') {
    if (tx === 0) problems.push('nothing was sent');
    else if (rx === 0) problems.push('nothing came back');
    if (s.total(DrvStat.rxBad) > 0) problems.push(`${s.total(DrvStat.rxBad)} frames altered or unknown`);
    if (s.total(DrvStat.rxOutOfOrder) > 0) problems.push(`${s.total(DrvStat.rxOutOfOrder)} frames out of order`);
  }
  const perPair = Array.from({ length: drv.pairs }, (_, p) => ({
    pair: p,
    txPackets: s.get(p, DrvStat.txPackets), rxPackets: s.get(p, DrvStat.rxPackets), rxBytes: s.get(p, DrvStat.rxBytes),
    gaps: s.get(p, DrvStat.rxGaps), bad: s.get(p, DrvStat.rxBad), outOfOrder: s.get(p, DrvStat.rxOutOfOrder),
    kicks: s.get(p, DrvStat.kicksSent), interrupts: s.get(p, DrvStat.interrupts),
  }));
  return {
    ok: problems.length === 0, problems, pairs: drv.pairs, activePairs, features, seconds, connections: fe.connections,
    txPackets: tx, rxPackets: rx, drops: traffic.kind === 'sink' || traffic.kind === 'tap' ? 0 : Math.max(0, tx - rx), perPair, rssBytes: process.memoryUsage().rss, adaptiveChanges,
    capture: captured, conformance: conformance?.report(),
  };
}

function printSummary(r: AttachResult): void {
  console.log(`\n${r.pairs} queue pairs (${r.activePairs} active), ${r.seconds.toFixed(1)} s, ${r.connections} connection(s): sent ${r.txPackets} frames, received ${r.rxPackets}, dropped ${r.drops}`);
  console.log(`negotiated: ${r.features.join(' ')}`);
  console.log(`${'pair'.padStart(4)} ${'TX pkts'.padStart(10)} ${'RX pkts'.padStart(10)} ${'RX MB'.padStart(8)} ${'gaps'.padStart(8)} ${'kicks'.padStart(8)} ${'irqs'.padStart(8)}`);
  for (const p of r.perPair)
    console.log(`${String(p.pair).padStart(4)} ${String(p.txPackets).padStart(10)} ${String(p.rxPackets).padStart(10)} ${(p.rxBytes / 1e6).toFixed(1).padStart(8)} ${String(p.gaps).padStart(8)} ${String(p.kicks).padStart(8)} ${String(p.interrupts).padStart(8)}`);
  if (r.capture) console.log(describeCapture(r.capture));
  if (r.conformance) console.log(formatConformance(r.conformance));
  if (r.ok) console.log(r.drops > 0 ? `OK: every frame that came back was byte-exact and in order; ${r.drops} dropped` : 'OK: every frame that came back was byte-exact and in order');
  else for (const p of r.problems) console.log(`FAIL: ${p}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
