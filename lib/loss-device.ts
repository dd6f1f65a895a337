// mghfLoss on device tensors (issue 15 item 3): sr and gt on 'cuda:N' go to the registry's
// mghfLoss op (CudaBackend's loss on device pointers, native/core/cuda/ops_cuda.cu) and the
// gradient comes back as a tensor on the same device: no host round trip of the images or the
// gradient. loss.ts checks the options exactly as for host tensors and calls this.

import { MghfError, invalidParameterError } from './errors';
import { type NativeOpValue, type NativeWeights, native, rethrowNative } from './native';
import { type DeviceHandle, Tensor, type TensorLike } from './tensor';

/** The tensors of a call, when sr or gt is a device tensor; undefined for host data (the host path). */
export function devicePair(srIn: unknown, gtIn: unknown): [Tensor, Tensor] | undefined {
  // instanceof can throw (a revoked Proxy): such a value is not a device tensor, and the host
  // path's checks report it as they always have.
  const onDevice = (v: unknown) => {
    try {
      return v instanceof Tensor && v.location !== 'cpu';
    } catch {
      return false;
    }
  };
  if (!onDevice(srIn) && !onDevice(gtIn)) return undefined;
  const sr = Tensor.from(srIn as TensorLike, 'sr');
  const gt = Tensor.from(gtIn as TensorLike, 'gt');
  if (sr.location !== gt.location) {
    throw new MghfError(
      'E_DEVICE',
      `Expected sr and gt on one device but sr is on ${sr.location} and gt on ${gt.location}: ` +
        `mghfLoss never copies between devices; move one with t.to('${sr.location}')`,
      { argument: onDevice(srIn) ? 'gt' : 'sr' },
    );
  }
  for (const [t, name] of [[sr, 'sr'], [gt, 'gt']] as const) {
    if (t.dims.length !== 4 || t.dims[1] !== 3) throw invalidParameterError('E_SHAPE', `${name}.dims`, '4 dims [B,3,H,W] (device tensors are NCHW)', t.dims);
  }
  if (sr.dims.some((d, i) => d !== gt.dims[i])) {
    throw new MghfError('E_SHAPE', `Expected gt to have the same dims as sr ([${sr.dims.join(',')}]) but received [${gt.dims.join(',')}]`, { argument: 'gt' });
  }
  return [sr, gt];
}

/** The options that cannot apply to device tensors, and opts.device against where they are. */
export function checkDeviceOptions(o: Partial<Record<string, unknown>>, location: string): void {
  const device = o.device;
  if (device !== undefined && device !== 'auto' && device !== location && !(device === 'cuda' && location === 'cuda:0')) {
    throw new MghfError(
      'E_DEVICE',
      `opts.device is ${JSON.stringify(device)} but sr and gt are on ${location}: the loss runs where its tensors are; ` +
        `leave opts.device out or move them with t.to()`,
      { argument: 'opts.device' },
    );
  }
  if ((o.layout ?? 'NCHW') !== 'NCHW') throw invalidParameterError('E_OPTION', 'opts.layout', "'NCHW' (device tensors are NCHW)", o.layout);
  if (o.profile === true) throw new MghfError('E_UNSUPPORTED', 'opts.profile is not available for device tensors (use host tensors to time the stages)', { argument: 'opts.profile' });
}

const PARTS = ['n', 'mse', 'corr', 'gram', 'csc', 'lip'] as const;

export interface DeviceLossOutput {
  loss: number;
  parts: Record<(typeof PARTS)[number], number>;
  skipped: string[];
  grad?: Tensor;
  importance?: Float64Array;
  selected?: Int32Array;
}

type Attrs = Record<string, number | boolean | string>;

function call(sr: Tensor, gt: Tensor, weights: NativeWeights, selected: Int32Array | null, attrs: Attrs) {
  const inputs: NativeOpValue[] = [
    Tensor.deviceHandle(sr, 'sr') as NativeOpValue,
    Tensor.deviceHandle(gt, 'gt') as NativeOpValue,
    weights,
    selected,
  ];
  const a = native();
  if (typeof a.op !== 'function' || typeof a.opSync !== 'function') throw new MghfError('E_UNSUPPORTED', 'The loaded native binary has no ops: rebuild it');
  return { a, inputs };
}

function finish(out: Record<string, NativeOpValue>): DeviceLossOutput {
  const num = (k: string) => {
    const v = out[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new MghfError('E_NUMERIC', `The ${k === 'loss' ? 'loss' : `part ${k}`} came out ${String(v)}`);
    return v;
  };
  const parts = Object.fromEntries(PARTS.map((k) => [k, num(k)])) as DeviceLossOutput['parts'];
  const skipped = [...((out.skipped as Int32Array | undefined) ?? [])].map((i) => PARTS[i]);
  const r: DeviceLossOutput = { loss: num('loss'), parts, skipped };
  const g = out.grad as { handle?: DeviceHandle; device?: number; dims?: number[] } | undefined;
  if (g && g.handle !== undefined && typeof g.device === 'number' && Array.isArray(g.dims)) r.grad = Tensor.fromDevice(g.handle, g.dims, g.device);
  if (out.importance instanceof Float64Array) r.importance = out.importance;
  if (out.selected instanceof Int32Array) r.selected = out.selected;
  return r;
}

export function deviceLossSync(sr: Tensor, gt: Tensor, weights: NativeWeights, selected: Int32Array | null, attrs: Attrs): DeviceLossOutput {
  const { a, inputs } = call(sr, gt, weights, selected, attrs);
  try {
    return finish(a.opSync!('mghfLoss', inputs, attrs));
  } catch (err) {
    if (err instanceof MghfError) throw err;
    rethrowNative(err);
  }
}

export async function deviceLoss(sr: Tensor, gt: Tensor, weights: NativeWeights, selected: Int32Array | null, attrs: Attrs): Promise<DeviceLossOutput> {
  const { a, inputs } = call(sr, gt, weights, selected, attrs);
  let out: Record<string, NativeOpValue>;
  try {
    out = await a.op!('mghfLoss', inputs, attrs);
  } catch (err) {
    rethrowNative(err);
  }
  return finish(out);
}
