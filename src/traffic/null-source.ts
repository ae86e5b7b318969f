/** Sends nothing; accepts whatever arrives (a driver that only receives). */
import type { TrafficSource } from './source.js';

export class NullSource implements TrafficSource {
  received = 0;
  fill(): number {
    return 0;
  }
  consume(): void {
    this.received++;
  }
  reassign(): void {}
  exhausted(): boolean {
    return true;
  }
}
