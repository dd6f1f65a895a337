// `mghf doctor`: what was installed and loaded (binary, backend, CUDA and why not), the Node,
// N-API and glibc versions, a tiny loss on every usable backend, CPU vs CUDA compared within
// the tolerances of docs/MATH.md §8, and a tiny pretraining step likewise (docs/MATH.md §10). Everything is collected into one report (printed as text or JSON); the
// exit code is 0 when every check passed, 1 otherwise.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MghfError } from './errors';

export interface DoctorCheck {
  name: string;
  status: 'ok' | 'fail' | 'skip';
  detail: string;
}

export interface DoctorReport {
  ok: boolean;
  mghf: string;
  node: string;
  napi: string;
  abi: string;
  platform: string;
  /** The C library the running Node reports (process.report): "2.36", or undefined off glibc. */
  glibc?: string;
  /** backendInfo(), or undefined when no binary loaded. */
  backend?: import('./native').BackendInfo;
  /** The E_LOAD message when no binary loaded. */
  loadError?: string;
  weights: { path: string; present: boolean };
  checks: DoctorCheck[];
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function glibcVersion(): string | undefined {
  try {
    const report = process.report?.getReport() as unknown as { header?: { glibcVersionRuntime?: string } } | undefined;
    return report?.header?.glibcVersionRuntime;
  } catch {
    return undefined;
  }
}

/** A fixed, smooth-plus-noise 1×3×40×40 pair in [0, 1] (no randomness between runs). */
function tinyPair(): { sr: Float32Array; gt: Float32Array; dims: number[] } {
  const dims = [1, 3, 40, 40];
  const n = 3 * 40 * 40;
  const sr = new Float32Array(n);
  const gt = new Float32Array(n);
  let s = 12345;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 40; y++) {
      for (let x = 0; x < 40; x++) {
        const i = (c * 40 + y) * 40 + x;
        const v = 0.5 + 0.3 * Math.sin((x + 3 * c) / 4) * Math.cos(y / 6) + (x > 20 ? 0.1 : -0.1);
        gt[i] = Math.min(1, Math.max(0, v));
        sr[i] = Math.min(1, Math.max(0, v + 0.08 * (rand() - 0.5)));
      }
    }
  }
  return { sr, gt, dims };
}

function relativeL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

const fmt = (x: number): string => (x === 0 || !Number.isFinite(x) ? String(x) : x.toPrecision(7));

export async function runDoctor(): Promise<DoctorReport> {
  const glibc = glibcVersion();
  const report: DoctorReport = {
    ok: false,
    mghf: packageVersion(),
    node: process.versions.node,
    napi: process.versions.napi ?? 'unknown',
    abi: process.versions.modules,
    platform: `${process.platform}-${process.arch}`,
    ...(glibc ? { glibc } : {}),
    weights: { path: '', present: false },
    checks: [],
  };
  const lib = await import('./index');
  report.weights = { path: lib.DEFAULT_WEIGHTS_PATH, present: existsSync(lib.DEFAULT_WEIGHTS_PATH) };
  const check = (name: string, status: DoctorCheck['status'], detail: string) => report.checks.push({ name, status, detail });

  let info: import('./native').BackendInfo;
  try {
    info = lib.backendInfo();
    report.backend = info;
    check('native binary loads', 'ok', info.binary);
  } catch (err) {
    report.loadError = err instanceof Error ? err.message : String(err);
    check('native binary loads', 'fail', report.loadError);
    return report;
  }

  let weights: import('./weights').DfeWeights | undefined;
  try {
    weights = lib.defaultWeights();
    check('default weights load', 'ok', lib.DEFAULT_WEIGHTS_PATH);
  } catch (err) {
    check('default weights load', 'fail', err instanceof MghfError ? err.message : String(err));
    // Go on with seeded weights so that the backends are still checked.
    weights = lib.createWeights({ seed: 0 });
  }

  const { sr, gt, dims } = tinyPair();
  const srT = new lib.Tensor(sr, dims);
  const gtT = new lib.Tensor(gt, dims);
  let cpu: import('./loss').LossResult | undefined;
  try {
    const t0 = process.hrtime.bigint();
    cpu = await lib.mghfLoss(srT, gtT, { weights, device: 'cpu', returnDetails: true });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const finite = Number.isFinite(cpu.loss) && cpu.grad.data.every(Number.isFinite);
    check('loss on cpu', finite ? 'ok' : 'fail', `1×3×40×40 MGHF-c: loss ${fmt(cpu.loss)} in ${ms.toFixed(1)} ms${finite ? '' : ' (not finite)'}`);
  } catch (err) {
    check('loss on cpu', 'fail', err instanceof Error ? err.message : String(err));
  }

  if (!info.cuda.available) {
    check('loss on cuda', 'skip', `CUDA not usable: ${info.cuda.reason ?? 'unknown reason'}`);
  } else {
    try {
      const t0 = process.hrtime.bigint();
      // The CPU's channel choice, so both compute the same loss (docs/MATH.md §8: the selection may differ at ties).
      const gpu = await lib.mghfLoss(srT, gtT, { weights, device: 'cuda', ...(cpu?.selected ? { selected: cpu.selected } : {}) });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (!cpu) {
        check('loss on cuda', Number.isFinite(gpu.loss) ? 'ok' : 'fail', `loss ${fmt(gpu.loss)} (no CPU result to compare)`);
      } else {
        const dLoss = Math.abs(gpu.loss - cpu.loss);
        const lossOk = dLoss <= 1e-4 * Math.abs(cpu.loss) + 1e-7;
        const gradErr = relativeL2(gpu.grad.data, cpu.grad.data);
        const gradOk = gradErr <= 1e-3;
        check(
          'loss on cuda',
          lossOk && gradOk ? 'ok' : 'fail',
          `loss ${fmt(gpu.loss)} in ${ms.toFixed(1)} ms; vs CPU |Δ| ${dLoss.toExponential(2)} ` +
            `(${lossOk ? 'within' : 'OUTSIDE'} 1e-4·|ref| + 1e-7), gradient relative L2 ${gradErr.toExponential(2)} ` +
            `(${gradOk ? 'within' : 'OUTSIDE'} 1e-3)`,
        );
      }
    } catch (err) {
      check('loss on cuda', 'fail', err instanceof Error ? err.message : String(err));
    }
  }
  await checkPretraining(info, check);
  report.ok = report.checks.every((c) => c.status !== 'fail');
  return report;
}

/**
 * One pretraining step (docs/MATH.md §10; DFE N=8 + head, 3 classes, a 2×3×16×16 batch) on the CPU, and on CUDA device 0
 * when usable, compared with the CPU: the loss within 1e-4 relative, every weight and Adam moment
 * after the step within 1e-3 relative L2 (the tolerances of the trainer parity tests).
 */
async function checkPretraining(
  info: import('./native').BackendInfo,
  check: (name: string, status: DoctorCheck['status'], detail: string) => void,
): Promise<void> {
  const { ADAM, DEFAULTS, nativeTrainer } = await import('./pretrain');
  const { createHeadWeights } = await import('./checkpoint');
  const { createWeights } = await import('./weights');
  let addon: import('./pretrain').TrainerAddon;
  try {
    addon = nativeTrainer();
  } catch (err) {
    check('pretraining step on cpu', 'fail', err instanceof Error ? err.message : String(err));
    return;
  }
  const arch = { channels: 8, blocks: 1, expand: 2 };
  const classes = 3;
  const config = {
    ...arch,
    classes,
    tensors: { ...createWeights({ seed: 1, ...arch }).tensors, ...createHeadWeights({ seed: 1, channels: arch.channels, classes }) },
    steps: 0,
    lr: 1e-3,
    ...ADAM,
    decayEvery: DEFAULTS.decayEvery,
    decayRate: DEFAULTS.decayRate,
  };
  const { sr } = tinyPair();
  const dims = [2, 3, 16, 16];
  const images = sr.subarray(0, 2 * 3 * 16 * 16);
  const labels = Int32Array.from([0, 2]);
  const step = async (device: 'cpu' | 'cuda') => {
    const h = addon.trainerCreate({ ...config, device, deviceIndex: 0 });
    const t0 = process.hrtime.bigint();
    const r = await addon.trainStep(h, images, dims, labels);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    return { loss: r.loss, ms, state: addon.trainerState(h).tensors };
  };
  let cpu: Awaited<ReturnType<typeof step>> | undefined;
  try {
    cpu = await step('cpu');
    const finite = Number.isFinite(cpu.loss) && Object.values(cpu.state).every((a) => a.every(Number.isFinite));
    check('pretraining step on cpu', finite ? 'ok' : 'fail', `N=8, 2×3×16×16: loss ${fmt(cpu.loss)} in ${cpu.ms.toFixed(1)} ms${finite ? '' : ' (not finite)'}`);
  } catch (err) {
    check('pretraining step on cpu', 'fail', err instanceof Error ? err.message : String(err));
  }
  if (!info.cuda.available) {
    check('pretraining step on cuda', 'skip', `CUDA not usable: ${info.cuda.reason ?? 'unknown reason'}`);
    return;
  }
  try {
    const gpu = await step('cuda');
    if (!cpu) {
      check('pretraining step on cuda', Number.isFinite(gpu.loss) ? 'ok' : 'fail', `loss ${fmt(gpu.loss)} (no CPU result to compare)`);
      return;
    }
    const dLoss = Math.abs(gpu.loss - cpu.loss);
    const lossOk = dLoss <= 1e-4 * Math.abs(cpu.loss);
    let worst = 0;
    for (const [name, ref] of Object.entries(cpu.state)) worst = Math.max(worst, relativeL2(gpu.state[name] ?? new Float32Array(ref.length), ref));
    const stateOk = worst <= 1e-3;
    check(
      'pretraining step on cuda',
      lossOk && stateOk ? 'ok' : 'fail',
      `loss ${fmt(gpu.loss)} in ${gpu.ms.toFixed(1)} ms; vs CPU |Δ| ${dLoss.toExponential(2)} (${lossOk ? 'within' : 'OUTSIDE'} 1e-4·|ref|), ` +
        `weights and moments worst relative L2 ${worst.toExponential(2)} (${stateOk ? 'within' : 'OUTSIDE'} 1e-3)`,
    );
  } catch (err) {
    check('pretraining step on cuda', 'fail', err instanceof Error ? err.message : String(err));
  }
}

export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = [];
  lines.push(`mghf ${r.mghf} on ${r.platform}`);
  lines.push(`Node ${r.node}, N-API ${r.napi}, module ABI ${r.abi}, glibc ${r.glibc ?? 'none (not glibc)'}`);
  const b = r.backend;
  if (b) {
    lines.push(`binary    ${b.binary}${b.builtWithCuda ? ' (CUDA build)' : ' (CPU-only build)'}`);
    lines.push(`backend   ${b.backend} (what device: 'auto' uses)`);
    lines.push(`CPU       ${b.isa} kernels, ${b.threads} threads`);
    if (b.cuda.available) {
      lines.push(`CUDA      usable: ${b.deviceName ?? '?'} (compute capability ${b.computeCapability ?? '?'}), ${b.cuda.deviceCount} device(s)`);
    } else {
      lines.push(`CUDA      not usable: ${b.cuda.reason ?? 'unknown reason'}`);
      if (b.deviceName) lines.push(`          device 0: ${b.deviceName} (compute capability ${b.computeCapability ?? '?'})`);
    }
    lines.push(`          runtime ${b.cudaRuntimeVersion ?? 'n/a'}, driver supports CUDA ${b.cudaDriverVersion ?? 'n/a'}`);
    if (b.cudaBinary) {
      const c = b.cudaBinary;
      const state = !c.used ? `not used: ${c.reason ?? ''}` : b.cuda.available ? 'in use' : `in use for its CPU backend (no CPU binary loaded): ${c.reason ?? ''}`;
      lines.push(`CUDA binary ${c.path}: ${state}`);
    }
    lines.push('load attempts:');
    for (const f of b.fallbacks) lines.push(`  - ${f}`);
  }
  lines.push(`weights   ${r.weights.path}${r.weights.present ? '' : ' (MISSING)'}`);
  lines.push('checks:');
  for (const c of r.checks) lines.push(`  ${c.status.padEnd(4)}  ${c.name}: ${c.detail.replace(/\n/g, '\n        ')}`);
  const failed = r.checks.filter((c) => c.status === 'fail').length;
  lines.push(r.ok ? 'All good.' : `${failed} check${failed === 1 ? '' : 's'} failed.`);
  return lines.join('\n') + '\n';
}
