// A picture of what the DFE sees (`mghf show`): every feature map of one image in a grid, each
// min–max normalised to grey, and the maps the entropy step keeps (SPEC §4) framed in colour.

import sharp from 'sharp';
import { MghfError, invalidParameterError } from './errors';
import { dfeFeatures, mghfLoss } from './loss';
import { Tensor } from './tensor';
import { checkOptions, is, toImageTensor } from './validate';
import type { DfeWeights } from './weights';

export interface FeatureGridOptions {
  /** DFE weights (default: the library default). */
  weights?: DfeWeights;
  /** Maps per row (default 16, at most the number of maps). */
  cols?: number;
  /** Maps kept by the entropy step (SPEC §4 M, default 64). */
  M?: number;
}

export interface FeatureGrid {
  /** Interleaved 8-bit RGB, `width`×`height`. */
  data: Buffer;
  width: number;
  height: number;
  cols: number;
  rows: number;
  /** N, the number of maps. */
  maps: number;
  /** The kept channels, ascending (the image as both sr and gt). */
  selected: number[];
  /** Width of the frame round each map, in pixels: 2, or about 1/64 of the image's short side when larger. */
  border: number;
}

const BACKGROUND = [40, 40, 40];
const KEPT = [255, 140, 0];

/**
 * The DFE feature maps of one image `[1, 3, H, W]` (RGB in [0, 1]) as a grid picture: cells of
 * (W + 2b)×(H + 2b) pixels (b = `border`) in `cols` columns, map j at row ⌊j / cols⌋, column j mod cols, framed in
 * orange when the entropy step keeps it. A constant map is drawn mid-grey.
 */
export async function featureGrid(image: Tensor | unknown, opts?: FeatureGridOptions): Promise<FeatureGrid> {
  const o = checkOptions(opts, ['weights', 'cols', 'M'] as const);
  const x = toImageTensor(image, 'image', 'NCHW', 'unit');
  if (x.dims[0] !== 1) throw new MghfError('E_SHAPE', `Expected one image ([1,3,H,W]) for image but received a batch of ${x.dims[0]}`, { argument: 'image' });
  const cols0 = o.cols ?? 16;
  if (!is.positiveInteger(cols0)) throw invalidParameterError('E_OPTION', 'opts.cols', 'an integer ≥ 1', cols0);
  const weights = o.weights as DfeWeights | undefined;
  const common = { device: 'cpu' as const, ...(weights ? { weights } : {}) };

  const features = await dfeFeatures(x, common);
  // The image against itself: only the CSC term is needed for the selection (Γ1 = Γ3 = 0 skip the rest).
  const details = await mghfLoss(x, x, {
    ...common,
    gamma1: 0,
    gamma3: 0,
    returnDetails: true,
    ...(o.M !== undefined ? { M: o.M as number } : {}),
  });
  const selected = details.selected?.[0] ?? [];

  const [, N, H, W] = features.dims;
  const border = Math.max(2, Math.round(Math.min(H, W) / 64));
  const cols = Math.min(cols0, N);
  const rows = Math.ceil(N / cols);
  const cellW = W + 2 * border;
  const cellH = H + 2 * border;
  const width = cols * cellW;
  const height = rows * cellH;
  const data = Buffer.alloc(width * height * 3);
  for (let p = 0; p < width * height; p++) data.set(BACKGROUND, 3 * p);

  const kept = new Set(selected);
  const F = features.data;
  const plane = H * W;
  for (let j = 0; j < N; j++) {
    const x0 = (j % cols) * cellW;
    const y0 = Math.floor(j / cols) * cellH;
    if (kept.has(j)) {
      for (let y = 0; y < cellH; y++) for (let xx = 0; xx < cellW; xx++) data.set(KEPT, 3 * ((y0 + y) * width + x0 + xx));
    }
    const map = F.subarray(j * plane, (j + 1) * plane);
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of map) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const scale = hi > lo ? 255 / (hi - lo) : 0;
    for (let y = 0; y < H; y++) {
      for (let xx = 0; xx < W; xx++) {
        const g = scale === 0 ? 128 : Math.round((map[y * W + xx] - lo) * scale);
        const at = 3 * ((y0 + border + y) * width + x0 + border + xx);
        data[at] = data[at + 1] = data[at + 2] = g;
      }
    }
  }
  return { data, width, height, cols, rows, maps: N, selected, border };
}

/** Write a grid with sharp; the format follows the file name's extension (PNG for .png). */
export async function writeFeatureGrid(grid: FeatureGrid, path: string): Promise<void> {
  try {
    await sharp(grid.data, { raw: { width: grid.width, height: grid.height, channels: 3 } }).toFile(path);
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `Cannot write ${path}: ${(err as Error).message}`, { argument: 'out', cause: err });
  }
}
