// The DFE's pieces (ops.normalize, stem, coupling and their backwards, issue 15 item 2) on CUDA
// tensors against the CPU, run by test/cuda.test.ts where CUDA is usable: a GPU, or tools/cuda-emu.
// B = 2, 3×12×10, the bundled weights (one block) and random ones (blocks 0 and the last: block 0's mix is
// summed in another order on the CPU). Tolerances: normalize and its backward are one float
// operation per element, the same bits; the stem and the coupling relative L2 ≤ 1e-5 forward and
// ≤ 1e-4 backward, each weight gradient (double accumulators on both) ≤ 1e-4.
import t, { type Test } from 'tap';
import { Tensor, createWeights, memory, ops, scope, type DfeWeights, type PieceGradient } from '../../lib/index';
import { defaultWeights } from '../../lib/weights';
import { random, relativeL2 } from './fixtures';

const cuda = (x: Tensor) => x.toSync('cuda');

function close(t: Test, got: ArrayLike<number>, want: ArrayLike<number>, label: string, tol: number): void {
  t.equal(got.length, want.length, `${label}: length`);
  const e = relativeL2(got as Float32Array, want as Float32Array);
  t.ok(e <= tol, `${label}: relative L2 ${e} ≤ ${tol}`);
}

function gradients(t: Test, d: PieceGradient, h: PieceGradient, label: string, weightGrad: boolean): void {
  t.equal(d.dx.location, 'cuda:0', `${label}: dx on the device`);
  close(t, d.dx.getDataSync(), h.dx.data, `${label}: dx`, 1e-4);
  if (!weightGrad) {
    t.notOk('weightGrads' in d, `${label}: no weight gradients without weightGrad`);
    return;
  }
  const names = Object.keys(h.weightGrads!);
  t.same(Object.keys(d.weightGrads!), names, `${label}: the same weight gradients, by name`);
  for (const name of names) {
    t.ok(d.weightGrads![name] instanceof Float64Array, `${label}: ${name} a host Float64Array`);
    close(t, d.weightGrads![name], h.weightGrads![name], `${label}: ${name}`, 1e-4);
  }
}

export function cudaDfePieceTests(): void {
  const dims = [2, 3, 12, 10];
  const cases: Array<[string, DfeWeights]> = [
    ['the bundled weights', defaultWeights()],
    ['random weights', createWeights({ seed: 9, channels: 8, blocks: 2 })],
  ];

  t.test('normalize, normalizeBackward: CUDA gives the CPU bits', async (t) => {
    await scope(async () => {
      const x = random(dims, 1, 0, 1);
      const dxh = random(dims, 2);
      for (const inputRange of ['unit', 'symmetric'] as const) {
        const xh = await ops.normalize(cuda(x), { inputRange });
        t.equal(xh.location, 'cuda:0', `${inputRange}: xh on the device`);
        t.same(xh.getDataSync(), ops.normalizeSync(x, { inputRange }).data, `${inputRange}: xh`);
        const dx = ops.normalizeBackwardSync(cuda(dxh), { inputRange });
        t.equal(dx.location, 'cuda:0');
        t.same(dx.getDataSync(), ops.normalizeBackwardSync(dxh, { inputRange }).data, `${inputRange}: dx`);
      }
    });
  });

  for (const [label, weights] of cases) {
    t.test(`stem, stemBackward with ${label}: CUDA agrees with the CPU, the tape on the device`, async (t) => {
      await scope(async () => {
        const xh = ops.normalizeSync(random(dims, 3, 0, 1));
        const h = ops.stemSync(xh, { weights });
        const d = await ops.stem(cuda(xh), { weights });
        t.equal(d.z.location, 'cuda:0', 'z on the device');
        t.equal(d.tape!.location, 'cuda:0', 'the tape on the device');
        close(t, d.z.getDataSync(), h.z.data, 'z', 1e-5);
        t.equal(ops.stemSync(cuda(xh), { weights, tape: false }).tape, undefined, 'tape: false: no tape');
        const dz = random(h.z.dims, 4);
        const dzd = cuda(dz);
        for (const weightGrad of [false, true]) {
          const gh = ops.stemBackwardSync(h.tape!, dz, { weightGrad });
          const gd = await ops.stemBackward(d.tape!, dzd, { weightGrad });
          gradients(t, gd, gh, `stemBackward weightGrad ${weightGrad}`, weightGrad);
        }
        t.same(dzd.getDataSync(), dz.data, 'dz is not changed');
        h.tape!.dispose();
        d.tape!.dispose();
      });
    });

    t.test(`coupling, couplingBackward with ${label}: CUDA agrees with the CPU, the tape on the device`, async (t) => {
      await scope(async () => {
        const z = ops.stemSync(ops.normalizeSync(random(dims, 5, 0, 1)), { weights, tape: false }).z;
        for (const block of [...new Set([0, weights.blocks - 1])]) {
          const h = ops.couplingSync(z, { weights, block });
          const zd = cuda(z);
          const d = await ops.coupling(zd, { weights, block });
          t.equal(d.y.location, 'cuda:0', `block ${block}: y on the device`);
          t.equal(d.tape!.location, 'cuda:0', `block ${block}: the tape on the device`);
          close(t, d.y.getDataSync(), h.y.data, `block ${block}: y`, 1e-5);
          t.same(zd.getDataSync(), z.data, `block ${block}: z is not changed`);
          const noTape = ops.couplingSync(zd, { weights, block, tape: false });
          t.equal(noTape.tape, undefined, `block ${block}: tape: false: no tape`);
          close(t, noTape.y.getDataSync(), h.y.data, `block ${block}: y without a tape`, 1e-5);
          const dy = random(h.y.dims, 6 + block);
          const dyd = cuda(dy);
          for (const weightGrad of [false, true]) {
            const gh = ops.couplingBackwardSync(h.tape!, dy, { weightGrad });
            const gd = weightGrad ? ops.couplingBackwardSync(d.tape!, dyd, { weightGrad }) : await ops.couplingBackward(d.tape!, dyd, { weightGrad });
            gradients(t, gd, gh, `block ${block}: couplingBackward weightGrad ${weightGrad}`, weightGrad);
          }
          t.same(dyd.getDataSync(), dy.data, `block ${block}: dy is not changed`);
          const consumed = cuda(dy);
          const gc = await ops.couplingBackward(d.tape!, consumed, { consume: true });
          t.ok(consumed.disposed, `block ${block}: consume: a device dy is disposed`);
          close(t, gc.dx.getDataSync(), ops.couplingBackwardSync(h.tape!, dy).dx.data, `block ${block}: dz with consume`, 1e-4);
          h.tape!.dispose();
          d.tape!.dispose();
        }
      });
    });
  }

  t.test('the pieces composed on CUDA give the CUDA dfe and dfeBackward bits', async (t) => {
    await scope(async () => {
      const weights = cases[1][1];
      const x = cuda(random(dims, 11, 0, 1));
      const whole = await ops.dfe(x, { weights });
      const st = ops.stemSync(ops.normalizeSync(x), { weights });
      let z = st.z;
      const tapes = [];
      for (let k = 0; k < weights.blocks; k++) {
        const c = await ops.coupling(z, { weights, block: k });
        tapes.push(c.tape!);
        z = c.y;
      }
      t.same(z.getDataSync(), whole.F.getDataSync(), 'features');
      const dF = cuda(random(whole.F.dims, 12));
      let d = dF;
      for (let k = weights.blocks - 1; k >= 0; k--) d = ops.couplingBackwardSync(tapes[k], d, { weightGrad: k === 0 }).dx;
      d = (await ops.stemBackward(st.tape!, d, { weightGrad: true })).dx;
      const dx = ops.normalizeBackwardSync(d);
      t.same(dx.getDataSync(), ops.dfeBackwardSync(whole.tape!, dF).getDataSync(), 'dx (weightGrad on some pieces)');
      for (const tp of [whole.tape!, st.tape!, ...tapes]) tp.dispose();
    });
  });

  t.test('the pieces on mixed devices: E_DEVICE naming the argument, nothing made', async (t) => {
    await scope(async () => {
      const weights = cases[1][1];
      const xh = ops.normalizeSync(random(dims, 7, 0, 1));
      const hostStem = ops.stemSync(xh, { weights });
      const devStem = ops.stemSync(cuda(xh), { weights });
      const z = hostStem.z;
      const hostC = ops.couplingSync(z, { weights });
      const devC = ops.couplingSync(cuda(z), { weights });
      const zd = cuda(z);
      const before = memory().devices;
      t.throws(() => ops.stemBackwardSync(devStem.tape!, z), { code: 'E_DEVICE', argument: 'dy', message: /dy on cuda:0, where tape .* is, but dy is on cpu/ });
      await t.rejects(ops.stemBackward(hostStem.tape!, zd), { code: 'E_DEVICE', argument: 'dy', message: /dy on cpu.*dy is on cuda:0/ });
      t.throws(() => ops.couplingBackwardSync(devC.tape!, z, { weightGrad: true }), { code: 'E_DEVICE', argument: 'dy' });
      t.throws(() => ops.couplingBackwardSync(hostC.tape!, zd), { code: 'E_DEVICE', argument: 'dy' });
      t.same(memory().devices, before, 'no tensor was made');
      for (const tp of [hostStem.tape!, devStem.tape!, hostC.tape!, devC.tape!]) tp.dispose();
    });
  });
}
