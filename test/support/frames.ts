/** TCP/UDP over IPv4/IPv6 test frames with partial checksums, and a checksum verifier (test/gso.test.ts, test/device-offload.test.ts). */
import { csumAdd, foldCsum, internetChecksum } from '../../src/net/csum.js';

export const be16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
export const be32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

/** A TCP or UDP frame over IPv4 or IPv6 with `payload`, L4 checksum field holding the pseudo-header sum (partial). */
export function frame(v6: boolean, tcp: boolean, payload: Uint8Array, tcpFlags = 0x18): { f: Uint8Array; l4: number } {
  const l3 = 14, ipl = v6 ? 40 : 20, l4 = l3 + ipl, thl = tcp ? 20 : 8;
  const f = new Uint8Array(l4 + thl + payload.length);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  f[12] = v6 ? 0x86 : 0x08;
  f[13] = v6 ? 0xdd : 0x00;
  const l4len = thl + payload.length;
  const proto = tcp ? 6 : 17;
  if (v6) {
    f[l3] = 0x60;
    f[l3 + 4] = l4len >> 8; f[l3 + 5] = l4len & 0xff;
    f[l3 + 6] = proto; f[l3 + 7] = 64;
    for (let i = 0; i < 16; i++) { f[l3 + 8 + i] = 0xfd; f[l3 + 24 + i] = i; }
  } else {
    f[l3] = 0x45;
    const tl = 20 + l4len;
    f[l3 + 2] = tl >> 8; f[l3 + 3] = tl & 0xff;
    f[l3 + 4] = 0x12; f[l3 + 5] = 0x34; f[l3 + 6] = 0x40; f[l3 + 8] = 64; f[l3 + 9] = proto;
    f.set([10, 0, 0, 1, 10, 0, 0, 2], l3 + 12);
    const c = internetChecksum(f, l3, 20);
    f[l3 + 10] = c >> 8; f[l3 + 11] = c & 0xff;
  }
  f[l4] = 0x30; f[l4 + 1] = 0x39; f[l4 + 2] = 0x01; f[l4 + 3] = 0xbb;
  if (tcp) {
    f.set([0xff, 0xff, 0xff, 0x00], l4 + 4); // sequence number close to the wrap
    f[l4 + 12] = 5 << 4;
    f[l4 + 13] = tcpFlags;
    f[l4 + 14] = 0xff;
  } else {
    f[l4 + 4] = l4len >> 8; f[l4 + 5] = l4len & 0xff;
  }
  f.set(payload, l4 + thl);
  // Partial checksum as a driver leaves it: the folded pseudo-header sum.
  const ps = v6 ? csumAdd(f, l3 + 8, 32) + proto + l4len : csumAdd(f, l3 + 12, 8) + proto + l4len;
  const p = foldCsum(ps);
  const co = l4 + (tcp ? 16 : 6);
  f[co] = p >> 8; f[co + 1] = p & 0xff;
  return { f, l4 };
}

/** The L4 checksum of a complete segment verifies (sum over pseudo header and segment is 0xffff). */
export function l4Valid(s: Uint8Array, v6: boolean, l4: number, proto: number): boolean {
  const l4len = s.length - l4;
  const ps = v6 ? csumAdd(s, 14 + 8, 32) + proto + l4len : csumAdd(s, 14 + 12, 8) + proto + l4len;
  return foldCsum(csumAdd(s, l4, l4len, ps)) === 0xffff;
}

