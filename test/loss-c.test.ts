// MGHF-c (SPEC §4–7) through the public API: golden values with and without the reference's
// channel selection, the parts a weight of 0 skips, the details and timings on request, and every
// typed option error.
import t, { Test } from 'tap';
import {
  LOSS_OPTION_NAMES,
  Tensor,
  createWeights,
  dfeFeaturesSync,
  mghfLoss,
  mghfLossSync,
  type LossResult,
  type PartName,
} from '../lib/index';
import { FixtureCase, fixtureNames, imagePair, loadFixture, relativeL2, withinValueTolerance } from './helpers/fixtures';

// A narrow DFE (N = 8) keeps the cases that are not golden fixtures fast.
const weights = createWeights({ seed: 3, channels: 8 });
const PARTS: PartName[] = ['n', 'mse', 'corr', 'gram', 'csc', 'lip'];

/** SPEC §8 against a fixture: values, skipped parts, importance, selection, gradient. */
function checkAgainstFixture(t: Test, r: LossResult, f: FixtureCase): void {
  t.ok(withinValueTolerance(r.loss, f.expected.loss), `loss ${r.loss} vs ${f.expected.loss}`);
  for (const [part, ref] of Object.entries(f.expected.parts)) {
    const v = r.parts[part as PartName];
    t.ok(withinValueTolerance(v, ref), `part ${part} ${v} vs ${ref}`);
  }
  t.same([...r.skipped].sort(), [...f.expected.skipped].sort(), 'skipped parts');
  for (const part of f.expected.skipped) t.equal(r.parts[part as PartName], 0, `skipped part ${part} is 0`);
  if (f.expected.importance === null) {
    t.equal(r.importance, undefined, 'no importance without the CSC term');
    t.equal(r.selected, undefined, 'no selection without the CSC term');
  } else {
    const [B, , H, W] = f.dims;
    t.equal(r.importance?.length, B, 'importance has B rows');
    let worst = 0;
    f.expected.importance.forEach((row, b) => {
      t.equal(r.importance?.[b]?.length, row.length, `importance row ${b} has N entries`);
      // A missing entry gives NaN, which Math.max keeps and the check below rejects.
      row.forEach((ref, j) => (worst = Math.max(worst, Math.abs((r.importance?.[b]?.[j] ?? NaN) - ref))));
    });
    // Our float32 features differ from the reference's in the last bits, so a value lying on a
    // histogram bin edge may land in the neighbouring bin: that moves an importance by about
    // 1/(H·W) (SPEC §8), far more than 1e-6. The exact computation is checked on our own features
    // in 'importance is the histogram entropy of SPEC §4'.
    t.ok(worst <= 1 / (H * W), `importance max abs error ${worst} ≤ 1/(H·W) = ${1 / (H * W)}`);
    // Every fixture has a top-M gap of at least 4/(H·W), so the selection must be the same (SPEC §8).
    t.ok(f.expected.topMGap!.every((gap) => gap >= 4 / (H * W)), 'the fixture has no near tie');
    t.same(r.selected, f.expected.selected, 'selected channels');
  }
  t.same(r.grad.dims, f.dims, 'gradient dims');
  const err = relativeL2(r.grad.data, f.grad);
  t.ok(err <= 1e-3, `gradient relative error ${err}`);
}

for (const name of fixtureNames('c-')) {
  t.test(`golden fixture ${name}`, async (t) => {
    const f = loadFixture(name);
    t.equal(f.nearTie, false, 'nearTie is false');
    const opts = { ...f.options, weights: f.weights, returnDetails: true };
    t.test('own selection', async (t) => checkAgainstFixture(t, await mghfLoss(f.sr, f.gt, opts), f));
    if (f.expected.selected !== null) {
      const selected = f.expected.selected;
      t.test('with selected: expected.selected', async (t) =>
        checkAgainstFixture(t, await mghfLoss(f.sr, f.gt, { ...opts, selected }), f));
    }
  });
}

/** SPEC §4: normalised 256-bin histogram entropy of one map, binned in float32 as the SPEC says. */
function entropy(x: Float32Array): number {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of x) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (!(hi > lo)) return 1;
  const range = Math.fround(hi - lo);
  const counts = new Float64Array(256);
  for (const v of x) counts[Math.min(255, Math.floor(256 * Math.fround(Math.fround(v - lo) / range)))]++;
  let h = 0;
  for (const c of counts) if (c > 0) h -= (c / x.length) * Math.log(c / x.length);
  return h / Math.log(256);
}

t.test('importance is the histogram entropy of SPEC §4 on the DFE features', async (t) => {
  for (const name of ['c-default', 'c-options']) {
    const f = loadFixture(name);
    const r = await mghfLoss(f.sr, f.gt, { ...f.options, weights: f.weights, returnDetails: true });
    const [S, G] = [f.sr, f.gt].map((x) => dfeFeaturesSync(x, { weights: f.weights }));
    const [B, N, H, W] = S.dims;
    const map = (F: Tensor, b: number, j: number) => F.data.subarray((b * N + j) * H * W, (b * N + j + 1) * H * W);
    let worst = 0;
    for (let b = 0; b < B; b++)
      for (let j = 0; j < N; j++) {
        const ref = (1 - entropy(map(G, b, j)) + (1 - entropy(map(S, b, j)))) / 2;
        worst = Math.max(worst, Math.abs((r.importance?.[b]?.[j] ?? NaN) - ref));
      }
    t.ok(worst <= 1e-12, `${name}: importance max abs error ${worst} against dfeFeatures`);
  }
});

t.test("'c' is the default variant", async (t) => {
  const { sr, gt } = imagePair([1, 3, 48, 48], 4);
  const r = await mghfLoss(sr, gt, { weights });
  t.ok(r.parts.lip > 0, `parts.lip ${r.parts.lip}`);
  t.ok(r.parts.csc > 0 && r.parts.n > 0, 'n and csc computed');
  t.same(r.skipped, [], 'nothing skipped');
  const n = await mghfLoss(sr, gt, { weights, variant: 'n' });
  t.same([...n.skipped].sort(), ['corr', 'csc', 'gram', 'lip', 'mse'], "variant 'n' skips the other five");
  t.equal(n.loss, n.parts.n, "variant 'n': the loss is L_n, no Γ1");
});

t.test('async and sync agree exactly', async (t) => {
  const f = loadFixture('c-tiny');
  const opts = { ...f.options, weights: f.weights, returnDetails: true };
  const a = await mghfLoss(f.sr, f.gt, opts);
  const s = mghfLossSync(f.sr, f.gt, opts);
  t.equal(a.loss, s.loss);
  t.same(a.parts, s.parts);
  t.same(a.importance, s.importance);
  t.same(a.selected, s.selected);
  t.same(Array.from(a.grad.data), Array.from(s.grad.data));
});

t.test('a weight of 0 skips its part, reported as 0; the total is the weighted sum', async (t) => {
  // 48×48: four patches, so L_lip is well away from 0 (one patch leaves only the −10/τ negative).
  const { sr, gt } = imagePair([2, 3, 48, 48], 8);
  const cases: [Record<string, number>, PartName[]][] = [
    [{ gamma1: 0 }, ['n']],
    [{ gamma2: 0 }, ['mse', 'corr', 'gram', 'csc']],
    [{ gamma3: 0 }, ['lip']],
    [{ beta2: 0 }, ['corr']],
  ];
  for (const [gammas, skipped] of cases) {
    const what = JSON.stringify(gammas);
    const r = mghfLossSync(sr, gt, { weights, ...gammas });
    t.same([...r.skipped].sort(), [...skipped].sort(), `${what}: skipped`);
    for (const part of PARTS) {
      if (skipped.includes(part)) t.equal(r.parts[part], 0, `${what}: ${part} is 0`);
      else t.ok(r.parts[part] > 0, `${what}: ${part} computed (${r.parts[part]})`);
    }
    const o = { gamma1: 2, gamma2: 1.5, gamma3: 1e-3, beta1: 0.1333, beta2: 1, beta3: 0.1333, ...gammas };
    const csc = o.beta1 * r.parts.mse + o.beta2 * r.parts.corr + o.beta3 * r.parts.gram;
    t.ok(withinValueTolerance(r.parts.csc, csc), `${what}: csc ${r.parts.csc} = β·(mse, corr, gram) ${csc}`);
    const total = o.gamma1 * r.parts.n + o.gamma2 * r.parts.csc + o.gamma3 * r.parts.lip;
    t.ok(withinValueTolerance(r.loss, total), `${what}: loss ${r.loss} = Γ·parts ${total}`);
  }
});

t.test('details and timings only on request', async (t) => {
  const { sr, gt } = imagePair([2, 3, 32, 32], 6);
  const plain = await mghfLoss(sr, gt, { weights, M: 3 });
  t.equal(plain.importance, undefined);
  t.equal(plain.selected, undefined);
  t.equal(plain.timings, undefined);
  const r = await mghfLoss(sr, gt, { weights, M: 3, returnDetails: true, profile: true });
  t.equal(r.loss, plain.loss, 'details do not change the loss');
  t.equal(r.importance?.length, 2);
  t.ok(r.importance?.every((row) => row.length === 8 && row.every((v) => v >= 0 && v <= 1)), 'importance [B][N] in [0, 1]');
  t.equal(r.selected?.length, 2);
  t.ok(r.selected?.every((row) => row.length === 3 && row.every((v, i) => i === 0 || v > row[i - 1])), 'selected [B][M] ascending');
  t.ok(r.timings && Object.values(r.timings).length > 0 && Object.values(r.timings).every((ms) => ms >= 0), 'timings in ms');
  const all = await mghfLoss(sr, gt, { weights, M: 100, returnDetails: true });
  t.same(all.selected, [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7]], 'M above N keeps all N channels');
  const flat = await mghfLoss(sr, gt, { weights, M: 3, selected: Int32Array.from(r.selected!.flat()) });
  t.equal(flat.loss, r.loss, 'a flat Int32Array selection equals the rows it came from');
});

t.test('bad MGHF-c options are typed E_OPTION errors naming the option', async (t) => {
  const { sr, gt } = imagePair([1, 3, 32, 32]);
  const bad: [string, unknown, RegExp?][] = [
    ['gamma1', -1, /a finite number from 0 to 1000000/],
    ['gamma2', NaN],
    ['gamma3', Infinity],
    ['beta1', -0.5, /from 0 to 1000000/],
    ['beta2', '1'],
    ['beta3', -1e-9],
    ['M', 0, /an integer from 1 to 4096/],
    ['M', -4],
    ['M', 2.5],
    ['alpha', -1, /from 0 to 1000/],
    ['alpha', NaN],
    ['gamma', Infinity, /finite number/],
    ['gamma', '2'],
    ['patch', 0, /an integer from 1 to 256/],
    ['patch', 16.5],
    ['stride', 0],
    ['pmax', -1],
    ['tau', 0, /from 0.001 to 1000/],
    ['tau', -0.07],
    ['epsOt', 0, /from 0.001 to 1000/],
    ['epsOt', Infinity],
    ['Q', -1, /from 0 to 1000000/],
    ['Q', NaN],
    ['iters', 0, /an integer from 1 to 10000/],
    ['iters', 1.5],
    ['sinkhornGrad', 1, /boolean/],
    ['returnDetails', 'yes', /boolean/],
    ['profile', null, /boolean/],
  ];
  for (const [name, value, pattern] of bad) {
    const what = `${name}: ${String(value)}`;
    for (const variant of ['c', 'n'] as const) {
      await t.rejects(
        mghfLoss(sr, gt, { weights, variant, [name]: value }),
        { name: 'MghfError', code: 'E_OPTION', argument: `opts.${name}`, message: new RegExp(`for opts\\.${name} but received`) },
        `${what} (variant ${variant})`,
      );
    }
    if (pattern) await t.rejects(mghfLoss(sr, gt, { weights, [name]: value }), { message: pattern }, `${what}: says what was expected`);
  }
  t.throws(() => mghfLossSync(sr, gt, { weights, M: 0 }), { code: 'E_OPTION', argument: 'opts.M' }, 'sync call throws too');
});

t.test('a bad selection is an E_OPTION error naming opts.selected', async (t) => {
  const { sr, gt } = imagePair([2, 3, 32, 32]);
  const bad: [string, number, unknown, RegExp][] = [
    ['not an array', 4, 'x', /2 row\(s\) of 4 channel indices/],
    ['one row for B = 2', 4, [[0, 1, 2, 3]], /2 row\(s\) of 4/],
    ['rows of 3 for M = 4', 4, [[0, 1, 2], [0, 1, 2]], /2 row\(s\) of 4/],
    ['rows of 4 for M = 100 capped at N = 8', 100, [[0, 1, 2, 3], [0, 1, 2, 3]], /2 row\(s\) of 8/],
    ['flat of the wrong length', 4, [0, 1, 2, 3, 0, 1, 2], /2 row\(s\) of 4/],
    ['a repeated index', 4, [[0, 1, 2, 3], [0, 2, 2, 3]], /opts\.selected\[1\]\[2\] but received 2/],
    ['descending', 4, [[3, 2, 1, 0], [0, 1, 2, 3]], /opts\.selected\[0\]\[1\]/],
    ['an index ≥ N', 4, [[0, 1, 2, 8], [0, 1, 2, 3]], /in \[3, 8\).*opts\.selected\[0\]\[3\] but received 8/],
    ['a negative index', 4, [[-1, 1, 2, 3], [0, 1, 2, 3]], /opts\.selected\[0\]\[0\] but received -1/],
    ['a fractional index', 4, [[0, 1.5, 2, 3], [0, 1, 2, 3]], /opts\.selected\[0\]\[1\] but received 1\.5/],
    ['a flat Int32Array with a descending row', 4, Int32Array.from([0, 1, 2, 3, 4, 3, 5, 6]), /opts\.selected\[5\] but received 3/],
  ];
  for (const [what, M, selected, pattern] of bad) {
    await t.rejects(
      mghfLoss(sr, gt, { weights, M, selected: selected as never }),
      { name: 'MghfError', code: 'E_OPTION', argument: 'opts.selected', message: pattern },
      what,
    );
  }
});

t.test('with the LIP term on, an image under the patch size is E_TOO_SMALL naming it', async (t) => {
  const small = imagePair([1, 3, 20, 40]);
  await t.rejects(
    mghfLoss(small.sr, small.gt, { weights }),
    {
      name: 'MghfError',
      code: 'E_TOO_SMALL',
      argument: 'sr',
      message: /^Expected sr to be at least 32×32 pixels \(the LIP patch size, opts\.patch\) but received 20×40 \(H×W\)/,
    },
    'default patch 32',
  );
  const mid = imagePair([1, 3, 40, 48]);
  await t.rejects(mghfLoss(mid.sr, mid.gt, { weights, patch: 48 }), { code: 'E_TOO_SMALL', message: /at least 48×48 pixels.*40×48/ }, 'patch 48');
});

t.test('an image under the patch size is fine without the LIP term', async (t) => {
  const small = imagePair([1, 3, 20, 40]);
  const noLip = await mghfLoss(small.sr, small.gt, { weights, gamma3: 0 });
  t.ok(noLip.skipped.includes('lip') && noLip.loss > 0, 'gamma3: 0');
  const smallPatch = await mghfLoss(small.sr, small.gt, { weights, patch: 16, stride: 8 });
  t.ok(smallPatch.parts.lip > 0, 'patch 16');
  const n = await mghfLoss(small.sr, small.gt, { weights, variant: 'n' });
  t.ok(n.loss > 0, "variant 'n'");
});

t.test('unknown option names are rejected with the list of valid ones', async (t) => {
  const { sr, gt } = imagePair([1, 3, 32, 32]);
  await t.rejects(
    mghfLoss(sr, gt, { weights, gama3: 0 } as never),
    { code: 'E_OPTION', argument: 'opts.gama3', message: /Unknown option 'gama3'.*did you mean 'gamma3'.*valid options are: .*\bprofile\b/ },
    'a typo',
  );
  let message = '';
  try {
    mghfLossSync(sr, gt, { weights, sinkhorn: false } as never);
  } catch (err) {
    message = (err as Error).message;
  }
  for (const name of LOSS_OPTION_NAMES) t.match(message, new RegExp(`\\b${name}\\b`), `the list names ${name}`);
});

t.test('LOSS_OPTION_NAMES lists exactly the options of SPEC §7 and the API', async (t) => {
  const spec = ['variant', 'gamma1', 'gamma2', 'gamma3', 'beta1', 'beta2', 'beta3', 'M', 'alpha', 'gamma', 'selected',
    'patch', 'stride', 'pmax', 'tau', 'epsOt', 'Q', 'iters', 'sinkhornGrad', 'inputRange'];
  const api = ['weights', 'device', 'layout', 'returnDetails', 'profile', 'signal', 'grad'];
  t.same([...LOSS_OPTION_NAMES].sort(), [...spec, ...api].sort());
});
