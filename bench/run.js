#!/usr/bin/env node
// `npm run bench`: MGHF-n and MGHF-c forward+backward on the CPU backend, next to the counted
// floors (bench/NOTES.md) and, when /usr/bin/python3 has torch, next to PyTorch peers run with the
// same thread count (bench/torch_peer.py: MGHF-n and MGHF-c written plainly in PyTorch, and a
// VGG16 perceptual loss). For MGHF-c it also prints the library's per-stage timings
// (`profile: true` → result.timings) and, as a cross-check, each term's cost measured by
// switching the other terms off (their Γ = 0) minus the DFE-only cost (variant 'n').
// If the library rejects variant 'c' (not built yet), the MGHF-c part prints a notice and the
// bench goes on. When backendInfo().cuda.available, it also times MGHF-n and MGHF-c on device
// 'cuda' (B=4 3×256×256 and B=16 3×128×128, with per-stage timings) and runs the PyTorch peers
// with --device cuda; otherwise one line says why the GPU part is skipped. (Without Node, e.g. on
// a GPU machine: build-gpu/mghf_bench_cuda and scripts/device-check.sh.)
//
//   npm run build && npm run bench
//   node bench/run.js --repeat 9 --json bench/out/results.json
//   node bench/run.js --variant c --c-peer-repeat 2
//   MGHF_NUM_THREADS=4 node bench/run.js
//
// Flags: --repeat R (timed runs, default 5), --warmup W (default 1), --json FILE, --no-peers,
// --variant n|c|all (default all), --c-peer-repeat R (timed runs of the slow MGHF-c PyTorch
// peers, default 3, after one warm-up), --no-toggles (skip the Γ-toggle cross-check), --no-gpu
// (skip the CUDA part), --gpu-repeat R (timed runs on the GPU, ours and peers, default 20, after 3
// warm-ups), --ops (only the per-op table of bench/ops.js and the composition overhead; honours
// --repeat, --warmup, --json), --sr (only one training step of the examples/sr network, L1 and
// L1 + MGHF-c, beside tfjs's pure-JS CPU backend: bench/sr-step.js; --no-tfjs skips tfjs).
// Environment: MGHF_NUM_THREADS (default 2, read by the addon when it loads),
// MGHF_BENCH_PYTHON (default /usr/bin/python3).
'use strict';

// Must be set before the library is required: the native pool reads it once, at load.
if (!process.env.MGHF_NUM_THREADS) process.env.MGHF_NUM_THREADS = '2';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const CASES = [
  { name: 'B=1 3×256×256', batch: 1, height: 256, width: 256 },
  { name: 'B=4 3×128×128', batch: 4, height: 128, width: 128 },
];
const PEERS_N = ['mghf-n', 'vgg16'];
// mghf-c: the plain PyTorch peer (LIP GEMM by torch.bmm); mghf-c-onednn: the same with that GEMM
// as a oneDNN grouped conv1d (Debian's torch links the reference BLAS, see bench/NOTES.md).
const PEERS_C = ['mghf-c', 'mghf-c-onednn'];
// The CUDA part: both variants at two batch sizes of equal pixel count (bench/NOTES.md, "CUDA floor").
const GPU_CASES = [
  { name: 'B=4 3×256×256', batch: 4, height: 256, width: 256 },
  { name: 'B=16 3×128×128', batch: 16, height: 128, width: 128 },
];
const PEERS_GPU = ['mghf-n', 'mghf-c'];
const GPU_WARMUP = 3;
const PYTHON = process.env.MGHF_BENCH_PYTHON || '/usr/bin/python3';
const PEER_SCRIPT = path.join(__dirname, 'torch_peer.py');

function parseCli() {
  const USAGE =
    'Usage: node bench/run.js [--repeat R] [--warmup W] [--json FILE] [--no-peers] [--variant n|c|all] ' +
    '[--c-peer-repeat R] [--no-toggles] [--no-gpu] [--gpu-repeat R] [--no-train | --train-only] [--ops] [--sr [--no-tfjs]]';
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        repeat: { type: 'string', default: '5' },
        warmup: { type: 'string', default: '1' },
        json: { type: 'string' },
        'no-peers': { type: 'boolean', default: false },
        variant: { type: 'string', default: 'all' },
        'c-peer-repeat': { type: 'string', default: '3' },
        'no-toggles': { type: 'boolean', default: false },
        'no-gpu': { type: 'boolean', default: false },
        'gpu-repeat': { type: 'string', default: '20' },
        'no-train': { type: 'boolean', default: false },
        'train-only': { type: 'boolean', default: false },
        ops: { type: 'boolean', default: false },
        sr: { type: 'boolean', default: false },
        'no-tfjs': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`bench: ${err.message}\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const repeat = Number(values.repeat);
  const warmup = Number(values.warmup);
  const cPeerRepeat = Number(values['c-peer-repeat']);
  const gpuRepeat = Number(values['gpu-repeat']);
  if (!Number.isInteger(repeat) || repeat < 1 || !Number.isInteger(warmup) || warmup < 0 ||
      !Number.isInteger(cPeerRepeat) || cPeerRepeat < 1 || !Number.isInteger(gpuRepeat) || gpuRepeat < 1) {
    console.error('bench: --repeat, --c-peer-repeat and --gpu-repeat must be integers ≥ 1 and --warmup an integer ≥ 0');
    process.exit(2);
  }
  if (!['n', 'c', 'all'].includes(values.variant)) {
    console.error(`bench: --variant must be n, c or all\n${USAGE}`);
    process.exit(2);
  }
  return {
    repeat, warmup, json: values.json, peers: !values['no-peers'], cPeerRepeat,
    doN: values.variant !== 'c', doC: values.variant !== 'n', toggles: !values['no-toggles'],
    gpu: !values['no-gpu'], gpuRepeat, train: !values['no-train'], trainOnly: values['train-only'], ops: values.ops,
    sr: values.sr, tfjs: !values['no-tfjs'],
  };
}

function loadLibrary() {
  try {
    return require('../dist');
  } catch (err) {
    console.error(`bench: cannot load ../dist (${err.message.split('\n')[0]}).`);
    console.error('bench: build first: npm run build (and the native addon: npm run build:native).');
    process.exit(1);
  }
}

// ---------------------------------------------------------------------------------------------
// Inputs: deterministic, image-like. gt is a sum of a few smooth waves plus faint texture,
// sr = gt + small noise, both clamped to [0, 1].

// The library's seeded generator (lib/srnet.ts), so the bench's inputs are the ones SrNet's seeds give.
const mulberry32 = (seed) => require('../dist/srnet').mulberry32(seed);

function makeInputs(Tensor, batch, height, width, seed = 0) {
  const rand = mulberry32(seed);
  const n = batch * 3 * height * width;
  const gt = new Float32Array(n);
  const sr = new Float32Array(n);
  for (let bc = 0; bc < batch * 3; bc++) {
    const waves = Array.from({ length: 4 }, () => ({
      fy: (0.5 + 6 * rand()) / height,
      fx: (0.5 + 6 * rand()) / width,
      phase: 2 * Math.PI * rand(),
      amp: 0.1 + 0.1 * rand(),
    }));
    const base = bc * height * width;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let v = 0.5;
        for (const w of waves) v += w.amp * Math.sin(2 * Math.PI * (w.fy * y + w.fx * x) + w.phase);
        v += 0.04 * (rand() - 0.5);
        const g = Math.min(1, Math.max(0, v));
        gt[base + y * width + x] = g;
        sr[base + y * width + x] = Math.min(1, Math.max(0, g + 0.04 * (rand() - 0.5)));
      }
    }
  }
  const dims = [batch, 3, height, width];
  return { sr: new Tensor(sr, dims), gt: new Tensor(gt, dims) };
}

// ---------------------------------------------------------------------------------------------
// Counted floor (bench/NOTES.md): every conv is stride 1, so its multiply-adds per pixel equal
// its weight count. Forward of DFE(gt) + forward of DFE(sr) + input-only backward of DFE(sr)
// is three passes of those multiply-adds; elementwise work (~1.4% more) is left out.

function dfeMacsPerPixel(channels = 128, blocks = 1, expand = 2) {
  const c = channels / 2;
  const h = expand * c;
  return 27 * channels + blocks * (channels * channels + 3 * (2 * c * h + 9 * h));
}

function countedGflop(batch, height, width) {
  return (3 * 2 * dfeMacsPerPixel() * batch * height * width) / 1e9;
}

// MGHF-c with the SPEC defaults (bench/NOTES.md, "Counted floor: MGHF-c"): the DFE count above,
// plus the LIP similarity GEMM and its input backward (2 · P²·s²·2 per (b, k), all N channels),
// the unrolled Sinkhorn (200·P² forward, counted 3× that for its backward), and the CSC Grams
// (two forward Grams and the backward GEMM, 2·M²·H·W each per sample). Entropy, MSE, correlation,
// logits and patch normalisation (< 1 GFLOP together) are left out.
function countedGflopC(batch, height, width, { channels = 128, M = 64, patch = 32, stride = 16, pmax = 256 } = {}) {
  const grid = (n) => Math.floor((n - patch) / stride) + 1;
  const P = Math.min(pmax, grid(height) * grid(width));
  const pairs = batch * channels;
  const lipGemm = pairs * 2 * P * P * patch * patch * 2;
  const sinkhorn = pairs * (200 + 600) * P * P;
  const gram = batch * 3 * 2 * M * M * height * width;
  return countedGflop(batch, height, width) + (lipGemm + sinkhorn + gram) / 1e9;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Median wall time of mghfLossSync(sr, gt, opts); with collect, also the per-stage medians of
// result.timings (profile: true).
function timeCall(lib, inputs, opts, { repeat, warmup }, label, collect = false) {
  const { sr, gt } = inputs;
  let last;
  for (let i = 0; i < warmup; i++) last = lib.mghfLossSync(sr, gt, opts);
  const runs = [];
  const stages = {};
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    last = lib.mghfLossSync(sr, gt, opts);
    runs.push(Number(process.hrtime.bigint() - t0) / 1e9);
    if (collect && last.timings) {
      for (const [k, v] of Object.entries(last.timings)) (stages[k] ??= []).push(v);
    }
  }
  if (!Number.isFinite(last.loss)) throw new Error(`bench: non-finite loss ${last.loss} for ${label}`);
  const out = { median_s: median(runs), runs, loss: last.loss };
  if (collect) {
    out.stages_ms = Object.keys(stages).length ? Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, median(v)])) : null;
  }
  return out;
}

function timeOurs(lib, weights, kase, cli) {
  const inputs = makeInputs(lib.Tensor, kase.batch, kase.height, kase.width);
  return timeCall(lib, inputs, { variant: 'n', weights, device: 'cpu' }, cli, kase.name);
}

// The part of an Error worth printing (first line; the library's code when it has one).
const why = (err) => `${err.code ? `${err.code}: ` : ''}${String(err.message).split('\n')[0]}`;

// Does the library compute variant 'c'? A tiny call (8 channels, 32×32 so the LIP term runs).
function probeVariantC(lib) {
  try {
    const w = lib.createWeights({ seed: 0, channels: 8 });
    const { sr, gt } = makeInputs(lib.Tensor, 1, 32, 32, 1);
    lib.mghfLossSync(sr, gt, { variant: 'c', weights: w, M: 4, device: 'cpu' });
    return null;
  } catch (err) {
    return why(err);
  }
}

// MGHF-c, one case: the whole loss with default options; the per-stage profile; the Γ toggles.
function timeOursC(lib, weights, kase, cli) {
  const inputs = makeInputs(lib.Tensor, kase.batch, kase.height, kase.width);
  const base = { weights, device: 'cpu' };
  const out = { whole: timeCall(lib, inputs, { ...base, variant: 'c' }, cli, `${kase.name} MGHF-c`) };
  try {
    out.profile = timeCall(lib, inputs, { ...base, variant: 'c', profile: true }, cli, `${kase.name} MGHF-c profile`, true);
    if (!out.profile.stages_ms) out.profileError = 'the result carries no timings';
  } catch (err) {
    out.profileError = why(err);
  }
  if (cli.toggles) {
    const configs = {
      dfe: { variant: 'n' }, // DFE(gt), DFE(sr), ∂/∂sr and the (negligible) feature MSE
      n: { variant: 'c', gamma2: 0, gamma3: 0 },
      csc: { variant: 'c', gamma1: 0, gamma3: 0 },
      lip: { variant: 'c', gamma1: 0, gamma2: 0 },
    };
    out.toggles = {};
    for (const [name, o] of Object.entries(configs)) {
      try {
        out.toggles[name] = timeCall(lib, inputs, { ...base, ...o }, cli, `${kase.name} ${name} only`);
      } catch (err) {
        out.toggles[name] = { error: why(err) };
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PyTorch peers

function torchAvailable() {
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore', timeout: 120_000 });
  return r.status === 0;
}

// Does PYTHON's torch see a CUDA device?
function torchCudaAvailable() {
  const r = spawnSync(PYTHON, ['-c', 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'],
    { stdio: 'ignore', timeout: 120_000 });
  return r.status === 0;
}

// extra: more torch_peer.py flags (the GPU part passes --device cuda).
function runPeers(kase, threads, peers, { repeat, warmup }, extra = []) {
  const args = [
    PEER_SCRIPT,
    '--peer', ...peers,
    '--batch', String(kase.batch),
    '--size', String(kase.height), String(kase.width),
    '--threads', String(threads),
    '--repeat', String(repeat),
    '--warmup', String(warmup),
    '--json',
    ...extra,
  ];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', timeout: 1_800_000, maxBuffer: 16 << 20 });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
    console.error(`bench: torch peer failed for ${kase.name}: ${why}`);
    return {};
  }
  const out = {};
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const rec = JSON.parse(line);
    out[rec.peer] = rec;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

function table(header, rows) {
  const cells = [header, ...rows].map((r) => r.map(String));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

const ms = (s) => (s * 1e3).toFixed(1);

function peerRow(r, p, oursS) {
  const peer = r.peers[p];
  return [
    r.case, p, peer ? ms(peer.median_s) : 'failed', oursS == null ? '-' : ms(oursS),
    peer && oursS != null ? `${(peer.median_s / oursS).toFixed(2)}×` : '-',
  ];
}

// Median of each stage of result.timings over the profiled runs, one column per case.
function printStages(done, title = 'MGHF-c per stage') {
  console.log(`\n${title} (profile: true → result.timings, median ms over the profiled runs)`);
  const failed = done.filter((r) => !r.ours.profile || !r.ours.profile.stages_ms);
  for (const r of failed) console.log(`  NOTICE: no per-stage timings for ${r.case} (${r.ours.profileError}).`);
  const ok = done.filter((r) => r.ours.profile && r.ours.profile.stages_ms);
  if (!ok.length) return;
  const names = [];
  for (const r of ok) for (const k of Object.keys(r.ours.profile.stages_ms)) if (!names.includes(k)) names.push(k);
  const stageRows = names.filter((k) => k !== 'total');
  const cell = (r, k) => {
    const v = r.ours.profile.stages_ms[k];
    if (v === undefined) return '-';
    const tot = r.ours.profile.stages_ms.total ?? r.ours.profile.median_s * 1e3;
    return `${v.toFixed(1)} (${((100 * v) / tot).toFixed(0)}%)`;
  };
  const rows = stageRows.map((k) => [k, ...ok.map((r) => cell(r, k))]);
  rows.push(['sum of stages', ...ok.map((r) => stageRows.reduce((a, k) => a + (r.ours.profile.stages_ms[k] ?? 0), 0).toFixed(1))]);
  if (names.includes('total')) rows.push(['total (reported)', ...ok.map((r) => (r.ours.profile.stages_ms.total ?? NaN).toFixed(1))]);
  rows.push(['wall, profiled runs', ...ok.map((r) => ms(r.ours.profile.median_s))]);
  rows.push(['wall, unprofiled', ...ok.map((r) => ms(r.ours.whole.median_s))]);
  console.log(table(['stage', ...ok.map((r) => `${r.case} ms`)], rows));
}

// Each term's forward+backward cost by toggling: (only that term on) − (DFE only, variant 'n').
function printToggles(done) {
  console.log("\nMGHF-c per term, by toggling (the other terms' Γ = 0), minus the DFE-only cost (variant 'n'), median ms");
  const t = (r, k) => r.ours.toggles[k];
  const val = (r, k) => (t(r, k) && !t(r, k).error ? t(r, k).median_s * 1e3 : null);
  const rows = [];
  for (const [k, label] of [['dfe', "DFE only (variant 'n')"], ['n', 'L_n only (Γ2 = Γ3 = 0)'], ['csc', 'L_csc only (Γ1 = Γ3 = 0)'], ['lip', 'L_lip only (Γ1 = Γ2 = 0)']]) {
    rows.push([label, ...done.map((r) => (val(r, k) == null ? `error: ${t(r, k)?.error ?? '?'}` : val(r, k).toFixed(1)))]);
  }
  for (const k of ['n', 'csc', 'lip']) {
    rows.push([`  ${k} term (− DFE)`, ...done.map((r) => (val(r, k) == null || val(r, 'dfe') == null ? '-' : (val(r, k) - val(r, 'dfe')).toFixed(1)))]);
  }
  rows.push(['DFE + Σ terms', ...done.map((r) => {
    const d = val(r, 'dfe');
    if (d == null || ['n', 'csc', 'lip'].some((k) => val(r, k) == null)) return '-';
    return (d + ['n', 'csc', 'lip'].reduce((a, k) => a + val(r, k) - d, 0)).toFixed(1);
  })]);
  rows.push(['whole MGHF-c', ...done.map((r) => ms(r.ours.whole.median_s))]);
  console.log(table(['configuration', ...done.map((r) => `${r.case} ms`)], rows));
}

// ---------------------------------------------------------------------------------------------
// The CUDA part: ours on device 'cuda' (whole call, then the per-stage profile) and the PyTorch
// peers with --device cuda (float32, CUDA-event timing, max_memory_allocated). Returns the results,
// or null when skipped.

function runGpu(lib, weights, info, cli) {
  if (!cli.gpu) {
    console.log('\nGPU part: skipped (--no-gpu).');
    return null;
  }
  if (!info.cuda.available) {
    console.log(`\nGPU part: skipped (CUDA is not usable here: ${info.cuda.reason ?? 'no reason given'}).`);
    return null;
  }
  const gcli = { repeat: cli.gpuRepeat, warmup: GPU_WARMUP };
  const variants = [...(cli.doN ? ['n'] : []), ...(cli.doC ? ['c'] : [])];
  console.log(
    `\nGPU part: ${info.cuda.deviceName ?? 'CUDA device 0'} (compute capability ${info.cuda.computeCapability ?? '?'}), ` +
      `device 'cuda', ${GPU_WARMUP} warm-up + median of ${gcli.repeat} (wall time of mghfLossSync: host arrays in, gradient out)`,
  );
  const results = [];
  for (const kase of GPU_CASES) {
    const inputs = makeInputs(lib.Tensor, kase.batch, kase.height, kase.width);
    for (const variant of variants) {
      const r = {
        case: `${kase.name} MGHF-${variant}`, batch: kase.batch, height: kase.height, width: kase.width, variant,
        gflop: variant === 'n' ? countedGflop(kase.batch, kase.height, kase.width) : countedGflopC(kase.batch, kase.height, kase.width),
        ours: null,
      };
      const opts = { variant, weights, device: 'cuda' };
      try {
        r.ours = { whole: timeCall(lib, inputs, opts, gcli, r.case) };
        try {
          r.ours.profile = timeCall(lib, inputs, { ...opts, profile: true }, gcli, `${r.case} profile`, true);
          if (!r.ours.profile.stages_ms) r.ours.profileError = 'the result carries no timings';
        } catch (err) {
          r.ours.profileError = why(err);
        }
      } catch (err) {
        r.error = why(err);
        console.log(`  NOTICE: ${r.case} failed on the GPU (${r.error}); going on.`);
      }
      results.push(r);
    }
  }
  const done = results.filter((r) => r.ours);
  if (done.length) {
    console.log(
      table(
        ['case', 'median ms', 'GFLOP (counted)', 'GFLOP/s'],
        done.map((r) => [r.case, ms(r.ours.whole.median_s), r.gflop.toFixed(1), (r.gflop / r.ours.whole.median_s).toFixed(0)]),
      ),
    );
    console.log('(floors on an H100: bench/NOTES.md, "CUDA floor")');
    printStages(done, 'GPU per stage');
  }

  if (!cli.peers) {
    console.log('\nPyTorch peers on the GPU: skipped (--no-peers).');
  } else if (!torchAvailable()) {
    console.log(`\nPyTorch peers on the GPU: skipped (${PYTHON} cannot import torch).`);
  } else if (!torchCudaAvailable()) {
    console.log(`\nPyTorch peers on the GPU: skipped (${PYTHON}'s torch sees no CUDA device).`);
  } else {
    console.log(`\nPyTorch peers on the GPU (${PYTHON}, --device cuda: float32, TF32 off, CUDA-event timing, inputs already on the GPU)`);
    const rows = [];
    for (const kase of GPU_CASES) {
      const peers = runPeers(kase, info.threads, PEERS_GPU.filter((p) => variants.includes(p.slice(-1))),
        { repeat: gcli.repeat, warmup: GPU_WARMUP }, ['--device', 'cuda']);
      for (const p of Object.keys(peers)) {
        const r = results.find((x) => x.batch === kase.batch && x.height === kase.height && x.variant === p.slice(-1));
        if (r) r.peer = peers[p];
        const oursS = r && r.ours ? r.ours.whole.median_s : null;
        const mib = peers[p].max_memory_allocated_mib;
        rows.push([
          kase.name, p, ms(peers[p].median_s), oursS == null ? '-' : ms(oursS),
          oursS == null ? '-' : `${(peers[p].median_s / oursS).toFixed(2)}×`, mib == null ? '-' : mib.toFixed(0),
        ]);
      }
    }
    if (rows.length) console.log(table(['case', 'peer', 'peer ms', 'ours ms', 'peer / ours', 'peer MiB (max allocated)'], rows));
  }
  return results;
}

function main(cli) {
  const lib = loadLibrary();
  const info = lib.backendInfo();
  const weights = lib.createWeights({ seed: 0 });

  console.log(
    `mghf bench: backend ${info.backend}, ISA ${info.isa}, ${info.threads} threads ` +
      `(MGHF_NUM_THREADS=${process.env.MGHF_NUM_THREADS}), ${os.cpus()[0]?.model ?? 'unknown CPU'}, ` +
      `${cli.warmup} warm-up + median of ${cli.repeat}`,
  );
  console.log(`binary: ${info.binary}`);
  const load = os.loadavg()[0];
  console.log(`load average (1 min) before timing: ${load.toFixed(2)}${load > 0.5 ? '  <- the machine is busy; timings will be noisy' : ''}\n`);

  const results = [];
  if (cli.doN) {
    for (const kase of CASES) {
      const ours = timeOurs(lib, weights, kase, cli);
      results.push({ case: kase.name, batch: kase.batch, height: kase.height, width: kase.width, threads: info.threads, isa: info.isa, gflop: countedGflop(kase.batch, kase.height, kase.width), ours });
    }
    console.log('MGHF-n forward+backward (mghfLossSync, variant n, createWeights({seed:0}))');
    console.log(
      table(
        ['case', 'median ms', 'GFLOP (counted)', 'GFLOP/s', 'threads', 'ISA'],
        results.map((r) => [r.case, ms(r.ours.median_s), r.gflop.toFixed(1), (r.gflop / r.ours.median_s).toFixed(1), r.threads, r.isa]),
      ),
    );
  }

  const resultsC = [];
  if (cli.doC) {
    console.log(`${cli.doN ? '\n' : ''}MGHF-c forward+backward (mghfLossSync, variant c, default options, createWeights({seed:0}))`);
    const unsupported = probeVariantC(lib);
    if (unsupported) {
      console.log(`  NOTICE: the library cannot compute variant 'c' yet (${unsupported}); our MGHF-c timings are skipped.`);
    }
    for (const kase of CASES) {
      const r = { case: kase.name, batch: kase.batch, height: kase.height, width: kase.width, threads: info.threads, isa: info.isa, gflop: countedGflopC(kase.batch, kase.height, kase.width), ours: null };
      if (!unsupported) {
        try {
          r.ours = timeOursC(lib, weights, kase, cli);
        } catch (err) {
          r.error = why(err);
          console.log(`  NOTICE: MGHF-c failed for ${kase.name} (${r.error}); going on.`);
        }
      }
      resultsC.push(r);
    }
    const done = resultsC.filter((r) => r.ours);
    if (done.length) {
      console.log(
        table(
          ['case', 'median ms', 'GFLOP (counted)', 'GFLOP/s', 'threads', 'ISA'],
          done.map((r) => [r.case, ms(r.ours.whole.median_s), r.gflop.toFixed(1), (r.gflop / r.ours.whole.median_s).toFixed(1), r.threads, r.isa]),
        ),
      );
      printStages(done);
      if (cli.toggles) printToggles(done);
    }
  }

  if (!cli.peers) {
    console.log('\nPyTorch peers: skipped (--no-peers).');
  } else if (!torchAvailable()) {
    console.log(`\nPyTorch peers: skipped (${PYTHON} cannot import torch).`);
  } else {
    console.log(`\nPyTorch peers (${PYTHON}, torch.set_num_threads(${info.threads}), float32, forward+backward w.r.t. sr)`);
    const rows = [];
    for (const r of results) {
      r.peers = runPeers(r, info.threads, PEERS_N, cli);
      for (const p of PEERS_N) rows.push(peerRow(r, p, r.ours.median_s));
    }
    for (const r of resultsC) {
      r.peers = runPeers(r, info.threads, PEERS_C, { repeat: cli.cPeerRepeat, warmup: Math.min(cli.warmup, 1) });
      for (const p of PEERS_C) rows.push(peerRow(r, p, r.ours ? r.ours.whole.median_s : null));
    }
    console.log(table(['case', 'peer', 'peer ms', 'ours ms', 'peer / ours'], rows));
    console.log('(peer / ours > 1: the library is faster. vgg16 is a different, larger loss, shown for scale;');
    console.log(' mghf-n and vgg16 are compared with our MGHF-n, mghf-c* with our MGHF-c. mghf-c-onednn runs the LIP');
    console.log(" similarity GEMM in oneDNN: this Debian torch's bmm uses the reference BLAS, see bench/NOTES.md.)");
  }

  const resultsGpu = runGpu(lib, weights, info, cli);

  if (cli.json) {
    fs.mkdirSync(path.dirname(path.resolve(cli.json)), { recursive: true });
    const doc = {
      date: new Date().toISOString(),
      node: process.version,
      cpu: os.cpus()[0]?.model ?? null,
      backend: info,
      loadavgAtEnd: os.loadavg(),
      repeat: cli.repeat,
      warmup: cli.warmup,
      results,
      resultsC,
      resultsGpu,
    };
    fs.writeFileSync(cli.json, JSON.stringify(doc, null, 2) + '\n');
    console.log(`\nwrote ${cli.json}`);
  }
}

// Pretraining throughput (SPEC §10 step: DFE + head forward, backward, Adam) at batch 32, crop 128,
// the default architecture, 10 classes, random images: images/s on the CPU, and on CUDA device 0
// when it is usable.
async function pretrainThroughput() {
  const { native } = require('../dist/native');
  const lib = require('../dist');
  const addon = native();
  if (typeof addon.trainerCreate !== 'function') {
    console.log('\nPretraining throughput: skipped (this addon has no trainer).');
    return;
  }
  const info = lib.backendInfo();
  const B = 32, crop = 128, classes = 10;
  console.log(`\nPretraining throughput (batch ${B}, crop ${crop}, N=128, ${classes} classes; median of timed steps after a warm-up):`);
  await trainThroughput(addon, { device: 'cpu', deviceIndex: 0 }, `CPU, ${info.threads} threads`, B, crop, classes, 3);
  if (info.cuda.available) {
    await trainThroughput(addon, { device: 'cuda', deviceIndex: 0 }, `CUDA, ${info.cuda.deviceName}`, B, crop, classes, 20);
  } else {
    console.log(`  CUDA: skipped (${info.cuda.reason})`);
  }
}

async function trainThroughput(addon, device, label, B, crop, classes, steps) {
  const { createHeadWeights } = require('../dist/checkpoint');
  const { ADAM, DEFAULTS } = require('../dist/pretrain');
  const lib = require('../dist');
  const w = lib.createWeights({ seed: 0 });
  const head = createHeadWeights({ seed: 0, channels: w.channels, classes });
  const trainer = addon.trainerCreate({
    channels: w.channels, blocks: w.blocks, expand: w.expand, classes,
    tensors: { ...w.tensors, ...head }, steps: 0,
    lr: DEFAULTS.lr, ...ADAM, decayEvery: DEFAULTS.decayEvery, decayRate: DEFAULTS.decayRate,
    ...device,
  });
  const rand = mulberry32(7);
  const images = new Float32Array(B * 3 * crop * crop).map(() => rand());
  const labels = Int32Array.from({ length: B }, (_, i) => i % classes);
  await addon.trainStep(trainer, images, [B, 3, crop, crop], labels);  // warm-up
  const times = [];
  for (let i = 0; i < steps; i++) {
    const t0 = process.hrtime.bigint();
    await addon.trainStep(trainer, images, [B, 3, crop, crop], labels);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  times.sort((a, b) => a - b);
  const s = times[Math.floor(times.length / 2)];
  console.log(`  ${label}: ${(B / s).toFixed(1)} images/s (${(s * 1000).toFixed(1)} ms/step, ${steps} steps)`);
}

const cli = parseCli();
if (cli.ops) {
  const lib = loadLibrary();
  const res = require('./ops').runOps(lib, { makeInputs, median, table, cases: CASES }, cli);
  if (cli.json) {
    fs.mkdirSync(path.dirname(path.resolve(cli.json)), { recursive: true });
    fs.writeFileSync(cli.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: os.cpus()[0]?.model ?? null, backend: lib.backendInfo(), repeat: cli.repeat, warmup: cli.warmup, ...res }, null, 2) + '\n');
    console.log(`\nwrote ${cli.json}`);
  }
  process.exit(0);
}
if (cli.sr) {
  require('./sr-step').runSrStep(loadLibrary(), cli).then(
    (res) => {
      if (cli.json) {
        fs.mkdirSync(path.dirname(path.resolve(cli.json)), { recursive: true });
        fs.writeFileSync(cli.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: os.cpus()[0]?.model ?? null, ...res }, null, 2) + '\n');
      }
    },
    (err) => {
      console.error(`bench: the SR training step failed: ${err.stack ?? err.message}`);
      process.exitCode = 1;
    },
  );
} else {
  if (!cli.trainOnly) main(cli);
  if (cli.train) {
    pretrainThroughput().catch((err) => {
      console.error(`bench: pretraining throughput failed: ${err.message}`);
      process.exitCode = 1;
    });
  }
}
