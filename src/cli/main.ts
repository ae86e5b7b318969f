#!/usr/bin/env node
/** virtio-mq command line. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { queueSizeProblem } from '../virtio/ring.js';
// The subcommands are imported when run: `serve` needs the native addon (src/host),
// `loopback` must not load it (it runs where the addon cannot be built).

/** Exit status for a bad command line (usage error, bad option value). */
const USAGE_EXIT = 2;

/** The package's version, from the package.json above this file (src/cli/ or dist/src/cli/). */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'virtio-mq' && pkg.version) return pkg.version;
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

const int = (name: string, min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
  return n;
};

/** A positive, finite number of seconds (fractions allowed). */
const seconds = (name: string, max: number) => (v: string): number => {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0 || n > max) throw new InvalidArgumentError(`${name} must be a number of seconds in (0, ${max}]`);
  return n;
};

/** Bad values end the process with one line on stderr, `virtio-mq: ...`, and exit status 2. */
class UsageError extends Error {}

const program = new Command();
program
  .name('virtio-mq')
  .description('Multi-queue virtio-net in TypeScript: device, driver, rings and steering')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  // Commander's own errors (unknown option, bad or missing value) as one line each.
  .configureOutput({ outputError: (str, write) => write(`virtio-mq: ${str.replace(/^error: /, '').trimEnd()}\n`) })
  .exitOverride();

program
  .command('loopback')
  .description('run driver and device in worker threads over a SharedArrayBuffer; every TX frame comes back on RX and is checked')
  .option('-q, --queues <n>', 'queue pairs', int('--queues', 1, 64), 4)
  .option('-f, --flows <n>', 'generated flows', int('--flows', 1, 65536), 16)
  .option('-s, --size <bytes>', 'generated frame size (Ethernet, no FCS): up to 14 + --mtu', int('--size', 60, 9728), 256)
  .option('--mtu <bytes>', 'device MTU (config mtu, VIRTIO_NET_F_MTU): frames up to 14 + MTU bytes', int('--mtu', 68, 9714), 1500)
  .option('--offloads', 'the driver negotiates checksum and segmentation offloads (VIRTIO_NET_F_CSUM, GUEST_CSUM, TSO, UFO, USO)', false)
  .option('-d, --duration <seconds>', 'how long to send (seconds, fractions allowed)', seconds('--duration', 86400), 3)
  .option('--proto <proto>', 'generated flows: udp, tcp or mixed', 'udp')
  .option('--ip <version>', 'generated flows: 4, 6 or mixed', '4')
  .option('--pcap <file>', 'replay this capture (pcap or pcapng) instead of generated flows')
  .option('--rss', 'program RSS (Toeplitz, default key, 128-entry table) through the controlq', false)
  .option('--resize <pairs>', 'halfway through, change the active pair count with VQ_PAIRS_SET', (v) => int('--resize', 1, 64)(v))
  .option('--mode <mode>', 'worker wait mode: notify (Atomics.wait + EVENT_IDX) or busy (poll)', 'notify')
  .option('--queue-size <n>', 'descriptors per receiveq/transmitq (split: a power of two; packed: any size)', int('--queue-size', 1, 32768), 256)
  .option('--ring <format>', 'virtqueue format: split (§2.7) or packed (§2.8)', 'split')
  .option('--in-order', 'negotiate VIRTIO_F_IN_ORDER (buffers used in the order made available)', false)
  .option('--rx-buffer-size <bytes>', 'RX buffer size the driver posts (MRG_RXBUF spreads larger frames over several)', int('--rx-buffer-size', 64, 65536))
  .option('--json', 'print the summary as JSON', false)
  .action(async (opts) => {
    if (opts.mode !== 'busy' && opts.mode !== 'notify') throw new UsageError('--mode must be busy or notify');
    if (!['udp', 'tcp', 'mixed'].includes(opts.proto)) throw new UsageError('--proto must be udp, tcp or mixed');
    if (!['4', '6', 'mixed'].includes(opts.ip)) throw new UsageError('--ip must be 4, 6 or mixed');
    opts.ipVersion = opts.ip === 'mixed' ? 'mixed' : Number(opts.ip);
    if (opts.ring !== 'split' && opts.ring !== 'packed') throw new UsageError('--ring must be split or packed');
    const problem = queueSizeProblem(opts.ring, opts.queueSize);
    if (problem) throw new UsageError(`--queue-size: ${problem}`);
    if (opts.resize !== undefined && opts.resize > opts.queues)
      throw new UsageError(`--resize ${opts.resize}: at most --queues (${opts.queues}) pairs exist`);
    if (opts.resize !== undefined && opts.pcap !== undefined) throw new UsageError('--resize works with generated flows, not with --pcap');
    // Guest memory (one SharedArrayBuffer): 2 buffers per descriptor per pair, 2 KiB or the RX buffer size.
    const bufBytes = Math.max(2048, opts.rxBufferSize ?? 0);
    const memMiB = (opts.queues * 2 * opts.queueSize * bufBytes) / 2 ** 20;
    if (memMiB > 1024)
      throw new UsageError(`--queues ${opts.queues} × --queue-size ${opts.queueSize} × ${bufBytes}-byte buffers need ${memMiB} MiB of guest memory (at most 1024 MiB)`);
    // A frame of --size bytes (plus the 12-byte virtio-net header) must fit in the buffers one receiveq holds.
    if (opts.rxBufferSize !== undefined && Math.ceil((opts.size + 12) / opts.rxBufferSize) > opts.queueSize)
      throw new UsageError(`--rx-buffer-size ${opts.rxBufferSize}: a ${opts.size}-byte frame needs ${Math.ceil((opts.size + 12) / opts.rxBufferSize)} RX buffers, more than --queue-size ${opts.queueSize}`);
    if (opts.size > 14 + opts.mtu) throw new UsageError(`--size ${opts.size}: larger than an Ethernet frame of --mtu ${opts.mtu} (${14 + opts.mtu} bytes)`);
    if (opts.pcap !== undefined) checkReadableFile('--pcap', opts.pcap);
    const { runLoopback } = await import('./loopback.js');
    const ok = await runLoopback(opts);
    process.exitCode = ok ? 0 : 1;
  });

program
  .command('serve')
  .description('vhost-user back-end for QEMU, cloud-hypervisor or DPDK virtio-user: one worker per queue pair, frames to a netdev')
  .requiredOption('--socket <path>', 'vhost-user unix socket')
  .option('--client', 'connect to the socket (the front-end listens) and reconnect with back-off', false)
  .option('-q, --queues <n>', 'queue pairs offered (GET_QUEUE_NUM)', int('--queues', 1, 256), 1)
  .option('--queue-size <n>', 'largest vring size accepted', int('--queue-size', 1, 32768), 1024)
  .option('--netdev <spec>', 'tap,ifname=NAME | loopback | sink | generator,flows=F,size=S | pcap,file=F[,write=OUT]', 'loopback')
  .option('--rss [spec]', 'steer netdev frames by RSS: [key=HEX][,types=tcpv4+udpv4+...|all][,table=N] (default key, all types, 128 entries)')
  .option('--mode <mode>', 'worker wait mode: notify (eventfd kicks, EVENT_IDX) or busy (poll)', 'notify')
  .option('--mtu <bytes>', 'MTU: config mtu (VIRTIO_NET_F_MTU) and the TAP\'s MTU; frames up to 14 + MTU bytes', int('--mtu', 68, 9714), 1500)
  .option('--json', 'log lines and per-second statistics as JSON lines', false)
  .action(async (opts) => {
    if (opts.mode !== 'busy' && opts.mode !== 'notify') throw new UsageError('--mode must be busy or notify');
    if (!opts.client) {
      const dir = dirname(resolve(opts.socket));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--socket ${opts.socket}: directory ${dir} does not exist`);
    }
    const { runServe } = await import('./serve.js');
    await runServe(opts);
  });

function checkReadableFile(option: string, file: string): void {
  if (!existsSync(file)) throw new UsageError(`${option} ${file}: no such file`);
  if (!statSync(file).isFile()) throw new UsageError(`${option} ${file}: not a regular file`);
}

program.parseAsync().catch((e: unknown) => {
  if (e instanceof CommanderError) {
    // --help and --version exit 0; everything else commander reports (already printed
    // as one line by outputError) is a usage error.
    process.exitCode = e.exitCode === 0 ? 0 : USAGE_EXIT;
    return;
  }
  // Errors found while starting (a bad --netdev spec, an unreadable capture, a socket
  // that cannot be bound) are one line too: the message, never a stack trace.
  console.error(`virtio-mq: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = USAGE_EXIT;
});
