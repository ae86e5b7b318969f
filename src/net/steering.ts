/**
 * Device-side receive steering (spec v1.4 §5.1.6.5.5 "Automatic receive
 * steering in multiqueue mode", §5.1.6.5.6 "Receive-side scaling"):
 *
 * 1. RSS, when the driver configured it with VIRTIO_NET_CTRL_MQ_RSS_CONFIG:
 *    Toeplitz hash of the enabled hash types, indirection table, or the
 *    unclassified queue.
 * 2. Otherwise automatic flow steering: a flow's frames go to the pair whose
 *    transmitq last carried that flow, as the spec recommends. Flows are
 *    remembered in a small table shared by all pairs' workers (a
 *    SharedArrayBuffer of u16 entries, pair + 1; 0 = unknown), indexed by a
 *    symmetric flow hash so a reply (addresses and ports swapped) finds the
 *    entry its request made. Races between workers only ever pick a stale
 *    but valid pair.
 * 3. Otherwise receiveq1.
 */
import type { Bytes } from '../virtio/copy.js';
import type { RxSteering } from './device-pair.js';
import { FlowKey, parseFlow } from './flow.js';
import { RssSteering, type RssConfig } from './rss.js';

/** Entries in the automatic flow steering table (power of two). */
export const AFS_TABLE_SIZE = 4096;

/** Decides whether the device accepts a frame (RX filtering, §5.1.6.5.1-4). */
export interface RxFilter {
  accepts(frame: Uint8Array, off: number, len: number): boolean;
}

/** Mix two 32-bit words (murmur3 finaliser over a running value). */
function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  h ^= Math.imul(k, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fold6(w: Uint32Array): number {
  return (w[0] ^ w[1] ^ w[2] ^ w[3]) | 0;
}

/**
 * Symmetric flow hash: the same for both directions of a conversation
 * (endpoints ordered before mixing). Non-IP frames hash their MAC pair.
 */
export function symmetricFlowHash(f: FlowKey, frame: Uint8Array, off: number): number {
  let a: number, b: number;
  if (f.l3 === 4) {
    a = f.src4 | 0;
    b = f.dst4 | 0;
  } else if (f.l3 === 6) {
    a = fold6(f.src6);
    b = fold6(f.dst6);
  } else {
    a = (frame[off] << 16) ^ (frame[off + 1] << 8) ^ frame[off + 2] ^ (frame[off + 3] << 24) ^ (frame[off + 4] << 4) ^ frame[off + 5];
    b = (frame[off + 6] << 16) ^ (frame[off + 7] << 8) ^ frame[off + 8] ^ (frame[off + 9] << 24) ^ (frame[off + 10] << 4) ^ frame[off + 11];
  }
  let pa = f.hasPorts ? f.srcPort : 0;
  let pb = f.hasPorts ? f.dstPort : 0;
  if (a > b || (a === b && pa > pb)) {
    const t = a; a = b; b = t;
    const u = pa; pa = pb; pb = u;
  }
  let h = mix(0x9747b28c, a);
  h = mix(h, b);
  h = mix(h, (pa << 16) | pb);
  h = mix(h, f.l4proto);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

export class DeviceSteering implements RxSteering {
  private rss: RssSteering | null = null;
  private readonly flow = new FlowKey();
  private readonly afs: Uint16Array;
  private filter: RxFilter | null = null;
  /** Active queue pairs (VQ_PAIRS_SET): steering never picks a pair beyond them. */
  activePairs: number;

  /** `afsBuffer`: the shared AFS table (AFS_TABLE_SIZE × u16), the same for every pair's instance. */
  constructor(activePairs: number, afsBuffer: SharedArrayBuffer) {
    this.activePairs = activePairs;
    this.afs = new Uint16Array(afsBuffer, 0, AFS_TABLE_SIZE);
  }

  static newAfsBuffer(): SharedArrayBuffer {
    return new SharedArrayBuffer(AFS_TABLE_SIZE * 2);
  }

  /** Install (or with null remove) the RSS configuration. @throws RangeError for an invalid table. */
  setRss(cfg: RssConfig | null): void {
    this.rss = cfg === null ? null : new RssSteering(cfg);
  }

  get rssEnabled(): boolean {
    return this.rss !== null;
  }

  /** Install (or remove) the RX filter; null accepts everything. */
  setFilter(filter: RxFilter | null): void {
    this.filter = filter;
  }

  route(src: Bytes, off: number, len: number, originPair: number): number {
    const rss = this.rss;
    const active = this.activePairs;
    if (rss !== null) {
      parseFlow(src.u8, off, len, this.flow);
      const q = rss.selectQueue(this.flow);
      return q < active ? q : q % active;
    }
    if (originPair >= 0) return originPair < active ? originPair : originPair % active;
    if (active === 1) return 0;
    parseFlow(src.u8, off, len, this.flow);
    const e = this.afs[symmetricFlowHash(this.flow, src.u8, off) & (AFS_TABLE_SIZE - 1)];
    if (e === 0) return 0;
    return e - 1 < active ? e - 1 : 0;
  }

  learnTx(src: Bytes, off: number, len: number, pair: number): void {
    parseFlow(src.u8, off, len, this.flow);
    this.afs[symmetricFlowHash(this.flow, src.u8, off) & (AFS_TABLE_SIZE - 1)] = pair + 1;
  }

  accepts(src: Bytes, off: number, len: number): boolean {
    const f = this.filter;
    return f === null || f.accepts(src.u8, off, len);
  }
}
