// The library's own tensor: float32 data plus dims, nothing else. It mirrors onnxruntime's
// Tensor (`type`, `data`, `dims`) so that objects from onnxruntime-web/node pass unchanged.
//
// This module deliberately depends only on errors.ts and lifetime.ts (validate.ts imports it),
// and does its few checks inline.

import { types } from 'node:util';
import { MghfError, describe, invalidParameterError } from './errors';
import { count, track, uncount, untrack } from './lifetime';

/**
 * Where a tensor's data lives: 'cpu' (host memory, a Float32Array in `data`) or 'cuda:N' (device
 * memory of CUDA device N, read back with getData(), as onnxruntime's `location`).
 */
export type TensorLocation = 'cpu' | `cuda:${number}`;

/** Options of `new Tensor` / `tensor()`. */
export interface TensorOptions {
  /** Where to put the data: 'cpu' (default; the Float32Array itself, not a copy), or 'cuda' / 'cuda:N' (a copy in device memory). */
  device?: string;
}

/** An opaque native device buffer (a handle the binding made). */
export interface DeviceHandle {
  readonly __mghfDeviceTensor?: never;
}

/**
 * How device tensors move, installed by ops.ts (which loads the binding): this module stays free
 * of the binding so that validate.ts can import it.
 */
export interface DeviceTransfer {
  /** Host data (or another device tensor's handle) → a new device tensor on cuda:`device`. */
  upload(source: Float32Array | DeviceHandle, dims: readonly number[], device: number, async: boolean): { handle: DeviceHandle } | Promise<{ handle: DeviceHandle }>;
  download(handle: DeviceHandle, async: boolean): Float32Array | Promise<Float32Array>;
  release(handle: DeviceHandle): void;
  /** E_UNSUPPORTED / E_OPTION unless 'cuda:N' (or 'cuda') names a usable device; its index. */
  resolve(device: string, argument: string): number;
}
let transfer: DeviceTransfer | undefined;
export function installDeviceTransfer(t: DeviceTransfer): void {
  transfer = t;
}
function deviceTransfer(): DeviceTransfer {
  if (!transfer) throw new MghfError('E_UNSUPPORTED', 'Device tensors need the native binding: import them from mghf, not mghf/tensor');
  return transfer;
}

/** 'cpu', or the CUDA device index of 'cuda' / 'cuda:N' (usable, else the error saying why). */
function parseDevice(device: unknown, argument: string): 'cpu' | number {
  if (device === undefined || device === 'cpu') return 'cpu';
  if (typeof device !== 'string' || !/^cuda(?::\d+)?$/.test(device)) {
    throw invalidParameterError('E_OPTION', argument, "'cpu', 'cuda' or 'cuda:N'", device);
  }
  return deviceTransfer().resolve(device, argument);
}

const DEVICE_KEY = Symbol('mghf.deviceTensor');

let nextId = 1;

// What frees a tensor's memory at dispose() when the JS heap does not own it (an op's output, whose
// data is a native block: lib/ops.ts). Without one, dispose() only drops the reference.
const releasers = new WeakMap<Tensor, (data: Float32Array) => void>();

/** Makes dispose() of `t` call `release(data)` once, after it has dropped its reference. */
export function releaseOnDispose(t: Tensor, release: (data: Float32Array) => void): void {
  releasers.set(t, release);
}

/**
 * Anything shaped like a tensor that the library accepts where it takes a tensor: a `Tensor`, an
 * onnxruntime Tensor, or a plain `{ type: 'float32', data, dims }` object. At run time `data` must
 * be a Float32Array (anything else is E_DTYPE), `type` absent or 'float32', and `dims` positive
 * integers with ∏dims = data.length (E_SHAPE).
 */
export interface TensorLike {
  /** 'float32' (onnxruntime's name), or absent. */
  type?: string;
  /**
   * The values, row-major. Typed wider than Float32Array so that an onnxruntime `Tensor` (whose
   * `data` is a union over every dtype) is assignable without a cast; the run-time check still
   * demands a Float32Array.
   */
  data: Float32Array | ArrayLike<unknown>;
  dims: readonly number[];
}

export class Tensor {
  readonly type = 'float32' as const;
  /**
   * The values, row-major (host tensors). After dispose() reading it throws E_DISPOSED naming the
   * tensor; on a device tensor it throws E_DEVICE (read it with getData()).
   */
  declare readonly data: Float32Array;
  readonly dims: readonly number[];
  /** Where the data lives: 'cpu' or 'cuda:N'. */
  readonly location: TensorLocation = 'cpu';
  /** A number for messages ("Tensor #12 [1,8,48,48]"), unique in this process. */
  readonly id: number;
  #data: Float32Array | undefined;
  #handle: DeviceHandle | undefined;

  /**
   * A host tensor viewing `data` (not a copy), or with `opts.device` 'cuda' / 'cuda:N' a device
   * tensor holding a copy of it (E_UNSUPPORTED, with the reason, where CUDA is not usable).
   */
  constructor(data: Float32Array, dims: readonly number[], opts?: TensorOptions);
  /** @internal A device tensor around a native handle (ops and to() make these). */
  constructor(key: symbol, dims: readonly number[], device: { handle: DeviceHandle; index: number });
  constructor(data: Float32Array | symbol, dims: readonly number[], opts?: TensorOptions | { handle: DeviceHandle; index: number }) {
    const snapshot = snapshotDims(dims, 'tensor');
    if (data === DEVICE_KEY) {
      const d = opts as { handle: DeviceHandle; index: number };
      this.#handle = d.handle;
      this.location = `cuda:${d.index}`;
    } else {
      checkTensorParts(data, snapshot, 'tensor');
      const device = parseDevice((opts as TensorOptions | undefined)?.device, 'opts.device');
      if (device === 'cpu') {
        this.#data = genuineFloat32(data as Float32Array);
      } else {
        const up = deviceTransfer().upload(genuineFloat32(data as Float32Array), snapshot as number[], device, false) as { handle: DeviceHandle };
        this.#handle = up.handle;
        this.location = `cuda:${device}`;
      }
    }
    this.dims = Object.freeze(snapshot as number[]);
    this.id = nextId++;
    // Checked once, so fixed: `Tensor.from` trusts a Tensor without checking it again. `data` is
    // an own enumerable accessor (spread and structured clone still copy it) so that dispose()
    // can drop the reference.
    const fixed = { writable: false, configurable: false };
    Object.defineProperties(this, {
      type: fixed,
      dims: fixed,
      location: fixed,
      id: fixed,
      data: { get: () => this.#read(), enumerable: true, configurable: false },
    });
    count(this, this.location, this.byteLength);
    track(this);
  }

  /** @internal */
  static fromDevice(handle: DeviceHandle, dims: readonly number[], index: number): Tensor {
    return new Tensor(DEVICE_KEY, dims, { handle, index });
  }

  /** The data's bytes (4 per element), wherever it lives. */
  get byteLength(): number {
    return this.size * 4;
  }

  #read(): Float32Array {
    if (this.#data === undefined) {
      if (this.#handle !== undefined) {
        throw new MghfError(
          'E_DEVICE',
          `${this.describe()} lives on ${this.location}: its data is not in host memory. Read it with ` +
            `await t.getData() (or t.getDataSync()), or copy it to the host with t.to('cpu')`,
          { argument: 'tensor' },
        );
      }
      throw disposedError(this.describe(), 'tensor');
    }
    return this.#data;
  }

  /** Whether dispose() was called (directly, or by the scope() it was created in). */
  get disposed(): boolean {
    return this.#data === undefined && this.#handle === undefined;
  }

  /**
   * Drops this tensor's reference to its data and stops counting it in memory(): a device
   * tensor's memory goes back at once (or when a running op that reads it ends), and a tensor an
   * op returned frees its native memory now (its array then reads as empty, length 0). Safe to
   * call more than once; using it afterwards throws E_DISPOSED. Any other host tensor's array is
   * not cleared: whoever else holds it keeps it.
   */
  dispose(): void {
    if (this.disposed) return;
    const handle = this.#handle;
    const data = this.#data;
    this.#data = undefined;
    this.#handle = undefined;
    // Counted from the dims (byteLength): a consumed op output's array is already detached.
    uncount(this, this.location, this.byteLength);
    untrack(this);
    if (handle !== undefined) deviceTransfer().release(handle);
    const release = releasers.get(this);
    if (release && data !== undefined) {
      releasers.delete(this);
      release(data);
    }
  }

  /** @internal The native handle of a device tensor (E_DISPOSED naming `name`), undefined on the host. */
  static deviceHandle(t: Tensor, name: string): DeviceHandle | undefined {
    if (t.disposed) throw disposedError(`${name} (${t.describe()})`, name);
    return t.#handle;
  }

  /** The CUDA device index of a device tensor, or undefined on the host. */
  get deviceIndex(): number | undefined {
    return this.location === 'cpu' ? undefined : Number(this.location.slice(5));
  }

  /**
   * The values, as a Float32Array on the host: a host tensor's own array, or a copy downloaded
   * from the device (off the event loop).
   */
  async getData(): Promise<Float32Array> {
    const handle = Tensor.deviceHandle(this, 'tensor');
    if (handle === undefined) return this.data;
    return deviceTransfer().download(handle, true);
  }

  /** getData() on the calling thread. */
  getDataSync(): Float32Array {
    const handle = Tensor.deviceHandle(this, 'tensor');
    if (handle === undefined) return this.data;
    return deviceTransfer().download(handle, false) as Float32Array;
  }

  /**
   * A new tensor with a copy of the data on `device` ('cpu', 'cuda' or 'cuda:N'); this one is
   * unchanged. Between two CUDA devices the copy goes through the host.
   */
  async to(device: string): Promise<Tensor> {
    return this.#copyTo(device, true);
  }

  /** to() on the calling thread. */
  toSync(device: string): Tensor {
    return this.#copyTo(device, false) as Tensor;
  }

  #copyTo(device: string, async: boolean): Tensor | Promise<Tensor> {
    const handle = Tensor.deviceHandle(this, 'tensor');
    const target = parseDevice(device, 'device');
    const dims = this.dims;
    if (target === 'cpu') {
      if (handle === undefined) return new Tensor(this.data.slice(), dims);
      const d = deviceTransfer().download(handle, async);
      return d instanceof Promise ? d.then((x) => new Tensor(x, dims)) : new Tensor(d, dims);
    }
    const up = deviceTransfer().upload(handle ?? this.data, dims, target, async);
    return up instanceof Promise
      ? up.then((u) => Tensor.fromDevice(u.handle, dims, target))
      : Tensor.fromDevice(up.handle, dims, target);
  }

  /** `using t = …` (TypeScript 5.2) disposes it at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** "Tensor #12 [1,8,48,48] (cpu)": how messages name it. */
  describe(): string {
    return `Tensor #${this.id} [${this.dims.join(',')}] (${this.location})`;
  }

  /**
   * A `Tensor` as is, or a new `Tensor` viewing (not copying) a tensor-like object's data.
   * `name` is the argument name used in error messages. Each of `type`, `data` and `dims` (and
   * each dims element) is read exactly once: a getter that throws is an E_ARGUMENT error, and one
   * that answers differently on a second read cannot slip past the checks.
   */
  static from(value: TensorLike | Tensor, name = 'tensor'): Tensor {
    let type: unknown;
    let data: unknown;
    let dims: unknown;
    try {
      if (value instanceof Tensor) {
        if (value.disposed) throw disposedError(`${name} (${value.describe()})`, name);
        return value;
      }
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
      // onnxruntime's `data` getter throws for tensors that live on the GPU.
      type = v.type;
      data = v.data;
      dims = v.dims;
    } catch (err) {
      if (err instanceof MghfError) throw err;
      throw new MghfError('E_ARGUMENT', `Could not read type/data/dims of ${name}: ${errorText(err)}`, {
        argument: name,
        cause: err,
      });
    }
    if (data === undefined || dims === undefined) {
      throw invalidParameterError('E_ARGUMENT', name, 'a tensor { type, data, dims }', value);
    }
    if (type !== undefined && type !== 'float32') {
      throw invalidParameterError('E_DTYPE', `${name}.type`, "'float32'", type);
    }
    const snapshot = snapshotDims(dims, name);
    checkTensorParts(data, snapshot, name);
    return new Tensor(data as Float32Array, snapshot as number[]);
  }

  /** Number of elements, ∏dims (also after dispose). */
  get size(): number {
    return elementCount(this.dims);
  }
}

/**
 * A tensor of `data` with `dims`: on the host (the array itself), or with `opts.device` 'cuda' /
 * 'cuda:N' a copy on that device. The same as `new Tensor(data, dims, opts)`.
 */
export function tensor(data: Float32Array, dims: readonly number[], opts?: TensorOptions): Tensor {
  return new Tensor(data, dims, opts);
}

/** E_DISPOSED for a use of `what` (a tensor or tape description) after its dispose(). */
export function disposedError(what: string, argument: string): MghfError {
  return new MghfError(
    'E_DISPOSED',
    `${what} was disposed (by dispose() or at the end of the scope() it was created in) and cannot be used; ` +
      `return it from the scope, or dispose it only after its last use`,
    { argument },
  );
}

// The intrinsic accessors of %TypedArray%.prototype. A subclass (or an own property) can shadow
// `length` with a getter that lies; these read the array's real internal slots.
const TYPED_ARRAY_PROTOTYPE = Object.getPrototypeOf(Float32Array.prototype) as object;
const intrinsicGetter = (key: string) => Object.getOwnPropertyDescriptor(TYPED_ARRAY_PROTOTYPE, key)?.get as (this: unknown) => unknown;
const LENGTH = intrinsicGetter('length');
const BUFFER = intrinsicGetter('buffer');
const BYTE_OFFSET = intrinsicGetter('byteOffset');

/** The real element count of a typed array, whatever its `length` property says. */
export function typedLength(a: ArrayBufferView): number {
  return Reflect.apply(LENGTH, a, []) as number;
}

/**
 * `a` itself when it is a plain Float32Array of this realm, else a Float32Array of this realm
 * viewing the same memory (a subclass's overridden methods and getters are then out of the way).
 */
export function genuineFloat32(a: Float32Array): Float32Array {
  if (Object.getPrototypeOf(a) === Float32Array.prototype && Object.getOwnPropertyDescriptor(a, 'length') === undefined) return a;
  return new Float32Array(Reflect.apply(BUFFER, a, []) as ArrayBuffer, Reflect.apply(BYTE_OFFSET, a, []) as number, typedLength(a));
}

// More dims than any tensor here has (images have 4); also keeps a hostile `length` from
// making the snapshot loop run for ever.
const MAX_DIMS = 32;

/**
 * A plain array copy of `dims`, each element read once (or `dims` itself when it is not an
 * array, for checkTensorParts to reject). A getter that throws is an E_ARGUMENT error.
 */
export function snapshotDims(dims: unknown, name: string): unknown {
  let i = -1;
  try {
    if (!Array.isArray(dims)) return dims;
    const n = dims.length;
    if (n > MAX_DIMS) {
      throw invalidParameterError('E_SHAPE', `${name}.dims`, `a non-empty array of at most ${MAX_DIMS} positive integers`, dims);
    }
    const out = new Array<unknown>(n);
    for (i = 0; i < n; i++) out[i] = dims[i];
    return out;
  } catch (err) {
    if (err instanceof MghfError) throw err;
    const where = i < 0 ? `${name}.dims` : `${name}.dims[${i}]`;
    throw new MghfError('E_ARGUMENT', `Could not read ${where}: ${errorText(err)}`, { argument: name, cause: err });
  }
}

/** A thrown value's message for our own message, without trusting it to be an Error. */
export function errorText(err: unknown): string {
  try {
    const m = (err as { message?: unknown })?.message;
    return typeof m === 'string' ? m : String(err);
  } catch {
    return 'an exception that cannot be described';
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
  const length = typedLength(data);
  if (count !== length) {
    throw new MghfError(
      'E_SHAPE',
      `Expected ${name}.data to have ∏dims = ${count} elements for dims ${describe(dims)} but it has ${length}`,
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
