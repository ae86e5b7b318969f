/**
 * The scripted vhost-user front-end of the tests (`VhostFrontend`,
 * `waitFor`, `ConnectionClosedError`). The code is
 * bench/support/vhost-frontend.ts, shared with bench/soak.ts (benches may
 * not import from test/); see there for shapes and errors.
 */
export * from '../../bench/support/vhost-frontend.js';
