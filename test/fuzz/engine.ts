/**
 * The fuzz engine: property-based generation with fast-check (no
 * coverage-guided fuzzer for Node installs from npm alone and runs here:
 * @jazzer.js/core 4's prebuilt addon needs glibc 2.38, Debian 12 has 2.36).
 *
 * Inputs are byte strings: a quarter fresh random bytes, the rest mutations
 * of the corpus (the target's seeds plus every file in
 * test/fuzz/corpus/NAME/): bit flips, interesting bytes and words, inserted,
 * deleted and duplicated ranges, splices of two entries. Each case runs
 * `target.one`; a failure is shrunk by fast-check and returned.
 *
 * Before each case its input is copied into `current` (a SharedArrayBuffer
 * the runner's watchdog reads), and `counter[0]` counts cases, so a hung
 * case is caught and saved from outside the worker.
 */
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import type { FuzzTarget } from './target.js';

export const CORPUS_DIR = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../../test/fuzz/corpus');

/** Every corpus file of `name` (seeds, crashes found before): [file, bytes]. */
export function corpusFiles(name: string): [string, Uint8Array][] {
  const dir = path.join(CORPUS_DIR, name);
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).sort().map((f) => [path.join(dir, f), new Uint8Array(fs.readFileSync(path.join(dir, f)))]);
}

const INTERESTING_BYTES = [0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 16, 64];
const INTERESTING_WORDS = [0, 1, 0xffff, 0x8000, 0x7fff, 0xffffffff, 0x80000000, 0x7fffffff, 0x1000, 12, 4096, 65536];

type Mutation = [number, number, number, number];

function mutate(base: Uint8Array, other: Uint8Array, muts: Mutation[], maxLen: number): Uint8Array {
  let b: Uint8Array = base.slice();
  for (const [op, a, c, d] of muts) {
    const n = b.length;
    const pos = n === 0 ? 0 : a % n;
    switch (op % 9) {
      case 0: if (n) b[pos] ^= 1 << (c & 7); break;
      case 1: if (n) b[pos] = c & 0xff; break;
      case 2: if (n) b[pos] = INTERESTING_BYTES[c % INTERESTING_BYTES.length]; break;
      case 3: {
        if (n < 4) break;
        const p = a % (n - 3), v = INTERESTING_WORDS[c % INTERESTING_WORDS.length];
        const w = d & 1 ? 4 : 2;
        for (let i = 0; i < w; i++) b[p + i] = (v >>> (8 * i)) & 0xff;
        break;
      }
      case 4: { // insert random bytes
        const k = 1 + (c % 16);
        const ins = new Uint8Array(k).map((_, i) => (d >>> (i % 4 * 8)) & 0xff ^ i * 37);
        b = concat(b.subarray(0, pos), ins, b.subarray(pos));
        break;
      }
      case 5: { // delete a range
        const k = 1 + (c % 16);
        b = concat(b.subarray(0, pos), b.subarray(pos + k));
        break;
      }
      case 6: { // duplicate a range
        const k = 1 + (c % 32);
        b = concat(b.subarray(0, pos + k), b.subarray(pos, pos + k), b.subarray(pos + k));
        break;
      }
      case 7: { // splice with another entry
        const cut = other.length === 0 ? 0 : c % other.length;
        b = concat(b.subarray(0, pos), other.subarray(cut));
        break;
      }
      default: // add or subtract a small amount from a byte
        if (n) b[pos] = (b[pos] + (c % 35) - 17) & 0xff;
    }
  }
  return b.length > maxLen ? b.subarray(0, maxLen) : b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The input arbitrary of a target over its corpus. */
export function inputs(t: FuzzTarget, corpus: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const fresh = fc.uint8Array({ maxLength: t.maxLen });
  if (corpus.length === 0) return fresh;
  const mutation = fc.tuple(fc.nat(), fc.nat(), fc.nat(), fc.nat()) as fc.Arbitrary<Mutation>;
  const mutated = fc
    .tuple(fc.nat(corpus.length - 1), fc.nat(corpus.length - 1), fc.array(mutation, { minLength: 1, maxLength: 12 }))
    .map(([i, j, muts]) => mutate(corpus[i], corpus[j], muts, t.maxLen));
  return fc.oneof({ arbitrary: fresh, weight: 1 }, { arbitrary: mutated, weight: 3 });
}

export interface RunResult {
  cases: number;
  ms: number;
  failure?: { input: Uint8Array; error: string; seed: number };
  stats?: Record<string, number>;
}

/**
 * Run `t` for `cases` cases or `seconds` seconds (whichever ends first),
 * in batches of `batch` (seed, seed+1, ...): replays the corpus first.
 */
export async function fuzz(t: FuzzTarget, o: { cases: number; seconds: number; seed: number; current?: Uint8Array; counter?: Int32Array; onBatch?: (cases: number, ms: number) => void }): Promise<RunResult> {
  const corpus = [...t.seeds(), ...corpusFiles(t.name).map(([, b]) => b)];
  const t0 = performance.now();
  let cases = 0;
  const run = async (d: Uint8Array): Promise<void> => {
    if (o.current) {
      const len = Math.min(d.length, o.current.length - 4);
      new DataView(o.current.buffer, o.current.byteOffset).setUint32(0, len, true);
      o.current.set(d.subarray(0, len), 4);
    }
    if (o.counter) Atomics.add(o.counter, 0, 1);
    await t.one(d);
  };
  const runSync = (d: Uint8Array): void => {
    if (o.current) {
      const len = Math.min(d.length, o.current.length - 4);
      new DataView(o.current.buffer, o.current.byteOffset).setUint32(0, len, true);
      o.current.set(d.subarray(0, len), 4);
    }
    if (o.counter) Atomics.add(o.counter, 0, 1);
    void t.one(d);
  };
  // the corpus first (regressions: every crash found before is a corpus file)
  for (const d of corpus) {
    try {
      await run(d);
    } catch (e) {
      return { cases, ms: performance.now() - t0, failure: { input: d, error: describe(e), seed: -1 } };
    }
    cases++;
  }
  const arb = inputs(t, corpus);
  const stackLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const deadline = t0 + o.seconds * 1000;
  for (let seed = o.seed; cases < o.cases && performance.now() < deadline; seed++) {
    const numRuns = Math.min(o.cases - cases, cases < 2000 ? 200 : 5000);
    const left = Math.max(1, Math.round(deadline - performance.now()));
    const params = { numRuns, seed, endOnFailure: false, markInterruptAsFailure: false, interruptAfterTimeLimit: left };
    const r = t.async ? await fc.check(fc.asyncProperty(arb, run), params) : fc.check(fc.property(arb, runSync), params);
    // an interruption at the time limit is no failure (fast-check may report one with no counterexample)
    if (r.failed && r.counterexample !== null && r.errorInstance !== null) {
      const input = (r.counterexample?.[0] ?? new Uint8Array(0)) as Uint8Array;
      // stack traces are off while fuzzing (typed errors are thrown by the million): replay the case with them
      Error.stackTraceLimit = 12;
      let error: unknown = r.errorInstance;
      try {
        await t.one(input);
      } catch (e) {
        error = e;
      }
      return { cases: cases + r.numRuns, ms: performance.now() - t0, failure: { input, error: describe(error), seed } };
    }
    cases += r.numRuns;
    o.onBatch?.(cases, performance.now() - t0);
  }
  Error.stackTraceLimit = stackLimit;
  return { cases, ms: performance.now() - t0 };
}

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}${e.stack ? `\n${e.stack.split('\n').slice(1, 8).join('\n')}` : ''}` : String(e);
}
