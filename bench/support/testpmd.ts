/**
 * Harness for DPDK testpmd as a real third-party vhost-user peer (helper module,
 * not a test: importing it has no side effects).
 *
 * Facts it relies on (see /work/shared/peers/dpdk.md): DPDK 22.11 `dpdk-testpmd`
 * from Debian's dpdk-dev; `--no-huge -m 512` on both sides (memfd-backed memory
 * that vhost-user can pass as fds, no hugepages, no mount); `--no-pci`; a
 * distinct `--file-prefix` per process; output line-buffered with
 * `stdbuf -oL -eL`; interactive mode fed on stdin (EOF on stdin makes testpmd
 * quit, so the pipe is kept open until quit()/kill()).
 *
 * Process handling: the command line is
 *   [ip netns exec NS] timeout -k 5 SECS stdbuf -oL -eL dpdk-testpmd EAL... -- -i APP...
 * `timeout` puts itself in a new process group whose id is the spawned pid, so
 * the whole tree is killed with kill(-pid). Every live instance is also killed by
 * a process 'exit' hook (and on SIGINT/SIGTERM/SIGHUP), installed lazily on the
 * first start(); if Node itself dies, testpmd sees EOF on stdin and quits, and
 * `timeout` ends it regardless after `timeoutMs`.
 *
 * Tips: start a vhost (server) testpmd before the virtio-user that connects to
 * it, but `start` forwarding on either only once both are up (a busy forwarding
 * lcore slows the other's EAL init on its CPU ~3x); give each peer's forwarding
 * lcore its own CPU (`0@0,1@1` vs `0@1,1@0`); gate rate measurements on
 * waitIdle().
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, readdirSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export type ForwardMode = 'io' | 'rxonly' | 'txonly' | 'macswap';

export interface TestpmdOptions {
  /** Short label used in the file prefix and error messages. */
  name: string;
  /** `--vdev` arguments, e.g. `net_vhost0,iface=/tmp/x.sock,queues=2`. Port ids follow this order. */
  vdevs: string[];
  /** EAL `--lcores`: main lcore + forwarding lcore(s), e.g. `0@0,1@1` (pin the other peer with `0@1,1@0`). */
  lcores: '0@0,1@1' | '0@1,1@0' | (string & {});
  /** `--rxq=N` (default: not passed, testpmd uses 1). */
  rxq?: number;
  /** `--txq=N` (default: not passed, testpmd uses 1). */
  txq?: number;
  /** `--nb-cores=N` (default 1). */
  nbCores?: number;
  /** `--forward-mode=…` (default: testpmd's own, io). */
  forwardMode?: ForwardMode;
  /** `--txpkts=N`: frame length for txonly. */
  txpkts?: number;
  /**
   * Extra app options after `--` (e.g. `--txfreet=224`, which a multi-queue
   * split-ring virtio-user txonly sender needs to run at full speed).
   */
  extraApp?: string[];
  /** Extra EAL options before `--`. */
  extraEal?: string[];
  /** Run inside this network namespace (`ip netns exec NS …`). */
  netns?: string;
  /** Hard lifetime limit (coreutils `timeout`), default 300 000 ms. */
  timeoutMs?: number;
  /** How long to wait for the first `testpmd>` prompt, default 30 000 ms. */
  startTimeoutMs?: number;
  /** Binary, default `dpdk-testpmd` (from PATH). */
  binary?: string;
}

/** Parsed `show port stats N`. Keys: rx_packets, rx_missed, rx_bytes, rx_errors, rx_nombuf, tx_packets, tx_errors, tx_bytes, rx_pps, rx_bps, tx_pps, tx_bps. */
export type PortStats = Record<string, number>;

/** Totals parsed from the forward statistics `stop` prints. */
export interface ForwardStats {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  txDropped: number;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const PROMPT = 'testpmd> ';
const DEFAULT_CMD_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------
// Global bookkeeping (installed lazily, on the first start()).

const live = new Set<Testpmd>();
let hooksInstalled = false;

function killAllSync(): void {
  for (const t of [...live]) t.killSync();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      killAllSync();
      process.removeListener(sig, handler);
      // Keep the default behaviour (die by that signal) unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

// ---------------------------------------------------------------------------
// Helpers.

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** True when dpdk-testpmd (and the coreutils `timeout`/`stdbuf` it runs under) are on PATH. */
export function dpdkAvailable(): boolean {
  return which('dpdk-testpmd') !== undefined && which('timeout') !== undefined && which('stdbuf') !== undefined;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Why interop tests must be skipped here, or undefined when they can run. */
export function interopSkipReason(): string | undefined {
  if (process.platform !== 'linux') return `interop tests need Linux (platform is ${process.platform})`;
  if (!isRoot()) return 'interop tests need root (DPDK runtime dir /var/run/dpdk, vhost-user sockets, netns)';
  if (!dpdkAvailable()) {
    return 'dpdk-testpmd not found (install with scripts/install-peers.sh: apt-get install dpdk-dev)';
  }
  return undefined;
}

/** A fresh unix-socket path under os.tmpdir() (not created). */
export function tmpSocketPath(tag: string): string {
  const safe = tag.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 16) || 'sock';
  return join(tmpdir(), `vmq-${safe}-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
}

/** Directory EAL creates for a --file-prefix (root: /var/run/dpdk/P, else $XDG_RUNTIME_DIR/dpdk/P or /tmp/dpdk/P). */
export function dpdkRuntimeDir(prefix: string): string {
  const base = isRoot() ? '/var/run' : (process.env.XDG_RUNTIME_DIR ?? '/tmp');
  return join(base, 'dpdk', prefix);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `p`'s value, or undefined if it has not settled within `ms` (the timer is always cleared). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(r, ms, undefined)))]);
  } finally {
    clearTimeout(timer);
  }
}

function tail(s: string, n = 4000): string {
  return s.length <= n ? s : `…${s.slice(s.length - n)}`;
}

function matches(text: string, pat: RegExp | string): boolean {
  if (typeof pat === 'string') return text.includes(pat);
  pat.lastIndex = 0;
  return pat.test(text);
}

/** Parse `show port stats N` output. */
export function parsePortStats(text: string): PortStats {
  const out: PortStats = {};
  for (const m of text.matchAll(/\b([A-Za-z]+)-([A-Za-z]+):\s+(\d+)/g)) {
    out[`${m[1]!.toLowerCase()}_${m[2]!.toLowerCase()}`] = Number(m[3]);
  }
  return out;
}

/** Parse `show port xstats N` output (`name: value` lines). */
export function parseXstats(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^\s*([A-Za-z0-9_]+):\s+(\d+)\s*$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/**
 * Parse the totals `stop` prints: the "Accumulated forward statistics" block
 * (all ports), else the sum of the per-port blocks. Undefined when absent
 * (e.g. "Packet forwarding not started").
 */
export function parseForwardStats(text: string): ForwardStats | undefined {
  const pick = (block: string): ForwardStats => {
    const n = (re: RegExp): number => Number(re.exec(block)?.[1] ?? 0);
    return {
      rxPackets: n(/RX-packets:\s+(\d+)/),
      rxDropped: n(/RX-dropped:\s+(\d+)/),
      txPackets: n(/TX-packets:\s+(\d+)/),
      txDropped: n(/TX-dropped:\s+(\d+)/),
    };
  };
  const acc = text.indexOf('Accumulated forward statistics');
  if (acc >= 0) return pick(text.slice(acc));
  const blocks = text.split(/Forward statistics for port \d+/).slice(1);
  if (blocks.length === 0) return undefined;
  const sum: ForwardStats = { rxPackets: 0, rxDropped: 0, txPackets: 0, txDropped: 0 };
  for (const b of blocks) {
    const s = pick(b);
    sum.rxPackets += s.rxPackets;
    sum.rxDropped += s.rxDropped;
    sum.txPackets += s.txPackets;
    sum.txDropped += s.txDropped;
  }
  return sum;
}

function readCpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest/guest_nice are already in user/nice)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/**
 * Wait until the whole machine is below `busyPercent` CPU busy over a
 * `sampleMs` window (from /proc/stat), for at most `maxMs`. Never throws:
 * returns whether it got idle and the last measured busy percentage.
 */
export async function waitIdle(
  maxMs: number,
  busyPercent = 15,
  sampleMs = 500,
): Promise<{ idle: boolean; busyPercent: number; waitedMs: number }> {
  const t0 = Date.now();
  let last = 100;
  for (;;) {
    const a = readCpuTimes();
    await sleep(sampleMs);
    const b = readCpuTimes();
    const dt = b.total - a.total;
    last = dt > 0 ? (100 * (b.busy - a.busy)) / dt : 0;
    const waitedMs = Date.now() - t0;
    if (last < busyPercent) return { idle: true, busyPercent: last, waitedMs };
    if (waitedMs + sampleMs > maxMs) return { idle: false, busyPercent: last, waitedMs };
  }
}

// ---------------------------------------------------------------------------

interface Waiter {
  check: () => boolean;
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

let seq = 0;
let sweptStale = false;

/**
 * Remove runtime dirs left by harness testpmds whose Node owner is gone (e.g. a
 * test process killed with SIGKILL: its testpmd quits on stdin EOF, but nobody
 * removes /var/run/dpdk/<prefix>). Only touches this harness's `vmq-…-<pid>-<n>-<hex6>`
 * prefixes. Returns the removed directory names.
 */
export function sweepStaleRuntimeDirs(): string[] {
  const base = join(dpdkRuntimeDir('x'), '..');
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = /^vmq-[A-Za-z0-9_-]*-(\d+)-\d+-[0-9a-f]{6}$/.exec(n);
    if (!m) continue;
    const owner = Number(m[1]);
    if (owner === process.pid) continue;
    try {
      process.kill(owner, 0);
      continue; // owner alive
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    try {
      rmSync(join(base, n), { recursive: true, force: true });
      removed.push(n);
    } catch {
      /* best effort */
    }
  }
  return removed;
}

export class Testpmd {
  readonly name: string;
  /** EAL --file-prefix (distinct per process). */
  readonly prefix: string;
  /** Full argv spawned (argv[0] first). */
  readonly argv: readonly string[];
  /** Resolves when the process (group leader) has exited. */
  readonly exited: Promise<ExitInfo>;

  private readonly child: ChildProcess;
  private buf = '';
  /** stdout alone, where the `testpmd>` prompts are looked for. */
  private stdout = '';
  private exitInfo: ExitInfo | undefined;
  private readonly waiters = new Set<Waiter>();
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(name: string, prefix: string, argv: string[], child: ChildProcess) {
    this.name = name;
    this.prefix = prefix;
    this.argv = argv;
    this.child = child;
    this.exited = new Promise<ExitInfo>((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (this.exitInfo) return;
        this.exitInfo = { code, signal };
        live.delete(this);
        this.cleanupFiles();
        for (const w of [...this.waiters]) {
          this.waiters.delete(w);
          clearTimeout(w.timer);
          w.reject(this.error(`exited (code ${code}, signal ${signal})`));
        }
        resolve(this.exitInfo);
      };
      child.on('exit', done);
      child.on('error', (e) => {
        this.append(`\n[spawn error] ${e.message}\n`);
        done(null, null);
      });
    });
    const onData = (d: Buffer): void => this.append(d.toString('utf8'));
    // The prompt is looked for in stdout alone: a stderr line can land between "testpmd" and "> ".
    child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString('utf8');
      onData(d);
    });
    child.stderr?.on('data', onData);
    // Writing after testpmd died raises EPIPE on the pipe: surface it through exit instead.
    child.stdin?.on('error', () => {});
  }

  /** Everything testpmd printed so far (stdout and stderr, in arrival order). */
  get logs(): string {
    return this.buf;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  /**
   * Spawn testpmd and resolve once its first `testpmd>` prompt appears. Rejects
   * (with the collected output) if it exits or does not prompt in time.
   */
  static async start(opts: TestpmdOptions): Promise<Testpmd> {
    installHooks();
    if (!sweptStale) {
      sweptStale = true;
      sweepStaleRuntimeDirs();
    }
    const safeName = opts.name.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 16) || 'tp';
    const prefix = `vmq-${safeName}-${process.pid}-${++seq}-${randomBytes(3).toString('hex')}`;
    const timeoutS = Math.max(1, Math.ceil((opts.timeoutMs ?? 300_000) / 1000));
    const eal = [
      '--no-huge',
      '-m',
      '512',
      '--no-pci',
      '--file-prefix',
      prefix,
      '--lcores',
      opts.lcores,
      ...opts.vdevs.flatMap((v) => ['--vdev', v]),
      ...(opts.extraEal ?? []),
    ];
    const app = ['-i', '--total-num-mbufs=32768', `--nb-cores=${opts.nbCores ?? 1}`];
    if (opts.rxq !== undefined) app.push(`--rxq=${opts.rxq}`);
    if (opts.txq !== undefined) app.push(`--txq=${opts.txq}`);
    if (opts.forwardMode !== undefined) app.push(`--forward-mode=${opts.forwardMode}`);
    if (opts.txpkts !== undefined) app.push(`--txpkts=${opts.txpkts}`);
    app.push(...(opts.extraApp ?? []));

    const argv = [
      ...(opts.netns ? ['ip', 'netns', 'exec', opts.netns] : []),
      'timeout',
      '-k',
      '5',
      String(timeoutS),
      'stdbuf',
      '-oL',
      '-eL',
      opts.binary ?? 'dpdk-testpmd',
      ...eal,
      '--',
      ...app,
    ];
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group (timeout also makes one): kill(-pid) reaches everything
    });
    const t = new Testpmd(opts.name, prefix, argv, child);
    live.add(t);
    try {
      await t.waitFor(() => t.stdout.includes(PROMPT), opts.startTimeoutMs ?? 30_000, 'first prompt');
    } catch (e) {
      await t.kill();
      const why = (e as Error).message.split('\n', 1)[0]!.replace(`testpmd[${opts.name}] `, '');
      throw t.error(`failed to start: ${why}\n$ ${argv.join(' ')}`);
    }
    return t;
  }

  /**
   * Send one command line; resolve with the output printed since it was sent,
   * once the next prompt has appeared and (if given) `waitFor` has matched that
   * output. Commands are serialised. `quit` is special: it waits for exit.
   */
  cmd(line: string, waitFor?: RegExp | string, timeoutMs = DEFAULT_CMD_TIMEOUT_MS): Promise<string> {
    const run = async (): Promise<string> => {
      if (!this.alive) throw this.error(`cannot send '${line}': not running`);
      const from = this.buf.length;
      const fromOut = this.stdout.length;
      this.child.stdin!.write(`${line}\n`);
      if (line.trim() === 'quit') {
        if ((await within(this.exited, timeoutMs)) === undefined) {
          throw this.error(`no exit ${timeoutMs} ms after 'quit'`);
        }
        return this.buf.slice(from);
      }
      await this.waitFor(
        () => {
          const out = this.buf.slice(from);
          return this.stdout.slice(fromOut).includes(PROMPT) && (waitFor === undefined || matches(out, waitFor));
        },
        timeoutMs,
        `'${line}'${waitFor !== undefined ? ` (waiting for ${String(waitFor)})` : ''}`,
      );
      const out = this.buf.slice(from);
      // Drop the echoed command and the trailing prompt.
      let text = out.slice(0, out.lastIndexOf(PROMPT));
      if (text.startsWith(line)) text = text.slice(line.length);
      return text.replace(/^\r?\n/, '');
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** `show port stats N`, parsed. */
  async portStats(port: number): Promise<PortStats> {
    const out = await this.cmd(`show port stats ${port}`, /NIC statistics for port/);
    const s = parsePortStats(out);
    if (!('rx_packets' in s)) throw this.error(`unexpected 'show port stats ${port}' output:\n${out}`);
    return s;
  }

  /** `show port xstats N`, parsed into name → value (e.g. rx_q0_packets, tx_q1_good_packets). Throws if unavailable. */
  async xstats(port: number): Promise<Record<string, number>> {
    const out = await this.cmd(`show port xstats ${port}`, /extended statistics for port/);
    const s = parseXstats(out);
    if (Object.keys(s).length === 0) throw this.error(`no xstats for port ${port}:\n${out}`);
    return s;
  }

  /** `start` forwarding (`start tx_first` when txFirst). */
  start(txFirst = false): Promise<string> {
    return this.cmd(txFirst ? 'start tx_first' : 'start');
  }

  /** `stop` forwarding; returns the printed text (see parseForwardStats). */
  stop(): Promise<string> {
    return this.cmd('stop', undefined, 15_000);
  }

  /**
   * Graceful end: `stop`, `quit`, wait up to `timeoutMs` for exit, then SIGKILL
   * the process group. Always removes the --file-prefix runtime dir. Idempotent.
   */
  async quit(timeoutMs = 10_000): Promise<ExitInfo> {
    if (this.alive) {
      const deadline = Date.now() + timeoutMs;
      try {
        await this.cmd('stop', undefined, Math.min(5_000, timeoutMs));
      } catch {
        /* not fatal: quit stops forwarding too */
      }
      if (this.alive) {
        await this.queue; // let any queued command settle first
        this.child.stdin?.write('quit\n');
        this.child.stdin?.end();
        if ((await within(this.exited, Math.max(0, deadline - Date.now()))) === undefined) {
          this.append(`\n[harness] no exit ${timeoutMs} ms after quit: SIGKILL\n`);
        }
      }
    }
    return this.kill();
  }

  /** SIGKILL the whole process group now (if still running) and clean up. */
  async kill(): Promise<ExitInfo> {
    this.killSync();
    const r = await within(this.exited, 5_000);
    this.cleanupFiles();
    return r ?? { code: null, signal: 'SIGKILL' };
  }

  /** Synchronous kill + cleanup (used by the process exit hook). */
  killSync(): void {
    const pid = this.child.pid;
    if (this.alive && pid !== undefined) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    this.child.stdin?.destroy();
    live.delete(this);
    this.cleanupFiles();
  }

  /** Output printed since character offset `from` of `logs`. */
  since(from: number): string {
    return this.buf.slice(from);
  }

  /** Wait until `pattern` appears in the output after offset `from` (default: anywhere). */
  waitForOutput(pattern: RegExp | string, timeoutMs = DEFAULT_CMD_TIMEOUT_MS, from = 0): Promise<string> {
    return this.waitFor(() => matches(this.buf.slice(from), pattern), timeoutMs, String(pattern)).then(() =>
      this.buf.slice(from),
    );
  }

  // -------------------------------------------------------------------------

  private append(s: string): void {
    this.buf += s;
    for (const w of [...this.waiters]) {
      if (w.check()) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  }

  private waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    if (!this.alive) return Promise.reject(this.error(`exited while waiting for ${what}`));
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        check,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(this.error(`timed out after ${timeoutMs} ms waiting for ${what}`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  private error(msg: string): Error {
    return new Error(`testpmd[${this.name}] ${msg}\n--- output (tail) ---\n${tail(this.buf)}`);
  }

  private cleanupFiles(): void {
    try {
      rmSync(dpdkRuntimeDir(this.prefix), { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
}
