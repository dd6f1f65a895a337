// DFE weights: the tensor list of SPEC §9, the safetensors reader/writer, and the seeded
// initialisation of SPEC §10.
//
// The reader treats every file as untrusted (§9): each size in the header is checked against the
// file before anything is allocated from it, and every violation is an E_WEIGHTS_FILE error that
// names the file and, where there is one, the tensor.

import { existsSync, promises as fsp, readFileSync, writeFileSync, renameSync, unlinkSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MghfError, MghfErrorCode, describe, invalidParameterError } from './errors';
import { is, checkOptions } from './validate';
import { elementCount } from './tensor';

export interface DfeArchitecture {
  /** N, the DFE's feature channels (even: the coupling splits them in halves). */
  channels: number;
  /** K, the number of invertible blocks. */
  blocks: number;
  /** e, the expansion factor of the inverted-residual sub-networks. */
  expand: number;
}

export interface DfeWeights extends DfeArchitecture {
  /** Every tensor of `weightShapes(arch)`, row-major as PyTorch stores it. */
  tensors: Record<string, Float32Array>;
  /** safetensors `__metadata__`: format, version, channels, blocks, expand, trainedOn, … */
  metadata: Record<string, string>;
}

/** A tensor the reader was told to accept besides the DFE's own (checkpoint head, optimiser). */
export interface ExtraTensor {
  shape: number[];
  data: Float32Array;
}

export interface ParseOptions {
  /** Accept a tensor name that is not part of the DFE (e.g. `head.fc.weight`); see SPEC §10. */
  allow?: (name: string) => boolean;
  /** The `__metadata__.format` the file must declare; default 'mghf-dfe' (a checkpoint: 'mghf-ckpt'). */
  format?: string;
}

/** What the reader returns; `extra` is present only when `allow` accepted some tensor. */
export type LoadedWeights = DfeWeights & { extra?: Record<string, ExtraTensor> };

export const FORMAT = 'mghf-dfe';
export const FORMAT_VERSION = '1';
export const DEFAULT_ARCHITECTURE: Readonly<DfeArchitecture> = Object.freeze({ channels: 128, blocks: 1, expand: 2 });

// Sanity bounds: far above any useful DFE, low enough that no valid architecture describes a
// tensor list whose sizes overflow exact integer arithmetic.
const MAX_CHANNELS = 4096;
const MAX_BLOCKS = 64;
const MAX_EXPAND = 64;
// §9: the JSON header is at most 100 MB.
const MAX_HEADER_BYTES = 100_000_000;

const SUBNETS = ['phi', 'rho', 'eta'] as const;

/** Every tensor of SPEC §9 with its shape, in the order the writer stores them. */
export function weightShapes(arch: DfeArchitecture): Array<[string, number[]]> {
  const { channels: N, blocks: K, expand: e } = arch;
  const c = N / 2;
  const h = e * c;
  const list: Array<[string, number[]]> = [
    ['stem.weight', [N, 3, 3, 3]],
    ['stem.bias', [N]],
  ];
  for (let k = 0; k < K; k++) {
    list.push([`inn.${k}.mix.weight`, [N, N, 1, 1]], [`inn.${k}.mix.bias`, [N]]);
    for (const s of SUBNETS) {
      list.push(
        [`inn.${k}.${s}.expand.weight`, [h, c, 1, 1]],
        [`inn.${k}.${s}.depthwise.weight`, [h, 1, 3, 3]],
        [`inn.${k}.${s}.project.weight`, [c, h, 1, 1]],
      );
    }
  }
  return list;
}

/** Total number of parameters; 72,704 for the defaults (SPEC §2). */
export function parameterCount(arch: DfeArchitecture): number {
  return weightShapes(arch).reduce((sum, [, dims]) => sum + elementCount(dims), 0);
}

/**
 * The architecture fields of `arch`, checked: channels a positive even integer ≤ 4096, blocks
 * ≤ 64, expand ≤ 64. `code` lets each caller report in its own terms (argument, weights object,
 * weights file).
 */
export function checkArchitecture(arch: unknown, argName: string, code: MghfErrorCode = 'E_ARGUMENT'): DfeArchitecture {
  if (!is.object(arch)) throw invalidParameterError(code, argName, 'an object { channels, blocks, expand }', arch);
  const a = arch as Record<string, unknown>;
  const channels = a.channels;
  if (!is.positiveInteger(channels) || channels % 2 !== 0 || channels > MAX_CHANNELS) {
    throw invalidParameterError(code, `${argName}.channels`, `an even integer from 2 to ${MAX_CHANNELS}`, channels);
  }
  const blocks = a.blocks;
  if (!is.positiveInteger(blocks) || blocks > MAX_BLOCKS) {
    throw invalidParameterError(code, `${argName}.blocks`, `an integer from 1 to ${MAX_BLOCKS}`, blocks);
  }
  const expand = a.expand;
  if (!is.positiveInteger(expand) || expand > MAX_EXPAND) {
    throw invalidParameterError(code, `${argName}.expand`, `an integer from 1 to ${MAX_EXPAND}`, expand);
  }
  return { channels, blocks, expand };
}

/**
 * A weights object after checking it is complete and consistent: valid architecture, every
 * tensor of `weightShapes` present as a finite Float32Array of the right length, no other tensor,
 * string metadata that does not contradict the architecture. Returns a fresh object sharing the
 * caller's arrays.
 */
export function checkWeights(w: unknown, argName = 'weights'): DfeWeights {
  if (!is.object(w)) throw invalidParameterError('E_WEIGHTS', argName, 'a weights object', w);
  const arch = checkArchitecture(w, argName, 'E_WEIGHTS');
  const { tensors, metadata = {} } = w as { tensors?: unknown; metadata?: unknown };
  if (!is.plainObject(tensors)) throw invalidParameterError('E_WEIGHTS', `${argName}.tensors`, 'an object of Float32Arrays', tensors);
  if (!is.plainObject(metadata)) throw invalidParameterError('E_WEIGHTS', `${argName}.metadata`, 'an object of strings', metadata);
  for (const [key, value] of Object.entries(metadata)) {
    if (!is.string(value)) throw invalidParameterError('E_WEIGHTS', `${argName}.metadata.${key}`, 'a string', value);
  }
  const implied: Record<string, string> = {
    format: FORMAT,
    version: FORMAT_VERSION,
    channels: String(arch.channels),
    blocks: String(arch.blocks),
    expand: String(arch.expand),
  };
  for (const [key, value] of Object.entries(implied)) {
    if (metadata[key] !== undefined && metadata[key] !== value) {
      throw invalidParameterError('E_WEIGHTS', `${argName}.metadata.${key}`, `'${value}' (matching the architecture)`, metadata[key]);
    }
  }
  const shapes = weightShapes(arch);
  const required = new Set(shapes.map(([name]) => name));
  for (const name of Object.keys(tensors)) {
    if (!required.has(name)) {
      throw new MghfError('E_WEIGHTS', `Unknown tensor '${name}' in ${argName}.tensors for architecture ${archText(arch)}`, {
        argument: `${argName}.tensors`,
      });
    }
  }
  for (const [name, dims] of shapes) {
    const data = tensors[name];
    const count = elementCount(dims);
    const where = `${argName}.tensors['${name}']`;
    if (!is.float32Array(data) || data.length !== count) {
      throw invalidParameterError('E_WEIGHTS', where, `a Float32Array of ${count} elements (shape [${dims}])`, data);
    }
    const bad = firstNonFinite(data);
    if (bad >= 0) {
      throw new MghfError('E_WEIGHTS', `Expected finite values for ${where} but received ${describe(data[bad])} at index ${bad}`, {
        argument: `${argName}.tensors`,
      });
    }
  }
  return { ...arch, tensors: tensors as Record<string, Float32Array>, metadata: metadata as Record<string, string> };
}

function archText(a: DfeArchitecture): string {
  return `channels=${a.channels} blocks=${a.blocks} expand=${a.expand}`;
}

function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (data[i] - data[i] !== 0) return i;
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Reading

const LITTLE_ENDIAN = endianness() === 'LE';
const DECIMAL = /^(0|[1-9][0-9]*)$/;

interface Span {
  name: string;
  shape: number[];
  begin: number;
  end: number;
}

/** Parse and fully validate a safetensors DFE weights file held in memory (SPEC §9). */
export function parseSafetensors(buf: Buffer | Uint8Array, file: string, opts: ParseOptions = {}): LoadedWeights {
  const fail: Fail = (message, tensor) => {
    const subject = tensor === undefined ? '' : ` tensor '${tensor}'`;
    throw new MghfError('E_WEIGHTS_FILE', `Invalid weights file ${file}:${subject} ${message}`, { argument: file });
  };
  if (!(buf instanceof Uint8Array)) throw invalidParameterError('E_ARGUMENT', 'buffer', 'a Buffer or Uint8Array', buf);
  const { allow: allowOption, format = FORMAT } = checkOptions(opts, ['allow', 'format'] as const, 'parse options');
  if (allowOption !== undefined && typeof allowOption !== 'function') {
    throw invalidParameterError('E_OPTION', 'allow', 'a function (name) => boolean', allowOption);
  }
  if (!is.string(format)) throw invalidParameterError('E_OPTION', 'format', 'a string', format);
  const allow = allowOption as ParseOptions['allow'];

  // 1. Header length: u64 LE, checked as a BigInt before it becomes a Number or a size.
  if (buf.length < 8) fail(`file is ${buf.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLength64 = view.getBigUint64(0, true);
  if (headerLength64 > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLength64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const headerLength = Number(headerLength64);
  if (8 + headerLength > buf.length) {
    fail(`header length ${headerLength} runs past the end of the file (${buf.length} bytes)`);
  }

  // 2. Header: strict UTF-8, then JSON, then an object.
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + headerLength));
  } catch {
    return fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    return fail(`header is not valid JSON (${(err as Error).message})`);
  }
  if (!is.plainObject(header)) return fail(`header is not a JSON object but ${describe(header)}`);

  // 3. Metadata → architecture.
  const metadata = parseMetadata(header.__metadata__, format, fail);
  const arch = metadataArchitecture(metadata, file);
  const expected = new Map(weightShapes(arch));

  // 4. Tensor entries: names, dtype, shape, offsets against the data section.
  const dataStart = 8 + headerLength;
  const dataLength = buf.length - dataStart;
  const spans: Span[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const known = expected.has(name);
    // '__proto__' can never be a DFE tensor, and as a record key it would be unsafe.
    if (!known && (name === '__proto__' || !(allow?.(name) ?? false))) {
      fail(`is not part of a DFE with ${archText(arch)} (unknown tensor)`, name);
    }
    spans.push(parseEntry(name, entry, dataLength, fail));
  }

  // 5. Every required tensor present with its §9 shape.
  const byName = new Map(spans.map((s) => [s.name, s]));
  for (const [name, dims] of expected) {
    const span = byName.get(name);
    if (span === undefined) fail(`is missing (required for ${archText(arch)})`, name);
    else if (!sameDims(span.shape, dims)) fail(`has shape [${span.shape}] but ${archText(arch)} requires [${dims}]`, name);
  }

  // 6. Spans tile the data section exactly: no overlap, no gap, nothing after the last one.
  const sorted = [...spans].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: Span | undefined;
  for (const s of sorted) {
    if (s.begin < cursor) {
      fail(`data_offsets [${s.begin},${s.end}] overlap those of tensor '${previous?.name}' [${previous?.begin},${previous?.end}]`, s.name);
    }
    if (s.begin > cursor) fail(`data_offsets [${s.begin},${s.end}] leave a gap of ${s.begin - cursor} bytes before it`, s.name);
    cursor = s.end;
    previous = s;
  }
  if (cursor !== dataLength) {
    fail(`data section is ${dataLength} bytes but the tensors cover ${cursor} (${dataLength - cursor} unaccounted bytes)`);
  }

  // 7. Only now allocate: sizes are proven to fit in the file.
  const tensors: Record<string, Float32Array> = {};
  const extra: Record<string, ExtraTensor> = {};
  for (const s of spans) {
    const data = readFloat32LE(buf, dataStart + s.begin, (s.end - s.begin) / 4);
    if (expected.has(s.name)) {
      const bad = firstNonFinite(data);
      if (bad >= 0) fail(`holds a non-finite value (${describe(data[bad])}) at index ${bad}`, s.name);
      tensors[s.name] = data;
    } else {
      extra[s.name] = { shape: s.shape, data };
    }
  }
  const result: LoadedWeights = { ...arch, tensors, metadata };
  if (Object.keys(extra).length > 0) result.extra = extra;
  return result;
}

type Fail = (message: string, tensor?: string) => never;

function parseMetadata(raw: unknown, format: string, fail: Fail): Record<string, string> {
  if (raw === undefined) return fail('header has no __metadata__ (format, version, channels, blocks, expand)');
  if (!is.plainObject(raw)) return fail(`__metadata__ is not an object but ${describe(raw)}`);
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (!is.string(value)) fail(`__metadata__.${key} is not a string but ${describe(value)}`);
    if (key === '__proto__') fail(`__metadata__ has the key '__proto__'`);
    metadata[key] = value as string;
  }
  if (metadata.format !== format) fail(`__metadata__.format is ${describe(metadata.format)}, expected '${format}'`);
  if (metadata.version !== FORMAT_VERSION) {
    fail(`__metadata__.version is ${describe(metadata.version)}, this library reads version '${FORMAT_VERSION}'`);
  }
  for (const key of ['channels', 'blocks', 'expand']) {
    const value = metadata[key];
    // Short decimal strings only: Number() would also accept '0x10', '1e2', ' 8 '.
    if (value === undefined || !DECIMAL.test(value) || value.length > 6) {
      fail(`__metadata__.${key} is ${describe(value)}, expected a decimal integer string`);
    }
  }
  return metadata;
}

function metadataArchitecture(metadata: Record<string, string>, file: string): DfeArchitecture {
  const arch = { channels: Number(metadata.channels), blocks: Number(metadata.blocks), expand: Number(metadata.expand) };
  return checkArchitecture(arch, `weights file ${file} __metadata__`, 'E_WEIGHTS_FILE');
}

function parseEntry(name: string, entry: unknown, dataLength: number, fail: Fail): Span {
  if (!is.plainObject(entry)) return fail(`entry is not an object but ${describe(entry)}`, name);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (dtype !== 'F32') fail(`has dtype ${describe(dtype)}; only F32 is supported`, name);
  if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(`has shape ${describe(shape)}; expected an array of non-negative integers`, name);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    fail(`has data_offsets ${describe(offsets)}; expected [begin, end] non-negative integers`, name);
  }
  const [begin, end] = offsets as number[];
  if (begin > end || end > dataLength) {
    fail(`has data_offsets [${begin},${end}] outside the data section of ${dataLength} bytes`, name);
  }
  const dims = shape as number[];
  // The product can exceed 2^53 only for a shape that cannot match any span within the file.
  const bytes = 4 * elementCount(dims);
  if (bytes !== end - begin) fail(`has shape [${dims}] (${bytes} bytes of F32) but data_offsets span ${end - begin} bytes`, name);
  return { name, shape: dims, begin, end };
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A fresh, aligned Float32Array from little-endian bytes at any (possibly unaligned) offset. */
function readFloat32LE(buf: Uint8Array, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  if (LITTLE_ENDIAN) {
    // Copy bytes into the new array's own buffer: no alignment requirement on the source.
    new Uint8Array(out.buffer).set(buf.subarray(offset, offset + 4 * count));
  } else {
    const view = new DataView(buf.buffer, buf.byteOffset + offset, 4 * count);
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
  }
  return out;
}

/** Read and validate a DFE weights file (SPEC §9). */
export async function loadWeights(path: string, opts: ParseOptions = {}): Promise<LoadedWeights> {
  checkPath(path);
  let buf: Buffer;
  try {
    buf = await fsp.readFile(path);
  } catch (err) {
    throw readError(path, err);
  }
  return parseSafetensors(buf, path, opts);
}

/** Synchronous `loadWeights`. */
export function loadWeightsSync(path: string, opts: ParseOptions = {}): LoadedWeights {
  checkPath(path);
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw readError(path, err);
  }
  return parseSafetensors(buf, path, opts);
}

function checkPath(path: unknown): void {
  if (!is.string(path) || path.length === 0) throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
}

function readError(path: string, err: unknown): MghfError {
  return new MghfError('E_WEIGHTS_FILE', `Cannot read weights file ${path}: ${(err as Error)?.message ?? err}`, {
    argument: path,
    cause: err,
  });
}

// ---------------------------------------------------------------------------------------------
// Writing

/** A safetensors file for `w`: metadata, tensors in `weightShapes` order, header space-padded to 8 bytes. */
export function serializeSafetensors(w: DfeWeights): Buffer {
  const weights = checkWeights(w);
  // The five identifying keys first and always from the architecture; other metadata after.
  const metadata: Record<string, string> = {
    format: FORMAT,
    version: FORMAT_VERSION,
    channels: String(weights.channels),
    blocks: String(weights.blocks),
    expand: String(weights.expand),
    trainedOn: weights.metadata.trainedOn ?? 'unknown',
  };
  for (const [key, value] of Object.entries(weights.metadata)) if (!(key in metadata)) metadata[key] = value;
  return serializeTensors(
    metadata,
    weightShapes(weights).map(([name, dims]) => ({ name, dims, data: weights.tensors[name] })),
  );
}

/** One tensor for `serializeTensors`; `data.length` must equal ∏dims (the caller has checked it). */
export interface TensorEntry {
  name: string;
  dims: readonly number[];
  data: Float32Array;
}

/**
 * The safetensors bytes of `entries` in the given order, with `metadata` as `__metadata__` and the
 * header space-padded to 8 bytes. No checks on names or shapes: `serializeSafetensors` (weights) and
 * the checkpoint writer check their own contents first.
 */
export function serializeTensors(metadata: Record<string, string>, entries: readonly TensorEntry[]): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const { name, dims, data } of entries) {
    if (data.length !== elementCount(dims)) throw new Error(`Internal: tensor '${name}' has ${data.length} values for dims [${dims}]`);
    const bytes = 4 * data.length;
    header[name] = { dtype: 'F32', shape: [...dims], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  // Pad so the data section starts 8-byte aligned (readers mapping the file can view it directly).
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + headerLength + offset);
  out.writeBigUInt64LE(BigInt(headerLength), 0);
  json.copy(out, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);

  let cursor = 8 + headerLength;
  for (const { data } of entries) {
    if (LITTLE_ENDIAN) {
      out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), cursor);
    } else {
      for (let i = 0; i < data.length; i++) out.writeFloatLE(data[i], cursor + 4 * i);
    }
    cursor += data.byteLength;
  }
  return out;
}

// Atomic write: a crash or a concurrent reader never sees a half-written weights file.
function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** Write `w` to `path` as a safetensors file, atomically (temp file, fsync, rename). */
export async function saveWeights(w: DfeWeights, path: string): Promise<void> {
  checkPath(path);
  await writeFileAtomic(path, serializeSafetensors(w));
}

/** Write `bytes` to `path` atomically (temp file in the same folder, fsync, rename); E_WEIGHTS_FILE on failure. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const temp = tempPathFor(path);
  try {
    const handle = await fsp.open(temp, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(temp, path);
  } catch (err) {
    await fsp.unlink(temp).catch(() => undefined);
    throw writeError(path, err);
  }
}

/** Synchronous `saveWeights`. */
export function saveWeightsSync(w: DfeWeights, path: string): void {
  checkPath(path);
  const bytes = serializeSafetensors(w);
  const temp = tempPathFor(path);
  try {
    const fd = openSync(temp, 'w');
    try {
      writeFileSync(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (err) {
    try {
      unlinkSync(temp);
    } catch {
      // The temp file may never have been created.
    }
    throw writeError(path, err);
  }
}

function writeError(path: string, err: unknown): MghfError {
  return new MghfError('E_WEIGHTS_FILE', `Cannot write weights file ${path}: ${(err as Error)?.message ?? err}`, {
    argument: path,
    cause: err,
  });
}

// ---------------------------------------------------------------------------------------------
// Initialisation (SPEC §10)

export interface CreateWeightsOptions {
  seed?: number;
  channels?: number;
  blocks?: number;
  expand?: number;
}

/**
 * Freshly initialised DFE weights: PyTorch's Conv2d defaults, i.e. every weight and bias uniform
 * in ±1/√fan_in with fan_in = in_channels/groups·kh·kw (a bias uses its weight's fan_in). The
 * stream is our own seeded xoshiro128**, not PyTorch's: the same seed gives bit-identical
 * weights on every platform.
 */
export function createWeights(opts?: CreateWeightsOptions): DfeWeights {
  const o = checkOptions(opts, ['seed', 'channels', 'blocks', 'expand'] as const);
  const seed = o.seed ?? 0;
  if (!is.integer(seed) || seed < 0) throw invalidParameterError('E_OPTION', 'opts.seed', 'a non-negative safe integer', seed);
  const arch = checkArchitecture(
    {
      channels: o.channels ?? DEFAULT_ARCHITECTURE.channels,
      blocks: o.blocks ?? DEFAULT_ARCHITECTURE.blocks,
      expand: o.expand ?? DEFAULT_ARCHITECTURE.expand,
    },
    'opts',
    'E_OPTION',
  );
  const random = SeededRandom.fromSeed(seed);
  const tensors: Record<string, Float32Array> = {};
  for (const [name, dims] of weightShapes(arch)) {
    tensors[name] = uniformTensor(random, elementCount(dims), fanIn(name, dims, arch));
  }
  return {
    ...arch,
    tensors,
    metadata: {
      format: FORMAT,
      version: FORMAT_VERSION,
      channels: String(arch.channels),
      blocks: String(arch.blocks),
      expand: String(arch.expand),
      trainedOn: `untrained: createWeights(seed=${seed})`,
    },
  };
}

/** `count` values uniform in ±1/√fanIn (PyTorch's Conv2d/Linear default for weights and biases). */
export function uniformTensor(random: SeededRandom, count: number, fanIn: number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  const data = new Float32Array(count);
  for (let i = 0; i < data.length; i++) data[i] = (2 * random.uniform() - 1) * bound;
  return data;
}

/** in_channels/groups·kh·kw of the convolution a tensor belongs to (biases: their weight's). */
function fanIn(name: string, dims: readonly number[], arch: DfeArchitecture): number {
  if (name === 'stem.bias') return 3 * 3 * 3;
  if (name.endsWith('.mix.bias')) return arch.channels;
  // Weight [out, in/groups, kh, kw]: the product of all but the first dim. Covers stem (27),
  // mix (N), expand (c), depthwise (9, groups = h) and project (h).
  return dims[1] * dims[2] * dims[3];
}

/**
 * xoshiro128** seeded through splitmix32-style mixing of the seed's two 32-bit halves. The mixing
 * is a bijection per word, so distinct seeds start distinct states; `stream` selects an
 * independent sequence for the same seed (0 is the DFE initialisation's). 32-bit integer math
 * only (Math.imul), no BigInt. Its four-word state can be read and restored, so a data pipeline
 * driven by it can resume exactly (SPEC §10 pretraining).
 */
export class SeededRandom {
  private readonly s: Uint32Array;

  private constructor(s: Uint32Array) {
    this.s = s;
  }

  static fromSeed(seed: number, stream = 0): SeededRandom {
    if (!is.integer(seed) || seed < 0) throw invalidParameterError('E_OPTION', 'seed', 'a non-negative safe integer', seed);
    if (!is.integer(stream) || stream < 0) throw invalidParameterError('E_OPTION', 'stream', 'a non-negative safe integer', stream);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    const s = new Uint32Array(4);
    const offset = Math.imul(stream, 0x9e3779b9);
    s[0] = fmix32(lo ^ 0x9e3779b9);
    s[1] = fmix32(hi ^ 0x85ebca6b);
    s[2] = fmix32(s[0] + 0xc2b2ae35 + offset);
    s[3] = fmix32(s[1] + 0x27d4eb2f + offset);
    const rng = new SeededRandom(s);
    // Let the first outputs' dependence on the nearly-structured initial state wash out.
    for (let i = 0; i < 16; i++) rng.nextUint32();
    return rng;
  }

  /** A generator continuing from a `state()` snapshot: four unsigned 32-bit integers, not all 0. */
  static fromState(state: unknown): SeededRandom {
    if (
      !Array.isArray(state) ||
      state.length !== 4 ||
      !state.every((v) => is.integer(v) && v >= 0 && v <= 0xffffffff) ||
      state.every((v) => v === 0)
    ) {
      throw invalidParameterError('E_ARGUMENT', 'state', 'four unsigned 32-bit integers, not all 0', state);
    }
    return new SeededRandom(Uint32Array.from(state as number[]));
  }

  /** The four state words; `fromState` of them continues the same sequence. */
  state(): number[] {
    return Array.from(this.s);
  }

  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 24 random bits (exact in float32). */
  uniform(): number {
    return (this.nextUint32() >>> 8) / 2 ** 24;
  }

  /** An integer uniform in [0, n) for 1 ≤ n ≤ 2^32 (multiply-shift; bias below n/2^32). */
  below(n: number): number {
    return Math.floor((this.nextUint32() * n) / 2 ** 32);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** MurmurHash3's finaliser: a bijective avalanche on 32 bits. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Where the bundled, pretrained default weights live inside the package. */
export const DEFAULT_WEIGHTS_PATH = join(__dirname, '..', 'weights', 'mghf-dfe-default.safetensors');

let bundled: DfeWeights | undefined;

/**
 * The pretrained DFE weights shipped with the package (README, "Default weights"), loaded once.
 * These are what `mghfLoss` uses when `opts.weights` is not given.
 */
export function defaultWeights(): DfeWeights {
  if (bundled) return bundled;
  if (!existsSync(DEFAULT_WEIGHTS_PATH)) {
    throw new MghfError(
      'E_WEIGHTS_FILE',
      `The bundled default weights are missing (${DEFAULT_WEIGHTS_PATH}). Reinstall mghf, or pass ` +
        `opts.weights (loadWeights(path) or createWeights({ seed })).`,
      { argument: 'opts.weights' },
    );
  }
  bundled = loadWeightsSync(DEFAULT_WEIGHTS_PATH);
  return bundled;
}
