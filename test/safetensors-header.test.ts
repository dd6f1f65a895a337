// The strict safetensors header parser (lib/safetensors-header.ts) and the staged file reader in
// lib/weights.ts: what JSON.parse let through (duplicate keys, a BOM, leading whitespace, deep
// nesting, millions of keys), a hostile header length rejected after an 8-byte read, and the
// worker thread of the async loaders.

import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MAX_HEADER_BYTES, parseHeaderJson, parseHeaderOffThread } from '../lib/safetensors-header';
import { createWeights, loadWeights, loadWeightsSync, parseSafetensors, serializeSafetensors } from '../lib/weights';
import { checkpointShapes, createHeadWeights, loadCheckpoint, serializeCheckpoint, type Checkpoint } from '../lib/checkpoint';

const dir = mkdtempSync(join(tmpdir(), 'mghf-header-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const good = serializeSafetensors(createWeights({ seed: 3, channels: 4, blocks: 1, expand: 2 }));
const headerLength = Number(good.readBigUInt64LE(0));
const headerText = good.subarray(8, 8 + headerLength).toString('utf8').trimEnd();
const data = good.subarray(8 + headerLength);

/** A file with `text` as its header (space-padded to 8 bytes, as writers do) and `data` after it. */
function fileWith(text: string | Buffer, body: Buffer = data): Buffer {
  const json = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([len, padded, body]);
}

function rejects(t0: Test, buf: Buffer, pattern: RegExp, what: string): void {
  t0.throws(() => parseSafetensors(buf, 'bad.safetensors'), { name: 'MghfError', code: 'E_WEIGHTS_FILE', message: pattern }, what);
  t0.throws(() => parseSafetensors(buf, 'bad.safetensors'), { message: /bad\.safetensors/ }, `${what}: names the file`);
}

t.test('valid headers parse exactly as JSON.parse parses them', async (t) => {
  t.same(parseHeaderJson(Buffer.from(headerText)), JSON.parse(headerText), 'a written header');
  const pretty = JSON.stringify(JSON.parse(headerText), null, 2);
  t.same(parseHeaderJson(Buffer.from(pretty)), JSON.parse(pretty), 'indented (whitespace between tokens)');
  const tricky = '{"a":"\\u00e9\\n\\t\\"\\\\\\/","b":[-0.5e+3,0,1E2,true,false,null],"c":{},"d":[],"\\ud83d\\ude00":"😀"}';
  t.same(parseHeaderJson(Buffer.from(tricky)), JSON.parse(tricky), 'escapes, numbers, literals, a surrogate pair');
  const proto = parseHeaderJson(Buffer.from('{"__proto__":{"x":1}}')) as Record<string, unknown>;
  t.ok(Object.prototype.hasOwnProperty.call(proto, '__proto__'), "'__proto__' stays an own key");
  t.equal(Object.getPrototypeOf(proto), Object.prototype, 'and does not set the prototype');
  t.same(parseHeaderJson(Buffer.from(headerText + '        ')), JSON.parse(headerText), 'trailing space padding');
  t.same(parseSafetensors(fileWith(headerText), 'ok.safetensors').channels, 4, 'a file with the header re-padded loads');
});

t.test('duplicate keys are rejected at every level, naming the key', async (t) => {
  // The file: a first __metadata__ saying format "evil" and a first stem.bias of F16.
  const header = JSON.parse(headerText);
  const body = headerText.slice(1);
  const evilMetadata = `{"__metadata__":{"format":"evil"},${body}`;
  rejects(t, fileWith(evilMetadata), /duplicate key "__metadata__" in the header/, 'a second __metadata__');
  const f16 = `{"stem.bias":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},${body}`;
  rejects(t, fileWith(f16), /duplicate key "stem\.bias" in the header/, 'a second stem.bias');
  const inMetadata = headerText.replace('"format":"mghf-dfe"', '"format":"evil","format":"mghf-dfe"');
  rejects(t, fileWith(inMetadata), /duplicate key "format" in "__metadata__"/, 'a key twice inside __metadata__');
  const inEntry = headerText.replace('"dtype":"F32"', '"dtype":"F16","dtype":"F32"');
  rejects(t, fileWith(inEntry), /duplicate key "dtype"/, 'a key twice inside a tensor entry');
  t.ok(header, 'the unmodified header is fine');
});

t.test('the header must start with "{": no BOM, no leading whitespace', async (t) => {
  const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(headerText)]);
  rejects(t, fileWith(bom), /must start with '\{'.*byte-order mark/, 'a UTF-8 BOM');
  rejects(t, fileWith(' ' + headerText), /must start with '\{'/, 'a leading space');
  rejects(t, fileWith('\n' + headerText), /must start with '\{'/, 'a leading newline');
  rejects(t, fileWith('[1,2]'), /not a JSON object/, 'an array');
  rejects(t, fileWith(headerText + '\n'), /only space padding may follow/, 'a newline after the object');
  rejects(t, fileWith(headerText + ' {}'), /only space padding may follow/, 'a second value');
  rejects(t, fileWith(headerText.slice(0, -1)), /not valid JSON/, 'an unterminated object');
});

t.test('nesting, key counts, key lengths and numbers are limited', async (t) => {
  rejects(t, fileWith(`{"a":${'['.repeat(20)}${']'.repeat(20)}}`), /nesting deeper than 8 levels/, '20-deep arrays');
  rejects(t, fileWith(`{"a":${'{"b":'.repeat(10)}1${'}'.repeat(10)}}`), /nesting deeper than 8 levels/, '10-deep objects');
  t.same(parseHeaderJson(Buffer.from(`{"a":${'['.repeat(7)}${']'.repeat(7)}}`)), { a: [[[[[[[]]]]]]] }, 'depth 8 is allowed');
  // 70,000 one-character-ish keys fit well inside 1 MB.
  const many = `{${Array.from({ length: 70_000 }, (_, i) => `"${i.toString(36)}":0`).join(',')}}`;
  t.ok(many.length < MAX_HEADER_BYTES);
  rejects(t, fileWith(many), /more than 65536 keys/, '70,000 keys');
  rejects(t, fileWith(`{"a":[${Array(100_001).fill('0').join(',')}]}`), /more than 100000 values/, '100,001 numbers');
  rejects(t, fileWith(`{"${'k'.repeat(2000)}":1}`), /key of 2000 characters/, 'a 2,000-character key');
  rejects(t, fileWith(`{"a":${'1'.repeat(100)}}`), /number literal of 100 characters/, 'a 100-digit number');
  rejects(t, fileWith('{"a":1e400}'), /outside the double range/, '1e400');
  rejects(t, fileWith('{"a":01}'), /not valid JSON/, 'a leading zero');
  rejects(t, fileWith('{"a":"\\ud800"}'), /lone UTF-16 surrogate/, 'a lone surrogate escape');
  rejects(t, fileWith('{"a":"x\ny"}'), /control character/, 'a raw newline in a string');
  rejects(t, fileWith(Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d])), /not valid UTF-8/, 'invalid UTF-8');
  // Huge numbers that do parse are still caught by the entry checks.
  rejects(t, fileWith(headerText.replace('"shape":[4]', '"shape":[1e300]')), /'stem\.bias'.*shape/, 'a 1e300 dim');
});

t.test('a header over 1 MB is rejected from its length alone', async (t) => {
  const over = Buffer.alloc(16);
  over.writeBigUInt64LE(BigInt(MAX_HEADER_BYTES + 1));
  rejects(t, over, /header length 1000001 exceeds the 1000000-byte limit/, '1 MB + 1');
  // Exactly at the limit is allowed (and then judged by its content).
  const atLimit = Buffer.concat([Buffer.from(headerText), Buffer.alloc(MAX_HEADER_BYTES - headerText.length, 0x20)]);
  const file = Buffer.concat([Buffer.alloc(8), atLimit, data]);
  file.writeBigUInt64LE(BigInt(MAX_HEADER_BYTES));
  t.equal(parseSafetensors(file, 'padded.safetensors').channels, 4, 'a 1 MB header of space padding loads');
});

t.test('a hostile 100 MB file is rejected after reading 8 bytes', async (t) => {
  // The issue's attack: a 100 MB header of nested arrays, within SPEC §9's 100 MB ceiling.
  const path = join(dir, 'hostile.safetensors');
  const size = 100_000_000;
  const fd = openSync(path, 'w');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(size - 8));
  writeSync(fd, prefix, 0, 8, 0);
  writeSync(fd, Buffer.from('{"a":' + '['.repeat(1 << 16)), 0, undefined, 8);
  ftruncateSync(fd, size);
  closeSync(fd);

  // Count the bytes the sync loader reads, through the fs module it uses.
  let bytesRead = 0;
  const { loadWeightsSync: countedLoad } = t.mockRequire<typeof import('../lib/weights')>('../lib/weights', {
    'node:fs': {
      ...fs,
      readSync: (...args: Parameters<typeof fs.readSync>) => {
        const n = (fs.readSync as (...a: unknown[]) => number)(...args);
        bytesRead += n;
        return n;
      },
    },
  });
  let t0 = process.hrtime.bigint();
  t.throws(() => countedLoad(path), { code: 'E_WEIGHTS_FILE', message: /hostile\.safetensors.*exceeds the 1000000-byte limit/ });
  const syncMs = Number(process.hrtime.bigint() - t0) / 1e6;
  t.equal(bytesRead, 8, 'only the 8-byte header length was read');
  t.ok(syncMs < 1000, `loadWeightsSync rejected it in ${syncMs.toFixed(2)} ms`);

  t0 = process.hrtime.bigint();
  await t.rejects(loadWeights(path), { code: 'E_WEIGHTS_FILE', message: /exceeds the 1000000-byte limit/ });
  const asyncMs = Number(process.hrtime.bigint() - t0) / 1e6;
  t.ok(asyncMs < 1000, `loadWeights rejected it in ${asyncMs.toFixed(2)} ms`);
  t.comment(`hostile 100 MB file: sync ${syncMs.toFixed(2)} ms, async ${asyncMs.toFixed(2)} ms`);

  // A valid header followed by 100 MB the header does not account for: rejected before the data is read.
  const padded = join(dir, 'padded.safetensors');
  writeFileSync(padded, good);
  const pfd = openSync(padded, 'r+');
  ftruncateSync(pfd, size);
  closeSync(pfd);
  bytesRead = 0;
  t.throws(() => countedLoad(padded), { code: 'E_WEIGHTS_FILE', message: /unaccounted bytes/ });
  t.equal(bytesRead, 8 + headerLength, 'the header was read, the data section was not');
});

t.test('the async loaders parse on a worker thread and report the same errors', async (t) => {
  const path = join(dir, 'dup.safetensors');
  writeFileSync(path, fileWith(`{"__metadata__":{"format":"evil"},${headerText.slice(1)}`));
  await t.rejects(loadWeights(path), { code: 'E_WEIGHTS_FILE', message: /dup\.safetensors: header has the duplicate key "__metadata__"/ });
  t.throws(() => loadWeightsSync(path), { code: 'E_WEIGHTS_FILE', message: /duplicate key "__metadata__"/ });

  // Many loads at once share the worker and each gets its own answer.
  const okPath = join(dir, 'ok.safetensors');
  writeFileSync(okPath, good);
  const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => loadWeights(i % 2 ? path : okPath)));
  t.same(results.map((r) => r.status), Array.from({ length: 16 }, (_, i) => (i % 2 ? 'rejected' : 'fulfilled')));

  await t.rejects(parseHeaderOffThread(Buffer.from('{"a":1,"a":2}')), { message: /duplicate key "a"/ });
  t.same(await parseHeaderOffThread(Buffer.from(headerText)), JSON.parse(headerText));

  // The checkpoint loader goes the same way.
  const arch = { channels: 4, blocks: 1, expand: 2 };
  const weights = createWeights({ seed: 1, ...arch });
  const head = createHeadWeights({ seed: 1, channels: 4, classes: 2 });
  const tensors: Record<string, Float32Array> = { ...weights.tensors, ...head };
  for (const [name, dims] of checkpointShapes(arch, 2)) tensors[name] ??= new Float32Array(dims.reduce((a, b) => a * b, 1));
  const ckpt: Checkpoint = {
    ...arch, classes: 2, classNames: ['a', 'b'], tensors, step: 1, epoch: 0, batchInEpoch: 1, rng: [1, 2, 3, 4],
    lr0: 5e-4, decayEvery: 5000, decayRate: 0.95, data: 'd', crop: 8, batch: 2, seed: 0, trainImages: 4, metadata: {},
  };
  const ckptBytes = serializeCheckpoint(ckpt);
  const ckptPath = join(dir, 'ok.ckpt.safetensors');
  writeFileSync(ckptPath, ckptBytes);
  t.equal((await loadCheckpoint(ckptPath)).step, 1, 'a valid checkpoint loads');
  const n = Number(ckptBytes.readBigUInt64LE(0));
  const ckptHeader = ckptBytes.subarray(8, 8 + n).toString('utf8').trimEnd();
  const dupCkpt = join(dir, 'dup.ckpt.safetensors');
  writeFileSync(dupCkpt, fileWith(ckptHeader.replace('"step":"1"', '"step":"9","step":"1"'), ckptBytes.subarray(8 + n)));
  await t.rejects(loadCheckpoint(dupCkpt), { code: 'E_WEIGHTS_FILE', message: /duplicate key "step" in "__metadata__"/ });
});

const CLI_INDEX = resolve(__dirname, '..', 'dist', 'index.js');
t.test('a process whose loads are done exits; a pending load keeps it alive until it resolves', { skip: existsSync(CLI_INDEX) ? false : 'dist/ not built' }, async (t) => {
  const path = join(dir, 'exit.safetensors');
  writeFileSync(path, good);
  const script = `require(${JSON.stringify(CLI_INDEX)}).loadWeights(${JSON.stringify(path)}).then((w) => console.log('loaded', w.channels))`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
  t.equal(r.stdout.trim(), 'loaded 4', 'the pending load finished before the process exited');
  t.ok(Date.now() - t0 < 10_000, `and it exited by itself (${Date.now() - t0} ms)`);
  t.ok(readFileSync(path).equals(good), 'the file is untouched');
});
