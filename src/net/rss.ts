/**
 * Receive-side scaling (RSS) steering and hash classification for the device
 * side of virtio-net.
 *
 * Spec (virtio 1.x, device-types/net):
 *  - "Device Operation / Processing of Incoming Packets / Hash calculation for
 *    incoming packets": which fields are hashed for a given 'Enabled hash
 *    types' bitmask (subsections "Supported/enabled hash types", "IPv4
 *    packets", "IPv6 packets without extension header", "IPv6 packets with
 *    extension header").
 *  - "Device Operation / Processing of Incoming Packets / Hash reporting for
 *    incoming packets": the VIRTIO_NET_HASH_REPORT_* values.
 *  - "Device Operation / Control Virtqueue / Receive-side scaling (RSS) /
 *    Setting RSS parameters" and "... / RSS processing": struct
 *    virtio_net_rss_config (hash_types, indirection_table_mask,
 *    unclassified_queue, indirection_table, hash_key) and the queue choice
 *    `indirection_table[hash & indirection_table_mask]`, or
 *    `unclassified_queue` when no hash was calculated.
 *
 * Queue numbers here are receive queue indices as carried in `rss_rq_id`
 * (`vq_index_1_16`, i.e. virtqueue index / 2: 0 = receiveq1, 3 = receiveq4).
 */

import type { FlowKey } from "./flow.js";
import { IPPROTO_TCP, IPPROTO_UDP } from "./flow.js";
import { Toeplitz } from "./toeplitz.js";

// --- Supported/enabled hash types (spec names VIRTIO_NET_HASH_TYPE_*; Linux
// uapi <linux/virtio_net.h> calls them VIRTIO_NET_RSS_HASH_TYPE_*). ---------

export const VIRTIO_NET_RSS_HASH_TYPE_IPv4 = 1 << 0;
export const VIRTIO_NET_RSS_HASH_TYPE_TCPv4 = 1 << 1;
export const VIRTIO_NET_RSS_HASH_TYPE_UDPv4 = 1 << 2;
export const VIRTIO_NET_RSS_HASH_TYPE_IPv6 = 1 << 3;
export const VIRTIO_NET_RSS_HASH_TYPE_TCPv6 = 1 << 4;
export const VIRTIO_NET_RSS_HASH_TYPE_UDPv6 = 1 << 5;
export const VIRTIO_NET_RSS_HASH_TYPE_IP_EX = 1 << 6;
export const VIRTIO_NET_RSS_HASH_TYPE_TCP_EX = 1 << 7;
export const VIRTIO_NET_RSS_HASH_TYPE_UDP_EX = 1 << 8;
/** All nine hash types defined by the spec. */
export const VIRTIO_NET_RSS_HASH_TYPE_ALL = 0x1ff;

export const VIRTIO_NET_HASH_TYPE_IPv4 = VIRTIO_NET_RSS_HASH_TYPE_IPv4;
export const VIRTIO_NET_HASH_TYPE_TCPv4 = VIRTIO_NET_RSS_HASH_TYPE_TCPv4;
export const VIRTIO_NET_HASH_TYPE_UDPv4 = VIRTIO_NET_RSS_HASH_TYPE_UDPv4;
export const VIRTIO_NET_HASH_TYPE_IPv6 = VIRTIO_NET_RSS_HASH_TYPE_IPv6;
export const VIRTIO_NET_HASH_TYPE_TCPv6 = VIRTIO_NET_RSS_HASH_TYPE_TCPv6;
export const VIRTIO_NET_HASH_TYPE_UDPv6 = VIRTIO_NET_RSS_HASH_TYPE_UDPv6;
export const VIRTIO_NET_HASH_TYPE_IP_EX = VIRTIO_NET_RSS_HASH_TYPE_IP_EX;
export const VIRTIO_NET_HASH_TYPE_TCP_EX = VIRTIO_NET_RSS_HASH_TYPE_TCP_EX;
export const VIRTIO_NET_HASH_TYPE_UDP_EX = VIRTIO_NET_RSS_HASH_TYPE_UDP_EX;
export const VIRTIO_NET_HASH_TYPE_ALL = VIRTIO_NET_RSS_HASH_TYPE_ALL;

// --- Hash report values (VIRTIO_NET_HASH_TYPE_XXX = 1 << (REPORT_XXX - 1)). --

export const VIRTIO_NET_HASH_REPORT_NONE = 0;
export const VIRTIO_NET_HASH_REPORT_IPv4 = 1;
export const VIRTIO_NET_HASH_REPORT_TCPv4 = 2;
export const VIRTIO_NET_HASH_REPORT_UDPv4 = 3;
export const VIRTIO_NET_HASH_REPORT_IPv6 = 4;
export const VIRTIO_NET_HASH_REPORT_TCPv6 = 5;
export const VIRTIO_NET_HASH_REPORT_UDPv6 = 6;
export const VIRTIO_NET_HASH_REPORT_IPv6_EX = 7;
export const VIRTIO_NET_HASH_REPORT_TCPv6_EX = 8;
export const VIRTIO_NET_HASH_REPORT_UDPv6_EX = 9;

/** Largest indirection table: indirection_table_mask is a le16. */
export const RSS_MAX_INDIRECTION_TABLE_LENGTH = 0x10000;

/** RSS parameters, mirroring struct virtio_net_rss_config. */
export interface RssConfig {
  /** hash_key_data (hash_key_length = key.length, at most 255). */
  key: Uint8Array;
  /** hash_types: bitmask of VIRTIO_NET_RSS_HASH_TYPE_*; unknown bits are ignored. */
  hashTypes: number;
  /**
   * indirection_table as receive queue indices; its length must be a power of
   * two (indirection_table_mask + 1). Copied, so later changes to the caller's
   * array have no effect until {@link RssSteering.configure} is called again.
   */
  indirectionTable: Uint16Array;
  /** unclassified_queue: receive queue index for packets with no hash. */
  unclassifiedQueue: number;
}

/**
 * Per-device RSS state: Toeplitz key, enabled hash types and indirection
 * table. One instance may be shared by all RX paths of a device as long as
 * calls are not interleaved between {@link classify} and reading
 * {@link lastHash} (single-threaded JS makes this natural).
 */
export class RssSteering {
  /** 32-bit Toeplitz hash from the last {@link classify} / {@link selectQueue}; 0 if none. */
  lastHash = 0;
  /** VIRTIO_NET_HASH_REPORT_* from the last {@link classify} / {@link selectQueue}. */
  lastReport = 0;

  private readonly toeplitz: Toeplitz;
  private types = 0;
  private table: Uint16Array = new Uint16Array(1);
  private mask = 0;
  private unclassified = 0;

  constructor(cfg: RssConfig) {
    this.toeplitz = new Toeplitz(cfg.key);
    this.configure(cfg);
  }

  /**
   * Apply new parameters (VIRTIO_NET_CTRL_MQ_RSS_CONFIG). Validates and
   * copies; not meant for the per-packet path.
   * @throws RangeError if the table length is not a power of two in
   *   1..65536, or the key is longer than 255 bytes.
   */
  configure(cfg: RssConfig): void {
    const n = cfg.indirectionTable.length;
    if (n < 1 || n > RSS_MAX_INDIRECTION_TABLE_LENGTH || (n & (n - 1)) !== 0) {
      throw new RangeError(`RSS indirection table length ${n} is not a power of two in 1..65536`);
    }
    this.toeplitz.setKey(cfg.key);
    this.types = cfg.hashTypes & VIRTIO_NET_RSS_HASH_TYPE_ALL;
    this.table = Uint16Array.from(cfg.indirectionTable);
    this.mask = n - 1;
    this.unclassified = cfg.unclassifiedQueue & 0xffff;
  }

  /** Enabled hash types (masked to the nine defined bits). */
  get hashTypes(): number {
    return this.types;
  }

  /** indirection_table_mask (= table length - 1). */
  get indirectionTableMask(): number {
    return this.mask;
  }

  get unclassifiedQueue(): number {
    return this.unclassified;
  }

  /** The (copied) indirection table. Mutating it changes steering immediately. */
  get indirectionTable(): Uint16Array {
    return this.table;
  }

  /**
   * Compute the packet hash per "Hash calculation for incoming packets".
   *
   * IPv4 ("IPv4 packets"): TCPv4 enabled and TCP header -> src, dst, sport,
   * dport; else UDPv4 enabled and UDP header -> same with UDP ports; else
   * IPv4 enabled -> src, dst; else no hash.
   *
   * IPv6 without extension headers: the same ladder with TCPv6 / UDPv6 / IPv6.
   *
   * IPv6 with extension headers ("IPv6 packets with extension header"):
   * TCP_EX / UDP_EX / IP_EX, where the source address is replaced by the Home
   * Address option address and the destination address by the Routing Header
   * Type 2 address when those headers are present; if none of the _EX types
   * applies, the extension headers are skipped and the packet is hashed with
   * the non-EX ladder above. Following the spec literally, the _EX types do
   * not apply to packets without extension headers (QEMU instead prefers an
   * enabled _EX type for every IPv6 packet; the hash value is the same, only
   * the report type and the only-_EX-enabled case differ).
   *
   * "Has a TCP/UDP header" means `flow.hasPorts` with l4proto 6/17, i.e. a
   * complete L4 header in a non-fragment (see flow.ts).
   *
   * Input byte order of the hash: addresses then ports, network order,
   * source before destination (Microsoft RSS / virtio spec field order).
   *
   * @returns VIRTIO_NET_HASH_REPORT_* (0 = no hash calculated). The hash is
   *   left in {@link lastHash} (0 when none).
   */
  classify(flow: FlowKey): number {
    const types = this.types;
    const t = this.toeplitz;
    let report = VIRTIO_NET_HASH_REPORT_NONE;
    let h = 0;
    const l3 = flow.l3;
    if (l3 === 4) {
      const proto = flow.hasPorts ? flow.l4proto : -1;
      if ((types & VIRTIO_NET_RSS_HASH_TYPE_TCPv4) !== 0 && proto === IPPROTO_TCP) {
        h = t.rawIPv4Ports(flow.src4, flow.dst4, flow.srcPort, flow.dstPort);
        report = VIRTIO_NET_HASH_REPORT_TCPv4;
      } else if ((types & VIRTIO_NET_RSS_HASH_TYPE_UDPv4) !== 0 && proto === IPPROTO_UDP) {
        h = t.rawIPv4Ports(flow.src4, flow.dst4, flow.srcPort, flow.dstPort);
        report = VIRTIO_NET_HASH_REPORT_UDPv4;
      } else if ((types & VIRTIO_NET_RSS_HASH_TYPE_IPv4) !== 0) {
        h = t.rawIPv4(flow.src4, flow.dst4);
        report = VIRTIO_NET_HASH_REPORT_IPv4;
      }
    } else if (l3 === 6) {
      const proto = flow.hasPorts ? flow.l4proto : -1;
      if (flow.hasExtHeaders) {
        const s = flow.hasHomeAddr ? flow.homeAddr6 : flow.src6;
        const d = flow.hasRt2Addr ? flow.rt2Addr6 : flow.dst6;
        if ((types & VIRTIO_NET_RSS_HASH_TYPE_TCP_EX) !== 0 && proto === IPPROTO_TCP) {
          h = t.rawIPv6Ports(s, d, flow.srcPort, flow.dstPort);
          report = VIRTIO_NET_HASH_REPORT_TCPv6_EX;
        } else if ((types & VIRTIO_NET_RSS_HASH_TYPE_UDP_EX) !== 0 && proto === IPPROTO_UDP) {
          h = t.rawIPv6Ports(s, d, flow.srcPort, flow.dstPort);
          report = VIRTIO_NET_HASH_REPORT_UDPv6_EX;
        } else if ((types & VIRTIO_NET_RSS_HASH_TYPE_IP_EX) !== 0) {
          h = t.rawIPv6(s, d);
          report = VIRTIO_NET_HASH_REPORT_IPv6_EX;
        }
      }
      if (report === VIRTIO_NET_HASH_REPORT_NONE) {
        if ((types & VIRTIO_NET_RSS_HASH_TYPE_TCPv6) !== 0 && proto === IPPROTO_TCP) {
          h = t.rawIPv6Ports(flow.src6, flow.dst6, flow.srcPort, flow.dstPort);
          report = VIRTIO_NET_HASH_REPORT_TCPv6;
        } else if ((types & VIRTIO_NET_RSS_HASH_TYPE_UDPv6) !== 0 && proto === IPPROTO_UDP) {
          h = t.rawIPv6Ports(flow.src6, flow.dst6, flow.srcPort, flow.dstPort);
          report = VIRTIO_NET_HASH_REPORT_UDPv6;
        } else if ((types & VIRTIO_NET_RSS_HASH_TYPE_IPv6) !== 0) {
          h = t.rawIPv6(flow.src6, flow.dst6);
          report = VIRTIO_NET_HASH_REPORT_IPv6;
        }
      }
    }
    // h is the hash as int32 (raw* variants, no boxing); lastHash is unsigned.
    this.lastHash = h >>> 0;
    this.lastReport = report;
    return report;
  }

  /**
   * Destination receive queue per "RSS processing": if no hash was calculated,
   * `unclassified_queue`; otherwise `indirection_table[hash & mask]`.
   * Also leaves {@link lastHash} / {@link lastReport} set.
   */
  selectQueue(flow: FlowKey): number {
    if (this.classify(flow) === VIRTIO_NET_HASH_REPORT_NONE) return this.unclassified;
    return this.table[this.lastHash & this.mask]!;
  }

  /**
   * Queue for the hash of the last {@link classify}: the indirection table
   * entry, or `unclassified_queue` if no hash was calculated.
   */
  selectedQueue(): number {
    if (this.lastReport === VIRTIO_NET_HASH_REPORT_NONE) return this.unclassified;
    return this.table[this.lastHash & this.mask]!;
  }

  /** `indirection_table[hash & indirection_table_mask]` for an already computed hash. */
  queueForHash(hash: number): number {
    return this.table[hash & this.mask]!;
  }
}
