/**
 * The virtio-net control virtqueue (spec §5.1.6.5 "Control Virtqueue"):
 * command constants, driver-side encoders, and the device-side command
 * handler over a plain {@link ControlState}.
 *
 * Wire format of every command (struct virtio_net_ctrl):
 *
 *   offset 0: u8 class
 *   offset 1: u8 command
 *   offset 2: command-specific-data (little-endian fields)
 *   then, in a separate device-writable buffer: u8 ack (VIRTIO_NET_OK / VIRTIO_NET_ERR)
 *
 * The encoders here build the device-readable part (class, command, data);
 * the driver adds a 1-byte ({@link CTRL_ACK_SIZE}) writable buffer for `ack`.
 * Encoders only check that values fit their fields (RangeError otherwise);
 * semantic checks (ranges, negotiated features) are the device's job in
 * {@link applyControlCommand}, so invalid-but-representable commands can be
 * built for tests.
 *
 * Device side: {@link applyControlCommand} validates a command completely
 * (feature gating, exact lengths, value ranges — following QEMU's
 * virtio_net_handle_ctrl / virtio_net_handle_rss, stricter where noted) and
 * only then commits it. A rejected command returns VIRTIO_NET_ERR and leaves
 * the state untouched; an accepted one replaces the affected fields with
 * fresh values (never mutating arrays in place), so earlier snapshots of
 * field values stay valid.
 */
import { VIRTIO_NET_MAX_VQ_PAIRS, type NetConfig } from './config.js';
import {
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_RSS,
  guestOffloadsFromFeatures,
} from './features.js';

import type { RxFilterState } from './rx-filter.js';

// ---------------------------------------------------------------------------
// Constants

/** ack: command accepted. */
export const VIRTIO_NET_OK = 0;
/** ack: command rejected. */
export const VIRTIO_NET_ERR = 1;
/** Size of the device-writable ack buffer. */
export const CTRL_ACK_SIZE = 1;
/** Size of the class/command header. */
export const CTRL_HDR_SIZE = 2;

/** Class 0: RX mode. Data: u8 0 (off) / 1 (on). */
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;

/** Class 1: MAC filtering. */
export const VIRTIO_NET_CTRL_MAC = 1;
/** Data: le32 n, n×6 unicast MACs, le32 m, m×6 multicast MACs. */
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
/** Data: 6-byte MAC. */
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;

/** Class 2: VLAN filtering. Data: le16 VLAN id. */
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;

/** Class 3: gratuitous packet announcement. No data. */
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;

/** Class 4: multiqueue. */
export const VIRTIO_NET_CTRL_MQ = 4;
/** Data: le16 virtqueue_pairs. */
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
/** Data: struct virtio_net_rss_config. */
export const VIRTIO_NET_CTRL_MQ_RSS_CONFIG = 1;
/** Data: struct virtio_net_hash_config. */
export const VIRTIO_NET_CTRL_MQ_HASH_CONFIG = 2;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;

/** Class 5: guest offloads. Data: le64 offload bitmask. */
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

/** Class 6: notification coalescing (not supported by this device: always ERR). */
export const VIRTIO_NET_CTRL_NOTF_COAL = 6;
export const VIRTIO_NET_CTRL_NOTF_COAL_TX_SET = 0;
export const VIRTIO_NET_CTRL_NOTF_COAL_RX_SET = 1;
export const VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET = 2;
export const VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET = 3;
/** Class 7: inner header hash (not supported: ERR). */
export const VIRTIO_NET_CTRL_HASH_TUNNEL = 7;
export const VIRTIO_NET_CTRL_HASH_TUNNEL_SET = 0;
/** Class 8: device statistics (not supported: ERR). */
export const VIRTIO_NET_CTRL_STATS = 8;
export const VIRTIO_NET_CTRL_STATS_QUERY = 0;
export const VIRTIO_NET_CTRL_STATS_GET = 1;
/** Class 9: RSS contexts (not supported: ERR). */
export const VIRTNET_RSS_CTX_CTRL = 9;

/** Unicast + multicast MAC filter entries kept before overflowing to all-uni/all-multi (QEMU MAC_TABLE_ENTRIES). */
export const MAC_TABLE_ENTRIES = 64;
/** Number of VLAN ids (12 bits). */
export const MAX_VLAN = 4096;
/** Bytes of the VLAN bitmap (one bit per id). */
export const VLAN_BITMAP_BYTES = MAX_VLAN / 8;

const CLASS_NAMES: Record<number, [string, string[]]> = {
  0: ['RX', ['PROMISC', 'ALLMULTI', 'ALLUNI', 'NOMULTI', 'NOUNI', 'NOBCAST']],
  1: ['MAC', ['TABLE_SET', 'ADDR_SET']],
  2: ['VLAN', ['ADD', 'DEL']],
  3: ['ANNOUNCE', ['ACK']],
  4: ['MQ', ['VQ_PAIRS_SET', 'RSS_CONFIG', 'HASH_CONFIG']],
  5: ['GUEST_OFFLOADS', ['SET']],
  6: ['NOTF_COAL', ['TX_SET', 'RX_SET', 'VQ_SET', 'VQ_GET']],
  7: ['HASH_TUNNEL', ['SET']],
  8: ['STATS', ['QUERY', 'GET']],
  9: ['RSS_CTX', ['CAP_GET', 'ADD', 'MOD', 'DEL']],
};

/** A readable name for (class, command), e.g. `"MQ_VQ_PAIRS_SET"`, or `"class5_cmd9"`. */
export function ctrlCommandName(cls: number, cmd: number): string {
  const c = CLASS_NAMES[cls];
  if (!c) return `class${cls}_cmd${cmd}`;
  const n = c[1][cmd];
  return n ? `${c[0]}_${n}` : `${c[0]}_cmd${cmd}`;
}

// ---------------------------------------------------------------------------
// Little-endian helpers

const le16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const le32 = (b: Uint8Array, o: number): number =>
  (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v;
  b[o + 1] = v >>> 8;
};
const put32 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
};

function checkUint(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${name} = ${v} does not fit 0..${max}`);
}

// ---------------------------------------------------------------------------
// Driver-side encoders

/**
 * `[class, command, ...data]`. Throws RangeError when class or command is
 * not a u8.
 */
export function encodeCtrlCommand(cls: number, cmd: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  checkUint('class', cls, 0xff);
  checkUint('command', cmd, 0xff);
  const out = new Uint8Array(CTRL_HDR_SIZE + data.length);
  out[0] = cls;
  out[1] = cmd;
  out.set(data, CTRL_HDR_SIZE);
  return out;
}

/** VIRTIO_NET_CTRL_RX `cmd` (PROMISC … NOBCAST) with data byte 1 (on) / 0 (off). 3 bytes. */
export function encodeRxMode(cmd: number, on: boolean): Uint8Array {
  return encodeCtrlCommand(VIRTIO_NET_CTRL_RX, cmd, Uint8Array.of(on ? 1 : 0));
}

function checkMac(name: string, m: Uint8Array): void {
  if (m.length !== 6) throw new RangeError(`${name} must be 6 bytes, got ${m.length}`);
}

/**
 * VIRTIO_NET_CTRL_MAC_TABLE_SET: le32 count + 6-byte unicast MACs, then le32
 * count + 6-byte multicast MACs (offsets 2, 6, 6+6n, 10+6n). Throws
 * RangeError when an entry is not 6 bytes.
 */
export function encodeMacTableSet(unicast: readonly Uint8Array[], multicast: readonly Uint8Array[]): Uint8Array {
  const data = new Uint8Array(8 + 6 * (unicast.length + multicast.length));
  let o = 0;
  for (const [list, what] of [[unicast, 'unicast'], [multicast, 'multicast']] as const) {
    put32(data, o, list.length);
    o += 4;
    for (const m of list) {
      checkMac(`${what} MAC`, m);
      data.set(m, o);
      o += 6;
    }
  }
  return encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, data);
}

/** VIRTIO_NET_CTRL_MAC_ADDR_SET with the 6-byte MAC at offset 2. Throws RangeError unless 6 bytes. */
export function encodeMacAddrSet(mac: Uint8Array): Uint8Array {
  checkMac('MAC', mac);
  return encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, mac);
}

function encodeVlan(cmd: number, vid: number): Uint8Array {
  checkUint('VLAN id', vid, 0xffff);
  const d = new Uint8Array(2);
  put16(d, 0, vid);
  return encodeCtrlCommand(VIRTIO_NET_CTRL_VLAN, cmd, d);
}

/** VIRTIO_NET_CTRL_VLAN_ADD, le16 `vid` at offset 2. Throws RangeError unless `vid` fits a u16. */
export function encodeVlanAdd(vid: number): Uint8Array {
  return encodeVlan(VIRTIO_NET_CTRL_VLAN_ADD, vid);
}

/** VIRTIO_NET_CTRL_VLAN_DEL, le16 `vid` at offset 2. */
export function encodeVlanDel(vid: number): Uint8Array {
  return encodeVlan(VIRTIO_NET_CTRL_VLAN_DEL, vid);
}

/** VIRTIO_NET_CTRL_ANNOUNCE_ACK (no data). */
export function encodeAnnounceAck(): Uint8Array {
  return encodeCtrlCommand(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK);
}

/** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, le16 `pairs` at offset 2. Throws RangeError unless u16. */
export function encodeMqVqPairsSet(pairs: number): Uint8Array {
  checkUint('virtqueue_pairs', pairs, 0xffff);
  const d = new Uint8Array(2);
  put16(d, 0, pairs);
  return encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, d);
}

/** Fields of struct virtio_net_rss_config. Queue ids are receive queue numbers (0 = receiveq1). */
export interface RssConfigCommand {
  /** VIRTIO_NET_HASH_TYPE_* bits (u32). */
  hashTypes: number;
  /** Receive queue ids (u16 each; spec rss_rq_id = bits 1..16 of the vq index). Length ≥ 1. */
  indirectionTable: ArrayLike<number>;
  /** Receive queue id for packets without a hash (u16). */
  unclassifiedQueue: number;
  /** Number of transmit queues the driver will use; becomes the active pair count (u16). */
  maxTxVq: number;
  /** Toeplitz key, 0..255 bytes. */
  key: Uint8Array;
  /** Defaults to `indirectionTable.length - 1`; override only to build malformed commands. */
  indirectionTableMask?: number;
}

/**
 * VIRTIO_NET_CTRL_MQ_RSS_CONFIG. Data layout (offsets within the data, i.e.
 * +2 in the command): 0 le32 hash_types; 4 le16 indirection_table_mask;
 * 6 le16 unclassified_queue; 8 le16 indirection_table[T]; 8+2T le16
 * max_tx_vq; 10+2T u8 hash_key_length; 11+2T key bytes. T is
 * `indirectionTable.length`. Throws RangeError when a value does not fit its
 * field, the table is empty, or the key is longer than 255 bytes.
 */
export function encodeRssConfig(c: RssConfigCommand): Uint8Array {
  const t = c.indirectionTable.length;
  if (t < 1) throw new RangeError('indirection table must have at least one entry');
  const mask = c.indirectionTableMask ?? t - 1;
  checkUint('hash_types', c.hashTypes, 0xffff_ffff);
  checkUint('indirection_table_mask', mask, 0xffff);
  checkUint('unclassified_queue', c.unclassifiedQueue, 0xffff);
  checkUint('max_tx_vq', c.maxTxVq, 0xffff);
  checkUint('hash_key_length', c.key.length, 0xff);
  const d = new Uint8Array(11 + 2 * t + c.key.length);
  put32(d, 0, c.hashTypes);
  put16(d, 4, mask);
  put16(d, 6, c.unclassifiedQueue);
  for (let i = 0; i < t; i++) {
    const e = c.indirectionTable[i]!;
    checkUint(`indirection_table[${i}]`, e, 0xffff);
    put16(d, 8 + 2 * i, e);
  }
  put16(d, 8 + 2 * t, c.maxTxVq);
  d[10 + 2 * t] = c.key.length;
  d.set(c.key, 11 + 2 * t);
  return encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_RSS_CONFIG, d);
}

/**
 * VIRTIO_NET_CTRL_MQ_HASH_CONFIG: data 0 le32 hash_types; 4 le16
 * reserved[4] (zero); 12 u8 hash_key_length; 13 key. Throws RangeError when
 * hash_types is not a u32 or the key is longer than 255 bytes.
 */
export function encodeHashConfig(c: { hashTypes: number; key: Uint8Array }): Uint8Array {
  checkUint('hash_types', c.hashTypes, 0xffff_ffff);
  checkUint('hash_key_length', c.key.length, 0xff);
  const d = new Uint8Array(13 + c.key.length);
  put32(d, 0, c.hashTypes);
  d[12] = c.key.length;
  d.set(c.key, 13);
  return encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_HASH_CONFIG, d);
}

/**
 * VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, le64 bitmask at offset 2 (feature bit
 * numbers, with UDP tunnel GSO / GSO_CSUM at bits 46/47; see
 * `guestOffloadsFromFeatures`). Throws RangeError unless 0 ≤ offloads < 2^64.
 */
export function encodeGuestOffloadsSet(offloads: bigint): Uint8Array {
  if (offloads < 0n || offloads >= 1n << 64n) throw new RangeError('offloads must fit in 64 bits');
  const d = new Uint8Array(8);
  new DataView(d.buffer).setBigUint64(0, offloads, true);
  return encodeCtrlCommand(VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, d);
}

// ---------------------------------------------------------------------------
// Device-side state

/** Hash / steering configuration set by RSS_CONFIG or HASH_CONFIG. */
export interface RssState {
  /** Enabled VIRTIO_NET_HASH_TYPE_* bits (may be 0 when a key was given: everything unclassified). */
  hashTypes: number;
  /** Toeplitz key (1..rss_max_key_size bytes). */
  key: Uint8Array;
  /**
   * Receive queue ids (0 = receiveq1); length a power of two, index with
   * `hash & (length - 1)`. From RSS_CONFIG every entry is < the active pair
   * count it set; a later VQ_PAIRS_SET may shrink the pair count without
   * touching the table, so steering should reduce entries modulo
   * `activePairs` (as QEMU does). `[0]` for HASH_CONFIG.
   */
  indirectionTable: Uint16Array;
  /** Receive queue for packets without a computed hash. 0 for HASH_CONFIG. */
  unclassifiedQueue: number;
  /** True: steer with the table (RSS_CONFIG). False: hash for reporting only (HASH_CONFIG). */
  redirect: boolean;
}

/**
 * Device-side state the control queue manipulates. A plain object of
 * structured-clonable values (booleans, numbers, a bigint, Uint8Arrays,
 * arrays), so it can be posted to a worker. Create with
 * {@link createControlState}; change only through {@link applyControlCommand}
 * (or directly for device-initiated changes such as raising `announcePending`).
 */
export interface ControlState extends RxFilterState {
  /** Queue pairs in use (1 after reset; VQ_PAIRS_SET / RSS_CONFIG change it). */
  activePairs: number;
  /** Own MAC (6 bytes): config `mac`, then MAC_ADDR_SET. Mirror it into config space when it changes. */
  mac: Uint8Array;
  /** Unicast filter entries (6 bytes each), at most {@link MAC_TABLE_ENTRIES}; multicast + unicast likewise. */
  unicast: Uint8Array[];
  /** VLAN bitmap, {@link VLAN_BITMAP_BYTES} bytes. */
  vlans: Uint8Array;
  /** Hash/steering config, null when hashing is disabled. */
  rss: RssState | null;
  /** HASH_REPORT negotiated and hashing enabled: fill hash_value/hash_report in RX headers (else report NONE). */
  hashReport: boolean;
  /** Mirrors VIRTIO_NET_S_ANNOUNCE in config status; ANNOUNCE_ACK clears it. */
  announcePending: boolean;
  /** Enabled guest offloads (offload bitmask, see GUEST_OFFLOADS_SET). */
  guestOffloads: bigint;
}

/** The config fields the control queue needs. A full NetConfig works. */
export type CtrlDeviceConfig = Pick<
  NetConfig,
  'mac' | 'maxVirtqueuePairs' | 'rssMaxKeySize' | 'rssMaxIndirectionTableLength' | 'supportedHashTypes'
>;

/**
 * State after device reset with negotiated features `features`, like QEMU's
 * virtio_net_reset + set_features: one active pair; promiscuous ON (QEMU's
 * compatibility default — a driver with CTRL_RX turns it off; without
 * CTRL_RX it cannot, so everything is received); other RX modes off; own MAC
 * from `cfg.mac`; empty MAC tables; empty VLAN table with filtering iff
 * CTRL_VLAN; hashing off; no announce pending; guest offloads = all
 * negotiated ones. Throws RangeError when `cfg.mac` is not 6 bytes.
 */
export function createControlState(features: bigint, cfg: Pick<NetConfig, 'mac'>): ControlState {
  if (cfg.mac.length !== 6) throw new RangeError(`mac must be 6 bytes, got ${cfg.mac.length}`);
  return {
    activePairs: 1,
    promisc: true,
    allmulti: false,
    alluni: false,
    nomulti: false,
    nouni: false,
    nobcast: false,
    mac: cfg.mac.slice(),
    unicast: [],
    multicast: [],
    uniOverflow: false,
    multiOverflow: false,
    vlanFiltering: (features & VIRTIO_NET_F_CTRL_VLAN) !== 0n,
    vlans: new Uint8Array(VLAN_BITMAP_BYTES),
    rss: null,
    hashReport: false,
    announcePending: false,
    guestOffloads: guestOffloadsFromFeatures(features),
  };
}

/** A deep copy (structuredClone). */
export function cloneControlState(s: ControlState): ControlState {
  return structuredClone(s);
}

/** True when VLAN id `vid` is in bitmap `vlans`. */
export function vlanBitmapHas(vlans: Uint8Array, vid: number): boolean {
  return (vlans[vid >> 3]! & (1 << (vid & 7))) !== 0;
}

// ---------------------------------------------------------------------------
// Device-side command handling

/** Result of {@link applyControlCommand}: the ack byte to write, whether state changed, why it failed. */
export interface CtrlResult {
  ack: typeof VIRTIO_NET_OK | typeof VIRTIO_NET_ERR;
  changed: boolean;
  error?: string;
}

type Patch = Partial<ControlState>;

const RX_FIELDS = ['promisc', 'allmulti', 'alluni', 'nomulti', 'nouni', 'nobcast'] as const;

function rxCommand(cmd: number, d: Uint8Array, f: bigint): Patch | string {
  const field = RX_FIELDS[cmd];
  if (field === undefined) return `unknown RX command ${cmd}`;
  const name = ctrlCommandName(VIRTIO_NET_CTRL_RX, cmd);
  if (cmd <= VIRTIO_NET_CTRL_RX_ALLMULTI) {
    if (!(f & VIRTIO_NET_F_CTRL_RX)) return `${name} needs VIRTIO_NET_F_CTRL_RX`;
  } else if (!(f & VIRTIO_NET_F_CTRL_RX_EXTRA)) {
    return `${name} needs VIRTIO_NET_F_CTRL_RX_EXTRA`;
  }
  if (d.length !== 1) return `${name}: data must be 1 byte, got ${d.length}`;
  if (d[0]! > 1) return `${name}: value ${d[0]} is not 0 or 1`;
  const p: Patch = {};
  p[field] = d[0] === 1;
  return p;
}

function macEntries(d: Uint8Array, off: number, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) out.push(d.slice(off + 6 * i, off + 6 * i + 6));
  return out;
}

function macCommand(cmd: number, d: Uint8Array, f: bigint): Patch | string {
  if (cmd === VIRTIO_NET_CTRL_MAC_TABLE_SET) {
    if (!(f & VIRTIO_NET_F_CTRL_RX)) return 'MAC_TABLE_SET needs VIRTIO_NET_F_CTRL_RX';
    if (d.length < 4) return `MAC_TABLE_SET: ${d.length} bytes, no unicast count`;
    const nUni = le32(d, 0);
    const multiOff = 4 + 6 * nUni; // exact in doubles for any u32 count
    if (multiOff + 4 > d.length) return `MAC_TABLE_SET: ${nUni} unicast entries exceed the ${d.length}-byte data`;
    const nMulti = le32(d, multiOff);
    const end = multiOff + 4 + 6 * nMulti;
    if (end !== d.length) {
      return `MAC_TABLE_SET: ${nUni} unicast + ${nMulti} multicast entries need ${end} bytes, got ${d.length}`;
    }
    const uniOverflow = nUni > MAC_TABLE_ENTRIES;
    const inUse = uniOverflow ? 0 : nUni;
    const multiOverflow = nMulti > MAC_TABLE_ENTRIES - inUse;
    return {
      unicast: uniOverflow ? [] : macEntries(d, 4, nUni),
      multicast: multiOverflow ? [] : macEntries(d, multiOff + 4, nMulti),
      uniOverflow,
      multiOverflow,
    };
  }
  if (cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
    if (!(f & (VIRTIO_NET_F_CTRL_MAC_ADDR | VIRTIO_NET_F_CTRL_RX))) {
      return 'MAC_ADDR_SET needs VIRTIO_NET_F_CTRL_MAC_ADDR or VIRTIO_NET_F_CTRL_RX';
    }
    if (d.length !== 6) return `MAC_ADDR_SET: data must be 6 bytes, got ${d.length}`;
    return { mac: d.slice() };
  }
  return `unknown MAC command ${cmd}`;
}

function vlanCommand(cmd: number, d: Uint8Array, f: bigint, s: ControlState): Patch | string {
  if (cmd !== VIRTIO_NET_CTRL_VLAN_ADD && cmd !== VIRTIO_NET_CTRL_VLAN_DEL) return `unknown VLAN command ${cmd}`;
  const name = ctrlCommandName(VIRTIO_NET_CTRL_VLAN, cmd);
  if (!(f & VIRTIO_NET_F_CTRL_VLAN)) return `${name} needs VIRTIO_NET_F_CTRL_VLAN`;
  if (d.length !== 2) return `${name}: data must be 2 bytes, got ${d.length}`;
  const vid = le16(d, 0);
  if (vid >= MAX_VLAN) return `${name}: VLAN id ${vid} >= ${MAX_VLAN}`;
  const vlans = s.vlans.slice();
  if (cmd === VIRTIO_NET_CTRL_VLAN_ADD) vlans[vid >> 3] |= 1 << (vid & 7);
  else vlans[vid >> 3] &= ~(1 << (vid & 7));
  return { vlans };
}

function announceCommand(cmd: number, d: Uint8Array, f: bigint, s: ControlState): Patch | string {
  if (cmd !== VIRTIO_NET_CTRL_ANNOUNCE_ACK) return `unknown ANNOUNCE command ${cmd}`;
  if (!(f & VIRTIO_NET_F_GUEST_ANNOUNCE)) return 'ANNOUNCE_ACK needs VIRTIO_NET_F_GUEST_ANNOUNCE';
  if (d.length !== 0) return `ANNOUNCE_ACK: expects no data, got ${d.length} bytes`;
  // QEMU virtio_net_handle_announce: ERR unless VIRTIO_NET_S_ANNOUNCE is set.
  if (!s.announcePending) return 'ANNOUNCE_ACK: no announcement pending';
  return { announcePending: false };
}

/** Usable queue pairs: config max_virtqueue_pairs, capped at 0x8000. */
function maxPairsOf(cfg: CtrlDeviceConfig): number {
  return Math.min(cfg.maxVirtqueuePairs, VIRTIO_NET_MAX_VQ_PAIRS);
}

/**
 * RSS_CONFIG (doRss) and HASH_CONFIG (!doRss) share one layout, as in QEMU's
 * virtio_net_handle_rss: hash_config's reserved[4] sits where
 * indirection_table_mask, unclassified_queue, a 1-entry table and max_tx_vq
 * are. The reserved words are ignored (Linux puts max_tx_vq there).
 */
function rssCommand(doRss: boolean, d: Uint8Array, f: bigint, cfg: CtrlDeviceConfig, s: ControlState): Patch | string {
  const name = doRss ? 'MQ_RSS_CONFIG' : 'MQ_HASH_CONFIG';
  if (doRss && !(f & VIRTIO_NET_F_RSS)) return `${name} needs VIRTIO_NET_F_RSS`;
  if (!doRss && !(f & VIRTIO_NET_F_HASH_REPORT)) return `${name} needs VIRTIO_NET_F_HASH_REPORT`;
  if (d.length < 8) return `${name}: ${d.length} bytes, shorter than the 8-byte fixed part`;
  const hashTypes = le32(d, 0);
  const mask = le16(d, 4);
  const unclassified = doRss ? le16(d, 6) : 0;
  const tableLen = doRss ? mask + 1 : 1;
  if (doRss) {
    if (tableLen > cfg.rssMaxIndirectionTableLength) {
      return `${name}: indirection table of ${tableLen} entries > rss_max_indirection_table_length ${cfg.rssMaxIndirectionTableLength}`;
    }
    if ((tableLen & (tableLen - 1)) !== 0) return `${name}: indirection table length ${tableLen} is not a power of two`;
  }
  const trailer = 8 + 2 * tableLen;
  if (d.length < trailer + 3) return `${name}: ${d.length} bytes, too short for ${tableLen} table entries + max_tx_vq + key length`;
  const maxTxVq = le16(d, trailer);
  const keyLen = d[trailer + 2]!;
  if (d.length !== trailer + 3 + keyLen) {
    return `${name}: key of ${keyLen} bytes needs ${trailer + 3 + keyLen} data bytes, got ${d.length}`;
  }
  const pairs = doRss ? maxTxVq : s.activePairs;
  const table = new Uint16Array(tableLen);
  if (doRss) {
    const maxPairs = maxPairsOf(cfg);
    if (maxTxVq < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || maxTxVq > maxPairs) {
      return `${name}: max_tx_vq ${maxTxVq} not in 1..${maxPairs}`;
    }
    if (unclassified >= pairs) return `${name}: unclassified_queue ${unclassified} >= ${pairs} queue pairs`;
    for (let i = 0; i < tableLen; i++) {
      const q = le16(d, 8 + 2 * i);
      if (q >= pairs) return `${name}: indirection_table[${i}] = ${q} >= ${pairs} queue pairs`;
      table[i] = q;
    }
  }
  if (keyLen > cfg.rssMaxKeySize) return `${name}: key length ${keyLen} > rss_max_key_size ${cfg.rssMaxKeySize}`;
  if ((hashTypes & ~cfg.supportedHashTypes) !== 0) {
    return `${name}: hash_types 0x${hashTypes.toString(16)} not within supported 0x${(cfg.supportedHashTypes >>> 0).toString(16)}`;
  }
  if (keyLen === 0 && hashTypes !== 0) return `${name}: hash types enabled without a key`;
  const rss: RssState | null =
    keyLen === 0
      ? null // hash_types 0 and no key: hashing (and RSS steering) off, as QEMU's virtio_net_disable_rss
      : {
          hashTypes,
          key: d.slice(trailer + 3, trailer + 3 + keyLen),
          indirectionTable: table,
          unclassifiedQueue: unclassified,
          redirect: doRss,
        };
  return { rss, hashReport: rss !== null && (f & VIRTIO_NET_F_HASH_REPORT) !== 0n, activePairs: pairs };
}

function mqCommand(cmd: number, d: Uint8Array, f: bigint, cfg: CtrlDeviceConfig, s: ControlState): Patch | string {
  switch (cmd) {
    case VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: {
      if (!(f & (VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS))) return 'MQ_VQ_PAIRS_SET needs VIRTIO_NET_F_MQ or VIRTIO_NET_F_RSS';
      if (d.length !== 2) return `MQ_VQ_PAIRS_SET: data must be 2 bytes, got ${d.length}`;
      const n = le16(d, 0);
      const max = maxPairsOf(cfg);
      if (n < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || n > max) return `MQ_VQ_PAIRS_SET: ${n} pairs not in 1..${max}`;
      // Like QEMU, RSS state is kept: Linux sends VQ_PAIRS_SET with a user-configured RSS table in place.
      return { activePairs: n };
    }
    case VIRTIO_NET_CTRL_MQ_RSS_CONFIG:
      return rssCommand(true, d, f, cfg, s);
    case VIRTIO_NET_CTRL_MQ_HASH_CONFIG:
      return rssCommand(false, d, f, cfg, s);
    default:
      return `unknown MQ command ${cmd}`;
  }
}

function offloadsCommand(cmd: number, d: Uint8Array, f: bigint): Patch | string {
  if (cmd !== VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET) return `unknown GUEST_OFFLOADS command ${cmd}`;
  if (!(f & VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)) return 'GUEST_OFFLOADS_SET needs VIRTIO_NET_F_CTRL_GUEST_OFFLOADS';
  if (d.length !== 8) return `GUEST_OFFLOADS_SET: data must be 8 bytes, got ${d.length}`;
  const offloads = BigInt(le32(d, 0)) | (BigInt(le32(d, 4)) << 32n);
  const allowed = guestOffloadsFromFeatures(f);
  const bad = offloads & ~allowed;
  if (bad !== 0n) return `GUEST_OFFLOADS_SET: offloads 0x${bad.toString(16)} not negotiated`;
  return { guestOffloads: offloads };
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (ArrayBuffer.isView(a) || ArrayBuffer.isView(b)) {
    if (!(a instanceof Uint8Array || a instanceof Uint16Array) || a.constructor !== b.constructor) return false;
    const bb = b as typeof a;
    if (a.length !== bb.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== bb[i]) return false;
    return true;
  }
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => sameValue(x, b[i]));
  }
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * Handle one control command on the device side.
 *
 * `cmdBytes` is the device-readable part: u8 class, u8 command,
 * command-specific data (little-endian). `features` are the negotiated
 * features; `cfg` supplies max_virtqueue_pairs, rss_max_key_size,
 * rss_max_indirection_table_length and supported_hash_types.
 *
 * Returns `{ack: VIRTIO_NET_OK, changed}` after committing the command to
 * `state` (`changed` is false when it set what was already there), or
 * `{ack: VIRTIO_NET_ERR, changed: false, error}` with `state` untouched.
 * Never throws on malformed input. Rejected:
 *   - anything without VIRTIO_NET_F_CTRL_VQ; fewer than 2 bytes; unknown
 *     class or command; classes NOTF_COAL, HASH_TUNNEL, STATS, RSS_CTX
 *     (not supported by this device);
 *   - a command whose feature is not negotiated: RX PROMISC/ALLMULTI and
 *     MAC_TABLE_SET need CTRL_RX; ALLUNI/NOMULTI/NOUNI/NOBCAST need
 *     CTRL_RX_EXTRA; MAC_ADDR_SET needs CTRL_MAC_ADDR or CTRL_RX; VLAN needs
 *     CTRL_VLAN; ANNOUNCE_ACK needs GUEST_ANNOUNCE; VQ_PAIRS_SET needs MQ or
 *     RSS; RSS_CONFIG needs RSS; HASH_CONFIG needs HASH_REPORT;
 *     GUEST_OFFLOADS_SET needs CTRL_GUEST_OFFLOADS;
 *   - wrong data length: exactly 1 byte for RX (value 0 or 1 only), 6 for
 *     MAC_ADDR_SET, 2 for VLAN and VQ_PAIRS_SET, 0 for ANNOUNCE_ACK, 8 for
 *     GUEST_OFFLOADS_SET; MAC_TABLE_SET and RSS/HASH_CONFIG exactly as long
 *     as their counts / key length say;
 *   - VQ_PAIRS_SET outside 1..min(max_virtqueue_pairs, 0x8000);
 *     VLAN id ≥ 4096; ANNOUNCE_ACK with no announcement pending (as QEMU);
 *     GUEST_OFFLOADS_SET enabling a non-negotiated offload;
 *   - RSS_CONFIG: table length (mask+1) not a power of two or
 *     > rss_max_indirection_table_length; max_tx_vq outside
 *     1..max_virtqueue_pairs; unclassified_queue or a table entry ≥ max_tx_vq
 *     (the new active pair count); RSS/HASH_CONFIG: key longer than
 *     rss_max_key_size; hash_types outside supported_hash_types; nonzero
 *     hash_types without a key.
 *
 * Effects: MAC_TABLE_SET with more than {@link MAC_TABLE_ENTRIES} entries
 * sets `uniOverflow` / `multiOverflow` (accept all) instead of storing them,
 * as QEMU. RSS_CONFIG sets `activePairs = max_tx_vq`; HASH_CONFIG keeps it.
 * Hash types 0 with no key disables hashing (`rss = null`). MAC_ADDR_SET
 * changes `state.mac`; the caller mirrors it into config `mac`.
 */
export function applyControlCommand(
  state: ControlState,
  features: bigint,
  cfg: CtrlDeviceConfig,
  cmdBytes: Uint8Array,
): CtrlResult {
  const fail = (error: string): CtrlResult => ({ ack: VIRTIO_NET_ERR, changed: false, error });
  if (!(features & VIRTIO_NET_F_CTRL_VQ)) return fail('VIRTIO_NET_F_CTRL_VQ not negotiated');
  if (cmdBytes.length < CTRL_HDR_SIZE) return fail(`command of ${cmdBytes.length} bytes has no class/command header`);
  const cls = cmdBytes[0]!;
  const cmd = cmdBytes[1]!;
  const d = cmdBytes.subarray(CTRL_HDR_SIZE);
  let r: Patch | string;
  switch (cls) {
    case VIRTIO_NET_CTRL_RX:
      r = rxCommand(cmd, d, features);
      break;
    case VIRTIO_NET_CTRL_MAC:
      r = macCommand(cmd, d, features);
      break;
    case VIRTIO_NET_CTRL_VLAN:
      r = vlanCommand(cmd, d, features, state);
      break;
    case VIRTIO_NET_CTRL_ANNOUNCE:
      r = announceCommand(cmd, d, features, state);
      break;
    case VIRTIO_NET_CTRL_MQ:
      r = mqCommand(cmd, d, features, cfg, state);
      break;
    case VIRTIO_NET_CTRL_GUEST_OFFLOADS:
      r = offloadsCommand(cmd, d, features);
      break;
    case VIRTIO_NET_CTRL_NOTF_COAL:
    case VIRTIO_NET_CTRL_HASH_TUNNEL:
    case VIRTIO_NET_CTRL_STATS:
    case VIRTNET_RSS_CTX_CTRL:
      r = `${ctrlCommandName(cls, cmd)}: class ${cls} not supported by this device`;
      break;
    default:
      r = `unknown control class ${cls}`;
  }
  if (typeof r === 'string') return fail(r);
  let changed = false;
  for (const k of Object.keys(r) as (keyof ControlState)[]) {
    if (!sameValue(state[k], r[k])) changed = true;
  }
  Object.assign(state, r);
  return { ack: VIRTIO_NET_OK, changed };
}
