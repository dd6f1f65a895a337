// The one place that loads `.node` files. Two kinds of binary exist: the CPU-only addon (built
// from binding.gyp at install, or the prebuildify prebuild prebuilds/<platform>-<arch>/mghf.glibc.node)
// and the CUDA addon (cmake-js: the prebuild prebuilds/<platform>-<arch>/mghf.cuda.node, or a local
// build-cuda/Release/mghf.node), which carries the CPU backend too. The CUDA one is kept only where
// CUDA is usable; otherwise the CPU one is used and the reason is kept for backendInfo() and for
// the E_UNSUPPORTED error of device: 'cuda'.

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MghfError } from './errors';

export interface NativeWeights {
  channels: number;
  blocks: number;
  expand: number;
  tensors: Record<string, Float32Array>;
}

/** Every field filled in and validated by lib/loss.ts (defaults applied there; docs/MATH.md §4–7). */
export interface NativeLossOptions {
  variant: 'n' | 'c';
  inputRange: 'unit' | 'symmetric';
  device: 'cpu' | 'cuda';
  deviceIndex: number;
  gamma1: number; gamma2: number; gamma3: number;
  beta1: number; beta2: number; beta3: number;
  /** Already min(M, channels). */
  M: number;
  alpha: number;
  gamma: number;
  /** [B·M], each row strictly ascending in [0, channels); null: keep the top M. */
  selected: Int32Array | null;
  patch: number; stride: number; pmax: number;
  tau: number; epsOt: number; Q: number;
  iters: number;
  sinkhornGrad: boolean;
  returnDetails: boolean;
  profile: boolean;
  /** false: no gradient (forward only). */
  grad: boolean;
  /** Raised (cancel(token)) to stop the call: it rejects with E_ABORTED. */
  cancel?: CancelToken;
}

export interface NativeLossResult {
  loss: number;
  /** All six, unweighted; 0 for a skipped part. */
  parts: { n: number; mse: number; corr: number; gram: number; csc: number; lip: number };
  skipped: string[];
  /** Absent when NativeLossOptions.grad is false. */
  grad?: Float32Array;
  /** [B·N], with returnDetails when the CSC term is on. */
  importance?: Float64Array;
  /** [B·M], with returnDetails when the CSC term is on. */
  selected?: Int32Array;
  /** Milliseconds per stage, with profile. */
  timings?: Record<string, number>;
}

export interface NativeCudaStatus {
  available: boolean;
  /** Why CUDA is not usable: built without CUDA, no driver, driver too old, no device, no kernel image. */
  reason?: string;
  deviceCount: number;
  runtimeVersion: number;
  driverVersion: number;
  deviceName?: string;
  computeCapability?: string;
}

export interface NativeInfo {
  backend: 'cpu';
  isa: string;
  threads: number;
  builtWithCuda: boolean;
  cuda: NativeCudaStatus;
  cacheBytes: number;
}

export interface NativeFeatureOptions {
  inputRange: string;
  device: 'cpu' | 'cuda';
  deviceIndex: number;
  cancel?: CancelToken;
}

/** An opaque native cancel flag (cancelToken()); cancel(token) raises it. */
export interface CancelToken {
  readonly __mghfCancel?: never;
}

/**
 * Everything the native trainer needs to start (docs/MATH.md §10), checked in lib/pretrain.ts. `tensors` holds
 * every DFE tensor (docs/MATH.md §9 names), the head (`head.conv.{0,1,2}.weight` [N,N,3,3], `.bias` [N],
 * `head.fc.weight` [classes,N], `head.fc.bias` [classes]) and, when resuming, `adam.m.<name>` and
 * `adam.v.<name>` for every parameter.
 */
export interface NativeTrainerConfig {
  channels: number;
  blocks: number;
  expand: number;
  classes: number;
  tensors: Record<string, Float32Array>;
  /** Optimiser steps already taken (0 for a fresh start): Adam's bias correction and the lr schedule continue from it. */
  steps: number;
  /** The base learning rate lr0; the rate in force is lr0 · decayRate^floor(steps / decayEvery). */
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  decayEvery: number;
  decayRate: number;
  /** Where the trainer runs: the CPU, or CUDA device `deviceIndex` (checked usable in lib/). */
  device: 'cpu' | 'cuda';
  deviceIndex: number;
}

/** An opaque native trainer object. */
export interface TrainerHandle {
  readonly __mghfTrainer?: never;
}

export interface NativeTrainResult {
  /** Mean softmax cross-entropy over the batch. */
  loss: number;
  /** Samples of the batch whose arg-max class is the label. */
  correct: number;
}

export interface NativeTrainerState {
  steps: number;
  /** The learning rate in force. */
  lr: number;
  /** 'cpu' or 'cuda:N' (absent from binaries built before CUDA pretraining). */
  device?: string;
  /** Copies of every parameter and of adam.m.* / adam.v.*. */
  tensors: Record<string, Float32Array>;
}

/** The functions native/binding/addon.cc exports. Arguments arrive already validated. */
export interface NativeAddon {
  lossSync(sr: Float32Array, gt: Float32Array, dims: number[], w: NativeWeights, o: NativeLossOptions): NativeLossResult;
  loss(sr: Float32Array, gt: Float32Array, dims: number[], w: NativeWeights, o: NativeLossOptions): Promise<NativeLossResult>;
  featuresSync(x: Float32Array, dims: number[], w: NativeWeights, o: NativeFeatureOptions): Float32Array;
  features(x: Float32Array, dims: number[], w: NativeWeights, o: NativeFeatureOptions): Promise<Float32Array>;
  /** CPU facts, and the CUDA status of device `cudaDevice` (default 0). */
  info(cudaDevice?: number): NativeInfo;
  clearCache(): void;
  /** docs/MATH.md §10 pretraining (absent from binaries built before it: check before use). */
  trainerCreate(cfg: NativeTrainerConfig): TrainerHandle;
  /**
   * Forward, backward and one Adam step on a batch; images [B,3,H,W] in [0,1], labels [B]. A raised
   * `cancel` rejects it with E_ABORTED before the update (the trainer is left as it was).
   */
  trainStep(h: TrainerHandle, images: Float32Array, dims: number[], labels: Int32Array, cancel?: CancelToken): Promise<NativeTrainResult>;
  /** Forward only (no update). */
  trainEval(h: TrainerHandle, images: Float32Array, dims: number[], labels: Int32Array, cancel?: CancelToken): Promise<NativeTrainResult>;
  trainerState(h: TrainerHandle): NativeTrainerState;
  /** A fresh cancel flag for one call (absent from binaries built before issue 13). */
  cancelToken?(): CancelToken;
  /** Raises the flag: the call holding it stops at its next check and rejects with E_ABORTED. */
  cancel?(token: CancelToken): void;
  /**
   * The ops of native/core/ops (issue 15; absent from binaries built before them): one generic
   * entry, `name` one of opNames(). Inputs are NativeOpValue by position; attrs numbers, booleans
   * or strings; the outputs come back by name.
   */
  op?(name: string, inputs: NativeOpValue[], attrs: Record<string, number | boolean | string>): Promise<Record<string, NativeOpValue>>;
  opSync?(name: string, inputs: NativeOpValue[], attrs: Record<string, number | boolean | string>): Record<string, NativeOpValue>;
  /** Drops a state handle's reference now (dispose()); true when it still held one. */
  opRelease?(h: OpHandle): boolean;
  /**
   * Frees an op's float32 output now (Tensor.dispose): detaches its ArrayBuffer (every view then
   * reads as empty) and drops JavaScript's hold on the native block. False, and nothing done, for
   * any other array.
   */
  opFree?(data: Float32Array): boolean;
  /** Live op states (DFE tapes) and their bytes; op outputs JavaScript holds (blocks) and theirs. */
  opMemory?(): { objects: number; bytes: number; blocks?: number; blockBytes?: number };
  /** Drops a device tensor handle's reference now (dispose()); true when it still held one. */
  deviceRelease?(h: unknown): boolean;
  /** Live native device tensors per CUDA device. */
  deviceMemory?(): Array<{ device: number; tensors: number; bytes: number }>;
  opNames?(): string[];
}

/** An opaque native op state (the DFE tape). */
export interface OpHandle {
  readonly __mghfOpState?: never;
}

/** A value crossing the op entry: a float32 tensor, index or weight vectors, DFE weights, a state handle, a scalar, or nothing. */
export type NativeOpValue =
  // consume: the op may take the array's native block (an op output) to write into; it is detached.
  | { data: Float32Array; dims: number[]; consume?: boolean }
  | { handle: unknown; device: number; dims: number[] }
  | Int32Array
  | Float64Array
  | NativeWeights
  | OpHandle
  | number
  | null
  | undefined;

interface Loaded {
  addon: NativeAddon;
  binary: string;
  /** The CUDA binary tried first, and why it was not used (undefined when none exists). */
  cudaBinary?: CudaBinaryAttempt;
  /** Every attempt, in order, with its outcome. */
  fallbacks: string[];
}

export interface CudaBinaryAttempt {
  /** The CUDA binary that was tried first. */
  path: string;
  /** Whether it is the binary in use (with CUDA usable, or, when no CPU binary loads, for its CPU backend). */
  used: boolean;
  /** Why CUDA is not used: it did not load, or CUDA is not usable with it. */
  reason?: string;
}

const packageRoot = join(__dirname, '..');
const platformDir = `${process.platform}-${process.arch}`;
let loaded: Loaded | undefined;

/** Where the CUDA binaries may be, in the order they are tried. */
export function cudaBinaryCandidates(): string[] {
  return [
    // A local `npm run build:cuda` wins over the prebuild, as build/Release wins over prebuilds/ for node-gyp-build.
    join(packageRoot, 'build-cuda', 'Release', 'mghf.node'),
    join(packageRoot, 'prebuilds', platformDir, 'mghf.cuda.node'),
  ];
}

const firstLine = (err: unknown): string => String((err as Error)?.message ?? err).split('\n')[0];

function requireAddon(path: string): NativeAddon {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path) as NativeAddon;
}

/**
 * The CPU binary's info() with the CUDA status replaced by what the CUDA binary said (versions,
 * device, and the reason it is not usable), so that device: 'cuda' fails with the real reason.
 */
function withCudaReason(addon: NativeAddon, binary: string, attempt: CudaBinaryAttempt, status: NativeCudaStatus | undefined): NativeAddon {
  const note = `(CUDA binary ${attempt.path}); in use instead: the CPU-only binary ${binary}, built without CUDA`;
  return {
    ...addon,
    info(cudaDevice?: number): NativeInfo {
      const info = cudaDevice === undefined ? addon.info() : addon.info(cudaDevice);
      if (info.builtWithCuda) return info;
      const base = status ?? info.cuda;
      return { ...info, cuda: { ...base, available: false, reason: `${attempt.reason} ${note}` } };
    },
  };
}

function load(): Loaded {
  if (loaded) return loaded;
  const fallbacks: string[] = [];
  // A path relative to the working directory, as a user types it (require() alone would take
  // 'build/x.node' for a package name).
  const explicit = process.env.MGHF_BINARY ? resolve(process.env.MGHF_BINARY) : undefined;
  if (explicit) {
    try {
      const addon = requireAddon(explicit);
      fallbacks.push(`${explicit} (MGHF_BINARY): loaded`);
      loaded = { addon, binary: explicit, fallbacks };
      return loaded;
    } catch (err) {
      fallbacks.push(`${explicit} (MGHF_BINARY): failed to load: ${firstLine(err)}`);
    }
  }

  // 1. The CUDA binaries: kept only when CUDA is usable.
  const cudaPaths = cudaBinaryCandidates();
  let cudaAttempt: CudaBinaryAttempt | undefined;
  let cudaStatus: NativeCudaStatus | undefined;
  let cudaLoaded: { addon: NativeAddon; binary: string } | undefined;
  for (const path of cudaPaths) {
    if (!existsSync(path)) continue;
    let addon: NativeAddon;
    try {
      addon = requireAddon(path);
    } catch (err) {
      const reason = `it did not load: ${firstLine(err)}`;
      fallbacks.push(`${path} (CUDA): failed to load: ${firstLine(err)}`);
      cudaAttempt ??= { path, used: false, reason };
      continue;
    }
    let info: NativeInfo;
    try {
      info = addon.info();
    } catch (err) {
      fallbacks.push(`${path} (CUDA): loaded, but info() failed: ${firstLine(err)}`);
      cudaAttempt ??= { path, used: false, reason: `its info() failed: ${firstLine(err)}` };
      continue;
    }
    cudaLoaded ??= { addon, binary: path };
    if (info.builtWithCuda && info.cuda.available) {
      const dev = info.cuda.deviceName ? `: ${info.cuda.deviceName}, compute capability ${info.cuda.computeCapability}` : '';
      fallbacks.push(`${path} (CUDA): loaded, CUDA usable${dev}`);
      loaded = { addon, binary: path, cudaBinary: { path, used: true }, fallbacks };
      return loaded;
    }
    const reason = info.builtWithCuda ? (info.cuda.reason ?? 'CUDA is not usable') : 'it was built without CUDA';
    fallbacks.push(`${path} (CUDA): loaded, CUDA not usable: ${reason}`);
    if (!cudaAttempt) {
      cudaAttempt = { path, used: false, reason };
      cudaStatus = info.cuda;
    }
  }
  if (!cudaAttempt) fallbacks.push(`no CUDA binary (looked for ${cudaPaths.join(', ')})`);

  // 2. The CPU binary, as node-gyp-build finds it: build/Release, else the prebuild for this platform.
  let cpuPath: string | undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    cpuPath = gypBuild.resolve(packageRoot);
  } catch (err) {
    fallbacks.push(`node-gyp-build found no CPU binary: ${firstLine(err)}`);
  }
  if (cpuPath !== undefined && cudaPaths.some((p) => resolve(p) === resolve(cpuPath as string))) {
    // With no CPU prebuild beside it, node-gyp-build picks mghf.cuda.node: already tried above.
    fallbacks.push(`node-gyp-build found only ${cpuPath}, the CUDA binary already tried: no CPU binary`);
    cpuPath = undefined;
  }
  if (cpuPath !== undefined) {
    try {
      const addon = requireAddon(cpuPath);
      fallbacks.push(`${cpuPath} (CPU): loaded`);
      loaded = {
        addon: cudaAttempt ? withCudaReason(addon, cpuPath, cudaAttempt, cudaStatus) : addon,
        binary: cpuPath,
        ...(cudaAttempt ? { cudaBinary: cudaAttempt } : {}),
        fallbacks,
      };
      return loaded;
    } catch (err) {
      fallbacks.push(`${cpuPath} (CPU): failed to load: ${firstLine(err)}`);
    }
  }

  // 3. No CPU binary: the CUDA binary still runs the CPU backend.
  if (cudaLoaded) {
    fallbacks.push(`no CPU binary loaded: using ${cudaLoaded.binary} for its CPU backend`);
    const cudaBinary = cudaAttempt ? { ...cudaAttempt, used: cudaAttempt.path === cudaLoaded.binary } : undefined;
    loaded = { addon: cudaLoaded.addon, binary: cudaLoaded.binary, ...(cudaBinary ? { cudaBinary } : {}), fallbacks };
    return loaded;
  }

  throw new MghfError(
    'E_LOAD',
    `Could not load the mghf native addon for ${platformDir} (Node ${process.versions.node}, ` +
      `N-API ${process.versions.napi}).\nTried:\n  ${fallbacks.join('\n  ')}\n` +
      `Remedy: build it from source with \`npm rebuild mghf\` (needs python3, make and g++, a C++17 compiler), ` +
      `or reinstall mghf (\`npm install mghf\`) so that the prebuilt binary comes with the package ` +
      `(prebuilt: linux-x64 with glibc; other platforms always build from source).`,
  );
}

export function native(): NativeAddon {
  return load().addon;
}

/** The addon when it is already loaded (memory() must not load it just to report zeros). */
export function loadedAddon(): NativeAddon | undefined {
  return loaded?.addon;
}

export interface BackendInfo {
  /** The backend `device: 'auto'` runs on. */
  backend: 'cpu' | 'cuda';
  /** SIMD flavour of the CPU kernels: 'avx512', 'avx2' or 'generic'. */
  isa: string;
  /** Threads of the native CPU pool (env MGHF_NUM_THREADS, else the hardware's). */
  threads: number;
  /** Path of the loaded binary. */
  binary: string;
  /** Whether this binary contains the CUDA backend. */
  builtWithCuda: boolean;
  /** The CUDA binary tried, and why it is not used; undefined when there is none. */
  cudaBinary?: CudaBinaryAttempt;
  /** CUDA: usable or not, and why not; versions, device name and compute capability when known. */
  cuda: NativeCudaStatus;
  /** CUDA runtime version the CUDA binary was built with, e.g. "13.0" (when a CUDA binary loaded). */
  cudaRuntimeVersion?: string;
  /** CUDA version the installed driver supports, e.g. "13.0" (when known). */
  cudaDriverVersion?: string;
  /** Name of CUDA device 0 (when known). */
  deviceName?: string;
  /** Compute capability of CUDA device 0, e.g. "9.0" (when known). */
  computeCapability?: string;
  /** Every binary tried while loading, in order, with its outcome. */
  fallbacks: string[];
}

function versionString(v: number): string | undefined {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : undefined;
}

/** What was loaded, what `device: 'auto'` picks, and why CUDA is not used when it is not (see `mghf doctor`). */
export function backendInfo(): BackendInfo {
  const { addon, binary, cudaBinary, fallbacks } = load();
  const info = addon.info();
  const { runtime, driver } = cudaVersions(info.cuda);
  return {
    backend: info.cuda.available ? 'cuda' : 'cpu',
    isa: info.isa,
    threads: info.threads,
    binary,
    builtWithCuda: info.builtWithCuda,
    ...(cudaBinary ? { cudaBinary: { ...cudaBinary } } : {}),
    cuda: info.cuda,
    ...(runtime ? { cudaRuntimeVersion: runtime } : {}),
    ...(driver ? { cudaDriverVersion: driver } : {}),
    ...(info.cuda.deviceName ? { deviceName: info.cuda.deviceName } : {}),
    ...(info.cuda.computeCapability ? { computeCapability: info.cuda.computeCapability } : {}),
    fallbacks: [...fallbacks],
  };
}

/** CUDA runtime and driver versions as "13.0" strings (undefined when unknown). */
export function cudaVersions(s: NativeCudaStatus): { runtime?: string; driver?: string } {
  return { runtime: versionString(s.runtimeVersion), driver: versionString(s.driverVersion) };
}

/** Re-throws a native error as an MghfError carrying this call's JavaScript stack. */
export function rethrowNative(err: unknown): never {
  if (err instanceof MghfError) throw err;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' && e.code.startsWith('E_') ? e.code : 'E_NATIVE';
  throw new MghfError(code as MghfError['code'], String(e?.message ?? err), { cause: err });
}
