/**
 * Interop, the kernel's TAP: link status and RARP of `virtio-mq serve
 * --netdev tap --config-notify`, driven by a scripted vhost-user front-end
 * (test/support/vhost-frontend.ts) that negotiates RARP, BACKEND_REQ and
 * CONFIG and hands serve a back-end channel:
 *
 * - GET_CONFIG's status has VIRTIO_NET_S_LINK_UP (§5.1.4) while the TAP is there;
 * - SEND_RARP makes serve send the RARP announcement of the MAC out of the
 *   TAP: tcpdump on the TAP captures it and its 64 bytes are checked field by field;
 * - `ip link del` of the TAP: serve sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on
 *   the back-end channel and GET_CONFIG's status turns 0; the TAP re-created:
 *   CONFIG_CHANGE_MSG again, LINK_UP again, and a second SEND_RARP goes out
 *   on the re-opened queue fd;
 * - this front-end never starts a ring: the TAP's carrier stays off
 *   (NO-CARRIER), on the re-opened TAP too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { close, recvmsg, socketPair } from '../../src/host/index.js';
import {
  VHOST_USER_F_PROTOCOL_FEATURES_MASK, VHOST_USER_HEADER_SIZE, VHOST_USER_PROTOCOL_F_BACKEND_REQ, VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_RARP, VHOST_USER_PROTOCOL_F_REPLY_ACK, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, decodeHeader,
} from '../../src/transport/vhost-user/messages.js';
import { VIRTIO_F_VERSION_1 } from '../../src/virtio/features.js';
import { VIRTIO_NET_F_STATUS } from '../../src/net/features.js';
import { readPcapFile } from '../../src/netdev/pcap.js';
import { VhostFrontend, waitFor } from '../support/vhost-frontend.js';
import { tmpSocketPath } from './testpmd.js';
import { carrierIn, sh } from './host.js';
import { stopProcess } from './netns.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP, tcpdump)';
  try {
    execFileSync('tcpdump', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'tcpdump not installed (scripts/install-peers.sh)';
  }
  return undefined;
}

/** The link status field of GET_CONFIG (virtio_net_config.status, little-endian u16 at offset 6). */
async function linkStatus(fe: VhostFrontend): Promise<number> {
  const r = await fe.request({ type: 'GET_CONFIG', offset: 0, size: 10, flags: 0 });
  if (r.type !== 'GET_CONFIG' || !r.config) assert.fail(`GET_CONFIG answered with ${r.type}`);
  const d = r.config.data;
  return d[6] | (d[7] << 8);
}

/** The next message on the back-end channel (our end of the socketpair), within 5 s. */
async function backendMessage(fd: number): Promise<{ request: number; size: number }> {
  let got: { request: number; size: number } | undefined;
  await waitFor(() => {
    const m = recvmsg(fd, 256, 4);
    if (!m || m.bytes.length === 0) return false;
    for (const f of m.fds) close(f);
    assert.ok(m.bytes.length >= VHOST_USER_HEADER_SIZE, `a whole header on the back-end channel (${m.bytes.length} bytes)`);
    const h = decodeHeader(m.bytes);
    got = { request: h.request, size: h.size };
    return true;
  }, 'a message on the back-end channel', 5000);
  return got!;
}

/** Capture the first RARP frame on `tap` in `ns` while `send` runs; its bytes. */
async function captureRarp(ns: string, tap: string, dir: string, send: () => Promise<void>): Promise<Uint8Array> {
  const file = join(dir, `rarp-${randomBytes(3).toString('hex')}.pcap`);
  const td = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', tap, '-n', '-U', '-c', '1', '-w', file, 'ether', 'proto', '0x8035'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  td.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((r) => td.once('exit', (c) => r(c)));
  try {
    await waitFor(() => err.includes('listening on') || td.exitCode !== null, 'tcpdump to listen', 10_000);
    assert.ok(err.includes('listening on'), `tcpdump did not start: ${err}`);
    await send();
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 5000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, `tcpdump did not capture a RARP frame within 5 s: ${err}`);
  } finally {
    if (td.exitCode === null) td.kill('SIGKILL');
  }
  const cap = readPcapFile(file);
  assert.equal(cap.count, 1);
  return cap.frame(0).slice();
}

/** The announcement, field by field (RFC 903 over RFC 826; DPDK's vhost sends the same 64 bytes). */
function checkRarp(f: Uint8Array, mac: Uint8Array): void {
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  assert.equal(f.length, 64, 'frame length');
  assert.equal(hex(f.subarray(0, 6)), 'ffffffffffff', 'broadcast destination');
  assert.equal(hex(f.subarray(6, 12)), hex(mac), 'source: the guest MAC');
  assert.equal(hex(f.subarray(12, 14)), '8035', 'EtherType RARP');
  assert.equal(hex(f.subarray(14, 22)), '0001' + '0800' + '06' + '04' + '0003', 'Ethernet/IPv4, 6/4, opcode 3 (reverse request)');
  assert.equal(hex(f.subarray(22, 28)), hex(mac), 'sender hardware address');
  assert.equal(hex(f.subarray(28, 32)), '00000000', 'sender protocol address');
  assert.equal(hex(f.subarray(32, 38)), hex(mac), 'target hardware address');
  assert.equal(hex(f.subarray(38, 42)), '00000000', 'target protocol address');
  assert.ok(f.subarray(42).every((b) => b === 0), 'zero padding');
}

test('serve --netdev tap --config-notify: GET_CONFIG link status, SEND_RARP captured on the TAP byte for byte, TAP deleted → CONFIG_CHANGE_MSG + link down, re-created → CONFIG_CHANGE_MSG + link up + RARP on the re-opened fd', { skip: skipReason(), timeout: 60_000 }, async () => {
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const ns = `vmqLnk${id}`, tap = `vmql${id}`;
  const socket = tmpSocketPath('link');
  const dir = mkdtempSync(join(tmpdir(), 'vmq-link-'));
  let serve: ChildProcess | undefined;
  let log = '';
  let fe: VhostFrontend | undefined;
  let mine = -1;
  try {
    sh(['ip', 'netns', 'add', ns]);
    serve = spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'serve', '--socket', socket, '--netdev', `tap,ifname=${tap}`, '--config-notify'], { stdio: ['ignore', 'ignore', 'pipe'] });
    serve.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    await waitFor(() => log.includes('listening on') || serve!.exitCode !== null, 'serve to listen', 15_000);
    const diag = () => `\n--- serve ---\n${log.slice(-4000)}`;
    assert.ok(log.includes('listening on'), `serve did not start${diag()}`);

    fe = await VhostFrontend.connect(socket);
    const pf = await fe.request({ type: 'GET_PROTOCOL_FEATURES' });
    if (pf.type !== 'GET_PROTOCOL_FEATURES') assert.fail(pf.type);
    const want = [VHOST_USER_PROTOCOL_F_RARP, VHOST_USER_PROTOCOL_F_BACKEND_REQ, VHOST_USER_PROTOCOL_F_CONFIG, VHOST_USER_PROTOCOL_F_REPLY_ACK].reduce((a, b) => a | (1n << BigInt(b)), 0n);
    assert.equal(pf.features & want, want, `--config-notify offers RARP, BACKEND_REQ, CONFIG: 0x${pf.features.toString(16)}`);
    await fe.send({ type: 'SET_FEATURES', features: VIRTIO_F_VERSION_1 | VIRTIO_NET_F_STATUS | VHOST_USER_F_PROTOCOL_FEATURES_MASK });
    await fe.send({ type: 'SET_PROTOCOL_FEATURES', features: want });
    let theirs: number;
    [mine, theirs] = socketPair({ nonblock: true });
    await fe.ack({ type: 'SET_BACKEND_REQ_FD', fd: theirs });
    close(theirs);

    assert.equal(await linkStatus(fe), 1, `VIRTIO_NET_S_LINK_UP with the TAP there${diag()}`);
    // This front-end never starts a ring: the TAP's carrier stays off (serve-carrier.test.ts has one that does).
    await waitFor(() => carrierIn(ns, tap) === '0', `the TAP's carrier off while no front-end runs the device${diag()}`, 5000);

    const mac = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, Number.parseInt(id.slice(-2), 16) || 1);
    checkRarp(await captureRarp(ns, tap, dir, () => fe!.ack({ type: 'SEND_RARP', mac })), mac);
    assert.match(log, /SEND_RARP for 52:54:00:ab:cd:[0-9a-f]{2}: RARP announcement sent on the TAP/);

    // The TAP goes away under the running serve.
    const ifindex = Number(sh(['ip', 'netns', 'exec', ns, 'cat', `/sys/class/net/${tap}/ifindex`]));
    sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'del', tap]);
    const down = await backendMessage(mine);
    assert.deepEqual(down, { request: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, size: 0 }, `CONFIG_CHANGE_MSG when the TAP went${diag()}`);
    assert.equal(await linkStatus(fe), 0, `link down while the TAP is gone${diag()}`);
    assert.match(log, /link down \(CONFIG_CHANGE_MSG sent\)/);

    // …and comes back (an operator re-creates it): serve re-opens it.
    sh(['ip', 'netns', 'exec', ns, 'ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap', 'multi_queue']);
    const up = await backendMessage(mine);
    assert.deepEqual(up, { request: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, size: 0 }, `CONFIG_CHANGE_MSG when the TAP came back${diag()}`);
    assert.equal(await linkStatus(fe), 1, `link up again${diag()}`);
    assert.match(log, new RegExp(`${tap} is back \\(ifindex (\\d+)\\)`));
    assert.notEqual(Number(new RegExp(`${tap} is back \\(ifindex (\\d+)\\)`).exec(log)![1]), ifindex, 'a new device');
    await waitFor(() => carrierIn(ns, tap) === '0', `the re-opened TAP's carrier off too (no front-end runs the device)${diag()}`, 5000);
    checkRarp(await captureRarp(ns, tap, dir, () => fe!.ack({ type: 'SEND_RARP', mac })), mac);
  } finally {
    fe?.close();
    if (mine >= 0) close(mine);
    await stopProcess(serve, 2000);
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      /* not created */
    }
    rmSync(socket, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});
