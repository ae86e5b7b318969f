/**
 * The README's QEMU recipe, run exactly as written: the fenced `sh` block of
 * the "### QEMU" section is extracted from README.md (so the two cannot
 * drift) and run by bash from the repository root. It starts `serve` with a
 * TAP in a namespace, waits for its socket and boots the Linux guest that
 * `scripts/qemu-guest.sh` builds; the guest brings up 2 queue pairs, pings
 * the host side of the TAP and powers off. Everything the recipe started is
 * killed afterwards (it runs in its own process group) and its namespace and
 * socket are removed.
 *
 * Skipped, with the reason, without root, QEMU, or the guest image that
 * `.ci/run` builds (`scripts/qemu-guest.sh`; a test never installs it), or
 * when the recipe's fixed names (namespace `vmq`, `/tmp/vmq.sock`) are in use.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { ROOT, readmeBlock } from './readme.js';

const GUEST_DIR = '/var/cache/virtio-mq/guest';


function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP)';
  if (spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).error) return 'qemu-system-x86_64 is not installed (.ci/run: scripts/qemu-guest.sh)';
  // The guest kernel comes from scripts/qemu-guest.sh, which .ci/run runs; the recipe runs it again
  // with VMQ_NO_INSTALL=1, so it only builds from what is installed.
  if (!existsSync(GUEST_DIR) || !readdirSync(GUEST_DIR).some((f) => f.startsWith('vmlinuz-'))) return `no guest kernel in ${GUEST_DIR} (run scripts/qemu-guest.sh once)`;
  if (!existsSync(`${ROOT}dist/src/cli/main.js`)) return 'dist/ not built';
  if (existsSync('/run/netns/vmq')) return "the recipe's namespace vmq exists already";
  if (existsSync('/tmp/vmq.sock')) return "the recipe's socket /tmp/vmq.sock exists already";
  return undefined;
}

test('README: the QEMU recipe, as written, boots a Linux guest with 2 queue pairs through serve and pings the host', { skip: skipReason() ?? false, timeout: 300_000 }, async (t) => {
  const block = readmeBlock('### QEMU');
  assert.match(block, /npx virtio-mq serve/);
  assert.match(block, /until \[ -S \/tmp\/vmq\.sock \]/, 'the recipe waits for serve before starting QEMU');
  // Its own process group (detached), so the serve it puts in the background dies with it.
  const child = spawn('bash', ['-c', block], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, VMQ_NO_INSTALL: '1' } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  try {
    const code = await Promise.race([
      new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c))),
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 240_000).unref()),
    ]);
    if (/could not install \(VMQ_NO_INSTALL/.test(out)) {
      t.skip(`the guest needs packages .ci/run installs: ${/could not install[^\n]*/.exec(out)![0]}`);
      return;
    }
    assert.notEqual(code, 'timeout', `the recipe did not end (the guest powers off when done):\n${out.slice(-4000)}`);
    assert.match(out, /GUEST-QUEUES rx=2 tx=2/, out.slice(-4000));
    assert.match(out, /GUEST-PING-OK/, out.slice(-4000));
    assert.doesNotMatch(out, /virtio-mq: |command not found/, out.slice(-4000));
  } finally {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* the group is gone */
    }
    try {
      execFileSync('ip', ['netns', 'del', 'vmq'], { stdio: 'ignore' });
    } catch {
      /* not created */
    }
    rmSync('/tmp/vmq.sock', { force: true });
  }
});
