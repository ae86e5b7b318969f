/**
 * Net-layer harnesses:
 *
 * - `ctrl`: sequences of controlq commands (§5.1.6.5) under random
 *   negotiated features, as applyControlCommand gets them from a chain.
 *   A refused command leaves the state exactly as it was; an accepted one
 *   leaves it valid (active pairs within max_virtqueue_pairs, MAC 6 bytes,
 *   tables within their limits, an RSS table of a power-of-two length whose
 *   entries name existing queues); the resulting RSS config installs in
 *   DeviceSteering and steers frames only to active pairs; the RX filter
 *   built from the state answers without throwing.
 * - `frame`: the frame parser (parseFlow) and the net header reader on any
 *   bytes, at any offset/length: never throws, reads nothing outside
 *   [off, off+len) (the same result with different bytes around it), and its
 *   offsets lie inside the frame; readNetHdr throws only RangeError.
 * - `pcap`: parseCapture on any bytes: only PcapFormatError, and every
 *   frame it returns lies inside `data` with captured <= original length.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { defaultNetConfig } from '../../../src/net/config.js';
import {
  applyControlCommand, cloneControlState, createControlState, encodeCtrlCommand, encodeMacTableSet, encodeMqVqPairsSet, encodeRssConfig,
  encodeHashConfig, encodeRxMode, encodeVlanAdd, MAC_TABLE_ENTRIES, VLAN_BITMAP_BYTES, type ControlState,
} from '../../../src/net/ctrl.js';
import { VIRTIO_F_VERSION_1 } from '../../../src/virtio/features.js';
import {
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_MQ, VIRTIO_NET_F_RSS,
} from '../../../src/net/features.js';
import { FlowKey, parseFlow } from '../../../src/net/flow.js';
import { NetHdr, readNetHdr } from '../../../src/net/hdr.js';
import { DeviceSteering } from '../../../src/net/steering.js';
import { rxFilterAccepts } from '../../../src/net/rx-filter.js';
import { bytesOf } from '../../../src/virtio/copy.js';
import { PcapFormatError, parseCapture, writePcapFile } from '../../../src/netdev/pcap.js';
import { ByteSource, INTERESTING_U16 } from '../bytes.js';
import { FuzzFinding } from '../guarded.js';
import type { FuzzTarget } from '../target.js';

// ---------------------------------------------------------------------------
// ctrl

const FEATURE_BITS = [
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MQ, VIRTIO_NET_F_RSS, VIRTIO_NET_F_HASH_REPORT, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
];
const ctrlStats = { accepted: 0, refused: 0, rss: 0 };

function command(s: ByteSource): Uint8Array {
  const k = s.u8() % 10;
  switch (k) {
    case 0: return encodeRxMode(s.below(7), s.bool());
    case 1: {
      const mac = () => s.bytes(6);
      return encodeMacTableSet(Array.from({ length: s.u8() < 200 ? s.below(4) : s.below(70) }, mac), Array.from({ length: s.u8() < 200 ? s.below(4) : s.below(70) }, mac));
    }
    case 2: return encodeVlanAdd(s.u8() < 200 ? s.below(4096) : s.u16() & 0xffff);
    case 3: return encodeMqVqPairsSet(s.pick(INTERESTING_U16));
    case 4: {
      const t = s.u8() < 200 ? 1 << s.below(8) : 1 + s.below(300);
      const table = Array.from({ length: t }, () => (s.u8() < 220 ? s.below(8) : s.pick(INTERESTING_U16)));
      return encodeRssConfig({
        hashTypes: s.u8() < 200 ? s.below(0x200) : s.u32(), indirectionTable: table, unclassifiedQueue: s.u8() < 220 ? s.below(8) : s.u16(),
        maxTxVq: s.u8() < 220 ? s.below(9) : s.u16(), key: s.bytes(s.u8() < 200 ? 40 : s.below(256)),
        indirectionTableMask: s.u8() < 230 ? undefined : s.u16(),
      });
    }
    case 5: return encodeHashConfig({ hashTypes: s.u8() < 200 ? s.below(0x200) : s.u32(), key: s.bytes(s.u8() < 200 ? 40 : s.below(256)) });
    case 6: {
      // a valid command cut short or extended
      const c = command(s);
      const n = s.u8() < 128 ? Math.max(0, c.length - 1 - s.below(c.length)) : c.length + 1 + s.below(8);
      const out = new Uint8Array(n);
      out.set(c.subarray(0, n));
      return out;
    }
    default: {
      // any class/command, raw data
      const cls = s.u8() < 200 ? s.below(12) : s.u8();
      return encodeCtrlCommand(cls, s.u8() < 200 ? s.below(6) : s.u8(), s.bytes(s.below(80)));
    }
  }
}

function checkState(st: ControlState, maxPairs: number): void {
  const bad = (why: string) => new FuzzFinding(`accepted command left an invalid state: ${why}`);
  if (!(Number.isInteger(st.activePairs) && st.activePairs >= 1 && st.activePairs <= maxPairs)) throw bad(`activePairs ${st.activePairs} (max ${maxPairs})`);
  if (st.mac.length !== 6) throw bad(`mac of ${st.mac.length} bytes`);
  if (st.unicast.length + st.multicast.length > MAC_TABLE_ENTRIES) throw bad(`${st.unicast.length}+${st.multicast.length} MAC entries`);
  if ([...st.unicast, ...st.multicast].some((m) => m.length !== 6)) throw bad('a MAC entry is not 6 bytes');
  if (st.vlans.length !== VLAN_BITMAP_BYTES) throw bad(`VLAN bitmap of ${st.vlans.length} bytes`);
  if (st.rss) {
    const n = st.rss.indirectionTable.length;
    if (n < 1 || (n & (n - 1)) !== 0) throw bad(`RSS table of ${n} entries`);
    if (st.rss.redirect) {
      if (st.rss.indirectionTable.some((q) => q >= maxPairs)) throw bad('RSS table entry beyond max_virtqueue_pairs');
      if (st.rss.unclassifiedQueue >= maxPairs) throw bad(`unclassified queue ${st.rss.unclassifiedQueue}`);
    }
  }
}

const FRAME = new Uint8Array(128);

export const ctrlTarget: FuzzTarget = {
  name: 'ctrl',
  description: 'virtio-net controlq commands (applyControlCommand) and the steering/filter state they produce',
  maxLen: 1200,
  stats: ctrlStats,
  one(data) {
    const s = new ByteSource(data);
    let features = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_CTRL_VQ;
    for (const b of FEATURE_BITS) if (s.u8() < 160) features |= b;
    const maxPairs = s.pick([1, 2, 4, 8, 16, 0x8000]);
    const cfg = defaultNetConfig({ maxVirtqueuePairs: maxPairs, rssMaxKeySize: 40, rssMaxIndirectionTableLength: 128 });
    const st = createControlState(features, cfg);
    const steering = new DeviceSteering(1, DeviceSteering.newAfsBuffer());
    for (let i = 0; i < 24 && s.left > 0; i++) {
      let cmd: Uint8Array;
      try {
        cmd = command(s);
      } catch (e) {
        if (e instanceof RangeError) continue; // the encoder refused a value that does not fit its field
        throw e;
      }
      const before = cloneControlState(st);
      const r = applyControlCommand(st, features, cfg, cmd);
      if (r.ack !== 0) {
        ctrlStats.refused++;
        if (!isDeepStrictEqual(before, st)) throw new FuzzFinding(`a refused command changed the state (${r.error})`);
        continue;
      }
      ctrlStats.accepted++;
      checkState(st, maxPairs);
      steering.activePairs = st.activePairs;
      const rss = st.rss && st.rss.redirect ? st.rss : null;
      if (rss) ctrlStats.rss++;
      steering.setRss(rss ? { key: rss.key, hashTypes: rss.hashTypes, indirectionTable: rss.indirectionTable, unclassifiedQueue: rss.unclassifiedQueue } : null);
      FRAME.set(s.bytes(64));
      const b = bytesOf(FRAME.buffer);
      const q = steering.route(b, 0, 64 + s.below(64), s.u8() < 128 ? -1 : s.below(maxPairs));
      if (!(q >= 0 && q < st.activePairs)) throw new FuzzFinding(`steering picked pair ${q} of ${st.activePairs} active`);
      if (!st.promisc) void rxFilterAccepts(st, FRAME, 0, 14 + s.below(100));
    }
  },
  seeds() {
    return [
      Uint8Array.from([...new Array(12).fill(0), 3, 4, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 2, 0]),
      Uint8Array.from([...new Array(12).fill(0), 2, 0, 1, 1, 3, 0, 0, 0, 1, 2, 2, 1, 2, 3]),
    ];
  },
};

// ---------------------------------------------------------------------------
// frame

const frameStats = { ip: 0, ports: 0, hdr: 0 };
const A = new FlowKey();
const B = new FlowKey();

function sameKey(a: FlowKey, b: FlowKey): boolean {
  for (const k of Object.keys(a) as (keyof FlowKey)[]) {
    const x = a[k], y = b[k];
    if (x instanceof Uint32Array) {
      if (!isDeepStrictEqual(x, y)) return false;
    } else if (typeof x !== 'function' && x !== y) return false;
  }
  return true;
}

export const frameTarget: FuzzTarget = {
  name: 'frame',
  description: 'the frame parser (parseFlow: VLAN, IPv4, IPv6 extension headers, TCP/UDP) and the virtio-net header reader',
  maxLen: 400,
  stats: frameStats,
  one(data) {
    const s = new ByteSource(data);
    const pre = s.below(16);
    const cut = s.u8();
    const frame = s.rest();
    const len = cut < 200 ? frame.length : s.below(frame.length + 1) || frame.length - (cut & 7);
    // the frame at `pre` in two buffers whose bytes around it differ
    const b1 = new Uint8Array(pre + frame.length + 32).fill(0x00);
    const b2 = new Uint8Array(pre + frame.length + 32).fill(0xff);
    b1.set(frame, pre);
    b2.set(frame, pre);
    let r1: boolean, r2: boolean;
    try {
      r1 = parseFlow(b1, pre, len, A);
      r2 = parseFlow(b2, pre, len, B);
    } catch (e) {
      throw new FuzzFinding(`parseFlow threw: ${(e as Error).stack ?? e}`);
    }
    if (r1 !== r2 || !sameKey(A, B)) throw new FuzzFinding('parseFlow read outside [off, off+len)');
    if (r1) {
      frameStats.ip++;
      if (A.hasPorts) frameStats.ports++;
      const n = Math.max(0, Math.min(len, frame.length));
      if (A.l3Offset < 0 || A.l3Offset >= n) throw new FuzzFinding(`l3Offset ${A.l3Offset} outside a ${n}-byte frame`);
      if (A.l4Offset >= 0 && A.l4Offset > n) throw new FuzzFinding(`l4Offset ${A.l4Offset} outside a ${n}-byte frame`);
      if (A.hasPorts && A.l4Offset + 4 > n) throw new FuzzFinding(`ports read past the frame (l4Offset ${A.l4Offset}, ${n} bytes)`);
    }
    // virtio-net header at any offset/size
    const size = s.pick([10, 12, 20, 24, 32, 0, 11, 40]);
    try {
      readNetHdr(frame, pre, size, new NetHdr());
      frameStats.hdr++;
    } catch (e) {
      if (!(e instanceof RangeError)) throw new FuzzFinding(`readNetHdr threw ${(e as Error).stack ?? e}`);
    }
  },
  seeds() {
    const eth = [0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2];
    const ip4 = [0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0];
    const ip6 = [0x60, 0, 0, 0, 0, 8, 0, 64, ...new Array(15).fill(0), 1, ...new Array(15).fill(0), 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0];
    const ip6ext = [0x60, 0, 0, 0, 0, 24, 60, 64, ...new Array(15).fill(0), 1, ...new Array(15).fill(0), 2, 43, 0, 0xc9, 0x10, ...new Array(4).fill(0), 17, 2, 2, 1, 0, 0, 0, 0, ...new Array(16).fill(7), 0x30, 0x39, 0, 53, 0, 8, 0, 0];
    return [
      Uint8Array.from([0, 0, ...eth, 0x08, 0x00, ...ip4]),
      Uint8Array.from([4, 0, ...eth, 0x81, 0x00, 0, 5, 0x08, 0x00, ...ip4]),
      Uint8Array.from([0, 0, ...eth, 0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 6, 0x86, 0xdd, ...ip6]),
      Uint8Array.from([1, 0, ...eth, 0x86, 0xdd, ...ip6ext]),
      Uint8Array.from([0, 250, ...eth, 0x08, 0x00, ...ip4.slice(0, 30)]),
    ];
  },
};

// ---------------------------------------------------------------------------
// pcap

const pcapStats = { parsed: 0, frames: 0, refused: 0 };

export const pcapTarget: FuzzTarget = {
  name: 'pcap',
  description: 'the pcap / pcapng reader (parseCapture) on any bytes',
  maxLen: 4096,
  stats: pcapStats,
  one(data) {
    const stop = data.length > 0 && (data[data.length - 1] & 1) === 1;
    let cap;
    try {
      cap = parseCapture(data, { onTruncated: stop ? 'stop' : 'throw' });
    } catch (e) {
      if (e instanceof PcapFormatError) {
        pcapStats.refused++;
        return;
      }
      throw new FuzzFinding(`parseCapture threw ${(e as Error).stack ?? e}`);
    }
    pcapStats.parsed++;
    for (let i = 0; i < cap.count; i++) {
      const o = cap.offsets[i], l = cap.lengths[i];
      if (o + l > cap.data.length) throw new FuzzFinding(`frame ${i} [${o}, +${l}) outside ${cap.data.length} data bytes`);
      if (l > cap.origLengths[i]) throw new FuzzFinding(`frame ${i}: captured ${l} > original ${cap.origLengths[i]}`);
      pcapStats.frames++;
    }
  },
  seeds() {
    const file = path.join(os.tmpdir(), `vmq-fuzz-seed-${process.pid}.pcap`);
    const frames = Array.from({ length: 4 }, (_, i) => Uint8Array.from({ length: 60 + 7 * i }, (_, j) => (i * 31 + j) & 0xff));
    writePcapFile(file, frames);
    const classic = new Uint8Array(fs.readFileSync(file));
    fs.rmSync(file, { force: true });
    return [classic, pcapng(frames)];
  },
};

/** A minimal pcapng file: SHB, IDB (Ethernet), one EPB per frame (little-endian). */
function pcapng(frames: Uint8Array[]): Uint8Array {
  const blocks: number[][] = [];
  const block = (type: number, body: number[]): void => {
    while (body.length % 4) body.push(0);
    const len = 12 + body.length;
    blocks.push([...le32(type), ...le32(len), ...body, ...le32(len)]);
  };
  block(0x0a0d0d0a, [...le32(0x1a2b3c4d), 1, 0, 0, 0, ...new Array(8).fill(0xff)]);
  block(1, [1, 0, 0, 0, ...le32(65535)]);
  frames.forEach((f, i) => block(6, [...le32(0), ...le32(0), ...le32(i * 1000), ...le32(f.length), ...le32(f.length), ...f]));
  return Uint8Array.from(blocks.flat());
}

function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

