/**
 * Driver-side TX queue selection for multi-queue virtio-net.
 *
 * virtio 1.x, "Device Types / Network Device / Device Operation / Control
 * Virtqueue / Automatic receive steering in multiqueue mode" leaves the choice
 * of transmitq to the driver (the device steers replies to the receiveq of the
 * pair that last transmitted the flow in that mode, or per RSS when
 * VIRTIO_NET_F_RSS is negotiated). This selector picks a pair so that:
 *
 *  - every frame of one flow maps to the same queue (the hash depends only on
 *    the addresses/ports, never on payload, lengths or IP ids);
 *  - different flows spread over the active pairs (Toeplitz over the
 *    5-tuple, not a sum of the first bytes of the frame: the first 12 bytes
 *    are the MAC addresses, which are identical for every flow to the same
 *    next hop);
 *  - optionally, TX lands on the same pair RSS will use for the flow's
 *    replies ({@link TxQueueSelector.setSteering}).
 *
 * Hash inputs (all network byte order, Toeplitz per toeplitz.ts):
 *  - IP with TCP/UDP ports (non-fragment): src addr | dst addr | sport | dport;
 *  - other IP (ICMP, ESP, fragments, truncated L4): src addr | dst addr.
 *    The protocol number itself is not hashed; fragments of a TCP/UDP flow
 *    therefore use the 2-tuple and can land on a different queue than the
 *    unfragmented packets of the same flow, exactly as RSS does on RX;
 *  - non-IP or unparsable frames: dst MAC(6) | src MAC(6) | ethertype(2)
 *    (ethertype after VLAN tags), so ARP, LLDP, etc. spread deterministically.
 */

import { FlowKey, parseFlow } from "./flow.js";
import type { RssSteering } from "./rss.js";
import { DEFAULT_RSS_KEY, Toeplitz } from "./toeplitz.js";

export interface TxQueueSelectorOptions {
  /** Toeplitz key for the selector's own hash. Default DEFAULT_RSS_KEY. */
  key?: Uint8Array;
  /**
   * If set, IP frames are classified with this RSS configuration on the
   * REVERSED tuple, so a flow transmits on the pair whose receiveq RSS uses
   * for its replies. Frames RSS leaves unclassified use the own hash.
   */
  steering?: RssSteering | null;
  /**
   * Sort the endpoints before hashing (own hash only) so both directions of
   * a conversation map to the same queue. IPv4/IPv6: the (address, port)
   * pairs are ordered; non-IP: the two MAC addresses are ordered. Default
   * false: the plain Toeplitz tuple hash, which differs per direction.
   * Ignored on the steering path, which already matches RX exactly.
   */
  symmetric?: boolean;
}

/**
 * Reusable TX queue selector; allocation-free per call. Not shareable between
 * threads (it owns a scratch FlowKey), cheap to create one per TX context.
 */
export class TxQueueSelector {
  /** Whether endpoints are sorted before hashing (see options). */
  readonly symmetric: boolean;
  /**
   * Hash behind the last {@link select} (the RSS hash on the steering path),
   * unsigned 32-bit. Not updated when `activePairs <= 1`.
   */
  lastHash = 0;

  private readonly toeplitz: Toeplitz;
  private steering: RssSteering | null;
  private readonly flow = new FlowKey();
  private readonly scratch = new Uint8Array(14);

  constructor(opts: TxQueueSelectorOptions = {}) {
    this.toeplitz = new Toeplitz(opts.key ?? DEFAULT_RSS_KEY);
    this.steering = opts.steering ?? null;
    this.symmetric = opts.symmetric === true;
  }

  /** Install or remove (null) the RSS configuration to align TX with RX. */
  setSteering(steering: RssSteering | null): void {
    this.steering = steering;
  }

  /**
   * Choose the TX queue pair (0 .. activePairs-1) for the Ethernet frame
   * `frame[off .. off+len)`.
   *
   * With steering set and an IP frame RSS classifies: the indirection table
   * entry for the reversed tuple, reduced modulo `activePairs` if the table
   * names a queue that is not active. Otherwise: own hash scaled onto
   * `activePairs` by multiply-high (`floor(hash * activePairs / 2^32)`).
   * `activePairs <= 1` returns 0 without looking at the frame.
   */
  select(frame: Uint8Array, off: number, len: number, activePairs: number): number {
    if (!(activePairs > 1)) return 0;
    const f = this.flow;
    const ok = parseFlow(frame, off, len, f);
    const s = this.steering;
    if (ok && s !== null) {
      f.reverse();
      if (s.classify(f) !== 0) {
        this.lastHash = s.lastHash;
        const q = s.selectedQueue();
        return q < activePairs ? q : q % activePairs;
      }
      f.reverse();
    }
    // The helpers return int32 (see Toeplitz raw*) so nothing gets boxed.
    const h = (ok ? this.rawFlow(f) : this.rawL2(frame, off, len, f.ethertype)) >>> 0;
    this.lastHash = h;
    // h < 2^32 and activePairs <= 2^16: the product is exact in a double.
    return Math.floor(h * activePairs * 2.3283064365386963e-10);
  }

  /**
   * The selector's own hash (unsigned 32-bit) for a parsed IP flow (see the
   * module doc for the inputs). Honors {@link symmetric}.
   */
  hashFlow(f: FlowKey): number {
    return this.rawFlow(f) >>> 0;
  }

  private rawFlow(f: FlowKey): number {
    const t = this.toeplitz;
    const ports = f.hasPorts;
    let sp = ports ? f.srcPort : 0;
    let dp = ports ? f.dstPort : 0;
    if (f.l3 === 4) {
      let a = f.src4;
      let b = f.dst4;
      if (this.symmetric && (a > b || (a === b && sp > dp))) {
        const x = a;
        a = b;
        b = x;
        const y = sp;
        sp = dp;
        dp = y;
      }
      return ports ? t.rawIPv4Ports(a, b, sp, dp) : t.rawIPv4(a, b);
    }
    let a = f.src6;
    let b = f.dst6;
    if (this.symmetric) {
      const c = cmp6(a, b);
      if (c > 0 || (c === 0 && sp > dp)) {
        a = f.dst6;
        b = f.src6;
        const y = sp;
        sp = dp;
        dp = y;
      }
    }
    return ports ? t.rawIPv6Ports(a, b, sp, dp) : t.rawIPv6(a, b);
  }

  /**
   * Fallback hash for non-IP / unparsable frames: Toeplitz over
   * dst MAC | src MAC | ethertype (MACs ordered when symmetric). Runt frames
   * hash the bytes that exist (zero-padded).
   */
  private rawL2(frame: Uint8Array, off: number, len: number, ethertype: number): number {
    const sc = this.scratch;
    sc.fill(0);
    let n = len;
    if ((off >>> 0) !== off || !(n > 0)) n = 0;
    else if (off + n > frame.length) n = frame.length - off;
    if (n > 12) n = 12;
    let first = off;
    let second = off + 6;
    if (this.symmetric && n === 12) {
      for (let i = 0; i < 6; i++) {
        const x = frame[off + i]!;
        const y = frame[off + 6 + i]!;
        if (x !== y) {
          if (x > y) {
            first = off + 6;
            second = off;
          }
          break;
        }
      }
    }
    if (n === 12) {
      for (let i = 0; i < 6; i++) {
        sc[i] = frame[first + i]!;
        sc[6 + i] = frame[second + i]!;
      }
    } else {
      for (let i = 0; i < n; i++) sc[i] = frame[off + i]!;
    }
    sc[12] = (ethertype >>> 8) & 255;
    sc[13] = ethertype & 255;
    return this.toeplitz.rawBytes(sc, 0, 14);
  }
}

/** Lexicographic compare of two IPv6 addresses held as 4 big-endian words. */
function cmp6(a: Uint32Array, b: Uint32Array): number {
  for (let i = 0; i < 4; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
