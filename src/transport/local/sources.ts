/**
 * What each driver worker sends and checks: a structured-clonable spec
 * posted to the worker, turned into a {@link TrafficSource} there.
 */
import type { SourceCounters, TrafficSource } from '../../traffic/source.js';
import { PcapSource, type PcapTrafficSpec } from '../../traffic/pcap-source.js';
import { GeneratorSource, type GeneratorTrafficSpec } from '../../traffic/generator-source.js';
import { NullSource } from '../../traffic/null-source.js';
import { BenchSource, type BenchTrafficSpec } from '../../traffic/bench-source.js';

export type SourceSpec = PcapTrafficSpec | GeneratorTrafficSpec | BenchTrafficSpec | { kind: 'none' };

export function makeSource(spec: SourceSpec, pair: number, counters: SourceCounters): TrafficSource {
  switch (spec.kind) {
    case 'pcap':
      return new PcapSource(spec, pair, counters);
    case 'generator':
      return new GeneratorSource(spec, pair, counters);
    case 'bench':
      return new BenchSource(spec, pair, counters);
    case 'none':
      return new NullSource();
  }
}
