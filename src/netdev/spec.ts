/**
 * Which netdev sits behind a device worker's queue pair: a structured-clonable
 * spec posted to the worker, turned into a {@link PairBackend} there.
 */
import type { PairBackend } from '../net/backend.js';
import { LoopbackBackend } from './loopback.js';
import { SinkBackend } from './sink.js';
import { GeneratorBackend, type GeneratorBackendSpec } from './generator-backend.js';
import { PcapBackend, type PcapBackendSpec } from './pcap-backend.js';
import { TapBackend } from './tap-backend.js';

export type BackendSpec =
  /** Every TX frame comes back on RX, steered by the device. */
  | { kind: 'loopback' }
  /** Every TX frame is copied out and counted (one-way benchmark). */
  | { kind: 'sink' }
  /** Generated frames from outside (RSS / flow steering pick the receiveq); TX counted, checked, discarded. */
  | GeneratorBackendSpec
  /** Replay a capture into RX (lossless, per-flow order kept) and/or record TX into per-pair pcap files. */
  | PcapBackendSpec
  /** A multi-queue TAP: `fds[pair]` is that pair's queue fd (opened non-blocking with a vnet header of `hdrLen` bytes). */
  | { kind: 'tap'; fds: number[]; hdrLen: number };

export function makeBackend(spec: BackendSpec, pair: number, maxPairs: number): PairBackend {
  switch (spec.kind) {
    case 'loopback':
      return new LoopbackBackend(pair);
    case 'sink':
      return new SinkBackend();
    case 'generator':
      return new GeneratorBackend(spec, pair, maxPairs);
    case 'pcap':
      return new PcapBackend(spec, pair, maxPairs);
    case 'tap':
      return new TapBackend(spec.fds[pair], spec.hdrLen);
  }
}
