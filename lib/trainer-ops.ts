// The trainer ops of issue 16: the generic layers a Node SR trainer needs (conv2d, pixel shuffle,
// ReLU / leaky ReLU, add, the L1 and Charbonnier losses, MATLAB-compatible bicubic resize, Adam),
// each a forward and a hand-written backward, on CPU host tensors or on the tensors of one CUDA
// device (the registry runs the op's CUDA function; the outputs are on the inputs' device). They
// follow lib/ops.ts's conventions (check here with messages naming the argument, then one call to
// the binding's generic op entry; tensors on different devices are E_DEVICE, never copied) and are
// spread into its frozen `ops` object.
//
// The call plumbing is lib/op-call.ts's, shared with lib/ops.ts (not imported from lib/ops.ts,
// which imports this file: a cycle would leave `ops` without these functions).

import { MghfError, invalidParameterError } from './errors';
import { type NativeOpValue } from './native';
import { type Attrs, type Call, flag, isOpOutput, output, runAsync, runSync, sameDims, sameLocation, scalar, toNative } from './op-call';
import { Tensor, type TensorLike, type TensorLocation } from './tensor';
import { checkFinite, checkOptions, is } from './validate';

type In = Tensor | TensorLike;

// ------------------------------------------------------------------ arguments

/**
 * A float32 tensor argument with `rank` dims (any rank when undefined): a host one is scanned for
 * non-finite values; a device one is not (its values are not on the host).
 */
function tensorArg(v: unknown, name: string, rank?: number, what = ''): Tensor {
  const t = Tensor.from(v as TensorLike, name);
  if (rank !== undefined && t.dims.length !== rank) throw invalidParameterError('E_SHAPE', `${name}.dims`, `${rank} dims${what}`, t.dims, name);
  if (t.location === 'cpu' && !isOpOutput(t)) checkFinite(t.data, name, t.dims);
  return t;
}

/** A finite number option in [lo, hi], else E_OPTION. */
function numberOpt(o: Partial<Record<string, unknown>>, key: string, fallback: number, lo: number, hi: number, text: string): number {
  const v = o[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) throw invalidParameterError('E_OPTION', `opts.${key}`, text, v);
  return v;
}

const NCHW = ' [B, C, H, W] (NCHW)';

// ------------------------------------------------------------------ conv2d

export type Conv2dPadding = 'zero' | 'reflect';

export interface Conv2dOptions {
  /** 1 (default) or 2: the output is [B, Co, ceil(H/stride), ceil(W/stride)]. */
  stride?: number;
  /** "Same" padding of (k−1)/2 pixels: 'zero' (default) or 'reflect' (PyTorch's: the edge is not repeated). */
  padding?: Conv2dPadding;
  /** Grouped convolution (default 1): Ci and Co divisible by it; w is [Co, Ci/groups, k, k]. */
  groups?: number;
}

export interface Conv2dBackwardOptions extends Conv2dOptions {
  /** Return db = Σ dy over batch and pixels (default true). */
  bias?: boolean;
  /** Return dx (default true). */
  inputGrad?: boolean;
  /** Return dw (default true). */
  weightGrad?: boolean;
}

export interface Conv2dGrads {
  dx?: Tensor;
  dw?: Tensor;
  db?: Tensor;
}

export const CONV2D_OPTION_NAMES = ['stride', 'padding', 'groups'] as const;
export const CONV2D_BACKWARD_OPTION_NAMES = [...CONV2D_OPTION_NAMES, 'bias', 'inputGrad', 'weightGrad'] as const;

interface ConvArgs {
  x: Tensor;
  w: Tensor;
  attrs: Attrs;
  outDims: number[];
}

function convArgs(x: unknown, w: unknown, o: Partial<Record<string, unknown>>): ConvArgs {
  const stride = o.stride ?? 1;
  if (stride !== 1 && stride !== 2) throw invalidParameterError('E_OPTION', 'opts.stride', '1 or 2', stride);
  const padding = o.padding ?? 'zero';
  if (padding !== 'zero' && padding !== 'reflect') throw invalidParameterError('E_OPTION', 'opts.padding', "'zero' or 'reflect'", padding);
  const groups = o.groups ?? 1;
  if (!Number.isInteger(groups) || (groups as number) < 1) throw invalidParameterError('E_OPTION', 'opts.groups', 'a positive integer', groups);
  const g = groups as number;
  const xT = tensorArg(x, 'x', 4, NCHW);
  const wT = tensorArg(w, 'w', 4, ' [Co, Ci/groups, k, k]');
  const [B, Ci, H, W] = xT.dims;
  const [Co, wc, k, k2] = wT.dims;
  if (k !== k2 || k % 2 === 0) throw invalidParameterError('E_SHAPE', 'w.dims', 'a square kernel of odd size k ([Co, Ci/groups, k, k])', wT.dims, 'w');
  if (Ci % g !== 0 || Co % g !== 0) {
    throw new MghfError('E_SHAPE', `Expected opts.groups (${g}) to divide x's channels (${Ci}) and w's output channels (${Co})`, { argument: 'opts.groups' });
  }
  if (wc !== Ci / g) {
    throw new MghfError('E_SHAPE', `Expected w.dims[1] to be Ci/groups = ${Ci / g} (x has ${Ci} channels) but received ${wc}`, { argument: 'w' });
  }
  const p = (k - 1) / 2;
  if (padding === 'reflect' && (p >= H || p >= W)) {
    throw new MghfError('E_TOO_SMALL', `Expected x to be larger than ${p}×${p} for reflect padding of a ${k}×${k} kernel but received ${H}×${W} (H×W)`, {
      argument: 'x',
    });
  }
  return { x: xT, w: wT, attrs: { stride, padding, groups: g }, outDims: [B, Co, Math.ceil(H / stride), Math.ceil(W / stride)] };
}

function prepareConv2d(x: unknown, w: unknown, b: unknown, opts: unknown): Call<Tensor> {
  const o = checkOptions(opts, CONV2D_OPTION_NAMES);
  const a = convArgs(x, w, o);
  let bT: Tensor | undefined;
  if (b !== null && b !== undefined) {
    bT = tensorArg(b, 'b', 1, ' [Co]');
    if (bT.dims[0] !== a.outDims[1]) throw invalidParameterError('E_SHAPE', 'b.dims', `[Co] = [${a.outDims[1]}]`, bT.dims, 'b');
  }
  sameLocation([['x', a.x], ['w', a.w], ['b', bT]]);
  return { name: 'conv2d', inputs: [toNative(a.x), toNative(a.w), bT ? toNative(bT) : null], attrs: a.attrs, finish: (out) => output(out.y, 'y') };
}

function prepareConv2dBackward(x: unknown, w: unknown, dy: unknown, opts: unknown): Call<Conv2dGrads> {
  const o = checkOptions(opts, CONV2D_BACKWARD_OPTION_NAMES);
  const a = convArgs(x, w, o);
  const bias = flag(o, 'bias', true);
  const inputGrad = flag(o, 'inputGrad', true);
  const weightGrad = flag(o, 'weightGrad', true);
  const dyT = tensorArg(dy, 'dy', 4, NCHW);
  if (dyT.dims.some((d, i) => d !== a.outDims[i])) {
    throw new MghfError('E_SHAPE', `Expected dy to have the dims of conv2d's output ([${a.outDims.join(',')}]) but received [${dyT.dims.join(',')}]`, {
      argument: 'dy',
    });
  }
  sameLocation([['x', a.x], ['w', a.w], ['dy', dyT]]);
  return {
    name: 'conv2dBackward',
    inputs: [toNative(a.x), toNative(a.w), toNative(dyT)],
    attrs: { ...a.attrs, bias, inputGrad, weightGrad },
    finish: (out) => {
      const r: Conv2dGrads = {};
      if (inputGrad) r.dx = output(out.dx, 'dx');
      if (weightGrad) r.dw = output(out.dw, 'dw');
      if (bias) r.db = output(out.db, 'db');
      return r;
    },
  };
}

// ------------------------------------------------------------------ pixel shuffle

function factorArg(factor: unknown): number {
  if (!Number.isInteger(factor) || (factor as number) < 1 || (factor as number) > 64) throw invalidParameterError('E_ARGUMENT', 'factor', 'an integer in [1, 64]', factor);
  return factor as number;
}

function preparePixelShuffle(x: unknown, factor: unknown): Call<Tensor> {
  const r = factorArg(factor);
  const xT = tensorArg(x, 'x', 4, NCHW);
  if (xT.dims[1] % (r * r) !== 0) throw invalidParameterError('E_SHAPE', 'x.dims[1]', `a multiple of factor² = ${r * r}`, xT.dims[1], 'x');
  return { name: 'pixelShuffle', inputs: [toNative(xT)], attrs: { factor: r }, finish: (out) => output(out.y, 'y') };
}

function preparePixelShuffleBackward(dy: unknown, factor: unknown): Call<Tensor> {
  const r = factorArg(factor);
  const d = tensorArg(dy, 'dy', 4, NCHW);
  if (d.dims[2] % r !== 0 || d.dims[3] % r !== 0) throw invalidParameterError('E_SHAPE', 'dy.dims', `H and W multiples of factor = ${r}`, d.dims, 'dy');
  return { name: 'pixelShuffleBackward', inputs: [toNative(d)], attrs: { factor: r }, finish: (out) => output(out.dx, 'dx') };
}

// ------------------------------------------------------------------ activations, add

export interface LeakyReluOptions {
  /** The slope for x ≤ 0 (default 0.01). */
  slope?: number;
}
export interface AddOptions {
  /** y = a + alpha·b (default 1). */
  alpha?: number;
}
export const LEAKY_RELU_OPTION_NAMES = ['slope'] as const;
export const ADD_OPTION_NAMES = ['alpha'] as const;

const slopeOf = (opts: unknown) => numberOpt(checkOptions(opts, LEAKY_RELU_OPTION_NAMES), 'slope', 0.01, -1e6, 1e6, 'a finite number');

function prepareActivation(name: string, x: unknown, attrs: Attrs): Call<Tensor> {
  return { name, inputs: [toNative(tensorArg(x, 'x'))], attrs, finish: (out) => output(out.y, 'y') };
}

function prepareActivationBackward(name: string, x: unknown, dy: unknown, attrs: Attrs): Call<Tensor> {
  const xT = tensorArg(x, 'x');
  const d = tensorArg(dy, 'dy');
  sameDims(xT, 'x', d, 'dy');
  sameLocation([['x', xT], ['dy', d]]);
  return { name, inputs: [toNative(xT), toNative(d)], attrs, finish: (out) => output(out.dx, 'dx') };
}

function prepareAdd(a: unknown, b: unknown, opts: unknown): Call<Tensor> {
  const alpha = numberOpt(checkOptions(opts, ADD_OPTION_NAMES), 'alpha', 1, -3.4e38, 3.4e38, 'a finite number');
  const aT = tensorArg(a, 'a');
  const bT = tensorArg(b, 'b');
  sameDims(aT, 'a', bT, 'b');
  sameLocation([['a', aT], ['b', bT]]);
  return { name: 'add', inputs: [toNative(aT), toNative(bT)], attrs: { alpha }, finish: (out) => output(out.y, 'y') };
}

// ------------------------------------------------------------------ l1, charbonnier

export interface PixelLossOptions {
  /** false: the loss only, no dx. Default true. */
  grad?: boolean;
}
export interface CharbonnierOptions extends PixelLossOptions {
  /** sqrt((x − y)² + eps²) (default 1e-3). */
  eps?: number;
}
export interface PixelLossValue {
  loss: number;
}
/** PixelLossValue, plus dx = ∂loss/∂x unless the options say grad: false. */
export type WithDx<O> = O extends { grad: false } ? PixelLossValue : PixelLossValue & { dx: Tensor };

export const L1_OPTION_NAMES = ['grad'] as const;
export const CHARBONNIER_OPTION_NAMES = ['eps', 'grad'] as const;

function preparePixelLoss(name: string, x: unknown, y: unknown, grad: boolean, attrs: Attrs): Call<PixelLossValue & { dx?: Tensor }> {
  const xT = tensorArg(x, 'x');
  const yT = tensorArg(y, 'y');
  sameDims(xT, 'x', yT, 'y');
  sameLocation([['x', xT], ['y', yT]]);
  return {
    name,
    inputs: [toNative(xT), toNative(yT)],
    attrs: { ...attrs, grad },
    finish: (out) => {
      const loss = scalar(out.loss, 'loss');
      return grad ? { loss, dx: output(out.dx, 'dx') } : { loss };
    },
  };
}

function prepareL1(x: unknown, y: unknown, opts: unknown) {
  const o = checkOptions(opts, L1_OPTION_NAMES);
  return preparePixelLoss('l1', x, y, flag(o, 'grad', true), {});
}

function prepareCharbonnier(x: unknown, y: unknown, opts: unknown) {
  const o = checkOptions(opts, CHARBONNIER_OPTION_NAMES);
  const eps = numberOpt(o, 'eps', 1e-3, 1e-12, 1e6, 'a number in [1e-12, 1e6]');
  return preparePixelLoss('charbonnier', x, y, flag(o, 'grad', true), { eps });
}

// ------------------------------------------------------------------ resize

export type ResizeOptions = { scale: number; size?: undefined } | { size: readonly [number, number]; scale?: undefined };
export type ResizeBackwardOptions = ResizeOptions & { inputDims: readonly number[] };
export const RESIZE_OPTION_NAMES = ['scale', 'size'] as const;
export const RESIZE_BACKWARD_OPTION_NAMES = ['inputDims', 'scale', 'size'] as const;

const MAX_SIDE = 1 << 20;

/** The output size and per-axis scales of resizing H×W: BasicSR's ceil(in·scale), or the size given (scale = out/in). */
function resizePlan(o: Partial<Record<string, unknown>>, H: number, W: number): { outH: number; outW: number; scaleH: number; scaleW: number } {
  if ((o.scale === undefined) === (o.size === undefined)) {
    throw new MghfError('E_OPTION', 'Expected exactly one of opts.scale and opts.size', { argument: 'opts' });
  }
  if (o.scale !== undefined) {
    const s = o.scale;
    if (typeof s !== 'number' || !Number.isFinite(s) || s < 1 / 1024 || s > 1024) throw invalidParameterError('E_OPTION', 'opts.scale', 'a number in [1/1024, 1024]', s);
    const outH = Math.ceil(H * s);
    const outW = Math.ceil(W * s);
    if (outH > MAX_SIDE || outW > MAX_SIDE) throw invalidParameterError('E_OPTION', 'opts.scale', `a scale giving sides of at most ${MAX_SIDE}`, s);
    return { outH, outW, scaleH: s, scaleW: s };
  }
  const size = o.size as unknown;
  if (!Array.isArray(size) || size.length !== 2 || !size.every((v) => Number.isInteger(v) && v >= 1 && v <= MAX_SIDE)) {
    throw invalidParameterError('E_OPTION', 'opts.size', `[h, w], integers in [1, ${MAX_SIDE}]`, size);
  }
  const [outH, outW] = size as number[];
  const scaleH = outH / H;
  const scaleW = outW / W;
  if (scaleH < 1 / 1024 || scaleH > 1024 || scaleW < 1 / 1024 || scaleW > 1024) {
    throw invalidParameterError('E_OPTION', 'opts.size', 'a size within 1/1024 to 1024 times the input', size);
  }
  return { outH, outW, scaleH, scaleW };
}

function prepareResize(x: unknown, opts: unknown): Call<Tensor> {
  const o = checkOptions(opts ?? {}, RESIZE_OPTION_NAMES);
  const xT = tensorArg(x, 'x', 4, NCHW);
  const p = resizePlan(o, xT.dims[2], xT.dims[3]);
  return { name: 'resize', inputs: [toNative(xT)], attrs: { ...p }, finish: (out) => output(out.y, 'y') };
}

function prepareResizeBackward(dy: unknown, opts: unknown): Call<Tensor> {
  const o = checkOptions(opts ?? {}, RESIZE_BACKWARD_OPTION_NAMES);
  const dims = o.inputDims as unknown;
  if (!Array.isArray(dims) || dims.length !== 4 || !dims.every((v) => Number.isInteger(v) && v >= 1 && v <= MAX_SIDE)) {
    throw invalidParameterError('E_OPTION', 'opts.inputDims', "[B, C, H, W], the forward's x.dims", dims);
  }
  const [B, C, H, W] = dims as number[];
  const p = resizePlan(o, H, W);
  const d = tensorArg(dy, 'dy', 4, NCHW);
  const want = [B, C, p.outH, p.outW];
  if (d.dims.some((v, i) => v !== want[i])) {
    throw new MghfError('E_SHAPE', `Expected dy to have the dims of the resize's output ([${want.join(',')}]) but received [${d.dims.join(',')}]`, {
      argument: 'dy',
    });
  }
  return {
    name: 'resizeBackward',
    inputs: [toNative(d)],
    attrs: { inH: H, inW: W, scaleH: p.scaleH, scaleW: p.scaleW },
    finish: (out) => output(out.dx, 'dx'),
  };
}

// ------------------------------------------------------------------ adam

const ADAM_KEY = Symbol('mghf.AdamState');

/**
 * Adam's moments for a list of parameters (ops.adamState): m and v per parameter (zeros, their
 * dims, on the parameters' device) and the number of steps taken. ops.adam updates it in place.
 * dispose() frees m and v.
 */
export class AdamState {
  readonly m: readonly Tensor[];
  readonly v: readonly Tensor[];
  /** Where m and v live: the location of the parameters they were made for. */
  readonly location: TensorLocation;
  /** Steps taken so far (0 before the first ops.adam). */
  step = 0;

  /** Made by ops.adamState only. */
  constructor(key: symbol, dims: readonly (readonly number[])[], location: TensorLocation = 'cpu') {
    if (key !== ADAM_KEY) throw new MghfError('E_ARGUMENT', 'An AdamState is made by ops.adamState, not constructed');
    this.location = location;
    const opts = location === 'cpu' ? undefined : { device: location };
    const zeros = (d: readonly number[]) => new Tensor(new Float32Array(d.reduce((a, b) => a * b, 1)), d, opts);
    this.m = Object.freeze(dims.map(zeros));
    this.v = Object.freeze(dims.map(zeros));
  }

  get disposed(): boolean {
    return this.m.some((t) => t.disposed) || this.v.some((t) => t.disposed);
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface AdamOptions {
  /** Learning rate (default 1e-3). */
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}
export const ADAM_OPTION_NAMES = ['lr', 'beta1', 'beta2', 'eps'] as const;

function paramList(v: unknown, name: string): Tensor[] {
  if (!Array.isArray(v) || v.length === 0) throw invalidParameterError('E_ARGUMENT', name, 'a non-empty array of tensors', v);
  return v.map((t, i) => tensorArg(t, `${name}[${i}]`));
}

function prepareAdamState(params: unknown): AdamState {
  const p = paramList(params, 'params');
  const location = sameLocation(p.map((t, i) => [`params[${i}]`, t] as const));
  return new AdamState(
    ADAM_KEY,
    p.map((t) => t.dims),
    location,
  );
}

function prepareAdam(params: unknown, grads: unknown, state: unknown, opts: unknown): Call<void> {
  const o = checkOptions(opts, ADAM_OPTION_NAMES);
  const lr = numberOpt(o, 'lr', 1e-3, 0, 1e6, 'a number in [0, 1e6]');
  const beta1 = numberOpt(o, 'beta1', 0.9, 0, 0.999999999, 'a number in [0, 1)');
  const beta2 = numberOpt(o, 'beta2', 0.999, 0, 0.999999999, 'a number in [0, 1)');
  const eps = numberOpt(o, 'eps', 1e-8, 1e-30, 1, 'a number in [1e-30, 1]');
  const p = paramList(params, 'params');
  const g = paramList(grads, 'grads');
  if (g.length !== p.length) throw invalidParameterError('E_ARGUMENT', 'grads', `${p.length} tensors (one per parameter)`, `${g.length} tensors`);
  if (!(state instanceof AdamState)) throw invalidParameterError('E_ARGUMENT', 'state', 'the AdamState of ops.adamState(params)', state);
  if (state.m.length !== p.length) throw invalidParameterError('E_ARGUMENT', 'state', `the state of ${p.length} parameters`, `one of ${state.m.length}`);
  const inputs: NativeOpValue[] = [];
  const located: Array<readonly [string, Tensor]> = [];
  p.forEach((pi, i) => {
    sameDims(pi, `params[${i}]`, g[i], `grads[${i}]`);
    const m = tensorArg(state.m[i], `state.m[${i}]`);
    const v = tensorArg(state.v[i], `state.v[${i}]`);
    sameDims(pi, `params[${i}]`, m, `state.m[${i}]`);
    located.push([`params[${i}]`, pi], [`grads[${i}]`, g[i]], [`state.m[${i}]`, m], [`state.v[${i}]`, v]);
    inputs.push(toNative(pi), toNative(g[i]), toNative(m), toNative(v));
  });
  const location = sameLocation(located);
  const step = state.step + 1;
  return {
    name: 'adam',
    inputs,
    attrs: { lr, beta1, beta2, eps, step },
    finish: (out) => {
      // On a device the op updated p, m and v in place: the same device tensors, nothing to copy.
      if (location !== 'cpu') {
        state.step = step;
        return;
      }
      // In place: the caller's Float32Arrays keep their identity.
      const into = (t: Tensor, key: string) => {
        const d = out[key] as { data?: unknown } | undefined;
        if (!d || !is.float32Array(d.data) || d.data.length !== t.data.length) throw new MghfError('E_NATIVE', `The native adam op returned no ${key}`);
        t.data.set(d.data);
      };
      p.forEach((pi, i) => {
        into(pi, `p${i}`);
        into(state.m[i], `m${i}`);
        into(state.v[i], `v${i}`);
      });
      state.step = step;
    },
  };
}

// ------------------------------------------------------------------ the functions

/** Spread into lib/ops.ts's `ops`. Backward of `add`: da = dy, db = alpha·dy (no op needed). */
export const trainerOps = {
  /** y = conv2d(x, w) + b: x [B,Ci,H,W], w [Co,Ci/groups,k,k] (k odd), b [Co] or null; "same" padding. */
  conv2d: async (x: In, w: In, b: In | null, opts?: Conv2dOptions): Promise<Tensor> => runAsync(prepareConv2d(x, w, b, opts)),
  conv2dSync: (x: In, w: In, b: In | null, opts?: Conv2dOptions): Tensor => runSync(prepareConv2d(x, w, b, opts)),
  /** dx, dw, db of conv2d for the output gradient dy (same options as the forward, plus which gradients). */
  conv2dBackward: async (x: In, w: In, dy: In, opts?: Conv2dBackwardOptions): Promise<Conv2dGrads> => runAsync(prepareConv2dBackward(x, w, dy, opts)),
  conv2dBackwardSync: (x: In, w: In, dy: In, opts?: Conv2dBackwardOptions): Conv2dGrads => runSync(prepareConv2dBackward(x, w, dy, opts)),
  /** PyTorch's pixel_shuffle: [B, C·r², H, W] → [B, C, H·r, W·r]. */
  pixelShuffle: async (x: In, factor: number): Promise<Tensor> => runAsync(preparePixelShuffle(x, factor)),
  pixelShuffleSync: (x: In, factor: number): Tensor => runSync(preparePixelShuffle(x, factor)),
  /** Its adjoint (pixel_unshuffle): dy [B, C, H·r, W·r] → dx [B, C·r², H, W]. */
  pixelShuffleBackward: async (dy: In, factor: number): Promise<Tensor> => runAsync(preparePixelShuffleBackward(dy, factor)),
  pixelShuffleBackwardSync: (dy: In, factor: number): Tensor => runSync(preparePixelShuffleBackward(dy, factor)),
  /** max(x, 0). */
  relu: async (x: In): Promise<Tensor> => runAsync(prepareActivation('relu', x, {})),
  reluSync: (x: In): Tensor => runSync(prepareActivation('relu', x, {})),
  /** dx = dy where x > 0, else 0. */
  reluBackward: async (x: In, dy: In): Promise<Tensor> => runAsync(prepareActivationBackward('reluBackward', x, dy, {})),
  reluBackwardSync: (x: In, dy: In): Tensor => runSync(prepareActivationBackward('reluBackward', x, dy, {})),
  /** x where x > 0, else slope·x. */
  leakyRelu: async (x: In, opts?: LeakyReluOptions): Promise<Tensor> => runAsync(prepareActivation('leakyRelu', x, { slope: slopeOf(opts) })),
  leakyReluSync: (x: In, opts?: LeakyReluOptions): Tensor => runSync(prepareActivation('leakyRelu', x, { slope: slopeOf(opts) })),
  /** dx = dy where x > 0, else slope·dy. */
  leakyReluBackward: async (x: In, dy: In, opts?: LeakyReluOptions): Promise<Tensor> =>
    runAsync(prepareActivationBackward('leakyReluBackward', x, dy, { slope: slopeOf(opts) })),
  leakyReluBackwardSync: (x: In, dy: In, opts?: LeakyReluOptions): Tensor =>
    runSync(prepareActivationBackward('leakyReluBackward', x, dy, { slope: slopeOf(opts) })),
  /** a + alpha·b (same dims). Backward: da = dy, db = alpha·dy. */
  add: async (a: In, b: In, opts?: AddOptions): Promise<Tensor> => runAsync(prepareAdd(a, b, opts)),
  addSync: (a: In, b: In, opts?: AddOptions): Tensor => runSync(prepareAdd(a, b, opts)),
  /** loss = mean |x − y|; dx = sign(x − y)/count (sign(0) = 0). */
  l1: async <O extends PixelLossOptions = PixelLossOptions>(x: In, y: In, opts?: O): Promise<WithDx<O>> => runAsync(prepareL1(x, y, opts)) as Promise<WithDx<O>>,
  l1Sync: <O extends PixelLossOptions = PixelLossOptions>(x: In, y: In, opts?: O): WithDx<O> => runSync(prepareL1(x, y, opts)) as WithDx<O>,
  /** loss = mean sqrt((x − y)² + eps²); dx = (x − y)/sqrt((x − y)² + eps²)/count. */
  charbonnier: async <O extends CharbonnierOptions = CharbonnierOptions>(x: In, y: In, opts?: O): Promise<WithDx<O>> =>
    runAsync(prepareCharbonnier(x, y, opts)) as Promise<WithDx<O>>,
  charbonnierSync: <O extends CharbonnierOptions = CharbonnierOptions>(x: In, y: In, opts?: O): WithDx<O> =>
    runSync(prepareCharbonnier(x, y, opts)) as WithDx<O>,
  /** MATLAB imresize bicubic (antialiased when shrinking), as BasicSR's imresize: { scale } (out = ceil(in·scale)) or { size: [h, w] }. */
  resize: async (x: In, opts: ResizeOptions): Promise<Tensor> => runAsync(prepareResize(x, opts)),
  resizeSync: (x: In, opts: ResizeOptions): Tensor => runSync(prepareResize(x, opts)),
  /** The exact adjoint of resize: dy → dx of dims opts.inputDims. */
  resizeBackward: async (dy: In, opts: ResizeBackwardOptions): Promise<Tensor> => runAsync(prepareResizeBackward(dy, opts)),
  resizeBackwardSync: (dy: In, opts: ResizeBackwardOptions): Tensor => runSync(prepareResizeBackward(dy, opts)),
  /** Zero Adam moments for these parameters, on their device. */
  adamState: (params: In[]): AdamState => prepareAdamState(params),
  /** One step of PyTorch's Adam: updates each params[i], state.m, state.v in place (on their device) and state.step. */
  adam: async (params: Tensor[], grads: In[], state: AdamState, opts?: AdamOptions): Promise<void> => runAsync(prepareAdam(params, grads, state, opts)),
  adamSync: (params: Tensor[], grads: In[], state: AdamState, opts?: AdamOptions): void => runSync(prepareAdam(params, grads, state, opts)),
};
