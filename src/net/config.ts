/**
 * struct virtio_net_config, the virtio-net device configuration space
 * (spec §5.1.4 "Device configuration layout"). All multi-byte fields are
 * little-endian (the legacy interface's guest-native `status` /
 * `max_virtqueue_pairs` are assumed little-endian too).
 *
 * | off | size | field                              | exists when                  |
 * |-----|------|------------------------------------|------------------------------|
 * |  0  |  6   | mac[6]                             | always (valid with MAC)      |
 * |  6  |  2   | status                             | STATUS                       |
 * |  8  |  2   | max_virtqueue_pairs                | MQ or RSS                    |
 * | 10  |  2   | mtu                                | MTU                          |
 * | 12  |  4   | speed (Mbit/s; 0xffffffff unknown) | SPEED_DUPLEX                 |
 * | 16  |  1   | duplex                             | SPEED_DUPLEX                 |
 * | 17  |  1   | rss_max_key_size                   | RSS or HASH_REPORT           |
 * | 18  |  2   | rss_max_indirection_table_length   | RSS                          |
 * | 20  |  4   | supported_hash_types               | RSS or HASH_REPORT           |
 * | 24  |  4   | supported_tunnel_types             | HASH_TUNNEL                  |
 *
 * Total {@link NET_CONFIG_SIZE} = 28 bytes.
 */
import {
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_HASH_TUNNEL,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_SPEED_DUPLEX,
  VIRTIO_NET_F_STATUS,
} from './features.js';

/** status bit: link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** status bit: the device asks the driver to send gratuitous packets (GUEST_ANNOUNCE). */
export const VIRTIO_NET_S_ANNOUNCE = 2;

/**
 * duplex values. The spec contradicts itself (the description says 0x01 full,
 * the device-normative text says 0x00 full); these follow the description,
 * Linux (DUPLEX_FULL = 1) and QEMU.
 */
export const VIRTIO_NET_DUPLEX_HALF = 0x00;
export const VIRTIO_NET_DUPLEX_FULL = 0x01;
export const VIRTIO_NET_DUPLEX_UNKNOWN = 0xff;
/** speed value meaning unknown; the driver treats anything above 0x7fffffff as unknown. */
export const VIRTIO_NET_SPEED_UNKNOWN = 0xffff_ffff;

// supported_hash_types / hash_types bits (spec "Supported/enabled hash types").
export {
  VIRTIO_NET_HASH_TYPE_IPv4, VIRTIO_NET_HASH_TYPE_TCPv4, VIRTIO_NET_HASH_TYPE_UDPv4, VIRTIO_NET_HASH_TYPE_IPv6,
  VIRTIO_NET_HASH_TYPE_TCPv6, VIRTIO_NET_HASH_TYPE_UDPv6, VIRTIO_NET_HASH_TYPE_IP_EX, VIRTIO_NET_HASH_TYPE_TCP_EX,
  VIRTIO_NET_HASH_TYPE_UDP_EX, VIRTIO_NET_HASH_TYPE_ALL,
} from './rss.js';
import { VIRTIO_NET_HASH_TYPE_ALL } from './rss.js';
/** All nine hash types. */

// supported_tunnel_types bits (spec "Encapsulation types supported/enabled for inner header hash").
export const VIRTIO_NET_HASH_TUNNEL_TYPE_GRE_2784 = 1 << 0;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_GRE_2890 = 1 << 1;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_GRE_7676 = 1 << 2;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_GRE_UDP = 1 << 3;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_VXLAN = 1 << 4;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_VXLAN_GPE = 1 << 5;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_GENEVE = 1 << 6;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_IPIP = 1 << 7;
export const VIRTIO_NET_HASH_TUNNEL_TYPE_NVGRE = 1 << 8;

/** Smallest rss_max_key_size a device offering RSS or HASH_REPORT may report (device-normative). */
export const VIRTIO_NET_RSS_MIN_KEY_SIZE = 40;
/** Smallest rss_max_indirection_table_length a device offering RSS may report. */
export const VIRTIO_NET_RSS_MIN_TABLE_LENGTH = 128;
/** max_virtqueue_pairs upper bound (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX). */
export const VIRTIO_NET_MAX_VQ_PAIRS = 0x8000;

/** Byte offsets of the config fields. */
export const NetConfigOffset = {
  mac: 0,
  status: 6,
  maxVirtqueuePairs: 8,
  mtu: 10,
  speed: 12,
  duplex: 16,
  rssMaxKeySize: 17,
  rssMaxIndirectionTableLength: 18,
  supportedHashTypes: 20,
  supportedTunnelTypes: 24,
} as const;

/** Size in bytes of the full struct virtio_net_config. */
export const NET_CONFIG_SIZE = 28;

/** Decoded struct virtio_net_config. Numbers are unsigned field values. */
export interface NetConfig {
  /** 6 bytes. */
  mac: Uint8Array;
  /** VIRTIO_NET_S_* bits (u16). */
  status: number;
  /** u16, 1..0x8000. */
  maxVirtqueuePairs: number;
  /** u16; 0 when not reported. */
  mtu: number;
  /** u32, Mbit/s. */
  speed: number;
  /** u8, VIRTIO_NET_DUPLEX_*. */
  duplex: number;
  /** u8. */
  rssMaxKeySize: number;
  /** u16. */
  rssMaxIndirectionTableLength: number;
  /** u32, VIRTIO_NET_HASH_TYPE_* bits. */
  supportedHashTypes: number;
  /** u32, VIRTIO_NET_HASH_TUNNEL_TYPE_* bits. */
  supportedTunnelTypes: number;
}

/**
 * A config with sensible device defaults, overridden by `over`: link up, one
 * queue pair, MTU 1500, unknown speed/duplex, RSS limits at the spec minimums
 * (key 40, table 128), all hash types. `mac` defaults to 52:54:00:12:34:56.
 */
export function defaultNetConfig(over: Partial<NetConfig> = {}): NetConfig {
  return {
    mac: Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56),
    status: VIRTIO_NET_S_LINK_UP,
    maxVirtqueuePairs: 1,
    mtu: 1500,
    speed: VIRTIO_NET_SPEED_UNKNOWN,
    duplex: VIRTIO_NET_DUPLEX_UNKNOWN,
    rssMaxKeySize: VIRTIO_NET_RSS_MIN_KEY_SIZE,
    rssMaxIndirectionTableLength: VIRTIO_NET_RSS_MIN_TABLE_LENGTH,
    supportedHashTypes: VIRTIO_NET_HASH_TYPE_ALL,
    supportedTunnelTypes: 0,
    ...over,
  };
}

function uint(name: string, v: number, max: number): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`virtio_net_config.${name} = ${v} out of range 0..${max}`);
  return v;
}

/**
 * Encode `cfg` as the full 28-byte config space, every field at its spec
 * offset, little-endian. Fields whose feature is not offered are still
 * written (the driver must not read them). Throws RangeError when `mac` is not
 * 6 bytes or a value does not fit its field.
 */
export function encodeNetConfig(cfg: NetConfig): Uint8Array {
  if (cfg.mac.length !== 6) throw new RangeError(`virtio_net_config.mac must be 6 bytes, got ${cfg.mac.length}`);
  const out = new Uint8Array(NET_CONFIG_SIZE);
  const dv = new DataView(out.buffer);
  out.set(cfg.mac, 0);
  dv.setUint16(6, uint('status', cfg.status, 0xffff), true);
  dv.setUint16(8, uint('maxVirtqueuePairs', cfg.maxVirtqueuePairs, 0xffff), true);
  dv.setUint16(10, uint('mtu', cfg.mtu, 0xffff), true);
  dv.setUint32(12, uint('speed', cfg.speed, 0xffff_ffff), true);
  dv.setUint8(16, uint('duplex', cfg.duplex, 0xff));
  dv.setUint8(17, uint('rssMaxKeySize', cfg.rssMaxKeySize, 0xff));
  dv.setUint16(18, uint('rssMaxIndirectionTableLength', cfg.rssMaxIndirectionTableLength, 0xffff), true);
  dv.setUint32(20, uint('supportedHashTypes', cfg.supportedHashTypes, 0xffff_ffff), true);
  dv.setUint32(24, uint('supportedTunnelTypes', cfg.supportedTunnelTypes, 0xffff_ffff), true);
  return out;
}

/**
 * Bytes of config space that exist for feature set `f` (end of the last
 * existing field; at least the 6-byte mac), like QEMU's virtio_net_cfg_size:
 * 6, +STATUS → 8, MQ|RSS → 10, MTU → 12, SPEED_DUPLEX → 17,
 * RSS|HASH_REPORT → 24, HASH_TUNNEL → 28.
 */
export function netConfigSize(f: bigint): number {
  let n = 6;
  if (f & VIRTIO_NET_F_STATUS) n = 8;
  if (f & (VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS)) n = 10;
  if (f & VIRTIO_NET_F_MTU) n = 12;
  if (f & VIRTIO_NET_F_SPEED_DUPLEX) n = 17;
  if (f & (VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT)) n = 24;
  if (f & VIRTIO_NET_F_HASH_TUNNEL) n = 28;
  return n;
}

/**
 * Decode config space `bytes` (offset 0 = `mac[0]`) as a driver that
 * negotiated `f` sees it: fields that exist for `f` are read; the others get
 * the values the spec tells the driver to assume — status LINK_UP,
 * max_virtqueue_pairs 1, mtu 0 (not reported), speed/duplex unknown, RSS
 * limits and hash/tunnel types 0. `rss_max_key_size` and
 * `supported_hash_types` exist with RSS or HASH_REPORT,
 * `rss_max_indirection_table_length` only with RSS. `mac` is always copied.
 * Throws RangeError when `bytes` is shorter than {@link netConfigSize}(f).
 */
export function decodeNetConfig(bytes: Uint8Array, f: bigint): NetConfig {
  const need = netConfigSize(f);
  if (bytes.length < need) throw new RangeError(`virtio_net_config: ${bytes.length} bytes, features need ${need}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hashing = (f & (VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT)) !== 0n;
  return {
    mac: bytes.slice(0, 6),
    status: f & VIRTIO_NET_F_STATUS ? dv.getUint16(6, true) : VIRTIO_NET_S_LINK_UP,
    maxVirtqueuePairs: f & (VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS) ? dv.getUint16(8, true) : 1,
    mtu: f & VIRTIO_NET_F_MTU ? dv.getUint16(10, true) : 0,
    speed: f & VIRTIO_NET_F_SPEED_DUPLEX ? dv.getUint32(12, true) : VIRTIO_NET_SPEED_UNKNOWN,
    duplex: f & VIRTIO_NET_F_SPEED_DUPLEX ? dv.getUint8(16) : VIRTIO_NET_DUPLEX_UNKNOWN,
    rssMaxKeySize: hashing ? dv.getUint8(17) : 0,
    rssMaxIndirectionTableLength: f & VIRTIO_NET_F_RSS ? dv.getUint16(18, true) : 0,
    supportedHashTypes: hashing ? dv.getUint32(20, true) : 0,
    supportedTunnelTypes: f & VIRTIO_NET_F_HASH_TUNNEL ? dv.getUint32(24, true) : 0,
  };
}

/**
 * The device-normative constraints on a config the device offers with
 * feature set `f` (§5.1.4 device requirements), one string per violation:
 * max_virtqueue_pairs 1..0x8000 with MQ (or RSS); mtu 68..65535 with MTU;
 * rss_max_key_size ≥ 40 with RSS or HASH_REPORT (and ≤ 255 by width);
 * rss_max_indirection_table_length ≥ 128 with RSS; mac 6 bytes.
 */
export function validateNetConfig(cfg: NetConfig, f: bigint): string[] {
  const out: string[] = [];
  if (cfg.mac.length !== 6) out.push('mac must be 6 bytes');
  if (f & (VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS)) {
    if (cfg.maxVirtqueuePairs < 1 || cfg.maxVirtqueuePairs > VIRTIO_NET_MAX_VQ_PAIRS) {
      out.push(`max_virtqueue_pairs ${cfg.maxVirtqueuePairs} not in 1..0x8000`);
    }
  }
  if ((f & VIRTIO_NET_F_MTU) && (cfg.mtu < 68 || cfg.mtu > 65535)) out.push(`mtu ${cfg.mtu} not in 68..65535`);
  if ((f & (VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT)) && cfg.rssMaxKeySize < VIRTIO_NET_RSS_MIN_KEY_SIZE) {
    out.push(`rss_max_key_size ${cfg.rssMaxKeySize} < 40`);
  }
  if ((f & VIRTIO_NET_F_RSS) && cfg.rssMaxIndirectionTableLength < VIRTIO_NET_RSS_MIN_TABLE_LENGTH) {
    out.push(`rss_max_indirection_table_length ${cfg.rssMaxIndirectionTableLength} < 128`);
  }
  return out;
}
