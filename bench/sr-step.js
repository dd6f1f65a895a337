// `npm run bench -- --sr`: one training step of the examples/sr network (SrNet, 32 channels,
// 4 residual blocks) at batch 16, HR 128² (LR 32²), on the CPU:
//   - with L1 alone, and with L1 + MGHF-c (default options), built from the library's ops;
//   - the MGHF-c loss alone at that size (its own cost: the step's target is ≤ 1.5× of it);
//   - the same network and L1 step in tfjs's pure-JS CPU backend (the Node alternative without a
//     native download), in the same process. tfjs has no bicubic resize, so its skip path is
//     resizeBilinear: a few MFLOP either way, nothing next to the convolutions.
// Flags (from bench/run.js): --repeat R (default 5), --warmup W (default 1), --no-tfjs.
'use strict';

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function time(fn, repeat, warmup) {
  for (let i = 0; i < warmup; i++) await fn();
  const t = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(t);
}

// The library's seeded generator (lib/srnet.ts), so the bench's inputs are the ones SrNet's seeds give.
const mulberry32 = (seed) => require('../dist/srnet').mulberry32(seed);

const B = 16, HR = 128, LR = 32, C = 32, BLOCKS = 4;

async function ours(lib, repeat, warmup) {
  const { SrNet, Tensor, ops, mghfLoss, scope } = lib;
  const rand = mulberry32(5);
  const hr = new Tensor(Float32Array.from({ length: B * 3 * HR * HR }, () => rand()), [B, 3, HR, HR]);
  const lr = await ops.resize(hr, { scale: 0.25 });
  const net = SrNet.create({ channels: C, blocks: BLOCKS }, 1);
  const params = net.paramList();
  const adam = ops.adamState(params);
  const step = (withMghf) => () =>
    scope(async () => {
      const { sr, tape } = await net.forward(lr);
      const l1 = await ops.l1(sr, hr);
      let dsr = l1.dx;
      if (withMghf) {
        const m = await mghfLoss(sr, hr, { variant: 'c' });
        dsr = await ops.add(l1.dx, m.grad, { alpha: 0.1 });
      }
      const grads = await net.backward(tape, dsr);
      await ops.adam(params, grads, adam, { lr: 1e-4 });
    });
  const l1Ms = await time(step(false), repeat, warmup);
  const lossMs = await time(async () => {
    const sr = await net.upscale(lr);
    const m = await mghfLoss(sr, hr, { variant: 'c' });
    m.grad.dispose();
    sr.dispose();
  }, repeat, warmup);
  const netForwardMs = await time(async () => (await net.upscale(lr)).dispose(), repeat, warmup);
  const cMs = await time(step(true), repeat, warmup);
  net.dispose();
  return { l1Ms, cMs, lossMs: lossMs - netForwardMs, netForwardMs };
}

async function tfjsStep(warmup) {
  let tf;
  try {
    tf = require('@tensorflow/tfjs');
  } catch (err) {
    return { skipped: `@tensorflow/tfjs is not installed (${err.code ?? err.message})` };
  }
  await tf.setBackend('cpu');
  const rand = mulberry32(5);
  const init = (shape, fanIn) => tf.variable(tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (rand() * 2 - 1) / Math.sqrt(fanIn)), shape));
  const conv = (ci, co) => ({ w: init([3, 3, ci, co], 9 * ci), b: init([co], 9 * ci) });
  const head = conv(3, C), body = conv(C, C), tail = conv(C, 48);
  const blocks = Array.from({ length: BLOCKS }, () => [conv(C, C), conv(C, C)]);
  const apply = (x, l) => tf.add(tf.conv2d(x, l.w, 1, 'same'), l.b);
  // tf.depthToSpace has no gradient in tfjs 4, so the pixel shuffle is written as reshape +
  // transpose (PyTorch's channel order c·r² + i·r + j, as SrNet's), which tfjs differentiates.
  const pixelShuffle = (x, r) => {
    const [b, h, w, c] = x.shape;
    const C = c / (r * r);
    return tf.reshape(tf.transpose(tf.reshape(x, [b, h, w, C, r, r]), [0, 1, 4, 2, 5, 3]), [b, h * r, w * r, C]);
  };
  const hr = tf.tensor(Float32Array.from({ length: B * HR * HR * 3 }, () => rand()), [B, HR, HR, 3]);
  const lr = tf.image.resizeBilinear(hr, [LR, LR]);
  const optimizer = tf.train.adam(1e-4);
  const step = () =>
    tf.tidy(() => {
      optimizer.minimize(() => {
        const h = apply(tf.sub(lr, 0.5), head);
        let x = h;
        for (const [c1, c2] of blocks) x = tf.add(x, apply(tf.relu(apply(x, c1)), c2));
        const f = tf.add(apply(x, body), h);
        const sr = tf.add(pixelShuffle(apply(f, tail), 4), tf.image.resizeBilinear(lr, [HR, HR]));
        return tf.mean(tf.abs(tf.sub(sr, hr)));
      });
    });
  for (let i = 0; i < warmup; i++) step();
  const t0 = process.hrtime.bigint();
  step();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, version: tf.version.tfjs };
}

async function runSrStep(lib, cli) {
  const repeat = cli.repeat, warmup = cli.warmup;
  console.log(`\nOne training step of the examples/sr network (SrNet ${C} channels, ${BLOCKS} blocks), batch ${B}, HR ${HR}² (LR ${LR}²), CPU, ${process.env.MGHF_NUM_THREADS} threads, median of ${repeat}:`);
  const o = await ours(lib, repeat, warmup);
  console.log(`  mghf, L1 step:            ${o.l1Ms.toFixed(0)} ms`);
  console.log(`  mghf, L1 + MGHF-c step:   ${o.cMs.toFixed(0)} ms  (the MGHF-c loss alone: ${o.lossMs.toFixed(0)} ms; step / loss = ${(o.cMs / o.lossMs).toFixed(2)}×, target ≤ 1.5×)`);
  const res = { ...o };
  if (cli.tfjs) {
    console.log('  tfjs (pure-JS CPU backend), the same L1 step: running one warm-up and one timed step (minutes)…');
    const t = await tfjsStep(1);
    if (t.skipped) console.log(`  tfjs: skipped, ${t.skipped}`);
    else {
      console.log(`  tfjs ${t.version}, L1 step:      ${(t.ms / 1000).toFixed(1)} s  → mghf is ${(t.ms / o.l1Ms).toFixed(0)}× faster (target ≥ 100×)`);
      res.tfjsMs = t.ms;
      res.tfjsVersion = t.version;
    }
  }
  return res;
}

module.exports = { runSrStep };
