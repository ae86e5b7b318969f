/**
 * Smoke test of the ring benchmark (`npm run bench`): the quick run completes
 * and prints valid JSON with a positive packet rate for every row. No timing
 * thresholds: rates depend on the machine and on what else runs on it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// This file runs as dist/test/bench-smoke.test.js; the bench is dist/bench/rings.js.
const bench = fileURLToPath(new URL('../bench/rings.js', import.meta.url));

interface BenchRow {
  test: string;
  ring: string;
  size: number;
  pairs: number;
  mode: string;
  packets: number;
  mpps: number;
  mppsPerCpuS: number;
  outOfOrder: number;
  errors: string[];
}

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bench, ...args], { timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? null) : 0;
      resolve({ code: typeof code === 'number' ? code : null, stdout, stderr });
    });
  });
}

test('bench --quick --json: valid JSON, every configuration and ring variant moved packets', { timeout: 150_000 }, async () => {
  // Short windows and no wait for an idle machine: this checks that every row runs, not how fast.
  const r = await run(['--quick', '--json', '--seconds', '0.1', '--warmup', '0.05', '--no-idle-wait', '--modes', 'notify,busy', '--pairs', '1']);
  assert.equal(r.code, 0, `bench exited with ${r.code}: ${r.stderr}`);
  let doc: { rows: BenchRow[]; notes: string[] };
  try {
    doc = JSON.parse(r.stdout) as { rows: BenchRow[]; notes: string[] };
  } catch (e) {
    assert.fail(`stdout is not JSON (${String(e)}):\n${r.stdout.slice(0, 2000)}`);
  }
  assert.ok(Array.isArray(doc.rows), 'rows is an array');
  // --quick: the copy baseline, then one-way and loopback x busy and notify x every ring variant, 64-byte frames, 1 pair.
  const key = (x: BenchRow) => `${x.test}/${x.ring}/${x.size}/${x.test === 'copy' ? '-' : x.pairs}/${x.mode}`;
  const want = ['copy/-/64/-/-'];
  for (const t of ['one-way', 'loopback'])
    for (const m of ['busy', 'notify'])
      for (const ring of ['split', 'split-inorder', 'packed', 'packed-inorder']) want.push(`${t}/${ring}/64/1/${m}`);
  assert.deepEqual(doc.rows.map(key).sort(), want.sort());
  for (const row of doc.rows) {
    assert.ok(Number.isFinite(row.mpps) && row.mpps > 0, `${key(row)}: Mpps ${row.mpps}`);
    assert.ok(row.packets > 0, `${key(row)}: ${row.packets} packets`);
    assert.deepEqual(row.errors, [], `${key(row)}: errors`);
    if (row.test === 'loopback') assert.equal(row.outOfOrder, 0, `${key(row)}: frames out of order`);
  }
  assert.ok(Array.isArray(doc.notes) && doc.notes.length > 0, 'notes explain the table');
});
