/**
 * Interop, live migration: a Linux guest (QEMU 7.2 TCG, virtio-net over
 * vhost-user, 2 queue pairs) moves back and forth between QEMU processes on
 * this machine, MIGRATIONS times, while two TCP streams run through
 * `virtio-mq serve`:
 *
 *   QEMU 0, 2, 4 ... ══ vhost-user ══ serve A ── TAP a ─┐
 *          │ migrate tcp:127.0.0.1                      ├─ bridge 192.0.2.1 ── migrate-peer.js   (namespace)
 *   QEMU 1, 3, 5 ... ══ vhost-user ══ serve B ── TAP b ─┘
 *
 * Each migration goes to a fresh QEMU on the other serve (which has let go of
 * the QEMU before it); the source QEMU quits afterwards. The guest
 * (scripts/qemu-guest.sh vmq_mig=PATTERN) sends `yes PATTERN` to the peer and
 * receives random bytes from it, hashing them. QEMU offers the migration only
 * because serve offers VHOST_USER_PROTOCOL_F_LOG_SHMFD and VHOST_F_LOG_ALL;
 * while it copies guest memory the source serve logs every page it writes
 * (received frames, used rings), switching its running pairs to logging in
 * place, so the guest memory the destination resumes with holds every frame
 * delivered. After each migration both streams go on (4 MB more each way, the
 * guest → host bytes checked against the pattern as they come); at the end
 * the data is verified both ways: every byte the guest sent matches the
 * pattern, and the sha256 the guest printed (on the last QEMU's console) is
 * the hash of everything the peer sent. A guest crash on any console fails
 * the test at once. Prints, per migration, QEMU's total time and downtime
 * and how long the guest → host stream stopped.
 *
 * Knobs (diagnostics; the defaults are what CI runs): VMQ_MIG_COUNT (4),
 * VMQ_MIG_PAIRS (2), VMQ_MIG_RINGS=packed, VMQ_MIG_RAM (see GUEST_RAM),
 * VMQ_MIG_TCG=single|multi, VMQ_MIG_MEMCHECK=DIR (compare both QEMUs' memory
 * after each migration), VMQ_MIG_BACKEND=qemu (the control: QEMU's own
 * virtio-net on a TAP, no serve), VMQ_MIG_LOGS=DIR (keep consoles and serve
 * logs; with VMQ_TRACE_VHOST=1 serve logs every request).
 *
 * Everything created (namespace, bridge, TAPs, processes, sockets) is
 * removed afterwards. Skipped without root, QEMU or the guest image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { tmpSocketPath } from './testpmd.js';
import { sh, prepareGuest } from './host.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const peerScript = fileURLToPath(new URL('./migrate-peer.js', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const HOST_ADDR = '192.0.2.1';
const GUEST_ADDR = '192.0.2.2';
/** Queue pairs (VMQ_MIG_PAIRS; QEMU runs one vhost device per pair on the one socket). */
const PAIRS = Math.max(1, Number(process.env.VMQ_MIG_PAIRS ?? 2));

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP, bridge)';
  if (spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).error) return 'qemu-system-x86_64 is not installed (.ci/run: scripts/qemu-guest.sh)';
  return undefined;
}

/** Collects a child's output as text. */
function collect(p: ChildProcess, stdout = true): { text: () => string } {
  let all = '';
  const add = (b: Buffer) => (all += b.toString().replace(/\r/g, ''));
  if (stdout) p.stdout?.on('data', add);
  p.stderr?.on('data', add);
  return { text: () => all };
}

async function until(cond: () => boolean, what: string, ms: number, diag: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms / 1000} s waiting for ${what}${diag()}`);
    await sleep(50);
  }
}

/** A free TCP port on 127.0.0.1 (the migration stream). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** A QMP client on a unix socket: one command at a time. */
class Qmp {
  private buf = '';
  private waiting: ((v: Record<string, unknown>) => void) | null = null;
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (b) => {
      this.buf += b.toString();
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if (('return' in msg || 'error' in msg) && this.waiting) {
          const w = this.waiting;
          this.waiting = null;
          w(msg);
        }
      }
    });
  }

  static async connect(path: string): Promise<Qmp> {
    for (let i = 0; ; i++) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (i > 100) throw e;
        await sleep(100);
      }
    }
  }

  cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`QMP ${execute}: no answer`)), 20_000);
      this.waiting = (v) => {
        clearTimeout(t);
        if ('error' in v) reject(new Error(`QMP ${execute}: ${JSON.stringify(v.error)}`));
        else resolve(v.return as Record<string, unknown>);
      };
      this.sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

interface PeerStat { t: string; txBytes: number; rxBytes: number; rxConnected: boolean; txConnected: boolean; mismatchAt: number; maxGap: number; gaps: [number, number][]; sha256?: string }

/** Migrations per run (VMQ_MIG_COUNT): A → B → A → ..., a fresh QEMU each time, the two serves taking turns. */
const MIGRATIONS = Math.max(1, Number(process.env.VMQ_MIG_COUNT ?? 4));
/** Ring format of the guest's virtio-net (VMQ_MIG_RINGS=packed: QEMU's packed=on). */
const PACKED = process.env.VMQ_MIG_RINGS === 'packed';
/**
 * VMQ_MIG_MEMCHECK=DIR (diagnostics): each destination starts paused (-S); once a migration
 * completed, both QEMUs' guest memory is saved (pmemsave) to DIR and compared page by page
 * before the destination runs: a page that differs was not migrated as it was.
 */
const MEMCHECK = process.env.VMQ_MIG_MEMCHECK;
/** VMQ_MIG_BACKEND=qemu (diagnostics, the control experiment): QEMU's own virtio-net on a TAP, no vhost-user, no serve. */
const QEMU_NET = process.env.VMQ_MIG_BACKEND === 'qemu';

/**
 * Guest RAM: 512 MiB + 8 KiB, deliberately not a multiple of 256 KiB. QEMU before 9.0 loses
 * guest CPU stores under TCG during migration: the 64-pages-at-a-time fast path of
 * cpu_physical_memory_sync_dirty_bitmap() clears dirty bits without resetting the TCG TLB, so a
 * page written again through a stale TLB entry is never sent again (QEMU commit 03bfc2188f,
 * "physmem: Fix migration dirty bitmap coherency with TCG memory access", fixes aa8dc044772).
 * That fast path needs a RAM block whose length is a multiple of 64 pages; this size takes the
 * per-page path, which resets the TLB. With 512M (VMQ_MIG_RAM=512M) and QEMU 7.2 about one
 * migration in 15 left kernel pages (stacks, slab, jiffies) stale on the destination here, and
 * the guest crashed; VMQ_MIG_MEMCHECK shows those pages. Nothing a vhost-user back-end writes.
 */
const GUEST_RAM = process.env.VMQ_MIG_RAM ?? '524296K';

/** A guest kernel's report of memory corruption or a crash. */
const GUEST_CRASH = /Kernel panic|general protection fault|BUG: |Oops: |kernel BUG|double free|RIP: 0010:0x/;

test(`live migration: a Linux guest moves ${MIGRATIONS} times between QEMU processes, each with a serve of its own, while TCP streams run both ways; the streams continue and every byte arrives intact`, {
  skip: skipReason(),
  timeout: 420_000,
}, async (t) => {
  const guest = prepareGuest();
  if ('skip' in guest) {
    t.skip(guest.skip);
    return;
  }
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const ns = `vmqMig${id}`, br = `vmqb${id}`;
  const taps = [`vmqa${id}`, `vmqc${id}`];
  const sockets = [tmpSocketPath('miga'), tmpSocketPath('migb')];
  const qmpPaths = Array.from({ length: MIGRATIONS + 1 }, (_, k) => tmpSocketPath(`qmp${k}`));
  const pattern = `virtio-mq-migration-${id}-0123456789abcdefghijklmnopqrstuvwxyz`;
  const procs: ChildProcess[] = [];
  const serves: { text: () => string }[] = [];
  const qemus: ChildProcess[] = [];
  const consoles: { text: () => string }[] = [];
  const qmps: Qmp[] = [];
  let peerStat: PeerStat | null = null;
  let peerEnd: PeerStat | null = null;
  const diag = () =>
    consoles.map((c, k) => `\n--- QEMU ${k} (serve ${'AB'[k % 2]}) ---\n${c.text().slice(-3000)}`).join('') +
    `\n--- serve A ---\n${serves[0]?.text().slice(-4000)}\n--- serve B ---\n${serves[1]?.text().slice(-4000)}\n--- peer ---\n${JSON.stringify(peerStat)}`;
  /** Waits for `cond`; fails at once when a guest console shows a crash. */
  const wait = async (cond: () => boolean, what: string, ms: number) => {
    const crashed = () => consoles.some((c) => GUEST_CRASH.test(c.text()));
    await until(() => cond() || crashed(), what, ms, diag);
    assert.ok(!crashed(), `the guest crashed while waiting for ${what}${diag()}`);
  };
  try {
    sh(['ip', 'netns', 'add', ns]);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'add', br, 'type', 'bridge']);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${HOST_ADDR}/24`, 'dev', br]);
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', br, 'up']);
    if (QEMU_NET) sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    for (let i = 0; i < (QEMU_NET ? 0 : 2); i++) {
      const s = spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'serve', '--socket', sockets[i], '--queues', String(PAIRS), '--netdev', `tap,ifname=${taps[i]}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(s);
      s.stdout!.resume(); // the periodic stats table
      serves.push(collect(s, false));
    }
    for (let i = 0; i < (QEMU_NET ? 0 : 2); i++) {
      await until(() => serves[i].text().includes('listening on'), `serve ${'AB'[i]} to listen`, 15_000, diag);
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', taps[i], 'master', br]);
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', taps[i], 'up']);
    }
    const peer = spawn('ip', ['netns', 'exec', ns, process.execPath, peerScript, HOST_ADDR, GUEST_ADDR, pattern], { stdio: ['pipe', 'pipe', 'pipe'] });
    procs.push(peer);
    let peerErr = '';
    peer.stderr!.on('data', (b: Buffer) => (peerErr += b.toString()));
    createInterface({ input: peer.stdout! }).on('line', (l) => {
      try {
        const o = JSON.parse(l) as PeerStat;
        if (o.t === 'end') peerEnd = o;
        else peerStat = o;
      } catch {
        peerErr += `${l}\n`;
      }
    });

    /** QEMU number k, on serve k % 2; every one after the first waits for the guest on port `incoming`. */
    const startQemu = (k: number, incoming?: number): void => {
      const args = [
        '-accel', process.env.VMQ_MIG_TCG ? `tcg,thread=${process.env.VMQ_MIG_TCG}` : 'tcg', '-smp', '2', '-m', GUEST_RAM, '-nographic', '-no-reboot',
        '-kernel', guest.kernel, '-initrd', guest.initrd,
        '-append', ['console=ttyS0 quiet panic=-1', `vmq_ip=${GUEST_ADDR}/24`, `vmq_peer=${HOST_ADDR}`, `vmq_queues=${PAIRS}`, 'vmq_count=1', `vmq_mig=${pattern}`].join(' '),
        '-object', `memory-backend-memfd,id=mem,size=${GUEST_RAM},share=on`, '-numa', 'node,memdev=mem',
        ...(QEMU_NET
          ? ['-netdev', `tap,id=n0,ifname=${taps[k % 2]},script=no,downscript=no,queues=${PAIRS},vhost=off`]
          : ['-chardev', `socket,id=c0,path=${sockets[k % 2]}`, '-netdev', `vhost-user,id=n0,chardev=c0,queues=${PAIRS}`]),
        '-device', `virtio-net-pci,netdev=n0,mq=on,vectors=0,rx_queue_size=256,tx_queue_size=256,mac=52:54:00:12:34:56${PACKED ? ',packed=on' : ''}`,
        '-qmp', `unix:${qmpPaths[k]},server=on,wait=off`,
        ...(incoming !== undefined ? ['-incoming', `tcp:127.0.0.1:${incoming}`, ...(MEMCHECK ? ['-S'] : [])] : []),
      ];
      const q = QEMU_NET
        ? spawn('ip', ['netns', 'exec', ns, 'qemu-system-x86_64', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(q);
      qemus.push(q);
      consoles.push(collect(q));
    };

    /** QEMU_NET: the TAP QEMU k created, on the bridge and up. */
    const bridgeTap = async (k: number) => {
      if (!QEMU_NET) return;
      await wait(() => spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'show', taps[k % 2]], { stdio: 'ignore' }).status === 0, `QEMU ${k}'s TAP`, 30_000);
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', taps[k % 2], 'master', br]);
      sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', taps[k % 2], 'up']);
    };

    // The guest boots on QEMU 0 (serve A) and both streams move data.
    startQemu(0);
    await bridgeTap(0);
    await wait(() => consoles[0].text().includes('GUEST-MIG-LISTEN'), 'the guest on QEMU 0 (GUEST-MIG-LISTEN)', 200_000);
    await wait(() => peerStat !== null && peerStat.rxConnected && peerStat.txBytes > 2e6 && peerStat.rxBytes > 2e6, 'both streams to carry 2 MB', 120_000);
    assert.doesNotMatch(consoles[0].text(), /Migration disabled|falling back on userspace virtio/, `QEMU 0${diag()}`);
    qmps.push(await Qmp.connect(qmpPaths[0]));

    const runs: { tStart: number; tDone: number; info: Record<string, unknown>; during: { tx: number; rx: number } }[] = [];
    for (let k = 0; k < MIGRATIONS; k++) {
      // QEMU k+1 on the other serve, which must have let go of QEMU k-1 (it serves one front-end at a time).
      const target = (k + 1) % 2;
      const freed = Math.floor((k + 1) / 2);
      if (QEMU_NET) await wait(() => k < 1 || qemus[k - 1].exitCode !== null || qemus[k - 1].signalCode !== null, `QEMU ${k - 1} to exit`, 30_000);
      else await wait(() => (serves[target].text().match(/ready for the next front-end/g)?.length ?? 0) >= freed, `serve ${'AB'[target]} to let go of QEMU ${k - 1}`, 30_000);
      const port = await freePort();
      startQemu(k + 1, port);
      await bridgeTap(k + 1);
      qmps.push(await Qmp.connect(qmpPaths[k + 1]));

      // Migrate QEMU k → QEMU k+1 over localhost.
      const src = qmps[k];
      await src.cmd('migrate-set-parameters', { 'max-bandwidth': 4 * 1024 ** 3, 'downtime-limit': 300 });
      const before = { tx: peerStat!.txBytes, rx: peerStat!.rxBytes };
      const tStart = Date.now();
      await src.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
      let info: Record<string, unknown> = {};
      for (;;) {
        info = await src.cmd('query-migrate');
        if (info.status === 'completed' || info.status === 'failed' || info.status === 'cancelled') break;
        if (Date.now() - tStart > 180_000) assert.fail(`migration ${k + 1} still ${String(info.status)} after 180 s${diag()}`);
        await sleep(100);
      }
      const tDone = Date.now();
      assert.equal(info.status, 'completed', `migration ${k + 1}: ${JSON.stringify(info)}${diag()}`);
      runs.push({ tStart, tDone, info, during: { tx: peerStat!.txBytes - before.tx, rx: peerStat!.rxBytes - before.rx } });
      if (MEMCHECK) {
        const dst = qmps[k + 1];
        for (;;) {
          const st = await dst.cmd('query-status');
          if (st.status !== 'inmigrate') break;
          await sleep(20);
        }
        const files = [`${MEMCHECK}/mem-${k}-src`, `${MEMCHECK}/mem-${k}-dst`];
        await src.cmd('pmemsave', { val: 0, size: 512 * 2 ** 20, filename: files[0] });
        await dst.cmd('pmemsave', { val: 0, size: 512 * 2 ** 20, filename: files[1] });
        const [a, b] = files.map((f) => readFileSync(f));
        const diff: string[] = [];
        for (let pg = 256; pg < a.length / 4096; pg++) {
          if (a.subarray(pg * 4096, pg * 4096 + 4096).equals(b.subarray(pg * 4096, pg * 4096 + 4096))) continue;
          let first = 0;
          while (a[pg * 4096 + first] === b[pg * 4096 + first]) first++;
          let n = 0;
          for (let i = 0; i < 4096; i++) if (a[pg * 4096 + i] !== b[pg * 4096 + i]) n++;
          diff.push(`0x${(pg * 4096).toString(16)}(+${first},${n}B)`);
        }
        console.log(`# memcheck migration ${k + 1}: ${diff.length} pages differ${diff.length ? `: ${diff.slice(0, 40).join(' ')}` : ''}`);
        if (diff.length === 0) for (const f of files) rmSync(f, { force: true });
        await dst.cmd('cont');
      }
      // The source is paused for good: let it go (its serve then takes the next QEMU).
      await src.cmd('quit').catch(() => undefined);
      src.close();

      // The streams continue through the other serve: 4 MB more each way.
      const after = { tx: peerStat!.txBytes, rx: peerStat!.rxBytes };
      await wait(() => peerStat!.txBytes > after.tx + 4e6 && peerStat!.rxBytes > after.rx + 4e6, `both streams to carry 4 MB more after migration ${k + 1}`, 120_000);
      assert.equal(peerStat!.mismatchAt, -1, `guest → host stream: byte ${peerStat!.mismatchAt} differs from the pattern after migration ${k + 1}${diag()}`);
    }
    const last = MIGRATIONS;
    if (!QEMU_NET) assert.match(serves[last % 2].text(), /queue pair 0 started/, `the last serve runs the guest's rings${diag()}`);
    peer.stdin!.write('stop\n');
    await wait(() => peerEnd !== null, 'the peer to finish', 60_000);
    await wait(() => /GUEST-MIG-RX sha256=\w+/.test(consoles[last].text()), `the guest's sha256 of the stream it received (on QEMU ${last})`, 60_000);
    const end = peerEnd as unknown as PeerStat;
    const guestSha = /GUEST-MIG-RX sha256=(\w+)/.exec(consoles[last].text())![1];

    // Verified data, both ways.
    assert.equal(end.mismatchAt, -1, `guest → host stream: byte ${end.mismatchAt} differs from the pattern${diag()}`);
    assert.equal(guestSha, end.sha256, `host → guest stream: the guest's sha256 of ${end.rxBytes} bytes differs from the peer's${diag()}`);

    // The guest finishes on the last QEMU (pings, power off).
    const exited = new Promise<number | null>((r) => {
      const q = qemus[last];
      if (q.exitCode !== null) r(q.exitCode);
      else q.once('exit', (c) => r(c));
    });
    let exitTimer: ReturnType<typeof setTimeout> | undefined;
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => (exitTimer = setTimeout(() => r('timeout'), 120_000)))]);
    clearTimeout(exitTimer); // else it keeps this file's process (and the heavy lock) for 2 minutes after the test
    assert.equal(code, 0, `QEMU ${last} exit${diag()}`);
    assert.match(consoles[last].text(), /GUEST-PING-OK/, `the guest pings after the migrations${diag()}`);
    for (const [k, c] of consoles.entries()) assert.doesNotMatch(c.text(), GUEST_CRASH, `the guest crashed on QEMU ${k}${diag()}`);

    // Each source serve logged while the guest's memory was copied; neither serve refused a request.
    for (const i of QEMU_NET ? [] : MIGRATIONS > 1 ? [0, 1] : [0]) {
      const name = `serve ${'AB'[i]}`;
      assert.match(serves[i].text(), /dirty log: \d+ bytes/, `${name} got SET_LOG_BASE${diag()}`);
      assert.match(serves[i].text(), /dirty logging on/, `${name}: VHOST_F_LOG_ALL${diag()}`);
      assert.match(serves[i].text(), /queue pair 0 (started \([^)]*dirty logging\)|logs its writes)/, `${name} ran its pairs with logging queues${diag()}`);
    }
    for (const s of serves) assert.doesNotMatch(s.text(), /failure reply sent|closing connection|worker failed|stopped: /, `serve refused a request${diag()}`);

    // How long the guest's traffic stopped: the longest pause of the guest → host stream that overlaps each migration.
    for (const [k, r] of runs.entries()) {
      // Pauses that end after this migration started and begin before the next one (or 5 s after this one ended).
      const until = Math.min(r.tDone + 5000, runs[k + 1]?.tStart ?? Infinity);
      const gaps = end.gaps.filter(([a, b]) => b >= r.tStart && a <= until);
      const pause = gaps.reduce((m, [a, b]) => Math.max(m, b - a), 0);
      console.log(`# migration ${k + 1} (QEMU ${k} → ${k + 1}, ${PACKED ? 'packed' : 'split'} rings): ${((r.tDone - r.tStart) / 1000).toFixed(1)} s (QEMU total-time ${String(r.info['total-time'])} ms, downtime ${String(r.info.downtime)} ms, ${Math.round(Number((r.info.ram as Record<string, unknown>)?.transferred ?? 0) / 2 ** 20)} MiB RAM sent); streams moved ${(r.during.tx / 1e6).toFixed(1)} MB guest→host, ${(r.during.rx / 1e6).toFixed(1)} MB host→guest; guest → host stream stopped for ${pause} ms (pauses ≥ 100 ms: ${gaps.map(([a, b]) => `${b - a} ms from ${((a - r.tStart) / 1000).toFixed(2)} s`).join(', ') || 'none'})`);
    }
    console.log(`# verified ${(end.txBytes / 1e6).toFixed(1)} MB guest→host against the pattern, ${(end.rxBytes / 1e6).toFixed(1)} MB host→guest by sha256`);
    void peerErr;
  } finally {
    // VMQ_MIG_LOGS=DIR: keep every log (consoles, serves) for a post-mortem.
    const keep = process.env.VMQ_MIG_LOGS;
    if (keep) {
      consoles.forEach((c, i) => writeFileSync(`${keep}/qemu-${i}.log`, c.text()));
      serves.forEach((c, i) => writeFileSync(`${keep}/serve-${'ab'[i]}.log`, c.text()));
    }
    for (const q of qmps) q.close();
    for (const p of procs.slice().reverse()) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
    await sleep(300);
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      /* not created */
    }
    for (const p of [...sockets, ...qmpPaths]) rmSync(p, { force: true });
  }
});
