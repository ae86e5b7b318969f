/**
 * One queue interface for both ring formats (virtio spec v1.4 §2.6-§2.8):
 * what the net layer, the transports and the vhost-user back-end see of a
 * virtqueue, without knowing whether it is a split ring (§2.7) or a packed
 * ring (§2.8). The implementation is picked once per negotiated feature set
 * (see ring.ts), so each worker's hot loop sees one class and stays
 * monomorphic.
 *
 * Terms: a *chain* is one buffer as the driver made it available (one or
 * more descriptors, §2.7.5 / §2.8.6); its *id* is what the device returns in
 * the used ring (split: the head descriptor index; packed: the Buffer ID of
 * the chain's last descriptor, §2.8.6); its *descs* is how many slots it
 * took in the descriptor table or ring (packed: how far the device skips
 * when it writes the used descriptor, §2.8.6).
 */
import type { DescChain } from './chain.js';
import type { QueueDirtyLog } from './logged-queue.js';

/** §2.7 split virtqueue, §2.8 packed virtqueue. */
export type RingFormat = 'split' | 'packed';

/**
 * Where a virtqueue's three parts sit, as guest physical addresses (bytes).
 * The same three addresses the PCI transport calls queue_desc, queue_driver
 * and queue_device (§4.1.4.3):
 *
 * | field      | split (§2.7)              | packed (§2.8)                     |
 * | descAddr   | descriptor table (16·size)| descriptor ring (16·size)         |
 * | driverAddr | available ring (6+2·size) | driver event suppression (4 bytes)|
 * | deviceAddr | used ring (6+8·size)      | device event suppression (4 bytes)|
 */
export interface QueueLayout {
  format: RingFormat;
  /** Queue Size: split a power of two in 1..32768; packed any value in 1..32768 (§2.8.10.1). */
  size: number;
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
}

/**
 * Where a ring stands, for stopping and restarting it (vhost-user
 * GET_VRING_BASE / SET_VRING_BASE, inflight recovery).
 *
 * - split: `avail` = the device's next available-ring index (last_avail_idx),
 *   `used` = used->idx; both free-running u16.
 * - packed: bits 0-14 the descriptor ring position (0..size-1), bit 15 the
 *   wrap counter: `avail` for the next descriptor the device reads, `used`
 *   for the next used descriptor it writes (§2.8.1). This is the vhost-user
 *   encoding of the vring base for packed rings.
 */
export interface QueueState {
  avail: number;
  used: number;
}

/** The ring features a queue implementation is chosen by (§6: bits 28, 29, 34, 35). */
export interface RingFeatures {
  /** VIRTIO_F_RING_PACKED */
  packed: boolean;
  /** VIRTIO_F_EVENT_IDX: split used_event/avail_event, packed RING_EVENT_FLAGS_DESC. */
  eventIdx: boolean;
  /** VIRTIO_F_IN_ORDER: buffers used in the order they were made available. */
  inOrder: boolean;
  /** VIRTIO_F_INDIRECT_DESC */
  indirect: boolean;
}

/** Options every queue half takes. */
export interface QueueOptions extends Omit<RingFeatures, 'packed'> {
  /** Virtqueue index, for error reports (receiveqN = 2(N-1), transmitqN = 2(N-1)+1). */
  index?: number;
  /** Device side: add the strict-only conformance checks (conformance.ts); picks another class, so hot paths without it are unchanged. */
  strict?: boolean;
  /** Device side, live migration (VHOST_F_LOG_ALL): mark every write into guest memory in this log (logged-queue.ts); picks another class, so hot paths without it are unchanged. */
  dirtyLog?: QueueDirtyLog;
}

/**
 * The device half of a virtqueue: reads what the driver made available,
 * writes what it used, and decides on used-buffer notifications.
 * Errors: every malformed ring or chain is a {@link DescriptorError}
 * (errors.ts) naming the queue; the caller stops that queue only.
 */
export interface DeviceQueue {
  readonly size: number;
  readonly index: number;
  /**
   * Chains the driver has made available and the device has not popped.
   * Split: exact. Packed: counted by scanning ahead, up to a scan limit
   * (at least 1 whenever any is available).
   * @throws DescriptorError (split: AVAIL_IDX_JUMP)
   */
  pending(): number;
  /**
   * Pop the next available chain into `chain`: walk its descriptors
   * (direct, chained, indirect), translate every buffer into guest memory.
   * `chain` must be made over the same GuestMemory (the same regions) as the
   * queue. Call only when pending() > 0.
   * @throws DescriptorError for every malformed-chain case; the chain is consumed.
   */
  pop(chain: DescChain): void;
  /**
   * Fast path for the common chain of one descriptor (no NEXT, no INDIRECT)
   * with flags exactly `write` (VIRTQ_DESC_F_WRITE = 2, or 0) of at least
   * `minLen` bytes, wholly inside one guest memory region: pops it and
   * returns that region's index (into GuestMemory.bytes), with the chain's id,
   * the buffer's byte offset in its region's buffer and its length in
   * {@link singleId}, {@link singleOff}, {@link singleLen} (it takes one
   * descriptor slot). Needs no pending() first. Returns -2 when no chain is
   * available, and -1, popping nothing, for any other available chain, valid
   * or not: the caller then uses {@link pop}, which walks and validates it.
   * @throws DescriptorError AVAIL_IDX_JUMP (split), as pending() does.
   */
  popSingle(write: number, minLen: number): number;
  readonly singleId: number;
  readonly singleOff: number;
  readonly singleLen: number;
  /** An opaque read position, for {@link rewind}. */
  mark(): number;
  /** Give back every chain popped since `mark()` returned `m`: they will be popped again. */
  rewind(m: number): void;
  /**
   * Return a chain: `id` and `descs` as {@link pop} left them in the chain,
   * `len` = bytes written into its device-writable buffers (§2.7.8, §2.8.7).
   * Not visible to the driver until {@link publish}. With VIRTIO_F_IN_ORDER
   * a run of zero-length chains may be written as one used entry (§2.7.9 /
   * §2.8.12): callers must push in the order they popped.
   */
  pushUsed(id: number, len: number, descs: number): void;
  /** Used entries pushed since the last {@link publish}. */
  readonly unpublished: boolean;
  /** Make the pushed used entries visible; true when the driver wants a used-buffer notification. */
  publish(): boolean;
  /**
   * Ask for (true) or suppress (false) available-buffer notifications.
   * After enabling, call {@link pending} again before sleeping.
   */
  setNotification(enable: boolean): void;
  /** Where the ring stands (see {@link QueueState}). Pushed but unpublished entries count as used. */
  state(): QueueState;
  /**
   * Restart from a saved position (vhost-user SET_VRING_BASE): chains popped
   * and not pushed, unpublished used entries and anything cached are dropped.
   * @throws QueueConfigError for a packed position outside the ring.
   */
  setState(s: QueueState): void;
}

/** One buffer of a chain the driver adds: guest physical address, length in bytes, device-writable? */
export interface BufferSpec {
  addr: number;
  len: number;
  writable: boolean;
}

/**
 * The driver half of a virtqueue: makes buffers available, reclaims used
 * ones, and decides on available-buffer notifications. It keeps a shadow of
 * every chain it made available, so a device returning a bogus id or length
 * corrupts nothing: the completion is refused with a DescriptorError.
 */
export interface DriverQueue {
  readonly size: number;
  readonly index: number;
  /** VIRTIO_F_IN_ORDER was negotiated (§2.7.9, §2.8.12). */
  readonly inOrder: boolean;
  /** Descriptors free for new chains. */
  readonly numFree: number;
  /** The id {@link addOne} will use next, or -1 when the ring is full (lets a caller tie a buffer to each id). */
  peekFreeId(): number;
  /**
   * Hot path: add a one-descriptor chain. Returns its id, or -1 when no
   * descriptor is free. `token` comes back with the used buffer. Not visible
   * to the device until {@link publish}.
   */
  addOne(addr: number, len: number, writable: boolean, token: number): number;
  /**
   * Add a chain (device-readable buffers first). With `indirectTable` (a
   * guest address with room for 16 × bufs.length bytes) and
   * VIRTIO_F_INDIRECT_DESC it takes one ring slot. Returns the id or -1.
   * @throws RangeError for an empty chain, one longer than the queue size, or readable after writable.
   */
  add(bufs: readonly BufferSpec[], token: number, indirectTable?: number): number;
  /**
   * Hot path for buffers tied to ids (buffer i at `addr0 + i × stride`): add
   * up to `n` one-descriptor chains of `len` bytes (token = id), ids to
   * `out[0..k)`; returns k. Not visible to the device until {@link publish}.
   */
  addTied(out: Uint16Array, n: number, addr0: number, stride: number, len: number, writable: boolean): number;
  /**
   * Reclaim every used chain; with VIRTIO_F_IN_ORDER without reading used
   * lengths (split: from used->idx alone; packed: the first used descriptor
   * of each batch), so only for chains the device never writes (a
   * transmitq). Returns the chains reclaimed (tokens are not reported).
   * @throws DescriptorError as {@link usedPending} / {@link popUsed}.
   */
  reclaimInOrder(): number;
  /** Chains added since the last {@link publish}. */
  readonly unpublished: boolean;
  /** Make added chains visible; true when the device wants an available-buffer notification. */
  publish(): boolean;
  /**
   * Used buffers waiting to be reclaimed (split: exact; packed: counted up
   * to a scan limit, at least 1 whenever any is waiting).
   * @throws DescriptorError USED_IDX_JUMP / USED_ID_INVALID when the device lied.
   */
  usedPending(): number;
  /**
   * Reclaim the next used buffer; returns its id and leaves the device's byte
   * count in {@link usedLen} and the caller's token in {@link usedToken}.
   * Call only when usedPending() > 0.
   * @throws DescriptorError USED_ID_INVALID / USED_LEN_INVALID (the entry is consumed).
   */
  popUsed(): number;
  /**
   * {@link popUsed} when a used buffer is waiting, else -1, without counting
   * what else waits (split: used->idx read once per burst; packed: only the
   * descriptor at the read position is looked at).
   * @throws as {@link usedPending} / {@link popUsed}.
   */
  popUsedIfAny(): number;
  /**
   * RX hot path: reclaim up to `max` used chains as that many
   * {@link popUsedIfAny} calls would (same checks, same state after), chain
   * i's token to `tokens[i]` and used length to `lens[i]`; returns how many
   * (0: none waiting). An error met after chains were taken is thrown by the
   * next call, so the chains before it are delivered first. Packed with
   * VIRTIO_F_IN_ORDER reads a run of used descriptors with two acquire loads.
   * @throws as {@link popUsed}.
   */
  popUsedBurst(tokens: Int32Array, lens: Int32Array, max: number): number;
  /**
   * RX hot path for a receiveq whose buffers are all tied to ids as
   * {@link addTied} ties them (buffer i at `addr0 + i × stride`, `len`
   * bytes, device-writable, token i): with VIRTIO_F_IN_ORDER and the ring
   * full, used chains are taken as {@link popUsedBurst} takes them and each
   * is made available again in the same pass, with the id and slot addTied
   * would give it (same ring memory and state after as popUsedBurst followed
   * by addTied of those chains; only changed words are written). Nothing
   * re-added is visible before {@link publish}, so the caller may read the
   * buffers until then. Chains the per-chain path took (a batch, an error
   * path) are not re-added (`numFree` grew by them): the caller re-adds them
   * with addTied. Returns the chains taken.
   * @throws as {@link popUsedBurst}.
   */
  recycleBurst(tokens: Int32Array, lens: Int32Array, max: number, addr0: number, stride: number, len: number): number;
  /** Ring position of the next used entry to read (0..size-1): bursts may end on a cache-line boundary. */
  readonly nextUsed: number;
  readonly usedLen: number;
  readonly usedToken: number;
  /** Ask for (true) or suppress (false) used-buffer notifications; after enabling, check usedPending() again. */
  setNotification(enable: boolean): void;
  /** Where the ring stands: `avail` = next index/position the driver fills, `used` = next it reclaims. */
  state(): QueueState;
  /**
   * Restart from a saved position (the driver side of vhost-user
   * SET_VRING_BASE, e.g. after a reconnect, or a queue rebuilt over rings
   * that already carried traffic): the next chain is added at `avail`, the
   * next used buffer is read at `used` (split: free-running u16 indexes;
   * packed: position | wrap counter << 15, see {@link QueueState}). Every
   * chain still outstanding is forgotten and its descriptors freed, as are
   * unpublished chains; the ring memory is left as it is (split: avail->idx
   * is set to `avail`). Tokens of forgotten chains never come back.
   * @throws QueueConfigError for a packed position outside the ring, a split
   * index above 0xffff, or a split `used` ahead of `avail`.
   */
  setState(s: QueueState): void;
}
