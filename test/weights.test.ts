import t, { Test } from 'tap';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MghfError } from '../lib/errors';
import {
  DfeWeights,
  checkWeights,
  createWeights,
  loadWeights,
  loadWeightsSync,
  parameterCount,
  parseSafetensors,
  saveWeights,
  saveWeightsSync,
  serializeSafetensors,
  weightShapes,
} from '../lib/weights';

const FIXTURE = join(__dirname, 'fixtures', 'n-default', 'weights.safetensors');

// Small architecture so malformed-file cases stay cheap.
const small = (): DfeWeights => createWeights({ seed: 7, channels: 4, blocks: 2, expand: 2 });

function bytesOf(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function sameTensors(t0: Test, a: DfeWeights, b: DfeWeights): void {
  t0.same(Object.keys(b.tensors).sort(), Object.keys(a.tensors).sort());
  for (const name of Object.keys(a.tensors)) {
    t0.ok(bytesOf(a.tensors[name]).equals(bytesOf(b.tensors[name])), `${name} bit-identical`);
  }
}

/** Split a serialized file into its JSON header and data section. */
function split(buf: Buffer): { header: Record<string, any>; data: Buffer } {
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), data: buf.subarray(8 + n) };
}

/** Reassemble a file from an edited header and a data section (no padding). */
function join2(header: unknown, data: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

function editHeader(buf: Buffer, edit: (h: Record<string, any>) => void, data?: Buffer): Buffer {
  const parts = split(buf);
  edit(parts.header);
  return join2(parts.header, data ?? parts.data);
}

function rejectsFile(t0: Test, buf: Buffer, needle: string | RegExp, what: string): void {
  try {
    parseSafetensors(buf, 'bad.safetensors');
    t0.fail(`${what}: expected an error`);
  } catch (err) {
    t0.type(err, MghfError, what);
    t0.equal((err as MghfError).code, 'E_WEIGHTS_FILE', `${what}: code`);
    t0.match((err as Error).message, 'bad.safetensors', `${what}: names the file`);
    t0.match((err as Error).message, needle, `${what}: message`);
  }
}

t.test('weightShapes and parameter count (SPEC §2, §9)', async (t) => {
  t.equal(parameterCount({ channels: 128, blocks: 1, expand: 2 }), 72704);
  const shapes = weightShapes({ channels: 8, blocks: 2, expand: 3 });
  t.same(shapes[0], ['stem.weight', [8, 3, 3, 3]]);
  t.same(shapes[1], ['stem.bias', [8]]);
  t.same(shapes[2], ['inn.0.mix.weight', [8, 8, 1, 1]]);
  t.same(shapes[4], ['inn.0.phi.expand.weight', [12, 4, 1, 1]]);
  t.same(shapes[5], ['inn.0.phi.depthwise.weight', [12, 1, 3, 3]]);
  t.same(shapes[6], ['inn.0.phi.project.weight', [4, 12, 1, 1]]);
  t.equal(shapes.length, 2 + 2 * 11);
  t.equal(shapes[shapes.length - 1][0], 'inn.1.eta.project.weight');
});

t.test('the reference fixture loads', async (t) => {
  const w = await loadWeights(FIXTURE);
  t.equal(w.channels, 128);
  t.equal(w.blocks, 1);
  t.equal(w.expand, 2);
  t.equal(w.metadata.format, 'mghf-dfe');
  for (const [name, dims] of weightShapes(w)) {
    t.equal(w.tensors[name].length, dims.reduce((a, b) => a * b, 1), name);
  }
  t.equal(w.extra, undefined);
  // Our writer reproduces the reference writer's bytes (same order, compact JSON, padding).
  t.ok(serializeSafetensors(w).equals(readFileSync(FIXTURE)), 're-serialized fixture is byte-identical');
  sameTensors(t, w, loadWeightsSync(FIXTURE));
});

t.test('save → load round trip is bit-identical', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-weights-'));
  const w = createWeights({ seed: 3 });
  const file = join(dir, 'w.safetensors');
  await saveWeights(w, file);
  const back = await loadWeights(file);
  t.same({ c: back.channels, b: back.blocks, e: back.expand }, { c: 128, b: 1, e: 2 });
  t.same(back.metadata, w.metadata);
  sameTensors(t, w, back);
  const bytes = readFileSync(file);
  t.equal(Number(bytes.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
  t.ok(serializeSafetensors(back).equals(bytes), 'serialize(load(x)) = x');

  const file2 = join(dir, 'w2.safetensors');
  saveWeightsSync(small(), file2);
  sameTensors(t, small(), loadWeightsSync(file2));
  t.same(readdirSync(dir).sort(), ['w.safetensors', 'w2.safetensors'], 'no temp files left');

  // Unaligned data section: a reader must copy, not view.
  const { header, data } = split(serializeSafetensors(small()));
  const odd = join2(header, data);
  t.not((8 + Number(odd.readBigUInt64LE(0))) % 4, 0, 'test buffer really is unaligned');
  sameTensors(t, small(), parseSafetensors(odd, 'odd'));
});

t.test('reader accepts any tensor order and an allow-listed extra', async (t) => {
  const buf = serializeSafetensors(small());
  const { header, data } = split(buf);
  const reversed: Record<string, unknown> = {};
  for (const key of Object.keys(header).reverse()) reversed[key] = header[key];
  sameTensors(t, small(), parseSafetensors(join2(reversed, data), 'rev'));

  const extra = Buffer.alloc(8);
  extra.writeFloatLE(1.5, 0);
  extra.writeFloatLE(-2, 4);
  const withHead = editHeader(buf, (h) => {
    h['head.fc.bias'] = { dtype: 'F32', shape: [2], data_offsets: [data.length, data.length + 8] };
  }, Buffer.concat([data, extra]));
  rejectsFile(t, withHead, /'head\.fc\.bias'.*unknown/, 'head without allow');
  const w = parseSafetensors(withHead, 'ckpt', { allow: (n) => n.startsWith('head.') });
  t.same(w.extra?.['head.fc.bias'].shape, [2]);
  t.same(Array.from(w.extra?.['head.fc.bias'].data ?? []), [1.5, -2]);
  t.notOk('head.fc.bias' in w.tensors);
});

t.test('malformed files are typed errors naming the file and tensor', async (t) => {
  const good = serializeSafetensors(small());
  const { data } = split(good);

  rejectsFile(t, good.subarray(0, 5), /shorter than the 8-byte/, 'truncated below 8 bytes');
  rejectsFile(t, good.subarray(0, 40), /runs past the end/, 'truncated header');
  rejectsFile(t, good.subarray(0, good.length - 4), /'inn\.1\.eta\.project\.weight'.*outside the data section/, 'truncated data');

  const past = Buffer.from(good);
  past.writeBigUInt64LE(BigInt(good.length), 0);
  rejectsFile(t, past, /runs past the end/, 'header length past end');

  const huge = Buffer.from(good);
  huge.writeBigUInt64LE(0xffffffffffffffffn, 0);
  rejectsFile(t, huge, /exceeds the 1000000-byte limit/, 'header length huge');

  const nonUtf8 = Buffer.from(good);
  nonUtf8[8 + 20] = 0xff;
  rejectsFile(t, nonUtf8, /not valid UTF-8/, 'non-UTF-8 header');

  const nonJson = Buffer.from(good);
  nonJson[8 + 1] = 0x5b; // '{[' …
  rejectsFile(t, nonJson, /not valid JSON/, 'non-JSON header');
  rejectsFile(t, join2([1, 2], data), /not a JSON object/, 'array header');

  rejectsFile(t, editHeader(good, (h) => (h['inn.0.rho.depthwise.weight'].dtype = 'F16')), /'inn\.0\.rho\.depthwise\.weight'.*dtype "F16"/, 'F16 dtype');
  rejectsFile(
    t,
    editHeader(good, (h) => (h['stem.bias'].shape = [2, 2])),
    /'stem\.bias' has shape \[2,2\] but .* requires \[4\]/,
    'shape differs from metadata',
  );
  rejectsFile(t, editHeader(good, (h) => (h['stem.bias'].shape = [5])), /'stem\.bias'.*span 16 bytes/, 'shape vs span');
  rejectsFile(t, editHeader(good, (h) => (h['stem.bias'].shape = [-4])), /'stem\.bias'.*non-negative/, 'negative dim');
  rejectsFile(t, editHeader(good, (h) => (h['stem.bias'].data_offsets = [0])), /'stem\.bias'.*data_offsets/, 'offsets not a pair');
  rejectsFile(t, editHeader(good, (h) => (h['stem.bias'].data_offsets = [1.5, 17.5])), /'stem\.bias'.*data_offsets/, 'fractional offsets');
  rejectsFile(t, editHeader(good, (h) => (h['stem.bias'] = 'x')), /'stem\.bias'.*not an object/, 'entry not an object');

  // Swap stem.bias onto the first 16 bytes of stem.weight: overlap (and, as a consequence, a gap).
  rejectsFile(t, editHeader(good, (h) => (h['stem.bias'].data_offsets = [0, 16])), /overlap/, 'overlapping offsets');
  // Move the last tensor 4 bytes later inside a grown data section: a gap before it.
  rejectsFile(
    t,
    editHeader(good, (h) => {
      const e = h['inn.1.eta.project.weight'];
      e.data_offsets = [e.data_offsets[0] + 4, e.data_offsets[1] + 4];
    }, Buffer.concat([data, Buffer.alloc(4)])),
    /'inn\.1\.eta\.project\.weight'.*gap of 4 bytes/,
    'gap in data section',
  );
  rejectsFile(t, Buffer.concat([good, Buffer.alloc(4)]), /4 unaccounted bytes/, 'trailing bytes');

  rejectsFile(t, editHeader(good, (h) => delete h['inn.1.mix.bias']), /'inn\.1\.mix\.bias' is missing/, 'missing tensor');
  rejectsFile(
    t,
    editHeader(good, (h) => {
      h['inn.2.mix.bias'] = h['inn.1.mix.bias'];
      delete h['inn.1.mix.bias'];
    }),
    /'inn\.2\.mix\.bias'.*unknown tensor/,
    'unknown tensor',
  );
  // JSON.parse makes '__proto__' an own key; assigning it in JS would not, so edit the text.
  const protoHeader = JSON.stringify(split(good).header).replace('"stem.bias":', '"__proto__":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"stem.bias":');
  rejectsFile(t, join2(JSON.parse(protoHeader), data), /'__proto__'/, '__proto__ tensor');

  // Metadata.
  rejectsFile(t, editHeader(good, (h) => delete h.__metadata__), /no __metadata__/, 'no metadata');
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.format = 'pt')), /format/, 'wrong format');
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.version = '2')), /version/, 'wrong version');
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.channels = 4)), /channels is not a string/, 'number metadata');
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.channels = '0x4')), /channels/, 'hex channels');
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.channels = '5')), /channels/, 'odd channels');
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.blocks = '0')), /blocks/, 'zero blocks');
  rejectsFile(t, editHeader(good, (h) => delete h.__metadata__.expand), /expand/, 'missing expand');
  // Metadata that disagrees with the tensors: the tensors are checked against the metadata.
  rejectsFile(t, editHeader(good, (h) => (h.__metadata__.blocks = '1')), /'inn\.1\..*unknown tensor/, 'blocks disagree');

  // Non-finite weights in the file.
  const nan = Buffer.from(good);
  nan.writeFloatLE(NaN, 8 + Number(good.readBigUInt64LE(0)));
  rejectsFile(t, nan, /'stem\.weight'.*non-finite/, 'NaN weight');
});

t.test('load errors for missing files and bad paths', async (t) => {
  await t.rejects(loadWeights(join(tmpdir(), 'no-such-mghf-weights.safetensors')), { code: 'E_WEIGHTS_FILE' });
  t.throws(() => loadWeightsSync(42 as unknown as string), { code: 'E_ARGUMENT' });
  t.throws(() => parseSafetensors('abc' as unknown as Buffer, 'x'), { code: 'E_ARGUMENT' });
  t.throws(() => parseSafetensors(Buffer.alloc(0), 'x', { alow: () => true } as never), { code: 'E_OPTION' });
});

t.test('createWeights (SPEC §10)', async (t) => {
  const a = createWeights();
  t.same([a.channels, a.blocks, a.expand], [128, 1, 2]);
  t.equal(a.metadata.trainedOn, 'untrained: createWeights(seed=0)');
  t.equal(Object.values(a.tensors).reduce((n, x) => n + x.length, 0), 72704);
  sameTensors(t, a, createWeights({ seed: 0 }));
  const b = createWeights({ seed: 1 });
  t.notOk(bytesOf(a.tensors['stem.weight']).equals(bytesOf(b.tensors['stem.weight'])), 'seeds differ');
  // Seeds differing only above bit 32 differ too.
  const hi1 = createWeights({ seed: 2 ** 32, channels: 2 });
  const hi2 = createWeights({ seed: 2 ** 33, channels: 2 });
  t.notOk(bytesOf(hi1.tensors['stem.weight']).equals(bytesOf(hi2.tensors['stem.weight'])));

  const N = 128;
  const c = N / 2;
  const h = 2 * c;
  const fanIn: Record<string, number> = {
    'stem.weight': 27,
    'stem.bias': 27,
    'inn.0.mix.weight': N,
    'inn.0.mix.bias': N,
  };
  for (const s of ['phi', 'rho', 'eta']) {
    fanIn[`inn.0.${s}.expand.weight`] = c;
    fanIn[`inn.0.${s}.depthwise.weight`] = 9;
    fanIn[`inn.0.${s}.project.weight`] = h;
  }
  for (const [name, data] of Object.entries(a.tensors)) {
    const bound = Math.fround(1 / Math.sqrt(fanIn[name]));
    let max = 0;
    let sum = 0;
    for (const x of data) {
      max = Math.max(max, Math.abs(x));
      sum += x;
    }
    t.ok(max <= bound, `${name} within ±1/√${fanIn[name]}`);
    t.ok(max > 0.9 * bound, `${name} spreads over the range (max ${max}, bound ${bound})`);
    t.ok(Math.abs(sum / data.length) < 0.25 * bound, `${name} roughly centred`);
  }
  t.same(checkWeights(a).tensors, a.tensors);
});

t.test('createWeights and checkWeights reject bad input', async (t) => {
  t.throws(() => createWeights({ sead: 1 } as never), { code: 'E_OPTION', message: /did you mean 'seed'/ });
  t.throws(() => createWeights({ channels: 3 }), { code: 'E_OPTION', message: /opts\.channels/ });
  t.throws(() => createWeights({ channels: 8192 }), { code: 'E_OPTION' });
  t.throws(() => createWeights({ blocks: 0 }), { code: 'E_OPTION', message: /opts\.blocks/ });
  t.throws(() => createWeights({ expand: 1.5 }), { code: 'E_OPTION', message: /opts\.expand/ });
  t.throws(() => createWeights({ seed: -1 }), { code: 'E_OPTION', message: /seed/ });
  t.throws(() => createWeights(5 as never), { code: 'E_ARGUMENT' });

  const w = small();
  t.throws(() => checkWeights(null), { code: 'E_WEIGHTS' });
  t.throws(() => checkWeights({ ...w, channels: 5 }), { code: 'E_WEIGHTS', message: /weights\.channels/ });
  const missing = { ...w, tensors: { ...w.tensors } };
  delete missing.tensors['inn.0.rho.project.weight'];
  t.throws(() => checkWeights(missing), { code: 'E_WEIGHTS', message: /8 elements \(shape \[2,4,1,1\]\) for weights\.tensors\['inn\.0\.rho\.project\.weight'\]/ });
  t.throws(() => checkWeights({ ...w, tensors: { ...w.tensors, 'stem.bias': new Float64Array(4) } }), {
    code: 'E_WEIGHTS',
    message: /stem\.bias.*Float64Array\(4\)/,
  });
  t.throws(() => checkWeights({ ...w, tensors: { ...w.tensors, 'stem.bias': new Float32Array(3) } }), {
    code: 'E_WEIGHTS',
    message: /4 elements .*stem\.bias.*Float32Array\(3\)/,
  });
  t.throws(() => checkWeights({ ...w, tensors: { ...w.tensors, extra: new Float32Array(1) } }), {
    code: 'E_WEIGHTS',
    message: /Unknown tensor 'extra'/,
  });
  const inf = new Float32Array(4);
  inf[2] = Infinity;
  t.throws(() => checkWeights({ ...w, tensors: { ...w.tensors, 'stem.bias': inf } }), {
    code: 'E_WEIGHTS',
    message: /stem\.bias.*Infinity at index 2/,
  });
  t.throws(() => checkWeights({ ...w, metadata: { ...w.metadata, channels: '8' } }), { code: 'E_WEIGHTS', message: /metadata\.channels/ });
  t.throws(() => serializeSafetensors({ ...w, blocks: 3 }), { code: 'E_WEIGHTS' });
  const dir = mkdtempSync(join(tmpdir(), 'mghf-weights-'));
  writeFileSync(join(dir, 'keep'), 'x');
  t.throws(() => saveWeightsSync({ ...w, blocks: 3 }, join(dir, 'keep')), { code: 'E_WEIGHTS' });
  t.equal(readFileSync(join(dir, 'keep'), 'utf8'), 'x', 'failed save leaves the old file');
  await t.rejects(saveWeights(w, join(dir, 'no-such-dir', 'w.safetensors')), { code: 'E_WEIGHTS_FILE' });
  t.same(readdirSync(dir), ['keep'], 'no temp files left');
});
