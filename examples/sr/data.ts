// Training pairs for ×4 SR: random HR crops of natural images, their LR made by the MATLAB-style
// bicubic downscale (`ops.resize`, antialiased), the degradation the Set5/Set14 LR images were
// made with. Everything random comes from one small generator whose state is saved in
// checkpoints, so a resumed run draws the very crops the uninterrupted run would have drawn.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';

import { Tensor, loadImage, ops } from 'mghf';

/** mulberry32 with its state exposed (one uint32), for exact resume. */
export class Rng {
  constructor(public state: number) {
    this.state >>>= 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** An image kept as 8-bit planar RGB ([3, H, W]): a quarter of the memory of float32. */
export interface StoredImage {
  H: number;
  W: number;
  rgb: Uint8Array;
}

/** Every .jpg/.jpeg/.png under dir (recursively), sorted, so the list is the same on every machine. */
export async function listImages(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    const entries = await fsp.readdir(d, { withFileTypes: true });
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (/\.(jpe?g|png)$/i.test(e.name)) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

/** `count` images of dir chosen by `seed` (a fixed subset: the whole set does not fit a quick run), decoded. */
export async function loadTrainingImages(dir: string, count: number, seed: number, minSide: number): Promise<StoredImage[]> {
  const files = await listImages(dir);
  if (files.length === 0) throw new Error(`no images under ${dir}`);
  const rng = new Rng(seed);
  for (let i = files.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [files[i], files[j]] = [files[j], files[i]];
  }
  const out: StoredImage[] = [];
  for (const f of files) {
    if (out.length >= count) break;
    const t = await loadImage(f);
    const [, , H, W] = t.dims;
    if (H >= minSide && W >= minSide) {
      const rgb = new Uint8Array(t.data.length);
      for (let i = 0; i < rgb.length; i++) rgb[i] = Math.round(t.data[i] * 255);
      out.push({ H, W, rgb });
    }
    t.dispose();
  }
  return out;
}

/**
 * One batch: `batch` HR crops of crop×crop (random image, position and one of 8 flips/rotations
 * by transposes), and their ×4-downscaled LR. Draws from rng in a fixed order.
 */
export async function makeBatch(images: readonly StoredImage[], rng: Rng, batch: number, crop: number): Promise<{ hr: Tensor; lr: Tensor }> {
  const plane = crop * crop;
  const hr = new Float32Array(batch * 3 * plane);
  for (let b = 0; b < batch; b++) {
    const img = images[rng.int(images.length)];
    const y0 = rng.int(img.H - crop + 1), x0 = rng.int(img.W - crop + 1);
    const flipX = rng.next() < 0.5, flipY = rng.next() < 0.5, transpose = rng.next() < 0.5;
    for (let c = 0; c < 3; c++)
      for (let r = 0; r < crop; r++)
        for (let col = 0; col < crop; col++) {
          let rr = transpose ? col : r, cc = transpose ? r : col;
          if (flipY) rr = crop - 1 - rr;
          if (flipX) cc = crop - 1 - cc;
          hr[((b * 3 + c) * crop + r) * crop + col] = img.rgb[(c * img.H + y0 + rr) * img.W + x0 + cc] / 255;
        }
  }
  const hrT = new Tensor(hr, [batch, 3, crop, crop]);
  const lr = await downscaleLikeMatlab(hrT);
  return { hr: hrT, lr };
}

/** Rounds to 8 bits (values in [0, 1]), as a uint8 image stores them. */
function quantize8(t: Tensor): Tensor {
  const q = new Float32Array(t.data.length);
  for (let i = 0; i < q.length; i++) q[i] = Math.round(Math.min(1, Math.max(0, t.data[i])) * 255) / 255;
  return new Tensor(q, t.dims);
}

/**
 * ×1/4 exactly as MATLAB's imresize(uint8 image, 1/4, 'bicubic') makes the benchmarks' LR: the
 * height pass first, its result stored as uint8, then the width pass, stored as uint8. (One float
 * pass of ops.resize differs from the LR_x4 files by ±1 grey level on about 10 % of the pixels;
 * this procedure reproduces them exactly away from the border: test/resize-matlab.test.ts.)
 */
export async function downscaleLikeMatlab(hr: Tensor): Promise<Tensor> {
  const [, , H, W] = hr.dims;
  const h = Math.ceil(H / 4), w = Math.ceil(W / 4);
  const rows = await ops.resize(hr, { size: [h, W] });
  const rows8 = quantize8(rows);
  rows.dispose();
  const lr = await ops.resize(rows8, { size: [h, w] });
  rows8.dispose();
  const lr8 = quantize8(lr);
  lr.dispose();
  return lr8;
}

/** A benchmark pair: LR and HR images as [1, 3, h, w] tensors. */
export interface EvalPair {
  name: string;
  lr: Tensor;
  hr: Tensor;
}

/** The pairs of an sr-bench set folder (HR/ and LR_x4/, same file names). */
export async function loadBenchmark(dir: string): Promise<EvalPair[]> {
  const names = (await fsp.readdir(join(dir, 'HR'))).filter((n) => /\.png$/i.test(n)).sort();
  const out: EvalPair[] = [];
  for (const name of names) out.push({ name, lr: await loadImage(join(dir, 'LR_x4', name)), hr: await loadImage(join(dir, 'HR', name)) });
  return out;
}
