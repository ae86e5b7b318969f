/**
 * The dirty-page log of live migration (vhost-user.rst "Migration", the
 * kernel's VHOST_SET_LOG_BASE): a bitmap over guest physical memory, one bit
 * per {@link VHOST_LOG_PAGE}-byte page, that the front-end reads and clears
 * while it copies guest memory to the destination. Page `p` (= guest physical
 * address / 4096) is bit `p % 8` of byte `p / 8`: byte-wise little-endian, so
 * QEMU's view of the same bytes as u64 chunks on a little-endian host
 * matches bit for bit.
 *
 * The log is shared with the front-end and with every pair worker: marks are
 * atomic ORs (Atomics.or on a SharedArrayBuffer view), so concurrent marks
 * and the front-end's atomic clear (QEMU's `qatomic_xchg` per u64) never lose
 * a bit. A mark comes after the write it records: the front-end may clear
 * and copy a page at any moment, and a bit set before the write could be
 * cleared with the page copied before the data landed.
 *
 * Pages past the end of the log cannot be recorded: they are counted in
 * {@link DirtyLog.dropped} (the front-end sizes the log to cover every guest
 * region, so this stays 0 with a well-behaved front-end) and never written.
 */

/** Log page size in bytes (`VHOST_LOG_PAGE`). */
export const VHOST_LOG_PAGE = 0x1000;

export class DirtyLog {
  /** The bitmap: byte `p / 8`, bit `p % 8` for page `p`. */
  readonly bits: Uint8Array;
  /** Pages that fell past the end of the log (not recorded). */
  dropped = 0;

  /**
   * @param buffer the log's shared memory (an mmap of the front-end's log fd, or any SAB in tests)
   * @param byteOffset where page 0's byte starts in `buffer`
   * @param byteLength log size in bytes (covers byteLength·8·4096 bytes of guest physical address space)
   * @throws RangeError when the range does not fit `buffer`
   */
  constructor(readonly buffer: SharedArrayBuffer, byteOffset = 0, byteLength = buffer.byteLength - byteOffset) {
    if (!Number.isSafeInteger(byteOffset) || !Number.isSafeInteger(byteLength) || byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > buffer.byteLength)
      throw new RangeError(`dirty log [${byteOffset}, +${byteLength}) does not fit its ${buffer.byteLength}-byte buffer`);
    this.bits = new Uint8Array(buffer, byteOffset, byteLength);
  }

  /** Guest physical bytes the log covers. */
  get coverage(): number {
    return this.bits.length * 8 * VHOST_LOG_PAGE;
  }

  /**
   * Mark every page of `[addr, addr+len)` dirty (guest physical address,
   * bytes). `len` 0 marks nothing. Hot path of the logging queues: no
   * allocation.
   */
  mark(addr: number, len: number): void {
    if (!(len > 0)) return;
    const bits = this.bits;
    const n = bits.length;
    let page = Math.floor(addr / VHOST_LOG_PAGE);
    const last = Math.floor((addr + len - 1) / VHOST_LOG_PAGE);
    for (; page <= last; page++) {
      const i = Math.floor(page / 8);
      if (i >= n) {
        this.dropped += last - page + 1;
        return;
      }
      // Always the locked OR, never "skip when already set": a plain load could see the bit
      // before the front-end clears it while the data store still sits in this core's store
      // buffer (x86 reorders a store with a later load); the OR is a full barrier.
      Atomics.or(bits, i, 1 << (page % 8));
    }
  }

  /** Whether page `page` (guest physical address / 4096) is marked. */
  isDirty(page: number): boolean {
    const i = Math.floor(page / 8);
    return i < this.bits.length && (Atomics.load(this.bits, i) & (1 << (page % 8))) !== 0;
  }

  /** Every marked page, ascending (tests, diagnostics). */
  dirtyPages(): number[] {
    const out: number[] = [];
    const bits = this.bits;
    for (let i = 0; i < bits.length; i++) {
      const b = Atomics.load(bits, i);
      if (b === 0) continue;
      for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
    }
    return out;
  }

  /** Clear every bit, as the front-end does when it syncs (tests). */
  clear(): void {
    for (let i = 0; i < this.bits.length; i++) Atomics.store(this.bits, i, 0);
  }
}
