// The pretraining classifier head (docs/MATH.md §10) and the checkpoint file: a safetensors file (docs/MATH.md §9)
// of format 'mghf-ckpt' holding every DFE tensor, the head, Adam's moments (adam.m.<name>,
// adam.v.<name> for every parameter) and, in __metadata__, what a resumed run needs to continue
// exactly: step, epoch, batchInEpoch, the data generator's state, and the run's settings.

import { MghfError, describe, invalidParameterError } from './errors';
import { elementCount } from './tensor';
import { checkOptions, is } from './validate';
import {
  type DfeArchitecture,
  type LoadedWeights,
  DEFAULT_ARCHITECTURE,
  FORMAT_VERSION,
  SeededRandom,
  allocationError,
  checkAllocation,
  type TensorEntry,
  checkArchitecture,
  parseSafetensors,
  readSafetensorsFile,
  serializeTensors,
  uniformTensor,
  weightShapes,
  writeFileAtomic,
} from './weights';

export const CHECKPOINT_FORMAT = 'mghf-ckpt';
// The head's stream of the seed's generator (stream 0 initialises the DFE; lib/data.ts uses 2 and 3).
const HEAD_STREAM = 1;
const MAX_CLASSES = 100_000;

/** The head's tensors with their shapes: 3 × conv3x3 stride 2 (N→N, bias), then FC(N → classes). */
export function headShapes(channels: number, classes: number): Array<[string, number[]]> {
  const list: Array<[string, number[]]> = [];
  for (let i = 0; i < 3; i++) list.push([`head.conv.${i}.weight`, [channels, channels, 3, 3]], [`head.conv.${i}.bias`, [channels]]);
  list.push(['head.fc.weight', [classes, channels]], ['head.fc.bias', [classes]]);
  return list;
}

/** Every trained parameter (DFE, then head) with its shape, in checkpoint order. */
export function parameterShapes(arch: DfeArchitecture, classes: number): Array<[string, number[]]> {
  return [...weightShapes(arch), ...headShapes(arch.channels, classes)];
}

/** Parameters, then adam.m.* and adam.v.* of each: everything a checkpoint holds. */
export function checkpointShapes(arch: DfeArchitecture, classes: number): Array<[string, number[]]> {
  const params = parameterShapes(arch, classes);
  return [
    ...params,
    ...params.map(([name, dims]): [string, number[]] => [`adam.m.${name}`, dims]),
    ...params.map(([name, dims]): [string, number[]] => [`adam.v.${name}`, dims]),
  ];
}

export interface CreateHeadOptions {
  seed?: number;
  /** N, the DFE's channels (default 128). */
  channels?: number;
  /** The number of classes (≥ 2). */
  classes: number;
}

function checkClasses(classes: unknown, name: string): number {
  if (!is.integer(classes) || classes < 2 || classes > MAX_CLASSES) {
    throw invalidParameterError('E_OPTION', name, `an integer from 2 to ${MAX_CLASSES}`, classes);
  }
  return classes;
}

/**
 * A freshly initialised head (docs/MATH.md §10): PyTorch's Conv2d/Linear defaults, every weight and bias
 * uniform in ±1/√fan_in (conv fan_in = N·9, fc fan_in = N), from the seed's own stream (the same
 * seed gives the same head on every platform, and a different stream from createWeights').
 */
export function createHeadWeights(opts: CreateHeadOptions): Record<string, Float32Array> {
  const o = checkOptions(opts, ['seed', 'channels', 'classes'] as const);
  const seed = o.seed ?? 0;
  if (!is.integer(seed) || seed < 0) throw invalidParameterError('E_OPTION', 'opts.seed', 'a non-negative safe integer', seed);
  const channels = o.channels ?? DEFAULT_ARCHITECTURE.channels;
  checkArchitecture({ channels, blocks: 1, expand: 1 }, 'opts', 'E_OPTION');
  const classes = checkClasses(o.classes, 'opts.classes');
  const shapes = headShapes(channels as number, classes);
  const count = shapes.reduce((sum, [, dims]) => sum + elementCount(dims), 0);
  const what = `createHeadWeights(channels=${channels} classes=${classes})`;
  checkAllocation(count, what);
  const random = SeededRandom.fromSeed(seed, HEAD_STREAM);
  const tensors: Record<string, Float32Array> = {};
  try {
    for (const [name, dims] of shapes) {
      const fanIn = name.startsWith('head.fc.') ? (channels as number) : (channels as number) * 9;
      tensors[name] = uniformTensor(random, elementCount(dims), fanIn);
    }
  } catch (err) {
    throw allocationError(err, count, what);
  }
  return tensors;
}

/** Everything a pretraining run needs to continue where it stopped. */
export interface Checkpoint extends DfeArchitecture {
  classes: number;
  /** The class folder names, in label order. */
  classNames: string[];
  /** Every name of `checkpointShapes(arch, classes)`. */
  tensors: Record<string, Float32Array>;
  /** Optimiser steps taken. */
  step: number;
  /** Epochs completed (= the index of the epoch in progress). */
  epoch: number;
  /** Batches of epoch `epoch` trained; equal to the epoch's batch count when only its validation is left. */
  batchInEpoch: number;
  /** The data generator's state at the start of epoch `epoch` (its plan is replayed from it). */
  rng: number[];
  /** The base learning rate and its schedule (lr0 · decayRate^floor(step / decayEvery)). */
  lr0: number;
  decayEvery: number;
  decayRate: number;
  data: string;
  crop: number;
  batch: number;
  seed: number;
  /** Number of training images when the checkpoint was written. */
  trainImages: number;
  /** The file's whole __metadata__. */
  metadata: Record<string, string>;
}

const SETTINGS = ['step', 'epoch', 'batchInEpoch', 'crop', 'batch', 'seed', 'decayEvery', 'trainImages'] as const;

/** The safetensors bytes of a checkpoint, after checking every tensor is present with its shape. */
export function serializeCheckpoint(c: Checkpoint): Buffer {
  const arch = checkArchitecture(c, 'checkpoint', 'E_ARGUMENT');
  const classes = checkClasses(c.classes, 'checkpoint.classes');
  if (!Array.isArray(c.classNames) || c.classNames.length !== classes || !c.classNames.every(is.string)) {
    throw invalidParameterError('E_ARGUMENT', 'checkpoint.classNames', `${classes} class names`, c.classNames);
  }
  const entries: TensorEntry[] = checkpointShapes(arch, classes).map(([name, dims]) => {
    const data = c.tensors[name];
    if (!is.float32Array(data) || data.length !== elementCount(dims)) {
      throw invalidParameterError('E_ARGUMENT', `checkpoint.tensors['${name}']`, `a Float32Array of ${elementCount(dims)} elements (shape [${dims}])`, data);
    }
    return { name, dims, data };
  });
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    version: FORMAT_VERSION,
    channels: String(arch.channels),
    blocks: String(arch.blocks),
    expand: String(arch.expand),
    classes: String(classes),
    classNames: JSON.stringify(c.classNames),
    lr0: String(c.lr0),
    decayRate: String(c.decayRate),
    rng: JSON.stringify(c.rng),
    data: c.data,
  };
  for (const key of SETTINGS) metadata[key] = String(c[key]);
  for (const [key, value] of Object.entries(c.metadata ?? {})) if (!(key in metadata)) metadata[key] = value;
  return serializeTensors(metadata, entries);
}

/** Write a checkpoint atomically (a crash mid-write leaves the previous one intact). */
export async function saveCheckpoint(c: Checkpoint, path: string): Promise<void> {
  await writeFileAtomic(path, serializeCheckpoint(c));
}

const isCheckpointName = (name: string): boolean =>
  name.startsWith('head.') || name.startsWith('adam.m.') || name.startsWith('adam.v.');

// What the weights reader must accept besides the DFE: the head and Adam's moments.
const CHECKPOINT_PARSE = { allow: isCheckpointName, format: CHECKPOINT_FORMAT };

/** Parse and fully validate a checkpoint held in memory (the file is untrusted, as in docs/MATH.md §9). */
export function parseCheckpoint(buf: Buffer | Uint8Array, file: string): Checkpoint {
  // The DFE part (structure, offsets, DFE shapes) is checked by the weights reader.
  return checkpointFrom(parseSafetensors(buf, file, CHECKPOINT_PARSE), file);
}

/** The checkpoint in a file the weights reader accepted: its metadata and the head and optimiser tensors, checked. */
function checkpointFrom(loaded: LoadedWeights, file: string): Checkpoint {
  const fail = (message: string): never => {
    throw new MghfError('E_WEIGHTS_FILE', `Invalid checkpoint file ${file}: ${message}`, { argument: file });
  };
  const m = loaded.metadata;
  const int = (key: string, min: number): number => {
    const v = m[key];
    if (v === undefined || !/^(0|[1-9][0-9]{0,14})$/.test(v) || Number(v) < min) {
      return fail(`__metadata__.${key} is ${describe(v)}, expected an integer ≥ ${min}`);
    }
    return Number(v);
  };
  const num = (key: string, ok: (x: number) => boolean, expected: string): number => {
    const v = m[key];
    const x = v === undefined || v.trim() === '' ? NaN : Number(v);
    if (!Number.isFinite(x) || !ok(x)) return fail(`__metadata__.${key} is ${describe(v)}, expected ${expected}`);
    return x;
  };
  const json = (key: string): unknown => {
    try {
      return JSON.parse(m[key] ?? '');
    } catch {
      return fail(`__metadata__.${key} is ${describe(m[key])}, expected JSON`);
    }
  };
  const classes = int('classes', 2);
  if (classes > MAX_CLASSES) fail(`__metadata__.classes is ${classes}, more than ${MAX_CLASSES}`);
  const classNames = json('classNames');
  if (!Array.isArray(classNames) || classNames.length !== classes || !classNames.every(is.string)) {
    fail(`__metadata__.classNames is not a JSON list of ${classes} names`);
  }
  let rng: number[] = [];
  try {
    rng = SeededRandom.fromState(json('rng')).state();
  } catch (err) {
    if (err instanceof MghfError && err.code === 'E_WEIGHTS_FILE') throw err;
    fail(`__metadata__.rng is ${describe(m.rng)}, expected four unsigned 32-bit integers`);
  }
  if (m.data === undefined) fail('__metadata__.data is missing');

  const extra = loaded.extra ?? {};
  const expected = new Map(checkpointShapes(loaded, classes).filter(([name]) => isCheckpointName(name)));
  for (const [name, t] of Object.entries(extra)) {
    const dims = expected.get(name);
    if (dims === undefined) fail(`tensor '${name}' is not part of a checkpoint with ${classes} classes (unknown tensor)`);
    else if (t.shape.length !== dims.length || t.shape.some((d, i) => d !== dims[i])) {
      fail(`tensor '${name}' has shape [${t.shape}] but ${classes} classes and ${loaded.channels} channels require [${dims}]`);
    }
    const bad = t.data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) fail(`tensor '${name}' holds a non-finite value (${describe(t.data[bad])}) at index ${bad}`);
  }
  const tensors: Record<string, Float32Array> = { ...loaded.tensors };
  for (const name of expected.keys()) {
    const t = extra[name];
    if (t === undefined) fail(`tensor '${name}' is missing (required in a checkpoint)`);
    tensors[name] = t.data;
  }
  return {
    channels: loaded.channels,
    blocks: loaded.blocks,
    expand: loaded.expand,
    classes,
    classNames: classNames as string[],
    tensors,
    step: int('step', 0),
    epoch: int('epoch', 0),
    batchInEpoch: int('batchInEpoch', 0),
    rng,
    lr0: num('lr0', (x) => x > 0, 'a number > 0'),
    decayEvery: int('decayEvery', 1),
    decayRate: num('decayRate', (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
    data: m.data,
    crop: int('crop', 2),
    batch: int('batch', 1),
    seed: int('seed', 0),
    trainImages: int('trainImages', 1),
    metadata: m,
  };
}

/** Read and validate a pretraining checkpoint ('mghf-ckpt'). */
export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  if (!is.string(path) || path.length === 0) throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
  // Read in stages like loadWeights (the header length first, the header parsed off the event loop).
  return checkpointFrom(await readSafetensorsFile(path, CHECKPOINT_PARSE, 'checkpoint file'), path);
}
