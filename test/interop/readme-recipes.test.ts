/**
 * The README's recipes, run exactly as written: the fenced `sh` block of the
 * "DPDK testpmd as the front-end" section is extracted from README.md (so the
 * README and this test cannot drift) and run by bash from the repository
 * root. Only the interactive tail is supplied on stdin, as a person would type
 * it at the testpmd prompt: `start tx_first`, then `stop` and `quit`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { ROOT, readmeBlock } from './readme.js';
import { interopSkipReason, parseForwardStats } from './testpmd.js';



const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** pid and all its descendants (from /proc), parents first. */
function descendants(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid)!.push(Number(d));
    } catch {
      /* exited */
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(kids.get(out[i]!) ?? []));
  return out;
}

const npxSkip = (): string | undefined => (existsSync(`${ROOT}dist/src/cli/main.js`) ? undefined : 'dist/ not built');

test('README: the DPDK testpmd recipe, as written, forwards frames through serve', { skip: interopSkipReason() ?? npxSkip() ?? false, timeout: 180_000 }, async () => {
  const block = readmeBlock('### DPDK testpmd as the front-end');
  assert.match(block, /npx virtio-mq serve/, 'the recipe runs virtio-mq through npx (no global install needed)');
  assert.match(block, /--total-num-mbufs=/);
  const sock = /--socket (\S+)/.exec(block)![1]!;
  rmSync(sock, { force: true });
  // bash runs the block as pasted, on a terminal (script(1) gives it a pty, as a person
  // has: testpmd's prompt is not flushed into a pipe). Every process it started is
  // killed afterwards by walking the process tree from here.
  const script = `${block}\nkill %1 2>/dev/null; wait`;
  const child = spawn('script', ['-qfec', `bash -c ${shellQuote(script)}`, '/dev/null'], {
    cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const until = async (re: RegExp, ms: number) => {
    const end = Date.now() + ms;
    while (!re.test(out)) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; output:\n${out.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  try {
    await until(/testpmd> /, 90_000);
    child.stdin.write('start tx_first\n');
    await new Promise((r) => setTimeout(r, 3000));
    child.stdin.write('stop\n');
    await until(/Done\.|forward statistics/i, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    child.stdin.write('quit\n');
    child.stdin.end();
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 60_000))]);
    assert.notEqual(code, 'timeout', `the recipe did not end after quit:\n${out.slice(-4000)}`);
    assert.doesNotMatch(out, /Creation of mbuf pool.*failed|Cannot init mbuf pool|command not found|EAL: Error/i, out.slice(-4000));
    const stats = parseForwardStats(out);
    assert.ok(stats, `testpmd printed forward statistics:\n${out.slice(-4000)}`);
    assert.ok(stats.rxPackets > 1000 && stats.txPackets > 1000, `frames went round serve's loopback: ${JSON.stringify(stats)}`);
    console.log(`README DPDK recipe: ${JSON.stringify(stats)}`);
  } finally {
    for (const pid of descendants(child.pid!).reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    rmSync(sock, { force: true });
  }
});

test('README: the attach recipe against testpmd net_vhost, as written, checks every frame', { skip: interopSkipReason() ?? npxSkip() ?? false, timeout: 180_000 }, async () => {
  const block = readmeBlock('### DPDK testpmd as the back-end');
  assert.match(block, /npx virtio-mq attach/);
  const sock = /iface=([^,\s]+)/.exec(block)![1]!;
  rmSync(sock, { force: true });
  const child = spawn('bash', ['-c', block], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 150_000))]);
    assert.notEqual(code, 'timeout', `the recipe did not end:\n${out.slice(-4000)}`);
    assert.equal(code, 0, out.slice(-4000));
    assert.match(out, /OK: every frame that came back was byte-exact and in order/, out.slice(-4000));
    const m = /sent (\d+) frames, received (\d+)/.exec(out);
    assert.ok(m && Number(m[2]) > 1000, `frames went round testpmd: ${m?.[0]}`);
    console.log(`README attach recipe: ${m![0]}`);
  } finally {
    for (const pid of descendants(child.pid!).reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    rmSync(sock, { force: true });
  }
});
