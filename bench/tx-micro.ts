/**
 * Development probe: the driver-side CPU cost of the attach TX path per
 * frame, with no peer. One thread runs the driver loop's TX half (bench
 * source fill, publish, reclaim) against a stand-in device that completes
 * every published chain at once, in order, the way DPDK's vhost does (one
 * used element per chain for split, one used descriptor per batch with
 * in-order packed). Prints ns per frame per ring variant.
 *
 *   node dist/bench/tx-micro.js [--ring split|packed] [--in-order 1|0] [--frames 20000000] [--budget 64]
 */
import { GuestMemory } from '../src/virtio/memory.js';
import { createDriverQueue, contiguousQueueLayout, queueBytes } from '../src/virtio/ring.js';
import { NetDriverPair } from '../src/net/driver-pair.js';
import { BenchSource, benchTraffic } from '../src/traffic/bench-source.js';
import { DRV_STAT_COUNT } from '../src/net/stats.js';

const args = process.argv.slice(2);
const opt = (n: string, d: number) => (args.indexOf(n) >= 0 ? Number(args[args.indexOf(n) + 1]) : d);
const frames = opt('--frames', 20_000_000);
const budget = opt('--budget', 64);
const size = 1024;

/** One driver pair over a fresh guest memory: 1024-entry rings, 2176-byte buffers at 0x10000000 and up. */
function rig(format: 'split' | 'packed', inOrder: boolean, mrgRxbuf: boolean) {
  const stride = 2176;
  const ringBytes = 2 * queueBytes(format, size) + 4096;
  const total = ringBytes + 2 * size * stride + 65536;
  const sab = new SharedArrayBuffer(total);
  const mem = new GuestMemory([{ guestPhysAddr: 0x10000000, size: total, buffer: sab }]);
  const rxL = contiguousQueueLayout(format, 0x10000000, size);
  const txL = contiguousQueueLayout(format, 0x10000000 + Math.ceil(queueBytes(format, size) / 64) * 64 + 64, size);
  const opts = { eventIdx: false, indirect: false, inOrder };
  const rxq = createDriverQueue(mem, rxL, { ...opts, index: 0 });
  const txq = createDriverQueue(mem, txL, { ...opts, index: 1 });
  const stats = new Float64Array(DRV_STAT_COUNT);
  const base = 0x10000000 + ringBytes;
  const drv = new NetDriverPair(mem, rxq, txq, stats, 0, { pair: 0, hdrLen: 12, mrgRxbuf, txBufAddr: base, txBufSize: stride, rxBufAddr: base + size * stride, rxBufSize: stride });
  const src = new BenchSource(benchTraffic(64, false), 0, { bad() {}, outOfOrder() {}, gap() {} });
  return { sab, mem, rxL, txL, rxq, txq, stats, drv, src };
}

function run(format: 'split' | 'packed', inOrder: boolean): number {
  const { sab, txL, txq, drv, src } = rig(format, inOrder, false);
  // Stand-in device: views of the tx ring's device side.
  const u8 = new Uint8Array(sab);
  const dv = new DataView(sab);
  const off = (a: number) => a - 0x10000000;
  let devAvail = 0; // split: next avail idx to consume; packed: next slot
  let devWrap = 1;
  const device = () => {
    if (format === 'split') {
      const availIdx = dv.getUint16(off(txL.driverAddr) + 2, true);
      let used = dv.getUint16(off(txL.deviceAddr) + 2, true);
      while (devAvail !== availIdx) {
        const id = dv.getUint16(off(txL.driverAddr) + 4 + 2 * (devAvail & (size - 1)), true);
        const e = off(txL.deviceAddr) + 4 + 8 * (used & (size - 1));
        dv.setUint32(e, id, true);
        dv.setUint32(e + 4, 0, true);
        used = (used + 1) & 0xffff;
        devAvail = (devAvail + 1) & 0xffff;
      }
      Atomics.store(new Uint16Array(sab, off(txL.deviceAddr), 2), 1, used);
    } else {
      // packed, one used descriptor per batch (in-order) or per chain
      const d = off(txL.descAddr);
      let lastId = -1, first = devAvail, firstWrap = devWrap, n = 0;
      for (;;) {
        const flags = dv.getUint16(d + 16 * devAvail + 14, true);
        const avail = (flags >> 7) & 1, usedF = (flags >> 15) & 1;
        if (avail !== devWrap || usedF === devWrap) break;
        lastId = dv.getUint16(d + 16 * devAvail + 12, true);
        if (!inOrder) dv.setUint16(d + 16 * devAvail + 14, devWrap ? 0x8080 : 0, true);
        n++;
        if (++devAvail === size) { devAvail = 0; devWrap ^= 1; }
      }
      if (inOrder && n > 0) {
        dv.setUint16(d + 16 * first + 12, lastId, true);
        dv.setUint16(d + 16 * first + 14, firstWrap ? 0x8080 : 0, true);
      }
    }
  };
  let sent = 0;
  const c0 = process.cpuUsage();
  let devTime = 0n;
  while (sent < frames) {
    if (sent === 0 || txq.numFree < budget) drv.reclaimTx();
    const n = src.fill(drv, budget);
    sent += n;
    drv.flushTx();
    if (txq.numFree < budget) {
      const a = process.hrtime.bigint();
      device();
      devTime += process.hrtime.bigint() - a;
    }
  }
  const c = process.cpuUsage(c0);
  // CPU time (the machine is shared: wall time would count other processes' slices).
  const ns = ((c.user + c.system) * 1000 - Number(devTime)) / sent;
  void u8;
  return ns;
}

/**
 * --rx: the receive side instead: the stand-in device fills every available
 * RX buffer with a 64-byte frame (header num_buffers 1) and marks it used in
 * order, one used element / descriptor per buffer (as DPDK's vhost does on
 * enqueue); the driver runs pollRx with the bench source's consumer
 * (reads the sequence number) and publishes the recycled buffers.
 */
function runRx(format: 'split' | 'packed', inOrder: boolean): number {
  const { sab, rxL, drv, src } = rig(format, inOrder, true);
  const consume = (b: Parameters<typeof src.consume>[0], o: number, l: number) => src.consume(b, o, l);
  drv.refillRx();
  drv.flushRx();
  const dv = new DataView(sab);
  const off = (a: number) => a - 0x10000000;
  let devAvail = 0, devWrap = 1, usedIdx = 0;
  const device = () => {
    if (format === 'split') {
      const availIdx = dv.getUint16(off(rxL.driverAddr) + 2, true);
      while (devAvail !== availIdx) {
        const id = dv.getUint16(off(rxL.driverAddr) + 4 + 2 * (devAvail & (size - 1)), true);
        const addr = dv.getUint32(off(rxL.descAddr) + 16 * id, true) + 0x10000000 * dv.getUint32(off(rxL.descAddr) + 16 * id + 4, true);
        dv.setUint16(off(addr) + 10, 1, true);
        const e = off(rxL.deviceAddr) + 4 + 8 * (usedIdx & (size - 1));
        dv.setUint32(e, id, true);
        dv.setUint32(e + 4, 76, true);
        usedIdx = (usedIdx + 1) & 0xffff;
        devAvail = (devAvail + 1) & 0xffff;
      }
      Atomics.store(new Uint16Array(sab, off(rxL.deviceAddr), 2), 1, usedIdx);
    } else {
      const d = off(rxL.descAddr);
      for (;;) {
        const flags = dv.getUint16(d + 16 * devAvail + 14, true);
        const avail = (flags >> 7) & 1, usedF = (flags >> 15) & 1;
        if (avail !== devWrap || usedF === devWrap) break;
        const addr = dv.getUint32(d + 16 * devAvail, true) + 0x10000000 * dv.getUint32(d + 16 * devAvail + 4, true);
        dv.setUint16(off(addr) + 10, 1, true);
        dv.setUint32(d + 16 * devAvail + 8, 76, true);
        dv.setUint16(d + 16 * devAvail + 14, devWrap ? 0x8080 | 0x2 : 0x2, true);
        if (++devAvail === size) { devAvail = 0; devWrap ^= 1; }
      }
    }
  };
  let got = 0;
  const c0 = process.cpuUsage();
  let devTime = 0n;
  while (got < frames) {
    const a = process.hrtime.bigint();
    device();
    devTime += process.hrtime.bigint() - a;
    for (let r = 0; r < 16; r++) {
      const n = drv.pollRx(budget, consume);
      if (n === 0) break;
      got += n;
      drv.flushRx();
    }
  }
  const c = process.cpuUsage(c0);
  return ((c.user + c.system) * 1000 - Number(devTime)) / got;
}

// One ring variant per process (as in attach, where a worker sees one queue class): --ring split|packed, --in-order 0|1.
const ringArg = args.indexOf('--ring') >= 0 ? args[args.indexOf('--ring') + 1] : 'split';
const f = ringArg === 'packed' ? 'packed' : 'split';
const io = opt('--in-order', 1) === 1;
const rx = args.includes('--rx');
for (let r = 0; r < 3; r++)
  if (rx) console.log(`${f}${io ? ' in-order' : ''} RX: ${runRx(f, io).toFixed(1)} ns/frame (driver side, device time excluded)`);
  else
    console.log(`${f}${io ? ' in-order' : ''}: ${run(f, io).toFixed(1)} ns/frame (driver side, device time excluded)`);
