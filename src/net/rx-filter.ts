/**
 * Device-side receive filter (spec §5.1.6.5 "Packet Receive Filtering",
 * "Setting MAC Address Filtering", "VLAN Filtering"), decided per packet from
 * the state the control queue maintains. Follows QEMU's receive_filter().
 *
 * Frame layout read (Ethernet II, network byte order = big-endian):
 *   0..5 destination MAC, 6..11 source MAC, 12..13 ethertype/TPID;
 *   with TPID 0x8100: 14..15 TCI, VLAN id = TCI & 0x0fff.
 */

/** The receive filter state the controlq maintains (ctrl.ts's ControlState extends it). */
export interface RxFilterState {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
  /** Own MAC (6 bytes). */
  mac: Uint8Array;
  /** Unicast filter entries (6 bytes each). */
  unicast: Uint8Array[];
  /** Multicast filter entries (6 bytes each). */
  multicast: Uint8Array[];
  /** The last TABLE_SET had too many unicast entries: accept all unicast. */
  uniOverflow: boolean;
  /** The last TABLE_SET had too many multicast entries: accept all multicast. */
  multiOverflow: boolean;
  /** VIRTIO_NET_F_CTRL_VLAN negotiated: tagged frames must match {@link vlans}. */
  vlanFiltering: boolean;
  /** VLAN bitmap: id `v` is bit `v & 7` of byte `v >> 3`. */
  vlans: Uint8Array;
}

/**
 * Whether the device should deliver the Ethernet frame `frame[off, off+len)`
 * (no virtio_net_hdr in front) to the driver. Allocation-free.
 *
 * Order, as QEMU receive_filter():
 *   1. promiscuous → accept (even a runt frame);
 *   2. shorter than 14 bytes → drop;
 *   3. VLAN filtering (CTRL_VLAN negotiated) and TPID 0x8100: drop unless the
 *      VLAN id is in the table (a tagged frame shorter than 16 bytes is
 *      dropped); untagged frames pass this step;
 *   4. broadcast ff:ff:ff:ff:ff:ff → accept unless NOBCAST;
 *   5. other multicast (I/G bit set): drop if NOMULTI; accept if ALLMULTI or
 *      the multicast table overflowed; else accept iff in the multicast table;
 *   6. unicast: drop if NOUNI; accept if ALLUNI or the unicast table
 *      overflowed, or it is the own MAC, or it is in the unicast table.
 *
 * Throws RangeError when `[off, off+len)` is not inside `frame`.
 */
export function rxFilterAccepts(state: RxFilterState, frame: Uint8Array, off: number, len: number): boolean {
  if (off < 0 || len < 0 || off + len > frame.length) {
    throw new RangeError(`frame [${off}, +${len}) outside buffer of ${frame.length} bytes`);
  }
  if (state.promisc) return true;
  if (len < 14) return false;

  if (state.vlanFiltering && frame[off + 12] === 0x81 && frame[off + 13] === 0x00) {
    if (len < 16) return false;
    const vid = ((frame[off + 14]! << 8) | frame[off + 15]!) & 0x0fff;
    if ((state.vlans[vid >> 3]! & (1 << (vid & 7))) === 0) return false;
  }

  const d0 = frame[off]!;
  if (d0 & 1) {
    if (
      d0 === 0xff && frame[off + 1] === 0xff && frame[off + 2] === 0xff &&
      frame[off + 3] === 0xff && frame[off + 4] === 0xff && frame[off + 5] === 0xff
    ) {
      return !state.nobcast;
    }
    if (state.nomulti) return false;
    if (state.allmulti || state.multiOverflow) return true;
    return inTable(state.multicast, frame, off);
  }
  if (state.nouni) return false;
  if (state.alluni || state.uniOverflow) return true;
  if (macEquals(state.mac, frame, off)) return true;
  return inTable(state.unicast, frame, off);
}

function macEquals(mac: Uint8Array, frame: Uint8Array, off: number): boolean {
  return (
    mac[0] === frame[off] && mac[1] === frame[off + 1] && mac[2] === frame[off + 2] &&
    mac[3] === frame[off + 3] && mac[4] === frame[off + 4] && mac[5] === frame[off + 5]
  );
}

function inTable(table: readonly Uint8Array[], frame: Uint8Array, off: number): boolean {
  for (let i = 0; i < table.length; i++) if (macEquals(table[i]!, frame, off)) return true;
  return false;
}
