/**
 * AdaptivePairs: raises the active pair count after `raiseAfter` loaded
 * intervals (a transmitq found full, or the rate per pair above highPps),
 * lowers it after `lowerAfter` light ones (the rate fits one pair fewer below
 * lowPps), never beyond 1..maxPairs, and does not flap between the two
 * thresholds (hysteresis).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdaptivePairs } from '../src/net/adaptive-pairs.js';

const sample = (kpps: number, full = 0) => ({ txFrames: kpps * 1000, txRingFull: full, seconds: 1 });

test('raises on a full transmitq after two intervals, up to maxPairs, one step at a time', () => {
  const a = new AdaptivePairs({ maxPairs: 3 });
  let n = 1;
  const seen: number[] = [];
  for (let i = 0; i < 8; i++) {
    n = a.next(n, sample(100, 5));
    seen.push(n);
  }
  assert.deepEqual(seen, [1, 2, 2, 3, 3, 3, 3, 3]);
});

test('raises on the rate per pair alone, lowers after three light intervals, down to 1', () => {
  const a = new AdaptivePairs({ maxPairs: 4, highPps: 200_000, lowPps: 50_000 });
  assert.equal(a.next(2, sample(500)), 2, '250 kpps per pair: loaded once');
  assert.equal(a.next(2, sample(500)), 3, 'loaded twice: raise');
  const seen: number[] = [];
  let n = 3;
  for (let i = 0; i < 9; i++) {
    n = a.next(n, sample(10));
    seen.push(n);
  }
  assert.deepEqual(seen, [3, 3, 2, 2, 2, 1, 1, 1, 1]);
});

test('between the thresholds nothing changes (hysteresis); a loaded interval resets the light count', () => {
  const a = new AdaptivePairs({ maxPairs: 4, highPps: 200_000, lowPps: 50_000 });
  for (let i = 0; i < 20; i++) assert.equal(a.next(2, sample(150)), 2, '75 kpps per pair: neither raise nor lower');
  assert.equal(a.next(3, sample(40)), 3);
  assert.equal(a.next(3, sample(40)), 3);
  assert.equal(a.next(3, sample(700)), 3, 'loaded: the light streak is broken (and one loaded interval is not enough)');
  assert.equal(a.next(3, sample(40)), 3);
  assert.equal(a.next(3, sample(40)), 3);
  assert.equal(a.next(3, sample(40)), 2, 'three light intervals in a row');
  assert.throws(() => new AdaptivePairs({ maxPairs: 2, highPps: 10, lowPps: 10 }), RangeError);
});
