// mghfLoss(sr, gt, { grad: false }): the loss and parts of the full call, no gradient, less memory.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { createWeights, mghfLoss, mghfLossSync } from '../lib/index';
import { imagePair, loadFixture } from './helpers/fixtures';

t.test('grad: false gives the same loss and parts as the full call, bit for bit, and no grad', async (t) => {
  for (const name of ['c-default', 'n-default', 'c-options', 'c-no-sinkhorn-grad']) {
    const f = loadFixture(name);
    const base = { ...f.options, weights: f.weights, device: 'cpu' as const };
    const full = await mghfLoss(f.sr, f.gt, base);
    const value = await mghfLoss(f.sr, f.gt, { ...base, grad: false });
    t.equal(value.loss, full.loss, `${name}: loss`);
    t.same(value.parts, full.parts, `${name}: parts`);
    t.same(value.skipped, full.skipped, `${name}: skipped`);
    t.notOk('grad' in value, `${name}: no grad field`);
    const sync = mghfLossSync(f.sr, f.gt, { ...base, grad: false });
    t.equal(sync.loss, full.loss, `${name}: sync`);
  }
});

t.test('grad: false works with every term off and in NHWC', async (t) => {
  const weights = createWeights({ seed: 3, channels: 8 });
  const { sr, gt } = imagePair([1, 3, 40, 40], 5);
  const off = mghfLossSync(sr, gt, { weights, device: 'cpu', gamma1: 0, gamma2: 0, gamma3: 0, grad: false });
  t.equal(off.loss, 0);
  t.notOk('grad' in off);
  const withGrad = mghfLossSync(sr, gt, { weights, device: 'cpu', grad: true });
  t.ok(withGrad.grad.data.length === sr.data.length, 'grad: true is the default behaviour');
});

t.test('grad must be a boolean', async (t) => {
  const { sr, gt } = imagePair([1, 3, 8, 8]);
  t.throws(() => mghfLossSync(sr, gt, { variant: 'n', grad: 'no' as unknown as boolean }), { code: 'E_OPTION', message: /opts\.grad/ });
});

// Peak memory of one call in a fresh process (getrusage's maxrss above the RSS before the call).
function peakBytes(grad: boolean): number {
  const dist = resolve(__dirname, '..', 'dist', 'index.js');
  const src = `
    const lib = require(${JSON.stringify(dist)});
    const n = 3 * 192 * 192, sr = new Float32Array(n), gt = new Float32Array(n);
    for (let i = 0; i < n; i++) { gt[i] = 0.5 + 0.3 * Math.sin(i / 97); sr[i] = gt[i] + 0.05 * Math.sin(i * 12.9898); }
    const tiny = { data: new Float32Array(3 * 32 * 32).fill(0.5), dims: [1, 3, 32, 32] };
    lib.mghfLossSync(tiny, tiny, { device: 'cpu' });
    const before = process.memoryUsage().rss;
    lib.mghfLossSync({ data: sr, dims: [1, 3, 192, 192] }, { data: gt, dims: [1, 3, 192, 192] }, { device: 'cpu', grad: ${grad} });
    process.stdout.write(String(process.resourceUsage().maxRSS * 1024 - before));`;
  const r = spawnSync(process.execPath, ['-e', src], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return Number(r.stdout);
}

t.test('grad: false allocates much less than the full call', async (t) => {
  const full = peakBytes(true);
  const value = peakBytes(false);
  t.comment(`192², MGHF-c: peak above baseline ${(full / 2 ** 20).toFixed(0)} MiB with grad, ${(value / 2 ** 20).toFixed(0)} MiB without`);
  // Without a gradient: G, S and one N-map scratch. With it: G, S, the tape (z1, exp ρ, bit-packed
  // masks: 1.19 N-maps) and the M kept maps' CSC gradient (∂L/∂S is written over S).
  t.ok(value < 0.9 * full, `forward only ${value} < 0.9 × ${full}`);
});
