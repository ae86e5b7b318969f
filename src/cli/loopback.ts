/**
 * `virtio-mq loopback`: the whole system on the local transport. The driver
 * sends generated flows (or a capture), the device loops every frame back,
 * the driver checks each one byte-exact and in order per flow. Exit status
 * says whether anything was lost, altered or reordered.
 */
import { LocalNet } from '../transport/local/local-net.js';
import { DevStat, DrvStat } from '../net/stats.js';
import { TxQueueSelector } from '../net/tx-select.js';
import { DEFAULT_RSS_KEY } from '../net/toeplitz.js';
import { VIRTIO_NET_HASH_TYPE_ALL } from '../net/config.js';
import { RssSteering } from '../net/rss.js';
import { readPcapFile } from '../netdev/pcap.js';
import { prepareGeneratorTraffic, assignFlows, type GeneratorTrafficSpec } from '../traffic/generator-source.js';
import { preparePcapTraffic, type PcapTrafficSpec } from '../traffic/pcap-source.js';
import { flowIdOf } from '../traffic/flow-id.js';
import type { RingFormat } from '../virtio/queue.js';
import { featureNames, VIRTIO_FEATURE_NAMES } from '../virtio/features.js';
import { NET_FEATURE_NAMES } from '../net/features.js';
import { startObserving, type ObserveOptions } from './observe/setup.js';
import { LoopbackObserved } from './observe/loopback-observed.js';
import { registerCaptureCommands } from './observe/capture-command.js';
import type { Writable } from 'node:stream';
import { formatConformance, formatViolation, type ConformanceReport } from '../virtio/conformance.js';
import { QueueCapture, describeCapture, type CaptureDirection, type CaptureSummary } from '../transport/capture.js';
import { NET_DRIVER_FEATURES } from '../net/driver.js';
import { NET_OFFLOAD_FEATURES } from '../net/offloads.js';
import { makeLogger, type LogFn, type LogLevel } from './log.js';

export interface LoopbackOptions {
  queues: number;
  flows: number;
  size: number;
  duration: number;
  pcap?: string;
  rss: boolean;
  resize?: number;
  mode: 'busy' | 'notify';
  queueSize: number;
  /** Virtqueue format (§2.7 split, §2.8 packed). Default split. */
  ring?: RingFormat;
  /** Negotiate VIRTIO_F_IN_ORDER. */
  inOrder?: boolean;
  /** Generated flows: UDP, TCP, or alternating (default udp). */
  proto?: 'udp' | 'tcp' | 'mixed';
  /** Generated flows: IPv4, IPv6, or mixed (default 4). */
  ipVersion?: 4 | 6 | 'mixed';
  /** RX buffer size the driver posts (bytes); below the frame size, MRG_RXBUF spreads frames over several. */
  rxBufferSize?: number;
  /** Write a pcapng capture of the queues to this file or stream (transport/capture.ts). */
  capture?: string | Writable;
  /** Capture only this queue pair (0-based). */
  captureQueue?: number;
  captureDir?: CaptureDirection;
  captureSnaplen?: number;
  /** Strict conformance: report every spec rule either end breaks (virtio/conformance.ts). */
  strict?: boolean;
  /** Device MTU (config `mtu`, VIRTIO_NET_F_MTU): frames up to 14 + mtu bytes. Default 1500. */
  mtu?: number;
  /** The driver negotiates the checksum and segmentation offloads (offloads.ts) too. */
  offloads?: boolean;
  json: boolean;
  /** Control socket, /metrics and the live page while it runs (the command line always opens the control socket). */
  observe?: ObserveOptions;
  /** Stop sending early when aborted (the command line: SIGINT, SIGTERM); the frames in flight are still checked. */
  signal?: AbortSignal;
  /** Log lines at this level and above (pino, cli/log.ts; on stderr, JSON lines with --json). The command line passes info by default. */
  logLevel?: LogLevel;
  /** Where log lines go (default: a pino logger on stderr at {@link logLevel}; none without a level). */
  log?: LogFn;
}

export interface LoopbackResult {
  ok: boolean;
  problems: string[];
  pairs: number;
  /** Negotiated features by their spec names. */
  features: string[];
  seconds: number;
  txPackets: number;
  rxPackets: number;
  perPair: { pair: number; txPackets: number; rxPackets: number; rxBytes: number; rxBuffers: number; drops: number; kicks: number; notifications: number; suppressed: number }[];
  tcpFlowsPerPair?: number[];
  /** What --capture wrote and dropped. */
  capture?: CaptureSummary;
  /** --strict: the conformance report. */
  conformance?: ConformanceReport;
}

/** Run the loopback job; prints a live table (unless --json) and a summary. Returns true when every frame came back intact and in order. */
export async function runLoopback(o: LoopbackOptions): Promise<boolean> {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const r = await loopback({ ...o, signal: ac.signal }, o.json ? () => {} : (s) => process.stdout.write(s));
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  if (o.json) console.log(JSON.stringify(r, null, 2));
  else printSummary(r);
  return r.ok;
}

/** The job itself; `out` receives the live table. */
export async function loopback(o: LoopbackOptions, out: (s: string) => void): Promise<LoopbackResult> {
  const pairs = o.queues;
  const rssTable = Uint16Array.from({ length: 128 }, (_, i) => i % pairs);
  const rssCfg = { key: DEFAULT_RSS_KEY, hashTypes: VIRTIO_NET_HASH_TYPE_ALL, indirectionTable: rssTable, unclassifiedQueue: 0 };
  // The driver's TX queue selection: a hash of the flow (with RSS on, the RSS
  // hash of the reply direction, so TX and RX of a flow share a pair).
  const selector = new TxQueueSelector({ steering: o.rss ? new RssSteering(rssCfg) : null });
  let spec: GeneratorTrafficSpec | PcapTrafficSpec;
  let tcpFlowsPerPair: number[] | undefined;
  if (o.pcap) {
    if (o.resize) throw new Error('--resize works with generated flows, not with --pcap');
    const frames = readPcapFile(o.pcap).frames;
    spec = preparePcapTraffic(frames, (f) => selector.select(f, 0, f.length, pairs));
    tcpFlowsPerPair = countTcpFlows(frames, spec, pairs);
  } else {
    spec = prepareGeneratorTraffic({ flows: o.flows, frameSize: o.size, proto: o.proto ?? 'udp', ipVersion: o.ipVersion ?? 4 });
    assignFlows(spec, (f) => selector.select(f, 0, f.length, pairs));
  }
  // Log lines go to stderr (stdout carries the live table, or the one JSON summary with --json);
  // called as a library without a level or a log function, it logs nothing.
  const log: LogFn = o.log ?? (o.logLevel ? makeLogger({ json: o.json, level: o.logLevel, fd: 2 }).log : () => {});
  const capture = new QueueCapture(pairs);
  const net = new LocalNet({
    pairs, queueSize: o.queueSize, rxBufSize: o.rxBufferSize, mode: o.mode, netdev: { kind: 'loopback' }, source: () => spec,
    ring: o.ring, inOrder: o.inOrder, mtu: o.mtu, capture: capture.buffers, strict: o.strict,
    driverFeatures: o.offloads ? NET_DRIVER_FEATURES | NET_OFFLOAD_FEATURES : undefined,
  });
  net.on('conformance', (r) => log(formatViolation(r), { event: 'conformance', rule: r.id, section: r.section, queue: r.first.queue, values: r.first.values }));
  if (o.capture) {
    capture.start(o.capture, { queue: o.captureQueue, dir: o.captureDir, snaplen: o.captureSnaplen });
    log(`capturing ${o.captureQueue === undefined ? 'every queue pair' : `queue pair ${o.captureQueue}`} (${o.captureDir ?? 'both'}) to ${typeof o.capture === 'string' ? o.capture : '(stream)'}`);
  }
  net.on('queue-error', (e) => log(`queue error (${e.side} queue ${e.queue}): ${e.code}: ${e.message}`, { event: 'queue-error', ...e }, 'warn'));
  await net.start();
  const observed = o.observe ? new LoopbackObserved(net, { capture }) : null;
  const observing = observed ? await startObserving(observed, o.observe!, log).catch(async (e) => {
    await net.stop();
    throw e;
  }) : null;
  if (observing) registerCaptureCommands(observing.control, capture, log);
  const features = featureNames(net.driver.features, VIRTIO_FEATURE_NAMES, NET_FEATURE_NAMES);
  out(`negotiated: ${features.join(' ')}\n`);
  // The one "connection" of the local transport, as serve and attach log theirs.
  log(`loopback: ${net.driver.activePairs} of ${pairs} queue pairs running, ${o.ring ?? 'split'} rings, negotiated: ${features.join(' ')}`,
    { event: 'connection', pairs, activePairs: net.driver.activePairs, ring: o.ring ?? 'split', features });
  if (o.rss) await net.setRss({ ...rssCfg, maxTxVq: net.driver.activePairs });
  const drv = net.drvStats, dev = net.devStats;
  const inFlight = () => drv.total(DrvStat.txPackets) - drv.total(DrvStat.rxPackets) - dev.total(DevStat.rxDrops) - dev.total(DevStat.rxFiltered);
  const t0 = Date.now();
  let last = drv.snapshot();
  let lastT = t0;
  let resized = false;
  const header = `${'pair'.padStart(4)} ${'TX kpps'.padStart(9)} ${'RX kpps'.padStart(9)} ${'RX Mbit/s'.padStart(10)} ${'drops'.padStart(7)}\n`;
  const sendFor = o.pcap ? 60_000 : o.duration * 1000;
  // Wake for the live table (every second), the pair-count change (half-way) and the end of the
  // send window, whichever comes first: a short run changes its pair count mid-run, not at its end.
  const resizeAt = o.resize ? t0 + sendFor / 2 : Infinity;
  for (;;) {
    const wakeAt = Math.min(o.pcap ? Date.now() + 100 : lastT + 1000, resized ? Infinity : resizeAt, t0 + sendFor);
    await sleep(Math.max(1, wakeAt - Date.now()));
    const now = Date.now();
    const snap = drv.snapshot();
    if (now - lastT >= 1000 || (!o.pcap && now - t0 >= sendFor)) {
      const dt = (now - lastT) / 1000;
      let s = `\n${((now - t0) / 1000).toFixed(1)} s\n${header}`;
      for (let p = 0; p < pairs; p++) {
        const d = (k: number) => (snap[p * drv.width + k] - last[p * drv.width + k]) / dt;
        s += `${String(p).padStart(4)} ${(d(DrvStat.txPackets) / 1e3).toFixed(1).padStart(9)} ${(d(DrvStat.rxPackets) / 1e3).toFixed(1).padStart(9)} ${((d(DrvStat.rxBytes) * 8) / 1e6).toFixed(1).padStart(10)} ${String(dev.get(p, DevStat.rxDrops)).padStart(7)}\n`;
      }
      out(s);
      last = snap;
      lastT = now;
    }
    if (o.resize && !resized && now - t0 >= sendFor / 2) {
      resized = true;
      const n = Math.min(o.resize, net.driver.pairs);
      await net.setActivePairs(n, inFlight, () => assignFlows(spec as GeneratorTrafficSpec, (f) => selector.select(f, 0, f.length, n)));
      out(`\nVQ_PAIRS_SET ${n}: active pairs now ${net.driver.activePairs}\n`);
    }
    if (o.pcap ? drv.total(DrvStat.rxPackets) + drv.total(DrvStat.rxBad) >= (spec as PcapTrafficSpec).count : now - t0 >= sendFor) break;
    if (now - t0 >= sendFor || o.signal?.aborted) break;
  }
  await net.stopTx();
  const drainBy = Date.now() + 5000;
  while (inFlight() > 0 && Date.now() < drainBy) await sleep(10);
  const seconds = (Date.now() - t0) / 1000;
  observed?.stop();
  await observing?.close();
  await net.stop();
  const captured = capture.active ? await capture.stop() : undefined;

  const problems: string[] = [];
  const tx = drv.total(DrvStat.txPackets), rx = drv.total(DrvStat.rxPackets);
  if (tx === 0) problems.push('nothing was sent');
  if (rx < tx) problems.push(`${tx - rx} frames lost`);
  if (drv.total(DrvStat.rxBad) > 0) problems.push(`${drv.total(DrvStat.rxBad)} frames altered or unknown`);
  if (drv.total(DrvStat.rxOutOfOrder) > 0) problems.push(`${drv.total(DrvStat.rxOutOfOrder)} frames out of order`);
  if (drv.total(DrvStat.rxGaps) > 0) problems.push(`${drv.total(DrvStat.rxGaps)} frames missing from their flow's sequence`);
  if (dev.total(DevStat.rxDrops) > 0) problems.push(`${dev.total(DevStat.rxDrops)} frames dropped by the device`);
  for (const e of net.errors) problems.push(`queue error (${e.side} ${e.queue}): ${e.code}: ${e.message}`);
  if (o.pcap) {
    const expected = (spec as PcapTrafficSpec).count;
    if (tx !== expected) problems.push(`sent ${tx} of ${expected} captured frames`);
  }
  const perPair = Array.from({ length: pairs }, (_, p) => ({
    pair: p,
    txPackets: drv.get(p, DrvStat.txPackets),
    rxPackets: drv.get(p, DrvStat.rxPackets),
    rxBytes: drv.get(p, DrvStat.rxBytes),
    rxBuffers: dev.get(p, DevStat.rxBuffers),
    drops: dev.get(p, DevStat.rxDrops),
    kicks: dev.get(p, DevStat.kicks),
    notifications: dev.get(p, DevStat.notifySent),
    suppressed: dev.get(p, DevStat.notifySuppressed),
  }));
  return { ok: problems.length === 0, problems, pairs, features, seconds, txPackets: tx, rxPackets: rx, perPair, tcpFlowsPerPair, capture: captured, conformance: net.conformance?.report() };
}

/** Distinct TCP flows (either direction counted separately) per TX pair. */
function countTcpFlows(frames: Uint8Array[], spec: PcapTrafficSpec, pairs: number): number[] {
  const per: Set<string>[] = Array.from({ length: pairs }, () => new Set());
  const fp = new Int32Array(spec.framePair);
  frames.forEach((f, i) => {
    const id = flowIdOf(f, 0, f.length);
    if (id.startsWith('4|') && id.split('|')[3] === '6') per[fp[i]].add(id);
  });
  return per.map((s) => s.size);
}

function printSummary(r: LoopbackResult): void {
  console.log(`\n${r.pairs} queue pairs, ${r.seconds.toFixed(1)} s: sent ${r.txPackets} frames, received ${r.rxPackets}`);
  console.log(`${'pair'.padStart(4)} ${'TX pkts'.padStart(10)} ${'RX pkts'.padStart(10)} ${'RX MB'.padStart(8)} ${'drops'.padStart(6)} ${'kicks'.padStart(8)} ${'notif'.padStart(8)} ${'suppr'.padStart(8)}`);
  for (const p of r.perPair)
    console.log(`${String(p.pair).padStart(4)} ${String(p.txPackets).padStart(10)} ${String(p.rxPackets).padStart(10)} ${(p.rxBytes / 1e6).toFixed(1).padStart(8)} ${String(p.drops).padStart(6)} ${String(p.kicks).padStart(8)} ${String(p.notifications).padStart(8)} ${String(p.suppressed).padStart(8)}`);
  if (r.tcpFlowsPerPair) console.log(`TCP flows per TX pair: ${r.tcpFlowsPerPair.join(' ')}`);
  if (r.capture) console.log(describeCapture(r.capture));
  if (r.conformance) console.log(formatConformance(r.conformance));
  if (r.ok) console.log('OK: every frame came back byte-exact, every flow in order');
  else for (const p of r.problems) console.log(`FAIL: ${p}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
