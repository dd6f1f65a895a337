'use strict';
// The trainer ops of issue 16 (README "Trainer ops") at the sizes of an SR training step (batch 16,
// HR 128², LR 32², 64 channels), each through its …Sync form: part of `npm run bench -- --ops`
// (bench/ops.js calls runTrainerOps). bench/NOTES.md "Trainer ops" records and explains the numbers.

const PEAK_GFLOPS = 370; // as bench/ops.js: register-only FMA, 2 threads
const STREAM_GBS = 20;

const { timeIt } = require('./ops');

function randomTensor(Tensor, dims, scale = 1) {
  const n = dims.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  let s = 1;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    d[i] = scale * (s / 4294967296 - 0.5);
  }
  return new Tensor(d, dims);
}

function runTrainerOps(lib, h, cli) {
  const { ops, scope, Tensor } = lib;
  const { median, table } = h;
  const { repeat, warmup } = cli;
  const [B, C, H, W] = [16, 64, 32, 32];
  const convMacs = B * C * C * 9 * H * W; // 3×3, stride 1: Co·Ci·9 MAC per output pixel
  const mib = (dims) => (4 * dims.reduce((a, b) => a * b, 1)) / 2 ** 20;
  const rows = [];
  const out = [];
  const add = (op, phase, ms, c) => {
    const g = c.flop != null ? c.flop / 1e9 : c.bytes / 1e9;
    const rate = c.flop != null ? `${(g / (ms / 1e3)).toFixed(1)} GFLOP/s` : `${(g / (ms / 1e3)).toFixed(1)} GB/s`;
    const floorMs = (1e3 * g) / (c.flop != null ? PEAK_GFLOPS : STREAM_GBS);
    const work = c.flop != null ? `${g.toFixed(2)} GFLOP` : `${(c.bytes / 2 ** 20).toFixed(0)} MiB`;
    rows.push([op, phase, ms.toFixed(1), work, rate, `${((100 * floorMs) / ms).toFixed(0)} %`]);
    out.push({ op, phase, median_ms: ms, ...c, floor_ms: floorMs });
  };
  const med = (fn) => 1e3 * median(timeIt(() => scope(fn), repeat, warmup));
  scope(() => {
    const x = randomTensor(Tensor, [B, C, H, W]);
    const w = randomTensor(Tensor, [C, C, 3, 3], 0.1);
    const b = randomTensor(Tensor, [C]);
    const y = ops.conv2dSync(x, w, b);
    add('conv2d', 'forward 16×64×32² 3×3', med(() => ops.conv2dSync(x, w, b)), { flop: 2 * convMacs });
    add('conv2dBackward', 'dx', med(() => ops.conv2dBackwardSync(x, w, y, { weightGrad: false, bias: false })), { flop: 2 * convMacs });
    add('conv2dBackward', 'dw + db', med(() => ops.conv2dBackwardSync(x, w, y, { inputGrad: false })), { flop: 2 * convMacs });
    const hr = randomTensor(Tensor, [B, 3, 4 * H, 4 * W]);
    // Bytes: the tensors read and written (the counted floor of a copy-bound op).
    add('resize', '×1/4 of 16×3×128²', med(() => ops.resizeSync(hr, { scale: 0.25 })), { bytes: 2 ** 20 * (mib(hr.dims) * 17 / 16) });
    const lr = ops.resizeSync(hr, { scale: 0.25 });
    add('resizeBackward', '→ 16×3×128²', med(() => ops.resizeBackwardSync(lr, { scale: 0.25, inputDims: hr.dims })), { bytes: 2 ** 20 * (mib(hr.dims) * 17 / 16) });
    const f = randomTensor(Tensor, [B, 48, H, W]);
    add('pixelShuffle', '×4 of 16×48×32²', med(() => ops.pixelShuffleSync(f, 4)), { bytes: 2 ** 20 * 2 * mib(f.dims) });
    add('l1', 'with dx, 16×3×128²', med(() => ops.l1Sync(hr, hr)), { bytes: 2 ** 20 * 3 * mib(hr.dims) });
    add('leakyRelu', '16×64×32²', med(() => ops.leakyReluSync(x)), { bytes: 2 ** 20 * 2 * mib(x.dims) });
    const params = [w, b];
    const state = ops.adamState(params);
    const grads = [randomTensor(Tensor, w.dims, 1e-3), randomTensor(Tensor, b.dims, 1e-3)];
    const n = w.data.length + b.data.length;
    add('adam', `${n} parameters`, med(() => ops.adamSync(params, grads, state)), { bytes: 4 * 4 * n * 2 });
  });
  console.log(`\nTrainer ops (issue 16), an SR step's sizes, ${warmup} warm-up + median of ${repeat}, each call in scope():`);
  console.log(table(['op', 'phase', 'median ms', 'counted', 'rate', 'of floor'], rows));
  return out;
}

module.exports = { runTrainerOps };
