/** One fuzz harness: `one` runs a case and throws only on a finding (FuzzFinding, or anything untyped escaping the code under test). */
export interface FuzzTarget {
  name: string;
  description: string;
  /** Longest input generated. */
  maxLen: number;
  /** `one` returns a promise (run with fc.asyncProperty). */
  async?: boolean;
  setup?(): void | Promise<void>;
  one(data: Uint8Array): void | Promise<void>;
  teardown?(): void | Promise<void>;
  /** Well-formed inputs the mutator starts from (also written to the corpus with --save-seeds). */
  seeds(): Uint8Array[];
  /** Counters of what the cases reached (printed by the runner: shows the harness gets past the first checks). */
  stats?: Record<string, number>;
}
