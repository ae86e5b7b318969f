/**
 * The interop tests' network namespaces: `NetnsLab` (namespaces, TAP and
 * veth names, sockets and virtio-mq processes, all removed by `close()`),
 * `Netns` (run, spawn, address, ping inside one) and `iperf3()` (a one-off
 * server waited for until it listens, a client, its JSON report parsed).
 * The code is bench/support/netns.ts, shared with the benches (which may not
 * import from test/); see there for shapes and errors.
 */
export { Netns, NetnsLab, LoggedProcess, iperf3, cliPath, stopProcess } from '../../bench/support/netns.js';
