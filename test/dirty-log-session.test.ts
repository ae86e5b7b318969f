/**
 * The vhost-user back-end's side of live migration, over its socket: it
 * offers VHOST_F_LOG_ALL and VHOST_USER_PROTOCOL_F_LOG_SHMFD, answers a good
 * SET_LOG_BASE with u64 0, takes SET_LOG_FD and SET_VRING_ADDR with
 * VHOST_VRING_F_LOG, and a log that cannot be what it claims (size 0, a
 * memfd shorter than offset + size, an offset past its end, a size above the
 * limit) ends that connection with a DirtyLogError logged, its fd closed,
 * and the next front-end served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { close, eventfdCreate, memfdCreate } from '../src/host/index.js';
import { VhostUserBackend } from '../src/transport/vhost-user/backend.js';
import { VHOST_F_LOG_ALL, VHOST_USER_PROTOCOL_F_LOG_SHMFD, type VhostUserReply } from '../src/transport/vhost-user/messages.js';
import { MAX_LOG_BYTES } from '../src/transport/vhost-user/log.js';
import { VhostFrontend, waitFor } from './support/vhost-frontend.js';

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** The u64 of a reply (GET_FEATURES / GET_PROTOCOL_FEATURES `features`, an ACK's `result`). */
function u64(r: VhostUserReply): bigint {
  const o = r as unknown as Record<string, unknown>;
  const v = o.features ?? o.result;
  assert.equal(typeof v, 'bigint', `a u64 reply: ${r.type}`);
  return v as bigint;
}

test('SET_LOG_BASE: offered features, a good log is acknowledged, bad logs end only that connection', async () => {
  const logs: string[] = [];
  const socket = path.join(os.tmpdir(), `vmq-dl-${process.pid}.sock`);
  const backend = new VhostUserBackend({ socket, log: (l) => logs.push(l), pairs: 1, netdev: { kind: 'sink' } });
  await backend.start();
  try {
    // Offered.
    let fe = await VhostFrontend.connect(socket);
    assert.ok((u64(await fe.request({ type: 'GET_FEATURES' })) >> BigInt(VHOST_F_LOG_ALL)) & 1n, 'VHOST_F_LOG_ALL offered');
    assert.ok((u64(await fe.request({ type: 'GET_PROTOCOL_FEATURES' })) >> BigInt(VHOST_USER_PROTOCOL_F_LOG_SHMFD)) & 1n, 'LOG_SHMFD offered');

    // A good log: 4 KiB at offset 4096 of an 8 KiB memfd; the reply is u64 0.
    const good = memfdCreate('vmq-log', 8192);
    const r = await fe.request({ type: 'SET_LOG_BASE', mmapSize: 4096, mmapOffset: 4096, fd: good });
    close(good);
    assert.equal(r.type, 'ACK');
    assert.equal(u64(r), 0n);
    assert.ok(logs.some((l) => /dirty log: 4096 bytes \(covers 128 MiB/.test(l)), logs.join('\n'));
    const efd = eventfdCreate(0);
    await fe.send({ type: 'SET_LOG_FD', fd: efd });
    close(efd);
    await fe.ack({ type: 'SET_FEATURES', features: 1n << BigInt(VHOST_F_LOG_ALL) });
    assert.ok(!fe.peerClosed, 'still connected');
    await waitFor(() => logs.some((l) => /VHOST_F_LOG_ALL|dirty logging on/.test(l)), 'the logging line');
    fe.close();
    await waitFor(() => backend.session === null, 'the session to end');

    const baseline = fdCount();
    const bad: [string, number, number, number][] = [
      ['size 0', 4096, 0, 0],
      ['memfd shorter than the log', 4096, 8192, 0],
      ['offset past the end of the memfd', 4096, 4096, 8192],
      ['size above the limit', 4096, MAX_LOG_BYTES + 8, 0],
    ];
    for (const [what, fileSize, size, offset] of bad) {
      fe = await VhostFrontend.connect(socket);
      const fd = memfdCreate('vmq-log-bad', fileSize);
      const before = logs.length;
      await fe.send({ type: 'SET_LOG_BASE', mmapSize: size, mmapOffset: offset, fd });
      close(fd);
      await fe.waitClosed();
      fe.close();
      await waitFor(() => backend.session === null, 'the session to end');
      assert.ok(logs.slice(before).some((l) => /SET_LOG_BASE: (BAD_SIZE|MAP_FAILED): .*closing connection/.test(l)), `${what}: ${logs.slice(before).join('\n')}`);
      // The next front-end is served.
      fe = await VhostFrontend.connect(socket);
      assert.ok(u64(await fe.request({ type: 'GET_FEATURES' })) > 0n, `${what}: next connection served`);
      fe.close();
      await waitFor(() => backend.session === null, 'the session to end');
    }
    await waitFor(() => fdCount() === baseline, `the fd count back at ${baseline} (now ${fdCount()})`);
  } finally {
    await backend.stop();
  }
});
