import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { FlowKey, parseFlow } from "../src/net/flow.js";

// ---------------------------------------------------------------- builders --

type Bytes = number[];
const MAC_D = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const MAC_S = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];

function be16(v: number): Bytes {
  return [(v >>> 8) & 255, v & 255];
}

function v4(s: string): Bytes {
  return s.split(".").map(Number);
}

function v4num(s: string): number {
  const b = v4(s);
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

/** Expand an IPv6 textual address (with optional ::) to 16 bytes. */
function v6(s: string): Bytes {
  const [h, t] = s.includes("::") ? s.split("::") : [s, undefined];
  const head = h ? h.split(":") : [];
  const tail = t ? t.split(":") : [];
  const groups = t === undefined ? head : [...head, ...Array(8 - head.length - tail.length).fill("0"), ...tail];
  assert.equal(groups.length, 8, s);
  return groups.flatMap((g) => be16(parseInt(g, 16)));
}

function v6words(s: string): number[] {
  const b = v6(s);
  const w: number[] = [];
  for (let i = 0; i < 16; i += 4) w.push(((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0);
  return w;
}

function eth(et: number, payload: Bytes, tags: Array<[number, number]> = []): Uint8Array {
  const out: Bytes = [...MAC_D, ...MAC_S];
  for (const [tpid, tci] of tags) out.push(...be16(tpid), ...be16(tci));
  out.push(...be16(et), ...payload);
  return Uint8Array.from(out);
}

function tcp(sp: number, dp: number, payload: Bytes = []): Bytes {
  return [...be16(sp), ...be16(dp), 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0, ...payload];
}

function udp(sp: number, dp: number, payload: Bytes = []): Bytes {
  return [...be16(sp), ...be16(dp), ...be16(8 + payload.length), 0, 0, ...payload];
}

interface Ip4Opts {
  frag?: number;
  options?: Bytes;
  totLen?: number;
}
function ip4(src: string, dst: string, proto: number, l4: Bytes, o: Ip4Opts = {}): Bytes {
  const opts = o.options ?? [];
  assert.equal(opts.length % 4, 0);
  const hl = 20 + opts.length;
  const tot = o.totLen ?? hl + l4.length;
  return [0x40 | (hl >> 2), 0, ...be16(tot), 0x12, 0x34, ...be16(o.frag ?? 0), 64, proto, 0, 0, ...v4(src), ...v4(dst), ...opts, ...l4];
}

function ip6(src: string, dst: string, nh: number, payload: Bytes): Bytes {
  return [0x60, 0, 0, 0, ...be16(payload.length), nh, 64, ...v6(src), ...v6(dst), ...payload];
}

/** Generic 8-byte hop-by-hop / destination options header with PadN. */
function optsHdr(nh: number): Bytes {
  return [nh, 0, 0x01, 0x04, 0, 0, 0, 0];
}
/** Destination options header carrying a Home Address option (at 8n+6). */
function dstOptsHAO(nh: number, home: string): Bytes {
  return [nh, 2, 0x01, 0x02, 0, 0, 0xc9, 16, ...v6(home)];
}
/** Routing header type 2 (one address). */
function rt2(nh: number, addr: string): Bytes {
  return [nh, 2, 2, 1, 0, 0, 0, 0, ...v6(addr)];
}
function frag6(nh: number, offset8: number, more: boolean): Bytes {
  const fo = (offset8 << 3) | (more ? 1 : 0);
  return [nh, 0, ...be16(fo), 0, 0, 0x12, 0x34];
}
/** AH with a 12-byte ICV: total 24 bytes, Payload Len = 24/4 - 2 = 4. */
function ah(nh: number): Bytes {
  return [nh, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, ...Array(12).fill(0xaa)];
}

/**
 * A Uint8Array view over `buf` that throws on any indexed read outside
 * [lo, hi): proves parseFlow's "never reads outside [off, off+len)".
 */
function guarded(buf: Uint8Array, lo: number, hi: number): Uint8Array {
  return new Proxy(buf, {
    get(target, prop, _recv) {
      if (typeof prop === "string" && /^-?\d+$/.test(prop)) {
        const i = Number(prop);
        if (i < lo || i >= hi) throw new Error(`read outside window: ${i} not in [${lo}, ${hi})`);
        return target[i];
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

// ------------------------------------------------------------------- tests --

describe("parseFlow: Ethernet / VLAN", () => {
  it("IPv4/TCP untagged", () => {
    const f = new FlowKey();
    const fr = eth(0x0800, ip4("10.0.0.1", "192.168.1.200", 6, tcp(40000, 443, [1, 2, 3])));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.equal(f.l3, 4);
    assert.equal(f.l4proto, 6);
    assert.equal(f.src4, 0x0a000001);
    assert.equal(f.dst4, v4num("192.168.1.200"));
    assert.equal(f.srcPort, 40000);
    assert.equal(f.dstPort, 443);
    assert.equal(f.hasPorts, true);
    assert.equal(f.isFragment, false);
    assert.equal(f.l3Offset, 14);
    assert.equal(f.l4Offset, 34);
    assert.equal(f.vlanCount, 0);
    assert.equal(f.vlanId, -1);
    assert.equal(f.ethertype, 0x0800);
  });

  it("single 802.1Q tag", () => {
    const f = new FlowKey();
    const fr = eth(0x0800, ip4("1.2.3.4", "5.6.7.8", 17, udp(53, 5353)), [[0x8100, (5 << 13) | 100]]);
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.equal(f.vlanCount, 1);
    assert.equal(f.vlanId, 100); // PCP bits stripped
    assert.equal(f.innerVlanId, -1);
    assert.equal(f.l3Offset, 18);
    assert.equal(f.l4Offset, 38);
    assert.deepEqual([f.l4proto, f.srcPort, f.dstPort, f.hasPorts], [17, 53, 5353, true]);
  });

  it("802.1ad + 802.1Q (QinQ), IPv6", () => {
    const f = new FlowKey();
    const fr = eth(0x86dd, ip6("2001:db8::1", "2001:db8::2", 6, tcp(1, 2)), [
      [0x88a8, 0x0fff],
      [0x8100, 0x0002],
    ]);
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.equal(f.vlanCount, 2);
    assert.equal(f.vlanId, 0xfff);
    assert.equal(f.innerVlanId, 2);
    assert.equal(f.l3Offset, 22);
    assert.equal(f.l4Offset, 62);
    assert.equal(f.l3, 6);
    assert.deepEqual([...f.src6], v6words("2001:db8::1"));
    assert.deepEqual([...f.dst6], v6words("2001:db8::2"));
    assert.deepEqual([f.srcPort, f.dstPort, f.hasPorts, f.hasExtHeaders], [1, 2, true, false]);
  });

  it("three tags, non-IP, 802.3 length and runts are not parsable beyond L2", () => {
    const f = new FlowKey();
    const three = eth(0x0800, ip4("1.1.1.1", "2.2.2.2", 6, tcp(1, 2)), [
      [0x88a8, 1],
      [0x8100, 2],
      [0x8100, 3],
    ]);
    assert.equal(parseFlow(three, 0, three.length, f), false);
    assert.equal(f.l3, 0);
    assert.equal(f.vlanCount, 2);
    const arp = eth(0x0806, Array(28).fill(0));
    assert.equal(parseFlow(arp, 0, arp.length, f), false);
    assert.equal(f.ethertype, 0x0806);
    assert.equal(f.l3Offset, -1);
    const llc = eth(46, Array(46).fill(0));
    assert.equal(parseFlow(llc, 0, llc.length, f), false);
    assert.equal(parseFlow(arp, 0, 13, f), false);
    assert.equal(parseFlow(arp, 0, 0, f), false);
  });

  it("honours off/len and rejects bad bounds without throwing", () => {
    const f = new FlowKey();
    const fr = eth(0x0800, ip4("10.1.1.1", "10.2.2.2", 17, udp(7, 9)));
    const big = new Uint8Array(fr.length + 37).fill(0xee);
    big.set(fr, 17);
    assert.equal(parseFlow(guarded(big, 17, 17 + fr.length), 17, fr.length, f), true);
    assert.equal(f.l3Offset, 14); // relative to off
    assert.equal(f.l4Offset, 34);
    assert.deepEqual([f.srcPort, f.dstPort], [7, 9]);
    for (const [o, l] of [
      [-1, 10],
      [0, -5],
      [NaN, 20],
      [0, NaN],
      [1.5, 40],
      [big.length + 10, 20],
      [0, Infinity],
    ] as Array<[number, number]>) {
      assert.doesNotThrow(() => parseFlow(big, o, l, f));
      assert.equal(parseFlow(big, o, l, f), false, `${o},${l}`);
    }
    // len beyond the array is clamped to the array.
    assert.equal(parseFlow(fr, 0, fr.length + 100, f), true);
  });
});

describe("parseFlow: IPv4", () => {
  it("IHL > 5 (options) moves the L4 header", () => {
    const f = new FlowKey();
    const fr = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 6, tcp(1234, 80), { options: [1, 1, 1, 0, 0x94, 4, 0, 0] }));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.equal(f.l4Offset, 14 + 28);
    assert.deepEqual([f.srcPort, f.dstPort, f.hasPorts], [1234, 80, true]);
  });

  it("malformed header: version, IHL < 5, IHL beyond frame, totLen < IHL", () => {
    const f = new FlowKey();
    const good = ip4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2));
    const bad = (mut: (b: Bytes) => void) => {
      const b = [...good];
      mut(b);
      const fr = eth(0x0800, b);
      return parseFlow(fr, 0, fr.length, f);
    };
    assert.equal(bad(() => {}), true);
    assert.equal(bad((b) => (b[0] = 0x65)), false);
    assert.equal(bad((b) => (b[0] = 0x44)), false);
    assert.equal(bad((b) => (b[0] = 0x4f)), false); // 60-byte header, frame has 40
    assert.equal(bad((b) => ((b[2] = 0), (b[3] = 19))), false);
  });

  it("total length is honoured (Ethernet padding is not L4 data)", () => {
    const f = new FlowKey();
    // IP says 20 + 10 bytes: TCP header truncated to 10 bytes, frame padded.
    const fr = eth(0x0800, [...ip4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2), { totLen: 30 })]);
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.equal(f.hasPorts, false);
    assert.equal(f.l4Offset, 34);
    // UDP fits in 8 bytes even when the padded frame is longer.
    const u = eth(0x0800, [...ip4("10.0.0.1", "10.0.0.2", 17, udp(5, 6)), ...Array(18).fill(0)]);
    assert.equal(parseFlow(u, 0, u.length, f), true);
    assert.equal(f.hasPorts, true);
  });

  it("fragments have no ports; non-first fragments have no L4 header", () => {
    const f = new FlowKey();
    const first = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, udp(1000, 2000, Array(100).fill(1)), { frag: 0x2000 }));
    assert.equal(parseFlow(first, 0, first.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts, f.srcPort, f.dstPort, f.l4Offset, f.l4proto], [true, false, 0, 0, 34, 17]);

    const middle = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, Array(64).fill(9), { frag: 0x2000 | 13 }));
    assert.equal(parseFlow(middle, 0, middle.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts, f.l4Offset, f.l4proto], [true, false, -1, 17]);

    const last = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, Array(64).fill(9), { frag: 26 }));
    assert.equal(parseFlow(last, 0, last.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts, f.l4Offset], [true, false, -1]);

    const df = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), { frag: 0x4000 }));
    assert.equal(parseFlow(df, 0, df.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts], [false, true]);
  });

  it("non-TCP/UDP protocols: L4 offset but no ports", () => {
    const f = new FlowKey();
    const icmp = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 1, [8, 0, 0, 0, 0, 1, 0, 1]));
    assert.equal(parseFlow(icmp, 0, icmp.length, f), true);
    assert.deepEqual([f.l4proto, f.l4Offset, f.hasPorts], [1, 34, false]);
  });
});

describe("parseFlow: IPv6 extension headers", () => {
  const S = "2001:db8:1::10";
  const D = "2001:db8:2::20";
  const HOME = "2001:db8:aaaa::1";
  const CARE = "2001:db8:bbbb::2";

  it("hop-by-hop + destination options (HAO) + routing type 2 + UDP", () => {
    const f = new FlowKey();
    const pl = [...optsHdr(43), ...rt2(60, CARE), ...dstOptsHAO(17, HOME), ...udp(5000, 6000, [1, 2, 3, 4])];
    const fr = eth(0x86dd, ip6(S, D, 0, pl));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.equal(f.l3, 6);
    assert.equal(f.hasExtHeaders, true);
    assert.equal(f.l4proto, 17);
    assert.equal(f.l4Offset, 14 + 40 + 8 + 24 + 24);
    assert.deepEqual([f.srcPort, f.dstPort, f.hasPorts], [5000, 6000, true]);
    assert.equal(f.hasHomeAddr, true);
    assert.deepEqual([...f.homeAddr6], v6words(HOME));
    assert.equal(f.hasRt2Addr, true);
    assert.deepEqual([...f.rt2Addr6], v6words(CARE));
    assert.deepEqual([...f.src6], v6words(S));
    assert.deepEqual([...f.dst6], v6words(D));
  });

  it("a Home Address option overrunning its header is ignored", () => {
    const f = new FlowKey();
    // 24-byte destination options header: PadN(4) then a HAO claiming 16
    // bytes from offset 8, i.e. 2 bytes past the header end.
    const badDo = [6, 2, 0x01, 0x04, 0, 0, 0, 0, 0xc9, 16, ...v6(HOME).slice(0, 14)];
    const fr = eth(0x86dd, ip6(S, D, 60, [...badDo, ...tcp(1, 2)]));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.deepEqual([f.hasHomeAddr, f.hasPorts, f.l4Offset], [false, true, 14 + 40 + 24]);
  });

  it("routing header of another type is skipped without an RT2 address", () => {
    const f = new FlowKey();
    const srh = [6, 2, 4, 0, 0, 0, 0, 0, ...v6(CARE)]; // type 4 (SRv6)
    const fr = eth(0x86dd, ip6(S, D, 43, [...srh, ...tcp(1, 2)]));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.deepEqual([f.hasExtHeaders, f.hasRt2Addr, f.hasHomeAddr, f.hasPorts, f.srcPort], [true, false, false, true, 1]);
  });

  it("AH is skipped with its (len + 2) * 4 length", () => {
    const f = new FlowKey();
    const fr = eth(0x86dd, ip6(S, D, 51, [...ah(6), ...tcp(22, 2222)]));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.deepEqual([f.l4proto, f.l4Offset, f.srcPort, f.dstPort, f.hasPorts], [6, 14 + 40 + 24, 22, 2222, true]);
  });

  it("stops at ESP and No Next Header", () => {
    const f = new FlowKey();
    const esp = eth(0x86dd, ip6(S, D, 0, [...optsHdr(50), 0, 0, 1, 0, 0, 0, 0, 1, ...Array(32).fill(0x5a)]));
    assert.equal(parseFlow(esp, 0, esp.length, f), true);
    assert.deepEqual([f.l4proto, f.hasPorts, f.hasExtHeaders, f.l4Offset], [50, false, true, 62]);
    const none = eth(0x86dd, ip6(S, D, 59, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]));
    assert.equal(parseFlow(none, 0, none.length, f), true);
    assert.deepEqual([f.l4proto, f.hasPorts, f.hasExtHeaders, f.l4Offset], [59, false, false, -1]);
  });

  it("fragment header: first, non-first and atomic fragments", () => {
    const f = new FlowKey();
    const first = eth(0x86dd, ip6(S, D, 44, [...frag6(6, 0, true), ...tcp(1, 2, Array(40).fill(0))]));
    assert.equal(parseFlow(first, 0, first.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts, f.l4proto, f.l4Offset], [true, false, 6, 14 + 48]);

    const later = eth(0x86dd, ip6(S, D, 44, [...frag6(6, 185, false), ...Array(40).fill(0)]));
    assert.equal(parseFlow(later, 0, later.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts, f.l4proto, f.l4Offset], [true, false, 6, -1]);

    const atomic = eth(0x86dd, ip6(S, D, 44, [...frag6(17, 0, false), ...udp(9, 10)]));
    assert.equal(parseFlow(atomic, 0, atomic.length, f), true);
    assert.deepEqual([f.isFragment, f.hasPorts, f.srcPort, f.hasExtHeaders], [false, true, 9, true]);
  });

  it("payload length bounds the extension chain", () => {
    const f = new FlowKey();
    const pkt = ip6(S, D, 0, [...optsHdr(6), ...tcp(1, 2)]);
    pkt[4] = 0;
    pkt[5] = 16; // claims 8 bytes HBH + 8 bytes of TCP
    const fr = eth(0x86dd, pkt);
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    assert.deepEqual([f.l4proto, f.hasPorts, f.l4Offset], [6, false, 62]);
  });

  it("truncated chains are safe: every prefix of a complex frame", () => {
    const f = new FlowKey();
    const pl = [...optsHdr(44), ...frag6(51, 0, false), ...ah(43), ...rt2(60, CARE), ...dstOptsHAO(6, HOME), ...tcp(80, 8080)];
    const full = eth(0x86dd, ip6(S, D, 0, pl), [[0x8100, 7]]);
    const l4At = full.length - 20;
    for (let n = 0; n <= full.length; n++) {
      const buf = new Uint8Array(full.length + 8).fill(0xff);
      buf.set(full.subarray(0, n), 3);
      const ok = parseFlow(guarded(buf, 3, 3 + n), 3, n, f);
      assert.equal(ok, n >= 18 + 40, `prefix ${n}`);
      assert.equal(f.hasPorts, n === full.length, `prefix ${n}`);
      assert.ok(f.l3Offset < n && f.l4Offset < n, `prefix ${n}`);
      if (n > l4At) assert.equal(f.l4Offset, l4At);
      if (n === full.length) {
        assert.deepEqual([f.srcPort, f.dstPort, f.hasHomeAddr, f.hasRt2Addr], [80, 8080, true, true]);
      }
    }
  });

  it("truncated IPv4/TCP prefixes", () => {
    const f = new FlowKey();
    const full = eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2)));
    for (let n = 0; n <= full.length; n++) {
      const ok = parseFlow(guarded(full, 0, n), 0, n, f);
      assert.equal(ok, n >= 34, `prefix ${n}`);
      assert.equal(f.hasPorts, n === full.length);
    }
  });
});

describe("FlowKey", () => {
  it("reverse() swaps endpoints and the _EX addresses; twice is identity", () => {
    const f = new FlowKey();
    const pl = [...rt2(60, "2001:db8::cafe"), ...dstOptsHAO(6, "2001:db8::beef"), ...tcp(1000, 22)];
    const fr = eth(0x86dd, ip6("2001:db8::1", "2001:db8::2", 43, pl));
    assert.equal(parseFlow(fr, 0, fr.length, f), true);
    const g = new FlowKey();
    g.copyFrom(f);
    g.reverse();
    assert.deepEqual([...g.src6], [...f.dst6]);
    assert.deepEqual([...g.dst6], [...f.src6]);
    assert.deepEqual([g.srcPort, g.dstPort], [22, 1000]);
    assert.deepEqual([...g.homeAddr6], [...f.rt2Addr6]);
    assert.deepEqual([...g.rt2Addr6], [...f.homeAddr6]);
    g.reverse();
    assert.deepEqual({ ...g, src6: [...g.src6] }, { ...f, src6: [...f.src6] });
  });
});

describe("parseFlow: properties (fast-check)", () => {
  const check = (frame: Uint8Array, off: number, len: number) => {
    const f = new FlowKey();
    // Guard [off, min(off+len, frame.length)): also catches reads past the array.
    const view = off >= 0 && len >= 0 ? guarded(frame, off, Math.min(off + len, frame.length)) : frame;
    let ok = false;
    assert.doesNotThrow(() => {
      ok = parseFlow(view, off, len, f);
    });
    assert.ok(f.l3Offset >= -1 && f.l3Offset < Math.max(len, 0));
    assert.ok(f.l4Offset >= -1 && f.l4Offset < Math.max(len, 0));
    assert.ok(f.l4Offset === -1 || f.l4Offset > f.l3Offset);
    assert.equal(ok, f.l3 !== 0);
    if (!ok) assert.equal(f.l3Offset, -1);
    if (f.hasPorts) assert.ok(f.l4proto === 6 || f.l4proto === 17);
    if (f.hasPorts) assert.ok(!f.isFragment);
    assert.ok(f.vlanCount >= 0 && f.vlanCount <= 2);
  };

  it("random bytes never throw and never report offsets beyond len", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(220), fc.integer({ min: -4, max: 220 }), (bytes, off, len) => {
        check(bytes, off, len);
      }),
      { numRuns: 2000 },
    );
  });

  it("random bytes behind plausible L2/L3 headers never throw", () => {
    const l2 = fc.constantFrom(
      [0x08, 0x00],
      [0x86, 0xdd],
      [0x81, 0x00, 0, 1, 0x08, 0x00],
      [0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd],
    );
    const nh = fc.constantFrom(0, 6, 17, 43, 44, 50, 51, 59, 60);
    fc.assert(
      fc.property(l2, fc.boolean(), nh, fc.uint8Array({ maxLength: 160 }), fc.nat(8), fc.nat(200), (et, six, next, rest, pre, cut) => {
        const ipHdr = six ? [0x60, 0, 0, 0, ...be16(rest.length), next, 64] : [0x45, 0, ...be16(20 + rest.length)];
        const body = [...MAC_D, ...MAC_S, ...et, ...ipHdr, ...rest];
        const buf = new Uint8Array(pre + body.length + 5);
        buf.set(body, pre);
        check(buf, pre, Math.min(cut, body.length));
        check(buf, pre, body.length);
      }),
      { numRuns: 3000 },
    );
  });
});
