/**
 * Which netdev sits behind a device worker's queue pair: a structured-clonable
 * spec posted to the worker, turned into a {@link Netdev} there.
 */
import type { Netdev } from '../net/netdev.js';
import { LoopbackNetdev } from './loopback.js';
import { SinkNetdev } from './sink.js';
import { GeneratorNetdev, type GeneratorNetdevSpec } from './generator-netdev.js';
import { PcapNetdev, type PcapNetdevSpec } from './pcap-netdev.js';
import { TapNetdev } from './tap.js';

export type NetdevSpec =
  /** Every TX frame comes back on RX, steered by the device. */
  | { kind: 'loopback' }
  /** Every TX frame is copied out and counted (one-way benchmark). */
  | { kind: 'sink' }
  /** Generated frames from outside (RSS / flow steering pick the receiveq); TX counted, checked, discarded. */
  | GeneratorNetdevSpec
  /** Replay a capture into RX (lossless, per-flow order kept) and/or record TX into per-pair pcap files. */
  | PcapNetdevSpec
  /** A multi-queue TAP: `fds[pair]` is that pair's queue fd (opened non-blocking with a vnet header of `hdrLen` bytes). */
  | { kind: 'tap'; fds: number[]; hdrLen: number };

export function makeNetdev(spec: NetdevSpec, pair: number, maxPairs: number): Netdev {
  switch (spec.kind) {
    case 'loopback':
      return new LoopbackNetdev(pair);
    case 'sink':
      return new SinkNetdev();
    case 'generator':
      return new GeneratorNetdev(spec, pair, maxPairs);
    case 'pcap':
      return new PcapNetdev(spec, pair, maxPairs);
    case 'tap':
      return new TapNetdev(spec.fds[pair], spec.hdrLen);
  }
}
