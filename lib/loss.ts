// mghfLoss / mghfLossSync / dfeFeatures: argument checks (all in TypeScript,
// before anything reaches native code), then one native call.

import { MghfError, invalidParameterError } from './errors';
import { NativeLossOptions, NativeWeights, native, rethrowNative } from './native';
import { Tensor } from './tensor';
import { ImageLayout, checkOptions, toImageTensor } from './validate';
import { DfeWeights, checkWeights, createWeights } from './weights';

export type Variant = 'n' | 'c';
export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
export type InputRange = 'unit' | 'symmetric';

export interface LossOptions {
  /** 'c' (MGHF-c, SPEC §7 default) or 'n' (MGHF-n). Only 'n' is implemented in this version. */
  variant?: Variant;
  /** DFE weights (loadWeights / createWeights). Default: createWeights({ seed: 0 }). */
  weights?: DfeWeights;
  /** 'auto' (default) or 'cpu'. CUDA is not built yet. */
  device?: Device;
  /** Layout of sr and gt, and of the returned gradient. Default 'NCHW'. */
  layout?: ImageLayout;
  /** 'unit' ([0,1], default) or 'symmetric' ([-1,1], mapped by (x+1)/2). */
  inputRange?: InputRange;
  // SPEC §7 options of MGHF-c, accepted by name now so typos fail loudly.
  gamma1?: number; gamma2?: number; gamma3?: number;
  beta1?: number; beta2?: number; beta3?: number;
  M?: number; alpha?: number; gamma?: number; selected?: unknown;
  patch?: number; stride?: number; pmax?: number; tau?: number; epsOt?: number; Q?: number;
  iters?: number; sinkhornGrad?: boolean; returnDetails?: boolean;
}

export interface LossParts {
  [part: string]: number | undefined;
  n: number;
  mse?: number;
  corr?: number;
  gram?: number;
  csc?: number;
  lip?: number;
}

export interface LossResult {
  /** The total loss L (SPEC §7). */
  loss: number;
  /** Each part, unweighted; a skipped part is absent here and listed in `skipped`. */
  parts: LossParts;
  /** Parts not computed (weight 0, or not part of the variant). */
  skipped: string[];
  /** ∂L/∂sr, same dims and layout as sr. */
  grad: Tensor;
}

export const LOSS_OPTION_NAMES = [
  'variant', 'weights', 'device', 'layout', 'inputRange',
  'gamma1', 'gamma2', 'gamma3', 'beta1', 'beta2', 'beta3',
  'M', 'alpha', 'gamma', 'selected', 'patch', 'stride', 'pmax', 'tau', 'epsOt', 'Q', 'iters',
  'sinkhornGrad', 'returnDetails',
] as const;

const FEATURE_OPTION_NAMES = ['weights', 'device', 'layout', 'inputRange'] as const;

let defaultWeights: DfeWeights | undefined;

interface Prepared {
  weights: NativeWeights;
  inputRange: InputRange;
  layout: ImageLayout;
}

function prepareCommon(o: Partial<Record<string, unknown>>): Prepared {
  const layout = o.layout ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') throw invalidParameterError('E_OPTION', 'opts.layout', "'NCHW' or 'NHWC'", layout);
  const inputRange = o.inputRange ?? 'unit';
  if (inputRange !== 'unit' && inputRange !== 'symmetric')
    throw invalidParameterError('E_OPTION', 'opts.inputRange', "'unit' or 'symmetric'", inputRange);
  checkDevice(o.device);
  let weights: DfeWeights;
  if (o.weights === undefined) {
    defaultWeights ??= createWeights({ seed: 0 });
    weights = defaultWeights;
  } else {
    weights = checkWeights(o.weights, 'opts.weights');
  }
  return {
    weights: { channels: weights.channels, blocks: weights.blocks, expand: weights.expand, tensors: weights.tensors },
    inputRange,
    layout,
  };
}

function checkDevice(device: unknown): void {
  if (device === undefined || device === 'auto' || device === 'cpu') return;
  if (typeof device === 'string' && /^cuda(:\d+)?$/.test(device)) {
    throw new MghfError(
      'E_UNSUPPORTED',
      `opts.device '${device}' is not available: this version of mghf has only the CPU backend ` +
        `(the CUDA backend is not built yet). Use device: 'cpu' or 'auto'.`,
      { argument: 'opts.device' },
    );
  }
  throw invalidParameterError('E_OPTION', 'opts.device', "'auto', 'cpu', 'cuda' or 'cuda:N'", device);
}

function checkPair(srIn: unknown, gtIn: unknown, layout: ImageLayout): [Tensor, Tensor] {
  const sr = toImageTensor(srIn, 'sr', layout);
  const gt = toImageTensor(gtIn, 'gt', layout);
  if (sr.dims.some((d, i) => d !== gt.dims[i])) {
    throw new MghfError(
      'E_SHAPE',
      `Expected gt to have the same dims as sr ([${sr.dims.join(',')}] in NCHW) but received [${gt.dims.join(',')}]`,
      { argument: 'gt' },
    );
  }
  checkMinimumSize(sr, 'sr');
  return [sr, gt];
}

// SPEC §1: H, W ≥ 2 for the reflection padding of the DFE.
function checkMinimumSize(t: Tensor, name: string): void {
  const [, , h, w] = t.dims;
  if (h < 2 || w < 2) {
    throw new MghfError(
      'E_TOO_SMALL',
      `Expected ${name} to be at least 2×2 pixels (the DFE's reflection padding needs 2) but received ${h}×${w} (H×W)`,
      { argument: name },
    );
  }
}

function prepareLoss(sr: unknown, gt: unknown, opts: unknown) {
  const o = checkOptions(opts, LOSS_OPTION_NAMES);
  const variant = o.variant ?? 'c';
  if (variant !== 'n' && variant !== 'c') throw invalidParameterError('E_OPTION', 'opts.variant', "'n' or 'c'", variant);
  if (variant === 'c') {
    throw new MghfError(
      'E_UNSUPPORTED',
      "variant 'c' (MGHF-c, the SPEC default) is not implemented in this version yet; pass { variant: 'n' } for MGHF-n",
      { argument: 'opts.variant' },
    );
  }
  const common = prepareCommon(o);
  const [srT, gtT] = checkPair(sr, gt, common.layout);
  const nativeOpts: NativeLossOptions = { variant, inputRange: common.inputRange };
  return { srT, gtT, common, nativeOpts };
}

// Native results come back NCHW; hand the gradient back in the caller's layout.
function fromNchw(data: Float32Array, dims: readonly number[], layout: ImageLayout): Tensor {
  if (layout === 'NCHW') return new Tensor(data, dims);
  const [b, c, h, w] = dims;
  const out = new Float32Array(data.length);
  for (let n = 0; n < b; n++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++) {
        const src = ((n * c + ch) * h + y) * w;
        const dst = (n * h + y) * w * c + ch;
        for (let x = 0; x < w; x++) out[dst + x * c] = data[src + x];
      }
  return new Tensor(out, [b, h, w, c]);
}

function toResult(r: { loss: number; parts: { n: number }; skipped: string[]; grad: Float32Array }, dims: readonly number[], layout: ImageLayout): LossResult {
  return { loss: r.loss, parts: { ...r.parts }, skipped: r.skipped, grad: fromNchw(r.grad, dims, layout) };
}

/**
 * The MGHF loss of sr against gt and its gradient ∂L/∂sr, computed off the event loop.
 * sr, gt: float32 [B, 3, H, W] (or [B, H, W, 3] with layout 'NHWC'), values in [0, 1].
 */
export async function mghfLoss(sr: Tensor | unknown, gt: Tensor | unknown, opts?: LossOptions): Promise<LossResult> {
  const { srT, gtT, common, nativeOpts } = prepareLoss(sr, gt, opts);
  let r;
  try {
    r = await native().loss(srT.data, gtT.data, [...srT.dims], common.weights, nativeOpts);
  } catch (err) {
    rethrowNative(err);
  }
  return toResult(r, srT.dims, common.layout);
}

/** mghfLoss on the calling thread (blocks the event loop for the whole computation). */
export function mghfLossSync(sr: Tensor | unknown, gt: Tensor | unknown, opts?: LossOptions): LossResult {
  const { srT, gtT, common, nativeOpts } = prepareLoss(sr, gt, opts);
  try {
    return toResult(native().lossSync(srT.data, gtT.data, [...srT.dims], common.weights, nativeOpts), srT.dims, common.layout);
  } catch (err) {
    rethrowNative(err);
  }
}

export interface FeatureOptions {
  weights?: DfeWeights;
  device?: Device;
  layout?: ImageLayout;
  inputRange?: InputRange;
}

function prepareFeatures(x: unknown, opts: unknown) {
  const o = checkOptions(opts, FEATURE_OPTION_NAMES);
  const common = prepareCommon(o);
  const xT = toImageTensor(x, 'x', common.layout);
  checkMinimumSize(xT, 'x');
  const [b, , h, w] = xT.dims;
  return { xT, common, dims: [b, common.weights.channels, h, w] };
}

/** The DFE features F = DFE(x) of SPEC §2: [B, N, H, W], NCHW whatever the input layout. */
export async function dfeFeatures(x: Tensor | unknown, opts?: FeatureOptions): Promise<Tensor> {
  const { xT, common, dims } = prepareFeatures(x, opts);
  try {
    const F = await native().features(xT.data, [...xT.dims], common.weights, { inputRange: common.inputRange });
    return new Tensor(F, dims);
  } catch (err) {
    rethrowNative(err);
  }
}

export function dfeFeaturesSync(x: Tensor | unknown, opts?: FeatureOptions): Tensor {
  const { xT, common, dims } = prepareFeatures(x, opts);
  try {
    return new Tensor(native().featuresSync(xT.data, [...xT.dims], common.weights, { inputRange: common.inputRange }), dims);
  } catch (err) {
    rethrowNative(err);
  }
}
