/**
 * The `capture` and `capture-stop` commands of the control socket: capture
 * the queues of a running `serve`, `attach` or `loopback` into a pcapng file, as
 * `dpdk-pdump` attaches to a running port. The capture itself is
 * {@link QueueCapture} (one interface per queue pair, direction in each
 * packet's flags, frames the writer cannot keep up with counted as capture
 * drops; the data path never waits for it).
 *
 * Request `capture`, args:
 *   `file`    absolute path the process writes (created or truncated);
 *   `queue`   queue pair 0..pairs-1 (default every pair);
 *   `dir`     "rx" | "tx" | "both" (default both);
 *   `snaplen` bytes kept per frame, 1..65535;
 *   `seconds` stop after this long (default: until `capture-stop` or the
 *             client disconnects).
 * It streams one event `{started: file}` and replies, when the capture
 * ends, with its {@link CaptureSummary}. `capture-stop` ends the running
 * capture (from another connection) and replies `true`, or fails when none
 * runs. One capture at a time: a second `capture` fails with one line.
 */
import { isAbsolute } from 'node:path';
import type { ControlServer } from '../control/server.js';
import type { CaptureDirection, CaptureSummary, QueueCapture } from '../../transport/capture.js';

export function registerCaptureCommands(control: ControlServer, capture: QueueCapture, log: (line: string) => void = () => {}): void {
  let stopRunning: (() => void) | null = null;
  control.register('capture', async (args, ctx) => {
    const file = args.file;
    if (typeof file !== 'string' || !isAbsolute(file)) throw new Error('capture: file must be an absolute path');
    const queue = args.queue === undefined ? undefined : Number(args.queue);
    const dir = (args.dir ?? 'both') as CaptureDirection;
    const snaplen = args.snaplen === undefined ? undefined : Number(args.snaplen);
    const seconds = args.seconds === undefined ? undefined : Number(args.seconds);
    if (seconds !== undefined && !(seconds > 0 && seconds <= 86400)) throw new Error('capture: seconds must be in (0, 86400]');
    capture.start(file, { queue, dir, snaplen }); // throws one line: running already, bad queue, dir, snaplen, open error
    log(`capture started by the control socket: ${queue === undefined ? 'every queue pair' : `queue pair ${queue}`} (${dir}) to ${file}`);
    ctx.send({ started: file });
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      stopRunning = resolve;
      void ctx.closed.then(resolve);
      if (seconds !== undefined) timer = setTimeout(resolve, seconds * 1000);
    });
    clearTimeout(timer);
    stopRunning = null;
    // The process may have ended the capture itself (loopback finishing): nothing left to report then.
    if (!capture.active) throw new Error('capture: ended by the process');
    const summary: CaptureSummary = await capture.stop();
    log(`capture to ${file} ended: ${summary.frames} frames, ${summary.drops} dropped`);
    return summary;
  }, 'capture queues into a pcapng file: {file, queue?, dir?, snaplen?, seconds?}; replies with the summary when it ends');
  control.register('capture-stop', () => {
    if (!stopRunning) throw new Error('capture-stop: no capture started by the control socket is running');
    stopRunning();
    return true;
  }, 'end the capture the capture command started');
}
