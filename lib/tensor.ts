// The library's own tensor: float32 data plus dims, nothing else. It mirrors onnxruntime's
// Tensor (`type`, `data`, `dims`) so that objects from onnxruntime-web/node pass unchanged.
//
// This module deliberately depends only on errors.ts (validate.ts imports it), and does its few
// checks inline.

import { types } from 'node:util';
import { MghfError, describe, invalidParameterError } from './errors';

/** Anything shaped like a tensor: an onnxruntime Tensor, a `Tensor`, a plain object. */
export interface TensorLike {
  type?: string;
  // ArrayLike so foreign tensor types are assignable without casts; the runtime check below
  // still demands a Float32Array.
  data: ArrayLike<number> | Float32Array;
  dims: readonly number[];
}

export class Tensor {
  readonly type = 'float32' as const;
  readonly data: Float32Array;
  readonly dims: readonly number[];

  constructor(data: Float32Array, dims: readonly number[]) {
    checkTensorParts(data, dims, 'tensor');
    this.data = data;
    this.dims = Object.freeze([...dims]);
  }

  /**
   * A `Tensor` as is, or a new `Tensor` viewing (not copying) a tensor-like object's data.
   * `name` is the argument name used in error messages.
   */
  static from(value: TensorLike | Tensor, name = 'tensor'): Tensor {
    if (value instanceof Tensor) return value;
    if (value === null || typeof value !== 'object') {
      throw invalidParameterError('E_ARGUMENT', name, 'a tensor { type, data, dims }', value);
    }
    const v = value as unknown as Record<string, unknown>;
    // A tfjs tensor has shape/dtype and keeps its data on the backend; say how to pass it.
    if (!('dims' in v) && 'shape' in v && 'dtype' in v) {
      throw new MghfError(
        'E_ARGUMENT',
        `Expected a tensor { type, data, dims } for ${name} but received a tfjs-style tensor; ` +
          `pass { type: 'float32', data: t.dataSync(), dims: t.shape } (layout 'NHWC')`,
        { argument: name },
      );
    }
    let data: unknown;
    let dims: unknown;
    try {
      // onnxruntime's `data` getter throws for tensors that live on the GPU.
      data = v.data;
      dims = v.dims;
    } catch (err) {
      throw new MghfError('E_ARGUMENT', `Could not read data/dims of ${name}: ${(err as Error)?.message ?? err}`, {
        argument: name,
        cause: err,
      });
    }
    if (data === undefined || dims === undefined) {
      throw invalidParameterError('E_ARGUMENT', name, 'a tensor { type, data, dims }', value);
    }
    if (v.type !== undefined && v.type !== 'float32') {
      throw invalidParameterError('E_DTYPE', `${name}.type`, "'float32'", v.type);
    }
    checkTensorParts(data, dims, name);
    return new Tensor(data as Float32Array, dims as readonly number[]);
  }

  /** Number of elements, ∏dims. */
  get size(): number {
    return this.data.length;
  }
}

/** Throws E_DTYPE/E_SHAPE unless `data` is a Float32Array and `dims` positive integers with ∏dims = length. */
export function checkTensorParts(data: unknown, dims: unknown, name: string): void {
  // isFloat32Array also accepts arrays from another realm (vm, worker transfer), unlike instanceof.
  if (!types.isFloat32Array(data)) {
    const hint = Array.isArray(data) ? ' (convert with Float32Array.from)' : '';
    throw new MghfError('E_DTYPE', `Expected a Float32Array for ${name}.data but received ${describe(data)}${hint}`, {
      argument: name,
    });
  }
  if (
    !Array.isArray(dims) ||
    dims.length === 0 ||
    !dims.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d > 0)
  ) {
    throw invalidParameterError('E_SHAPE', `${name}.dims`, 'a non-empty array of positive integers', dims);
  }
  const count = elementCount(dims);
  if (count !== data.length) {
    throw new MghfError(
      'E_SHAPE',
      `Expected ${name}.data to have ∏dims = ${count} elements for dims ${describe(dims)} but it has ${data.length}`,
      { argument: name },
    );
  }
}

/** ∏dims (1 for []); beyond 2^53 it is inexact but then never equals a real length. */
export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}
