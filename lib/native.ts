// The one place that loads `.node` files. Today there is one binary, the CPU
// addon (built from binding.gyp at install, or a prebuild); the CUDA build will
// be tried first here when it exists, with the reason for any fallback kept for
// backendInfo().

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MghfError } from './errors';

export interface NativeWeights {
  channels: number;
  blocks: number;
  expand: number;
  tensors: Record<string, Float32Array>;
}

/** Every field filled in and validated by lib/loss.ts (defaults applied there; SPEC §4–7). */
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
}

export interface NativeLossResult {
  loss: number;
  /** All six, unweighted; 0 for a skipped part. */
  parts: { n: number; mse: number; corr: number; gram: number; csc: number; lip: number };
  skipped: string[];
  grad: Float32Array;
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
}

/**
 * Everything the native trainer needs to start (SPEC §10), checked in lib/pretrain.ts. `tensors` holds
 * every DFE tensor (SPEC §9 names), the head (`head.conv.{0,1,2}.weight` [N,N,3,3], `.bias` [N],
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
  /** SPEC §10 pretraining (absent from binaries built before it: check before use). */
  trainerCreate(cfg: NativeTrainerConfig): TrainerHandle;
  /** Forward, backward and one Adam step on a batch; images [B,3,H,W] in [0,1], labels [B]. */
  trainStep(h: TrainerHandle, images: Float32Array, dims: number[], labels: Int32Array): Promise<NativeTrainResult>;
  /** Forward only (no update). */
  trainEval(h: TrainerHandle, images: Float32Array, dims: number[], labels: Int32Array): Promise<NativeTrainResult>;
  trainerState(h: TrainerHandle): NativeTrainerState;
}

interface Loaded {
  addon: NativeAddon;
  binary: string;
}

const packageRoot = join(__dirname, '..');
let loaded: Loaded | undefined;

// Candidates in order: an explicit MGHF_BINARY; the CUDA build from
// `npm run build:cuda` (cmake-js, build-cuda/); then what node-gyp-build finds
// (build/Release from binding.gyp, or prebuilds/<platform>-<arch>/). A CUDA
// build also carries the CPU backend, so it is used even where CUDA is not.
function candidates(): string[] {
  const list: string[] = [];
  if (process.env.MGHF_BINARY) list.push(process.env.MGHF_BINARY);
  const cudaBuild = join(packageRoot, 'build-cuda', 'Release', 'mghf.node');
  if (existsSync(cudaBuild)) list.push(cudaBuild);
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    list.push(gypBuild.resolve(packageRoot));
  } catch (err) {
    list.push(`(node-gyp-build found nothing: ${(err as Error).message.split('\n')[0]})`);
  }
  return list;
}

function load(): Loaded {
  if (loaded) return loaded;
  const attempts: string[] = [];
  for (const binary of candidates()) {
    if (binary.startsWith('(')) {
      attempts.push(binary);
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const addon = require(binary) as NativeAddon;
      loaded = { addon, binary };
      return loaded;
    } catch (err) {
      attempts.push(`${binary}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new MghfError(
    'E_LOAD',
    `Could not load the mghf native addon for ${process.platform}-${process.arch} (Node ${process.versions.node}, ` +
      `N-API ${process.versions.napi}).\nTried:\n  ${attempts.join('\n  ')}\n` +
      `Remedy: rebuild it from source with \`npm rebuild mghf\` (needs python3, make and a C++17 compiler), ` +
      `or reinstall so the prebuilt binary for your platform is fetched with the package.`,
  );
}

export function native(): NativeAddon {
  return load().addon;
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
  /** CUDA: usable or not, and why not; versions, device name and compute capability when known. */
  cuda: NativeCudaStatus;
}

function versionString(v: number): string | undefined {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : undefined;
}

/** What was loaded, what `device: 'auto'` picks, and why CUDA is not used when it is not (see `mghf doctor`). */
export function backendInfo(): BackendInfo {
  const { addon, binary } = load();
  const info = addon.info();
  return {
    backend: info.cuda.available ? 'cuda' : 'cpu',
    isa: info.isa,
    threads: info.threads,
    binary,
    builtWithCuda: info.builtWithCuda,
    cuda: info.cuda,
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
