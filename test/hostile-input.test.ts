// Every rejected input is an MghfError (issue 13): tensors whose getters throw or change between
// reads, typed arrays that lie about their length, Proxies, options and weights objects with
// throwing getters, data in the wrong range (E_RANGE), and image files too large or unreadable.

import t, { type Test } from 'tap';
import * as fsp from 'node:fs/promises';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { MghfError, describe } from '../lib/errors';
import { decodeImage } from '../lib/image';
import { dfeFeatures, dfeFeaturesSync, mghfLoss, mghfLossSync } from '../lib/loss';
import { Tensor } from '../lib/tensor';
import { createWeights } from '../lib/weights';
import { imagePair } from './helpers/fixtures';

const weights = createWeights({ seed: 3, channels: 8 });
const dims = [1, 3, 32, 32];
const { sr, gt } = imagePair(dims);
const n = { weights, variant: 'n' as const };

function rejectsTyped(t0: Test, fn: () => unknown, code: string, pattern: RegExp, what: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  t0.type(caught, MghfError, `${what}: an MghfError (${(caught as Error)?.message})`);
  t0.equal((caught as MghfError)?.code, code, `${what}: ${code}`);
  t0.match((caught as Error)?.message, pattern, `${what}: message`);
}

t.test('getters that throw are E_ARGUMENT naming the argument', async (t) => {
  const boom = () => {
    throw new Error('boom');
  };
  rejectsTyped(t, () => mghfLossSync({ get type() { return boom(); }, data: sr.data, dims }, gt, n), 'E_ARGUMENT', /sr: boom/, 'type getter');
  rejectsTyped(t, () => mghfLossSync(sr, { type: 'float32', get data() { return boom(); }, dims }, n), 'E_ARGUMENT', /gt: boom/, 'data getter');
  rejectsTyped(t, () => dfeFeaturesSync({ data: sr.data, get dims() { return boom(); } }, { weights }), 'E_ARGUMENT', /x: boom/, 'dims getter');
  const badDims = [1, 3, 32, 32];
  Object.defineProperty(badDims, 2, { get: boom });
  rejectsTyped(t, () => mghfLossSync({ data: sr.data, dims: badDims }, gt, n), 'E_ARGUMENT', /sr\.dims\[2\]: boom/, 'a dims element getter');
  rejectsTyped(t, () => new Tensor(sr.data, badDims), 'E_ARGUMENT', /tensor\.dims\[2\]/, 'new Tensor with such dims');
  // Proxies: a trap that throws, and a revoked proxy.
  const trap = new Proxy({}, { has: boom, get: boom });
  rejectsTyped(t, () => mghfLossSync(trap, gt, n), 'E_ARGUMENT', /sr/, 'a Proxy whose traps throw');
  const { proxy, revoke } = Proxy.revocable({ data: sr.data, dims }, {});
  revoke();
  rejectsTyped(t, () => mghfLossSync(proxy, gt, n), 'E_ARGUMENT', /sr/, 'a revoked Proxy');
  t.match(describe(proxy), /object/, 'describe() of a revoked Proxy does not throw');
  const dimsProxy = new Proxy([1, 3, 32, 32], { get: (target, key) => (key === '1' ? boom() : Reflect.get(target, key)) });
  rejectsTyped(t, () => mghfLossSync({ data: sr.data, dims: dimsProxy }, gt, n), 'E_ARGUMENT', /sr\.dims\[1\]: boom/, 'a dims Proxy');
  // A thrown non-Error.
  rejectsTyped(t, () => mghfLossSync({ get data() { throw 42; }, dims }, gt, n), 'E_ARGUMENT', /sr: 42/, 'a thrown number');
  await t.rejects(mghfLoss({ get type() { return boom(); }, data: sr.data, dims }, gt, n), { code: 'E_ARGUMENT' }, 'async too');
  await t.rejects(dfeFeatures({ data: sr.data, dims: badDims }, { weights }), { code: 'E_ARGUMENT' }, 'dfeFeatures too');
});

t.test('options and weights with throwing getters are typed errors naming the field', async (t) => {
  const opts = { weights, get tau() { throw new Error('no tau'); } };
  rejectsTyped(t, () => mghfLossSync(sr, gt, opts as never), 'E_OPTION', /opts\.tau: no tau/, 'an option getter');
  rejectsTyped(t, () => mghfLossSync(sr, gt, new Proxy({}, { ownKeys: () => { throw new Error('keys'); } }) as never), 'E_ARGUMENT', /option names/, 'an options Proxy');
  const w = { ...weights, get tensors() { throw new Error('no tensors'); } };
  rejectsTyped(t, () => mghfLossSync(sr, gt, { variant: 'n', weights: w as never }), 'E_WEIGHTS', /opts\.weights\.tensors: no tensors/, 'a weights getter');
  const tensors = { ...weights.tensors };
  Object.defineProperty(tensors, 'stem.bias', { enumerable: true, get: () => { throw new Error('no bias'); } });
  rejectsTyped(t, () => mghfLossSync(sr, gt, { variant: 'n', weights: { ...weights, tensors } }), 'E_WEIGHTS', /stem\.bias.*no bias/, 'a tensor getter');
  const row = [0, 1, 2, 3];
  Object.defineProperty(row, 2, { get: () => { throw new Error('no index'); } });
  rejectsTyped(t, () => mghfLossSync(sr, gt, { weights, M: 4, selected: [row] }), 'E_OPTION', /opts\.selected.*no index/, 'a selected element getter');
});

t.test('values read once: a dims array or option that changes between reads cannot slip through', async (t) => {
  const expected = mghfLossSync(sr, gt, n).loss;
  let reads = 0;
  const shifty = [1, 3, 32, 32];
  Object.defineProperty(shifty, 3, { get: () => (reads++ === 0 ? 32 : 1e6) });
  t.equal(mghfLossSync({ data: sr.data, dims: shifty }, gt, n).loss, expected, 'the dims as first read are used');
  t.equal(reads, 1, 'and read once');
  let tauReads = 0;
  const shiftyOpts = { weights, gamma1: 0, gamma2: 0, get tau() { return tauReads++ === 0 ? 0.07 : -1; } };
  const c = mghfLossSync(sr, gt, shiftyOpts);
  t.ok(Number.isFinite(c.loss), 'an option read once');
  t.equal(tauReads, 1);
  let calls = 0;
  const shiftyTensors = { ...weights.tensors };
  Object.defineProperty(shiftyTensors, 'stem.bias', { enumerable: true, get: () => (calls++ === 0 ? weights.tensors['stem.bias'] : new Float32Array(1)) });
  t.equal(mghfLossSync(sr, gt, { ...n, weights: { ...weights, tensors: shiftyTensors } }).loss, expected, 'a weights tensor read once');
});

t.test('typed arrays that lie about their length', async (t) => {
  const expected = mghfLossSync(sr, gt, n).loss;
  class Liar extends Float32Array {
    override get length(): number {
      return 5;
    }
  }
  const liar = new Liar(sr.data);
  t.equal(liar.length, 5, 'the lie');
  t.equal(mghfLossSync({ data: liar, dims }, gt, n).loss, expected, 'the real length counts: same loss');
  const tensor = new Tensor(liar, dims);
  t.equal(tensor.size, sr.data.length, 'Tensor.size is the real length');
  rejectsTyped(t, () => new Tensor(new Liar(10), [5]), 'E_SHAPE', /has 10/, 'a lie cannot match the wrong dims');
  const own = new Float32Array(sr.data);
  Object.defineProperty(own, 'length', { get: () => 1 });
  t.equal(mghfLossSync({ data: own, dims }, gt, n).loss, expected, "an own 'length' property");
  class NaNLiar extends Float32Array {
    override get length(): number {
      return 3;
    }
  }
  const hidden = new NaNLiar(sr.data);
  hidden[100] = NaN;
  rejectsTyped(t, () => mghfLossSync({ data: hidden, dims }, gt, n), 'E_NONFINITE', /NaN at flat index 100/, 'a NaN past the claimed length is found');
  t.equal(describe(liar), 'Liar(3072)', 'describe() shows the real length');
  const w = createWeights({ seed: 3, channels: 8 });
  w.tensors['stem.bias'] = new Liar(w.tensors['stem.bias']);
  t.equal(mghfLossSync(sr, gt, { ...n, weights: w }).loss, expected, 'a lying subclass in the weights');
});

t.test("E_RANGE: inputs far outside inputRange, with the observed range and the likely cause", async (t) => {
  const scaled = (x: Tensor, f: (v: number) => number) => new Tensor(x.data.map(f), x.dims);
  const bytes = scaled(sr, (v) => Math.round(v * 255));
  rejectsTyped(t, () => mghfLossSync(bytes, gt, n), 'E_RANGE', /values in \[0, 1\] for sr .*received min \d+ and max 2\d\d: 0–255 data\? divide by 255/, '0–255 sr');
  rejectsTyped(t, () => mghfLossSync(sr, scaled(gt, (v) => v * 255), n), 'E_RANGE', /for gt .*divide by 255/, '0–255 gt');
  rejectsTyped(t, () => dfeFeaturesSync(bytes, { weights }), 'E_RANGE', /for x /, 'dfeFeatures');
  await t.rejects(dfeFeatures(bytes, { weights }), { code: 'E_RANGE' });
  await t.rejects(mghfLoss(bytes, gt, n), { code: 'E_RANGE', argument: 'sr' });
  rejectsTyped(t, () => mghfLossSync(scaled(sr, (v) => v * 65535), gt, n), 'E_RANGE', /16-bit data\? divide by 65535/, '16-bit');
  rejectsTyped(t, () => mghfLossSync(scaled(sr, (v) => 2 * v - 1), gt, n), 'E_RANGE', /min -?\d.* pass inputRange: 'symmetric'/, '[-1, 1] data as unit');
  rejectsTyped(t, () => mghfLossSync(scaled(sr, (v) => 1e30 * v), gt, n), 'E_RANGE', /far outside/, '1e30');
  rejectsTyped(t, () => mghfLossSync(bytes, gt, { ...n, inputRange: 'symmetric' }), 'E_RANGE', /\[-1, 1\].*\[-2, 2\] is tolerated.*divide by 127\.5 and subtract 1/, 'symmetric 0–255');
  rejectsTyped(t, () => mghfLossSync(scaled(sr, (v) => (v - 0.45) / 0.225), gt, n), 'E_RANGE', /mean\/std-normalised/, 'ImageNet-normalised');

  // A network's small overshoot is fine, in both conventions.
  t.ok(Number.isFinite(mghfLossSync(scaled(sr, (v) => v * 1.02), gt, n).loss), '1.02 accepted');
  t.ok(Number.isFinite(mghfLossSync(scaled(sr, (v) => v * 1.4 - 0.2), gt, n).loss), '[-0.2, 1.2] accepted');
  const sym = (x: Tensor) => scaled(x, (v) => 2 * v - 1);
  t.ok(Number.isFinite(mghfLossSync(scaled(sr, (v) => 2.1 * v - 1.05), sym(gt), { ...n, inputRange: 'symmetric' }).loss), 'symmetric ±1.05 accepted');
});

t.test('decodeImage: too large and unreadable images are typed errors saying so', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-image-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // 10000×9000 solid colour: 1.08 GB as float32, just over the 1 GiB limit; the PNG is small.
  const big = join(dir, 'big.png');
  await sharp({ create: { width: 10000, height: 9000, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toFile(big);
  const t0 = Date.now();
  await t.rejects(decodeImage(big), { code: 'E_LIMIT', message: /big\.png is 10000×9000 pixels: 1\.1 GB as a float32 RGB tensor, over the 1 GiB limit/ });
  t.ok(Date.now() - t0 < 2000, `rejected from the header in ${Date.now() - t0} ms`);

  const text = join(dir, 'not-an-image.png');
  writeFileSync(text, 'hello');
  await t.rejects(decodeImage(text), { code: 'E_ARGUMENT', message: /Cannot decode image .*not-an-image\.png: .*unsupported image format/ });
  await t.rejects(decodeImage(join(dir, 'missing.png')), { code: 'E_ARGUMENT', message: /no such file/ });

  // An unreadable file: for real where permissions apply (not as root), and through a mocked open.
  const locked = join(dir, 'locked.png');
  await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toFile(locked);
  if (process.getuid?.() !== 0) {
    chmodSync(locked, 0o000);
    await t.rejects(decodeImage(locked), { code: 'E_ARGUMENT', message: /locked\.png: permission denied/ });
    chmodSync(locked, 0o644);
  }
  const eacces = Object.assign(new Error(`EACCES: permission denied, open '${text}'`), { code: 'EACCES' });
  const { decodeImage: mockedDecode } = t.mockRequire<typeof import('../lib/image')>('../lib/image', {
    'node:fs/promises': { ...fsp, open: async () => { throw eacces; } },
  });
  await t.rejects(mockedDecode(text), { code: 'E_ARGUMENT', message: /not-an-image\.png: permission denied/ }, 'EACCES is reported as such');
});
