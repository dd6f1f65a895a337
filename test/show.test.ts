// featureGrid and `mghf show`: the grid's geometry and tile size, the grey normalisation, the
// frames of the maps the entropy step keeps and the labels under them.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { backendInfo } from '../lib/native';
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
const isBackground = (d: Buffer, at: number) => d[at] === 40 && d[at + 1] === 40 && d[at + 2] === 40;

/** Whether the label strip of map j holds any drawn pixel. */
function hasLabel(g: { data: Buffer; width: number; cols: number; tileWidth: number; tileHeight: number; border: number; labelHeight: number }, j: number): boolean {
  const cellW = g.tileWidth + 2 * g.border;
  const cellH = g.tileHeight + 2 * g.border + g.labelHeight;
  const x0 = (j % g.cols) * cellW;
  const y0 = Math.floor(j / g.cols) * cellH + g.tileHeight + 2 * g.border;
  for (let y = y0; y < y0 + g.labelHeight; y++) for (let x = x0; x < x0 + cellW; x++) if (!isBackground(g.data, 3 * (y * g.width + x))) return true;
  return false;
}

t.test('gridLayout: the sheet as predicted from the tile size', async (t) => {
  const { gridLayout } = await import('../lib/show');
  // 24×20 maps at tile 40: 40×33 tiles, frame 2, label strip 7 + 4 (glyph scale 1 under 120 px).
  t.match(gridLayout(128, 20, 24, 10, 40, true), { cols: 10, rows: 13, tileWidth: 40, tileHeight: 33, border: 2, labelHeight: 11, width: 10 * 44, height: 13 * 48 });
  // Tile 130: 130×108, glyph scale 2 (label strip 18), frame round(108/64) = 2.
  t.match(gridLayout(128, 20, 24, 16, 130, true), { tileWidth: 130, tileHeight: 108, border: 2, labelHeight: 18, width: 16 * 134, height: 8 * 130 });
  // Tall maps: the longer side is the height.
  t.match(gridLayout(8, 30, 10, 4, 60, false), { tileWidth: 20, tileHeight: 60, labelHeight: 0, width: 4 * 24, height: 2 * 64 });
  // Default: the image's size when it fits, at least 64, at most 4096 px wide.
  t.match(gridLayout(128, 20, 24, 16, undefined, true), { tileWidth: 64, tileHeight: 53 });
  t.match(gridLayout(128, 100, 200, 16, undefined, true), { tileWidth: 200, tileHeight: 100, width: 16 * 204 });
  const big = gridLayout(128, 512, 512, 16, undefined, true);
  t.ok(big.width <= 4096, `512²: ${big.width} px wide`);
  t.match(big, { tileWidth: 248, border: 4, width: 4096 }, '512²: the largest tile that fits');
});

t.test('labelText: the longest label that fits', async (t) => {
  const { labelText, textWidth } = await import('../lib/show');
  t.equal(textWidth('#12 0.431', 1), 9 * 6 - 1);
  t.equal(textWidth('#12 0.431', 2), 2 * (9 * 6 - 1));
  t.equal(labelText(12, 0.4314, 60, 1), '#12 0.431');
  t.equal(labelText(12, 0.4314, 30, 1), '#12');
  t.equal(labelText(12, 0.4314, 12, 1), '12');
  t.equal(labelText(12, 0.4314, 5, 1), undefined, 'nothing when even the number does not fit');
  t.equal(labelText(12, undefined, 200, 1), '#12', 'no importance: the channel alone');
});

t.test('featureGrid: default DFE, 16 columns, kept maps framed and labelled', { skip: nativeSkip }, async (t) => {
  await ready;
  const { featureGrid } = await import('../lib/show');
  const { decodeImage } = await import('../lib/image');
  const { dfeFeatures } = await import('../lib/loss');
  const x = await decodeImage(png);
  // At the image's own size (tile = its longer side), each map is drawn pixel for pixel.
  const g = await featureGrid(x, { tile: W, device: 'cpu' });
  const cellW = W + 4;
  const cellH = H + 4 + 11;
  t.match(g, { maps: 128, cols: 16, rows: 8, tileWidth: W, tileHeight: H, width: 16 * cellW, height: 8 * cellH, border: 2, labelHeight: 11 });
  t.equal(g.data.length, g.width * g.height * 3);
  t.equal(g.selected.length, 64, 'M = 64 maps kept');
  t.same(g.selected, [...g.selected].sort((a, b) => a - b), 'ascending');
  t.equal(g.importance.length, 128, 'an importance per channel');
  t.ok(g.importance.every((v) => v >= 0 && v <= 1), 'importances in [0, 1]');
  const framed = Array.from({ length: 128 }, (_, j) => isKeptColour(g.data, 3 * (Math.floor(j / 16) * cellH * g.width + (j % 16) * cellW)));
  t.same(framed.flatMap((f, j) => (f ? [j] : [])), g.selected, 'exactly the kept maps are framed');
  const minKept = Math.min(...g.selected.map((j) => g.importance[j]));
  const maxDropped = Math.max(...g.importance.filter((_, j) => !g.selected.includes(j)));
  t.ok(minKept >= maxDropped, 'the kept maps are the most important');
  // 28 px cells fit '#j' but not the importance; every map has its number.
  t.ok(Array.from({ length: 128 }, (_, j) => hasLabel(g, j)).every(Boolean), 'every tile is labelled');

  // Map 5 is drawn min–max normalised: its smallest value black, its largest white, in order.
  const F = (await dfeFeatures(x, { device: 'cpu' })).data.subarray(5 * H * W, 6 * H * W);
  const x0 = 5 * cellW + 2;
  const y0 = 2;
  const grey = (i: number) => g.data[3 * ((y0 + Math.floor(i / W)) * g.width + x0 + (i % W))];
  const lo = F.indexOf(Math.min(...F));
  const hi = F.indexOf(Math.max(...F));
  t.equal(grey(lo), 0, 'minimum → 0');
  t.equal(grey(hi), 255, 'maximum → 255');

  // The default tile enlarges a small image to 64 px so the labels fit.
  const d = await featureGrid(x, { device: 'cpu' });
  t.match(d, { tileWidth: 64, tileHeight: 53, width: 16 * 68, height: 8 * (53 + 4 + 11) });
  t.same(d.selected, g.selected, 'the same kept maps at any tile size');
});

t.test('featureGrid: small DFE, partial last row, options checked', { skip: nativeSkip }, async (t) => {
  const { featureGrid } = await import('../lib/show');
  const { createWeights } = await import('../lib/weights');
  const weights = createWeights({ seed: 1, channels: 8 });
  const x = new Tensor(new Float32Array(3 * 6 * 5).map((_, i) => (i % 7) / 7), [1, 3, 6, 5]);
  const g = await featureGrid(x, { weights, cols: 3, tile: 6, labels: false, device: 'cpu' });
  t.match(g, { maps: 8, cols: 3, rows: 3, tileWidth: 5, tileHeight: 6, labelHeight: 0, width: 3 * 9, height: 3 * 10 });
  t.same(g.selected, [0, 1, 2, 3, 4, 5, 6, 7], 'M capped at N: every map kept');
  t.same(Array.from(g.data.subarray(3 * (2 * 10 * g.width + 2 * 9), 3 * (2 * 10 * g.width + 2 * 9) + 3)), [40, 40, 40], 'the empty ninth cell is background');
  await t.rejects(featureGrid(x, { cols: 0 }), { code: 'E_OPTION' });
  await t.rejects(featureGrid(x, { weights, tile: 0 }), { code: 'E_OPTION' });
  await t.rejects(featureGrid(x, { weights, tile: 1.5 }), { code: 'E_OPTION' });
  await t.rejects(featureGrid(x, { weights, labels: 'yes' as unknown as boolean }), { code: 'E_OPTION' });
  await t.rejects(featureGrid(x, { weights, tile: 8192, cols: 8 }), { code: 'E_LIMIT' }, 'a sheet over the pixel limit');
  await t.rejects(featureGrid(x, { weights, device: 'gpu' as never }), { code: 'E_OPTION' });
  await t.rejects(featureGrid(new Tensor(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4])), { code: 'E_SHAPE' });
});

t.test('featureGrid: a 512² image gives a sheet at most 4096 px wide by default', { skip: nativeSkip }, async (t) => {
  const { featureGrid, gridLayout } = await import('../lib/show');
  const { createWeights } = await import('../lib/weights');
  // A small DFE (32 maps: two full rows of 16) keeps this quick; the width depends only on the columns.
  const weights = createWeights({ seed: 2, channels: 32 });
  const S = 512;
  const px = classPixels(1, 0, S, S);
  const data = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) for (let p = 0; p < S * S; p++) data[c * S * S + p] = px[3 * p + c] / 255;
  const x = new Tensor(data, [1, 3, S, S]);
  const g = await featureGrid(x, { weights, device: 'cpu' });
  t.ok(g.width <= 4096, `${g.width} px wide`);
  t.ok(gridLayout(32, S, S, 16, g.tileWidth + 1, true).width > 4096, 'the largest tile that fits');
  t.match(g, { cols: 16, rows: 2, tileWidth: 248, tileHeight: 248 });
  t.ok(Array.from({ length: 32 }, (_, j) => hasLabel(g, j)).every(Boolean), 'every tile labelled');
});

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const cliSkip = nativeSkip || (existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`);
const runCli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });

t.test('mghf show writes the grid as a PNG; --tile sets its size', { skip: cliSkip }, async (t) => {
  await ready;
  const out = join(dir, 'maps.png');
  const r = runCli(['show', '--image', png, '--out', out, '--cols', '10', '--tile', '40', '--device', 'cpu']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /128 feature maps in 10×13 tiles of 40×33 px \(440×624 px, on cpu\)/);
  t.match(await sharp(out).metadata(), { format: 'png', width: 10 * 44, height: 13 * 48 });

  const big = join(dir, 'maps-130.png');
  const r2 = runCli(['show', '--image', png, '--out', big, '--tile', '130']);
  t.equal(r2.status, 0, r2.stderr);
  t.match(await sharp(big).metadata(), { width: 16 * 134, height: 8 * 130 }, 'a larger tile, a larger sheet, as predicted');

  const def = join(dir, 'maps-default.png');
  const r3 = runCli(['show', '--image', png, '--out', def]);
  t.equal(r3.status, 0, r3.stderr);
  t.match(await sharp(def).metadata(), { width: 16 * 68, height: 8 * 68 }, 'default: 64 px tiles for a small image');

  const missing = runCli(['show', '--image', png]);
  t.equal(missing.status, 2);
  t.equal(missing.stderr, 'mghf: missing --out\nrun "npx mghf help show" for usage\n');
  const zero = runCli(['show', '--image', png, '--out', out, '--tile', '0']);
  t.equal(zero.status, 2);
  t.match(zero.stderr, /^mghf: --tile must be an integer ≥ 1, got "0"\n/);
  const huge = runCli(['show', '--image', png, '--out', out, '--tile', '9000']);
  t.equal(huge.status, 2);
  t.match(huge.stderr, /^mghf: --tile must be at most 8192/);
  if (!backendInfo().cuda.available) {
    const cuda = runCli(['show', '--image', png, '--out', out, '--device', 'cuda']);
    t.equal(cuda.status, 1);
    t.match(cuda.stderr, /^mghf: --device 'cuda' is not available: [^\n]*\n$/);
  }
});
