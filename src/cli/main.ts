#!/usr/bin/env node
/** virtio-mq command line. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
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

/** HOST:PORT for --metrics / --http (checked here: a bad value is a usage error). */
const hostPort = (name: string) => (v: string): string => {
  if (!/^(?:\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):\d{1,5}$/.test(v) || Number(v.slice(v.lastIndexOf(':') + 1)) > 65535)
    throw new InvalidArgumentError(`${name} must be HOST:PORT (for example 127.0.0.1:9100 or [::1]:9100; port 0..65535)`);
  return v;
};

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** Options every running process has for being observed: control socket, Prometheus, live page. */
function observeOptions(cmd: Command): Command {
  return cmd
    .option('--control <path>', 'control socket for `virtio-mq stats` (default $XDG_RUNTIME_DIR or the temp directory, virtio-mq-PID.sock)')
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics', hostPort('--metrics'))
    .option('--http <host:port>', 'serve a live page at http://HOST:PORT/ (may share --metrics\'s address)', hostPort('--http'));
}

function checkControlPath(path: string | undefined): void {
  if (path === undefined) return;
  const dir = dirname(resolve(path));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--control ${path}: directory ${dir} does not exist`);
}

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

observeOptions(program
  .command('loopback'))
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
  .option('--json', 'print the summary as JSON (log lines: JSON lines on stderr)', false)
  .addOption(logLevelOption())
  .addOption(captureOption()).addOption(captureQueueOption()).addOption(captureDirOption()).addOption(captureSnaplenOption())
  .addOption(strictOption())
  .action(async (opts) => {
    checkLogLevel(opts.logLevel);
    checkCapture(opts, opts.queues);
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
    checkControlPath(opts.control);
    opts.observe = { control: opts.control, metrics: opts.metrics, http: opts.http };
    const { runLoopback } = await import('./loopback.js');
    const ok = await runLoopback(opts);
    process.exitCode = ok ? 0 : 1;
  });

observeOptions(program
  .command('serve'))
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
  .addOption(logLevelOption())
  .addOption(captureOption()).addOption(captureQueueOption()).addOption(captureDirOption()).addOption(captureSnaplenOption())
  .addOption(strictOption())
  .option('--group <name>', 'create the socket 0660 owned by this group (name or gid), for a front-end running as another user of it')
  .option('--config-notify', 'offer VHOST_USER_PROTOCOL_F_BACKEND_REQ + CONFIG: link changes reach the front-end as CONFIG_CHANGE_MSG (QEMU 7.2 virtio-net does not take them, and warns)', false)
  .action(async (opts) => {
    checkCapture(opts, opts.queues);
    if (opts.mode !== 'busy' && opts.mode !== 'notify') throw new UsageError('--mode must be busy or notify');
    checkLogLevel(opts.logLevel);
    checkControlPath(opts.control);
    if (opts.group !== undefined) {
      if (opts.client) throw new UsageError('--group: only for a listening socket (not with --client)');
      const { resolveGroup } = await import('../transport/vhost-user/group.js');
      const gid = resolveGroup(opts.group);
      if (gid === null) throw new UsageError(`--group ${opts.group}: no such group`);
      opts.group = gid;
    }
    if (!opts.client) {
      const dir = dirname(resolve(opts.socket));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--socket ${opts.socket}: directory ${dir} does not exist`);
    }
    const { runServe } = await import('./serve.js');
    await runServe(opts);
  });

program
  .command('stats')
  .description('show a running serve, attach or loopback: per-queue counters (xstats names), features, rings, memory, connection, uptime')
  .option('--control <path>', 'its control socket (default: the only virtio-mq-PID.sock in $XDG_RUNTIME_DIR or the temp directory)')
  .option('-w, --watch', 'show again every second, with rates (Ctrl-C ends)', false)
  .option('--interval <seconds>', 'seconds between --watch snapshots', seconds('--interval', 3600), 1)
  .option('--json', 'print the snapshot as JSON (--watch: one line each)', false)
  .action(async (opts) => {
    const { runStats } = await import('./stats.js');
    try {
      await runStats(opts);
    } catch (e) {
      // Nothing to read (no process, socket gone): one line, exit 1.
      console.error(`virtio-mq: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 1;
    }
  });

program
  .command('capture')
  .description('capture the queues of a running serve, attach or loopback into a pcapng file (one interface per queue pair), until Ctrl-C or --duration')
  .argument('<file>', 'pcapng file the running process writes')
  .option('--control <path>', 'its control socket (default: the only virtio-mq-PID.sock in $XDG_RUNTIME_DIR or the temp directory)')
  .option('--queue <n>', 'capture only this queue pair (0-based)', int('--queue', 0, 32767))
  .option('--dir <dir>', 'rx (receiveq), tx (transmitq) or both', 'both')
  .option('--snaplen <bytes>', 'bytes kept per frame', int('--snaplen', 1, 65535))
  .option('-d, --duration <seconds>', 'stop after this long', seconds('--duration', 86400))
  .option('--json', 'print the summary as JSON', false)
  .action(async (file: string, opts) => {
    if (!['rx', 'tx', 'both'].includes(opts.dir)) throw new UsageError('--dir must be rx, tx or both');
    const dir = dirname(resolve(file));
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${file}: directory ${dir} does not exist`);
    const { runCaptureCommand } = await import('./capture.js');
    try {
      await runCaptureCommand(file, opts);
    } catch (e) {
      // No process, or it refused (a capture running, a queue it does not have): one line, exit 1.
      console.error(`virtio-mq: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 1;
    }
  });

/** --log-level (pino, cli/log.ts), on serve, loopback and attach. */
function logLevelOption(): Option {
  return new Option('--log-level <level>', `log lines at this level and above: ${LOG_LEVELS.join(', ')}`).default('info');
}
function checkLogLevel(level: string): void {
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
}

/** Strict conformance (virtio/conformance.ts, net/conformance.ts), on serve, loopback (the device checks the driver) and attach (the driver checks the device). */
function strictOption(): Option {
  return new Option('--strict', 'report every spec rule the other end breaks (section, the spec\'s words, the values) once, and a summary at exit').default(false);
}

// Per-queue capture (transport/capture.ts), the same options on serve, attach and loopback.
function captureOption(): Option {
  return new Option('--capture <file>', 'write a pcapng capture of the queues: one interface per queue pair (qN), direction in each packet\'s flags');
}
function captureQueueOption(): Option {
  return new Option('--capture-queue <n>', 'capture only this queue pair (0-based)').argParser(int('--capture-queue', 0, 32767));
}
function captureDirOption(): Option {
  return new Option('--capture-dir <dir>', 'capture rx (receiveq), tx (transmitq) or both').default('both');
}
function captureSnaplenOption(): Option {
  return new Option('--capture-snaplen <bytes>', 'bytes kept per captured frame').argParser(int('--capture-snaplen', 1, 65535));
}

/** Capture options: values in range, a file in an existing directory, no filter without --capture. */
function checkCapture(opts: { capture?: string; captureQueue?: number; captureDir: string; captureSnaplen?: number }, queues: number): void {
  if (!['rx', 'tx', 'both'].includes(opts.captureDir)) throw new UsageError('--capture-dir must be rx, tx or both');
  if (opts.capture === undefined) {
    if (opts.captureQueue !== undefined || opts.captureSnaplen !== undefined || opts.captureDir !== 'both')
      throw new UsageError('--capture-queue, --capture-dir and --capture-snaplen need --capture FILE');
    return;
  }
  if (opts.captureQueue !== undefined && opts.captureQueue >= queues)
    throw new UsageError(`--capture-queue ${opts.captureQueue}: queue pairs are 0..${queues - 1}`);
  const dir = dirname(resolve(opts.capture));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--capture ${opts.capture}: directory ${dir} does not exist`);
  if (existsSync(opts.capture) && statSync(opts.capture).isDirectory()) throw new UsageError(`--capture ${opts.capture}: is a directory`);
}

observeOptions(program
  .command('attach'))
  .description('vhost-user front-end (the driver end, like DPDK virtio-user): drive a back-end (DPDK vhost, serve) with generated flows and check what comes back')
  .requiredOption('--socket <path>', 'vhost-user unix socket')
  .option('--server', 'listen on the socket (the back-end connects, e.g. testpmd net_vhost client=1); reconnects either way', false)
  .option('-q, --queues <n>', 'queue pairs (capped by the back-end)', int('--queues', 1, 128), 1)
  .option('--ring <format>', 'virtqueue format: split (§2.7) or packed (§2.8)', 'split')
  .option('--in-order', 'negotiate VIRTIO_F_IN_ORDER when offered', false)
  .option('--mrg-rxbuf', 'negotiate VIRTIO_NET_F_MRG_RXBUF when offered', false)
  .option('--queue-size <n>', 'descriptors per receiveq/transmitq (split: a power of two)', int('--queue-size', 1, 32768), 256)
  .option('--mac <mac>', 'MAC address in the config space (aa:bb:cc:dd:ee:ff)')
  .option('--offloads', 'negotiate the checksum and segmentation offloads the back-end offers (HOST_*; GUEST_* too with --netdev tap, which then also asks for MRG_RXBUF)', false)
  .option('--mtu <bytes>', 'MTU: config mtu (VIRTIO_NET_F_MTU), NET_SET_MTU to the back-end, the TAP\'s MTU; frames up to 14 + MTU bytes', int('--mtu', 68, 9714), 1500)
  .option('--rss', 'choose transmit queues by the RSS hash (default key, 128 entries), so an RSS-steering back-end returns each flow on its pair', false)
  .option('--netdev <spec>', 'generator[,flows=F][,size=S][,proto=udp|tcp|mixed] | pcap,file=F | sink | txonly[,size=S] | tap,ifname=NAME', 'generator')
  .option('-d, --duration <seconds>', 'how long to send (seconds, fractions allowed)', seconds('--duration', 864000), 10)
  .option('--resize <pairs>', 'halfway through, change the active pair count (SET_VRING_ENABLE on the back-end)', (v) => int('--resize', 1, 128)(v))
  .option('--adaptive', 'raise and lower the active pair count by load (transmitq full, packet rate; with hysteresis), starting from 1', false)
  .option('--mode <mode>', 'worker wait mode: notify (call eventfds, EVENT_IDX) or busy (poll)', 'notify')
  .option('--reply-timeout <ms>', 'milliseconds to wait for each back-end reply', int('--reply-timeout', 1, 600000), 5000)
  .option('--connect-timeout <seconds>', 'how long to wait for the first connection', seconds('--connect-timeout', 86400), 30)
  .option('--no-reconnect', 'exit when the back-end goes away (default: hold the rings and resume on the next connection)')
  .option('--json', 'log lines and per-second statistics as JSON lines, the summary as JSON', false)
  .addOption(logLevelOption())
  .addOption(captureOption()).addOption(captureQueueOption()).addOption(captureDirOption()).addOption(captureSnaplenOption())
  .addOption(strictOption())
  .action(async (opts) => {
    checkLogLevel(opts.logLevel);
    checkCapture(opts, opts.queues);
    if (opts.mode !== 'busy' && opts.mode !== 'notify') throw new UsageError('--mode must be busy or notify');
    if (opts.ring !== 'split' && opts.ring !== 'packed') throw new UsageError('--ring must be split or packed');
    const problem = queueSizeProblem(opts.ring, opts.queueSize);
    if (problem) throw new UsageError(`--queue-size: ${problem}`);
    if (opts.resize !== undefined && opts.resize > opts.queues)
      throw new UsageError(`--resize ${opts.resize}: at most --queues (${opts.queues}) pairs exist`);
    if (opts.adaptive && opts.resize !== undefined) throw new UsageError('--adaptive and --resize both change the pair count: choose one');
    if (opts.adaptive && !String(opts.netdev).startsWith('generator')) throw new UsageError('--adaptive works with generated flows (--netdev generator)');
    const { frontendBufSizes } = await import('../transport/vhost-user/front-end.js');
    const buf = frontendBufSizes({ mtu: opts.mtu, offloads: opts.offloads ? 1n : 0n /* VIRTIO_NET_F_CSUM: any HOST_ offload */, mrgRxbuf: opts.mrgRxbuf });
    const memMiB = Math.ceil((opts.queues * opts.queueSize * (buf.tx + buf.rx)) / 2 ** 20);
    if (memMiB > 1024) throw new UsageError(`--queues ${opts.queues} × --queue-size ${opts.queueSize} need ${memMiB} MiB of guest memory (at most 1024 MiB)`);
    if (opts.server) {
      const dir = dirname(resolve(opts.socket));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`--socket ${opts.socket}: directory ${dir} does not exist`);
    }
    checkControlPath(opts.control);
    opts.observe = { control: opts.control, metrics: opts.metrics, http: opts.http };
    const { attachTraffic, parseMac, runAttach } = await import('./attach.js');
    try {
      if (opts.mac !== undefined) parseMac(opts.mac);
      attachTraffic(opts.netdev, opts.queues, () => 0, false); // validate --netdev before connecting
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const ok = await runAttach(opts);
    process.exitCode = ok ? 0 : 1;
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
