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
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import { Testpmd, interopSkipReason } from './support/testpmd.js';
import { HZ, cpuMark, jiffies, leafPid, marked, othersShare } from './support/cpu.js';
import { LoggedProcess, NetnsLab, iperf3ClientArgs, iperf3Received, iperf3Server, waitUntil, type Netns } from './support/netns.js';

type Path = 'veth' | 'vmq' | 'dpdk';
const o = new Command('bench:tap').allowExcessArguments(false)
  .option('--seconds <s>', 'iperf3 seconds per run', Number, 4)
  .option('--rounds <n>', 'rounds (paths alternate per round)', Number, 1)
  .option('--queues <n>', 'queue pairs of serve/attach and testpmd', Number, 1)
  .addOption(new Option('--only <path>', 'one path').choices(['veth', 'vmq', 'dpdk']))
  .option('--json', 'print the rows as JSON', false)
  .parse().opts<{ seconds: number; rounds: number; queues: number; only?: Path; json: boolean }>();
const { seconds, rounds, queues, json } = o;
const A = '198.18.13.1', B = '198.18.13.2';

interface Row {
  path: Path;
  round: number;
  streams: number;
  dir: 'a→b' | 'b→a';
  mbps: number;
  cpuPerGbit: number;
  othersShare: number;
}

/** iperf3 from `client` to the server in `server` at `addr`: Mbit/s received, jiffies `pids` used, others' CPU share (both iperf3 ends count as ours). */
async function iperf(server: Netns, addr: string, client: Netns, streams: number, pids: (number | undefined)[]): Promise<{ mbps: number; ours: number; others: number }> {
  const srv = await iperf3Server(server, addr);
  try {
    const m0 = cpuMark(pids);
    const [cmd, ...args] = iperf3ClientArgs(client, addr, { streams, seconds });
    const c = new LoggedProcess(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] }));
    const closed = new Promise<void>((r) => c.child.once('close', () => r()));
    // Sample just before the iperf3 ends exit: poll while they run.
    let m1 = m0, iperfJ = 0;
    const poll = setInterval(() => {
      iperfJ = jiffies(leafPid(c.child.pid)) + jiffies(srv.child.pid);
      m1 = cpuMark(pids);
    }, 100);
    await closed;
    clearInterval(poll);
    return { mbps: iperf3Received(c.log) / 1e6, ours: marked(m0, m1), others: othersShare(m0, m1, iperfJ) };
  } finally {
    srv.child.kill('SIGKILL');
  }
}

async function onePath(path: Path, round: number, rows: Row[]): Promise<void> {
  const lab = new NetnsLab('P', `${path[0]}${round}`);
  try {
    const socket = lab.socket(`tap${path}`);
    const nsA = lab.netns('A'), nsB = lab.netns('B'), ifA = lab.ifname('a'), ifB = lab.ifname('b');
    let pids: (number | undefined)[] = [];
    if (path === 'veth') {
      lab.veth(nsA, ifA, nsB, ifB);
    } else if (path === 'vmq') {
      const serve = lab.cli(nsA, ['serve', '--socket', socket, '--queues', String(queues), '--netdev', `tap,ifname=${ifA}`]);
      if (!(await serve.waitFor('listening on', 15_000))) throw new Error(`serve did not start: ${serve.log}`);
      const attach = lab.cli(nsB, ['attach', '--socket', socket, '--queues', String(queues), '--offloads', '--netdev', `tap,ifname=${ifB}`, '--duration', '3600']);
      if (!(await attach.waitFor('TAP offloads', 20_000))) throw new Error(`attach did not connect: ${attach.log}`);
      pids = [serve.child.pid, attach.child.pid];
    } else {
      // Each testpmd forwards on its own core (lcores swapped), io forwarding, as measured before (1.13-1.21 Gbit/s single stream).
      const a = await Testpmd.start({
        name: `tapA${round}`, netns: nsA.name, lcores: '0@1,1@0', rxq: queues, txq: queues, forwardMode: 'io',
        vdevs: [`net_tap0,iface=${ifA}`, `net_vhost0,iface=${socket},queues=${queues}`], timeoutMs: 900_000,
      });
      lab.defer(() => a.quit().catch(() => a.kill()));
      await a.start();
      if (!(await waitUntil(() => existsSync(socket), 15_000))) throw new Error(`testpmd made no vhost socket: ${a.logs.slice(-2000)}`);
      const b = await Testpmd.start({
        name: `tapB${round}`, netns: nsB.name, lcores: '0@0,1@1', rxq: queues, txq: queues, forwardMode: 'io',
        vdevs: [`net_tap0,iface=${ifB}`, `net_virtio_user0,path=${socket},queues=${queues}`], timeoutMs: 900_000,
      });
      lab.defer(() => b.quit().catch(() => b.kill()));
      await b.start();
      pids = [leafPid(a.pid), leafPid(b.pid)];
    }
    nsA.up(ifA, `${A}/24`);
    nsB.up(ifB, `${B}/24`);
    // Each try waits for a reply up to 1 s (the first may wait for ARP).
    if (!(await waitUntil(() => spawnSync('ip', ['netns', 'exec', nsA.name, 'ping', '-c', '1', '-W', '1', B]).status === 0, 15_000, 0))) throw new Error(`${path}: no ping from A to B`);
    for (const streams of [1, 4]) {
      for (const dir of ['a→b', 'b→a'] as const) {
        const r = dir === 'a→b' ? await iperf(nsB, B, nsA, streams, pids) : await iperf(nsA, A, nsB, streams, pids);
        const gbit = (r.mbps * seconds) / 1000;
        rows.push({ path, round, streams, dir, mbps: r.mbps, cpuPerGbit: r.ours / HZ / gbit, othersShare: r.others });
        if (!json) process.stderr.write(`  ${path} -P ${streams} ${dir}: ${r.mbps.toFixed(0)} Mbit/s\n`);
      }
    }
  } finally {
    await lab.close();
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
      if (o.only && p !== o.only) continue;
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
