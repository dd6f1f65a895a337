// Argument checking, done once in TypeScript so the native core can trust what it receives
// (STYLE: "Arguments checked once, in TypeScript, with one message shape").

import { types } from 'node:util';
import { MghfError, describe, invalidParameterError } from './errors';
import { Tensor, TensorLike, checkTensorParts, errorText, typedLength } from './tensor';

// Tiny predicates in the style of sharp's `is`.
export const is = {
  defined: (v: unknown): boolean => v !== undefined && v !== null,
  object: (v: unknown): v is object => v !== null && typeof v === 'object',
  // Like sharp: anything whose tag is Object, so objects from another realm (vm, JSON from a
  // worker) pass while arrays, Maps, null and functions do not.
  plainObject: (v: unknown): v is Record<string, unknown> => Object.prototype.toString.call(v) === '[object Object]',
  number: (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v),
  integer: (v: unknown): v is number => Number.isSafeInteger(v),
  positiveInteger: (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0,
  inRange: (v: number, min: number, max: number): boolean => v >= min && v <= max,
  string: (v: unknown): v is string => typeof v === 'string',
  bool: (v: unknown): v is boolean => typeof v === 'boolean',
  float32Array: (v: unknown): v is Float32Array => types.isFloat32Array(v),
};

/**
 * A snapshot of `opts` (or `{}` when undefined) after rejecting any key not in `validNames`: a
 * typo such as `{ gama1: 0 }` must fail loudly rather than leave the default in force. Each value
 * is read once, here: a getter that throws is a typed error naming the option, and one that
 * answers differently on a second read cannot change a value after it was checked.
 */
export function checkOptions<K extends string>(
  opts: unknown,
  validNames: readonly K[],
  argName = 'opts',
): Partial<Record<K, unknown>> {
  if (opts === undefined) return {};
  let keys: string[];
  try {
    if (!is.plainObject(opts)) throw invalidParameterError('E_ARGUMENT', argName, 'an options object', opts);
    keys = Object.keys(opts);
  } catch (err) {
    if (err instanceof MghfError) throw err;
    throw new MghfError('E_ARGUMENT', `Could not read the option names of ${argName}: ${errorText(err)}`, { argument: argName, cause: err });
  }
  const valid = validNames as readonly string[];
  for (const key of keys) {
    if (valid.includes(key)) continue;
    const suggestion = closestName(key, valid);
    const hint = suggestion === undefined ? '' : ` (did you mean '${suggestion}'?)`;
    throw new MghfError(
      'E_OPTION',
      `Unknown option '${describeKey(key)}' in ${argName}${hint}; valid options are: ${valid.join(', ')}`,
      { argument: `${argName}.${key}` },
    );
  }
  const snapshot: Record<string, unknown> = {};
  for (const key of keys) {
    try {
      snapshot[key] = (opts as Record<string, unknown>)[key];
    } catch (err) {
      throw new MghfError('E_OPTION', `Could not read ${argName}.${key}: ${errorText(err)}`, { argument: `${argName}.${key}`, cause: err });
    }
  }
  return snapshot as Partial<Record<K, unknown>>;
}

// An unknown key as it appears in the message: user keys can be long or multi-line.
function describeKey(key: string): string {
  const oneLine = key.replace(/[\u0000-\u001f]/g, '?');
  return oneLine.length > 40 ? `${oneLine.slice(0, 40)}…` : oneLine;
}

/** The valid name nearest to `key` (case-insensitive edit distance ≤ 2, and shorter than the name); the CLI's "did you mean" uses it too. */
export function closestName(key: string, valid: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const name of valid) {
    const d = editDistance(key.toLowerCase(), name.toLowerCase());
    // `d < name.length` keeps 'x' from being "corrected" to 'M'.
    if (d <= 2 && d < Math.max(name.length, 1) && d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance; option names are short, so the O(|a|·|b|) table is fine. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

export type InputRange = 'unit' | 'symmetric';

/**
 * The values accepted for each `inputRange` (docs/MATH.md §1): the nominal range with room for the
 * overshoot of a network output (1.02 is fine), but nowhere near what data in another convention
 * gives (0–255, 16-bit, ImageNet-normalised), whose loss would be silently meaningless.
 */
export const INPUT_BOUNDS: Readonly<Record<InputRange, { nominal: string; min: number; max: number }>> = Object.freeze({
  unit: { nominal: '[0, 1]', min: -0.5, max: 1.5 },
  symmetric: { nominal: '[-1, 1]', min: -2, max: 2 },
});

/**
 * Throws E_NONFINITE at the first NaN/±Infinity, naming the argument, the flat index and the
 * value (and the position when `dims` is given): one bad pixel poisons the whole loss and its
 * gradient, so it is better caught here than diagnosed from a NaN result. With `range`, the same
 * single pass also finds the minimum and maximum and throws E_RANGE when they fall outside
 * INPUT_BOUNDS[range].
 */
export function checkValues(data: Float32Array, name: string, dims?: readonly number[], range?: InputRange): void {
  const n = typedLength(data);
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = data[i];
    // x - x is 0 for finite x and NaN for NaN/±Infinity: one test, no function call.
    if (x - x !== 0) throw nonFiniteError(x, i, name, dims);
    lo = x < lo ? x : lo;
    hi = x > hi ? x : hi;
  }
  if (range === undefined) return;
  const bounds = INPUT_BOUNDS[range];
  if (lo < bounds.min || hi > bounds.max) {
    throw new MghfError(
      'E_RANGE',
      `Expected values in ${bounds.nominal} for ${name} (opts.inputRange '${range}'; [${bounds.min}, ${bounds.max}] is tolerated) ` +
        `but received min ${lo} and max ${hi}: ${rangeHint(lo, hi, range)}`,
      { argument: name },
    );
  }
}

/** checkValues without the range check. */
export function checkFinite(data: Float32Array, name: string, dims?: readonly number[]): void {
  checkValues(data, name, dims);
}

function nonFiniteError(x: number, i: number, name: string, dims?: readonly number[]): MghfError {
  const where = dims === undefined ? '' : ` (position [${unflatten(i, dims).join(',')}])`;
  return new MghfError('E_NONFINITE', `Expected finite values for ${name} but received ${describe(x)} at flat index ${i}${where}`, {
    argument: name,
  });
}

/** The likely cause of out-of-range data, from its minimum and maximum. */
function rangeHint(lo: number, hi: number, range: InputRange): string {
  const to = range === 'unit' ? 'divide by 255' : "divide by 127.5 and subtract 1 (or divide by 255 and pass inputRange: 'unit')";
  const to16 = range === 'unit' ? 'divide by 65535' : 'divide by 32767.5 and subtract 1';
  if (lo >= -0.5 && hi <= 255.5) return `0–255 data? ${to}`;
  if (lo >= -0.5 && hi <= 65535.5) return `16-bit data? ${to16}`;
  if (range === 'unit' && lo >= -1.5 && hi <= 1.5) return "[-1, 1] data? pass inputRange: 'symmetric'";
  if (lo >= -3 && hi <= 3) return 'mean/std-normalised data? pass the RGB values themselves (docs/MATH.md §1), the DFE normalises them';
  return 'values far outside any image range: is this the network output before its final activation, or not an image?';
}

function unflatten(index: number, dims: readonly number[]): number[] {
  const position = new Array<number>(dims.length);
  for (let d = dims.length - 1; d >= 0; d--) {
    position[d] = index % dims[d];
    index = Math.floor(index / dims[d]);
  }
  return position;
}

export type ImageLayout = 'NCHW' | 'NHWC';

/**
 * An RGB image batch as an NCHW `Tensor` (docs/MATH.md §1: `[B, 3, H, W]`, float32, finite).
 * NCHW input is viewed, not copied; NHWC input (tfjs, most image decoders) is transposed into a
 * new array. With `range`, values far outside it are E_RANGE (checkValues). Size limits that
 * depend on options (H, W ≥ 2, ≥ patch) are the caller's to check.
 */
export function toImageTensor(value: unknown, name: string, layout: ImageLayout = 'NCHW', range?: InputRange): Tensor {
  if (layout !== 'NCHW' && layout !== 'NHWC') {
    throw invalidParameterError('E_OPTION', 'layout', "'NCHW' or 'NHWC'", layout);
  }
  const tensor = Tensor.from(value as TensorLike, name);
  const dims = tensor.dims;
  if (dims.length !== 4) {
    throw invalidParameterError('E_SHAPE', `${name}.dims`, `4 dims [B,${layout === 'NCHW' ? 'C,H,W' : 'H,W,C'}]`, dims);
  }
  const channels = layout === 'NCHW' ? dims[1] : dims[3];
  if (channels !== 3) {
    throw new MghfError(
      'E_SHAPE',
      `Expected 3 (RGB) channels for ${name} in layout ${layout} but received ${channels} (dims ${describe(dims)})`,
      { argument: name },
    );
  }
  checkValues(tensor.data, name, dims, range);
  return layout === 'NCHW' ? tensor : nhwcToNchw(tensor);
}

function nhwcToNchw(t: Tensor): Tensor {
  const [B, H, W, C] = t.dims;
  const src = t.data;
  const out = new Float32Array(src.length);
  const plane = H * W;
  for (let b = 0; b < B; b++) {
    const base = b * plane * C;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < C; c++) out[base + c * plane + p] = src[base + p * C + c];
    }
  }
  return new Tensor(out, [B, C, H, W]);
}

// Re-exported so callers validating tensors need only this module.
export { checkTensorParts };
