/**
 * Toeplitz hash, as used by virtio-net RSS and hash reporting.
 *
 * virtio 1.x, "Device Types / Network Device / Device Operation / Control
 * Virtqueue / Receive-side scaling (RSS)": a device offering VIRTIO_NET_F_RSS
 * "supports RSS receive steering with Toeplitz hash calculation"; the key is
 * `hash_key_data[hash_key_length]` of `struct virtio_net_rss_config`, and
 * `rss_max_key_size` (device config) is at least 40. The algorithm itself is
 * the one from Microsoft's RSS documentation ("RSS hashing functions"):
 *
 *     result = 0
 *     for each bit b of the input, most significant bit of byte 0 first:
 *         if b == 1: result ^= leftmost 32 bits of K
 *         shift K left by one bit
 *
 * Byte order: the input is a byte string in network order, exactly as the
 * fields appear on the wire (addresses then ports, each big-endian). The
 * result is an unsigned 32-bit number whose most significant bit is the first
 * key bit. Key bits past the end of the key are taken as zero (what QEMU and
 * most hardware do when the input is longer than `key.length - 4` bytes).
 *
 * Speed: the constructor precomputes, for every input byte position `i` and
 * every byte value `v`, the xor of the 32-bit key windows selected by the bits
 * of `v` at position `i` (`Uint32Array(tableBytes * 256)`), so hashing costs one
 * table lookup and one xor per input byte. Nothing allocates after
 * construction; the tuple helpers take numbers / typed arrays directly.
 */

/**
 * The 40-byte key from Microsoft's RSS verification suite, also the default
 * RSS key of many NICs (ixgbe, e1000e, ...). Treat as read-only: typed arrays
 * cannot be frozen; {@link Toeplitz} copies what it needs at construction.
 */
export const DEFAULT_RSS_KEY: Uint8Array = Uint8Array.from([
  0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
  0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
  0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
  0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
]);

/** Input bytes of the longest spec tuple: IPv6 src(16) + dst(16) + sport(2) + dport(2). */
export const TOEPLITZ_IPV6_TUPLE_BYTES = 36;

/** Largest key accepted: `hash_key_length` is a u8 in struct virtio_net_rss_config. */
export const TOEPLITZ_MAX_KEY_BYTES = 255;

/**
 * Precomputed Toeplitz hasher for one key.
 *
 * All `hash*` methods return an unsigned 32-bit integer (0 .. 2^32-1).
 */
export class Toeplitz {
  /**
   * `table[i * 256 + v]` = contribution of byte value `v` at input position `i`.
   * Covers `tableBytes` positions; bytes at or beyond `max(keyLength, ...)`
   * contribute nothing (their key window is all zero bits), so inputs longer
   * than the table hash exactly as if the table were larger.
   */
  private table: Uint32Array;
  private tableBytes: number;
  private keyLen: number;

  /**
   * @param key RSS key, 0..255 bytes (virtio `hash_key_length` is a u8; the
   *   spec's devices offer at least 40). Default {@link DEFAULT_RSS_KEY}.
   * @throws RangeError if the key is longer than 255 bytes.
   */
  constructor(key: Uint8Array = DEFAULT_RSS_KEY) {
    this.table = new Uint32Array(0);
    this.tableBytes = 0;
    this.keyLen = 0;
    this.setKey(key);
  }

  /** Length in bytes of the current key. */
  get keyLength(): number {
    return this.keyLen;
  }

  /** Number of input byte positions covered by the lookup table. */
  get maxInputBytes(): number {
    return this.tableBytes;
  }

  /**
   * Replace the key (e.g. after VIRTIO_NET_CTRL_MQ_RSS_CONFIG). Reuses the
   * table when it is large enough. Not for the per-packet path.
   */
  setKey(key: Uint8Array): void {
    const klen = key.length;
    if (klen > TOEPLITZ_MAX_KEY_BYTES) {
      throw new RangeError(`Toeplitz key too long: ${klen} > ${TOEPLITZ_MAX_KEY_BYTES}`);
    }
    // Every byte position whose key window can be non-zero, and at least the
    // 36 positions the IPv6 4-tuple helper reads unconditionally.
    const nbytes = klen > TOEPLITZ_IPV6_TUPLE_BYTES ? klen : TOEPLITZ_IPV6_TUPLE_BYTES;
    if (this.table.length < nbytes * 256) this.table = new Uint32Array(nbytes * 256);
    else this.table.fill(0);
    this.tableBytes = nbytes;
    this.keyLen = klen;

    const t = this.table;
    const bit = (p: number): number => (p < klen * 8 ? (key[p >>> 3]! >>> (7 - (p & 7))) & 1 : 0);
    // win = 32-bit key window starting at key bit `p` (MSB = key bit p).
    let win = 0;
    for (let j = 0; j < 32; j++) win = (win << 1) | bit(j);
    const w8 = new Uint32Array(8);
    for (let i = 0; i < nbytes; i++) {
      // Windows for the 8 bits of input byte i, MSB first.
      for (let b = 0; b < 8; b++) {
        w8[b] = win >>> 0;
        win = (win << 1) | bit(i * 8 + b + 32);
      }
      const base = i * 256;
      t[base] = 0;
      for (let v = 1; v < 256; v++) {
        const low = v & -v; // lowest set bit
        const b = 7 - (31 - Math.clz32(low)); // its index counted from the MSB
        t[base + v] = t[base + (v ^ low)]! ^ w8[b]!;
      }
    }
  }

  /**
   * Hash `len` bytes of `bytes` starting at `off` (network order byte string,
   * first byte = input position 0). Reads are clamped to `bytes.length`.
   */
  hashBytes(bytes: Uint8Array, off: number, len: number): number {
    return this.rawBytes(bytes, off, len) >>> 0;
  }

  /**
   * IPv4 2-tuple: input = src(4) | dst(4).
   * @param src source address as an unsigned 32-bit value in network order,
   *   i.e. a.b.c.d -> (a << 24 | b << 16 | c << 8 | d) >>> 0.
   * @param dst destination address, same encoding.
   */
  hashIPv4(src: number, dst: number): number {
    return this.rawIPv4(src, dst) >>> 0;
  }

  /**
   * IPv4 4-tuple: input = src(4) | dst(4) | sport(2) | dport(2), all big-endian.
   * Addresses as in {@link hashIPv4}; ports are plain 0..65535 numbers.
   */
  hashIPv4Ports(src: number, dst: number, sport: number, dport: number): number {
    return this.rawIPv4Ports(src, dst, sport, dport) >>> 0;
  }

  /**
   * IPv6 2-tuple: input = src(16) | dst(16).
   * @param src 4 words, word k = address bytes 4k..4k+3 big-endian
   *   (word 0 of 3ffe:2501:: is 0x3ffe2501). Only indices 0..3 are read.
   * @param dst same encoding.
   */
  hashIPv6(src: Uint32Array, dst: Uint32Array): number {
    return this.rawIPv6(src, dst) >>> 0;
  }

  /**
   * IPv6 4-tuple: input = src(16) | dst(16) | sport(2) | dport(2).
   * Address encoding as in {@link hashIPv6}.
   */
  hashIPv6Ports(src: Uint32Array, dst: Uint32Array, sport: number, dport: number): number {
    return this.rawIPv6Ports(src, dst, sport, dport) >>> 0;
  }

  // The raw* variants return the same 32 bits as a SIGNED int32 (hash | 0).
  // Hot callers use them: an unsigned value >= 2^31 returned from a function
  // V8 does not inline is boxed in a fresh HeapNumber (one allocation per
  // packet), an int32 never is. Convert with `>>> 0` where it is consumed, or
  // store it straight into an Int32Array / Uint32Array / DataView.setInt32.

  /** {@link hashBytes} as int32. */
  rawBytes(bytes: Uint8Array, off: number, len: number): number {
    const t = this.table;
    let n = len;
    if (off + n > bytes.length) n = bytes.length - off;
    if (n > this.tableBytes) n = this.tableBytes; // further bytes contribute 0
    let h = 0;
    for (let i = 0; i < n; i++) h ^= t[(i << 8) | bytes[off + i]!]!;
    return h;
  }

  /** {@link hashIPv4} as int32. */
  rawIPv4(src: number, dst: number): number {
    const t = this.table;
    return (
      t[(src >>> 24) & 255]! ^
      t[256 | ((src >>> 16) & 255)]! ^
      t[512 | ((src >>> 8) & 255)]! ^
      t[768 | (src & 255)]! ^
      t[1024 | ((dst >>> 24) & 255)]! ^
      t[1280 | ((dst >>> 16) & 255)]! ^
      t[1536 | ((dst >>> 8) & 255)]! ^
      t[1792 | (dst & 255)]!
    );
  }

  /** {@link hashIPv4Ports} as int32. */
  rawIPv4Ports(src: number, dst: number, sport: number, dport: number): number {
    const t = this.table;
    return (
      t[(src >>> 24) & 255]! ^
      t[256 | ((src >>> 16) & 255)]! ^
      t[512 | ((src >>> 8) & 255)]! ^
      t[768 | (src & 255)]! ^
      t[1024 | ((dst >>> 24) & 255)]! ^
      t[1280 | ((dst >>> 16) & 255)]! ^
      t[1536 | ((dst >>> 8) & 255)]! ^
      t[1792 | (dst & 255)]! ^
      t[2048 | ((sport >>> 8) & 255)]! ^
      t[2304 | (sport & 255)]! ^
      t[2560 | ((dport >>> 8) & 255)]! ^
      t[2816 | (dport & 255)]!
    );
  }

  /** {@link hashIPv6} as int32. */
  rawIPv6(src: Uint32Array, dst: Uint32Array): number {
    const t = this.table;
    return mix6(t, 0, src) ^ mix6(t, 4096, dst);
  }

  /** {@link hashIPv6Ports} as int32. */
  rawIPv6Ports(src: Uint32Array, dst: Uint32Array, sport: number, dport: number): number {
    const t = this.table;
    return (
      mix6(t, 0, src) ^
      mix6(t, 4096, dst) ^
      t[8192 | ((sport >>> 8) & 255)]! ^
      t[8448 | (sport & 255)]! ^
      t[8704 | ((dport >>> 8) & 255)]! ^
      t[8960 | (dport & 255)]!
    );
  }
}

/**
 * xor of the contributions of a 16-byte address (4 big-endian words) placed
 * at table offset `base` (= input byte position * 256). Straight-line so V8
 * inlines it.
 */
function mix6(t: Uint32Array, base: number, a: Uint32Array): number {
  const w0 = a[0]!;
  const w1 = a[1]!;
  const w2 = a[2]!;
  const w3 = a[3]!;
  return (
    t[base | (w0 >>> 24)]! ^
    t[(base + 256) | ((w0 >>> 16) & 255)]! ^
    t[(base + 512) | ((w0 >>> 8) & 255)]! ^
    t[(base + 768) | (w0 & 255)]! ^
    t[(base + 1024) | (w1 >>> 24)]! ^
    t[(base + 1280) | ((w1 >>> 16) & 255)]! ^
    t[(base + 1536) | ((w1 >>> 8) & 255)]! ^
    t[(base + 1792) | (w1 & 255)]! ^
    t[(base + 2048) | (w2 >>> 24)]! ^
    t[(base + 2304) | ((w2 >>> 16) & 255)]! ^
    t[(base + 2560) | ((w2 >>> 8) & 255)]! ^
    t[(base + 2816) | (w2 & 255)]! ^
    t[(base + 3072) | (w3 >>> 24)]! ^
    t[(base + 3328) | ((w3 >>> 16) & 255)]! ^
    t[(base + 3584) | ((w3 >>> 8) & 255)]! ^
    t[(base + 3840) | (w3 & 255)]!
  );
}
