/**
 * Strict conformance, ring rules: which rule of the virtio spec each typed
 * ring error means, with the section and the spec's own words, and the
 * monitor that counts violations and reports each rule once.
 *
 * Sections and words are from the spec text in the repository's reference
 * (virtio spec v1.4 draft: split rings §2.7, packed rings §2.8; numbering as
 * that text's LaTeX sectioning gives it, e.g. §2.7.6.1 "Driver Requirements:
 * The Virtqueue Available Ring"). `normative` is true when the words are a
 * MUST of a Driver/Device Requirements section, false when the spec states
 * the fact only in its descriptive text (an index into the descriptor table,
 * a Buffer ID naming one outstanding buffer) and the violation makes the
 * ring meaningless rather than breaking a stated MUST.
 *
 * The device side checks the driver (every DescriptorError a device queue
 * throws, plus the strict-only checks of strict-device.ts); the driver side
 * checks the device (USED_ID_INVALID, USED_LEN_INVALID, USED_IDX_JUMP from
 * the driver queues). Net-level rules live in src/net/conformance.ts and use
 * the same {@link ConformanceMonitor}.
 */
import type { RingFormat } from './queue.js';

/** One rule of the spec. */
export interface SpecRule {
  /** Stable identifier, e.g. `split.avail-idx-decrement`. */
  id: string;
  /** Section number without the §, e.g. `2.7.6.1`. */
  section: string;
  /** The section's title. */
  title: string;
  /** The spec's words (LaTeX markup removed). */
  words: string;
  /** Which end the rule binds: the one that broke it. */
  by: 'driver' | 'device';
  /** A MUST of a requirements section (true), or descriptive text the violation contradicts (false). */
  normative: boolean;
}

const rule = (id: string, section: string, title: string, by: 'driver' | 'device', normative: boolean, words: string): SpecRule =>
  ({ id, section, title, words, by, normative });

const DT_SPLIT = 'Driver Requirements: The Virtqueue Descriptor Table';
const IND_SPLIT = 'Driver Requirements: Indirect Descriptors';

/** Every ring rule, by id. */
export const RING_RULES = {
  // ---- split virtqueue, broken by the driver (§2.7) ----
  splitFraming: rule('split.framing', '2.7.4.2', 'Driver Requirements: Message Framing', 'driver', true,
    'The driver MUST place any device-writable descriptor elements after any device-readable descriptor elements.'),
  splitLoop: rule('split.chain-loop', '2.7.5.2', DT_SPLIT, 'driver', true,
    'Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total; this implies that loops in the descriptor chain are forbidden!'),
  splitIndirectFeature: rule('split.indirect-not-negotiated', '2.7.5.3.1', IND_SPLIT, 'driver', true,
    'The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated.'),
  splitIndirectNested: rule('split.indirect-nested', '2.7.5.3.1', IND_SPLIT, 'driver', true,
    'The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an indirect descriptor (ie. only one table per descriptor).'),
  splitChainQueueSize: rule('split.chain-longer-than-queue', '2.7.5.3.1', IND_SPLIT, 'driver', true,
    'A driver MUST NOT create a descriptor chain longer than the Queue Size of the device.'),
  splitIndirectNext: rule('split.indirect-with-next', '2.7.5.3.1', IND_SPLIT, 'driver', true,
    'A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT in flags.'),
  splitIndirectLength: rule('split.indirect-length', '2.7.5.3', 'Indirect Descriptors', 'driver', false,
    'addr and len refer to the indirect table address and length in bytes, respectively. [...] struct virtq_desc desc[len / 16];'),
  splitDescIndex: rule('split.desc-index', '2.7.6', 'The Virtqueue Available Ring', 'driver', false,
    'The driver uses the available ring to offer buffers to the device: each ring entry refers to the head of a descriptor chain.'),
  splitAvailDecrement: rule('split.avail-idx-decrement', '2.7.6.1', 'Driver Requirements: The Virtqueue Available Ring', 'driver', true,
    'A driver MUST NOT decrement the available idx on a virtqueue (ie. there is no way to "unexpose" buffers).'),
  splitAvailOverrun: rule('split.avail-more-than-queue-size', '2.7.6', 'The Virtqueue Available Ring', 'driver', false,
    'idx field indicates where the driver would put the next descriptor entry in the ring (modulo the queue size).'),
  splitBufferAddress: rule('split.buffer-address', '2.7.5', 'The Virtqueue Descriptor Table', 'driver', false,
    'The descriptor table refers to the buffers the driver is using for the device. addr is a physical address'),
  // ---- packed virtqueue, broken by the driver (§2.8) ----
  packedFraming: rule('packed.framing', '2.8.17', 'Driver Requirements: Scatter-Gather Support', 'driver', true,
    'The driver MUST place any device-writable descriptor elements after any device-readable descriptor elements.'),
  packedListLength: rule('packed.list-longer-than-queue', '2.8.17', 'Driver Requirements: Scatter-Gather Support', 'driver', true,
    'A driver MUST NOT create a descriptor list longer than the Queue Size. This implies that loops in the descriptor list are forbidden!'),
  packedListDevice: rule('packed.list-longer-than-allowed', '2.8.17', 'Driver Requirements: Scatter-Gather Support', 'driver', true,
    'A driver MUST NOT create a descriptor list longer than allowed by the device.'),
  packedIndirectFeature: rule('packed.indirect-not-negotiated', '2.8.19', 'Driver Requirements: Indirect Descriptors', 'driver', true,
    'The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the VIRTIO_F_INDIRECT_DESC feature was negotiated.'),
  packedIndirectFlags: rule('packed.indirect-flags', '2.8.19', 'Driver Requirements: Indirect Descriptors', 'driver', true,
    'The driver MUST NOT set any flags except DESC_F_WRITE within an indirect descriptor.'),
  packedIndirectInList: rule('packed.indirect-in-list', '2.8.19', 'Driver Requirements: Indirect Descriptors', 'driver', true,
    'A driver MUST NOT write direct descriptors with VIRTQ_DESC_F_INDIRECT set in a scatter-gather list linked by VIRTQ_DESC_F_NEXT.'),
  packedIndirectLength: rule('packed.indirect-length', '2.8.7', 'Indirect Flag: Scatter-Gather Support', 'driver', false,
    'addr and len refer to the indirect table address and length in bytes, respectively.'),
  packedBufferId: rule('packed.buffer-id-range', '2.8', 'Packed Virtqueues', 'driver', false,
    'The descriptor(s) are associated with a buffer by means of a Buffer ID stored within the descriptor.'),
  packedBufferIdInFlight: rule('packed.buffer-id-in-flight', '2.8', 'Packed Virtqueues', 'driver', false,
    'The descriptor(s) are associated with a buffer by means of a Buffer ID stored within the descriptor. [...] When the device has finished processing the buffer, it writes a used device descriptor including the Buffer ID'),
  packedBufferAddress: rule('packed.buffer-address', '2.8.4', 'Element Address and Length', 'driver', false,
    'In an available descriptor, Element Address corresponds to the physical address of the buffer element.'),
  // ---- broken by the device (the driver side checks) ----
  splitUsedId: rule('split.used-id', '2.7.8', 'The Virtqueue Used Ring', 'device', false,
    'id indicates the head entry of the descriptor chain describing the buffer (this matches an entry placed in the available ring by the guest earlier)'),
  splitUsedLen: rule('split.used-len', '2.7.8.2', 'Device Requirements: The Virtqueue Used Ring', 'device', true,
    'The device MUST write at least len bytes to descriptor, beginning at the first device-writable buffer, prior to updating the used idx.'),
  splitUsedIdx: rule('split.used-idx', '2.7.8', 'The Virtqueue Used Ring', 'device', false,
    'The used ring is where the device returns buffers once it is done with them [...] idx field indicates where the device would put the next descriptor entry in the ring (modulo the queue size).'),
  packedUsedId: rule('packed.used-id', '2.8', 'Packed Virtqueues', 'device', false,
    'When the device has finished processing the buffer, it writes a used device descriptor including the Buffer ID into the Descriptor Ring (overwriting a driver descriptor previously made available)'),
  packedUsedLen: rule('packed.used-len', '2.8.4', 'Element Address and Length', 'device', false,
    'In a used descriptor, Element Address is unused. Element Length specifies the length of the buffer that has been initialized (written to) by the device.'),
} as const satisfies Record<string, SpecRule>;

/**
 * The rule a ring error breaks, from its code (errors.ts) and message, for
 * the ring format in use; null for a code no rule covers (not a ring error).
 */
export function ringRuleFor(code: string, message: string, format: RingFormat): SpecRule | null {
  const R = RING_RULES;
  const packed = format === 'packed';
  switch (code) {
    case 'READABLE_AFTER_WRITABLE': return packed ? R.packedFraming : R.splitFraming;
    case 'CHAIN_TOO_LONG':
      // An indirect table with more entries than the queue size; otherwise more hops than descriptors: a loop.
      if (packed) return R.packedListLength;
      return /indirect table of \d+ entries/.test(message) ? R.splitChainQueueSize : R.splitLoop;
    case 'CHAIN_BYTES_TOO_LARGE': return packed ? R.packedListDevice : R.splitLoop;
    case 'INDIRECT_NOT_NEGOTIATED': return packed ? R.packedIndirectFeature : R.splitIndirectFeature;
    case 'NESTED_INDIRECT': return packed ? R.packedIndirectFlags : R.splitIndirectNested;
    case 'INDIRECT_WITH_NEXT': return packed ? R.packedIndirectInList : R.splitIndirectNext;
    case 'INDIRECT_BAD_LENGTH': return packed ? R.packedIndirectLength : R.splitIndirectLength;
    case 'DESC_INDEX_OUT_OF_RANGE': return R.splitDescIndex;
    case 'AVAIL_IDX_DECREMENT': return R.splitAvailDecrement;
    case 'AVAIL_IDX_JUMP': return R.splitAvailOverrun;
    case 'BUFFER_OUT_OF_RANGE':
    case 'GUEST_MEMORY_OUT_OF_RANGE': return packed ? R.packedBufferAddress : R.splitBufferAddress;
    case 'ID_OUT_OF_RANGE': return R.packedBufferId;
    case 'ID_IN_FLIGHT': return R.packedBufferIdInFlight;
    case 'USED_ID_INVALID': return packed ? R.packedUsedId : R.splitUsedId;
    case 'USED_LEN_INVALID': return packed ? R.packedUsedLen : R.splitUsedLen;
    case 'USED_IDX_JUMP': return R.splitUsedIdx;
    default: return null;
  }
}

/** One violation as recorded: where it happened and the offending values. */
export interface ViolationDetail {
  /** Virtqueue index (receiveqN = 2(N-1), transmitqN = 2(N-1)+1, controlq = 2·max_virtqueue_pairs), -1 when none. */
  queue: number;
  /** The offending values, in words (the typed error's message). */
  values: string;
}

export interface RuleReport extends SpecRule {
  /** Violations counted. */
  count: number;
  /** The first one. */
  first: ViolationDetail;
}

/** What --strict prints at exit (text via {@link formatConformance}, or this as JSON). */
export interface ConformanceReport {
  strict: true;
  /** Violations counted, all rules. */
  violations: number;
  /** One entry per rule broken, in the order first broken. */
  rules: RuleReport[];
}

/**
 * Counts violations per rule and reports each rule the first time it is
 * broken (through `onFirst`); {@link report} summarises. Cheap enough for
 * the control plane; never on a hot path (violations stop the queue they
 * happen on).
 */
export class ConformanceMonitor {
  private readonly byId = new Map<string, RuleReport>();
  total = 0;

  constructor(private readonly onFirst: (r: RuleReport) => void = () => {}) {}

  /** Record a violation of `rule`. Returns true when it is the rule's first. */
  record(rule: SpecRule, queue: number, values: string): boolean {
    this.total++;
    const known = this.byId.get(rule.id);
    if (known) {
      known.count++;
      return false;
    }
    const r: RuleReport = { ...rule, count: 1, first: { queue, values } };
    this.byId.set(rule.id, r);
    this.onFirst(r);
    return true;
  }

  /**
   * Record a typed ring error (code and message as a worker reports it).
   * `checkedBy` is the end that found it (the device checks the driver, a
   * driver the device): a rule binding that same end is not counted.
   * Returns the rule, or null when the code is no rule's (then nothing is counted).
   */
  recordRingError(code: string, message: string, queue: number, format: RingFormat, checkedBy: 'device' | 'driver' = 'device'): SpecRule | null {
    const found = ringRuleFor(code, message, format);
    const rule = found && found.by !== checkedBy ? found : null;
    if (rule) this.record(rule, queue, message.replace(/^queue -?\d+: /, '')); // the queue is reported on its own
    return rule;
  }

  /** Violations per rule id (for statistics and metrics). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [id, r] of this.byId) out[id] = r.count;
    return out;
  }

  report(): ConformanceReport {
    return { strict: true, violations: this.total, rules: [...this.byId.values()].map((r) => ({ ...r, first: { ...r.first } })) };
  }
}

/** One line for the first violation of a rule (logged as it happens). */
export function formatViolation(r: RuleReport): string {
  const q = r.first.queue >= 0 ? `queue ${r.first.queue}: ` : '';
  return `strict: the ${r.by} broke §${r.section} ${r.title}: "${r.words}" (${q}${r.first.values})`;
}

/** The report as text, one block per rule. */
export function formatConformance(rep: ConformanceReport): string {
  if (rep.violations === 0) return 'strict conformance: no violations of the spec';
  const lines = [`strict conformance: ${rep.violations} violation${rep.violations === 1 ? '' : 's'} of ${rep.rules.length} rule${rep.rules.length === 1 ? '' : 's'}`];
  for (const r of rep.rules) {
    lines.push(`  §${r.section} ${r.title} (broken by the ${r.by}, ${r.count}×${r.normative ? '' : ', descriptive text'})`);
    lines.push(`    "${r.words}"`);
    lines.push(`    first: ${r.first.queue >= 0 ? `queue ${r.first.queue}: ` : ''}${r.first.values}`);
  }
  return lines.join('\n');
}
