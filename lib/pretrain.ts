// DFE pretraining (docs/MATH.md §10, Algorithm 1): the DFE plus a classifier head trained with softmax
// cross-entropy and Adam on an ImageFolder tree; checkpoints each epoch and on abort; the result
// is a weights file (docs/MATH.md §9).
//
// The math runs in the native trainer (one call per batch, off the event loop); this module owns
// the data, the schedule, the checkpoints and the reporting. A resumed run replays the data plan
// of the interrupted epoch from the generator state stored in the checkpoint and skips the batches
// already trained, so it sees the same batches, and computes the same losses, as a run that was
// never interrupted.

import { stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { type Checkpoint, checkpointShapes, createHeadWeights, loadCheckpoint, saveCheckpoint } from './checkpoint';
import { BatchLoader, DATA_STREAM, type ImageFolder, scanImageFolder, splitValidation, trainingPlan, validationPlan } from './data';
import { type Device, deviceName, resolveDevice } from './device';
import { MghfError, invalidParameterError } from './errors';
import { type CancelToken, type NativeAddon, type NativeTrainResult, type TrainerHandle, native, rethrowNative } from './native';
import { checkOptions, is } from './validate';
import { type DfeArchitecture, DEFAULT_ARCHITECTURE, SeededRandom, checkArchitecture, createWeights, saveWeights, weightShapes } from './weights';

export interface PretrainOptions {
  /** Data root: `train/` and `val/` ImageFolder trees, or `train/` alone, or the class folders themselves (then 10% is split off for validation). Taken from the checkpoint when resuming. */
  data?: string;
  /** Epochs in all, counting those done before a resume (default 20). */
  epochs?: number;
  /** Images per batch (default 32). */
  batch?: number;
  /** Adam's base learning rate (default 5e-4). */
  lr?: number;
  /** Crop size, square (default 128). */
  crop?: number;
  /** Seeds the DFE, the head and the data order (default 0). */
  seed?: number;
  /** DFE architecture (default 128 / 1 / 2). */
  channels?: number;
  blocks?: number;
  expand?: number;
  /** The learning rate is multiplied by `decayRate` every `decayEvery` steps (default 0.95 every 5,000; docs/MATH.md §10). */
  decayEvery?: number;
  decayRate?: number;
  /** 'auto' (default: CUDA device 0 when usable, else the CPU), 'cpu', 'cuda' or 'cuda:N'. */
  device?: Device;
  /** The weights file written at the end (default 'mghf-dfe.safetensors'; when resuming, the interrupted run's). */
  out?: string;
  /** The checkpoint written after each epoch and on abort (default `out` + '.ckpt.safetensors'; when resuming without `out`, the interrupted run's). */
  checkpoint?: string;
  /** A checkpoint to continue from. The run's settings come from it; options that contradict it are rejected. */
  resume?: string;
  /** Stop once this many steps (counted from the very start, resumes included) are done: checkpoint, validate, write `out`. */
  maxSteps?: number;
  /**
   * Abort: the step in flight stops before its update (the native trainer checks between images
   * and before Adam; a step already past that finishes), a checkpoint of the last completed step is
   * written, and the result says 'aborted'. An already aborted signal stops before the first step.
   */
  signal?: AbortSignal;
  onStart?: (info: PretrainStart) => void;
  /** After every step. */
  onProgress?: (p: PretrainProgress) => void;
  /** After each epoch's validation. */
  onEpoch?: (e: PretrainEpoch) => void;
  /** Unreadable images (each named once; training goes on without them). */
  onWarning?: (message: string) => void;
}

export interface PretrainStart {
  classes: string[];
  trainImages: number;
  valImages: number;
  /** Where the validation images come from: the data's val/ folder, or 10% split off the training images. */
  valSource: 'folder' | 'split';
  stepsPerEpoch: number;
  /** Steps this run will reach (epochs × stepsPerEpoch, or maxSteps when smaller). */
  totalSteps: number;
  /** Epochs in all. */
  epochs: number;
  /** Steps already done (from the checkpoint). */
  step: number;
  architecture: DfeArchitecture;
  resumedFrom: string | null;
  checkpoint: string;
  out: string;
  /** Where the math runs: 'cpu' or 'cuda:N'. */
  device: string;
}

export interface PretrainProgress {
  /** Epoch in progress, from 1. */
  epoch: number;
  epochs: number;
  /** Steps done, counted from the very start. */
  step: number;
  totalSteps: number;
  /** Batches of this epoch done, from 1. */
  stepInEpoch: number;
  stepsPerEpoch: number;
  /** This batch's mean cross-entropy. */
  loss: number;
  /** Mean loss over this epoch's batches so far (this process). */
  runningLoss: number;
  /** Fraction classified correctly over this epoch's batches so far (this process). */
  accuracy: number;
  /** The learning rate of the step just taken. */
  lr: number;
  /** Over the last few steps, data waits included; NaN until measurable. */
  imagesPerSecond: number;
  /** Seconds until totalSteps at the recent pace (validation passes not included); NaN until measurable. */
  etaSeconds: number;
}

export interface PretrainEpoch {
  /** The epoch just finished, from 1. */
  epoch: number;
  epochs: number;
  step: number;
  /** Null when there are no validation images. */
  valLoss: number | null;
  valAccuracy: number | null;
  valImages: number;
  checkpoint: string;
}

export interface PretrainResult {
  /** 'done': every epoch ran; 'maxSteps': stopped at opts.maxSteps; 'aborted': stopped by the signal (no weights file). */
  stopped: 'done' | 'maxSteps' | 'aborted';
  /** The weights file written, or null when aborted. */
  out: string | null;
  checkpoint: string;
  /** Steps done, counted from the very start. */
  step: number;
  /** Epochs done (a fraction when stopped inside one). */
  epochs: number;
  /** The training loss of each step this call ran, in order. */
  losses: number[];
  valLoss: number | null;
  valAccuracy: number | null;
  classes: string[];
}

/** The native trainer functions (docs/MATH.md §10). */
export type TrainerAddon = Pick<NativeAddon, 'trainerCreate' | 'trainStep' | 'trainEval' | 'trainerState' | 'cancelToken' | 'cancel'>;

const OPTION_NAMES = [
  'data', 'epochs', 'batch', 'lr', 'crop', 'seed', 'channels', 'blocks', 'expand', 'decayEvery', 'decayRate',
  'device', 'out', 'checkpoint', 'resume', 'maxSteps', 'signal', 'onStart', 'onProgress', 'onEpoch', 'onWarning',
] as const;

// docs/MATH.md §10 (the paper's settings); the doctor's and the bench's trainer steps use them too.
/** @internal */
export const DEFAULTS = { epochs: 20, batch: 32, lr: 5e-4, crop: 128, seed: 0, decayEvery: 5000, decayRate: 0.95 };
/** @internal */
export const ADAM = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
const DEFAULT_OUT = 'mghf-dfe.safetensors';
const VALIDATION_FRACTION = 0.1;
// Settings a resumed run takes from its checkpoint and must not be given differently.
const FROZEN = ['batch', 'lr', 'crop', 'seed', 'channels', 'blocks', 'expand', 'decayEvery', 'decayRate'] as const;

/** The native trainer, or E_UNSUPPORTED when the loaded binary predates it. */
export function nativeTrainer(): TrainerAddon {
  const addon = native() as Partial<NativeAddon>;
  for (const fn of ['trainerCreate', 'trainStep', 'trainEval', 'trainerState'] as const) {
    if (typeof addon[fn] !== 'function') {
      throw new MghfError(
        'E_UNSUPPORTED',
        `The loaded native addon has no ${fn}(): it was built before pretraining existed. ` +
          'Rebuild it from this source (npm run build:native).',
      );
    }
  }
  return addon as TrainerAddon;
}

/** Pretrain the DFE (docs/MATH.md §10) and write it as a weights file (docs/MATH.md §9). */
export async function pretrain(opts?: PretrainOptions): Promise<PretrainResult> {
  return runPretrain(opts, nativeTrainer);
}

interface Settings {
  arch: DfeArchitecture;
  epochs: number;
  batch: number;
  lr: number;
  crop: number;
  seed: number;
  decayEvery: number;
  decayRate: number;
  data: string;
  out: string;
  checkpoint: string;
  maxSteps: number | undefined;
}

const positiveInt = (name: string, v: unknown, fallback: number, max = Number.MAX_SAFE_INTEGER): number => {
  const x = v ?? fallback;
  if (!is.positiveInteger(x) || x > max) {
    throw invalidParameterError('E_OPTION', `opts.${name}`, max === Number.MAX_SAFE_INTEGER ? 'an integer ≥ 1' : `an integer from 1 to ${max}`, x);
  }
  return x;
};

function readSettings(o: Partial<Record<(typeof OPTION_NAMES)[number], unknown>>, ck: Checkpoint | undefined): Settings {
  if (ck !== undefined) {
    const saved: Record<(typeof FROZEN)[number], number> = {
      batch: ck.batch, lr: ck.lr0, crop: ck.crop, seed: ck.seed, channels: ck.channels, blocks: ck.blocks,
      expand: ck.expand, decayEvery: ck.decayEvery, decayRate: ck.decayRate,
    };
    for (const key of FROZEN) {
      if (o[key] !== undefined && o[key] !== saved[key]) {
        throw new MghfError(
          'E_OPTION',
          `opts.${key} is ${String(o[key])} but the checkpoint ${String(o.resume)} was trained with ${key} ${saved[key]}; ` +
            'a resumed run keeps its settings (leave the option out)',
          { argument: `opts.${key}` },
        );
      }
      o = { ...o, [key]: saved[key] };
    }
  }
  const arch = checkArchitecture(
    { channels: o.channels ?? DEFAULT_ARCHITECTURE.channels, blocks: o.blocks ?? DEFAULT_ARCHITECTURE.blocks, expand: o.expand ?? DEFAULT_ARCHITECTURE.expand },
    'opts',
    'E_OPTION',
  );
  const lr = o.lr ?? DEFAULTS.lr;
  if (!is.number(lr) || lr <= 0) throw invalidParameterError('E_OPTION', 'opts.lr', 'a finite number > 0', lr);
  const decayRate = o.decayRate ?? DEFAULTS.decayRate;
  if (!is.number(decayRate) || decayRate <= 0 || decayRate > 1) throw invalidParameterError('E_OPTION', 'opts.decayRate', 'a number in (0, 1]', decayRate);
  const seed = o.seed ?? DEFAULTS.seed;
  if (!is.integer(seed) || seed < 0) throw invalidParameterError('E_OPTION', 'opts.seed', 'a non-negative safe integer', seed);
  const data = o.data ?? ck?.data;
  if (!is.string(data) || data.length === 0) throw invalidParameterError('E_OPTION', 'opts.data', 'a data folder path', data);
  // A resumed run writes where the interrupted one would have, unless told otherwise.
  const saved = o.out === undefined && ck !== undefined ? savedPaths(ck, String(o.resume)) : undefined;
  const out = o.out ?? saved?.out ?? DEFAULT_OUT;
  if (!is.string(out) || out.length === 0) throw invalidParameterError('E_OPTION', 'opts.out', 'a file path', out);
  const checkpoint = o.checkpoint ?? saved?.checkpoint ?? `${out}.ckpt.safetensors`;
  if (!is.string(checkpoint) || checkpoint.length === 0) throw invalidParameterError('E_OPTION', 'opts.checkpoint', 'a file path', checkpoint);
  if (resolve(checkpoint) === resolve(out)) throw invalidParameterError('E_OPTION', 'opts.checkpoint', 'a path other than opts.out', checkpoint);
  const savedEpochs = ck?.metadata.epochs === undefined ? undefined : Number(ck.metadata.epochs);
  return {
    arch,
    epochs: positiveInt('epochs', o.epochs ?? savedEpochs, DEFAULTS.epochs),
    batch: positiveInt('batch', o.batch, DEFAULTS.batch, 1 << 16),
    lr,
    crop: positiveInt('crop', o.crop, DEFAULTS.crop, 1 << 14),
    seed,
    decayEvery: positiveInt('decayEvery', o.decayEvery, DEFAULTS.decayEvery),
    decayRate,
    data,
    out,
    checkpoint,
    maxSteps: o.maxSteps === undefined ? undefined : positiveInt('maxSteps', o.maxSteps, 1),
  };
}

/**
 * The weights file and checkpoint an interrupted run was writing (absolute paths in the checkpoint's
 * metadata; none in checkpoints written before they were stored). The file is untrusted: a path is
 * taken only when it is absolute and names a .safetensors file, the only kind a run writes.
 */
function savedPaths(ck: Checkpoint, file: string): { out: string; checkpoint?: string } | undefined {
  const { out, checkpoint } = ck.metadata;
  if (out === undefined) return undefined;
  const ok = (p: string | undefined): p is string => p !== undefined && isAbsolute(p) && p.endsWith('.safetensors') && !p.includes('\0');
  if (!ok(out) || (checkpoint !== undefined && !ok(checkpoint))) {
    throw new MghfError(
      'E_WEIGHTS_FILE',
      `Invalid checkpoint file ${file}: __metadata__.out/checkpoint must be absolute paths of .safetensors files; ` +
        'pass opts.out (--out) to choose where the weights go',
      { argument: file },
    );
  }
  return { out, ...(checkpoint !== undefined ? { checkpoint } : {}) };
}

async function isFolder(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** train/ + val/, train/ alone, or the class folders at the root; the last two split off 10%. */
async function loadData(root: string): Promise<{ train: ImageFolder; val: ImageFolder; valSource: 'folder' | 'split' }> {
  const trainRoot = join(root, 'train');
  if (!(await isFolder(trainRoot))) {
    // Report a missing root as such, not as a missing train/.
    const all = await scanImageFolder(root);
    return { ...splitValidation(all, VALIDATION_FRACTION), valSource: 'split' };
  }
  const train = await scanImageFolder(trainRoot);
  const valRoot = join(root, 'val');
  if (!(await isFolder(valRoot))) return { ...splitValidation(train, VALIDATION_FRACTION), valSource: 'split' };
  return { train, val: await scanImageFolder(valRoot, { classes: train.classes }), valSource: 'folder' };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Steps per second over a sliding window of recent steps. */
class Throughput {
  private readonly times: number[] = [];
  private readonly images: number[] = [];

  constructor(private start: number) {}

  record(now: number, images: number): void {
    this.times.push(now);
    this.images.push(images);
    if (this.times.length > 21) {
      this.start = this.times.shift()!;
      this.images.shift();
    }
  }

  /** [images per second, seconds per step] */
  rates(): [number, number] {
    const span = (this.times[this.times.length - 1] - this.start) / 1000;
    if (!(span > 0)) return [NaN, NaN];
    const images = this.images.reduce((a, b) => a + b, 0);
    return [images / span, span / this.times.length];
  }
}

function formatEpochs(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(2);
}

/**
 * `pretrain` with the trainer supplied (tests pass a stand-in; `pretrain` passes the native one).
 * @internal
 */
export async function runPretrain(opts: PretrainOptions | undefined, trainer: () => TrainerAddon): Promise<PretrainResult> {
  const o = checkOptions(opts, OPTION_NAMES);
  const device = resolveDevice(o.device);
  for (const name of ['onStart', 'onProgress', 'onEpoch', 'onWarning'] as const) {
    if (o[name] !== undefined && typeof o[name] !== 'function') throw invalidParameterError('E_OPTION', `opts.${name}`, 'a function', o[name]);
  }
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidParameterError('E_OPTION', 'opts.signal', 'an AbortSignal', signal);
  if (o.resume !== undefined && (!is.string(o.resume) || o.resume.length === 0)) {
    throw invalidParameterError('E_OPTION', 'opts.resume', 'a checkpoint file path', o.resume);
  }
  const callbacks = (opts ?? {}) as PretrainOptions;
  const resumePath = o.resume as string | undefined;
  const ck = resumePath === undefined ? undefined : await loadCheckpoint(resumePath);
  const s = readSettings(o, ck);

  const { train, val, valSource } = await loadData(s.data);
  const classes = train.classes;
  const stepsPerEpoch = BatchLoader.batchCount(train.samples.length, s.batch);
  let step = 0;
  let epoch = 0;
  let batchInEpoch = 0;
  let epochStart = SeededRandom.fromSeed(s.seed, DATA_STREAM).state();
  let tensors: Record<string, Float32Array>;
  if (ck !== undefined) {
    if (!sameList(ck.classNames, classes)) {
      throw new MghfError('E_DATA', `The classes in ${s.data} (${classes.length}) differ from those the checkpoint ${resumePath} was trained on (${ck.classNames.length})`, {
        argument: s.data,
      });
    }
    if (ck.trainImages !== train.samples.length || ck.step !== ck.epoch * stepsPerEpoch + ck.batchInEpoch || ck.batchInEpoch > stepsPerEpoch) {
      throw new MghfError(
        'E_DATA',
        `The training images in ${s.data} (${train.samples.length}) are not those the checkpoint ${resumePath} was trained on (${ck.trainImages}); ` +
          'an exact resume needs the same data',
        { argument: s.data },
      );
    }
    ({ step, epoch, batchInEpoch } = ck);
    epochStart = ck.rng;
    tensors = ck.tensors;
  } else {
    tensors = {
      ...createWeights({ seed: s.seed, ...s.arch }).tensors,
      ...createHeadWeights({ seed: s.seed, channels: s.arch.channels, classes: classes.length }),
    };
  }
  const totalSteps = Math.min(s.epochs * stepsPerEpoch, s.maxSteps ?? Infinity);
  callbacks.onStart?.({
    classes,
    trainImages: train.samples.length,
    valImages: val.samples.length,
    valSource,
    stepsPerEpoch,
    totalSteps,
    epochs: s.epochs,
    step,
    architecture: s.arch,
    resumedFrom: resumePath ?? null,
    checkpoint: s.checkpoint,
    out: s.out,
    device: deviceName(device),
  });

  const t = trainer();
  let handle: TrainerHandle;
  try {
    handle = t.trainerCreate({
      ...s.arch,
      classes: classes.length,
      tensors,
      steps: step,
      lr: s.lr,
      ...ADAM,
      decayEvery: s.decayEvery,
      decayRate: s.decayRate,
      ...device,
    });
  } catch (err) {
    rethrowNative(err);
  }
  const onWarning = callbacks.onWarning;
  const trainLoader = new BatchLoader(train, { crop: s.crop, ...(onWarning ? { onWarning } : {}) });
  const valLoader = new BatchLoader(val, { crop: s.crop, ...(onWarning ? { onWarning } : {}) });

  const trainerState = () => {
    try {
      return t.trainerState(handle);
    } catch (err) {
      rethrowNative(err);
    }
  };
  const checkpointAt = async (atEpoch: number, atBatch: number, rngState: number[]) => {
    const state = trainerState();
    await saveCheckpoint(
      {
        ...s.arch,
        classes: classes.length,
        classNames: classes,
        tensors: pickCheckpointTensors(state.tensors, s.arch, classes.length),
        step,
        epoch: atEpoch,
        batchInEpoch: atBatch,
        rng: rngState,
        lr0: s.lr,
        decayEvery: s.decayEvery,
        decayRate: s.decayRate,
        data: resolve(s.data),
        crop: s.crop,
        batch: s.batch,
        seed: s.seed,
        trainImages: train.samples.length,
        // out and checkpoint: where a resume without --out goes on writing.
        metadata: { epochs: String(s.epochs), lr: String(state.lr), out: resolve(s.out), checkpoint: resolve(s.checkpoint) },
      },
      s.checkpoint,
    );
  };

  const validate = async (): Promise<{ loss: number | null; accuracy: number | null; aborted: boolean }> => {
    let loss = 0;
    let correct = 0;
    let seen = 0;
    for await (const b of valLoader.batches(validationPlan(val.samples.length), s.batch, { unreadable: 'drop' })) {
      if (signal?.aborted) return { loss: null, accuracy: null, aborted: true };
      const r = await call(t, signal, (cancel) => t.trainEval(handle, b.images, [...b.dims], b.labels, cancel));
      if (r === ABORTED) return { loss: null, accuracy: null, aborted: true };
      loss += r.loss * b.dims[0];
      correct += r.correct;
      seen += b.dims[0];
    }
    return seen === 0 ? { loss: null, accuracy: null, aborted: false } : { loss: loss / seen, accuracy: correct / seen, aborted: false };
  };

  const losses: number[] = [];
  const result = (stopped: PretrainResult['stopped'], out: string | null, v: { loss: number | null; accuracy: number | null }): PretrainResult => ({
    stopped,
    out,
    checkpoint: s.checkpoint,
    step,
    epochs: step / stepsPerEpoch,
    losses,
    valLoss: v.loss,
    valAccuracy: v.accuracy,
    classes,
  });
  const none = { loss: null, accuracy: null };
  const throughput = new Throughput(Date.now());
  const rng = SeededRandom.fromState(epochStart);
  let last = none as { loss: number | null; accuracy: number | null };

  for (; epoch < s.epochs; epoch++, batchInEpoch = 0) {
    epochStart = rng.state();
    const plan = trainingPlan(train.samples.length, rng); // rng is now at the next epoch's start
    let lossSum = 0;
    let correct = 0;
    let seen = 0;
    let batches = 0;
    let stopped: 'maxSteps' | undefined;
    if (signal?.aborted) {
      await checkpointAt(epoch, batchInEpoch, epochStart);
      return result('aborted', null, none);
    }
    if (s.maxSteps !== undefined && step >= s.maxSteps) stopped = 'maxSteps';
    else {
      for await (const b of trainLoader.batches(plan, s.batch, { first: batchInEpoch })) {
        const lr = s.lr * s.decayRate ** Math.floor(step / s.decayEvery);
        const r = await call(t, signal, (cancel) => t.trainStep(handle, b.images, [...b.dims], b.labels, cancel));
        if (r === ABORTED) {
          // Stopped inside the step, before its update: the trainer is as after the last step.
          await checkpointAt(epoch, batchInEpoch, epochStart);
          return result('aborted', null, none);
        }
        if (!Number.isFinite(r.loss)) {
          throw new MghfError(
            'E_NATIVE',
            `Training diverged at step ${step + 1} (loss ${r.loss}); the last checkpoint is ${s.checkpoint}. Try a smaller lr.`,
          );
        }
        step++;
        batchInEpoch = b.index + 1;
        losses.push(r.loss);
        const B = b.dims[0];
        lossSum += r.loss;
        batches++;
        correct += r.correct;
        seen += B;
        throughput.record(Date.now(), B);
        const [imagesPerSecond, secondsPerStep] = throughput.rates();
        callbacks.onProgress?.({
          epoch: epoch + 1,
          epochs: s.epochs,
          step,
          totalSteps,
          stepInEpoch: batchInEpoch,
          stepsPerEpoch,
          loss: r.loss,
          runningLoss: lossSum / batches,
          accuracy: correct / seen,
          lr,
          imagesPerSecond,
          etaSeconds: Math.max(0, totalSteps - step) * secondsPerStep,
        });
        if (signal?.aborted) {
          await checkpointAt(epoch, batchInEpoch, epochStart);
          return result('aborted', null, none);
        }
        if (s.maxSteps !== undefined && step >= s.maxSteps) {
          stopped = 'maxSteps';
          break;
        }
      }
    }
    if (stopped === 'maxSteps') {
      await checkpointAt(epoch, batchInEpoch, epochStart);
      const v = await validate();
      if (v.aborted) return result('aborted', null, none);
      return result('maxSteps', await writeWeights(v), v);
    }
    const v = await validate();
    if (v.aborted) {
      await checkpointAt(epoch, stepsPerEpoch, epochStart);
      return result('aborted', null, none);
    }
    last = v;
    await checkpointAt(epoch + 1, 0, rng.state());
    callbacks.onEpoch?.({
      epoch: epoch + 1,
      epochs: s.epochs,
      step,
      valLoss: v.loss,
      valAccuracy: v.accuracy,
      valImages: val.samples.length,
      checkpoint: s.checkpoint,
    });
  }
  if (last === none) {
    // Resumed from the checkpoint of a finished run: validate what it holds.
    const v = await validate();
    if (v.aborted) return result('aborted', null, none);
    last = v;
  }
  return result('done', await writeWeights(last), last);

  async function writeWeights(v: { accuracy: number | null }): Promise<string> {
    const state = trainerState();
    const dfe: Record<string, Float32Array> = {};
    for (const [name] of weightShapes(s.arch)) dfe[name] = state.tensors[name];
    const epochsDone = formatEpochs(step / stepsPerEpoch);
    const accuracy = v.accuracy === null ? 'not measured (no validation images)' : `${(100 * v.accuracy).toFixed(2)}%`;
    await saveWeights(
      {
        ...s.arch,
        tensors: dfe,
        metadata: {
          trainedOn:
            `Pretrained (docs/MATH.md §10) as a ${classes.length}-class classifier on ${s.data} (${train.samples.length} training images), ` +
            `${s.crop}×${s.crop} crops, batch ${s.batch}, ${epochsDone} epochs (${step} steps); ` +
            `final validation accuracy ${accuracy} on ${val.samples.length} images.`,
          trainedData: s.data,
          trainedCrop: String(s.crop),
          trainedEpochs: epochsDone,
          trainedSteps: String(step),
          ...(v.accuracy === null ? {} : { valAccuracy: String(v.accuracy) }),
        },
      },
      s.out,
    );
    return s.out;
  }
}

/** The checkpoint's tensors from the trainer's state (every parameter and both Adam moments). */
function pickCheckpointTensors(state: Record<string, Float32Array>, arch: DfeArchitecture, classes: number): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  for (const [name] of checkpointShapes(arch, classes)) {
    const data = state[name];
    if (data === undefined) throw new MghfError('E_NATIVE', `The native trainer's state has no tensor '${name}'`);
    out[name] = data;
  }
  return out;
}

const ABORTED = Symbol('aborted');

/**
 * A native step or evaluation, with a cancel token raised when `signal` fires meanwhile: the native
 * side then stops before the update (E_ABORTED), which comes back as ABORTED. Other failures are
 * MghfErrors.
 */
async function call(
  t: TrainerAddon,
  signal: AbortSignal | undefined,
  fn: (cancel: CancelToken | undefined) => Promise<NativeTrainResult>,
): Promise<NativeTrainResult | typeof ABORTED> {
  if (signal?.aborted) return ABORTED; // fired while the batch was loading
  const token = signal !== undefined && typeof t.cancelToken === 'function' ? t.cancelToken() : undefined;
  const onAbort = () => {
    if (token !== undefined) t.cancel?.(token);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await fn(token);
  } catch (err) {
    if ((err as { code?: unknown })?.code === 'E_ABORTED' && signal?.aborted) return ABORTED;
    return rethrowNative(err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
