/**
 * Development probe for the attach TX path: one testpmd net_vhost rxonly
 * (forwarding lcore on CPU 1) stays up, and attach (CPU 0) runs once per
 * variant, alternating, `--reps` times; prints the Mpps testpmd counted.
 *
 *   node dist/bench/attach-probe.js [--seconds 3] [--reps 2] [--ring split] -- "--in-order" "" ...
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Testpmd, interopSkipReason, tmpSocketPath } from './support/testpmd.js';

const args = process.argv.slice(2);
const dd = args.indexOf('--');
const opts = dd >= 0 ? args.slice(0, dd) : args;
const variants = dd >= 0 ? args.slice(dd + 1) : [''];
const opt = (n: string, d: string) => (opts.indexOf(n) >= 0 ? opts[opts.indexOf(n) + 1] : d);
const seconds = Number(opt('--seconds', '3'));
const reps = Number(opt('--reps', '2'));
const ring = opt('--ring', 'split');
const fwd = opt('--fwd', 'rxonly');
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return;
  p.kill('SIGTERM');
  const until = Date.now() + 3000;
  while (p.exitCode === null && Date.now() < until) await sleep(50);
  if (p.exitCode === null) p.kill('SIGKILL');
}

function pidJiffies(pids: number[]): number {
  let j = 0;
  for (const pid of pids) {
    try {
      for (const t of readdirSync(`/proc/${pid}/task`)) {
        const st = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
        const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
        j += Number(f[11]) + Number(f[12]);
      }
    } catch { /* gone */ }
  }
  return j;
}
function tree(pid: number): number[] {
  const out = [pid];
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) out.push(...tree(Number(c)));
  } catch { /* gone */ }
  return out;
}

function cpuTimes(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  return { busy: f.reduce((x, y) => x + y, 0) - idle, total: f.reduce((x, y) => x + y, 0) };
}

const skip = interopSkipReason();
if (skip) { console.log(`skipped: ${skip}`); process.exit(0); }
const socket = tmpSocketPath(`probe${process.pid}`);
const dev = await Testpmd.start({ name: `probe${process.pid}`, lcores: '0@1,1@1', vdevs: [`net_vhost0,iface=${socket},queues=1`], forwardMode: fwd as 'rxonly', txpkts: 64 });
try {
  await dev.start();
  for (let r = 0; r < reps; r++) {
    for (const v of variants) {
      const netdev = fwd === 'rxonly' ? 'txonly,size=64' : 'sink';
      // A variant may start with @DIR: that build's dist (e.g. a baseline) instead of this one.
      const at = v.startsWith('@') ? v.split(' ')[0].slice(1) : '';
      const main = at ? `${at}/src/cli/main.js` : cli;
      const p = spawn('taskset', ['-c', '0', process.execPath, ...(process.env.PROBE_NODE_ARGS ? process.env.PROBE_NODE_ARGS.split(' ') : []), main, 'attach', '--socket', socket, '--queues', '1', '--ring', ring,
        '--queue-size', '1024', '--netdev', netdev, '--mode', 'busy', '--duration', '600', '--json', ...v.split(' ').filter((x) => x !== '' && !x.startsWith('@'))], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
      const until = Date.now() + 20_000;
      while (!out.includes('connected to the back-end') && Date.now() < until) await sleep(50);
      await sleep(1000);
      const key = fwd === 'rxonly' ? 'rx_packets' : 'tx_packets';
      const a = (await dev.portStats(0))[key], t0 = Date.now();
      const pids = [...tree(p.pid!), ...tree(dev.pid ?? p.pid!)];
      const c0 = cpuTimes(), j0 = pidJiffies(pids), a0 = pidJiffies(tree(p.pid!));
      let perf = '';
      if (process.env.PROBE_PERF) {
        const r = spawnSync('perf', ['stat', '-e', process.env.PROBE_PERF, '-p', String(p.pid), '--', 'sleep', String(seconds)], { encoding: 'utf8' });
        perf = r.stderr.split('\n').filter((l) => /\d/.test(l) && !l.includes('Performance')).map((l) => l.trim().replace(/\s+/g, ' ')).join(' | ');
      } else await sleep(seconds * 1000);
      const c1 = cpuTimes(), j1 = pidJiffies(pids), a1 = pidJiffies(tree(p.pid!));
      const b = (await dev.portStats(0))[key], t1 = Date.now();
      await stop(p);
      if (process.env.PROBE_VERBOSE) console.log(out.slice(-1500));
      console.log(`${ring} [${v}] ${((b - a) / ((t1 - t0) / 1000) / 1e6).toFixed(2)} Mpps, per attach CPU-second ${((b - a) / ((a1 - a0) / 100) / 1e6).toFixed(2)} Mpps, others took ${(100 * Math.max(0, c1.busy - c0.busy - (j1 - j0)) / (c1.total - c0.total)).toFixed(0)} % of the CPUs ${perf}`);
      await sleep(500);
    }
  }
} finally {
  await dev.quit().catch(() => undefined);
  rmSync(socket, { force: true });
}
