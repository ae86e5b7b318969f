import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  PcapCapture, PcapFormatError, PcapWriter, parseCapture, readPcapFile, writePcapFile,
} from '../src/netdev/pcap.js';
import { captureSkipReason } from './support/capture.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmq-pcap-test-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

function assertFormatError(fn: () => unknown, code: string, maxOffset?: number): PcapFormatError {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  assert.ok(err instanceof PcapFormatError, `expected PcapFormatError(${code}), got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.ok(Number.isInteger(err.offset) && err.offset >= 0, 'offset is a byte offset');
  if (maxOffset !== undefined) assert.ok(err.offset <= maxOffset, `offset ${err.offset} <= ${maxOffset}`);
  return err;
}

// ---- writer/reader round trip ------------------------------------------------

test('PcapWriter -> readPcapFile round trip (microseconds)', () => {
  const path = join(tmp, 'rt-us.pcap');
  const frames = [bytes(60, 1), bytes(64, 2), bytes(1514, 3), bytes(61, 4), bytes(9014, 5)];
  const base = 1_700_000_000_123_456_789n;
  const w = new PcapWriter(path, { snaplen: 65535 });
  frames.forEach((f, i) => w.write(f, base + BigInt(i) * 1_000_000_001n));
  w.close();
  w.close(); // idempotent
  assert.throws(() => w.write(frames[0]!), /after close/);

  const cap = readPcapFile(path);
  assert.equal(cap.format, 'pcap');
  assert.equal(cap.count, frames.length);
  assert.equal(cap.data.length, frames.reduce((s, f) => s + f.length, 0));
  for (let i = 0; i < frames.length; i++) {
    assert.deepEqual(cap.frame(i), frames[i]);
    assert.equal(cap.lengths[i], frames[i]!.length);
    assert.equal(cap.origLengths[i], frames[i]!.length);
    const exact = base + BigInt(i) * 1_000_000_001n;
    assert.equal(cap.timestampNs(i), exact - (exact % 1000n), 'microsecond resolution');
  }
  assert.deepEqual(cap.frames, frames);
  assert.deepEqual([...cap], frames);
  assert.equal(cap.truncatedFrames, 0);
  assert.throws(() => cap.frame(frames.length), RangeError);
  assert.throws(() => cap.frame(-1), RangeError);
});

test('PcapWriter nanosecond magic, snaplen cut keeps the captured bytes', () => {
  const path = join(tmp, 'rt-ns.pcap');
  const w = new PcapWriter(path, { snaplen: 100, nanos: true });
  const long = bytes(300, 9);
  w.write(bytes(60, 8), 5n);
  w.write(long, 1_000_000_007n);
  w.write(bytes(100, 10), 123_456_789_012); // number timestamp
  w.close();
  const raw = readFileSync(path);
  assert.equal(raw.readUInt32LE(0), 0xa1b23c4d);
  assert.equal(raw.readUInt32LE(16), 100);
  const cap = readPcapFile(path);
  assert.equal(cap.count, 3);
  assert.deepEqual(cap.frame(1), long.subarray(0, 100));
  assert.equal(cap.lengths[1], 100);
  assert.equal(cap.origLengths[1], 300);
  assert.equal(cap.truncatedFrames, 1);
  assert.deepEqual([...cap.timestamps], [5n, 1_000_000_007n, 123_456_789_012n]);
});

test('writer buffers across its 64 KiB buffer and writes frames bigger than it', () => {
  const path = join(tmp, 'big.pcap');
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) frames.push(bytes(60 + ((i * 977) % 1455), i));
  frames.push(bytes(100_000, 77));
  frames.push(bytes(70, 78));
  assert.equal(writePcapFile(path, frames, { startNs: 10_000n }), frames.length);
  const cap = readPcapFile(path);
  assert.equal(cap.count, frames.length);
  for (let i = 0; i < frames.length; i++) assert.deepEqual(cap.frame(i), frames[i]);
  assert.equal(cap.timestampNs(3), 13_000n);
});

test('packed form into a SharedArrayBuffer is usable from a worker', async () => {
  const path = join(tmp, 'sab.pcap');
  const frames = [bytes(60, 1), bytes(1000, 2), bytes(77, 3)];
  writePcapFile(path, frames);
  const cap = readPcapFile(path);
  const sab = cap.toSharedArrayBuffer();
  assert.ok(sab instanceof SharedArrayBuffer);
  const back = PcapCapture.fromSharedArrayBuffer(sab);
  assert.equal(back.count, 3);
  assert.equal(back.data.buffer, sab, 'views, not copies');
  for (let i = 0; i < 3; i++) assert.deepEqual(back.frame(i), frames[i]);
  assert.deepEqual([...back.timestamps], [...cap.timestamps]);
  assert.throws(() => PcapCapture.fromSharedArrayBuffer(new SharedArrayBuffer(64)), TypeError);

  // a worker opens the same memory, sums frame bytes and marks frame 1
  const modUrl = new URL('../src/netdev/pcap.js', import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(${JSON.stringify(modUrl)}).then(({ PcapCapture }) => {
      const c = PcapCapture.fromSharedArrayBuffer(workerData);
      const sums = [];
      for (let i = 0; i < c.count; i++) sums.push(c.frame(i).reduce((a, b) => a + b, 0));
      c.frame(1)[0] = 0xee;
      parentPort.postMessage(sums);
    });`;
  const sums = await new Promise<number[]>((resolve, reject) => {
    const wk = new Worker(code, { eval: true, workerData: sab });
    wk.once('message', (m: number[]) => { resolve(m); void wk.terminate(); });
    wk.once('error', reject);
  });
  assert.deepEqual(sums, frames.map((f) => f.reduce((a, b) => a + b, 0)));
  assert.equal(back.frame(1)[0], 0xee, 'worker wrote into shared memory');
});

// ---- classic pcap, hand-built --------------------------------------------------

interface Rec { sec: number; frac: number; data: Uint8Array; orig?: number }

function classic(le: boolean, nanos: boolean, recs: Rec[], linktype = 1): Uint8Array {
  const size = 24 + recs.reduce((s, r) => s + 16 + r.data.length, 0);
  const b = Buffer.alloc(size);
  const u32 = (v: number, o: number) => (le ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
  const u16 = (v: number, o: number) => (le ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
  u32(nanos ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  u16(2, 4); u16(4, 6); u32(0, 8); u32(0, 12); u32(65535, 16); u32(linktype, 20);
  let o = 24;
  for (const r of recs) {
    u32(r.sec, o); u32(r.frac, o + 4); u32(r.data.length, o + 8); u32(r.orig ?? r.data.length, o + 12);
    b.set(r.data, o + 16);
    o += 16 + r.data.length;
  }
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

for (const le of [true, false]) {
  for (const nanos of [false, true]) {
    test(`classic pcap ${le ? 'little' : 'big'}-endian, ${nanos ? 'nano' : 'micro'}second magic`, () => {
      const recs: Rec[] = [
        { sec: 1, frac: 2, data: bytes(60, 1) },
        { sec: 0xfffffff0, frac: nanos ? 999_999_999 : 999_999, data: bytes(1514, 2) },
        { sec: 3, frac: 0, data: bytes(64, 3), orig: 1500 },
      ];
      const cap = parseCapture(classic(le, nanos, recs));
      assert.equal(cap.format, 'pcap');
      assert.equal(cap.count, 3);
      const mul = nanos ? 1n : 1000n;
      recs.forEach((r, i) => {
        assert.deepEqual(cap.frame(i), r.data);
        assert.equal(cap.timestampNs(i), BigInt(r.sec) * 1_000_000_000n + BigInt(r.frac) * mul);
        assert.equal(cap.origLengths[i], r.orig ?? r.data.length);
      });
      assert.equal(cap.truncatedFrames, 1);
    });
  }
}

test('classic pcap: other linktypes, versions and magics are rejected', () => {
  assertFormatError(() => parseCapture(classic(true, false, [], 113)), 'unsupported-linktype');
  assertFormatError(() => parseCapture(classic(false, false, [], 101)), 'unsupported-linktype');
  const v3 = Buffer.from(classic(true, false, []));
  v3.writeUInt16LE(3, 4);
  assertFormatError(() => parseCapture(v3), 'unsupported-version');
  assertFormatError(() => parseCapture(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), 'bad-magic', 0);
  assertFormatError(() => parseCapture(new Uint8Array(0)), 'truncated', 0);
  // an empty capture is fine
  assert.equal(parseCapture(classic(true, false, [])).count, 0);
});

/** Every prefix either parses (cut at a record boundary) or raises 'truncated'. */
function checkAllPrefixes(full: Uint8Array, boundaries: Map<number, number>): void {
  for (let n = 0; n < full.length; n++) {
    // fresh copy so a read past `n` would see no valid data at all
    const prefix = new Uint8Array(full.subarray(0, n));
    const frames = boundaries.get(n);
    if (frames !== undefined) {
      assert.equal(parseCapture(prefix).count, frames, `prefix ${n}`);
    } else {
      const e = assertFormatError(() => parseCapture(prefix), 'truncated', n);
      let stopped: PcapCapture;
      try {
        stopped = parseCapture(prefix, { onTruncated: 'stop' });
      } catch (e2) {
        // a cut file header cannot be skipped, even in 'stop' mode
        assert.ok(e2 instanceof PcapFormatError && e2.code === 'truncated' && e2.offset === e.offset);
        continue;
      }
      assert.equal(stopped.truncatedAt, e.offset, `prefix ${n}: stop at the failing offset`);
      assert.ok(stopped.count <= Math.max(0, ...boundaries.values()));
    }
  }
}

test('classic pcap: every truncation gives PcapFormatError(truncated) with the offset', () => {
  const recs: Rec[] = [{ sec: 1, frac: 1, data: bytes(60, 1) }, { sec: 2, frac: 2, data: bytes(75, 2) }];
  for (const le of [true, false]) {
    const full = classic(le, false, recs);
    checkAllPrefixes(full, new Map([[24, 0], [24 + 76, 1]]));
    assert.equal(parseCapture(full).count, 2);
    // a record header claims more than the file has: the error names that record
    const b = Buffer.from(full);
    if (le) b.writeUInt32LE(76, 100 + 8); else b.writeUInt32BE(200_000, 24 + 8);
    const e = assertFormatError(() => parseCapture(b), 'truncated');
    assert.equal(e.offset, le ? 100 : 24, 'offset of the bad record');
    // an absurd record length is a format error, not a giant frame
    const huge = Buffer.from(full);
    if (le) huge.writeUInt32LE(0x7fffffff, 24 + 8); else huge.writeUInt32BE(0x7fffffff, 24 + 8);
    assertFormatError(() => parseCapture(huge), 'bad-record', 32);
  }
});

// ---- pcapng, hand-built ----------------------------------------------------------

class NgBuilder {
  private parts: Buffer[] = [];
  constructor(private le: boolean) {}

  private block(type: number, body: Buffer): this {
    const pad = (4 - (body.length % 4)) % 4;
    const total = 12 + body.length + pad;
    const b = Buffer.alloc(total);
    this.u32(b, type, 0); this.u32(b, total, 4);
    body.copy(b, 8);
    this.u32(b, total, total - 4);
    this.parts.push(b);
    return this;
  }

  private u32(b: Buffer, v: number, o: number): void { if (this.le) b.writeUInt32LE(v, o); else b.writeUInt32BE(v, o); }
  private u16(b: Buffer, v: number, o: number): void { if (this.le) b.writeUInt16LE(v, o); else b.writeUInt16BE(v, o); }

  private options(opts: Array<[number, Buffer]>): Buffer {
    const out: Buffer[] = [];
    for (const [code, val] of [...opts, [0, Buffer.alloc(0)] as [number, Buffer]]) {
      const h = Buffer.alloc(4); this.u16(h, code, 0); this.u16(h, val.length, 2);
      out.push(h, val, Buffer.alloc((4 - (val.length % 4)) % 4));
    }
    return Buffer.concat(out);
  }

  shb(le = this.le): this {
    this.le = le;
    const b = Buffer.alloc(16);
    this.u32(b, 0x1a2b3c4d, 0); this.u16(b, 1, 4); this.u16(b, 0, 6);
    b.writeBigInt64LE(-1n, 8); // section length unknown (all-ones either way)
    return this.block(0x0a0d0d0a, Buffer.concat([b, this.options([[4, Buffer.from('vmq-test')]])]));
  }

  idb(linktype = 1, snaplen = 0, tsresol?: number): this {
    const b = Buffer.alloc(8);
    this.u16(b, linktype, 0); this.u32(b, snaplen, 4);
    const opts: Array<[number, Buffer]> = [[2, Buffer.from('veth0')]];
    if (tsresol !== undefined) opts.push([9, Buffer.from([tsresol])]);
    return this.block(1, Buffer.concat([b, this.options(opts)]));
  }

  epb(iface: number, ticks: bigint, data: Uint8Array, orig = data.length): this {
    const b = Buffer.alloc(20);
    this.u32(b, iface, 0);
    this.u32(b, Number(ticks >> 32n), 4); this.u32(b, Number(ticks & 0xffffffffn), 8);
    this.u32(b, data.length, 12); this.u32(b, orig, 16);
    const pad = Buffer.alloc((4 - (data.length % 4)) % 4);
    return this.block(6, Buffer.concat([b, data, pad, this.options([[1, Buffer.from('comment')]])]));
  }

  spb(data: Uint8Array, orig = data.length): this {
    const b = Buffer.alloc(4); this.u32(b, orig, 0);
    return this.block(3, Buffer.concat([b, data]));
  }

  other(type: number, len: number): this { return this.block(type, Buffer.alloc(len, 0xab)); }

  raw(b: Buffer): this { this.parts.push(b); return this; }

  build(): Buffer { return Buffer.concat(this.parts); }
}

for (const le of [true, false]) {
  test(`pcapng ${le ? 'little' : 'big'}-endian: SHB+IDB+EPB+SPB, options, padding, unknown blocks`, () => {
    const f = [bytes(60, 1), bytes(61, 2), bytes(1514, 3), bytes(63, 4), bytes(100, 5)];
    const buf = new NgBuilder(le)
      .shb()
      .idb(1, 0, 9)                    // interface 0: ns resolution, no snaplen
      .other(4, 12)                    // Name Resolution Block: skipped
      .epb(0, 1_700_000_000_000_000_001n, f[0]!)
      .other(0x40000bad, 7)            // custom/unknown block: skipped
      .spb(f[1]!)
      .idb(1, 0)                       // interface 1: default µs resolution
      .epb(1, 1_700_000_000_000_002n, f[2]!)
      .epb(0, 5n, f[3]!.subarray(0, 40), 63) // caplen < origlen
      .spb(f[4]!, 200)                 // SPB with origlen > captured
      .other(5, 20)                    // Interface Statistics Block: skipped
      .build();
    const cap = parseCapture(buf);
    assert.equal(cap.format, 'pcapng');
    assert.equal(cap.count, 5);
    assert.deepEqual(cap.frame(0), f[0]);
    assert.deepEqual(cap.frame(1), f[1], 'SPB captured length from the block, padding dropped');
    assert.deepEqual(cap.frame(2), f[2]);
    assert.deepEqual(cap.frame(3), f[3]!.subarray(0, 40));
    assert.deepEqual(cap.frame(4), f[4]);
    assert.deepEqual([...cap.lengths], [60, 61, 1514, 40, 100]);
    assert.deepEqual([...cap.origLengths], [60, 61, 1514, 63, 200]);
    assert.equal(cap.truncatedFrames, 2);
    assert.equal(cap.timestampNs(0), 1_700_000_000_000_000_001n);
    assert.equal(cap.timestampNs(1), 1_700_000_000_000_000_001n, 'SPB reuses the previous timestamp');
    assert.equal(cap.timestampNs(2), 1_700_000_000_000_002_000n, 'µs default resolution');
    assert.equal(cap.timestampNs(3), 5n);
  });
}

test('pcapng: multiple sections with different byte orders, interfaces reset per section', () => {
  const a = bytes(70, 1);
  const b = bytes(80, 2);
  const c = bytes(90, 3);
  const buf = new NgBuilder(true)
    .shb(true).idb(1, 0).epb(0, 1n, a)
    .shb(false).idb(1, 0, 0x80 | 10).epb(0, 2048n, b).spb(c) // 2^-10 s ticks
    .build();
  const cap = parseCapture(buf);
  assert.equal(cap.count, 3);
  assert.deepEqual(cap.frames, [a, b, c]);
  assert.equal(cap.timestampNs(0), 1000n);
  assert.equal(cap.timestampNs(1), 2_000_000_000n);

  // interface 1 of section 1 does not exist in section 2
  const bad = new NgBuilder(true).shb().idb().idb().shb(false).idb().epb(1, 0n, a).build();
  assertFormatError(() => parseCapture(bad), 'bad-block');
});

test('pcapng: non-Ethernet interfaces, bad lengths and bad byte-order magic are typed errors', () => {
  const sll = new NgBuilder(true).shb().idb(113).epb(0, 0n, bytes(60, 1)).build();
  assertFormatError(() => parseCapture(sll), 'unsupported-linktype');
  // a non-Ethernet interface with no packets is harmless
  assert.equal(parseCapture(new NgBuilder(true).shb().idb(113).idb(1).epb(1, 0n, bytes(60, 1)).build()).count, 1);

  const two = new NgBuilder(true).shb().idb().build();
  const noShb = two.subarray(two.readUInt32LE(4)); // starts at the IDB
  assertFormatError(() => parseCapture(noShb), 'bad-magic', 0); // not recognisable as pcapng

  const good = new NgBuilder(false).shb().idb().epb(0, 0n, bytes(60, 1)).build();
  const shbLen = good.readUInt32BE(4);
  const idbLen = good.readUInt32BE(shbLen + 4);
  const epb = shbLen + idbLen;
  const odd = Buffer.from(good); odd.writeUInt32BE(13, epb + 4);
  assertFormatError(() => parseCapture(odd), 'bad-block', epb + 4);
  const tiny = Buffer.from(good); tiny.writeUInt32BE(8, epb + 4);
  assertFormatError(() => parseCapture(tiny), 'bad-block', epb + 4);
  const trailer = Buffer.from(good); trailer.writeUInt32BE(0, good.length - 4);
  assertFormatError(() => parseCapture(trailer), 'bad-block');
  const caplen = Buffer.from(good); caplen.writeUInt32BE(1000, epb + 8 + 12);
  assertFormatError(() => parseCapture(caplen), 'bad-block', epb + 8 + 12);
  const bom = Buffer.from(good); bom.writeUInt32BE(0x12345678, 8);
  assertFormatError(() => parseCapture(bom), 'bad-magic', 8);
  const v2 = Buffer.from(good); v2.writeUInt16BE(2, 12);
  assertFormatError(() => parseCapture(v2), 'unsupported-version');
  // an option running past its block
  const opt = new NgBuilder(true).shb().idb(1, 0, 6).build();
  const idbAt = opt.readUInt32LE(4);
  opt.writeUInt16LE(200, idbAt + 8 + 8 + 2); // first option's length
  assertFormatError(() => parseCapture(opt), 'bad-block');
});

test('pcapng: every truncation gives PcapFormatError(truncated) with the offset', () => {
  for (const le of [true, false]) {
    const full = new NgBuilder(le).shb().idb(1, 0, 9).epb(0, 7n, bytes(61, 1)).spb(bytes(60, 2)).other(5, 8).build();
    // block boundaries -> frames complete at that point
    const bounds = new Map<number, number>();
    let pos = 0;
    let frames = 0;
    const types: number[] = [];
    while (pos < full.length) {
      const type = le ? full.readUInt32LE(pos) : full.readUInt32BE(pos);
      const total = le ? full.readUInt32LE(pos + 4) : full.readUInt32BE(pos + 4);
      types.push(type);
      pos += total;
      if (type === 6 || type === 3) frames++;
      bounds.set(pos, frames);
    }
    assert.deepEqual(types, [0x0a0d0d0a, 1, 6, 3, 5]);
    bounds.delete(full.length);
    checkAllPrefixes(full, bounds);
    assert.equal(parseCapture(full).count, 2);
  }
});

test('random corruption never crashes: a capture or a PcapFormatError', () => {
  let x = 0x12345678;
  const rnd = (n: number) => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % n; };
  const inputs = [
    new NgBuilder(true).shb().idb(1, 0, 9).epb(0, 7n, bytes(61, 1)).spb(bytes(60, 2)).other(5, 8).build(),
    new NgBuilder(false).shb().idb(1, 64).spb(bytes(90, 2)).shb(true).idb().epb(0, 1n, bytes(70, 3)).build(),
    Buffer.from(classic(true, true, [{ sec: 1, frac: 1, data: bytes(60, 1) }, { sec: 2, frac: 2, data: bytes(75, 2) }])),
    Buffer.from(classic(false, false, [{ sec: 1, frac: 1, data: bytes(64, 1) }])),
  ];
  let errors = 0;
  let parsed = 0;
  for (let iter = 0; iter < 4000; iter++) {
    const src = inputs[iter % inputs.length]!;
    const b = Buffer.from(src);
    const edits = 1 + rnd(4);
    for (let k = 0; k < edits; k++) {
      const at = rnd(b.length);
      // bias towards length fields: small, huge, or off-by-a-few values
      b[at] = [0, 0xff, 0x0c, 0x10, rnd(256), b[at]! + 1, b[at]! - 4][rnd(7)]! & 0xff;
    }
    const cut = rnd(3) === 0 ? b.subarray(0, rnd(b.length + 1)) : b;
    try {
      const cap = parseCapture(cut, rnd(2) ? { onTruncated: 'stop' } : {});
      for (let i = 0; i < cap.count; i++) {
        assert.ok(cap.offsets[i]! + cap.lengths[i]! <= cap.data.length);
        assert.ok(cap.lengths[i]! <= cap.origLengths[i]!);
      }
      parsed++;
    } catch (e) {
      if (!(e instanceof PcapFormatError)) throw e;
      assert.ok(e.offset >= 0 && e.offset <= cut.length, `offset ${e.offset} within the input`);
      errors++;
    }
  }
  assert.ok(errors > 100 && parsed > 100, `both outcomes exercised (${errors} errors, ${parsed} parsed)`);
});

// ---- real capture from scripts/capture-traffic.sh ------------------------------

interface Summary { tcp: Set<string>; udp: number; icmp: number; icmp6: number; maxLen: number; badIpCsum: number }

/** Tiny Ethernet/IPv4/IPv6 parse: TCP connections (direction-free 5-tuples), UDP/ICMP counts. */
function summarize(cap: PcapCapture): Summary {
  const s: Summary = { tcp: new Set(), udp: 0, icmp: 0, icmp6: 0, maxLen: 0, badIpCsum: 0 };
  for (let i = 0; i < cap.count; i++) {
    const f = cap.frame(i);
    s.maxLen = Math.max(s.maxLen, cap.origLengths[i]!);
    if (f.length < 14) continue;
    const et = (f[12]! << 8) | f[13]!;
    let proto: number;
    let l4: number;
    let src: string;
    let dst: string;
    if (et === 0x0800 && f.length >= 34) {
      const ihl = (f[14]! & 0x0f) * 4;
      let sum = 0;
      for (let j = 14; j < 14 + ihl; j += 2) sum += (f[j]! << 8) | f[j + 1]!;
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      if (sum !== 0xffff) s.badIpCsum++;
      proto = f[23]!; l4 = 14 + ihl;
      src = f.subarray(26, 30).join('.'); dst = f.subarray(30, 34).join('.');
    } else if (et === 0x86dd && f.length >= 54) {
      proto = f[20]!; l4 = 54;
      src = Buffer.from(f.subarray(22, 38)).toString('hex'); dst = Buffer.from(f.subarray(38, 54)).toString('hex');
    } else {
      continue;
    }
    if (proto === 1) s.icmp++;
    else if (proto === 58) s.icmp6++;
    else if (proto === 17) s.udp++;
    else if (proto === 6 && f.length >= l4 + 4) {
      const sp = (f[l4]! << 8) | f[l4 + 1]!;
      const dp = (f[l4 + 2]! << 8) | f[l4 + 3]!;
      const a = `${src}:${sp}`;
      const b = `${dst}:${dp}`;
      s.tcp.add(a < b ? `tcp ${a} ${b}` : `tcp ${b} ${a}`);
    }
  }
  return s;
}

const skipCapture = captureSkipReason();

test('scripts/capture-traffic.sh records real TCP (-P 8), UDP and ICMP traffic', { skip: skipCapture, timeout: 300_000 }, () => {
  const script = fileURLToPath(new URL('../../scripts/capture-traffic.sh', import.meta.url));
  const out = join(tmp, 'real.pcap');
  const stdout = execFileSync('bash', [script, out, '2'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 280_000 });
  assert.match(stdout, /^capture-traffic: \d+ packets captured/m);
  const cap = readPcapFile(out);
  const reported = Number(/(\d+) packets captured/.exec(stdout)![1]);
  assert.equal(cap.count, reported, 'every packet tcpdump reported is in the file');
  const s = summarize(cap);
  assert.ok(s.tcp.size >= 8, `>= 8 distinct TCP flows, got ${s.tcp.size}`);
  assert.ok(s.udp > 100, `UDP frames: ${s.udp}`);
  assert.ok(s.icmp >= 10, `ICMP echo request+reply frames: ${s.icmp}`);
  assert.ok(s.icmp6 >= 6, `ICMPv6 frames: ${s.icmp6}`);
  assert.ok(s.maxLen <= 1514, `offloads off: frames <= 1514 bytes, max ${s.maxLen}`);
  assert.equal(s.badIpCsum, 0, 'IPv4 header checksums are real');
  assert.equal(cap.truncatedFrames, 0, 'snaplen 0 keeps whole frames');
  // the namespaces are gone
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.doesNotMatch(left, /vmqcap-/);
});
