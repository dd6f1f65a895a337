// A picture of what the DFE sees (`mghf show`): every feature map of one image in a grid, each
// min–max normalised to grey and resized to a tile, the maps the entropy step keeps (SPEC §4)
// framed in colour, and under each tile its channel number and importance.

import sharp from 'sharp';
import type { Device } from './device';
import { MghfError, invalidParameterError } from './errors';
import { dfeFeatures, mghfLoss } from './loss';
import { Tensor, type TensorLike } from './tensor';
import { checkOptions, is, toImageTensor } from './validate';
import type { DfeWeights } from './weights';

export interface FeatureGridOptions {
  /** DFE weights (default: the library default). */
  weights?: DfeWeights;
  /** Maps per row (default 16, at most the number of maps). */
  cols?: number;
  /** Maps kept by the entropy step (SPEC §4 M, default 64). */
  M?: number;
  /**
   * The longer side of each drawn map in pixels (the other follows the image's aspect ratio).
   * Default: the image's longer side, at least 64, and at most what keeps the sheet within
   * DEFAULT_SHEET_WIDTH (4096) pixels wide.
   */
  tile?: number;
  /** Label each tile with its channel number and importance (default true). */
  labels?: boolean;
  /** 'auto' (default: CUDA device 0 when usable, else the CPU), 'cpu', 'cuda' or 'cuda:N'. */
  device?: Device;
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
  /** The importance I_j of every channel (SPEC §4, the image as both sr and gt). */
  importance: number[];
  /** Each map as drawn, in pixels (its longer side is `opts.tile`). */
  tileWidth: number;
  tileHeight: number;
  /** Width of the frame round each map, in pixels: 2, or about 1/64 of the tile's short side when larger. */
  border: number;
  /** Height of the label strip under each framed map (0 without labels). */
  labelHeight: number;
}

/** The sheet width the default tile size keeps within. */
export const DEFAULT_SHEET_WIDTH = 4096;
/** The smallest default tile: small images are enlarged so their labels fit. */
const MIN_DEFAULT_TILE = 64;
const MAX_TILE = 8192;
/** Largest sheet drawn: 2^27 pixels (384 MiB as RGB). */
export const MAX_SHEET_PIXELS = 2 ** 27;

const BACKGROUND = [40, 40, 40];
const KEPT = [255, 140, 0];
const LABEL = [220, 220, 220];

/** The geometry of a grid: what featureGrid draws for N maps of H×W pixels. */
export interface GridLayout {
  cols: number;
  rows: number;
  tileWidth: number;
  tileHeight: number;
  border: number;
  labelHeight: number;
  /** Glyph scale of the labels (1: 5×7 pixels per character, 2: 10×14). */
  labelScale: number;
  width: number;
  height: number;
}

/**
 * The layout of a grid of `maps` maps of H×W pixels: `tile` the longer side of each drawn map
 * (default: see FeatureGridOptions.tile), cells of (tileWidth + 2·border) × (tileHeight + 2·border
 * + labelHeight) in `cols` columns.
 */
export function gridLayout(maps: number, H: number, W: number, cols0: number, tile: number | undefined, labels: boolean): GridLayout {
  const cols = Math.min(cols0, maps);
  const rows = Math.ceil(maps / cols);
  const at = (T: number) => {
    const tileWidth = W >= H ? T : Math.max(1, Math.round((T * W) / H));
    const tileHeight = H >= W ? T : Math.max(1, Math.round((T * H) / W));
    const border = Math.max(2, Math.round(Math.min(tileWidth, tileHeight) / 64));
    const labelScale = tileWidth >= 120 ? 2 : 1;
    const labelHeight = labels ? GLYPH_H * labelScale + 4 : 0;
    const cellW = tileWidth + 2 * border;
    const cellH = tileHeight + 2 * border + labelHeight;
    return { cols, rows, tileWidth, tileHeight, border, labelHeight, labelScale, width: cols * cellW, height: rows * cellH };
  };
  if (tile !== undefined) return at(tile);
  let T = Math.max(Math.max(H, W), MIN_DEFAULT_TILE);
  while (T > 1 && at(T).width > DEFAULT_SHEET_WIDTH) T--;
  return at(T);
}

/**
 * The DFE feature maps of one image `[1, 3, H, W]` (RGB in [0, 1]) as a grid picture: map j at
 * row ⌊j / cols⌋, column j mod cols, min–max normalised to grey (a constant map mid-grey),
 * resized to the tile by averaging (enlarged by repeating pixels), framed in orange when the
 * entropy step keeps it, and labelled `#j I` underneath (I the channel's importance, 3 decimals;
 * `j` alone, or nothing, when the tile is too narrow for it).
 */
export async function featureGrid(image: Tensor | TensorLike, opts?: FeatureGridOptions): Promise<FeatureGrid> {
  const o = checkOptions(opts, ['weights', 'cols', 'M', 'tile', 'labels', 'device'] as const);
  const x = toImageTensor(image, 'image', 'NCHW', 'unit');
  if (x.dims[0] !== 1) throw new MghfError('E_SHAPE', `Expected one image ([1,3,H,W]) for image but received a batch of ${x.dims[0]}`, { argument: 'image' });
  const cols0 = o.cols ?? 16;
  if (!is.positiveInteger(cols0)) throw invalidParameterError('E_OPTION', 'opts.cols', 'an integer ≥ 1', cols0);
  const tile = o.tile;
  if (tile !== undefined && (!is.positiveInteger(tile) || tile > MAX_TILE)) {
    throw invalidParameterError('E_OPTION', 'opts.tile', `an integer from 1 to ${MAX_TILE}`, tile);
  }
  const labels = o.labels ?? true;
  if (!is.bool(labels)) throw invalidParameterError('E_OPTION', 'opts.labels', 'a boolean', labels);
  const weights = o.weights as DfeWeights | undefined;
  const common = { ...(o.device !== undefined ? { device: o.device as Device } : {}), ...(weights ? { weights } : {}) };

  const features = await dfeFeatures(x, common);
  const [, N, H, W] = features.dims;
  const layout = gridLayout(N, H, W, cols0, tile, labels);
  if (layout.width * layout.height > MAX_SHEET_PIXELS) {
    throw new MghfError(
      'E_LIMIT',
      `A grid of ${N} maps at tile ${tile ?? 'default'} would be ${layout.width}×${layout.height} pixels, ` +
        `over the ${MAX_SHEET_PIXELS / 2 ** 20} Mpx limit; choose a smaller tile`,
      { argument: 'opts.tile' },
    );
  }
  // The image against itself: only the CSC term is needed for the selection (Γ1 = Γ3 = 0 skip the rest).
  const details = await mghfLoss(x, x, {
    ...common,
    grad: false,
    gamma1: 0,
    gamma3: 0,
    returnDetails: true,
    ...(o.M !== undefined ? { M: o.M as number } : {}),
  });
  const selected = details.selected?.[0] ?? [];
  const importance = details.importance?.[0] ?? [];

  const { cols, rows, tileWidth: tw, tileHeight: th, border, labelHeight, labelScale, width, height } = layout;
  const cellW = tw + 2 * border;
  const cellH = th + 2 * border + labelHeight;
  const data = Buffer.alloc(width * height * 3);
  for (let p = 0; p < width * height; p++) data.set(BACKGROUND, 3 * p);

  // Source ranges of each tile column and row: [from, to) pixels of the map.
  const spans = (n: number, size: number) =>
    Array.from({ length: n }, (_, i) => {
      const from = Math.min(size - 1, Math.floor((i * size) / n));
      return [from, Math.max(from + 1, Math.floor(((i + 1) * size) / n))] as const;
    });
  const xs = spans(tw, W);
  const ys = spans(th, H);

  const kept = new Set(selected);
  const F = features.data;
  const plane = H * W;
  for (let j = 0; j < N; j++) {
    const x0 = (j % cols) * cellW;
    const y0 = Math.floor(j / cols) * cellH;
    if (kept.has(j)) {
      for (let y = 0; y < th + 2 * border; y++) for (let xx = 0; xx < cellW; xx++) data.set(KEPT, 3 * ((y0 + y) * width + x0 + xx));
    }
    const map = F.subarray(j * plane, (j + 1) * plane);
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of map) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const scale = hi > lo ? 255 / (hi - lo) : 0;
    for (let ty = 0; ty < th; ty++) {
      const [ya, yb] = ys[ty];
      for (let tx = 0; tx < tw; tx++) {
        const [xa, xb] = xs[tx];
        let g = 128;
        if (scale !== 0) {
          let sum = 0;
          for (let y = ya; y < yb; y++) for (let xx = xa; xx < xb; xx++) sum += map[y * W + xx];
          g = Math.round((sum / ((yb - ya) * (xb - xa)) - lo) * scale);
        }
        const at = 3 * ((y0 + border + ty) * width + x0 + border + tx);
        data[at] = data[at + 1] = data[at + 2] = g;
      }
    }
    if (labelHeight > 0) {
      const text = labelText(j, importance[j], cellW - 2, labelScale);
      if (text) drawText(data, width, x0 + 1, y0 + th + 2 * border + 2, text, labelScale, kept.has(j) ? KEPT : LABEL);
    }
  }
  return {
    data,
    width,
    height,
    cols,
    rows,
    maps: N,
    selected,
    importance,
    tileWidth: tw,
    tileHeight: th,
    border,
    labelHeight,
  };
}

/** Write a grid with sharp; the format follows the file name's extension (PNG for .png). */
export async function writeFeatureGrid(grid: FeatureGrid, path: string): Promise<void> {
  try {
    await sharp(grid.data, { raw: { width: grid.width, height: grid.height, channels: 3 } }).toFile(path);
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `Cannot write ${path}: ${(err as Error).message}`, { argument: 'out', cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// Labels: a 5×7 pixel font of the few characters they need, drawn directly into the sheet (no
// font files, the same pixels everywhere).

const GLYPH_W = 5;
const GLYPH_H = 7;
const GLYPHS: Record<string, string> = {
  '0': '01110 10001 10011 10101 11001 10001 01110',
  '1': '00100 01100 00100 00100 00100 00100 01110',
  '2': '01110 10001 00001 00010 00100 01000 11111',
  '3': '11111 00010 00100 00010 00001 10001 01110',
  '4': '00010 00110 01010 10010 11111 00010 00010',
  '5': '11111 10000 11110 00001 00001 10001 01110',
  '6': '00110 01000 10000 11110 10001 10001 01110',
  '7': '11111 00001 00010 00100 01000 01000 01000',
  '8': '01110 10001 10001 01110 10001 10001 01110',
  '9': '01110 10001 10001 01111 00001 00010 01100',
  '.': '00000 00000 00000 00000 00000 01100 01100',
  '#': '01010 01010 11111 01010 11111 01010 01010',
  ' ': '00000 00000 00000 00000 00000 00000 00000',
};

/** Width in pixels of `text` at `scale` (one blank column between characters). */
export function textWidth(text: string, scale: number): number {
  return text.length === 0 ? 0 : (text.length * (GLYPH_W + 1) - 1) * scale;
}

/** The longest label that fits in `room` pixels: '#j I' (3 decimals), then 'j', then none. */
export function labelText(channel: number, importance: number | undefined, room: number, scale: number): string | undefined {
  const candidates = [
    ...(importance !== undefined && Number.isFinite(importance) ? [`#${channel} ${importance.toFixed(3)}`] : []),
    `#${channel}`,
    String(channel),
  ];
  return candidates.find((c) => textWidth(c, scale) <= room);
}

function drawText(data: Buffer, width: number, x0: number, y0: number, text: string, scale: number, colour: number[]): void {
  let x = x0;
  for (const ch of text) {
    const rows = (GLYPHS[ch] ?? GLYPHS[' ']).split(' ');
    for (let gy = 0; gy < GLYPH_H; gy++) {
      for (let gx = 0; gx < GLYPH_W; gx++) {
        if (rows[gy][gx] !== '1') continue;
        for (let sy = 0; sy < scale; sy++) for (let sx = 0; sx < scale; sx++) data.set(colour, 3 * ((y0 + gy * scale + sy) * width + x + gx * scale + sx));
      }
    }
    x += (GLYPH_W + 1) * scale;
  }
}
