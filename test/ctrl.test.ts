import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { VIRTIO_F_VERSION_1 } from '../src/virtio/features.js';
import {
  GUEST_OFFLOAD_UDP_TUNNEL_GSO,
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_RSS,
} from '../src/net/features.js';
import { type NetConfig, defaultNetConfig } from '../src/net/config.js';
import {
  type ControlState,
  type RssConfigCommand,
  MAC_TABLE_ENTRIES,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_CTRL_HASH_TUNNEL,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_HASH_CONFIG,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_NOTF_COAL,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_ALLMULTI,
  VIRTIO_NET_CTRL_RX_ALLUNI,
  VIRTIO_NET_CTRL_RX_NOBCAST,
  VIRTIO_NET_CTRL_RX_NOMULTI,
  VIRTIO_NET_CTRL_RX_NOUNI,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_CTRL_STATS,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD,
  VIRTIO_NET_ERR,
  VIRTIO_NET_OK,
  VIRTNET_RSS_CTX_CTRL,
  applyControlCommand,
  cloneControlState,
  createControlState,
  ctrlCommandName,
  encodeAnnounceAck,
  encodeCtrlCommand,
  encodeGuestOffloadsSet,
  encodeHashConfig,
  encodeMacAddrSet,
  encodeMacTableSet,
  encodeMqVqPairsSet,
  encodeRssConfig,
  encodeRxMode,
  encodeVlanAdd,
  encodeVlanDel,
  vlanBitmapHas,
} from '../src/net/ctrl.js';
import { rxFilterAccepts } from '../src/net/rx-filter.js';

const ALL =
  VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_CTRL_VQ | VIRTIO_NET_F_CTRL_RX | VIRTIO_NET_F_CTRL_RX_EXTRA |
  VIRTIO_NET_F_CTRL_VLAN | VIRTIO_NET_F_GUEST_ANNOUNCE | VIRTIO_NET_F_MQ | VIRTIO_NET_F_CTRL_MAC_ADDR |
  VIRTIO_NET_F_RSS | VIRTIO_NET_F_HASH_REPORT | VIRTIO_NET_F_CTRL_GUEST_OFFLOADS | VIRTIO_NET_F_GUEST_CSUM |
  VIRTIO_NET_F_GUEST_TSO4;
const CFG = defaultNetConfig({ maxVirtqueuePairs: 4 }); // key ≤ 40, table ≤ 128, all 9 hash types
const KEY = Uint8Array.from({ length: 40 }, (_, i) => i * 7 + 1);
const MAC_A = Uint8Array.of(0x02, 0, 0, 0, 0, 0xa);
const MAC_B = Uint8Array.of(0x02, 0, 0, 0, 0, 0xb);
const MCAST_1 = Uint8Array.of(0x01, 0x00, 0x5e, 0, 0, 1);
const MCAST_2 = Uint8Array.of(0x33, 0x33, 0, 0, 0, 1);

const mac = (i: number, multicast = false): Uint8Array => Uint8Array.of(multicast ? 0x01 : 0x02, 0, 0, 0, i >> 8, i & 0xff);

function rss(over: Partial<RssConfigCommand> = {}): Uint8Array {
  return encodeRssConfig({
    hashTypes: 0x3f,
    indirectionTable: Array.from({ length: 8 }, (_, i) => i % 2),
    unclassifiedQueue: 0,
    maxTxVq: 2,
    key: KEY,
    ...over,
  });
}

/** Replace the le16 at data offset `o` (command offset o+2). */
function patch16(cmd: Uint8Array, o: number, v: number): Uint8Array {
  const c = cmd.slice();
  c[2 + o] = v & 0xff;
  c[3 + o] = v >> 8;
  return c;
}

function ok(s: ControlState, f: bigint, cmd: Uint8Array, cfg: NetConfig = CFG): boolean {
  const r = applyControlCommand(s, f, cfg, cmd);
  assert.equal(r.ack, VIRTIO_NET_OK, r.error);
  return r.changed;
}

/** A state with something in every field, so "unchanged" is meaningful. */
function busyState(): ControlState {
  const f = ALL;
  const s = createControlState(f, CFG);
  ok(s, f, encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, false));
  ok(s, f, encodeRxMode(VIRTIO_NET_CTRL_RX_ALLMULTI, true));
  ok(s, f, encodeMacTableSet([MAC_A], [MCAST_1]));
  ok(s, f, encodeVlanAdd(100));
  ok(s, f, rss({ indirectionTable: [0, 1, 2, 0], maxTxVq: 3 }));
  s.announcePending = true;
  return s;
}

// ---------------------------------------------------------------------------
// Encoders

test('encoders produce the spec byte layouts', () => {
  assert.deepEqual([...encodeRxMode(VIRTIO_NET_CTRL_RX_NOBCAST, true)], [0, 5, 1]);
  assert.deepEqual([...encodeMacAddrSet(MAC_A)], [1, 1, 2, 0, 0, 0, 0, 0xa]);
  assert.deepEqual([...encodeMacTableSet([MAC_A], [MCAST_1, MCAST_2])], [
    1, 0, 1, 0, 0, 0, ...MAC_A, 2, 0, 0, 0, ...MCAST_1, ...MCAST_2,
  ]);
  assert.deepEqual([...encodeVlanAdd(0x123)], [2, 0, 0x23, 0x01]);
  assert.deepEqual([...encodeVlanDel(5)], [2, 1, 5, 0]);
  assert.deepEqual([...encodeAnnounceAck()], [3, 0]);
  assert.deepEqual([...encodeMqVqPairsSet(0x0102)], [4, 0, 2, 1]);
  assert.deepEqual(
    [...encodeRssConfig({ hashTypes: 0x01020304, indirectionTable: [1, 0x0203], unclassifiedQueue: 5, maxTxVq: 6, key: Uint8Array.of(9, 8) })],
    [4, 1, 4, 3, 2, 1, /* mask */ 1, 0, /* unclassified */ 5, 0, /* table */ 1, 0, 3, 2, /* max_tx_vq */ 6, 0, /* key len */ 2, 9, 8],
  );
  assert.deepEqual([...encodeHashConfig({ hashTypes: 0x1ff, key: Uint8Array.of(7) })], [
    4, 2, 0xff, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7,
  ]);
  assert.deepEqual([...encodeGuestOffloadsSet((1n << 46n) | 3n)], [5, 0, 3, 0, 0, 0, 0, 0x40, 0, 0]);
  assert.deepEqual([...encodeCtrlCommand(9, 3, Uint8Array.of(1))], [9, 3, 1]);
});

test('encoders reject unrepresentable values', () => {
  assert.throws(() => encodeCtrlCommand(256, 0), RangeError);
  assert.throws(() => encodeMacAddrSet(new Uint8Array(5)), RangeError);
  assert.throws(() => encodeMacTableSet([new Uint8Array(7)], []), RangeError);
  assert.throws(() => encodeVlanAdd(0x10000), RangeError);
  assert.throws(() => encodeMqVqPairsSet(-1), RangeError);
  assert.throws(() => rss({ indirectionTable: [] }), RangeError);
  assert.throws(() => rss({ key: new Uint8Array(256) }), RangeError);
  assert.throws(() => rss({ indirectionTable: [0x10000] }), RangeError);
  assert.throws(() => encodeHashConfig({ hashTypes: 2 ** 32, key: KEY }), RangeError);
  assert.throws(() => encodeGuestOffloadsSet(1n << 64n), RangeError);
  assert.equal(ctrlCommandName(4, 1), 'MQ_RSS_CONFIG');
  assert.equal(ctrlCommandName(42, 1), 'class42_cmd1');
});

// ---------------------------------------------------------------------------
// Device side: rejections

interface Reject {
  name: string;
  cmd: Uint8Array;
  error: RegExp;
  features?: bigint;
  cfg?: Partial<NetConfig>;
  setup?: (s: ControlState) => void;
}

const macTable = (nUni: number, nMulti: number): Uint8Array =>
  encodeMacTableSet(Array.from({ length: nUni }, (_, i) => mac(i)), Array.from({ length: nMulti }, (_, i) => mac(i, true)));

const REJECT: Reject[] = [
  // generic
  { name: 'no CTRL_VQ', features: ALL & ~VIRTIO_NET_F_CTRL_VQ, cmd: encodeRxMode(0, true), error: /CTRL_VQ/ },
  { name: 'empty command', cmd: new Uint8Array(0), error: /header/ },
  { name: '1-byte command', cmd: Uint8Array.of(0), error: /header/ },
  { name: 'unknown class', cmd: encodeCtrlCommand(10, 0), error: /unknown control class 10/ },
  { name: 'NOTF_COAL unsupported', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_NOTF_COAL, 0, new Uint8Array(8)), error: /not supported/ },
  { name: 'HASH_TUNNEL unsupported', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_HASH_TUNNEL, 0, new Uint8Array(4)), error: /not supported/ },
  { name: 'STATS unsupported', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_STATS, 0), error: /not supported/ },
  { name: 'RSS_CTX unsupported', cmd: encodeCtrlCommand(VIRTNET_RSS_CTX_CTRL, 0), error: /not supported/ },
  // RX
  { name: 'RX unknown command', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_RX, 6, Uint8Array.of(1)), error: /unknown RX/ },
  { name: 'PROMISC without CTRL_RX', features: ALL & ~VIRTIO_NET_F_CTRL_RX, cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, true), error: /CTRL_RX/ },
  { name: 'ALLMULTI without CTRL_RX', features: ALL & ~VIRTIO_NET_F_CTRL_RX, cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_ALLMULTI, false), error: /CTRL_RX/ },
  { name: 'ALLUNI without RX_EXTRA', features: ALL & ~VIRTIO_NET_F_CTRL_RX_EXTRA, cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_ALLUNI, true), error: /CTRL_RX_EXTRA/ },
  { name: 'NOBCAST without RX_EXTRA', features: ALL & ~VIRTIO_NET_F_CTRL_RX_EXTRA, cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_NOBCAST, true), error: /CTRL_RX_EXTRA/ },
  { name: 'PROMISC no data', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC), error: /1 byte/ },
  { name: 'PROMISC 2 bytes', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, Uint8Array.of(1, 0)), error: /1 byte/ },
  { name: 'PROMISC value 2', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, Uint8Array.of(2)), error: /0 or 1/ },
  // MAC
  { name: 'TABLE_SET without CTRL_RX', features: ALL & ~VIRTIO_NET_F_CTRL_RX, cmd: macTable(1, 1), error: /CTRL_RX/ },
  { name: 'TABLE_SET no count', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, Uint8Array.of(0, 0, 0)), error: /no unicast count/ },
  { name: 'TABLE_SET unicast count beyond data', cmd: macTable(2, 0).subarray(0, 2 + 4 + 6 + 4), error: /exceed/ },
  { name: 'TABLE_SET unicast count 2^32-1', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, 0, Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0)), error: /exceed/ },
  { name: 'TABLE_SET missing multicast count', cmd: macTable(1, 0).subarray(0, 2 + 4 + 6 + 3), error: /exceed/ },
  { name: 'TABLE_SET multicast short', cmd: macTable(1, 2).subarray(0, -1), error: /need/ },
  { name: 'TABLE_SET multicast count 2^32-1', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, 0, Uint8Array.of(0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff)), error: /need/ },
  { name: 'TABLE_SET trailing byte', cmd: Uint8Array.of(...macTable(1, 1), 0), error: /need/ },
  { name: 'ADDR_SET without CTRL_MAC_ADDR/CTRL_RX', features: ALL & ~(VIRTIO_NET_F_CTRL_MAC_ADDR | VIRTIO_NET_F_CTRL_RX), cmd: encodeMacAddrSet(MAC_B), error: /CTRL_MAC_ADDR/ },
  { name: 'ADDR_SET 5 bytes', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, MAC_B.subarray(0, 5)), error: /6 bytes/ },
  { name: 'ADDR_SET 7 bytes', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, Uint8Array.of(...MAC_B, 0)), error: /6 bytes/ },
  { name: 'MAC unknown command', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MAC, 2, MAC_B), error: /unknown MAC/ },
  // VLAN
  { name: 'VLAN without CTRL_VLAN', features: ALL & ~VIRTIO_NET_F_CTRL_VLAN, cmd: encodeVlanAdd(5), error: /CTRL_VLAN/ },
  { name: 'VLAN id 4096', cmd: encodeVlanAdd(4096), error: /4096/ },
  { name: 'VLAN DEL id 0xffff', cmd: encodeVlanDel(0xffff), error: /65535/ },
  { name: 'VLAN 1 byte', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, Uint8Array.of(5)), error: /2 bytes/ },
  { name: 'VLAN 3 bytes', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, Uint8Array.of(5, 0, 0)), error: /2 bytes/ },
  { name: 'VLAN unknown command', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_VLAN, 2, Uint8Array.of(5, 0)), error: /unknown VLAN/ },
  // ANNOUNCE
  { name: 'ANNOUNCE without GUEST_ANNOUNCE', features: ALL & ~VIRTIO_NET_F_GUEST_ANNOUNCE, cmd: encodeAnnounceAck(), error: /GUEST_ANNOUNCE/ },
  { name: 'ANNOUNCE not pending', setup: (s) => { s.announcePending = false; }, cmd: encodeAnnounceAck(), error: /no announcement pending/ },
  { name: 'ANNOUNCE with data', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_ANNOUNCE, 0, Uint8Array.of(0)), error: /no data/ },
  { name: 'ANNOUNCE unknown command', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_ANNOUNCE, 1), error: /unknown ANNOUNCE/ },
  // MQ VQ_PAIRS_SET
  { name: 'VQ_PAIRS_SET without MQ/RSS', features: ALL & ~(VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS), cmd: encodeMqVqPairsSet(2), error: /VIRTIO_NET_F_MQ/ },
  { name: 'VQ_PAIRS_SET 0', cmd: encodeMqVqPairsSet(0), error: /0 pairs not in 1\.\.4/ },
  { name: 'VQ_PAIRS_SET above max_virtqueue_pairs', cmd: encodeMqVqPairsSet(5), error: /5 pairs not in 1\.\.4/ },
  { name: 'VQ_PAIRS_SET above 0x8000', cfg: { maxVirtqueuePairs: 0xffff }, cmd: encodeMqVqPairsSet(0x8001), error: /not in 1\.\.32768/ },
  { name: 'VQ_PAIRS_SET 1 byte', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2)), error: /2 bytes/ },
  { name: 'VQ_PAIRS_SET 3 bytes', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2, 0, 0)), error: /2 bytes/ },
  { name: 'MQ unknown command', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, 3, Uint8Array.of(2, 0)), error: /unknown MQ/ },
  // MQ RSS_CONFIG
  { name: 'RSS_CONFIG without RSS', features: ALL & ~VIRTIO_NET_F_RSS, cmd: rss(), error: /needs VIRTIO_NET_F_RSS/ },
  { name: 'RSS_CONFIG shorter than fixed part', cmd: rss().subarray(0, 2 + 7), error: /fixed part/ },
  { name: 'RSS_CONFIG table length 3', cmd: rss({ indirectionTable: [0, 1, 0] }), error: /power of two/ },
  { name: 'RSS_CONFIG table length 256 > 128', cmd: rss({ indirectionTable: new Array(256).fill(0) }), error: /> rss_max_indirection_table_length 128/ },
  { name: 'RSS_CONFIG table length 64 > device max 32', cfg: { rssMaxIndirectionTableLength: 32 }, cmd: rss({ indirectionTable: new Array(64).fill(0) }), error: /> rss_max_indirection_table_length 32/ },
  { name: 'RSS_CONFIG mask 0xffff', cmd: rss({ indirectionTableMask: 0xffff }), error: /65536 entries/ },
  { name: 'RSS_CONFIG mask larger than table sent', cmd: rss({ indirectionTable: [0, 1], indirectionTableMask: 15 }), error: /needs \d+ data bytes/ },
  { name: 'RSS_CONFIG mask 127 but 2 entries sent', cmd: rss({ indirectionTable: [0, 1], indirectionTableMask: 127 }), error: /too short/ },
  { name: 'RSS_CONFIG mask smaller than table sent', cmd: rss({ indirectionTable: [0, 1, 0, 1], indirectionTableMask: 1 }), error: /needs \d+ data bytes/ },
  { name: 'RSS_CONFIG no trailer', cmd: rss().subarray(0, 2 + 8 + 16 + 2), error: /too short/ },
  { name: 'RSS_CONFIG key truncated', cmd: rss().subarray(0, -1), error: /key of 40 bytes/ },
  { name: 'RSS_CONFIG trailing byte', cmd: Uint8Array.of(...rss(), 0), error: /key of 40 bytes/ },
  { name: 'RSS_CONFIG max_tx_vq 0', cmd: rss({ maxTxVq: 0 }), error: /max_tx_vq 0 not in 1\.\.4/ },
  { name: 'RSS_CONFIG max_tx_vq 5', cmd: rss({ maxTxVq: 5 }), error: /max_tx_vq 5 not in 1\.\.4/ },
  { name: 'RSS_CONFIG unclassified >= pairs', cmd: rss({ unclassifiedQueue: 2, maxTxVq: 2 }), error: /unclassified_queue 2 >= 2/ },
  { name: 'RSS_CONFIG entry >= pairs', cmd: rss({ indirectionTable: [0, 1, 2, 3], maxTxVq: 3 }), error: /indirection_table\[3\] = 3 >= 3/ },
  { name: 'RSS_CONFIG entry with reserved bit 15', cmd: rss({ indirectionTable: [0x8000, 0], maxTxVq: 4 }), error: /indirection_table\[0\] = 32768/ },
  { name: 'RSS_CONFIG key 41 > 40', cmd: rss({ key: new Uint8Array(41).fill(1) }), error: /key length 41 > rss_max_key_size 40/ },
  { name: 'RSS_CONFIG unsupported hash type', cfg: { supportedHashTypes: 0x3f }, cmd: rss({ hashTypes: 0x7f }), error: /not within supported/ },
  { name: 'RSS_CONFIG hash type bit 31', cmd: rss({ hashTypes: 0x8000_0000 }), error: /not within supported/ },
  { name: 'RSS_CONFIG hash types without key', cmd: rss({ key: new Uint8Array(0) }), error: /without a key/ },
  // MQ HASH_CONFIG
  { name: 'HASH_CONFIG without HASH_REPORT', features: ALL & ~VIRTIO_NET_F_HASH_REPORT, cmd: encodeHashConfig({ hashTypes: 1, key: KEY }), error: /HASH_REPORT/ },
  { name: 'HASH_CONFIG short', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_HASH_CONFIG, new Uint8Array(12)), error: /too short/ },
  { name: 'HASH_CONFIG key truncated', cmd: encodeHashConfig({ hashTypes: 1, key: KEY }).subarray(0, -3), error: /key of 40 bytes/ },
  { name: 'HASH_CONFIG key too long', cmd: encodeHashConfig({ hashTypes: 1, key: new Uint8Array(41) }), error: /key length 41/ },
  { name: 'HASH_CONFIG unsupported hash type', cmd: encodeHashConfig({ hashTypes: 0x200, key: KEY }), error: /not within supported/ },
  { name: 'HASH_CONFIG hash types without key', cmd: encodeHashConfig({ hashTypes: 1, key: new Uint8Array(0) }), error: /without a key/ },
  // GUEST_OFFLOADS
  { name: 'GUEST_OFFLOADS without feature', features: ALL & ~VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, cmd: encodeGuestOffloadsSet(0n), error: /CTRL_GUEST_OFFLOADS/ },
  { name: 'GUEST_OFFLOADS 7 bytes', cmd: encodeGuestOffloadsSet(0n).subarray(0, -1), error: /8 bytes/ },
  { name: 'GUEST_OFFLOADS 9 bytes', cmd: Uint8Array.of(...encodeGuestOffloadsSet(0n), 0), error: /8 bytes/ },
  { name: 'GUEST_OFFLOADS enabling TSO6 (not negotiated)', cmd: encodeGuestOffloadsSet(VIRTIO_NET_F_GUEST_TSO6), error: /not negotiated/ },
  { name: 'GUEST_OFFLOADS enabling UDP tunnel (not negotiated)', cmd: encodeGuestOffloadsSet(GUEST_OFFLOAD_UDP_TUNNEL_GSO), error: /not negotiated/ },
  { name: 'GUEST_OFFLOADS enabling bit 63', cmd: encodeGuestOffloadsSet(1n << 63n), error: /not negotiated/ },
  { name: 'GUEST_OFFLOADS unknown command', cmd: encodeCtrlCommand(VIRTIO_NET_CTRL_GUEST_OFFLOADS, 1, new Uint8Array(8)), error: /unknown GUEST_OFFLOADS/ },
];

test('controlq rejections: ERR, an error message, and no state change', async (t) => {
  for (const c of REJECT) {
    await t.test(c.name, () => {
      const f = c.features ?? ALL;
      const cfg = defaultNetConfig({ ...CFG, ...c.cfg });
      const s = busyState();
      c.setup?.(s);
      const before = cloneControlState(s);
      const r = applyControlCommand(s, f, cfg, c.cmd);
      assert.equal(r.ack, VIRTIO_NET_ERR);
      assert.equal(r.changed, false);
      assert.match(r.error ?? '', c.error);
      assert.deepEqual(s, before);
    });
  }
});

// ---------------------------------------------------------------------------
// Device side: accepted commands

interface Accept {
  name: string;
  cmd: Uint8Array;
  expect: Partial<ControlState>;
  changed: boolean;
  features?: bigint;
  fresh?: boolean; // start from createControlState instead of busyState
}

const bitmapWith = (...ids: number[]): Uint8Array => {
  const b = new Uint8Array(512);
  for (const v of ids) b[v >> 3]! |= 1 << (v & 7);
  return b;
};

const ACCEPT: Accept[] = [
  { name: 'PROMISC on', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, true), expect: { promisc: true }, changed: true },
  { name: 'PROMISC off when off', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, false), expect: {}, changed: false },
  { name: 'PROMISC off after reset', fresh: true, cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, false), expect: { promisc: false }, changed: true },
  { name: 'ALLMULTI off', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_ALLMULTI, false), expect: { allmulti: false }, changed: true },
  { name: 'ALLUNI on', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_ALLUNI, true), expect: { alluni: true }, changed: true },
  { name: 'NOMULTI on', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_NOMULTI, true), expect: { nomulti: true }, changed: true },
  { name: 'NOUNI on', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_NOUNI, true), expect: { nouni: true }, changed: true },
  { name: 'NOBCAST on', cmd: encodeRxMode(VIRTIO_NET_CTRL_RX_NOBCAST, true), expect: { nobcast: true }, changed: true },
  { name: 'TABLE_SET 2+2', cmd: encodeMacTableSet([MAC_A, MAC_B], [MCAST_1, MCAST_2]), expect: { unicast: [MAC_A, MAC_B], multicast: [MCAST_1, MCAST_2] }, changed: true },
  { name: 'TABLE_SET same as before', cmd: encodeMacTableSet([MAC_A], [MCAST_1]), expect: {}, changed: false },
  { name: 'TABLE_SET empty', cmd: encodeMacTableSet([], []), expect: { unicast: [], multicast: [] }, changed: true },
  {
    name: 'TABLE_SET 64 unicast fills the table, multicast overflows',
    cmd: macTable(64, 1),
    expect: { unicast: Array.from({ length: 64 }, (_, i) => mac(i)), multicast: [], multiOverflow: true },
    changed: true,
  },
  {
    name: 'TABLE_SET 65 unicast overflows, multicast still stored',
    cmd: macTable(65, 3),
    expect: { unicast: [], uniOverflow: true, multicast: [mac(0, true), mac(1, true), mac(2, true)] },
    changed: true,
  },
  {
    name: 'TABLE_SET 60+4 fits exactly',
    cmd: macTable(60, 4),
    expect: { unicast: Array.from({ length: 60 }, (_, i) => mac(i)), multicast: Array.from({ length: 4 }, (_, i) => mac(i, true)) },
    changed: true,
  },
  { name: 'ADDR_SET', cmd: encodeMacAddrSet(MAC_B), expect: { mac: MAC_B }, changed: true },
  { name: 'ADDR_SET with CTRL_MAC_ADDR only', features: ALL & ~VIRTIO_NET_F_CTRL_RX, cmd: encodeMacAddrSet(MAC_B), expect: { mac: MAC_B }, changed: true },
  { name: 'ADDR_SET with CTRL_RX only', features: ALL & ~VIRTIO_NET_F_CTRL_MAC_ADDR, cmd: encodeMacAddrSet(MAC_B), expect: { mac: MAC_B }, changed: true },
  { name: 'VLAN ADD 4095', cmd: encodeVlanAdd(4095), expect: { vlans: bitmapWith(100, 4095) }, changed: true },
  { name: 'VLAN ADD 0', cmd: encodeVlanAdd(0), expect: { vlans: bitmapWith(0, 100) }, changed: true },
  { name: 'VLAN ADD existing', cmd: encodeVlanAdd(100), expect: {}, changed: false },
  { name: 'VLAN DEL', cmd: encodeVlanDel(100), expect: { vlans: bitmapWith() }, changed: true },
  { name: 'VLAN DEL absent', cmd: encodeVlanDel(7), expect: {}, changed: false },
  { name: 'ANNOUNCE_ACK', cmd: encodeAnnounceAck(), expect: { announcePending: false }, changed: true },
  { name: 'VQ_PAIRS_SET max (RSS kept)', cmd: encodeMqVqPairsSet(4), expect: { activePairs: 4 }, changed: true },
  { name: 'VQ_PAIRS_SET 1', cmd: encodeMqVqPairsSet(1), expect: { activePairs: 1 }, changed: true },
  { name: 'VQ_PAIRS_SET same', cmd: encodeMqVqPairsSet(3), expect: {}, changed: false },
  { name: 'VQ_PAIRS_SET with RSS but no MQ', features: ALL & ~VIRTIO_NET_F_MQ, cmd: encodeMqVqPairsSet(2), expect: { activePairs: 2 }, changed: true },
  {
    name: 'RSS_CONFIG 128 entries, 4 pairs',
    cmd: rss({ indirectionTable: Array.from({ length: 128 }, (_, i) => i % 4), maxTxVq: 4, unclassifiedQueue: 3, hashTypes: 0x1ff }),
    expect: {
      activePairs: 4,
      rss: {
        hashTypes: 0x1ff, key: KEY, indirectionTable: Uint16Array.from({ length: 128 }, (_, i) => i % 4),
        unclassifiedQueue: 3, redirect: true,
      },
      hashReport: true,
    },
    changed: true,
  },
  {
    name: 'RSS_CONFIG 1 entry, 1 pair',
    cmd: rss({ indirectionTable: [0], maxTxVq: 1 }),
    expect: { activePairs: 1, rss: { hashTypes: 0x3f, key: KEY, indirectionTable: Uint16Array.of(0), unclassifiedQueue: 0, redirect: true } },
    changed: true,
  },
  {
    name: 'RSS_CONFIG without HASH_REPORT: no hash reporting',
    features: ALL & ~VIRTIO_NET_F_HASH_REPORT,
    cmd: rss({ indirectionTable: [1, 0], maxTxVq: 2, key: KEY.subarray(0, 1) }),
    expect: {
      activePairs: 2,
      rss: { hashTypes: 0x3f, key: KEY.slice(0, 1), indirectionTable: Uint16Array.of(1, 0), unclassifiedQueue: 0, redirect: true },
      hashReport: false,
    },
    changed: true,
  },
  { name: 'RSS_CONFIG types 0, no key: disables hashing, sets pairs', cmd: rss({ hashTypes: 0, key: new Uint8Array(0), maxTxVq: 4 }), expect: { rss: null, hashReport: false, activePairs: 4 }, changed: true },
  {
    name: 'RSS_CONFIG types 0 with key: everything unclassified',
    cmd: rss({ hashTypes: 0, indirectionTable: [0], unclassifiedQueue: 1, maxTxVq: 2 }),
    expect: { activePairs: 2, rss: { hashTypes: 0, key: KEY, indirectionTable: Uint16Array.of(0), unclassifiedQueue: 1, redirect: true } },
    changed: true,
  },
  {
    name: 'HASH_CONFIG: hash only, pairs kept, reserved words ignored (Linux puts max_tx_vq there)',
    cmd: patch16(encodeHashConfig({ hashTypes: 0x7, key: KEY }), 10, 3),
    expect: { rss: { hashTypes: 7, key: KEY, indirectionTable: Uint16Array.of(0), unclassifiedQueue: 0, redirect: false }, hashReport: true },
    changed: true,
  },
  { name: 'HASH_CONFIG 0/0 disables', cmd: encodeHashConfig({ hashTypes: 0, key: new Uint8Array(0) }), expect: { rss: null, hashReport: false }, changed: true },
  {
    name: 'HASH_CONFIG with HASH_REPORT only (no MQ/RSS)',
    features: ALL & ~(VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS),
    fresh: true,
    cmd: encodeHashConfig({ hashTypes: 0x1ff, key: KEY }),
    expect: { rss: { hashTypes: 0x1ff, key: KEY, indirectionTable: Uint16Array.of(0), unclassifiedQueue: 0, redirect: false }, hashReport: true },
    changed: true,
  },
  { name: 'GUEST_OFFLOADS all off', cmd: encodeGuestOffloadsSet(0n), expect: { guestOffloads: 0n }, changed: true },
  { name: 'GUEST_OFFLOADS CSUM only', cmd: encodeGuestOffloadsSet(VIRTIO_NET_F_GUEST_CSUM), expect: { guestOffloads: VIRTIO_NET_F_GUEST_CSUM }, changed: true },
  { name: 'GUEST_OFFLOADS unchanged', cmd: encodeGuestOffloadsSet(VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4), expect: {}, changed: false },
];

test('controlq accepted commands: OK with exactly the expected new state', async (t) => {
  for (const c of ACCEPT) {
    await t.test(c.name, () => {
      const f = c.features ?? ALL;
      const s = c.fresh ? createControlState(f, CFG) : busyState();
      const before = cloneControlState(s);
      const r = applyControlCommand(s, f, CFG, c.cmd);
      assert.equal(r.ack, VIRTIO_NET_OK, r.error);
      assert.equal(r.error, undefined);
      assert.equal(r.changed, c.changed);
      assert.deepEqual(s, { ...before, ...c.expect });
    });
  }
});

test('createControlState reset values', () => {
  const s = createControlState(ALL, CFG);
  assert.deepEqual(s, {
    activePairs: 1, promisc: true, allmulti: false, alluni: false, nomulti: false, nouni: false, nobcast: false,
    mac: CFG.mac, unicast: [], multicast: [], uniOverflow: false, multiOverflow: false, vlanFiltering: true,
    vlans: new Uint8Array(512), rss: null, hashReport: false, announcePending: false,
    guestOffloads: VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4,
  });
  assert.notEqual(s.mac, CFG.mac); // a copy
  assert.equal(createControlState(ALL & ~VIRTIO_NET_F_CTRL_VLAN, CFG).vlanFiltering, false);
  assert.deepEqual(structuredClone(s), s);
  assert.throws(() => createControlState(ALL, { mac: new Uint8Array(4) }), RangeError);
});

test('accepted commands replace values instead of mutating them (snapshots stay valid)', () => {
  const s = busyState();
  const vlans = s.vlans, uni = s.unicast, r = s.rss!;
  ok(s, ALL, encodeVlanAdd(7));
  ok(s, ALL, encodeMacTableSet([MAC_B], []));
  ok(s, ALL, rss({ indirectionTable: [1] }));
  assert.equal(vlanBitmapHas(vlans, 7), false);
  assert.equal(vlanBitmapHas(s.vlans, 7), true);
  assert.deepEqual(uni, [MAC_A]);
  assert.deepEqual([...r.indirectionTable], [0, 1, 2, 0]);
  // The stored key does not alias the command buffer.
  const cmd = encodeHashConfig({ hashTypes: 1, key: KEY });
  ok(s, ALL, cmd);
  cmd[cmd.length - 1] ^= 0xff;
  assert.deepEqual(s.rss!.key, KEY);
});

// Random and mutated commands: never throw; ERR never changes state; OK keeps invariants.
function checkInvariants(s: ControlState): void {
  assert.ok(s.activePairs >= 1 && s.activePairs <= CFG.maxVirtqueuePairs);
  assert.ok(s.unicast.length + s.multicast.length <= MAC_TABLE_ENTRIES);
  for (const m of [...s.unicast, ...s.multicast, s.mac]) assert.equal(m.length, 6);
  assert.equal(s.vlans.length, 512);
  if (s.rss) {
    const n = s.rss.indirectionTable.length;
    assert.ok(n >= 1 && n <= 128 && (n & (n - 1)) === 0);
    assert.ok(s.rss.key.length >= 1 && s.rss.key.length <= 40);
    assert.equal(s.rss.hashTypes & ~0x1ff, 0);
  }
}

const validCommands = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 5 }), fc.boolean()).map(([c, on]) => encodeRxMode(c, on)),
    fc.tuple(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 70 })).map(([u, m]) => macTable(u, m)),
    fc.uint8Array({ minLength: 6, maxLength: 6 }).map(encodeMacAddrSet),
    fc.integer({ min: 0, max: 4095 }).map(encodeVlanAdd),
    fc.integer({ min: 0, max: 4095 }).map(encodeVlanDel),
    fc.constant(encodeAnnounceAck()),
    fc.integer({ min: 1, max: 4 }).map(encodeMqVqPairsSet),
    fc.tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0x1ff }))
      .map(([lg, q, k, h]) => rss({
        indirectionTable: Array.from({ length: 1 << lg }, (_, i) => i % q), maxTxVq: q, key: KEY.subarray(0, k), hashTypes: k ? h : 0,
      })),
    fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0x1ff }))
      .map(([k, h]) => encodeHashConfig({ hashTypes: k ? h : 0, key: KEY.subarray(0, k) })),
    fc.constantFrom(0n, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4).map(encodeGuestOffloadsSet),
  );

const mutated = (): fc.Arbitrary<Uint8Array> =>
  fc.tuple(validCommands(), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 3 })).map(([c, pos, byte, how]) => {
    if (c.length === 0) return c;
    const p = pos % c.length;
    if (how === 0) { const d = c.slice(); d[p] = byte; return d; }
    if (how === 1) return c.slice(0, p);
    if (how === 2) return Uint8Array.of(...c, byte);
    return c;
  });

test('fuzz: random / mutated commands never throw, ERR leaves state untouched, OK keeps invariants', () => {
  const featureSets = fc.constantFrom(ALL, ALL & ~VIRTIO_NET_F_CTRL_RX_EXTRA, ALL & ~(VIRTIO_NET_F_MQ | VIRTIO_NET_F_RSS), ALL & ~VIRTIO_NET_F_HASH_REPORT);
  const cmd = fc.oneof(
    validCommands(),
    mutated(),
    fc.tuple(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 4 }), fc.uint8Array({ maxLength: 48 }))
      .map(([cl, cm, d]) => encodeCtrlCommand(cl, cm, d)),
  );
  fc.assert(fc.property(featureSets, fc.array(cmd, { minLength: 1, maxLength: 12 }), (f, cmds) => {
    const s = busyState();
    for (const c of cmds) {
      const before = cloneControlState(s);
      const r = applyControlCommand(s, f, CFG, c);
      if (r.ack === VIRTIO_NET_ERR) {
        assert.deepEqual(s, before);
        assert.equal(r.changed, false);
        assert.ok(r.error);
      } else {
        assert.equal(r.ack, VIRTIO_NET_OK);
        checkInvariants(s);
        let same = true;
        try { assert.deepEqual(s, before); } catch { same = false; }
        assert.equal(r.changed, !same);
      }
    }
  }), { numRuns: 400 });
});

// ---------------------------------------------------------------------------
// RX filter

const OWN = CFG.mac;
const BCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
const OTHER = Uint8Array.of(0x02, 0x11, 0x22, 0x33, 0x44, 0x55);

function frame(dst: Uint8Array, vid?: number, len = 60): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set(OTHER, 6);
  if (vid === undefined) {
    f[12] = 0x08; f[13] = 0x00;
  } else {
    f[12] = 0x81; f[13] = 0x00; f[14] = 0xe0 | (vid >> 8); f[15] = vid & 0xff; // PCP 7 must be ignored
    f[16] = 0x08; f[17] = 0x00;
  }
  return f;
}

/** State after the driver turned promisc off, with optional extra commands. */
function filterState(f: bigint, ...cmds: Uint8Array[]): ControlState {
  const s = createControlState(f, CFG);
  ok(s, f, encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, false));
  for (const c of cmds) ok(s, f, c);
  return s;
}

const accepts = (s: ControlState, fr: Uint8Array): boolean => rxFilterAccepts(s, fr, 0, fr.length);

interface FilterCase {
  name: string;
  cmds?: Uint8Array[];
  features?: bigint;
  promisc?: boolean;
  frames: [Uint8Array, boolean][];
}

const FILTER: FilterCase[] = [
  {
    name: 'reset default is promiscuous (QEMU compatibility): everything, even runts',
    promisc: true,
    frames: [[frame(OTHER), true], [frame(MCAST_1), true], [frame(OTHER, 5), true], [new Uint8Array(3), true]],
  },
  {
    name: 'own MAC and broadcast only',
    frames: [[frame(OWN), true], [frame(BCAST), true], [frame(OTHER), false], [frame(MCAST_1), false], [frame(OWN, undefined, 13), false]],
  },
  { name: 'unicast table', cmds: [encodeMacTableSet([OTHER], [])], frames: [[frame(OTHER), true], [frame(MAC_A), false], [frame(OWN), true]] },
  { name: 'multicast table', cmds: [encodeMacTableSet([], [MCAST_1])], frames: [[frame(MCAST_1), true], [frame(MCAST_2), false], [frame(OTHER), false]] },
  { name: 'ALLUNI', cmds: [encodeRxMode(VIRTIO_NET_CTRL_RX_ALLUNI, true)], frames: [[frame(OTHER), true], [frame(MCAST_1), false]] },
  {
    name: 'NOUNI beats ALLUNI and own MAC, not broadcast',
    cmds: [encodeRxMode(VIRTIO_NET_CTRL_RX_ALLUNI, true), encodeRxMode(VIRTIO_NET_CTRL_RX_NOUNI, true)],
    frames: [[frame(OTHER), false], [frame(OWN), false], [frame(BCAST), true]],
  },
  { name: 'ALLMULTI', cmds: [encodeRxMode(VIRTIO_NET_CTRL_RX_ALLMULTI, true)], frames: [[frame(MCAST_1), true], [frame(MCAST_2), true], [frame(OTHER), false]] },
  {
    name: 'NOMULTI beats ALLMULTI and the table, not broadcast',
    cmds: [encodeRxMode(VIRTIO_NET_CTRL_RX_ALLMULTI, true), encodeMacTableSet([], [MCAST_1]), encodeRxMode(VIRTIO_NET_CTRL_RX_NOMULTI, true)],
    frames: [[frame(MCAST_1), false], [frame(BCAST), true], [frame(OWN), true]],
  },
  {
    name: 'NOBCAST beats ALLMULTI',
    cmds: [encodeRxMode(VIRTIO_NET_CTRL_RX_ALLMULTI, true), encodeRxMode(VIRTIO_NET_CTRL_RX_NOBCAST, true)],
    frames: [[frame(BCAST), false], [frame(MCAST_1), true]],
  },
  { name: 'unicast overflow accepts all unicast', cmds: [macTable(65, 0)], frames: [[frame(OTHER), true], [frame(MCAST_1), false]] },
  { name: 'multicast overflow accepts all multicast', cmds: [macTable(10, 60)], frames: [[frame(MCAST_2), true], [frame(OTHER), false], [frame(mac(3)), true]] },
  { name: 'MAC_ADDR_SET moves own MAC', cmds: [encodeMacAddrSet(MAC_B)], frames: [[frame(MAC_B), true], [frame(OWN), false]] },
  {
    name: 'VLAN filtering: only listed ids; untagged pass; short tagged dropped',
    cmds: [encodeVlanAdd(100)],
    frames: [[frame(OWN, 100), true], [frame(OWN, 101), false], [frame(OWN), true], [frame(OWN, 100).subarray(0, 15), false], [frame(OTHER, 100), false]],
  },
  { name: 'VLAN filtering: empty table drops all tagged', frames: [[frame(OWN, 0), false], [frame(BCAST, 1), false], [frame(BCAST), true]] },
  {
    name: 'no CTRL_VLAN: tagged frames pass regardless',
    features: ALL & ~VIRTIO_NET_F_CTRL_VLAN,
    frames: [[frame(OWN, 4095), true], [frame(OTHER, 7), false]],
  },
  { name: 'VLAN DEL removes', cmds: [encodeVlanAdd(9), encodeVlanDel(9)], frames: [[frame(OWN, 9), false]] },
  { name: 'promiscuous ignores VLAN filter', cmds: [encodeRxMode(VIRTIO_NET_CTRL_RX_PROMISC, true)], frames: [[frame(OTHER, 5), true]] },
];

test('rxFilterAccepts cases', async (t) => {
  for (const c of FILTER) {
    await t.test(c.name, () => {
      const f = c.features ?? ALL;
      const s = c.promisc ? createControlState(f, CFG) : filterState(f, ...(c.cmds ?? []));
      c.frames.forEach(([fr, want], i) => assert.equal(accepts(s, fr), want, `frame ${i}`));
    });
  }
});

test('rxFilterAccepts honours off/len and bounds', () => {
  const s = filterState(ALL);
  const buf = new Uint8Array(100);
  buf.set(frame(OWN), 20);
  assert.equal(rxFilterAccepts(s, buf, 20, 60), true);
  assert.equal(rxFilterAccepts(s, buf, 0, 60), false); // zeros: unicast 00:00:.. not ours
  assert.equal(rxFilterAccepts(s, buf, 20, 13), false); // runt
  assert.throws(() => rxFilterAccepts(s, buf, 50, 60), RangeError);
  assert.throws(() => rxFilterAccepts(s, buf, -1, 10), RangeError);
  // Works from a worker-cloned state too.
  assert.equal(rxFilterAccepts(structuredClone(s), buf, 20, 60), true);
});
