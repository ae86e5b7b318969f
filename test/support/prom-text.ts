/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4)
 * for tests (no tests here): every line is a `# HELP`, a `# TYPE`, a blank
 * line or a sample `name{label="value",...} value [timestamp]`; every
 * sample's family has a TYPE given before it; names and labels follow the
 * format's grammar. Throws an Error naming the first bad line.
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: string;
  help: string;
  samples: PromSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`bad value ${s}`);
  return Number(s);
}

function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < s.length) {
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new Error(`bad labels {${s}}`);
    const name = s.slice(i, eq).trim();
    if (!LABEL.test(name)) throw new Error(`bad label name ${name}`);
    if (s[eq + 1] !== '"') throw new Error(`label ${name}: value not quoted`);
    let j = eq + 2, v = '';
    for (; j < s.length && s[j] !== '"'; j++) {
      if (s[j] === '\\') {
        j++;
        v += s[j] === 'n' ? '\n' : s[j];
      } else v += s[j];
    }
    if (j >= s.length) throw new Error(`label ${name}: unterminated value`);
    if (name in out) throw new Error(`label ${name} twice`);
    out[name] = v;
    i = j + 1;
    if (s[i] === ',') i++;
    else if (i < s.length) throw new Error(`bad labels {${s}}`);
  }
  return out;
}

/** The families of a /metrics body, by name. */
export function parsePromText(text: string): Map<string, PromFamily> {
  const fams = new Map<string, PromFamily>();
  const family = (name: string): PromFamily => {
    let f = fams.get(name);
    if (!f) fams.set(name, (f = { name, type: '', help: '', samples: [] }));
    return f;
  };
  const lines = text.split('\n');
  lines.forEach((line, n) => {
    try {
      if (line.trim() === '') return;
      if (line.startsWith('#')) {
        const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
        if (!m) return; // a plain comment
        if (!NAME.test(m[2])) throw new Error(`bad metric name ${m[2]}`);
        const f = family(m[2]);
        if (m[1] === 'TYPE') {
          if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3])) throw new Error(`bad type ${m[3]}`);
          if (f.samples.length) throw new Error('TYPE after samples');
          f.type = m[3];
        } else f.help = m[3];
        return;
      }
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
      if (!m) throw new Error('not a sample line');
      const name = m[1];
      // Histogram and summary samples belong to their family's base name.
      const base = [name, name.replace(/_(bucket|sum|count)$/, '')].find((b) => fams.get(b)?.type);
      if (!base) throw new Error(`sample of ${name} before its TYPE`);
      fams.get(base)!.samples.push({ name, labels: m[2] ? parseLabels(m[2]) : {}, value: parseValue(m[3]) });
    } catch (e) {
      throw new Error(`line ${n + 1} "${line}": ${(e as Error).message}`);
    }
  });
  return fams;
}
