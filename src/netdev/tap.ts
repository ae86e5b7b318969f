/**
 * Multi-queue TAP netdev (Linux): one TAP queue fd per queue pair, opened
 * with IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR and a 12-byte
 * vnet header (TUNSETVNETHDRSZ), so the kernel steers host→guest flows over
 * the queues and each pair's worker moves frames between its rings and its
 * own fd, with no locks and no frame copies in JS:
 *
 * - TX: the driver's virtio_net_hdr + frame go to the fd straight from guest
 *   memory, unchanged (checksum and GSO requests included: the kernel
 *   completes and segments what the driver left, as with QEMU's tap): one
 *   writev per frame, a multi-descriptor chain (Linux's TSO frames) as a
 *   scatter writev of its buffers, batched per poll round by the native addon.
 * - RX: frames are read in batches (readv per frame) into a private buffer
 *   and handed to this pair's receiveq with the kernel's vnet header
 *   (`receiveOwn`: queue N feeds pair N, no device steering), which carries
 *   partial checksums and GSO frames up to 64 KiB once TUNSETOFFLOAD allows
 *   them (tap-offload.ts: the offloads the driver accepted). No more frames
 *   are read than the receiveq has buffers for, and a frame that finds no
 *   room (a GSO frame needing more merged buffers than are posted) waits
 *   here for the next round, so under load frames wait in the TAP's kernel
 *   queue (QEMU's tap does the same).
 */
import { hasReadvTail, readFrames, readvTail, writevFramesSg, HostError } from '../host/index.js';
import type { Bytes } from '../virtio/copy.js';
import type { Netdev, RxPort } from '../net/netdev.js';

/** Frames per batch (one addon call). */
const BATCH = 64;
/** Segments per TX batch (flat table over the batch's frames). */
const SEGS = 4096;
/** RX slot: vnet header + the largest frame a TAP hands out with GSO (64 KiB + headers), +1 to detect truncation. */
const SLOT = 65536 + 512;

export class TapNetdev implements Netdev {
  readonly externalRx = true;
  readonly wantsHeader = true;
  readonly ownQueue = true;
  readonly waitFds: readonly number[];
  private txBuf: ArrayBufferLike | null = null;
  private readonly segOffs = new Float64Array(SEGS);
  private readonly segLens = new Uint32Array(SEGS);
  private readonly segCounts = new Uint32Array(BATCH);
  private txCount = 0;
  private txSegs = 0;
  private readonly rx: Bytes;
  private readonly rxOffs = new Float64Array(BATCH);
  private readonly rxCaps = new Uint32Array(BATCH).fill(SLOT);
  private readonly rxLens = new Uint32Array(BATCH);
  /** Frames read but not yet taken by the receiveq: [rxNext, rxEnd) of the last batch. */
  private rxNext = 0;
  private rxEnd = 0;
  /** Direct RX: the overflow buffer after the guest's buffers, and how many bytes to reserve (the last frame's size). */
  private readonly tail: Bytes;
  private hint = 2048;
  private readonly direct: boolean;
  /** Frames the kernel refused (TX) or that were truncated / found no RX buffer. */
  txErrors = 0;
  rxDropped = 0;
  /** Frames read straight into guest buffers, and frames that went through the private buffer. */
  rxDirect = 0;
  rxCopied = 0;
  /**
   * The TAP device went away under this queue fd (`ip link del`: the kernel
   * answers EBADFD on read and write, POLLERR on poll): from then on TX
   * frames are dropped (counted in txErrors), poll() offers nothing, and
   * the worker leaves the fd out of its poll set. Serve re-opens the TAP
   * when it is back (transport/vhost-user/link.ts).
   */
  gone = false;
  /** Called once when {@link gone} turns true. */
  onGone?: () => void;

  /** `fd`: this pair's TAP queue fd (non-blocking, vnet header size `hdrLen`). */
  constructor(private readonly fd: number, private readonly hdrLen: number) {
    this.waitFds = [fd];
    const b = new SharedArrayBuffer(BATCH * SLOT);
    this.rx = { u8: new Uint8Array(b), i32: new Int32Array(b) };
    for (let i = 0; i < BATCH; i++) this.rxOffs[i] = i * SLOT;
    const t = new SharedArrayBuffer(SLOT);
    this.tail = { u8: new Uint8Array(t), i32: new Int32Array(t) };
    this.direct = hasReadvTail();
  }

  transmit(src: Bytes, off: number, len: number): boolean {
    const buf = src.u8.buffer;
    if (this.txCount === BATCH || this.txSegs === SEGS || (this.txCount > 0 && buf !== this.txBuf)) this.flush();
    this.txBuf = buf;
    this.segOffs[this.txSegs] = off;
    this.segLens[this.txSegs] = len;
    this.txSegs++;
    this.segCounts[this.txCount++] = 1;
    return true;
  }

  transmitSg(buf: Bytes, offs: Float64Array, lens: Uint32Array, count: number): boolean {
    if (count > 1024) {
      this.txErrors++; // more pieces than one writev takes (IOV_MAX): a NIC would drop it too
      return true;
    }
    const b = buf.u8.buffer;
    if (this.txCount === BATCH || this.txSegs + count > SEGS || (this.txCount > 0 && b !== this.txBuf)) this.flush();
    this.txBuf = b;
    const at = this.txSegs;
    for (let i = 0; i < count; i++) {
      this.segOffs[at + i] = offs[i];
      this.segLens[at + i] = lens[i];
    }
    this.txSegs = at + count;
    this.segCounts[this.txCount++] = count;
    return true;
  }

  flush(): void {
    let start = 0;
    const n = this.txCount;
    this.txCount = 0;
    this.txSegs = 0;
    if (this.gone) {
      this.txErrors += n;
      return;
    }
    while (start < n) {
      try {
        const wrote = writevFramesSg(this.fd, this.txBuf as SharedArrayBuffer, this.segOffs, this.segLens, this.segCounts, n - start, start);
        if (wrote === 0) {
          // EAGAIN: the TAP's queue is full; a NIC would drop, so do we (counted).
          this.txErrors += n - start;
          return;
        }
        start += wrote;
      } catch (e) {
        if (!(e instanceof HostError)) throw e;
        if (isGoneError(e)) {
          this.markGone();
          this.txErrors += n - start;
          return;
        }
        this.txErrors++; // this frame was refused (e.g. a malformed vnet header); go on with the next
        start++;
      }
    }
  }

  poll(rx: RxPort, budget: number): number {
    let done = this.deliverPending(rx);
    if (this.rxNext < this.rxEnd || this.gone) return done; // the receiveq is full: the rest waits
    try {
      return done + this.read(rx, budget);
    } catch (e) {
      if (!(e instanceof HostError) || !isGoneError(e)) throw e;
      this.markGone();
      return done;
    }
  }

  private markGone(): void {
    if (this.gone) return;
    this.gone = true;
    this.onGone?.();
  }

  private read(rx: RxPort, budget: number): number {
    let done = 0;
    let want = budget < BATCH ? budget : BATCH;
    const room = rx.room();
    if (room === 0) return done; // leave frames in the kernel's queue until the guest posts buffers
    if (room < want) want = room;
    if (this.direct && rx.reserveRx !== undefined) {
      const r = this.pollDirect(rx, want);
      if (r >= 0) return done + r;
    }
    const n = readFrames(this.fd, this.rx.u8.buffer as SharedArrayBuffer, this.rxOffs, this.rxCaps, this.rxLens, want);
    this.rxNext = 0;
    this.rxEnd = n;
    done += this.deliverPending(rx);
    return done;
  }

  /**
   * Read frames straight into the driver's receive buffers (readv into the
   * descriptors, the kernel's vnet header first; what does not fit the
   * buffers reserved goes to the tail and is copied into further merged
   * buffers). Returns frames received, or -1 when the buffers cannot be
   * used directly (the copying path runs instead).
   */
  private pollDirect(rx: RxPort, want: number): number {
    let done = 0;
    while (done < want) {
      const segs = rx.reserveRx!(this.hint);
      if (segs === 0) break;
      if (segs < 0) return done > 0 ? done : -1;
      let n: number | null;
      try {
        n = readvTail(this.fd, rx.directBuf!.u8.buffer as SharedArrayBuffer, rx.directOffs!, rx.directCaps!, segs, this.tail.u8.buffer as SharedArrayBuffer, 0, SLOT);
      } catch (e) {
        rx.cancelRx!();
        throw e;
      }
      if (n === null || n === 0) {
        rx.cancelRx!();
        break;
      }
      this.hint = n > 2048 ? n : 2048;
      const r = rx.commitRx!(n, this.tail, 0, this.rx, 0);
      if (r < 0) {
        // Not enough receive buffers for it: it waits in slot 0 for the copying path.
        this.rxLens[0] = n;
        this.rxNext = 0;
        this.rxEnd = 1;
        this.rxCopied++;
        break;
      }
      if (r === 0) this.rxDropped++;
      else this.rxDirect++;
      done++;
    }
    return done;
  }

  /** Hand the frames read so far to this pair's receiveq, kernel vnet header included; stop when it is full. */
  private deliverPending(rx: RxPort): number {
    const hdr = this.hdrLen;
    let i = this.rxNext;
    const end = this.rxEnd;
    for (; i < end; i++) {
      const len = this.rxLens[i];
      if (len <= hdr || len >= SLOT) {
        this.rxDropped++;
        rx.drop();
        continue;
      }
      const o = this.rxOffs[i];
      if (!rx.receiveOwn(this.rx, o + hdr, len - hdr, o)) break;
    }
    const n = i - this.rxNext;
    this.rxNext = i;
    return n;
  }

  busy(): boolean {
    return this.rxNext < this.rxEnd;
  }
}

/** EBADFD: the queue fd lost its device (the TAP was deleted; tun.c answers EBADFD once detached). */
function isGoneError(e: HostError): boolean {
  return e.code === 'EBADFD';
}
