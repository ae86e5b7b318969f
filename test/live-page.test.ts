/**
 * The live page (`--http`) in headless Chromium (puppeteer-core driving the
 * Debian `chromium` package): while `loopback` traffic flows the page loads
 * without script errors, draws its four uPlot charts, shows the negotiated
 * features and the active pair count, and its numbers move with each
 * server-sent event. A screenshot is kept in test-artifacts/live-page.png.
 * Skipped (with the reason) when Chromium is not installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const CHROMIUM = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && fs.existsSync(p));

test('live page: loads, charts drawn, features and pairs shown, numbers move while loopback runs; screenshot kept', { timeout: 90_000 }, async (t) => {
  if (!CHROMIUM) {
    t.skip('chromium is not installed (Debian package chromium; .ci/run installs it)');
    return;
  }
  const { default: puppeteer } = await import('puppeteer-core');
  const control = path.join(os.tmpdir(), `vmq-page-${process.pid}.sock`);
  const child = spawn(process.execPath, [MAIN, 'loopback', '--queues', '2', '--duration', '12', '--control', control, '--http', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  child.stdout.resume();
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  let browser: Awaited<ReturnType<typeof puppeteer.launch>> | null = null;
  try {
    const deadline = Date.now() + 15_000;
    let url: string | undefined;
    while (!(url = /live page: (http:\/\/[^\s"]+)/.exec(err)?.[1])) { // a JSON log line with --json
      if (Date.now() > deadline) throw new Error(`no "live page:" line: ${err}`);
      await sleep(20);
    }
    browser = await puppeteer.launch({
      executablePath: CHROMIUM, headless: true,
      args: [...(process.getuid?.() === 0 ? ['--no-sandbox'] : []), '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${path.join(os.tmpdir(), `vmq-chromium-${process.pid}`)}`],
    });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.setViewport({ width: 1320, height: 900 });
    const res = await page.goto(url, { waitUntil: 'load' });
    assert.equal(res?.status(), 200);
    const num = (sel: string) => page.$eval(sel, (e) => Number(e.textContent));
    // Functions run in the page: given as source text (this project compiles without the DOM types).
    await page.waitForFunction('Number(document.getElementById("updates").textContent) >= 1', { timeout: 10_000 });
    const first = { rx: await num('#rx-packets'), updates: await num('#updates') };
    // Each event replaces the numbers: RX packets grow, the update count moves.
    await page.waitForFunction(`Number(document.getElementById("rx-packets").textContent) > ${first.rx} && Number(document.getElementById("updates").textContent) >= ${first.updates + 2}`, { timeout: 10_000 });
    // A rate above zero in the pairs table (RX pkt/s of some pair).
    await page.waitForFunction('[...document.querySelectorAll("#pairs-table tbody tr")].some((tr) => Number(tr.children[1].textContent) > 0)', { timeout: 10_000 });
    assert.equal(await page.$$eval('#pairs-table tbody tr', (r) => r.length), 2, 'one row per queue pair');
    assert.equal(await num('#active-pairs'), 2);
    const features = await page.$eval('#features', (e) => e.textContent ?? '');
    assert.match(features, /VIRTIO_F_VERSION_1/);
    assert.match(features, /VIRTIO_NET_F_MQ/);
    assert.equal(await page.$$eval('.uplot canvas', (c) => c.length), 4, 'four charts drawn');
    assert.equal(await page.$eval('#state', (e) => e.textContent), 'running');
    assert.deepEqual(errors, [], 'no script errors');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'live-page.png');
    await page.screenshot({ path: shot as `${string}.png`, fullPage: true });
    const png = fs.readFileSync(shot);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG screenshot');
    t.diagnostic(`screenshot: ${shot} (${png.length} bytes)`);
  } finally {
    await browser?.close();
    fs.rmSync(path.join(os.tmpdir(), `vmq-chromium-${process.pid}`), { recursive: true, force: true });
    if (child.exitCode === null) child.kill('SIGINT'); // loopback stops sending, checks what is in flight, exits
    const code = await exited;
    assert.equal(code, 0, `loopback ended OK after SIGINT: ${err.slice(-400)}`);
    assert.equal(fs.existsSync(control), false, 'its control socket removed');
  }
});
