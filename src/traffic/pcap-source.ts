/**
 * Replays captured frames through the driver and checks they come back
 * byte-exact and in order per flow.
 *
 * The control plane prepares everything in shared memory (see
 * {@link preparePcapTraffic}): the frames packed in one buffer, the TX pair
 * the driver's queue selection chose for each, and each flow's frames in
 * capture order. A worker sends its pair's frames in capture order; on RX it
 * finds the frame's flow and compares with the next frame that flow expects.
 */
import type { Bytes } from '../virtio/copy.js';
import type { NetDriverPair } from '../net/driver-pair.js';
import type { SourceCounters, TrafficSource } from './source.js';
import { flowIdOf } from './flow-id.js';

export interface PcapTrafficSpec {
  kind: 'pcap';
  /** Number of frames. */
  count: number;
  /** All frames back to back. */
  data: SharedArrayBuffer;
  /** Int32 per frame: byte offset in data; length. */
  offsets: SharedArrayBuffer;
  lengths: SharedArrayBuffer;
  /** Int32 per frame: TX pair chosen by the driver's queue selection. */
  framePair: SharedArrayBuffer;
  /** Int32 per frame: dense flow id. */
  flowOf: SharedArrayBuffer;
  /** Int32 F+1: start of flow f's frames in flowList. */
  flowStart: SharedArrayBuffer;
  /** Int32 per frame: frame indices grouped by flow, capture order within a flow. */
  flowList: SharedArrayBuffer;
  /** Int32 per flow: frames of the flow received so far (shared by all pairs). */
  rxPos: SharedArrayBuffer;
  /** Int32 per flow: frames of the flow sent so far. */
  txPos: SharedArrayBuffer;
}

/** Pack frames and compute TX pairs and flows (main thread). */
export function preparePcapTraffic(frames: readonly Uint8Array[], selectPair: (f: Uint8Array) => number): PcapTrafficSpec {
  const n = frames.length;
  let total = 0;
  for (const f of frames) total += (f.length + 3) & ~3;
  const data = new SharedArrayBuffer(Math.max(4, total));
  const u8 = new Uint8Array(data);
  const offsets = new Int32Array(new SharedArrayBuffer(4 * n + 4));
  const lengths = new Int32Array(new SharedArrayBuffer(4 * n + 4));
  const framePair = new Int32Array(new SharedArrayBuffer(4 * n + 4));
  const flowOf = new Int32Array(new SharedArrayBuffer(4 * n + 4));
  const ids = new Map<string, number>();
  let at = 0;
  frames.forEach((f, i) => {
    u8.set(f, at);
    offsets[i] = at;
    lengths[i] = f.length;
    at += (f.length + 3) & ~3;
    framePair[i] = selectPair(f);
    const id = flowIdOf(f, 0, f.length);
    let fl = ids.get(id);
    if (fl === undefined) ids.set(id, (fl = ids.size));
    flowOf[i] = fl;
  });
  const F = ids.size;
  const flowStart = new Int32Array(new SharedArrayBuffer(4 * (F + 1)));
  for (let i = 0; i < n; i++) flowStart[flowOf[i] + 1]++;
  for (let f = 0; f < F; f++) flowStart[f + 1] += flowStart[f];
  const fill = flowStart.slice(0, F);
  const flowList = new Int32Array(new SharedArrayBuffer(4 * n + 4));
  for (let i = 0; i < n; i++) flowList[fill[flowOf[i]]++] = i;
  return {
    kind: 'pcap', count: n, data, offsets: offsets.buffer as SharedArrayBuffer, lengths: lengths.buffer as SharedArrayBuffer,
    framePair: framePair.buffer as SharedArrayBuffer, flowOf: flowOf.buffer as SharedArrayBuffer,
    flowStart: flowStart.buffer as SharedArrayBuffer, flowList: flowList.buffer as SharedArrayBuffer,
    rxPos: new SharedArrayBuffer(4 * F + 4), txPos: new SharedArrayBuffer(4 * F + 4),
  };
}

export class PcapSource implements TrafficSource {
  private readonly data: Bytes;
  private readonly offsets: Int32Array;
  private readonly lengths: Int32Array;
  private readonly framePair: Int32Array;
  private readonly flowOf: Int32Array;
  private readonly flowStart: Int32Array;
  private readonly flowList: Int32Array;
  private readonly rxPos: Int32Array;
  private readonly ids = new Map<string, number>();
  private mine: Int32Array = new Int32Array(0);
  private cursor = 0;

  constructor(spec: PcapTrafficSpec, private readonly pair: number, private readonly counters: SourceCounters) {
    this.data = { u8: new Uint8Array(spec.data), i32: new Int32Array(spec.data) };
    this.offsets = new Int32Array(spec.offsets);
    this.lengths = new Int32Array(spec.lengths);
    this.framePair = new Int32Array(spec.framePair);
    this.flowOf = new Int32Array(spec.flowOf);
    this.flowStart = new Int32Array(spec.flowStart);
    this.flowList = new Int32Array(spec.flowList);
    this.rxPos = new Int32Array(spec.rxPos);
    const n = this.flowOf.length - 1;
    for (let i = 0; i < n; i++) {
      const id = flowIdOf(this.data.u8, this.offsets[i], this.lengths[i]);
      if (!this.ids.has(id)) this.ids.set(id, this.flowOf[i]);
    }
    this.reassign();
  }

  reassign(): void {
    const n = this.framePair.length - 1;
    const mine: number[] = [];
    for (let i = 0; i < n; i++) if (this.framePair[i] === this.pair) mine.push(i);
    this.mine = Int32Array.from(mine);
    this.cursor = 0;
  }

  fill(drv: NetDriverPair, budget: number): number {
    let sent = 0;
    while (sent < budget && this.cursor < this.mine.length) {
      const i = this.mine[this.cursor];
      const len = this.lengths[i];
      if (len > drv.maxTxFrame) {
        this.cursor++; // cannot be sent in one TX buffer: counted as bad by the checker (never arrives)
        this.counters.bad();
        continue;
      }
      if (!drv.send(this.data, this.offsets[i], len)) break;
      this.cursor++;
      sent++;
    }
    return sent;
  }

  exhausted(): boolean {
    return this.cursor >= this.mine.length;
  }

  consume(src: Bytes, off: number, len: number): void {
    const flow = this.ids.get(flowIdOf(src.u8, off, len));
    if (flow === undefined) {
      this.counters.bad();
      return;
    }
    const start = this.flowStart[flow], end = this.flowStart[flow + 1];
    const pos = this.rxPos[flow];
    for (let k = start + pos; k < end; k++) {
      if (this.equal(this.flowList[k], src, off, len)) {
        if (k !== start + pos) this.counters.gap(k - start - pos);
        this.rxPos[flow] = k - start + 1;
        return;
      }
    }
    this.counters.outOfOrder(); // altered, duplicated, or arrived after a later frame of its flow
  }

  private equal(i: number, src: Bytes, off: number, len: number): boolean {
    if (this.lengths[i] !== len) return false;
    const a = this.data.u8, b = src.u8, o = this.offsets[i];
    for (let j = 0; j < len; j++) if (a[o + j] !== b[off + j]) return false;
    return true;
  }
}
