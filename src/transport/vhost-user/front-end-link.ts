/**
 * The link block the vhost-user front-end shares with its pair workers
 * (Int32 words over a SharedArrayBuffer): [0] the hold epoch (odd: the link
 * is down, pairs send nothing); per pair p at {@link holdWord}(p): the hold
 * epoch the pair acknowledged, then its receiveq and transmitq `used`
 * positions at that moment (QueueState encoding), which become
 * SET_VRING_BASE on the next connection.
 */

/** Index of pair p's hold words in the link block. */
export const holdWord = (p: number): number => 1 + 3 * p;
/** Int32 words a link block needs for `pairs` pairs. */
export const linkWords = (pairs: number): number => 1 + 3 * pairs;
