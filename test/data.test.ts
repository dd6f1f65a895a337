// lib/data.ts: the ImageFolder scan and its errors, the validation split, deterministic epoch
// plans, crop geometry, decoding (grayscale, CMYK, EXIF orientation, flips) and the batch loader.
import t, { Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  BatchLoader,
  DATA_STREAM,
  cropGeometry,
  decodeCrop,
  scanImageFolder,
  splitValidation,
  trainingPlan,
  validationPlan,
  type Batch,
  type ImageFolder,
} from '../lib/data';
import { MghfError } from '../lib/errors';
import { SeededRandom } from '../lib/weights';
import { CLASS_NAMES, classPixels, writeImageFolder } from './helpers/image-folder';

const dir = mkdtempSync(join(tmpdir(), 'mghf-data-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function rejectsData(t0: Test, p: Promise<unknown>, needle: string | RegExp, what: string): Promise<void> {
  try {
    await p;
    t0.fail(`${what}: expected an error`);
  } catch (err) {
    t0.ok(err instanceof MghfError, `${what}: MghfError`);
    t0.equal((err as MghfError).code, 'E_DATA', `${what}: E_DATA`);
    t0.match((err as Error).message, needle, `${what}: ${(err as Error).message}`);
  }
}

async function collect(gen: AsyncGenerator<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of gen) out.push(b);
  return out;
}

t.test('scanImageFolder', async (t) => {
  const root = join(dir, 'scan');
  const special = await writeImageFolder(root, { perClass: 5 });
  const folder = await scanImageFolder(root);
  t.same(folder.classes, CLASS_NAMES, 'classes are the sorted folder names');
  t.equal(folder.samples.length, 20, 'notes.txt and hidden files are not images');
  t.ok(folder.samples.some((s) => s.path === special.upper), 'upper-case .JPEG is an image');
  for (let k = 0; k < 4; k++) {
    const own = folder.samples.filter((s) => s.label === k).map((s) => s.path);
    t.equal(own.length, 5);
    t.same(own, [...own].sort(), `class ${k} files sorted`);
    t.ok(own.every((p) => p.includes(`/${CLASS_NAMES[k]}/`)), `class ${k} labels match folders`);
  }
  const val = join(dir, 'scan-val');
  await writeImageFolder(val, { classes: 2, perClass: 2 });
  const v = await scanImageFolder(val, { classes: folder.classes });
  t.same(v.classes, folder.classes, 'a validation folder keeps the training classes');
  t.same([...new Set(v.samples.map((s) => s.label))], [0, 1]);
});

t.test('scanImageFolder errors name the folder', async (t) => {
  const missing = join(dir, 'nope');
  await rejectsData(t, scanImageFolder(missing), new RegExp(`${missing} does not exist`), 'missing folder');
  const file = join(dir, 'a-file');
  writeFileSync(file, 'x');
  await rejectsData(t, scanImageFolder(file), /is not a folder/, 'a file');
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  await rejectsData(t, scanImageFolder(empty), new RegExp(`${empty} is empty`), 'empty folder');
  const loose = join(dir, 'loose');
  mkdirSync(loose);
  writeFileSync(join(loose, 'a.png'), 'x');
  await rejectsData(t, scanImageFolder(loose), /holds images but no class folders/, 'images without class folders');
  const one = join(dir, 'one');
  await writeImageFolder(one, { classes: 1, perClass: 2 });
  await rejectsData(t, scanImageFolder(one), /1 class folder \('apple'\).*at least 2/, 'one class');
  const noImages = join(dir, 'no-images');
  await writeImageFolder(noImages, { classes: 2, perClass: 2 });
  mkdirSync(join(noImages, 'zebra'));
  writeFileSync(join(noImages, 'zebra', 'readme.txt'), 'x');
  await rejectsData(t, scanImageFolder(noImages), new RegExp(`Class folder ${join(noImages, 'zebra')} has no images`), 'class without images');
  const stranger = join(dir, 'stranger');
  await writeImageFolder(stranger, { classes: 2, perClass: 1 });
  await rejectsData(t, scanImageFolder(stranger, { classes: ['apple', 'kiwi'] }), /bean is not a class of the training set/, 'unknown validation class');
});

t.test('splitValidation: 10% of each class, deterministic, disjoint', async (t) => {
  const root = join(dir, 'split');
  await writeImageFolder(root, { perClass: 12 });
  const folder = await scanImageFolder(root);
  const a = splitValidation(folder);
  const b = splitValidation(folder);
  t.same(a, b, 'the same split every time');
  t.equal(a.val.samples.length, 4, 'round(12 · 0.1) = 1 per class');
  t.same(a.val.samples.map((s) => s.label).sort(), [0, 1, 2, 3]);
  const paths = new Set([...a.train.samples, ...a.val.samples].map((s) => s.path));
  t.equal(paths.size, folder.samples.length, 'train and val partition the images');
  t.equal(a.train.samples.length + a.val.samples.length, folder.samples.length);
});

t.test('trainingPlan: seeded shuffle and draws, restorable state', async (t) => {
  const rng = SeededRandom.fromSeed(5, DATA_STREAM);
  const p1 = trainingPlan(50, rng);
  const p2 = trainingPlan(50, SeededRandom.fromSeed(5, DATA_STREAM));
  t.same(p1, p2, 'same seed, same plan');
  t.notSame(trainingPlan(50, SeededRandom.fromSeed(6, DATA_STREAM)), p1, 'another seed, another plan');
  t.same(p1.map((d) => d.sample).sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i), 'a permutation');
  t.ok(p1.every((d) => d.at !== null && d.at.x >= 0 && d.at.x < 1 && d.at.y >= 0 && d.at.y < 1), 'crop positions in [0,1)');
  const flips = p1.filter((d) => d.flip).length;
  t.ok(flips > 10 && flips < 40, `about half flipped (${flips}/50)`);
  const saved = rng.state();
  const next = trainingPlan(50, rng);
  t.notSame(next.map((d) => d.sample), p1.map((d) => d.sample), 'the next epoch has its own order');
  t.same(trainingPlan(50, SeededRandom.fromState(saved)), next, 'restored state replays the next epoch');
  t.throws(() => SeededRandom.fromState([0, 0, 0, 0]), /four unsigned 32-bit integers/);
  t.same(validationPlan(3), [0, 1, 2].map((sample) => ({ sample, at: null, flip: false })));
});

t.test('cropGeometry', async (t) => {
  t.same(cropGeometry(24, 24, 32, null), { resize: { width: 32, height: 32 }, left: 0, top: 0 }, 'scaled up to the crop');
  t.same(cropGeometry(20, 30, 24, null), { resize: { width: 24, height: 36 }, left: 0, top: 6 }, 'short side to the crop, centre');
  t.same(cropGeometry(40, 30, 16, null), { resize: null, left: 12, top: 7 }, 'large enough: no resize, centre crop');
  t.same(cropGeometry(40, 30, 16, { x: 0, y: 0 }), { resize: null, left: 0, top: 0 });
  t.same(cropGeometry(40, 30, 16, { x: 0.999999, y: 0.999999 }), { resize: null, left: 24, top: 14 }, 'last position reachable');
});

t.test('decodeCrop: pixels, flips, grayscale, CMYK, EXIF orientation', async (t) => {
  const root = join(dir, 'decode');
  mkdirSync(root);
  const W = 24;
  const H = 20;
  const px = classPixels(2, 0, W, H);
  const png = join(root, 'a.png');
  await sharp(px, { raw: { width: W, height: H, channels: 3 } }).png().toFile(png);
  const crop = 8;
  const plane = crop * crop;
  const out = new Float32Array(3 * plane + 5);
  await decodeCrop(png, crop, { at: { x: 0.5, y: 0.25 }, flip: false }, out, 5);
  const left = Math.floor(0.5 * (W - crop + 1));
  const top = Math.floor(0.25 * (H - crop + 1));
  let exact = true;
  for (let y = 0; y < crop; y++)
    for (let x = 0; x < crop; x++)
      for (let c = 0; c < 3; c++) if (out[5 + c * plane + y * crop + x] !== Math.fround(px[((top + y) * W + left + x) * 3 + c] / 255)) exact = false;
  t.ok(exact, 'random crop: planar RGB of the source pixels, scaled to [0,1], at the offset');
  const flipped = new Float32Array(3 * plane);
  await decodeCrop(png, crop, { at: { x: 0.5, y: 0.25 }, flip: true }, flipped, 0);
  let mirrored = true;
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < crop; y++)
      for (let x = 0; x < crop; x++) if (flipped[c * plane + y * crop + x] !== out[5 + c * plane + y * crop + (crop - 1 - x)]) mirrored = false;
  t.ok(mirrored, 'flip mirrors left–right');
  const centre = new Float32Array(3 * plane);
  await decodeCrop(png, crop, { at: null, flip: false }, centre, 0);
  t.equal(centre[0], Math.fround(px[(((H - crop) / 2) * W + (W - crop) / 2) * 3] / 255), 'centre crop');
  const small = new Float32Array(3 * 32 * 32);
  await decodeCrop(png, 32, { at: null, flip: false }, small, 0);
  t.ok(small.every((v) => v >= 0 && v <= 1), 'scaled-up crop in [0,1]');

  const gray = join(root, 'g.png');
  await sharp(px, { raw: { width: W, height: H, channels: 3 } }).toColourspace('b-w').png().toFile(gray);
  t.equal((await sharp(gray).metadata()).channels, 1, 'the fixture is one-channel');
  const g = new Float32Array(3 * plane);
  await decodeCrop(gray, crop, { at: null, flip: false }, g, 0);
  t.ok(g.subarray(0, plane).every((v, i) => v === g[plane + i] && v === g[2 * plane + i]), 'grayscale → three equal channels');

  const cmyk = join(root, 'c.jpg');
  await sharp(Buffer.alloc(W * H * 3, Buffer.from([200, 40, 40])), { raw: { width: W, height: H, channels: 3 } })
    .toColourspace('cmyk')
    .jpeg({ quality: 95 })
    .toFile(cmyk);
  t.equal((await sharp(cmyk).metadata()).space, 'cmyk', 'the fixture is CMYK');
  const c = new Float32Array(3 * plane);
  await decodeCrop(cmyk, crop, { at: null, flip: false }, c, 0);
  t.ok(c[0] > 0.6 && c[plane] < 0.35 && c[2 * plane] < 0.35, `CMYK → sRGB red (${c[0]}, ${c[plane]}, ${c[2 * plane]})`);

  // EXIF orientation 6 (rotate 90° clockwise): a red top-left block of the stored 30×20 image
  // appears at the top right of the 20×30 upright image.
  const sw = 30;
  const sh = 20;
  const raw = Buffer.alloc(sw * sh * 3);
  for (let y = 0; y < 6; y++) for (let x = 0; x < 6; x++) raw[(y * sw + x) * 3] = 255;
  const rotated = join(root, 'o6.jpg');
  await sharp(raw, { raw: { width: sw, height: sh, channels: 3 } }).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toFile(rotated);
  const r = new Float32Array(3 * 20 * 20);
  await decodeCrop(rotated, 20, { at: { x: 0, y: 0 }, flip: false }, r, 0);
  t.ok(r[19] > 0.8 && r[0] < 0.2, `orientation applied: red at the top right (${r[19].toFixed(2)}), not the top left (${r[0].toFixed(2)})`);
});

t.test('BatchLoader', async (t) => {
  const root = join(dir, 'loader');
  const { corrupt } = await writeImageFolder(root, { perClass: 5, corrupt: 'cherry/broken.png' });
  const folder: ImageFolder = await scanImageFolder(root);
  t.equal(folder.samples.length, 21);
  const badIndex = folder.samples.findIndex((s) => s.path === corrupt);
  const plan = trainingPlan(folder.samples.length, SeededRandom.fromSeed(1, DATA_STREAM));

  const warnings: string[] = [];
  const loader = new BatchLoader(folder, { crop: 16, onWarning: (m) => warnings.push(m) });
  const batches = await collect(loader.batches(plan, 8));
  t.same(batches.map((b) => b.dims), [[8, 3, 16, 16], [8, 3, 16, 16], [5, 3, 16, 16]], 'ceil(21/8) batches, the last smaller');
  t.same(batches.map((b) => b.index), [0, 1, 2]);
  t.ok(batches.every((b) => b.images.every((v) => v >= 0 && v <= 1)), 'values in [0,1]');
  t.equal(warnings.length, 1, 'one warning');
  t.match(warnings[0], corrupt!, 'the warning names the file');

  // The corrupt sample's slot holds the next readable sample of its batch.
  const position = plan.findIndex((d) => d.sample === badIndex);
  const b = Math.floor(position / 8);
  const slot = position % 8;
  const next = (slot + 1) % batches[b].dims[0];
  const per = 3 * 16 * 16;
  const batch = batches[b];
  t.same(
    Array.from(batch.images.subarray(slot * per, (slot + 1) * per)),
    Array.from(batch.images.subarray(next * per, (next + 1) * per)),
    'replaced by the next image of its batch',
  );
  t.equal(batch.labels[slot], batch.labels[next], 'with its label');
  const expectedLabels = plan.map((d) => folder.samples[d.sample].label);
  expectedLabels[position] = expectedLabels[b * 8 + next];
  t.same(batches.flatMap((x) => Array.from(x.labels)), expectedLabels, 'labels follow the plan');

  const again = await collect(new BatchLoader(folder, { crop: 16, prefetch: 1, concurrency: 1 }).batches(plan, 8));
  t.ok(
    again.every((x, i) => Buffer.from(x.images.buffer).equals(Buffer.from(batches[i].images.buffer))),
    'bit-identical batches whatever the prefetch and concurrency',
  );
  const tail = await collect(new BatchLoader(folder, { crop: 16 }).batches(plan, 8, { first: 1 }));
  t.same(tail.map((x) => x.index), [1, 2], 'first: starts inside the epoch');
  t.ok(Buffer.from(tail[0].images.buffer).equals(Buffer.from(batches[1].images.buffer)), 'with the same batch contents');

  const valWarnings: string[] = [];
  const val = await collect(
    new BatchLoader(folder, { crop: 16, onWarning: (m) => valWarnings.push(m) }).batches(validationPlan(folder.samples.length), 8, { unreadable: 'drop' }),
  );
  t.equal(val.reduce((n, x) => n + x.dims[0], 0), 20, 'validation drops the unreadable image');
  t.match(valWarnings[0], /left out of validation/);

  // Stopping early leaves no unhandled rejection behind.
  for await (const first of new BatchLoader(folder, { crop: 16 }).batches(plan, 4)) {
    t.equal(first.index, 0);
    break;
  }
});

t.test('a batch of only unreadable images is an E_DATA error', async (t) => {
  const root = join(dir, 'all-bad');
  for (const c of ['a', 'b']) {
    mkdirSync(join(root, c), { recursive: true });
    writeFileSync(join(root, c, 'x.png'), 'not a png');
  }
  const folder = await scanImageFolder(root);
  await rejectsData(t, collect(new BatchLoader(folder, { crop: 8 }).batches(validationPlan(2), 2)), /None of the 2 images of training batch 0/, 'all unreadable');
});
