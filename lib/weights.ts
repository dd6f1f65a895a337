// DFE weights: the tensor list of docs/MATH.md §9, the safetensors reader/writer, and the seeded
// initialisation of docs/MATH.md §10.
//
// The reader treats every file as untrusted (§9): each size in the header is checked against the
// file before anything is allocated from it, and every violation is an E_WEIGHTS_FILE error that
// names the file and, where there is one, the tensor.

import { existsSync, promises as fsp, writeFileSync, renameSync, unlinkSync, openSync, fsyncSync, closeSync, fstatSync, readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MghfError, MghfErrorCode, describe, invalidParameterError } from './errors';
import { is, checkOptions } from './validate';
import { elementCount, errorText, genuineFloat32, typedLength } from './tensor';
import { HeaderSyntaxError, MAX_HEADER_BYTES, parseHeaderJson, parseHeaderOffThread } from './safetensors-header';

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
  /** Accept a tensor name that is not part of the DFE (e.g. `head.fc.weight`); see docs/MATH.md §10. */
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

const SUBNETS = ['phi', 'rho', 'eta'] as const;

/** Every tensor of docs/MATH.md §9 with its shape, in the order the writer stores them. */
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

/** Total number of parameters; 72,704 for the defaults (docs/MATH.md §2). */
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
 * caller's arrays: every field is read once (snapshotWeights), so what was checked is what is
 * used.
 */
export function checkWeights(w: unknown, argName = 'weights'): DfeWeights {
  if (!is.object(w)) throw invalidParameterError('E_WEIGHTS', argName, 'a weights object', w);
  const { arch: rawArch, tensors, metadata } = snapshotWeights(w, argName);
  const arch = checkArchitecture(rawArch, argName, 'E_WEIGHTS');
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
  const checked: Record<string, Float32Array> = {};
  for (const [name, dims] of shapes) {
    const data = tensors[name];
    const count = elementCount(dims);
    const where = `${argName}.tensors['${name}']`;
    // The real length: a subclass's `length` getter could claim any size.
    if (!is.float32Array(data) || typedLength(data) !== count) {
      throw invalidParameterError('E_WEIGHTS', where, `a Float32Array of ${count} elements (shape [${dims}])`, data);
    }
    const plain = genuineFloat32(data);
    const bad = firstNonFinite(plain);
    if (bad >= 0) {
      throw new MghfError('E_WEIGHTS', `Expected finite values for ${where} but received ${describe(plain[bad])} at index ${bad}`, {
        argument: `${argName}.tensors`,
      });
    }
    checked[name] = plain;
  }
  return { ...arch, tensors: checked, metadata: metadata as Record<string, string> };
}

/**
 * The fields of a user's weights object, each read once into plain objects; a getter (or Proxy
 * trap) that throws is an E_WEIGHTS error naming the field.
 */
function snapshotWeights(w: object, argName: string): { arch: Record<string, unknown>; tensors: Record<string, unknown>; metadata: Record<string, unknown> } {
  let field = argName;
  try {
    const v = w as Record<string, unknown>;
    const arch: Record<string, unknown> = {};
    for (const key of ['channels', 'blocks', 'expand']) {
      field = `${argName}.${key}`;
      arch[key] = v[key];
    }
    field = `${argName}.tensors`;
    const rawTensors = v.tensors;
    if (!is.plainObject(rawTensors)) throw invalidParameterError('E_WEIGHTS', field, 'an object of Float32Arrays', rawTensors);
    const tensors = ownEntries(rawTensors, (key) => (field = `${argName}.tensors['${key}']`));
    field = `${argName}.metadata`;
    const rawMetadata = v.metadata ?? {};
    if (!is.plainObject(rawMetadata)) throw invalidParameterError('E_WEIGHTS', field, 'an object of strings', rawMetadata);
    const metadata = ownEntries(rawMetadata, (key) => (field = `${argName}.metadata.${key}`));
    return { arch, tensors, metadata };
  } catch (err) {
    if (err instanceof MghfError) throw err;
    throw new MghfError('E_WEIGHTS', `Could not read ${field}: ${errorText(err)}`, { argument: argName, cause: err });
  }
}

/** A plain copy of an object's own enumerable string-keyed entries ('__proto__' kept as data). */
function ownEntries(o: Record<string, unknown>, reading: (key: string) => void): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(o)) {
    reading(key);
    Object.defineProperty(out, key, { value: o[key], enumerable: true, writable: true, configurable: true });
  }
  return out;
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
//
// In stages, so a file is read only as far as it has proven valid: the 8-byte header length is
// checked against the limit and the file size first (a hostile 100 MB file costs one 8-byte
// read), then the header is parsed strictly (safetensors-header.ts; on a worker thread for the
// async loaders), then every entry is checked against the data section's size, and only then are
// the tensors read, each straight into its own Float32Array.

const LITTLE_ENDIAN = endianness() === 'LE';
const DECIMAL = /^(0|[1-9][0-9]*)$/;

interface Span {
  name: string;
  shape: number[];
  begin: number;
  end: number;
}

type Fail = (message: string, tensor?: string) => never;

/** What a header says, checked: the architecture, the metadata and where each tensor lies. */
interface Layout {
  arch: DfeArchitecture;
  metadata: Record<string, string>;
  /** The DFE tensors the architecture requires, with their shapes. */
  expected: Map<string, number[]>;
  spans: Span[];
  /** Byte offset of the data section in the file. */
  dataStart: number;
}

interface CheckedParseOptions {
  allow?: (name: string) => boolean;
  format: string;
}

function fileFail(file: string): Fail {
  return (message, tensor) => {
    const subject = tensor === undefined ? '' : ` tensor '${tensor}'`;
    throw new MghfError('E_WEIGHTS_FILE', `Invalid weights file ${file}:${subject} ${message}`, { argument: file });
  };
}

function checkParseOptions(opts: unknown): CheckedParseOptions {
  const { allow, format = FORMAT } = checkOptions(opts, ['allow', 'format'] as const, 'parse options');
  if (allow !== undefined && typeof allow !== 'function') {
    throw invalidParameterError('E_OPTION', 'allow', 'a function (name) => boolean', allow);
  }
  if (!is.string(format)) throw invalidParameterError('E_OPTION', 'format', 'a string', format);
  return { allow: allow as CheckedParseOptions['allow'], format };
}

/** The header length of the 8-byte prefix: u64 LE, checked as a BigInt before it becomes a size. */
function headerLengthOf(prefix: Uint8Array, fileLength: number, fail: Fail): number {
  if (fileLength < 8) fail(`file is ${fileLength} bytes, shorter than the 8-byte header length`);
  const length64 = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length64 > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${length64} exceeds the ${MAX_HEADER_BYTES}-byte limit (this library's limit, far below the safetensors format's 100 MB: DFE headers are a few KB)`);
  }
  const headerLength = Number(length64);
  if (8 + headerLength > fileLength) fail(`header length ${headerLength} runs past the end of the file (${fileLength} bytes)`);
  return headerLength;
}

function parseHeaderInline(bytes: Uint8Array, fail: Fail): Record<string, unknown> {
  try {
    return parseHeaderJson(bytes) as Record<string, unknown>;
  } catch (err) {
    return fail((err as Error).message);
  }
}

async function parseHeaderAsync(bytes: Uint8Array, fail: Fail): Promise<Record<string, unknown>> {
  try {
    return (await parseHeaderOffThread(bytes)) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof HeaderSyntaxError) return fail(err.message);
    return fail(`header could not be parsed: ${(err as Error)?.message ?? err}`);
  }
}

/** The checks of docs/MATH.md §9 on a parsed header, against a file of `fileLength` bytes. */
function layoutOf(header: Record<string, unknown>, headerLength: number, fileLength: number, o: CheckedParseOptions, fail: Fail): Layout {
  // 3. Metadata → architecture.
  const metadata = parseMetadata(header.__metadata__, o.format, fail);
  const arch = metadataArchitecture(metadata, fail);
  const expected = new Map(weightShapes(arch));

  // 4. Tensor entries: names, dtype, shape, offsets against the data section.
  const dataStart = 8 + headerLength;
  const dataLength = fileLength - dataStart;
  const spans: Span[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const known = expected.has(name);
    // '__proto__' can never be a DFE tensor, and as a record key it would be unsafe.
    if (!known && (name === '__proto__' || !(o.allow?.(name) ?? false))) {
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
  return { arch, metadata, expected, spans, dataStart };
}

/** Step 7: the weights from each span's data (sizes already proven to fit the file). */
function assemble(layout: Layout, data: ReadonlyMap<string, Float32Array>, fail: Fail): LoadedWeights {
  const tensors: Record<string, Float32Array> = {};
  const extra: Record<string, ExtraTensor> = {};
  for (const s of layout.spans) {
    const values = data.get(s.name) as Float32Array;
    if (layout.expected.has(s.name)) {
      const bad = firstNonFinite(values);
      if (bad >= 0) fail(`holds a non-finite value (${describe(values[bad])}) at index ${bad}`, s.name);
      tensors[s.name] = values;
    } else {
      extra[s.name] = { shape: s.shape, data: values };
    }
  }
  const result: LoadedWeights = { ...layout.arch, tensors, metadata: layout.metadata };
  if (Object.keys(extra).length > 0) result.extra = extra;
  return result;
}

/** Parse and fully validate a safetensors DFE weights file held in memory (docs/MATH.md §9). */
export function parseSafetensors(buf: Buffer | Uint8Array, file: string, opts: ParseOptions = {}): LoadedWeights {
  const fail = fileFail(file);
  if (!(buf instanceof Uint8Array)) throw invalidParameterError('E_ARGUMENT', 'buffer', 'a Buffer or Uint8Array', buf);
  const o = checkParseOptions(opts);
  const headerLength = headerLengthOf(buf, buf.length, fail);
  const header = parseHeaderInline(buf.subarray(8, 8 + headerLength), fail);
  const layout = layoutOf(header, headerLength, buf.length, o, fail);
  const data = new Map<string, Float32Array>();
  for (const s of layout.spans) data.set(s.name, readFloat32LE(buf, layout.dataStart + s.begin, (s.end - s.begin) / 4));
  return assemble(layout, data, fail);
}

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

function metadataArchitecture(metadata: Record<string, string>, fail: Fail): DfeArchitecture {
  const arch = { channels: Number(metadata.channels), blocks: Number(metadata.blocks), expand: Number(metadata.expand) };
  try {
    return checkArchitecture(arch, '__metadata__', 'E_WEIGHTS_FILE');
  } catch (err) {
    return fail((err as Error).message);
  }
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
  // Copy bytes into the new array's own buffer: no alignment requirement on the source.
  new Uint8Array(out.buffer).set(buf.subarray(offset, offset + 4 * count));
  return fromLittleEndian(out);
}

/** `a` with its little-endian bytes read as host floats (a no-op on little-endian hosts). */
function fromLittleEndian(a: Float32Array): Float32Array {
  if (LITTLE_ENDIAN) return a;
  const view = new DataView(a.buffer, a.byteOffset, a.byteLength);
  for (let i = 0; i < a.length; i++) a[i] = view.getFloat32(4 * i, true);
  return a;
}

// A file that shrinks while it is read (another process rewriting it) must not pass as zeros.
const SHRUNK = 'the file became shorter while it was read';

function readExactSync(fd: number, target: Uint8Array, position: number): void {
  for (let done = 0; done < target.length; ) {
    const n = readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) throw new Error(SHRUNK);
    done += n;
  }
}

async function readExact(handle: FileHandle, target: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < target.length; ) {
    const { bytesRead } = await handle.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) throw new Error(SHRUNK);
    done += bytesRead;
  }
}

/** Synchronous reader of a safetensors file (weights or, with `opts`, a checkpoint), read in the stages above. */
function readSafetensorsSync(path: string, o: CheckedParseOptions, what: string): LoadedWeights {
  const fail = fileFail(path);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw readError(path, err, what);
  }
  try {
    const size = fstatSync(fd).size;
    const prefix = new Uint8Array(8);
    if (size >= 8) readExactSync(fd, prefix, 0);
    const headerLength = headerLengthOf(prefix, size, fail);
    const headerBytes = new Uint8Array(headerLength);
    readExactSync(fd, headerBytes, 8);
    const layout = layoutOf(parseHeaderInline(headerBytes, fail), headerLength, size, o, fail);
    const data = new Map<string, Float32Array>();
    for (const s of layout.spans) {
      const values = new Float32Array((s.end - s.begin) / 4);
      readExactSync(fd, new Uint8Array(values.buffer), layout.dataStart + s.begin);
      data.set(s.name, fromLittleEndian(values));
    }
    return assemble(layout, data, fail);
  } catch (err) {
    // An I/O error, or an allocation that failed for a huge (but consistent) file.
    if (err instanceof MghfError) throw err;
    throw readError(path, err, what);
  } finally {
    closeSync(fd);
  }
}

/** `readSafetensorsSync` with non-blocking reads and the header parsed on a worker thread. */
export async function readSafetensorsFile(path: string, opts: ParseOptions, what: string): Promise<LoadedWeights> {
  const o = checkParseOptions(opts);
  const fail = fileFail(path);
  let handle: FileHandle;
  try {
    handle = await fsp.open(path, 'r');
  } catch (err) {
    throw readError(path, err, what);
  }
  try {
    const size = (await handle.stat()).size;
    const prefix = new Uint8Array(8);
    if (size >= 8) await readExact(handle, prefix, 0);
    const headerLength = headerLengthOf(prefix, size, fail);
    const headerBytes = new Uint8Array(headerLength);
    await readExact(handle, headerBytes, 8);
    const layout = layoutOf(await parseHeaderAsync(headerBytes, fail), headerLength, size, o, fail);
    const data = new Map<string, Float32Array>();
    for (const s of layout.spans) {
      const values = new Float32Array((s.end - s.begin) / 4);
      await readExact(handle, new Uint8Array(values.buffer), layout.dataStart + s.begin);
      data.set(s.name, fromLittleEndian(values));
    }
    return assemble(layout, data, fail);
  } catch (err) {
    if (err instanceof MghfError) throw err;
    throw readError(path, err, what);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Read and validate a DFE weights file (docs/MATH.md §9); the header is parsed off the event loop. */
export async function loadWeights(path: string, opts: ParseOptions = {}): Promise<LoadedWeights> {
  checkPath(path);
  return readSafetensorsFile(path, opts, 'weights file');
}

/** Synchronous `loadWeights`. */
export function loadWeightsSync(path: string, opts: ParseOptions = {}): LoadedWeights {
  checkPath(path);
  return readSafetensorsSync(path, checkParseOptions(opts), 'weights file');
}

function checkPath(path: unknown): void {
  if (!is.string(path) || path.length === 0) throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
}

function readError(path: string, err: unknown, what = 'weights file'): MghfError {
  return new MghfError('E_WEIGHTS_FILE', `Cannot read ${what} ${path}: ${(err as Error)?.message ?? err}`, {
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
  if (headerLength > MAX_HEADER_BYTES) {
    // Never write a file this library would refuse to read (a checkpoint with very many class names).
    throw new MghfError(
      'E_LIMIT',
      `The safetensors header would be ${headerLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit the reader accepts ` +
        `(${entries.length} tensors, ${Object.keys(metadata).length} metadata keys); shorten the metadata (class names)`,
    );
  }
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
// Initialisation (docs/MATH.md §10)

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
  checkAllocation(parameterCount(arch), `createWeights(${archText(arch)})`);
  const random = SeededRandom.fromSeed(seed);
  const tensors: Record<string, Float32Array> = {};
  try {
    for (const [name, dims] of weightShapes(arch)) {
      tensors[name] = uniformTensor(random, elementCount(dims), fanIn(name, dims, arch));
    }
  } catch (err) {
    throw allocationError(err, parameterCount(arch), `createWeights(${archText(arch)})`);
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

/**
 * Most parameters createWeights / createHeadWeights allocate: 2^28 (1 GiB of float32). The
 * default DFE has 72,704; the widest one the architecture bounds allow with the default expand
 * (N = 4096) about 67 million. Checked before allocating, so an absurd request fails at once
 * instead of after seconds of filling memory.
 */
export const MAX_CREATE_PARAMETERS = 2 ** 28;

/** Throws E_LIMIT when `count` float32 parameters exceed MAX_CREATE_PARAMETERS. */
export function checkAllocation(count: number, what: string): void {
  if (count > MAX_CREATE_PARAMETERS) {
    throw new MghfError(
      'E_LIMIT',
      `${what} would allocate ${count.toLocaleString('en-US')} parameters (${(count * 4 / 1e9).toFixed(1)} GB of float32), ` +
        `over the limit of 2^28 = ${MAX_CREATE_PARAMETERS.toLocaleString('en-US')} (1 GiB); lower channels, blocks or expand ` +
        `(the default DFE has 72,704)`,
    );
  }
}

/** An allocation failure (V8's RangeError) as a typed error; any other error as it is. */
export function allocationError(err: unknown, count: number, what: string): unknown {
  if (!(err instanceof RangeError)) return err;
  return new MghfError('E_LIMIT', `${what}: out of memory allocating ${(count * 4 / 1e9).toFixed(2)} GB of parameters (${err.message})`, {
    cause: err,
  });
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
 * driven by it can resume exactly (docs/MATH.md §10 pretraining).
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
