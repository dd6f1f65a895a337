// mghfLoss / mghfLossSync / dfeFeatures: argument checks (all in TypeScript,
// before anything reaches native code), then one native call.

import { cancellable, checkSignal, throwIfAborted } from './abort';
import { type Device, resolveDevice } from './device';
import { MghfError, invalidParameterError } from './errors';
import { type CostEstimate, OPTION_BOUNDS, type BoundedOption, boundText, checkCost, checkReweight, featuresCost, inBound, lossCost } from './limits';
import { NativeLossOptions, NativeLossResult, NativeWeights, native, rethrowNative } from './native';
import { Tensor, type TensorLike, errorText, snapshotDims } from './tensor';
import { type DeviceLossOutput, checkDeviceOptions, deviceLoss, deviceLossSync, devicePair } from './loss-device';
import { ImageLayout, checkOptions, is, toImageTensor } from './validate';
import { DfeWeights, checkWeights, defaultWeights } from './weights';

export type Variant = 'n' | 'c';
export type { Device } from './device';
export type InputRange = 'unit' | 'symmetric';
/** The parts of the loss (docs/MATH.md §7), each reported unweighted. */
export type PartName = 'n' | 'mse' | 'corr' | 'gram' | 'csc' | 'lip';

export interface LossOptions {
  /** 'c' (MGHF-c, the default, docs/MATH.md §7) or 'n' (MGHF-n, docs/MATH.md §3). */
  variant?: Variant;
  /** DFE weights (loadWeights / createWeights). Default: the bundled pretrained weights (defaultWeights()). */
  weights?: DfeWeights;
  /** 'auto' (default: CUDA device 0 when usable, else the CPU), 'cpu', 'cuda' or 'cuda:N'. */
  device?: Device;
  /** Layout of sr and gt, and of the returned gradient. Default 'NCHW'. */
  layout?: ImageLayout;
  /** 'unit' ([0,1], default) or 'symmetric' ([-1,1], mapped by (x+1)/2). */
  inputRange?: InputRange;
  /** Γ1, Γ2, Γ3 of docs/MATH.md §7: weights of L_n, L_csc, L_lip (default 2, 1.5, 1e-3; 0 skips the term). */
  gamma1?: number; gamma2?: number; gamma3?: number;
  /** β1, β2, β3 of docs/MATH.md §5: weights of mse, corr, gram in L_csc (default 0.1333, 1, 0.1333). */
  beta1?: number; beta2?: number; beta3?: number;
  /** docs/MATH.md §4: channels kept (default 64, capped at the DFE's channels), and w = (1 + α·I)^γ. */
  M?: number; alpha?: number; gamma?: number;
  /** docs/MATH.md §4: kept channels per sample, [B][M] or flat B·M, each row strictly ascending; replaces the top-M choice. */
  selected?: ArrayLike<number> | ArrayLike<ArrayLike<number>> | null;
  /** docs/MATH.md §6: patch size and stride (32, 16), most patches (256), τ (0.07), ε_ot (1), Q (1), Sinkhorn iterations (50). */
  patch?: number; stride?: number; pmax?: number; tau?: number; epsOt?: number; Q?: number; iters?: number;
  /** docs/MATH.md §6: differentiate through the Sinkhorn plan (default true) or treat it as a constant. */
  sinkhornGrad?: boolean;
  /** Also return the importance [B][N] and the kept channels [B][M] (when the CSC term is on). */
  returnDetails?: boolean;
  /** Also return the milliseconds spent in each native stage. */
  profile?: boolean;
  /**
   * Cancels the call: an already aborted signal rejects at once, one that fires during the call
   * stops the native work at its next check (between stages, DFE blocks, LIP maps, Sinkhorn
   * iterations) and rejects with an MghfError of code 'E_ABORTED' and name 'AbortError'. The sync
   * variant only checks it before starting.
   */
  signal?: AbortSignal;
  /**
   * false: compute the loss and its parts only, without the gradient (evaluation). The CPU backend
   * then skips the DFE tape, ∂L/∂S and the whole backward pass (the LIP backward included): about
   * half the time and memory of the full call. Default true.
   */
  grad?: boolean;
}

/** What `mghfLoss(sr, gt, { grad: false })` returns: the loss and its parts, no gradient. */
export type LossValue = Omit<LossResult, 'grad'>;

/** Every part, unweighted; a skipped part is 0 and listed in `skipped`. */
export type LossParts = Record<PartName, number>;

export interface LossResult {
  /** The total loss L (docs/MATH.md §7). */
  loss: number;
  /** Each part, unweighted (csc = β1·mse + β2·corr + β3·gram); a skipped part is 0. */
  parts: LossParts;
  /** Parts not computed (weight 0, or not part of the variant). */
  skipped: PartName[];
  /** ∂L/∂sr, same dims and layout as sr. */
  grad: Tensor;
  /** With returnDetails and the CSC term on: the channel importance I, [B][N] (docs/MATH.md §4). */
  importance?: number[][];
  /** With returnDetails and the CSC term on: the kept channels, [B][M], ascending (docs/MATH.md §4). */
  selected?: number[][];
  /** With profile: milliseconds per native stage. */
  timings?: Record<string, number>;
}

const spec = <T>(value: T, expected: string, ok: (v: unknown) => v is T) => ({ default: value, expected, ok });
// A numeric option within its documented range (lib/limits.ts says why each range is what it is).
const bounded = (value: number, name: BoundedOption) => {
  const b = OPTION_BOUNDS[name];
  return spec(value, boundText(b), (v: unknown): v is number => inBound(v, b));
};

// The numeric and boolean options with their defaults (docs/MATH.md §4–7) and the check a value must pass.
const VALUE_OPTIONS = {
  gamma1: bounded(2, 'gamma1'),
  gamma2: bounded(1.5, 'gamma2'),
  gamma3: bounded(1e-3, 'gamma3'),
  beta1: bounded(0.1333, 'beta1'),
  beta2: bounded(1, 'beta2'),
  beta3: bounded(0.1333, 'beta3'),
  M: bounded(64, 'M'),
  alpha: bounded(1, 'alpha'),
  gamma: bounded(1, 'gamma'),
  patch: bounded(32, 'patch'),
  stride: bounded(16, 'stride'),
  pmax: bounded(256, 'pmax'),
  tau: bounded(0.07, 'tau'),
  epsOt: bounded(1, 'epsOt'),
  Q: bounded(1, 'Q'),
  iters: bounded(50, 'iters'),
  sinkhornGrad: spec(true, 'a boolean', is.bool),
  returnDetails: spec(false, 'a boolean', is.bool),
  profile: spec(false, 'a boolean', is.bool),
  grad: spec(true, 'a boolean', is.bool),
};
type ValueOptions = { [K in keyof typeof VALUE_OPTIONS]: (typeof VALUE_OPTIONS)[K]['default'] };

export const LOSS_OPTION_NAMES = [
  'variant', 'weights', 'device', 'layout', 'inputRange', 'selected', 'signal',
  ...(Object.keys(VALUE_OPTIONS) as (keyof ValueOptions)[]),
] as const;

const FEATURE_OPTION_NAMES = ['weights', 'device', 'layout', 'inputRange', 'signal'] as const;


interface Prepared {
  weights: NativeWeights;
  inputRange: InputRange;
  layout: ImageLayout;
  device: 'cpu' | 'cuda';
  deviceIndex: number;
}

function prepareCommon(o: Partial<Record<string, unknown>>): Prepared {
  const layout = o.layout ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') throw invalidParameterError('E_OPTION', 'opts.layout', "'NCHW' or 'NHWC'", layout);
  const inputRange = o.inputRange ?? 'unit';
  if (inputRange !== 'unit' && inputRange !== 'symmetric')
    throw invalidParameterError('E_OPTION', 'opts.inputRange', "'unit' or 'symmetric'", inputRange);
  const { device, deviceIndex } = resolveDevice(o.device);
  let weights: DfeWeights;
  if (o.weights === undefined) {
    weights = defaultWeights();
  } else {
    weights = checkWeights(o.weights, 'opts.weights');
  }
  return {
    weights: { channels: weights.channels, blocks: weights.blocks, expand: weights.expand, tensors: weights.tensors },
    inputRange,
    layout,
    device,
    deviceIndex,
  };
}

function checkPair(srIn: unknown, gtIn: unknown, layout: ImageLayout, inputRange: InputRange): [Tensor, Tensor] {
  const sr = toImageTensor(srIn, 'sr', layout, inputRange);
  const gt = toImageTensor(gtIn, 'gt', layout, inputRange);
  if (sr.dims.some((d, i) => d !== gt.dims[i])) {
    throw new MghfError(
      'E_SHAPE',
      `Expected gt to have the same dims as sr ([${sr.dims.join(',')}] in NCHW) but received [${gt.dims.join(',')}]`,
      { argument: 'gt' },
    );
  }
  checkMinimumSize(sr, 'sr', 2, "the DFE's reflection padding needs 2");
  return [sr, gt];
}

// docs/MATH.md §1: H, W ≥ 2 for the reflection padding of the DFE, and ≥ patch when the LIP term is on.
function checkMinimumSize(t: Tensor, name: string, min: number, why: string, hint = ''): void {
  const [, , h, w] = t.dims;
  if (h < min || w < min) {
    throw new MghfError(
      'E_TOO_SMALL',
      `Expected ${name} to be at least ${min}×${min} pixels (${why}) but received ${h}×${w} (H×W)${hint}`,
      { argument: name },
    );
  }
}

function readValueOptions(o: Partial<Record<string, unknown>>): ValueOptions {
  const values: Record<string, unknown> = {};
  for (const [name, { default: value, expected, ok }] of Object.entries(VALUE_OPTIONS)) {
    const v = o[name] === undefined ? value : o[name];
    if (!ok(v)) throw invalidParameterError('E_OPTION', `opts.${name}`, expected, v);
    values[name] = v;
  }
  const checked = values as ValueOptions;
  checkReweight(checked.alpha, checked.gamma);
  return checked;
}

const isArrayLike = (v: unknown): v is ArrayLike<unknown> =>
  Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));

/**
 * docs/MATH.md §4 `selected`: B rows of M (= min(opts.M, N)) strictly ascending channel indices in [0, N),
 * given as rows ([B][M]) or one flat array of B·M; returned flat, as the native call takes it.
 */
export function toSelected(value: unknown, B: number, M: number, N: number): Int32Array | null {
  if (value === undefined || value === null) return null;
  // User arrays may have getters that throw: any such failure is an E_OPTION naming the option.
  try {
    return readSelected(value, B, M, N);
  } catch (err) {
    if (err instanceof MghfError) throw err;
    throw new MghfError('E_OPTION', `Could not read opts.selected: ${errorText(err)}`, { argument: 'opts.selected', cause: err });
  }
}

function readSelected(value: unknown, B: number, M: number, N: number): Int32Array {
  // Rows only when there are B of them: `every` over a huge sparse array would take for ever.
  const rows = Array.isArray(value) && value.length === B && value.every(isArrayLike) ? (value as ArrayLike<unknown>[]) : undefined;
  const flat = rows === undefined && isArrayLike(value) ? value : undefined;
  if (rows ? rows.length !== B || rows.some((r) => r.length !== M) : flat?.length !== B * M) {
    const expected = `${B} row(s) of ${M} channel indices ([B][M] or flat; M = min(opts.M, channels) = ${M})`;
    throw invalidParameterError('E_OPTION', 'opts.selected', expected, value);
  }
  const out = new Int32Array(B * M);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < M; i++) {
      const v = rows ? rows[b][i] : flat![b * M + i];
      const lo = i === 0 ? 0 : out[b * M + i - 1] + 1;
      if (!is.integer(v) || v < lo || v >= N) {
        const where = rows ? `opts.selected[${b}][${i}]` : `opts.selected[${b * M + i}]`;
        const expected = `an integer channel index in [${lo}, ${N}) (each row strictly ascending, below N = ${N})`;
        throw invalidParameterError('E_OPTION', where, expected, v, 'opts.selected');
      }
      out[b * M + i] = v;
    }
  }
  return out;
}

function prepareLoss(sr: unknown, gt: unknown, opts: unknown) {
  const o = checkOptions(opts, LOSS_OPTION_NAMES);
  const variant = o.variant ?? 'c';
  if (variant !== 'n' && variant !== 'c') throw invalidParameterError('E_OPTION', 'opts.variant', "'n' or 'c'", variant);
  const values = readValueOptions(o);
  const signal = checkSignal(o.signal);
  const common = prepareCommon(o);
  // Device tensors ('cuda:N'): checked by dims (their values are on the device), NCHW only.
  const onDevice = devicePair(sr, gt);
  if (onDevice) {
    checkDeviceOptions(o, onDevice[0].location);
    checkMinimumSize(onDevice[0], 'sr', 2, "the DFE's reflection padding needs 2");
  }
  const [srT, gtT] = onDevice ?? checkPair(sr, gt, common.layout, common.inputRange);
  if (variant === 'c' && values.gamma3 > 0) {
    checkMinimumSize(srT, 'sr', values.patch, 'the LIP patch size, opts.patch', '; gamma3: 0 turns the LIP term off');
  }
  const B = srT.dims[0];
  const N = common.weights.channels;
  const M = Math.min(values.M, N);
  checkCost(lossCost(costInput(srT.dims, common.weights, variant, values)), 'mghfLoss', srT.dims);
  const nativeOpts: NativeLossOptions = {
    ...values,
    variant,
    inputRange: common.inputRange,
    device: common.device,
    deviceIndex: common.deviceIndex,
    M,
    selected: toSelected(o.selected, B, M, N),
  };
  return { srT, gtT, common, nativeOpts, signal };
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

function toResult(r: NativeLossResult, dims: readonly number[], layout: ImageLayout): LossResult {
  // The core checks every stage (E_NUMERIC naming it); this guards the scalars of any binary.
  for (const [name, v] of [['loss', r.loss], ...Object.entries(r.parts)] as [string, number][]) {
    if (!Number.isFinite(v)) throw new MghfError('E_NUMERIC', `The ${name === 'loss' ? 'loss' : `part ${name}`} came out ${v}`);
  }
  const value: LossValue = { loss: r.loss, parts: { ...r.parts }, skipped: r.skipped as PartName[] };
  // Without a gradient (opts.grad false) the result has no grad field at all.
  const result = (r.grad ? { ...value, grad: fromNchw(r.grad, dims, layout) } : value) as LossResult;
  if (r.importance) result.importance = toRows(r.importance, dims[0]);
  if (r.selected) result.selected = toRows(r.selected, dims[0]);
  if (r.timings) result.timings = { ...r.timings };
  return result;
}

/** A flat [B·K] array as B rows of K numbers. */
function toRows(flat: Float64Array | Int32Array, B: number): number[][] {
  const k = flat.length / B;
  return Array.from({ length: B }, (_, b) => Array.from(flat.subarray(b * k, (b + 1) * k)));
}

/**
 * The MGHF loss of sr against gt and its gradient ∂L/∂sr, computed off the event loop.
 * sr, gt: float32 [B, 3, H, W] (or [B, H, W, 3] with layout 'NHWC'), values in [0, 1].
 */
export async function mghfLoss(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts?: LossOptions & { grad?: true }): Promise<LossResult>;
export async function mghfLoss(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts: LossOptions & { grad: false }): Promise<LossValue>;
export async function mghfLoss(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts?: LossOptions): Promise<LossResult | LossValue>;
export async function mghfLoss(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts?: LossOptions): Promise<LossResult | LossValue> {
  const { srT, gtT, common, nativeOpts, signal } = prepareLoss(sr, gt, opts);
  if (srT.location !== 'cpu') {
    throwIfAborted('mghfLoss', signal);
    return fromDevice(await deviceLoss(srT, gtT, common.weights, nativeOpts.selected, deviceAttrs(nativeOpts)), srT.dims[0]);
  }
  const r = await cancellable('mghfLoss', signal, (cancel) =>
    nativeCall(() => native().loss(srT.data, gtT.data, [...srT.dims], common.weights, cancel ? { ...nativeOpts, cancel } : nativeOpts)),
  );
  return toResult(r, srT.dims, common.layout);
}

/** The loss options as the registry's mghfLoss op takes them (attrs: numbers, booleans, strings). */
function deviceAttrs(o: NativeLossOptions): Record<string, number | boolean | string> {
  const attrs: Record<string, number | boolean | string> = {};
  for (const [k, v] of Object.entries(o)) {
    if (k !== 'device' && k !== 'deviceIndex' && k !== 'profile' && (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'string')) attrs[k] = v;
  }
  return attrs;
}

/** A device call's result as mghfLoss returns it: grad a Tensor on the device. */
function fromDevice(r: DeviceLossOutput, B: number): LossResult | LossValue {
  const value: LossValue = { loss: r.loss, parts: { ...r.parts }, skipped: r.skipped as PartName[] };
  const result = (r.grad ? { ...value, grad: r.grad } : value) as LossResult;
  if (r.importance) result.importance = toRows(r.importance, B);
  if (r.selected) result.selected = toRows(r.selected, B);
  return result;
}

/** A native promise whose rejection becomes an MghfError. */
async function nativeCall<T>(start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    rethrowNative(err);
  }
}

/** mghfLoss on the calling thread (blocks the event loop for the whole computation). */
export function mghfLossSync(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts?: LossOptions & { grad?: true }): LossResult;
export function mghfLossSync(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts: LossOptions & { grad: false }): LossValue;
export function mghfLossSync(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts?: LossOptions): LossResult | LossValue;
export function mghfLossSync(sr: Tensor | TensorLike, gt: Tensor | TensorLike, opts?: LossOptions): LossResult | LossValue {
  const { srT, gtT, common, nativeOpts, signal } = prepareLoss(sr, gt, opts);
  throwIfAborted('mghfLossSync', signal);
  if (srT.location !== 'cpu') return fromDevice(deviceLossSync(srT, gtT, common.weights, nativeOpts.selected, deviceAttrs(nativeOpts)), srT.dims[0]);
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
  /** As LossOptions.signal: E_ABORTED ('AbortError') when it fires; the sync variant checks it before starting. */
  signal?: AbortSignal;
}

function prepareFeatures(x: unknown, opts: unknown) {
  const o = checkOptions(opts, FEATURE_OPTION_NAMES);
  const signal = checkSignal(o.signal);
  const common = prepareCommon(o);
  const xT = toImageTensor(x, 'x', common.layout, common.inputRange);
  checkMinimumSize(xT, 'x', 2, "the DFE's reflection padding needs 2");
  const [b, , h, w] = xT.dims;
  const { channels, blocks, expand } = common.weights;
  checkCost(featuresCost(b, h, w, channels, blocks, expand), 'dfeFeatures', xT.dims);
  return { xT, common, dims: [b, common.weights.channels, h, w], signal };
}

/** The DFE features F = DFE(x) of docs/MATH.md §2: [B, N, H, W], NCHW whatever the input layout. */
export async function dfeFeatures(x: Tensor | TensorLike, opts?: FeatureOptions): Promise<Tensor> {
  const { xT, common, dims, signal } = prepareFeatures(x, opts);
  const o = { inputRange: common.inputRange, device: common.device, deviceIndex: common.deviceIndex };
  const F = await cancellable('dfeFeatures', signal, (cancel) =>
    nativeCall(() => native().features(xT.data, [...xT.dims], common.weights, cancel ? { ...o, cancel } : o)),
  );
  return new Tensor(F, dims);
}

export function dfeFeaturesSync(x: Tensor | TensorLike, opts?: FeatureOptions): Tensor {
  const { xT, common, dims, signal } = prepareFeatures(x, opts);
  throwIfAborted('dfeFeaturesSync', signal);
  try {
    return new Tensor(native().featuresSync(xT.data, [...xT.dims], common.weights, { inputRange: common.inputRange, device: common.device, deviceIndex: common.deviceIndex }), dims);
  } catch (err) {
    rethrowNative(err);
  }
}

// ---------------------------------------------------------------------------------------------
// The up-front cost estimate (lib/limits.ts)

let poolThreads: number | undefined;

// Threads of the native pool, fixed when the addon loads: each keeps its own LIP buffers.
function threads(): number {
  return (poolThreads ??= native().info().threads);
}

function costInput(dims: readonly number[], arch: { channels: number; blocks: number; expand: number }, variant: Variant, v: ValueOptions) {
  const [B, , H, W] = dims;
  const { channels, blocks, expand } = arch;
  return { B, H, W, channels, blocks, expand, variant, ...v, threads: threads() };
}

/**
 * The estimated floating-point work and peak memory of `mghfLoss(sr, gt, opts)` for an `sr` of
 * `dims` ([B, 3, H, W], or [B, H, W, 3] with layout 'NHWC'), with the limits a call must stay
 * within (mghfLoss throws E_LIMIT beyond them). The options are checked as mghfLoss checks them.
 */
export function estimateCost(dims: readonly number[], opts?: LossOptions): CostEstimate {
  const o = checkOptions(opts, LOSS_OPTION_NAMES);
  const variant = o.variant ?? 'c';
  if (variant !== 'n' && variant !== 'c') throw invalidParameterError('E_OPTION', 'opts.variant', "'n' or 'c'", variant);
  const values = readValueOptions(o);
  const layout = o.layout ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') throw invalidParameterError('E_OPTION', 'opts.layout', "'NCHW' or 'NHWC'", layout);
  const d = snapshotDims(dims, 'dims');
  const channelAxis = layout === 'NCHW' ? 1 : 3;
  if (!Array.isArray(d) || d.length !== 4 || !d.every(is.positiveInteger) || d[channelAxis] !== 3) {
    throw invalidParameterError('E_SHAPE', 'dims', `[B, ${layout === 'NCHW' ? '3, H, W' : 'H, W, 3'}] positive integers`, dims);
  }
  const nchw = layout === 'NCHW' ? d : [d[0], 3, d[1], d[2]];
  const arch = o.weights === undefined ? defaultWeights() : checkWeights(o.weights, 'opts.weights');
  return lossCost(costInput(nchw as number[], arch, variant as Variant, values));
}
