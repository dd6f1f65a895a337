import t from 'tap';
import { runInNewContext } from 'node:vm';
import { MghfError, describe, invalidParameterError } from '../lib/errors';
import { Tensor } from '../lib/tensor';
import { checkFinite, checkOptions, is, toImageTensor } from '../lib/validate';

const rgb = (b: number, h: number, w: number): Float32Array => {
  const a = new Float32Array(b * 3 * h * w);
  for (let i = 0; i < a.length; i++) a[i] = (i % 17) / 16;
  return a;
};

t.test('MghfError and messages', async (t) => {
  const e = invalidParameterError('E_SHAPE', 'sr.dims', '4 dims', [1, 3, 64]);
  t.type(e, Error);
  t.type(e, MghfError);
  t.equal(e.name, 'MghfError');
  t.equal(e.code, 'E_SHAPE');
  t.equal(e.argument, 'sr.dims');
  t.equal(e.message, 'Expected 4 dims for sr.dims but received [1,3,64]');

  t.equal(describe(1.5), '1.5');
  t.equal(describe('abc'), '"abc"');
  t.match(describe('x'.repeat(1000)), /… \(1000 characters\)$/);
  t.ok(describe('x'.repeat(1000)).length < 80);
  t.equal(describe([1, 3, 64, 64]), '[1,3,64,64]');
  t.equal(describe(new Array(1000).fill(0)), 'Array(1000)');
  t.equal(describe(new Float64Array(12)), 'Float64Array(12)');
  t.equal(describe(Buffer.alloc(3)), 'Buffer(3)');
  t.equal(describe(new Map()), 'an instance of Map');
  t.equal(describe({ shape: 1, dtype: 2 }), 'an object {shape, dtype}');
  t.equal(describe(null), 'null');
  t.equal(describe(undefined), 'undefined');
  t.equal(describe(10n), '10n');
});

t.test('predicates', async (t) => {
  t.ok(is.plainObject({}));
  t.ok(is.plainObject(runInNewContext('({ a: 1 })')), 'object from another realm');
  t.notOk(is.plainObject([]));
  t.notOk(is.plainObject(null));
  t.notOk(is.plainObject(new Map()));
  t.ok(is.positiveInteger(3));
  t.notOk(is.positiveInteger(0));
  t.notOk(is.positiveInteger(1.5));
  t.notOk(is.number(NaN));
  t.ok(is.inRange(1, 1, 2));
  t.ok(is.float32Array(new Float32Array(1)));
  t.notOk(is.float32Array(new Float64Array(1)));
  t.ok(is.defined(0));
  t.notOk(is.defined(null));
});

t.test('Tensor', async (t) => {
  const data = new Float32Array(6);
  const x = new Tensor(data, [2, 3]);
  t.equal(x.type, 'float32');
  t.equal(x.data, data, 'no copy');
  t.equal(x.size, 6);
  t.ok(Object.isFrozen(x.dims));
  const dims = [2, 3];
  const y = new Tensor(data, dims);
  dims[0] = 99;
  t.same(y.dims, [2, 3], 'dims copied');

  t.throws(() => new Tensor(new Float64Array(6) as never, [2, 3]), { code: 'E_DTYPE', message: /Float64Array\(6\)/ });
  t.throws(() => new Tensor([1, 2] as never, [2]), { code: 'E_DTYPE', message: /Float32Array\.from/ });
  t.throws(() => new Tensor(data, [2, 0, 3]), { code: 'E_SHAPE' });
  t.throws(() => new Tensor(data, [2, 1.5]), { code: 'E_SHAPE' });
  t.throws(() => new Tensor(data, []), { code: 'E_SHAPE' });
  t.throws(() => new Tensor(data, [7]), { code: 'E_SHAPE', message: /7 elements .* has 6/ });

  t.equal(Tensor.from(x), x, 'a Tensor is returned as is');
  const z = Tensor.from({ type: 'float32', data, dims: [6] }, 'z');
  t.equal(z.data, data);
  t.same(z.dims, [6]);
  t.throws(() => Tensor.from({ type: 'float64', data, dims: [6] }, 'z'), { code: 'E_DTYPE', message: /z\.type.*"float64"/ });
  t.throws(() => Tensor.from(null as never, 'z'), { code: 'E_ARGUMENT' });
  t.throws(() => Tensor.from({ data } as never, 'z'), { code: 'E_ARGUMENT' });
  // A foreign realm's Float32Array is still a Float32Array.
  const foreign = runInNewContext('new Float32Array(4)') as Float32Array;
  t.equal(Tensor.from({ data: foreign, dims: [4] }).size, 4);
});

t.test('toImageTensor: accepted inputs', async (t) => {
  const data = rgb(2, 4, 5);
  const nchw = toImageTensor(new Tensor(data, [2, 3, 4, 5]), 'sr', 'NCHW');
  t.equal(nchw.data, data, 'NCHW is not copied');

  // Shaped like onnxruntime-node/web's Tensor: getters, extra fields, a `location`.
  class OrtLike {
    readonly type = 'float32';
    readonly location = 'cpu';
    readonly dims: readonly number[] = [2, 3, 4, 5];
    constructor(private readonly cpuData: Float32Array) {}
    get data(): Float32Array {
      return this.cpuData;
    }
    get size(): number {
      return this.cpuData.length;
    }
  }
  const fromOrt = toImageTensor(new OrtLike(data), 'sr', 'NCHW');
  t.type(fromOrt, Tensor);
  t.equal(fromOrt.data, data);
  t.same(fromOrt.dims, [2, 3, 4, 5]);

  // An ort tensor on the GPU throws from its data getter.
  const onGpu = {
    type: 'float32',
    dims: [1, 3, 2, 2],
    get data(): Float32Array {
      throw new Error('The data is not on CPU.');
    },
  };
  t.throws(() => toImageTensor(onGpu, 'sr', 'NCHW'), { code: 'E_ARGUMENT', message: /not on CPU/ });

  // Default layout is NCHW.
  t.same(toImageTensor({ data: rgb(1, 2, 2), dims: [1, 3, 2, 2] }, 'gt').dims, [1, 3, 2, 2]);
});

t.test('toImageTensor: NHWC is transposed to NCHW', async (t) => {
  // B=2, H=2, W=3, C=3; value encodes its own (b, y, x, c) so every move is checkable.
  const B = 2, H = 2, W = 3, C = 3;
  const nhwc = new Float32Array(B * H * W * C);
  for (let b = 0; b < B; b++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < C; c++) nhwc[((b * H + y) * W + x) * C + c] = 1000 * b + 100 * c + 10 * y + x;
  const before = Array.from(nhwc);
  const out = toImageTensor({ type: 'float32', data: nhwc, dims: [B, H, W, C] }, 'sr', 'NHWC');
  t.same(out.dims, [B, C, H, W]);
  t.not(out.data, nhwc, 'a new array');
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) t.equal(out.data[((b * C + c) * H + y) * W + x], 1000 * b + 100 * c + 10 * y + x);
  // Hand-written check of the first plane of sample 0: channel 0, rows 0..1.
  t.same(Array.from(out.data.subarray(0, 6)), [0, 1, 2, 10, 11, 12]);
  t.same(Array.from(nhwc), before, 'input untouched');
});

t.test('toImageTensor: every error code', async (t) => {
  const ok = rgb(1, 4, 4);
  const code = (v: unknown, c: string, re: RegExp, layout: 'NCHW' | 'NHWC' = 'NCHW') =>
    t.throws(() => toImageTensor(v, 'sr', layout), { code: c, message: re }, `${c} ${re}`);

  code(42, 'E_ARGUMENT', /Expected a tensor .* for sr but received 42/);
  code([1, 2, 3], 'E_ARGUMENT', /sr/);
  code({ shape: [1, 4, 4, 3], dtype: 'float32' }, 'E_ARGUMENT', /dataSync/);
  code({ type: 'float64', data: new Float64Array(48), dims: [1, 3, 4, 4] }, 'E_DTYPE', /"float64"/);
  code({ data: new Float64Array(48), dims: [1, 3, 4, 4] }, 'E_DTYPE', /Float64Array\(48\)/);
  code({ data: new Uint8Array(48), dims: [1, 3, 4, 4] }, 'E_DTYPE', /Uint8Array\(48\)/);
  code({ data: ok, dims: [3, 4, 4] }, 'E_SHAPE', /4 dims.*\[3,4,4\]/);
  code({ data: ok, dims: [1, 3, 4, -4] }, 'E_SHAPE', /positive integers/);
  code({ data: ok, dims: [1, 3, 4, 5] }, 'E_SHAPE', /60 elements .* has 48/);
  code({ data: ok, dims: [1, 4, 4, 3] }, 'E_SHAPE', /3 \(RGB\) channels .* received 4/);
  code({ data: ok, dims: [1, 3, 4, 4] }, 'E_SHAPE', /NHWC but received 4/, 'NHWC');
  const bad = rgb(1, 4, 4);
  bad[21] = NaN;
  code({ data: bad, dims: [1, 3, 4, 4] }, 'E_NONFINITE', /NaN at flat index 21 \(position \[0,1,1,1\]\)/);
  bad[21] = 0;
  bad[5] = -Infinity;
  code({ data: bad, dims: [1, 3, 4, 4] }, 'E_NONFINITE', /-Infinity at flat index 5/);
  t.throws(() => toImageTensor({ data: ok, dims: [1, 3, 4, 4] }, 'sr', 'HWC' as never), { code: 'E_OPTION' });
});

t.test('checkFinite', async (t) => {
  t.doesNotThrow(() => checkFinite(new Float32Array([0, -1, 3.4e38]), 'x'));
  t.throws(() => checkFinite(new Float32Array([0, Infinity]), 'x'), { code: 'E_NONFINITE', message: /x .*Infinity at flat index 1/ });
});

t.test('checkOptions', async (t) => {
  const names = ['variant', 'gamma1', 'gamma', 'M', 'epsOt'] as const;
  t.same(checkOptions(undefined, names), {});
  const o = { gamma1: 2 };
  t.same(checkOptions(o, names), o);
  t.not(checkOptions(o, names), o, 'a snapshot, not the caller\'s object');
  t.throws(() => checkOptions(5, names), { code: 'E_ARGUMENT', message: /options object for opts but received 5/ });
  t.throws(() => checkOptions([], names, 'loss options'), { code: 'E_ARGUMENT', message: /loss options/ });
  t.throws(() => checkOptions(null, names), { code: 'E_ARGUMENT' });
  let err: MghfError | undefined;
  try {
    checkOptions({ gama1: 0 }, names);
  } catch (e) {
    err = e as MghfError;
  }
  t.type(err, MghfError);
  t.equal(err?.code, 'E_OPTION');
  t.equal(err?.argument, 'opts.gama1');
  t.match(err?.message, /Unknown option 'gama1'/);
  t.match(err?.message, /did you mean 'gamma1'\?/);
  t.match(err?.message, /variant, gamma1, gamma, M, epsOt/);
  t.throws(() => checkOptions({ m: 1 }, names), { message: /did you mean 'M'/ }, 'case-insensitive suggestion');
  t.throws(() => checkOptions({ epsot: 1 }, names), { message: /did you mean 'epsOt'/ });
  t.throws(() => checkOptions({ x: 1 }, names), { code: 'E_OPTION', message: /^(?!.*did you mean)/ }, 'no silly suggestion');
  t.throws(() => checkOptions({ completelyWrong: 1 }, names), { code: 'E_OPTION', message: /^(?!.*did you mean)/ });
});
