#!/usr/bin/env node
// Peak memory of one mghfLoss call, per case in a fresh child process (so one case's peak cannot
// hide another's): the child loads the library and the default weights, makes sr and gt, notes its
// RSS (the baseline), runs the call once and reports the peak RSS (getrusage's maxrss) above that
// baseline, per input pixel, and the median time of three more calls. CPU backend.
//
//   npm run build && node bench/memory.js [--json FILE]
//
// Environment: MGHF_NUM_THREADS (default 2, as npm run bench).
'use strict';

if (!process.env.MGHF_NUM_THREADS) process.env.MGHF_NUM_THREADS = '2';
const { spawnSync } = require('node:child_process');
const { writeFileSync } = require('node:fs');
const path = require('node:path');

const CASES = [
  { B: 1, H: 256, W: 256, variant: 'c', grad: true },
  { B: 1, H: 512, W: 512, variant: 'c', grad: true },
  { B: 4, H: 256, W: 256, variant: 'c', grad: true },
  { B: 1, H: 512, W: 512, variant: 'n', grad: true },
  { B: 1, H: 512, W: 512, variant: 'c', grad: false },
  { B: 1, H: 512, W: 512, variant: 'n', grad: false },
];

function child(spec) {
  const lib = require(path.resolve(__dirname, '..', 'dist', 'index.js'));
  const { B, H, W, variant, grad } = spec;
  const n = B * 3 * H * W;
  const sr = new Float32Array(n);
  const gt = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    // Smooth structure plus a little deterministic noise: a natural image's statistics, roughly.
    const x = i % W, y = Math.floor(i / W) % H;
    const v = 0.5 + 0.25 * Math.sin(x / 7) * Math.cos(y / 11);
    gt[i] = v;
    sr[i] = Math.min(1, Math.max(0, v + 0.05 * Math.sin(i * 12.9898)));
  }
  const opts = { variant, device: 'cpu', grad };
  const a = { data: sr, dims: [B, 3, H, W], type: 'float32' };
  const b = { data: gt, dims: [B, 3, H, W], type: 'float32' };
  const tiny = { data: new Float32Array(3 * 32 * 32).fill(0.5), dims: [1, 3, 32, 32], type: 'float32' };
  lib.mghfLossSync(tiny, tiny, { variant, device: 'cpu' }); // load the weights, start the pool: not counted
  global.gc?.();
  const base = process.memoryUsage().rss;
  const r = lib.mghfLossSync(a, b, opts);
  const peak = process.resourceUsage().maxRSS * 1024;
  const times = [];
  for (let k = 0; k < 3; k++) {
    const t0 = process.hrtime.bigint();
    lib.mghfLossSync(a, b, opts);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((x, y) => x - y);
  process.stdout.write(JSON.stringify({ ...spec, loss: r.loss, base, peak, ms: times[1] }));
}

if (process.argv[2] === '--child') {
  child(JSON.parse(process.argv[3]));
} else {
  const json = process.argv.indexOf('--json');
  const rows = [];
  console.log('case                      peak RSS   above baseline   per pixel   time (median of 3)');
  for (const spec of CASES) {
    const r = spawnSync(process.execPath, ['--expose-gc', __filename, '--child', JSON.stringify(spec)], { encoding: 'utf8' });
    if (r.status !== 0) {
      console.log(`${JSON.stringify(spec)}: failed: ${r.stderr.split('\n').slice(0, 3).join(' ')}`);
      continue;
    }
    const o = JSON.parse(r.stdout);
    const above = o.peak - o.base;
    const px = o.B * o.H * o.W;
    rows.push({ ...o, above, perPixel: above / px });
    const name = `B=${o.B} ${o.H}² ${o.variant}${o.grad ? '' : ' grad:false'}`;
    console.log(`${name.padEnd(24)} ${(o.peak / 2 ** 20).toFixed(0).padStart(6)} MiB ${(above / 2 ** 20).toFixed(0).padStart(8)} MiB ${(above / px).toFixed(0).padStart(8)} B ${o.ms.toFixed(0).padStart(10)} ms`);
  }
  if (json > 0) writeFileSync(process.argv[json + 1], JSON.stringify(rows, null, 2));
}
