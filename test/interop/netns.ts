/**
 * Network namespaces for the interop tests that move real Linux traffic
 * (ping, iperf3) through virtio-mq and its peers: a `NetnsLab` creates
 * namespaces, vhost-user socket paths and `virtio-mq` processes under names
 * unique to this process and test, and `close()` removes all of it, newest
 * first, also when the test failed half-way:
 *
 *   const lab = new NetnsLab('S', 'p');            // vmqSA<pid>p, vmqsa<pid>p, ...
 *   try {
 *     const a = lab.netns('A'), b = lab.netns('B');
 *     const serve = lab.cli(a, ['serve', '--socket', lab.socket('x'), '--netdev', `tap,ifname=${lab.ifname('a')}`]);
 *     assert.ok(await serve.waitFor('listening on', 15_000), serve.log);
 *     a.up(lab.ifname('a'), '198.18.1.1/24');
 *     const bps = await iperf3(a, '198.18.1.1', b, { streams: 4, seconds: 2 });
 *   } finally {
 *     await lab.close();
 *   }
 *
 * Nothing here asserts: the helpers return what the tests assert on, and
 * throw (with the command's stderr) only when the set-up itself fails.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sh, stopProcess, waitUntil } from './host.js';
import { tmpSocketPath } from './testpmd.js';

/** The CLI the tests run (`dist/src/cli/main.js`). */
export const cliPath = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** A network namespace (`ip netns add`); `delete()` removes it (its TAPs and veths go with it). */
export class Netns {
  /** Creates the namespace. @throws Error when `ip netns add` fails (e.g. the name exists). */
  constructor(readonly name: string) {
    sh(['ip', 'netns', 'add', name]);
  }

  /** Runs `args` inside the namespace: its stdout. @throws on a non-zero exit or after `timeout` ms. */
  exec(args: string[], timeout = 30_000): string {
    return sh(['ip', 'netns', 'exec', this.name, ...args], timeout);
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
   * `ping -c 3 -W 3 [extra…] addr` from this namespace: its output (the
   * caller asserts `/ 0% packet loss/`). @throws when ping exits non-zero (a reply lost).
   */
  ping(addr: string, extra: string[] = []): string {
    return this.exec(['ping', '-c', '3', '-W', '3', ...extra, addr]);
  }

  /** Removes the namespace; nothing happens when it is already gone. */
  delete(): void {
    try {
      sh(['ip', 'netns', 'del', this.name]);
    } catch {
      /* not there */
    }
  }
}

/** A `virtio-mq` process started by `NetnsLab.cli`: its output so far and a wait for a line in it. */
export class CliProcess {
  /** stderr (and stdout, when asked for) so far. */
  log = '';

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (b: Buffer) => (this.log += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (this.log += b.toString()));
  }

  /** Waits until the output holds `what` (a substring or a pattern), `ms` at the most: whether it does. */
  waitFor(what: string | RegExp, ms: number): Promise<boolean> {
    return waitUntil(() => (typeof what === 'string' ? this.log.includes(what) : what.test(this.log)), ms);
  }

  /** SIGTERM, SIGKILL 5 s later: the exit code (null when a signal ended it, or it had already ended by one). */
  stop(): Promise<number | null> {
    return stopProcess(this.child);
  }
}

/**
 * Everything one test creates on the host, under names unique to this
 * process: `vmq<tag><suffix><pid><variant>`, `tag` naming the test (e.g.
 * `S`) and `variant` one of its runs (e.g. the ring format's first letter).
 * `close()` undoes every step in reverse order.
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

  /** A fresh vhost-user socket path (testpmd.ts `tmpSocketPath`); removed by `close()`. */
  socket(tag: string): string {
    const path = tmpSocketPath(tag);
    this.defer(() => rmSync(path, { force: true }));
    return path;
  }

  /**
   * Starts `virtio-mq args…` in `ns`, collecting its stderr (and stdout with
   * `{ stdout: true }`); stopped by `close()` (SIGTERM, SIGKILL 5 s later).
   */
  cli(ns: Netns, args: string[], opts: { stdout?: boolean } = {}): CliProcess {
    const p = new CliProcess(ns.spawn([process.execPath, cliPath, ...args], ['ignore', opts.stdout ? 'pipe' : 'ignore', 'pipe']));
    this.defer(() => p.stop());
    return p;
  }

  /** Runs `fn` at `close()`, before everything registered earlier (e.g. a peer's quit). */
  defer(fn: () => unknown): void {
    this.undo.push(fn);
  }

  /**
   * Undoes everything, newest first; a step that throws does not stop the
   * rest (its error is printed as a `#` line, the test's own error wins).
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
 * One iperf3 run: a server (`-s -1`) at `addr` in `server`, started and
 * waited for until it listens, then a client in `client` sending for
 * `seconds` s over `streams` TCP streams (`-P`), its JSON report (`-J`)
 * parsed. @returns the bits per second the server received
 * (`end.sum_received.bits_per_second`). @throws when the server does not
 * listen within 10 s or the client fails (or runs past `seconds + 28` s).
 */
export async function iperf3(server: Netns, addr: string, client: Netns, opts: { streams: number; seconds: number }): Promise<number> {
  // --forceflush: iperf3 buffers its stdout into a pipe, "Server listening" would come only at exit.
  const srv = new CliProcess(server.spawn(['iperf3', '-s', '-1', '-B', addr, '--forceflush'], ['ignore', 'pipe', 'pipe']));
  try {
    if (!(await srv.waitFor('Server listening', 10_000))) throw new Error(`iperf3 -s in ${server.name} did not listen: ${srv.log}`);
    const args = ['netns', 'exec', client.name, 'timeout', String(opts.seconds + 28), 'iperf3', '-c', addr, '-P', String(opts.streams), '-t', String(opts.seconds), '-J'];
    const out = await new Promise<string>((resolve, reject) =>
      execFile('ip', args, { encoding: 'utf8', timeout: (opts.seconds + 38) * 1000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`iperf3 -c ${addr} from ${client.name}: ${err.message}\n${stdout.slice(-2000)}${stderr}`)) : resolve(stdout)));
    return JSON.parse(out).end.sum_received.bits_per_second as number;
  } finally {
    srv.child.kill('SIGKILL');
  }
}
