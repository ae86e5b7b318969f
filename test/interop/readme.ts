/** The README's recipes as the interop tests run them: extracted from README.md, so the two cannot drift. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs as dist/test/interop/readme.js). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The first ```sh block after the heading `heading` (a whole line, e.g. `### QEMU`) in README.md. */
export function readmeBlock(heading: string): string {
  const md = readFileSync(`${ROOT}README.md`, 'utf8');
  const at = md.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README has the heading ${heading}`);
  const m = /\n```sh\n([\s\S]*?)\n```\n/.exec(md.slice(at));
  assert.ok(m, `a sh block follows ${heading}`);
  return m[1]!;
}
