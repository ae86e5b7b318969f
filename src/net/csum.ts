/**
 * The Internet checksum (RFC 1071) and the completion of a partial checksum
 * a driver left for the device (spec §5.1.6.2 "Packet Transmission":
 * VIRTIO_NET_HDR_F_NEEDS_CSUM with `csum_start` / `csum_offset`), for
 * netdevs that take no virtio_net_hdr (loopback, pcap, generator, sink): the
 * device completes the checksum in software, as QEMU's userspace path does.
 *
 * Byte order: checksums are 16-bit big-endian (network order) in the frame;
 * the functions here return and take them as plain numbers 0..0xffff.
 * Nothing allocates; nothing reads outside the given range.
 */

/**
 * Ones'-complement sum of `buf[off..off+len)` as 16-bit big-endian words
 * (an odd last byte is padded with zero), added to `sum`, NOT folded: the
 * result may exceed 16 bits (fold with {@link foldCsum}). `len` up to 2^24.
 */
export function csumAdd(buf: Uint8Array, off: number, len: number, sum = 0): number {
  let s = sum;
  const end = off + (len & ~1);
  let i = off;
  for (; i + 8 <= end; i += 8) {
    s += ((buf[i]! << 8) | buf[i + 1]!) + ((buf[i + 2]! << 8) | buf[i + 3]!) +
      ((buf[i + 4]! << 8) | buf[i + 5]!) + ((buf[i + 6]! << 8) | buf[i + 7]!);
  }
  for (; i < end; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (len & 1) s += buf[end]! << 8;
  // Keep the running value well inside 2^53 on long inputs.
  return s;
}

/** Fold a running sum to 16 bits (end-around carry). */
export function foldCsum(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The Internet checksum of `buf[off..off+len)`: ~fold(sum), 0..0xffff. */
export function internetChecksum(buf: Uint8Array, off: number, len: number, sum = 0): number {
  return ~foldCsum(csumAdd(buf, off, len, sum)) & 0xffff;
}

/** Write a 16-bit big-endian value. */
export function put16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}

/** Read a 16-bit big-endian value. */
export function get16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

/**
 * Complete a partial checksum (NEEDS_CSUM, §5.1.6.2): the driver has put the
 * pseudo-header sum in the checksum field; the device sums the frame from
 * `csumStart` (relative to the frame start `off`) to its end and stores the
 * complement at `csumStart + csumOffset`. A UDP checksum of 0 is sent as
 * 0xffff (RFC 768) when `udp` is true. Returns false (frame unchanged) when
 * the checksum field does not lie inside the frame (a bad header: the
 * caller drops the frame).
 */
export function completePartialCsum(buf: Uint8Array, off: number, len: number, csumStart: number, csumOffset: number, udp = false): boolean {
  if (csumStart >= len || csumStart + csumOffset + 2 > len) return false;
  const at = off + csumStart + csumOffset;
  let c = internetChecksum(buf, off + csumStart, len - csumStart);
  if (c === 0 && udp) c = 0xffff;
  put16(buf, at, c);
  return true;
}
