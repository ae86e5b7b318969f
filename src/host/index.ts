/**
 * Host layer: typed wrapper over the native addon `build/Release/virtio_mq_host.node`
 * (sources in src/host/native/, built by `node-gyp rebuild` from the package's
 * "install" script).  Linux only.
 *
 * Conventions
 * - fds are plain numbers, always opened O_CLOEXEC.  Nothing closes them for you:
 *   call {@link close}.
 * - Syscall failures throw {@link HostError} (`.errno` positive Linux errno,
 *   `.code` e.g. 'EBADF', `.syscall` e.g. 'close').  Bad arguments throw
 *   TypeError / RangeError.  EAGAIN never throws: calls that can meet it return
 *   `null`, `false` or a short count instead.
 * - The module is context-aware: it may be imported from any number of worker
 *   threads.
 *
 * Shared memory and its lifetime
 * - {@link mmapShared} returns a SharedArrayBuffer over a MAP_SHARED mapping.
 *   Create ONE SharedArrayBuffer per region (on the main thread) and
 *   postMessage it to workers; do not map the same region again per worker:
 *   Atomics.wait/notify only pair up on the same backing store.
 * - There is deliberately NO unmap call.  The mapping is released by the
 *   backing store's deleter once no JS object in any thread can reach it any
 *   more (garbage collection decides when).  munmap()ing while a view is alive
 *   would crash the process on the next access.  Closing the fd right after
 *   mapping is fine: the mapping keeps the memory alive.
 *
 * Threads and the event loop
 * - {@link pollFds} blocks the calling thread in poll(2).  Use it in worker
 *   threads (e.g. a worker that waits on kick eventfds and TAP fds).  On the
 *   main thread only call it with timeoutMs = 0.
 * - Node cannot wrap a unix socket fd with SCM_RIGHTS support, so the control
 *   socket (vhost-user) is driven with non-blocking fds: `setNonblock(fd)` (or
 *   the `nonblock` options), then {@link unixAccept} / {@link recvmsg} /
 *   {@link sendmsg} return null on EAGAIN.  The intended pattern is a small
 *   dedicated worker that blocks in pollFds([sock, wakeEventfd]) and handles
 *   or forwards messages, or a main-thread timer calling pollFds(..., 0).
 *
 * Data path
 * - {@link writevFrames} / {@link readFrames} move whole frames between a
 *   SharedArrayBuffer and an fd, one writev/readv per frame (a TAP fd takes
 *   exactly one frame per read/write), so frame bytes never get copied into JS.
 *   The `*Sg` variants take several segments per frame (descriptor chains).
 *   Use non-blocking fds; the batch stops at EAGAIN.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getSystemErrorMap, getSystemErrorName } from 'node:util';

// ---------------------------------------------------------------------------
// Errors

let errorMap: Map<number, [string, string]> | undefined;

function describeErrno(errno: number): { code: string; text: string } {
  errorMap ??= getSystemErrorMap();
  const entry = errorMap.get(-errno);
  if (entry) return { code: entry[0], text: entry[1] };
  let code = '';
  try {
    code = getSystemErrorName(-errno);
  } catch {
    // fall through
  }
  if (!/^E[A-Z0-9]+$/.test(code)) code = `E${errno}`;
  return { code, text: `errno ${errno}` };
}

/**
 * A failed system call.  `errno` is the positive Linux errno value, `code` its
 * symbolic name ('EBADF', 'EAGAIN', 'EBADFD', ...), `syscall` the failing call
 * ('close', 'readv', 'ioctl', ...), `detail` extra context (the ioctl request
 * such as 'TUNSETIFF', a socket path, ...).
 */
export class HostError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  readonly detail: string | undefined;

  /** `code`/`text` are normally supplied by the addon (glibc strerrorname_np/strerrordesc_np). */
  constructor(syscall: string, errno: number, detail?: string, code?: string, text?: string) {
    if (code === undefined || text === undefined) {
      const d = describeErrno(errno);
      code ??= d.code;
      text ??= d.text;
    }
    super(`${syscall}${detail ? ` (${detail})` : ''}: ${code} (${text})`);
    this.name = 'HostError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
    this.detail = detail;
  }
}

// ---------------------------------------------------------------------------
// Native binding

interface NativeConstants {
  readonly POLLIN: number;
  readonly POLLPRI: number;
  readonly POLLOUT: number;
  readonly POLLERR: number;
  readonly POLLHUP: number;
  readonly POLLNVAL: number;
  readonly POLLRDHUP: number;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_UFO: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  readonly PAGE_SIZE: number;
}

type Bytes = SharedArrayBuffer | ArrayBuffer;

interface NativeBinding {
  setErrorClass(
    ctor: new (syscall: string, errno: number, detail?: string, code?: string, text?: string) => Error,
  ): void;
  memfdCreate(name: string, size: number): number;
  mmapShared(fd: number, size: number, offset: number, populate: boolean): SharedArrayBuffer;
  guestMappingFaults(sab: SharedArrayBuffer): number;
  releaseShared(sab: SharedArrayBuffer): boolean;
  close(fd: number): void;
  setNonblock(fd: number, on: boolean): void;
  eventfdCreate(initval: number, nonblock: boolean, semaphore: boolean): number;
  eventfdRead(fd: number): number | null;
  eventfdWrite(fd: number, value: number): boolean;
  poll(fds: Int32Array, timeoutMs: number, events: number | Uint16Array | undefined, revents: Uint16Array): number;
  unixListen(path: string, backlog: number, mode: number, nonblock: boolean): number;
  unixAccept(fd: number, nonblock: boolean): number | null;
  unixConnect(path: string, nonblock: boolean): number;
  socketpair(nonblock: boolean): [number, number];
  sendmsg(fd: number, data: ArrayBufferView, fds: readonly number[] | Int32Array | undefined): number | null;
  recvmsg(fd: number, maxBytes: number, maxFds: number): RecvResult | null;
  tunOpen(name: string, multiQueue: boolean, vnetHdr: boolean, nonblock: boolean): TunHandle;
  tunSetVnetHdrSize(fd: number, size: number): void;
  tunSetOffload(fd: number, flags: number): void;
  tunSetQueue(fd: number, attach: boolean): void;
  tunSetCarrier(fd: number, on: boolean): void;
  linkSetUp(name: string, up: boolean): void;
  writevFrames(fd: number, buf: Bytes, offs: Float64Array, lens: Uint32Array, count: number, start?: number): number;
  readFrames(
    fd: number,
    buf: Bytes,
    offs: Float64Array,
    caps: Uint32Array,
    outLens: Uint32Array,
    count: number,
    start?: number,
  ): number;
  writevFramesSg(
    fd: number,
    buf: Bytes,
    segOffs: Float64Array,
    segLens: Uint32Array,
    segCounts: Uint32Array,
    count: number,
    start?: number,
  ): number;
  readFramesSg(
    fd: number,
    buf: Bytes,
    segOffs: Float64Array,
    segCaps: Uint32Array,
    segCounts: Uint32Array,
    outLens: Uint32Array,
    count: number,
    start?: number,
  ): number;
  readvTail(
    fd: number,
    buf: Bytes,
    segOffs: Float64Array,
    segCaps: Uint32Array,
    nseg: number,
    tail: Bytes,
    tailOff: number,
    tailCap: number,
  ): number | null;
  constants: NativeConstants;
}

const ADDON_FILE = join('build', 'Release', 'virtio_mq_host.node');

/** Path of the compiled addon: `<package root>/build/Release/virtio_mq_host.node`, or $VIRTIO_MQ_HOST_ADDON. */
function locateAddon(): string {
  const override = process.env['VIRTIO_MQ_HOST_ADDON'];
  if (override) return override;
  // Works from src/host/ (ts) and dist/src/host/ (compiled): walk up to the package root.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'binding.gyp')) && existsSync(join(dir, 'package.json'))) {
      const file = join(dir, ADDON_FILE);
      if (!existsSync(file)) {
        throw new Error(
          `virtio-mq host addon not built: ${file} is missing. Run \`npm install\` (or \`npm run install\`) ` +
            'to build it (needs g++, make, python3 and Node headers in <node prefix>/include/node).',
        );
      }
      return file;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('virtio-mq host addon: package root (binding.gyp) not found');
    dir = parent;
  }
}

// The addon is loaded on first use, not at import: the core (src/virtio, src/net,
// the local transport, `virtio-mq loopback`) imports modules that import this
// one (the tap netdev) without ever calling into it, and must run where the
// addon was never built.  Importing this module never touches the addon.

let binding: NativeBinding | undefined;

/**
 * Load the addon now (idempotent) and return it.  Every function below calls
 * it; call it yourself to fail early with a clear message when the addon is
 * missing.  $VIRTIO_MQ_HOST_ADDON overrides the path ('' or a missing file:
 * the addon counts as unavailable).
 */
export function loadHost(): NativeBinding {
  if (binding) return binding;
  const file = locateAddon();
  let b: NativeBinding;
  try {
    b = createRequire(import.meta.url)(file) as NativeBinding;
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw new Error(`virtio-mq host addon ${file} could not be loaded (${why}); \`serve\` needs it, \`loopback\` does not`, { cause: e });
  }
  b.setErrorClass(HostError);
  const abi: Record<string, number> = {
    POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLRDHUP,
    TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, TUN_F_USO4, TUN_F_USO6,
  };
  for (const [name, value] of Object.entries(abi)) {
    const got = (b.constants as unknown as Record<string, number>)[name];
    if (got !== value) throw new Error(`virtio-mq host addon: ${name} is ${got}, expected ${value} (not Linux?)`);
  }
  binding = b;
  // The hot-path exports become the native functions themselves (ES module
  // live bindings: importers see the new value), so after the first call
  // nothing stands between the caller and the addon.
  writevFrames = b.writevFrames;
  readFrames = b.readFrames;
  writevFramesSg = b.writevFramesSg;
  readFramesSg = b.readFramesSg;
  if (typeof b.readvTail === 'function') readvTail = b.readvTail;
  return b;
}

/** True when the loaded addon has readvTail (an addon built before it has not: rebuild with npm install). */
export function hasReadvTail(): boolean {
  return typeof loadHost().readvTail === 'function';
}

/** True if the addon is loaded or can be loaded (never throws). */
export function hostAvailable(): boolean {
  try {
    loadHost();
    return true;
  } catch {
    return false;
  }
}

/** Is the addon loaded (by a call so far)?  For tests of the lazy loading. */
export function hostLoaded(): boolean {
  return binding !== undefined;
}

const native = (): NativeBinding => binding ?? loadHost();

// ---------------------------------------------------------------------------
// Constants (Linux ABI values; the addon's own are checked against them at load)

export const POLLIN = 0x1;
export const POLLPRI = 0x2;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;
export const POLLRDHUP = 0x2000;
/** Offload flags for {@link tunSetOffload}. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/** The system page size (loads the addon). */
export function pageSize(): number {
  return native().constants.PAGE_SIZE;
}

// ---------------------------------------------------------------------------
// fds and shared memory

/** memfd_create(name, MFD_CLOEXEC) + ftruncate(size).  Returns the fd. */
export function memfdCreate(name: string, size: number): number {
  return native().memfdCreate(name, size);
}

export interface MmapOptions {
  /** MAP_POPULATE: prefault the whole mapping now. Default false. */
  populate?: boolean;
}

/**
 * mmap(fd) MAP_SHARED, PROT_READ|PROT_WRITE, as a SharedArrayBuffer of `size`
 * bytes whose byte 0 is file offset `offset`.  `offset` need not be page
 * aligned (vhost-user mmap_offset): the mapping starts at the page-aligned
 * offset below it and the SAB starts inside it.  The mapping is released only
 * by the backing store's deleter (GC); there is no explicit unmap.  The fd may
 * be closed afterwards.  For regular files (memfd, hugetlbfs) a range past the
 * end of the file is refused with RangeError (touching it would SIGBUS); the
 * file must not shrink while mapped.
 */
export function mmapShared(fd: number, size: number, offset = 0, opts?: MmapOptions): SharedArrayBuffer {
  return native().mmapShared(fd, size, offset, opts?.populate === true);
}

/**
 * SIGBUS faults absorbed in the mapping under `sab` (an {@link mmapShared}
 * SAB; 0 for any other buffer). The file behind a mapping shrank (a
 * front-end ftruncated its memfd) and a page past its new end was touched:
 * the addon's SIGBUS handler mapped a zero page there so the access
 * completed, and counted it here. Any other SIGBUS keeps its default action.
 */
export function guestMappingFaults(sab: SharedArrayBuffer): number {
  return native().guestMappingFaults(sab);
}

/**
 * Drop the file pages under an {@link mmapShared} SAB now (they are replaced
 * by anonymous zero pages, so the SAB stays valid memory) instead of when
 * the SAB is garbage-collected: a closed session releases the guest's
 * memory at once. Returns false when `sab` is not such a mapping.
 * @throws HostError (mmap)
 */
export function releaseShared(sab: SharedArrayBuffer): boolean {
  return native().releaseShared(sab);
}

/** close(2).  EINTR is treated as success (Linux releases the fd anyway). */
export function close(fd: number): void {
  native().close(fd);
}

/** Set (default) or clear O_NONBLOCK. */
export function setNonblock(fd: number, on = true): void {
  native().setNonblock(fd, on);
}

// ---------------------------------------------------------------------------
// eventfd

export interface EventfdFlags {
  /** EFD_NONBLOCK. Default false. */
  nonblock?: boolean;
  /** EFD_SEMAPHORE. Default false. */
  semaphore?: boolean;
}

/** eventfd(initval, EFD_CLOEXEC | flags).  Returns the fd. */
export function eventfdCreate(initval = 0, flags?: EventfdFlags): number {
  return native().eventfdCreate(initval, flags?.nonblock === true, flags?.semaphore === true);
}

/** Read the counter (resets it, or decrements by 1 in semaphore mode).  null on EAGAIN. */
export function eventfdRead(fd: number): number | null {
  return native().eventfdRead(fd);
}

/** Add `value` (>= 1, default 1) to the counter.  false on EAGAIN (counter would overflow, nonblocking fd). */
export function eventfdWrite(fd: number, value = 1): boolean {
  return native().eventfdWrite(fd, value);
}

// ---------------------------------------------------------------------------
// poll

export interface PollOptions {
  /** poll events for every fd (a number) or per fd (a Uint16Array).  Default POLLIN. */
  events?: number | Uint16Array;
}

/**
 * Block the calling thread in poll(2) until at least one fd is ready or
 * `timeoutMs` elapses (-1 = forever, 0 = just check).  Returns the indexes
 * (into `fds`) of the fds with any revents, ascending; [] on timeout.  Negative
 * fds are ignored.  Throws HostError EBADF if an fd is not open (POLLNVAL).
 * Meant for worker threads; on the main thread use timeoutMs = 0.
 */
export function pollFds(fds: Int32Array, timeoutMs: number, opts?: PollOptions): number[] {
  const revents = new Uint16Array(fds.length);
  const n = native().poll(fds, timeoutMs, opts?.events, revents);
  const ready: number[] = [];
  if (n === 0) return ready;
  for (let i = 0; i < fds.length; i++) {
    const r = revents[i]!;
    if (r === 0) continue;
    if (r & POLLNVAL) throw new HostError('poll', 9 /* EBADF */, `fd ${fds[i]!}`);
    ready.push(i);
  }
  return ready;
}

/**
 * Allocation-free poll(2): fills `revents[i]` for each fd (POLLNVAL is
 * reported, not thrown) and returns the number of fds with nonzero revents.
 */
export function pollFdsInto(
  fds: Int32Array,
  timeoutMs: number,
  revents: Uint16Array,
  events?: number | Uint16Array,
): number {
  return native().poll(fds, timeoutMs, events, revents);
}

// ---------------------------------------------------------------------------
// unix stream sockets

export interface UnixListenOptions {
  /** listen(2) backlog. Default 16. */
  backlog?: number;
  /** Socket file mode, applied between bind and listen. Default 0o600. */
  mode?: number;
  /** O_NONBLOCK on the listening socket (unixAccept then returns null on EAGAIN). Default false. */
  nonblock?: boolean;
}

export interface NonblockOption {
  /** Create the fd with O_NONBLOCK. Default false. */
  nonblock?: boolean;
}

/** socket(AF_UNIX, SOCK_STREAM) + bind(path) + chmod(mode) + listen.  The path must not exist. */
export function unixListen(path: string, opts?: UnixListenOptions): number {
  return native().unixListen(path, opts?.backlog ?? 16, opts?.mode ?? 0o600, opts?.nonblock === true);
}

/** accept4(SOCK_CLOEXEC [| SOCK_NONBLOCK]).  null on EAGAIN (non-blocking listener). */
export function unixAccept(fd: number, opts?: NonblockOption): number | null {
  return native().unixAccept(fd, opts?.nonblock === true);
}

/** Connect to a unix stream socket (the connect itself blocks; `nonblock` applies afterwards). */
export function unixConnect(path: string, opts?: NonblockOption): number {
  return native().unixConnect(path, opts?.nonblock === true);
}

/** socketpair(AF_UNIX, SOCK_STREAM). */
export function socketPair(opts?: NonblockOption): [number, number] {
  return native().socketpair(opts?.nonblock === true);
}

/**
 * sendmsg(2) with MSG_NOSIGNAL; `fds` travel as SCM_RIGHTS on the first byte,
 * so `data` must be non-empty when fds are given.  Returns the number of bytes
 * sent (may be short on a non-blocking socket: the fds went with the first
 * chunk; send the rest without them), or null on EAGAIN (nothing sent).
 */
export function sendmsg(fd: number, data: Uint8Array, fds?: readonly number[] | Int32Array): number | null {
  return native().sendmsg(fd, data, fds);
}

export interface RecvResult {
  /** Data received; length 0 means EOF (peer closed). */
  bytes: Buffer;
  /** fds received with this chunk (O_CLOEXEC); the caller owns and must close them. */
  fds: number[];
}

/**
 * recvmsg(2) with MSG_CMSG_CLOEXEC, up to `maxBytes` data bytes and `maxFds`
 * fds.  null on EAGAIN.  If the peer sent more fds than `maxFds` (MSG_CTRUNC),
 * every fd that did arrive is closed and HostError EMSGSIZE is thrown; the
 * data of that chunk is lost, so drop the connection.
 */
export function recvmsg(fd: number, maxBytes = 4096, maxFds = 16): RecvResult | null {
  return native().recvmsg(fd, maxBytes, maxFds);
}

// ---------------------------------------------------------------------------
// TUN/TAP

export interface TunOpenOptions {
  /** IFF_MULTI_QUEUE. Default true. */
  multiQueue?: boolean;
  /** IFF_VNET_HDR (frames carry a virtio_net_hdr; see tunSetVnetHdrSize). Default true. */
  vnetHdr?: boolean;
  /** O_NONBLOCK. Default false. */
  nonblock?: boolean;
}

export interface TunHandle {
  fd: number;
  /** Actual interface name (the kernel picks one when `name` is ''). */
  name: string;
}

/**
 * Open /dev/net/tun and TUNSETIFF with IFF_TAP | IFF_NO_PI [| IFF_MULTI_QUEUE]
 * [| IFF_VNET_HDR].  With multiQueue, call once per queue pair with the same
 * name to get one fd per queue.  The interface (non-persistent) disappears
 * when its last fd is closed.  Needs CAP_NET_ADMIN.
 */
export function tunOpen(name: string, opts?: TunOpenOptions): TunHandle {
  return native().tunOpen(name, opts?.multiQueue ?? true, opts?.vnetHdr ?? true, opts?.nonblock === true);
}

/** TUNSETVNETHDRSZ (10, or 12 for virtio 1.0 / MRG_RXBUF headers). */
export function tunSetVnetHdrSize(fd: number, size: number): void {
  native().tunSetVnetHdrSize(fd, size);
}

/** TUNSETOFFLOAD with TUN_F_* flags (what the kernel may hand us: csum/GSO). */
export function tunSetOffload(fd: number, flags: number): void {
  native().tunSetOffload(fd, flags);
}

/** TUNSETQUEUE: IFF_ATTACH_QUEUE (true) or IFF_DETACH_QUEUE (false) for this queue fd. */
export function tunSetQueue(fd: number, attach: boolean): void {
  native().tunSetQueue(fd, attach);
}

/**
 * TUNSETCARRIER (Linux >= 4.19) through any queue fd of a TAP: its carrier
 * on or off (off: the kernel shows NO-CARRIER, /sys/class/net/NAME/carrier
 * reads 0, routes through it go away, a bridge port stops forwarding).
 * @throws HostError (EINVAL on older kernels, EPERM without CAP_NET_ADMIN)
 */
export function tunSetCarrier(fd: number, on: boolean): void {
  native().tunSetCarrier(fd, on);
}

/** Set or clear IFF_UP on an interface (SIOCSIFFLAGS; needs CAP_NET_ADMIN). */
export function linkSetUp(name: string, up: boolean): void {
  native().linkSetUp(name, up);
}

// ---------------------------------------------------------------------------
// Batched frame I/O (hot path: bound directly to the native functions)
//
// Frames [start, start + count) of the tables are transferred, one
// writev/readv per frame.  Offsets are byte offsets into `buf` (Float64Array:
// regions may exceed 4 GiB).  Every range is checked against buf.byteLength
// BEFORE any I/O; a bad one throws RangeError and nothing is transferred.
// Result: frames transferred.  Stops early at EAGAIN (and, for reads, at a
// 0-byte read).  A non-EAGAIN error throws HostError if it hits the first
// frame of the call; on a later frame the call returns the count so far and
// the error resurfaces when retrying from that frame, so a caught HostError
// always belongs to frame `start` (e.g. EINVAL for a malformed vnet header:
// skip it with start + 1).  Use non-blocking fds.

/** Write frame i = bytes [offs[i], offs[i] + lens[i]) of `buf`, one writev per frame. */
export let writevFrames: NativeBinding['writevFrames'] = (...a) => loadHost().writevFrames(...a);

/**
 * Read one frame per readv into [offs[i], offs[i] + caps[i]); outLens[i] = bytes
 * read.  A TAP silently truncates a frame larger than the buffer and reports
 * only the bytes copied, so outLens[i] === caps[i] may mean truncation: make
 * caps one byte larger than the largest legal frame (vnet header + 65535 with
 * GSO offloads on, else header + 14 + MTU [+ 4 for VLAN]) and drop frames that
 * fill the buffer completely.
 */
export let readFrames: NativeBinding['readFrames'] = (...a) => loadHost().readFrames(...a);

/**
 * Scatter-gather writes: frame i is segCounts[i] (1..1024) consecutive
 * segments of the flat segOffs/segLens tables; frame `start` begins at
 * segment sum(segCounts[0..start)).
 */
export let writevFramesSg: NativeBinding['writevFramesSg'] = (...a) => loadHost().writevFramesSg(...a);

/** Scatter-gather reads; outLens[i] = total bytes of frame i (clamped to the sum of its caps). */
export let readFramesSg: NativeBinding['readFramesSg'] = (...a) => loadHost().readFramesSg(...a);

/**
 * One readv of one frame: segments [segOffs[k], segOffs[k] + segCaps[k]) of
 * `buf` for k < nseg (1..1023; e.g. a guest's receive buffers), then
 * [tailOff, tailOff + tailCap) of `tail` (a private overflow buffer) for
 * what does not fit. Returns the bytes read (0 at EOF), null on EAGAIN.
 * Ranges are checked before the read (RangeError); other errors throw HostError.
 */
export let readvTail: NativeBinding['readvTail'] = (...a) => loadHost().readvTail(...a);
