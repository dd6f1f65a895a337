// examples/sr: the trainer learns (a few steps reduce the loss), resumes exactly, and
// `mghf upscale` writes the same pixels tiled and untiled, for one image or a folder.
// Everything here goes through the package's public entry ('mghf' → dist/), as the example does.
import { execFile } from 'node:child_process';
import { mkdtempSync, promises as fsp, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import t from 'tap';

import { MghfError, SrNet, Tensor, loadImage, ops, saveImage, upscaleImage } from 'mghf';

import type { StoredImage } from '../examples/sr/data';
import { scoreImage } from '../examples/sr/metrics';
import { train } from '../examples/sr/train';

const run = promisify(execFile);
const CLI = join(__dirname, '..', 'dist', 'cli.js');

/** Smooth synthetic images with edges (sines and a disc): enough structure to learn from. */
function syntheticImages(n: number, size: number): StoredImage[] {
  const out: StoredImage[] = [];
  for (let k = 0; k < n; k++) {
    const rgb = new Uint8Array(3 * size * size);
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++) {
          const disc = (x - size / 2) ** 2 + (y - size / 3) ** 2 < (size / (4 + k)) ** 2 ? 0.35 : 0;
          const v = 0.5 + 0.25 * Math.sin((x * (k + 1)) / 5 + c) * Math.cos((y * (c + 1)) / 7) + disc - 0.15;
          rgb[(c * size + y) * size + x] = Math.round(Math.min(1, Math.max(0, v)) * 255);
        }
    out.push({ H: size, W: size, rgb });
  }
  return out;
}

const base = { dfe: 'default' as const, batch: 2, crop: 32, seed: 3, channels: 8, blocks: 1 };

t.test('a few Adam steps reduce the L1 loss', async (t) => {
  const images = syntheticImages(3, 64);
  const r = await train(images, { ...base, loss: 'l1', lambda: 0, steps: 40, lr: 3e-3 });
  const first = r.history.slice(0, 5).reduce((a, p) => a + p.l1, 0) / 5;
  const last = r.history.slice(-5).reduce((a, p) => a + p.l1, 0) / 5;
  t.ok(last < 0.8 * first, `mean L1 of the last 5 steps ${last} < 0.8 × first 5 ${first}`);
  r.net.dispose();
});

t.test('L1 + MGHF-n: resume from a checkpoint is exact', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-sr-'));
  const images = syntheticImages(2, 48);
  const o = { ...base, loss: 'l1+mghf-n' as const, lambda: 0.5, lr: 2e-3 };
  const straight = await train(images, { ...o, steps: 4 });
  const ckpt = join(dir, 'run.ckpt.safetensors');
  const half = await train(images, { ...o, steps: 2, checkpoint: ckpt });
  half.net.dispose();
  const resumed = await train(images, { ...o, steps: 4, resume: ckpt });
  t.same(resumed.history.map((p) => p.loss), straight.history.map((p) => p.loss), 'the same losses step by step');
  const a = straight.net.paramList(), b = resumed.net.paramList();
  let differ = 0;
  for (let i = 0; i < a.length; i++) for (let j = 0; j < a[i].data.length; j++) if (a[i].data[j] !== b[i].data[j]) differ++;
  t.equal(differ, 0, 'every parameter bit for bit');
  t.ok(straight.history.every((p) => p.mghf > 0), 'the MGHF-n term was computed');
  straight.net.dispose();
  resumed.net.dispose();
});

t.test('backward matches finite differences on a parameter', async (t) => {
  const net = SrNet.create({ channels: 4, blocks: 1 }, 5);
  const lr = new Tensor(Float32Array.from({ length: 3 * 8 * 8 }, (_, i) => 0.5 + 0.4 * Math.sin(i * 0.37)), [1, 3, 8, 8]);
  const target = new Tensor(Float32Array.from({ length: 3 * 32 * 32 }, (_, i) => 0.5 + 0.3 * Math.cos(i * 0.11)), [1, 3, 32, 32]);
  // loss = Σ sr·target (linear in sr, so ∂loss/∂sr = target exactly).
  const lossOf = async () => {
    const sr = await net.upscale(lr);
    let s = 0;
    for (let i = 0; i < sr.data.length; i++) s += sr.data[i] * target.data[i];
    sr.dispose();
    return s;
  };
  const { tape } = await net.forward(lr);
  const grads = await net.backward(tape, target);
  const names = ['head.weight', 'blocks.0.conv1.bias', 'blocks.0.conv2.weight', 'body.weight', 'tail.weight', 'tail.bias'];
  const list = net.paramList();
  const shapes = [...net.params.keys()];
  for (const name of names) {
    const i = shapes.indexOf(name);
    const p = list[i];
    for (const j of [0, Math.floor(p.data.length / 2), p.data.length - 1]) {
      const keep = p.data[j];
      const h = 1e-2;
      p.data[j] = keep + h;
      const up = await lossOf();
      p.data[j] = keep - h;
      const down = await lossOf();
      p.data[j] = keep;
      const fd = (up - down) / (2 * h);
      const g = grads[i].data[j];
      t.ok(Math.abs(fd - g) <= 2e-2 * Math.max(1, Math.abs(fd)), `${name}[${j}]: backward ${g} vs FD ${fd}`);
    }
  }
  net.dispose();
});

t.test('upscale: tiles give the untiled result', async (t) => {
  const net = SrNet.create({ channels: 6, blocks: 2 }, 9);
  const lr = new Tensor(Float32Array.from({ length: 3 * 45 * 61 }, (_, i) => 0.5 + 0.45 * Math.sin(i * 0.013) * Math.cos(i * 0.0071)), [1, 3, 45, 61]);
  const whole = await upscaleImage(net, lr, { tile: 0 });
  const tiled = await upscaleImage(net, lr, { tile: 16 });
  t.same(tiled.dims, [1, 3, 180, 244]);
  let worst = 0;
  for (let i = 0; i < whole.data.length; i++) worst = Math.max(worst, Math.abs(whole.data[i] - tiled.data[i]));
  t.ok(worst <= 1e-5, `largest difference ${worst} ≤ 1e-5`);
  net.dispose();
});

t.test('mghf upscale: a folder, an image, a bad model file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-up-'));
  const net = SrNet.create({ channels: 4, blocks: 1 }, 2);
  const model = join(dir, 'model.safetensors');
  await net.save(model);
  await fsp.mkdir(join(dir, 'in'));
  const img = new Tensor(Float32Array.from({ length: 3 * 20 * 30 }, (_, i) => (i % 97) / 97), [1, 3, 20, 30]);
  await saveImage(img, join(dir, 'in', 'a.png'));
  await saveImage(img, join(dir, 'in', 'b.jpg'));
  const { stdout } = await run(process.execPath, [CLI, 'upscale', '--model', model, '--in', join(dir, 'in'), '--out', join(dir, 'out'), '--tile', '8']);
  t.match(stdout, /Upscaled 2 images/);
  const a = await loadImage(join(dir, 'out', 'a.png'));
  t.same(a.dims, [1, 3, 80, 120], 'a.png at 4× the size');
  await fsp.access(join(dir, 'out', 'b.png'));
  // The CLI's PNG equals the library's untiled result rounded to 8 bits.
  const direct = await net.upscale(await loadImage(join(dir, 'in', 'a.png')));
  let off = 0;
  for (let i = 0; i < direct.data.length; i++) {
    const want = Math.round(Math.min(1, Math.max(0, direct.data[i])) * 255);
    if (Math.abs(Math.round(a.data[i] * 255) - want) > 1) off++;
  }
  t.equal(off, 0, 'every pixel within one grey level of the untiled library result');

  const single = await run(process.execPath, [CLI, 'upscale', '--model', model, '--in', join(dir, 'in', 'a.png'), '--out', join(dir, 'one')]);
  t.match(single.stdout, /Upscaled 1 image /);

  const bad = join(dir, 'bad.safetensors');
  writeFileSync(bad, Buffer.from('not a safetensors file at all'));
  const err = await run(process.execPath, [CLI, 'upscale', '--model', bad, '--in', join(dir, 'in'), '--out', join(dir, 'x')]).then(
    () => undefined,
    (e: { code: number; stderr: string }) => e,
  );
  t.ok(err, 'a bad model file fails');
  t.equal(err?.code, 1);
  t.match(err?.stderr ?? '', /Invalid SR model file/);
  t.match(err?.stderr ?? '', bad);
  const e2 = await SrNet.load(bad).catch((e: unknown) => e);
  t.ok(e2 instanceof MghfError && e2.code === 'E_WEIGHTS_FILE' && e2.message.includes(bad), 'SrNet.load: E_WEIGHTS_FILE naming the file');
  net.dispose();
});

t.test('metrics: identical images score perfectly, noise scores worse', async (t) => {
  const H = 40, W = 40;
  const hr = Float32Array.from({ length: 3 * H * W }, (_, i) => 0.5 + 0.4 * Math.sin(i * 0.05));
  const same = scoreImage(hr, hr, H, W, 4);
  t.equal(same.psnr, Infinity);
  t.ok(Math.abs(same.ssim - 1) < 1e-12 && same.gmsd === 0 && Math.abs(same.hfRatio - 1) < 1e-12);
  const noisy = hr.map((v, i) => v + 0.05 * Math.sin(i * 12.9898));
  const s = scoreImage(noisy, hr, H, W, 4);
  t.ok(s.psnr < 40 && s.ssim < 1 && s.gmsd > 0, `noisy: ${JSON.stringify(s)}`);
  void ops;
});
