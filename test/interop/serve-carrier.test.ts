/**
 * Interop, the kernel's TAP: `virtio-mq serve --netdev tap` turns the TAP's
 * carrier (TUNSETCARRIER) off while no front-end runs the device and on
 * while one does, so the host sees the link as the guest's driver would
 * (NO-CARRIER: routes through the TAP go away, a bridge port stops
 * forwarding). serve runs in its own network namespace; attach's front-end
 * (this process, no traffic) connects, starts its rings, and disconnects,
 * twice. Each state is read from /sys/class/net/TAP/carrier and `ip link
 * show`, waited for with a deadline.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { hostAvailable } from '../../src/host/index.js';
import { VhostUserFrontend } from '../../src/transport/vhost-user/front-end.js';
import { waitFor } from '../support/vhost-frontend.js';
import { tmpSocketPath } from './testpmd.js';
import { carrierIn, sh } from './host.js';
import { stopProcess } from './netns.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return `needs Linux (platform is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (network namespace, TAP)';
  if (!hostAvailable()) return 'the native addon (src/host) is not built';
  return undefined;
}

test('serve --netdev tap: carrier off before a front-end, on while it runs the device, off after it disconnects, on after it reconnects', { skip: skipReason(), timeout: 60_000 }, async () => {
  const id = `${process.pid % 10000}${randomBytes(2).toString('hex')}`;
  const ns = `vmqCar${id}`, tap = `vmqc${id}`;
  const socket = tmpSocketPath('carrier');
  let serve: ChildProcess | undefined;
  let log = '';
  const fes: VhostUserFrontend[] = [];
  const diag = () => `\n--- serve ---\n${log.slice(-3000)}`;
  const carrier = (): string => carrierIn(ns, tap);
  const linkShow = () => sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'show', tap]);
  const expectCarrier = async (want: '0' | '1', what: string) => {
    await waitFor(() => carrier() === want, `carrier ${want} ${what} (now ${carrier()})${diag()}`, 10_000);
    const show = linkShow();
    if (want === '0') assert.match(show, /NO-CARRIER/, `ip link show ${what}: ${show}`);
    else assert.doesNotMatch(show, /NO-CARRIER/, `ip link show ${what}: ${show}`);
  };
  const connect = async () => {
    const fe = new VhostUserFrontend({ socket, pairs: 1, ring: 'split', source: () => ({ kind: 'none' }), reconnect: false, connectTimeoutMs: 10_000, log: () => {} });
    fes.push(fe);
    await fe.start();
    return fe;
  };
  try {
    sh(['ip', 'netns', 'add', ns]);
    serve = spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'serve', '--socket', socket, '--netdev', `tap,ifname=${tap}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    serve.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    await waitFor(() => log.includes('listening on') || serve!.exitCode !== null, 'serve to listen', 15_000);
    assert.ok(log.includes('listening on'), `serve did not start${diag()}`);

    await expectCarrier('0', 'before any front-end');
    assert.match(log, /netdev: carrier off \(no front-end\)/);

    let fe = await connect();
    await expectCarrier('1', 'while a front-end runs the device');
    assert.match(log, /netdev: carrier on \(a front-end runs the device\)/);

    await fe.stop();
    await expectCarrier('0', 'after the front-end disconnected');

    fe = await connect();
    await expectCarrier('1', 'after the front-end reconnected');
    await fe.stop();
    await expectCarrier('0', 'after the second disconnect');
    assert.equal(log.match(/netdev: carrier on/g)?.length, 2, `carrier on once per connection${diag()}`);
  } finally {
    for (const fe of fes) await fe.stop().catch(() => {});
    await stopProcess(serve, 2000);
    try {
      sh(['ip', 'netns', 'del', ns]);
    } catch {
      /* not created */
    }
  }
});
