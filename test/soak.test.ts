/**
 * A short reconnect soak (bench/soak.ts; the 1000-cycle figures come from
 * `node dist/bench/soak.js`): `serve` as a child process takes 16 front-end
 * connections, clean, abrupt (frames in flight), cut mid-handshake and
 * hanging up after a burst of fd-carrying requests. Afterwards its open fds
 * and threads are back at the baseline taken after a warm-up cycle, it holds
 * no guest-memory mapping any more, and its resident memory stayed within a
 * generous bound (no timing is asserted).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostAvailable } from '../src/host/index.js';
import { runSoak } from '../bench/soak.js';

test('reconnect soak: serve\'s fds and threads return to the baseline, guest mappings are released, RSS stays bounded', { skip: hostAvailable() ? false : 'the native addon did not build' }, async () => {
  const r = await runSoak({ cycles: 16, pairs: 2, every: 8 });
  assert.equal(r.samples.length, 3);
  assert.ok(r.framesLooped > 0, 'traffic went through');
  assert.deepEqual(Object.keys(r.kinds).sort(), ['abrupt', 'clean', 'fds', 'handshake']);
  for (const s of r.samples.slice(1)) {
    assert.equal(s.fds, r.baseline.fds, `open fds at cycle ${s.cycle}`);
    assert.equal(s.threads, r.baseline.threads, `threads at cycle ${s.cycle}`);
    assert.equal(s.guestMaps, 0, `guest mappings left at cycle ${s.cycle}`);
    assert.ok(s.rssKiB < r.baseline.rssKiB + 256 * 1024, `RSS ${s.rssKiB} KiB at cycle ${s.cycle} (baseline ${r.baseline.rssKiB} KiB)`);
  }
  assert.ok(!r.serveLog.some((l) => /internal error|worker failed|did not stop/.test(l)), r.serveLog.filter((l) => /internal error|worker failed|did not stop/.test(l)).join('\n'));
});
