// The trainer ops and SrNet on CUDA tensors against the CPU (issue 16 items 1, 3), run by
// test/cuda.test.ts where CUDA is usable: a GPU, or tools/cuda-emu (small shapes, as the
// emulator runs every CUDA thread as a checked fiber). Tolerances: elementwise ops |Δ| ≤ 1e-5·|ref|
// per element; sums (conv2d, resize) max|Δ| ≤ 1e-4·max|ref|; losses 1e-5 relative.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SrNet, Tensor, loadImage, memory, ops, saveImage, scope, tensor, upscaleImage } from '../../lib/index';
import { main } from '../../lib/cli';
import { random, relativeL2 } from './fixtures';

/** Every element within rel·|ref| (+ a floor for exact zeros). */
function elementwise(t: Test, got: ArrayLike<number>, want: ArrayLike<number>, label: string, rel = 1e-5): void {
  t.equal(got.length, want.length, `${label}: length`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) - rel * Math.abs(want[i]) - 1e-12);
  t.ok(worst <= 0, `${label}: elementwise within ${rel} (worst excess ${worst})`);
}

/** max|Δ| ≤ rel·max|ref|: sums in another order (conv2d, resize). */
function sums(t: Test, got: ArrayLike<number>, want: ArrayLike<number>, label: string, rel = 1e-4): void {
  t.equal(got.length, want.length, `${label}: length`);
  let diff = 0, scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  t.ok(diff <= rel * scale, `${label}: max|Δ| ${diff} ≤ ${rel}·${scale}`);
}

const cuda = (x: Tensor) => x.toSync('cuda');
const host = (x: Tensor) => x.getDataSync();

export function cudaTrainerOpsTests(emulated: boolean): void {
  t.test('trainer ops: CUDA agrees with the CPU, forward and backward, outputs on the device', async (t) => {
    await scope(async () => {
      const x = random([2, 4, 7, 6], 1), w = random([6, 4, 3, 3], 2, -0.3, 0.3), b = random([6], 3);
      const xd = cuda(x), wd = cuda(w), bd = cuda(b);
      for (const o of [{}, { padding: 'reflect' as const }, { stride: 2 }, { groups: 2 }]) {
        const wg = !('groups' in o) ? w : random([6, 2, 3, 3], 4, -0.3, 0.3);
        const wgd = wg === w ? wd : cuda(wg);
        const label = `conv2d ${JSON.stringify(o)}`;
        const yh = ops.conv2dSync(x, wg, b, o);
        const yd = await ops.conv2d(xd, wgd, bd, o);
        t.equal(yd.location, 'cuda:0', `${label}: y on the device`);
        sums(t, host(yd), yh.data, label);
        const dy = random(yh.dims, 5);
        const gh = ops.conv2dBackwardSync(x, wg, dy, o);
        const gd = ops.conv2dBackwardSync(xd, wgd, cuda(dy), o);
        sums(t, host(gd.dx!), gh.dx!.data, `${label} dx`);
        sums(t, host(gd.dw!), gh.dw!.data, `${label} dw`);
        sums(t, host(gd.db!), gh.db!.data, `${label} db`);
      }
      const noBias = ops.conv2dSync(xd, wd, null);
      sums(t, host(noBias), ops.conv2dSync(x, w, null).data, 'conv2d without b');
      const only = ops.conv2dBackwardSync(xd, wd, cuda(random([2, 6, 7, 6], 6)), { inputGrad: false, bias: false });
      t.same(Object.keys(only), ['dw'], 'conv2dBackward: only the gradients asked for');

      const ps = random([2, 8, 3, 5], 7);
      elementwise(t, host(await ops.pixelShuffle(cuda(ps), 2)), ops.pixelShuffleSync(ps, 2).data, 'pixelShuffle');
      const psd = random([2, 2, 6, 10], 8);
      elementwise(t, host(ops.pixelShuffleBackwardSync(cuda(psd), 2)), ops.pixelShuffleBackwardSync(psd, 2).data, 'pixelShuffleBackward');

      const a = random([3, 5, 4], 9), dy = random([3, 5, 4], 10);
      const ad = cuda(a), dyd = cuda(dy);
      elementwise(t, host(ops.reluSync(ad)), ops.reluSync(a).data, 'relu');
      elementwise(t, host(await ops.reluBackward(ad, dyd)), ops.reluBackwardSync(a, dy).data, 'reluBackward');
      elementwise(t, host(ops.leakyReluSync(ad, { slope: 0.2 })), ops.leakyReluSync(a, { slope: 0.2 }).data, 'leakyRelu');
      elementwise(t, host(ops.leakyReluBackwardSync(ad, dyd, { slope: 0.2 })), ops.leakyReluBackwardSync(a, dy, { slope: 0.2 }).data, 'leakyReluBackward');
      elementwise(t, host(await ops.add(ad, dyd, { alpha: -0.5 })), ops.addSync(a, dy, { alpha: -0.5 }).data, 'add');

      const l1h = ops.l1Sync(a, dy);
      const l1d = await ops.l1(ad, dyd);
      t.equal(typeof l1d.loss, 'number', 'l1: the loss is a number');
      t.ok(Math.abs(l1d.loss - l1h.loss) <= 1e-5 * l1h.loss, `l1 ${l1d.loss} vs ${l1h.loss}`);
      t.equal(l1d.dx.location, 'cuda:0');
      elementwise(t, host(l1d.dx), l1h.dx.data, 'l1 dx');
      const chh = ops.charbonnierSync(a, dy, { eps: 1e-2 });
      const chd = ops.charbonnierSync(ad, dyd, { eps: 1e-2 });
      t.ok(Math.abs(chd.loss - chh.loss) <= 1e-5 * chh.loss, `charbonnier ${chd.loss} vs ${chh.loss}`);
      elementwise(t, host(chd.dx), chh.dx.data, 'charbonnier dx');
      const noGrad = ops.charbonnierSync(ad, dyd, { grad: false });
      t.notOk('dx' in noGrad, 'grad: false: no dx');

      const img = random([2, 3, 9, 7], 11, 0, 1);
      for (const o of [{ scale: 4 }, { scale: 0.5 }, { size: [5, 12] as const }]) {
        const label = `resize ${JSON.stringify(o)}`;
        const yh = ops.resizeSync(img, o);
        const yd = await ops.resize(cuda(img), o);
        sums(t, host(yd), yh.data, label);
        const dyr = random(yh.dims, 12);
        const bo = { ...o, inputDims: img.dims };
        sums(t, host(await ops.resizeBackward(cuda(dyr), bo)), ops.resizeBackwardSync(dyr, bo).data, `${label} backward`);
      }
      t.same(host(xd), x.data, 'inputs are not changed');
    });
  });

  t.test('adam on device params: in place on the device, the host result for 3 steps', async (t) => {
    await scope(async () => {
      const ph = [random([4, 3, 3, 3], 20, -0.2, 0.2), random([4], 21)];
      const pd = ph.map(cuda);
      const sh = ops.adamState(ph);
      const sd = ops.adamState(pd);
      t.equal(sd.location, 'cuda:0', 'the state is on the params\' device');
      t.ok([...sd.m, ...sd.v].every((m) => m.location === 'cuda:0'), 'm and v are device tensors');
      const before = pd.map(host);
      for (let step = 1; step <= 3; step++) {
        const gh = ph.map((p, i) => random([...p.dims], 30 + 10 * step + i));
        ops.adamSync(ph, gh, sh, { lr: 1e-2 });
        await ops.adam(pd, gh.map(cuda), sd, { lr: 1e-2 });
      }
      t.equal(sd.step, 3);
      pd.forEach((p, i) => {
        t.equal(p.location, 'cuda:0', `params[${i}]: the same device tensor`);
        t.notSame(host(p), before[i], `params[${i}] changed`);
        elementwise(t, host(p), ph[i].data, `params[${i}] after 3 steps`, 1e-5);
        elementwise(t, host(sd.m[i]), sh.m[i].data, `m[${i}]`, 1e-5);
        elementwise(t, host(sd.v[i]), sh.v[i].data, `v[${i}]`, 1e-5);
      });
      t.throws(() => ops.adamSync(pd, ph, sd), { code: 'E_DEVICE', argument: 'grads[0]' });
      t.throws(() => ops.adamSync(pd, pd.map((p) => p), sh), { code: 'E_DEVICE' });
      t.throws(() => ops.adamState([pd[0], ph[1]]), { code: 'E_DEVICE', argument: 'params[1]' });
      sh.dispose();
      sd.dispose();
    });
  });

  t.test('trainer ops on mixed devices: E_DEVICE naming the argument, nothing made', async (t) => {
    await scope(async () => {
      const x = random([1, 2, 4, 4], 40), w = random([2, 2, 3, 3], 41);
      const xd = cuda(x);
      const before = memory().devices['cuda:0'];
      t.throws(() => ops.conv2dSync(xd, w, null), { code: 'E_DEVICE', argument: 'w', message: /w on cuda:0, where x is, but w is on cpu/ });
      await t.rejects(ops.add(x, xd), { code: 'E_DEVICE', argument: 'b' });
      t.throws(() => ops.l1Sync(xd, x), { code: 'E_DEVICE', argument: 'y' });
      t.throws(() => ops.reluBackwardSync(x, xd), { code: 'E_DEVICE', argument: 'dy' });
      t.same(memory().devices['cuda:0'], before, 'no device tensor was made');
    });
  });

  t.test('memory() stays flat over 100 scoped trainer op calls on CUDA tensors', async (t) => {
    const x = cuda(random([1, 3, 5, 5], 50, 0, 1)), w = cuda(random([4, 3, 3, 3], 51)), b = cuda(random([4], 52));
    const at = () => {
      const m = memory().devices['cuda:0'];
      return [m.numTensors, m.numBytes, m.numNativeObjects, m.nativeBytes];
    };
    const start = at();
    for (let i = 0; i < 100; i++) {
      scope(() => {
        const y = ops.reluSync(ops.conv2dSync(x, w, b));
        const { dx } = ops.l1Sync(y, y);
        ops.conv2dBackwardSync(x, w, dx);
        ops.resizeSync(x, { scale: 2 });
      });
    }
    t.same(at(), start, 'cuda:0: the same live tensors and bytes (JS and native)');
    for (const v of [x, w, b]) v.dispose();
  });

  t.test('SrNet on CUDA: forward, backward and upscale agree with the CPU, everything on the device', async (t) => {
    const config = { channels: 4, blocks: 1 };
    const net = SrNet.create(config, 7);
    const netD = await net.to('cuda');
    t.equal(netD.location, 'cuda:0');
    const created = SrNet.create(config, 7, { device: 'cuda' });
    t.ok(created.paramList().every((p) => p.location === 'cuda:0'), 'create({ device }) puts the params on the device');
    created.paramList().forEach((p, i) => t.same(host(p), net.paramList()[i].data, `create({ device }) param ${i}: the same values`));
    created.dispose();
    const lr = random([1, 3, 6, 5], 60, 0, 1);
    await scope(async () => {
      const h = await net.forward(lr);
      const d = await netD.forward(cuda(lr));
      t.equal(d.sr.location, 'cuda:0', 'sr on the device');
      t.ok(Object.values(d.tape).flat().every((x) => (x as Tensor).location === 'cuda:0'), 'the tape on the device');
      sums(t, host(d.sr), h.sr.data, 'SrNet forward');
      const dsr = random(h.sr.dims, 61);
      const gh = await net.backward(h.tape, dsr);
      const gd = await netD.backward(d.tape, cuda(dsr));
      gd.forEach((g, i) => {
        t.equal(g.location, 'cuda:0');
        t.ok(relativeL2(host(g), gh[i].data) <= 1e-4, `gradient ${i}: relative L2 ${relativeL2(host(g), gh[i].data)}`);
      });
      // A training step on the device: adam on a copy's own params (netD stays equal to net for the upscale below).
      const stepped = await netD.to('cuda:0');
      const state = ops.adamState(stepped.paramList());
      const before = stepped.paramList()[0];
      await ops.adam(stepped.paramList(), gd, state, { lr: 1e-3 });
      t.equal(stepped.paramList()[0], before, 'the same param tensor after adam');
      t.equal(before.location, 'cuda:0', 'still on the device');
      t.notSame(host(before), host(netD.paramList()[0]), 'and updated');
      state.dispose();
      stepped.dispose();
    });
    // Upscale: tiled and whole, on a host image, within 1 grey level of the CPU.
    const img = random([1, 3, emulated ? 10 : 24, emulated ? 9 : 20], 62, 0, 1);
    const grey = (a: ArrayLike<number>) => Array.from(a, (v) => Math.round(Math.min(1, Math.max(0, v)) * 255));
    for (const tile of [0, 4]) {
      const c = await upscaleImage(net, img, { tile });
      const g = await upscaleImage(netD, img, { tile });
      t.equal(g.location, 'cpu', `tile ${tile}: a host image gives a host result`);
      const a = grey(c.data), bq = grey(g.data);
      t.ok(a.every((v, i) => Math.abs(v - bq[i]) <= 1), `tile ${tile}: within 1 grey level`);
      c.dispose();
      g.dispose();
    }
    // mghf upscale --device cuda: the same PNG as --device cpu, within 1 grey level.
    const dir = mkdtempSync(join(tmpdir(), 'mghf-upscale-cuda-'));
    try {
      const model = join(dir, 'net.safetensors');
      await netD.save(model);
      await saveImage(img, join(dir, 'in.png'));
      const write = process.stdout.write;
      process.stdout.write = (() => true) as typeof process.stdout.write;
      let codes: number[];
      try {
        codes = [
          await main(['upscale', '--model', model, '--in', join(dir, 'in.png'), '--out', join(dir, 'cpu')]),
          await main(['upscale', '--model', model, '--in', join(dir, 'in.png'), '--out', join(dir, 'cuda'), '--device', 'cuda', '--tile', '4']),
        ];
      } finally {
        process.stdout.write = write;
      }
      t.same(codes, [0, 0], 'both runs succeed');
      const a = await loadImage(join(dir, 'cpu', 'in.png')), bq = await loadImage(join(dir, 'cuda', 'in.png'));
      t.ok(a.data.every((v, i) => Math.abs(v - bq.data[i]) * 255 <= 1.0001), 'mghf upscale --device cuda: within 1 grey level of the CPU');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    net.dispose();
    netD.dispose();
  });
}

/** Where CUDA is not usable: a device SrNet and `mghf upscale --device cuda` are E_UNSUPPORTED with the reason. */
export function cudaTrainerOpsUnavailableTests(reason: string): void {
  t.test('SrNet and mghf upscale on CUDA: E_UNSUPPORTED with the reason', async (t) => {
    const why = new RegExp(reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    t.throws(() => SrNet.create({ channels: 2, blocks: 0 }, 1, { device: 'cuda' }), { code: 'E_UNSUPPORTED', message: why });
    const net = SrNet.create({ channels: 2, blocks: 0 }, 1);
    await t.rejects(net.to('cuda:0'), { code: 'E_UNSUPPORTED' });
    const dir = mkdtempSync(join(tmpdir(), 'mghf-upscale-nocuda-'));
    try {
      await net.save(join(dir, 'net.safetensors'));
      await saveImage(random([1, 3, 4, 4], 1, 0, 1), join(dir, 'in.png'));
      let err = '';
      const write = process.stderr.write;
      process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
      let code: number;
      try {
        code = await main(['upscale', '--model', join(dir, 'net.safetensors'), '--in', join(dir, 'in.png'), '--out', join(dir, 'out'), '--device', 'cuda']);
      } finally {
        process.stderr.write = write;
      }
      t.equal(code, 1, 'mghf upscale --device cuda fails');
      t.match(err, why, `and says why: ${err.trim()}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    net.dispose();
  });
}
