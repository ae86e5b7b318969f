/**
 * Multi-queue TAP netdev (Linux): one TAP queue fd per queue pair, opened
 * with IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR and a 12-byte
 * vnet header (TUNSETVNETHDRSZ), so the kernel steers host→guest flows over
 * the queues and each pair's worker moves frames between its rings and its
 * own fd, with no locks and no frame copies in JS:
 *
 * - TX: the driver's virtio_net_hdr + frame go to the fd straight from guest
 *   memory (writev per frame, batched per poll round by the native addon).
 *   No offloads are offered to the guest, so the header is all zero but
 *   num_buffers, which the kernel ignores.
 * - RX: frames are read in batches (readv per frame) into a private buffer;
 *   the kernel's vnet header is all zero because no TUNSETOFFLOAD flags are
 *   set, so the device writes a fresh one. A frame the receiveq cannot take
 *   (no buffer, backlog full) is dropped and counted, like a NIC; but no
 *   more frames are read than the receiveq has buffers for, so under load
 *   frames wait in the TAP's kernel queue (QEMU's tap does the same).
 */
import { readFrames, writevFrames, HostError } from '../host/index.js';
import type { Bytes } from '../virtio/copy.js';
import type { Netdev, RxPort } from '../net/netdev.js';

/** Frames per batch (one addon call). */
const BATCH = 64;
/** RX slot: vnet header + the largest frame a TAP hands out without GSO (64 KiB), +1 to detect truncation. */
const SLOT = 65536 + 16;

export class TapNetdev implements Netdev {
  readonly externalRx = true;
  readonly wantsHeader = true;
  readonly waitFds: readonly number[];
  private txBuf: ArrayBufferLike | null = null;
  private readonly txOffs = new Float64Array(BATCH);
  private readonly txLens = new Uint32Array(BATCH);
  private txCount = 0;
  private readonly rx: Bytes;
  private readonly rxOffs = new Float64Array(BATCH);
  private readonly rxCaps = new Uint32Array(BATCH).fill(SLOT);
  private readonly rxLens = new Uint32Array(BATCH);
  /** Frames the kernel refused (TX) or that were truncated / found no RX buffer. */
  txErrors = 0;
  rxDropped = 0;

  /** `fd`: this pair's TAP queue fd (non-blocking, vnet header size `hdrLen`). */
  constructor(private readonly fd: number, private readonly hdrLen: number) {
    this.waitFds = [fd];
    const b = new SharedArrayBuffer(BATCH * SLOT);
    this.rx = { u8: new Uint8Array(b), i32: new Int32Array(b) };
    for (let i = 0; i < BATCH; i++) this.rxOffs[i] = i * SLOT;
  }

  transmit(src: Bytes, off: number, len: number): boolean {
    const buf = src.u8.buffer;
    if (this.txCount === BATCH || (this.txCount > 0 && buf !== this.txBuf)) this.flush();
    this.txBuf = buf;
    this.txOffs[this.txCount] = off;
    this.txLens[this.txCount] = len;
    this.txCount++;
    return true;
  }

  flush(): void {
    let start = 0;
    const n = this.txCount;
    this.txCount = 0;
    while (start < n) {
      try {
        const wrote = writevFrames(this.fd, this.txBuf as SharedArrayBuffer, this.txOffs, this.txLens, n - start, start);
        if (wrote === 0) {
          // EAGAIN: the TAP's queue is full; a NIC would drop, so do we (counted).
          this.txErrors += n - start;
          return;
        }
        start += wrote;
      } catch (e) {
        if (!(e instanceof HostError)) throw e;
        this.txErrors++; // this frame was refused (e.g. a malformed vnet header); go on with the next
        start++;
      }
    }
  }

  poll(rx: RxPort, budget: number): number {
    let want = budget < BATCH ? budget : BATCH;
    const room = rx.room();
    if (room === 0) return 0; // leave frames in the kernel's queue until the guest posts buffers
    if (room < want) want = room;
    const n = readFrames(this.fd, this.rx.u8.buffer as SharedArrayBuffer, this.rxOffs, this.rxCaps, this.rxLens, want);
    const hdr = this.hdrLen;
    for (let i = 0; i < n; i++) {
      const len = this.rxLens[i];
      if (len <= hdr || len >= SLOT) {
        this.rxDropped++;
        rx.drop();
        continue;
      }
      if (!rx.receive(this.rx, this.rxOffs[i] + hdr, len - hdr, -1)) {
        this.rxDropped++;
        rx.drop();
      }
    }
    return n;
  }

  busy(): boolean {
    return false;
  }
}
