/** Every fuzz target, by name. */
import type { FuzzTarget } from '../target.js';
import { ringTargets } from './rings.js';
import { vhostCodecTarget } from './vhost-codec.js';
import { ctrlTarget, frameTarget, pcapTarget } from './net.js';
import { vhostSessionTarget } from './vhost-session.js';

export const TARGETS: FuzzTarget[] = [vhostCodecTarget, vhostSessionTarget, ...ringTargets, ctrlTarget, pcapTarget, frameTarget];

export function target(name: string): FuzzTarget {
  const t = TARGETS.find((x) => x.name === name);
  if (!t) throw new Error(`unknown target ${name} (targets: ${TARGETS.map((x) => x.name).join(', ')})`);
  return t;
}
