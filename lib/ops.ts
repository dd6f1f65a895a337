// `ops`: the kernels of the loss as typed tensor functions (issue 15) on host tensors or on
// tensors of one CUDA device (the registry runs each op's CUDA function for device inputs). Each op checks its arguments here, then makes one call to the binding's generic entry
// (native().op / opSync(name, inputs, attrs)), which dispatches through the registry of
// native/core/ops to the same core functions mghfLoss runs. A composition of these ops, with each
// term's dS summed n + csc + lip (test/ops.test.ts), computes what mghfLoss computes, bit for bit.

import { MghfError, invalidParameterError } from './errors';
import { type Disposable, liveTensors, track, untrack } from './lifetime';
import { OPTION_BOUNDS, type BoundedOption, boundText, checkCost, checkReweight, featuresCost, inBound } from './limits';
import { toSelected, type InputRange } from './loss';
import { resolveDevice } from './device';
import { type NativeOpValue, type NativeWeights, type OpHandle, loadedAddon, native } from './native';
import { type DeviceHandle, Tensor, type TensorLike, type TensorLocation, disposedError, installDeviceTransfer } from './tensor';
import { type Attrs, type Call, type NativeOutputs, flag, isOpOutput, output, runAsync, runSync, sameDims, sameLocation, scalar, toConsumed, toNative } from './op-call';
import { trainerOps } from './trainer-ops';
import { checkFinite, checkOptions, is, toImageTensor } from './validate';
import { type DfeWeights, checkWeights, defaultWeights } from './weights';


// ------------------------------------------------------------------ the DFE tape

const TAPE_KEY = Symbol('mghf.DfeTape');

/**
 * What `ops.dfe` records for `ops.dfeBackward`: an opaque native object (the ReLU6 masks, z1 and
 * exp(ρ) of every coupling, and the weights). Free it with dispose() (or `using`, or scope());
 * the garbage collector frees a forgotten one eventually, as a safety net only. A tape can be
 * used for any number of backward passes until disposed.
 */
export class DfeTape implements Disposable {
  /** Where it lives: the location of the x it was recorded for. */
  readonly location: TensorLocation;
  readonly id: number;
  /** The dims of the x it was recorded for, [B, 3, H, W]. */
  readonly inputDims: readonly number[];
  /** The dims of its features F (and of the dF its backward takes), [B, N, H, W]. */
  readonly featureDims: readonly number[];
  #handle: OpHandle | undefined;

  /** Made by ops.dfe only. */
  constructor(key: symbol, handle: OpHandle, inputDims: readonly number[], featureDims: readonly number[], location: TensorLocation = 'cpu') {
    if (key !== TAPE_KEY) throw new MghfError('E_ARGUMENT', 'A DfeTape is made by ops.dfe / ops.dfeSync, not constructed');
    this.#handle = handle;
    this.location = location;
    this.id = nextTapeId++;
    this.inputDims = Object.freeze([...inputDims]);
    this.featureDims = Object.freeze([...featureDims]);
    track(this);
  }

  get disposed(): boolean {
    return this.#handle === undefined;
  }

  /** Frees the native tape now (unless a running dfeBackward still reads it: then when it ends). Safe to call twice. */
  dispose(): void {
    const h = this.#handle;
    if (h === undefined) return;
    this.#handle = undefined;
    untrack(this);
    native().opRelease?.(h);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** "DFE tape #3 of x [1,3,48,48] (cpu)": how messages name it. */
  describe(): string {
    return `DFE tape #${this.id} of x [${this.inputDims.join(',')}] (${this.location})`;
  }

  /** The native handle, or E_DISPOSED naming argument `name`. */
  static handleOf(t: DfeTape, name: string): OpHandle {
    if (t.#handle === undefined) throw disposedError(`${name} (${t.describe()})`, name);
    return t.#handle;
  }
}
let nextTapeId = 1;

// ------------------------------------------------------------------ memory()

export interface DeviceMemory {
  /** Live Tensors here: created, and neither disposed nor yet garbage-collected. */
  numTensors: number;
  /** Their data bytes. */
  numBytes: number;
  /** Live native objects the ops hold (DFE tapes). */
  numNativeObjects: number;
  /** Their bytes. */
  nativeBytes: number;
}

export interface MemoryInfo extends DeviceMemory {
  /**
   * The same per location ('cpu', 'cuda:0', …). For a CUDA device, numNativeObjects/nativeBytes
   * count its live native buffers (device tensors not yet freed natively: a collected but not
   * yet finalized tensor still holds its memory); DFE tapes, wherever they are, count under 'cpu'.
   */
  devices: Record<string, DeviceMemory>;
}

/**
 * Live Tensors and native objects, and their bytes, in total and per location (tf.memory()'s
 * role): a count that grows over a training loop is a leak (dispose, or scope()). A tensor
 * neither disposed nor collected yet still counts.
 */
export function memory(): MemoryInfo {
  const devices: Record<string, DeviceMemory> = {};
  const entry = (loc: string) => (devices[loc] ??= { numTensors: 0, numBytes: 0, numNativeObjects: 0, nativeBytes: 0 });
  for (const [loc, c] of liveTensors()) {
    const d = entry(loc);
    d.numTensors = c.count;
    d.numBytes = c.bytes;
  }
  const n = loadedAddon()?.opMemory?.();
  const cpu = entry('cpu');
  cpu.numNativeObjects = n?.objects ?? 0;
  cpu.nativeBytes = n?.bytes ?? 0;
  for (const d of loadedAddon()?.deviceMemory?.() ?? []) {
    if (d.tensors === 0 && devices[`cuda:${d.device}`] === undefined) continue;
    const e = entry(`cuda:${d.device}`);
    e.numNativeObjects = d.tensors;
    e.nativeBytes = d.bytes;
  }
  const total: DeviceMemory = { numTensors: 0, numBytes: 0, numNativeObjects: 0, nativeBytes: 0 };
  for (const d of Object.values(devices)) {
    total.numTensors += d.numTensors;
    total.numBytes += d.numBytes;
    total.numNativeObjects += d.numNativeObjects;
    total.nativeBytes += d.nativeBytes;
  }
  return { ...total, devices };
}

// ------------------------------------------------------------------ argument checks

/** A tensor argument; a disposed Tensor is E_DISPOSED naming `name`. */
function tensorArg(v: unknown, name: string): Tensor {
  return Tensor.from(v as TensorLike, name);
}

/** A [B, N, H, W] feature tensor, finite (a device tensor is not scanned here: the op's outputs are checked on the device). */
function featureArg(v: unknown, name: string): Tensor {
  const t = tensorArg(v, name);
  if (t.dims.length !== 4) throw invalidParameterError('E_SHAPE', `${name}.dims`, '4 dims [B, N, H, W] (features, as ops.dfe returns)', t.dims);
  if (t.location === 'cpu' && !isOpOutput(t)) checkFinite(t.data, name, t.dims);
  return t;
}

/**
 * The output gradient a backward takes with `tape`: a feature tensor on the tape's device
 * (E_DEVICE otherwise: nothing is copied) with the dims of what the forward returned (`dimsOf`).
 */
function tapeGradientArg(tape: DfeTape, v: unknown, name: string, dimsOf: string): Tensor {
  const d = featureArg(v, name);
  if (d.location !== tape.location) {
    throw new MghfError(
      'E_DEVICE',
      `Expected ${name} on ${tape.location}, where tape (${tape.describe()}) is, but ${name} is on ${d.location}: ` +
        `ops never copy between devices; move ${name} with ${name}.to('${tape.location}')`,
      { argument: name },
    );
  }
  if (d.dims.length !== tape.featureDims.length || d.dims.some((x, i) => x !== tape.featureDims[i])) {
    throw new MghfError('E_SHAPE', `Expected ${name} to have the dims of ${dimsOf} ([${tape.featureDims.join(',')}]) but received [${d.dims.join(',')}]`, {
      argument: name,
    });
  }
  return d;
}

function featurePair(G: unknown, S: unknown): [Tensor, Tensor] {
  const g = featureArg(G, 'G');
  const s = featureArg(S, 'S');
  sameLocation([['G', g], ['S', s]]);
  sameDims(g, 'G', s, 'S');
  return [g, s];
}

/** A tensor as the op entry takes it: host data and dims, or a device tensor's handle. */
/** Reads each named numeric option within its documented bound (OPTION_BOUNDS), else its default. */
function bounded<K extends string>(o: Partial<Record<string, unknown>>, defaults: Record<K, number>, boundOf: Record<K, BoundedOption>): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const key of Object.keys(defaults) as K[]) {
    const v = o[key] ?? defaults[key];
    const b = OPTION_BOUNDS[boundOf[key]];
    if (!inBound(v, b)) throw invalidParameterError('E_OPTION', `opts.${key}`, boundText(b), v);
    out[key] = v;
  }
  return out;
}

/** opts.addTo: the gradient so far, dims of S; the op's dS is addTo + its own term (addTo unchanged). */
function addToArg(o: Partial<Record<string, unknown>>, S: Tensor): Tensor | undefined {
  if (o.addTo === undefined || o.addTo === null) return undefined;
  const t = featureArg(o.addTo, 'opts.addTo');
  sameLocation([['S', S], ['opts.addTo', t]]);
  sameDims(S, 'S', t, 'opts.addTo');
  return t;
}

// ------------------------------------------------------------------ dfe, dfeBackward

export interface DfeOpOptions {
  /** DFE weights (loadWeights / createWeights). Default: the bundled pretrained weights. */
  weights?: DfeWeights;
  /** 'unit' ([0,1], default) or 'symmetric' ([-1,1]). */
  inputRange?: InputRange;
  /** false: no tape (no backward will follow: less memory). Default true. */
  tape?: boolean;
}

export interface DfeOpResult {
  /** The features F = DFE(x), [B, N, H, W]. */
  F: Tensor;
  /** For dfeBackward; absent with `tape: false`. */
  tape?: DfeTape;
}

export const DFE_OPTION_NAMES = ['weights', 'inputRange', 'tape'] as const;

function prepareDfe(x: unknown, opts: unknown): Call<DfeOpResult> {
  const o = checkOptions(opts, DFE_OPTION_NAMES);
  const inputRange = o.inputRange ?? 'unit';
  if (inputRange !== 'unit' && inputRange !== 'symmetric') throw invalidParameterError('E_OPTION', 'opts.inputRange', "'unit' or 'symmetric'", inputRange);
  const withTape = flag(o, 'tape', true);
  const w = o.weights === undefined ? defaultWeights() : checkWeights(o.weights, 'opts.weights');
  const xT = imageArg(x, inputRange);
  const [B, , H, W] = xT.dims;
  if (H < 2 || W < 2) {
    throw new MghfError('E_TOO_SMALL', `Expected x to be at least 2×2 pixels (the DFE's reflection padding needs 2) but received ${H}×${W} (H×W)`, {
      argument: 'x',
    });
  }
  checkCost(featuresCost(B, H, W, w.channels, w.blocks, w.expand), 'ops.dfe', xT.dims);
  const nw: NativeWeights = { channels: w.channels, blocks: w.blocks, expand: w.expand, tensors: w.tensors };
  return {
    name: 'dfe',
    inputs: [toNative(xT, 'x'), nw],
    attrs: { inputRange, tape: withTape },
    finish: (out) => {
      const F = output(out.F, 'F');
      if (!withTape) return { F };
      if (out.tape === undefined) throw new MghfError('E_NATIVE', 'The native dfe op returned no tape');
      return { F, tape: new DfeTape(TAPE_KEY, out.tape as OpHandle, xT.dims, F.dims, xT.location) };
    },
  };
}

/**
 * x [B, 3, H, W]: a host image is checked value by value (toImageTensor); a device one by its
 * dims only (its values are not on the host; the features are checked on the device).
 */
function imageArg(x: unknown, inputRange: InputRange): Tensor {
  const t = tensorArg(x, 'x');
  if (t.location === 'cpu') return toImageTensor(t, 'x', 'NCHW', inputRange);
  if (t.dims.length !== 4 || t.dims[1] !== 3) throw invalidParameterError('E_SHAPE', 'x.dims', '4 dims [B, 3, H, W]', t.dims);
  return t;
}

export interface DfeBackwardOptions {
  /** true: dF is handed over: the backward uses its memory as scratch instead of a copy of it, and disposes dF (also when it fails). Default false. */
  consume?: boolean;
}

export const DFE_BACKWARD_OPTION_NAMES = ['consume'] as const;

function prepareDfeBackward(tape: unknown, dF: unknown, opts: unknown): Call<Tensor> {
  const o = checkOptions(opts, DFE_BACKWARD_OPTION_NAMES);
  const consume = flag(o, 'consume', false);
  if (!(tape instanceof DfeTape)) throw invalidParameterError('E_ARGUMENT', 'tape', 'the tape of ops.dfe', tape);
  const handle = DfeTape.handleOf(tape, 'tape');
  const d = tapeGradientArg(tape, dF, 'dF', "the tape's features");
  return {
    name: 'dfeBackward',
    inputs: [handle, consume ? toConsumed(d, 'dF') : toNative(d, 'dF')],
    attrs: {},
    consumed: consume ? [d] : [],
    finish: (out) => output(out.dx, 'dx'),
  };
}

// ------------------------------------------------------------------ the DFE's pieces
// Each on host tensors or on tensors of one CUDA device (its CUDA function then runs, and a forward's
// tape lives on that device: its backward takes dy there). Weight gradients are host Float64Arrays.

export interface PieceOptions {
  /** DFE weights (loadWeights / createWeights). Default: the bundled pretrained weights. */
  weights?: DfeWeights;
  /** false: no tape (no backward will follow). Default true. */
  tape?: boolean;
}

export interface CouplingOptions extends PieceOptions {
  /** Which block k of the weights (0 … blocks − 1). Default 0. */
  block?: number;
}

export interface PieceBackwardOptions {
  /** true: also the gradients of the piece's weights (by SPEC §9 name). Default false. */
  weightGrad?: boolean;
  /** true: the output gradient is handed over (used as scratch; disposed). Default false. */
  consume?: boolean;
}

/** What a piece's backward returns: the input gradient and, with weightGrad, the weights' (float64, by SPEC §9 name). */
export interface PieceGradient {
  dx: Tensor;
  weightGrads?: Record<string, Float64Array>;
}

export const NORMALIZE_OPTION_NAMES = ['inputRange'] as const;
export const PIECE_OPTION_NAMES = ['weights', 'tape'] as const;
export const COUPLING_OPTION_NAMES = ['weights', 'tape', 'block'] as const;
export const PIECE_BACKWARD_OPTION_NAMES = ['weightGrad', 'consume'] as const;

function rangeOption(o: Partial<Record<string, unknown>>): InputRange {
  const r = o.inputRange ?? 'unit';
  if (r !== 'unit' && r !== 'symmetric') throw invalidParameterError('E_OPTION', 'opts.inputRange', "'unit' or 'symmetric'", r);
  return r;
}

function prepareNormalize(x: unknown, opts: unknown): Call<Tensor> {
  const inputRange = rangeOption(checkOptions(opts, NORMALIZE_OPTION_NAMES));
  const xT = imageArg(x, inputRange);
  return { name: 'normalize', inputs: [toNative(xT)], attrs: { inputRange }, finish: (out) => output(out.xh, 'xh') };
}

function prepareNormalizeBackward(dxh: unknown, opts: unknown): Call<Tensor> {
  const inputRange = rangeOption(checkOptions(opts, NORMALIZE_OPTION_NAMES));
  const d = featureArg(dxh, 'dxh');
  if (d.dims[1] !== 3) throw invalidParameterError('E_SHAPE', 'dxh.dims', '[B, 3, H, W]', d.dims);
  return { name: 'normalizeBackward', inputs: [toNative(d)], attrs: { inputRange }, finish: (out) => output(out.dx, 'dx') };
}

function pieceWeights(o: Partial<Record<string, unknown>>): { w: DfeWeights; nw: NativeWeights } {
  const w = o.weights === undefined ? defaultWeights() : checkWeights(o.weights, 'opts.weights');
  return { w, nw: { channels: w.channels, blocks: w.blocks, expand: w.expand, tensors: w.tensors } };
}

function pieceForward(name: 'stem' | 'coupling', outName: 'z' | 'y', input: Tensor, nw: NativeWeights, attrs: Attrs, withTape: boolean): Call<{ out: Tensor; tape?: DfeTape }> {
  return {
    name,
    inputs: [toNative(input), nw],
    attrs,
    finish: (out) => {
      const t = output(out[outName], outName);
      if (!withTape) return { out: t };
      if (out.tape === undefined) throw new MghfError('E_NATIVE', `The native ${name} op returned no tape`);
      return { out: t, tape: new DfeTape(TAPE_KEY, out.tape as OpHandle, input.dims, t.dims, input.location) };
    },
  };
}

function prepareStem(xh: unknown, opts: unknown): Call<{ out: Tensor; tape?: DfeTape }> {
  const o = checkOptions(opts, PIECE_OPTION_NAMES);
  const withTape = flag(o, 'tape', true);
  const { nw } = pieceWeights(o);
  const x = featureArg(xh, 'xh');
  if (x.dims[1] !== 3) throw invalidParameterError('E_SHAPE', 'xh.dims', '[B, 3, H, W] (as ops.normalize returns)', x.dims);
  if (x.dims[2] < 2 || x.dims[3] < 2) {
    throw new MghfError('E_TOO_SMALL', `Expected xh to be at least 2×2 but received ${x.dims[2]}×${x.dims[3]} (H×W)`, { argument: 'xh' });
  }
  return pieceForward('stem', 'z', x, nw, { tape: withTape }, withTape);
}

function prepareCoupling(z: unknown, opts: unknown): Call<{ out: Tensor; tape?: DfeTape }> {
  const o = checkOptions(opts, COUPLING_OPTION_NAMES);
  const withTape = flag(o, 'tape', true);
  const { w, nw } = pieceWeights(o);
  const block = o.block ?? 0;
  if (!Number.isInteger(block) || (block as number) < 0 || (block as number) >= w.blocks) {
    throw invalidParameterError('E_OPTION', 'opts.block', `an integer in [0, ${w.blocks - 1}] (the weights' blocks)`, block);
  }
  const t = featureArg(z, 'z');
  if (t.dims[1] !== w.channels) throw invalidParameterError('E_SHAPE', 'z.dims', `[B, ${w.channels}, H, W] (the weights' N channels)`, t.dims);
  if (t.dims[2] < 2 || t.dims[3] < 2) {
    throw new MghfError('E_TOO_SMALL', `Expected z to be at least 2×2 but received ${t.dims[2]}×${t.dims[3]} (H×W)`, { argument: 'z' });
  }
  return pieceForward('coupling', 'y', t, nw, { tape: withTape, block: block as number }, withTape);
}

function preparePieceBackward(name: 'stemBackward' | 'couplingBackward', tape: unknown, d: unknown, opts: unknown): Call<PieceGradient> {
  const o = checkOptions(opts, PIECE_BACKWARD_OPTION_NAMES);
  const weightGrad = flag(o, 'weightGrad', false);
  const consume = flag(o, 'consume', false);
  const what = name === 'stemBackward' ? 'ops.stem' : 'ops.coupling';
  if (!(tape instanceof DfeTape)) throw invalidParameterError('E_ARGUMENT', 'tape', `the tape of ${what}`, tape);
  const handle = DfeTape.handleOf(tape, 'tape');
  const dT = tapeGradientArg(tape, d, 'dy', 'the output');
  return {
    name,
    inputs: [handle, consume ? toConsumed(dT) : toNative(dT)],
    attrs: { weightGrad },
    consumed: consume ? [dT] : [],
    finish: (out) => {
      const dx = output(name === 'stemBackward' ? out.dxh : out.dz, 'dx');
      if (!weightGrad) return { dx };
      const weightGrads: Record<string, Float64Array> = {};
      for (const [k, v] of Object.entries(out)) if (k.startsWith('grad:')) weightGrads[k.slice(5)] = v as Float64Array;
      return { dx, weightGrads };
    },
  };
}

// ------------------------------------------------------------------ entropyPruneReweight

/** SPEC §4's choice: what ops.entropyPruneReweight returns and ops.csc takes. */
export interface ChannelSelection {
  /** I per map, [B·N] row-major (B rows of N). */
  importance: Float64Array;
  /** The kept channels, [B·M], each row ascending. */
  selected: Int32Array;
  /** Their weights w = (1 + α·I)^γ, [B·M]. */
  weights: Float64Array;
  B: number;
  N: number;
  M: number;
}

export interface EntropyOpOptions {
  /** Channels kept (default 64, capped at N). */
  M?: number;
  alpha?: number;
  gamma?: number;
  /** Kept channels per sample, [B][M] or flat, each row strictly ascending; replaces the top-M choice. */
  selected?: ArrayLike<number> | ArrayLike<ArrayLike<number>> | null;
}

export const ENTROPY_OPTION_NAMES = ['M', 'alpha', 'gamma', 'selected'] as const;

function prepareEntropy(G: unknown, S: unknown, opts: unknown): Call<ChannelSelection> {
  const o = checkOptions(opts, ENTROPY_OPTION_NAMES);
  const v = bounded(o, { M: 64, alpha: 1, gamma: 1 }, { M: 'M', alpha: 'alpha', gamma: 'gamma' });
  checkReweight(v.alpha, v.gamma);
  const [g, s] = featurePair(G, S);
  const [B, N] = g.dims;
  const M = Math.min(v.M, N);
  const selected = toSelected(o.selected, B, M, N);
  return {
    name: 'entropyPruneReweight',
    inputs: [toNative(g, 'G'), toNative(s, 'S'), selected],
    attrs: { M, alpha: v.alpha, gamma: v.gamma },
    finish: (out) => ({
      importance: out.importance as Float64Array,
      selected: out.selected as Int32Array,
      weights: out.weights as Float64Array,
      B,
      N,
      M,
    }),
  };
}

/** A ChannelSelection for features [B, N, …]: B·M indices in [0, N) and as many finite weights. */
function selectionArg(v: unknown, B: number, N: number): { selected: Int32Array; weights: Float64Array } {
  if (!is.object(v)) throw invalidParameterError('E_ARGUMENT', 'selection', 'the result of ops.entropyPruneReweight', v);
  const { selected, weights } = v as Partial<ChannelSelection>;
  if (!(selected instanceof Int32Array) || selected.length === 0 || selected.length % B !== 0 || selected.length / B > N) {
    throw invalidParameterError('E_SHAPE', 'selection.selected', `an Int32Array of B·M channel indices (B = ${B}, M ≤ N = ${N})`, selected);
  }
  for (let i = 0; i < selected.length; i++) {
    if (selected[i] < 0 || selected[i] >= N) {
      throw invalidParameterError('E_SHAPE', `selection.selected[${i}]`, `a channel index in [0, ${N})`, selected[i], 'selection.selected');
    }
  }
  if (!(weights instanceof Float64Array) || weights.length !== selected.length) {
    throw invalidParameterError('E_SHAPE', 'selection.weights', `a Float64Array of ${selected.length} weights (one per kept channel)`, weights);
  }
  for (let i = 0; i < weights.length; i++) {
    if (!Number.isFinite(weights[i])) throw invalidParameterError('E_NONFINITE', `selection.weights[${i}]`, 'a finite weight', weights[i], 'selection.weights');
  }
  return { selected, weights };
}

// ------------------------------------------------------------------ csc, lip, mseTerm

/** Options every term op shares. */
export interface TermOptions {
  /** The term's weight in your loss: dS is scale·∂term/∂S (Γ1, Γ2, Γ3 in MGHF-c). Default 1. */
  scale?: number;
  /** false: the value only, no dS. Default true. */
  grad?: boolean;
  /** The gradient so far ([B, N, H, W], dims of S): dS is then addTo + scale·∂term/∂S, the term's contributions added onto a copy of it in float32 (addTo is not changed). */
  addTo?: Tensor | TensorLike | null;
  /**
   * true: addTo is handed over instead of copied: the op adds into addTo's own memory when it is
   * an op's output (no copy, no new allocation), returns that memory as dS, and disposes addTo
   * (also when the op fails). The same values as without. Default false.
   */
  consume?: boolean;
}

/** R, plus dS unless the options say grad: false. */
export type WithGrad<O, R> = O extends { grad: false } ? R : R & { dS: Tensor };

export interface CscOpOptions extends TermOptions {
  /** Weights of the MSE, correlation and Gram parts (default 0.1333, 1, 0.1333); 0 skips a part (reported 0). */
  beta1?: number;
  beta2?: number;
  beta3?: number;
}

export interface CscValue {
  mse: number;
  corr: number;
  gram: number;
  /** β1·mse + β2·corr + β3·gram. */
  csc: number;
}

export interface LipOpOptions extends TermOptions {
  patch?: number;
  stride?: number;
  pmax?: number;
  tau?: number;
  epsOt?: number;
  Q?: number;
  iters?: number;
  /** Differentiate through the Sinkhorn plan (default true) or hold it constant. */
  sinkhornGrad?: boolean;
}

export interface LipValue {
  lip: number;
}

export interface MseTermValue {
  /** L_n = mean (S − G)² over every feature. */
  n: number;
}

const TERM_NAMES = ['scale', 'grad', 'addTo', 'consume'] as const;
export const CSC_OPTION_NAMES = ['beta1', 'beta2', 'beta3', ...TERM_NAMES] as const;
export const LIP_OPTION_NAMES = ['patch', 'stride', 'pmax', 'tau', 'epsOt', 'Q', 'iters', 'sinkhornGrad', ...TERM_NAMES] as const;
export const MSE_TERM_OPTION_NAMES = TERM_NAMES;

function termCommon(o: Partial<Record<string, unknown>>, S: Tensor) {
  const { scale } = bounded(o, { scale: 1 }, { scale: 'gamma1' });
  const grad = flag(o, 'grad', true);
  const consume = flag(o, 'consume', false);
  const addTo = grad ? addToArg(o, S) : undefined;
  const addToInput: NativeOpValue = addTo ? (consume ? toConsumed(addTo, 'opts.addTo') : toNative(addTo, 'opts.addTo')) : null;
  return { scale, grad, addToInput, consumed: addTo && consume ? [addTo] : [] };
}

function withDs<R extends object>(value: R, out: NativeOutputs, grad: boolean): R {
  return grad ? { ...value, dS: output(out.dS, 'dS') } : value;
}

function prepareCsc(G: unknown, S: unknown, selection: unknown, opts: unknown): Call<CscValue> {
  const o = checkOptions(opts, CSC_OPTION_NAMES);
  const b = bounded(o, { beta1: 0.1333, beta2: 1, beta3: 0.1333 }, { beta1: 'beta1', beta2: 'beta2', beta3: 'beta3' });
  const [g, s] = featurePair(G, S);
  const { scale, grad, addToInput, consumed } = termCommon(o, s);
  const { selected, weights } = selectionArg(selection, g.dims[0], g.dims[1]);
  return {
    name: 'csc',
    inputs: [toNative(g, 'G'), toNative(s, 'S'), selected, weights, addToInput],
    attrs: { ...b, scale, grad },
    consumed,
    finish: (out) =>
      withDs(
        { mse: scalar(out.mse, 'mse'), corr: scalar(out.corr, 'corr'), gram: scalar(out.gram, 'gram'), csc: scalar(out.csc, 'csc') },
        out,
        grad,
      ),
  };
}

function prepareLip(G: unknown, S: unknown, opts: unknown): Call<LipValue> {
  const o = checkOptions(opts, LIP_OPTION_NAMES);
  const v = bounded(
    o,
    { patch: 32, stride: 16, pmax: 256, tau: 0.07, epsOt: 1, Q: 1, iters: 50 },
    { patch: 'patch', stride: 'stride', pmax: 'pmax', tau: 'tau', epsOt: 'epsOt', Q: 'Q', iters: 'iters' },
  );
  const sinkhornGrad = flag(o, 'sinkhornGrad', true);
  const [g, s] = featurePair(G, S);
  const [, , H, W] = g.dims;
  if (H < v.patch || W < v.patch) {
    throw new MghfError('E_TOO_SMALL', `Expected S to be at least ${v.patch}×${v.patch} (opts.patch) but received ${H}×${W} (H×W)`, { argument: 'S' });
  }
  const { scale, grad, addToInput, consumed } = termCommon(o, s);
  return {
    name: 'monce',
    inputs: [toNative(g, 'G'), toNative(s, 'S'), addToInput],
    attrs: { ...v, sinkhornGrad, scale, grad },
    consumed,
    finish: (out) => withDs({ lip: scalar(out.lip, 'lip') }, out, grad),
  };
}

function prepareMseTerm(G: unknown, S: unknown, opts: unknown): Call<MseTermValue> {
  const o = checkOptions(opts, MSE_TERM_OPTION_NAMES);
  const [g, s] = featurePair(G, S);
  const { scale, grad, addToInput, consumed } = termCommon(o, s);
  return {
    name: 'mseTerm',
    inputs: [toNative(g, 'G'), toNative(s, 'S'), addToInput],
    attrs: { scale, grad },
    consumed,
    finish: (out) => withDs({ n: scalar(out.n, 'n') }, out, grad),
  };
}

// ------------------------------------------------------------------ the public object

type In = Tensor | TensorLike;

const monce = async <O extends LipOpOptions = LipOpOptions>(G: In, S: In, opts?: O): Promise<WithGrad<O, LipValue>> =>
  runAsync(prepareLip(G, S, opts)) as Promise<WithGrad<O, LipValue>>;
const monceSync = <O extends LipOpOptions = LipOpOptions>(G: In, S: In, opts?: O): WithGrad<O, LipValue> =>
  runSync(prepareLip(G, S, opts)) as WithGrad<O, LipValue>;

/**
 * The kernels of the loss (and the trainer ops) as functions of tensors on the CPU or on one CUDA
 * device, outputs on the inputs' device; each async one runs off the event loop, each *Sync one
 * on the calling thread. README "Using the kernels from a trainer" has the
 * reference and a composition of MGHF-c.
 */
export const ops = Object.freeze({
  /** F = DFE(x) (SPEC §2), x [B, 3, H, W] → F [B, N, H, W] and the tape for dfeBackward. */
  dfe: async (x: In, opts?: DfeOpOptions): Promise<DfeOpResult> =>
    runAsync(prepareDfe(x, opts)),
  dfeSync: (x: In, opts?: DfeOpOptions): DfeOpResult => runSync(prepareDfe(x, opts)),
  /** dx = (∂F/∂x)ᵀ·dF, dF [B, N, H, W] → dx [B, 3, H, W]. */
  dfeBackward: async (tape: DfeTape, dF: In, opts?: DfeBackwardOptions): Promise<Tensor> =>
    runAsync(prepareDfeBackward(tape, dF, opts)),
  dfeBackwardSync: (tape: DfeTape, dF: In, opts?: DfeBackwardOptions): Tensor => runSync(prepareDfeBackward(tape, dF, opts)),
  /** SPEC §2's input normalisation: x [B, 3, H, W] in inputRange → x̂ = (x − mean)/std per channel. */
  normalize: async (x: In, opts?: { inputRange?: InputRange }): Promise<Tensor> => runAsync(prepareNormalize(x, opts)),
  normalizeSync: (x: In, opts?: { inputRange?: InputRange }): Tensor => runSync(prepareNormalize(x, opts)),
  /** dx = dx̂ · ∂x̂/∂x (a constant per channel). */
  normalizeBackward: async (dxh: In, opts?: { inputRange?: InputRange }): Promise<Tensor> => runAsync(prepareNormalizeBackward(dxh, opts)),
  normalizeBackwardSync: (dxh: In, opts?: { inputRange?: InputRange }): Tensor => runSync(prepareNormalizeBackward(dxh, opts)),
  /** The 3×3 stem conv: x̂ [B, 3, H, W] → z [B, N, H, W] (stride 1, zero padding 1: SPEC §2), and its tape. */
  stem: async (xh: In, opts?: PieceOptions): Promise<{ z: Tensor; tape?: DfeTape }> =>
    runAsync(prepareStem(xh, opts)).then(({ out, tape }) => ({ z: out, tape })),
  stemSync: (xh: In, opts?: PieceOptions): { z: Tensor; tape?: DfeTape } => {
    const { out, tape } = runSync(prepareStem(xh, opts));
    return { z: out, tape };
  },
  /** dx̂ = (∂z/∂x̂)ᵀ·dy and, with weightGrad, ∂/∂stem.weight, ∂/∂stem.bias. */
  stemBackward: async (tape: DfeTape, dy: In, opts?: PieceBackwardOptions): Promise<PieceGradient> => runAsync(preparePieceBackward('stemBackward', tape, dy, opts)),
  stemBackwardSync: (tape: DfeTape, dy: In, opts?: PieceBackwardOptions): PieceGradient => runSync(preparePieceBackward('stemBackward', tape, dy, opts)),
  /** Affine coupling block k: the 1×1 mix, z2 += φ(z1), z1 ← z1 ⊙ exp ρ(z2) + η(z2); z [B, N, H, W] → y, and its tape. */
  coupling: async (z: In, opts?: CouplingOptions): Promise<{ y: Tensor; tape?: DfeTape }> =>
    runAsync(prepareCoupling(z, opts)).then(({ out, tape }) => ({ y: out, tape })),
  couplingSync: (z: In, opts?: CouplingOptions): { y: Tensor; tape?: DfeTape } => {
    const { out, tape } = runSync(prepareCoupling(z, opts));
    return { y: out, tape };
  },
  /** dz = (∂y/∂z)ᵀ·dy and, with weightGrad, the block's weights' gradients (inn.k.*). */
  couplingBackward: async (tape: DfeTape, dy: In, opts?: PieceBackwardOptions): Promise<PieceGradient> => runAsync(preparePieceBackward('couplingBackward', tape, dy, opts)),
  couplingBackwardSync: (tape: DfeTape, dy: In, opts?: PieceBackwardOptions): PieceGradient => runSync(preparePieceBackward('couplingBackward', tape, dy, opts)),
  /** SPEC §4: importance, kept channels and their weights (no backward: the choice is constant for the gradient). */
  entropyPruneReweight: async (G: In, S: In, opts?: EntropyOpOptions): Promise<ChannelSelection> =>
    runAsync(prepareEntropy(G, S, opts)),
  entropyPruneReweightSync: (G: In, S: In, opts?: EntropyOpOptions): ChannelSelection => runSync(prepareEntropy(G, S, opts)),
  /** SPEC §5 on the kept, reweighted maps: MSE, correlation and Gram, and scale·∂L_csc/∂S. */
  csc: async <O extends CscOpOptions = CscOpOptions>(G: In, S: In, selection: ChannelSelection, opts?: O): Promise<WithGrad<O, CscValue>> =>
    runAsync(prepareCsc(G, S, selection, opts)) as Promise<WithGrad<O, CscValue>>,
  cscSync: <O extends CscOpOptions = CscOpOptions>(G: In, S: In, selection: ChannelSelection, opts?: O): WithGrad<O, CscValue> =>
    runSync(prepareCsc(G, S, selection, opts)) as WithGrad<O, CscValue>,
  /** SPEC §6: the Sinkhorn-modulated PatchNCE over every map (MoNCE, the LIP term L_lip), and scale·∂L_lip/∂S. */
  monce,
  monceSync,
  /** ops.monce under the name of the loss's term (the first release's name): the same function. */
  lip: monce,
  lipSync: monceSync,
  /** SPEC §3: L_n = mean (S − G)², and scale·∂L_n/∂S. */
  mseTerm: async <O extends TermOptions = TermOptions>(G: In, S: In, opts?: O): Promise<WithGrad<O, MseTermValue>> =>
    runAsync(prepareMseTerm(G, S, opts)) as Promise<WithGrad<O, MseTermValue>>,
  mseTermSync: <O extends TermOptions = TermOptions>(G: In, S: In, opts?: O): WithGrad<O, MseTermValue> =>
    runSync(prepareMseTerm(G, S, opts)) as WithGrad<O, MseTermValue>,
  /** The trainer ops of issue 16 (lib/trainer-ops.ts): conv2d, pixelShuffle, relu, leakyRelu, add, l1, charbonnier, resize, adam. */
  ...trainerOps,
});

// ------------------------------------------------------------------ device transfers

// How tensor.ts moves device tensors: the toDevice / toHost ops of the registry.
installDeviceTransfer({
  upload(source, dims, device, async) {
    const input: NativeOpValue = source instanceof Float32Array ? { data: source, dims: [...dims] } : (source as NativeOpValue);
    const c: Call<{ handle: DeviceHandle }> = {
      name: 'toDevice',
      inputs: [input],
      attrs: { device },
      finish: (out) => {
        const y = out.y as { handle?: DeviceHandle } | undefined;
        if (!y || y.handle === undefined) throw new MghfError('E_NATIVE', 'The native toDevice op returned no tensor');
        return { handle: y.handle };
      },
    };
    return async ? runAsync(c) : runSync(c);
  },
  download(handle, async) {
    const c: Call<Float32Array> = {
      name: 'toHost',
      inputs: [handle as NativeOpValue],
      attrs: {},
      finish: (out) => {
        // The array alone: no Tensor is made (it would count in memory() until collected).
        const y = out.y as { data?: unknown } | undefined;
        if (!y || !is.float32Array(y.data)) throw new MghfError('E_NATIVE', 'The native toHost op returned no data');
        return y.data;
      },
    };
    return async ? runAsync(c) : runSync(c);
  },
  release(handle) {
    loadedAddon()?.deviceRelease?.(handle);
  },
  resolve(device, argument) {
    return resolveDevice(device, argument).deviceIndex;
  },
});
