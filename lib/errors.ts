// One error class for everything the library rejects or fails at, so callers can branch on
// `err.code` instead of parsing messages. Messages follow sharp's shape:
// "Expected <what> for <name> but received <value>".

import { types } from 'node:util';

export type MghfErrorCode =
  | 'E_ARGUMENT' // an argument of the wrong kind (not an object, not a tensor, …)
  | 'E_SHAPE' // tensor dims wrong, or data length ≠ ∏dims
  | 'E_DTYPE' // tensor data not float32
  | 'E_NONFINITE' // NaN or ±Infinity in an input
  | 'E_RANGE' // input values far outside opts.inputRange (0–255 data given as [0, 1], …)
  | 'E_LIMIT' // a request whose estimated work or memory exceeds the stated limit, or an allocation that failed
  | 'E_TOO_SMALL' // image smaller than the loss can work on (docs/MATH.md §1)
  | 'E_OPTION' // unknown option name or bad option value
  | 'E_WEIGHTS' // an in-memory weights object is inconsistent
  | 'E_WEIGHTS_FILE' // a weights file is malformed (docs/MATH.md §9)
  | 'E_DATA' // a training data folder is missing, empty or not an ImageFolder tree (docs/MATH.md §10)
  | 'E_UNSUPPORTED' // valid request this build cannot do (e.g. no CUDA)
  | 'E_NATIVE' // the native core reported a failure
  | 'E_CUDA' // a CUDA call failed during a computation (the next call still works)
  | 'E_CUDA_OOM' // the GPU ran out of memory (the next call still works)
  | 'E_NUMERIC' // a computed value (loss, part, gradient, feature) came out NaN or ±Infinity: the stage and likely cause are named
  | 'E_ABORTED' // the call's AbortSignal fired (the error's name is 'AbortError')
  | 'E_DISPOSED' // a Tensor or DFE tape used after dispose() (or after the scope() that made it ended)
  | 'E_DEVICE' // tensors of one call on different devices ('cpu', 'cuda:0', …), or host data read from a device tensor
  | 'E_LOAD'; // no native binary could be loaded (or, for mghf/tfjs, no TensorFlow.js)

export interface MghfErrorOptions {
  /** The user-facing argument or option the error is about, e.g. 'sr' or 'opts.M'. */
  argument?: string;
  cause?: unknown;
}

export class MghfError extends Error {
  override name = 'MghfError';
  readonly code: MghfErrorCode;
  readonly argument?: string;

  constructor(code: MghfErrorCode, message: string, options: MghfErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.argument !== undefined) this.argument = options.argument;
  }
}

const typedArrayLength = (a: ArrayBufferView): number =>
  Reflect.apply(Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), 'length')?.get as () => number, a, []) as number;

// Longest string we quote verbatim in a message; user data can be arbitrarily large and an
// error message must stay one readable line.
const MAX_STRING = 40;
const MAX_ARRAY_ITEMS = 8;
const MAX_KEYS = 6;

/**
 * A short, single-line description of any value for an error message: numbers and short
 * strings verbatim, small arrays inline, typed arrays and buffers by type and length, other
 * objects by constructor name (plain objects by their first keys). Never dumps large data.
 */
export function describe(value: unknown): string {
  // Describing must never throw: the value may be a revoked Proxy or have throwing getters, and a
  // throw here would replace the typed error being built with a raw one.
  try {
    return describeUnchecked(value);
  } catch {
    return typeof value === 'object' ? 'an object that cannot be inspected' : typeof value;
  }
}

function describeUnchecked(value: unknown): string {
  switch (typeof value) {
    case 'undefined':
      return 'undefined';
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n`;
    case 'boolean':
      return String(value);
    case 'string':
      return value.length > MAX_STRING
        ? `${JSON.stringify(value.slice(0, MAX_STRING))}… (${value.length} characters)`
        : JSON.stringify(value);
    case 'symbol':
      return value.toString();
    case 'function':
      return value.name ? `function ${value.name}` : 'a function';
  }
  if (value === null) return 'null';
  if (ArrayBuffer.isView(value)) {
    // The real length (a subclass may lie through its own `length` getter).
    const length = types.isTypedArray(value) ? typedArrayLength(value) : value.byteLength;
    return `${constructorName(value) ?? 'ArrayBufferView'}(${length})`;
  }
  if (value instanceof ArrayBuffer) return `ArrayBuffer(${value.byteLength})`;
  if (Array.isArray(value)) {
    // The length first: a Proxy can claim 2^32 − 1 elements, and nothing here may iterate them.
    const length = value.length;
    if (length > MAX_ARRAY_ITEMS) return `Array(${length})`;
    const items = Array.from({ length }, (_, i) => value[i]);
    const simple = items.every((v) => v === null || (typeof v !== 'object' && typeof v !== 'function'));
    return simple ? `[${items.map(describe).join(',')}]` : `Array(${length})`;
  }
  // Only objects are left once every primitive type has returned above.
  const name = constructorName(value as object);
  if (name === undefined || name === 'Object') {
    const keys = Object.keys(value as object);
    const shown = keys.slice(0, MAX_KEYS).join(', ');
    return keys.length === 0 ? 'an empty object' : `an object {${shown}${keys.length > MAX_KEYS ? ', …' : ''}}`;
  }
  return `an instance of ${name}`;
}

function constructorName(value: object): string | undefined {
  const ctor = (value as { constructor?: unknown }).constructor;
  return typeof ctor === 'function' && ctor.name ? ctor.name : undefined;
}

/**
 * sharp-style error: "Expected <expected> for <name> but received <describe(actual)>".
 * `argument` (default `name`) is the option the error is about when `name` points inside it,
 * e.g. name 'opts.selected[1][2]', argument 'opts.selected'.
 */
export function invalidParameterError(
  code: MghfErrorCode,
  name: string,
  expected: string,
  actual: unknown,
  argument = name,
): MghfError {
  return new MghfError(code, `Expected ${expected} for ${name} but received ${describe(actual)}`, { argument });
}
