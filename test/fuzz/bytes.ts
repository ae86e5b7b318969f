/**
 * Turns a fuzz input (any bytes) into a harness's choices, like libFuzzer's
 * FuzzedDataProvider: every read consumes input bytes and returns 0 once the
 * input is exhausted, so every byte string is a valid program and a mutation
 * of one byte changes one choice. Boundary tables (`pick`) make random bytes
 * land on the values bugs hide at (0, 1, size-1, size, 2^16, 2^32-1, ...).
 */
export class ByteSource {
  private pos = 0;
  constructor(readonly data: Uint8Array) {}

  get left(): number {
    return this.data.length - this.pos;
  }

  u8(): number {
    return this.pos < this.data.length ? this.data[this.pos++] : 0;
  }

  u16(): number {
    return this.u8() | (this.u8() << 8);
  }

  u32(): number {
    return (this.u16() | (this.u16() << 16)) >>> 0;
  }

  bool(): boolean {
    return (this.u8() & 1) === 1;
  }

  /** 0..n-1 (n >= 1). */
  below(n: number): number {
    if (n <= 1) return 0;
    return (n <= 256 ? this.u8() : n <= 65536 ? this.u16() : this.u32()) % n;
  }

  /** One element of `xs`. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)];
  }

  /** `n` bytes (fewer, zero-padded, when the input runs out). */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    const take = Math.min(n, this.left);
    out.set(this.data.subarray(this.pos, this.pos + take));
    this.pos += take;
    return out;
  }

  /** All bytes not consumed yet. */
  rest(): Uint8Array {
    const out = this.data.subarray(this.pos);
    this.pos = this.data.length;
    return out;
  }
}

/** Interesting u32 values (lengths, counts). */
export const INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 11, 12, 13, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 4095, 4096, 4097, 65535, 65536, 65537, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
/** Interesting u16 values (ring indexes, ids). */
export const INTERESTING_U16 = [0, 1, 2, 3, 7, 8, 15, 16, 255, 256, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff];
