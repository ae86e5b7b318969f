/**
 * The kernel's traffic as a driver's traffic source: one queue of a
 * multi-queue TAP (IFF_VNET_HDR, header size = the negotiated
 * virtio_net_hdr size, no offloads) per queue pair. `attach --netdev tap`
 * makes the process a virtio-user + TAP exception path: what the kernel
 * sends into the TAP goes out on transmitqN, what arrives on receiveqN is
 * written into the TAP.
 *
 * TX: each frame is read straight into its TX buffer in guest memory, the
 * kernel's vnet header landing where the virtio_net_hdr goes (all zero:
 * no offloads are enabled on the TAP). RX: the frame is copied behind a zero
 * vnet header and written with one writev. A frame the kernel refuses, or a
 * full TAP queue, is counted (`txErrors`), as a NIC would drop it.
 */
import { readFrames, writevFrames, HostError } from '../host/index.js';
import type { NetDriverPair } from '../net/driver-pair.js';
import { copyBytes, type Bytes } from '../virtio/copy.js';
import type { TrafficSource } from './source.js';

export interface TapTrafficSpec {
  kind: 'tap';
  /** fds[pair]: that pair's TAP queue fd (non-blocking, vnet header of hdrLen bytes). */
  fds: number[];
  hdrLen: number;
}

export class TapSource implements TrafficSource {
  private readonly fd: number;
  private readonly hdrLen: number;
  /** fds to wait on (readable: the kernel has frames for transmitqN). */
  readonly waitFds: number[];
  private readonly offs = new Float64Array(1);
  private readonly caps = new Uint32Array(1);
  private readonly lens = new Uint32Array(1);
  private readonly out: Bytes;
  /** Frames written to the TAP, and frames the kernel refused or had no room for. */
  written = 0;
  txErrors = 0;

  constructor(spec: TapTrafficSpec, pair: number) {
    this.fd = spec.fds[pair];
    this.hdrLen = spec.hdrLen;
    this.waitFds = [this.fd];
    const b = new SharedArrayBuffer(65536 + 64);
    this.out = { u8: new Uint8Array(b), i32: new Int32Array(b) };
  }

  fill(drv: NetDriverPair, budget: number): number {
    const hdr = this.hdrLen;
    const view = drv.txView;
    const buf = view.u8.buffer as SharedArrayBuffer;
    let n = 0;
    for (; n < budget; n++) {
      const o = drv.reserveTx();
      if (o < 0) break;
      this.offs[0] = o - hdr;
      // One byte more than fits: a frame that fills the buffer was truncated.
      this.caps[0] = drv.maxTxFrame + hdr;
      let got: number;
      try {
        got = readFrames(this.fd, buf, this.offs, this.caps, this.lens, 1);
      } catch (e) {
        if (!(e instanceof HostError)) throw e;
        break;
      }
      if (got === 0) break;
      const len = this.lens[0] - hdr;
      if (len <= 0 || this.lens[0] >= this.caps[0]) {
        n--; // not sent: the next frame reuses the buffer
        continue;
      }
      // The kernel's header: no offloads were enabled, so only num_buffers may be non-zero; clear it.
      if (hdr === 12) view.u8[o - 2] = view.u8[o - 1] = 0;
      drv.commitTx(len);
    }
    return n;
  }

  consume(src: Bytes, off: number, len: number): void {
    const hdr = this.hdrLen;
    const out = this.out;
    out.i32[0] = out.i32[1] = out.i32[2] = 0;
    if (hdr === 20) out.i32[3] = out.i32[4] = 0;
    copyBytes(out, hdr, src, off, len);
    this.offs[0] = 0;
    this.lens[0] = hdr + len;
    try {
      if (writevFrames(this.fd, out.u8.buffer as SharedArrayBuffer, this.offs, this.lens, 1) === 1) this.written++;
      else this.txErrors++;
    } catch (e) {
      if (!(e instanceof HostError)) throw e;
      this.txErrors++;
    }
  }

  reassign(): void {}

  exhausted(): boolean {
    return false;
  }
}
