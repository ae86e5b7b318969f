/**
 * Interop, real guest: a Linux kernel's virtio-net driver (multi-queue, under
 * QEMU 7.2 TCG) talks to `virtio-mq serve --netdev tap` through QEMU's
 * vhost-user front-end:
 *
 *   guest eth0 (virtio_net, 2 pairs) ── QEMU virtio-net-pci ══ vhost-user ══ serve ── TAP :ns
 *
 * scripts/qemu-guest.sh installs QEMU, a Debian kernel and busybox when missing
 * and builds a small initramfs whose /init brings eth0 up, pings the TAP side
 * once from each CPU (pinned, so XPS sends on both TX queues) and powers off;
 * it prints GUEST-* markers on the serial console. The test checks that the
 * guest sees 2 queue pairs, that the ping works, that both TX queues carried
 * frames and that serve started both pairs. Everything it creates (namespace,
 * processes, socket) is removed afterwards; the guest image stays cached
 * (/var/cache/virtio-mq/guest, or $VMQ_GUEST_DIR).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { tmpSocketPath } from './testpmd.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const guestScript = fileURLToPath(new URL('../../../scripts/qemu-guest.sh', import.meta.url));
const guestDir = process.env.VMQ_GUEST_DIR ?? '/var/cache/virtio-mq/guest';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HOST_ADDR = '192.0.2.1';
const GUEST_ADDR = '192.0.2.2';
const PAIRS = 2;

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP, installing QEMU and a kernel)';
  return undefined;
}

function sh(args: string[], timeout = 30_000): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs scripts/qemu-guest.sh: the kernel and initramfs, or why the packages could not be had. */
function prepareGuest(): { kernel: string; initrd: string } | { skip: string } {
  const r = spawnSync('bash', [guestScript, guestDir], { encoding: 'utf8', timeout: 170_000 });
  const out = r.stdout ?? '';
  const kernel = /^KERNEL=(.+)$/m.exec(out)?.[1];
  const initrd = /^INITRD=(.+)$/m.exec(out)?.[1];
  if (r.status === 0 && kernel && initrd) return { kernel, initrd };
  const err = (r.stderr ?? '').trim().split('\n').slice(-5).join('\n');
  if (/could not install|need root|no apt-get/.test(err)) return { skip: `guest packages unavailable (scripts/qemu-guest.sh): ${err}` };
  throw new Error(`scripts/qemu-guest.sh failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${err}`);
}

/** QEMU's arguments: TCG, 2 CPUs, memfd guest memory shared with the back-end, vhost-user virtio-net with `PAIRS` pairs. */
function qemuArgs(kernel: string, initrd: string, socket: string): string[] {
  return [
    '-accel', 'tcg', '-smp', '2', '-m', '512', '-nographic', '-no-reboot',
    '-kernel', kernel, '-initrd', initrd,
    '-append', `console=ttyS0 quiet panic=-1 vmq_ip=${GUEST_ADDR}/24 vmq_peer=${HOST_ADDR} vmq_queues=${PAIRS}`,
    '-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-numa', 'node,memdev=mem',
    '-chardev', `socket,id=c0,path=${socket}`,
    '-netdev', `vhost-user,id=n0,chardev=c0,queues=${PAIRS}`,
    // vectors=0: legacy INTx; MSI-X without KVM makes QEMU 7.2 segfault.
    '-device', 'virtio-net-pci,netdev=n0,mq=on,vectors=0,rx_queue_size=1024,tx_queue_size=1024',
  ];
}

test('real Linux guest (QEMU TCG, virtio-net mq=on, 2 pairs) through vhost-user into serve --netdev tap: 2 queue pairs, ping', { skip: skipReason(), timeout: 300_000 }, async (t) => {
  const t0 = Date.now();
  const guest = prepareGuest();
  if ('skip' in guest) {
    t.skip(guest.skip);
    return;
  }
  const tPrepared = Date.now();
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const ns = `vmqQemu${id}`, tap = `vmqq${id}`;
  const socket = tmpSocketPath('qemu');
  let serve: ChildProcess | undefined;
  let qemu: ChildProcess | undefined;
  const serveLog: string[] = [];
  const qemuOut: string[] = [];
  const serveText = () => serveLog.join('');
  const console_ = () => qemuOut.join('').replace(/\r/g, '');
  try {
    sh(['ip', 'netns', 'add', ns]);
    serve = spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'serve', '--socket', socket, '--queues', String(PAIRS), '--netdev', `tap,ifname=${tap}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    serve.stdout!.resume();
    serve.stderr!.on('data', (b: Buffer) => serveLog.push(b.toString()));
    const until = Date.now() + 15_000;
    while (!serveText().includes('listening on') && serve.exitCode === null && Date.now() < until) await sleep(50);
    assert.ok(serveText().includes('listening on'), `serve did not start:\n${serveText()}`);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${HOST_ADDR}/24`, 'dev', tap]);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', tap, 'up']);

    const tBoot = Date.now();
    let tReady = 0;
    qemu = spawn('qemu-system-x86_64', qemuArgs(guest.kernel, guest.initrd, socket), { stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (b: Buffer) => {
      qemuOut.push(b.toString());
      if (!tReady && console_().includes('GUEST-READY')) tReady = Date.now();
    };
    qemu.stdout!.on('data', onData);
    qemu.stderr!.on('data', onData);
    const exited = new Promise<number | null>((r) => qemu!.once('exit', (code) => r(code)));
    // TCG boot takes seconds here, a minute on a loaded machine; the guest powers itself off.
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 150_000)))]);
    clearTimeout(timer);
    const tEnd = Date.now();
    const out = console_();
    const diag = `\n--- guest console / QEMU ---\n${out.slice(-6000)}\n--- serve ---\n${serveText().slice(-6000)}`;
    assert.notEqual(code, 'timeout', `QEMU did not exit within 150 s${diag}`);
    assert.equal(code, 0, `QEMU exited with ${code}${diag}`);

    // A failed vhost-user request makes QEMU run the rings itself ("falling back on
    // userspace virtio"), where no frame reaches the back-end.
    assert.doesNotMatch(out, /unable to start vhost net|falling back on userspace virtio/, `QEMU could not start vhost-user net${diag}`);
    assert.doesNotMatch(serveText(), /failure reply sent|closing connection|worker failed|stopped: /, `serve refused a request${diag}`);
    assert.match(out, /GUEST-READY/, `guest never got eth0 up${diag}`);
    const queues = /GUEST-QUEUES rx=(\d+) tx=(\d+)/.exec(out);
    assert.ok(queues, `no GUEST-QUEUES line${diag}`);
    assert.deepEqual([Number(queues[1]), Number(queues[2])], [PAIRS, PAIRS], `guest queues rx/tx${diag}`);
    assert.match(out, /GUEST-PING-OK/, `ping ${HOST_ADDR} from the guest failed${diag}`);
    for (let p = 0; p < PAIRS; p++) assert.match(serveText(), new RegExp(`queue pair ${p} started`), `serve never started pair ${p}${diag}`);

    // Per-queue counters from the guest's ethtool -S (when the image has ethtool):
    // one ping per CPU, and XPS maps CPU i to TX queue i, so every TX queue carried frames.
    const stats = new Map([...out.matchAll(/GUEST-STAT (\w+)=(\d+)/g)].map((m) => [m[1], Number(m[2])]));
    if (stats.size > 0) {
      for (let q = 0; q < PAIRS; q++) assert.ok((stats.get(`tx_queue_${q}_packets`) ?? 0) > 0, `no frames on TX queue ${q}${diag}`);
    }
    const pings = [...out.matchAll(/GUEST-PING cpu=(\d+) rc=\d+ (.*)/g)].map((m) => `cpu${m[1]}: ${m[2].trim()}`);
    console.log(`# guest: ${queues[0]}; ${pings.join('; ')}`);
    console.log(`# per-queue packets: ${[...stats].map(([k, v]) => `${k.replace(/_packets$/, '')}=${v}`).join(' ') || '(no ethtool in guest)'}`);
    console.log(`# timings: prepare ${((tPrepared - t0) / 1000).toFixed(1)} s, QEMU start → GUEST-READY ${tReady ? ((tReady - tBoot) / 1000).toFixed(1) : '?'} s, → power off ${((tEnd - tBoot) / 1000).toFixed(1)} s`);
  } finally {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      qemu.kill('SIGKILL');
      await sleep(200);
    }
    if (serve && serve.exitCode === null && serve.signalCode === null) {
      serve.kill('SIGTERM');
      for (let i = 0; i < 30 && serve.exitCode === null && serve.signalCode === null; i++) await sleep(50);
      if (serve.exitCode === null && serve.signalCode === null) serve.kill('SIGKILL');
    }
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      /* not created */
    }
    rmSync(socket, { force: true });
  }
});
