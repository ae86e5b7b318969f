/**
 * `npm run fuzz -- --target NAME[,NAME...]|all --cases N [--seconds S] [--seed S]`
 *
 * Runs each target in a worker thread for N cases (or S seconds, whichever
 * ends first) and prints one line per target: cases, seconds, cases/s. A
 * finding (an untyped error, a write outside guest memory, a broken
 * invariant, or a case that runs longer than --hang-ms) is shrunk, saved as
 * test/fuzz/corpus/NAME/crash-<sha1>.bin (replayed by every later run and by
 * test/fuzz.test.ts) and printed; the exit status is then 1.
 *
 * `--save-seeds` writes each target's seeds to test/fuzz/corpus/NAME/ and exits.
 */
import { Command, InvalidArgumentError } from 'commander';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fork } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { CORPUS_DIR, type RunResult } from './engine.js';
import { TARGETS, target } from './targets/index.js';

function int(v: string): number {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

function num(v: string): number {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError('expected a positive number');
  return n;
}

const program = new Command('fuzz')
  .description('run the fuzz harnesses under test/fuzz/targets')
  .option('--target <names>', `comma-separated targets or "all": ${TARGETS.map((t) => t.name).join(', ')}`, 'all')
  .option('--cases <n>', 'cases per target', int, 100_000)
  .option('--seconds <s>', 'time budget per target (seconds)', num)
  .option('--seed <n>', 'first fast-check seed (default: time-based; printed)', int)
  .option('--hang-ms <ms>', 'a case running longer than this is a finding (hang)', int, 20_000)
  .option('--save-seeds', 'write every target\'s seeds to test/fuzz/corpus/NAME/ and exit')
  .option('--list', 'list the targets and exit')
  .exitOverride((e) => {
    if (e.exitCode !== 0) process.stderr.write('');
    process.exit(e.exitCode === 0 ? 0 : 2);
  })
  .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `virtio-mq fuzz: ${s.slice(7)}` : s) });
program.parse();
const o = program.opts<{ target: string; cases: number; seconds?: number; seed?: number; hangMs: number; saveSeeds?: boolean; list?: boolean }>();

let names: string[];
try {
  names = o.target === 'all' ? TARGETS.map((t) => t.name) : o.target.split(',').map((n) => target(n.trim()).name);
} catch (e) {
  process.stderr.write(`virtio-mq fuzz: ${(e as Error).message}\n`);
  process.exit(2);
}

if (o.list) {
  for (const t of TARGETS) console.log(`${t.name.padEnd(16)} ${t.description}`);
  process.exit(0);
}

if (o.saveSeeds) {
  for (const n of names) {
    const dir = path.join(CORPUS_DIR, n);
    fs.mkdirSync(dir, { recursive: true });
    target(n).seeds().forEach((s, i) => fs.writeFileSync(path.join(dir, `seed-${String(i).padStart(3, '0')}.bin`), s));
    console.log(`${n}: ${target(n).seeds().length} seeds in ${path.relative(process.cwd(), dir)}`);
  }
  process.exit(0);
}

const seed0 = o.seed ?? (Date.now() % 1_000_000_000);
let failed = false;
console.log(`fuzz: seed ${seed0}, ${o.cases} cases${o.seconds ? ` or ${o.seconds} s` : ''} per target`);

function saveCrash(name: string, input: Uint8Array, kind: string): string {
  const dir = path.join(CORPUS_DIR, name);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${kind}-${crypto.createHash('sha1').update(input).digest('hex').slice(0, 16)}.bin`);
  fs.writeFileSync(file, input);
  return file;
}

const SHM_SIZE = 8 + 65536;

/** The case counter and current input the child keeps in the shared file: [u32 count][u32 len][input]. */
function readShared(file: string): { count: number; input: Uint8Array } {
  const b = fs.readFileSync(file);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = Math.min(dv.getUint32(4, true), SHM_SIZE - 8);
  return { count: dv.getUint32(0, true), input: new Uint8Array(b.subarray(8, 8 + len)) };
}

for (const name of names) {
  const shm = path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `vmq-fuzz-${process.pid}-${name}`);
  fs.writeFileSync(shm, new Uint8Array(SHM_SIZE));
  const child = fork(fileURLToPath(new URL('./worker.js', import.meta.url)), [JSON.stringify({ name, cases: o.cases, seconds: o.seconds ?? 1e9, seed: seed0, shm, shmSize: SHM_SIZE })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
  const result = await new Promise<RunResult | { hang: Uint8Array } | { crash: string }>((resolve) => {
    let last = -1, lastChange = Date.now(), settled = false, shmWatch = true;
    const finish = (r: RunResult | { hang: Uint8Array } | { crash: string }): void => {
      if (settled) return;
      settled = true;
      clearInterval(dog);
      resolve(r);
    };
    const dog = setInterval(() => {
      if (!shmWatch) return; // no addon in the child: no case counter to watch
      const { count, input } = readShared(shm);
      if (count !== last) {
        last = count;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > o.hangMs) {
        child.kill('SIGKILL');
        finish({ hang: input });
      }
    }, 250);
    child.on('message', (m: { type: string; cases: number; ms: number; result: RunResult }) => {
      if (m.type === 'progress' && process.stderr.isTTY) process.stderr.write(`\r${name}: ${m.cases} cases, ${Math.round((m.cases / m.ms) * 1000)}/s   `);
      if (m.type === 'done') finish(m.result);
      if (m.type === 'noshm') shmWatch = false;
    });
    child.on('exit', (code, signal) => {
      if (settled) return;
      if (code === 0 && signal === null) return finish({ crash: 'the fuzz process exited without a result' });
      const { count, input } = readShared(shm);
      finish({ crash: `the fuzz process died (${signal ?? `exit ${code}`}) in case ${count}; input saved as ${saveCrash(name, input, 'crash')}` });
    });
  });
  fs.rmSync(shm, { force: true });
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  if ('hang' in result) {
    failed = true;
    console.log(`${name}: FINDING: a case ran longer than ${o.hangMs} ms (hang); input saved as ${saveCrash(name, result.hang, 'hang')}`);
    continue;
  }
  if ('crash' in result) {
    failed = true;
    console.log(`${name}: FINDING: ${result.crash}`);
    continue;
  }
  const secs = result.ms / 1000;
  const rate = Math.round(result.cases / secs);
  if (result.failure) {
    failed = true;
    const file = saveCrash(name, result.failure.input, 'crash');
    console.log(`${name}: FINDING after ${result.cases} cases (seed ${result.failure.seed}): ${result.failure.error}\n  input (shrunk) saved as ${file}`);
  } else {
    console.log(`${name}: ${result.cases} cases in ${secs.toFixed(1)} s (${rate} cases/s), no finding`);
    if (result.stats) console.log(`  reached: ${Object.entries(result.stats).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  }
  await new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
}
process.exit(failed ? 1 : 0);
