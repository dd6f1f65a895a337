#!/usr/bin/env node
'use strict';
// The emulated CUDA parity tests of `npm test` (tools/cuda-emu/README.md): runs test/cuda.test.ts,
// the same file a GPU machine runs, against the addon built on the host emulator of the CUDA
// backend (build-core/mghf_emu.node, built by `npm run test:core`), then adds up which kernels
// of native/core/cuda/ this run and the emulated ctest runs executed, and fails unless every one
// did. Skips, saying why, only where the emulator was not built because the CUDA headers (or
// python3, or an x86-64 CPU) are missing; any other reason it cannot run is a failure.

const { spawnSync } = require('node:child_process');
const { existsSync, readFileSync, rmSync, mkdirSync } = require('node:fs');
const { resolve, join } = require('node:path');

const ROOT = resolve(__dirname, '..');
const BUILD = join(ROOT, 'build-core');
const STATUS = join(BUILD, 'cuda-emu-status.txt');
const ADDON = join(BUILD, 'mghf_emu.node');
const COVERAGE = join(BUILD, 'cuda-emu-coverage');

function fail(message) {
  console.error(`cuda-emu: FAILED: ${message}`);
  process.exit(1);
}

if (!existsSync(STATUS)) fail(`${STATUS} is missing: run \`npm run test:core\` first (it builds the emulator)`);
const status = readFileSync(STATUS, 'utf8').trim();
if (status.startsWith('skipped')) {
  console.log(`cuda-emu: SKIPPED, the emulated CUDA parity tests did not run: ${status.slice('skipped: '.length)}`);
  process.exit(0);
}
if (!existsSync(ADDON)) fail(`${ADDON} was not built (node or node-addon-api not found when build-core was configured)`);

function tapCli() {
  const pkg = require.resolve('tap/package.json', { paths: [ROOT] });
  const { bin } = JSON.parse(readFileSync(pkg, 'utf8'));
  return join(pkg, '..', typeof bin === 'string' ? bin : bin.tap);
}

// The ctest runs wrote ctest-*.txt; this run writes tap.txt (a stale one must not count).
mkdirSync(COVERAGE, { recursive: true });
rmSync(join(COVERAGE, 'tap.txt'), { force: true });
const started = Date.now();
const tap = spawnSync(
  process.execPath,
  [tapCli(), '--timeout=900', 'test/cuda.test.ts'],
  {
    cwd: ROOT,
    stdio: 'inherit',
    env: { ...process.env, MGHF_BINARY: ADDON, EMU_REPORT: '1', EMU_COVERAGE: join(COVERAGE, 'tap.txt') },
  },
);
const seconds = ((Date.now() - started) / 1000).toFixed(0);
if (tap.status !== 0) fail(`test/cuda.test.ts on the emulated backend exited with ${tap.status ?? tap.signal} after ${seconds} s`);

// Union of every coverage file: "1 name file" for an executed kernel, "0 name file" otherwise.
const kernels = new Map();
const files = ['ctest-parity.txt', 'ctest-train.txt', 'ctest-trainer-ops.txt', 'tap.txt'];
for (const name of files) {
  const path = join(COVERAGE, name);
  if (!existsSync(path)) fail(`${path} is missing: did ctest run the emulated tests (cuda_parity_emu, cuda_train_parity_emu, cuda_trainer_ops_parity_emu)?`);
  for (const line of readFileSync(path, 'utf8').split('\n').filter(Boolean)) {
    const [flag, kernel, file] = line.split(' ');
    const prev = kernels.get(kernel);
    kernels.set(kernel, { file, executed: (prev?.executed ?? false) || flag === '1' });
  }
}
const missing = [...kernels].filter(([, k]) => !k.executed).map(([name, k]) => `${name} (${k.file})`);
console.log(`cuda-emu: ${kernels.size - missing.length} of ${kernels.size} kernels in native/core/cuda/ executed ` +
  `(ctest parity, ctest trainer, ctest trainer ops, test/cuda.test.ts in ${seconds} s), 0 emulator errors`);
if (missing.length > 0) fail(`never executed: ${missing.join(', ')}`);
