/**
 * Network namespaces for the benches and interop tests that move real Linux
 * traffic (ping, iperf3) through virtio-mq and its peers. A `NetnsLab`
 * creates namespaces, veth pairs, vhost-user socket paths and processes
 * under names unique to this process, and `close()` removes all of it,
 * newest first, also when the run failed half-way:
 *
 *   const lab = new NetnsLab('S', 'p');            // vmqSA<pid>p, vmqsa<pid>p, …
 *   try {
 *     const a = lab.netns('A'), b = lab.netns('B');
 *     const serve = lab.cli(a, ['serve', '--socket', lab.socket('x'), '--netdev', `tap,ifname=${lab.ifname('a')}`]);
 *     if (!(await serve.waitFor('listening on', 15_000))) throw new Error(serve.log);
 *     a.up(lab.ifname('a'), '198.18.1.1/24');
 *     const bps = await iperf3(a, '198.18.1.1', b, { streams: 4, seconds: 2 });
 *   } finally {
 *     await lab.close();
 *   }
 *
 * It lives under bench/ because benches may not import from test/; the
 * interop tests use it through test/interop/netns.ts. Nothing here asserts:
 * the helpers return what a test asserts on or a bench prints, and throw
 * (with the command's stderr) only when a set-up step fails. Needs root and
 * iproute2; iperf3 for `iperf3()`.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** The CLI (`dist/src/cli/main.js`). */
export const cliPath = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Runs `args[0]` with the rest as arguments: its stdout (utf8). @throws Error (with stderr) on a non-zero exit or after `timeout` ms. */
export function run(args: string[], timeout = 30_000): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Polls `cond` every `everyMs` ms until it holds or `ms` ms have passed.
 * @returns whether it holds at the end (the caller asserts or throws).
 */
export async function waitUntil(cond: () => boolean, ms: number, everyMs = 50): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond() && Date.now() < until) await sleep(everyMs);
  return cond();
}

/**
 * Stops a child: `signal` (SIGTERM unless told), then SIGKILL if it has not
 * exited `graceMs` ms later; resolves once it has exited. Returns at once
 * for a child already gone (or never started).
 * @returns its exit code (null when a signal ended it).
 */
export async function stopProcess(p: ChildProcess | undefined, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null;
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  p.kill(signal);
  const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
  const code = await exited;
  clearTimeout(t);
  return code;
}

/** A network namespace (`ip netns add`); `delete()` removes it (its TAPs and veths go with it). */
export class Netns {
  /** Creates the namespace. @throws Error when `ip netns add` fails (e.g. the name exists). */
  constructor(readonly name: string) {
    run(['ip', 'netns', 'add', name]);
  }

  /** Runs `args` inside the namespace: its stdout. @throws on a non-zero exit or after `timeout` ms. */
  exec(args: string[], timeout = 30_000): string {
    return run(['ip', 'netns', 'exec', this.name, ...args], timeout);
  }

  /** Starts `args` inside the namespace (`ip netns exec` execs it: the child's pid is the command's). */
  spawn(args: string[], stdio: ('ignore' | 'pipe')[] = ['ignore', 'ignore', 'pipe']): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, ...args], { stdio });
  }

  /** Gives interface `ifname` (already in this namespace) the address `cidr` (e.g. `198.18.7.1/24`) and sets it up. */
  up(ifname: string, cidr: string): void {
    this.exec(['ip', 'addr', 'add', cidr, 'dev', ifname]);
    this.exec(['ip', 'link', 'set', ifname, 'up']);
  }

  /**
   * `ping -c 3 -W 3 [extra…] addr` from this namespace: its output (a test
   * asserts `/ 0% packet loss/`). @throws when ping exits non-zero (a reply lost).
   */
  ping(addr: string, extra: string[] = []): string {
    return this.exec(['ping', '-c', '3', '-W', '3', ...extra, addr]);
  }

  /** Removes the namespace; nothing happens when it is already gone. */
  delete(): void {
    try {
      run(['ip', 'netns', 'del', this.name]);
    } catch {
      /* not there */
    }
  }
}

/** A child process with its output collected: what it printed so far and a wait for a line in it. */
export class LoggedProcess {
  /** stderr (and stdout, when piped) so far. */
  log = '';

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (b: Buffer) => (this.log += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (this.log += b.toString()));
  }

  /** Waits until the output holds `what` (a substring or a pattern), `ms` at the most: whether it does. */
  waitFor(what: string | RegExp, ms: number): Promise<boolean> {
    return waitUntil(() => (typeof what === 'string' ? this.log.includes(what) : what.test(this.log)), ms);
  }

  /** SIGTERM, SIGKILL 5 s later: the exit code (null when a signal ended it). */
  stop(): Promise<number | null> {
    return stopProcess(this.child);
  }
}

/**
 * Everything one test or bench run creates on the host, under names unique
 * to this process: `vmq<tag><suffix><pid><variant>`, `tag` naming the test
 * (e.g. `S`) and `variant` one of its runs (e.g. the ring format's first
 * letter). `close()` undoes every step in reverse order.
 */
export class NetnsLab {
  private readonly undo: (() => unknown)[] = [];

  constructor(readonly tag: string, readonly variant = '') {}

  /**
   * A namespace name: `vmq${tag}${suffix}${pid}${variant}`.
   * @throws RangeError when longer than an interface name may be (15 bytes, IFNAMSIZ - 1).
   */
  name(suffix: string): string {
    return NetnsLab.fit(`vmq${this.tag}${suffix}${process.pid}${this.variant}`);
  }

  /** An interface (TAP, veth) name: as `name()`, the tag in lower case. @throws RangeError as `name()`. */
  ifname(suffix: string): string {
    return NetnsLab.fit(`vmq${this.tag.toLowerCase()}${suffix}${process.pid}${this.variant}`);
  }

  private static fit(n: string): string {
    if (Buffer.byteLength(n) > 15) throw new RangeError(`name ${n} is longer than an interface name may be (15 bytes)`);
    return n;
  }

  /** Creates namespace `name(suffix)`; deleted by `close()`. */
  netns(suffix: string): Netns {
    const ns = new Netns(this.name(suffix));
    this.defer(() => ns.delete());
    return ns;
  }

  /** A veth pair, end `ifA` in `a` and `ifB` in `b` (both down, no address); goes with the namespaces. */
  veth(a: Netns, ifA: string, b: Netns, ifB: string): void {
    run(['ip', 'link', 'add', ifA, 'netns', a.name, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  }

  /** A fresh unix-socket path under os.tmpdir() (`vmq-<tag>-<pid>-<random>.sock`, not created); removed by `close()`. */
  socket(tag: string): string {
    const path = join(tmpdir(), `vmq-${tag}-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
    this.defer(() => rmSync(path, { force: true }));
    return path;
  }

  /**
   * Starts `virtio-mq args…` in `ns`, collecting its stderr (and stdout with
   * `{ stdout: true }`); stopped by `close()` (SIGTERM, SIGKILL 5 s later).
   */
  cli(ns: Netns, args: string[], opts: { stdout?: boolean } = {}): LoggedProcess {
    const p = new LoggedProcess(ns.spawn([process.execPath, cliPath, ...args], ['ignore', opts.stdout ? 'pipe' : 'ignore', 'pipe']));
    this.defer(() => p.stop());
    return p;
  }

  /** Runs `fn` at `close()`, before everything registered earlier (e.g. a peer's quit). */
  defer(fn: () => unknown): void {
    this.undo.push(fn);
  }

  /**
   * Undoes everything, newest first; a step that throws does not stop the
   * rest (its error is printed as a `#` line, the run's own error wins).
   */
  async close(): Promise<void> {
    for (let fn = this.undo.pop(); fn; fn = this.undo.pop()) {
      try {
        await fn();
      } catch (e) {
        console.log(`# clean-up step failed: ${(e as Error).message}`);
      }
    }
  }
}

/**
 * Starts `iperf3 -s` bound to `addr` in `ns` (`oneOff`: `-1`, it exits after
 * one test) and waits until it listens.
 * @throws Error (its output) when it does not listen within 10 s; the caller kills it.
 */
export async function iperf3Server(ns: Netns, addr: string, oneOff = true): Promise<LoggedProcess> {
  // --forceflush: iperf3 buffers its stdout into a pipe, "Server listening" would come only at exit.
  const srv = new LoggedProcess(ns.spawn(['iperf3', '-s', ...(oneOff ? ['-1'] : []), '-B', addr, '--forceflush'], ['ignore', 'pipe', 'pipe']));
  if (!(await srv.waitFor('Server listening', 10_000))) {
    srv.child.kill('SIGKILL');
    throw new Error(`iperf3 -s in ${ns.name} did not listen: ${srv.log}`);
  }
  return srv;
}

/** The `iperf3 -c` arguments for a client in `ns` (under `timeout`: `seconds + 28` s at the most), JSON report (`-J`). */
export function iperf3ClientArgs(ns: Netns, addr: string, opts: { streams: number; seconds: number }): string[] {
  return ['ip', 'netns', 'exec', ns.name, 'timeout', String(opts.seconds + 28), 'iperf3', '-c', addr, '-P', String(opts.streams), '-t', String(opts.seconds), '-J'];
}

/** Bits per second the server received, from iperf3's JSON report (`end.sum_received.bits_per_second`). @throws on a report without it. */
export function iperf3Received(json: string): number {
  const bps = JSON.parse(json)?.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new Error(`no end.sum_received in iperf3's report: ${json.slice(-2000)}`);
  return bps;
}

/**
 * One iperf3 run: a one-off server at `addr` in `server`, then a client in
 * `client` sending for `seconds` s over `streams` TCP streams (`-P`).
 * @returns the bits per second the server received. @throws when the
 * server does not listen within 10 s or the client fails.
 */
export async function iperf3(server: Netns, addr: string, client: Netns, opts: { streams: number; seconds: number }): Promise<number> {
  const srv = await iperf3Server(server, addr);
  try {
    const [cmd, ...args] = iperf3ClientArgs(client, addr, opts);
    const out = await new Promise<string>((resolve, reject) =>
      execFile(cmd, args, { encoding: 'utf8', timeout: (opts.seconds + 38) * 1000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`iperf3 -c ${addr} from ${client.name}: ${err.message}\n${stdout.slice(-2000)}${stderr}`)) : resolve(stdout)));
    return iperf3Received(out);
  } finally {
    srv.child.kill('SIGKILL');
  }
}
