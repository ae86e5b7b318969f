/**
 * Interop, real guest: a Linux kernel's virtio-net driver (multi-queue, under
 * QEMU 7.2 TCG) talks to `virtio-mq serve --netdev tap` through QEMU's
 * vhost-user front-end:
 *
 *   guest eth0 (virtio_net, N pairs) ── QEMU virtio-net-pci ══ vhost-user ══ serve ── TAP :ns
 *
 * scripts/qemu-guest.sh installs QEMU, a Debian kernel and busybox when missing
 * and builds a small initramfs whose /init brings eth0 up, pings the TAP side
 * once from each CPU (pinned, so XPS sends on several TX queues), optionally
 * changes the channel count with `ethtool -L` and pings through every TX queue
 * of each count, then powers off; it prints GUEST-* markers on the serial
 * console. Two guests:
 *
 * - split rings, 2 pairs: the guest sees 2 queue pairs, the ping works, both
 *   TX queues carried frames and serve started both pairs;
 * - packed rings (`packed=on`, 1024-entry rings), 4 pairs: the guest's
 *   feature bits show VIRTIO_F_RING_PACKED (bit 34) and serve negotiated it;
 *   `ethtool -L eth0 combined 2` then `4` disables and re-enables vrings 4-7
 *   in serve (pairs 2 and 3 stop and start again), and in every phase each
 *   queue pair carries frames both ways (ethtool -S per-queue counters).
 *
 * Everything a test creates (namespace, processes, socket) is removed
 * afterwards; the guest image stays cached (/var/cache/virtio-mq/guest, or
 * $VMQ_GUEST_DIR). Without root or the guest packages the tests are skipped.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { tmpSocketPath } from './testpmd.js';
import { sh, prepareGuest } from './host.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HOST_ADDR = '192.0.2.1';
const GUEST_ADDR = '192.0.2.2';
/** VIRTIO_F_RING_PACKED's bit number (§6). */
const RING_PACKED_BIT = 34;

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP, installing QEMU and a kernel)';
  return undefined;
}

interface GuestOptions {
  /** Queue pairs: serve --queues, QEMU's netdev queues, and the guest's first `ethtool -L` (vmq_queues). */
  pairs: number;
  /** `packed=on` on the virtio-net-pci device. */
  packed: boolean;
  /** vmq_channels: `ethtool -L eth0 combined N` for each N in turn, pinging through every TX queue. */
  channels?: number[];
  /** QEMU exit wait (the guest powers itself off). */
  bootTimeoutMs: number;
  /** More guest kernel command-line parameters (vmq_offloads=1, vmq_iperf=S, ...: scripts/qemu-guest.sh). */
  append?: string[];
  /** Run `iperf3 -s` at the TAP's address for the guest's iperf3 client. */
  iperfServer?: boolean;
  /** serve --mtu and QEMU's host_mtu (the guest's MTU). */
  mtu?: number;
}

/** A line of output and when it arrived (ms since the epoch). */
interface Stamped {
  at: number;
  line: string;
}

interface GuestRun {
  /** The guest console (and QEMU's own messages), CRs removed. */
  console: string;
  consoleLines: Stamped[];
  serveText: string;
  serveLines: Stamped[];
  diag: string;
  timings: string;
}

/** QEMU's arguments: TCG, 2 CPUs, memfd guest memory shared with the back-end, vhost-user virtio-net with `pairs` pairs. */
function qemuArgs(kernel: string, initrd: string, socket: string, o: GuestOptions): string[] {
  const append = [
    'console=ttyS0 quiet panic=-1', `vmq_ip=${GUEST_ADDR}/24`, `vmq_peer=${HOST_ADDR}`, `vmq_queues=${o.pairs}`,
    ...(o.channels ? [`vmq_channels=${o.channels.join(',')}`] : []),
    ...(o.append ?? []),
  ];
  return [
    '-accel', 'tcg', '-smp', '2', '-m', '512', '-nographic', '-no-reboot',
    '-kernel', kernel, '-initrd', initrd,
    '-append', append.join(' '),
    '-object', 'memory-backend-memfd,id=mem,size=512M,share=on', '-numa', 'node,memdev=mem',
    '-chardev', `socket,id=c0,path=${socket}`,
    '-netdev', `vhost-user,id=n0,chardev=c0,queues=${o.pairs}`,
    // vectors=0: legacy INTx; MSI-X without KVM makes QEMU 7.2 segfault.
    '-device', `virtio-net-pci,netdev=n0,mq=on,vectors=0,rx_queue_size=1024,tx_queue_size=1024${o.packed ? ',packed=on' : ''}${o.mtu ? `,host_mtu=${o.mtu}` : ''}`,
  ];
}

/** Split a stream into lines, each stamped with its arrival time. */
function lineCollector(into: Stamped[], clean: (s: string) => string = (s) => s): { push: (b: Buffer) => void; text: () => string } {
  let partial = '';
  let all = '';
  return {
    push(b: Buffer) {
      const s = clean(b.toString());
      all += s;
      const parts = (partial + s).split('\n');
      partial = parts.pop()!;
      const at = Date.now();
      for (const line of parts) into.push({ at, line });
    },
    text: () => all,
  };
}

/**
 * Boot the guest against a fresh serve (TAP in a fresh namespace), wait for it
 * to power off, check what every guest run must show (clean exit, vhost-user
 * started, no request refused, eth0 ready with `pairs` queues, the ping, every
 * pair started in serve), clean everything up. Undefined when skipped.
 */
async function runGuest(t: TestContext, o: GuestOptions): Promise<GuestRun | undefined> {
  const t0 = Date.now();
  const guest = prepareGuest();
  if ('skip' in guest) {
    t.skip(guest.skip);
    return undefined;
  }
  const tPrepared = Date.now();
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const ns = `vmqQemu${id}`, tap = `vmqq${id}`;
  const socket = tmpSocketPath('qemu');
  let serve: ChildProcess | undefined;
  let qemu: ChildProcess | undefined;
  let iperfd: ChildProcess | undefined;
  const serveLines: Stamped[] = [];
  const consoleLines: Stamped[] = [];
  const serveOut = lineCollector(serveLines);
  const qemuOut = lineCollector(consoleLines, (s) => s.replace(/\r/g, ''));
  try {
    sh(['ip', 'netns', 'add', ns]);
    serve = spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'serve', '--socket', socket, '--queues', String(o.pairs), '--netdev', `tap,ifname=${tap}`, ...(o.mtu ? ['--mtu', String(o.mtu)] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    serve.stdout!.resume();
    serve.stderr!.on('data', serveOut.push);
    const until = Date.now() + 15_000;
    while (!serveOut.text().includes('listening on') && serve.exitCode === null && Date.now() < until) await sleep(50);
    assert.ok(serveOut.text().includes('listening on'), `serve did not start:\n${serveOut.text()}`);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${HOST_ADDR}/24`, 'dev', tap]);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', tap, 'up']);
    if (o.iperfServer) iperfd = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-B', HOST_ADDR], { stdio: 'ignore' });

    const tBoot = Date.now();
    qemu = spawn('qemu-system-x86_64', qemuArgs(guest.kernel, guest.initrd, socket, o), { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu.stdout!.on('data', qemuOut.push);
    qemu.stderr!.on('data', qemuOut.push);
    const exited = new Promise<number | null>((r) => qemu!.once('exit', (code) => r(code)));
    // TCG boot takes seconds here, a minute on a loaded machine; the guest powers itself off.
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), o.bootTimeoutMs)))]);
    clearTimeout(timer);
    const tEnd = Date.now();
    const out = qemuOut.text().replace(/\r/g, '');
    const serveText = serveOut.text();
    const diag = `\n--- guest console / QEMU ---\n${out.slice(-8000)}\n--- serve ---\n${serveText.slice(-8000)}`;
    assert.notEqual(code, 'timeout', `QEMU did not exit within ${o.bootTimeoutMs / 1000} s${diag}`);
    assert.equal(code, 0, `QEMU exited with ${code}${diag}`);

    // A failed vhost-user request makes QEMU run the rings itself ("falling back on
    // userspace virtio"), where no frame reaches the back-end.
    assert.doesNotMatch(out, /unable to start vhost net|falling back on userspace virtio/, `QEMU could not start vhost-user net${diag}`);
    assert.doesNotMatch(serveText, /failure reply sent|closing connection|worker failed|stopped: /, `serve refused a request${diag}`);
    assert.match(out, /GUEST-READY/, `guest never got eth0 up${diag}`);
    const queues = /GUEST-QUEUES rx=(\d+) tx=(\d+)/.exec(out);
    assert.ok(queues, `no GUEST-QUEUES line${diag}`);
    assert.deepEqual([Number(queues[1]), Number(queues[2])], [o.pairs, o.pairs], `guest queues rx/tx${diag}`);
    assert.match(out, /GUEST-PING-OK/, `ping ${HOST_ADDR} from the guest failed${diag}`);
    for (let p = 0; p < o.pairs; p++) assert.match(serveText, new RegExp(`queue pair ${p} started`), `serve never started pair ${p}${diag}`);
    const tReady = consoleLines.find((l) => l.line.includes('GUEST-READY'))?.at;
    const timings = `prepare ${((tPrepared - t0) / 1000).toFixed(1)} s, QEMU start → GUEST-READY ${tReady ? ((tReady - tBoot) / 1000).toFixed(1) : '?'} s, → power off ${((tEnd - tBoot) / 1000).toFixed(1)} s`;
    return { console: out, consoleLines, serveText, serveLines, diag, timings };
  } finally {
    iperfd?.kill('SIGKILL');
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
}

/** `GUEST-FEATURES` (one 0/1 character per feature bit, bit 0 first), or undefined. */
function guestFeatures(out: string): string | undefined {
  return /GUEST-FEATURES ([01]+)/.exec(out)?.[1];
}

/** The features serve logged for the front-end (the last "front-end features:" line). */
function serveFeatures(serveText: string): Set<string> {
  const lines = serveText.split('\n').filter((l) => l.includes('front-end features:'));
  const last = lines.at(-1) ?? '';
  return new Set(last.slice(last.indexOf('front-end features:') + 19).trim().split(/\s+/));
}

test('real Linux guest (QEMU TCG, virtio-net mq=on, 2 pairs) through vhost-user into serve --netdev tap: 2 queue pairs, ping', { skip: skipReason(), timeout: 300_000 }, async (t) => {
  const PAIRS = 2;
  const r = await runGuest(t, { pairs: PAIRS, packed: false, bootTimeoutMs: 150_000 });
  if (!r) return;
  const { console: out, diag } = r;
  // Split rings: the driver did not get VIRTIO_F_RING_PACKED (when the image prints its features).
  const bits = guestFeatures(out);
  if (bits) assert.equal(bits[RING_PACKED_BIT], '0', `split guest has VIRTIO_F_RING_PACKED${diag}`);
  assert.ok(!serveFeatures(r.serveText).has('VIRTIO_F_RING_PACKED'), `serve negotiated packed rings with a split guest${diag}`);

  // Per-queue counters from the guest's ethtool -S (when the image has ethtool):
  // one ping per CPU, and XPS maps CPU i to TX queue i, so every TX queue carried frames.
  const stats = new Map([...out.matchAll(/GUEST-STAT (\w+)=(\d+)/g)].map((m) => [m[1], Number(m[2])]));
  if (stats.size > 0) {
    for (let q = 0; q < PAIRS; q++) assert.ok((stats.get(`tx_queue_${q}_packets`) ?? 0) > 0, `no frames on TX queue ${q}${diag}`);
  }
  const pings = [...out.matchAll(/GUEST-PING cpu=(\d+) rc=\d+ (.*)/g)].map((m) => `cpu${m[1]}: ${m[2].trim()}`);
  console.log(`# guest: ${/GUEST-QUEUES [^(]*/.exec(out)?.[0]}; ${pings.join('; ')}`);
  console.log(`# per-queue packets: ${[...stats].map(([k, v]) => `${k.replace(/_packets$/, '')}=${v}`).join(' ') || '(no ethtool in guest)'}`);
  console.log(`# timings: ${r.timings}`);
});

/**
 * Which vrings serve has enabled and which pairs it is running, replaying
 * its log lines ("vring N enabled|disabled", "queue pair N started|stopped").
 */
function serveState(lines: Stamped[]): { enabled: Set<number>; running: Set<number> } {
  const enabled = new Set<number>(), running = new Set<number>();
  for (const { line } of lines) {
    let m = /vring (\d+) (enabled|disabled)/.exec(line);
    if (m) (m[2] === 'enabled' ? enabled.add(Number(m[1])) : enabled.delete(Number(m[1])));
    m = /queue pair (\d+) (started|stopped)/.exec(line);
    if (m) (m[2] === 'started' ? running.add(Number(m[1])) : running.delete(Number(m[1])));
  }
  return { enabled, running };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

test('real Linux guest, packed rings (QEMU TCG, virtio-net packed=on mq=on, 4 pairs, 1024-entry rings) into serve: VIRTIO_F_RING_PACKED, ethtool -L 2 → 4 disables/enables vrings, every queue carries frames', { skip: skipReason(), timeout: 240_000 }, async (t) => {
  const PAIRS = 4;
  const CHANNELS = [2, 4];
  const r = await runGuest(t, { pairs: PAIRS, packed: true, channels: CHANNELS, bootTimeoutMs: 170_000 });
  if (!r) return;
  const { console: out, diag } = r;

  // Packed rings negotiated: the guest driver's feature bits and serve's log.
  const bits = guestFeatures(out);
  assert.ok(bits, `no GUEST-FEATURES line${diag}`);
  assert.equal(bits[RING_PACKED_BIT], '1', `guest feature bits lack VIRTIO_F_RING_PACKED (bit ${RING_PACKED_BIT}): ${bits}${diag}`);
  assert.ok(serveFeatures(r.serveText).has('VIRTIO_F_RING_PACKED'), `serve's "front-end features:" line lacks VIRTIO_F_RING_PACKED${diag}`);
  for (let p = 0; p < PAIRS; p++) {
    assert.match(r.serveText, new RegExp(`queue pair ${p} started \\(packed rings, receiveq 1024 / transmitq 1024 descriptors`), `pair ${p}: packed 1024-entry rings${diag}`);
  }

  // ethtool -L: each phase's channel count took effect in the guest and in serve, and every queue carried frames both ways.
  const summary: string[] = [];
  let prevEnd = 0; // serve log lines seen before this phase
  let prevPairs = PAIRS;
  for (const n of CHANNELS) {
    const set = new RegExp(`GUEST-CHANNELS-SET combined=${n} (\\w+) current=(\\d+) rx=(\\d+) tx=(\\d+)`).exec(out);
    assert.ok(set, `no GUEST-CHANNELS-SET combined=${n}${diag}`);
    assert.deepEqual(set.slice(1).map((x, i) => (i === 0 ? x : Number(x))), ['ok', n, n, n], `ethtool -L eth0 combined ${n}: ${set[0]}${diag}`);
    for (let q = 0; q < n; q++) assert.match(out, new RegExp(`GUEST-QPING combined=${n} txq=${q} rc=0 `), `ping through TX queue ${q} with ${n} channels${diag}`);
    const stat = (at: 'before' | 'after') =>
      new Map([...out.matchAll(new RegExp(`GUEST-QSTAT combined=${n} at=${at} (\\w+)=(\\d+)`, 'g'))].map((m) => [m[1], Number(m[2])]));
    const before = stat('before'), after = stat('after');
    const delta = (dir: 'rx' | 'tx') => range(n).map((q) => (after.get(`${dir}_queue_${q}_packets`) ?? 0) - (before.get(`${dir}_queue_${q}_packets`) ?? 0));
    const tx = delta('tx'), rx = delta('rx');
    assert.ok(tx.every((v) => v > 0), `${n} channels: every TX queue carried frames: ${tx}${diag}`);
    assert.ok(rx.every((v) => v > 0), `${n} channels: every RX queue carried frames: ${rx}${diag}`);
    summary.push(`combined ${n}: tx ${tx.join('/')} rx ${rx.join('/')}`);

    // serve's view at the end of the phase (the pings took seconds, so serve has long handled QEMU's SET_VRING_ENABLEs).
    const endAt = r.consoleLines.find((l) => l.line.includes(`GUEST-QSTAT combined=${n} at=after`))?.at;
    assert.ok(endAt, `no GUEST-QSTAT combined=${n} at=after${diag}`);
    const end = r.serveLines.findIndex((l) => l.at > endAt);
    const upTo = end < 0 ? r.serveLines.length : end;
    const st = serveState(r.serveLines.slice(0, upTo));
    assert.deepEqual([...st.enabled].sort((a, b) => a - b), range(2 * n), `serve's enabled vrings with ${n} channels${diag}`);
    assert.deepEqual([...st.running].sort((a, b) => a - b), range(n), `serve's running pairs with ${n} channels${diag}`);
    // …and the change happened in this phase: the vrings of the pairs added or removed were enabled or disabled.
    const phase = r.serveLines.slice(prevEnd, upTo).map((l) => l.line).join('\n');
    for (let v = 2 * Math.min(n, prevPairs); v < 2 * Math.max(n, prevPairs); v++) {
      assert.match(phase, new RegExp(`vring ${v} ${n < prevPairs ? 'disabled' : 'enabled'}`), `vring ${v} ${n < prevPairs ? 'disabled' : 'enabled'} by ethtool -L ${n}${diag}`);
    }
    prevEnd = upTo;
    prevPairs = n;
  }
  console.log(`# packed guest: ${/GUEST-QUEUES [^(]*/.exec(out)?.[0]}; features bit ${RING_PACKED_BIT}=${bits[RING_PACKED_BIT]}; ${summary.join('; ')}`);
  console.log(`# timings: ${r.timings}`);
});

/** iperf3 receiver lines of one run (GUEST-IPERF / GUEST-LIPERF): per stream and SUM, Mbit/s. */
function iperfLines(out: string, marker: string, dir: string): { streams: number[]; sum: number | undefined; rc: number | undefined } {
  const lines = [...out.matchAll(new RegExp(`${marker} dir=${dir}(?: streams=\\d+)? rc=(\\d+) \\[\\s*(\\w+)\\].*?([\\d.]+) Mbits/sec.*receiver`, 'g'))];
  return {
    streams: lines.filter((m) => m[2] !== 'SUM').map((m) => Number(m[3])),
    sum: lines.filter((m) => m[2] === 'SUM').map((m) => Number(m[3]))[0],
    rc: lines.length ? Number(lines[0][1]) : undefined,
  };
}

test('real Linux guest with offloads and jumbo frames (QEMU TCG, 4 pairs, MTU 9000) through serve --netdev tap: 8000-byte pings unfragmented, ethtool -k shows checksum and segmentation offloads on, iperf3 -P 4 both ways, iperf3 -R -P 4 across ethtool -L 4 → 2 → 4 with every stream moving data', { skip: skipReason() ?? (hasCmd('iperf3') ? undefined : 'iperf3 not installed (scripts/install-peers.sh)'), timeout: 280_000 }, async (t) => {
  const PAIRS = 4;
  const r = await runGuest(t, {
    pairs: PAIRS, packed: false, bootTimeoutMs: 200_000, iperfServer: true, mtu: 9000,
    append: ['vmq_offloads=1', 'vmq_iperf=5', 'vmq_iperf_channels=9,2,4', 'vmq_ping_size=8000'],
  });
  if (!r) return;
  const { console: out, serveText, diag } = r;
  // Jumbo frames: the guest's MTU is QEMU's host_mtu, and 8028-byte IP packets crossed both ways whole.
  assert.match(out, /GUEST-LINK \w+ .* mtu=9000/, `guest MTU${diag}`);
  const frag = /GUEST-IPFRAG ReasmReqds=(\d+) FragCreates=(\d+)/.exec(out);
  assert.ok(frag, `no GUEST-IPFRAG line${diag}`);
  assert.deepEqual([Number(frag[1]), Number(frag[2])], [0, 0], `8000-byte pings were fragmented${diag}`);
  assert.doesNotMatch(out, /GUEST-IPERF-DONE dir=\w+ streams=\d+ rc=127/, `the guest image has no iperf3 (rebuild: scripts/qemu-guest.sh)${diag}`);
  // Negotiated, and on in the guest.
  const f = serveFeatures(serveText);
  for (const name of ['VIRTIO_NET_F_CSUM', 'VIRTIO_NET_F_GUEST_CSUM', 'VIRTIO_NET_F_HOST_TSO4', 'VIRTIO_NET_F_HOST_TSO6', 'VIRTIO_NET_F_GUEST_TSO4', 'VIRTIO_NET_F_GUEST_TSO6'])
    assert.ok(f.has(name), `serve did not negotiate ${name}${diag}`);
  const offl = new Map([...out.matchAll(/GUEST-OFFLOAD ([\w-]+)=(\w+)/g)].map((m) => [m[1], m[2]]));
  for (const k of ['tx-checksumming', 'rx-checksumming', 'tcp-segmentation-offload', 'rx-gro-hw'])
    assert.equal(offl.get(k), 'on', `guest ethtool -k ${k}${diag}`);
  assert.match(serveText, /TAP offloads 0x1f \(driver accepts: csum tso4 tso6 ecn ufo/, `TUNSETOFFLOAD follows the guest's offloads${diag}`);
  // iperf3 -P 4 both ways: every stream moved data.
  const figures: string[] = [];
  for (const dir of ['tx', 'rx']) {
    const ip = iperfLines(out, 'GUEST-IPERF', dir);
    assert.equal(ip.rc, 0, `iperf3 ${dir} exit status${diag}`);
    assert.equal(ip.streams.length, 4, `iperf3 ${dir}: 4 streams${diag}`);
    assert.ok(ip.streams.every((v) => v > 0), `iperf3 ${dir}: every stream moved data: ${ip.streams}${diag}`);
    figures.push(`${dir === 'tx' ? 'guest→host' : 'host→guest'} ${ip.sum} Mbit/s`);
  }
  // ethtool -L under traffic: both changes succeeded, serve detached and re-attached the TAP queues of pairs 2 and 3,
  // and all four host→guest streams finished with data (none stuck behind a queue nobody reads).
  assert.match(out, /GUEST-LIPERF phase=set combined=2 ok/, `ethtool -L 2 under traffic${diag}`);
  assert.match(out, /GUEST-LIPERF phase=set combined=4 ok/, `ethtool -L 4 under traffic${diag}`);
  const li = iperfLines(out, 'GUEST-LIPERF', 'rx');
  assert.equal(li.rc, 0, `iperf3 -R across ethtool -L exit status${diag}`);
  assert.equal(li.streams.length, 4, `iperf3 -R across ethtool -L: 4 streams${diag}`);
  assert.ok(li.streams.every((v) => v > 0), `every stream moved data across ethtool -L: ${li.streams}${diag}`);
  for (const q of [2, 3]) {
    assert.match(serveText, new RegExp(`TAP queue ${q} detached[\\s\\S]*TAP queue ${q} attached`), `TAP queue ${q} detached then attached${diag}`);
  }
  assert.match(serveText, /2 active queue pairs[\s\S]*4 active queue pairs/, `steering followed the enabled pairs${diag}`);
  console.log(`# offloads guest: ${[...offl].map(([k, v]) => `${k}=${v}`).join(' ')}`);
  console.log(`# iperf3 -P 4 (TCG guest, 2 vCPUs, 4 pairs, offloads on): ${figures.join(', ')}; across ethtool -L 4→2→4 host→guest ${li.sum} Mbit/s (${li.streams.join('/')})`);
  console.log(`# timings: ${r.timings}`);
});

function hasCmd(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
