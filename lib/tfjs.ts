// mghf/tfjs: the MGHF loss as a TensorFlow.js function with a custom gradient, so that a tfjs
// model trains with it in one line:
//
//   import * as tf from '@tensorflow/tfjs';
//   import { mghfLossTf } from 'mghf/tfjs';
//   const mghf = mghfLossTf({ variant: 'c' });
//   optimizer.minimize(() => mghf(model.apply(lr) as tf.Tensor4D, hr));
//
// TensorFlow.js is an optional peer dependency: the main entry ('mghf') never loads it, and this
// entry throws E_LOAD with the install command when it is missing. tfjs's customGrad is
// synchronous, so each call reads sr and gt to the CPU (dataSync) and runs mghfLossSync on the
// calling thread; the gradient ∂L/∂sr computed there is handed to tfjs's backward pass.

import type * as tfc from '@tensorflow/tfjs-core';
import { MghfError, describe, invalidParameterError } from './errors';
import { type LossOptions, type LossParts, type LossResult, type PartName, mghfLossSync, LOSS_OPTION_NAMES } from './loss';
import { errorText } from './tensor';
import { checkOptions } from './validate';

/** The tfjs packages mghf/tfjs looks for, in order (@tensorflow/tfjs re-exports tfjs-core). */
export const TFJS_PACKAGES: readonly string[] = Object.freeze(['@tensorflow/tfjs-core', '@tensorflow/tfjs']);

// In Node, tfjs-core's own build registers no gradients of its ops: training needs @tensorflow/tfjs
// (or @tensorflow/tfjs-node, which loads it).
const INSTALL_HINT =
  'npm install @tensorflow/tfjs (or @tensorflow/tfjs-node; @tensorflow/tfjs-core alone is enough to compute the loss ' +
  'but, in Node, registers no backend and no gradients of its ops)';

/**
 * The first of `names` that loads and has `customGrad`, resolved from this package (as
 * `require(name)` from mghf's own folder). None installed: E_LOAD with the install command; one
 * installed that fails to load or is not TensorFlow.js: E_LOAD naming it and why.
 */
export function loadTfjs(names: readonly string[] = TFJS_PACKAGES): typeof tfc {
  const tried: string[] = [];
  for (const name of names) {
    let mod: unknown;
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      mod = require(name);
    } catch (err) {
      const e = err as { code?: unknown; message?: unknown };
      const firstLine = typeof e?.message === 'string' ? e.message.split('\n')[0] : '';
      // Not installed (and not some module *it* requires that is missing).
      if (e?.code === 'MODULE_NOT_FOUND' && firstLine.includes(`'${name}'`)) {
        tried.push(`${name}: not installed`);
        continue;
      }
      throw new MghfError('E_LOAD', `mghf/tfjs: ${name} is installed but failed to load: ${errorText(err)}`, { cause: err });
    }
    if (typeof (mod as { customGrad?: unknown } | null)?.customGrad !== 'function') {
      throw new MghfError('E_LOAD', `mghf/tfjs: ${name} loaded but has no customGrad function (is it TensorFlow.js ≥ 3?): ${describe(mod)}`);
    }
    return mod as typeof tfc;
  }
  throw new MghfError(
    'E_LOAD',
    `mghf/tfjs needs TensorFlow.js, an optional peer dependency of mghf that is not installed: ${INSTALL_HINT}` +
      ` (tried: ${tried.join('; ') || 'no package names'})`,
  );
}

const tf = loadTfjs();

/** What the last call computed: the loss and its parts (LossResult without the gradient). */
export type TfLossInfo = Omit<LossResult, 'grad'>;

/** mghfLoss's options (layout is always 'NHWC'), and a callback for the parts of each call. */
export interface TfLossOptions extends Omit<LossOptions, 'layout'> {
  /** Only 'NHWC' (tfjs's layout), the default. */
  layout?: 'NHWC';
  /**
   * Called after every forward computation with the loss and its parts (unweighted), for logging.
   * An exception it throws propagates out of the loss call.
   */
  onParts?: (info: TfLossInfo) => void;
}

/** The tfjs loss function: `(sr, gt) => loss`, NHWC, with a custom gradient for sr. */
export interface MghfTfLoss {
  (sr: tfc.Tensor4D, gt: tfc.Tensor4D): tfc.Scalar;
  /** The loss and its parts from the last call (undefined before the first). */
  readonly last: TfLossInfo | undefined;
  /** The options every call uses (layout 'NHWC'; onParts removed). */
  readonly options: Readonly<LossOptions>;
}

const TF_OPTION_NAMES = [...LOSS_OPTION_NAMES, 'onParts'] as const;

/**
 * The MGHF loss as a tfjs function: `mghfLossTf(opts)(sr, gt)` is a scalar tensor whose gradient
 * with respect to sr is mghf's exact ∂L/∂sr (times the incoming gradient) and with respect to gt
 * zero (gt is a constant target). sr and gt: float32 [B, H, W, 3] tensors, values per
 * opts.inputRange. Each call blocks the calling thread for the loss computation (mghfLossSync)
 * and reads both tensors to the CPU (dataSync).
 *
 * With `grad: false` the function only computes the value (cheaper, for validation); tfjs then
 * finds no gradient path through it.
 */
export function mghfLossTf(opts?: TfLossOptions): MghfTfLoss {
  const o = checkOptions(opts, TF_OPTION_NAMES);
  const { onParts, layout, ...rest } = o as Partial<Record<string, unknown>>;
  if (layout !== undefined && layout !== 'NHWC') {
    throw invalidParameterError(
      'E_OPTION',
      'opts.layout',
      "'NHWC' (mghf/tfjs works on tfjs's NHWC tensors; transpose NCHW data with tf.transpose(x, [0, 2, 3, 1]))",
      layout,
    );
  }
  if (onParts !== undefined && typeof onParts !== 'function') {
    throw invalidParameterError('E_OPTION', 'opts.onParts', 'a function', onParts);
  }
  const options = Object.freeze({ ...(rest as LossOptions), layout: 'NHWC' as const });
  const wantGrad = options.grad !== false;
  let last: TfLossInfo | undefined;

  // One synchronous mghf call on the tensors' data; remembers and reports the parts.
  const compute = (sr: tfc.Tensor, gt: tfc.Tensor): LossResult => {
    const view = (t: tfc.Tensor) => ({ type: 'float32', data: t.dataSync() as Float32Array, dims: t.shape });
    const r = mghfLossSync(view(sr), view(gt), options) as LossResult;
    const { grad: _grad, ...info } = r;
    last = info;
    if (onParts) (onParts as (info: TfLossInfo) => void)(info);
    return r;
  };

  const withGrad = tf.customGrad((...args: (tfc.Tensor | tfc.GradSaveFunc)[]) => {
    const [sr, gt] = args as [tfc.Tensor4D, tfc.Tensor4D];
    const r = compute(sr, gt);
    const g = r.grad.data;
    const shape = sr.shape;
    return {
      value: tf.scalar(r.loss, 'float32'),
      // Runs inside tfjs's backprop tidy: the intermediate tensors are released there.
      gradFunc: (dy: tfc.Tensor) => [tf.mul(dy, tf.tensor4d(g, shape, 'float32')), tf.zerosLike(gt)],
    };
  }) as (sr: tfc.Tensor4D, gt: tfc.Tensor4D) => tfc.Scalar;

  const fn = (sr: tfc.Tensor4D, gt: tfc.Tensor4D): tfc.Scalar => {
    checkTensor(sr, 'sr');
    checkTensor(gt, 'gt');
    if (!wantGrad) return tf.scalar(compute(sr, gt).loss, 'float32');
    return withGrad(sr, gt);
  };
  Object.defineProperty(fn, 'last', { get: () => last, enumerable: true });
  Object.defineProperty(fn, 'options', { value: options, enumerable: true });
  return fn as MghfTfLoss;
}

// A tfjs tensor of rank 4 and dtype float32; anything else is a typed error before tfjs or the
// loss sees it (tfjs's own messages say nothing about mghf's layout).
function checkTensor(t: unknown, name: string): void {
  if (!(t instanceof tf.Tensor)) {
    throw invalidParameterError('E_ARGUMENT', name, 'a tfjs tensor [B, H, W, 3] (mghf/tfjs; use mghfLoss for other tensors)', t);
  }
  if (t.isDisposed) throw new MghfError('E_ARGUMENT', `Expected a live tfjs tensor for ${name} but it was disposed`, { argument: name });
  if (t.dtype !== 'float32') {
    throw new MghfError('E_DTYPE', `Expected a float32 tfjs tensor for ${name} but received dtype ${t.dtype} (use tf.cast(t, 'float32'))`, { argument: name });
  }
  if (t.rank !== 4 || t.shape[3] !== 3) {
    throw new MghfError('E_SHAPE', `Expected a [B, H, W, 3] tfjs tensor (NHWC) for ${name} but received shape [${t.shape.join(',')}]`, { argument: name });
  }
}

export { MghfError } from './errors';
export type { LossParts, PartName, LossOptions };
