/**
 * The command line as a newcomer meets it: every bad option value of `loopback`
 * and `serve` is one line on stderr (`virtio-mq: ...`) and exit status 2, never
 * a stack trace and never a run that starts anyway; `--version` prints the
 * package's version.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PKG = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string };

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const BAD: [string[], RegExp][] = [
  [['loopback', '--duration', '0'], /--duration/],
  [['loopback', '--duration', '-1'], /--duration/],
  [['loopback', '--duration', 'abc'], /--duration/],
  [['loopback', '--duration', ''], /--duration/],
  [['loopback', '--resize', '8'], /--resize 8/],
  [['loopback', '--queues', '2', '--resize', '3'], /--resize 3/],
  [['loopback', '--resize', '0'], /--resize/],
  [['loopback', '--queue-size', '1000'], /--queue-size: .*power of two/],
  [['loopback', '--queue-size', '3'], /--queue-size: .*power of two/],
  [['loopback', '--queue-size', '0'], /--queue-size/],
  [['loopback', '--queue-size', '65536', '--ring', 'packed'], /--queue-size/],
  [['loopback', '--queues', '0'], /--queues/],
  [['loopback', '--queues', '65'], /--queues/],
  [['loopback', '--queues', '1.5'], /--queues/],
  [['loopback', '--flows', 'x'], /--flows/],
  [['loopback', '--size', '59'], /--size/],
  [['loopback', '--size', '1515'], /--size/],
  [['loopback', '--size'], /--size .*argument missing/],
  [['loopback', '--proto', 'icmp'], /--proto/],
  [['loopback', '--ip', '5'], /--ip/],
  [['loopback', '--mode', 'spin'], /--mode/],
  [['loopback', '--ring', 'ring'], /--ring/],
  [['loopback', '--rx-buffer-size', '10'], /--rx-buffer-size/],
  [['loopback', '--rx-buffer-size', '64', '--queue-size', '4', '--ring', 'packed', '--size', '1514'], /--rx-buffer-size 64/],
  [['loopback', '--queues', '64', '--queue-size', '32768'], /guest memory/],
  [['loopback', '--pcap', '/nonexistent/x.pcap'], /--pcap/],
  [['loopback', '--pcap', '/'], /--pcap/],
  [['loopback', '--pcap', fileURLToPath(new URL('../../package.json', import.meta.url))], /not a pcap/],
  [['loopback', '--bogus'], /unknown option '--bogus'/],
  [['loopback', 'extra'], /too many arguments/],
  [['serve'], /--socket/],
  [['attach'], /--socket/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--ring', 'ring'], /--ring/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--queues', '0'], /--queues/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--queue-size', '1000'], /--queue-size: .*power of two/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--mode', 'spin'], /--mode/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--mac', '52:54:00'], /--mac 52:54:00/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--netdev', 'foo'], /--netdev foo/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--netdev', 'generator,size=59'], /size=59/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--queues', '2', '--resize', '3'], /--resize 3/],
  [['attach', '--socket', '/tmp/vmq-cli-test.sock', '--duration', '0'], /--duration/],
  [['attach', '--socket', '/nonexistent-dir/vmq.sock', '--server'], /--socket .*does not exist/],
  [['serve', '--socket', '/nonexistent-dir/vmq.sock'], /--socket .*does not exist/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--queues', '0'], /--queues/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--queues', '257'], /--queues/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--queue-size', '0'], /--queue-size/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--mode', 'spin'], /--mode/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--netdev', 'foo'], /--netdev foo/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--netdev', 'tap'], /ifname/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--netdev', 'generator,flows=0'], /flows=0/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--netdev', 'pcap,file=/nonexistent/x.pcap'], /ENOENT|no such file/i],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--rss', 'types=tcpv5'], /tcpv5/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--bogus'], /unknown option '--bogus'/],
  [['loopback', '--mtu', '9000', '--size', '9015'], /--size 9015: larger than an Ethernet frame of --mtu 9000/],
  [['loopback', '--size', '1515'], /--size 1515/],
  [['loopback', '--mtu', '9715'], /--mtu/],
  [['loopback', '--mtu', '67'], /--mtu/],
  [['serve', '--socket', '/tmp/vmq-cli-test.sock', '--mtu', '70000'], /--mtu/],
  [['frobnicate'], /unknown command/],
];

for (const [args, why] of BAD) {
  test(`bad value: virtio-mq ${args.join(' ')} → one line, exit 2`, () => {
    const r = cli(args);
    assert.equal(r.signal, null, 'it must not run until the timeout');
    const lines = r.stderr.split('\n').filter((l) => l !== '' && !/^npm warn/.test(l));
    assert.equal(lines.length, 1, `exactly one line on stderr, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^virtio-mq: /);
    assert.match(lines[0]!, why);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    assert.equal(r.status, 2);
  });
}

test('--version and -V print the package version and exit 0', () => {
  for (const flag of ['--version', '-V']) {
    const r = cli([flag]);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.trim(), PKG.version);
  }
});

/**
 * `cli()` without blocking: resolves when the process has exited and its
 * output is read to the end ('close'), or kills it (SIGKILL) `ms` ms on and
 * resolves with the signal; `ms` counts how long it took.
 */
function cliRun(args: string[], deadlineMs: number): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const p = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  p.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const kill = setTimeout(() => p.kill('SIGKILL'), deadlineMs);
  return new Promise((resolve) => p.once('close', (status, signal) => {
    clearTimeout(kill);
    resolve({ status, signal, stdout, stderr, ms: Date.now() - t0 });
  }));
}

// loopback sends for --duration, checking every second (the first check at 1 s): the
// resize comes at that first check, and the run ends there too (0.6 s are over). What
// the test waits for is the run's end (exit status, summary), 60 s at the most: it
// asserts the resize took place rather than trusting the timing to bring it.
test('good values still run: loopback --duration 0.6 --resize 1 --queues 2', { timeout: 90_000 }, async () => {
  const r = await cliRun(['loopback', '--duration', '0.6', '--resize', '1', '--queues', '2'], 60_000);
  const all = `status ${r.status}, signal ${r.signal}, ${r.ms} ms\n--- stderr ---\n${r.stderr}\n--- stdout ---\n${r.stdout}`;
  assert.equal(r.signal, null, `it ended by itself within 60 s: ${all}`);
  assert.equal(r.status, 0, all);
  assert.match(r.stdout, /VQ_PAIRS_SET 1: active pairs now 1/, `the resize took place: ${all}`);
  assert.match(r.stdout, /OK: every frame came back/, all);
});
