import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { FlowKey, parseFlow } from "../src/net/flow.js";
import { DEFAULT_RSS_KEY, Toeplitz } from "../src/net/toeplitz.js";
import * as rss from "../src/net/rss.js";
import {
  RssSteering,
  VIRTIO_NET_HASH_REPORT_IPv4,
  VIRTIO_NET_HASH_REPORT_IPv6,
  VIRTIO_NET_HASH_REPORT_IPv6_EX,
  VIRTIO_NET_HASH_REPORT_NONE,
  VIRTIO_NET_HASH_REPORT_TCPv4,
  VIRTIO_NET_HASH_REPORT_TCPv6,
  VIRTIO_NET_HASH_REPORT_TCPv6_EX,
  VIRTIO_NET_HASH_REPORT_UDPv4,
  VIRTIO_NET_HASH_REPORT_UDPv6,
  VIRTIO_NET_HASH_REPORT_UDPv6_EX,
  VIRTIO_NET_RSS_HASH_TYPE_ALL,
  VIRTIO_NET_RSS_HASH_TYPE_IP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_IPv4,
  VIRTIO_NET_RSS_HASH_TYPE_IPv6,
  VIRTIO_NET_RSS_HASH_TYPE_TCP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
  VIRTIO_NET_RSS_HASH_TYPE_UDP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv6,
} from "../src/net/rss.js";
import { TxQueueSelector } from "../src/net/tx-select.js";

// ----------------------------------------------------- reference + vectors --

/**
 * Textbook Toeplitz, bit by bit, independent of the table implementation:
 * for every set input bit i (MSB of byte 0 first) xor in the 32 key bits
 * starting at key bit i (key bits past the key are 0).
 */
function refToeplitz(key: Uint8Array, data: ArrayLike<number>): number {
  const keyBit = (i: number) => (i < key.length * 8 ? (key[i >> 3]! >> (7 - (i & 7))) & 1 : 0);
  let result = 0;
  for (let i = 0; i < data.length * 8; i++) {
    if ((data[i >> 3]! >> (7 - (i & 7))) & 1) {
      let w = 0;
      for (let j = 0; j < 32; j++) w = w * 2 + keyBit(i + j);
      result = (result ^ w) >>> 0;
    }
  }
  return result;
}

type Bytes = number[];
const be16 = (v: number): Bytes => [(v >>> 8) & 255, v & 255];
const v4 = (s: string): Bytes => s.split(".").map(Number);
const v4num = (s: string) => {
  const b = v4(s);
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
};
function v6(s: string): Bytes {
  const [h, t] = s.includes("::") ? s.split("::") : [s, undefined];
  const head = h ? h.split(":") : [];
  const tail = t ? t.split(":") : [];
  const groups = t === undefined ? head : [...head, ...Array(8 - head.length - tail.length).fill("0"), ...tail];
  assert.equal(groups.length, 8, s);
  return groups.flatMap((g) => be16(parseInt(g, 16)));
}
function v6words(s: string): Uint32Array {
  const b = v6(s);
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) w[i] = (b[4 * i]! << 24) | (b[4 * i + 1]! << 16) | (b[4 * i + 2]! << 8) | b[4 * i + 3]!;
  return w;
}

/**
 * Microsoft, "Verifying the RSS Hash Calculation" (Windows driver docs), with
 * the default 40-byte key. Columns: destination, source, IP-only hash, hash
 * with TCP ports. (Cross-checked against DPDK's test_thash.c and the Intel
 * 82599 datasheet 7.1.2.8.3, which reprint the same table.)
 */
const MS_V4: Array<[string, number, string, number, number, number]> = [
  ["161.142.100.80", 1766, "66.9.149.187", 2794, 0x323e8fc2, 0x51ccc178],
  ["65.69.140.83", 4739, "199.92.111.2", 14230, 0xd718262a, 0xc626b0ea],
  ["12.22.207.184", 38024, "24.19.198.95", 12898, 0xd2d0a5de, 0x5c2b394a],
  ["209.142.163.6", 2217, "38.27.205.30", 48228, 0x82989176, 0xafc7327f],
  ["202.188.127.2", 1303, "153.39.163.191", 44251, 0x5d1809c5, 0x10e828a2],
];
/** The IPv6 half of the same page; Microsoft publishes three IPv6 entries. */
const MS_V6: Array<[string, number, string, number, number, number]> = [
  ["3ffe:2501:200:3::1", 1766, "3ffe:2501:200:1fff::7", 2794, 0x2cc18cd5, 0x40207d3d],
  ["ff02::1", 4739, "3ffe:501:8::260:97ff:fe40:efab", 14230, 0x0f0c461c, 0xdde51bbf],
  ["fe80::200:f8ff:fe21:67cf", 38024, "3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, 0x4b61e985, 0x02d1feef],
];

// ----------------------------------------------------------- frame builders --

const MAC_D = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const MAC_S = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];

function eth(et: number, payload: Bytes, dst = MAC_D, src = MAC_S): Uint8Array {
  return Uint8Array.from([...dst, ...src, ...be16(et), ...payload]);
}
function tcp(sp: number, dp: number, seq = 1, payload: Bytes = []): Bytes {
  return [...be16(sp), ...be16(dp), (seq >>> 24) & 255, (seq >>> 16) & 255, (seq >>> 8) & 255, seq & 255, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0, ...payload];
}
function udp(sp: number, dp: number, payload: Bytes = []): Bytes {
  return [...be16(sp), ...be16(dp), ...be16(8 + payload.length), 0, 0, ...payload];
}
function ip4(src: string, dst: string, proto: number, l4: Bytes, frag = 0, id = 0x1234, ttl = 64): Bytes {
  return [0x45, 0, ...be16(20 + l4.length), ...be16(id), ...be16(frag), ttl, proto, 0, 0, ...v4(src), ...v4(dst), ...l4];
}
function ip6(src: string, dst: string, nh: number, payload: Bytes): Bytes {
  return [0x60, 0, 0, 0, ...be16(payload.length), nh, 64, ...v6(src), ...v6(dst), ...payload];
}
function dstOptsHAO(nh: number, home: string): Bytes {
  return [nh, 2, 0x01, 0x02, 0, 0, 0xc9, 16, ...v6(home)];
}
function rt2(nh: number, addr: string): Bytes {
  return [nh, 2, 2, 1, 0, 0, 0, 0, ...v6(addr)];
}
const hbh = (nh: number): Bytes => [nh, 0, 0x01, 0x04, 0, 0, 0, 0];

function parsed(frame: Uint8Array): FlowKey {
  const f = new FlowKey();
  assert.equal(parseFlow(frame, 0, frame.length, f), true);
  return f;
}

/** Identity indirection table: selectQueue() then returns hash & mask. */
function identityTable(n: number): Uint16Array {
  return Uint16Array.from({ length: n }, (_, i) => i);
}

function steering(hashTypes: number, table = identityTable(128), unclassifiedQueue = 999): RssSteering {
  return new RssSteering({ key: DEFAULT_RSS_KEY, hashTypes, indirectionTable: table, unclassifiedQueue });
}

// ------------------------------------------------------------------ tests --

describe("constants", () => {
  it("DEFAULT_RSS_KEY is the Microsoft verification key", () => {
    assert.equal(
      Buffer.from(DEFAULT_RSS_KEY).toString("hex"),
      "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa",
    );
  });

  it("hash type bits and report values follow the spec", () => {
    assert.deepEqual(
      [
        VIRTIO_NET_RSS_HASH_TYPE_IPv4,
        VIRTIO_NET_RSS_HASH_TYPE_TCPv4,
        VIRTIO_NET_RSS_HASH_TYPE_UDPv4,
        VIRTIO_NET_RSS_HASH_TYPE_IPv6,
        VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
        VIRTIO_NET_RSS_HASH_TYPE_UDPv6,
        VIRTIO_NET_RSS_HASH_TYPE_IP_EX,
        VIRTIO_NET_RSS_HASH_TYPE_TCP_EX,
        VIRTIO_NET_RSS_HASH_TYPE_UDP_EX,
      ],
      [1, 2, 4, 8, 16, 32, 64, 128, 256],
    );
    const reports = [
      VIRTIO_NET_HASH_REPORT_IPv4,
      VIRTIO_NET_HASH_REPORT_TCPv4,
      VIRTIO_NET_HASH_REPORT_UDPv4,
      VIRTIO_NET_HASH_REPORT_IPv6,
      VIRTIO_NET_HASH_REPORT_TCPv6,
      VIRTIO_NET_HASH_REPORT_UDPv6,
      VIRTIO_NET_HASH_REPORT_IPv6_EX,
      VIRTIO_NET_HASH_REPORT_TCPv6_EX,
      VIRTIO_NET_HASH_REPORT_UDPv6_EX,
    ];
    assert.deepEqual(reports, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(VIRTIO_NET_HASH_REPORT_NONE, 0);
    // "VIRTIO_NET_HASH_TYPE_XXX = 1 << (VIRTIO_NET_HASH_REPORT_XXX - 1)", and
    // the spec spelling VIRTIO_NET_HASH_TYPE_* aliases the uapi one.
    for (const n of ["IPv4", "TCPv4", "UDPv4", "IPv6", "TCPv6", "UDPv6"]) {
      const r = (rss as Record<string, unknown>)[`VIRTIO_NET_HASH_REPORT_${n}`] as number;
      assert.equal((rss as Record<string, unknown>)[`VIRTIO_NET_HASH_TYPE_${n}`], 1 << (r - 1));
      assert.equal((rss as Record<string, unknown>)[`VIRTIO_NET_RSS_HASH_TYPE_${n}`], 1 << (r - 1));
    }
    for (const [t, r] of [["IP_EX", "IPv6_EX"], ["TCP_EX", "TCPv6_EX"], ["UDP_EX", "UDPv6_EX"]] as const) {
      const rv = (rss as Record<string, unknown>)[`VIRTIO_NET_HASH_REPORT_${r}`] as number;
      assert.equal((rss as Record<string, unknown>)[`VIRTIO_NET_HASH_TYPE_${t}`], 1 << (rv - 1));
    }
    assert.equal(VIRTIO_NET_RSS_HASH_TYPE_ALL, 0x1ff);
  });
});

describe("Toeplitz: Microsoft RSS verification suite", () => {
  const t = new Toeplitz(DEFAULT_RSS_KEY);

  it("reference implementation reproduces the published values", () => {
    for (const [dst, dp, src, sp, h2, h4] of MS_V4) {
      assert.equal(refToeplitz(DEFAULT_RSS_KEY, [...v4(src), ...v4(dst)]), h2);
      assert.equal(refToeplitz(DEFAULT_RSS_KEY, [...v4(src), ...v4(dst), ...be16(sp), ...be16(dp)]), h4);
    }
    for (const [dst, dp, src, sp, h2, h4] of MS_V6) {
      assert.equal(refToeplitz(DEFAULT_RSS_KEY, [...v6(src), ...v6(dst)]), h2);
      assert.equal(refToeplitz(DEFAULT_RSS_KEY, [...v6(src), ...v6(dst), ...be16(sp), ...be16(dp)]), h4);
    }
  });

  for (const [dst, dp, src, sp, h2, h4] of MS_V4) {
    it(`IPv4 ${src}:${sp} -> ${dst}:${dp}`, () => {
      assert.equal(t.hashIPv4(v4num(src), v4num(dst)), h2);
      assert.equal(t.hashIPv4Ports(v4num(src), v4num(dst), sp, dp), h4);
      const bytes = Uint8Array.from([...v4(src), ...v4(dst), ...be16(sp), ...be16(dp)]);
      assert.equal(t.hashBytes(bytes, 0, 8), h2);
      assert.equal(t.hashBytes(bytes, 0, 12), h4);
      // int32 twins used on hot paths: same 32 bits, signed.
      assert.equal(t.rawIPv4(v4num(src), v4num(dst)), h2 | 0);
      assert.equal(t.rawIPv4Ports(v4num(src), v4num(dst), sp, dp), h4 | 0);
      assert.equal(t.rawBytes(bytes, 0, 12), h4 | 0);
    });
  }

  for (const [dst, dp, src, sp, h2, h4] of MS_V6) {
    it(`IPv6 [${src}]:${sp} -> [${dst}]:${dp}`, () => {
      assert.equal(t.hashIPv6(v6words(src), v6words(dst)), h2);
      assert.equal(t.hashIPv6Ports(v6words(src), v6words(dst), sp, dp), h4);
      const bytes = Uint8Array.from([0xee, ...v6(src), ...v6(dst), ...be16(sp), ...be16(dp)]);
      assert.equal(t.hashBytes(bytes, 1, 32), h2);
      assert.equal(t.hashBytes(bytes, 1, 36), h4);
      assert.equal(t.rawIPv6(v6words(src), v6words(dst)), h2 | 0);
      assert.equal(t.rawIPv6Ports(v6words(src), v6words(dst), sp, dp), h4 | 0);
    });
  }

  it("the first vector's values are the well-known ones", () => {
    assert.equal(t.hashIPv4Ports(v4num("66.9.149.187"), v4num("161.142.100.80"), 2794, 1766), 0x51ccc178);
    assert.equal(t.hashIPv4(v4num("66.9.149.187"), v4num("161.142.100.80")), 0x323e8fc2);
  });
});

describe("Toeplitz: properties against the bit-by-bit reference", () => {
  it("hashBytes == reference for random keys (0..60 bytes) and inputs (0..64 bytes)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 60 }), fc.uint8Array({ maxLength: 64 }), (key, data) => {
        const t = new Toeplitz(key);
        assert.equal(t.hashBytes(data, 0, data.length), refToeplitz(key, data));
      }),
      { numRuns: 300 },
    );
  });

  it("tuple helpers == hashBytes of the serialized tuple", () => {
    const t = new Toeplitz(DEFAULT_RSS_KEY);
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    const port = fc.integer({ min: 0, max: 0xffff });
    const w4 = fc.array(u32, { minLength: 4, maxLength: 4 });
    const ser = (w: number[]) => w.flatMap((x) => [x >>> 24, (x >>> 16) & 255, (x >>> 8) & 255, x & 255]);
    fc.assert(
      fc.property(u32, u32, port, port, w4, w4, (a, b, sp, dp, s6, d6) => {
        assert.equal(t.hashIPv4(a, b), t.hashBytes(Uint8Array.from(ser([a, b])), 0, 8));
        assert.equal(t.hashIPv4Ports(a, b, sp, dp), t.hashBytes(Uint8Array.from([...ser([a, b]), ...be16(sp), ...be16(dp)]), 0, 12));
        const S = Uint32Array.from(s6);
        const D = Uint32Array.from(d6);
        const b6 = Uint8Array.from([...ser(s6), ...ser(d6), ...be16(sp), ...be16(dp)]);
        assert.equal(t.hashIPv6(S, D), refToeplitz(DEFAULT_RSS_KEY, b6.subarray(0, 32)));
        assert.equal(t.hashIPv6Ports(S, D, sp, dp), t.hashBytes(b6, 0, 36));
      }),
      { numRuns: 300 },
    );
  });

  it("setKey re-keys in place; short keys still hash IPv6 tuples (zero-extended)", () => {
    const t = new Toeplitz(Uint8Array.of(1, 2, 3));
    const data = Uint8Array.from(Array.from({ length: 36 }, (_, i) => i * 7));
    assert.equal(t.hashBytes(data, 0, 36), refToeplitz(Uint8Array.of(1, 2, 3), data));
    t.setKey(DEFAULT_RSS_KEY);
    assert.equal(t.hashIPv4Ports(v4num("66.9.149.187"), v4num("161.142.100.80"), 2794, 1766), 0x51ccc178);
    assert.throws(() => t.setKey(new Uint8Array(256)), RangeError);
  });
});

describe("RssSteering: hash selection per spec", () => {
  it("IPv4 TCP frames: 4-tuple with TCPv4, 2-tuple with IPv4 only, none otherwise", () => {
    for (const [dst, dp, src, sp, h2, h4] of MS_V4) {
      const f = parsed(eth(0x0800, ip4(src, dst, 6, tcp(sp, dp))));
      const all = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL);
      assert.equal(all.classify(f), VIRTIO_NET_HASH_REPORT_TCPv4);
      assert.equal(all.lastHash, h4);
      assert.equal(all.selectQueue(f), h4 & 127);

      const ipOnly = steering(VIRTIO_NET_RSS_HASH_TYPE_IPv4 | VIRTIO_NET_RSS_HASH_TYPE_UDPv4);
      assert.equal(ipOnly.classify(f), VIRTIO_NET_HASH_REPORT_IPv4);
      assert.equal(ipOnly.lastHash, h2);
      assert.equal(ipOnly.selectQueue(f), h2 & 127);

      const udpOnly = steering(VIRTIO_NET_RSS_HASH_TYPE_UDPv4 | (VIRTIO_NET_RSS_HASH_TYPE_ALL & ~0x7));
      assert.equal(udpOnly.classify(f), VIRTIO_NET_HASH_REPORT_NONE);
      assert.equal(udpOnly.lastHash, 0);
      assert.equal(udpOnly.selectQueue(f), 999);
    }
  });

  it("IPv4 UDP frames use the UDPv4 4-tuple", () => {
    const [dst, dp, src, sp, h2, h4] = MS_V4[1]!;
    const f = parsed(eth(0x0800, ip4(src, dst, 17, udp(sp, dp, [1, 2, 3]))));
    const s = steering(VIRTIO_NET_RSS_HASH_TYPE_UDPv4 | VIRTIO_NET_RSS_HASH_TYPE_IPv4);
    assert.equal(s.classify(f), VIRTIO_NET_HASH_REPORT_UDPv4);
    assert.equal(s.lastHash, h4);
    const t = steering(VIRTIO_NET_RSS_HASH_TYPE_TCPv4 | VIRTIO_NET_RSS_HASH_TYPE_IPv4);
    assert.equal(t.classify(f), VIRTIO_NET_HASH_REPORT_IPv4);
    assert.equal(t.lastHash, h2);
  });

  it("IPv4 fragments (first and later) hash as the IP 2-tuple, so they stay together", () => {
    const [dst, dp, src, sp, h2] = MS_V4[2]!;
    const s = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL);
    const first = parsed(eth(0x0800, ip4(src, dst, 17, udp(sp, dp, Array(64).fill(0)), 0x2000)));
    const later = parsed(eth(0x0800, ip4(src, dst, 17, Array(64).fill(0), 0x2000 | 9)));
    assert.equal(s.classify(first), VIRTIO_NET_HASH_REPORT_IPv4);
    assert.equal(s.lastHash, h2);
    assert.equal(s.classify(later), VIRTIO_NET_HASH_REPORT_IPv4);
    assert.equal(s.lastHash, h2);
  });

  it("IPv6 frames without extension headers", () => {
    for (const [dst, dp, src, sp, h2, h4] of MS_V6) {
      const f = parsed(eth(0x86dd, ip6(src, dst, 6, tcp(sp, dp))));
      const s = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL);
      assert.equal(s.classify(f), VIRTIO_NET_HASH_REPORT_TCPv6);
      assert.equal(s.lastHash, h4);
      const ip = steering(VIRTIO_NET_RSS_HASH_TYPE_IPv6 | (VIRTIO_NET_RSS_HASH_TYPE_ALL & 0x7));
      assert.equal(ip.classify(f), VIRTIO_NET_HASH_REPORT_IPv6);
      assert.equal(ip.lastHash, h2);
      const u = parsed(eth(0x86dd, ip6(src, dst, 17, udp(sp, dp))));
      assert.equal(s.classify(u), VIRTIO_NET_HASH_REPORT_UDPv6);
      assert.equal(s.lastHash, h4);
      // Only _EX types enabled: a packet without extension headers is not hashed.
      const exOnly = steering(VIRTIO_NET_RSS_HASH_TYPE_IP_EX | VIRTIO_NET_RSS_HASH_TYPE_TCP_EX);
      assert.equal(exOnly.selectQueue(f), 999);
    }
  });

  it("IPv6 with extension headers: _EX substitutes home address and RT2 address", () => {
    const [dst, dp, src, sp, h2, h4] = MS_V6[0]!;
    const HOME = "2001:db8:aaaa::1";
    const CARE = "2001:db8:bbbb::2";
    const withHao = parsed(eth(0x86dd, ip6(src, dst, 43, [...rt2(60, CARE), ...dstOptsHAO(17, HOME), ...udp(sp, dp)])));
    const t = new Toeplitz(DEFAULT_RSS_KEY);

    const ex = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL);
    assert.equal(ex.classify(withHao), VIRTIO_NET_HASH_REPORT_UDPv6_EX);
    assert.equal(ex.lastHash, t.hashIPv6Ports(v6words(HOME), v6words(CARE), sp, dp));
    assert.equal(ex.lastHash, refToeplitz(DEFAULT_RSS_KEY, [...v6(HOME), ...v6(CARE), ...be16(sp), ...be16(dp)]));

    const ipEx = steering(VIRTIO_NET_RSS_HASH_TYPE_IP_EX | VIRTIO_NET_RSS_HASH_TYPE_TCP_EX | VIRTIO_NET_RSS_HASH_TYPE_UDPv6);
    assert.equal(ipEx.classify(withHao), VIRTIO_NET_HASH_REPORT_IPv6_EX);
    assert.equal(ipEx.lastHash, t.hashIPv6(v6words(HOME), v6words(CARE)));

    // No _EX type: "skip IPv6 extension headers" and hash the real addresses.
    const plain = steering(VIRTIO_NET_RSS_HASH_TYPE_UDPv6 | VIRTIO_NET_RSS_HASH_TYPE_IPv6);
    assert.equal(plain.classify(withHao), VIRTIO_NET_HASH_REPORT_UDPv6);
    assert.equal(plain.lastHash, h4);
    const plainIp = steering(VIRTIO_NET_RSS_HASH_TYPE_IPv6);
    assert.equal(plainIp.classify(withHao), VIRTIO_NET_HASH_REPORT_IPv6);
    assert.equal(plainIp.lastHash, h2);

    // Extension headers but neither HAO nor RT2: _EX falls back to src/dst.
    const hopOnly = parsed(eth(0x86dd, ip6(src, dst, 0, [...hbh(6), ...tcp(sp, dp)])));
    assert.equal(ex.classify(hopOnly), VIRTIO_NET_HASH_REPORT_TCPv6_EX);
    assert.equal(ex.lastHash, h4);
  });

  it("unclassified: non-IP, no enabled type, and the wrong family", () => {
    const s = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL, identityTable(8), 5);
    const arp = new FlowKey();
    assert.equal(parseFlow(eth(0x0806, Array(28).fill(1)), 0, 42, arp), false);
    assert.equal(s.selectQueue(arp), 5);
    assert.equal(s.lastReport, VIRTIO_NET_HASH_REPORT_NONE);
    assert.equal(s.classify(arp), VIRTIO_NET_HASH_REPORT_NONE);
    assert.equal(s.selectedQueue(), 5);

    const f4 = parsed(eth(0x0800, ip4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2))));
    const f6 = parsed(eth(0x86dd, ip6("::1", "::2", 6, tcp(1, 2))));
    const none = steering(0, identityTable(8), 3);
    assert.equal(none.selectQueue(f4), 3);
    assert.equal(none.selectQueue(f6), 3);
    const v6only = steering(VIRTIO_NET_RSS_HASH_TYPE_IPv6 | VIRTIO_NET_RSS_HASH_TYPE_TCPv6, identityTable(8), 3);
    assert.equal(v6only.selectQueue(f4), 3);
    assert.notEqual(v6only.classify(f6), VIRTIO_NET_HASH_REPORT_NONE);
  });

  it("queue = indirection_table[hash & mask]", () => {
    const table = Uint16Array.from({ length: 16 }, (_, i) => (i * 5) % 4);
    const s = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL, table, 0);
    for (const [dst, dp, src, sp, , h4] of MS_V4) {
      const f = parsed(eth(0x0800, ip4(src, dst, 6, tcp(sp, dp))));
      assert.equal(s.selectQueue(f), table[h4 & 15]);
      assert.equal(s.queueForHash(h4), table[h4 & 15]);
      assert.equal(s.classify(f), VIRTIO_NET_HASH_REPORT_TCPv4);
      assert.equal(s.selectedQueue(), table[h4 & 15]);
    }
    // The table is copied at configure time.
    table[0] = 77;
    assert.notEqual(s.indirectionTable[0], 77);
    assert.equal(s.indirectionTableMask, 15);
  });

  it("configure validates the table length", () => {
    assert.throws(() => steering(1, new Uint16Array(0)), RangeError);
    assert.throws(() => steering(1, new Uint16Array(3)), RangeError);
    assert.throws(() => steering(1, new Uint16Array(96)), RangeError);
    assert.doesNotThrow(() => steering(1, new Uint16Array(1)));
    assert.doesNotThrow(() => steering(1, new Uint16Array(65536)));
    assert.equal(steering(0xffff).hashTypes, 0x1ff);
  });
});

// ------------------------------------------------------------- TX select --

function tcpFrame(src: string, dst: string, sp: number, dp: number, seq = 1, payload: Bytes = [], id = 1): Uint8Array {
  return eth(0x0800, ip4(src, dst, 6, tcp(sp, dp, seq, payload), 0x4000, id));
}

describe("TxQueueSelector", () => {
  it("every frame of a flow maps to the same queue", () => {
    const sel = new TxQueueSelector();
    for (let flow = 0; flow < 32; flow++) {
      const sp = 30000 + flow * 7;
      const q0 = sel.select(tcpFrame("10.0.0.1", "10.0.0.2", sp, 443), 0, 54, 4);
      for (let i = 0; i < 200; i++) {
        const payload = Array.from({ length: i % 50 }, (_, k) => (k * i) & 255);
        const fr = tcpFrame("10.0.0.1", "10.0.0.2", sp, 443, 1000 + i * 1460, payload, i);
        // Also embedded at an offset inside a bigger buffer.
        const buf = new Uint8Array(fr.length + 10);
        buf.set(fr, 6);
        assert.equal(sel.select(fr, 0, fr.length, 4), q0);
        assert.equal(sel.select(buf, 6, fr.length, 4), q0);
      }
    }
  });

  it("8 TCP flows between the same two hosts spread over 4 queues", () => {
    const sel = new TxQueueSelector();
    const qs = new Set<number>();
    for (let i = 0; i < 8; i++) qs.add(sel.select(tcpFrame("192.168.0.10", "192.168.0.20", 50000 + i, 5201), 0, 54, 4));
    assert.ok(qs.size >= 3, `only queues ${[...qs]}`);
    // Same flows over IPv6.
    const q6 = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const fr = eth(0x86dd, ip6("fd00::10", "fd00::20", 6, tcp(50000 + i, 5201)));
      q6.add(sel.select(fr, 0, fr.length, 4));
    }
    assert.ok(q6.size >= 3, `only queues ${[...q6]}`);
  });

  it("many flows spread roughly evenly", () => {
    const sel = new TxQueueSelector();
    const counts = [0, 0, 0, 0, 0, 0];
    for (let i = 0; i < 6000; i++) {
      const fr = tcpFrame(`10.0.${i & 255}.${(i >> 8) + 1}`, "10.1.0.1", 1024 + ((i * 7919) & 0xffff) % 60000, 80);
      counts[sel.select(fr, 0, fr.length, 6)]!++;
    }
    for (const c of counts) assert.ok(c > 800 && c < 1200, `counts ${counts}`);
  });

  it("non-IP frames hash MACs + ethertype deterministically (not just the first bytes)", () => {
    const sel = new TxQueueSelector();
    const qs = new Set<number>();
    for (let i = 0; i < 64; i++) {
      const src = [0x02, 0, 0, 0, i >> 8, i & 255];
      const fr = eth(0x0806, Array(28).fill(i), MAC_D, src);
      const q = sel.select(fr, 0, fr.length, 4);
      assert.equal(sel.select(eth(0x0806, Array(28).fill(0), MAC_D, src), 0, 42, 4), q); // payload irrelevant
      qs.add(q);
    }
    assert.ok(qs.size >= 3);
    // Runts and garbage bounds do not throw and stay in range.
    assert.ok(sel.select(Uint8Array.of(1, 2, 3), 0, 3, 4) < 4);
    assert.ok(sel.select(Uint8Array.of(1, 2, 3), 5, 3, 4) < 4);
    assert.equal(sel.select(new Uint8Array(64), 0, 64, 1), 0);
  });

  it("symmetric: forward and reply share a queue only when asked", () => {
    const sym = new TxQueueSelector({ symmetric: true });
    const plain = new TxQueueSelector();
    let differ = 0;
    for (let i = 0; i < 64; i++) {
      const a = `10.0.0.${i + 1}`;
      const b = `172.16.${i}.9`;
      const fwd = tcpFrame(a, b, 40000 + i, 443);
      const rev = tcpFrame(b, a, 443, 40000 + i);
      assert.equal(sym.select(fwd, 0, 54, 8), sym.select(rev, 0, 54, 8));
      if (plain.select(fwd, 0, 54, 8) !== plain.select(rev, 0, 54, 8)) differ++;
      const f6 = eth(0x86dd, ip6(`fd00::${i + 1}`, "fd00::ffff", 17, udp(5000 + i, 53)));
      const r6 = eth(0x86dd, ip6("fd00::ffff", `fd00::${i + 1}`, 17, udp(53, 5000 + i)));
      assert.equal(sym.select(f6, 0, f6.length, 8), sym.select(r6, 0, r6.length, 8));
      const arpF = eth(0x0806, [], MAC_D, [2, 0, 0, 0, 0, i]);
      const arpR = eth(0x0806, [], [2, 0, 0, 0, 0, i], MAC_D);
      assert.equal(sym.select(arpF, 0, arpF.length, 8), sym.select(arpR, 0, arpR.length, 8));
    }
    assert.ok(differ > 16, `default mode is direction-sensitive (${differ}/64 differ)`);
  });

  it("with RssSteering, TX uses the pair RSS picks for the replies", () => {
    const table = Uint16Array.from({ length: 128 }, (_, i) => i % 4);
    const s = steering(VIRTIO_NET_RSS_HASH_TYPE_ALL, table, 0);
    const sel = new TxQueueSelector({ steering: s });
    const rx = new FlowKey();
    for (let i = 0; i < 200; i++) {
      const tx = tcpFrame("10.0.0.1", `10.9.${i}.7`, 33000 + i, 8080);
      const reply = tcpFrame(`10.9.${i}.7`, "10.0.0.1", 8080, 33000 + i);
      assert.equal(parseFlow(reply, 0, reply.length, rx), true);
      assert.equal(sel.select(tx, 0, tx.length, 4), s.selectQueue(rx));
      assert.equal(sel.lastHash, s.lastHash);
    }
    // IPv6 with RT2 on TX and HAO on the reply (mobile IPv6), _EX types on.
    const MN = "2001:db8:aaaa::1";
    const tx6 = eth(0x86dd, ip6("2001:db8::1", "2001:db8:bbbb::2", 43, [...rt2(6, MN), ...tcp(443, 51000)]));
    const rx6 = eth(0x86dd, ip6("2001:db8:bbbb::2", "2001:db8::1", 60, [...dstOptsHAO(6, MN), ...tcp(51000, 443)]));
    assert.equal(parseFlow(rx6, 0, rx6.length, rx), true);
    assert.equal(sel.select(tx6, 0, tx6.length, 4), s.selectQueue(rx));
    assert.equal(sel.lastHash, s.lastHash);
    // Table entries beyond the active pairs are folded into range.
    const wide = new TxQueueSelector({ steering: steering(VIRTIO_NET_RSS_HASH_TYPE_ALL, identityTable(128), 0) });
    for (let i = 0; i < 100; i++) assert.ok(wide.select(tcpFrame("1.1.1.1", "2.2.2.2", i, 80), 0, 54, 3) < 3);
    // Unclassified by RSS (ARP) falls back to the own hash, still deterministic.
    const arp = eth(0x0806, Array(28).fill(0));
    assert.equal(sel.select(arp, 0, 42, 4), new TxQueueSelector().select(arp, 0, 42, 4));
    sel.setSteering(null);
    const tx = tcpFrame("10.0.0.1", "10.0.0.2", 1, 2);
    assert.equal(sel.select(tx, 0, 54, 4), new TxQueueSelector().select(tx, 0, 54, 4));
  });

  it("result is always in [0, activePairs) for random frames", () => {
    const sel = new TxQueueSelector();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 128 }), fc.integer({ min: 1, max: 64 }), (bytes, n) => {
        const q = sel.select(bytes, 0, bytes.length, n);
        assert.ok(Number.isInteger(q) && q >= 0 && q < n);
      }),
      { numRuns: 1000 },
    );
  });
});
