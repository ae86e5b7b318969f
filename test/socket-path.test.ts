/**
 * claimSocketPath: the one rule every listener of the project (serve,
 * attach --server, the control socket) applies to the path it binds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { claimSocketPath } from '../src/transport/socket-path.js';

function listen(p: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(p, () => resolve(s));
  });
}

test('claimSocketPath: a free path is free; a stale socket is removed (and logged); a live one, a file, a directory or a symlink is refused and left alone', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmq-claim-'));
  try {
    await claimSocketPath(path.join(dir, 'none.sock'), 'test:');

    const live = path.join(dir, 'live.sock');
    const server = await listen(live);
    try {
      await assert.rejects(claimSocketPath(live, 'test:'), /^Error: test: .*live\.sock is in use \(another process accepts connections there\): refusing to take it over$/);
      assert.ok(fs.lstatSync(live).isSocket(), 'the live socket is untouched');
      // A socket inode nobody listens on: a hard link to the live socket's inode outlives the listener.
      fs.linkSync(live, path.join(dir, 'stale.sock'));
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
    const logs: string[] = [];
    await claimSocketPath(path.join(dir, 'stale.sock'), 'test:', (l) => logs.push(l));
    assert.equal(fs.existsSync(path.join(dir, 'stale.sock')), false, 'the stale socket is removed');
    assert.equal(logs.length, 1);
    assert.match(logs[0], /removed a stale socket/);

    const file = path.join(dir, 'file');
    fs.writeFileSync(file, 'precious');
    fs.mkdirSync(path.join(dir, 'd'));
    fs.symlinkSync(file, path.join(dir, 'link'));
    for (const [name, kind] of [['file', 'a regular file'], ['d', 'a directory'], ['link', 'a symbolic link']]) {
      await assert.rejects(claimSocketPath(path.join(dir, name), 'test:'), new RegExp(`exists and is ${kind}: refusing to replace it`));
    }
    assert.equal(fs.readFileSync(file, 'utf8'), 'precious');
    assert.ok(fs.lstatSync(path.join(dir, 'link')).isSymbolicLink());
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
