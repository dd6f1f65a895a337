'use strict';
// The fuzz cases (issue 13): each case is a pure function of (seed, index), so any case can be
// replayed alone (`npm run fuzz -- --seed S --only I`). Four kinds, each mutating a valid input:
//
//   weights     a valid safetensors weights file, bit-flipped, truncated, its header length or
//               header JSON edited (duplicate keys, deep nesting, huge numbers, wrong dtypes,
//               overlapping offsets, BOM, …) or its values made extreme; loaded by one of the three
//               loaders and, when it loads, used for a loss
//   checkpoint  the same mutations of a pretraining checkpoint, loaded by one of its two loaders
//   tensor      sr / gt / x with wrong dims, lengths, dtypes, NaN/Inf, huge magnitudes, getters
//               that throw or change, Proxies, lying subclasses, detached buffers
//   options     random values (extremes included) for 1–4 loss options, unknown names
//
// A case returns what the library returned, or throws what it threw; child.js classifies it.
// Everything is tiny (8-channel DFE, images of 32–40 pixels) so a case takes milliseconds.

const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const vm = require('node:vm');

/** mulberry32: small, fast, and the same stream on every platform. */
function random(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (list) => list[Math.floor(next() * list.length)],
    chance: (p) => next() < p,
    logUniform: (lo, hi) => Math.exp(Math.log(lo) + next() * (Math.log(hi) - Math.log(lo))),
  };
}

/** The seed of case `index` of a run seeded `seed`: distinct, well mixed. */
function caseSeed(seed, index) {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Shared assets of one child process (built once, never mutated: cases copy what they change).

function makeAssets(libDir) {
  const lib = require(join(libDir, 'index.js'));
  const weightsLib = require(join(libDir, 'weights.js'));
  const checkpointLib = require(join(libDir, 'checkpoint.js'));
  const dir = mkdtempSync(join(tmpdir(), 'mghf-fuzz-'));
  const weights = lib.createWeights({ seed: 1, channels: 8, blocks: 1, expand: 2 });
  const weights2 = lib.createWeights({ seed: 2, channels: 4, blocks: 2, expand: 1 });
  const arch = { channels: 4, blocks: 1, expand: 1 };
  const ckptWeights = lib.createWeights({ seed: 3, ...arch });
  const tensors = { ...ckptWeights.tensors, ...lib.createHeadWeights({ seed: 3, channels: 4, classes: 2 }) };
  for (const [name, dims] of checkpointLib.checkpointShapes(arch, 2)) {
    tensors[name] = tensors[name] ?? new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(1e-3);
  }
  const checkpoint = checkpointLib.serializeCheckpoint({
    ...arch, classes: 2, classNames: ['a', 'b'], tensors, step: 3, epoch: 0, batchInEpoch: 3, rng: [1, 2, 3, 4],
    lr0: 5e-4, decayEvery: 5000, decayRate: 0.95, data: 'data', crop: 8, batch: 2, seed: 0, trainImages: 8, metadata: {},
  });
  return {
    lib, weightsLib, checkpointLib, dir, weights,
    files: [weightsLib.serializeSafetensors(weights), weightsLib.serializeSafetensors(weights2)],
    checkpoint,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A smooth random image batch in [0, 1] (or [-1, 1]), NCHW. */
function image(r, B, H, W, symmetric = false) {
  const data = new Float32Array(B * 3 * H * W);
  const fx = 1 + r.int(5);
  const fy = 1 + r.int(5);
  const noise = r.next() * 0.3;
  for (let i = 0; i < data.length; i++) {
    const x = i % W;
    const y = Math.floor(i / W) % H;
    let v = 0.5 + 0.3 * Math.sin((fx * x) / W * 6.28) * Math.cos((fy * y) / H * 6.28) + noise * (r.next() - 0.5);
    v = Math.min(1, Math.max(0, v));
    data[i] = symmetric ? 2 * v - 1 : v;
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// Safetensors mutations (weights and checkpoints alike)

function splitFile(buf) {
  if (buf.length < 8) return undefined;
  const n = Number(buf.readBigUInt64LE(0));
  if (n > buf.length - 8) return undefined;
  return { headerText: buf.subarray(8, 8 + n).toString('utf8'), data: buf.subarray(8 + n) };
}

function joinFile(header, data, pad = true) {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(header, 'utf8');
  const length = pad ? Math.ceil(json.length / 8) * 8 : json.length;
  const head = Buffer.alloc(8 + length, 0x20);
  head.writeBigUInt64LE(BigInt(length), 0);
  json.copy(head, 8);
  return Buffer.concat([head, data]);
}

const ODD_NUMBERS = [0, -1, 1.5, -0, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300, -1e300, 1e-300, 4, 8, 16];
const DTYPES = ['F16', 'F64', 'BF16', 'I32', 'U8', 'f32', 'F32 ', '', null, 5, {}, ['F32']];
const NAMES = ['head.fc.weight', 'adam.m.stem.bias', 'adam.v.inn.0.mix.weight', 'inn.99.mix.bias', 'constructor', 'toString', 'hasOwnProperty', 'stem.weight.x', '', '\u0000', 'é', 'x'.repeat(300)];
const META_VALUES = ['0', '-1', '0x8', '1e1', ' 8', '8.0', '99999999', '4096', '2', '16', '', '3', '64', '65'];

/** Edits of the parsed header object: each returns nothing (edits in place). */
const HEADER_EDITS = [
  (h, r) => { const k = tensorKey(h, r); if (k) h[k].dtype = r.pick(DTYPES); },
  (h, r) => {
    const k = tensorKey(h, r);
    if (!k) return;
    const s = h[k].shape;
    h[k].shape = r.pick([[], [0], [-1], [1.5], [2 ** 53], [1e300], 'x', null, Array.isArray(s) ? [...s].reverse() : s, Array.isArray(s) ? [...s, 1] : s, [r.pick(ODD_NUMBERS)], new Array(12).fill(1)]);
  },
  (h, r) => {
    const k = tensorKey(h, r);
    const other = tensorKey(h, r);
    if (!k || !other) return;
    const [b, e] = h[k].data_offsets ?? [0, 0];
    h[k].data_offsets = r.pick([
      h[other].data_offsets, [0, 0], [e, b], [-4, e], [b, 2 ** 60], 'x', [1.5, e], [b + 4, e + 4], [b, e, 0], [b], [r.pick(ODD_NUMBERS), r.pick(ODD_NUMBERS)],
    ]);
  },
  (h, r) => { // swap two tensors' offsets: shapes then disagree with spans or each other
    const a = tensorKey(h, r), b = tensorKey(h, r);
    if (a && b) [h[a].data_offsets, h[b].data_offsets] = [h[b].data_offsets, h[a].data_offsets];
  },
  (h, r) => { const k = tensorKey(h, r); if (k) delete h[k]; },
  (h, r) => { const k = tensorKey(h, r); if (k) h[r.pick(NAMES)] = { ...h[k] }; },
  (h, r) => { const k = tensorKey(h, r); if (k) { h[r.pick(NAMES)] = h[k]; delete h[k]; } },
  (h, r) => { const k = tensorKey(h, r); if (k) h[k] = r.pick(['x', [], null, 5, true, { dtype: 'F32' }]); },
  (h) => { delete h.__metadata__; },
  (h, r) => { if (h.__metadata__) h.__metadata__[r.pick(['format', 'version', 'channels', 'blocks', 'expand', 'classes', 'step', 'rng', 'classNames', 'lr0', 'decayRate'])] = r.pick(META_VALUES); },
  (h, r) => { if (h.__metadata__) h.__metadata__[r.pick(['channels', 'format', 'trainedOn', 'rng'])] = r.pick([8, null, {}, [], true, { a: [[[]]] }]); },
  (h, r) => { if (h.__metadata__) h.__metadata__.rng = r.pick(['[0,0,0,0]', '[1,2,3]', '[1,2,3,4294967296]', '"x"', '[1e400,1,1,1]', '[[[[[[[[[[1]]]]]]]]]]']); },
  (h, r) => { if (h.__metadata__) h.__metadata__.classNames = r.pick(['["a"]', '["a","b","c"]', '[1,2]', '{}', '["a",', 'null']); },
  (h, r) => { h[`x${r.int(10)}`] = nest(r.int(12)); },
  (h, r) => { for (let i = 0, n = 1 + r.int(3000); i < n; i++) h[`k${i}`] = i; },
];

function tensorKey(h, r) {
  const keys = Object.keys(h).filter((k) => k !== '__metadata__' && h[k] && typeof h[k] === 'object');
  return keys.length ? r.pick(keys) : undefined;
}

function nest(depth) {
  let v = 1;
  for (let i = 0; i < depth; i++) v = i % 2 ? { a: v } : [v];
  return v;
}

/** Edits of the header text (what JSON.stringify cannot produce): each returns the new text. */
const TEXT_EDITS = [
  (s) => s.replace(/"([^"]+)":\{"dtype"/, '"$1":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"$1":{"dtype"'), // duplicate tensor
  (s) => s.replace('{"__metadata__":{', '{"__metadata__":{"format":"evil"},"__metadata__":{'), // duplicate metadata
  (s) => s.replace('"format":', '"format":"x","format":'),
  (s) => s.replace('"dtype":"F32"', '"dtype":"F16","dtype":"F32"'),
  (s) => '\ufeff' + s,
  (s, r) => r.pick([' ', '\n', '\t', '\r\n']) + s,
  (s, r) => s.trimEnd() + r.pick(['\n', ' {}', ',', '\u0000', 'x', ']']),
  (s, r) => s.replace(/\}\s*$/, `,"deep":${'['.repeat(10 + r.int(5000))}${']'.repeat(10 + r.int(5000))}}`),
  (s, r) => s.replace(/\}\s*$/, `,"n":${r.pick(['1e400', '-1e400', '1'.repeat(80), '0x10', '01', '-', '1.', '.5', 'NaN', 'Infinity', '1e', '2e-999'])}}`),
  (s) => s.replace(/\}\s*$/, `,"s":"\\ud800"}`),
  (s) => s.replace(/\}\s*$/, `,"${'k'.repeat(5000)}":1}`),
  (s, r) => s.replace(/\}\s*$/, `,${Array.from({ length: 66000 + r.int(1000) }, (_, i) => `"${i}":0`).join(',')}}`),
  (s) => s.replace(/\}\s*$/, ',"__proto__":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'),
  (s) => s.replace('"__metadata__":{', '"__metadata__":{"__proto__":"x",'),
  (s, r) => s.slice(0, r.int(s.length)),
  (s) => s.replace(/"shape":\[(\d+)/, '"shape":[$1.0'),
  (s) => s.replace(/"data_offsets":\[(\d+)/, '"data_offsets":[$1e0'),
];

const EXTREME_FLOATS = [NaN, Infinity, -Infinity, 3.4e38, -3.4e38, 1e30, -1e20, 1e10, 1e-40, 65504, 100];

/** Byte- and field-level mutations of a file: each returns a new Buffer. */
const FILE_MUTATIONS = [
  function bitFlips(buf, r) {
    const out = Buffer.from(buf);
    for (let i = 0, n = 1 + r.int(8); i < n; i++) out[r.int(out.length)] ^= 1 << r.int(8);
    return out;
  },
  function headerBitFlips(buf, r) {
    const out = Buffer.from(buf);
    if (out.length < 8) return out; // truncated by an earlier mutation: no header to flip
    const n = Math.min(Number(out.readBigUInt64LE(0)), out.length - 8);
    for (let i = 0, k = 1 + r.int(4); i < k && n > 0; i++) out[8 + r.int(n)] ^= 1 << r.int(8);
    return out;
  },
  function truncate(buf, r) {
    return buf.subarray(0, r.chance(0.3) ? r.int(16) : r.int(buf.length));
  },
  function append(buf, r) {
    return Buffer.concat([buf, Buffer.alloc(1 + r.int(64), r.int(256))]);
  },
  function headerLength(buf, r) {
    const out = Buffer.from(buf);
    if (out.length < 8) return out;
    const n = out.readBigUInt64LE(0);
    out.writeBigUInt64LE(
      r.pick([0n, 1n, n - 1n, n + 1n, n + 8n, BigInt(out.length), 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n, 1000001n, 100000000n, BigInt(r.int(2 ** 30))]) & (2n ** 64n - 1n),
      0,
    );
    return out;
  },
  function headerObject(buf, r) {
    const parts = splitFile(buf);
    let h;
    try {
      h = JSON.parse(parts?.headerText ?? '');
    } catch {
      return buf;
    }
    if (!h || typeof h !== 'object') return buf;
    for (let i = 0, n = 1 + r.int(3); i < n; i++) r.pick(HEADER_EDITS)(h, r);
    const text = r.chance(0.05) ? JSON.stringify(r.pick([[h], 'x', 5, null])) : JSON.stringify(h);
    return joinFile(text, parts.data, r.chance(0.8));
  },
  function headerText(buf, r) {
    const parts = splitFile(buf);
    if (!parts) return buf;
    return joinFile(r.pick(TEXT_EDITS)(parts.headerText.trimEnd(), r), parts.data, r.chance(0.8));
  },
  function invalidUtf8(buf, r) {
    const parts = splitFile(buf);
    if (!parts) return buf;
    const bytes = Buffer.from(parts.headerText.trimEnd(), 'utf8');
    bytes[1 + r.int(bytes.length - 2)] = r.pick([0xff, 0xc3, 0x80, 0xed, 0xf8]);
    return joinFile(bytes, parts.data);
  },
  function extremeValues(buf, r) {
    const parts = splitFile(buf);
    if (!parts || parts.data.length < 4) return buf;
    const out = Buffer.from(buf);
    const start = out.length - parts.data.length;
    for (let i = 0, n = 1 + r.int(3); i < n; i++) out.writeFloatLE(r.pick(EXTREME_FLOATS), start + 4 * r.int(parts.data.length / 4));
    return out;
  },
];

function mutateFile(buf, r, notes) {
  let out = buf;
  for (let i = 0, n = 1 + (r.chance(0.3) ? r.int(3) : 0); i < n; i++) {
    const mutation = r.pick(FILE_MUTATIONS);
    notes.push(mutation.name);
    out = mutation(out, r);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The four kinds

async function weightsCase(a, r, ctx) {
  const file = mutateFile(r.pick(a.files), r, ctx.notes);
  const how = r.pick(['parse', 'sync', 'async']);
  ctx.notes.push(how);
  let loaded;
  if (how === 'parse') {
    loaded = a.weightsLib.parseSafetensors(file, 'fuzz.safetensors');
  } else {
    const path = join(a.dir, 'w.safetensors');
    writeFileSync(path, file);
    loaded = how === 'sync' ? a.lib.loadWeightsSync(path) : await a.lib.loadWeights(path);
  }
  // A file that loads is used: its weights must give a finite loss or a typed error (a weight of
  // 3.4e38 overflows the features: E_NUMERIC naming the DFE forward and that weight).
  const H = 32 + r.int(9);
  const dims = [1, 3, H, H];
  const sr = new a.lib.Tensor(image(r, 1, H, H), dims);
  const gt = new a.lib.Tensor(image(r, 1, H, H), dims);
  return a.lib.mghfLossSync(sr, gt, { weights: loaded, variant: r.pick(['c', 'n']), M: 4, iters: 10, device: 'cpu' });
}

async function checkpointCase(a, r, ctx) {
  const file = mutateFile(a.checkpoint, r, ctx.notes);
  if (r.chance(0.5)) return a.checkpointLib.parseCheckpoint(file, 'fuzz.ckpt');
  const path = join(a.dir, 'c.ckpt');
  writeFileSync(path, file);
  return a.lib.loadCheckpoint(path);
}

const boom = () => {
  throw new Error('getter says no');
};

/** Tensor mutations: each takes a valid { data, dims } and returns what to pass instead. */
const TENSOR_MUTATIONS = [
  (t, r) => ({ data: t.data, dims: r.pick([[1, 3, 32], [...t.dims, 1], [1, 3, 0, 32], [1, 3, -32, 32], [1, 3, 32.5, 32], [1, 3, NaN, 32], ['1', 3, 32, 32], [1, 3, 2 ** 31, 2 ** 31], [2 ** 53, 3, 1, 1], [1, 4, 32, 32], [], null, 'x', {}, new Array(40).fill(1)]) }),
  (t, r) => ({ data: t.data.subarray(0, t.data.length - 1 - r.int(3)), dims: t.dims }),
  (t, r) => ({ data: r.pick([new Float64Array(t.data), new Int32Array(t.data.length), new Uint8Array(t.data.length), Array.from(t.data), Buffer.alloc(t.data.length * 4), new DataView(t.data.buffer), 'x', null, undefined, 5, {}]), dims: t.dims }),
  (t, r) => ({ type: r.pick(['float64', 'int8', '', 5, null, 'FLOAT32']), data: t.data, dims: t.dims }),
  (t, r) => {
    const d = new Float32Array(t.data);
    d[r.int(d.length)] = r.pick([NaN, Infinity, -Infinity]);
    return { data: d, dims: t.dims };
  },
  (t, r) => {
    const k = r.pick([1e30, 3.4e38, -1e20, 255, 65535, 1.49, -0.49, 1e-40, -3, 2.5]);
    return { data: t.data.map((v) => v * k), dims: t.dims };
  },
  (t, r) => {
    const d = new Float32Array(t.data);
    d[r.int(d.length)] = r.pick([3.4e38, -3.4e38, 1e18, 2, -1]);
    return { data: d, dims: t.dims };
  },
  (t, r) => r.pick([
    { get type() { return boom(); }, data: t.data, dims: t.dims },
    { get data() { return boom(); }, dims: t.dims },
    { data: t.data, get dims() { return boom(); } },
    { data: t.data, dims: Object.defineProperty([...t.dims], r.int(4), { get: boom }) },
    new Proxy({ data: t.data, dims: t.dims }, { get: boom }),
    new Proxy({ data: t.data, dims: t.dims }, { has: boom, get: (o, k) => o[k] }),
    (() => { const p = Proxy.revocable({ data: t.data, dims: t.dims }, {}); p.revoke(); return p.proxy; })(),
    { data: t.data, dims: new Proxy([...t.dims], { get: (o, k) => (k === 'length' ? 2 ** 32 - 1 : o[k]) }) },
  ]),
  (t, r) => {
    class Liar extends Float32Array {
      get length() { return r.int(10); }
    }
    return { data: new Liar(t.data), dims: t.dims };
  },
  (t, r) => {
    const d = new Float32Array(t.data);
    Object.defineProperty(d, 'length', { get: () => r.int(10) });
    return { data: d, dims: t.dims };
  },
  (t) => {
    const d = new Float32Array(t.data);
    structuredClone(d.buffer, { transfer: [d.buffer] }); // detaches d
    return { data: d, dims: t.dims };
  },
  (t) => {
    const d = new Float32Array(new SharedArrayBuffer(t.data.byteLength));
    d.set(t.data);
    return { data: d, dims: t.dims };
  },
  (t) => {
    const d = vm.runInNewContext(`new Float32Array(${t.data.length})`);
    d.set(t.data);
    return { data: d, dims: t.dims };
  },
  (t) => {
    let reads = 0;
    return { data: t.data, dims: Object.defineProperty([...t.dims], 2, { get: () => (reads++ ? 1e6 : t.dims[2]) }) };
  },
  (t) => ({ shape: t.dims, dtype: 'float32', dataSync: () => t.data }),
  (t, r) => r.pick([null, undefined, 5, 'x', [], t.data, () => t]),
];

async function tensorCase(a, r, ctx) {
  const B = 1 + r.int(2);
  const H = 32 + r.int(5);
  const W = 32 + r.int(5);
  const dims = [B, 3, H, W];
  const sr = { type: 'float32', data: image(r, B, H, W), dims };
  const gt = { type: 'float32', data: image(r, B, H, W), dims };
  const which = r.pick(['sr', 'gt', 'both']);
  const mutate = (t) => {
    const m = r.int(TENSOR_MUTATIONS.length);
    ctx.notes.push(`mutation ${m}`);
    return TENSOR_MUTATIONS[m](t, r);
  };
  const x = which === 'gt' ? sr : mutate(sr);
  const y = which === 'sr' ? gt : mutate(gt);
  const opts = { weights: a.weights, M: 4, iters: 5, device: 'cpu', ...(r.chance(0.2) ? { layout: 'NHWC' } : {}) };
  const call = r.pick(['lossSync', 'loss', 'featuresSync', 'features', 'lossDetach']);
  ctx.notes.push(`${which} → ${call}`);
  if (call === 'lossSync') return a.lib.mghfLossSync(x, y, opts);
  if (call === 'loss') return a.lib.mghfLoss(x, y, opts);
  const fopts = { weights: a.weights, device: 'cpu', ...(opts.layout ? { layout: opts.layout } : {}) };
  if (call === 'featuresSync') return a.lib.dfeFeaturesSync(x, fopts);
  if (call === 'features') return a.lib.dfeFeatures(x, fopts);
  // Inputs detached while the call runs: the library copied them first.
  const pending = a.lib.mghfLoss(x, y, opts);
  for (const t of [x, y]) {
    try {
      if (t && t.data instanceof Float32Array && !(t.data.buffer instanceof SharedArrayBuffer)) structuredClone(t.data.buffer, { transfer: [t.data.buffer] });
    } catch {
      // Not ours to detach (a Proxy, a getter that throws): fine.
    }
  }
  return pending;
}

const OPTION_NAMES = ['gamma1', 'gamma2', 'gamma3', 'beta1', 'beta2', 'beta3', 'M', 'alpha', 'gamma', 'patch', 'stride', 'pmax', 'tau', 'epsOt', 'Q', 'iters'];
const EXTREMES = [0, -0, -1, 1, 1e-300, 1e-3, 0.5, 2, 7, 1e3, 1e6, 1e308, Infinity, -Infinity, NaN, 2 ** 31, 2 ** 53, 1.5, 33, '1', null, {}, [], true];
const UNKNOWN = ['gama1', 'eps', 'Iters', 'constructor', 'toString', 'valueOf', 'weight', 'grad', 'signal', ''];

/** A value for a numeric option: mostly inside its bounds (log-uniform), sometimes an extreme. */
function optionValue(name, r, lib) {
  const b = lib.OPTION_BOUNDS[name];
  if (r.chance(0.3)) return r.pick(EXTREMES);
  if (r.chance(0.2)) return r.pick([b.min, b.max]);
  const lo = b.min > 0 ? b.min : b.integer ? 1 : 1e-6;
  let v = r.chance(0.1) && b.min <= 0 ? 0 : r.logUniform(lo, b.max);
  if (name === 'gamma' && r.chance(0.5)) v = -v;
  return b.integer ? Math.max(b.min, Math.min(b.max, Math.round(v))) : v;
}

// Work a fuzz case may legitimately ask for: beyond it a valid call is re-drawn, since timing a
// legitimate heavy call finds nothing (the estimator's own limits are tested elsewhere).
const FUZZ_FLOPS = 3e9;

async function optionsCase(a, r, ctx) {
  // Large enough for a real patch grid (P > 1) with the smaller patches drawn below.
  const B = 1 + r.int(2);
  const H = 32 + r.int(41);
  const W = 32 + r.int(41);
  const symmetric = r.chance(0.2);
  const dims = [B, 3, H, W];
  const sr = new a.lib.Tensor(image(r, B, H, W, symmetric), dims);
  const gt = new a.lib.Tensor(image(r, B, H, W, symmetric), dims);
  let opts;
  for (let attempt = 0; ; attempt++) {
    opts = { weights: a.weights, device: 'cpu', ...(symmetric ? { inputRange: 'symmetric' } : {}) };
    if (r.chance(0.6)) Object.assign(opts, { patch: r.pick([4, 8, 16]), stride: r.pick([2, 4, 8]) });
    for (let i = 0, n = 1 + r.int(4); i < n; i++) {
      const name = r.pick(OPTION_NAMES);
      opts[name] = optionValue(name, r, a.lib);
    }
    if (r.chance(0.2)) opts.variant = r.pick(['c', 'n', 'x', 1]);
    if (r.chance(0.1)) opts.sinkhornGrad = r.pick([true, false, 'no']);
    if (r.chance(0.1)) opts.returnDetails = true;
    if (r.chance(0.05)) opts[r.pick(UNKNOWN)] = 1;
    if (r.chance(0.05)) opts.selected = r.pick([[[0, 1, 2]], [[3, 2, 1, 0]], [0, 1, 2, 3], 'x', [[0, 0, 1, 2]], [new Int32Array([0, 1, 2, 3])]]);
    if (r.chance(0.03)) opts.inputRange = r.pick(['unit', 'symmetric', 'other']);
    let cost;
    try {
      cost = a.lib.estimateCost(dims, opts);
    } catch {
      break; // the call will throw the same typed error
    }
    if (cost.flops <= FUZZ_FLOPS || attempt >= 20) break;
  }
  const { weights, ...shown } = opts;
  ctx.notes.push(`[${dims}] ${JSON.stringify(shown, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}`);
  return r.chance(0.5) ? a.lib.mghfLossSync(sr, gt, opts) : a.lib.mghfLoss(sr, gt, opts);
}

const KINDS = [
  ['weights', 0.3, weightsCase],
  ['checkpoint', 0.1, checkpointCase],
  ['tensor', 0.25, tensorCase],
  ['options', 0.35, optionsCase],
];

// Self-test cases (--self-test): one of each outcome the harness must recognise and attribute.
const SELF_TEST = {
  3: () => process.abort(),
  5: () => { for (;;); },
  7: () => { throw new TypeError('an untyped error'); },
  8: () => ({ loss: NaN }),
};

/** The case `index` of a run seeded `seed`: its kind and a function running it. */
function makeCase(seed, index, selfTest = false) {
  if (selfTest) {
    const special = SELF_TEST[index % 10];
    return { kind: 'self-test', run: async (a) => (special ? special() : a.lib.createWeights({ channels: 3 })) };
  }
  const r = random(caseSeed(seed, index));
  let u = r.next();
  for (const [kind, p, run] of KINDS) {
    if (u < p || kind === 'options') return { kind, run: (assets, ctx) => run(assets, r, { ...ctx, index }) };
    u -= p;
  }
  throw new Error('unreachable');
}

module.exports = { makeAssets, makeCase, caseSeed, random };
