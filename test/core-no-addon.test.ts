/**
 * The core never needs the native addon: importing src/virtio, src/net, the
 * netdevs, the traffic sources, the local transport and `virtio-mq loopback`
 * must not load src/host's addon, and a loopback must run where the addon is
 * unavailable.  Each test runs in a child process with
 * VIRTIO_MQ_HOST_ADDON pointing at a file that does not exist, so any attempt
 * to load the addon (main thread or worker) throws.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const DIST_SRC = fileURLToPath(new URL('../src/', import.meta.url));
const NO_ADDON = { ...process.env, VIRTIO_MQ_HOST_ADDON: '/nonexistent/virtio_mq_host.node' };

/** Every compiled module of the core (worker entry points excepted: they need a parent port). */
function coreModules(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js') && !e.name.endsWith('-worker.js')) out.push(p);
    }
  };
  for (const d of ['virtio', 'net', 'netdev', 'traffic', 'transport/local']) walk(join(DIST_SRC, d));
  out.push(join(DIST_SRC, 'transport/device-pair-setup.js'), join(DIST_SRC, 'cli/loopback.js'));
  return out;
}

/** Run an ES module script in a child process without the addon (a file: workers started from `-e` code misbehave). */
function runChild(script: string) {
  const dir = mkdtempSync(join(tmpdir(), 'vmq-no-addon-'));
  try {
    const file = join(dir, 'child.mjs');
    writeFileSync(file, script);
    return spawnSync(process.execPath, [file], { env: NO_ADDON, encoding: 'utf8', timeout: 60_000 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('importing the core does not load the native addon, and a loopback runs without it', () => {
  const mods = coreModules();
  assert.ok(mods.length > 30, `found the core modules (${mods.length})`);
  const script = `
    for (const m of ${JSON.stringify(mods.map((m) => pathToFileURL(m).href))}) await import(m);
    const host = await import(${JSON.stringify(pathToFileURL(join(DIST_SRC, 'host/index.js')).href)});
    if (host.hostLoaded()) throw new Error('importing the core loaded the addon');
    if (host.hostAvailable()) throw new Error('VIRTIO_MQ_HOST_ADDON did not make the addon unavailable');
    const { runLoopback } = await import(${JSON.stringify(pathToFileURL(join(DIST_SRC, 'cli/loopback.js')).href)});
    const ok = await runLoopback({ queues: 2, flows: 8, size: 128, duration: 0.3, proto: 'udp', ipVersion: 4, rss: true, resize: 1,
      mode: 'notify', queueSize: 64, ring: 'split', inOrder: false, json: true });
    if (!ok) throw new Error('loopback failed');
    if (host.hostLoaded()) throw new Error('the loopback loaded the addon');
    console.error("core without addon: ok");
  `;
  const r = runChild(script);
  assert.equal(r.status, 0, `child failed:\n${r.stderr}`);
  assert.match(r.stderr, /core without addon: ok/);
});

test('virtio-mq loopback runs without the addon; serve says in one line that it needs it', () => {
  const main = join(DIST_SRC, 'cli/main.js');
  for (const ring of ['split', 'packed']) {
    const r = spawnSync(process.execPath, [main, 'loopback', '--duration', '0.3', '--queues', '2', '--ring', ring], { env: NO_ADDON, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /OK: every frame came back/);
  }
  const s = spawnSync(process.execPath, [main, 'serve', '--socket', `/tmp/vmq-no-addon-${process.pid}.sock`], { env: NO_ADDON, encoding: 'utf8', timeout: 30_000 });
  assert.equal(s.status, 2);
  const lines = s.stderr.split('\n').filter((l) => l !== '');
  assert.match(lines.at(-1)!, /^virtio-mq: .*virtio_mq_host\.node|^virtio-mq: .*addon/);
  assert.doesNotMatch(s.stderr, /^\s+at /m);
});
