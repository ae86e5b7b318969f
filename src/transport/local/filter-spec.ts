/**
 * What a device worker needs of the controlq state to filter and steer RX:
 * the ControlState itself (structured-clonable), turned into an RxFilter.
 */
import { rxFilterAccepts } from '../../net/rx-filter.js';
import type { ControlState } from '../../net/ctrl.js';
import type { RxFilter } from '../../net/steering.js';

export type FilterSpec = ControlState;

/** An RxFilter over a control state, or null when it accepts everything (promiscuous, QEMU's receive_filter order). */
export function makeRxFilter(state: FilterSpec): RxFilter | null {
  if (state.promisc) return null;
  return { accepts: (frame, off, len) => rxFilterAccepts(state, frame, off, len) };
}
