/**
 * `npm run bench`: packet rates of the rings on the local transport, for
 * each ring variant (split, split with VIRTIO_F_IN_ORDER, packed, packed
 * with in-order: spec §2.7, §2.8) side by side.
 *
 * Prints one table (or, with --json, one JSON document) with, per frame size:
 *
 * - copy:     the upper limit: one thread copies the same frame per packet
 *             from a private buffer into a guest-like SharedArrayBuffer
 *             (stamping a sequence number) and from there into a sink
 *             buffer, with the same copyBytes the data path uses. No rings.
 * - one-way:  driver TX writes each frame into guest memory (bench source:
 *             prebuilt frame + sequence number), the device consumes it with
 *             the 'sink' backend (copies every byte out). Counted as device
 *             txPackets over the window.
 * - loopback: TX -> device -> RX with the 'loopback' backend; the driver
 *             reads each received frame's sequence number. Counted as
 *             driver rxPackets (completed round trips) over the window.
 *
 * for 1, 2 and 4 queue pairs (each pair = one driver worker + one device
 * worker) in busy-poll and notify (Atomics.wait + EVENT_IDX) modes.
 *
 * CPU cost comes from process.cpuUsage() deltas (all threads of the
 * process). Before every configuration the bench waits (bounded) for the
 * machine to be idle, and every row reports the CPU share other processes
 * took during its window (/proc/stat busy time minus our own), so noisy rows
 * can be discarded.
 *
 * Options: --quick (short windows, 64-byte frames, 1 and 2 pairs), --seconds N
 * (measuring window per configuration), --json. For experiments: --sizes,
 * --pairs, --modes, --tests, --rings (comma lists; rings: split, split-inorder,
 * packed, packed-inorder; by default the in-order variants are measured at
 * the first --pairs value only), --queue-size, --budget, --warmup,
 * --no-idle-wait, --repeat N (measure each row N times, keep the run other
 * processes disturbed least).
 *
 * Rates vary from run to run on a shared 2-CPU VM (the same configuration
 * with nothing else running has measured 4.5 and 9.5 Mpps): read the
 * `spread %` and `others %` columns before comparing rows.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { LocalNet } from '../src/transport/local/local-net.js';
import { DevStat, DrvStat } from '../src/net/stats.js';
import { benchTraffic, BENCH_SEQ_OFF } from '../src/traffic/bench-source.js';
import { TrafficGenerator } from '../src/netdev/generator.js';
import { copyBytes, type Bytes } from '../src/virtio/copy.js';

type Test = 'copy' | 'one-way' | 'loopback';
type Mode = 'busy' | 'notify';
type RingVariant = 'split' | 'split-inorder' | 'packed' | 'packed-inorder';
const RING_VARIANTS: RingVariant[] = ['split', 'split-inorder', 'packed', 'packed-inorder'];

interface Options {
  quick: boolean;
  seconds: number;
  warmup: number;
  json: boolean;
  sizes: number[];
  pairs: number[];
  modes: Mode[];
  tests: Test[];
  rings: RingVariant[];
  /** --rings given: every variant at every pair count. */
  ringsExplicit: boolean;
  queueSize: number;
  budget: number;
  idleWait: boolean;
  repeat: number;
}

export interface Row {
  test: Test;
  /** Ring variant ('-' for the copy baseline). */
  ring: RingVariant | '-';
  size: number;
  pairs: number;
  mode: Mode | '-';
  /** Measuring window actually used (seconds). */
  seconds: number;
  packets: number;
  mpps: number;
  mppsPerPair: number;
  /** (max - min) / mean of the packet rate over 5 equal parts of the window: how steady the run was. */
  spread: number;
  /** CPU seconds used by this process (all threads) per wall second. */
  cpuCores: number;
  /** Packets per CPU-second (millions). */
  mppsPerCpuS: number;
  /** For 2 and 4 pairs: packets/CPU-s relative to 1 pair of the same test, size and mode. */
  cpuEfficiency: number | null;
  /** Share of all CPUs other processes used during the window (0..1; NaN without /proc). */
  otherCpu: number;
  /** Whether the idle gate passed before the configuration; null when it was not asked (--no-idle-wait). */
  idleBefore: boolean | null;
  /** Seconds spent waiting for the machine to be idle before this row. */
  idleWaitS: number;
  /** More worker threads than CPUs (busy mode): short window, collapse expected. */
  oversubscribed: boolean;
  /** Per 1000 packets in the window: driver kicks sent, device notifications sent, worker wake-ups (device + driver). */
  kicksPerK: number;
  notificationsPerK: number;
  wakeupsPerK: number;
  /** Loopback: frames whose sequence number was not the next one (should be 0). */
  outOfOrder: number;
  errors: string[];
}

const CPUS = availableParallelism();

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false, seconds: NaN, warmup: NaN, json: false, sizes: [], pairs: [], modes: [], tests: [], rings: [], ringsExplicit: false,
    queueSize: 1024, budget: 64, idleWait: true, repeat: 1,
  };
  const list = (v: string | undefined) => (v ?? '').split(',').filter((x) => x !== '');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--json': o.json = true; break;
      case '--seconds': o.seconds = Number(val()); break;
      case '--warmup': o.warmup = Number(val()); break;
      case '--sizes': o.sizes = list(val()).map(Number); break;
      case '--pairs': o.pairs = list(val()).map(Number); break;
      case '--modes': o.modes = list(val()) as Mode[]; break;
      case '--tests': o.tests = list(val()) as Test[]; break;
      case '--rings': o.rings = list(val()) as RingVariant[]; o.ringsExplicit = true; break;
      case '--queue-size': o.queueSize = Number(val()); break;
      case '--budget': o.budget = Number(val()); break;
      case '--no-idle-wait': o.idleWait = false; break;
      case '--repeat': o.repeat = Number(val()); break;
      case '-h': case '--help':
        console.log('usage: node dist/bench/rings.js [--quick] [--seconds N] [--json] [--sizes 64,1500] [--pairs 1,2,4] [--modes busy,notify] [--tests copy,one-way,loopback] [--rings split,split-inorder,packed,packed-inorder] [--queue-size 1024] [--budget 64] [--warmup S] [--no-idle-wait] [--repeat N]');
        process.exit(0);
        break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  if (Number.isNaN(o.seconds)) o.seconds = o.quick ? 0.3 : 1.5;
  if (Number.isNaN(o.warmup)) o.warmup = o.quick ? 0.2 : 0.5;
  if (!(o.seconds > 0) || !(o.warmup >= 0)) throw new Error('--seconds must be > 0 and --warmup >= 0');
  if (!(Number.isInteger(o.repeat) && o.repeat >= 1)) throw new Error('--repeat must be a positive integer');
  if (o.sizes.length === 0) o.sizes = o.quick ? [64] : [64, 1500];
  if (o.pairs.length === 0) o.pairs = o.quick ? [1, 2] : [1, 2, 4];
  if (o.modes.length === 0) o.modes = ['busy', 'notify'];
  if (o.tests.length === 0) o.tests = ['copy', 'one-way', 'loopback'];
  if (o.rings.length === 0) o.rings = RING_VARIANTS;
  for (const r of o.rings) if (!RING_VARIANTS.includes(r)) throw new Error(`ring ${r}: one of ${RING_VARIANTS.join(', ')}`);
  for (const s of o.sizes) if (!(Number.isInteger(s) && s >= 60 && s <= 1514)) throw new Error(`frame size ${s} outside 60..1514`);
  for (const p of o.pairs) if (!(Number.isInteger(p) && p >= 1 && p <= 64)) throw new Error(`pairs ${p} outside 1..64`);
  for (const m of o.modes) if (m !== 'busy' && m !== 'notify') throw new Error(`mode ${m}: busy or notify`);
  for (const t of o.tests) if (t !== 'copy' && t !== 'one-way' && t !== 'loopback') throw new Error(`test ${t}: copy, one-way or loopback`);
  return o;
}

// ---- CPU accounting --------------------------------------------------------

/** Aggregate CPU time from /proc/stat, in clock ticks (USER_HZ). */
interface CpuTimes {
  busy: number;
  total: number;
}

function readProcStat(): CpuTimes | null {
  try {
    const line = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0];
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - f[4], total };
  } catch {
    return null;
  }
}

/** utime + stime of this process (every thread), in clock ticks. */
function readSelfTicks(): number | null {
  try {
    const s = readFileSync('/proc/self/stat', 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // fields 14 and 15 of proc(5)
  } catch {
    return null;
  }
}

/** A point in time for CPU accounting. */
interface Mark {
  wall: number;
  cpu: NodeJS.CpuUsage;
  sys: CpuTimes | null;
  self: number | null;
}

function mark(): Mark {
  return { wall: performance.now(), cpu: process.cpuUsage(), sys: readProcStat(), self: readSelfTicks() };
}

/** Seconds of wall time, our CPU seconds, and the share of all CPUs others used between two marks. */
function between(a: Mark, b: Mark): { wall: number; cpu: number; other: number } {
  const wall = (b.wall - a.wall) / 1000;
  const cpu = (b.cpu.user - a.cpu.user + b.cpu.system - a.cpu.system) / 1e6;
  let other = NaN;
  if (a.sys && b.sys && a.self !== null && b.self !== null) {
    const total = b.sys.total - a.sys.total;
    const busy = b.sys.busy - a.sys.busy;
    if (total > 0) other = Math.max(0, (busy - (b.self - a.self)) / total);
  }
  return { wall, cpu, other };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Wait (up to `maxS`) until the whole machine is idle: under `threshold` of
 * all CPUs busy over a 0.5 s sample while this process does nothing.
 * Returns whether it got there and how long it waited.
 */
async function waitIdle(maxS: number, threshold = 0.1): Promise<{ idle: boolean; waited: number }> {
  const t0 = performance.now();
  for (;;) {
    const a = readProcStat();
    if (a === null) return { idle: true, waited: 0 }; // no /proc: cannot tell, do not wait
    await sleep(500);
    const b = readProcStat()!;
    const total = b.total - a.total;
    const share = total > 0 ? (b.busy - a.busy) / total : 0;
    const waited = (performance.now() - t0) / 1000;
    if (share < threshold) return { idle: true, waited };
    if (waited + 0.5 > maxS) return { idle: false, waited };
  }
}

// ---- the copy baseline -----------------------------------------------------

/**
 * Copy-only upper bound in this thread, per packet: prebuilt frame -> a
 * guest-like SharedArrayBuffer slot (2 KiB slots after a 12-byte header, as
 * the driver's TX buffers), stamp the sequence number, then slot -> sink
 * buffer; the same copyBytes and the same alignments as the data path.
 */
function copyBaseline(size: number, seconds: number, warmup: number, queueSize: number): { packets: number; parts: number[]; m0: Mark; m1: Mark } {
  const hdr = 12;
  const slot = 2048;
  const at = hdr & 7; // frame at the same offset modulo 8 as in the slots (see BenchSource)
  const fb = new ArrayBuffer((at + size + 7) & ~7);
  const frame: Bytes = { u8: new Uint8Array(fb), i32: new Int32Array(fb) };
  new TrafficGenerator({ flows: 1, frameSize: size }).writeFrame(0, 0, frame.u8, at);
  const gb = new SharedArrayBuffer(queueSize * slot);
  const guest: Bytes = { u8: new Uint8Array(gb), i32: new Int32Array(gb) };
  const sb = new ArrayBuffer(65536 + 64);
  const sink: Bytes = { u8: new Uint8Array(sb), i32: new Int32Array(sb) };
  let seq = 0;
  let check = 0;
  const batch = (): void => {
    const g = guest.u8;
    for (let i = 0; i < queueSize; i++) {
      const o = i * slot + hdr;
      copyBytes(guest, o, frame, at, size);
      const s = o + BENCH_SEQ_OFF;
      g[s] = seq >>> 24; g[s + 1] = seq >>> 16; g[s + 2] = seq >>> 8; g[s + 3] = seq;
      seq = (seq + 1) | 0;
      const d = o & 7; // as SinkNetdev
      copyBytes(sink, d, guest, o, size);
      check ^= sink.i32[d >>> 2];
    }
  };
  const until = (ms: number) => {
    const end = performance.now() + ms;
    let n = 0;
    do { batch(); n += queueSize; } while (performance.now() < end);
    return n;
  };
  until(warmup * 1000);
  const m0 = mark();
  const parts: number[] = [];
  let packets = 0;
  for (let i = 0; i < PARTS; i++) {
    const t = performance.now();
    const n = until((seconds * 1000) / PARTS);
    parts.push(n / (performance.now() - t) / 1e3);
    packets += n;
  }
  const m1 = mark();
  if (check === 0x7fffffff) console.error(''); // keep the copies observable
  return { packets, parts, m0, m1 };
}

// ---- ring configurations ---------------------------------------------------

interface NetResult {
  packets: number;
  /** Packet rate of each part of the window (Mpps). */
  parts: number[];
  m0: Mark;
  m1: Mark;
  kicks: number;
  notifications: number;
  wakeups: number;
  outOfOrder: number;
  errors: string[];
}

const PARTS = 5;

async function runNet(test: 'one-way' | 'loopback', ring: RingVariant, size: number, pairs: number, mode: Mode, seconds: number, warmup: number, o: Options): Promise<NetResult> {
  const net = new LocalNet({
    pairs, queueSize: o.queueSize, mode, budget: o.budget,
    ring: ring.startsWith('packed') ? 'packed' : 'split', inOrder: ring.endsWith('-inorder'),
    netdev: { kind: test === 'one-way' ? 'sink' : 'loopback' },
    source: () => benchTraffic(size, test === 'loopback'),
  });
  const errors: string[] = [];
  net.on('queue-error', (e) => errors.push(`${e.side} queue ${e.queue}: ${e.code}: ${e.message}`));
  net.on('control-error', (m) => errors.push(`control: ${m}`));
  await net.start();
  const dev = net.devStats, drv = net.drvStats;
  const count = test === 'one-way' ? () => dev.total(DevStat.txPackets) : () => drv.total(DrvStat.rxPackets);
  try {
    // Warm-up: until traffic flows on every pair, then the fixed warm-up time (JIT, caches, steady state).
    const flowDeadline = performance.now() + 5000;
    for (;;) {
      let all = true;
      for (let p = 0; p < pairs; p++) {
        if ((test === 'one-way' ? dev.get(p, DevStat.txPackets) : drv.get(p, DrvStat.rxPackets)) === 0) all = false;
      }
      if (all || performance.now() > flowDeadline || errors.length > 0) break;
      await sleep(5);
    }
    await sleep(warmup * 1000);
    const side = () => ({
      kicks: drv.total(DrvStat.kicksSent), notifications: dev.total(DevStat.notifySent),
      wakeups: dev.total(DevStat.kicks) + drv.total(DrvStat.interrupts),
    });
    const s0 = side();
    const c0 = count();
    const m0 = mark();
    const parts: number[] = [];
    let c = c0, t = m0.wall;
    for (let i = 1; i <= PARTS; i++) {
      // Sleep to the part's end on the wall clock (a late timer shortens the next part, not the window).
      await sleep(Math.max(0, m0.wall + (i * seconds * 1000) / PARTS - performance.now()));
      const ci = count(), ti = performance.now();
      parts.push((ci - c) / (ti - t) / 1e3);
      c = ci;
      t = ti;
    }
    const m1 = mark();
    const s1 = side();
    const packets = c - c0;
    m1.wall = t; // the last count was taken at t
    return {
      packets, parts, m0, m1,
      kicks: s1.kicks - s0.kicks, notifications: s1.notifications - s0.notifications, wakeups: s1.wakeups - s0.wakeups,
      outOfOrder: drv.total(DrvStat.rxOutOfOrder), errors,
    };
  } finally {
    await net.stop();
    if (drv.total(DrvStat.rxBad) > 0) errors.push(`${drv.total(DrvStat.rxBad)} bad frames`);
  }
}

// ---- output ----------------------------------------------------------------

function fmt(x: number | null, digits = 2): string {
  if (x === null || Number.isNaN(x)) return '-';
  return x.toFixed(digits);
}

function table(rows: Row[], o: Options, notes: string[]): string {
  const head = ['test', 'ring', 'size', 'pairs', 'mode', 'win s', 'Mpps', 'Mpps/pair', 'spread %', 'CPUs', 'Mpkt/CPU-s', 'eff vs 1p', 'others %', 'note'];
  const left = new Set([0, 1, 2, 4, head.length - 1]);
  const body = rows.map((r) => [
    r.test, r.ring, String(r.size), r.test === 'copy' ? '-' : String(r.pairs), r.mode, fmt(r.seconds, 1),
    fmt(r.mpps, 3), r.test === 'copy' ? '-' : fmt(r.mppsPerPair, 3), fmt(r.spread * 100, 0), fmt(r.cpuCores, 2), fmt(r.mppsPerCpuS, 3),
    fmt(r.cpuEfficiency, 2), fmt(r.otherCpu * 100, 1),
    [r.oversubscribed ? 'oversub' : '', r.idleBefore === false ? 'not-idle' : '', r.otherCpu > 0.1 ? 'NOISY' : '',
      r.outOfOrder > 0 ? `ooo=${r.outOfOrder}` : '', r.errors.length > 0 ? 'ERR' : ''].filter((x) => x !== '').join(','),
  ]);
  const all = [head, ...body];
  const w = head.map((_, i) => Math.max(...all.map((row) => row[i].length)));
  const line = (row: string[]) => row.map((c, i) => (left.has(i) ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd();
  return [
    `virtio-mq ring bench: node ${process.version}, ${CPUS} CPUs, queue size ${o.queueSize}, budget ${o.budget}, window ${o.seconds} s (warm-up ${o.warmup} s)${o.repeat > 1 ? `, quietest of ${o.repeat} runs per row` : ''}`,
    line(head),
    w.map((n) => '-'.repeat(n)).join('  '),
    ...body.map(line),
    '',
    ...notes.map((n) => `note: ${n}`),
  ].join('\n');
}

function spreadOf(parts: number[]): number {
  if (parts.length < 2) return 0;
  const mean = parts.reduce((a, b) => a + b, 0) / parts.length;
  return mean > 0 ? (Math.max(...parts) - Math.min(...parts)) / mean : 0;
}

// ---- main ------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const rows: Row[] = [];
  const tStart = performance.now();
  // Idle gating: up to 10 s before each configuration, at most 60 s in all
  // (5 s with --quick) so the bench stays bounded on a busy machine; once
  // that is spent, one 0.5 s sample per configuration still tells idle or not.
  let idleBudget = o.quick ? 5 : 60;
  const gate = async (): Promise<{ idle: boolean | null; waited: number }> => {
    if (!o.idleWait) return { idle: null, waited: 0 };
    const r = await waitIdle(Math.max(0.5, Math.min(10, idleBudget)));
    idleBudget -= r.waited;
    return r;
  };
  const progress = (s: string) => { if (!o.json) process.stderr.write(s); };
  // --repeat N: measure each configuration N times and keep the run other
  // processes disturbed least (not the fastest: that would favour lucky runs).
  const quietest = async (measure: () => Promise<Row>): Promise<Row> => {
    let best: Row | null = null;
    for (let i = 0; i < o.repeat; i++) {
      const r = await measure();
      const noise = (x: Row) => (Number.isNaN(x.otherCpu) ? 0 : x.otherCpu);
      if (best === null || noise(r) < noise(best) - 0.005 || (Math.abs(noise(r) - noise(best)) <= 0.005 && r.mpps > best.mpps)) best = r;
    }
    return best!;
  };
  const oversubShort = Math.min(o.seconds, 0.5);

  for (const size of o.sizes) {
    if (o.tests.includes('copy')) {
      progress(`copy ${size} B ... `);
      const row = await quietest(async () => {
        const g = await gate();
        const r = copyBaseline(size, o.seconds, o.warmup, o.queueSize);
        const b = between(r.m0, r.m1);
        const mpps = r.packets / b.wall / 1e6;
        return {
          test: 'copy', ring: '-', size, pairs: 1, mode: '-', seconds: b.wall, packets: r.packets, mpps, mppsPerPair: mpps,
          spread: spreadOf(r.parts), cpuCores: b.cpu / b.wall, mppsPerCpuS: b.cpu > 0 ? r.packets / b.cpu / 1e6 : NaN, cpuEfficiency: null,
          otherCpu: b.other, idleBefore: g.idle, idleWaitS: g.waited, oversubscribed: false,
          kicksPerK: 0, notificationsPerK: 0, wakeupsPerK: 0, outOfOrder: 0, errors: [],
        };
      });
      rows.push(row);
      progress(`${fmt(row.mpps, 3)} Mpps\n`);
    }
    for (const test of ['one-way', 'loopback'] as const) {
      if (!o.tests.includes(test)) continue;
      for (const mode of o.modes) {
        for (const pairs of o.pairs) {
          for (const ring of o.rings) {
            if (!o.ringsExplicit && ring.endsWith('-inorder') && pairs !== o.pairs[0]) continue;
            const oversub = mode === 'busy' && 2 * pairs > CPUS;
            const seconds = oversub ? oversubShort : o.seconds;
            const warmup = oversub ? Math.min(o.warmup, 0.3) : o.warmup;
            progress(`${test} ${ring} ${size} B ${pairs} pair(s) ${mode} ... `);
            const row = await quietest(async () => {
              const g = await gate();
              const r = await runNet(test, ring, size, pairs, mode, seconds, warmup, o);
              const b = between(r.m0, r.m1);
              const mpps = r.packets / b.wall / 1e6;
              const perK = (n: number) => (r.packets > 0 ? (1000 * n) / r.packets : NaN);
              return {
                test, ring, size, pairs, mode, seconds: b.wall, packets: r.packets, mpps, mppsPerPair: mpps / pairs,
                spread: spreadOf(r.parts), cpuCores: b.cpu / b.wall, mppsPerCpuS: b.cpu > 0 ? r.packets / b.cpu / 1e6 : NaN,
                cpuEfficiency: null, otherCpu: b.other, idleBefore: g.idle, idleWaitS: g.waited, oversubscribed: oversub,
                kicksPerK: perK(r.kicks), notificationsPerK: perK(r.notifications), wakeupsPerK: perK(r.wakeups),
                outOfOrder: r.outOfOrder, errors: r.errors,
              } satisfies Row;
            });
            if (pairs > 1) {
              const one = rows.find((x) => x.test === test && x.ring === ring && x.size === size && x.mode === mode && x.pairs === 1);
              if (one && one.mppsPerCpuS > 0) row.cpuEfficiency = row.mppsPerCpuS / one.mppsPerCpuS;
            }
            rows.push(row);
            progress(`${fmt(row.mpps, 3)} Mpps${row.errors.length ? ` (${row.errors.join('; ')})` : ''}\n`);
          }
        }
      }
    }
  }

  const total = (performance.now() - tStart) / 1000;
  const notes = [
    `Mpps: one-way = device txPackets per second of window (the sink netdev copies every byte out, as testpmd rxonly into an mbuf); loopback = driver rxPackets (complete TX -> device -> RX round trips, the driver reads each frame's sequence number); copy = one thread doing only the per-packet copies (frame -> guest SharedArrayBuffer -> sink, same copyBytes and alignment, no rings): the upper limit of one thread, while a pair splits those two copies over its two threads.`,
    `each pair = 2 worker threads (driver + device). Busy mode with more threads than the ${CPUS} CPUs ('oversub') spins against descheduled peers and collapses: measured anyway, with a ${oversubShort} s window.`,
    `spread % = (max - min) / mean of the rate over ${PARTS} equal parts of the window. CPUs = CPU seconds of this process (all threads, process.cpuUsage) per wall second; Mpkt/CPU-s = packets per CPU second; eff vs 1p = Mpkt/CPU-s relative to 1 pair of the same test, ring, size and mode (target >= 0.95 for 2 pairs).`,
    `others % = share of all ${CPUS} CPUs that other processes used during the window (/proc/stat busy minus this process's /proc/self/stat time). Rows marked NOISY (> 10 %) or not-idle (the idle gate gave up waiting) are unreliable: rerun them.`,
    `on a shared VM the same row varies from run to run (idle machine, 1 pair, 64 B: 6.8 to 9.6 Mpps one-way) more than the spread column shows, so one run's eff vs 1p is indicative only; --repeat N keeps the least disturbed of N runs.`,
    `loopback sources keep at most one receiveq (${o.queueSize}) of frames in flight, so looped-back frames never wait in the device's RX backlog (an extra copy each).`,
    `queue size ${o.queueSize}, budget ${o.budget} frames per poll round, EVENT_IDX on; total bench time ${total.toFixed(1)} s.`,
  ];
  for (const r of rows) for (const e of r.errors) notes.push(`error in ${r.test} ${r.ring} ${r.size} B ${r.pairs}p ${r.mode}: ${e}`);

  if (o.json) {
    console.log(JSON.stringify({
      node: process.version, cpus: CPUS, queueSize: o.queueSize, budget: o.budget, seconds: o.seconds, warmup: o.warmup, repeat: o.repeat,
      totalSeconds: total, rows, notes,
    }, null, 2));
  } else {
    console.log(table(rows, o, notes));
  }
}

main().catch((e: unknown) => {
  console.error(`bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  process.exitCode = 1;
});
