/**
 * Log lines of the command line tools (pino): levels, and with `--json`
 * one JSON object per line on stdout (`{"level":"info","time":"ISO 8601",
 * "log":"the line", ...fields}`); without it, `TIME LEVEL line` on stderr
 * (the level shown only when not info). `--log-level` drops lines below it.
 */
import { pino, type Logger } from 'pino';
import { Writable } from 'node:stream';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A log function: a line and its facts as fields; the level is chosen from the line unless given. */
export type LogFn = (line: string, detail?: Record<string, unknown>, level?: LogLevel) => void;

/** Lines that report a failure are warnings; everything else is info. */
const WARN = /\b(failed|error|closing connection|refus|abandoned|DEVICE_NEEDS_RESET|not supported|stopped: )/i;

/**
 * A logger at `level` (default info). With `json`, JSON lines on `fd`
 * (default 1, stdout); without, `TIME [LEVEL] line` on stderr.
 */
export function makeLogger(o: { json: boolean; level?: LogLevel; fd?: 1 | 2 }): { log: LogFn; logger: Logger } {
  const base = { level: o.level ?? 'info', messageKey: 'log', base: undefined, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label: string) => ({ level: label }) } };
  const logger = o.json
    ? pino(base, pino.destination({ dest: o.fd ?? 1, sync: true }))
    : pino(base, new Writable({
        write(chunk: Buffer, _enc, cb) {
          try {
            const r = JSON.parse(chunk.toString()) as { time: string; level: string; log: string };
            process.stderr.write(`${r.time} ${r.level === 'info' ? '' : `${r.level.toUpperCase()} `}${r.log}\n`);
          } catch {
            process.stderr.write(chunk);
          }
          cb();
        },
      }));
  const log: LogFn = (line, detail, level) => {
    const l = level ?? (WARN.test(line) ? 'warn' : 'info');
    if (l === 'silent') return;
    logger[l](detail ?? {}, line);
  };
  return { log, logger };
}
