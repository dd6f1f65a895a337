// CPU vs CUDA parity through the public API, for every golden fixture and a
// few other shapes (SPEC §8: both backends within the reference tolerances).
// Without a usable GPU the whole file is skipped with the reason the native
// side gives (built without CUDA, no driver, driver too old, no device, …).
import t from 'tap';
import { MghfError, backendInfo, createWeights, dfeFeaturesSync, mghfLoss, mghfLossSync } from '../lib/index';
import { createHeadWeights } from '../lib/checkpoint';
import { nativeTrainer, pretrain } from '../lib/pretrain';
import { loadWeights } from '../lib/weights';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeImageFolder } from './helpers/image-folder';
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
  t.skip(`CUDA parity: ${info.cuda.reason}`);
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
        t.ok(withinValueTolerance(gpu.parts[part] as number, ref), `${part}: cuda ${gpu.parts[part]} reference ${ref}`);
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
}
