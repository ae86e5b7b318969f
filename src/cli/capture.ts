/**
 * `virtio-mq capture [--control PATH] [--queue N] [--dir rx|tx|both]
 * [--snaplen B] [--duration S] FILE`: capture the queues of a running
 * `serve`, `attach` or `loopback` through its control socket (the `capture` command,
 * observe/capture-command.ts) into a pcapng file, until Ctrl-C or
 * `--duration`. The process being watched writes FILE (an absolute path is
 * sent); this command prints the summary: frames written and frames the
 * capture dropped, per queue pair and direction.
 */
import { resolve } from 'node:path';
import { ControlClient, findControlPath } from './control/client.js';
import type { CaptureSummary } from '../transport/capture.js';

export interface CaptureCommandOptions {
  control?: string;
  queue?: number;
  dir: string;
  snaplen?: number;
  duration?: number;
  json: boolean;
}

/** @throws Error (one line) when there is no process to capture or it refuses the capture. */
export async function runCaptureCommand(file: string, o: CaptureCommandOptions): Promise<CaptureSummary> {
  const path = o.control ?? findControlPath();
  const client = await ControlClient.connect(path);
  const abs = resolve(file);
  let stopping = false;
  const onSignal = () => {
    if (stopping) return;
    stopping = true;
    // capture-stop on a second connection: the first one is busy with the capture request.
    void ControlClient.connect(path).then((c) => c.request('capture-stop').finally(() => c.close())).catch(() => client.close());
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const summary = (await client.request('capture', { file: abs, queue: o.queue, dir: o.dir, snaplen: o.snaplen, seconds: o.duration }, (e) => {
      if (!o.json && e && typeof e === 'object' && 'started' in e) console.error(`capturing to ${abs} (Ctrl-C ends)`);
    })) as CaptureSummary;
    if (o.json) console.log(JSON.stringify(summary));
    else {
      console.log(`capture ${summary.file}: ${summary.frames} frames, ${summary.drops} dropped by the capture`);
      console.log(`${'pair'.padStart(4)} ${'rx'.padStart(10)} ${'tx'.padStart(10)} ${'rx drops'.padStart(10)} ${'tx drops'.padStart(10)}`);
      for (const q of summary.queues)
        console.log(`${String(q.pair).padStart(4)} ${String(q.rxFrames).padStart(10)} ${String(q.txFrames).padStart(10)} ${String(q.rxDrops).padStart(10)} ${String(q.txDrops).padStart(10)}`);
    }
    return summary;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    client.close();
  }
}
