import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CheckError, MAX_FRAME, MIN_FRAME, PAYLOAD_MAGIC, TrafficGenerator, checkErrorName,
  type GeneratorOptions,
} from '../src/netdev/generator.js';
import { PcapWriter, readPcapFile } from '../src/netdev/pcap.js';

// ---- an independent parser, written from the RFCs, not from generator.ts ----

function csum(b: Uint8Array, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 65536);
  return s;
}

const be16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const be32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
const mac = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

function v6str(b: Uint8Array): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(be16(b, i).toString(16));
  return g.join(':');
}

function v6full(s: string): string {
  // expand '::' for comparison
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const mid = new Array(8 - h.length - t.length).fill('0');
  return [...h, ...mid, ...t].map((x) => parseInt(x, 16).toString(16)).join(':');
}

interface Parsed {
  dstMac: string; srcMac: string; ipVersion: 4 | 6; proto: 'udp' | 'tcp';
  srcIp: string; dstIp: string; srcPort: number; dstPort: number;
  payload: Uint8Array;
}

/** Parses and validates Ethernet/IPv4|IPv6/UDP|TCP; throws on anything wrong. */
function parse(f: Uint8Array): Parsed {
  assert.ok(f.length >= 60 && f.length <= 9014, `length ${f.length}`);
  const dstMac = mac(f.subarray(0, 6));
  const srcMac = mac(f.subarray(6, 12));
  assert.equal(f[6]! & 0x03, 0x02, 'source MAC locally administered unicast');
  assert.equal(f[0]! & 0x01, 0, 'destination MAC unicast');
  const et = be16(f, 12);
  let l4: number;
  let protoNum: number;
  let pseudo: number;
  let ipVersion: 4 | 6;
  let srcIp: string;
  let dstIp: string;
  if (et === 0x0800) {
    ipVersion = 4;
    const ip = f.subarray(14);
    assert.equal(ip[0], 0x45, 'IPv4, IHL 5');
    assert.equal(be16(ip, 2), f.length - 14, 'IPv4 total length');
    assert.equal(csum(ip.subarray(0, 20)), 0xffff, 'IPv4 header checksum');
    assert.ok(ip[8]! > 0, 'TTL');
    protoNum = ip[9]!;
    srcIp = ip.subarray(12, 16).join('.');
    dstIp = ip.subarray(16, 20).join('.');
    for (const a of [srcIp, dstIp]) assert.match(a, /^198\.(18|19)\./, 'in 198.18.0.0/15');
    l4 = 34;
    pseudo = csum(ip.subarray(12, 20)) + (f.length - 34) + protoNum;
  } else if (et === 0x86dd) {
    ipVersion = 6;
    const ip = f.subarray(14);
    assert.equal(ip[0]! >> 4, 6);
    assert.equal(be16(ip, 4), f.length - 54, 'IPv6 payload length');
    protoNum = ip[6]!;
    srcIp = v6str(ip.subarray(8, 24));
    dstIp = v6str(ip.subarray(24, 40));
    for (const a of [srcIp, dstIp]) assert.match(a, /^2001:2:0:/, 'in 2001:2::/48');
    l4 = 54;
    pseudo = csum(ip.subarray(8, 40)) + (f.length - 54) + protoNum;
  } else {
    throw new Error(`ethertype ${et.toString(16)}`);
  }
  const seg = f.subarray(l4);
  let payload: Uint8Array;
  let proto: 'udp' | 'tcp';
  if (protoNum === 17) {
    proto = 'udp';
    assert.equal(be16(seg, 4), seg.length, 'UDP length');
    const c = be16(seg, 6);
    if (ipVersion === 6) assert.notEqual(c, 0, 'UDP checksum mandatory over IPv6');
    if (c !== 0) assert.equal(csum(seg, pseudo), 0xffff, 'UDP checksum');
    payload = seg.subarray(8);
  } else if (protoNum === 6) {
    proto = 'tcp';
    assert.equal(seg[12]! >> 4, 5, 'TCP data offset');
    assert.equal(csum(seg, pseudo), 0xffff, 'TCP checksum');
    payload = seg.subarray(20);
  } else {
    throw new Error(`IP protocol ${protoNum}`);
  }
  return { dstMac, srcMac, ipVersion, proto, srcIp, dstIp, srcPort: be16(seg, 0), dstPort: be16(seg, 2), payload };
}

function frame(g: TrafficGenerator, flow: number, seq: number): Uint8Array {
  const buf = new Uint8Array(g.maxFrameLength + 7);
  const n = g.writeFrame(flow, seq, buf, 7); // odd offset on purpose
  return buf.slice(7, 7 + n);
}

const configs: GeneratorOptions[] = [
  { flows: 16, frameSize: 64 },
  { flows: 16, frameSize: 60, proto: 'tcp' },
  { flows: 16, frameSize: 1514, proto: 'mixed', udpChecksum: true },
  { flows: 16, frameSize: 9014, proto: 'mixed', ipVersion: 'mixed' },
  { flows: 8, frameSize: 64, proto: 'mixed', ipVersion: 6 },
  { flows: 8, frameSize: 129, ipVersion: 'mixed', udpChecksum: true },
];

for (const cfg of configs) {
  test(`frames are valid Ethernet/IP/L4 and check byte-exact: ${JSON.stringify(cfg)}`, () => {
    const g = new TrafficGenerator(cfg);
    for (let flow = 0; flow < g.flows; flow++) {
      const t = g.flowTuple(flow);
      for (const seq of [0, 1, 2, 0x7fffffff, 0xffffffff]) {
        const f = frame(g, flow, seq);
        assert.equal(f.length, g.frameLength(flow));
        assert.ok(f.length >= g.frameSize && f.length >= MIN_FRAME && f.length <= MAX_FRAME);
        const p = parse(f);
        assert.equal(p.proto, t.proto);
        assert.equal(p.ipVersion, t.ipVersion);
        assert.equal(p.srcMac, t.srcMac);
        assert.equal(p.dstMac, t.dstMac);
        assert.equal(p.srcPort, t.srcPort);
        assert.equal(p.dstPort, t.dstPort);
        if (t.ipVersion === 4) {
          assert.equal(p.srcIp, t.srcIp);
          assert.equal(p.dstIp, t.dstIp);
        } else {
          assert.equal(p.srcIp, v6full(t.srcIp));
          assert.equal(p.dstIp, v6full(t.dstIp));
        }
        assert.equal(be16(p.payload, 0), PAYLOAD_MAGIC);
        assert.equal(be32(p.payload, 2), flow);
        assert.equal(be32(p.payload, 6), seq);
        // checkFrame at an offset inside a bigger buffer
        const big = new Uint8Array(f.length + 10);
        big.set(f, 3);
        assert.equal(g.checkFrame(big, 3, f.length), flow);
        assert.equal(g.flow, flow);
        assert.equal(g.seq, seq);
      }
    }
  });
}

test('frame sizes: clamped to [60, 9728], TCP/IPv6 grow to fit their headers', () => {
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 10 }).frameSize, 60);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 100_000 }).frameSize, 9728);
  assert.equal(new TrafficGenerator({ flows: 1 }).frameSize, 64);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 60 }).frameLength(0), 60);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 60, proto: 'tcp' }).frameLength(0), 64);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 64, proto: 'tcp' }).frameLength(0), 64);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 60, ipVersion: 6 }).frameLength(0), 72);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 60, ipVersion: 6, proto: 'tcp' }).frameLength(0), 84);
  assert.equal(new TrafficGenerator({ flows: 1, frameSize: 9014, ipVersion: 6, proto: 'tcp' }).frameLength(0), 9014);
  assert.throws(() => new TrafficGenerator({ flows: 0 }), RangeError);
  assert.throws(() => new TrafficGenerator({ flows: 1.5 }), RangeError);
  assert.throws(() => new TrafficGenerator({ flows: 1, dstMac: 'zz' }), TypeError);
});

test('checkFrame detects every single flipped byte and a rewritten seq', () => {
  for (const cfg of [
    { flows: 4, frameSize: 60 },
    { flows: 4, frameSize: 64, proto: 'tcp' as const },  // no filler bytes at all
    { flows: 4, frameSize: 72, ipVersion: 6 as const },  // no filler bytes at all
    { flows: 4, frameSize: 300, proto: 'mixed' as const, ipVersion: 'mixed' as const },
  ]) {
    const g = new TrafficGenerator(cfg);
    for (let flow = 0; flow < 4; flow++) {
      const f = frame(g, flow, 1234);
      for (let i = 0; i < f.length; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const bad = f.slice();
          bad[i]! ^= mask;
          const r = g.checkFrame(bad, 0, bad.length);
          assert.ok(r < 0, `${JSON.stringify(cfg)} flow ${flow}: flip 0x${mask.toString(16)} at byte ${i} went unnoticed`);
        }
      }
      assert.equal(g.checkFrame(f, 0, f.length), flow);
    }
    // seq field rewritten (as a reordering bug might): the rest no longer matches
    const f = frame(g, 2, 1000);
    const pl = 14 + (g.isV6(2) ? 40 : 20) + (g.isTcp(2) ? 20 : 8); // payload offset
    assert.equal(be32(f, pl + 6), 1000);
    f[pl + 9] = 1001 & 0xff;
    assert.equal(g.checkFrame(f, 0, f.length), CheckError.Corrupt);
    assert.ok(g.badOffset >= 0 && g.badOffset < f.length);
    assert.equal(g.inspect(f).error, 'Corrupt');
  }
  // a valid frame with another seq is reported as such (caller compares)
  const g = new TrafficGenerator({ flows: 2 });
  const f = frame(g, 1, 7);
  assert.deepEqual(g.inspect(f), { ok: true, flow: 1, seq: 7, error: 'ok', badOffset: -1 });
  assert.notEqual(g.seq, 6);
});

test('checkFrame error codes', () => {
  const g = new TrafficGenerator({ flows: 4, proto: 'mixed' });
  const f = frame(g, 0, 5);
  assert.equal(g.checkFrame(f, 0, 59), CheckError.Bounds);
  assert.equal(g.checkFrame(f, 1, f.length), CheckError.Bounds);
  assert.equal(g.checkFrame(f, -1, f.length), CheckError.Bounds);
  const arp = f.slice(); arp[12] = 0x08; arp[13] = 0x06;
  assert.equal(g.checkFrame(arp, 0, arp.length), CheckError.NotOurs);
  const icmp = f.slice(); icmp[23] = 1;
  assert.equal(g.checkFrame(icmp, 0, icmp.length), CheckError.NotOurs);
  const magic = f.slice(); magic[42] ^= 0x10;
  assert.equal(g.checkFrame(magic, 0, magic.length), CheckError.BadMagic);
  const flow = f.slice(); flow[47] = 9; // flow id 9 >= 4 flows
  assert.equal(g.checkFrame(flow, 0, flow.length), CheckError.BadFlow);
  const proto = f.slice(); proto[47] = 1; // flow 1 is TCP, frame is UDP
  assert.equal(g.checkFrame(proto, 0, proto.length), CheckError.BadFlow);
  const longer = new Uint8Array(f.length + 4); longer.set(f);
  assert.equal(g.checkFrame(longer, 0, longer.length), CheckError.BadLength);
  assert.equal(checkErrorName(CheckError.BadLength), 'BadLength');
  assert.equal(checkErrorName(3), 'ok');
  // writeFrame range checks
  assert.throws(() => g.writeFrame(4, 0, new Uint8Array(100), 0), RangeError);
  assert.throws(() => g.writeFrame(0, 0, new Uint8Array(100), 50), RangeError);
});

test('frames are deterministic in (flow, seq) and differ across seq', () => {
  const a = new TrafficGenerator({ flows: 3, frameSize: 256, proto: 'mixed' });
  const b = new TrafficGenerator({ flows: 3, frameSize: 256, proto: 'mixed' });
  assert.deepEqual(frame(a, 2, 99), frame(b, 2, 99));
  const f1 = frame(a, 0, 1);
  const f2 = frame(a, 0, 2);
  let diff = 0;
  for (let i = 52; i < f1.length; i++) if (f1[i] !== f2[i]) diff++;
  assert.ok(diff > (f1.length - 52) / 2, `filler depends on seq (${diff} bytes differ)`);
});

test('distinct flows have distinct 5-tuples (across address/port wrap-arounds)', () => {
  const flows = 140_000; // > 2 * 65534 source hosts, > 2 * 64512 source ports
  const g = new TrafficGenerator({ flows, proto: 'mixed' });
  const seen = new Set<string>();
  for (let flow = 0; flow < flows; flow++) {
    const t = g.flowTuple(flow);
    seen.add(`${t.proto} ${t.srcIp}:${t.srcPort} ${t.dstIp}:${t.dstPort}`);
  }
  assert.equal(seen.size, flows);
  // the same holds when read back from the frames themselves
  const seen2 = new Set<string>();
  for (let flow = 0; flow < flows; flow += 97) {
    const p = parse(frame(g, flow, 0));
    seen2.add(`${p.proto} ${p.srcIp}:${p.srcPort} ${p.dstIp}:${p.dstPort}`);
  }
  assert.equal(seen2.size, Math.ceil(flows / 97));
});

test('generated traffic survives a pcap round trip and is checked by the receiver', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-gen-'));
  try {
    const g = new TrafficGenerator({ flows: 8, frameSize: 128, proto: 'mixed', ipVersion: 'mixed' });
    const path = join(dir, 'gen.pcap');
    const w = new PcapWriter(path, { snaplen: 9014, nanos: true });
    const buf = new Uint8Array(g.maxFrameLength);
    for (let seq = 0; seq < 50; seq++) {
      for (let flow = 0; flow < 8; flow++) {
        const n = g.writeFrame(flow, seq, buf, 0);
        w.write(buf.subarray(0, n), BigInt(seq * 8 + flow) * 100n);
      }
    }
    w.close();
    const cap = readPcapFile(path);
    assert.equal(cap.count, 400);
    const next = new Array<number>(8).fill(0);
    for (let i = 0; i < cap.count; i++) {
      const flow = g.checkFrame(cap.data, cap.offsets[i]!, cap.lengths[i]!);
      assert.ok(flow >= 0, checkErrorName(flow));
      assert.equal(g.seq, next[flow], 'in order per flow');
      next[flow]!++;
    }
    assert.deepEqual(next, new Array(8).fill(50));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writeFrame/checkFrame hot path: quick throughput sanity check', () => {
  const g = new TrafficGenerator({ flows: 64, frameSize: 64 });
  const buf = new Uint8Array(64 * 1024);
  const t0 = process.hrtime.bigint();
  let bad = 0;
  const N = 200_000;
  for (let i = 0; i < N; i++) {
    const off = (i & 1023) * 64;
    const n = g.writeFrame(i & 63, i, buf, off);
    if (g.checkFrame(buf, off, n) < 0) bad++;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.equal(bad, 0);
  assert.ok(ms < 10_000, `${N} write+check took ${ms} ms`);
});
