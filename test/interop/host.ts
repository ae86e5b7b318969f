/**
 * What the interop tests share to drive the host and the Linux guest:
 * running a command with a deadline, whether a command is installed, a
 * network device's carrier,
 * waiting for a counter to settle, and the guest kernel and initramfs scripts/qemu-guest.sh builds (cached in
 * /var/cache/virtio-mq/guest, or $VMQ_GUEST_DIR). Tests never install: the
 * script runs with VMQ_NO_INSTALL=1 and a guest it cannot build is a skip
 * reason, not a failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const guestScript = fileURLToPath(new URL('../../../scripts/qemu-guest.sh', import.meta.url));
const guestDir = process.env.VMQ_GUEST_DIR ?? '/var/cache/virtio-mq/guest';

/** Run `args[0]` with the rest as arguments; its stdout (utf8). @throws on a non-zero exit or after `timeout` ms. */
export function sh(args: string[], timeout = 30_000): string {
  return execFileSync(args[0], args.slice(1), { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** /sys/class/net/IFNAME/carrier in network namespace `ns`: '1', '0', or 'unreadable' (e.g. the device not there yet). */
export function carrierIn(ns: string, ifname: string): string {
  try {
    return execFileSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${ifname}/carrier`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unreadable';
  }
}

/** Whether `cmd arg` runs and exits 0 (for a skip reason: `hasCommand('iperf3') ? undefined : 'iperf3 not installed'`). */
export function hasCommand(cmd: string, arg = '--version'): boolean {
  try {
    execFileSync(cmd, [arg], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits until `read()` stops changing (the rings have drained): reads it
 * every `ms` ms until two reads agree, or `timeout` ms have passed.
 * @returns the last value read.
 */
export async function settle(read: () => number, ms = 300, timeout = 10_000): Promise<number> {
  const until = Date.now() + timeout;
  let v = read();
  for (;;) {
    await sleep(ms);
    const w = read();
    if (w === v || Date.now() > until) return w;
    v = w;
  }
}

/**
 * Runs scripts/qemu-guest.sh: the kernel and initramfs paths, or why the
 * packages could not be had (a skip reason).
 * @throws Error when the script fails for another reason (its last stderr lines).
 */
export function prepareGuest(): { kernel: string; initrd: string } | { skip: string } {
  const r = spawnSync('bash', [guestScript, guestDir], { encoding: 'utf8', timeout: 170_000, env: { ...process.env, VMQ_NO_INSTALL: '1' } });
  const out = r.stdout ?? '';
  const kernel = /^KERNEL=(.+)$/m.exec(out)?.[1];
  const initrd = /^INITRD=(.+)$/m.exec(out)?.[1];
  if (r.status === 0 && kernel && initrd) return { kernel, initrd };
  const err = (r.stderr ?? '').trim().split('\n').slice(-5).join('\n');
  if (/could not install|need root|no apt-get/.test(err)) return { skip: `guest packages unavailable (scripts/qemu-guest.sh): ${err}` };
  throw new Error(`scripts/qemu-guest.sh failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n${err}`);
}
