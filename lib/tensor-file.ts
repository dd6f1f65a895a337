// A generic float32 safetensors reader for files that are not DFE weights (the SR models of
// lib/srnet.ts). The header goes through the same strict parser as the weights reader
// (safetensors-header.ts); every offset is checked against the file before it is read.
import { promises as fsp } from 'node:fs';

import { MghfError } from './errors';
import { MAX_HEADER_BYTES, parseHeaderJson } from './safetensors-header';

export interface TensorFile {
  metadata: Record<string, string>;
  tensors: Map<string, { dims: number[]; data: Float32Array }>;
}

/** Reads `path` (what: how messages name it). Every failure is E_WEIGHTS_FILE naming the file and the rule broken. */
export async function readTensorFile(path: string, what: string): Promise<TensorFile> {
  const fail = (msg: string): never => {
    throw new MghfError('E_WEIGHTS_FILE', `Invalid ${what} ${path}: ${msg}`, { argument: path });
  };
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : String((err as Error).message);
    return fail(`cannot read it (${why})`);
  }
  if (bytes.length < 8) fail(`${bytes.length} bytes is too short for a safetensors file`);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > bytes.length) fail(`header length ${headerLength} does not fit the file (${bytes.length} bytes)`);
  let header: unknown;
  try {
    header = parseHeaderJson(bytes.subarray(8, 8 + headerLength));
  } catch (err) {
    return fail((err as Error).message);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) fail(`tensor '${name}' is not an object`);
    if (e.dtype !== 'F32') fail(`tensor '${name}' has dtype ${JSON.stringify(e.dtype)}, only F32 is read`);
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isInteger(d) && d >= 0 && d <= 2 ** 31)) {
      fail(`tensor '${name}' has a bad shape ${JSON.stringify(shape)}`);
    }
    const offsets = e.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
      fail(`tensor '${name}' has bad data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as number[];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end - begin !== 4 * count) fail(`tensor '${name}': data_offsets span ${end - begin} bytes, its shape needs ${4 * count}`);
    if (end > dataLength) fail(`tensor '${name}': data_offsets end ${end} is past the data (${dataLength} bytes)`);
    const data = new Float32Array(count);
    const view = new DataView(bytes.buffer, bytes.byteOffset + dataStart + begin, 4 * count);
    for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);
    const bad = data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) fail(`tensor '${name}' holds a non-finite value at index ${bad}`);
    tensors.set(name, { dims: shape as number[], data });
  }
  return { metadata, tensors };
}
