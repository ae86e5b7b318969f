/**
 * A flow's identity as a string (control path and checking only): the
 * 5-tuple for TCP/UDP, addresses and protocol for other IP, MAC addresses
 * and ethertype for everything else. Both directions are different flows.
 */
import { FlowKey, parseFlow } from '../net/flow.js';

const key = new FlowKey();

export function flowIdOf(frame: Uint8Array, off: number, len: number): string {
  if (parseFlow(frame, off, len, key)) {
    const src = key.l3 === 4 ? key.src4.toString(16) : Array.from(key.src6, (w) => w.toString(16)).join(':');
    const dst = key.l3 === 4 ? key.dst4.toString(16) : Array.from(key.dst6, (w) => w.toString(16)).join(':');
    return `${key.l3}|${src}|${dst}|${key.l4proto}|${key.hasPorts ? key.srcPort : ''}|${key.hasPorts ? key.dstPort : ''}`;
  }
  let s = 'l2|';
  for (let i = 0; i < 12 && i < len; i++) s += frame[off + i].toString(16).padStart(2, '0');
  return `${s}|${key.ethertype}`;
}
