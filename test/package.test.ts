// The published package, end to end (a few minutes): the CPU prebuild (prebuildify, built here if
// it is missing or older than the sources, into the ignored build-test-prebuild/ so that `npm test`
// leaves no prebuilds/ for a later `npm pack` to ship), `npm pack` with that prebuild added, and
// installs of the tarball into empty projects:
//   (a) with no compiler on PATH: the prebuilt binary is used, the loss runs, `mghf doctor` passes;
//       with the binaries removed, loading fails with E_LOAD and the remedy;
//       `--build-from-source` is honoured (it tries node-gyp, which fails without a compiler);
//   (b) from a tarball without prebuilds/, compilers on PATH: binding.gyp builds at install;
//   (c) the glibc / libstdc++ symbol versions the prebuilt binaries need stay under the floor;
//   (d) the CUDA prebuild, when scripts/prebuild-cuda.sh made one: it loads, and without a usable
//       GPU says why, the CPU binary is used and device 'cuda' is a typed error with the reason;
//   (e) mghf/tfjs: without TensorFlow.js (an optional peer, not installed with mghf) E_LOAD with the
//       install command; with @tensorflow/tfjs-core and its CPU backend installed beside it, the loss
//       and its gradient through tfjs.
// Only the npm registry is needed (sharp's prebuilt @img packages come from it).

import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { delimiter, join, resolve, sep } from 'node:path';
import { createWeights, mghfLossSync, Tensor } from '../lib/index';

t.setTimeout(45 * 60_000);

const ROOT = resolve(__dirname, '..');
const PLATFORM_DIR = `${process.platform}-${process.arch}`;
// The release prebuilds (npm run prebuilds) live in prebuilds/; this test never writes there.
const PREBUILDS = join(ROOT, 'prebuilds', PLATFORM_DIR);
const CUDA_PREBUILD = join(PREBUILDS, 'mghf.cuda.node');
// The CPU prebuild this test packs: its own, kept between runs in an ignored build folder.
const TEST_PREBUILD_ROOT = join(ROOT, 'build-test-prebuild');
const TEST_PREBUILDS = join(TEST_PREBUILD_ROOT, 'prebuilds', PLATFORM_DIR);
const CPU_PREBUILD = join(TEST_PREBUILDS, 'mghf.glibc.node');
const hadPrebuilds = existsSync(join(ROOT, 'prebuilds'));
/**
 * The newest symbol versions a prebuilt binary may need (built on Debian 12: glibc 2.36, GCC 12), measured
 * with objdump -T: the CPU binary GLIBC_2.32 (__libc_single_threaded; exp/log/pow are 2.29), the CUDA
 * binary GLIBC_2.34 (the static CUDA runtime calls pthread_* and dl*, versioned 2.34 since libpthread
 * and libdl moved into libc); both GLIBCXX_3.4.30 and CXXABI_1.3.13 (GCC 12's libstdc++).
 */
const FLOORS = { GLIBC: '2.32', GLIBCXX: '3.4.30', CXXABI: '1.3.13' } as const;
const CUDA_FLOORS = { ...FLOORS, GLIBC: '2.34' } as const;

const glibc = (process.report?.getReport() as unknown as { header?: { glibcVersionRuntime?: string } })?.header?.glibcVersionRuntime;
const skipAll =
  process.platform !== 'linux' || process.arch !== 'x64' || !glibc
    ? `prebuilt binaries are made for linux-x64 with glibc only (this is ${process.platform}-${process.arch})`
    : !existsSync(join(ROOT, 'dist', 'index.js'))
      ? 'dist/ does not exist yet (run npm run build)'
      : false;

// ---------------------------------------------------------------------------------------------
// Helpers

function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeout?: number }) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env, encoding: 'utf8', timeout: opts.timeout ?? 15 * 60_000, maxBuffer: 64 << 20 });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}`;
  return { code: r.status, output, stdout: r.stdout ?? '' };
}

const tail = (s: string, n = 3000) => (s.length > n ? `…${s.slice(-n)}` : s);
/** An assertion message: the label, with the command's output only when it failed. */
const said = (r: { code: number | null; output: string }, label: string, ok = r.code === 0, n = 3000) => (ok ? label : `${label}\n${tail(r.output, n)}`);

/** The newest mtime of the native sources a prebuild is made from. */
function newestSource(): number {
  let newest = statSync(join(ROOT, 'binding.gyp')).mtimeMs;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (p !== join(ROOT, 'native', 'core', 'tests') && p !== join(ROOT, 'native', 'core', 'bench')) walk(p);
      } else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  walk(join(ROOT, 'native'));
  return newest;
}

function which(name: string, path: string): string | undefined {
  for (const dir of path.split(delimiter)) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

const ORIGINAL_PATH = process.env.PATH ?? '';
const COMPILERS = ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'make', 'gmake', 'cmake', 'python', 'python3', 'nvcc', 'ld'];
// What npm, its lifecycle scripts and sharp's install check use: a shell and some coreutils.
const BASIC_TOOLS = ['sh', 'bash', 'dash', 'env', 'cat', 'ls', 'mkdir', 'rm', 'rmdir', 'cp', 'mv', 'ln', 'chmod', 'uname', 'sed', 'grep',
  'tar', 'gzip', 'getconf', 'ldd', 'dirname', 'basename', 'readlink', 'realpath', 'true', 'false', 'head', 'tail', 'touch', 'id', 'git'];

/** A folder of links to node, npm, npx and the basic tools, and nothing that compiles. */
function bareBin(dir: string): string {
  mkdirSync(dir, { recursive: true });
  symlinkSync(process.execPath, join(dir, 'node'));
  for (const name of ['npm', 'npx', ...BASIC_TOOLS]) {
    const p = which(name, ORIGINAL_PATH);
    if (p) symlinkSync(p, join(dir, name));
  }
  return dir;
}

/**
 * The environment for a nested npm: none of the npm_* variables `npm test` exports (npm_config_local_prefix
 * would point the install at this repository), no tap loaders in NODE_OPTIONS; npm's own settings
 * (~/.npmrc: cache, registry, nodedir) still apply.
 */
function cleanEnv(path: string): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_nodedir', 'npm_config_cafile', 'npm_config_userconfig',
    'npm_config_globalconfig', 'npm_config_proxy', 'npm_config_https_proxy', 'npm_config_noproxy', 'npm_config_strict_ssl']);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    const lk = k.toLowerCase();
    if (lk.startsWith('npm_') && !keep.has(lk)) continue;
    if (k === 'NODE_OPTIONS' || k === 'INIT_CWD' || k === 'MGHF_BINARY' || k.startsWith('TAP') || k.startsWith('_TAP')) continue;
    env[k] = v;
  }
  env.PATH = path;
  return env;
}

function emptyProject(dir: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'mghf-consumer', version: '1.0.0', private: true }, null, 2));
  return dir;
}

function npmInstall(project: string, tarball: string, env: NodeJS.ProcessEnv, extra: string[] = []) {
  const npm = which('npm', env.PATH ?? '') ?? 'npm';
  return run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', ...extra, tarball], { cwd: project, env });
}

// The consumer's check: backendInfo(), a tiny loss with seeded weights, and device 'cuda' when CUDA
// is not usable. Prints one JSON line.
const CONSUMER_SCRIPT = `
const m = require('mghf');
const out = {};
try {
  const info = m.backendInfo();
  out.info = info;
  const dims = [1, 3, 40, 40], n = 3 * 40 * 40;
  const sr = new Float32Array(n), gt = new Float32Array(n);
  for (let i = 0; i < n; i++) { gt[i] = 0.5 + 0.4 * Math.sin(i / 7); sr[i] = gt[i] + 0.05 * Math.cos(i / 3); }
  const weights = m.createWeights({ seed: 3 });
  out.loss = m.mghfLossSync(new m.Tensor(sr, dims), new m.Tensor(gt, dims), { weights, device: 'cpu' }).loss;
  if (!info.cuda.available) {
    try { m.mghfLossSync(new m.Tensor(sr, dims), new m.Tensor(gt, dims), { weights, device: 'cuda' }); out.cudaError = null; }
    catch (e) { out.cudaError = { code: e.code, message: e.message }; }
  }
} catch (e) { out.error = { code: e.code, message: e.message }; }
try { require('mghf/tfjs'); out.tfjs = null; } catch (e) { out.tfjs = { code: e.code, message: e.message }; }
process.stdout.write(JSON.stringify(out) + '\\n');
`;

interface ConsumerResult {
  info?: { binary: string; backend: string; cuda: { available: boolean; reason?: string }; cudaBinary?: { path: string; used: boolean; reason?: string }; fallbacks: string[] };
  loss?: number;
  cudaError?: { code: string; message: string } | null;
  error?: { code: string; message: string };
  /** What require('mghf/tfjs') threw (null: it loaded). */
  tfjs?: { code: string; message: string } | null;
}

function runConsumer(project: string, env: NodeJS.ProcessEnv): ConsumerResult {
  const r = run(process.execPath, ['-e', CONSUMER_SCRIPT], { cwd: project, env, timeout: 120_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ConsumerResult;
  } catch {
    throw new Error(`consumer script printed no JSON (exit ${r.code}):\n${tail(r.output)}`);
  }
}

/** The same loss in this process, from the repository's own build. */
function expectedLoss(): number {
  const dims = [1, 3, 40, 40];
  const n = 3 * 40 * 40;
  const sr = new Float32Array(n);
  const gt = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    gt[i] = 0.5 + 0.4 * Math.sin(i / 7);
    sr[i] = gt[i] + 0.05 * Math.cos(i / 3);
  }
  return mghfLossSync(new Tensor(sr, dims), new Tensor(gt, dims), { weights: createWeights({ seed: 3 }), device: 'cpu' }).loss;
}

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-4 * Math.abs(b) + 1e-7;

/** The newest version of each symbol family (GLIBC_, GLIBCXX_, CXXABI_) a binary needs. */
function symbolVersions(file: string): Record<string, string> {
  const r = run('objdump', ['-T', file], { cwd: ROOT, env: process.env, timeout: 60_000 });
  if (r.code !== 0) throw new Error(`objdump -T ${file} failed:\n${tail(r.output)}`);
  const newest: Record<string, string> = {};
  for (const m of r.stdout.matchAll(/\b(GLIBC|GLIBCXX|CXXABI)_([0-9]+(?:\.[0-9]+)*)\b/g)) {
    const [, family, version] = m;
    if (!newest[family] || compareVersions(version, newest[family]) > 0) newest[family] = version;
  }
  return newest;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The tests (in order; each later one uses what the earlier ones made)

const work = skipAll ? '' : mkdtempSync(join(tmpdir(), 'mghf-package-'));
t.teardown(() => {
  if (work && !process.env.MGHF_KEEP_PACKAGE_TEST) rmSync(work, { recursive: true, force: true });
});
let tarball: string | undefined;
let bare: { project: string; env: NodeJS.ProcessEnv } | undefined;
const hasCudaPrebuild = existsSync(CUDA_PREBUILD);

t.test('the CPU prebuild exists and is current (prebuildify, into build-test-prebuild/)', { skip: skipAll }, async (t) => {
  if (!existsSync(CPU_PREBUILD) || statSync(CPU_PREBUILD).mtimeMs < newestSource()) {
    t.comment(`building ${CPU_PREBUILD} (scripts/prebuild-cpu.js --out ${TEST_PREBUILD_ROOT})`);
    const r = run(process.execPath, [join(ROOT, 'scripts', 'prebuild-cpu.js'), '--out', TEST_PREBUILD_ROOT], { cwd: ROOT, env: cleanEnv(ORIGINAL_PATH), timeout: 30 * 60_000 });
    t.equal(r.code, 0, said(r, 'scripts/prebuild-cpu.js --out build-test-prebuild'));
  }
  t.ok(existsSync(CPU_PREBUILD), `${CPU_PREBUILD} exists`);
  const names = readdirSync(TEST_PREBUILDS);
  t.ok(names.every((n) => n === 'mghf.glibc.node'), `the test's prebuilds folder holds only the CPU binary: ${names.join(', ')}`);
  t.equal(existsSync(join(ROOT, 'prebuilds')), hadPrebuilds, 'no prebuilds/ made in the repository');
});

/** What a tarball may hold. */
const ALLOWED = [
  /^dist\/[\w-]+\.(js|d\.ts|js\.map)$/,
  /^prebuilds\/linux-x64\/mghf\.(glibc|cuda)\.node$/,
  /^weights\/mghf-dfe-default\.safetensors$/,
  /^native\/binding\/(addon\.cc|js_buffers\.h)$/,
  /^native\/core\/(?!tests\/|bench\/)[\w/.-]+\.(h|cpp|cu|cuh|inc|md)$/,
  /^(binding\.gyp|CMakeLists\.txt|README\.md|package\.json|LICENSE)$/,
  /^docs\/MATH\.md$/,
];

t.test('npm pack ships exactly the package files', { skip: skipAll }, async (t) => {
  const npm = which('npm', ORIGINAL_PATH) ?? 'npm';
  // The repository as it is (with prebuilds/ only when someone ran npm run prebuilds) …
  const plainDir = join(work, 'pack-plain');
  mkdirSync(plainDir);
  let r = run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', plainDir], { cwd: ROOT, env: cleanEnv(ORIGINAL_PATH), timeout: 300_000 });
  t.equal(r.code, 0, said(r, 'npm pack'));
  const [plain] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
  const plainStray = plain.files.map((f) => f.path).filter((f) => !ALLOWED.some((re) => re.test(f)));
  t.same(plainStray, [], 'the repository packs no stray file (test output, build folders)');
  // … then with this test's CPU prebuild added, as a release has it.
  const stage = join(work, 'pack-stage');
  mkdirSync(stage);
  r = run('tar', ['-xzf', join(plainDir, plain.filename), '-C', stage], { cwd: work, env: process.env });
  t.equal(r.code, 0, said(r, 'tar -x'));
  mkdirSync(join(stage, 'package', 'prebuilds', PLATFORM_DIR), { recursive: true });
  copyFileSync(CPU_PREBUILD, join(stage, 'package', 'prebuilds', PLATFORM_DIR, 'mghf.glibc.node'));
  r = run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: join(stage, 'package'), env: cleanEnv(ORIGINAL_PATH), timeout: 300_000 });
  t.equal(r.code, 0, said(r, 'npm pack with the prebuild'));
  const [meta] = JSON.parse(r.stdout) as { filename: string; size: number; unpackedSize: number; files: { path: string }[] }[];
  tarball = join(work, meta.filename);
  t.ok(existsSync(tarball), tarball);
  const files = meta.files.map((f) => f.path);
  const stray = files.filter((f) => !ALLOWED.some((re) => re.test(f)));
  t.same(stray, [], 'nothing outside dist/, prebuilds/, the default weights, native sources, binding.gyp, CMakeLists.txt, README.md, docs/MATH.md, package.json');
  for (const f of ['dist/index.js', 'dist/cli.js', 'dist/native.js', 'dist/doctor.js', 'prebuilds/linux-x64/mghf.glibc.node', 'binding.gyp', 'CMakeLists.txt',
    'native/binding/addon.cc', 'native/binding/js_buffers.h', 'native/core/backend_cpu.cpp', 'README.md', 'docs/MATH.md', 'package.json', 'dist/tfjs.js', 'dist/tfjs.d.ts']) {
    t.ok(files.includes(f), `ships ${f}`);
  }
  t.equal(files.includes('prebuilds/linux-x64/mghf.cuda.node'), hasCudaPrebuild, 'ships the CUDA prebuild exactly when one was built');
  t.equal(files.includes('weights/mghf-dfe-default.safetensors'), existsSync(join(ROOT, 'weights', 'mghf-dfe-default.safetensors')), 'ships the default weights when they exist');
  t.notOk(files.some((f) => /ckpt/.test(f)), 'no checkpoints');
  t.comment(`${meta.filename}: ${files.length} files, ${(meta.size / 1e6).toFixed(2)} MB packed, ${(meta.unpackedSize / 1e6).toFixed(2)} MB unpacked`);
});

t.test('(a) installs with no compiler on PATH and loads the prebuilt binary', { skip: skipAll }, async (t) => {
  if (!tarball) return t.fail('no tarball (npm pack failed)');
  const path = bareBin(join(work, 'bare-bin'));
  const env = cleanEnv(path);
  for (const c of COMPILERS) t.equal(which(c, path), undefined, `no ${c} on the install PATH`);
  const project = emptyProject(join(work, 'consumer-prebuilt'));
  const r = npmInstall(project, tarball, env);
  t.equal(r.code, 0, said(r, 'npm install without compilers'));
  if (r.code !== 0) return;
  t.notOk(existsSync(join(project, 'node_modules', 'mghf', 'build')), 'nothing was compiled (no build/ folder)');
  const out = runConsumer(project, env);
  t.notOk(out.error, JSON.stringify(out.error));
  const prebuilds = join(project, 'node_modules', 'mghf', 'prebuilds') + sep;
  t.ok(out.info?.binary.startsWith(prebuilds), `binary ${out.info?.binary} is under ${prebuilds}`);
  t.ok(out.loss !== undefined && close(out.loss, expectedLoss()), `loss ${out.loss} equals the repository build's ${expectedLoss()}`);
  t.notOk(existsSync(join(project, 'node_modules', '@tensorflow')), 'the optional peer @tensorflow/tfjs-core is not installed with mghf');
  t.equal(out.tfjs?.code, 'E_LOAD', "so require('mghf/tfjs') is E_LOAD");
  t.match(out.tfjs?.message, /npm install @tensorflow\/tfjs/, 'naming what to install');
  bare = { project, env };

  const d = run(join(project, 'node_modules', '.bin', 'mghf'), ['doctor'], { cwd: project, env, timeout: 300_000 });
  const weightsShipped = existsSync(join(project, 'node_modules', 'mghf', 'weights', 'mghf-dfe-default.safetensors'));
  t.equal(d.code, weightsShipped ? 0 : 1, said(d, `mghf doctor in the installed package (bundled weights ${weightsShipped ? 'shipped' : 'missing'})`, d.code === (weightsShipped ? 0 : 1)));
  t.match(d.stdout, /^ {2}ok {4}loss on cpu/m);
});

t.test('(a) with no binary at all, loading fails with E_LOAD, every attempt and the remedy', { skip: skipAll }, async (t) => {
  if (!bare) return t.fail('no installed package from (a)');
  // A copy of the installed package, so (d) below still has the original.
  const project = join(work, 'consumer-nobinary');
  const r = run('cp', ['-a', bare.project, project], { cwd: work, env: process.env });
  t.equal(r.code, 0, said(r, 'copy of the installed project'));
  rmSync(join(project, 'node_modules', 'mghf', 'prebuilds'), { recursive: true, force: true });
  const out = runConsumer(project, bare.env);
  t.equal(out.error?.code, 'E_LOAD', JSON.stringify(out));
  t.match(out.error?.message, /Tried:\n/);
  t.match(out.error?.message, /node-gyp-build found no CPU binary/);
  t.match(out.error?.message, /npm rebuild mghf.*python3, make and g\+\+/);
  t.match(out.error?.message, /reinstall/);
});

t.test('(a) --build-from-source is honoured (npm rebuild mghf --build-from-source runs node-gyp, which needs a compiler)', { skip: skipAll }, async (t) => {
  if (!bare) return t.fail('no installed package from (a)');
  // On a copy: `npm install --build-from-source` would make sharp build from source too.
  const project = join(work, 'consumer-rebuild');
  const c = run('cp', ['-a', bare.project, project], { cwd: work, env: process.env });
  t.equal(c.code, 0, said(c, 'copy of the installed project'));
  const npm = join(bare.env.PATH as string, 'npm');
  const plain = run(npm, ['rebuild', 'mghf', '--foreground-scripts'], { cwd: project, env: bare.env });
  t.equal(plain.code, 0, said(plain, 'npm rebuild mghf without the flag keeps the prebuild: nothing to compile'));
  const r = run(npm, ['rebuild', 'mghf', '--build-from-source', '--foreground-scripts'], { cwd: project, env: bare.env });
  t.not(r.code, 0, 'with the flag it builds from source, and there is no compiler');
  t.match(r.output, /gyp/, said(r, 'node-gyp ran', /gyp/.test(r.output), 1500));
});

t.test('(b) without prebuilds/, binding.gyp builds at install and the loss runs', { skip: skipAll }, async (t) => {
  if (!tarball) return t.fail('no tarball');
  // Unpack, drop prebuilds/, pack again.
  const unpack = join(work, 'unpacked');
  mkdirSync(unpack);
  let r = run('tar', ['-xzf', tarball, '-C', unpack], { cwd: work, env: process.env });
  t.equal(r.code, 0, said(r, 'tar -x'));
  rmSync(join(unpack, 'package', 'prebuilds'), { recursive: true, force: true });
  const npm = which('npm', ORIGINAL_PATH) ?? 'npm';
  const dest = join(work, 'no-prebuilds');
  mkdirSync(dest);
  r = run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], { cwd: join(unpack, 'package'), env: cleanEnv(ORIGINAL_PATH) });
  t.equal(r.code, 0, said(r, 'npm pack without prebuilds/'));
  const [meta] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
  t.notOk(meta.files.some((f) => f.path.startsWith('prebuilds/')), 'the second tarball has no prebuilds/');

  const env = { ...cleanEnv(ORIGINAL_PATH), JOBS: String(Math.max(1, cpus().length)) };
  const project = emptyProject(join(work, 'consumer-source'));
  const t0 = Date.now();
  const inst = npmInstall(project, join(dest, meta.filename), env);
  t.equal(inst.code, 0, said(inst, 'npm install (source build)'));
  if (inst.code !== 0) return;
  t.comment(`source install took ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const out = runConsumer(project, env);
  t.notOk(out.error, JSON.stringify(out.error));
  const built = join(project, 'node_modules', 'mghf', 'build', 'Release', 'mghf.node');
  t.equal(out.info?.binary, built, 'the binary node-gyp built at install');
  t.ok(out.loss !== undefined && close(out.loss, expectedLoss()), `loss ${out.loss} equals the repository build's ${expectedLoss()}`);
});

t.test(`(c) the prebuilt binaries need at most GLIBC_${FLOORS.GLIBC} (CUDA: GLIBC_${CUDA_FLOORS.GLIBC}), GLIBCXX_${FLOORS.GLIBCXX}, CXXABI_${FLOORS.CXXABI}`, {
  skip: skipAll || (which('objdump', ORIGINAL_PATH) ? false : 'objdump (binutils) is not on PATH'),
}, async (t) => {
  const binaries = [CPU_PREBUILD, ...(hasCudaPrebuild ? [CUDA_PREBUILD] : [])];
  for (const file of binaries) {
    if (!existsSync(file)) {
      t.fail(`${file} is missing`);
      continue;
    }
    const need = symbolVersions(file);
    t.comment(`${file}: needs ${Object.entries(need).map(([f, v]) => `${f}_${v}`).join(', ')}`);
    t.ok(need.GLIBC, `${file} has versioned glibc symbols`);
    for (const [family, floor] of Object.entries(file === CUDA_PREBUILD ? CUDA_FLOORS : FLOORS)) {
      if (need[family]) t.ok(compareVersions(need[family], floor) <= 0, `${file}: ${family}_${need[family]} ≤ ${family}_${floor}`);
    }
  }
});

t.test('(d) the CUDA prebuild loads; without a usable GPU it says why and the CPU binary is used', {
  skip: skipAll || (hasCudaPrebuild ? false : `no ${CUDA_PREBUILD} (npm run prebuilds:cuda builds it; needs nvcc)`),
}, async (t) => {
  if (!bare) return t.fail('no installed package from (a)');
  const out = runConsumer(bare.project, bare.env);
  const info = out.info;
  if (!info) return t.fail(JSON.stringify(out));
  const cudaPath = join(bare.project, 'node_modules', 'mghf', 'prebuilds', 'linux-x64', 'mghf.cuda.node');
  t.equal(info.cudaBinary?.path, cudaPath, 'the CUDA prebuild was tried');
  t.ok(info.fallbacks.some((f) => f.startsWith(`${cudaPath} (CUDA): loaded`)), `it loaded:\n${info.fallbacks.join('\n')}`);
  if (info.cuda.available) {
    t.equal(info.binary, cudaPath, 'CUDA is usable here: the CUDA binary is in use');
    t.equal(info.backend, 'cuda');
  } else {
    t.equal(info.cudaBinary?.used, false);
    t.match(info.cudaBinary?.reason, /\w/, `why not: ${info.cudaBinary?.reason}`);
    t.equal(info.binary, join(bare.project, 'node_modules', 'mghf', 'prebuilds', 'linux-x64', 'mghf.glibc.node'), 'the CPU prebuild is in use');
    t.equal(info.backend, 'cpu');
    t.match(info.cuda.reason, info.cudaBinary?.reason ?? '', 'backendInfo().cuda.reason carries the CUDA binary reason');
    t.equal(out.cudaError?.code, 'E_UNSUPPORTED', "device: 'cuda' is a typed error");
    t.match(out.cudaError?.message, info.cudaBinary?.reason ?? '', 'saying why');
  }
});

t.test('(d) a CUDA binary that does not load: the CPU prebuild is used, and device \'cuda\' says why', { skip: skipAll }, async (t) => {
  if (!bare) return t.fail('no installed package from (a)');
  // Runs everywhere (no nvcc needed): a broken mghf.cuda.node in a copy of the installed package.
  const project = join(work, 'consumer-badcuda');
  const c = run('cp', ['-a', bare.project, project], { cwd: work, env: process.env });
  t.equal(c.code, 0, said(c, 'copy of the installed project'));
  const dir = join(project, 'node_modules', 'mghf', 'prebuilds', 'linux-x64');
  writeFileSync(join(dir, 'mghf.cuda.node'), 'not an ELF file');
  const out = runConsumer(project, bare.env);
  t.notOk(out.error, JSON.stringify(out.error));
  t.equal(out.info?.binary, join(dir, 'mghf.glibc.node'), 'the CPU prebuild is in use');
  t.equal(out.info?.cudaBinary?.path, join(dir, 'mghf.cuda.node'));
  t.equal(out.info?.cudaBinary?.used, false);
  t.match(out.info?.cudaBinary?.reason, /did not load/);
  t.ok(out.info?.fallbacks.some((f) => f.startsWith(`${join(dir, 'mghf.cuda.node')} (CUDA): failed to load`)), 'the failed attempt is listed');
  t.equal(out.info?.backend, 'cpu');
  t.equal(out.cudaError?.code, 'E_UNSUPPORTED');
  t.match(out.cudaError?.message, /did not load/, 'the error says why');
});

t.test('(e) mghf/tfjs with @tensorflow/tfjs-core and its CPU backend installed beside mghf', { skip: skipAll }, async (t) => {
  if (!bare) return t.fail('no installed package from (a)');
  const project = join(work, 'consumer-tfjs');
  const c = run('cp', ['-a', bare.project, project], { cwd: work, env: process.env });
  t.equal(c.code, 0, said(c, 'copy of the installed project'));
  const version = (JSON.parse(readFileSync(join(ROOT, 'node_modules', '@tensorflow', 'tfjs-core', 'package.json'), 'utf8')) as { version: string }).version;
  const npm = join(bare.env.PATH as string, 'npm');
  const r = run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', `@tensorflow/tfjs-core@${version}`, `@tensorflow/tfjs-backend-cpu@${version}`], { cwd: project, env: bare.env });
  t.equal(r.code, 0, said(r, `npm install @tensorflow/tfjs-core@${version} @tensorflow/tfjs-backend-cpu@${version} (the peer range accepts it)`));
  if (r.code !== 0) return;
  // tfjs-core's Node build registers no op gradients: train the picture itself (a variable), which
  // needs none but mghf's.
  const script = `
    const tf = require('@tensorflow/tfjs-core'); require('@tensorflow/tfjs-backend-cpu');
    const { mghfLossTf } = require('mghf/tfjs');
    const m = require('mghf');
    (async () => {
      await tf.setBackend('cpu');
      const dims = [1, 40, 40, 3], n = 4800, gtD = new Float32Array(n), srD = new Float32Array(n);
      for (let i = 0; i < n; i++) { gtD[i] = 0.5 + 0.4 * Math.sin(i / 7); srD[i] = gtD[i] + 0.05 * Math.cos(i / 3); }
      const weights = m.createWeights({ seed: 3 });
      const f = mghfLossTf({ weights, device: 'cpu' });
      const gt = tf.tensor4d(gtD, dims), sr = tf.variable(tf.tensor4d(srD, dims));
      const ref = m.mghfLossSync({ data: srD, dims }, { data: gtD, dims }, { weights, device: 'cpu', layout: 'NHWC' }).loss;
      const value = f(sr, gt).dataSync()[0];
      const opt = tf.train.adam(0.002), losses = [];
      for (let i = 0; i < 3; i++) losses.push(opt.minimize(() => f(sr, gt), true).dataSync()[0]);
      console.log(JSON.stringify({ value, ref, losses }));
    })().catch((e) => console.log(JSON.stringify({ error: String(e && e.stack) })));
  `;
  const o = run(process.execPath, ['-e', script], { cwd: project, env: bare.env, timeout: 120_000 });
  let out: { value?: number; ref?: number; losses?: number[]; error?: string } = {};
  try {
    out = JSON.parse(o.stdout.trim().split('\n').pop() ?? '');
  } catch {
    return t.fail(said(o, 'the tfjs script printed no JSON', false));
  }
  t.notOk(out.error, out.error ?? 'no error');
  t.ok(out.value !== undefined && out.ref !== undefined && close(out.value, out.ref), `the tfjs loss ${out.value} is mghfLossSync's ${out.ref}`);
  t.ok(out.losses && out.losses[2] < out.losses[0], `three Adam steps on the picture lower it: ${out.losses?.join(' ')}`);
});

t.test('the test leaves no prebuilds/ in the repository', { skip: skipAll }, async (t) => {
  t.equal(existsSync(join(ROOT, 'prebuilds')), hadPrebuilds, hadPrebuilds ? 'the release prebuilds/ is still there' : 'no prebuilds/ for npm pack to ship');
});

t.test('node-gyp-build picks mghf.glibc.node, not mghf.cuda.node', { skip: skipAll }, async (t) => {
  // node-gyp-build ranks mghf.glibc.node (a libc tag) above mghf.cuda.node (no tag it knows).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const gypBuild = require('node-gyp-build') as { resolve(dir: string): string };
  const scratch = join(work, 'resolve-check');
  mkdirSync(join(scratch, 'prebuilds', 'linux-x64'), { recursive: true });
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'mghf' }));
  copyFileSync(CPU_PREBUILD, join(scratch, 'prebuilds', 'linux-x64', 'mghf.glibc.node'));
  writeFileSync(join(scratch, 'prebuilds', 'linux-x64', 'mghf.cuda.node'), '');
  t.equal(gypBuild.resolve(scratch), join(scratch, 'prebuilds', 'linux-x64', 'mghf.glibc.node'));
  t.ok(readFileSync(join(scratch, 'prebuilds', 'linux-x64', 'mghf.glibc.node')).length > 0);
});
