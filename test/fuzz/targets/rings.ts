/**
 * Ring harnesses (spec v1.4 §2.7 split, §2.8 packed), one per format and half:
 *
 * - `split-device`, `packed-device`: the device half (what serve runs)
 *   against a hostile driver that writes descriptors, indirect tables,
 *   available ring / descriptor flags and event areas at will: loops, ids
 *   out of range or in flight, lengths and addresses at every region
 *   boundary (adjacent regions, the 2^32 and 2^53 edges, the top of u64),
 *   nested and odd-sized indirect tables, index jumps, wrap-counter lies.
 * - `split-driver`, `packed-driver`: the driver half against a hostile
 *   device that writes used entries (ids outstanding, never made available,
 *   out of range, twice; lengths beyond the writable part) and index jumps,
 *   mixed with an honest device over the same ring.
 *
 * After every case: no guard byte around any region changed (GuardedMemory),
 * every chain piece the device got lies inside its region, every token the
 * driver got back was outstanding and comes back once with a length within
 * its writable bytes, every exception is a typed VirtioError, and a second,
 * well-formed queue over the same guest memory still moves a buffer each way
 * (the other queues keep running).
 */
import { DescChain } from '../../../src/virtio/chain.js';
import { VirtioError } from '../../../src/virtio/errors.js';
import type { DeviceQueue, DriverQueue, QueueLayout, RingFormat } from '../../../src/virtio/queue.js';
import { contiguousQueueLayout, createDeviceQueue, createDriverQueue, queueBytes } from '../../../src/virtio/ring.js';
import { ByteSource, INTERESTING_U16, INTERESTING_U32 } from '../bytes.js';
import { FuzzFinding, GuardedMemory } from '../guarded.js';
import type { FuzzTarget } from '../target.js';

// Guest memory: R (rings, indirect tables), D and A (data; A starts where D
// ends: adjacent regions), T (ends at 2^32), H (near 2^53), C (the clean queue).
const R = 0x10000, R_SIZE = 0x40000;
const D = 0x200000, D_SIZE = 0x10000;
const A = D + D_SIZE, A_SIZE = 0x1000;
const T = 2 ** 32 - 0x10000, T_SIZE = 0x10000;
const H = 2 ** 53 - 0x20000, H_SIZE = 0x10000;
const C = 2 ** 40, C_SIZE = 0x10000;
/** Indirect tables the hostile driver may write, in R after the largest ring. */
const TABLES = [R + 0x30000, R + 0x30000 + 0x1000 - 8, R + R_SIZE - 16 * 8, D + D_SIZE - 32];
const SIZES_SPLIT = [1, 2, 4, 8, 16, 64, 256];
const SIZES_PACKED = [1, 2, 3, 5, 8, 17, 64, 255];

const BASES = [0, R, R + R_SIZE, D, A, A + A_SIZE, T, T + T_SIZE, H, H + H_SIZE, 2 ** 53, C, R + 0x30000];
const DELTAS = [0, 0, 0, 1, -1, 15, 16, -16, 17, -17, 4096, -4096, 0x7ffe];

const NEXT = 1, WRITE = 2, INDIRECT = 4;
const F_AVAIL = 1 << 7, F_USED = 1 << 15;

/** Zero what a case reads before writing: its ring, the indirect tables, the clean queue (data regions keep old bytes: harmless). */
function clearRings(g: GuardedMemory, format: RingFormat, size: number): void {
  const m = g.mem;
  m.bytes[0].u8.fill(0, m.base[0], m.base[0] + queueBytes(format, size));
  for (const t of TABLES) {
    const r = t >= D ? 1 : 0;
    const off = m.base[r] + (t - (r === 1 ? D : R));
    m.bytes[r].u8.fill(0, off, Math.min(off + 20 * 16, m.base[r] + (r === 1 ? D_SIZE : R_SIZE)));
  }
  m.bytes[5].u8.fill(0, m.base[5], m.base[5] + 0x3000);
}

function memory(): GuardedMemory {
  return new GuardedMemory([
    { gpa: R, size: R_SIZE }, { gpa: D, size: D_SIZE }, { gpa: A, size: A_SIZE },
    { gpa: T, size: T_SIZE }, { gpa: H, size: H_SIZE }, { gpa: C, size: C_SIZE },
  ]);
}

/** A descriptor address: a region edge plus a small delta, or any u64 (as [lo, hi]). */
function pickAddr(s: ByteSource): [number, number] {
  const k = s.u8();
  if (k < 16) return [s.u32(), s.u32()];
  if (k < 24) return [s.u32(), 0];
  const a = s.pick(BASES) + s.pick(DELTAS);
  if (a < 0) return [(a + 2 ** 32) >>> 0, 0xffffffff];
  return [a % 2 ** 32, Math.floor(a / 2 ** 32)];
}

function pickLen(s: ByteSource): number {
  const k = s.u8();
  if (k < 32) return s.u32();
  if (k < 96) return s.u16() & 0x1fff;
  return s.pick(INTERESTING_U32);
}

function pickIndex(s: ByteSource, size: number): number {
  return s.u8() < 224 ? s.below(size) : s.pick(INTERESTING_U16);
}

class Writer {
  private readonly b = new Uint8Array(16);
  private readonly dv = new DataView(this.b.buffer);
  constructor(private readonly g: GuardedMemory) {}
  u16(addr: number, v: number): void {
    this.dv.setUint16(0, v, true);
    this.g.mem.write(addr, this.b.subarray(0, 2));
  }
  u32(addr: number, v: number): void {
    this.dv.setUint32(0, v >>> 0, true);
    this.g.mem.write(addr, this.b.subarray(0, 4));
  }
  /** One 16-byte descriptor: split {addr, len, flags, next}, packed {addr, len, id, flags}. */
  desc(at: number, addr: [number, number], len: number, w12: number, w14: number): void {
    this.dv.setUint32(0, addr[0] >>> 0, true);
    this.dv.setUint32(4, addr[1] >>> 0, true);
    this.dv.setUint32(8, len >>> 0, true);
    this.dv.setUint16(12, w12 & 0xffff, true);
    this.dv.setUint16(14, w14 & 0xffff, true);
    this.g.mem.write(at, this.b);
  }
}

function typed(e: unknown): VirtioError {
  if (e instanceof VirtioError) return e;
  throw new FuzzFinding(`untyped error from the ring code: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
}

/** Every piece of a popped chain lies inside its own region (so no copy can leave guest memory). */
function checkChain(g: GuardedMemory, c: DescChain): void {
  const m = g.mem;
  let rb = 0, wb = 0;
  for (let i = 0; i < c.count; i++) {
    const r = c.region[i];
    if (r < 0 || r >= m.regionCount) throw new FuzzFinding(`chain piece ${i} in region ${r}`);
    const lo = m.base[r], hi = m.base[r] + (m.end[r] - m.start[r]);
    if (!(c.offset[i] >= lo && c.offset[i] + c.len[i] <= hi)) throw new FuzzFinding(`chain piece ${i} [${c.offset[i]}, +${c.len[i]}) outside region ${r} [${lo}, ${hi})`);
    if (i < c.readable) rb += c.len[i];
    else wb += c.len[i];
  }
  if (rb !== c.readableBytes || wb !== c.writableBytes) throw new FuzzFinding(`chain byte counts ${c.readableBytes}/${c.writableBytes} but pieces hold ${rb}/${wb}`);
}

const deviceStats = { split: { chains: 0, faults: 0, single: 0 }, packed: { chains: 0, faults: 0, single: 0 } };
const driverStats = { split: { reclaimed: 0, faults: 0, honest: 0 }, packed: { reclaimed: 0, faults: 0, honest: 0 } };

const SCRATCH = new Uint8Array(70000).fill(0x5a);
const SCRATCH_BYTES = { u8: SCRATCH, i32: new Int32Array(SCRATCH.buffer) };
const SINK = new Uint8Array(70000);
const SINK_BYTES = { u8: SINK, i32: new Int32Array(SINK.buffer) };

/** The well-formed queue in region C: a fresh driver/device pair must move one buffer each way after any case. */
function cleanQueueMoves(g: GuardedMemory, format: RingFormat): void {
  const layout = contiguousQueueLayout(format, C, 8);
  const buf = C + 0x2000;
  const drv = createDriverQueue(g.mem, layout, { eventIdx: true, indirect: false, inOrder: false, index: 99 });
  const dev = createDeviceQueue(g.mem, layout, { eventIdx: true, indirect: false, inOrder: false, index: 99 });
  const chain = new DescChain(g.mem, 4);
  drv.addOne(buf, 64, false, 7);
  drv.addOne(buf + 64, 64, true, 8);
  drv.publish();
  let moved = 0;
  while (dev.pending() > 0) {
    dev.pop(chain);
    chain.writeFrom(0, SCRATCH_BYTES, 0, chain.writableBytes);
    dev.pushUsed(chain.id, chain.writableBytes, chain.descs);
    moved++;
  }
  dev.publish();
  const tokens: number[] = [];
  while (drv.usedPending() > 0) {
    drv.popUsed();
    tokens.push(drv.usedToken);
  }
  if (moved !== 2 || tokens.join() !== '7,8') throw new FuzzFinding(`the clean queue did not move (device popped ${moved}, driver got ${tokens})`);
}

// ---------------------------------------------------------------------------
// device half against a hostile driver

class HostileDriver {
  readonly w: Writer;
  readonly layout: QueueLayout;
  availIdx = 0; // split: the driver's avail idx; packed: position
  wrap = 1;
  constructor(readonly g: GuardedMemory, readonly format: RingFormat, readonly size: number) {
    this.w = new Writer(g);
    this.layout = contiguousQueueLayout(format, R, size);
  }

  /** One hostile write. */
  write(s: ByteSource): void {
    const size = this.size, l = this.layout, w = this.w;
    const op = s.u8() % 12;
    if (op >= 8) {
      this.goodChain(s);
    } else if (op === 0) {
      // a descriptor in the ring / table
      const i = s.below(size);
      const flags = this.format === 'split' ? s.u8() & 7 : this.packedFlags(s);
      const next = this.format === 'split' ? pickIndex(s, size) : pickIndex(s, size);
      if (this.format === 'split') w.desc(l.descAddr + 16 * i, pickAddr(s), pickLen(s), flags, next);
      else w.desc(l.descAddr + 16 * i, pickAddr(s), pickLen(s), next, flags);
    } else if (op === 1) {
      // an indirect table entry (tables sit at odd places, one straddles nothing, one ends at D's end)
      const t = s.pick(TABLES);
      const j = s.below(20);
      if (t + 16 * j + 16 > (t >= D ? D + D_SIZE : R + R_SIZE)) return;
      const flags = s.u8() & 7;
      w.desc(t + 16 * j, pickAddr(s), pickLen(s), this.format === 'split' ? flags : pickIndex(s, size), this.format === 'split' ? pickIndex(s, size) : flags);
    } else if (op === 2) {
      // make a chain available
      if (this.format === 'split') {
        w.u16(l.driverAddr + 4 + 2 * (this.availIdx % size), pickIndex(s, size));
        this.availIdx = (this.availIdx + 1) & 0xffff;
        w.u16(l.driverAddr + 2, this.availIdx);
      } else {
        const flags = (s.u8() & 7) | (this.wrap ? F_AVAIL : F_USED);
        w.desc(l.descAddr + 16 * this.availIdx, pickAddr(s), pickLen(s), pickIndex(s, size), flags);
        if (++this.availIdx === size) {
          this.availIdx = 0;
          this.wrap ^= 1;
        }
      }
    } else if (op === 3) {
      // a well-formed chain of 1..4 buffers in D (maybe indirect), made available
      this.goodChain(s);
    } else if (op === 4) {
      // index jump / wrap lie
      if (this.format === 'split') {
        this.availIdx = s.u8() < 128 ? (this.availIdx + s.pick(INTERESTING_U16)) & 0xffff : s.u16();
        w.u16(l.driverAddr + 2, this.availIdx);
      } else {
        this.wrap ^= 1;
        if (s.bool()) this.availIdx = s.below(size);
      }
    } else if (op === 5) {
      // event / flags areas
      if (this.format === 'split') {
        if (s.bool()) w.u16(l.driverAddr, s.u16());
        else w.u16(l.driverAddr + 4 + 2 * size, s.u16());
      } else {
        w.u32(l.driverAddr, s.u32());
      }
    } else if (op === 6) {
      // the device's own area (a driver may scribble there too)
      if (this.format === 'split') w.u32(l.deviceAddr + 4 * s.below(1 + 2 * size), s.u32());
      else w.u32(l.deviceAddr, s.u32());
    } else {
      // a run of chains made available at once
      const n = 1 + s.below(size + 2);
      for (let i = 0; i < n && s.left > 0; i++) this.goodChain(s);
    }
  }

  private packedFlags(s: ByteSource): number {
    const k = s.u8() & 3;
    const low = s.u8() & 7;
    const av = k === 0 ? (this.wrap ? F_AVAIL : F_USED) : k === 1 ? (this.wrap ? F_USED : F_AVAIL) : k === 2 ? F_AVAIL | F_USED : 0;
    return low | av;
  }

  private goodChain(s: ByteSource): void {
    const size = this.size, l = this.layout, w = this.w;
    const n = 1 + s.below(4);
    const bufs: { addr: [number, number]; len: number; flags: number }[] = [];
    let writable = false;
    for (let i = 0; i < n; i++) {
      writable ||= s.u8() < 100;
      const len = 1 + s.below(2048);
      const at = D + s.below(D_SIZE + A_SIZE - len); // may cross from D into A
      bufs.push({ addr: [at, 0], len, flags: writable ? WRITE : 0 });
    }
    const indirect = s.u8() < 64;
    if (this.format === 'split') {
      const head = s.below(size);
      if (indirect) {
        const t = TABLES[0];
        bufs.forEach((b, i) => w.desc(t + 16 * i, b.addr, b.len, b.flags | (i + 1 < n ? NEXT : 0), i + 1));
        w.desc(l.descAddr + 16 * head, [t, 0], 16 * n, INDIRECT, 0);
      } else {
        let idx = head;
        bufs.forEach((b, i) => {
          const next = (idx + 1) % size;
          w.desc(l.descAddr + 16 * idx, b.addr, b.len, b.flags | (i + 1 < n ? NEXT : 0), next);
          idx = next;
        });
      }
      w.u16(l.driverAddr + 4 + 2 * (this.availIdx % size), head);
      this.availIdx = (this.availIdx + 1) & 0xffff;
      w.u16(l.driverAddr + 2, this.availIdx);
    } else {
      const id = s.below(size);
      const avail = this.wrap ? F_AVAIL : F_USED;
      if (indirect) {
        const t = TABLES[0];
        bufs.forEach((b, i) => w.desc(t + 16 * i, b.addr, b.len, 0, b.flags));
        w.desc(l.descAddr + 16 * this.availIdx, [t, 0], 16 * n, id, INDIRECT | avail);
        this.advance();
      } else {
        // descriptors after the first are written before the first one is made available (§2.8.21)
        const start = this.availIdx, startWrap = this.wrap;
        const slots: [number, number][] = [];
        for (let i = 0; i < n; i++) {
          slots.push([this.availIdx, this.wrap]);
          this.advance();
        }
        for (let i = n - 1; i >= 0; i--) {
          const b = bufs[i];
          const [pos, wr] = slots[i];
          const av = wr ? F_AVAIL : F_USED;
          if (i === 0 && (pos !== start || wr !== startWrap)) throw new Error('unreachable');
          w.desc(l.descAddr + 16 * pos, b.addr, b.len, id, b.flags | (i + 1 < n ? NEXT : 0) | av);
        }
      }
    }
  }

  private advance(): void {
    if (++this.availIdx === this.size) {
      this.availIdx = 0;
      this.wrap ^= 1;
    }
  }
}

/** One device round the way a pair worker runs it: pop, copy, push, publish; the queue stops at its first error unless `goOn`. */
function deviceRound(g: GuardedMemory, dev: DeviceQueue, chain: DescChain, s: ByteSource, popped: number[], stats: { chains: number; faults: number; single: number }): 'ok' | 'fault' {
  const single = s.u8() < 64;
  const limit = 2 * dev.size + 2;
  for (let i = 0; i < limit; i++) {
    try {
      if (single) {
        const r = dev.popSingle(s.bool() ? WRITE : 0, s.below(64));
        if (r === -2) break;
        if (r >= 0) {
          const m = g.mem;
          const lo = m.base[r], hi = lo + (m.end[r] - m.start[r]);
          if (!(dev.singleOff >= lo && dev.singleOff + dev.singleLen <= hi)) throw new FuzzFinding(`popSingle [${dev.singleOff}, +${dev.singleLen}) outside region ${r}`);
          popped.push(dev.singleId, dev.singleLen, 1);
          stats.single++;
          continue;
        }
      }
      if (dev.pending() === 0) break;
      dev.pop(chain);
    } catch (e) {
      typed(e);
      stats.faults++;
      return 'fault';
    }
    checkChain(g, chain);
    const want = Math.min(chain.writableBytes, SCRATCH.length);
    const wrote = chain.writeFrom(0, SCRATCH_BYTES, 0, want);
    if (wrote !== want) throw new FuzzFinding(`writeFrom wrote ${wrote} of ${want} writable bytes`);
    const got = chain.readTo(SINK_BYTES, 0, 0, Math.min(chain.readableBytes, SINK.length));
    if (got !== Math.min(chain.readableBytes, SINK.length)) throw new FuzzFinding(`readTo read ${got} of ${chain.readableBytes} readable bytes`);
    popped.push(chain.id, wrote, chain.descs);
    stats.chains++;
  }
  return 'ok';
}

function deviceTarget(format: RingFormat): FuzzTarget {
  let g: GuardedMemory;
  return {
    name: `${format}-device`,
    description: `the ${format} ring's device half against hostile driver memory`,
    stats: deviceStats[format],
    maxLen: 600,
    setup() {
      g = memory();
    },
    one(data) {
      const s = new ByteSource(data);
      const size = s.pick(format === 'split' ? SIZES_SPLIT : SIZES_PACKED);
      clearRings(g, format, size);
      const opts = { eventIdx: s.bool(), indirect: s.u8() < 200, inOrder: s.u8() < 64, index: 1 };
      const goOn = s.u8() < 64; // keep using the queue after an error (the API says the chain is consumed)
      const drv = new HostileDriver(g, format, size);
      const dev = createDeviceQueue(g.mem, drv.layout, opts);
      const chain = new DescChain(g.mem, 2);
      const popped: number[] = []; // id, len, descs triples not yet pushed
      let faulted = false;
      let mark = -1;
      for (let ops = 0; ops < 64 && s.left > 0 && !faulted; ops++) {
        const op = s.u8();
        if (op < 150) drv.write(s);
        else if (op < 200) {
          if (deviceRound(g, dev, chain, s, popped, deviceStats[format]) === 'fault') {
            faulted = !goOn;
            mark = -1;
          }
        } else if (op < 220) {
          // push what was popped (in order), publish
          const n = s.below(popped.length / 3 + 1);
          for (let i = 0; i < n; i++) {
            const [id, len, descs] = popped.splice(0, 3);
            dev.pushUsed(id, len, descs);
            mark = -1;
          }
          dev.publish();
        } else if (op < 230) {
          dev.setNotification(s.bool());
        } else if (op < 240) {
          // mark with nothing popped; rewind gives back what was popped since (none of it pushed)
          if (mark >= 0 && s.bool()) {
            try {
              dev.rewind(mark);
              popped.length = 0;
            } catch (e) {
              typed(e);
              deviceStats[format].faults++;
              faulted = !goOn;
            }
            mark = -1;
          } else if (popped.length === 0) mark = dev.mark();
        } else if (op < 248) {
          try {
            dev.setState({ avail: s.u16(), used: s.u16() });
            popped.length = 0;
            mark = -1;
          } catch (e) {
            typed(e);
          }
        } else {
          void dev.state();
        }
      }
      // A stopped queue's in-flight chains are what GET_VRING_BASE reports; nothing to push after a fault.
      if (!faulted) {
        while (popped.length > 0) {
          const [id, len, descs] = popped.splice(0, 3);
          dev.pushUsed(id, len, descs);
        }
        dev.publish();
      }
      cleanQueueMoves(g, format);
      g.check();
    },
    seeds() {
      // a few well-formed programs: sizes, a run of good chains, a round, a push
      const out: Uint8Array[] = [];
      for (let k = 0; k < 8; k++) {
        const b: number[] = [k, 1, k < 4 ? 250 : 10, 200];
        for (let i = 0; i < 6; i++) b.push(10, 3, 1 + i, 30 * i, 1, i * 7, 0, 200 - i, 0);
        b.push(160, 0, 210, 255);
        b.push(0, 7, 5, ...Array.from({ length: 40 }, (_, i) => (i * 37 + k) & 0xff), 160, 0, 210, 255);
        out.push(Uint8Array.from(b));
      }
      return out;
    },
  };
}

// ---------------------------------------------------------------------------
// driver half against a hostile device

function driverTarget(format: RingFormat): FuzzTarget {
  let g: GuardedMemory;
  return {
    name: `${format}-driver`,
    description: `the ${format} ring's driver half against a hostile device`,
    stats: driverStats[format],
    maxLen: 600,
    setup() {
      g = memory();
    },
    one(data) {
      const s = new ByteSource(data);
      const size = s.pick(format === 'split' ? SIZES_SPLIT : SIZES_PACKED);
      clearRings(g, format, size);
      const opts = { eventIdx: s.bool(), indirect: s.u8() < 128, inOrder: s.u8() < 64, index: 0 };
      const layout = contiguousQueueLayout(format, R, size);
      const drv: DriverQueue = createDriverQueue(g.mem, layout, opts);
      const honest: DeviceQueue = createDeviceQueue(g.mem, layout, opts);
      const chain = new DescChain(g.mem, 4);
      const w = new Writer(g);
      /** token -> writable bytes, for chains outstanding. */
      const outstanding = new Map<number, number>();
      const ids: number[] = [];
      let nextToken = 1;
      let usedIdx = 0, usedPos = 0, usedWrap = 1; // the hostile device's own cursor
      let faulted = false;
      let honestOk = true;
      for (let ops = 0; ops < 64 && s.left > 0 && !faulted; ops++) {
        const op = s.u8() % 8;
        if (op === 0 || op === 1) {
          // add a chain of 1..3 buffers in D (readable first), maybe indirect
          const n = 1 + s.below(Math.min(3, size));
          const bufs = [];
          let wr = false, wb = 0;
          for (let i = 0; i < n; i++) {
            wr ||= s.bool();
            const len = 1 + s.below(512);
            bufs.push({ addr: D + 1024 * i, len, writable: wr });
            if (wr) wb += len;
          }
          const token = nextToken++;
          const ind = opts.indirect && s.u8() < 80 ? TABLES[0] : undefined;
          if (drv.numFree < (ind !== undefined ? 1 : n)) continue;
          const id = drv.add(bufs, token, ind);
          if (id < 0) continue;
          outstanding.set(token, wb);
          ids.push(id);
          if (s.u8() < 200) drv.publish();
        } else if (op === 2 || op === 3) {
          // a hostile used entry
          const id = s.u8() < 160 && ids.length > 0 ? s.pick(ids) : s.u8() < 128 ? s.below(size + 2) : s.pick(INTERESTING_U16);
          const len = s.u8() < 128 ? s.below(1600) : s.pick(INTERESTING_U32);
          if (format === 'split') {
            w.u32(layout.deviceAddr + 4 + 8 * (usedIdx % size), id);
            w.u32(layout.deviceAddr + 8 + 8 * (usedIdx % size), len);
            usedIdx = (usedIdx + (s.u8() < 240 ? 1 : s.pick(INTERESTING_U16))) & 0xffff;
            w.u16(layout.deviceAddr + 2, usedIdx);
          } else {
            const k = s.u8() & 3;
            const flags = k === 0 ? (usedWrap ? F_AVAIL | F_USED : 0) : k === 1 ? (usedWrap ? 0 : F_AVAIL | F_USED) : k === 2 ? F_AVAIL : F_USED;
            w.desc(layout.descAddr + 16 * usedPos, [s.u32(), 0], len, id, flags | (s.u8() & 7));
            usedPos += s.u8() < 230 ? 1 : s.below(size + 1);
            if (usedPos >= size) {
              usedPos %= size;
              usedWrap ^= 1;
            }
            if (s.u8() < 8) usedWrap ^= 1;
          }
        } else if (op === 4 || op === 5) {
          // the driver reclaims
          try {
            for (let i = 0; i < 2 * size + 2 && drv.usedPending() > 0; i++) {
              drv.popUsed();
              const token = drv.usedToken;
              const wb = outstanding.get(token);
              if (wb === undefined) throw new FuzzFinding(`popUsed returned token ${token}, which is not outstanding`);
              if (drv.usedLen > wb) throw new FuzzFinding(`popUsed returned len ${drv.usedLen} for a chain with ${wb} writable bytes`);
              outstanding.delete(token);
              driverStats[format].reclaimed++;
            }
          } catch (e) {
            if (e instanceof FuzzFinding) throw e;
            typed(e);
            driverStats[format].faults++;
            faulted = s.u8() < 200;
          }
        } else if (op === 6) {
          // an honest device round over the same ring (it keeps its own cursor; the hostile writes may confuse it: typed errors only)
          if (!honestOk) continue;
          try {
            for (let i = 0; i < size && honest.pending() > 0; i++) {
              honest.pop(chain);
              checkChain(g, chain);
              honest.pushUsed(chain.id, Math.min(chain.writableBytes, s.below(600)), chain.descs);
              driverStats[format].honest++;
            }
            honest.publish();
          } catch (e) {
            typed(e);
            honestOk = false;
          }
        } else {
          drv.setNotification(s.bool());
          void drv.state();
        }
      }
      cleanQueueMoves(g, format);
      g.check();
    },
    seeds() {
      const out: Uint8Array[] = [];
      for (let k = 0; k < 6; k++) {
        const b: number[] = [k, 1, 0, 0];
        for (let i = 0; i < 5; i++) b.push(0, 1, 0, 10 * i, 1, 20, 0, 0);
        b.push(6, 6, 4, 2, 200, 0, 0, 10, 0, 0, 4);
        out.push(Uint8Array.from(b));
      }
      return out;
    },
  };
}

export const ringTargets: FuzzTarget[] = [deviceTarget('split'), deviceTarget('packed'), driverTarget('split'), driverTarget('packed')];

// keep queueBytes referenced for layout sanity: the largest ring fits below the tables
if (queueBytes('split', 256) > 0x30000 || queueBytes('packed', 255) > 0x30000) throw new Error('ring region too small');
