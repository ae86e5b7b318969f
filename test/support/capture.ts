/**
 * Why scripts/capture-traffic.sh cannot run here, or undefined if it can.
 * The script installs nothing (npm test must not install packages): a missing
 * command makes the tests that need it say skipped, with the reason.
 */
import { spawnSync } from 'node:child_process';

/** Commands capture-traffic.sh runs, with the Debian package that has each. */
const NEEDED: [string, string][] = [
  ['ip', 'iproute2'], ['ss', 'iproute2'], ['iperf3', 'iperf3'], ['tcpdump', 'tcpdump'], ['ethtool', 'ethtool'], ['ping', 'iputils-ping'],
];

export function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export function captureSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'capture-traffic.sh needs Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'capture-traffic.sh needs root';
  const missing = [...new Set(NEEDED.filter(([c]) => !haveCommand(c)).map(([, p]) => p))];
  if (missing.length > 0) return `capture-traffic.sh needs ${missing.join(', ')} (scripts/install-peers.sh or .ci/run installs them)`;
  if (spawnSync('ip', ['netns', 'list'], { stdio: 'ignore' }).status !== 0) return '`ip netns` is unavailable';
  const probe = `vmqprobe${process.pid}`;
  if (spawnSync('ip', ['netns', 'add', probe], { stdio: 'ignore' }).status !== 0) return 'cannot create network namespaces here';
  spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
  return undefined;
}
