// mghf/tfjs: the loss as a tfjs customGrad function, on @tensorflow/tfjs's pure-JS CPU backend at
// small sizes (DFE of 8 channels): its value and gradient are mghfLossSync's, gt gets a zero
// gradient, tfjs models (a raw conv2d and a tf.layers model through model.fit) train with it, and
// the package resolves 'mghf/tfjs' through "exports" while 'mghf' never loads tfjs; without tfjs,
// importing mghf/tfjs is E_LOAD with the install command.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import ts from 'typescript';
import { MghfError } from '../lib/errors';
import { mghfLossSync, type LossResult, type Variant } from '../lib/loss';
import { TFJS_PACKAGES, loadTfjs, mghfLossTf, type TfLossInfo, type TfLossOptions } from '../lib/tfjs';
import { createWeights } from '../lib/weights';

const ROOT = resolve(__dirname, '..');
const weights = createWeights({ seed: 7, channels: 8 });

t.before(async () => {
  // tfjs's Node build also registers WebGL, which cannot start here.
  await tf.setBackend('cpu');
  await tf.ready();
});

/** A smooth test picture [1, S, S, 3] (NHWC) in [0.15, 0.85], and a perturbed copy. */
function pair(S: number, seed = 1): { gt: Float32Array; sr: Float32Array } {
  const gt = new Float32Array(S * S * 3);
  const sr = new Float32Array(S * S * 3);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++)
      for (let c = 0; c < 3; c++) {
        const i = (y * S + x) * 3 + c;
        gt[i] = 0.5 + 0.35 * Math.sin(x / 3 + c + seed) * Math.cos(y / 4 - c);
        sr[i] = gt[i] + 0.08 * Math.sin(i * 0.37 + seed) * Math.cos(i * 0.11);
      }
  return { gt, sr };
}

// MGHF-c needs H, W ≥ the LIP patch (32): 48² gives 4 patches.
const CASES: { variant: Variant; S: number }[] = [
  { variant: 'n', S: 32 },
  { variant: 'c', S: 48 },
];

/** Whether fn throws an MghfError of this code whose message matches re (the message is shown otherwise). */
function thrownMatches(fn: () => unknown, code: string, re: RegExp): boolean {
  try {
    fn();
  } catch (err) {
    const ok = err instanceof MghfError && err.code === code && re.test(err.message);
    if (!ok) t.comment(`expected ${code} matching ${re}, got ${(err as { code?: string }).code}: ${(err as Error).message}`);
    return ok;
  }
  t.comment(`expected ${code} matching ${re}, nothing was thrown`);
  return false;
}

const relClose = (a: number, b: number, tol = 1e-6) => Math.abs(a - b) <= tol * Math.max(Math.abs(a), Math.abs(b), 1e-12);

for (const { variant, S } of CASES) {
  const dims = [1, S, S, 3];
  const opts = { variant, weights, device: 'cpu' as const };
  const reference = (sr: Float32Array, gt: Float32Array): LossResult =>
    mghfLossSync({ data: sr, dims }, { data: gt, dims }, { ...opts, layout: 'NHWC' });

  t.test(`MGHF-${variant} at ${S}²: the value is mghfLossSync's, and its parts are reported`, async (t) => {
    const { sr, gt } = pair(S);
    const ref = reference(sr, gt);
    const seen: TfLossInfo[] = [];
    const f = mghfLossTf({ ...opts, onParts: (info) => seen.push(info) });
    t.equal(f.last, undefined, 'no last result before the first call');
    const before = tf.memory().numTensors;
    const srT = tf.tensor4d(sr, dims as [number, number, number, number]);
    const gtT = tf.tensor4d(gt, dims as [number, number, number, number]);
    const loss = f(srT, gtT);
    t.same(loss.shape, [], 'a scalar');
    t.equal(loss.dtype, 'float32');
    t.ok(relClose(loss.dataSync()[0], ref.loss), `loss ${loss.dataSync()[0]} = mghfLossSync ${ref.loss}`);
    t.equal(seen.length, 1, 'onParts called once per call');
    t.equal(seen[0].loss, ref.loss, 'onParts gets the double-precision loss');
    t.same(seen[0].parts, ref.parts, 'and the parts');
    t.same(seen[0].skipped, ref.skipped, 'and the skipped parts');
    t.notOk('grad' in seen[0], 'but not the gradient');
    t.equal(f.last, seen[0], '.last is the same record');
    t.equal(f.options.layout, 'NHWC');
    if (variant === 'c') t.ok(ref.parts.lip > 0 && ref.parts.csc > 0, 'MGHF-c: the LIP and CSC parts are computed');
    tf.dispose([srT, gtT, loss]);
    t.equal(tf.memory().numTensors, before, 'no tensor left behind');

    // grad: false: the same value, forward only.
    const g = mghfLossTf({ ...opts, grad: false });
    const v = tf.tidy(() => g(tf.tensor4d(sr, dims as [number, number, number, number]), tf.tensor4d(gt, dims as [number, number, number, number])));
    t.ok(relClose(v.dataSync()[0], ref.loss), 'grad: false gives the same value');
    v.dispose();
  });

  t.test(`MGHF-${variant} at ${S}²: tf.grads gives mghfLossSync's gradient for sr and zero for gt`, async (t) => {
    const { sr, gt } = pair(S, 2);
    const ref = reference(sr, gt);
    const f = mghfLossTf(opts);
    const before = tf.memory().numTensors;
    const srT = tf.tensor4d(sr, dims as [number, number, number, number]);
    const gtT = tf.tensor4d(gt, dims as [number, number, number, number]);
    const [dsr, dgt] = tf.grads((a, b) => f(a as tf.Tensor4D, b as tf.Tensor4D))([srT, gtT]);
    t.same(dsr.shape, dims, 'dL/dsr has the shape of sr (NHWC)');
    const d = dsr.dataSync();
    const g = ref.grad.data;
    let maxDiff = 0;
    for (let i = 0; i < g.length; i++) maxDiff = Math.max(maxDiff, Math.abs(d[i] - g[i]));
    t.equal(maxDiff, 0, 'dL/dsr is exactly mghfLossSync\'s NHWC gradient');
    t.ok(g.some((v) => v !== 0), 'and that gradient is not zero');
    t.same(dgt.shape, dims);
    t.ok(dgt.dataSync().every((v) => v === 0), 'dL/dgt is zero (gt is a constant target)');

    // The incoming gradient scales it: d(2.5·L + L1)/dsr = 2.5·dL/dsr + sign(sr − gt)/n.
    const n = sr.length;
    const dsum = tf.grad((a) => tf.add(tf.mul(f(a as tf.Tensor4D, gtT), 2.5), tf.mean(tf.abs(tf.sub(a, gtT)))))(srT);
    const ds = dsum.dataSync();
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const expected = 2.5 * g[i] + Math.sign(sr[i] - gt[i]) / n;
      worst = Math.max(worst, Math.abs(ds[i] - expected) / (Math.abs(expected) + 1e-6));
    }
    t.ok(worst < 1e-4, `a weighted sum with an L1 term backpropagates through it (worst relative error ${worst})`);
    tf.dispose([srT, gtT, dsr, dgt, dsum]);
    t.equal(tf.memory().numTensors, before, 'no tensor left behind by the backward pass');
  });
}

t.test('a conv2d model trained with tf.train.adam: the kernel moves and MGHF-n falls', async (t) => {
  const S = 32;
  const { gt } = pair(S, 3);
  const gtT = tf.tensor4d(gt, [1, S, S, 3]);
  // The input is a dimmed copy of gt; the 3×3 kernel starts at 0.5 × identity.
  const input = tf.mul(gtT, 0.8) as tf.Tensor4D;
  const k0 = new Float32Array(81);
  for (let c = 0; c < 3; c++) k0[(4 * 3 + c) * 3 + c] = 0.5; // HWIO, the centre tap
  const kernel = tf.variable(tf.tensor4d(k0, [3, 3, 3, 3]));
  const f = mghfLossTf({ variant: 'n', weights, device: 'cpu' });
  const optimizer = tf.train.adam(0.01);
  const losses: number[] = [];
  let tensors = 0;
  for (let step = 0; step < 20; step++) {
    // The one line: the model's output and the target into the loss.
    const loss = optimizer.minimize(() => f(tf.conv2d(input, kernel as tf.Tensor4D, 1, 'same'), gtT), true) as tf.Scalar;
    losses.push(loss.dataSync()[0]);
    loss.dispose();
    if (step === 1) tensors = tf.memory().numTensors;
  }
  t.comment(`losses: ${losses.map((v) => v.toFixed(5)).join(' ')}`);
  t.equal(tf.memory().numTensors, tensors, 'no tensor leaks from step to step');
  const k = kernel.dataSync();
  t.ok(k.some((v, i) => Math.abs(v - k0[i]) > 1e-3), 'the kernel moved');
  const last = Math.min(...losses.slice(-3));
  t.ok(last < 0.5 * losses[0], `MGHF-n fell: ${losses[0]} -> ${last}`);
  t.ok(relClose(f.last!.loss, losses[losses.length - 1], 1e-6), '.last is the last step\'s loss');
  tf.dispose([gtT, input, kernel]);
  optimizer.dispose();
});

t.test('a tf.layers model trained by model.fit with MGHF-c as its loss', async (t) => {
  const S = 48;
  const { gt } = pair(S, 4);
  const gtT = tf.tensor4d(gt, [1, S, S, 3]);
  const input = tf.mul(gtT, 0.8);
  const model = tf.sequential({
    layers: [tf.layers.conv2d({ inputShape: [S, S, 3], filters: 3, kernelSize: 3, padding: 'same', kernelInitializer: 'zeros', biasInitializer: tf.initializers.constant({ value: 0.5 }) })],
  });
  const mghf = mghfLossTf({ variant: 'c', weights, device: 'cpu' });
  // tfjs losses take (yTrue, yPred); mghf takes (sr, gt).
  model.compile({ optimizer: tf.train.adam(0.02), loss: (yTrue: tf.Tensor, yPred: tf.Tensor) => mghf(yPred as tf.Tensor4D, yTrue as tf.Tensor4D) });
  const history = await model.fit(input, gtT, { epochs: 15, batchSize: 1, verbose: 0 });
  const losses = history.history.loss as number[];
  t.comment(`losses: ${losses.map((v) => v.toFixed(4)).join(' ')}`);
  t.ok(losses[losses.length - 1] < 0.5 * losses[0], `MGHF-c fell: ${losses[0]} -> ${losses[losses.length - 1]}`);
  t.ok(mghf.last && mghf.last.parts.lip > 0, 'the parts of the last step are there to log');
  tf.dispose([gtT, input]);
  model.dispose();
});

t.test('argument and option errors are typed', async (t) => {
  const f = mghfLossTf({ weights, device: 'cpu', variant: 'n' });
  const ok = tf.zeros([1, 8, 8, 3]) as tf.Tensor4D;
  const expectCode = (fn: () => unknown, code: string, re: RegExp, what: string) => t.ok(thrownMatches(fn, code, re), what);
  expectCode(() => f(new Float32Array(3) as unknown as tf.Tensor4D, ok), 'E_ARGUMENT', /tfjs tensor \[B, H, W, 3\].*Float32Array/, 'not a tensor');
  expectCode(() => f(tf.zeros([1, 3, 8, 8]) as tf.Tensor4D, ok), 'E_SHAPE', /\[B, H, W, 3\].*\[1,3,8,8\]/, 'NCHW shape');
  expectCode(() => f(tf.zeros([8, 8, 3]) as unknown as tf.Tensor4D, ok), 'E_SHAPE', /\[8,8,3\]/, 'rank 3');
  expectCode(() => f(ok, tf.zeros([1, 8, 8, 3], 'int32') as tf.Tensor4D), 'E_DTYPE', /float32.*gt.*int32/, 'int32 gt');
  const gone = tf.zeros([1, 8, 8, 3]) as tf.Tensor4D;
  gone.dispose();
  expectCode(() => f(gone, ok), 'E_ARGUMENT', /disposed/, 'a disposed tensor');
  expectCode(() => f(ok, tf.zeros([1, 16, 16, 3]) as tf.Tensor4D), 'E_SHAPE', /same dims/, 'mghf\'s own checks still apply');
  expectCode(() => f(tf.fill([1, 8, 8, 3], 255) as tf.Tensor4D, ok), 'E_RANGE', /255/, '0–255 data');
  expectCode(() => mghfLossTf({ layout: 'NCHW' as 'NHWC' }), 'E_OPTION', /NHWC.*transpose/, "layout 'NCHW'");
  expectCode(() => mghfLossTf({ onParts: 3 as unknown as () => void }), 'E_OPTION', /opts\.onParts/, 'onParts not a function');
  expectCode(() => mghfLossTf({ varaint: 'n' } as unknown as TfLossOptions), 'E_OPTION', /Unknown option 'varaint'.*variant/, 'unknown option');
  expectCode(() => mghfLossTf({ weights, variant: 'x' as Variant })(ok, ok), 'E_OPTION', /opts\.variant/, 'bad option value, at the first call');
  tf.disposeVariables();
});

t.test('loadTfjs: a missing, broken or wrong package is E_LOAD with the install command', async (t) => {
  t.same(TFJS_PACKAGES, ['@tensorflow/tfjs-core', '@tensorflow/tfjs']);
  t.equal(typeof loadTfjs().customGrad, 'function', 'the installed tfjs-core loads');
  const missing = () => loadTfjs(['@tensorflow/no-such-package', 'no-such-tfjs']);
  t.ok(thrownMatches(missing, 'E_LOAD', /mghf\/tfjs needs TensorFlow\.js/), 'none installed: E_LOAD');
  t.ok(thrownMatches(missing, 'E_LOAD', /npm install @tensorflow\/tfjs \(or @tensorflow\/tfjs-node; @tensorflow\/tfjs-core alone/), 'with the install command');
  t.ok(thrownMatches(missing, 'E_LOAD', /tried: @tensorflow\/no-such-package: not installed; no-such-tfjs: not installed/), 'and what was tried');
  const dir = mkdtempSync(join(tmpdir(), 'mghf-tfjs-load-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const broken = join(dir, 'broken.js');
  writeFileSync(broken, "require('some-dependency-that-is-missing');\n");
  const escaped = broken.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  t.ok(thrownMatches(() => loadTfjs([broken]), 'E_LOAD', new RegExp(`${escaped} is installed but failed to load: .*some-dependency-that-is-missing`)),
    'installed but failing: named, with the cause');
  t.ok(thrownMatches(() => loadTfjs(['node:path']), 'E_LOAD', /node:path loaded but has no customGrad/), 'not tfjs');
});

// ---------------------------------------------------------------------------------------------
// The package as a consumer sees it: a project with mghf's package.json and dist/ (the native
// build linked in), with and without tfjs. (test/package.test.ts does the same from the tarball.)

function consumer(dir: string, withTfjs: boolean): string {
  const pkg = join(dir, 'node_modules', 'mghf');
  mkdirSync(pkg, { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true });
  symlinkSync(join(ROOT, 'build'), join(pkg, 'build'));
  for (const dep of ['node-gyp-build', 'sharp']) symlinkSync(join(ROOT, 'node_modules', dep), join(dir, 'node_modules', dep));
  if (withTfjs) {
    mkdirSync(join(dir, 'node_modules', '@tensorflow'));
    for (const p of ['tfjs', 'tfjs-core', 'tfjs-backend-cpu', 'tfjs-layers', 'tfjs-converter', 'tfjs-data', 'tfjs-backend-webgl']) {
      symlinkSync(join(ROOT, 'node_modules', '@tensorflow', p), join(dir, 'node_modules', '@tensorflow', p));
    }
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
  return dir;
}

function node(cwd: string, args: string[]) {
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // no tap loaders
  delete env.NODE_PATH;
  const r = spawnSync(process.execPath, args, { cwd, env, encoding: 'utf8', timeout: 120_000 });
  const lines = (r.stdout ?? '').trim().split('\n');
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(lines[lines.length - 1]);
  } catch {
    json = undefined;
  }
  return { code: r.status, json, output: `${r.stdout}${r.stderr}` };
}

const dist = join(ROOT, 'dist', 'tfjs.js');
const distSkip = existsSync(dist) ? false : 'dist/tfjs.js does not exist yet (run npm run build)';

t.test('a consumer without tfjs: mghf works and loads no tfjs, mghf/tfjs is E_LOAD', { skip: distSkip }, async (t) => {
  const dir = consumer(mkdtempSync(join(tmpdir(), 'mghf-tfjs-none-')), false);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = node(dir, ['-e', `
    const out = {};
    const m = require('mghf');
    const dims = [1, 8, 8, 3], a = new Float32Array(192).fill(0.5);
    out.loss = m.mghfLossSync({ data: a, dims }, { data: a, dims }, { layout: 'NHWC', variant: 'n', weights: m.createWeights({ seed: 1, channels: 8 }) }).loss;
    out.tfjsLoaded = Object.keys(require.cache).filter((k) => k.includes('@tensorflow'));
    out.version = require('mghf/package.json').version;
    try { require('mghf/tfjs'); out.tfjs = 'loaded'; } catch (e) { out.tfjs = { name: e.name, code: e.code, message: e.message, isMghfError: e instanceof m.MghfError }; }
    try { require('mghf/dist/loss.js'); out.deep = 'loaded'; } catch (e) { out.deep = e.code; }
    console.log(JSON.stringify(out));
  `]);
  const out = r.json as { loss: number; tfjsLoaded: string[]; version: string; tfjs: { code: string; message: string; isMghfError: boolean }; deep: string } | undefined;
  if (!out) return t.fail(r.output);
  t.equal(out.loss, 0, "require('mghf') works (MGHF-n of a picture with itself)");
  t.same(out.tfjsLoaded, [], "require('mghf') loads nothing of tfjs");
  t.equal(out.version, require('../package.json').version, "require('mghf/package.json') is exported");
  t.equal(out.tfjs.code, 'E_LOAD', "require('mghf/tfjs') throws E_LOAD");
  t.ok(out.tfjs.isMghfError, 'an MghfError');
  t.match(out.tfjs.message, /npm install @tensorflow\/tfjs/, `saying what to install: ${out.tfjs.message}`);
  t.equal(out.deep, 'ERR_PACKAGE_PATH_NOT_EXPORTED', 'files outside "exports" are not importable');
});

t.test('a consumer with tfjs: mghf/tfjs by require and import, mghf by import, and the types resolve', { skip: distSkip }, async (t) => {
  const dir = consumer(mkdtempSync(join(tmpdir(), 'mghf-tfjs-with-')), true);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const script = (load: string) => `
    ${load}
    const out = {};
    (async () => {
      await tf.setBackend('cpu');
      const S = 16, dims = [1, S, S, 3];
      const gt = tf.add(tf.mul(tf.randomUniform(dims, 0, 1, 'float32', 5), 0.5), 0.25);
      const offset = tf.variable(tf.zeros(dims));
      const f = mghfLossTf({ variant: 'n', weights: createWeights({ seed: 1, channels: 8 }) });
      const opt = tf.train.adam(0.01);
      const losses = [];
      for (let i = 0; i < 5; i++) losses.push(opt.minimize(() => f(tf.add(tf.mul(gt, 0.5), offset), gt), true).dataSync()[0]);
      out.losses = losses;
      console.log(JSON.stringify(out));
    })().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack) })); });
  `;
  const cjs = node(dir, ['-e', script("const tf = require('@tensorflow/tfjs'); const { mghfLossTf } = require('mghf/tfjs'); const { createWeights } = require('mghf');")]);
  writeFileSync(join(dir, 'esm.mjs'), script("import * as tf from '@tensorflow/tfjs'; import { mghfLossTf, MghfError } from 'mghf/tfjs'; import { createWeights, mghfLoss } from 'mghf'; if (typeof mghfLoss !== 'function' || typeof MghfError !== 'function') throw new Error('named imports missing');"));
  const esm = node(dir, ['esm.mjs']);
  for (const [name, r] of [['require', cjs], ['import', esm]] as const) {
    const losses = (r.json as { losses?: number[] } | undefined)?.losses;
    t.ok(losses && losses.length === 5 && losses[4] < losses[0], `${name}: five Adam steps of an offset lower MGHF-n: ${losses?.join(' ') ?? r.output}`);
  }

  // TypeScript finds dist/tfjs.d.ts for 'mghf/tfjs' under every module resolution ("exports" for
  // node16/bundler, typesVersions for the older node10), and dist/index.d.ts for 'mghf'.
  const source = `
import * as tf from '@tensorflow/tfjs';
import { mghfLossTf, type MghfTfLoss, type TfLossInfo } from 'mghf/tfjs';
import { createWeights, type LossParts } from 'mghf';
const f: MghfTfLoss = mghfLossTf({ variant: 'c', weights: createWeights({ seed: 1 }), onParts: (info: TfLossInfo) => console.log(info.loss) });
export const loss: tf.Scalar = f(tf.zeros([1, 32, 32, 3]) as tf.Tensor4D, tf.zeros([1, 32, 32, 3]) as tf.Tensor4D);
export const parts: LossParts | undefined = f.last?.parts;
// @ts-expect-error layout is NHWC only
mghfLossTf({ layout: 'NCHW' });
`;
  writeFileSync(join(dir, 'use.ts'), source);
  const settings: [string, ts.CompilerOptions][] = [
    ['node10', { module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10 }],
    ['node16', { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 }],
    ['bundler', { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler }],
  ];
  for (const [name, options] of settings) {
    const program = ts.createProgram([join(dir, 'use.ts')], { ...options, target: ts.ScriptTarget.ES2022, strict: true, noEmit: true, skipLibCheck: true, types: [], lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'] });
    const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName.endsWith('use.ts'));
    t.same(diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')), [], `moduleResolution ${name}: use.ts type-checks`);
    const resolved = ts.resolveModuleName('mghf/tfjs', join(dir, 'use.ts'), options, ts.sys).resolvedModule?.resolvedFileName;
    t.match(resolved, /node_modules\/mghf\/dist\/tfjs\.d\.ts$/, `moduleResolution ${name}: 'mghf/tfjs' is dist/tfjs.d.ts`);
    const main = ts.resolveModuleName('mghf', join(dir, 'use.ts'), options, ts.sys).resolvedModule?.resolvedFileName;
    t.match(main, /node_modules\/mghf\/dist\/index\.d\.ts$/, `moduleResolution ${name}: 'mghf' is dist/index.d.ts`);
  }
});
