/**
 * Which netdev sits behind a device worker's queue pair: a structured-clonable
 * spec posted to the worker, turned into a {@link PairBackend} there.
 */
import type { PairBackend } from '../../net/backend.js';
import { LoopbackBackend } from '../../netdev/loopback.js';
import { SinkBackend } from '../../netdev/sink.js';

export type BackendSpec =
  /** Every TX frame comes back on RX, steered by the device. */
  | { kind: 'loopback' }
  /** Every TX frame is copied out and counted (one-way benchmark). */
  | { kind: 'sink' };

export function makeBackend(spec: BackendSpec, pair: number, _maxPairs: number): PairBackend {
  switch (spec.kind) {
    case 'loopback':
      return new LoopbackBackend(pair);
    case 'sink':
      return new SinkBackend();
  }
}
