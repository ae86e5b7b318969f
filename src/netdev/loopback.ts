/**
 * Loopback netdev: every frame a queue pair transmits is offered back to the
 * device's receive path, which steers it (RSS, or the pair it came from).
 * When the target receiveq has no buffer and its backlog is full, the TX
 * chain is pushed back (left in the transmitq) instead of dropped, as QEMU
 * holds a virtio-net TX queue while its peer cannot receive: a loopback run
 * loses nothing.
 */
import type { Bytes } from '../virtio/copy.js';
import type { Netdev, RxPort } from '../net/netdev.js';

export class LoopbackNetdev implements Netdev {
  readonly externalRx = false;
  constructor(private readonly pair: number) {}
  transmit(src: Bytes, off: number, len: number, rx: RxPort): boolean {
    return rx.receive(src, off, len, this.pair);
  }
  poll(): number {
    return 0;
  }
  busy(): boolean {
    return false;
  }
}
