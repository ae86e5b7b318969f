/**
 * Guest memory for the ring harnesses with canaries: every region lives in
 * its own SharedArrayBuffer between two guard zones filled with a pattern,
 * and {@link GuardedMemory.check} (run after every case) fails if any byte
 * of a guard changed: a write outside guest memory.
 */
import { GuestMemory, type RegionSpec } from '../../src/virtio/memory.js';

/** Guard bytes on each side of a region (typed arrays cannot reach past their buffer, so a stray write lands here). */
export const GUARD = 1024;
const CANARY_WORD = 0xa5a5a5a5;

export interface GuardedRegionSpec {
  gpa: number;
  size: number;
}

export class GuardedMemory {
  readonly mem: GuestMemory;
  private readonly views: Uint32Array[];

  constructor(readonly regions: readonly GuardedRegionSpec[]) {
    const specs: RegionSpec[] = [];
    this.views = [];
    for (const r of regions) {
      const sab = new SharedArrayBuffer(GUARD + r.size + GUARD);
      if (r.size % 8 !== 0) throw new RangeError('guarded region sizes are multiples of 8');
      const v = new Uint32Array(sab);
      v.fill(CANARY_WORD, 0, GUARD / 4);
      v.fill(CANARY_WORD, (GUARD + r.size) / 4);
      this.views.push(v);
      specs.push({ guestPhysAddr: r.gpa, size: r.size, buffer: sab, bufferOffset: GUARD });
    }
    this.mem = new GuestMemory(specs);
  }

  /** Zero every region (guards untouched). */
  clear(): void {
    this.regions.forEach((r, i) => this.views[i].fill(0, GUARD / 4, (GUARD + r.size) / 4));
  }

  /** Index and offset of the first guard byte that changed, or null. */
  violation(): string | null {
    for (let i = 0; i < this.views.length; i++) {
      const v = this.views[i];
      const size = this.regions[i].size;
      for (let j = 0; j < GUARD / 4; j++) if (v[j] !== CANARY_WORD) return `region ${i}: guard word ${j * 4 - GUARD} before the region was written`;
      for (let j = (GUARD + size) / 4; j < v.length; j++) if (v[j] !== CANARY_WORD) return `region ${i}: guard byte ${j * 4 - GUARD - size} after the region was written`;
    }
    return null;
  }

  /** @throws FuzzFinding when a guard changed. */
  check(): void {
    const v = this.violation();
    if (v !== null) throw new FuzzFinding(`write outside guest memory: ${v}`);
  }
}

/** A property the harness checks failed: a real finding (not a typed error of the code under test). */
export class FuzzFinding extends Error {
  override readonly name = 'FuzzFinding';
}
