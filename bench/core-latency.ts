/**
 * Core-to-core latency probe for the benchmarks: two Node processes, one
 * pinned to each CPU (`taskset -c`), bounce a counter in one shared cache
 * line (a memfd both map, through the addon) and report the one-way handoff
 * time in ns (half a round trip, median of 5 batches).
 *
 * Why: on these 2-vCPU guests the host moves the two vCPUs between
 * physical cores; a C ping-pong measured the handoff at 26-36 ns at some
 * times and 66-81 ns at others, and every virtqueue benchmark pays one or
 * more such handoffs per frame (a buffer line, ring lines). The benchmark
 * prints it next to each row. Indicative only: from Node the figure is
 * about twice the C one and noisy (55-290 ns), and no per-row correlation
 * with the rates was established.
 *
 *   node dist/bench/core-latency.js [--cpus 0,1] [--iters 100000]     (prints ns)
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { close as closeFd, memfdCreate, mmapShared } from '../src/host/index.js';

const self = fileURLToPath(import.meta.url);

/** One side of the ping-pong (run in a child with the memfd as fd 3). */
function side(role: 'ping' | 'pong', iters: number): void {
  const a = new Int32Array(mmapShared(3, 4096));
  if (role === 'pong') {
    Atomics.store(a, 1, 1); // ready
    for (let i = 0; i < iters; i++) {
      const want = 2 * i + 1;
      while (Atomics.load(a, 0) !== want);
      Atomics.store(a, 0, want + 1);
    }
    return;
  }
  while (Atomics.load(a, 1) !== 1);
  const batches: number[] = [];
  const per = Math.floor(iters / 5);
  let i = 0;
  for (let b = 0; b < 5; b++) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < per; k++, i++) {
      Atomics.store(a, 0, 2 * i + 1);
      while (Atomics.load(a, 0) !== 2 * i + 2);
    }
    batches.push(Number(process.hrtime.bigint() - t0) / per / 2);
  }
  batches.sort((x, y) => x - y);
  process.stdout.write(`${batches[2].toFixed(0)}\n`);
}

/**
 * One-way cache-line handoff time between CPUs `a` and `b`, ns; NaN when it
 * could not be measured (no addon, no taskset, a side died, 10 s deadline).
 */
export async function coreLatencyNs(a = 0, b = 1, iters = 100_000): Promise<number> {
  let fd: number;
  try {
    fd = memfdCreate('core-latency', 4096);
  } catch {
    return NaN;
  }
  try {
    const run = (cpu: number, role: string) =>
      spawn('taskset', ['-c', String(cpu), process.execPath, self, '--side', role, '--iters', String(per5(iters))], { stdio: ['ignore', 'pipe', 'ignore', fd] });
    const pong = run(b, 'pong');
    const ping = run(a, 'ping');
    let out = '';
    ping.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const done = await new Promise<boolean>((res) => {
      const t = setTimeout(() => res(false), 10_000);
      ping.once('exit', (code) => {
        clearTimeout(t);
        res(code === 0);
      });
    });
    for (const p of [ping, pong]) if (p.exitCode === null) p.kill('SIGKILL');
    return done ? Number(out.trim()) : NaN;
  } finally {
    closeFd(fd);
  }
}

function per5(n: number): number {
  return Math.max(5, Math.floor(n / 5) * 5);
}

const argv = process.argv.slice(2);
if (process.argv[1] === self) {
  const val = (n: string, d: string) => (argv.indexOf(n) >= 0 ? argv[argv.indexOf(n) + 1] : d);
  const iters = Number(val('--iters', '100000'));
  if (argv.includes('--side')) side(val('--side', 'ping') as 'ping' | 'pong', iters);
  else {
    const [x, y] = val('--cpus', '0,1').split(',').map(Number);
    console.log(await coreLatencyNs(x, y, iters));
  }
}
