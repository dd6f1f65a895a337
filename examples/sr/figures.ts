// The report's pictures, drawn as SVG and rendered to PNG by sharp (already a dependency of
// mghf): the training-loss curves, and crops of the same regions from bicubic, each model and the
// ground truth side by side.
import { join } from 'node:path';

import sharp from 'sharp';

import { SrNet, type Tensor, ops, upscaleImage } from 'mghf';

import type { EvalPair } from './data';
import type { HistoryPoint } from './train';

const COLOURS = ['#555555', '#1f77b4', '#2ca02c', '#d62728', '#9467bd', '#ff7f0e', '#8c564b'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Moving average over `k` points (the per-step loss is noisy: one random batch). */
function smooth(v: number[], k: number): number[] {
  const out: number[] = [];
  let s = 0;
  for (let i = 0; i < v.length; i++) {
    s += v[i];
    if (i >= k) s -= v[i - k];
    out.push(s / Math.min(i + 1, k));
  }
  return out;
}

/**
 * Two panels: the L1 part of the training loss of every run (smoothed), on one step axis (the
 * fine-tunes start where the base ended), and each fine-tune's total loss L1 + λ·MGHF.
 */
export async function writeLossPlot(file: string, runs: Array<{ label: string; history: HistoryPoint[]; offset: number }>): Promise<void> {
  const W = 900, H = 340, pad = 60;
  const panel = (x0: number, w: number, title: string, series: Array<{ label: string; colour: string; xs: number[]; ys: number[] }>, logY: boolean) => {
    const allX = series.flatMap((s) => s.xs), allY = series.flatMap((s) => s.ys).filter((y) => y > 0);
    const xmin = Math.min(...allX), xmax = Math.max(...allX);
    const f = (y: number) => (logY ? Math.log10(y) : y);
    const ymin = Math.min(...allY.map(f)), ymax = Math.max(...allY.map(f));
    const px = (x: number) => x0 + pad + ((x - xmin) / Math.max(1e-9, xmax - xmin)) * (w - pad - 10);
    const py = (y: number) => H - pad + 10 - ((f(y) - ymin) / Math.max(1e-9, ymax - ymin)) * (H - pad - 40);
    let svg = `<text x="${x0 + w / 2}" y="20" text-anchor="middle" font-size="15" font-family="sans-serif">${esc(title)}</text>`;
    svg += `<rect x="${x0 + pad}" y="30" width="${w - pad - 10}" height="${H - pad - 20}" fill="none" stroke="#999"/>`;
    for (let i = 0; i <= 4; i++) {
      const yv = ymin + ((ymax - ymin) * i) / 4;
      const label = logY ? (10 ** yv).toPrecision(3) : yv.toPrecision(3);
      const yy = H - pad + 10 - ((yv - ymin) / Math.max(1e-9, ymax - ymin)) * (H - pad - 40);
      svg += `<text x="${x0 + pad - 4}" y="${yy + 4}" text-anchor="end" font-size="11" font-family="sans-serif">${label}</text>`;
      const xv = xmin + ((xmax - xmin) * i) / 4;
      svg += `<text x="${px(xv)}" y="${H - pad + 26}" text-anchor="middle" font-size="11" font-family="sans-serif">${Math.round(xv)}</text>`;
    }
    svg += `<text x="${x0 + w / 2}" y="${H - 12}" text-anchor="middle" font-size="12" font-family="sans-serif">step</text>`;
    series.forEach((s, i) => {
      const pts = s.xs.map((x, j) => `${px(x).toFixed(1)},${py(Math.max(s.ys[j], 1e-12)).toFixed(1)}`).join(' ');
      svg += `<polyline points="${pts}" fill="none" stroke="${s.colour}" stroke-width="1.5"/>`;
      svg += `<text x="${x0 + pad + 8}" y="${46 + 14 * i}" font-size="11" font-family="sans-serif" fill="${s.colour}">${esc(s.label)}</text>`;
    });
    return svg;
  };
  const k = (h: HistoryPoint[]) => Math.max(1, Math.round(h.length / 30));
  const colour = (i: number) => COLOURS[i % COLOURS.length];
  const l1Series = runs.map((r, i) => ({ label: r.label, colour: colour(i), xs: r.history.map((p) => p.step + r.offset), ys: smooth(r.history.map((p) => p.l1), k(r.history)) }));
  const totalSeries = runs.map((r, i) => ({ r, i })).filter(({ r }) => r.offset > 0).map(({ r, i }) => ({ label: r.label, colour: colour(i), xs: r.history.map((p) => p.step), ys: smooth(r.history.map((p) => p.loss), k(r.history)) }));
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H}"><rect width="100%" height="100%" fill="white"/>` +
    panel(0, W, 'Training L1 (smoothed, log scale)', l1Series, true) +
    panel(W, W, 'Fine-tunes: total loss L1 + λ·MGHF (smoothed, log scale)', totalSeries, true) +
    '</svg>';
  await sharp(Buffer.from(svg)).png().toFile(file);
}

/** The crop×crop window of img with the most Laplacian energy (where detail is), on a stride-8 grid. */
function detailWindow(hr: Tensor, crop: number): { y: number; x: number } {
  const [, , H, W] = hr.dims;
  const g = hr.data.subarray(H * W, 2 * H * W);
  let best = { y: 0, x: 0 }, bestE = -1;
  for (let y = 8; y + crop + 8 <= H; y += 8)
    for (let x = 8; x + crop + 8 <= W; x += 8) {
      let e = 0;
      for (let r = y; r < y + crop; r += 2)
        for (let c = x; c < x + crop; c += 2) {
          const i = r * W + c;
          const l = 4 * g[i] - g[i - 1] - g[i + 1] - g[i - W] - g[i + W];
          e += l * l;
        }
      if (e > bestE) [bestE, best] = [e, { y, x }];
    }
  return best;
}

async function cropPng(t: Tensor, y: number, x: number, crop: number, zoom: number): Promise<string> {
  const [, , H, W] = t.dims;
  const rgb = Buffer.alloc(crop * crop * 3);
  for (let r = 0; r < crop; r++)
    for (let c = 0; c < crop; c++)
      for (let ch = 0; ch < 3; ch++) {
        const v = t.data[(ch * H + y + r) * W + x + c];
        rgb[(r * crop + c) * 3 + ch] = Math.round(Math.min(1, Math.max(0, v)) * 255);
      }
  const png = await sharp(rgb, { raw: { width: crop, height: crop, channels: 3 } }).resize(crop * zoom, crop * zoom, { kernel: 'nearest' }).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

/**
 * One PNG per chosen image: bicubic, each model, ground truth, at the image's most detailed
 * 64×64 window, enlarged 3× (nearest neighbour, so pixels stay pixels). Returns the file names.
 */
export async function writeCrops(dir: string, sets: Record<string, EvalPair[]>, models: Array<{ label: string; model: string }>): Promise<string[]> {
  const picks: Array<[string, string]> = [['Set5', 'img_003.png'], ['Set14', 'img_001.png'], ['Set14', 'img_014.png'], ['Set14', 'img_011.png']];
  const nets = await Promise.all(models.map(async (m) => ({ label: m.label, net: await SrNet.load(m.model) })));
  const files: string[] = [];
  const crop = 64, zoom = 3, cell = crop * zoom, gap = 6, top = 22;
  for (const [set, name] of picks) {
    const pair = sets[set]?.find((p) => p.name === name);
    if (!pair) continue;
    const { y, x } = detailWindow(pair.hr, crop);
    const columns: Array<{ label: string; image: Tensor }> = [{ label: 'bicubic', image: await ops.resize(pair.lr, { scale: 4 }) }];
    for (const n of nets) columns.push({ label: n.label, image: await upscaleImage(n.net, pair.lr) });
    columns.push({ label: 'ground truth', image: pair.hr });
    let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${columns.length * (cell + gap)}" height="${cell + top}"><rect width="100%" height="100%" fill="white"/>`;
    for (let i = 0; i < columns.length; i++) {
      const href = await cropPng(columns[i].image, y, x, crop, zoom);
      svg += `<text x="${i * (cell + gap) + cell / 2}" y="15" text-anchor="middle" font-size="12" font-family="sans-serif">${esc(columns[i].label)}</text>`;
      svg += `<image x="${i * (cell + gap)}" y="${top}" width="${cell}" height="${cell}" href="${href}"/>`;
    }
    svg += '</svg>';
    const file = `crops-${set}-${name.replace(/\.png$/, '')}.png`;
    await sharp(Buffer.from(svg)).png().toFile(join(dir, file));
    files.push(file);
    for (const c of columns) if (c.image !== pair.hr) c.image.dispose();
  }
  for (const n of nets) n.net.dispose();
  return files;
}
