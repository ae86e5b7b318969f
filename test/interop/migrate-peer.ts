/**
 * The host end of the live-migration test's two TCP streams (no tests here;
 * run by test/interop/serve-migrate.test.ts inside its network namespace):
 *
 *   node migrate-peer.js HOST_ADDR GUEST_ADDR PATTERN
 *
 * - guest → host: listens on HOST_ADDR:5002 and checks every byte the guest
 *   sends (`yes PATTERN`: PATTERN + "\n" repeated) against the pattern;
 * - host → guest: connects to GUEST_ADDR:5001 (retrying until the guest
 *   listens) and sends random bytes, hashing them (sha256) as they go.
 *
 * Reads commands on stdin: `stop` ends the host → guest stream (the guest
 * then prints the sha256 of what it got) and closes the guest → host one.
 * Prints one JSON object per line on stdout: `{"t":"stat",...}` every 100 ms
 * (bytes each way, first mismatch, the longest pause of the guest → host
 * stream so far and when it ended), and `{"t":"end",...}` with the hash.
 */
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';

const [hostAddr, guestAddr, pattern] = process.argv.slice(2);
const unit = Buffer.from(`${pattern}\n`);
// The expected stream, long enough to compare any chunk with one subarray.
const REPS = Math.ceil((256 * 1024) / unit.length) + 1;
const expected = Buffer.concat(Array.from({ length: REPS }, () => unit));

let txBytes = 0; // guest → host, verified
let mismatchAt = -1;
let lastData = 0;
let maxGap = 0;
let maxGapEnd = 0;
/** Pauses of 100 ms or more in the guest → host stream: [last data before, first data after] (ms since the epoch). */
const gaps: [number, number][] = [];
let txSock: net.Socket | null = null;
let rxBytes = 0; // host → guest, sent
let rxConnected = false;
let stopping = false;
const hash = createHash('sha256');

function emit(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

const server = net.createServer((sock) => {
  if (txSock) {
    sock.destroy();
    return;
  }
  txSock = sock;
  sock.on('data', (b: Buffer) => {
    const now = Date.now();
    if (lastData !== 0 && now - lastData > maxGap) {
      maxGap = now - lastData;
      maxGapEnd = now;
    }
    if (lastData !== 0 && now - lastData >= 100 && gaps.length < 100) gaps.push([lastData, now]);
    lastData = now;
    if (mismatchAt >= 0) {
      txBytes += b.length;
      return;
    }
    for (let at = 0; at < b.length && mismatchAt < 0; ) {
      const n = Math.min(b.length - at, 128 * 1024);
      const off = txBytes % unit.length;
      const got = b.subarray(at, at + n);
      if (!got.equals(expected.subarray(off, off + n))) {
        for (let i = 0; i < n; i++) if (got[i] !== expected[off + i]) { mismatchAt = txBytes + i; break; }
      }
      txBytes += n;
      at += n;
    }
  });
  sock.on('error', () => {});
});
server.listen(5002, hostAddr);

const block = randomBytes(64 * 1024);
function connectRx(): void {
  const s = net.connect({ host: guestAddr, port: 5001 });
  s.on('error', () => {
    if (!rxConnected && !stopping) setTimeout(connectRx, 200);
  });
  s.on('connect', () => {
    rxConnected = true;
    const pump = (): void => {
      while (!stopping) {
        // A fresh random block each time (a stale page in the guest cannot match by chance).
        block[0] ^= 1 + (rxBytes & 0x7f);
        const chunk = Buffer.from(block);
        for (let i = 0; i < chunk.length; i += 4096) chunk.writeUInt32LE((rxBytes + i) >>> 0, i);
        hash.update(chunk);
        rxBytes += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end(() => {
        emit({ t: 'end', rxBytes, sha256: hash.digest('hex'), txBytes, mismatchAt, maxGap, maxGapEnd, gaps });
        txSock?.destroy();
        server.close();
        setTimeout(() => process.exit(0), 200);
      });
    };
    pump();
  });
}
connectRx();

const timer = setInterval(() => emit({ t: 'stat', at: Date.now(), txBytes, rxBytes, rxConnected, txConnected: txSock !== null, mismatchAt, maxGap, maxGapEnd, lastData, gaps }), 100);
timer.unref();

createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() === 'stop') stopping = true;
});
