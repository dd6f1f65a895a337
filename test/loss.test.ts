// MGHF-n through the public API: golden values, layouts, ranges, async/sync,
// concurrency, a finite-difference check and every typed error.
import t, { Test } from 'tap';
import {
  MghfError,
  Tensor,
  createWeights,
  dfeFeatures,
  dfeFeaturesSync,
  mghfLoss,
  mghfLossSync,
  backendInfo,
  defaultWeights,
  type PartName,
} from '../lib/index';
import { fixtureNames, imagePair, loadFixture, relativeL2, withinValueTolerance } from './helpers/fixtures';

const weights = createWeights({ seed: 3 });

for (const name of fixtureNames('n-')) {
  t.test(`golden fixture ${name}`, async (t) => {
    const f = loadFixture(name);
    const r = await mghfLoss(f.sr, f.gt, { ...f.options, weights: f.weights });
    t.ok(withinValueTolerance(r.loss, f.expected.loss), `loss ${r.loss} vs ${f.expected.loss}`);
    for (const [part, ref] of Object.entries(f.expected.parts)) {
      const v = r.parts[part as PartName];
      t.ok(withinValueTolerance(v, ref), `part ${part} ${v} vs ${ref}`);
    }
    t.same([...r.skipped].sort(), [...f.expected.skipped].sort(), 'skipped parts');
    t.same(r.grad.dims, f.dims, 'gradient dims');
    const err = relativeL2(r.grad.data, f.grad);
    t.ok(err <= 1e-3, `gradient relative error ${err}`);
  });
}

t.test('backendInfo names the CPU backend and its threads', async (t) => {
  const info = backendInfo();
  t.equal(info.backend, 'cpu');
  t.ok(info.threads >= 1);
  t.match(info.isa, /^(generic|avx2|avx512)$/);
  if (!info.cuda.available) t.match(info.cuda.reason, /\w/, 'a reason CUDA is not used');
  if (!info.builtWithCuda) t.match(info.cuda.reason, /built without CUDA/);
  t.equal(info.backend, info.cuda.available ? 'cuda' : 'cpu', "'auto' picks CUDA exactly when it is usable");
});

t.test('async and sync agree exactly', async (t) => {
  const { sr, gt } = imagePair([2, 3, 20, 26], 5);
  const a = await mghfLoss(sr, gt, { variant: 'n', weights });
  const s = mghfLossSync(sr, gt, { variant: 'n', weights });
  t.equal(a.loss, s.loss);
  t.same(Array.from(a.grad.data), Array.from(s.grad.data));
});

t.test('identical images give zero loss and zero gradient', async (t) => {
  const { gt } = imagePair([1, 3, 9, 11], 2);
  const r = await mghfLoss(gt, gt, { variant: 'n', weights });
  t.equal(r.loss, 0);
  t.ok(r.grad.data.every((v) => v === 0));
});

t.test('NHWC input gives the NCHW loss and a transposed gradient', async (t) => {
  const { sr, gt } = imagePair([2, 3, 10, 13], 7);
  const toNhwc = (x: Tensor) => {
    const [b, c, h, w] = x.dims;
    const out = new Float32Array(x.size);
    for (let n = 0; n < b; n++)
      for (let ch = 0; ch < c; ch++)
        for (let y = 0; y < h; y++)
          for (let xx = 0; xx < w; xx++) out[((n * h + y) * w + xx) * c + ch] = x.data[((n * c + ch) * h + y) * w + xx];
    return new Tensor(out, [b, h, w, c]);
  };
  const a = mghfLossSync(sr, gt, { variant: 'n', weights });
  const b = mghfLossSync(toNhwc(sr), toNhwc(gt), { variant: 'n', weights, layout: 'NHWC' });
  t.equal(b.loss, a.loss);
  t.same(b.grad.dims, [2, 10, 13, 3]);
  t.same(Array.from(b.grad.data), Array.from(toNhwc(a.grad).data));
});

t.test("inputRange 'symmetric' maps [-1,1] onto [0,1] and halves the gradient", async (t) => {
  const { sr, gt } = imagePair([1, 3, 12, 12], 9);
  const sym = (x: Tensor) => new Tensor(x.data.map((v) => 2 * v - 1), x.dims);
  const u = mghfLossSync(sr, gt, { variant: 'n', weights });
  const s = mghfLossSync(sym(sr), sym(gt), { variant: 'n', weights, inputRange: 'symmetric' });
  t.ok(withinValueTolerance(s.loss, u.loss), `${s.loss} vs ${u.loss}`);
  const half = u.grad.data.map((v) => v / 2);
  t.ok(relativeL2(s.grad.data, half) < 1e-5);
});

t.test('the loss is the mean squared difference of dfeFeatures', async (t) => {
  const { sr, gt } = imagePair([2, 3, 8, 9], 4);
  const [S, G] = await Promise.all([dfeFeatures(sr, { weights }), dfeFeatures(gt, { weights })]);
  t.same(S.dims, [2, 128, 8, 9]);
  t.same(Array.from(dfeFeaturesSync(sr, { weights }).data), Array.from(S.data), 'async and sync features agree');
  let sum = 0;
  for (let i = 0; i < S.size; i++) sum += (S.data[i] - G.data[i]) ** 2;
  const r = mghfLossSync(sr, gt, { variant: 'n', weights });
  t.ok(withinValueTolerance(r.loss, sum / S.size), `${r.loss} vs ${sum / S.size}`);
});

t.test('gradient matches a central finite difference along a random direction', async (t) => {
  const { sr, gt } = imagePair([1, 3, 16, 16], 11);
  const r = mghfLossSync(sr, gt, { variant: 'n', weights });
  const v = new Float32Array(sr.size).map((_, i) => Math.sin(i * 12.9898) > 0 ? 1 : -1);
  const h = 1e-2;
  const shifted = (s: number) => new Tensor(sr.data.map((x, i) => x + s * h * v[i]), sr.dims);
  const fd = (mghfLossSync(shifted(1), gt, { variant: 'n', weights }).loss - mghfLossSync(shifted(-1), gt, { variant: 'n', weights }).loss) / (2 * h);
  let an = 0;
  for (let i = 0; i < v.length; i++) an += r.grad.data[i] * v[i];
  t.ok(Math.abs(fd - an) <= 2e-2 * Math.abs(an), `finite difference ${fd} vs analytic ${an}`);
});

t.test('many concurrent calls each return their own correct result', async (t) => {
  const cases = Array.from({ length: 12 }, (_, i) => imagePair([1 + (i % 2), 3, 10 + i, 12], 100 + i));
  const expected = cases.map(({ sr, gt }) => mghfLossSync(sr, gt, { variant: 'n', weights }));
  const got = await Promise.all(cases.map(({ sr, gt }) => mghfLoss(sr, gt, { variant: 'n', weights })));
  got.forEach((r, i) => {
    t.equal(r.loss, expected[i].loss, `call ${i} loss`);
    t.same(Array.from(r.grad.data), Array.from(expected[i].grad.data), `call ${i} gradient`);
  });
});

t.test('the caller may mutate its arrays while a call runs', async (t) => {
  const { sr, gt } = imagePair([1, 3, 24, 24], 13);
  const expected = mghfLossSync(sr, gt, { variant: 'n', weights });
  const p = mghfLoss(sr, gt, { variant: 'n', weights });
  sr.data.fill(0);
  t.equal((await p).loss, expected.loss);
});

t.test('the bundled pretrained weights are used when none are given', async (t) => {
  const { sr, gt } = imagePair([1, 3, 8, 8], 3);
  const w = defaultWeights();
  t.same([w.channels, w.blocks, w.expand], [128, 1, 2], 'the SPEC default architecture');
  t.match(w.metadata.trainedOn, /imagenette/i, 'trainedOn says what it was trained on');
  const r = await mghfLoss(sr, gt, { variant: 'n' });
  const ref = mghfLossSync(sr, gt, { variant: 'n', weights: w });
  t.equal(r.loss, ref.loss);
  const untrained = mghfLossSync(sr, gt, { variant: 'n', weights: createWeights({ seed: 0 }) });
  t.not(r.loss, untrained.loss, 'not the untrained initialisation');
});

async function rejectsWith(t: Test, p: () => Promise<unknown>, code: string, pattern: RegExp, what: string) {
  let caught: unknown;
  try {
    await p();
  } catch (err) {
    caught = err;
  }
  t.ok(caught instanceof MghfError, `${what}: rejects with an MghfError`);
  t.equal((caught as MghfError)?.code, code, `${what}: code`);
  t.match((caught as MghfError)?.message, pattern, `${what}: message names the argument`);
}

t.test('bad input is a typed error naming the argument, never a crash', async (t) => {
  const { sr, gt } = imagePair([1, 3, 8, 8]);
  const n = { variant: 'n' as const, weights };
  await rejectsWith(t, () => mghfLoss(sr, imagePair([1, 3, 8, 9]).gt, n), 'E_SHAPE', /gt.*same dims/, 'mismatched shapes');
  await rejectsWith(t, () => mghfLoss(new Tensor(new Float32Array(64 * 4), [1, 4, 8, 8]), gt, n), 'E_SHAPE', /sr/, 'four channels');
  await rejectsWith(t, () => mghfLoss({ type: 'float64', data: new Float64Array(192), dims: [1, 3, 8, 8] }, gt, n), 'E_DTYPE', /sr/, 'float64 data');
  await rejectsWith(t, () => mghfLoss({ type: 'float32', data: new Float32Array(100), dims: [1, 3, 8, 8] }, gt, n), 'E_SHAPE', /sr/, 'length ≠ ∏dims');
  const nan = new Float32Array(sr.data);
  nan[17] = NaN;
  await rejectsWith(t, () => mghfLoss(new Tensor(nan, sr.dims), gt, n), 'E_NONFINITE', /sr/, 'NaN');
  const inf = new Float32Array(gt.data);
  inf[3] = Infinity;
  await rejectsWith(t, () => mghfLoss(sr, new Tensor(inf, gt.dims), n), 'E_NONFINITE', /gt/, 'Infinity');
  const tiny = imagePair([1, 3, 1, 5]);
  await rejectsWith(t, () => mghfLoss(tiny.sr, tiny.gt, n), 'E_TOO_SMALL', /sr.*2×2/, 'a 1×5 image');
  await rejectsWith(t, () => mghfLoss(sr, gt, { variant: 'n', weights: createWeights({ channels: 8 }) as never, gama1: 1 } as never), 'E_OPTION', /gama1.*gamma1/, 'option typo');
  const broken = createWeights({ seed: 1 });
  broken.tensors['inn.0.mix.weight'] = new Float32Array(10);
  await rejectsWith(t, () => mghfLoss(sr, gt, { variant: 'n', weights: broken }), 'E_WEIGHTS', /inn\.0\.mix\.weight/, 'weights of the wrong shape');
  if (!backendInfo().cuda.available) {
    const reason = backendInfo().cuda.reason as string;
    await rejectsWith(t, () => mghfLoss(sr, gt, { weights, device: 'cuda:0' }), 'E_UNSUPPORTED', /opts\.device 'cuda:0' is not available/, 'device cuda:0 (default variant)');
    await rejectsWith(t, () => mghfLoss(sr, gt, { ...n, device: 'cuda' }), 'E_UNSUPPORTED', new RegExp(reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'device cuda, with the reason');
  }
  await rejectsWith(t, () => mghfLoss(sr, gt, { ...n, device: 'gpu' as never }), 'E_OPTION', /opts\.device/, 'unknown device');
  t.throws(() => mghfLossSync(sr, gt, { ...n, layout: 'HWC' as never }), { code: 'E_OPTION' }, 'sync call throws too');
  await rejectsWith(t, () => dfeFeatures(new Tensor(new Float32Array(3), [1, 3, 1, 1]), { weights }), 'E_TOO_SMALL', /x/, 'features of a 1×1 image');
});

t.test('other architectures run and differ from the default', async (t) => {
  const { sr, gt } = imagePair([1, 3, 12, 10], 21);
  const small = createWeights({ seed: 5, channels: 16, blocks: 2, expand: 3 });
  const r = await mghfLoss(sr, gt, { variant: 'n', weights: small });
  t.ok(r.loss > 0 && Number.isFinite(r.loss));
  const F = await dfeFeatures(sr, { weights: small });
  t.same(F.dims, [1, 16, 12, 10]);
});
