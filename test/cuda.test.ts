// CPU vs CUDA parity through the public API, for every golden fixture and a
// few other shapes (SPEC §8: both backends within the reference tolerances).
// Without a usable GPU the whole file is skipped with the reason the native
// side gives (built without CUDA, no driver, driver too old, no device, …).
import t, { type Test } from 'tap';
import { MghfError, Tensor, backendInfo, createWeights, dfeFeaturesSync, memory, mghfLoss, mghfLossSync, ops, scope, tensor, type LossResult } from '../lib/index';
import { createHeadWeights } from '../lib/checkpoint';
import { nativeTrainer, pretrain } from '../lib/pretrain';
import { loadWeights } from '../lib/weights';
import { native } from '../lib/native';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { writeImageFolder } from './helpers/image-folder';
import { cudaDfePieceTests } from './helpers/cuda-dfe-pieces';
import { cudaTrainerOpsTests, cudaTrainerOpsUnavailableTests } from './helpers/cuda-trainer-ops';
import { fixtureNames, imagePair, loadFixture, relativeL2, withinValueTolerance } from './helpers/fixtures';

const info = backendInfo();

if (!info.cuda.available) {
  t.test('device: auto falls back to the CPU and says why', async (t) => {
    t.equal(info.backend, 'cpu');
    t.type(info.cuda.reason, 'string');
    const { sr, gt } = imagePair([1, 3, 8, 8]);
    const weights = createWeights({ seed: 2 });
    const auto = await mghfLoss(sr, gt, { variant: 'n', weights });
    const cpu = await mghfLoss(sr, gt, { variant: 'n', weights, device: 'cpu' });
    t.equal(auto.loss, cpu.loss);
  });
  t.test('a CUDA tensor is E_UNSUPPORTED with the reason', async (t) => {
    const x = new Float32Array(4);
    for (const make of [() => tensor(x, [4], { device: 'cuda' }), () => new Tensor(x, [4], { device: 'cuda:0' }), () => tensor(x, [4]).toSync('cuda')]) {
      let err: unknown;
      try {
        make();
      } catch (e) {
        err = e;
      }
      t.ok(err instanceof MghfError && err.code === 'E_UNSUPPORTED' && err.message.includes(info.cuda.reason ?? '?'), String(err));
    }
    await t.rejects(tensor(x, [4]).to('cuda:0'), { code: 'E_UNSUPPORTED' });
  });
  cudaTrainerOpsUnavailableTests(info.cuda.reason ?? '');
  t.test(`CUDA parity: ${info.cuda.reason}`, { skip: info.cuda.reason ?? 'no CUDA device' }, () => {});
} else {
  // The same tests run on a GPU and on tools/cuda-emu (the host emulator, whose device name says
  // so): there every CUDA thread runs as a checked fiber, thousands of times slower, so the two
  // larger cases shrink to shapes that still take every code path (several blocks, partial warps,
  // more than one row tile) and pretraining runs fewer epochs.
  const emulated = /emulat/i.test(info.cuda.deviceName ?? '');
  t.comment(`CUDA: ${info.cuda.deviceName} (compute capability ${info.cuda.computeCapability})${emulated ? ', tiny shapes' : ''}`);
  for (const name of fixtureNames()) {
    t.test(`fixture ${name}: CUDA agrees with the CPU and the reference`, async (t) => {
      const f = loadFixture(name);
      const base = { ...f.options, weights: f.weights, returnDetails: true };
      const cpu = await mghfLoss(f.sr, f.gt, { ...base, device: 'cpu' });
      const sel = cpu.selected ? { selected: cpu.selected } : {};
      const gpu = await mghfLoss(f.sr, f.gt, { ...base, ...sel, device: 'cuda' });
      t.ok(withinValueTolerance(gpu.loss, cpu.loss), `loss cuda ${gpu.loss} cpu ${cpu.loss}`);
      t.ok(withinValueTolerance(gpu.loss, f.expected.loss), `loss cuda ${gpu.loss} reference ${f.expected.loss}`);
      for (const [part, ref] of Object.entries(f.expected.parts)) {
        const got = gpu.parts[part as keyof typeof gpu.parts];
        t.ok(withinValueTolerance(got as number, ref), `${part}: cuda ${got} reference ${ref}`);
      }
      t.same(gpu.skipped, cpu.skipped);
      t.ok(relativeL2(gpu.grad.data, cpu.grad.data) <= 1e-3, 'gradient vs CPU');
      t.ok(relativeL2(gpu.grad.data, f.grad) <= 1e-3, 'gradient vs reference');
    });
  }
  t.test('features and a larger MGHF-c case agree', async (t) => {
    const weights = emulated ? createWeights({ seed: 4, channels: 16, blocks: 2 }) : createWeights({ seed: 4 });
    const { sr, gt } = imagePair(emulated ? [2, 3, 36, 44] : [2, 3, 96, 128], 8);
    const a = dfeFeaturesSync(sr, { weights, device: 'cpu' });
    const b = dfeFeaturesSync(sr, { weights, device: 'cuda' });
    t.ok(relativeL2(b.data, a.data) <= 1e-5);
    const opts = emulated ? { M: 8 } : {};
    const cpu = mghfLossSync(sr, gt, { weights, device: 'cpu', returnDetails: true, ...opts });
    const gpu = mghfLossSync(sr, gt, { weights, device: 'cuda', selected: cpu.selected, ...opts });
    t.ok(withinValueTolerance(gpu.loss, cpu.loss), `${gpu.loss} vs ${cpu.loss}`);
    t.ok(relativeL2(gpu.grad.data, cpu.grad.data) <= 1e-3);
    const value = mghfLossSync(sr, gt, { weights, device: 'cuda', selected: cpu.selected, ...opts, grad: false });
    t.equal(value.loss, gpu.loss, 'grad: false: the same loss on the GPU');
    t.notOk('grad' in value, 'and no gradient');
  });
  t.test('concurrent CUDA calls are safe', async (t) => {
    const weights = emulated ? createWeights({ seed: 6, channels: 8 }) : createWeights({ seed: 6 });
    const n = emulated ? 3 : 6;
    const cases = Array.from({ length: n }, (_, i) => imagePair(emulated ? [1, 3, 32 + 4 * i, 36] : [1, 3, 40 + 8 * i, 48], 30 + i));
    const opts = emulated ? { M: 4 } : {};
    const expected = cases.map(({ sr, gt }) => mghfLossSync(sr, gt, { weights, device: 'cpu', ...opts }));
    const got = await Promise.all(cases.map(({ sr, gt }) => mghfLoss(sr, gt, { weights, device: 'cuda', ...opts })));
    got.forEach((r, i) => t.ok(withinValueTolerance(r.loss, expected[i].loss), `call ${i}`));
  });
  t.test('an impossible device index is a typed error', async (t) => {
    const { sr, gt } = imagePair([1, 3, 8, 8]);
    await t.rejects(mghfLoss(sr, gt, { variant: 'n', device: 'cuda:999' }), MghfError);
  });
  t.test('pretraining: the CUDA trainer agrees with the CPU trainer and resumes exactly', async (t) => {
    const addon = nativeTrainer();
    const arch = { channels: 8, blocks: 2, expand: 2 };
    const classes = 3;
    const tensors = { ...createWeights({ seed: 5, ...arch }).tensors, ...createHeadWeights({ seed: 5, channels: arch.channels, classes }) };
    const cfg = { ...arch, classes, tensors, steps: 0, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, decayEvery: 5000, decayRate: 0.95 };
    const cpu = addon.trainerCreate({ ...cfg, device: 'cpu', deviceIndex: 0 });
    const gpu = addon.trainerCreate({ ...cfg, device: 'cuda', deviceIndex: 0 });
    t.equal(addon.trainerState(gpu).device, 'cuda:0');
    t.equal(addon.trainerState(cpu).device, 'cpu');
    const dims = [4, 3, 24, 20];
    const batch = (seed: number) => ({ images: imagePair(dims, seed).sr.data, labels: Int32Array.from([0, 1, 2, seed % classes]) });
    for (let step = 1; step <= 3; step++) {
      const { images, labels } = batch(step);
      const a = await addon.trainStep(cpu, images, dims, labels);
      const b = await addon.trainStep(gpu, images, dims, labels);
      t.ok(Math.abs(b.loss - a.loss) <= 1e-4 * Math.abs(a.loss), `step ${step}: loss cuda ${b.loss} cpu ${a.loss}`);
    }
    const sc = addon.trainerState(cpu);
    const sg = addon.trainerState(gpu);
    t.equal(sg.steps, 3);
    let worst = 0;
    for (const [name, ref] of Object.entries(sc.tensors)) worst = Math.max(worst, relativeL2(sg.tensors[name], ref));
    t.ok(worst <= 1e-3, `parameters and Adam moments after 3 steps: worst relative L2 ${worst}`);
    // A trainer restored from the state (a checkpoint) continues bit for bit.
    const again = addon.trainerCreate({ ...cfg, tensors: sg.tensors, steps: sg.steps, device: 'cuda', deviceIndex: 0 });
    const next = batch(9);
    const x = await addon.trainStep(gpu, next.images, dims, next.labels);
    const y = await addon.trainStep(again, next.images, dims, next.labels);
    t.equal(y.loss, x.loss, 'restored CUDA trainer: the same next loss');
    const ev = await addon.trainEval(gpu, next.images, dims, next.labels);
    const ev2 = await addon.trainEval(again, next.images, dims, next.labels);
    t.equal(ev2.loss, ev.loss, 'and the same state after that step');
  });
  t.test("pretrain({ device: 'cuda' }) runs the GPU trainer end to end", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mghf-cuda-pretrain-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    await writeImageFolder(join(dir, 'data'), { perClass: emulated ? 4 : 8, corrupt: null });
    const epochs = emulated ? 4 : 10;
    let device = '';
    const out = join(dir, 'w.safetensors');
    const r = await pretrain({
      data: join(dir, 'data'), batch: 8, crop: 16, channels: 8, lr: 0.05, epochs, device: 'cuda', out,
      onStart: (i) => (device = i.device),
    });
    t.equal(device, 'cuda:0');
    t.equal(r.stopped, 'done');
    t.ok(r.losses.every(Number.isFinite), 'finite losses');
    const k = r.losses.length / epochs; // one epoch
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    t.ok(mean(r.losses.slice(-k)) < mean(r.losses.slice(0, k)), `loss falls (${mean(r.losses.slice(0, k))} → ${mean(r.losses.slice(-k))})`);
    t.equal((await loadWeights(out)).metadata.trainedSteps, String(r.step));
  });

  cudaOpsTests(emulated);
  cudaTrainerOpsTests(emulated);
  cudaDfePieceTests();
}

// ---------------------------------------------------------------- ops on CUDA tensors (issue 15)

// Every op's CUDA function against its CPU function on small shapes (SPEC's parity tolerances:
// values |Δ| ≤ 1e-4·|ref| + 1e-7, gradients ‖Δ‖/‖ref‖ ≤ 1e-3; features 1e-5 as above), and the
// device tensor's life: round trips, mixed devices, use after dispose, memory() staying flat.
function cudaOpsTests(emulated: boolean): void {
  const weights = createWeights({ seed: 11, channels: 8, blocks: 1, expand: 2 });
  const dims = [2, 3, 16, 16];
  const lipOpts = { patch: 8, stride: 4, pmax: 16, iters: 10 };
  const host = () => {
    const { sr, gt } = imagePair(dims, 12);
    const G = ops.dfeSync(gt, { weights, tape: false }).F;
    const s = ops.dfeSync(sr, { weights });
    return { sr, gt, G, S: s.F, tape: s.tape! };
  };
  const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const values = (t: Test, gotValue: object, wantValue: object, keys: string[]) => {
    const got = gotValue as Record<string, number>, want = wantValue as Record<string, number>;
    for (const k of keys) t.ok(withinValueTolerance(got[k], want[k]), `${k}: cuda ${got[k]} cpu ${want[k]}`);
  };

  t.test('device tensors: round trip, location, .data refused, to() between places', async (t) => {
    const x = imagePair([1, 3, 5, 7], 3).sr.data;
    const d = tensor(x, [1, 3, 5, 7], { device: 'cuda' });
    t.equal(d.location, 'cuda:0');
    t.same(d.dims, [1, 3, 5, 7]);
    t.throws(() => d.data, { code: 'E_DEVICE', message: /getData\(\)/ });
    t.same(d.getDataSync(), x, 'getDataSync: the same bits');
    t.same(await d.getData(), x, 'getData: the same bits');
    const back = await d.to('cpu');
    t.equal(back.location, 'cpu');
    t.same(back.data, x);
    const again = back.toSync('cuda:0');
    const twice = await again.to('cuda:0');
    t.same(twice.getDataSync(), x, 'cuda → cuda copy');
    const viaNew = new Tensor(x, [1, 3, 5, 7], { device: 'cuda:0' });
    t.same(viaNew.getDataSync(), x);
    for (const v of [d, back, again, twice, viaNew]) v.dispose();
    t.throws(() => tensor(x, [105], { device: 'gpu' }), { code: 'E_OPTION' });
  });

  t.test('dfe and dfeBackward: CUDA agrees with the CPU', async (t) => {
    const { sr, gt, G, S, tape } = host();
    await scope(async () => {
      const x = tensor(sr.data, sr.dims, { device: 'cuda' });
      const c = await ops.dfe(x, { weights });
      t.equal(c.F.location, 'cuda:0');
      t.equal(c.tape!.location, 'cuda:0');
      t.ok(relativeL2(await c.F.getData(), S.data) <= 1e-5, 'F');
      const dFh = imagePair([2, 8, 16, 16], 13).sr;
      const dF = tensor(dFh.data, dFh.dims, { device: 'cuda' });
      const dx = await ops.dfeBackward(c.tape!, dF);
      t.equal(dx.location, 'cuda:0');
      t.ok(relativeL2(dx.getDataSync(), ops.dfeBackwardSync(tape, dFh).data) <= 1e-3, 'dx');
      t.same(dF.getDataSync(), dFh.data, 'dF is not changed');
      const Gc = ops.dfeSync(gt.toSync('cuda'), { weights, tape: false }).F;
      t.ok(relativeL2(Gc.getDataSync(), G.data) <= 1e-5, 'G');
    });
  });

  t.test('entropyPruneReweight, csc, lip, mseTerm: CUDA agrees with the CPU', async (t) => {
    const { G, S } = host();
    await scope(async () => {
      const Gd = G.toSync('cuda'), Sd = await S.to('cuda');
      const selH = ops.entropyPruneReweightSync(G, S, { M: 4 });
      const selD = await ops.entropyPruneReweight(Gd, Sd, { M: 4 });
      // SPEC §8 as test_cuda.cpp applies it: a value may change its float32 bin (FMA on the GPU),
      // moving an importance by up to 4/(H·W); past near-ties the CPU's choice is imposed.
      const bin = 4 / (16 * 16);
      for (let i = 0; i < selH.importance.length; i++) t.ok(Math.abs(selD.importance[i] - selH.importance[i]) <= bin, `importance ${i}`);
      if (emulated) t.same([...selD.selected], [...selH.selected], 'the same kept channels (the emulator: the same arithmetic)');
      const imposed = ops.entropyPruneReweightSync(Gd, Sd, { M: 4, selected: selH.selected });
      t.same([...imposed.selected], [...selH.selected]);
      for (let i = 0; i < selH.weights.length; i++) t.ok(Math.abs(imposed.weights[i] - selH.weights[i]) <= bin, `weight ${i} (α = γ = 1: w = 1 + I)`);

      const addToH = imagePair([2, 8, 16, 16], 14).sr;
      const addTo = addToH.toSync('cuda');
      const cscH = ops.cscSync(G, S, selH, { scale: 1.5, addTo: addToH });
      const cscD = await ops.csc(Gd, Sd, selH, { scale: 1.5, addTo });
      values(t, cscD, cscH, ['mse', 'corr', 'gram', 'csc']);
      t.equal(cscD.dS.location, 'cuda:0');
      t.ok(relativeL2(cscD.dS.getDataSync(), cscH.dS.data) <= 1e-3, 'csc dS (with addTo)');
      t.same(addTo.getDataSync(), addToH.data, 'addTo is not changed');
      const noGrad = ops.cscSync(Gd, Sd, selH, { beta1: 0, grad: false });
      t.equal(noGrad.mse, 0, 'beta1 0: mse reported 0');
      t.notOk('dS' in noGrad);

      const lipH = ops.lipSync(G, S, { ...lipOpts, scale: 1e-3 });
      const lipD = await ops.lip(Gd, Sd, { ...lipOpts, scale: 1e-3 });
      values(t, lipD, lipH, ['lip']);
      t.ok(relativeL2(lipD.dS.getDataSync(), lipH.dS.data) <= 1e-3, 'lip dS');

      const nH = ops.mseTermSync(G, S, { scale: 2, addTo: addToH });
      const nD = ops.mseTermSync(Gd, Sd, { scale: 2, addTo });
      values(t, nD, nH, ['n']);
      t.ok(relativeL2(nD.dS.getDataSync(), nH.dS.data) <= 1e-3, 'mseTerm dS');
    });
  });

  t.test('tensors on different devices: E_DEVICE naming both, nothing copied', async (t) => {
    const { G, S, tape } = host();
    await scope(async () => {
      const Gd = G.toSync('cuda');
      const before = memory();
      t.throws(() => ops.mseTermSync(Gd, S), { code: 'E_DEVICE', argument: 'S', message: /S on cuda:0, where G is, but S is on cpu/ });
      await t.rejects(ops.lip(G, Gd, lipOpts), { code: 'E_DEVICE', message: /S is on cuda:0/ });
      t.throws(() => ops.mseTermSync(Gd, Gd, { addTo: S }), { code: 'E_DEVICE', argument: 'opts.addTo' });
      t.throws(() => ops.dfeBackwardSync(tape, Gd), { code: 'E_DEVICE', argument: 'dF', message: /tape.*cpu.*dF is on cuda:0/ });
      t.same(memory().devices, before.devices, 'no tensor was made');
    });
  });

  t.test('use after dispose: E_DISPOSED naming the tensor', async (t) => {
    const { G } = host();
    const Gd = G.toSync('cuda');
    const Sd = G.toSync('cuda');
    Gd.dispose();
    Gd.dispose();
    t.ok(Gd.disposed);
    t.throws(() => ops.mseTermSync(Gd, Sd), { code: 'E_DISPOSED', argument: 'G' });
    t.throws(() => Gd.getDataSync(), { code: 'E_DISPOSED' });
    await t.rejects(Gd.to('cpu'), { code: 'E_DISPOSED' });
    Sd.dispose();
  });

  t.test('mghfLoss on device tensors: the gradient stays on the device and agrees with host tensors', async (t) => {
    const { sr, gt } = imagePair([2, 3, 16, 16], 21);
    const base = { weights, M: 4, ...lipOpts, returnDetails: true };
    await scope(async () => {
      const srD = sr.toSync('cuda'), gtD = await gt.to('cuda');
      const hostIn = await mghfLoss(sr, gt, { ...base, device: 'cuda' });
      const dev = await mghfLoss(srD, gtD, base);
      t.equal(dev.grad.location, 'cuda:0');
      t.same(dev.grad.dims, sr.dims);
      t.equal(dev.loss, hostIn.loss, 'the same loss as the CUDA backend on host tensors');
      t.same(dev.parts, hostIn.parts);
      t.same(dev.skipped, hostIn.skipped);
      t.same(dev.selected, hostIn.selected);
      t.ok(bytes(await dev.grad.getData()).equals(bytes(hostIn.grad.data)), 'the same gradient, bit for bit');
      const cpu = mghfLossSync(sr, gt, { ...base, device: 'cpu', selected: dev.selected });
      t.ok(withinValueTolerance(dev.loss, cpu.loss), `vs the CPU: ${dev.loss} / ${cpu.loss}`);
      t.ok(relativeL2(dev.grad.getDataSync(), cpu.grad.data) <= 1e-3, 'gradient vs the CPU');
      const n = mghfLossSync(srD, gtD, { weights, variant: 'n', device: 'cuda:0' });
      t.ok(withinValueTolerance(n.loss, mghfLossSync(sr, gt, { weights, variant: 'n', device: 'cpu' }).loss), 'variant n');
      const value = mghfLossSync(srD, gtD, { ...base, grad: false });
      t.equal(value.loss, dev.loss);
      t.notOk('grad' in value);
      const off = mghfLossSync(srD, gtD, { weights, gamma1: 0, gamma2: 0, gamma3: 0 });
      t.same(off.grad.getDataSync(), new Float32Array(sr.size), 'every term off: a zero gradient');
      t.same(sr.data, srD.getDataSync(), 'sr is not changed');
    });
  });

  t.test('mghfLoss on CUDA is the composition of the CUDA ops: a chain of ops in TypeScript gives its bits, host and device entry points alike', async (t) => {
    // The one composition (native/core/ops/loss_ops.cpp) runs dfe, mseTerm, entropyPruneReweight,
    // csc, lip and dfeBackward, each term's dS added onto the last (addTo) in the order n, csc, lip,
    // skipping a term whose Γ is 0. The same chain written here from `ops` on device tensors must give
    // the same loss, parts, selection and gradient bits as mghfLoss on device tensors (the mghfLoss
    // op) and on host tensors with device: 'cuda' (CudaBackend::loss, which uploads and downloads).
    const { sr, gt } = imagePair([2, 3, 16, 16], 24);
    type Opts = { variant?: 'n' | 'c'; M?: number; gamma1?: number; gamma2?: number; gamma3?: number; beta3?: number;
      sinkhornGrad?: boolean; inputRange?: 'unit' | 'symmetric'; returnDetails?: boolean; grad?: boolean;
      patch?: number; stride?: number; pmax?: number; iters?: number };
    const cases: Opts[] = [
      { M: 4, ...lipOpts, returnDetails: true },
      { M: 4, ...lipOpts, gamma1: 0, beta3: 0, sinkhornGrad: false, inputRange: 'symmetric' },
      { variant: 'n' },
      { M: 4, gamma3: 0, grad: false },
      { gamma1: 0, gamma2: 0, gamma3: 0 },
    ];
    const chain = (srD: Tensor, gtD: Tensor, o: Opts) => {
      const c = (o.variant ?? 'c') === 'c';
      const g1 = c ? (o.gamma1 ?? 2) : 1, g2 = c ? (o.gamma2 ?? 1.5) : 0, g3 = c ? (o.gamma3 ?? 1e-3) : 0;
      const inputRange = o.inputRange ?? 'unit';
      const G = ops.dfeSync(gtD, { weights, inputRange, tape: false }).F;
      const { F: S, tape } = ops.dfeSync(srD, { weights, inputRange });
      const parts = { n: 0, mse: 0, corr: 0, gram: 0, csc: 0, lip: 0 };
      let dS: Tensor | undefined;
      let selected: Int32Array | undefined;
      if (g1 !== 0) {
        const r = ops.mseTermSync(G, S, { scale: g1 });
        parts.n = r.n;
        dS = r.dS;
      }
      if (g2 !== 0) {
        const sel = ops.entropyPruneReweightSync(G, S, { M: o.M });
        const r = ops.cscSync(G, S, sel, { beta3: o.beta3, scale: g2, addTo: dS });
        Object.assign(parts, { mse: r.mse, corr: r.corr, gram: r.gram, csc: r.csc });
        dS = r.dS;
        selected = sel.selected;
      }
      if (g3 !== 0) {
        const { patch, stride, pmax, iters, sinkhornGrad } = o;
        const r = ops.lipSync(G, S, { patch, stride, pmax, iters, sinkhornGrad, scale: g3, addTo: dS });
        parts.lip = r.lip;
        dS = r.dS;
      }
      const loss = c ? g1 * parts.n + g2 * parts.csc + g3 * parts.lip : parts.n;
      const grad = dS && tape ? ops.dfeBackwardSync(tape, dS).getDataSync() : undefined;
      return { loss, parts, selected, grad };
    };
    await scope(async () => {
      const srD = sr.toSync('cuda'), gtD = gt.toSync('cuda');
      for (const o of cases) {
        const label = JSON.stringify(o);
        // With grad: false these are LossValues; `grad` is read only when o.grad is not false.
        const dev = mghfLossSync(srD, gtD, { weights, ...o }) as LossResult;
        const host = (await mghfLoss(sr, gt, { weights, ...o, device: 'cuda' })) as LossResult;
        for (const r of [dev, host]) {
          const where = r === dev ? 'device tensors' : 'host tensors';
          t.same(r.skipped, dev.skipped, `${label}, ${where}: skipped`);
          if (o.returnDetails) t.same(r.selected, dev.selected, `${label}, ${where}: selected`);
        }
        t.equal(host.loss, dev.loss, `${label}: host and device entry points, the same loss`);
        t.same(host.parts, dev.parts, `${label}: and the same parts`);
        if (o.grad === false) {
          t.notOk('grad' in dev || 'grad' in host, `${label}: no gradient`);
        } else {
          const a = dev.grad.getDataSync(), b = host.grad.data;
          t.ok(bytes(a).equals(bytes(b)), `${label}: host and device entry points, the same gradient bits`);
        }
        const want = chain(srD, gtD, o);
        t.equal(dev.loss, want.loss, `${label}: loss ${dev.loss} is the ops chain's ${want.loss}`);
        t.same(dev.parts, want.parts, `${label}: the parts are the chain's`);
        if (o.returnDetails) t.same(dev.selected?.flat(), Array.from(want.selected ?? []), `${label}: the chain's selection`);
        if (o.grad !== false && want.grad) {
          t.ok(bytes(dev.grad.getDataSync()).equals(bytes(want.grad)), `${label}: the chain's gradient bits`);
        }
        if (o.grad !== false && !want.grad) {
          t.ok(dev.grad.getDataSync().every((v) => v === 0), `${label}: every term off, a zero gradient`);
        }
      }
    });
    // profile on host tensors: the CUDA composition laps the CPU loss's stages, in its order.
    const o = { weights, M: 4, ...lipOpts, profile: true };
    const cuda = mghfLossSync(sr, gt, { ...o, device: 'cuda' });
    const cpu = mghfLossSync(sr, gt, { ...o, device: 'cpu' });
    t.same(Object.keys(cuda.timings ?? {}), Object.keys(cpu.timings ?? {}), 'profile: the CPU backend\'s stage names');
    t.ok(Object.values(cuda.timings ?? {}).every((ms) => ms >= 0), 'and times that are not negative');
  });

  t.test('mghfLoss on device tensors: mixed devices and options that cannot apply are typed errors', async (t) => {
    const { sr, gt } = imagePair([1, 3, 16, 16], 22);
    await scope(async () => {
      const srD = sr.toSync('cuda');
      const before = memory().devices['cuda:0'].numTensors;
      t.throws(() => mghfLossSync(srD, gt, { weights }), { code: 'E_DEVICE', argument: 'gt', message: /sr is on cuda:0 and gt on cpu/ });
      await t.rejects(mghfLoss(sr, srD, { weights }), { code: 'E_DEVICE', argument: 'sr' });
      t.throws(() => mghfLossSync(srD, srD, { weights, device: 'cpu' }), { code: 'E_DEVICE', argument: 'opts.device' });
      t.throws(() => mghfLossSync(srD, srD, { weights, layout: 'NHWC' }), { code: 'E_OPTION', argument: 'opts.layout' });
      t.throws(() => mghfLossSync(srD, srD, { weights, profile: true }), { code: 'E_UNSUPPORTED' });
      t.equal(memory().devices['cuda:0'].numTensors, before, 'no tensor was made');
    });
  });

  t.test('a device tensor nobody disposed is freed by the garbage collector (the safety net)', async (t) => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const live = () => memory().devices['cuda:0'] ?? { numTensors: 0, numNativeObjects: 0 };
    const start = live();
    (() => {
      for (let i = 0; i < 20; i++) tensor(new Float32Array(256), [256], { device: 'cuda' });
    })();
    t.equal(live().numNativeObjects, start.numNativeObjects + 20, '20 forgotten tensors hold device memory');
    // Both the native finalizer and the FinalizationRegistry callback run in later tasks.
    for (let i = 0; i < 100 && (live().numNativeObjects > start.numNativeObjects || live().numTensors > start.numTensors); i++) {
      gc();
      await new Promise((r) => setTimeout(r, 5));
    }
    t.equal(live().numNativeObjects, start.numNativeObjects, 'collected: their device memory is freed');
    t.equal(live().numTensors, start.numTensors, 'and memory() no longer counts them');
  });

  t.test('memory() stays flat over a few hundred CUDA op calls in scope() and with dispose()', async (t) => {
    const { sr, G, S } = host();
    const Gd = G.toSync('cuda'), Sd = S.toSync('cuda');
    const at = () => {
      const m = memory().devices['cuda:0'];
      return [m.numTensors, m.numBytes, m.numNativeObjects, m.nativeBytes];
    };
    const start = at();
    for (let i = 0; i < 200; i++) {
      scope(() => {
        const r = ops.mseTermSync(Gd, Sd, { scale: 2 });
        ops.mseTermSync(Gd, Sd, { addTo: r.dS });
      });
    }
    const img = imagePair([1, 3, 8, 8], 23);
    const srD = img.sr.toSync('cuda'), gtD = img.gt.toSync('cuda');
    const lossStart = at();
    for (let i = 0; i < 20; i++) scope(() => mghfLossSync(srD, gtD, { weights, variant: 'n' }).loss);
    t.same(at(), lossStart, 'mghfLoss on device tensors in scope()');
    srD.dispose();
    gtD.dispose();
    for (let i = 0; i < 50; i++) {
      await scope(async () => (await ops.mseTerm(Gd, Sd)).n);
      const r = ops.mseTermSync(Gd, Sd);
      r.dS.dispose();
      const c = tensor(G.data, G.dims, { device: 'cuda' });
      c.dispose();
    }
    t.same(at(), start, 'cuda:0: the same live tensors and bytes (JS and native)');
    // A failing call frees what it made.
    for (let i = 0; i < 50; i++) t.throws(() => ops.mseTermSync(Gd, S), { code: 'E_DEVICE' });
    t.same(at(), start, 'and after failing calls');
    // A CUDA op that fails natively (a NaN reaches the device: E_NUMERIC) frees what it made.
    const bad = new Float32Array(G.data);
    bad[5] = NaN;
    const Gnan = tensor(bad, G.dims, { device: 'cuda' });
    const withNan = at();
    const sel = ops.entropyPruneReweightSync(G, S, { M: 4 });
    for (let i = 0; i < 30; i++) {
      t.throws(() => ops.mseTermSync(Gnan, Sd), { code: 'E_NUMERIC' });
      t.throws(() => ops.cscSync(Gnan, Sd, sel), { code: 'E_NUMERIC' });
    }
    await scope(async () => {
      const { tape } = ops.dfeSync(sr.toSync('cuda'), { weights });
      await t.rejects(ops.dfeBackward(tape!, Gnan), { code: 'E_NUMERIC' });
    });
    t.same(at().slice(2), withNan.slice(2), 'native device buffers: the same after 61 E_NUMERIC failures');
    Gnan.dispose();
    Gd.dispose();
    Sd.dispose();
  });
}
