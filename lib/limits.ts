// Bounded work: the range of every numeric option of mghfLoss, and an up-front estimate of the
// floating-point work and memory of a call, so that no option value or input size can make a call
// run for hours or exhaust memory before it fails (issue 13). Each bound covers every sensible use
// with a wide margin; its reason is beside it and in the README's options table.

import { totalmem } from 'node:os';
import { MghfError } from './errors';

/** An inclusive range with the reason it is wide enough and no wider. */
export interface Bound {
  min: number;
  max: number;
  integer: boolean;
  why: string;
}

const bound = (min: number, max: number, integer: boolean, why: string): Bound => ({ min, max, integer, why });

// The DFE's most channels (weights.ts MAX_CHANNELS): M can never usefully exceed it.
const MAX_CHANNELS = 4096;

/** The range of each numeric option of mghfLoss (docs/MATH.md §4–7). */
export const OPTION_BOUNDS = Object.freeze({
  gamma1: bound(0, 1e6, false, 'a term weight; beyond 1e6 the other terms vanish below float32 rounding'),
  gamma2: bound(0, 1e6, false, 'a term weight; beyond 1e6 the other terms vanish below float32 rounding'),
  gamma3: bound(0, 1e6, false, 'a term weight; beyond 1e6 the other terms vanish below float32 rounding'),
  beta1: bound(0, 1e6, false, 'a sub-term weight; beyond 1e6 the other sub-terms vanish below float32 rounding'),
  beta2: bound(0, 1e6, false, 'a sub-term weight; beyond 1e6 the other sub-terms vanish below float32 rounding'),
  beta3: bound(0, 1e6, false, 'a sub-term weight; beyond 1e6 the other sub-terms vanish below float32 rounding'),
  M: bound(1, MAX_CHANNELS, true, 'channels kept; capped at N anyway, and no DFE has more than 4096'),
  alpha: bound(0, 1e3, false, 'importance scale in w = (1 + α·I)^γ with I ∈ [0, 1]; see gamma for the joint limit'),
  gamma: bound(-16, 16, false, 'exponent of the reweighting; with alpha it must also keep (1 + α)^|γ| ≤ 1e4'),
  patch: bound(1, 256, true, 'LIP patch side; 8× the default 32, each patch is a 65,536-long vector at 256'),
  stride: bound(1, 256, true, 'patch grid step; a step past the patch side skips pixels entirely'),
  pmax: bound(1, 4096, true, 'patches per map; 16× the default, Sinkhorn works on pmax² matrices'),
  tau: bound(1e-3, 1e3, false, 'PatchNCE temperature: similarities lie in [-1, 1], so 1/τ ≤ 1000 already makes the softmax one-hot and τ ≥ 1000 flat'),
  epsOt: bound(1e-3, 1e3, false, 'Sinkhorn ε: at 1e-3 the plan is already a permutation, at 1e3 uniform'),
  Q: bound(0, 1e6, false, 'negative-weight scale; f = T·(P−1)·Q enters the logits as τ·ln f, so beyond 1e6 it only shifts them'),
  iters: bound(1, 10_000, true, 'Sinkhorn iterations: 200× the default 50; each one costs 4·P² per map and keeps 4·P doubles for the backward'),
});

export type BoundedOption = keyof typeof OPTION_BOUNDS;

/** The largest reweighting factor (1 + α)^|γ| (docs/MATH.md §4): the Gram term squares w²·F·F', i.e. grows as w⁴. */
export const MAX_REWEIGHT = 1e4;
export const REWEIGHT_WHY =
  'the Gram term grows as w⁴ = (1 + α)^(4|γ|); at w ≤ 1e4 that is ≤ 1e16, leaving float32 (max 3.4e38) room for features up to ~1e5';

/** "an integer from 1 to 10000", "a number from 0.001 to 1000": the expected-value text of a bound. */
export function boundText(b: Bound): string {
  return `${b.integer ? 'an integer' : 'a finite number'} from ${b.min} to ${b.max}`;
}

export function inBound(v: unknown, b: Bound): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= b.min && v <= b.max && (!b.integer || Number.isInteger(v));
}

/** The reweighting's joint limit on alpha and gamma: (1 + α)^|γ| ≤ MAX_REWEIGHT. */
export function checkReweight(alpha: number, gamma: number): void {
  const w = Math.pow(1 + alpha, Math.abs(gamma));
  if (w > MAX_REWEIGHT) {
    throw new MghfError(
      'E_OPTION',
      `Expected (1 + opts.alpha)^|opts.gamma| ≤ ${MAX_REWEIGHT} but received (1 + ${alpha})^${Math.abs(gamma)} = ${w.toPrecision(3)}: ` +
        `${REWEIGHT_WHY}; lower alpha or |gamma|`,
      { argument: 'opts.gamma' },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The cost of a call

/**
 * Most floating-point operations one call may take: 2e13, about 80× the default MGHF-c call at
 * B=4, 3×256×256 (2.5e11). A B=16 512×512 default call (4e12) passes; on 2 CPU cores 2e13 is
 * some minutes, on a GPU seconds.
 */
export const MAX_FLOPS = 2e13;
/** Most memory one call may need: this fraction of the machine's RAM (os.totalmem()). */
export const MAX_MEMORY_FRACTION = 0.75;

/** What a loss call needs to know to be costed; every field already validated. */
export interface CostInput {
  B: number;
  H: number;
  W: number;
  /** DFE architecture: channels N, blocks K, expand e. */
  channels: number;
  blocks: number;
  expand: number;
  variant: 'n' | 'c';
  gamma1: number;
  gamma2: number;
  gamma3: number;
  M: number;
  patch: number;
  stride: number;
  pmax: number;
  iters: number;
  sinkhornGrad: boolean;
  /** Sinkhorn ε (default 1): below LOG_DOMAIN_EPS the core may run Sinkhorn in the log domain. */
  epsOt?: number;
  /** Threads of the native CPU pool: each keeps its own LIP buffers. */
  threads: number;
}

export interface CostEstimate {
  /** Floating-point operations of the whole call (forward and gradient). */
  flops: number;
  /** Peak bytes the call allocates (activations, the LIP buffers of every thread, the result). */
  bytes: number;
  /** The share of `flops` of each stage. */
  flopsBy: { dfe: number; csc: number; lip: number };
  /** Patches per map in the LIP term (0 when it is off). */
  patches: number;
  limits: { flops: number; bytes: number };
}

/**
 * Below this ε the core may run a map's Sinkhorn in the log domain (native/core/lip_params.h: the
 * plain form is kept while |sim/ε| ≤ 50, and |sim| ≤ 1), at about 4× the plain form's time
 * (two exponentials per entry per half-iteration: 16 against 4.7 ms per 225-patch map, measured).
 */
export const LOG_DOMAIN_EPS = 1 / 50;
export const LOG_DOMAIN_FACTOR = 4;

/** Multiply-adds per pixel of one DFE forward (the same count as bench/run.js and bench/NOTES.md). */
export function dfeMacsPerPixel(channels: number, blocks: number, expand: number): number {
  const c = channels / 2;
  const h = expand * c;
  return 27 * channels + blocks * (channels * channels + 3 * (2 * c * h + 9 * h));
}

/** Patches kept per map (docs/MATH.md §6): the grid, capped at pmax. */
export function patchCount(H: number, W: number, patch: number, stride: number, pmax: number): number {
  if (H < patch || W < patch) return 0;
  const grid = (Math.floor((H - patch) / stride) + 1) * (Math.floor((W - patch) / stride) + 1);
  return Math.min(grid, pmax);
}

/**
 * The estimated work and memory of one mghfLoss call with a gradient, from the counted floor of
 * bench/NOTES.md: the DFE as three passes (forward of gt and sr, input backward of sr), the
 * channel Grams of CSC, and for LIP per (sample, channel) map the similarity product and its
 * backward (2·P²·patch²·2), and the Sinkhorn iterations (4·P² each, ×4 with their backward,
 * ×4 again in the log domain at ε < 1/50).
 * Memory: features, tape and gradient of the DFE (native/core/dfe.h, loss.h) and each thread's
 * LIP buffers (native/core/lip.h, monce.inc), which grow with P² and iters·P.
 */
export function lossCost(i: CostInput): CostEstimate {
  const N = i.channels;
  const pixels = i.B * i.H * i.W;
  const h = (i.expand * N) / 2;
  const M = Math.min(i.M, N);
  const cscOn = i.variant === 'c' && i.gamma2 > 0;
  const lipOn = i.variant === 'c' && i.gamma3 > 0;

  const dfe = 3 * 2 * dfeMacsPerPixel(N, i.blocks, i.expand) * pixels;
  const csc = cscOn ? i.B * 3 * 2 * M * M * i.H * i.W : 0;
  const P = lipOn ? patchCount(i.H, i.W, i.patch, i.stride, i.pmax) : 0;
  const D = i.patch * i.patch;
  const maps = i.B * N;
  const logDomain = (i.epsOt ?? 1) < LOG_DOMAIN_EPS ? LOG_DOMAIN_FACTOR : 1;
  const sinkhorn = 4 * i.iters * P * P * (i.sinkhornGrad ? 4 : 1) * logDomain;
  const lip = lipOn ? maps * (2 * 2 * P * P * D + sinkhorn + 40 * P * P) : 0;

  // G, S and ∂S; the tape of sr (z1 and exp(ρ) in float, 6 ReLU6 masks of h bytes per block);
  // the weighted kept maps and their gradient; the input copies and the returned gradient.
  const dfeBytes = pixels * (12 * N + i.blocks * (4 * N + 6 * h) + (cscOn ? 12 * M : 0) + 36);
  // Per thread: K, ∂K in double, p, sim, ∂sim in float (28·P² bytes); u, v and their
  // per-iteration partials in double (32·iters·P); patch embeddings q, g, ∂q (12·P·patch²).
  const lipBytes = lipOn ? Math.min(i.threads, maps) * (28 * P * P + 32 * i.iters * P + 12 * P * D) : 0;
  return {
    flops: dfe + csc + lip,
    bytes: dfeBytes + lipBytes,
    flopsBy: { dfe, csc, lip },
    patches: P,
    limits: { flops: MAX_FLOPS, bytes: memoryLimit() },
  };
}

/** dfeFeatures: one forward pass, the features returned and the per-image scratch. */
export function featuresCost(B: number, H: number, W: number, channels: number, blocks: number, expand: number): CostEstimate {
  const pixels = B * H * W;
  const dfe = 2 * dfeMacsPerPixel(channels, blocks, expand) * pixels;
  return {
    flops: dfe,
    bytes: pixels * (4 * channels + 12) + H * W * 4 * (3 + 3 * channels),
    flopsBy: { dfe, csc: 0, lip: 0 },
    patches: 0,
    limits: { flops: MAX_FLOPS, bytes: memoryLimit() },
  };
}

export function memoryLimit(): number {
  return Math.floor(MAX_MEMORY_FRACTION * totalmem());
}

const sci = (x: number): string => x.toExponential(1).replace('e+', 'e');
const gb = (x: number): string => (x >= 1e9 ? `${(x / 1e9).toFixed(1)} GB` : `${Math.ceil(x / 1e6)} MB`);

/**
 * Throws E_LIMIT when `cost` exceeds its limits, giving the estimate, the limit and what to
 * change. `what` names the call ('mghfLoss', 'dfeFeatures').
 */
export function checkCost(cost: CostEstimate, what: string, dims: readonly number[]): void {
  const shape = `[${dims.join(',')}]`;
  if (cost.flops > cost.limits.flops) {
    const { dfe, csc, lip } = cost.flopsBy;
    const parts = `DFE ${sci(dfe)}${csc > 0 ? `, CSC ${sci(csc)}` : ''}${lip > 0 ? `, LIP ${sci(lip)} with ${cost.patches} patches per map` : ''}`;
    throw new MghfError(
      'E_LIMIT',
      `${what} on ${shape} would take about ${sci(cost.flops)} floating-point operations (${parts}), over the limit of ${sci(cost.limits.flops)}: ` +
        `${remedy(cost)}`,
    );
  }
  if (cost.bytes > cost.limits.bytes) {
    throw new MghfError(
      'E_LIMIT',
      `${what} on ${shape} would need about ${gb(cost.bytes)} of memory, over the limit of ${gb(cost.limits.bytes)} ` +
        `(${MAX_MEMORY_FRACTION * 100}% of this machine's RAM): ${remedy(cost)}`,
    );
  }
}

function remedy(cost: CostEstimate): string {
  const { dfe, lip } = cost.flopsBy;
  if (lip > dfe) {
    return 'lower opts.iters or opts.pmax, raise opts.stride, or split the batch (the LIP term dominates; gamma3: 0 turns it off)';
  }
  return 'split the batch, use smaller images (crops) or a smaller DFE';
}
