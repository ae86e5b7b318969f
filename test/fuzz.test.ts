/**
 * Every fuzz harness (test/fuzz/targets) runs for a short budget: first its
 * whole corpus (test/fuzz/corpus/NAME/: seeds and every crash found before,
 * the regressions), then fresh generated cases. Each must end with no
 * finding: no untyped error, no write outside guest memory, no fd or worker
 * leaked, no hang. The long runs are `npm run fuzz -- --target NAME --cases N`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { hostAvailable } from '../src/host/index.js';
import { TARGETS } from './fuzz/targets/index.js';

const RUN = fileURLToPath(new URL('./fuzz/run.js', import.meta.url));
// Half a second of generated cases per target keeps `npm test` inside its 3-minute budget; the long runs are `npm run fuzz`.
const SECONDS = 0.5;

for (const t of TARGETS) {
  const needsHost = t.name === 'vhost-session';
  test(`fuzz ${t.name}: corpus and ${SECONDS} s of generated cases, no finding`, { skip: needsHost && !hostAvailable() ? 'the native addon did not build' : false }, async () => {
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [RUN, '--target', t.name, '--seconds', String(SECONDS), '--cases', '1000000', '--hang-ms', '20000'], { timeout: 120_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    });
    assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
    const m = new RegExp(`^${t.name}: (\\d+) cases in .* no finding$`, 'm').exec(out.stdout);
    assert.ok(m, out.stdout);
    assert.ok(Number(m[1]) >= t.seeds().length, `ran ${m[1]} cases`);
  });
}
