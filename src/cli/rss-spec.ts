/**
 * `--rss [key=HEX][,types=LIST][,table=N]` for `virtio-mq serve`: RSS the
 * back-end applies itself to frames from its netdev (generator, pcap,
 * loopback), spec v1.4 §5.1.6.5.7. Defaults: the standard 40-byte key, all
 * nine hash types, a 128-entry indirection table spread over the pairs.
 * Types: ipv4 tcpv4 udpv4 ipv6 tcpv6 udpv6 ip_ex tcp_ex udp_ex, or all.
 */
import type { RssConfig } from '../net/rss.js';
import {
  VIRTIO_NET_HASH_TYPE_ALL, VIRTIO_NET_HASH_TYPE_IPv4, VIRTIO_NET_HASH_TYPE_IPv6, VIRTIO_NET_HASH_TYPE_IP_EX,
  VIRTIO_NET_HASH_TYPE_TCPv4, VIRTIO_NET_HASH_TYPE_TCPv6, VIRTIO_NET_HASH_TYPE_TCP_EX, VIRTIO_NET_HASH_TYPE_UDPv4,
  VIRTIO_NET_HASH_TYPE_UDPv6, VIRTIO_NET_HASH_TYPE_UDP_EX,
} from '../net/rss.js';
import { DEFAULT_RSS_KEY } from '../net/toeplitz.js';
import { parseNetdev } from './netdev-spec.js';

const TYPES: Record<string, number> = {
  ipv4: VIRTIO_NET_HASH_TYPE_IPv4, tcpv4: VIRTIO_NET_HASH_TYPE_TCPv4, udpv4: VIRTIO_NET_HASH_TYPE_UDPv4,
  ipv6: VIRTIO_NET_HASH_TYPE_IPv6, tcpv6: VIRTIO_NET_HASH_TYPE_TCPv6, udpv6: VIRTIO_NET_HASH_TYPE_UDPv6,
  ip_ex: VIRTIO_NET_HASH_TYPE_IP_EX, tcp_ex: VIRTIO_NET_HASH_TYPE_TCP_EX, udp_ex: VIRTIO_NET_HASH_TYPE_UDP_EX,
  all: VIRTIO_NET_HASH_TYPE_ALL,
};

/** @throws Error with a clear message for a bad key, type or table size. */
export function parseRss(text: string, pairs: number): RssConfig {
  const { opts } = parseNetdev(`rss${text ? `,${text}` : ''}`);
  let key = DEFAULT_RSS_KEY;
  const hex = opts.get('key');
  if (hex !== undefined) {
    const clean = hex.replace(/[:\s]/g, '');
    if (!/^([0-9a-fA-F]{2}){1,40}$/.test(clean)) throw new Error('--rss key= must be 1..40 bytes of hex');
    key = Uint8Array.from(clean.match(/../g)!.map((b) => parseInt(b, 16)));
  }
  let hashTypes = VIRTIO_NET_HASH_TYPE_ALL;
  const types = opts.get('types');
  if (types !== undefined) {
    hashTypes = 0;
    for (const t of types.split(/[+:]/)) {
      const bit = TYPES[t.toLowerCase()];
      if (bit === undefined) throw new Error(`--rss types: unknown "${t}" (${Object.keys(TYPES).join(' ')}; join with +)`);
      hashTypes |= bit;
    }
  }
  const size = Number(opts.get('table') ?? 128);
  if (!Number.isInteger(size) || size < 1 || size > 128 || (size & (size - 1)) !== 0) throw new Error('--rss table= must be a power of two up to 128');
  return { key, hashTypes, indirectionTable: Uint16Array.from({ length: size }, (_, i) => i % pairs), unclassifiedQueue: 0 };
}
