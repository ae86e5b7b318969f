/**
 * The RARP announcement a vhost-user back-end sends for its guest on
 * `VHOST_USER_SEND_RARP` (vhost-user.rst: "the back-end broadcasts a fake
 * RARP to notify the migration is terminated", sent by the front-end after
 * a migration or reconnect when the guest cannot announce itself, i.e.
 * without VIRTIO_NET_F_GUEST_ANNOUNCE): a broadcast frame from the guest's
 * MAC, so that switches (and Linux bridges) learn where that MAC is now.
 * The layout is the one DPDK's vhost library sends (QEMU's self-announce
 * has the same fields, padded to 60 bytes): RFC 903 over RFC 826's ARP header:
 *
 * | offset | bytes | field                                  |
 * |--------|-------|----------------------------------------|
 * |   0    |   6   | destination ff:ff:ff:ff:ff:ff          |
 * |   6    |   6   | source: the guest's MAC                |
 * |  12    |   2   | EtherType 0x8035 (RARP), big-endian    |
 * |  14    |   2   | hardware type 1 (Ethernet)             |
 * |  16    |   2   | protocol type 0x0800 (IPv4)            |
 * |  18    |   1   | hardware address length 6              |
 * |  19    |   1   | protocol address length 4              |
 * |  20    |   2   | opcode 3 (reverse request)             |
 * |  22    |   6   | sender hardware address: the MAC       |
 * |  28    |   4   | sender protocol address 0.0.0.0        |
 * |  32    |   6   | target hardware address: the MAC       |
 * |  38    |   4   | target protocol address 0.0.0.0        |
 * |  42    |  22   | zero padding (64 bytes in all)         |
 *
 * All multi-byte fields are big-endian (network byte order).
 */

/** EtherType of RARP (RFC 903). */
export const ETHERTYPE_RARP = 0x8035;
/** ARP opcode "reverse request" (RFC 903). */
export const ARP_OP_REVREQUEST = 3;
/** Length of the frame built by {@link makeRarpFrame}, bytes (as DPDK's RARP_PKT_SIZE). */
export const RARP_FRAME_SIZE = 64;

/**
 * The RARP announcement for `mac` (6 bytes), {@link RARP_FRAME_SIZE} bytes,
 * without a virtio_net_hdr.
 * @throws RangeError when `mac` is not 6 bytes
 */
export function makeRarpFrame(mac: Uint8Array): Uint8Array {
  if (mac.length !== 6) throw new RangeError(`RARP: a MAC address is 6 bytes, got ${mac.length}`);
  const f = new Uint8Array(RARP_FRAME_SIZE);
  const dv = new DataView(f.buffer);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  dv.setUint16(12, ETHERTYPE_RARP);
  dv.setUint16(14, 1);
  dv.setUint16(16, 0x0800);
  f[18] = 6;
  f[19] = 4;
  dv.setUint16(20, ARP_OP_REVREQUEST);
  f.set(mac, 22);
  f.set(mac, 32);
  return f;
}
