#!/usr/bin/env node
// `npm run bench`: MGHF-n forward+backward on the CPU backend, next to the counted floor
// (bench/NOTES.md) and, when /usr/bin/python3 has torch, next to two PyTorch peers run with the
// same thread count (bench/torch_peer.py: MGHF-n written plainly in PyTorch, and a VGG16
// perceptual loss).
//
//   npm run build && npm run bench
//   node bench/run.js --repeat 9 --json bench/out/results.json
//   MGHF_NUM_THREADS=4 node bench/run.js
//
// Flags: --repeat R (timed runs, default 5), --warmup W (default 1), --json FILE, --no-peers.
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
const PEERS = ['mghf-n', 'vgg16'];
const PYTHON = process.env.MGHF_BENCH_PYTHON || '/usr/bin/python3';
const PEER_SCRIPT = path.join(__dirname, 'torch_peer.py');

function parseCli() {
  const USAGE = 'Usage: node bench/run.js [--repeat R] [--warmup W] [--json FILE] [--no-peers]';
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        repeat: { type: 'string', default: '5' },
        warmup: { type: 'string', default: '1' },
        json: { type: 'string' },
        'no-peers': { type: 'boolean', default: false },
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
  if (!Number.isInteger(repeat) || repeat < 1 || !Number.isInteger(warmup) || warmup < 0) {
    console.error('bench: --repeat must be an integer ≥ 1 and --warmup an integer ≥ 0');
    process.exit(2);
  }
  return { repeat, warmup, json: values.json, peers: !values['no-peers'] };
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

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function timeOurs(lib, weights, kase, { repeat, warmup }) {
  const { sr, gt } = makeInputs(lib.Tensor, kase.batch, kase.height, kase.width);
  const opts = { variant: 'n', weights, device: 'cpu' };
  let last;
  for (let i = 0; i < warmup; i++) last = lib.mghfLossSync(sr, gt, opts);
  const runs = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    last = lib.mghfLossSync(sr, gt, opts);
    runs.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  if (!Number.isFinite(last.loss)) throw new Error(`bench: non-finite loss ${last.loss} for ${kase.name}`);
  return { median_s: median(runs), runs, loss: last.loss };
}

// ---------------------------------------------------------------------------------------------
// PyTorch peers

function torchAvailable() {
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore', timeout: 120_000 });
  return r.status === 0;
}

function runPeers(kase, threads, { repeat, warmup }) {
  const args = [
    PEER_SCRIPT,
    '--peer', 'all',
    '--batch', String(kase.batch),
    '--size', String(kase.height), String(kase.width),
    '--threads', String(threads),
    '--repeat', String(repeat),
    '--warmup', String(warmup),
    '--json',
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

function main() {
  const cli = parseCli();
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

  if (!cli.peers) {
    console.log('\nPyTorch peers: skipped (--no-peers).');
  } else if (!torchAvailable()) {
    console.log(`\nPyTorch peers: skipped (${PYTHON} cannot import torch).`);
  } else {
    console.log(`\nPyTorch peers (${PYTHON}, torch.set_num_threads(${info.threads}), float32, forward+backward w.r.t. sr)`);
    for (const r of results) r.peers = runPeers(r, info.threads, cli);
    const rows = [];
    for (const r of results) {
      for (const p of PEERS) {
        const peer = r.peers[p];
        rows.push([r.case, p, peer ? ms(peer.median_s) : 'failed', ms(r.ours.median_s), peer ? `${(peer.median_s / r.ours.median_s).toFixed(2)}×` : '-']);
      }
    }
    console.log(table(['case', 'peer', 'peer ms', 'ours ms', 'peer / ours'], rows));
    console.log('(peer / ours > 1: the library is faster. vgg16 is a different, larger loss, shown for scale.)');
  }

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
    };
    fs.writeFileSync(cli.json, JSON.stringify(doc, null, 2) + '\n');
    console.log(`\nwrote ${cli.json}`);
  }
}

main();
