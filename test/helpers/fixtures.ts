// Reads the golden cases copied from ../shared/fixtures (see its README for the format).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Tensor, loadWeightsSync, type DfeWeights } from '../../lib/index';
import { mulberry32 } from '../../lib/srnet';

export const FIXTURE_DIR = join(__dirname, '..', 'fixtures');

export interface FixtureCase {
  name: string;
  dims: number[];
  options: Record<string, unknown>;
  /** True when the M-th and (M+1)-th importances are within 4/(H·W) (SPEC §8: either selection is right). */
  nearTie: boolean;
  expected: {
    loss: number;
    parts: Record<string, number>;
    skipped: string[];
    gradNorm: number;
    importance: number[][] | null;
    selected: number[][] | null;
    topMGap: number[] | null;
  };
  sr: Tensor;
  gt: Tensor;
  grad: Float32Array;
  weights: DfeWeights;
}

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  const out = new Float32Array(b.length / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
}

export function fixtureNames(prefix = ''): string[] {
  return readdirSync(FIXTURE_DIR).filter((n) => n.startsWith(prefix)).sort();
}

export function loadFixture(name: string): FixtureCase {
  const dir = join(FIXTURE_DIR, name);
  const c = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8'));
  return {
    name,
    dims: c.dims,
    options: c.options ?? {},
    nearTie: c.nearTie ?? false,
    expected: c.expected,
    sr: new Tensor(readF32(join(dir, 'sr.f32')), c.dims),
    gt: new Tensor(readF32(join(dir, 'gt.f32')), c.dims),
    grad: readF32(join(dir, 'grad.f32')),
    weights: loadWeightsSync(join(dir, 'weights.safetensors')),
  };
}

/** SPEC §8: |value − ref| ≤ 1e-4·|ref| + 1e-7 */
export function withinValueTolerance(value: number, ref: number): boolean {
  return Math.abs(value - ref) <= 1e-4 * Math.abs(ref) + 1e-7;
}

/** A tensor of `dims` with values uniform in [lo, hi), the same for the same seed. */
export function random(dims: readonly number[], seed: number, lo = -1, hi = 1): Tensor {
  const rand = mulberry32(seed);
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * rand();
  return new Tensor(data, dims);
}

/** ‖a − b‖ / ‖b‖ */
export function relativeL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

/** Deterministic test images: a smooth gt with edges and texture, sr = gt + noise. */
export function imagePair(dims: number[], seed = 1): { sr: Tensor; gt: Tensor } {
  const [b, c, h, w] = dims;
  let s = seed >>> 0 || 1;
  const rand = () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
  const gt = new Float32Array(b * c * h * w);
  const sr = new Float32Array(gt.length);
  for (let n = 0; n < b; n++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const i = ((n * c + ch) * h + y) * w + x;
          const v = 0.5 + 0.3 * Math.sin((x + 3 * n) / 5 + ch) * Math.cos(y / 7) + (x > w / 2 ? 0.1 : 0) + 0.05 * (rand() - 0.5);
          gt[i] = Math.min(0.97, Math.max(0.03, v));
          sr[i] = Math.min(1, Math.max(0, gt[i] + 0.04 * (rand() - 0.5)));
        }
  return { sr: new Tensor(sr, dims), gt: new Tensor(gt, dims) };
}
