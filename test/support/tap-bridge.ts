/**
 * Test rig (worker thread): a userspace bridge between two TAPs opened with
 * IFF_VNET_HDR (12-byte header), each in its own namespace, so real Linux
 * TCP/UDP crosses it.
 *
 * A → B, mode 'soft': tap A has TUNSETOFFLOAD on (CSUM, TSO4/6, USO4/6), so
 * the kernel hands over GSO frames and partial checksums; each frame goes
 * through the device's software offload (src/net/gso.ts) and the resulting
 * plain frames are written to tap B with a zero header: the receiving
 * kernel checks every checksum and reassembles the stream.
 * Mode 'pass': frames cross unchanged, header included.
 * B → A: always unchanged.
 *
 * Counters (Float64Array over `stats`): see BridgeStat.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { pollFdsInto, readFrames, writevFrames, HostError } from '../../src/host/index.js';
import { SoftOffload, GsoError } from '../../src/net/gso.js';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../src/net/hdr.js';

export interface TapBridgeData {
  fdA: number;
  fdB: number;
  mode: 'soft' | 'pass';
  /** Int32 [stop] */
  control: SharedArrayBuffer;
  /** Float64 counters (BridgeStat) */
  stats: SharedArrayBuffer;
  /** Frames after software offload larger than this (bytes, no header) are counted in oversize. */
  maxOut: number;
}

export const BridgeStat = {
  framesA: 0, gsoTcp4: 1, gsoTcp6: 2, gsoUdpL4: 3, needsCsum: 4, segmentsOut: 5, refused: 6, oversize: 7, framesB: 8,
  largestIn: 9, writeErrors: 10,
} as const;

if (!isMainThread) run();

function run(): void {
  const d = workerData as TapBridgeData;
  const control = new Int32Array(d.control);
  const st = new Float64Array(d.stats);
  const HDR = 12;
  const SLOT = 65536 + 512;
  const N = 32;
  const inBuf = new SharedArrayBuffer(N * SLOT);
  const inU8 = new Uint8Array(inBuf);
  const offs = Float64Array.from({ length: N }, (_, i) => i * SLOT);
  const caps = new Uint32Array(N).fill(SLOT);
  const lens = new Uint32Array(N);
  const outBuf = new SharedArrayBuffer(SLOT);
  const outU8 = new Uint8Array(outBuf);
  const one = new Float64Array(1);
  const oneLen = new Uint32Array(1);
  const sw = new SoftOffload();
  const fds = Int32Array.from([d.fdA, d.fdB]);
  const rev = new Uint16Array(2);

  function write(fd: number, buf: SharedArrayBuffer, off: number, len: number): void {
    one[0] = off;
    oneLen[0] = len;
    try {
      if (writevFrames(fd, buf, one, oneLen, 1) !== 1) st[BridgeStat.writeErrors]++;
    } catch (e) {
      if (!(e instanceof HostError)) throw e;
      st[BridgeStat.writeErrors]++;
    }
  }

  while (Atomics.load(control, 0) === 0) {
    pollFdsInto(fds, 20, rev);
    // A -> B
    const na = readFrames(d.fdA, inBuf, offs, caps, lens, N);
    for (let i = 0; i < na; i++) {
      const o = offs[i], len = lens[i];
      st[BridgeStat.framesA]++;
      if (len - HDR > st[BridgeStat.largestIn]) st[BridgeStat.largestIn] = len - HDR;
      const flags = inU8[o], gso = inU8[o + 1];
      if (gso === 1) st[BridgeStat.gsoTcp4]++;
      else if (gso === 4) st[BridgeStat.gsoTcp6]++;
      else if (gso === 5) st[BridgeStat.gsoUdpL4]++;
      if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) st[BridgeStat.needsCsum]++;
      if (d.mode === 'pass' || (flags === 0 && gso === 0)) {
        write(d.fdB, inBuf, o, len);
        continue;
      }
      const h = {
        flags, gsoType: gso,
        gsoSize: inU8[o + 4] | (inU8[o + 5] << 8),
        csumStart: inU8[o + 6] | (inU8[o + 7] << 8),
        csumOffset: inU8[o + 8] | (inU8[o + 9] << 8),
      };
      try {
        sw.process(inU8, o + HDR, len - HDR, h, (b, bo, bl) => {
          if (bl > d.maxOut) st[BridgeStat.oversize]++;
          outU8.fill(0, 0, HDR);
          outU8.set(b.u8.subarray(bo, bo + bl), HDR);
          write(d.fdB, outBuf, 0, HDR + bl);
          st[BridgeStat.segmentsOut]++;
          return true;
        });
      } catch (e) {
        if (!(e instanceof GsoError)) throw e;
        st[BridgeStat.refused]++;
      }
    }
    // B -> A
    const nb = readFrames(d.fdB, inBuf, offs, caps, lens, N);
    for (let i = 0; i < nb; i++) {
      st[BridgeStat.framesB]++;
      write(d.fdA, inBuf, offs[i], lens[i]);
    }
  }
}
