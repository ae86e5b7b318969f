/**
 * `npm run bench:dpdk`: virtio-mq serve against DPDK's own vhost PMD, side by
 * side in one run, with the same testpmd virtio-user (1 pair, 64-byte
 * frames, split and packed rings: `packed_vq=1`) on the other end:
 *
 *   virtio-user txonly → (a) testpmd net_vhost rxonly  (b) serve --netdev sink (reads every byte)
 *   (a) testpmd net_vhost txonly  (b) serve --netdev generator,template=on → virtio-user rxonly
 *   (both send a prebuilt frame per flow; serve stamps a sequence number in each)
 *
 * Each peer gets a CPU of its own (testpmd's forwarding lcore on CPU 1, the
 * device side on CPU 0), (a) and (b) alternate, and the rate is what the
 * virtio-user side counted over the window. serve runs in busy mode for the
 * comparison (DPDK polls too) and once more in notify mode. Also prints
 * serve's resident memory with 4 pairs connected, and the CPU share other
 * processes took during each window (rows with a large share are noise).
 *
 * The driver end too: testpmd's vhost PMD as the device, driven by
 *   (a) testpmd virtio-user  (b) virtio-mq attach (busy mode)
 *   driver txonly → net_vhost rxonly, and net_vhost txonly → driver rxonly,
 * measured on the vhost side; plus attach's resident memory with 4 pairs.
 *
 * Options (commander; an unknown option or value is refused): --seconds N (window, default 3), --rounds N (default 2),
 * --rings split,packed (default both), --ends serve,attach (default both),
 * --directions from,to (attach rows: driver txonly, driver rxonly; default both), --json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { Testpmd, interopSkipReason, tmpSocketPath, waitIdle } from './support/testpmd.js';
import { stopProcess } from './support/netns.js';
import { coreLatencyNs } from './core-latency.js';

const list = (allowed: readonly string[], name: string) => (v: string): string[] => {
  const xs = v.split(',').filter((x) => x !== '');
  for (const x of xs) if (!allowed.includes(x)) throw new InvalidArgumentError(`${name}: ${x} is not one of ${allowed.join(', ')}`);
  return xs;
};
const o = new Command('bench:dpdk').allowExcessArguments(false)
  .option('--seconds <s>', 'measuring window per row', Number, 3)
  .option('--rounds <n>', 'rounds (the implementations alternate per round)', Number, 2)
  .option('--rings <list>', 'ring formats: split,packed', list(['split', 'packed'], '--rings'), ['split', 'packed'])
  .option('--ends <list>', 'our end: serve (device) and/or attach (driver)', list(['serve', 'attach'], '--ends'), ['serve', 'attach'])
  .option('--directions <list>', 'attach rows: from (driver txonly), to (driver rxonly)', list(['from', 'to'], '--directions'), ['from', 'to'])
  .option('--json', 'print the rows as JSON', false)
  .parse().opts<{ seconds: number; rounds: number; rings: ('split' | 'packed')[]; ends: string[]; directions: string[]; json: boolean }>();
const { seconds, rounds, rings, json } = o;
const ends = new Set(o.ends);
const driverDirections = (['from driver', 'to driver'] as const).filter((d) => o.directions.includes(d.split(' ')[0]));
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Row {
  direction: 'to device' | 'from device';
  ring: 'split' | 'packed';
  peer: string;
  mode: string;
  mpps: number;
  othersCpu: number;
}

function cpuTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Jiffies of CPU a set of pids used (utime + stime of every thread, from /proc/PID/stat). */
function pidJiffies(pids: number[]): number {
  let j = 0;
  for (const pid of pids) {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      j += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone */
    }
  }
  return j;
}

function childPids(pid: number): number[] {
  const out = [pid];
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) out.push(...childPids(Number(c)));
  } catch {
    /* gone */
  }
  return out;
}

/** Per thread of `pids`: name, CPU time (jiffies), the CPU it last ran on, the CPUs it may run on. */
function threads(pids: number[]): Map<string, { name: string; jiffies: number; cpu: number; allowed: string }> {
  const out = new Map<string, { name: string; jiffies: number; cpu: number; allowed: string }>();
  for (const pid of pids) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const name = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
        const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
        const allowed = /Cpus_allowed_list:\s+(\S+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] ?? '?';
        out.set(`${pid}/${tid}`, { name, jiffies: Number(f[11]) + Number(f[12]), cpu: Number(f[36]), allowed });
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

/**
 * Where a side's threads ran during a window: every thread that took at
 * least 5 % of a CPU, as `name@cpu(allowed) share%`, e.g. `lcore-worker-1@1(1) 99%`.
 */
function placement(before: ReturnType<typeof threads>, after: ReturnType<typeof threads>, jiffies: number): string {
  const busy: string[] = [];
  for (const [k, t] of after) {
    const share = (t.jiffies - (before.get(k)?.jiffies ?? t.jiffies)) / jiffies;
    if (share >= 0.05) busy.push(`${t.name}@${t.cpu}(${t.allowed}) ${(share * 100).toFixed(0)}%`);
  }
  return busy.join(', ') || 'idle';
}

/** Jiffies per CPU in a window of /proc/stat totals (the machine's total over its CPUs). */
function cpuJiffies(total: number): number {
  const n = readFileSync('/proc/stat', 'utf8').split('\n').filter((l) => /^cpu\d/.test(l)).length || 1;
  return total / n;
}

async function startServe(socket: string, netdev: string, mode: string, queues = 1): Promise<ChildProcess> {
  const p = spawn('taskset', ['-c', '0', process.execPath, cli, 'serve', '--socket', socket, '--queues', String(queues), '--netdev', netdev, '--mode', mode, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  const until = Date.now() + 10_000;
  while (!out.includes('listening on') && Date.now() < until) await sleep(50);
  if (!out.includes('listening on')) throw new Error(`serve did not start: ${out}`);
  return p;
}

async function stopProc(p: ChildProcess | undefined): Promise<void> {
  await stopProcess(p, 3000);
}

/** One measurement: the device side is (a) testpmd vhost or (b) serve; virtio-user drives. */
async function measure(direction: Row['direction'], ring: Row['ring'], peer: 'dpdk' | 'serve', mode: string): Promise<Row> {
  const socket = tmpSocketPath(`bench-${peer}`);
  let dev: Testpmd | undefined, serve: ChildProcess | undefined, vu: Testpmd | undefined;
  try {
    if (peer === 'dpdk') {
      dev = await Testpmd.start({ name: 'benchvhost', lcores: '0@0,1@0', vdevs: [`net_vhost0,iface=${socket},queues=1`], forwardMode: direction === 'to device' ? 'rxonly' : 'txonly', txpkts: 64 });
    } else {
      serve = await startServe(socket, direction === 'to device' ? 'sink' : 'generator,flows=64,size=64,template=on', mode);
    }
    const packed = ring === 'packed' ? ',packed_vq=1' : '';
    vu = await Testpmd.start({ name: 'benchvu', lcores: '0@1,1@1', vdevs: [`net_virtio_user0,path=${socket},queues=1,cq=1,queue_size=1024${packed}`], forwardMode: direction === 'to device' ? 'txonly' : 'rxonly', txpkts: 64 });
    await sleep(1000);
    if (dev) await dev.start();
    await vu.start();
    await sleep(1000); // warm up
    const key = direction === 'to device' ? 'tx_packets' : 'rx_packets';
    const pids = [dev?.pid, serve?.pid, vu.pid].filter((x): x is number => typeof x === "number").flatMap((p) => childPids(p));
    const a = (await vu.portStats(0))[key];
    const c0 = cpuTimes(), p0 = pidJiffies(pids), t0 = Date.now();
    await sleep(seconds * 1000);
    const b = (await vu.portStats(0))[key];
    const c1 = cpuTimes(), p1 = pidJiffies(pids), t1 = Date.now();
    const mpps = (b - a) / ((t1 - t0) / 1000) / 1e6;
    const othersCpu = Math.max(0, (c1.busy - c0.busy - (p1 - p0)) / (c1.total - c0.total));
    return { direction, ring, peer: peer === 'dpdk' ? 'testpmd net_vhost' : 'virtio-mq serve', mode: peer === 'dpdk' ? 'poll' : mode, mpps, othersCpu };
  } finally {
    await vu?.quit().catch(() => undefined);
    await dev?.quit().catch(() => undefined);
    await stopProc(serve);
    rmSync(socket, { force: true });
  }
}

/**
 * serve's resident memory with `queues` pairs connected to virtio-user and
 * forwarding: total RSS (it includes the front-end's shared guest pages
 * serve touched: rings and buffers) and the private part (RssAnon), MiB.
 */
async function serveRss(queues: number): Promise<{ total: number; private: number }> {
  const socket = tmpSocketPath('bench-rss');
  let serve: ChildProcess | undefined, vu: Testpmd | undefined;
  try {
    serve = await startServe(socket, 'loopback', 'notify', queues);
    vu = await Testpmd.start({ name: 'benchrss', lcores: '0@1,1@1', rxq: queues, txq: queues, vdevs: [`net_virtio_user0,path=${socket},queues=${queues},cq=1,queue_size=1024`], forwardMode: 'io' });
    await vu.start(true);
    await sleep(3000);
    const field = (pid: number, name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    const pids = childPids(serve.pid!);
    const sum = (name: string) => pids.reduce((a, pid) => a + field(pid, name), 0) / 1024;
    return { total: sum('VmRSS'), private: sum('RssAnon') };
  } finally {
    await vu?.quit().catch(() => undefined);
    await stopProc(serve);
    rmSync(socket, { force: true });
  }
}

interface FrontRow {
  direction: 'from driver' | 'to driver';
  ring: 'split' | 'packed';
  driver: 'testpmd virtio-user' | 'virtio-mq attach';
  mpps: number;
  othersCpu: number;
  /** One-way cache-line handoff between CPU 0 and CPU 1 just before the row started, ns (core-latency.ts). */
  coreNs: number;
  /** Busy threads of the vhost side and of the driver side during the window (name@cpu(allowed) share). */
  vhostThreads: string;
  driverThreads: string;
}

/**
 * attach with the ring features testpmd's virtio-user negotiates by default
 * (in_order=1, mrg_rxbuf=1), all its threads on CPU 0 (`taskset -c 0`), as
 * virtio-user's lcores (`--lcores 0@0,1@0`).
 */
async function startAttach(socket: string, netdev: string, ring: string, queues = 1): Promise<ChildProcess> {
  const p = spawn('taskset', ['-c', '0', process.execPath, cli, 'attach', '--socket', socket, '--queues', String(queues), '--ring', ring, '--in-order', '--mrg-rxbuf',
    '--queue-size', '1024', '--netdev', netdev, '--mode', 'busy', '--duration', '600', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const until = Date.now() + 20_000;
  while (!out.includes('connected to the back-end') && Date.now() < until) await sleep(50);
  if (!out.includes('connected to the back-end')) throw new Error(`attach did not connect: ${out}`);
  return p;
}

/** One measurement of a driver end against testpmd's vhost PMD (the rate counted on the vhost side). */
async function measureDriver(direction: FrontRow['direction'], ring: FrontRow['ring'], driver: 'virtio-user' | 'attach'): Promise<FrontRow> {
  const socket = tmpSocketPath(`bench-${driver}`);
  let dev: Testpmd | undefined, att: ChildProcess | undefined, vu: Testpmd | undefined;
  // Before anything polls (the probe needs both CPUs to itself).
  const coreNs = await coreLatencyNs(0, 1);
  try {
    dev = await Testpmd.start({ name: 'benchdev', lcores: '0@1,1@1', vdevs: [`net_vhost0,iface=${socket},queues=1`], forwardMode: direction === 'from driver' ? 'rxonly' : 'txonly', txpkts: 64 });
    await dev.start();
    if (driver === 'attach') {
      att = await startAttach(socket, direction === 'from driver' ? 'txonly,size=64' : 'sink', ring);
    } else {
      const packed = ring === 'packed' ? ',packed_vq=1' : '';
      // in_order=1 and mrg_rxbuf=1 are virtio-user's defaults, spelled out (attach is given the same).
      vu = await Testpmd.start({ name: 'benchdrv', lcores: '0@0,1@0', vdevs: [`net_virtio_user0,path=${socket},queues=1,cq=1,queue_size=1024,in_order=1,mrg_rxbuf=1${packed}`], forwardMode: direction === 'from driver' ? 'txonly' : 'rxonly', txpkts: 64 });
      await vu.start();
    }
    await sleep(1000); // warm up
    const key = direction === 'from driver' ? 'rx_packets' : 'tx_packets';
    const devPids = dev.pid !== undefined ? childPids(dev.pid) : [];
    const drvPids = [att?.pid, vu?.pid].filter((x): x is number => typeof x === 'number').flatMap((p) => childPids(p));
    const pids = [...devPids, ...drvPids];
    const a = (await dev.portStats(0))[key];
    const c0 = cpuTimes(), p0 = pidJiffies(pids), t0 = Date.now();
    const vt0 = threads(devPids), dt0 = threads(drvPids);
    await sleep(seconds * 1000);
    const b = (await dev.portStats(0))[key];
    const c1 = cpuTimes(), p1 = pidJiffies(pids), t1 = Date.now();
    const vt1 = threads(devPids), dt1 = threads(drvPids);
    const mpps = (b - a) / ((t1 - t0) / 1000) / 1e6;
    const othersCpu = Math.max(0, (c1.busy - c0.busy - (p1 - p0)) / (c1.total - c0.total));
    const perCpu = cpuJiffies(c1.total - c0.total);
    return {
      direction, ring, driver: driver === 'attach' ? 'virtio-mq attach' : 'testpmd virtio-user', mpps, othersCpu, coreNs,
      vhostThreads: placement(vt0, vt1, perCpu), driverThreads: placement(dt0, dt1, perCpu),
    };
  } finally {
    await vu?.quit().catch(() => undefined);
    await stopProc(att);
    await dev?.quit().catch(() => undefined);
    rmSync(socket, { force: true });
  }
}

/** attach's resident memory (MiB) with `queues` pairs connected to testpmd's vhost PMD, forwarding (io). */
async function attachRss(queues: number): Promise<{ total: number; private: number }> {
  const socket = tmpSocketPath('bench-arss');
  let dev: Testpmd | undefined, att: ChildProcess | undefined;
  try {
    dev = await Testpmd.start({ name: 'benchars', lcores: '0@1,1@1', rxq: queues, txq: queues, vdevs: [`net_vhost0,iface=${socket},queues=${queues}`], forwardMode: 'io' });
    await dev.start();
    att = await startAttach(socket, 'generator,flows=64,size=64', 'split', queues);
    await sleep(3000);
    const field = (pid: number, name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    const pids = childPids(att.pid!);
    const sum = (name: string) => pids.reduce((acc, pid) => acc + field(pid, name), 0) / 1024;
    return { total: sum('VmRSS'), private: sum('RssAnon') };
  } finally {
    await stopProc(att);
    await dev?.quit().catch(() => undefined);
    rmSync(socket, { force: true });
  }
}

async function attachRows(): Promise<void> {
  const rows: FrontRow[] = [];
  for (const ring of rings) {
    for (const direction of driverDirections) {
      for (let r = 0; r < rounds; r++) {
        for (const driver of ['virtio-user', 'attach'] as const) {
          const idle = await waitIdle(10_000);
          if (!idle.idle && !json) console.error(`(machine not idle: ${idle.busyPercent.toFixed(0)} % busy; measuring anyway)`);
          rows.push(await measureDriver(direction, ring, driver));
        }
      }
    }
  }
  const rss = await attachRss(4);
  const best = (d: FrontRow['direction'], ring: FrontRow['ring'], who: FrontRow['driver']) =>
    Math.max(...rows.filter((r) => r.direction === d && r.ring === ring && r.driver === who).map((r) => r.mpps));
  const summary = rings.flatMap((ring) => driverDirections.map((d) => {
    const vu = best(d, ring, 'testpmd virtio-user'), ours = best(d, ring, 'virtio-mq attach');
    return { direction: d, ring, virtioUserMpps: vu, attachMpps: ours, ratio: ours / vu };
  }));
  if (json) {
    console.log(JSON.stringify({ driverRows: rows, driverSummary: summary, attachRssMiB4Pairs: rss.total, attachPrivateMiB4Pairs: rss.private }, null, 2));
    return;
  }
  console.log(`\ntestpmd net_vhost (1 pair, 64-byte frames) driven by each driver end; ${seconds} s windows, best of ${rounds}, counted on the vhost side`);
  console.log('CPUs: testpmd net_vhost --lcores 0@1,1@1 (CPU 1); the driver on CPU 0: virtio-user --lcores 0@0,1@0, attach under taskset -c 0 (all its threads);');
  console.log('both drivers: in_order=1, mrg_rxbuf=1, queue_size=1024; attach txonly writes its frame once per TX buffer and stamps a sequence number per frame');
  console.log("(testpmd txonly copies the headers into each mbuf). 'core ns': one-way cache-line handoff CPU 0 -> CPU 1 measured from Node before the");
  console.log('row (indicative: the host moves the vCPUs; a C ping-pong saw 26-36 ns at times, 66-81 ns at others). Busy threads: name@cpu(allowed CPUs) share.');
  console.log(`${'ring'.padEnd(7)} ${'direction'.padEnd(12)} ${'driver'.padEnd(20)} ${'Mpps'.padStart(7)} ${'others CPU'.padStart(11)} ${'core ns'.padStart(8)}  threads (vhost | driver)`);
  for (const r of rows)
    console.log(`${r.ring.padEnd(7)} ${r.direction.padEnd(12)} ${r.driver.padEnd(20)} ${r.mpps.toFixed(2).padStart(7)} ${(r.othersCpu * 100).toFixed(0).padStart(10)}% ${r.coreNs.toFixed(0).padStart(8)}  ${r.vhostThreads} | ${r.driverThreads}`);
  console.log('');
  for (const s of summary)
    console.log(`${s.ring.padEnd(7)} ${s.direction.padEnd(12)} attach busy / virtio-user = ${s.attachMpps.toFixed(2)} / ${s.virtioUserMpps.toFixed(2)} Mpps = ${s.ratio.toFixed(2)}`);
  console.log(`attach resident memory with 4 pairs connected and forwarding: ${rss.total.toFixed(0)} MiB RSS, of which ${rss.private.toFixed(0)} MiB private (the rest is its shared guest memory)`);
}

async function main(): Promise<void> {
  const skip = interopSkipReason();
  if (skip) {
    console.log(`bench:dpdk skipped: ${skip}`);
    return;
  }
  if (ends.has('attach') && !ends.has('serve')) {
    await attachRows();
    return;
  }
  const rows: Row[] = [];
  for (const ring of rings) {
    for (const direction of ['to device', 'from device'] as const) {
      for (let r = 0; r < rounds; r++) {
        for (const [peer, mode] of [['dpdk', 'poll'], ['serve', 'busy']] as const) {
          const idle = await waitIdle(10_000);
          if (!idle.idle && !json) console.error(`(machine not idle: ${idle.busyPercent.toFixed(0)} % busy; measuring anyway)`);
          rows.push(await measure(direction, ring, peer, mode));
        }
      }
      await waitIdle(10_000);
      rows.push(await measure(direction, ring, 'serve', 'notify'));
    }
  }
  const rss = await serveRss(4);
  const best = (d: Row['direction'], ring: Row['ring'], p: string, m: string) =>
    Math.max(...rows.filter((r) => r.direction === d && r.ring === ring && r.peer === p && r.mode === m).map((r) => r.mpps));
  const summary = rings.flatMap((ring) => (['to device', 'from device'] as const).map((d) => {
    const dpdk = best(d, ring, 'testpmd net_vhost', 'poll');
    const ours = best(d, ring, 'virtio-mq serve', 'busy');
    return { direction: d, ring, dpdkMpps: dpdk, serveBusyMpps: ours, ratio: ours / dpdk, serveNotifyMpps: best(d, ring, 'virtio-mq serve', 'notify') };
  }));
  if (json) {
    console.log(JSON.stringify({ rows, summary, serveRssMiB4Pairs: rss.total, servePrivateMiB4Pairs: rss.private }, null, 2));
    if (ends.has('attach')) await attachRows();
    return;
  }
  console.log(`\nvirtio-user (testpmd, 1 pair, 64-byte frames) against each device side; ${seconds} s windows, best of ${rounds}`);
  console.log(`${'ring'.padEnd(7)} ${'direction'.padEnd(12)} ${'device side'.padEnd(20)} ${'mode'.padEnd(7)} ${'Mpps'.padStart(7)} ${'others CPU'.padStart(11)}`);
  for (const r of rows) console.log(`${r.ring.padEnd(7)} ${r.direction.padEnd(12)} ${r.peer.padEnd(20)} ${r.mode.padEnd(7)} ${r.mpps.toFixed(2).padStart(7)} ${(r.othersCpu * 100).toFixed(0).padStart(10)}%`);
  console.log('');
  for (const s of summary)
    console.log(`${s.ring.padEnd(7)} ${s.direction.padEnd(12)} serve busy / DPDK vhost = ${s.serveBusyMpps.toFixed(2)} / ${s.dpdkMpps.toFixed(2)} Mpps = ${s.ratio.toFixed(2)}   (serve notify ${s.serveNotifyMpps.toFixed(2)} Mpps)`);
  console.log(`serve resident memory with 4 pairs connected and forwarding: ${rss.total.toFixed(0)} MiB RSS, of which ${rss.private.toFixed(0)} MiB private (the rest is the front-end's shared guest memory serve touched)`);
  if (ends.has('attach')) await attachRows();
}

await main();
