// `mghf doctor` end to end: the compiled CLI reports the loaded binary, the backend, CUDA and why it
// is not used, the Node / N-API / glibc versions and a tiny loss on each usable backend; exit 0
// exactly when every check passed.

import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { backendInfo, DEFAULT_WEIGHTS_PATH } from '../lib/index';
import type { DoctorReport } from '../lib/doctor';

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const DOCTOR_JS = resolve(__dirname, '..', 'dist', 'doctor.js');
const skip = existsSync(DOCTOR_JS) ? false : `${DOCTOR_JS} does not exist yet (run npm run build)`;

function runCli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const weightsPresent = existsSync(DEFAULT_WEIGHTS_PATH);

t.test('mghf doctor prints the binary, backend, versions and the backend checks', { skip }, async (t) => {
  const r = runCli(['doctor']);
  const info = backendInfo();
  t.equal(r.code, weightsPresent ? 0 : 1, `exit code (bundled weights ${weightsPresent ? 'present' : 'missing'})\n${r.stdout}${r.stderr}`);
  t.match(r.stdout, `binary    ${info.binary}`);
  t.match(r.stdout, `backend   ${info.backend}`);
  t.match(r.stdout, `${info.isa} kernels, ${info.threads} threads`);
  t.match(r.stdout, `Node ${process.versions.node}, N-API ${process.versions.napi}`);
  t.match(r.stdout, /glibc (\d+\.\d+|none)/);
  t.match(r.stdout, /^ {2}ok {4}loss on cpu: 1×3×40×40 MGHF-c: loss [0-9.e+-]+ in/m);
  t.match(r.stdout, /^ {2}ok {4}pretraining step on cpu: N=8, 2×3×16×16: loss [0-9.e+-]+ in/m);
  if (info.cuda.available) {
    t.match(r.stdout, /loss on cuda: loss .* vs CPU/);
    t.match(r.stdout, /pretraining step on cuda: loss .* vs CPU/);
  } else {
    t.match(r.stdout, `CUDA      not usable: ${info.cuda.reason}`);
    t.match(r.stdout, /^ {2}skip {2}loss on cuda: CUDA not usable/m);
    t.match(r.stdout, /^ {2}skip {2}pretraining step on cuda: CUDA not usable/m);
  }
  t.match(r.stdout, 'load attempts:');
  t.match(r.stdout, weightsPresent ? /All good\.$/m : /check failed\.$/m);
});

t.test('mghf doctor --json is the same report as one object', { skip }, async (t) => {
  const r = runCli(['doctor', '--json']);
  const report = JSON.parse(r.stdout) as DoctorReport;
  t.equal(r.code, report.ok ? 0 : 1, 'exit code follows report.ok');
  t.equal(report.ok, weightsPresent);
  t.equal(report.node, process.versions.node);
  t.equal(report.napi, process.versions.napi);
  const glibc = (process.report?.getReport() as unknown as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime;
  t.equal(report.glibc, glibc);
  const info = backendInfo();
  t.equal(report.backend?.binary, info.binary);
  t.equal(report.backend?.backend, info.backend);
  t.same(report.backend?.fallbacks, info.fallbacks);
  const byName = Object.fromEntries(report.checks.map((c) => [c.name, c]));
  t.equal(byName['native binary loads']?.status, 'ok');
  t.equal(byName['loss on cpu']?.status, 'ok');
  t.equal(byName['default weights load']?.status, weightsPresent ? 'ok' : 'fail');
  t.equal(byName['loss on cuda']?.status, info.cuda.available ? 'ok' : 'skip');
  t.equal(byName['pretraining step on cpu']?.status, 'ok');
  t.equal(byName['pretraining step on cuda']?.status, info.cuda.available ? 'ok' : 'skip');
});

t.test('mghf help lists doctor', { skip }, async (t) => {
  const r = runCli(['help']);
  t.equal(r.code, 0);
  t.match(r.stdout, /^ {2}doctor +check the installation/m);
  const h = runCli(['doctor', '--bogus']);
  t.equal(h.code, 2, 'unknown flag is a usage error');
});

t.test('backendInfo records every load attempt', async (t) => {
  const info = backendInfo();
  t.ok(info.fallbacks.length >= 1);
  t.ok(info.fallbacks.some((f) => f.startsWith(info.binary) && /loaded/.test(f)), 'the binary in use is among the attempts');
  if (info.cudaBinary) {
    t.equal(info.cudaBinary.used, info.binary === info.cudaBinary.path);
    if (!info.cudaBinary.used) t.match(info.cudaBinary.reason, /\w/);
  } else if (!process.env.MGHF_BINARY) {
    t.ok(info.fallbacks.some((f) => f.startsWith('no CUDA binary')), 'says that no CUDA binary exists');
  }
});

t.test('MGHF_BINARY may be relative to the working directory', { skip }, async (t) => {
  const info = backendInfo();
  const root = resolve(__dirname, '..');
  const relative = info.binary.startsWith(root + '/') ? info.binary.slice(root.length + 1) : undefined;
  if (!relative) return t.skip(`the loaded binary ${info.binary} is not under ${root}`);
  const r = spawnSync(process.execPath, ['-e', "const i = require('./dist/native').backendInfo(); console.log(JSON.stringify([i.binary, i.fallbacks[0]]))"], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, MGHF_BINARY: relative },
  });
  t.equal(r.status, 0, r.stderr);
  const [binary, first] = JSON.parse(r.stdout) as [string, string];
  t.equal(binary, info.binary, `${relative} resolved against the working directory`);
  t.equal(first, `${info.binary} (MGHF_BINARY): loaded`);
});
