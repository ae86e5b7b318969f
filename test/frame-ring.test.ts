import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameRing } from '../src/net/frame-ring.js';
import { bytesOf } from '../src/virtio/copy.js';

const src = bytesOf(new ArrayBuffer(4096));
for (let i = 0; i < src.u8.length; i++) src.u8[i] = (i * 13 + 7) & 0xff;

test('FrameRing behaves like a bounded FIFO of byte strings over random push/pop sequences (wrap included)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 64, max: 4096 }),
      fc.array(fc.oneof(fc.record({ push: fc.integer({ min: 0, max: 1600 }), at: fc.integer({ min: 0, max: 2000 }) }), fc.constant({ pop: true })), { maxLength: 400 }),
      (capacity, ops) => {
        const ring = new FrameRing(capacity);
        const consumer = new FrameRing(ring.buffer); // the other side attaches to the same memory
        const model: Uint8Array[] = [];
        let used = 0;
        for (const op of ops) {
          if ('push' in op) {
            const len = op.push;
            const ok = ring.push(src, op.at, len);
            const rec = 4 + ((len + 3) & ~3);
            if (ok) {
              model.push(src.u8.slice(op.at, op.at + len));
              used += rec;
              assert.ok(used <= capacity, 'never holds more than its capacity');
            } else {
              // Refusal only when the record does not fit in what is free (records never straddle the end).
              assert.ok(used + rec > (capacity - 4) / 2, `refused a ${rec}-byte record with ${used} of ${capacity} used`);
            }
          } else {
            const has = consumer.peek();
            assert.equal(has, model.length > 0);
            if (has) {
              const want = model.shift()!;
              assert.equal(consumer.frameLen, want.length);
              assert.deepEqual(consumer.bytes.u8.slice(consumer.frameOff, consumer.frameOff + consumer.frameLen), want);
              consumer.consume();
              used -= 4 + ((want.length + 3) & ~3);
            }
          }
          assert.equal(consumer.isEmpty(), model.length === 0);
        }
        // Drain: everything pushed comes out, in order.
        while (model.length) {
          assert.ok(consumer.peek());
          assert.deepEqual(consumer.bytes.u8.slice(consumer.frameOff, consumer.frameOff + consumer.frameLen), model.shift());
          consumer.consume();
        }
        assert.equal(consumer.peek(), false);
      },
    ),
    { numRuns: 300 },
  );
});

test('an empty FrameRing accepts any record up to half its capacity, whatever its position', () => {
  const ring = new FrameRing(1024);
  const max = (1024 - 4) / 2 - 4; // record = 4 + len (rounded up to 4) <= (capacity - 4) / 2
  for (let i = 0; i < 2000; i++) {
    const len = (i * 37) % (max + 1);
    assert.ok(ring.push(src, i % 100, len), `push ${i} of ${len} bytes into an empty ring`);
    assert.ok(ring.peek());
    assert.equal(ring.frameLen, len);
    ring.consume();
    assert.ok(ring.isEmpty());
  }
});
