/**
 * The kernel's traffic as a driver's traffic source: one queue of a
 * multi-queue TAP (IFF_VNET_HDR, header size = the negotiated
 * virtio_net_hdr size) per queue pair. `attach --netdev tap` makes the
 * process a virtio-user + TAP exception path: what the kernel sends into
 * the TAP goes out on transmitqN, what arrives on receiveqN is written into
 * the TAP. The virtio_net_hdr (§5.1.6.1) passes through unchanged both ways,
 * as with QEMU's tap:
 *
 * TX: each frame is read straight into its TX buffer in guest memory, the
 * kernel's vnet header landing where the virtio_net_hdr goes. With
 * TUNSETOFFLOAD set from the HOST_ offloads the device accepted (attach does
 * that), the kernel hands over partial checksums (NEEDS_CSUM) and GSO frames
 * up to 64 KiB, which the driver may send as they are (§5.1.6.2); without
 * it the header is all zero. `num_buffers` is cleared (driver TX header).
 * RX: the frame and the header the device wrote (NEEDS_CSUM / DATA_VALID,
 * GSO type and size when GUEST_ offloads were negotiated) go to the TAP in
 * one writev straight from the receive buffer (or the driver's merge buffer
 * for MRG_RXBUF frames), no copy; the kernel ignores `num_buffers`. A frame
 * the kernel refuses, or a full TAP queue, is counted (`txErrors`), as a NIC
 * would drop it.
 */
import { readFrames, writevFrames, HostError } from '../host/index.js';
import type { NetDriverPair } from '../net/driver-pair.js';
import type { Bytes } from '../virtio/copy.js';
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
  /** Frames written to the TAP, and frames the kernel refused or had no room for. */
  written = 0;
  txErrors = 0;

  constructor(spec: TapTrafficSpec, pair: number) {
    this.fd = spec.fds[pair];
    this.hdrLen = spec.hdrLen;
    this.waitFds = [this.fd];
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
      // The kernel's header passes as it is (flags, gso_*, csum_*); num_buffers is not the driver's to set.
      if (hdr === 12) view.u8[o - 2] = view.u8[o - 1] = 0;
      drv.commitTx(len);
    }
    return n;
  }

  consume(src: Bytes, off: number, len: number): void {
    const hdr = this.hdrLen;
    this.offs[0] = src.u8.byteOffset + off - hdr;
    this.lens[0] = hdr + len;
    try {
      if (writevFrames(this.fd, src.u8.buffer as SharedArrayBuffer, this.offs, this.lens, 1) === 1) this.written++;
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
