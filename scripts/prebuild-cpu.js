#!/usr/bin/env node
// The CPU-only prebuilt addon, as node-gyp-build looks for it: prebuildify (N-API, stripped,
// tagged with the C library) builds binding.gyp and writes prebuilds/<platform>-<arch>/mghf.glibc.node
// (mghf.musl.node on Alpine). Run by `npm run prebuilds:cpu`; it needs what a source build needs
// (python3, make, a C++17 compiler) and no nvcc.
//
// `--out <dir>` writes <dir>/prebuilds/<platform>-<arch>/ instead (test/package.test.ts builds its
// own into the ignored build-test-prebuild/, so `npm test` leaves no prebuilds/ for `npm pack`).
//
// prebuildify runs `node-gyp rebuild` in its working folder, which deletes build/ first; it works in
// a copy of the sources (build-prebuild-cpu/) so that the local build/Release stays as it is.
'use strict';

const { spawnSync } = require('node:child_process');
const { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync } = require('node:fs');
const { cpus } = require('node:os');
const { join, resolve } = require('node:path');

const root = join(__dirname, '..');
const outAt = process.argv.indexOf('--out');
if (outAt !== -1 && !process.argv[outAt + 1]) {
  console.error('prebuild-cpu: --out needs a folder');
  process.exit(1);
}
const outRoot = outAt === -1 ? root : resolve(process.argv[outAt + 1]);
const bin = join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'prebuildify.cmd' : 'prebuildify');
if (!existsSync(bin)) {
  console.error(`prebuild-cpu: ${bin} is missing: run npm install first (prebuildify is a devDependency)`);
  process.exit(1);
}

// The staging copy: binding.gyp, package.json (prebuildify takes the name from it), the sources,
// and node_modules (binding.gyp asks node-addon-api for its include folder).
const stage = join(root, 'build-prebuild-cpu');
rmSync(stage, { recursive: true, force: true });
mkdirSync(join(stage, 'native'), { recursive: true });
for (const f of ['binding.gyp', 'package.json']) cpSync(join(root, f), join(stage, f));
cpSync(join(root, 'native', 'binding'), join(stage, 'native', 'binding'), { recursive: true });
cpSync(join(root, 'native', 'core'), join(stage, 'native', 'core'), {
  recursive: true,
  filter: (src) => !/[\\/]native[\\/]core[\\/](tests|bench)$/.test(src),
});
symlinkSync(join(root, 'node_modules'), join(stage, 'node_modules'), 'junction');

const env = { ...process.env };
// node-gyp compiles with JOBS parallel jobs.
env.JOBS ??= String(Math.max(1, cpus().length));
// node-gyp reads npm's settings only from npm_config_* variables, which npm sets for its scripts;
// run directly, take nodedir (where the Node headers are) from npm's configuration.
if (!env.npm_config_nodedir) {
  const npm = spawnSync('npm', ['config', 'get', 'nodedir'], { encoding: 'utf8', shell: process.platform === 'win32' });
  const nodedir = (npm.stdout || '').trim();
  if (npm.status === 0 && nodedir && nodedir !== 'undefined' && nodedir !== 'null') env.npm_config_nodedir = nodedir;
}

const t0 = Date.now();
const r = spawnSync(bin, ['--napi', '--strip', '--tag-libc', '--out', outRoot], {
  cwd: stage,
  env,
  stdio: 'inherit',
  shell: process.platform === 'win32',
});
if (r.status !== 0) {
  console.error(`prebuild-cpu: prebuildify failed (${r.error ? r.error.message : `exit ${r.status ?? r.signal}`})`);
  process.exit(1);
}

const dir = join(outRoot, 'prebuilds', `${process.platform}-${process.arch}`);
const built = readdirSync(dir).filter((f) => f.endsWith('.node') && f !== 'mghf.cuda.node');
if (built.length === 0) {
  console.error(`prebuild-cpu: prebuildify wrote nothing into ${dir}`);
  process.exit(1);
}
for (const f of built) {
  console.log(`prebuild-cpu: ${join(dir, f)} (${(statSync(join(dir, f)).size / 1024).toFixed(0)} KiB) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}
rmSync(stage, { recursive: true, force: true });
