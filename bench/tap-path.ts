/**
 * `npm run bench:tap`: Linux TCP between two network namespaces through a
 * vhost-user link with a TAP on each end, side by side in one run:
 *
 *   (a) veth:    ns A ── veth pair ── ns B                               (the limit)
 *   (b) virtio-mq: ns A ── TAP ── serve ══ vhost-user ══ attach --offloads ── TAP ── ns B
 *   (c) DPDK:    ns A ── TAP ── testpmd net_tap + net_vhost ══ vhost-user ══ testpmd net_virtio_user + net_tap ── TAP ── ns B
 *
 * (b) passes the kernel's 64 KiB GSO frames and partial checksums through
 * both TAPs (IFF_VNET_HDR + TUNSETOFFLOAD); DPDK's TAP PMD opens its TAP
 * without a vnet header, so in (c) the kernel segments and checksums and the
 * link carries 1514-byte frames (io forwarding, each testpmd busy-polling
 * its own core, as in the DPDK guide).
 *
 * Runs iperf3 -P 1 and -P 4 (S seconds each, both directions) per path and
 * prints Mbit/s, the ratio virtio-mq/DPDK, the CPU seconds per gigabit of
 * the path's processes (serve + attach; both testpmds; none for veth), and
 * the CPU share other processes took meanwhile (all CPU time but the
 * path's processes and the two iperf3 ends; the machine is shared: rows
 * with a large share are noise). Paths alternate per round.
 *
 * Options: --seconds S (default 4), --rounds N (default 1), --only veth|vmq|dpdk,
 * --queues N (default 1; pairs of serve/attach and testpmd), --json.
 * Needs root, iperf3 and dpdk-testpmd (scripts/install-peers.sh); prints why and exits 0 without.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Testpmd, interopSkipReason, tmpSocketPath } from '../test/interop/testpmd.js';

const args = process.argv.slice(2);
const sopt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] ?? dflt : dflt;
};
const seconds = Number(sopt('--seconds', '4'));
const rounds = Number(sopt('--rounds', '1'));
const queues = Number(sopt('--queues', '1'));
const only = sopt('--only', '');
const json = args.includes('--json');
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const A = '198.18.13.1', B = '198.18.13.2';
const HZ = 100; // USER_HZ

type Path = 'veth' | 'vmq' | 'dpdk';
interface Row {
  path: Path;
  round: number;
  streams: number;
  dir: 'a→b' | 'b→a';
  mbps: number;
  cpuPerGbit: number;
  othersShare: number;
}

function sh(a: string[]): string {
  const r = spawnSync(a[0], a.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${a.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}

function cpuTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total };
}

/** utime + stime (jiffies, all threads) of a process, 0 once it is gone. */
function jiffies(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

/** The process a chain of single-child wrappers (timeout, stdbuf) ends in. */
function leafPid(pid: number | undefined): number | undefined {
  let p = pid;
  for (let i = 0; i < 4 && p !== undefined; i++) {
    let kids: string[] = [];
    try {
      kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    } catch {
      return p;
    }
    if (kids.length !== 1) return p;
    p = Number(kids[0]);
  }
  return p;
}

/** iperf3 from `clientNs` to the server in `serverNs` at `addr`: Mbit/s received, and CPU of `pids` and of both iperf3 ends. */
async function iperf(serverNs: string, addr: string, clientNs: string, streams: number, pids: (number | undefined)[]): Promise<{ mbps: number; ours: number; iperfJ: number; sys: { busy: number; total: number } }> {
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', addr], { stdio: 'ignore' });
  try {
    await sleep(500);
    const j0 = pids.map(jiffies), s0 = cpuTimes();
    const client = spawn('ip', ['netns', 'exec', clientNs, 'timeout', String(seconds + 20), 'iperf3', '-c', addr, '-P', String(streams), '-t', String(seconds), '-J'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    client.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    // Sample the iperf3 ends just before they exit: poll while running.
    let iperfJ = 0, ours = 0, sys = s0;
    const poll = setInterval(() => {
      iperfJ = jiffies(leafPid(client.pid)) + jiffies(server.pid);
      ours = pids.reduce<number>((acc, p, i) => acc + jiffies(p) - (j0[i] ?? 0), 0);
      sys = cpuTimes();
    }, 100);
    await new Promise<void>((r) => client.once('exit', () => r()));
    clearInterval(poll);
    const mbps = (JSON.parse(out).end.sum_received.bits_per_second as number) / 1e6;
    return { mbps, ours, iperfJ, sys: { busy: sys.busy - s0.busy, total: sys.total - s0.total } };
  } finally {
    server.kill('SIGKILL');
  }
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!cond() && Date.now() < until) await sleep(50);
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

async function stopChild(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

async function onePath(path: Path, round: number, rows: Row[]): Promise<void> {
  const id = `${process.pid % 10000}${path[0]}${round}`;
  const nsA = `vmqPA${id}`, nsB = `vmqPB${id}`, ifA = `vmqpa${id}`, ifB = `vmqpb${id}`;
  const socket = tmpSocketPath(`tap${path}`);
  const procs: ChildProcess[] = [];
  const tps: Testpmd[] = [];
  let pids: (number | undefined)[] = [];
  try {
    sh(['ip', 'netns', 'add', nsA]);
    sh(['ip', 'netns', 'add', nsB]);
    if (path === 'veth') {
      sh(['ip', 'link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    } else if (path === 'vmq') {
      let serveLog = '', attachLog = '';
      const serve = spawn('ip', ['netns', 'exec', nsA, process.execPath, cli, 'serve', '--socket', socket, '--queues', String(queues), '--netdev', `tap,ifname=${ifA}`], { stdio: ['ignore', 'ignore', 'pipe'] });
      procs.push(serve);
      serve.stderr!.on('data', (b: Buffer) => (serveLog += b.toString()));
      await waitFor(() => serveLog.includes('listening on'), 15_000, `serve: ${serveLog}`);
      const attach = spawn('ip', ['netns', 'exec', nsB, process.execPath, cli, 'attach', '--socket', socket, '--queues', String(queues), '--offloads',
        '--netdev', `tap,ifname=${ifB}`, '--duration', '3600'], { stdio: ['ignore', 'ignore', 'pipe'] });
      procs.push(attach);
      attach.stderr!.on('data', (b: Buffer) => (attachLog += b.toString()));
      await waitFor(() => attachLog.includes('TAP offloads'), 20_000, `attach: ${attachLog}`);
      pids = [serve.pid, attach.pid];
    } else {
      // Each testpmd forwards on its own core (lcores swapped), io forwarding, as measured before (1.13-1.21 Gbit/s single stream).
      const a = await Testpmd.start({
        name: `tapA${id}`, netns: nsA, lcores: '0@1,1@0', rxq: queues, txq: queues, forwardMode: 'io',
        vdevs: [`net_tap0,iface=${ifA}`, `net_vhost0,iface=${socket},queues=${queues}`], timeoutMs: 900_000,
      });
      tps.push(a);
      await a.start();
      await waitFor(() => existsSync(socket), 15_000, 'the vhost socket');
      const b = await Testpmd.start({
        name: `tapB${id}`, netns: nsB, lcores: '0@0,1@1', rxq: queues, txq: queues, forwardMode: 'io',
        vdevs: [`net_tap0,iface=${ifB}`, `net_virtio_user0,path=${socket},queues=${queues}`], timeoutMs: 900_000,
      });
      tps.push(b);
      await b.start();
      pids = [leafPid(a.pid), leafPid(b.pid)];
    }
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'addr', 'add', `${A}/24`, 'dev', ifA]);
    sh(['ip', 'netns', 'exec', nsA, 'ip', 'link', 'set', ifA, 'up']);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'addr', 'add', `${B}/24`, 'dev', ifB]);
    sh(['ip', 'netns', 'exec', nsB, 'ip', 'link', 'set', ifB, 'up']);
    const until = Date.now() + 15_000;
    while (spawnSync('ip', ['netns', 'exec', nsA, 'ping', '-c', '1', '-W', '1', B]).status !== 0) {
      if (Date.now() > until) throw new Error(`${path}: no ping from A to B`);
    }
    for (const streams of [1, 4]) {
      for (const dir of ['a→b', 'b→a'] as const) {
        const r = dir === 'a→b' ? await iperf(nsB, B, nsA, streams, pids) : await iperf(nsA, A, nsB, streams, pids);
        const gbit = (r.mbps * seconds) / 1000;
        rows.push({
          path, round, streams, dir, mbps: r.mbps, cpuPerGbit: r.ours / HZ / gbit,
          othersShare: Math.max(0, (r.sys.busy - r.ours - r.iperfJ) / r.sys.total),
        });
        if (!json) process.stderr.write(`  ${path} -P ${streams} ${dir}: ${r.mbps.toFixed(0)} Mbit/s\n`);
      }
    }
  } finally {
    for (const p of procs.reverse()) await stopChild(p);
    for (const t of tps.reverse()) await t.quit().catch(() => t.kill());
    for (const ns of [nsA, nsB]) spawnSync('ip', ['netns', 'del', ns]);
    rmSync(socket, { force: true });
  }
}

async function main(): Promise<void> {
  const why = interopSkipReason() ?? (spawnSync('iperf3', ['--version']).status === 0 ? undefined : 'iperf3 not installed (scripts/install-peers.sh)');
  if (why) {
    console.log(`bench:tap skipped: ${why}`);
    return;
  }
  const rows: Row[] = [];
  const order: Path[] = ['veth', 'vmq', 'dpdk'];
  for (let r = 0; r < rounds; r++) {
    for (const p of r % 2 === 0 ? order : [...order].reverse()) {
      if (only !== '' && p !== only) continue;
      if (!json) process.stderr.write(`round ${r + 1}: ${p}...\n`);
      await onePath(p, r, rows);
    }
  }
  if (json) {
    console.log(JSON.stringify({ seconds, rounds, queues, rows }, null, 2));
    return;
  }
  const best = (p: Path, streams: number, dir: string) => rows.filter((x) => x.path === p && x.streams === streams && x.dir === dir).sort((x, y) => y.mbps - x.mbps)[0];
  const cell = (r: Row | undefined) => (r ? r.mbps.toFixed(0) : '-').padStart(9);
  const cpu = (r: Row | undefined) => (r && r.path !== 'veth' ? r.cpuPerGbit.toFixed(3) : '-').padStart(7);
  console.log(`TCP between two namespaces, iperf3 ${seconds} s, ${queues} queue pair(s), best of ${rounds} round(s): Mbit/s, CPU s/Gbit of the path's processes, others' CPU share`);
  console.log(`${'run'.padEnd(12)} ${'veth'.padStart(9)} ${'virtio-mq'.padStart(9)} ${'DPDK'.padStart(9)} ${'ratio'.padStart(7)} ${'vmq s/Gb'.padStart(9)} ${'DPDK s/Gb'.padStart(9)} ${'others'.padStart(7)}`);
  for (const streams of [1, 4]) {
    for (const dir of ['a→b', 'b→a']) {
      const v = best('veth', streams, dir), m = best('vmq', streams, dir), d = best('dpdk', streams, dir);
      const ratio = m && d && d.mbps > 0 ? `${(m.mbps / d.mbps).toFixed(2)}×` : '-';
      const others = Math.max(...[v, m, d].filter((x): x is Row => !!x).map((x) => x.othersShare));
      console.log(`${`-P ${streams} ${dir}`.padEnd(12)} ${cell(v)} ${cell(m)} ${cell(d)} ${ratio.padStart(7)} ${cpu(m).padStart(9)} ${cpu(d).padStart(9)} ${`${(others * 100).toFixed(0)}%`.padStart(7)}`);
    }
  }
  console.log('a→b: serve side → attach side (DPDK: net_tap+net_vhost → net_virtio_user+net_tap). "others": the largest share of the three paths\' runs.');
}

await main();
