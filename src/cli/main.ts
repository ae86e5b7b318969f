#!/usr/bin/env node
/** virtio-mq command line. */
import { Command, InvalidArgumentError } from 'commander';
import { runLoopback } from './loopback.js';
import { runServe } from './serve.js';
import { queueSizeProblem } from '../virtio/ring.js';

const int = (name: string, min: number, max: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
  return n;
};

const program = new Command();
program.name('virtio-mq').description('Multi-queue virtio-net in TypeScript: device, driver, rings and steering');

program
  .command('loopback')
  .description('run driver and device in worker threads over a SharedArrayBuffer; every TX frame comes back on RX and is checked')
  .option('-q, --queues <n>', 'queue pairs', int('--queues', 1, 64), 4)
  .option('-f, --flows <n>', 'generated flows', int('--flows', 1, 65536), 16)
  .option('-s, --size <bytes>', 'generated frame size (Ethernet, no FCS)', int('--size', 60, 1514), 256) // 1514: RX buffers are 2 KiB
  .option('-d, --duration <seconds>', 'how long to send', Number, 3)
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
    if (opts.mode !== 'busy' && opts.mode !== 'notify') throw new InvalidArgumentError('--mode must be busy or notify');
    if (!['udp', 'tcp', 'mixed'].includes(opts.proto)) throw new InvalidArgumentError('--proto must be udp, tcp or mixed');
    if (!['4', '6', 'mixed'].includes(opts.ip)) throw new InvalidArgumentError('--ip must be 4, 6 or mixed');
    opts.ipVersion = opts.ip === 'mixed' ? 'mixed' : Number(opts.ip);
    if (opts.ring !== 'split' && opts.ring !== 'packed') throw new InvalidArgumentError('--ring must be split or packed');
    const problem = queueSizeProblem(opts.ring, opts.queueSize);
    if (problem) throw new InvalidArgumentError(`--queue-size: ${problem}`);
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
  .option('--json', 'log lines and per-second statistics as JSON lines', false)
  .action(async (opts) => {
    if (opts.mode !== 'busy' && opts.mode !== 'notify') throw new InvalidArgumentError('--mode must be busy or notify');
    await runServe(opts);
  });

program.parseAsync().catch((e: unknown) => {
  console.error(`virtio-mq: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 2;
});
