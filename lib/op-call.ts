// The plumbing every op function shares (lib/ops.ts, lib/trainer-ops.ts): one call to the
// binding's generic entry, op outputs as Tensors, and the argument rules that are the same for
// every op (one location per call, matching dims, boolean options). Kept in one place so that an
// op added to either file is called, freed and checked like every other.

import { MghfError, invalidParameterError } from './errors';
import { type NativeAddon, type NativeOpValue, loadedAddon, native, rethrowNative } from './native';
import { type DeviceHandle, Tensor, type TensorLocation, releaseOnDispose } from './tensor';
import { is } from './validate';

export type Attrs = Record<string, number | boolean | string>;
export type NativeOutputs = Record<string, NativeOpValue>;

/** One op call, prepared (arguments checked) before the binding is called. */
export interface Call<R> {
  name: string;
  inputs: NativeOpValue[];
  attrs: Attrs;
  /** Tensors handed over (toConsumed): disposed once the native call has taken them. */
  consumed?: Tensor[];
  finish(out: NativeOutputs): R;
}

function opAddon(): NativeAddon & Required<Pick<NativeAddon, 'op' | 'opSync'>> {
  const a = native();
  if (typeof a.op !== 'function' || typeof a.opSync !== 'function') {
    throw new MghfError('E_UNSUPPORTED', 'The loaded native binary has no ops (it predates them): rebuild it (`npm rebuild mghf`)');
  }
  return a as NativeAddon & Required<Pick<NativeAddon, 'op' | 'opSync'>>;
}

function disposeConsumed(c: Call<unknown>): void {
  for (const t of c.consumed ?? []) t.dispose();
}

export function runSync<R>(c: Call<R>): R {
  const a = opAddon();
  let out: NativeOutputs;
  try {
    out = a.opSync(c.name, c.inputs, c.attrs);
  } catch (err) {
    rethrowNative(err);
  } finally {
    disposeConsumed(c);
  }
  return c.finish(out);
}

export async function runAsync<R>(c: Call<R>): Promise<R> {
  const a = opAddon();
  let pending: Promise<NativeOutputs>;
  try {
    // The binding has read (or taken) every input before op() returns its promise.
    pending = a.op(c.name, c.inputs, c.attrs);
  } catch (err) {
    rethrowNative(err);
  } finally {
    disposeConsumed(c);
  }
  let out: NativeOutputs;
  try {
    out = await pending;
  } catch (err) {
    rethrowNative(err);
  }
  return c.finish(out);
}

// Tensors the ops made: finite by construction (the core checks its outputs), so not scanned again
// when passed back in.
const opOutputs = new WeakSet<Tensor>();

export const isOpOutput = (t: Tensor): boolean => opOutputs.has(t);

/**
 * An op's output tensor. A host one's data is the native block itself (no copy), returned to the
 * block cache by dispose() (opFree) or, as a safety net, when the array is collected; a device one
 * is the op's new device tensor, freed by dispose() (or when collected).
 */
export function output(v: NativeOpValue, name: string): Tensor {
  const t = v as { data?: unknown; dims?: unknown; handle?: unknown; device?: unknown } | undefined;
  if (t && t.handle !== undefined && typeof t.device === 'number' && Array.isArray(t.dims)) {
    const out = Tensor.fromDevice(t.handle as DeviceHandle, t.dims as number[], t.device);
    opOutputs.add(out);
    return out;
  }
  if (!t || !is.float32Array(t.data) || !Array.isArray(t.dims)) throw new MghfError('E_NATIVE', `The native op returned no tensor ${name}`);
  const out = new Tensor(t.data, t.dims as number[]);
  opOutputs.add(out);
  releaseOnDispose(out, freeNative);
  return out;
}

function freeNative(data: Float32Array): void {
  loadedAddon()?.opFree?.(data);
}

export function scalar(v: NativeOpValue, name: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new MghfError('E_NUMERIC', `The ${name} came out ${String(v)}`);
  return v;
}

/** A tensor as the op entry takes it: host data and dims, or a device tensor's handle. */
export const toNative = (t: Tensor, name = 'tensor'): NativeOpValue =>
  (Tensor.deviceHandle(t, name) as NativeOpValue | undefined) ?? { data: t.data, dims: [...t.dims] };

/**
 * A tensor handed over to the op (`consume`): the op takes its native block to write into, without
 * a copy (an op output; any other array is copied as usual), and the tensor is disposed once the
 * call has started, whether the op then succeeds or fails. A device tensor is never handed over
 * (the CUDA ops copy what they write into): it goes as a plain input, and is disposed all the same.
 */
export const toConsumed = (t: Tensor, name = 'tensor'): NativeOpValue =>
  t.location === 'cpu' ? { data: t.data, dims: [...t.dims], consume: true } : toNative(t, name);

/**
 * The one location of a call's tensors, or E_DEVICE naming the first two that differ: an op
 * never copies between devices.
 */
export function sameLocation(args: ReadonlyArray<readonly [string, Tensor | undefined]>): TensorLocation {
  const present = args.filter((a): a is readonly [string, Tensor] => a[1] !== undefined);
  const [firstName, first] = present[0];
  for (const [name, t] of present.slice(1)) {
    if (t.location !== first.location) {
      throw new MghfError(
        'E_DEVICE',
        `Expected ${name} on ${first.location}, where ${firstName} is, but ${name} is on ${t.location}: ` +
          `ops never copy between devices; move one with t.to('${first.location}') or t.to('${t.location}')`,
        { argument: name },
      );
    }
  }
  return first.location;
}

export function sameDims(a: Tensor, aName: string, b: Tensor, bName: string): void {
  if (a.dims.length !== b.dims.length || a.dims.some((d, i) => d !== b.dims[i])) {
    throw new MghfError('E_SHAPE', `Expected ${bName} to have the dims of ${aName} ([${a.dims.join(',')}]) but received [${b.dims.join(',')}]`, {
      argument: bName,
    });
  }
}

export function flag(o: Partial<Record<string, unknown>>, key: string, fallback: boolean): boolean {
  const v = o[key] ?? fallback;
  if (!is.bool(v)) throw invalidParameterError('E_OPTION', `opts.${key}`, 'a boolean', v);
  return v;
}
