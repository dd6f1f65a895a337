// loadImage / loadImages / saveImage: the layouts, the value range, orientation, grey and alpha,
// Buffers, batches of mixed sizes, and every rejected input as a typed error.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadImage, loadImages, saveImage } from '../lib/image';
import { Tensor } from '../lib/tensor';

const dir = mkdtempSync(join(tmpdir(), 'mghf-image-io-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Interleaved 8-bit RGB with a distinct, reproducible value per pixel and channel. */
function pattern(width: number, height: number, channels = 3, seed = 0): Buffer {
  const b = Buffer.alloc(width * height * channels);
  for (let i = 0; i < b.length; i++) b[i] = (i * 37 + seed * 101 + ((i * i) % 13)) & 255;
  return b;
}
async function writePng(name: string, width: number, height: number, channels: 1 | 2 | 3 | 4 = 3, seed = 0): Promise<string> {
  const path = join(dir, name);
  await sharp(pattern(width, height, channels, seed), { raw: { width, height, channels } }).png().toFile(path);
  return path;
}
/** A byte as the float32 the loader stores: byte / 255, rounded to float32. */
const unit = (v: number) => Math.fround(v / 255);
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
/** Seeded values in [0, 1]. */
function randomTensor(dims: number[], seed = 1): Tensor {
  let s = seed >>> 0;
  const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).map(() => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  });
  return new Tensor(data, dims);
}

t.test('loadImage: [1,3,H,W] in [0,1], planar, exactly the stored bytes / 255', async (t) => {
  const W = 5;
  const H = 3;
  const path = await writePng('rgb.png', W, H);
  const x = await loadImage(path);
  t.ok(x instanceof Tensor);
  t.same(x.dims, [1, 3, H, W]);
  const raw = pattern(W, H);
  const planar = new Array<number>(3 * H * W);
  for (let y = 0; y < H; y++)
    for (let px = 0; px < W; px++)
      for (let c = 0; c < 3; c++) planar[(c * H + y) * W + px] = unit(raw[(y * W + px) * 3 + c]);
  t.same(Array.from(x.data), planar);

  const nhwc = await loadImage(path, { layout: 'NHWC' });
  t.same(nhwc.dims, [1, H, W, 3]);
  t.same(Array.from(nhwc.data), Array.from(raw, unit), 'NHWC: the interleaved bytes / 255');
});

t.test('saveImage → loadImage round trip within 1/255 (PNG exact to rounding), NCHW and NHWC', async (t) => {
  const x = randomTensor([1, 3, 17, 23]);
  const png = join(dir, 'round.png');
  await saveImage(x, png);
  const back = await loadImage(png);
  t.same(back.dims, x.dims);
  t.ok(maxAbsDiff(back.data, x.data) <= 0.5 / 255 + 1e-7, `PNG: max |diff| ${maxAbsDiff(back.data, x.data)} ≤ 1/510`);

  // [3, H, W] is one image too; saving what was loaded gives the same bytes back.
  await saveImage(new Tensor(back.data, [3, 17, 23]), join(dir, 'round2.png'));
  t.same(Array.from((await loadImage(join(dir, 'round2.png'))).data), Array.from(back.data), 'a loaded PNG saves and loads unchanged');

  const nhwc = randomTensor([1, 9, 11, 3], 7);
  await saveImage(nhwc, join(dir, 'nhwc.png'), { layout: 'NHWC' });
  const nhwcBack = await loadImage(join(dir, 'nhwc.png'), { layout: 'NHWC' });
  t.same(nhwcBack.dims, [1, 9, 11, 3]);
  t.ok(maxAbsDiff(nhwcBack.data, nhwc.data) <= 0.5 / 255 + 1e-7, 'NHWC round trip');
  await saveImage({ type: 'float32', data: nhwc.data, dims: [9, 11, 3] }, join(dir, 'hwc.png'), { layout: 'NHWC' });
  t.same(Array.from((await loadImage(join(dir, 'hwc.png'))).data), Array.from((await loadImage(join(dir, 'nhwc.png'))).data), '[H,W,3] as a plain object');

  // JPEG is lossy but close; the extension picks the format.
  const smooth = new Tensor(new Float32Array(3 * 32 * 32).map((_, i) => 0.2 + 0.6 * ((i % 32) / 31)), [1, 3, 32, 32]);
  const jpg = join(dir, 'round.JPG');
  await saveImage(smooth, jpg);
  t.equal((await sharp(jpg).metadata()).format, 'jpeg');
  t.ok(maxAbsDiff((await loadImage(jpg)).data, smooth.data) < 0.03, 'JPEG within 0.03 on a smooth ramp');
  await saveImage(smooth, join(dir, 'lossless.webp'));
  t.ok(maxAbsDiff((await loadImage(join(dir, 'lossless.webp'))).data, smooth.data) <= 0.5 / 255 + 1e-7, 'WebP is lossless');
});

t.test('saveImage: clamps to [0, 1] and rounds to 8 bits', async (t) => {
  const data = Float32Array.from([-0.2, 0, 0.5, 1, 1.3, 0.998, 1 / 255, 0.5 / 255 - 1e-4, 2 / 255 + 0.4 / 255]);
  const path = join(dir, 'clamp.png');
  await saveImage(new Tensor(data, [1, 3, 1, 3]), path);
  const { data: bytes } = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  // NCHW [1,3,1,3]: channel c of pixel p is data[c·3 + p]; the file is interleaved.
  const expected = [0, 255, 1, 0, 255, 0, 128, 254, 2];
  t.same(Array.from(bytes), expected);
});

t.test('saveImage: a batch needs an index; bad tensors, paths and options are typed errors', async (t) => {
  const batch = randomTensor([3, 3, 8, 6], 3);
  const path = join(dir, 'batch.png');
  await t.rejects(saveImage(batch, path), { code: 'E_SHAPE', argument: 'image', message: /batch of 3.*pass \{ index: i \}/ });
  await saveImage(batch, path, { index: 2 });
  const back = await loadImage(path);
  t.ok(maxAbsDiff(back.data, batch.data.subarray(2 * 3 * 48)) <= 0.5 / 255 + 1e-7, 'index 2 is the third image');
  await t.rejects(saveImage(batch, path, { index: 3 }), { code: 'E_OPTION', argument: 'opts.index' });
  await t.rejects(saveImage(batch, path, { index: 1.5 }), { code: 'E_OPTION', argument: 'opts.index' });
  // @ts-expect-error a typo in an option name
  await t.rejects(saveImage(batch, path, { idx: 1 }), { code: 'E_OPTION', message: /did you mean 'index'/ });

  const one = randomTensor([1, 3, 4, 4]);
  await t.rejects(saveImage(one, join(dir, 'x.bmp')), { code: 'E_ARGUMENT', argument: 'path', message: /\.png, \.jpg/ });
  await t.rejects(saveImage(one, join(dir, 'missing-folder', 'x.png')), { code: 'E_ARGUMENT', argument: 'path', message: /Cannot write image .*no such file/ });
  await t.rejects(saveImage(randomTensor([1, 4, 4, 4]), join(dir, 'four.png')), { code: 'E_SHAPE', argument: 'image' });
  await t.rejects(saveImage(one, join(dir, 'nhwc-wrong.png'), { layout: 'NHWC' }), { code: 'E_SHAPE', message: /\[1, H, W, 3\]/ });
  const nan = new Float32Array(48).fill(0.5);
  nan[5] = NaN;
  await t.rejects(saveImage(new Tensor(nan, [1, 3, 4, 4]), join(dir, 'nan.png')), { code: 'E_NONFINITE' });
  // @ts-expect-error not a tensor
  await t.rejects(saveImage(new Uint8Array(48), join(dir, 'u8.png')), { code: 'E_ARGUMENT' });
  await t.rejects(saveImage({ data: new Uint8Array(48), dims: [1, 3, 4, 4] }, join(dir, 'u8.png')), { code: 'E_DTYPE' });
});

t.test('grey and grey+alpha become RGB; RGBA drops alpha without compositing', async (t) => {
  const grey = await writePng('grey.png', 4, 3, 1);
  const g = await loadImage(grey);
  t.same(g.dims, [1, 3, 3, 4]);
  const raw = pattern(4, 3, 1);
  const plane = 12;
  const greyPlane = Array.from(raw, unit);
  t.same(Array.from(g.data), [...greyPlane, ...greyPlane, ...greyPlane], 'the grey plane three times');
  const ga = await loadImage(await writePng('grey-alpha.png', 4, 3, 2));
  t.same(ga.dims, [1, 3, 3, 4]);
  const rawGa = pattern(4, 3, 2);
  t.same(Array.from(ga.data.subarray(0, plane)), Array.from({ length: plane }, (_, p) => unit(rawGa[2 * p])), 'grey+alpha: the grey values');

  const rgba = await loadImage(await writePng('rgba.png', 4, 3, 4));
  t.same(rgba.dims, [1, 3, 3, 4]);
  const rawA = pattern(4, 3, 4);
  const colour = Array.from({ length: 3 * plane }, (_, i) => unit(rawA[4 * (i % plane) + Math.floor(i / plane)]));
  t.same(Array.from(rgba.data), colour, 'the colour kept, alpha ignored (not composited)');
});

t.test('a Buffer or Uint8Array of the file gives the same tensor as its path', async (t) => {
  const path = await writePng('buffer.png', 6, 5, 3, 4);
  const fromPath = await loadImage(path);
  const bytes = readFileSync(path);
  const fromBuffer = await loadImage(bytes);
  t.same(fromBuffer.dims, fromPath.dims);
  t.same(Array.from(fromBuffer.data), Array.from(fromPath.data));
  // A Uint8Array view into a larger buffer (not a Buffer, non-zero offset).
  const padded = new Uint8Array(bytes.length + 10);
  padded.set(bytes, 7);
  const fromView = await loadImage(padded.subarray(7, 7 + bytes.length), { layout: 'NHWC' });
  t.same(fromView.dims, [1, 5, 6, 3]);
  t.same(Array.from(fromView.data), Array.from(pattern(6, 5, 3, 4), unit));

  await t.rejects(loadImage(Buffer.from('definitely not an image')), { code: 'E_ARGUMENT', message: /Cannot decode image buffer \(23 bytes\): .*unsupported image format/ });
  await t.rejects(loadImage(Buffer.alloc(0)), { code: 'E_ARGUMENT' });
});

t.test('EXIF orientation: applied by default (H and W swap for a 90° tag); autoOrient: false reads as stored', async (t) => {
  // Stored 3 wide × 2 high, tagged orientation 6: a viewer rotates it 90° clockwise to 2 wide × 3 high.
  const W = 3;
  const H = 2;
  const raw = pattern(W, H, 3, 9);
  const path = join(dir, 'exif6.jpg');
  // JPEG at quality 100 without chroma subsampling: lossy, but both loads below decode the same file.
  await sharp(raw, { raw: { width: W, height: H, channels: 3 } }).withMetadata({ orientation: 6 }).jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).toFile(path);
  t.equal((await sharp(path).metadata()).orientation, 6, 'the file carries orientation 6');

  const stored = await loadImage(path, { autoOrient: false });
  t.same(stored.dims, [1, 3, H, W], 'as stored: 3 wide, 2 high');
  const upright = await loadImage(path);
  t.same(upright.dims, [1, 3, W, H], 'oriented: 2 wide, 3 high');
  // 90° clockwise: upright (x', y') is stored (x = y', y = H − 1 − x').
  const Wu = H;
  const Hu = W;
  let worst = 0;
  for (let c = 0; c < 3; c++)
    for (let yu = 0; yu < Hu; yu++)
      for (let xu = 0; xu < Wu; xu++) {
        const xs = yu;
        const ys = H - 1 - xu;
        worst = Math.max(worst, Math.abs(upright.data[(c * Hu + yu) * Wu + xu] - stored.data[(c * H + ys) * W + xs]));
      }
  t.equal(worst, 0, 'every upright pixel is the stored pixel rotated 90° clockwise');

  // The batch loader orients too (and compares the oriented sizes).
  const pair = await loadImages([path, path]);
  t.same(pair.dims, [2, 3, W, H]);
  const plain = await writePng('plain32.png', W, H);
  await t.rejects(loadImages([path, plain]), { code: 'E_SHAPE', message: /image 1 \(.*plain32\.png\) is 3×2 while image 0 \(.*exif6\.jpg\) is 2×3/ });
  t.same((await loadImages([path, plain], { autoOrient: false })).dims, [2, 3, H, W], 'as stored both are 3×2');
});

t.test('loadImages: a batch [B,3,H,W] of same-size images; a different size is E_SHAPE naming it', async (t) => {
  const a = await writePng('a.png', 8, 6, 3, 1);
  const b = await writePng('b.png', 8, 6, 3, 2);
  const c = await writePng('c.png', 8, 6, 3, 3);
  const odd = await writePng('odd.png', 6, 8, 3, 4);
  const batch = await loadImages([a, readFileSync(b), c]);
  t.same(batch.dims, [3, 3, 6, 8]);
  for (const [i, p] of [a, b, c].entries()) {
    t.same(Array.from(batch.data.subarray(i * 144, (i + 1) * 144)), Array.from((await loadImage(p)).data), `image ${i} in place`);
  }
  const nhwc = await loadImages([a, b], { layout: 'NHWC' });
  t.same(nhwc.dims, [2, 6, 8, 3]);
  t.same(Array.from(nhwc.data.subarray(144)), Array.from((await loadImage(b, { layout: 'NHWC' })).data));

  const err = await loadImages([a, b, odd, c]).catch((e) => e);
  t.match(err, { name: 'MghfError', code: 'E_SHAPE', argument: 'sources[2]' });
  t.match(err.message, /image 2 \(.*odd\.png\) is 6×8 while image 0 \(.*a\.png\) is 8×6 \(width×height; 3 of 4 images are 8×6\)/);
  // The odd one out is the minority, even when it comes first.
  await t.rejects(loadImages([odd, a, b]), { code: 'E_SHAPE', argument: 'sources[0]', message: /image 0 \(.*odd\.png\) is 6×8 while image 1 \(.*a\.png\) is 8×6/ });
  await t.rejects(loadImages([a, readFileSync(odd)]), { code: 'E_SHAPE', message: /image 1 \(a buffer of \d+ bytes\) is 6×8/ });

  await t.rejects(loadImages([a, join(dir, 'nope.png')]), { code: 'E_ARGUMENT', argument: 'sources[1]', message: /Cannot read image 1 \(.*nope\.png\): no such file/ });
  await t.rejects(loadImages([]), { code: 'E_ARGUMENT', argument: 'sources' });
  // @ts-expect-error a path, not a list
  await t.rejects(loadImages(a), { code: 'E_ARGUMENT', argument: 'sources' });
  // @ts-expect-error a number is not an image source
  await t.rejects(loadImages([a, 3]), { code: 'E_ARGUMENT', argument: 'sources[1]' });
});

t.test('loadImage: unreadable sources and bad options are typed errors', async (t) => {
  await t.rejects(loadImage(join(dir, 'missing.png')), { code: 'E_ARGUMENT', message: /Cannot read image .*missing\.png: no such file/ });
  await t.rejects(loadImage(dir), { code: 'E_ARGUMENT', message: /not a regular file/ });
  // @ts-expect-error not a source
  await t.rejects(loadImage(42), { code: 'E_ARGUMENT', argument: 'source' });
  await t.rejects(loadImage(''), { code: 'E_ARGUMENT', argument: 'source' });
  const path = await writePng('opts.png', 4, 4);
  // @ts-expect-error a bad layout
  await t.rejects(loadImage(path, { layout: 'CHW' }), { code: 'E_OPTION', argument: 'opts.layout' });
  // @ts-expect-error a typo in an option name
  await t.rejects(loadImage(path, { autorient: false }), { code: 'E_OPTION', message: /did you mean 'autoOrient'/ });
  // @ts-expect-error not a boolean
  await t.rejects(loadImage(path, { autoOrient: 'yes' }), { code: 'E_OPTION', argument: 'opts.autoOrient' });
});
