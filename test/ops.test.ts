// `ops` (issue 15, first slice): the loss composed from the ops equals mghfLoss bit for bit on the
// CPU, every op's backward against a finite difference through the TypeScript API, the typed
// errors (unknown options listed, bad shapes, use after dispose), and memory() flat over 2,000
// calls with scope() and with explicit dispose().
import t, { Test } from 'tap';
import {
  DfeTape,
  MghfError,
  Tensor,
  createWeights,
  memory,
  mghfLoss,
  mghfLossSync,
  ops,
  scope,
  type DfeWeights,
  type LossOptions,
  type LossResult,
  type PartName,
} from '../lib/index';
import { native } from '../lib/native';
import { imagePair, loadFixture } from './helpers/fixtures';

type Parts = Record<PartName, number>;
interface Composed {
  loss: number;
  parts: Parts;
  grad: Tensor;
}

// docs/MATH.md §7 as lib/loss.ts and native/core/loss.h weigh it: variant 'n' is L_n alone (Γ1 = 1);
// a Γ of 0 skips its term. native/core/loss.h computes each term's gradient on its own and then
// assembles ∂L/∂S per element as ((n + csc) + lip) in float32; `sumInOrder` does the same sums
// (a float32 sum of two float32 values is exact in double, then rounded once: Math.fround), so the
// gradient is the same bits.
function sumInOrder(terms: Tensor[]): Tensor {
  const out = new Float32Array(terms[0].data);
  for (const t of terms.slice(1)) {
    const d = t.data;
    for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i] + d[i]);
  }
  return new Tensor(out, terms[0].dims);
}

// chained: each term adds onto the previous term's dS, handed over (addTo + consume), instead of
// the separate dS summed in JS: the ops form each term's gradient alone and add it per element, as
// the loss assembles ∂L/∂S, so this too is the loss's gradient bit for bit (and no copies).
function composeSync(sr: Tensor, gt: Tensor, weights: DfeWeights, o: LossOptions, chained = false): Composed {
  const c = (o.variant ?? 'c') === 'c';
  const g1 = c ? (o.gamma1 ?? 2) : 1;
  const g2 = c ? (o.gamma2 ?? 1.5) : 0;
  const g3 = c ? (o.gamma3 ?? 1e-3) : 0;
  const inputRange = o.inputRange ?? 'unit';
  return scope(() => {
    const { F: G } = ops.dfeSync(gt, { weights, inputRange, tape: false });
    const { F: S, tape } = ops.dfeSync(sr, { weights, inputRange });
    const parts: Parts = { n: 0, mse: 0, corr: 0, gram: 0, csc: 0, lip: 0 };
    // The n term's gradient first even when Γ1 is 0 (then all zeros, as the loss's kn = 0 gives).
    const n = ops.mseTermSync(G, S, { scale: g1 });
    if (g1 !== 0) parts.n = n.n;
    const dS: Tensor[] = [n.dS];
    const onto = () => (chained ? { addTo: dS.pop(), consume: true } : {});
    if (g2 !== 0) {
      const selection = ops.entropyPruneReweightSync(G, S, { M: o.M, alpha: o.alpha, gamma: o.gamma });
      const r = ops.cscSync(G, S, selection, { beta1: o.beta1, beta2: o.beta2, beta3: o.beta3, scale: g2, ...onto() });
      Object.assign(parts, { mse: r.mse, corr: r.corr, gram: r.gram, csc: r.csc });
      dS.push(r.dS);
    }
    if (g3 !== 0) {
      const { patch, stride, pmax, tau, epsOt, Q, iters, sinkhornGrad } = o;
      const r = ops.monceSync(G, S, { patch, stride, pmax, tau, epsOt, Q, iters, sinkhornGrad, scale: g3, ...onto() });
      parts.lip = r.lip;
      dS.push(r.dS);
    }
    const loss = c ? g1 * parts.n + g2 * parts.csc + g3 * parts.lip : parts.n;
    const grad = chained
      ? ops.dfeBackwardSync(tape as DfeTape, dS[0], { consume: true })
      : ops.dfeBackwardSync(tape as DfeTape, sumInOrder(dS));
    return { loss, parts, grad };
  });
}

/** The same with the async ops inside an async scope. */
async function composeAsync(sr: Tensor, gt: Tensor, weights: DfeWeights, o: LossOptions): Promise<Composed> {
  const g1 = o.gamma1 ?? 2;
  const g2 = o.gamma2 ?? 1.5;
  const g3 = o.gamma3 ?? 1e-3;
  return scope(async () => {
    const [{ F: G }, { F: S, tape }] = await Promise.all([ops.dfe(gt, { weights, tape: false }), ops.dfe(sr, { weights })]);
    const selection = await ops.entropyPruneReweight(G, S, { M: o.M });
    const [n, c, l] = await Promise.all([
      ops.mseTerm(G, S, { scale: g1 }),
      ops.csc(G, S, selection, { scale: g2 }),
      ops.lip(G, S, { scale: g3 }),
    ]);
    const parts: Parts = { n: n.n, mse: c.mse, corr: c.corr, gram: c.gram, csc: c.csc, lip: l.lip };
    return { loss: g1 * n.n + g2 * c.csc + g3 * l.lip, parts, grad: await ops.dfeBackward(tape as DfeTape, sumInOrder([n.dS, c.dS, l.dS])) };
  });
}

function sameBits(t: Test, got: Composed, sr: Tensor, gt: Tensor, weights: DfeWeights, o: LossOptions, what: string): void {
  const r = mghfLossSync(sr, gt, { ...o, weights, device: 'cpu' }) as LossResult;
  t.equal(got.loss, r.loss, `${what}: loss ${got.loss} is mghfLoss's ${r.loss}`);
  for (const p of Object.keys(got.parts) as PartName[]) t.equal(got.parts[p], r.parts[p], `${what}: part ${p}`);
  t.same(got.grad.dims, r.grad.dims, `${what}: gradient dims`);
  const a = got.grad.data;
  const b = r.grad.data;
  let differ = 0;
  for (let i = 0; i < b.length; i++) if (!Object.is(a[i], b[i])) differ++;
  t.equal(differ, 0, `${what}: every gradient element bit for bit (${b.length})`);
}

// ------------------------------------------------------------------ (d) memory()

/** One small training step's worth of ops, everything it makes left for the caller to free. */
function step(x: Tensor, y: Tensor, weights: DfeWeights) {
  const { F: G } = ops.dfeSync(y, { weights, tape: false });
  const { F: S, tape } = ops.dfeSync(x, { weights });
  const m = ops.mseTermSync(G, S, { scale: 2 });
  const dx = ops.dfeBackwardSync(tape as DfeTape, m.dS);
  return { G, S, tape: tape as DfeTape, dS: m.dS, dx, n: m.n };
}

// First in the file: no garbage of other tests is collected (and uncounted) while it measures.
t.test('(d) memory() is flat over 2,000 calls with scope() and with explicit dispose()', async (t) => {
  const weights = createWeights({ seed: 4, channels: 2 });
  const { sr, gt } = imagePair([1, 3, 4, 4], 8);
  const start = memory();
  const blocks = liveBlocks();
  let grew = 0;
  for (let i = 0; i < 2000; i++) {
    scope(() => step(sr, gt, weights).n);
    const m = memory();
    if (m.numTensors !== start.numTensors || m.numNativeObjects !== start.numNativeObjects || m.nativeBytes !== start.nativeBytes) grew++;
    // dispose() frees an op output's native block at once, not at a later GC.
    if (liveBlocks() !== blocks) grew++;
  }
  t.equal(grew, 0, 'with scope(): no call left a tensor or tape behind');
  t.same(memory(), start, 'with scope(): memory() unchanged');

  for (let i = 0; i < 2000; i++) {
    const s = step(sr, gt, weights);
    for (const x of [s.G, s.S, s.tape, s.dS, s.dx]) x.dispose();
    const m = memory();
    if (m.numTensors !== start.numTensors || m.numNativeObjects !== start.numNativeObjects || liveBlocks() !== blocks) grew++;
  }
  t.equal(grew, 0, 'with dispose(): no call left a tensor or tape behind');
  t.same(memory(), start, 'with dispose(): memory() unchanged');

  for (let i = 0; i < 200; i++) {
    await scope(async () => {
      const { F, tape } = await ops.dfe(sr, { weights });
      const dx = await ops.dfeBackward(tape as DfeTape, F);
      return dx.size;
    });
  }
  t.same(memory(), start, 'with an async scope(): memory() unchanged');

  // What a scope returns survives it and belongs to the enclosing scope; the rest is freed.
  let inner: ReturnType<typeof step> | undefined;
  const kept = scope(() => {
    const r = scope(() => {
      inner = step(sr, gt, weights);
      return { dx: inner.dx, list: [inner.tape] };
    });
    t.notOk(r.dx.disposed, 'returned tensor kept');
    t.notOk(r.list[0].disposed, 'returned tape (inside an array) kept');
    t.ok(inner?.S.disposed && inner?.G.disposed && inner?.dS.disposed, 'the rest disposed');
    return r.dx;
  });
  t.notOk(kept.disposed, 'kept through the outer scope');
  t.ok(inner?.tape.disposed, 'the outer scope disposed what it did not return');
  kept.dispose();
  t.throws(() => scope(() => { step(sr, gt, weights); throw new Error('boom'); }), /boom/);
  await t.rejects(scope(async () => { step(sr, gt, weights); throw new Error('boom'); }), /boom/);
  t.same(memory(), start, 'a throwing scope disposes what it made');
  const { numTensors, numBytes } = memory().devices.cpu;
  t.equal(numTensors, start.numTensors);
  t.equal(numBytes, start.numBytes);
});

/** Op outputs JavaScript holds as native blocks (neither disposed nor collected). */
function liveBlocks(): number {
  return native().opMemory?.().blocks ?? NaN;
}

/** Element-wise identical (Object.is: NaN and −0 too). */
function identical(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

// Second: a failing op must leave nothing behind either (issue 15 item 5).
t.test('(d) a failed op frees what it allocated: memory() unchanged after 1,000 failing calls', async (t) => {
  const weights = createWeights({ seed: 4, channels: 2 });
  // Weights this large overflow float32 in the stem: dfe allocates F and its tape, runs, then
  // fails its finiteness check (E_NUMERIC) after every allocation.
  const huge = createWeights({ seed: 4, channels: 2 });
  for (const a of Object.values(huge.tensors)) (a as Float32Array).fill(1e30);
  const { sr, gt } = imagePair([1, 3, 4, 4], 8);
  const G = ops.dfeSync(gt, { weights, tape: false }).F;
  const far = new Tensor(new Float32Array(G.size).fill(3e38), G.dims);
  const near = new Tensor(new Float32Array(G.size).fill(-3e38), G.dims);
  const start = memory();
  const blocks = liveBlocks();
  let failed = 0;
  for (let i = 0; i < 1000; i++) {
    try {
      ops.dfeSync(sr, { weights: huge });
    } catch (err) {
      if ((err as MghfError).code === 'E_NUMERIC') failed++;
    }
    // A consumed addTo is the op's even when it fails: (S − G)² overflows float32 (E_NUMERIC).
    const d = ops.mseTermSync(G, G).dS;
    try {
      ops.mseTermSync(far, near, { addTo: d, consume: true });
    } catch (err) {
      if ((err as MghfError).code === 'E_NUMERIC' && d.disposed) failed++;
    }
  }
  t.equal(failed, 2000, 'every call failed with its typed error');
  // Garbage of the test before may be collected (and uncounted) meanwhile: counts may fall, never grow.
  const grew = (m: ReturnType<typeof memory>) =>
    m.numTensors > start.numTensors || m.numBytes > start.numBytes || m.numNativeObjects > start.numNativeObjects || m.nativeBytes > start.nativeBytes;
  t.notOk(grew(memory()), 'memory() did not grow');
  t.ok(liveBlocks() <= blocks, 'no native output block left behind');
  await t.rejects(ops.dfe(sr, { weights: huge }), { code: 'E_NUMERIC' });
  t.notOk(grew(memory()), 'nor after a failing async call');
  for (const x of [G, far, near]) x.dispose();
});

// ------------------------------------------------------------------ (e) outputs without copies

t.test('(e) op outputs are native blocks: dispose frees them, consume hands addTo over, async ops keep what they read', async (t) => {
  const weights = createWeights({ seed: 5, channels: 4 });
  const { sr, gt } = imagePair([1, 3, 6, 6], 9);
  const blocks = liveBlocks();
  const { F: G } = ops.dfeSync(gt, { weights, tape: false });
  const { F: S, tape } = ops.dfeSync(sr, { weights });
  t.equal(liveBlocks() - blocks, 2, 'F of gt and of sr are native blocks');

  // consume: the same bits as the copying addTo; the handed-over tensor is disposed, its array detached.
  const n = ops.mseTermSync(G, S, { scale: 2 });
  const copied = ops.mseTermSync(G, S, { scale: 3, addTo: n.dS });
  const handed = n.dS.data;
  const consumed = ops.mseTermSync(G, S, { scale: 3, addTo: n.dS, consume: true });
  t.ok(identical(consumed.dS.data, copied.dS.data), 'consume: dS bit for bit as with a copy');
  t.ok(n.dS.disposed, 'the consumed addTo is disposed');
  t.equal(handed.length, 0, 'and its array detached (its memory is the new dS)');
  const c1 = ops.cscSync(G, S, ops.entropyPruneReweightSync(G, S, { M: 2 }), { addTo: consumed.dS });
  const c2 = ops.cscSync(G, S, ops.entropyPruneReweightSync(G, S, { M: 2 }), { addTo: consumed.dS, consume: true });
  t.ok(identical(c1.dS.data, c2.dS.data), 'csc: consume = copy, bit for bit');
  const l1 = ops.lipSync(G, S, { patch: 4, stride: 2, addTo: c2.dS });
  const l2 = ops.lipSync(G, S, { patch: 4, stride: 2, addTo: c2.dS, consume: true });
  t.ok(identical(l1.dS.data, l2.dS.data), 'lip: consume = copy, bit for bit');

  // A caller's own array is never written: with consume it is copied (and the tensor disposed).
  const own = new Tensor(new Float32Array(S.size).fill(0.25), S.dims);
  const ownData = own.data;
  const m = ops.mseTermSync(G, S, { addTo: own, consume: true });
  t.ok(own.disposed && ownData.length === S.size && ownData.every((v) => v === 0.25), "a caller's array is left as it was");
  const m2 = ops.mseTermSync(G, S, { addTo: new Tensor(new Float32Array(S.size).fill(0.25), S.dims) });
  t.ok(identical(m.dS.data, m2.dS.data), 'and the sum is the same');

  // dfeBackward may use a consumed dF as scratch: the same dx.
  const dx1 = ops.dfeBackwardSync(tape as DfeTape, l2.dS);
  const dx2 = ops.dfeBackwardSync(tape as DfeTape, l2.dS, { consume: true });
  t.ok(identical(dx1.data, dx2.data) && l2.dS.disposed, 'dfeBackward: consume = copy, bit for bit');

  // dispose() frees the block now, not at the next garbage collection.
  const before = liveBlocks();
  const view = dx1.data;
  dx1.dispose();
  t.equal(liveBlocks(), before - 1, 'dispose() frees the native block');
  t.equal(view.length, 0, 'and detaches the array');

  // An async op keeps what it reads although its inputs are disposed (detached) while it runs.
  const want = ops.mseTermSync(G, S, { scale: 2 });
  const pending = ops.mseTerm(G, S, { scale: 2 });
  G.dispose();
  S.dispose();
  const got = await pending;
  t.equal(got.n, want.n, 'async value with its inputs disposed mid-call');
  t.ok(identical(got.dS.data, want.dS.data), 'async dS with its inputs disposed mid-call');

  // addTo that is also S, consumed: S is still read as it was (the op writes into a copy).
  const { F: S2 } = ops.dfeSync(sr, { weights, tape: false });
  const { F: G2 } = ops.dfeSync(gt, { weights, tape: false });
  const ref = ops.mseTermSync(G2, S2, { addTo: S2 });
  const alias = ops.mseTermSync(G2, S2, { addTo: S2, consume: true });
  t.ok(identical(alias.dS.data, ref.dS.data), 'addTo = S consumed: the same values');
  for (const x of [copied.dS, c1.dS, l1.dS, m.dS, m2.dS, dx2, got.dS, want.dS, G2, ref.dS, alias.dS, tape as DfeTape]) x.dispose();
  t.equal(liveBlocks(), blocks, 'every block freed');
});

t.test('(a) MGHF-n and MGHF-c composed from ops are mghfLoss, bit for bit', async (t) => {
  for (const name of ['c-tiny', 'n-tiny', 'c-options', 'c-symmetric', 'c-two-blocks', 'c-no-sinkhorn-grad', 'c-csc-only']) {
    const f = loadFixture(name);
    const o = f.options as LossOptions;
    const before = memory();
    const got = composeSync(f.sr, f.gt, f.weights, o);
    sameBits(t, got, f.sr, f.gt, f.weights, o, name);
    const chained = composeSync(f.sr, f.gt, f.weights, o, true);
    sameBits(t, chained, f.sr, f.gt, f.weights, o, `${name}, dS chained (addTo + consume)`);
    chained.grad.dispose();
    const after = memory();
    t.equal(after.numNativeObjects, before.numNativeObjects, `${name}: the scope freed the tape`);
    got.grad.dispose();
  }
  // createWeights with few channels, and weights of 0 that skip parts.
  const weights = createWeights({ seed: 5, channels: 6 });
  const { sr, gt } = imagePair([2, 3, 20, 24], 3);
  for (const o of [
    { M: 3, patch: 8, stride: 4, pmax: 12, iters: 7 },
    { M: 2, beta2: 0, gamma3: 0, alpha: 0.5, gamma: 2 },
    { M: 6, beta1: 0, beta3: 0, gamma1: 0, patch: 10, stride: 5 },
    { variant: 'n' as const },
  ]) {
    sameBits(t, composeSync(sr, gt, weights, o), sr, gt, weights, o, `createWeights(6) ${JSON.stringify(o)}`);
    sameBits(t, composeSync(sr, gt, weights, o, true), sr, gt, weights, o, `createWeights(6) ${JSON.stringify(o)}, chained`);
  }
  t.equal(ops.lip, ops.monce, 'ops.lip is ops.monce (the first release\'s name)');
  t.equal(ops.lipSync, ops.monceSync, 'ops.lipSync is ops.monceSync');
  const f = loadFixture('c-tiny');
  sameBits(t, await composeAsync(f.sr, f.gt, f.weights, { M: 4 }), f.sr, f.gt, f.weights, { M: 4 }, 'async ops in an async scope');
});

// ------------------------------------------------------------------ (b) finite differences

/** A deterministic ±1 direction. */
const direction = (n: number, seed: number) => new Float32Array(n).map((_, i) => (Math.sin((i + seed) * 12.9898) * 43758.5453 % 1 > 0 ? 1 : -1));
const dot = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const shifted = (x: Tensor, v: Float32Array, h: number) => new Tensor(x.data.map((a, i) => a + h * v[i]), x.dims);

/** Central difference of f along v with step h against the analytic directional derivative. */
function fdCheck(t: Test, what: string, f: (x: Tensor) => number, x: Tensor, grad: Float32Array, h: number, tol = 2e-2): void {
  const v = direction(x.size, 7);
  const fd = (f(shifted(x, v, h)) - f(shifted(x, v, -h))) / (2 * h);
  const an = dot(grad, v);
  t.ok(Math.abs(fd - an) <= tol * Math.abs(an), `${what}: finite difference ${fd} vs analytic ${an}`);
}

t.test('(b) every backward against a finite difference through the TypeScript API', async (t) => {
  const weights = createWeights({ seed: 9, channels: 4 });
  const { sr, gt } = imagePair([1, 3, 16, 16], 21);
  scope(() => {
    // dfeBackward: f(x) = Σ F(x)·R.
    const { F, tape } = ops.dfeSync(sr, { weights });
    const R = new Tensor(direction(F.size, 3).map((s, i) => s * (1 + (i % 5) / 5)), F.dims);
    const dx = ops.dfeBackwardSync(tape as DfeTape, R);
    fdCheck(t, 'dfeBackward', (x) => dot(ops.dfeSync(x, { weights, tape: false }).F.data, R.data), sr, dx.data, 1e-2);

    // G of a different image: S − G, and so each term, well away from 0 (the Gram term of near
    // features is a difference of nearly equal float32 sums, too noisy for a finite difference).
    const { F: G } = ops.dfeSync(new Tensor(gt.data.map((v) => 1 - v), gt.dims), { weights, tape: false });
    const S = F;
    let rms = 0;
    for (let i = 0; i < S.size; i++) rms += S.data[i] ** 2;
    const h = 1e-2 * Math.sqrt(rms / S.size);
    // mseTerm, with a scale, and added onto an existing gradient (addTo only shifts dS).
    const m = ops.mseTermSync(G, S, { scale: 3 });
    fdCheck(t, 'mseTerm', (s) => 3 * ops.mseTermSync(G, s, { grad: false }).n, S, m.dS.data, h);
    const base = new Tensor(direction(S.size, 1), S.dims);
    const m2 = ops.mseTermSync(G, S, { scale: 3, addTo: base });
    t.ok(m2.dS.data.every((d, i) => Math.abs(d - (base.data[i] + m.dS.data[i])) <= 1e-6), 'addTo adds');
    t.equal(base.data[0], direction(S.size, 1)[0], 'addTo itself is not changed');
    // csc with its selection held (the choice is constant for the gradient, SPEC §4).
    const sel = ops.entropyPruneReweightSync(G, S, { M: 3 });
    const c = ops.cscSync(G, S, sel, { scale: 2 });
    fdCheck(t, 'csc', (s) => 2 * ops.cscSync(G, s, sel, { grad: false }).csc, S, c.dS.data, h);
    for (const beta of [{ beta1: 1, beta2: 0, beta3: 0 }, { beta1: 0, beta2: 1, beta3: 0 }, { beta1: 0, beta2: 0, beta3: 1 }]) {
      const part = ops.cscSync(G, S, sel, beta);
      fdCheck(t, `csc ${JSON.stringify(beta)}`, (s) => ops.cscSync(G, s, sel, { ...beta, grad: false }).csc, S, part.dS.data, h);
    }
    // lip, unrolled through the Sinkhorn iterations (sinkhornGrad: false holds the plan constant,
    // which is not the derivative of the value: checked against mghfLoss in (a) instead).
    const lo = { patch: 8, stride: 4, pmax: 9, iters: 10 };
    const l = ops.lipSync(G, S, { ...lo, scale: 0.5 });
    fdCheck(t, 'lip', (s) => 0.5 * ops.lipSync(G, s, { ...lo, grad: false }).lip, S, l.dS.data, h);
  });
});

// ------------------------------------------------------------------ (c) errors

t.test('(c) unknown options are listed, bad shapes and use after dispose are typed', async (t) => {
  const weights = createWeights({ seed: 2, channels: 4 });
  const { sr } = imagePair([1, 3, 12, 12], 5);
  const { F: G } = ops.dfeSync(sr, { weights, tape: false });
  const { F: S, tape } = ops.dfeSync(sr, { weights });
  const sel = ops.entropyPruneReweightSync(G, S, { M: 2 });

  // Unknown option names, with the valid ones.
  t.throws(() => ops.dfeSync(sr, { weights, inputrange: 'unit' } as never), { code: 'E_OPTION', message: /Unknown option 'inputrange'.*did you mean 'inputRange'.*weights, inputRange, tape/ });
  t.throws(() => ops.entropyPruneReweightSync(G, S, { m: 2 } as never), { code: 'E_OPTION', message: /valid options are: M, alpha, gamma, selected/ });
  t.throws(() => ops.cscSync(G, S, sel, { gamma2: 1 } as never), { code: 'E_OPTION', message: /valid options are: beta1, beta2, beta3, scale, grad, addTo/ });
  t.throws(() => ops.lipSync(G, S, { patchSize: 4 } as never), { code: 'E_OPTION', message: /valid options are: patch, stride, pmax, tau, epsOt, Q, iters, sinkhornGrad, scale, grad, addTo/ });
  t.throws(() => ops.mseTermSync(G, S, { weight: 1 } as never), { code: 'E_OPTION', message: /valid options are: scale, grad, addTo/ });
  await t.rejects(ops.csc(G, S, sel, { betaa1: 1 } as never), { code: 'E_OPTION' }, 'the async variant rejects');
  // Bad values.
  t.throws(() => ops.cscSync(G, S, sel, { beta1: -1 }), { code: 'E_OPTION', argument: 'opts.beta1' });
  t.throws(() => ops.lipSync(G, S, { iters: 0.5 }), { code: 'E_OPTION', argument: 'opts.iters' });
  t.throws(() => ops.mseTermSync(G, S, { scale: NaN }), { code: 'E_OPTION', argument: 'opts.scale' });
  t.throws(() => ops.entropyPruneReweightSync(G, S, { M: 2, selected: [[1, 0]] }), { code: 'E_OPTION', argument: 'opts.selected' });

  // Shapes.
  const other = new Tensor(new Float32Array(4 * 12 * 13), [1, 4, 12, 13]);
  t.throws(() => ops.mseTermSync(G, other), { code: 'E_SHAPE', argument: 'S', message: /dims of G/ });
  t.throws(() => ops.mseTermSync(G, S, { addTo: other }), { code: 'E_SHAPE', argument: 'opts.addTo' });
  t.throws(() => ops.mseTermSync(new Tensor(new Float32Array(8), [2, 4]), S), { code: 'E_SHAPE', argument: 'G.dims' });
  t.throws(() => ops.dfeBackwardSync(tape as DfeTape, other), { code: 'E_SHAPE', argument: 'dF', message: /\[1,4,12,12\]/ });
  t.throws(() => ops.dfeSync(new Tensor(new Float32Array(4 * 144), [1, 4, 12, 12]), { weights }), { code: 'E_SHAPE', argument: 'x' });
  t.throws(() => ops.cscSync(G, S, { ...sel, selected: new Int32Array([0, 1, 2, 3, 0]) }), { code: 'E_SHAPE', argument: 'selection.selected' });
  t.throws(() => ops.cscSync(G, S, { ...sel, selected: new Int32Array([0, 9]) }), { code: 'E_SHAPE', argument: 'selection.selected' });
  t.throws(() => ops.cscSync(G, S, { ...sel, weights: new Float64Array(1) }), { code: 'E_SHAPE', argument: 'selection.weights' });
  t.throws(() => ops.lipSync(G, S, { patch: 13 }), { code: 'E_TOO_SMALL', argument: 'S' });
  t.throws(() => ops.dfeBackwardSync({} as never, S), { code: 'E_ARGUMENT', argument: 'tape' });
  t.throws(() => new DfeTape(Symbol('x'), {}, [1], [1]), { code: 'E_ARGUMENT' });
  const nan = new Tensor(S.data.slice(), S.dims);
  nan.data[5] = NaN;
  t.throws(() => ops.mseTermSync(G, nan), { code: 'E_NONFINITE', argument: 'S' });

  // Use after dispose: a typed error naming the argument and the object.
  const dead = new Tensor(S.data.slice(), S.dims);
  dead.dispose();
  dead.dispose();
  t.ok(dead.disposed, 'disposed');
  t.equal(dead.size, S.size, 'size still known');
  t.throws(() => dead.data, { code: 'E_DISPOSED', message: new RegExp(`Tensor #${dead.id} \\[1,4,12,12\\] \\(cpu\\) was disposed`) });
  t.throws(() => ops.mseTermSync(G, dead), { code: 'E_DISPOSED', argument: 'S', message: /^S \(Tensor #\d+ \[1,4,12,12\] \(cpu\)\) was disposed/ });
  await t.rejects(ops.csc(dead, S, sel), { code: 'E_DISPOSED', argument: 'G' });
  t.throws(() => mghfLossSync(new Tensor(sr.data, sr.dims), (() => { const x = new Tensor(sr.data, sr.dims); x[Symbol.dispose](); return x; })(), { weights }), {
    code: 'E_DISPOSED',
    argument: 'gt',
  });
  const tape2 = ops.dfeSync(sr, { weights }).tape as DfeTape;
  tape2[Symbol.dispose]();
  t.ok(tape2.disposed);
  t.throws(() => ops.dfeBackwardSync(tape2, S), { code: 'E_DISPOSED', argument: 'tape', message: /^tape \(DFE tape #\d+ of x \[1,3,12,12\] \(cpu\)\) was disposed/ });
  const e = t.throws(() => ops.dfeBackwardSync(tape2, S)) as unknown;
  t.ok(e instanceof MghfError, 'an MghfError');
  (tape as DfeTape).dispose();
});

t.test('mghfLoss in a scope: its result tensors are freed unless returned', async (t) => {
  const weights = createWeights({ seed: 4, channels: 2 });
  const { sr, gt } = imagePair([1, 3, 8, 8], 8);
  const start = memory();
  const loss = await scope(async () => (await mghfLoss(sr, gt, { weights, variant: 'n' })).loss);
  t.ok(Number.isFinite(loss));
  t.equal(memory().numTensors, start.numTensors);
});

// ------------------------------------------------------------------ (f) the DFE's pieces

t.test('(f) normalize → stem → coupling × K is ops.dfe bit for bit, and every piece backward (input and weights) against finite differences', async (t) => {
  const weights = createWeights({ seed: 11, channels: 4, blocks: 2 });
  const { sr } = imagePair([2, 3, 6, 7], 12);
  for (const inputRange of ['unit', 'symmetric'] as const) {
    const x = inputRange === 'unit' ? sr : new Tensor(sr.data.map((v) => v * 2 - 1), sr.dims);
    scope(() => {
      const { F, tape } = ops.dfeSync(x, { weights, inputRange });
      const xh = ops.normalizeSync(x, { inputRange });
      const { z, tape: stemTape } = ops.stemSync(xh, { weights });
      const c0 = ops.couplingSync(z, { weights, block: 0 });
      const c1 = ops.couplingSync(c0.y, { weights, block: 1 });
      t.ok(identical(c1.y.data, F.data), `${inputRange}: the pieces' features are dfe's, bit for bit`);
      // And back: the pieces' backwards chained are dfeBackward.
      const dF = new Tensor(direction(F.size, 3), F.dims);
      const dx = ops.dfeBackwardSync(tape as DfeTape, dF);
      const d1 = ops.couplingBackwardSync(c1.tape as DfeTape, dF);
      const d0 = ops.couplingBackwardSync(c0.tape as DfeTape, d1.dx, { consume: true });
      const ds = ops.stemBackwardSync(stemTape as DfeTape, d0.dx);
      const dxPieces = ops.normalizeBackwardSync(ds.dx, { inputRange });
      t.ok(identical(dxPieces.data, dx.data), `${inputRange}: the pieces' backwards are dfeBackward, bit for bit`);
    });
  }

  // Finite differences of ⟨piece(input), v⟩ through the TypeScript API.
  const inner = (y: Tensor, v: Float32Array) => dot(y.data, v);
  const xh = ops.normalizeSync(sr);
  const vx = direction(xh.size, 5);
  fdCheck(t, 'normalizeBackward', (x) => scope(() => inner(ops.normalizeSync(x), vx)), sr, ops.normalizeBackwardSync(new Tensor(vx, xh.dims)).data, 1e-2, 1e-3);

  const z = ops.stemSync(xh, { weights, tape: false }).z;
  const vz = direction(z.size, 6);
  const stemGrad = scope(() => {
    const { tape } = ops.stemSync(xh, { weights });
    return ops.stemBackwardSync(tape as DfeTape, new Tensor(vz, z.dims), { weightGrad: true });
  });
  fdCheck(t, 'stemBackward: dx̂', (x) => scope(() => inner(ops.stemSync(x, { weights, tape: false }).z, vz)), xh, stemGrad.dx.data, 1e-2);
  t.same(Object.keys(stemGrad.weightGrads ?? {}).sort(), ['stem.bias', 'stem.weight'], 'stem: the weight gradients by name');

  // A mid-range z for the coupling (its input is a block's output in the DFE).
  const y0 = ops.couplingSync(z, { weights, block: 0, tape: false }).y;
  const vy = direction(y0.size, 8);
  const coupGrad = scope(() => {
    const { tape } = ops.couplingSync(z, { weights, block: 1 });
    return ops.couplingBackwardSync(tape as DfeTape, new Tensor(vy, y0.dims), { weightGrad: true });
  });
  fdCheck(t, 'couplingBackward: dz', (zz) => scope(() => inner(ops.couplingSync(zz, { weights, block: 1, tape: false }).y, vy)), z, coupGrad.dx.data, 1e-2);
  const noWeightGrad = scope(() => {
    const { tape } = ops.couplingSync(z, { weights, block: 1 });
    return ops.couplingBackwardSync(tape as DfeTape, new Tensor(vy, y0.dims));
  });
  const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const gap = maxAbs(coupGrad.dx.data.map((v, i) => v - noWeightGrad.dx.data[i]));
  t.ok(gap <= 1e-5 * maxAbs(noWeightGrad.dx.data), `couplingBackward: dz with and without weightGrad agree (max gap ${gap})`);
  t.equal(noWeightGrad.weightGrads, undefined, 'no weight gradients unless asked');

  // Weight gradients: perturb one tensor of the weights along u. A step can cross a ReLU6 kink of
  // these tiny random blocks (the difference then moves with h), so the best of three steps is
  // compared; float32 rounding keeps h from going lower.
  const weightFd = (what: string, name: string, grads: Record<string, Float64Array> | undefined, f: (w: DfeWeights) => number) => {
    const base = weights.tensors[name] as Float32Array;
    const u = direction(base.length, name.length);
    const at = (s: number) => ({ ...weights, tensors: { ...weights.tensors, [name]: base.map((v, i) => v + s * u[i]) } }) as DfeWeights;
    const g = grads?.[name];
    t.ok(g && g.length === base.length, `${what}: ∂/∂${name} returned`);
    let an = 0;
    for (let i = 0; i < u.length; i++) an += (g?.[i] ?? NaN) * u[i];
    const fds = [3e-3, 1e-3, 3e-4].map((h) => (f(at(h)) - f(at(-h))) / (2 * h));
    const best = fds.reduce((b, fd) => (Math.abs(fd - an) < Math.abs(b - an) ? fd : b));
    t.ok(Math.abs(best - an) <= 2e-2 * Math.abs(an), `${what}: ∂/∂${name} finite difference ${best} (of ${fds.map((v) => v.toPrecision(4)).join(', ')}) vs analytic ${an}`);
  };
  for (const name of ['stem.weight', 'stem.bias']) {
    weightFd('stemBackward', name, stemGrad.weightGrads, (w) => scope(() => inner(ops.stemSync(xh, { weights: w, tape: false }).z, vz)));
  }
  t.same(Object.keys(coupGrad.weightGrads ?? {}).sort(), Object.keys(weights.tensors).filter((k) => k.startsWith('inn.1.')).sort(), 'coupling: every weight of block 1, by name');
  for (const name of ['inn.1.mix.weight', 'inn.1.mix.bias', 'inn.1.phi.expand.weight', 'inn.1.phi.depthwise.weight', 'inn.1.rho.project.weight', 'inn.1.eta.expand.weight', 'inn.1.rho.depthwise.weight', 'inn.1.eta.project.weight']) {
    weightFd('couplingBackward', name, coupGrad.weightGrads, (w) => scope(() => inner(ops.couplingSync(z, { weights: w, block: 1, tape: false }).y, vy)));
  }

  // Typed errors.
  t.throws(() => ops.couplingSync(z, { weights, block: 2 }), { code: 'E_OPTION', argument: 'opts.block' });
  t.throws(() => ops.stemSync(z, { weights }), { code: 'E_SHAPE' });
  t.throws(() => ops.couplingSync(xh, { weights }), { code: 'E_SHAPE' });
  const { tape: st } = ops.stemSync(xh, { weights });
  t.throws(() => ops.couplingBackwardSync(st as DfeTape, xh), { code: 'E_SHAPE', argument: 'dy' });
  t.throws(() => ops.couplingBackwardSync(st as DfeTape, y0), /tape must be the tape of a coupling op/);
  t.throws(() => ops.stemBackwardSync(st as DfeTape, z, { bad: 1 } as never), { code: 'E_OPTION', message: /valid options are: weightGrad, consume/ });
  // Weights near float32's largest overflow the stem's 27-term sums: E_NUMERIC, no tape left.
  const huge = createWeights({ seed: 11, channels: 4, blocks: 2 });
  for (const a of Object.values(huge.tensors)) (a as Float32Array).fill(3e38);
  t.throws(() => ops.stemSync(xh, { weights: huge }), { code: 'E_NUMERIC' });
  for (const x of [xh, z, y0, stemGrad.dx, coupGrad.dx, noWeightGrad.dx, st as DfeTape]) x.dispose();

  // The async forms give the same bits, and the pieces leave nothing behind. Garbage of the checks
  // above may be collected (and uncounted) meanwhile, so the counts may fall, never grow.
  const start = memory();
  const startBlocks = liveBlocks();
  for (let i = 0; i < 200; i++) {
    await scope(async () => {
      const a = await ops.normalize(sr);
      const { z: za, tape: ta } = await ops.stem(a, { weights });
      const { y, tape: tc } = await ops.coupling(za, { weights, block: 1 });
      const { dx: dza, weightGrads } = await ops.couplingBackward(tc as DfeTape, y, { weightGrad: i % 50 === 0 });
      const { dx } = await ops.stemBackward(ta as DfeTape, dza, { consume: true });
      const back = await ops.normalizeBackward(dx);
      if (i === 0) {
        const want = scope(() => {
          const zs = ops.stemSync(ops.normalizeSync(sr), { weights, tape: false }).z;
          return ops.couplingSync(zs, { weights, block: 1, tape: false }).y;
        });
        t.ok(identical(y.data, want.data), 'async pieces: the sync bits');
        t.ok(weightGrads !== undefined && back.size === sr.size, 'async backwards');
        want.dispose();
      }
    });
  }
  const end = memory();
  t.ok(
    end.numTensors <= start.numTensors && end.numBytes <= start.numBytes && end.numNativeObjects <= start.numNativeObjects && liveBlocks() <= startBlocks,
    `memory() did not grow over 200 piece forward/backward cycles in a scope (${JSON.stringify([start.numTensors, end.numTensors, start.numNativeObjects, end.numNativeObjects])})`,
  );
});
