/**
 * Interop, a real guest across `serve` restarts: a Linux guest (QEMU 7.2
 * TCG, virtio-net over vhost-user, 2 queue pairs) runs one iperf3 TCP upload
 * to an iperf3 server on the TAP side while the test
 *
 * - server role (QEMU `-chardev socket,...,reconnect=1`, serve listening):
 *   stops serve with SIGTERM and starts it again, kills it with SIGKILL and
 *   starts it again, then deletes the TAP under the running serve and
 *   re-creates it (same name and MAC, as an operator would);
 * - client role (QEMU `-chardev socket,...,server=on,wait=off`, serve --client):
 *   SIGTERM + restart, SIGKILL + restart.
 *
 * The TCP connection must survive all of it: after each event bytes arrive
 * again at the iperf3 server, and the guest's iperf3 finishes with status 0
 * and a receiver line. The time without traffic is taken from the iperf3
 * server's 0.1 s intervals (the longest run of empty intervals around the
 * event) and printed, with the time the new serve needed to be ready.
 *
 * The TAP is created persistent beforehand (`ip tuntap add ... multi_queue`),
 * as an operator who restarts serve under running VMs would: a TAP that serve
 * created itself goes away with its last queue fd, and with it the host
 * side's address.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { tmpSocketPath } from './testpmd.js';
import { sh, prepareGuest } from './host.js';
import { stopProcess } from './netns.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HOST_ADDR = '192.0.2.1';
const GUEST_ADDR = '192.0.2.2';
const PAIRS = 2;

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP)';
  for (const cmd of ['qemu-system-x86_64', 'iperf3']) {
    try {
      execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    } catch {
      return `${cmd} not installed (scripts/install-peers.sh)`;
    }
  }
  return undefined;
}

/** A child's output, whole and as lines stamped with their arrival (ms since the epoch). */
class Output {
  text = '';
  lines: { at: number; line: string }[] = [];
  private partial = '';
  push = (b: Buffer): void => {
    const s = b.toString().replace(/\r/g, '');
    this.text += s;
    const parts = (this.partial + s).split('\n');
    this.partial = parts.pop()!;
    const at = Date.now();
    for (const line of parts) this.lines.push({ at, line });
  };
}

/** One iperf3 server report interval: its span (s, server time), bytes received, and when the line arrived. */
interface Interval {
  start: number;
  end: number;
  bytes: number;
  at: number;
}

const UNIT: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

function intervals(o: Output): Interval[] {
  const out: Interval[] = [];
  for (const { at, line } of o.lines) {
    const m = /^\[\s*\d+\]\s+([\d.]+)-([\d.]+)\s+sec\s+([\d.]+)\s+([KMG]?)Bytes/.exec(line);
    if (!m) continue;
    const start = Number(m[1]), end = Number(m[2]);
    if (end - start > 0.5) continue; // the summary at the end
    out.push({ start, end, bytes: Number(m[3]) * UNIT[m[4]], at });
  }
  return out;
}

/** Longest run of empty intervals among `list` (seconds). */
function longestGap(list: Interval[]): number {
  let best = 0, run = 0;
  for (const i of list) {
    if (i.bytes === 0) run += i.end - i.start;
    else run = 0;
    if (run > best) best = run;
  }
  return best;
}

interface Env {
  ns: string;
  tap: string;
  socket: string;
  client: boolean;
  serves: ChildProcess[];
  serveOut: Output[];
}

function startServe(env: Env): { proc: ChildProcess; out: Output; t0: number } {
  const out = new Output();
  const t0 = Date.now();
  const proc = spawn('ip', ['netns', 'exec', env.ns, process.execPath, cli, 'serve', '--socket', env.socket, '--queues', String(PAIRS), '--netdev', `tap,ifname=${env.tap}`, ...(env.client ? ['--client'] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', out.push);
  env.serves.push(proc);
  env.serveOut.push(out);
  return { proc, out, t0 };
}

async function waitUntil(cond: () => boolean, what: string, timeoutMs: number, diag: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) assert.fail(`timed out (${timeoutMs / 1000} s) waiting for ${what}${diag()}`);
    await sleep(50);
  }
}

/** `sig`, then SIGKILL after 5 s; resolves once the child has exited. */
async function stopProc(p: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  await stopProcess(p, 5000, sig);
}

/**
 * Boot the guest with its iperf3 upload (`seconds` long) against serve in
 * the given role, run `events` once traffic flows, then require iperf3 to
 * finish cleanly. Returns the figures printed.
 */
async function runReconnect(t: TestContext, client: boolean, seconds: number, events: ('SIGTERM' | 'SIGKILL' | 'TAP')[]): Promise<void> {
  const guest = prepareGuest();
  if ('skip' in guest) {
    t.skip(guest.skip);
    return;
  }
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const env: Env = { ns: `vmqRc${id}`, tap: `vmqr${id}`, socket: tmpSocketPath('reconnect'), client, serves: [], serveOut: [] };
  const qout = new Output();
  const iperf = new Output();
  let qemu: ChildProcess | undefined;
  let iperfd: ChildProcess | undefined;
  const diag = () => `\n--- guest console / QEMU ---\n${qout.text.slice(-5000)}\n--- iperf3 server ---\n${iperf.text.slice(-1500)}\n${env.serveOut.map((o, i) => `--- serve #${i + 1} ---\n${o.text.slice(-2500)}`).join('\n')}`;
  const ns = (args: string[]) => sh(['ip', 'netns', 'exec', env.ns, ...args]);
  try {
    sh(['ip', 'netns', 'add', env.ns]);
    ns(['ip', 'tuntap', 'add', 'dev', env.tap, 'mode', 'tap', 'multi_queue']);
    ns(['ip', 'addr', 'add', `${HOST_ADDR}/24`, 'dev', env.tap]);
    ns(['ip', 'link', 'set', env.tap, 'up']);
    const mac = ns(['cat', `/sys/class/net/${env.tap}/address`]).trim();
    iperfd = spawn('ip', ['netns', 'exec', env.ns, 'iperf3', '-s', '-B', HOST_ADDR, '-i', '0.1', '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
    iperfd.stdout!.on('data', iperf.push);
    iperfd.stderr!.on('data', iperf.push);

    let cur: ReturnType<typeof startServe> | undefined;
    if (!client) {
      cur = startServe(env);
      await waitUntil(() => cur!.out.text.includes('listening on'), 'serve to listen', 15_000, diag);
    }
    const chardev = client ? `socket,id=c0,path=${env.socket},server=on,wait=off` : `socket,id=c0,path=${env.socket},reconnect=1`;
    const append = ['console=ttyS0 quiet panic=-1', `vmq_ip=${GUEST_ADDR}/24`, `vmq_peer=${HOST_ADDR}`, `vmq_queues=${PAIRS}`, 'vmq_count=1', `vmq_iperf=${seconds}`, 'vmq_iperf_streams=1'];
    qemu = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-smp', '2', '-m', '512', '-nographic', '-no-reboot',
      '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', append.join(' '),
      '-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-numa', 'node,memdev=mem',
      '-chardev', chardev, '-netdev', `vhost-user,id=n0,chardev=c0,queues=${PAIRS}`,
      '-device', `virtio-net-pci,netdev=n0,mq=on,vectors=0`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu.stdout!.on('data', qout.push);
    qemu.stderr!.on('data', qout.push);
    if (client) {
      // QEMU creates the socket and waits for serve before it starts the guest.
      await waitUntil(() => spawnSync('test', ['-S', env.socket]).status === 0 || qemu!.exitCode !== null, 'QEMU to listen', 15_000, diag);
      cur = startServe(env);
    }

    // Traffic flows: a few full intervals at the iperf3 server.
    await waitUntil(() => intervals(iperf).filter((i) => i.bytes > 0).length >= 5, 'iperf3 traffic from the guest', 150_000, diag);
    const figures: string[] = [];
    for (const ev of events) {
      const before = intervals(iperf).length;
      const tEvent = Date.now();
      let ready: number;
      let marker: string;
      if (ev === 'TAP') {
        ns(['ip', 'link', 'del', env.tap]);
        await waitUntil(() => cur!.out.text.includes(`${env.tap} is gone`), 'serve to see the TAP gone', 5000, diag);
        ns(['ip', 'tuntap', 'add', 'dev', env.tap, 'mode', 'tap', 'multi_queue']);
        ns(['ip', 'link', 'set', env.tap, 'address', mac]);
        ns(['ip', 'addr', 'add', `${HOST_ADDR}/24`, 'dev', env.tap]);
        ns(['ip', 'link', 'set', env.tap, 'up']);
        marker = `${env.tap} is back`;
        await waitUntil(() => cur!.out.text.includes(marker) && /link up/.test(cur!.out.text.slice(cur!.out.text.indexOf(marker))), 'serve to re-open the TAP', 10_000, diag);
        ready = Date.now();
      } else {
        await stopProc(cur!.proc, ev);
        cur = startServe(env);
        const next = cur;
        // Ready again: every pair runs for the front-end that came back.
        await waitUntil(() => [...Array(PAIRS).keys()].every((p) => next.out.text.includes(`queue pair ${p} started`)), `the restarted serve to run ${PAIRS} pairs again`, 20_000, diag);
        ready = Date.now();
      }
      // The stream continues: traffic after the event, in five intervals reported after serve was ready again.
      await waitUntil(() => intervals(iperf).slice(before).filter((i) => i.at > ready && i.bytes > 0).length >= 5, `iperf3 traffic after ${ev}`, 30_000, diag);
      const list = intervals(iperf).slice(Math.max(0, before - 2));
      const gap = longestGap(list);
      figures.push(`${ev === 'TAP' ? 'TAP deleted + re-created' : `${ev} + restart`}: no traffic for ${gap.toFixed(1)} s (serve ready ${((ready - tEvent) / 1000).toFixed(2)} s after the event)`);
    }
    // iperf3 finishes without error, having received data.
    await waitUntil(() => /GUEST-IPERF-DONE dir=tx/.test(qout.text), 'the guest\'s iperf3 to finish', (seconds + 60) * 1000, diag);
    // Its receiver line follows on the (slow) serial console.
    await waitUntil(() => /GUEST-IPERF dir=tx .*receiver/.test(qout.text) || /GUEST-IPERF-DONE dir=tx streams=\d+ rc=[1-9]/.test(qout.text), 'the guest\'s iperf3 receiver line', 15_000, diag);
    const done = /GUEST-IPERF-DONE dir=tx streams=\d+ rc=(\d+)/.exec(qout.text)!;
    assert.equal(Number(done[1]), 0, `iperf3 exit status${diag()}`);
    const recv = /GUEST-IPERF dir=tx streams=1 rc=0 \[\s*\d+\]\s+[\d.]+-([\d.]+)\s+sec\s+([\d.]+ [KMG]?Bytes)\s+([\d.]+ [KMG]?bits\/sec)\s+receiver/.exec(qout.text);
    assert.ok(recv, `iperf3 receiver line${diag()}`);
    assert.doesNotMatch(qout.text, /falling back on userspace virtio|unable to start vhost net/, `QEMU kept vhost-user${diag()}`);
    console.log(`# ${client ? 'client role (QEMU server=on, serve --client)' : 'server role (QEMU reconnect=1)'}: ${figures.join('; ')}; iperf3 ${recv[2]} in ${recv[1]} s (${recv[3]}) over one TCP connection`);
  } finally {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) await stopProc(qemu, 'SIGKILL');
    if (iperfd) await stopProc(iperfd, 'SIGKILL');
    for (const s of env.serves) await stopProc(s, 'SIGTERM');
    try {
      sh(['ip', 'netns', 'del', env.ns]);
    } catch {
      /* not created */
    }
    rmSync(env.socket, { force: true });
  }
}

test('a Linux guest keeps its iperf3 TCP connection through serve restarts in server role (QEMU chardev reconnect=1): SIGTERM, SIGKILL, and the TAP deleted and re-created under serve', { skip: skipReason(), timeout: 300_000 }, async (t) => {
  await runReconnect(t, false, 30, ['SIGTERM', 'SIGKILL', 'TAP']);
});

test('a Linux guest keeps its iperf3 TCP connection through serve --client restarts (QEMU chardev server=on,wait=off): SIGTERM, SIGKILL', { skip: skipReason(), timeout: 300_000 }, async (t) => {
  await runReconnect(t, true, 25, ['SIGTERM', 'SIGKILL']);
});
