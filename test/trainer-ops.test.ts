// The trainer ops of issue 16 on CPU host tensors: each forward against a plain JavaScript
// reference, each backward against that reference's adjoint and against central finite
// differences of the op itself, PyTorch's Adam over 3 steps, MATLAB-style resize checks, the typed
// errors, and memory() flat over 200 calls in scope().
import t from 'tap';
import { AdamState, MghfError, Tensor, memory, ops, scope } from '../lib/index';

// ------------------------------------------------------------------ helpers

let seed = 12345;
function rand(): number {
  // xorshift32: deterministic data, so a failure reproduces.
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 4294967296;
}
function randomTensor(dims: number[], lo = -1, hi = 1): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = lo + (hi - lo) * rand();
  return new Tensor(d, dims);
}
function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
/** Central difference of f at x along index i (x restored afterwards). */
function centralDiff(x: Tensor, i: number, h: number, f: () => number): number {
  const d = x.data;
  const x0 = d[i];
  d[i] = x0 + h;
  const fp = f();
  d[i] = x0 - h;
  const fm = f();
  d[i] = x0;
  return (fp - fm) / (2 * h);
}
function sampleIndices(n: number, k: number): number[] {
  const out = new Set<number>();
  while (out.size < Math.min(n, k)) out.add(Math.floor(rand() * n));
  return [...out];
}

// ------------------------------------------------------------------ conv2d

interface ConvCase {
  B: number;
  Ci: number;
  Co: number;
  H: number;
  W: number;
  k: number;
  stride: 1 | 2;
  padding: 'zero' | 'reflect';
  groups: number;
}

const src = (i: number, n: number, reflect: boolean): number => (i >= 0 && i < n ? i : !reflect ? -1 : i < 0 ? -i : 2 * n - 2 - i);

/** The plain loops of the definition, in double. */
function convRef(c: ConvCase, x: Float32Array, w: Float32Array, b: Float32Array | null): Float64Array {
  const Ho = Math.ceil(c.H / c.stride);
  const Wo = Math.ceil(c.W / c.stride);
  const p = (c.k - 1) / 2;
  const cig = c.Ci / c.groups;
  const cog = c.Co / c.groups;
  const y = new Float64Array(c.B * c.Co * Ho * Wo);
  for (let n = 0; n < c.B; n++)
    for (let co = 0; co < c.Co; co++) {
      const g = Math.floor(co / cog);
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let acc = b ? b[co] : 0;
          for (let ci = 0; ci < cig; ci++)
            for (let ky = 0; ky < c.k; ky++) {
              const iy = src(oy * c.stride + ky - p, c.H, c.padding === 'reflect');
              if (iy < 0) continue;
              for (let kx = 0; kx < c.k; kx++) {
                const ix = src(ox * c.stride + kx - p, c.W, c.padding === 'reflect');
                if (ix < 0) continue;
                acc += w[((co * cig + ci) * c.k + ky) * c.k + kx] * x[((n * c.Ci + g * cig + ci) * c.H + iy) * c.W + ix];
              }
            }
          y[((n * c.Co + co) * Ho + oy) * Wo + ox] = acc;
        }
    }
  return y;
}

const convCases: ConvCase[] = [];
for (const k of [1, 3, 5])
  for (const stride of [1, 2] as const)
    for (const padding of ['zero', 'reflect'] as const)
      for (const groups of [1, 2]) convCases.push({ B: 2, Ci: 4, Co: 6, H: 5, W: 6, k, stride, padding, groups });

t.test('conv2d equals the plain loops (k 1/3/5, stride 1/2, zero/reflect, groups 1/2)', async (t) => {
  for (const c of convCases) {
    const x = randomTensor([c.B, c.Ci, c.H, c.W]);
    const w = randomTensor([c.Co, c.Ci / c.groups, c.k, c.k]);
    const b = randomTensor([c.Co]);
    const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
    const y = ops.conv2dSync(x, w, b, opts);
    t.same(y.dims, [c.B, c.Co, Math.ceil(c.H / c.stride), Math.ceil(c.W / c.stride)], `dims ${JSON.stringify(c)}`);
    const ref = convRef(c, x.data, w.data, b.data);
    t.ok(maxAbsDiff(y.data, ref) < 1e-5 * (1 + maxAbs(ref)), `values ${JSON.stringify(c)}: ${maxAbsDiff(y.data, ref)}`);
    const yNoBias = await ops.conv2d(x, w, null, opts);
    t.ok(maxAbsDiff(yNoBias.data, convRef(c, x.data, w.data, null)) < 1e-5 * (1 + maxAbs(ref)), 'async, no bias');
  }
});

t.test('conv2dBackward is the adjoint of conv2d and matches central differences', async (t) => {
  for (const c of convCases) {
    const x = randomTensor([c.B, c.Ci, c.H, c.W]);
    const w = randomTensor([c.Co, c.Ci / c.groups, c.k, c.k]);
    const b = randomTensor([c.Co]);
    const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
    const dy = randomTensor([c.B, c.Co, Math.ceil(c.H / c.stride), Math.ceil(c.W / c.stride)]);
    const { dx, dw, db } = ops.conv2dBackwardSync(x, w, dy, opts);
    // L(x, w, b) = <dy, conv(x, w) + b>, in double: dL/dθ is the backward's output.
    const L = () => dot(dy.data, convRef(c, x.data, w.data, b.data));
    const label = JSON.stringify(c);
    for (const [param, grad, name] of [
      [x, dx!, 'dx'],
      [w, dw!, 'dw'],
      [b, db!, 'db'],
    ] as const) {
      t.same(grad.dims, param.dims, `${name} dims ${label}`);
      let worst = 0;
      for (const i of sampleIndices(param.data.length, 12)) {
        const fd = centralDiff(param, i, 1e-2, L);
        worst = Math.max(worst, Math.abs(fd - grad.data[i]) / (1 + Math.abs(fd)));
      }
      t.ok(worst < 1e-4, `${name} vs central differences ${label}: ${worst}`);
    }
    // The same through the op itself, in float32, at a few points.
    const Lop = () => dot(dy.data, ops.conv2dSync(x, w, b, opts).data);
    for (const i of sampleIndices(x.data.length, 3)) {
      const fd = centralDiff(x, i, 5e-2, Lop);
      t.ok(Math.abs(fd - dx!.data[i]) < 2e-3 * (1 + Math.abs(fd)), `dx through the op ${label}`);
    }
    const only = await ops.conv2dBackward(x, w, dy, { ...opts, bias: false, inputGrad: false });
    t.same(Object.keys(only), ['dw'], 'only the gradients asked for');
    t.ok(maxAbsDiff(only.dw!.data, dw!.data) === 0, 'dw alone is the same');
  }
});

t.test('conv2d at the bench size (16×64×32×32, 3×3) is fast and right', async (t) => {
  const c: ConvCase = { B: 16, Ci: 64, Co: 64, H: 32, W: 32, k: 3, stride: 1, padding: 'zero', groups: 1 };
  const x = randomTensor([c.B, c.Ci, c.H, c.W]);
  const w = randomTensor([c.Co, c.Ci, 3, 3], -0.05, 0.05);
  const y = ops.conv2dSync(x, w, null);
  // Spot-check one sample against the loops (all 16 would take the loops seconds).
  const one: ConvCase = { ...c, B: 1 };
  const ref = convRef(one, x.data.subarray(0, 64 * 32 * 32), w.data, null);
  t.ok(maxAbsDiff(y.data.subarray(0, ref.length), ref) < 1e-4, 'sample 0');
});

// ------------------------------------------------------------------ pixel shuffle

t.test('pixelShuffle is PyTorch\'s, and its backward the inverse permutation', async (t) => {
  const [B, C, r, H, W] = [2, 3, 2, 3, 4];
  const x = randomTensor([B, C * r * r, H, W]);
  const y = await ops.pixelShuffle(x, r);
  t.same(Array.from(ops.pixelShuffleSync(x, r).data), Array.from(y.data), 'Sync = async');
  t.same(y.dims, [B, C, H * r, W * r]);
  let bad = 0;
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < r; i++)
          for (let w = 0; w < W; w++)
            for (let j = 0; j < r; j++) {
              const want = x.data[((b * C * r * r + c * r * r + i * r + j) * H + h) * W + w];
              const got = y.data[((b * C + c) * H * r + h * r + i) * W * r + w * r + j];
              if (want !== got) bad++;
            }
  t.equal(bad, 0, 'y[b,c,h·r+i,w·r+j] = x[b,c·r²+i·r+j,h,w]');
  const back = await ops.pixelShuffleBackward(y, r);
  t.same(Array.from(back.data), Array.from(x.data), 'round trip');
  const dy = randomTensor(y.dims as number[]);
  const back2 = ops.pixelShuffleBackwardSync(dy, r);
  t.ok(Math.abs(dot(y.data, dy.data) - dot(x.data, back2.data)) < 1e-9, '<Px, dy> = <x, Pᵀdy>');
  let worst = 0;
  for (const i of sampleIndices(x.data.length, 20)) {
    worst = Math.max(worst, Math.abs(centralDiff(x, i, 1e-2, () => dot(dy.data, ops.pixelShuffleSync(x, r).data)) - back2.data[i]));
  }
  t.ok(worst < 1e-4, `pixelShuffleBackward vs central differences: ${worst}`);
});

// ------------------------------------------------------------------ activations, add

t.test('relu / leakyRelu and their backwards', async (t) => {
  const x = randomTensor([2, 3, 4, 5]);
  // Keep finite differences away from the kink.
  for (let i = 0; i < x.data.length; i++) if (Math.abs(x.data[i]) < 0.05) x.data[i] = 0.1;
  const dy = randomTensor([2, 3, 4, 5]);
  const y = ops.reluSync(x);
  t.same(Array.from(y.data), Array.from(x.data, (v) => Math.max(v, 0)));
  const ly = await ops.leakyRelu(x, { slope: 0.2 });
  t.same(Array.from(ly.data), Array.from(x.data, (v) => Math.fround(v > 0 ? v : v * Math.fround(0.2))));
  t.same(Array.from(ops.leakyReluSync(x).data), Array.from(x.data, (v) => Math.fround(v > 0 ? v : v * Math.fround(0.01))), 'default slope 0.01');
  for (const [name, fwd, bwd] of [
    ['relu', () => ops.reluSync(x), () => ops.reluBackwardSync(x, dy)],
    ['leakyRelu', () => ops.leakyReluSync(x, { slope: 0.2 }), () => ops.leakyReluBackwardSync(x, dy, { slope: 0.2 })],
  ] as const) {
    const dx = bwd();
    let worst = 0;
    for (const i of sampleIndices(x.data.length, 20)) worst = Math.max(worst, Math.abs(centralDiff(x, i, 1e-2, () => dot(dy.data, fwd().data)) - dx.data[i]));
    t.ok(worst < 1e-4, `${name}Backward vs central differences: ${worst}`);
  }
  const lb = await ops.leakyReluBackward(x, dy, { slope: 0.2 });
  t.same(Array.from(lb.data), Array.from(x.data, (v, i) => Math.fround(v > 0 ? dy.data[i] : dy.data[i] * Math.fround(0.2))), 'leakyReluBackward values');
  const zero = new Tensor(new Float32Array([0, -1, 2]), [3]);
  t.same(Array.from(ops.reluBackwardSync(zero, new Tensor(new Float32Array([5, 5, 5]), [3])).data), [0, 0, 5], 'relu gradient at 0 is 0');
  t.same(Array.from((await ops.reluBackward(zero, new Tensor(new Float32Array([1, 1, 1]), [3]))).data), [0, 0, 1], 'async');
});

t.test('add is a + alpha·b', async (t) => {
  const a = randomTensor([2, 3, 4, 4]);
  const b = randomTensor([2, 3, 4, 4]);
  t.same(Array.from(ops.addSync(a, b).data), Array.from(a.data, (v, i) => Math.fround(v + b.data[i])));
  const y = await ops.add(a, b, { alpha: -0.5 });
  t.same(Array.from(y.data), Array.from(a.data, (v, i) => Math.fround(v + Math.fround(-0.5 * b.data[i]))));
});

// ------------------------------------------------------------------ l1, charbonnier

t.test('l1 and charbonnier: values and dx', async (t) => {
  const x = randomTensor([2, 3, 5, 6]);
  const y = randomTensor([2, 3, 5, 6]);
  y.data[0] = x.data[0]; // sign(0) = 0
  const n = x.data.length;
  let l1 = 0;
  let ch = 0;
  const eps = 1e-3;
  for (let i = 0; i < n; i++) {
    const d = Math.fround(x.data[i] - y.data[i]);
    l1 += Math.abs(d);
    ch += Math.sqrt((x.data[i] - y.data[i]) ** 2 + eps * eps);
  }
  const r1 = await ops.l1(x, y);
  t.ok(Math.abs(r1.loss - l1 / n) < 1e-9, `l1 ${r1.loss} vs ${l1 / n}`);
  t.equal(r1.dx.data[0], 0, 'dx = 0 where x = y');
  t.same(Array.from(r1.dx.data.subarray(1)), Array.from(x.data.subarray(1), (v, i) => Math.fround(Math.sign(v - y.data[i + 1]) / n)));
  const r2 = await ops.charbonnier(x, y);
  t.ok(Math.abs(r2.loss - ch / n) < 1e-9, `charbonnier ${r2.loss} vs ${ch / n}`);
  const r3 = ops.charbonnierSync(x, y, { eps: 0.5, grad: false });
  t.notOk('dx' in r3, 'grad: false has no dx');
  let worst = 0;
  for (const i of sampleIndices(n, 20)) {
    if (i === 0) continue;
    const fd = centralDiff(x, i, 1e-3, () => ops.charbonnierSync(x, y, { eps: 0.5, grad: false }).loss);
    const dx = ops.charbonnierSync(x, y, { eps: 0.5 }).dx.data[i];
    worst = Math.max(worst, Math.abs(fd - dx) / (Math.abs(dx) + 1e-6));
  }
  t.ok(worst < 1e-2, `charbonnier dx vs central differences (relative): ${worst}`);
  worst = 0;
  for (const i of sampleIndices(n, 20)) {
    if (Math.abs(x.data[i] - y.data[i]) < 0.01) continue;
    const fd = centralDiff(x, i, 1e-3, () => ops.l1Sync(x, y, { grad: false }).loss);
    worst = Math.max(worst, Math.abs(fd - r1.dx.data[i]) * n);
  }
  t.ok(worst < 1e-2, `l1 dx vs central differences (×count): ${worst}`);
});

// ------------------------------------------------------------------ resize

/** BasicSR's calculate_weights_indices, re-derived: [out][taps] weights and 0-based symmetric indices. */
function axisRef(inLen: number, outLen: number, scale: number): { w: number[][]; idx: number[][] } {
  const cubic = (x: number) => {
    const a = Math.abs(x);
    return a <= 1 ? 1.5 * a ** 3 - 2.5 * a ** 2 + 1 : a <= 2 ? -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2 : 0;
  };
  const kw = scale < 1 ? 4 / scale : 4;
  const P = Math.ceil(kw) + 2;
  const w: number[][] = [];
  const idx: number[][] = [];
  for (let i = 1; i <= outLen; i++) {
    const u = i / scale + 0.5 * (1 - 1 / scale);
    const left = Math.floor(u - kw / 2);
    const row: number[] = [];
    const ri: number[] = [];
    for (let j = 0; j < P; j++) {
      const d = u - (left + j);
      row.push(scale < 1 ? scale * cubic(d * scale) : cubic(d));
      let k = left + j - 1;
      while (k < 0 || k >= inLen) k = k < 0 ? -1 - k : 2 * inLen - 1 - k;
      ri.push(k);
    }
    const s = row.reduce((a, b) => a + b, 0);
    w.push(row.map((v) => v / s));
    idx.push(ri);
  }
  return { w, idx };
}
/** imresize of one H×W plane: rows (H) first, then columns. */
function resizeRef(x: ArrayLike<number>, H: number, W: number, outH: number, outW: number, sh: number, sw: number): Float64Array {
  const ah = axisRef(H, outH, sh);
  const aw = axisRef(W, outW, sw);
  const tmp = new Float64Array(outH * W);
  for (let o = 0; o < outH; o++)
    for (let c = 0; c < W; c++) {
      let s = 0;
      ah.w[o].forEach((wt, j) => (s += wt * x[ah.idx[o][j] * W + c]));
      tmp[o * W + c] = s;
    }
  const y = new Float64Array(outH * outW);
  for (let o = 0; o < outH; o++)
    for (let c = 0; c < outW; c++) {
      let s = 0;
      aw.w[c].forEach((wt, j) => (s += wt * tmp[o * W + aw.idx[c][j]]));
      y[o * outW + c] = s;
    }
  return y;
}

t.test('resize: MATLAB/BasicSR bicubic', async (t) => {
  const constant = new Tensor(new Float32Array(2 * 3 * 7 * 9).fill(0.37), [2, 3, 7, 9]);
  for (const scale of [0.25, 0.5, 2, 3]) {
    const y = ops.resizeSync(constant, { scale });
    t.same(y.dims, [2, 3, Math.ceil(7 * scale), Math.ceil(9 * scale)], `dims ×${scale}`);
    t.ok(maxAbsDiff(y.data, new Float32Array(y.data.length).fill(0.37)) < 1e-6, `a constant stays constant ×${scale}`);
  }
  // A horizontal ramp: the cubic reproduces linear functions, so away from the mirrored edges
  // ×2 gives the ramp at the mapped positions u − 1 = (o + 0.5)/2 − 0.5 (0-based).
  const H = 4;
  const W = 12;
  const ramp = new Float32Array(H * W);
  for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) ramp[i * W + j] = 0.1 * j;
  const up = ops.resizeSync(new Tensor(ramp, [1, 1, H, W]), { scale: 2 });
  let worst = 0;
  for (let o = 4; o < 2 * W - 4; o++) worst = Math.max(worst, Math.abs(up.data[o] - 0.1 * ((o + 0.5) / 2 - 0.5)));
  t.ok(worst < 1e-6, `a ramp stays a ramp in the interior: ${worst}`);
  // ×1/4 of an 8×8 pattern, and ×3 of a 5×6 one, against the independent implementation above.
  for (const [h, w, scale] of [
    [8, 8, 0.25],
    [5, 6, 3],
    [9, 7, 0.5],
  ]) {
    const x = randomTensor([1, 2, h, w]);
    const y = await ops.resize(x, { scale });
    const oh = Math.ceil(h * scale);
    const ow = Math.ceil(w * scale);
    for (let p = 0; p < 2; p++) {
      const ref = resizeRef(x.data.subarray(p * h * w, (p + 1) * h * w), h, w, oh, ow, scale, scale);
      const got = y.data.subarray(p * oh * ow, (p + 1) * oh * ow);
      t.ok(maxAbsDiff(got, ref) < 2e-6, `${h}×${w} ×${scale} plane ${p}: ${maxAbsDiff(got, ref)}`);
    }
  }
  // size: [h, w] resizes each axis by its own scale out/in (MATLAB's rule for an output size).
  const small = randomTensor([1, 1, 8, 6]);
  const sized = ops.resizeSync(small, { size: [3, 9] });
  t.same(sized.dims, [1, 1, 3, 9], 'size: [h, w]');
  const sizedRef = resizeRef(small.data, 8, 6, 3, 9, 3 / 8, 9 / 6);
  t.ok(maxAbsDiff(sized.data, sizedRef) < 2e-6, `size: [3, 9] of 8×6: ${maxAbsDiff(sized.data, sizedRef)}`);
});

t.test('resizeBackward is the exact adjoint: <Ax, y> = <x, Aᵀy>', async (t) => {
  for (const opts of [{ scale: 0.25 }, { scale: 2 }, { scale: 0.5 }, { size: [5, 11] as const }]) {
    const x = randomTensor([2, 3, 8, 10]);
    const Ax = ops.resizeSync(x, opts);
    const y = randomTensor(Ax.dims as number[]);
    const Aty = await ops.resizeBackward(y, { ...opts, inputDims: x.dims });
    t.same(Aty.dims, x.dims);
    const l = dot(Ax.data, y.data);
    const r = dot(x.data, Aty.data);
    t.ok(Math.abs(l - r) < 1e-5 * (1 + Math.abs(l)), `${JSON.stringify(opts)}: ${l} vs ${r}`);
    let worst = 0;
    for (const i of sampleIndices(x.data.length, 12)) {
      const fd = centralDiff(x, i, 1e-2, () => dot(y.data, ops.resizeSync(x, opts).data));
      worst = Math.max(worst, Math.abs(fd - Aty.data[i]));
    }
    t.ok(worst < 1e-3, `${JSON.stringify(opts)} resizeBackward vs central differences: ${worst}`);
  }
});

// ------------------------------------------------------------------ adam

t.test("adam is PyTorch's Adam, in place, over 3 steps", async (t) => {
  const p = [randomTensor([4, 3, 3, 3]), randomTensor([4])];
  const dataBefore = p.map((x) => x.data);
  const ref = p.map((x) => Float64Array.from(x.data));
  const m = p.map((x) => new Float64Array(x.data.length));
  const v = p.map((x) => new Float64Array(x.data.length));
  const state = ops.adamState(p);
  t.ok(state instanceof AdamState);
  t.equal(state.step, 0);
  const [lr, b1, b2, eps] = [1e-2, 0.8, 0.99, 1e-6];
  for (let step = 1; step <= 3; step++) {
    const g = p.map((x) => randomTensor(x.dims as number[]));
    if (step === 2) await ops.adam(p, g, state, { lr, beta1: b1, beta2: b2, eps });
    else ops.adamSync(p, g, state, { lr, beta1: b1, beta2: b2, eps });
    // torch.optim.Adam: m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; p −= lr·(m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + ε)
    for (let k = 0; k < p.length; k++)
      for (let i = 0; i < ref[k].length; i++) {
        const gi = g[k].data[i];
        m[k][i] = b1 * m[k][i] + (1 - b1) * gi;
        v[k][i] = b2 * v[k][i] + (1 - b2) * gi * gi;
        ref[k][i] -= (lr * (m[k][i] / (1 - b1 ** step))) / (Math.sqrt(v[k][i] / (1 - b2 ** step)) + eps);
      }
    t.equal(state.step, step);
  }
  for (let k = 0; k < p.length; k++) {
    t.equal(p[k].data, dataBefore[k], 'the same Float32Array, updated in place');
    t.ok(maxAbsDiff(p[k].data, ref[k]) < 1e-6, `param ${k}: ${maxAbsDiff(p[k].data, ref[k])}`);
    t.ok(maxAbsDiff(state.m[k].data, m[k]) < 1e-6, `m ${k}`);
    t.ok(maxAbsDiff(state.v[k].data, v[k]) < 1e-6, `v ${k}`);
  }
  state.dispose();
  t.ok(state.disposed);
  t.throws(() => ops.adamSync(p, p, state), { code: 'E_DISPOSED' });
});

// ------------------------------------------------------------------ errors

t.test('bad input is a typed error naming the argument', async (t) => {
  const x = randomTensor([1, 4, 5, 5]);
  const w = randomTensor([2, 4, 3, 3]);
  const check = (fn: () => unknown, code: string, argument: string, msg?: RegExp) => {
    try {
      fn();
      t.fail(`expected ${code}`);
    } catch (e) {
      t.ok(e instanceof MghfError, 'MghfError');
      t.equal((e as MghfError).code, code, `${code} for ${argument}`);
      t.equal((e as MghfError & { argument?: string }).argument, argument);
      if (msg) t.match((e as Error).message, msg);
    }
  };
  check(() => ops.conv2dSync(x, w, null, { strid: 2 } as never), 'E_OPTION', 'opts.strid', /valid options are: stride, padding, groups/);
  check(() => ops.conv2dSync(x, w, null, { stride: 3 }), 'E_OPTION', 'opts.stride');
  check(() => ops.conv2dSync(x, w, null, { padding: 'same' as never }), 'E_OPTION', 'opts.padding');
  check(() => ops.conv2dSync(x, randomTensor([2, 4, 2, 2]), null), 'E_SHAPE', 'w');
  check(() => ops.conv2dSync(x, randomTensor([2, 3, 3, 3]), null), 'E_SHAPE', 'w');
  check(() => ops.conv2dSync(x, w, null, { groups: 3 }), 'E_SHAPE', 'opts.groups');
  check(() => ops.conv2dSync(x, w, randomTensor([3])), 'E_SHAPE', 'b');
  check(() => ops.conv2dSync(randomTensor([4, 5, 5]), w, null), 'E_SHAPE', 'x');
  check(() => ops.conv2dSync({ data: new Float64Array(100), dims: [1, 4, 5, 5] } as never, w, null), 'E_DTYPE', 'x');
  check(() => ops.conv2dSync(randomTensor([1, 4, 2, 2]), randomTensor([2, 4, 5, 5]), null, { padding: 'reflect' }), 'E_TOO_SMALL', 'x');
  check(() => ops.conv2dBackwardSync(x, w, randomTensor([1, 2, 3, 5])), 'E_SHAPE', 'dy');
  check(() => ops.conv2dBackwardSync(x, w, randomTensor([1, 2, 5, 5]), { dx: true } as never), 'E_OPTION', 'opts.dx', /bias, inputGrad, weightGrad/);
  check(() => ops.pixelShuffleSync(randomTensor([1, 3, 2, 2]), 2), 'E_SHAPE', 'x');
  check(() => ops.pixelShuffleSync(x, 0), 'E_ARGUMENT', 'factor');
  check(() => ops.leakyReluSync(x, { slop: 1 } as never), 'E_OPTION', 'opts.slop', /valid options are: slope/);
  check(() => ops.addSync(x, w), 'E_SHAPE', 'b');
  check(() => ops.l1Sync(x, w), 'E_SHAPE', 'y');
  check(() => ops.charbonnierSync(x, x, { eps: -1 }), 'E_OPTION', 'opts.eps');
  check(() => ops.resizeSync(x, {} as never), 'E_OPTION', 'opts');
  check(() => ops.resizeSync(x, { scale: 2, size: [2, 2] } as never), 'E_OPTION', 'opts');
  check(() => ops.resizeSync(x, { scale: 0 }), 'E_OPTION', 'opts.scale');
  check(() => ops.resizeBackwardSync(x, { scale: 2, inputDims: [1, 4, 5, 5] }), 'E_SHAPE', 'dy');
  check(() => ops.resizeBackwardSync(x, { scale: 2 } as never), 'E_OPTION', 'opts.inputDims');
  const st = ops.adamState([w]);
  check(() => ops.adamSync([w], [x], st), 'E_SHAPE', 'grads[0]');
  check(() => ops.adamSync([w], [w, w], st), 'E_ARGUMENT', 'grads');
  check(() => ops.adamSync([w], [w], st, { lr: -1 }), 'E_OPTION', 'opts.lr');
  check(() => ops.adamSync([w], [w], {} as never), 'E_ARGUMENT', 'state');
  const nan = randomTensor([1, 4, 5, 5]);
  nan.data[3] = NaN;
  t.throws(() => ops.reluSync(nan), { code: 'E_NONFINITE' });
  await t.rejects(ops.conv2d(x, w, null, { stride: 3 }), { code: 'E_OPTION' });
  st.dispose();
});

// ------------------------------------------------------------------ memory

t.test('memory() is flat over 200 calls in scope()', async (t) => {
  const x = randomTensor([1, 4, 8, 8]);
  const w = randomTensor([16, 4, 3, 3]);
  const step = () => {
    const y = ops.conv2dSync(x, w, null);
    const a = ops.leakyReluSync(y);
    const s = ops.pixelShuffleSync(a, 2);
    const r = ops.resizeSync(s, { scale: 0.5 });
    const l = ops.l1Sync(r, x);
    const dr = ops.resizeBackwardSync(l.dx, { scale: 0.5, inputDims: s.dims });
    const da = ops.pixelShuffleBackwardSync(dr, 2);
    const dy = ops.leakyReluBackwardSync(y, da);
    ops.conv2dBackwardSync(x, w, dy);
    ops.addSync(x, x);
  };
  scope(step);
  // Per call, not just start to end: a collection of earlier tests' garbage can only lower the
  // count, so a call that leaves anything behind shows as growth across it.
  const start = memory();
  let grew = 0;
  for (let i = 0; i < 200; i++) {
    const before = memory();
    scope(step);
    const after = memory();
    if (after.numTensors > before.numTensors || after.numBytes > before.numBytes) grew++;
  }
  await scope(async () => {
    await ops.conv2d(x, w, null);
  });
  const end = memory();
  t.equal(grew, 0, 'no call left a tensor behind');
  t.ok(end.numTensors <= start.numTensors, `tensors ${start.numTensors} → ${end.numTensors}`);
  t.equal(end.numNativeObjects, start.numNativeObjects);
});
