/**
 * A descriptor chain as the device sees it after walking it (spec §2.7.5):
 * a list of buffers, device-readable ones first, then device-writable ones
 * (§2.7.4.2). Each buffer is already translated: a region index into
 * {@link GuestMemory.bytes} and a byte offset into that region's buffer.
 *
 * One DescChain is reused for every chain a queue pops: no allocation per packet.
 */
export class DescChain {
  /** Head descriptor index: the id returned in the used ring. */
  head = 0;
  /** Buffers in this chain (readable + writable). */
  count = 0;
  /** Number of device-readable buffers (they come first). */
  readable = 0;
  readableBytes = 0;
  writableBytes = 0;
  region: Int32Array;
  offset: Float64Array;
  len: Uint32Array;

  constructor(capacity: number) {
    this.region = new Int32Array(capacity);
    this.offset = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  get capacity(): number {
    return this.len.length;
  }

  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }
}
