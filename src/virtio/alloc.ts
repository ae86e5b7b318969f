/**
 * A bump allocator for a driver's structures in guest memory (rings,
 * buffers): hands out aligned guest physical address ranges of one region.
 * Nothing is freed: a driver allocates once at setup, as Linux's virtio-net
 * does for its rings.
 */
export class GuestAllocator {
  private next: number;
  constructor(private readonly start: number, private readonly end: number) {
    this.next = start;
  }
  /** @throws RangeError when the region is exhausted. Returns a guest physical address. */
  alloc(bytes: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    if (at + bytes > this.end) throw new RangeError(`guest memory exhausted: need ${bytes} bytes at 0x${at.toString(16)}, region ends at 0x${this.end.toString(16)}`);
    this.next = at + bytes;
    return at;
  }
  get used(): number {
    return this.next - this.start;
  }
}
