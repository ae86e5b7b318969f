/**
 * CPU accounting for the benches, from /proc (Linux): the machine's busy and
 * total CPU time (/proc/stat) and a process's own (/proc/PID/stat, all its
 * threads), in jiffies (USER_HZ, 1/100 s). A bench marks the start and the
 * end of a measured window with `cpuMark()` and reports per process
 * `seconds(a, b, i)` and the share other processes took meanwhile,
 * `othersShare(a, b)` (the machine is shared: a row with a large share is noise).
 * Time the kernel spends in interrupts and softirqs (network receive
 * included) is charged to no process, so it counts as others' too: with
 * traffic through TAPs or veths a few percent of the share is the
 * measured traffic's own kernel work.
 */
import { readFileSync } from 'node:fs';

/** USER_HZ: jiffies per second in /proc. */
export const HZ = 100;

/** The machine's CPU time, all CPUs (jiffies): busy (all but idle and iowait) and total. */
export interface CpuTimes {
  busy: number;
  total: number;
}

/** A moment of the machine's CPU time and of some processes' (`procs[i]`: jiffies of the i-th pid). */
export interface CpuMark {
  sys: CpuTimes;
  procs: number[];
}

/** The first line of /proc/stat: busy and total jiffies since boot. */
export function cpuTimes(): CpuTimes {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total };
}

/** utime + stime (jiffies, all threads) of a process; 0 once it is gone (or for `undefined`). */
export function jiffies(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

/**
 * The process a chain of single-child wrappers ends in (`timeout`, `stdbuf`;
 * `ip netns exec` execs and is no link), at most 4 links down: the one whose
 * CPU time counts. `pid` itself when it has no child or several.
 */
export function leafPid(pid: number | undefined): number | undefined {
  let p = pid;
  for (let i = 0; i < 4 && p !== undefined; i++) {
    let kids: string[] = [];
    try {
      kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    } catch {
      return p;
    }
    if (kids.length !== 1) return p;
    p = Number(kids[0]);
  }
  return p;
}

/** The machine's CPU time and that of `pids` (in that order) now. */
export function cpuMark(pids: (number | undefined)[]): CpuMark {
  return { sys: cpuTimes(), procs: pids.map(jiffies) };
}

/** CPU seconds the i-th process of the marks used between `a` and `b`. */
export function seconds(a: CpuMark, b: CpuMark, i: number): number {
  return (b.procs[i] - a.procs[i]) / HZ;
}

/** Jiffies all the marked processes used between `a` and `b`. */
export function marked(a: CpuMark, b: CpuMark): number {
  return b.procs.reduce((acc, j, i) => acc + j - a.procs[i], 0);
}

/**
 * The share (0..1) of all CPU time between `a` and `b` that other processes
 * took: busy time not used by the marked processes nor by `alsoOurs`
 * jiffies (e.g. the traffic's own ends), over the total.
 */
export function othersShare(a: CpuMark, b: CpuMark, alsoOurs = 0): number {
  const total = b.sys.total - a.sys.total;
  return total > 0 ? Math.max(0, (b.sys.busy - a.sys.busy - marked(a, b) - alsoOurs) / total) : 0;
}
