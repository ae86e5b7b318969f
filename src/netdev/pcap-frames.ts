/** Read a capture's Ethernet frames (pcap or pcapng) as one array. */
import { readPcapFile } from './pcap.js';

export function readPcapFrames(path: string): Uint8Array[] {
  const cap = readPcapFile(path);
  const out: Uint8Array[] = [];
  for (let i = 0; i < cap.count; i++) out.push(cap.frame(i).slice());
  return out;
}
