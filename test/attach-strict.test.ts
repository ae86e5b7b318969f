/**
 * `attach --strict`: the driver checks the device. A scripted back-end
 * (test/support/fake-backend.ts) breaks one device rule at a time on
 * receiveq1: a used id never made available (§2.7.8), a used length beyond
 * the buffer (§2.7.8.2), used->idx moved past every buffer made available
 * (§2.7.8), and with VIRTIO_NET_F_MRG_RXBUF a num_buffers beyond the buffers
 * made available or not published together (§5.1.9.4.1). Each is reported
 * once, as it happens, with the section, the spec's words and the values,
 * and summarised in the run's report (text and JSON); the run ends with a
 * clean disconnect, as without --strict.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostAvailable } from '../src/host/index.js';
import { attach, type AttachOptions } from '../src/cli/attach.js';
import { RING_RULES, formatConformance, type SpecRule } from '../src/virtio/conformance.js';
import { NET_RULES } from '../src/net/conformance.js';
import { VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import { VIRTIO_NET_F_MRG_RXBUF } from '../src/net/features.js';
import { FakeBackend } from './support/fake-backend.js';

const skip = hostAvailable() ? false : 'the native addon (src/host) is not built';
const QUEUE_SIZE = 64;

/** receiveq1's buffer of descriptor 0 gets a virtio_net_hdr whose num_buffers is `n` (12-byte header, MRG_RXBUF). */
function numBuffers(be: FakeBackend, n: number): void {
  be.writeBuffer(0, 0, 10, Uint8Array.of(n & 0xff, n >> 8));
}

const CASES: { name: string; mrg?: boolean; fault: (be: FakeBackend) => void; rule: SpecRule; values: RegExp }[] = [
  { name: 'a used id never made available', fault: (be) => be.use(0, QUEUE_SIZE + 5, 72), rule: RING_RULES.splitUsedId, values: /device returned id 69, which is not outstanding/ },
  { name: 'a used length beyond the buffer', fault: (be) => be.use(0, 0, 100_000), rule: RING_RULES.splitUsedLen, values: /device wrote 100000 bytes into \d+ writable bytes/ },
  { name: 'used->idx moved past every buffer made available', fault: (be) => be.setUsedIdx(0, QUEUE_SIZE + 10), rule: RING_RULES.splitUsedIdx, values: /used idx ran 74 ahead with 64 chains outstanding/ },
  {
    name: 'num_buffers beyond the buffers made available', mrg: true,
    fault: (be) => { numBuffers(be, 500); be.use(0, 0, 72); }, rule: NET_RULES.numBuffersBeyond, values: /num_buffers 500, but the driver made only 64 buffers available/,
  },
  {
    name: 'num_buffers buffers not used together', mrg: true,
    fault: (be) => { numBuffers(be, 3); be.use(0, 0, 72); }, rule: NET_RULES.numBuffersTogether, values: /num_buffers 3, but only 1 used buffers were published with it/,
  },
];

for (const c of CASES) {
  test(`attach --strict: ${c.name} is §${c.rule.section}, reported once with the spec's words and the values`, { skip, timeout: 30_000 }, async () => {
    const be = new FakeBackend(() => 'ack');
    if (c.mrg) be.features = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF;
    const logs: string[] = [];
    const o: AttachOptions = {
      socket: be.path, server: false, queues: 1, ring: 'split', inOrder: false, mrgRxbuf: !!c.mrg, queueSize: QUEUE_SIZE, rss: false,
      netdev: 'sink', duration: 20, mode: 'notify', json: true, reconnect: false, strict: true,
    };
    try {
      let faulted = false;
      const run = attach(o, () => {}, {
        log: (l) => {
          logs.push(l);
          // Once the first connection is up (receiveq1 stocked), break the rule.
          if (!faulted && /back-end connection 1: /.test(l)) {
            faulted = true;
            c.fault(be);
          }
        },
      });
      const r = await run;
      assert.ok(faulted, logs.join('\n'));
      assert.equal(r.ok, false);
      assert.ok(r.problems.some((p) => /back-end failure: QUEUE/.test(p)), r.problems.join('; '));
      const rep = r.conformance!;
      assert.ok(rep, 'the report is part of the result');
      assert.equal(rep.violations, 1, formatConformance(rep));
      assert.equal(rep.rules.length, 1);
      const got = rep.rules[0];
      assert.equal(got.id, c.rule.id);
      assert.equal(got.section, c.rule.section);
      assert.equal(got.by, 'device');
      assert.equal(got.words, c.rule.words);
      assert.equal(got.first.queue, 0, 'receiveq1');
      assert.match(got.first.values, c.values);
      const text = formatConformance(rep);
      assert.ok(text.includes(`§${c.rule.section} ${c.rule.title} (broken by the device, 1×`), text);
      assert.ok(text.includes(`"${c.rule.words}"`), text);
      assert.deepEqual(JSON.parse(JSON.stringify(rep)), rep, 'the report is plain JSON');
      const lines = logs.filter((l) => l.startsWith('strict: '));
      assert.equal(lines.length, 1, `reported once as it happened: ${logs.join('\n')}`);
      assert.ok(lines[0].startsWith(`strict: the device broke §${c.rule.section} ${c.rule.title}: "${c.rule.words}" (queue 0: `), lines[0]);
      await be.closed();
    } finally {
      be.stop();
    }
  });
}

test('attach without --strict: the same fault still ends the run (today\'s behaviour), and no report', { skip, timeout: 30_000 }, async () => {
  const be = new FakeBackend(() => 'ack');
  let faulted = false;
  try {
    const r = await attach({
      socket: be.path, server: false, queues: 1, ring: 'split', inOrder: false, mrgRxbuf: false, queueSize: QUEUE_SIZE, rss: false,
      netdev: 'sink', duration: 20, mode: 'notify', json: true, reconnect: false,
    }, () => {}, {
      log: (l) => {
        if (!faulted && /back-end connection 1: /.test(l)) {
          faulted = true;
          be.use(0, QUEUE_SIZE + 5, 72);
        }
      },
    });
    assert.ok(faulted);
    assert.ok(r.problems.some((p) => /USED_ID_INVALID/.test(p)), r.problems.join('; '));
    assert.equal(r.conformance, undefined);
  } finally {
    be.stop();
  }
});
