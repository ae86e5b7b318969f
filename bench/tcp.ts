/**
 * `npm run bench:tcp`: a Linux guest's TCP throughput through `virtio-mq
 * serve --netdev tap` and through DPDK testpmd's vhost PMD (`net_vhost`
 * with `tso=1`, the `csum` forwarding engine with the GSO library towards
 * its `net_tap`), side by side on the same guest and host:
 *
 *   guest (QEMU 7.2 TCG, 2 vCPUs, 4 pairs) ══ vhost-user ══ (a) serve ── TAP  ┐
 *                                                          (b) testpmd ── TAP ┴ host namespace: iperf3 -s
 *
 * The guest runs iperf3 -P 1 and -P 4, guest→host (tx) and host→guest (rx),
 * S seconds each (scripts/qemu-guest.sh vmq_iperf, vmq_iperf_streams).
 * Printed per back-end: Mbit/s of each run, the ratio serve/DPDK, the
 * back-end's CPU time per gigabit moved (serve: the whole process; testpmd:
 * its process, which busy-polls a core), QEMU's, and the CPU share other
 * processes took meanwhile (the machine is shared: rows with a large share
 * are noise). (a) and (b) alternate; --rounds N repeats.
 *
 * Why the csum engine: the vhost PMD hands the guest's 64 KiB TSO frames
 * over as big mbufs flagged RX_LRO; io forwarding passes them to net_tap
 * as they are, and DPDK's TAP PMD (no vnet header) writes them whole, which
 * the kernel drops (1-5 Mbit/s guest→host). The csum engine marks them for
 * segmentation and testpmd's GSO library (`set port 1 gso on`, segments of
 * 1514 bytes) cuts them, net_tap filling the TCP/UDP checksums (`csum set
 * tcp hw 1`). `csum mac-swap off` on both ports is needed: by default
 * testpmd 22.11's csum engine rewrites both MAC addresses of every frame, so
 * nothing reaches the guest or the kernel. Host→guest stays 1514-byte
 * frames (the vhost PMD offers no TSO towards the guest).
 *
 * With `--offloads both` (the default) every back-end runs twice: once as
 * above and once with the guest's checksum and segmentation offloads off
 * (QEMU's virtio-net-pci csum=off, guest_csum=off, gso=off, host_/guest_
 * tso4/tso6/ecn/ufo=off: 1514-byte frames with full checksums both ways), so
 * the table shows the offload gain of each back-end (with / without); for
 * serve the run checks the guest negotiated VIRTIO_NET_F_CSUM exactly when
 * asked to.
 *
 * Options: --seconds S (default 5), --rounds N (default 1), --only serve|dpdk,
 * --offloads on|off|both (default both),
 * --dpdk-app 'OPTS' (more testpmd app options), --dpdk-fwd MODE and
 * --dpdk-cmds 'CMD;CMD;...' (testpmd's set-up, ending with `start`),
 * --verbose (testpmd's answers, the guest's lines, port stats), --json.
 * Needs root, QEMU + the guest image (scripts/qemu-guest.sh), iperf3 and
 * dpdk-testpmd (scripts/install-peers.sh); prints why and exits 0 without.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { Testpmd, interopSkipReason } from './support/testpmd.js';
import { cpuMark, leafPid, othersShare, seconds as cpuSeconds, type CpuMark } from './support/cpu.js';
import { NetnsLab, iperf3Server, waitUntil } from './support/netns.js';

type Backend = 'serve' | 'dpdk';
const o = new Command('bench:tcp').allowExcessArguments(false)
  .option('--seconds <s>', 'iperf3 seconds per run', Number, 5)
  .option('--rounds <n>', 'rounds (back-ends alternate per round)', Number, 1)
  .addOption(new Option('--only <backend>', 'one back-end').choices(['serve', 'dpdk']))
  .addOption(new Option('--offloads <which>', "the guest's checksum/TSO offloads: on, off (QEMU's virtio-net-pci csum=off, guest_csum=off, …) or both").choices(['on', 'off', 'both']).default('both'))
  .option('--dpdk-app <opts>', 'more testpmd app options (space-separated)', '')
  .option('--dpdk-fwd <mode>', "testpmd's forwarding engine", 'csum')
  .option('--dpdk-cmds <cmds>', "testpmd's set-up, ';'-separated, ending with start")
  .option('--verbose', "testpmd's answers, the guest's lines, port stats", false)
  .option('--json', 'print runs and CPU figures as JSON', false)
  .parse().opts<{ seconds: number; rounds: number; only?: Backend; offloads: 'on' | 'off' | 'both'; dpdkApp: string; dpdkFwd: string; dpdkCmds?: string; verbose: boolean; json: boolean }>();
const { seconds, rounds, json, verbose, dpdkFwd } = o;
/** Extra testpmd app options. */
const dpdkApp = o.dpdkApp.split(' ').filter(Boolean);
/**
 * testpmd's set-up for the DPDK column. The `csum` engine with the GSO
 * library on the TAP port (port 1): the vhost PMD hands the guest's TSO
 * frames over as 64 KiB mbufs (RX_LRO, tso_segsz), which io forwarding would
 * pass to net_tap unsegmented (the TAP PMD has no vnet header, the kernel
 * drops them); the csum engine marks them TX_TCP_SEG and segments them to
 * 1514-byte frames with checksums filled by net_tap's TX checksum offload.
 */
const dpdkCmds = (o.dpdkCmds ?? (dpdkFwd === 'csum'
  ? 'port stop all;csum mac-swap off 0;csum mac-swap off 1;csum set ip sw 1;csum set tcp hw 1;csum set udp hw 1;port config 1 tx_offload multi_segs on;set port 1 gso on;set gso segsz 1514;port start all;start'
  : 'start')).split(';').map((c) => c.trim()).filter(Boolean);
const guestScript = fileURLToPath(new URL('../../scripts/qemu-guest.sh', import.meta.url));
const PAIRS = 4;
/** QEMU virtio-net-pci properties that take every checksum and segmentation offload away from the guest (both directions). */
const NO_OFFLOADS = ['csum', 'guest_csum', 'gso', 'host_tso4', 'host_tso6', 'host_ecn', 'host_ufo', 'guest_tso4', 'guest_tso6', 'guest_ecn', 'guest_ufo'].map((p) => `,${p}=off`).join('');
const HOST = '192.0.2.1', GUEST = '192.0.2.2';

interface Run {
  backend: Backend;
  offloads: boolean;
  round: number;
  streams: number;
  dir: 'tx' | 'rx';
  mbps: number;
}
interface Cpu {
  backend: Backend;
  offloads: boolean;
  round: number;
  gbit: number;
  backendCpuS: number;
  qemuCpuS: number;
  othersShare: number;
}

function skipReason(): string | undefined {
  const r = interopSkipReason();
  if (r) return r;
  for (const c of ['qemu-system-x86_64', 'iperf3']) if (spawnSync(c, ['--version']).status !== 0) return `${c} not installed (scripts/qemu-guest.sh, scripts/install-peers.sh)`;
  return undefined;
}

async function oneRun(backend: Backend, offloads: boolean, round: number, kernel: string, initrd: string, runs: Run[], cpus: Cpu[]): Promise<void> {
  const lab = new NetnsLab('T', `${backend[0]}${offloads ? 'o' : 'n'}${round}`);
  try {
    const socket = lab.socket(`tcp${backend}`);
    const ns = lab.netns(''), tap = lab.ifname('');
    let backendPid: number | undefined;
    let tp: Testpmd | undefined;
    let serveLog: (() => string) | undefined;
    if (backend === 'serve') {
      const serve = lab.cli(ns, ['serve', '--socket', socket, '--queues', String(PAIRS), '--netdev', `tap,ifname=${tap}`]);
      if (!(await serve.waitFor('listening on', 15_000))) throw new Error(`serve did not start: ${serve.log}`);
      backendPid = leafPid(serve.child.pid);
      serveLog = () => serve.log;
    } else {
      const t = (tp = await Testpmd.start({
        name: `tcp${round}`, netns: ns.name, lcores: '0@1,1@0', rxq: PAIRS, txq: PAIRS,
        vdevs: [`net_vhost0,iface=${socket},queues=${PAIRS},tso=1`, `net_tap0,iface=${tap}`],
        extraApp: ['--total-num-mbufs=65536', `--forward-mode=${dpdkFwd}`, ...dpdkApp], timeoutMs: 600_000,
      }));
      lab.defer(() => t.quit().catch(() => t.kill()));
      for (const c of dpdkCmds) {
        const r = await t.cmd(c);
        if (/error|invalid|not supported|bad arguments/i.test(r)) throw new Error(`testpmd '${c}': ${r.trim()}`);
        if (verbose) process.stderr.write(`testpmd> ${c}\n${r}`);
      }
      if (!(await waitUntil(() => existsSync(socket), 15_000))) throw new Error(`testpmd made no vhost socket: ${t.logs.slice(-2000)}`);
      backendPid = leafPid(t.pid);
    }
    ns.up(tap, `${HOST}/24`);
    const iperfd = await iperf3Server(ns, HOST, false);
    lab.defer(() => iperfd.child.kill('SIGKILL'));
    const append = [
      'console=ttyS0 quiet panic=-1', `vmq_ip=${GUEST}/24`, `vmq_peer=${HOST}`, `vmq_queues=${PAIRS}`, 'vmq_count=1',
      `vmq_iperf=${seconds}`, 'vmq_iperf_streams=1,4',
    ].join(' ');
    const qemu: ChildProcess = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-smp', '2', '-m', '512', '-nographic', '-no-reboot', '-kernel', kernel, '-initrd', initrd, '-append', append,
      '-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-numa', 'node,memdev=mem',
      '-chardev', `socket,id=c0,path=${socket}`, '-netdev', `vhost-user,id=n0,chardev=c0,queues=${PAIRS}`,
      '-device', `virtio-net-pci,netdev=n0,mq=on,vectors=0,rx_queue_size=1024,tx_queue_size=1024${offloads ? '' : NO_OFFLOADS}`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    lab.defer(() => qemu.exitCode === null && qemu.kill('SIGKILL'));
    let out = '';
    // CPU of [the back-end, QEMU] from the guest's GUEST-READY to just before QEMU exits.
    let startMark: CpuMark | undefined, endMark: CpuMark | undefined;
    const onData = (b: Buffer) => {
      out += b.toString().replace(/\r/g, '');
      if (!startMark && out.includes('GUEST-READY')) startMark = cpuMark([backendPid, qemu.pid]);
    };
    qemu.stdout!.on('data', onData);
    qemu.stderr!.on('data', onData);
    const done = new Promise<void>((r) => qemu.once('exit', () => r()));
    // Sample just before QEMU exits: the last iperf line is printed right before power-off.
    const poll = setInterval(() => {
      if (startMark && !out.includes('GUEST-END')) endMark = cpuMark([backendPid, qemu.pid]);
    }, 200);
    const timer = setTimeout(() => qemu.kill('SIGKILL'), 120_000 + 8 * (seconds + 10) * 1000);
    await done;
    clearInterval(poll);
    clearTimeout(timer);
    let gbit = 0;
    for (const m of out.matchAll(/GUEST-IPERF dir=(tx|rx) streams=(\d+) rc=0 \[SUM\].*?([\d.]+) Mbits\/sec.*receiver|GUEST-IPERF dir=(tx|rx) streams=(1) rc=0 \[\s*\d+\].*?([\d.]+) Mbits\/sec.*receiver/g)) {
      const dir = (m[1] ?? m[4]) as 'tx' | 'rx', streams = Number(m[2] ?? m[5]), mbps = Number(m[3] ?? m[6]);
      runs.push({ backend, offloads, round, streams, dir, mbps });
      gbit += (mbps * seconds) / 1000;
    }
    // A run without a figure shows as '-' in the table; say why (the guest's iperf3 failed, e.g. under load).
    for (const m of out.matchAll(/GUEST-IPERF-DONE dir=(tx|rx) streams=(\d+) rc=([1-9]\d*)/g))
      process.stderr.write(`  ${backend}${offloads ? '' : ' (no offloads)'}: the guest's iperf3 ${m[1]} -P ${m[2]} failed (rc=${m[3]}): no figure\n`);
    if (verbose) process.stderr.write(`${backend} guest output:\n${out.split('\n').filter((l) => /GUEST|ping|iperf|Mbits/i.test(l)).join('\n')}\n`);
    if (verbose && tp) process.stderr.write(`${await tp.cmd('show port stats all')}\n`);
    // serve: the guest negotiated the offloads asked for (the last SET_FEATURES counts).
    const feats = serveLog ? [...serveLog().matchAll(/front-end features: (.*)/g)].at(-1)?.[1] ?? '' : undefined;
    if (feats !== undefined && /\bVIRTIO_NET_F_(GUEST_)?CSUM\b/.test(feats) !== offloads) throw new Error(`serve: the guest negotiated ${feats || 'nothing'} (offloads ${offloads ? 'on' : 'off'} asked for)`);
    if (!out.includes('GUEST-IPERF-DONE')) throw new Error(`${backend}${offloads ? '' : ' (no offloads)'}: no iperf3 result from the guest:\n${out.slice(-3000)}`);
    if (startMark && endMark) {
      cpus.push({
        backend, offloads, round, gbit,
        backendCpuS: cpuSeconds(startMark, endMark, 0),
        qemuCpuS: cpuSeconds(startMark, endMark, 1),
        othersShare: othersShare(startMark, endMark),
      });
    }
  } finally {
    await lab.close();
  }
}

async function main(): Promise<void> {
  const why = skipReason();
  if (why) {
    console.log(`bench:tcp skipped: ${why}`);
    return;
  }
  const g = spawnSync('bash', [guestScript], { encoding: 'utf8' });
  const kernel = /^KERNEL=(.+)$/m.exec(g.stdout)?.[1], initrd = /^INITRD=(.+)$/m.exec(g.stdout)?.[1];
  if (!kernel || !initrd) {
    console.log(`bench:tcp skipped: scripts/qemu-guest.sh failed: ${g.stderr.trim().split('\n').slice(-3).join(' ')}`);
    return;
  }
  const runs: Run[] = [], cpus: Cpu[] = [];
  const offloadSets = o.offloads === 'both' ? [true, false] : [o.offloads === 'on'];
  const label = (b: Backend, offl: boolean) => `${b === 'serve' ? 'serve' : 'testpmd'}${offl ? '' : ' (no offloads)'}`;
  for (let r = 0; r < rounds; r++) {
    for (const offl of offloadSets) {
      for (const b of (r % 2 === 0 ? ['serve', 'dpdk'] : ['dpdk', 'serve']) as Backend[]) {
        if (o.only && b !== o.only) continue;
        if (!json) process.stderr.write(`round ${r + 1}: ${label(b, offl)}...\n`);
        await oneRun(b, offl, r, kernel, initrd, runs, cpus);
      }
    }
  }
  if (json) {
    console.log(JSON.stringify({ seconds, rounds, runs, cpus }, null, 2));
    return;
  }
  /** The best Mbit/s of the runs of a cell; NaN when none gave a figure (printed '-'). */
  const best = (b: Backend, offl: boolean, streams: number, dir: string) => {
    const m = runs.filter((x) => x.backend === b && x.offloads === offl && x.streams === streams && x.dir === dir).map((x) => x.mbps);
    return m.length > 0 ? Math.max(...m) : NaN;
  };
  const ratio = (x: number, y: number) => (x > 0 && y > 0 ? `${(x / y).toFixed(2)}×` : '-');
  const mbps = (x: number) => (Number.isNaN(x) ? '-' : x.toFixed(0));
  console.log(`Linux guest (QEMU TCG, 2 vCPUs, ${PAIRS} pairs) TCP through vhost-user, iperf3 ${seconds} s, best of ${rounds} round(s), Mbit/s`);
  console.log('("offload gain": with the guest\'s checksum/TSO offloads over without, same back-end):');
  console.log(`${'run'.padEnd(32)} ${'serve'.padStart(8)} ${'DPDK'.padStart(8)} ${'ratio'.padStart(7)} ${'offload gain: serve'.padStart(20)} ${'DPDK'.padStart(7)}`);
  for (const offl of offloadSets) {
    for (const streams of [1, 4]) {
      for (const dir of ['tx', 'rx']) {
        const s = best('serve', offl, streams, dir), d = best('dpdk', offl, streams, dir);
        const gain = offl && offloadSets.length === 2
          ? `${ratio(s, best('serve', false, streams, dir)).padStart(20)} ${ratio(d, best('dpdk', false, streams, dir)).padStart(7)}` : '';
        console.log(`${`-P ${streams} ${dir === 'tx' ? 'guest→host' : 'host→guest'}${offl ? '' : ', no offloads'}`.padEnd(32)} ${mbps(s).padStart(8)} ${mbps(d).padStart(8)} ${ratio(s, d).padStart(7)} ${gain}`.trimEnd());
      }
    }
  }
  console.log('\nCPU time per gigabit moved (all runs of a boot; guest boot and pings included in the window):');
  console.log(`${'back-end'.padEnd(24)} ${'Gbit'.padStart(7)} ${'back-end s/Gbit'.padStart(16)} ${'QEMU s/Gbit'.padStart(12)} ${'others\' CPU'.padStart(12)}`);
  for (const c of cpus) {
    console.log(`${label(c.backend, c.offloads).padEnd(24)} ${c.gbit.toFixed(1).padStart(7)} ${(c.backendCpuS / c.gbit).toFixed(3).padStart(16)} ${(c.qemuCpuS / c.gbit).toFixed(3).padStart(12)} ${(c.othersShare * 100).toFixed(0).padStart(11)}%`);
  }
}

await main();
