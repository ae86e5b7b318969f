/**
 * `--netdev` for `virtio-mq serve`, in QEMU's `-netdev` style:
 *   tap,ifname=NAME            multi-queue TAP, one queue fd per pair (created if missing)
 *   loopback                   every TX frame comes back on RX (steered by RSS or flow)
 *   sink                       TX frames are read and counted
 *   generator,flows=F,size=S[,proto=udp|tcp|mixed][,template=on]   frames from outside, steered by RSS or flow
 *                              (template=on: one prebuilt frame per flow, seq stamped, like DPDK txonly)
 *   pcap,file=F[,write=OUT][,loop=on]                replay F into RX; record TX into OUT.q<pair>.pcap
 */
import { execFileSync } from 'node:child_process';
import { tunOpen, tunSetCarrier, tunSetOffload, tunSetVnetHdrSize, linkSetUp, close } from '../host/index.js';
import { readPcapFile } from '../netdev/pcap.js';
import type { NetdevSpec } from '../netdev/spec.js';
import type { NetdevWatch } from '../transport/vhost-user/link.js';
import { readFileSync } from 'node:fs';

export interface OpenedNetdev {
  spec: NetdevSpec;
  /** What to release at exit (TAP queue fds: the ones open now). */
  close(): void;
  describe: string;
  /** A TAP: watched while serve runs, re-opened when deleted and re-created (transport/vhost-user/link.ts). */
  watch?: NetdevWatch;
  /**
   * A TAP: its carrier on (a front-end runs the device) or off (none does:
   * the kernel shows NO-CARRIER). Kept across a re-open. TUNSETCARRIER.
   * @throws HostError (EINVAL before Linux 4.19)
   */
  carrier?(on: boolean): void;
}

/** Parse `kind,key=value,...`. @throws Error with a clear message for anything malformed. */
export function parseNetdev(text: string): { kind: string; opts: Map<string, string> } {
  const [kind, ...rest] = text.split(',');
  const opts = new Map<string, string>();
  for (const kv of rest) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`--netdev ${text}: "${kv}" is not key=value`);
    opts.set(kv.slice(0, i), kv.slice(i + 1));
  }
  return { kind, opts };
}

/** Open what the netdev needs (TAP queues) and build the workers' backend spec. */
export function openNetdev(text: string, pairs: number, hdrLen = 12, mtu?: number): OpenedNetdev {
  const { kind, opts } = parseNetdev(text);
  const num = (k: string, dflt: number): number => {
    const v = opts.get(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--netdev ${kind}: ${k}=${v} is not a positive integer`);
    return n;
  };
  switch (kind) {
    case 'loopback':
    case 'sink':
      return { spec: { kind }, close: () => {}, describe: kind };
    case 'generator': {
      const proto = (opts.get('proto') ?? 'udp') as 'udp' | 'tcp' | 'mixed';
      if (!['udp', 'tcp', 'mixed'].includes(proto)) throw new Error(`--netdev generator: proto=${proto} is not udp, tcp or mixed`);
      const flows = num('flows', 64), size = num('size', 64);
      const template = opts.get('template') === 'on';
      return { spec: { kind: 'generator', flows, size, proto, template, onFull: 'pace' }, close: () => {}, describe: `generator ${flows} flows × ${size} B${template ? ' (template)' : ''}` };
    }
    case 'pcap': {
      const file = opts.get('file');
      const write = opts.get('write');
      if (!file && !write) throw new Error('--netdev pcap needs file=CAPTURE and/or write=OUT');
      const read = file ? readPcapFile(file).toSharedArrayBuffer() : undefined;
      return { spec: { kind: 'pcap', read, write, loop: opts.get('loop') === 'on' }, close: () => {}, describe: `pcap ${file ?? ''}${write ? ` → ${write}` : ''}` };
    }
    case 'tap': {
      const ifname = opts.get('ifname');
      if (!ifname) throw new Error('--netdev tap needs ifname=NAME');
      const open = (): number[] => {
        const fds: number[] = [];
        try {
          for (let p = 0; p < pairs; p++) {
            const t = tunOpen(ifname, { multiQueue: true, vnetHdr: true, nonblock: true });
            fds.push(t.fd);
            tunSetVnetHdrSize(t.fd, hdrLen);
            tunSetOffload(t.fd, 0); // no GSO/csum offloads: every frame is a plain, checksummed frame
          }
          if (mtu !== undefined && mtu !== 1500) setLinkMtu(ifname, mtu);
          linkSetUp(ifname, true);
        } catch (e) {
          for (const fd of fds) close(fd);
          throw e;
        }
        return fds;
      };
      // The queue fds open now: the first ones, or those of the TAP re-opened after it was re-created.
      let fds = open();
      // Carrier as serve last set it (null: never set; the kernel turns it on when a queue fd attaches).
      let carrierOn: boolean | null = null;
      const closeAll = (list: number[]) => list.forEach((fd) => {
        try {
          close(fd);
        } catch {
          /* already closed */
        }
      });
      const watch: NetdevWatch = {
        name: ifname,
        identity: () => tapIfindex(ifname),
        reopen: () => {
          const next = open();
          fds = next;
          if (carrierOn !== null) {
            try {
              tunSetCarrier(next[0], carrierOn);
            } catch {
              /* reported when serve set it first */
            }
          }
          return { kind: 'tap', fds: next, hdrLen };
        },
        release: (spec) => {
          if (spec.kind === 'tap' && spec.fds !== fds) closeAll(spec.fds);
        },
      };
      const carrier = (on: boolean): void => {
        carrierOn = on;
        tunSetCarrier(fds[0], on);
      };
      return { spec: { kind: 'tap', fds, hdrLen }, close: () => closeAll(fds), describe: `tap ${ifname} (${pairs} queues)`, watch, carrier };
    }
    default:
      throw new Error(`--netdev ${kind}: unknown (tap, loopback, sink, generator, pcap)`);
  }
}

/** The ifindex of interface `name` (sysfs), or null when there is none. */
function tapIfindex(name: string): number | null {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8'));
  } catch {
    return null;
  }
}

/** The interface's MTU (`ip link set dev NAME mtu N`). @throws Error with ip's message. */
export function setLinkMtu(ifname: string, mtu: number): void {
  try {
    execFileSync('ip', ['link', 'set', 'dev', ifname, 'mtu', String(mtu)], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = (e as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`--mtu ${mtu}: cannot set the MTU of ${ifname}: ${err || (e as Error).message}`);
  }
}
