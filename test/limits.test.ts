// Bounded work (lib/limits.ts): the documented range of every numeric option, the joint limit on
// the reweighting, the up-front estimate of work and memory (estimateCost, E_LIMIT), and
// createWeights refusing sizes it cannot sensibly allocate.

import t, { type Test } from 'tap';
import { MghfError } from '../lib/errors';
import { MAX_FLOPS, OPTION_BOUNDS, checkCost, featuresCost, lossCost, memoryLimit, type CostInput } from '../lib/limits';
import { estimateCost, mghfLoss, mghfLossSync } from '../lib/loss';
import { createHeadWeights } from '../lib/checkpoint';
import { createWeights } from '../lib/weights';
import { imagePair } from './helpers/fixtures';

const weights = createWeights({ seed: 3, channels: 8 });

/** ms taken by fn, which must throw an MghfError of `code`; returns the error. */
// The rejections are timed only to show no work was started: a few ms on a quiet machine against
// minutes to hours of work (or gigabytes) had the call run; the 1 s bound leaves room for a machine
// shared with other builds.
function timedThrow(t0: Test, fn: () => unknown, code: string, pattern: RegExp, what: string): number {
  const start = process.hrtime.bigint();
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t0.type(caught, MghfError, `${what}: an MghfError`);
  t0.equal((caught as MghfError)?.code, code, `${what}: ${code}`);
  t0.match((caught as Error)?.message, pattern, `${what}: message`);
  return ms;
}

t.test('each numeric option is rejected just past its bounds and accepted at them', async (t) => {
  const dims = [1, 3, 64, 64];
  for (const [name, b] of Object.entries(OPTION_BOUNDS)) {
    const step = b.integer ? 1 : Math.max(Math.abs(b.max) * 1e-6, 1e-9);
    const low = b.integer ? b.min - 1 : b.min - Math.max(Math.abs(b.min) * 1e-6, 1e-9);
    for (const value of [b.max + step, low]) {
      t.throws(
        () => estimateCost(dims, { weights, [name]: value }),
        { code: 'E_OPTION', argument: `opts.${name}`, message: new RegExp(`from ${b.min} to ${b.max} for opts\\.${name}`) },
        `${name} = ${value} rejected`,
      );
    }
    // alpha and gamma at their extremes break their joint limit; test them at the other's default 0.
    const other = name === 'alpha' ? { gamma: 0 } : name === 'gamma' ? { alpha: 0 } : {};
    for (const value of [b.min, b.max]) {
      t.doesNotThrow(() => estimateCost(dims, { weights, ...other, [name]: value }), `${name} = ${value} accepted`);
    }
    t.ok(b.why.length > 20, `${name} says why (${b.why})`);
  }
  t.throws(() => estimateCost(dims, { weights, iters: 2.5 }), { code: 'E_OPTION', message: /an integer from 1 to 10000/ });
  t.throws(() => estimateCost(dims, { weights, tau: NaN }), { code: 'E_OPTION' });
});

t.test('(1 + alpha)^|gamma| is at most 1e4', async (t) => {
  t.doesNotThrow(() => estimateCost([1, 3, 64, 64], { weights, alpha: 1, gamma: 13 }), '2^13 = 8192');
  t.doesNotThrow(() => estimateCost([1, 3, 64, 64], { weights, alpha: 99, gamma: -2 }), '100^2 = 1e4');
  t.throws(() => estimateCost([1, 3, 64, 64], { weights, alpha: 1, gamma: 14 }), { code: 'E_OPTION', argument: 'opts.gamma', message: /\(1 \+ 1\)\^14 = 1\.64e\+4.*float32/ });
  t.throws(() => estimateCost([1, 3, 64, 64], { weights, alpha: 1000, gamma: -2 }), { code: 'E_OPTION', message: /lower alpha or \|gamma\|/ });
});

t.test("the issue's runaway calls are rejected at once", async (t) => {
  const { sr, gt } = imagePair([1, 3, 64, 64]);
  const a = timedThrow(t, () => mghfLossSync(sr, gt, { weights, patch: 1, stride: 1, pmax: 1e9 }), 'E_OPTION', /opts\.pmax/, 'pmax 1e9');
  const b = timedThrow(t, () => mghfLossSync(sr, gt, { weights, iters: 1e6 }), 'E_OPTION', /opts\.iters/, 'iters 1e6');
  await t.rejects(mghfLoss(sr, gt, { weights, iters: 1e7 }), { code: 'E_OPTION' }, 'async iters 1e7');
  t.ok(a < 1000 && b < 1000, `rejected in ${a.toFixed(1)} and ${b.toFixed(1)} ms`);

  // Within every bound but far too much work together: 4,096 patches × 10,000 iterations.
  const big = imagePair([1, 3, 96, 96]);
  const c = timedThrow(
    t,
    () => mghfLossSync(big.sr, big.gt, { weights, patch: 8, stride: 1, pmax: 4096, iters: 10_000 }),
    'E_LIMIT',
    /mghfLoss on \[1,3,96,96\] would take about 2\.\de13 floating-point operations .*LIP .* 4096 patches per map.*over the limit of 2\.0e13.*opts\.iters/,
    'all bounds at once',
  );
  t.ok(c < 1000, `rejected in ${c.toFixed(1)} ms`);
  await t.rejects(mghfLoss(big.sr, big.gt, { weights, patch: 8, stride: 1, pmax: 4096, iters: 10_000 }), { code: 'E_LIMIT' }, 'async too');
});

t.test('estimateCost: the default call, and what scales it', async (t) => {
  const def = estimateCost([4, 3, 256, 256], { weights: createWeights({ channels: 128 }) });
  // bench/NOTES.md counts 247.3 GFLOP for this call; the estimate adds the logits' exp/log.
  t.ok(def.flops > 2.4e11 && def.flops < 2.6e11, `default B=4 256² MGHF-c: ${def.flops.toExponential(3)} flops`);
  t.equal(def.patches, 225);
  t.ok(def.bytes > 0.5e9 && def.bytes < 1.5e9, `about 1 GB (measured peak RSS 883 MB): ${(def.bytes / 1e9).toFixed(2)} GB`);
  t.equal(def.limits.flops, MAX_FLOPS);
  t.equal(def.limits.bytes, memoryLimit());
  t.ok(MAX_FLOPS / def.flops > 50 && MAX_FLOPS / def.flops < 100, `the limit is ${(MAX_FLOPS / def.flops).toFixed(0)}× the default call`);
  t.comment(`default B=4 3×256×256 MGHF-c: ${def.flops.toExponential(3)} flops, ${(def.bytes / 1e9).toFixed(2)} GB; limit ${MAX_FLOPS.toExponential(1)} = ${(MAX_FLOPS / def.flops).toFixed(0)}×`);

  const n = estimateCost([4, 3, 256, 256], { weights: createWeights({ channels: 128 }), variant: 'n' });
  t.equal(n.flopsBy.lip + n.flopsBy.csc, 0, 'MGHF-n: DFE only');
  const noLip = estimateCost([4, 3, 256, 256], { weights: createWeights({ channels: 128 }), gamma3: 0 });
  t.equal(noLip.flopsBy.lip, 0, 'gamma3: 0 skips LIP');
  const nhwc = estimateCost([4, 256, 256, 3], { weights: createWeights({ channels: 128 }), layout: 'NHWC' });
  t.equal(nhwc.flops, def.flops, 'NHWC dims');
  const more = estimateCost([4, 3, 256, 256], { weights: createWeights({ channels: 128 }), iters: 500 });
  t.ok(more.flopsBy.lip > def.flopsBy.lip * 1.5, 'iters raises the LIP work');
  t.ok(estimateCost([1, 3, 64, 64]).flops > 0, 'with the default weights');
  t.throws(() => estimateCost([1, 4, 64, 64]), { code: 'E_SHAPE' });
  t.throws(() => estimateCost([1, 3, 64, 64], { wieghts: 1 } as never), { code: 'E_OPTION', message: /did you mean 'weights'/ });
});

t.test('checkCost: the memory limit, with the estimate and what to change', async (t) => {
  const input: CostInput = {
    B: 64, H: 2048, W: 2048, channels: 128, blocks: 1, expand: 2, variant: 'c', gamma1: 2, gamma2: 1.5, gamma3: 0,
    M: 64, patch: 32, stride: 16, pmax: 256, iters: 50, sinkhornGrad: true, threads: 2,
  };
  const cost = lossCost(input);
  t.ok(cost.bytes > 5e11, `hundreds of GB of activations (${(cost.bytes / 1e9).toFixed(0)} GB)`);
  t.throws(() => checkCost({ ...cost, flops: 0 }, 'mghfLoss', [64, 3, 2048, 2048]), {
    code: 'E_LIMIT',
    message: /would need about \d+\.\d GB of memory, over the limit of .* \(75% of this machine's RAM\): split the batch/,
  });
  const features = featuresCost(1, 16000, 16000, 128, 1, 2);
  t.throws(() => checkCost(features, 'dfeFeatures', [1, 3, 16000, 16000]), { code: 'E_LIMIT', message: /dfeFeatures on \[1,3,16000,16000\]/ });
});

t.test('createWeights and createHeadWeights refuse absurd sizes at once', async (t) => {
  const ms = timedThrow(
    t,
    () => createWeights({ channels: 4096, blocks: 64, expand: 64 }),
    'E_LIMIT',
    /createWeights\(channels=4096 blocks=64 expand=64\) would allocate 104,379,826,176 parameters \(417\.5 GB.*over the limit of 2\^28/,
    'the issue\'s bounds',
  );
  t.ok(ms < 1000, `in ${ms.toFixed(1)} ms`);
  timedThrow(t, () => createHeadWeights({ channels: 4096, classes: 100_000 }), 'E_LIMIT', /createHeadWeights.*parameters/, 'a huge head');
  t.equal(Object.keys(createWeights({ channels: 8 }).tensors).length, 13, 'small ones still work');
});
