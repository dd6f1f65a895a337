// The usual SR evaluation protocol: the images rounded to 8 bits, converted to the Y channel of
// ITU-R BT.601 YCbCr (MATLAB's rgb2ycbcr, range 16–235), `border` pixels cropped on every side,
// then PSNR and SSIM (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03,
// L = 255, "valid" windows only), as BasicSR's calculate_psnr / calculate_ssim with
// test_y_channel. Two high-frequency measures complete them:
//  - GMSD (gradient magnitude similarity deviation, Xue et al. 2014: Prewitt gradients, c = 170
//    on 0–255; lower is better; here on the full-resolution Y without the paper's 2× pre-pooling);
//  - HF energy ratio: the energy of the 3×3 Laplacian of SR over that of HR (1 is ideal; a blurry
//    result is below 1, a noisy or ringing one above).

/** Y of an image given as [3, H, W] float RGB in [0, 1] (rounded to 8 bits first), as float64. */
export function yChannel(rgb: Float32Array, H: number, W: number): Float64Array {
  const y = new Float64Array(H * W);
  const q = (v: number) => Math.round(Math.min(1, Math.max(0, v)) * 255) / 255;
  for (let i = 0; i < H * W; i++) {
    y[i] = 16 + 65.481 * q(rgb[i]) + 128.553 * q(rgb[H * W + i]) + 24.966 * q(rgb[2 * H * W + i]);
  }
  return y;
}

function crop(a: Float64Array, H: number, W: number, b: number): { a: Float64Array; H: number; W: number } {
  const h = H - 2 * b, w = W - 2 * b;
  const out = new Float64Array(h * w);
  for (let r = 0; r < h; r++) out.set(a.subarray((r + b) * W + b, (r + b) * W + b + w), r * w);
  return { a: out, H: h, W: w };
}

export function psnr(x: Float64Array, y: Float64Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i] - y[i]) ** 2;
  const mse = s / x.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

/** Separable 'valid' filtering with a 1-D kernel k (length 2r+1) along both axes. */
function filterValid(a: Float64Array, H: number, W: number, k: number[]): { a: Float64Array; H: number; W: number } {
  const n = k.length;
  const w1 = W - n + 1, h1 = H - n + 1;
  const tmp = new Float64Array(H * w1);
  for (let r = 0; r < H; r++)
    for (let c = 0; c < w1; c++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += k[j] * a[r * W + c + j];
      tmp[r * w1 + c] = s;
    }
  const out = new Float64Array(h1 * w1);
  for (let r = 0; r < h1; r++)
    for (let c = 0; c < w1; c++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += k[j] * tmp[(r + j) * w1 + c];
      out[r * w1 + c] = s;
    }
  return { a: out, H: h1, W: w1 };
}

const GAUSS = (() => {
  const k: number[] = [];
  for (let i = -5; i <= 5; i++) k.push(Math.exp(-(i * i) / (2 * 1.5 * 1.5)));
  const s = k.reduce((a, b) => a + b, 0);
  return k.map((v) => v / s);
})();

export function ssim(x: Float64Array, y: Float64Array, H: number, W: number): number {
  const C1 = (0.01 * 255) ** 2, C2 = (0.03 * 255) ** 2;
  const prod = (a: Float64Array, b: Float64Array) => a.map((v, i) => v * b[i]);
  const mx = filterValid(x, H, W, GAUSS), my = filterValid(y, H, W, GAUSS);
  const sxx = filterValid(prod(x, x), H, W, GAUSS), syy = filterValid(prod(y, y), H, W, GAUSS), sxy = filterValid(prod(x, y), H, W, GAUSS);
  let s = 0;
  const n = mx.a.length;
  for (let i = 0; i < n; i++) {
    const ux = mx.a[i], uy = my.a[i];
    const vx = sxx.a[i] - ux * ux, vy = syy.a[i] - uy * uy, cxy = sxy.a[i] - ux * uy;
    s += ((2 * ux * uy + C1) * (2 * cxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2));
  }
  return s / n;
}

/** Prewitt gradient magnitude at interior pixels (the outer ring left 0). */
function gradientMagnitude(a: Float64Array, H: number, W: number): Float64Array {
  const g = new Float64Array(H * W);
  for (let r = 1; r < H - 1; r++)
    for (let c = 1; c < W - 1; c++) {
      const p = (dr: number, dc: number) => a[(r + dr) * W + c + dc];
      const gx = (p(-1, 1) + p(0, 1) + p(1, 1) - p(-1, -1) - p(0, -1) - p(1, -1)) / 3;
      const gy = (p(1, -1) + p(1, 0) + p(1, 1) - p(-1, -1) - p(-1, 0) - p(-1, 1)) / 3;
      g[r * W + c] = Math.hypot(gx, gy);
    }
  return g;
}

export function gmsd(x: Float64Array, y: Float64Array, H: number, W: number): number {
  const gx = gradientMagnitude(x, H, W), gy = gradientMagnitude(y, H, W);
  const c = 170;
  const vals: number[] = [];
  for (let r = 1; r < H - 1; r++)
    for (let col = 1; col < W - 1; col++) {
      const i = r * W + col;
      vals.push((2 * gx[i] * gy[i] + c) / (gx[i] * gx[i] + gy[i] * gy[i] + c));
    }
  const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
  return Math.sqrt(vals.reduce((a, v) => a + (v - mean) ** 2, 0) / vals.length);
}

function laplacianEnergy(a: Float64Array, H: number, W: number): number {
  let e = 0;
  for (let r = 1; r < H - 1; r++)
    for (let c = 1; c < W - 1; c++) {
      const i = r * W + c;
      const l = 4 * a[i] - a[i - 1] - a[i + 1] - a[i - W] - a[i + W];
      e += l * l;
    }
  return e;
}

export interface ImageScores {
  psnr: number;
  ssim: number;
  gmsd: number;
  hfRatio: number;
}

/** Every score of sr against hr, both [3, H, W] RGB in [0, 1], on Y with `border` cropped. */
export function scoreImage(sr: Float32Array, hr: Float32Array, H: number, W: number, border = 4): ImageScores {
  const ys = crop(yChannel(sr, H, W), H, W, border);
  const yh = crop(yChannel(hr, H, W), H, W, border);
  return {
    psnr: psnr(ys.a, yh.a),
    ssim: ssim(ys.a, yh.a, ys.H, ys.W),
    gmsd: gmsd(ys.a, yh.a, ys.H, ys.W),
    hfRatio: laplacianEnergy(ys.a, ys.H, ys.W) / laplacianEnergy(yh.a, yh.H, yh.W),
  };
}

/** The mean of each score over a list. */
export function meanScores(list: readonly ImageScores[]): ImageScores {
  const m = (k: keyof ImageScores) => list.reduce((a, s) => a + s[k], 0) / list.length;
  return { psnr: m('psnr'), ssim: m('ssim'), gmsd: m('gmsd'), hfRatio: m('hfRatio') };
}
