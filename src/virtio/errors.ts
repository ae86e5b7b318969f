/**
 * Typed errors of the ring layer. Every error a malformed ring, descriptor or
 * address can cause is one of these, so callers can report the faulty queue
 * and keep the rest running (virtio spec v1.4 §2.1.2: on an unrecoverable
 * queue error the device sets DEVICE_NEEDS_RESET).
 */

/** Base class: `code` is a stable machine-readable identifier. */
export class VirtioError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * An access `(addr, len)` that does not lie entirely inside one guest memory
 * region. Addresses are guest physical addresses (bytes); never clamped.
 */
export class GuestMemoryError extends VirtioError {
  constructor(readonly addr: number, readonly len: number, detail = 'outside every guest memory region') {
    super('GUEST_MEMORY_OUT_OF_RANGE', `guest access [0x${addr.toString(16)}, +${len}) ${detail}`);
  }
}

/** Codes of {@link DescriptorError}, one per malformed-chain case (spec §2.7.5, §2.7.5.3, §2.8.6-§2.8.8). */
export type DescriptorErrorCode =
  | 'DESC_INDEX_OUT_OF_RANGE' // a head or `next` index >= queue size
  | 'CHAIN_TOO_LONG' // more hops than the queue size (a loop, or an over-long chain)
  | 'CHAIN_BYTES_TOO_LARGE' // more than 2^32 bytes in total (§2.7.5)
  | 'INDIRECT_NOT_NEGOTIATED' // VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC
  | 'NESTED_INDIRECT' // an indirect descriptor inside an indirect table
  | 'INDIRECT_WITH_NEXT' // VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT
  | 'INDIRECT_BAD_LENGTH' // zero-length table, or length not a multiple of 16
  | 'READABLE_AFTER_WRITABLE' // a device-readable descriptor after a device-writable one (§2.7.4.2)
  | 'AVAIL_IDX_JUMP' // avail idx moved by more than the queue size
  | 'AVAIL_IDX_DECREMENT' // avail idx moved backwards (§2.7.6.1; checked with --strict only)
  | 'USED_ID_INVALID' // driver side: the device returned an id that is not outstanding
  | 'USED_IDX_JUMP' // driver side: used idx moved past what the driver made available
  | 'USED_LEN_INVALID' // driver side: used len larger than the writable part of the chain
  | 'BUFFER_OUT_OF_RANGE' // a descriptor's (addr, len) outside guest memory
  | 'ID_OUT_OF_RANGE' // packed: a Buffer ID >= queue size (§2.8.6)
  | 'ID_IN_FLIGHT'; // packed: a Buffer ID the device popped and has not yet returned used

/** A malformed descriptor chain or ring index. `queue` is the virtqueue index when known. */
export class DescriptorError extends VirtioError {
  queue = -1;
  constructor(code: DescriptorErrorCode, message: string, readonly descIndex = -1) {
    super(code, message);
  }
}

/** A virtqueue configuration the spec forbids: size, alignment, addresses (spec §2.7). */
export class QueueConfigError extends VirtioError {
  constructor(message: string) {
    super('QUEUE_CONFIG_INVALID', message);
  }
}
