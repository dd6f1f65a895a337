'use strict';
// `npm run bench -- --ops` (bench/run.js calls runOps): each op of `ops` (README "Using the kernels
// from a trainer") timed alone on the CPU with the default (bundled) weights, N = 128, at
// B=1 3×256×256 and B=4 3×128×128, next to its counted work (bench/NOTES.md, "Ops from Node"):
// milliseconds (median of R after W warm-ups), GFLOP/s or GB/s, and the fraction of the time floor
// that count gives at the bench machine's peak (370 GFLOP/s FMA on two threads, ~20 GB/s stream;
// floor ms / measured ms, so 100 % is the floor). Then the composition overhead: MGHF-c composed
// from the Sync ops as test/ops.test.ts composes it, against mghfLossSync, alternating in one process.
//
// The term ops have no separate backward call: "forward" is `grad: false`, "backward" is the
// median with `grad: true` minus that. dfe "forward" is `tape: false` (as for gt); "forward + tape"
// is `tape: true` (as for sr); dfeBackward reuses one tape.

const PEAK_GFLOPS = 370; // bench/NOTES.md, "Time floor on the bench machine": register-only FMA, 2 threads
const STREAM_GBS = 20; // bench/NOTES.md: "~15–25 GB/s two cores can stream"

// DFE convolutions, FLOP per pixel per pass (NOTES, "Counted floor: MGHF-n": 144,896 forward, the
// same for the input-only backward).
const DFE_CONV_FLOP_PX = 144896;

function lipCounts(batch, height, width, { channels = 128, patch = 32, stride = 16, pmax = 256 } = {}) {
  const grid = (n) => Math.floor((n - patch) / stride) + 1;
  const P = Math.min(pmax, grid(height) * grid(width));
  const pairs = batch * channels;
  const gemm = pairs * 2 * P * P * patch * patch; // one of sim = Q·Gᵀ or ∂Q = ∂sim·G
  return { fwd: gemm + pairs * 200 * P * P, bwd: gemm + pairs * 600 * P * P }; // + Sinkhorn fwd / unrolled bwd
}

// Counted work per op and phase: { flop } (GEMM-dominated) or { bytes } (elementwise, read + written).
function counts(batch, height, width, N = 128, M = 64) {
  const px = batch * height * width;
  const feat = batch * N * height * width * 4; // one [B, N, H, W] float32 tensor, bytes
  const lip = lipCounts(batch, height, width, { channels: N });
  return {
    dfe: { fwd: { flop: DFE_CONV_FLOP_PX * px } },
    dfeTape: { fwd: { flop: DFE_CONV_FLOP_PX * px } },
    dfeBackward: { bwd: { flop: DFE_CONV_FLOP_PX * px } },
    entropy: { fwd: { bytes: 2 * feat } }, // reads G and S once
    csc: { fwd: { flop: 2 * 2 * batch * M * M * height * width }, bwd: { flop: 2 * batch * M * M * height * width } },
    lip: { fwd: { flop: lip.fwd }, bwd: { flop: lip.bwd } },
    mse: { fwd: { bytes: 2 * feat }, bwd: { bytes: feat } }, // reads G, S; backward writes dS
    // The DFE pieces (NOTES, "Counted floor: MGHF-n", K = 1): normalize reads x and writes x̂; the
    // stem is 6,912 FLOP/px, the coupling block (mix + φ, ρ, η) 137,984, the same again for the
    // input gradient and once more for the weight gradients.
    normalize: { fwd: { bytes: 2 * px * 3 * 4 }, bwd: { bytes: 2 * px * 3 * 4 } },
    stem: { fwd: { flop: STEM_FLOP_PX * px }, bwd: { flop: STEM_FLOP_PX * px }, bwdW: { flop: 2 * STEM_FLOP_PX * px } },
    coupling: { fwd: { flop: COUPLING_FLOP_PX * px }, bwd: { flop: COUPLING_FLOP_PX * px }, bwdW: { flop: 2 * COUPLING_FLOP_PX * px } },
  };
}

const STEM_FLOP_PX = 6912;
const COUPLING_FLOP_PX = DFE_CONV_FLOP_PX - STEM_FLOP_PX;

// The DFE pieces of one image batch: normalize → stem → coupling 0, each forward with its tape and
// each backward with and without the weight gradients. `x` is on the device the rows are for.
function pieceRows(ops, x, C, add, med) {
  add('normalize', 'forward', C.normalize.fwd, med(() => ops.normalizeSync(x).dispose()));
  const xh = ops.normalizeSync(x);
  add('normalizeBackward', 'backward', C.normalize.bwd, med(() => ops.normalizeBackwardSync(xh).dispose()));
  add('stem', 'forward + tape', C.stem.fwd, med(() => { const r = ops.stemSync(xh); r.z.dispose(); r.tape.dispose(); }));
  const stem = ops.stemSync(xh);
  add('stemBackward', 'backward (input)', C.stem.bwd, med(() => ops.stemBackwardSync(stem.tape, stem.z).dx.dispose()));
  add('stemBackward', 'backward (input + weights)', C.stem.bwdW, med(() => ops.stemBackwardSync(stem.tape, stem.z, { weightGrad: true }).dx.dispose()));
  add('coupling', 'forward + tape', C.coupling.fwd, med(() => { const r = ops.couplingSync(stem.z); r.y.dispose(); r.tape.dispose(); }));
  const block = ops.couplingSync(stem.z);
  add('couplingBackward', 'backward (input)', C.coupling.bwd, med(() => ops.couplingBackwardSync(block.tape, block.y).dx.dispose()));
  add('couplingBackward', 'backward (input + weights)', C.coupling.bwdW, med(() => ops.couplingBackwardSync(block.tape, block.y, { weightGrad: true }).dx.dispose()));
}

function timeIt(fn, repeat, warmup) {
  for (let i = 0; i < warmup; i++) fn();
  const ts = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return ts;
}

function rate(c, s) {
  if (c.flop != null) {
    const g = c.flop / 1e9;
    return { work: `${g.toFixed(2)} GFLOP`, rate: `${(g / s).toFixed(1)} GFLOP/s`, floor: g / PEAK_GFLOPS };
  }
  const g = c.bytes / 1e9;
  return { work: `${(c.bytes / 2 ** 20).toFixed(0)} MiB`, rate: `${(g / s).toFixed(1)} GB/s`, floor: g / STREAM_GBS };
}

function runOps(lib, h, cli) {
  const { ops, scope, mghfLossSync, Tensor } = lib;
  const { makeInputs, median, table, cases } = h;
  const { repeat, warmup } = cli;
  const info = lib.backendInfo();
  console.log(
    `ops bench: CPU, ${info.threads} threads (MGHF_NUM_THREADS=${process.env.MGHF_NUM_THREADS}), ISA ${info.isa}, ` +
      `default weights (N = 128), ${warmup} warm-up + median of ${repeat}`,
  );
  const gpu = cudaUsable(info);
  console.log(gpu.use ? `CUDA ops: on ${info.cuda.deviceName}, device tensors (rows "cuda"; no floor: it is the CPU's)` : `CUDA ops: not timed (${gpu.why})`);
  console.log(`floor = counted work at ${PEAK_GFLOPS} GFLOP/s (FMA peak, 2 threads) or ${STREAM_GBS} GB/s (stream); "of floor" = floor ms / measured ms\n`);

  const rows = [];
  const out = [];
  for (const kase of cases) {
    const { sr, gt } = makeInputs(Tensor, kase.batch, kase.height, kase.width);
    const C = counts(kase.batch, kase.height, kase.width);
    const add = (op, phase, c, s) => {
      const r = rate(c, s);
      rows.push([kase.name, op, phase, (s * 1e3).toFixed(1), r.work, r.rate, `${((100 * r.floor * 1e3) / (s * 1e3)).toFixed(0)} %`]);
      out.push({ case: kase.name, op, phase, median_ms: s * 1e3, ...c, floor_ms: r.floor * 1e3 });
    };
    const med = (fn) => median(timeIt(fn, repeat, warmup));
    scope(() => {
      const G = ops.dfeSync(gt, { tape: false }).F;
      const { F: S, tape } = ops.dfeSync(sr);
      add('dfe', 'forward (tape: false)', C.dfe.fwd, med(() => ops.dfeSync(sr, { tape: false }).F.dispose()));
      add('dfe', 'forward + tape', C.dfeTape.fwd, med(() => { const r = ops.dfeSync(sr); r.F.dispose(); r.tape.dispose(); }));
      const dF = ops.mseTermSync(G, S).dS;
      add('dfeBackward', 'backward', C.dfeBackward.bwd, med(() => ops.dfeBackwardSync(tape, dF).dispose()));
      const eS = med(() => ops.entropyPruneReweightSync(G, S));
      add('entropyPruneReweight', 'forward (no backward)', C.entropy.fwd, eS);
      const sel = ops.entropyPruneReweightSync(G, S);
      const term = (name, f, c) => {
        const fS = med(() => f(false));
        const fbS = med(() => { const r = f(true); r.dS.dispose(); });
        add(name, 'forward (grad: false)', c.fwd, fS);
        add(name, 'backward (grad − no grad)', c.bwd, Math.max(fbS - fS, 1e-9));
        rows.push([kase.name, name, 'forward + backward', (fbS * 1e3).toFixed(1), '', '', '']);
      };
      term('csc', (grad) => ops.cscSync(G, S, sel, { grad }), C.csc);
      term('lip', (grad) => ops.lipSync(G, S, { grad }), C.lip);
      term('mseTerm', (grad) => ops.mseTermSync(G, S, { grad }), C.mse);
      pieceRows(ops, sr, C, add, med);
    });
  }
  if (gpu.use) for (const kase of cases) cudaRows(lib, h, cli, kase, counts(kase.batch, kase.height, kase.width), rows, out);
  console.log(table(['case', 'op', 'phase', 'median ms', 'counted', 'rate', 'of floor'], rows));

  // Composition overhead: MGHF-c from ops (default options and weights) against one
  // mghfLossSync call, alternating, B=1 256². The term gradients are chained: each term op adds
  // into the previous one's dS, handed over (consume: no copy), as mghfLoss assembles ∂L/∂S.
  const kase = cases[0];
  const { sr, gt } = makeInputs(Tensor, kase.batch, kase.height, kase.width);
  const g1 = 2, g2 = 1.5, g3 = 1e-3;
  const composed = () => scope(() => {
    const { F: G } = ops.dfeSync(gt, { tape: false });
    const { F: S, tape } = ops.dfeSync(sr);
    const n = ops.mseTermSync(G, S, { scale: g1 });
    const selection = ops.entropyPruneReweightSync(G, S);
    const c = ops.cscSync(G, S, selection, { scale: g2, addTo: n.dS, consume: true });
    const l = ops.lipSync(G, S, { scale: g3, addTo: c.dS, consume: true });
    return { loss: g1 * n.n + g2 * c.csc + g3 * l.lip, grad: ops.dfeBackwardSync(tape, l.dS, { consume: true }) };
  });
  // The same with each term's dS alone, summed in JS (the first slice's composition).
  const summed = () => scope(() => {
    const { F: G } = ops.dfeSync(gt, { tape: false });
    const { F: S, tape } = ops.dfeSync(sr);
    const n = ops.mseTermSync(G, S, { scale: g1 });
    const selection = ops.entropyPruneReweightSync(G, S);
    const c = ops.cscSync(G, S, selection, { scale: g2 });
    const l = ops.lipSync(G, S, { scale: g3 });
    const sum = new Float32Array(n.dS.data);
    for (const d of [c.dS.data, l.dS.data]) for (let i = 0; i < sum.length; i++) sum[i] = Math.fround(sum[i] + d[i]);
    return { loss: g1 * n.n + g2 * c.csc + g3 * l.lip, grad: ops.dfeBackwardSync(tape, new Tensor(sum, n.dS.dims)) };
  });
  const whole = () => mghfLossSync(sr, gt, { device: 'cpu' });
  const rounds = Math.max(repeat, 5);
  const a = composed(), b = whole(), s0 = summed(); // warm-up, and a check that all compute the same
  const sameLoss = a.loss === b.loss && s0.loss === b.loss;
  const maxDiff = a.grad.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.grad.data[i])), 0);
  const maxDiffSummed = s0.grad.data.reduce((m, v, i) => Math.max(m, Math.abs(v - b.grad.data[i])), 0);
  a.grad.dispose();
  s0.grad.dispose();
  const tc = [], tw = [], ts0 = [];
  const order = [[composed, tc], [whole, tw], [summed, ts0]];
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < order.length; j++) {
      const [fn, ts] = order[(i + j) % order.length]; // rotated, so no path always runs first
      const t0 = process.hrtime.bigint();
      const r = fn();
      ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
      if (r.grad && r.grad.dispose) r.grad.dispose();
    }
  }
  const mc = median(tc), mw = median(tw), ms = median(ts0);
  const row = (name, m, ts) => [name, (m * 1e3).toFixed(1), (Math.min(...ts) * 1e3).toFixed(1), (Math.max(...ts) * 1e3).toFixed(1)];
  console.log(`\nComposition overhead, MGHF-c at ${kase.name}, default options, rotating, ${rounds} rounds after a warm-up:`);
  console.log(table(['path', 'median ms', 'min ms', 'max ms'], [
    row('composed from ops (Sync, scope, dS chained with consume)', mc, tc),
    row("mghfLossSync(sr, gt, { device: 'cpu' })", mw, tw),
    row('composed, each dS alone, summed in JS', ms, ts0),
  ]));
  console.log(`composed / whole = ${(mc / mw).toFixed(3)} (${((mc - mw) * 1e3).toFixed(1)} ms); summed in JS / whole = ${(ms / mw).toFixed(3)}; ` +
    `same loss bits: ${sameLoss}, max |Δgrad| chained ${maxDiff.toExponential(1)}, summed ${maxDiffSummed.toExponential(1)}`);
  const trainerOps = require('./trainer-ops').runTrainerOps(lib, h, cli);
  return { ops: out, composition: { composed_ms: mc * 1e3, whole_ms: mw * 1e3, summed_ms: ms * 1e3, ratio: mc / mw, sameLoss, maxDiff, maxDiffSummed }, trainerOps };
}

// The emulator (tools/cuda-emu) runs kernels 10^3–10^5 times slower: timing it says nothing.
function cudaUsable(info) {
  if (!info.cuda.available) return { use: false, why: info.cuda.reason };
  if (/emulat/i.test(info.cuda.deviceName ?? '') && !process.env.MGHF_BENCH_EMU) return { use: false, why: 'the device is the host emulator' };
  return { use: true };
}

// Each op on cuda:0 tensors. Every CUDA op synchronises its stream before it returns, so the wall
// time is the device time plus launch and, for dfe, the weights' upload. Then mghfLoss on device
// tensors against host tensors with device 'cuda': the difference is the images' upload and the
// gradient's download.
function cudaRows(lib, h, cli, kase, C, rows, out) {
  const { ops, scope, mghfLossSync, Tensor } = lib;
  const med = (fn) => h.median(timeIt(fn, cli.repeat, cli.warmup));
  const add = (op, phase, c, s) => {
    const r = rate(c, s);
    rows.push([kase.name, `${op} (cuda)`, phase, (s * 1e3).toFixed(2), r.work, r.rate, '']);
    out.push({ case: kase.name, op, device: 'cuda:0', phase, median_ms: s * 1e3, ...c });
  };
  scope(() => {
    const host = h.makeInputs(Tensor, kase.batch, kase.height, kase.width);
    const sr = host.sr.toSync('cuda'), gt = host.gt.toSync('cuda');
    const G = ops.dfeSync(gt, { tape: false }).F;
    const { F: S, tape } = ops.dfeSync(sr);
    add('dfe', 'forward (tape: false)', C.dfe.fwd, med(() => ops.dfeSync(sr, { tape: false }).F.dispose()));
    const dF = ops.mseTermSync(G, S).dS;
    add('dfeBackward', 'backward', C.dfeBackward.bwd, med(() => ops.dfeBackwardSync(tape, dF).dispose()));
    add('entropyPruneReweight', 'forward (no backward)', C.entropy.fwd, med(() => ops.entropyPruneReweightSync(G, S)));
    const sel = ops.entropyPruneReweightSync(G, S);
    const term = (name, f, c) => {
      const fS = med(() => f(false));
      const fbS = med(() => f(true).dS.dispose());
      add(name, 'forward (grad: false)', c.fwd, fS);
      add(name, 'backward (grad − no grad)', c.bwd, Math.max(fbS - fS, 1e-9));
    };
    term('csc', (grad) => ops.cscSync(G, S, sel, { grad }), C.csc);
    term('lip', (grad) => ops.lipSync(G, S, { grad }), C.lip);
    term('mseTerm', (grad) => ops.mseTermSync(G, S, { grad }), C.mse);
    pieceRows(ops, sr, C, add, med);
    const onDevice = med(() => mghfLossSync(sr, gt).grad.dispose());
    const fromHost = med(() => mghfLossSync(host.sr, host.gt, { device: 'cuda' }).grad.dispose());
    rows.push([kase.name, 'mghfLoss (cuda)', 'device tensors in, grad on device', (onDevice * 1e3).toFixed(2), '', '', '']);
    rows.push([kase.name, 'mghfLoss (cuda)', "host tensors, device: 'cuda'", (fromHost * 1e3).toFixed(2), '', '', '']);
    out.push({ case: kase.name, op: 'mghfLoss', device: 'cuda:0', device_tensors_ms: onDevice * 1e3, host_tensors_ms: fromHost * 1e3 });
  });
}

module.exports = { runOps, counts, pieceRows, timeIt };
