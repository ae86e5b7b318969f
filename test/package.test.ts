/**
 * `npm install` must leave package-lock.json unchanged: the lockfile's root
 * entry must say what npm writes for package.json (npm 11 adds
 * `hasInstallScript` for a package with an install script, and copies name,
 * version, bin, engines and the dependency ranges).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const read = (f: string) => JSON.parse(readFileSync(fileURLToPath(new URL(`../../${f}`, import.meta.url)), 'utf8'));

test('package-lock.json root entry matches package.json as npm writes it', () => {
  const pkg = read('package.json');
  const root = read('package-lock.json').packages[''];
  assert.equal(root.name, pkg.name);
  assert.equal(root.version, pkg.version);
  assert.equal(!!root.hasInstallScript, !!(pkg.scripts?.preinstall || pkg.scripts?.install || pkg.scripts?.postinstall));
  assert.deepEqual(root.dependencies ?? {}, pkg.dependencies ?? {});
  assert.deepEqual(root.devDependencies ?? {}, pkg.devDependencies ?? {});
  assert.deepEqual(root.bin, pkg.bin);
  assert.deepEqual(root.engines, pkg.engines);
});
