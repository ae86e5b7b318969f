/**
 * The DPDK testpmd harness (`Testpmd`, `interopSkipReason`, the stats
 * parsers, `waitIdle`, ...). The code is bench/support/testpmd.ts, shared
 * with the benches (which may not import from test/); see there for the
 * facts it relies on, shapes and errors.
 */
export * from '../../bench/support/testpmd.js';
