/**
 * The addon's readvTail (src/host): one readv into segments of one buffer
 * (a guest's receive buffers) followed by a tail in another (the overflow),
 * with every range checked before the read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as host from '../src/host/index.js';

const skip = process.platform !== 'linux' ? 'Linux only' : !host.hostAvailable() ? 'the native addon is not built' : !host.hasReadvTail() ? 'the addon predates readvTail (rebuild: npm install)' : undefined;

test('readvTail: data spreads over the segments, then the tail; null on EAGAIN; a bad range throws before reading', { skip }, () => {
  const [a, b] = host.socketPair({ nonblock: true });
  try {
    const buf = new SharedArrayBuffer(4096), tail = new SharedArrayBuffer(1024);
    const offs = Float64Array.of(100, 1000), caps = Uint32Array.of(30, 20);
    assert.equal(host.readvTail(b, buf, offs, caps, 2, tail, 8, 512), null, 'nothing to read: EAGAIN');
    const data = Uint8Array.from({ length: 120 }, (_, i) => i + 1);
    assert.equal(host.sendmsg(a, data), 120);
    assert.throws(() => host.readvTail(b, buf, Float64Array.of(4090), Uint32Array.of(30), 1, tail, 0, 10), RangeError);
    assert.throws(() => host.readvTail(b, buf, offs, caps, 2, tail, 1000, 100), RangeError);
    assert.equal(host.readvTail(b, buf, offs, caps, 2, tail, 8, 512), 120, 'the data was still there after the refused calls');
    const u = new Uint8Array(buf), t = new Uint8Array(tail);
    assert.deepEqual(u.subarray(100, 130), data.subarray(0, 30));
    assert.deepEqual(u.subarray(1000, 1020), data.subarray(30, 50));
    assert.deepEqual(t.subarray(8, 78), data.subarray(50));
    host.close(a);
    assert.equal(host.readvTail(b, buf, offs, caps, 2, tail, 8, 512), 0, 'EOF');
  } finally {
    try { host.close(a); } catch { /* closed above */ }
    host.close(b);
  }
});
