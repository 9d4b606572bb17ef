// Build the prebuilt JupyterLab extension into ../../src/scripthut/labextension.
//
// The same thing `jupyter labextension build .` does, without needing Python's jupyterlab
// in the build environment: @jupyterlab/builder wants a "core path", a directory whose
// package.json is JupyterLab's core package metadata (shared singletons and their
// versions). @jupyterlab/core-meta ships that file as core.package.json, so it is copied
// into a package.json in a scratch directory inside node_modules, then the builder runs.
//
// usage: node build.mjs [--development]
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const coreMeta = require.resolve('@jupyterlab/core-meta/core.package.json');
const coreDir = join(here, 'node_modules', '.scripthut-core');
mkdirSync(coreDir, { recursive: true });
copyFileSync(coreMeta, join(coreDir, 'package.json'));

const builder = require.resolve('@jupyterlab/builder/lib/build-labextension.js');
const args = [builder, '--core-path', coreDir, ...process.argv.slice(2), here];
const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
if (result.status !== 0) {
  process.exit(result.status ?? 1);
}
// install.json: `jupyter labextension list` then says the Python package `scripthut` ships it.
const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf-8'));
copyFileSync(join(here, 'install.json'), join(here, pkg.jupyterlab.outputDir, 'install.json'));
