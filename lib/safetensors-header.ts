// The safetensors header's JSON, parsed strictly and cheaply (docs/MATH.md §9: the file is untrusted).
//
// JSON.parse is the wrong tool for an untrusted header: it keeps the last of two duplicate keys
// (a file can then say one thing to this reader and another to a reader that keeps the first),
// accepts a BOM and leading whitespace, and spends seconds and gigabytes on a header of millions
// of keys or deeply nested arrays. This parser reads only what a safetensors header is (an object
// of objects of short arrays and strings, depth 3) with generous limits, and says which rule a
// header broke.
//
// `parseHeaderJson` is one self-contained function (no imports, no outside names) so that the
// async loaders can run the very same source on a worker thread (`parseHeaderOffThread`), whether
// this module was compiled by tsc (dist/) or is run by a TypeScript loader (the tests).

import { Worker } from 'node:worker_threads';

/**
 * Largest header accepted: 1 MB. The safetensors format allows up to 100 MB; this library is deliberately
 * stricter. The default weights' header is about 2 KB, a checkpoint of the largest DFE the
 * architecture bounds allow (64 blocks, with the head and Adam's moments) about 250 KB.
 */
export const MAX_HEADER_BYTES = 1_000_000;

/** The structural limits `parseHeaderJson` enforces (documented in the README). */
export const HEADER_LIMITS = Object.freeze({
  /** Nesting of objects and arrays: the format needs 3 (header → entry → shape). */
  depth: 8,
  /** Keys in the whole header: a 64-block checkpoint has about 9,000. */
  keys: 65_536,
  /** Values (objects, arrays, strings, numbers, literals) in the whole header: that checkpoint has about 22,000. */
  values: 100_000,
  /** Characters in one key: tensor names are a few dozen. */
  keyLength: 1_024,
  /** Characters in one number: shapes and offsets are integers of at most 16 digits. */
  numberLength: 64,
});

/**
 * The JSON value of a safetensors header given as its raw bytes. Throws a plain Error whose
 * message says what is wrong (the caller names the file): not starting with '{' (no BOM, no
 * leading whitespace), invalid UTF-8, invalid JSON, a duplicate key at any level (named), nesting
 * deeper than 8, more than 65,536 keys or 100,000 values, a key over 1,024 characters, a number literal over 64
 * characters or outside the double range, a lone UTF-16 surrogate escape, or anything but spaces
 * after the closing brace (writers pad the header with spaces).
 */
export function parseHeaderJson(bytes: Uint8Array): unknown {
  // Repeated here rather than read from HEADER_LIMITS: this function must stand alone (see above).
  const MAX_DEPTH = 8;
  const MAX_KEYS = 65536;
  const MAX_VALUES = 100000;
  const MAX_KEY_LENGTH = 1024;
  const MAX_NUMBER_LENGTH = 64;

  if (bytes.length === 0) throw new Error('header is empty');
  if (bytes[0] !== 0x7b) {
    const b = bytes[0];
    const shown = b === 0xef ? 'a byte-order mark' : b >= 0x21 && b < 0x7f ? `'${String.fromCharCode(b)}'` : `byte 0x${b.toString(16).padStart(2, '0')}`;
    throw new Error(`header is not a JSON object: it must start with '{' (no byte-order mark, no leading whitespace) but starts with ${shown}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new Error('header is not valid UTF-8');
  }

  let pos = 0;
  let keys = 0;
  let values = 0;
  const at = (): string => `at character ${pos}`;
  const fail = (what: string): never => {
    throw new Error(`header is not valid JSON: ${what}`);
  };
  const skipSpace = (): void => {
    for (;;) {
      const c = text.charCodeAt(pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) pos++;
      else return;
    }
  };
  const shortText = (s: string): string => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

  const parseString = (): string => {
    // At the opening quote.
    pos++;
    let out = '';
    let start = pos;
    for (;;) {
      if (pos >= text.length) return fail(`unterminated string ${at()}`);
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(start, pos);
        pos++;
        return out;
      }
      if (c < 0x20) return fail(`control character 0x${c.toString(16).padStart(2, '0')} inside a string ${at()}`);
      if (c !== 0x5c) {
        pos++;
        continue;
      }
      out += text.slice(start, pos);
      const e = text.charCodeAt(pos + 1);
      pos += 2;
      switch (e) {
        case 0x22: out += '"'; break;
        case 0x5c: out += '\\'; break;
        case 0x2f: out += '/'; break;
        case 0x62: out += '\b'; break;
        case 0x66: out += '\f'; break;
        case 0x6e: out += '\n'; break;
        case 0x72: out += '\r'; break;
        case 0x74: out += '\t'; break;
        case 0x75: {
          const unit = (p: number): number => {
            const hex = text.slice(p, p + 4);
            return /^[0-9a-fA-F]{4}$/.test(hex) ? parseInt(hex, 16) : -1;
          };
          const u = unit(pos);
          if (u < 0) return fail(`bad \\u escape ${at()}`);
          pos += 4;
          if (u >= 0xd800 && u <= 0xdbff) {
            // A high surrogate must be followed by an escaped low one: a lone surrogate has no UTF-8 form.
            const low = text.charCodeAt(pos) === 0x5c && text.charCodeAt(pos + 1) === 0x75 ? unit(pos + 2) : -1;
            if (low < 0xdc00 || low > 0xdfff) return fail(`lone UTF-16 surrogate \\u${u.toString(16)} ${at()}`);
            out += String.fromCharCode(u, low);
            pos += 6;
          } else if (u >= 0xdc00 && u <= 0xdfff) {
            return fail(`lone UTF-16 surrogate \\u${u.toString(16)} ${at()}`);
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          return fail(`bad escape ${at()}`);
      }
      start = pos;
    }
  };

  const parseNumber = (): number => {
    const start = pos;
    if (text.charCodeAt(pos) === 0x2d) pos++;
    const digits = (): number => {
      const s = pos;
      while (pos < text.length && text.charCodeAt(pos) >= 0x30 && text.charCodeAt(pos) <= 0x39) pos++;
      return pos - s;
    };
    if (text.charCodeAt(pos) === 0x30) pos++;
    else if (digits() === 0) return fail(`bad number ${at()}`);
    if (text.charCodeAt(pos) === 0x2e) {
      pos++;
      if (digits() === 0) return fail(`bad number ${at()}`);
    }
    const e = text.charCodeAt(pos);
    if (e === 0x65 || e === 0x45) {
      pos++;
      const sign = text.charCodeAt(pos);
      if (sign === 0x2b || sign === 0x2d) pos++;
      if (digits() === 0) return fail(`bad number ${at()}`);
    }
    if (pos - start > MAX_NUMBER_LENGTH) return fail(`number literal of ${pos - start} characters (limit ${MAX_NUMBER_LENGTH}) at character ${start}`);
    const value = Number(text.slice(start, pos));
    if (!Number.isFinite(value)) return fail(`number ${text.slice(start, pos)} is outside the double range at character ${start}`);
    return value;
  };

  const parseLiteral = (word: string, value: boolean | null): boolean | null => {
    if (text.startsWith(word, pos)) {
      pos += word.length;
      return value;
    }
    return fail(`unexpected ${shortText(text.slice(pos, pos + 8))} ${at()}`);
  };

  // `where` names the enclosing object for a duplicate-key message ('the header', '"__metadata__"', …).
  const parseValue = (depth: number, where: string): unknown => {
    if (++values > MAX_VALUES) return fail(`more than ${MAX_VALUES} values`);
    skipSpace();
    const c = text.charCodeAt(pos);
    if (c === 0x7b || c === 0x5b) {
      if (depth >= MAX_DEPTH) return fail(`nesting deeper than ${MAX_DEPTH} levels ${at()}`);
      return c === 0x7b ? parseObject(depth + 1, where) : parseArray(depth + 1, where);
    }
    if (c === 0x22) return parseString();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return parseNumber();
    if (c === 0x74) return parseLiteral('true', true);
    if (c === 0x66) return parseLiteral('false', false);
    if (c === 0x6e) return parseLiteral('null', null);
    if (pos >= text.length) return fail('unexpected end of the header');
    return fail(`unexpected ${shortText(text[pos])} ${at()}`);
  };

  const parseObject = (depth: number, where: string): Record<string, unknown> => {
    pos++; // '{'
    const obj: Record<string, unknown> = {};
    skipSpace();
    if (text.charCodeAt(pos) === 0x7d) {
      pos++;
      return obj;
    }
    for (;;) {
      skipSpace();
      if (text.charCodeAt(pos) !== 0x22) return fail(`expected a key string ${at()}`);
      const keyAt = pos;
      const key = parseString();
      if (key.length > MAX_KEY_LENGTH) return fail(`key of ${key.length} characters (limit ${MAX_KEY_LENGTH}) at character ${keyAt}`);
      if (++keys > MAX_KEYS) return fail(`more than ${MAX_KEYS} keys`);
      // A duplicate is an error, not "last one wins": two readers must never see two different files.
      if (Object.prototype.hasOwnProperty.call(obj, key)) {
        throw new Error(`header has the duplicate key ${shortText(key)} in ${where} (at character ${keyAt})`);
      }
      skipSpace();
      if (text.charCodeAt(pos) !== 0x3a) return fail(`expected ':' ${at()}`);
      pos++;
      const value = parseValue(depth, shortText(key));
      // '__proto__' as a plain assignment would set the prototype; keep it an own key, as JSON.parse does.
      if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
      else obj[key] = value;
      skipSpace();
      const c = text.charCodeAt(pos);
      pos++;
      if (c === 0x7d) return obj;
      if (c !== 0x2c) {
        pos--;
        return fail(`expected ',' or '}' ${at()}`);
      }
    }
  };

  const parseArray = (depth: number, where: string): unknown[] => {
    pos++; // '['
    const arr: unknown[] = [];
    skipSpace();
    if (text.charCodeAt(pos) === 0x5d) {
      pos++;
      return arr;
    }
    for (;;) {
      arr.push(parseValue(depth, `an array in ${where}`));
      skipSpace();
      const c = text.charCodeAt(pos);
      pos++;
      if (c === 0x5d) return arr;
      if (c !== 0x2c) {
        pos--;
        return fail(`expected ',' or ']' ${at()}`);
      }
    }
  };

  const header = parseObject(1, 'the header');
  // Only the space padding writers add (docs/MATH.md §9) may follow the object.
  while (pos < text.length && text.charCodeAt(pos) === 0x20) pos++;
  if (pos < text.length) {
    fail(`unexpected ${shortText(text.slice(pos, pos + 8))} after the header object ${at()} (only space padding may follow)`);
  }
  return header;
}

// ---------------------------------------------------------------------------------------------
// The same parser on a worker thread, for the async loaders: a hostile header within the limits
// still costs milliseconds of parsing, and that time belongs off the event loop.

const WORKER_SOURCE = `
'use strict';
const { parentPort } = require('node:worker_threads');
const parseHeaderJson = (${parseHeaderJson.toString()});
parentPort.on('message', ({ id, bytes }) => {
  let reply;
  try {
    reply = { id, value: parseHeaderJson(bytes) };
  } catch (err) {
    reply = { id, error: String((err && err.message) || err) };
  }
  parentPort.postMessage(reply);
});
`;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

let worker: Worker | undefined;
let nextId = 0;
const pending = new Map<number, Pending>();

/** The header's message when the parser rejected it; callers turn it into E_WEIGHTS_FILE. */
export class HeaderSyntaxError extends Error {}

// One worker for the process, created on first use. It holds the event loop open only while a
// parse is pending (ref/unref), so a process with nothing left to load exits as usual.
function headerWorker(): Worker {
  if (worker !== undefined) return worker;
  const w = new Worker(WORKER_SOURCE, {
    eval: true,
    // Not the parent's flags: a TypeScript loader or --inspect has no business in this worker.
    execArgv: [],
    // A 1 MB header needs a few MB; a bug that needed more must not take the process with it.
    resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
    stdout: false,
    stderr: false,
  });
  w.unref();
  w.on('message', (m: { id: number; value?: unknown; error?: string }) => {
    const p = pending.get(m.id);
    if (p === undefined) return;
    pending.delete(m.id);
    if (pending.size === 0) w.unref();
    if (m.error !== undefined) p.reject(new HeaderSyntaxError(m.error));
    else p.resolve(m.value);
  });
  const stopped = (why: string) => {
    if (worker === w) worker = undefined;
    const all = [...pending.values()];
    pending.clear();
    for (const p of all) p.reject(new Error(`the header parser thread stopped (${why})`));
  };
  w.on('error', (err) => stopped(err.message));
  w.on('exit', (code) => stopped(`exit code ${code}`));
  worker = w;
  return w;
}

/**
 * `parseHeaderJson(bytes)` on the shared worker thread. Rejects with a HeaderSyntaxError when the
 * header is invalid, or a plain Error when the worker could not do the job.
 */
export function parseHeaderOffThread(bytes: Uint8Array): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let w: Worker;
    try {
      w = headerWorker();
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    w.ref();
    // A copy (at most 1 MB): the caller's buffer stays usable and nothing is detached.
    w.postMessage({ id, bytes: Uint8Array.from(bytes) });
  });
}
