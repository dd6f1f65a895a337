// The mghfLoss op on host tensors (native/core/ops/loss_ops.cpp's compose_loss, THE loss of every
// backend) against the public mghfLossSync on the CPU, which runs the same composition through the
// CPU backend: the same loss, parts, skipped parts, selection, importance and gradient, bit for
// bit, for every golden fixture and for random cases; E_NUMERIC naming the same stage. That the
// composition gives the bits of the fused loss it replaced on the CPU is ctest loss_composed_bits
// (native/core/tests/reference_loss.h); the golden values, test/loss.test.ts and loss-c.test.ts.
import t, { type Test } from 'tap';
import { Tensor, createWeights, mghfLossSync, type DfeWeights, type LossOptions, type LossResult, type PartName } from '../lib/index';
import { native } from '../lib/native';
import { fixtureNames, imagePair, loadFixture } from './helpers/fixtures';

type Attrs = Record<string, number | boolean | string>;
const PARTS: PartName[] = ['n', 'mse', 'corr', 'gram', 'csc', 'lip'];

function composedSync(sr: Tensor, gt: Tensor, weights: DfeWeights, o: LossOptions): Record<string, unknown> {
  const attrs: Attrs = {};
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string') attrs[k] = v;
  const nw = { channels: weights.channels, blocks: weights.blocks, expand: weights.expand, tensors: weights.tensors };
  const selected = o.selected ? Int32Array.from((o.selected as number[][]).flat()) : null;
  const inputs = [{ data: sr.data, dims: [...sr.dims] }, { data: gt.data, dims: [...gt.dims] }, nw, selected];
  return native().opSync!('mghfLoss', inputs as never[], attrs) as Record<string, unknown>;
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function sameAsBackend(t: Test, sr: Tensor, gt: Tensor, weights: DfeWeights, o: LossOptions, what: string): void {
  const want = mghfLossSync(sr, gt, { ...o, weights, device: 'cpu', returnDetails: true }) as LossResult;
  const got = composedSync(sr, gt, weights, { ...o, returnDetails: true });
  t.equal(got.loss, want.loss, `${what}: loss ${want.loss}`);
  for (const p of PARTS) t.equal(got[p], want.parts[p], `${what}: part ${p}`);
  const skipped = Array.from(got.skipped as Int32Array, (i) => PARTS[i]);
  t.same(skipped, want.skipped ?? [], `${what}: skipped`);
  if (want.selected) {
    t.same(Array.from(got.selected as Int32Array), want.selected.flat(), `${what}: selected`);
    t.same(Array.from(got.importance as Float64Array), want.importance!.flat(), `${what}: importance`);
  }
  const g = got.grad as { data: Float32Array; dims: number[] };
  t.same(g.dims, want.grad.dims, `${what}: gradient dims`);
  t.ok(bits(g.data).equals(bits(want.grad.data)), `${what}: the gradient bit for bit (${g.data.length} elements)`);
  // grad: false: the same values, no gradient.
  const value = composedSync(sr, gt, weights, { ...o, grad: false });
  t.equal(value.loss, want.loss, `${what}: grad false, the same loss`);
  t.notOk('grad' in value, `${what}: grad false, no gradient`);
}

t.test('the composition is the CPU mghfLoss bit for bit on every golden fixture', async (t) => {
  for (const name of fixtureNames()) {
    const f = loadFixture(name);
    sameAsBackend(t, f.sr, f.gt, f.weights, f.options as LossOptions, name);
  }
});

t.test('the composition is the CPU mghfLoss bit for bit on random cases', async (t) => {
  const cases: Array<[number[], number, LossOptions]> = [
    [[2, 3, 20, 24], 6, { M: 3, patch: 8, stride: 4, pmax: 12, iters: 7 }],
    [[1, 3, 17, 19], 8, { M: 5, beta2: 0, gamma3: 0, alpha: 0.5, gamma: 2, inputRange: 'symmetric' }],
    [[3, 3, 16, 16], 4, { M: 4, beta1: 0, beta3: 0, gamma1: 0, patch: 10, stride: 5, sinkhornGrad: false }],
    [[2, 3, 12, 14], 6, { variant: 'n' }],
    [[1, 3, 16, 16], 6, { gamma1: 0, gamma2: 0, gamma3: 0 }],
    [[2, 3, 16, 16], 6, { M: 2, patch: 8, stride: 8, selected: [[0, 5], [1, 3]] }],
  ];
  let seed = 30;
  for (const [dims, channels, o] of cases) {
    const weights = createWeights({ seed: seed++, channels });
    const { sr, gt } = imagePair(dims, seed++);
    sameAsBackend(t, sr, gt, weights, o, `${dims.join('×')} N=${channels} ${JSON.stringify(o)}`);
  }
});

t.test('E_NUMERIC names the same stage as the CPU backend', async (t) => {
  const weights = createWeights({ seed: 3, channels: 6 });
  const { sr, gt } = imagePair([1, 3, 16, 16], 4);
  const bad = new Float32Array(sr.data);
  bad[7] = NaN;
  const nanSr = new Tensor(bad, sr.dims);
  const stageOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return { code: (e as { code?: string }).code, message: String((e as Error).message) };
    }
    return { code: 'none', message: '' };
  };
  const o: LossOptions = { M: 3, patch: 8, stride: 4 };
  // A NaN in sr reaches S: both name "the features of sr" (SPEC's DFE forward of sr).
  const native_ = stageOf(() => composedSync(nanSr, gt, weights, o));
  const core = stageOf(() => mghfLossSync(nanSr, gt, { ...o, weights, device: 'cpu', inputRange: 'unit' }));
  t.equal(native_.code, 'E_NUMERIC', `composition: ${native_.message}`);
  t.match(native_.message, /features of sr/, 'the composition names the features of sr');
  if (core.code === 'E_NUMERIC') t.match(core.message, /features of sr/, 'as the backend does');
});
