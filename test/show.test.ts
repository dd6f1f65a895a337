// featureGrid and `mghf show`: the grid's geometry, the grey normalisation and the frames of the
// maps the entropy step keeps.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { Tensor } from '../lib/tensor';
import { classPixels } from './helpers/image-folder';

let nativeSkip: string | false = false;
try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('../lib/native').native();
} catch (err) {
  nativeSkip = `the native addon does not load: ${(err as Error).message.split('\n')[0]}`;
}

const dir = mkdtempSync(join(tmpdir(), 'mghf-show-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const W = 24;
const H = 20;
const png = join(dir, 'image.png');
const ready = sharp(classPixels(2, 0, W, H), { raw: { width: W, height: H, channels: 3 } }).png().toFile(png);

const isKeptColour = (d: Buffer, at: number) => d[at] === 255 && d[at + 1] === 140 && d[at + 2] === 0;

t.test('featureGrid: default DFE, 16 columns, kept maps framed', { skip: nativeSkip }, async (t) => {
  await ready;
  const { featureGrid } = await import('../lib/show');
  const { decodeImage } = await import('../lib/image');
  const { dfeFeatures } = await import('../lib/loss');
  const x = await decodeImage(png);
  const g = await featureGrid(x);
  t.match(g, { maps: 128, cols: 16, rows: 8, width: 16 * (W + 4), height: 8 * (H + 4), border: 2 });
  t.equal(g.data.length, g.width * g.height * 3);
  t.equal(g.selected.length, 64, 'M = 64 maps kept');
  t.same(g.selected, [...g.selected].sort((a, b) => a - b), 'ascending');
  const framed = Array.from({ length: 128 }, (_, j) => isKeptColour(g.data, 3 * (Math.floor(j / 16) * (H + 4) * g.width + (j % 16) * (W + 4))));
  t.same(framed.flatMap((f, j) => (f ? [j] : [])), g.selected, 'exactly the kept maps are framed');

  // Map 5 is drawn min–max normalised: its smallest value black, its largest white, in order.
  const F = (await dfeFeatures(x, { device: 'cpu' })).data.subarray(5 * H * W, 6 * H * W);
  const x0 = 5 * (W + 4) + 2;
  const y0 = 2;
  const grey = (i: number) => g.data[3 * ((y0 + Math.floor(i / W)) * g.width + x0 + (i % W))];
  const lo = F.indexOf(Math.min(...F));
  const hi = F.indexOf(Math.max(...F));
  t.equal(grey(lo), 0, 'minimum → 0');
  t.equal(grey(hi), 255, 'maximum → 255');
});

t.test('featureGrid: small DFE, partial last row, options checked', { skip: nativeSkip }, async (t) => {
  const { featureGrid } = await import('../lib/show');
  const { createWeights } = await import('../lib/weights');
  const weights = createWeights({ seed: 1, channels: 8 });
  const x = new Tensor(new Float32Array(3 * 6 * 5).map((_, i) => (i % 7) / 7), [1, 3, 6, 5]);
  const g = await featureGrid(x, { weights, cols: 3 });
  t.match(g, { maps: 8, cols: 3, rows: 3, width: 3 * 9, height: 3 * 10 });
  t.same(g.selected, [0, 1, 2, 3, 4, 5, 6, 7], 'M capped at N: every map kept');
  t.same(Array.from(g.data.subarray(3 * (2 * 10 * g.width + 2 * 9), 3 * (2 * 10 * g.width + 2 * 9) + 3)), [40, 40, 40], 'the empty ninth cell is background');
  await t.rejects(featureGrid(x, { cols: 0 }), { code: 'E_OPTION' });
  await t.rejects(featureGrid(new Tensor(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4])), { code: 'E_SHAPE' });
});

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const cliSkip = nativeSkip || (existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`);

t.test('mghf show writes the grid as a PNG', { skip: cliSkip }, async (t) => {
  await ready;
  const out = join(dir, 'maps.png');
  const r = spawnSync(process.execPath, [CLI, 'show', '--image', png, '--out', out, '--cols', '10'], { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /128 feature maps in 10×13/);
  const meta = await sharp(out).metadata();
  t.match(meta, { format: 'png', width: 10 * (W + 4), height: 13 * (H + 4) });
  const missing = spawnSync(process.execPath, [CLI, 'show', '--image', png], { encoding: 'utf8' });
  t.equal(missing.status, 2);
  t.match(missing.stderr, /missing --out/);
});
