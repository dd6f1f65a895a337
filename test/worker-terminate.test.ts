// worker.terminate() at any moment of a native call (issue 13): worker pools with timeouts
// (piscina, workerpool) terminate workers mid-call. Node then waits for the native work in flight
// and completes it on an environment that can no longer run JavaScript; the addon must neither
// throw a C++ exception out of that completion (std::terminate, SIGABRT: the whole process) nor
// touch the dying environment. Each kind of call is started in a worker on 64² inputs (one on 256²)
// and the worker is terminated at delays from 0 to 80 ms, twice each; this process must live and
// afterwards compute the same results, bit for bit, as before.

import t from 'tap';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createHeadWeights } from '../lib/checkpoint';
import { dfeFeatures, dfeFeaturesSync, mghfLoss, mghfLossSync } from '../lib/loss';
import { native } from '../lib/native';
import { Tensor } from '../lib/tensor';
import { createWeights } from '../lib/weights';

const DIST = resolve(__dirname, '..', 'dist', 'index.js');
const skip = existsSync(DIST) ? false : `${DIST} does not exist yet (run npm run build)`;

// The worker: builds its inputs, says 'ready', then calls in a loop until terminated. The loss and
// features kinds keep several async calls in flight, so termination also finds queued work.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const lib = require(${JSON.stringify(DIST)});
const { kind, H } = workerData;
const image = (f) => new lib.Tensor(new Float32Array(3 * H * H).map((_, i) => 0.5 + 0.3 * Math.sin(f * i)), [1, 3, H, H]);
const sr = image(0.011), gt = image(0.013);
let trainer, addon;
if (kind === 'train') {
  addon = require(${JSON.stringify(resolve(__dirname, '..', 'dist', 'native.js'))}).native();
  const dfe = lib.createWeights({ seed: 1, channels: 8, blocks: 1, expand: 2 });
  trainer = addon.trainerCreate({ channels: 8, blocks: 1, expand: 2, classes: 2,
    tensors: { ...dfe.tensors, ...lib.createHeadWeights({ seed: 1, channels: 8, classes: 2 }) },
    steps: 0, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, decayEvery: 5000, decayRate: 0.95, device: 'cpu', deviceIndex: 0 });
}
const batch = new Float32Array(4 * 3 * 32 * 32).map((_, i) => 0.5 + 0.4 * Math.sin(0.07 * i));
const labels = new Int32Array([0, 1, 0, 1]);
parentPort.postMessage('ready');
(async () => {
  for (;;) {
    if (kind === 'lossSync') lib.mghfLossSync(sr, gt, { device: 'cpu' });
    else if (kind === 'featuresSync') lib.dfeFeaturesSync(sr, { device: 'cpu' });
    else if (kind === 'loss') await Promise.all([1, 2, 3].map(() => lib.mghfLoss(sr, gt, { device: 'cpu' })));
    else if (kind === 'features') await Promise.all([1, 2, 3].map(() => lib.dfeFeatures(sr, { device: 'cpu' })));
    else if (kind === 'train') await addon.trainStep(trainer, batch, [4, 3, 32, 32], labels);
  }
})();
`;

const image = (H: number, f: number) =>
  new Tensor(new Float32Array(3 * H * H).map((_, i) => 0.5 + 0.3 * Math.sin(f * i)), [1, 3, H, H]);
const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function trainerLoss(): Promise<number> {
  const addon = native();
  const dfe = createWeights({ seed: 1, channels: 8, blocks: 1, expand: 2 });
  const h = addon.trainerCreate({
    channels: 8, blocks: 1, expand: 2, classes: 2,
    tensors: { ...dfe.tensors, ...createHeadWeights({ seed: 1, channels: 8, classes: 2 }) },
    steps: 0, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, decayEvery: 5000, decayRate: 0.95, device: 'cpu', deviceIndex: 0,
  });
  const batch = new Float32Array(4 * 3 * 32 * 32).map((_, i) => 0.5 + 0.4 * Math.sin(0.07 * i));
  return addon.trainStep(h, batch, [4, 3, 32, 32], new Int32Array([0, 1, 0, 1])).then((r) => r.loss);
}

async function terminateAfter(kind: string, H: number, delayMs: number): Promise<number> {
  const w = new Worker(WORKER, { eval: true, workerData: { kind, H } });
  const errors: unknown[] = [];
  w.on('error', (e) => errors.push(e));
  await new Promise<void>((ok, fail) => {
    w.once('message', () => ok());
    w.once('exit', (code) => fail(new Error(`the worker exited (${code}) before it was ready: ${String(errors[0])}`)));
  });
  await new Promise((r) => setTimeout(r, delayMs));
  const t0 = Date.now();
  await w.terminate();
  if (errors.length) throw errors[0];
  return Date.now() - t0;
}

t.test('terminating a worker during any native call leaves this process alive and correct', { skip, timeout: 300_000 }, async (t) => {
  const sr = image(64, 0.011);
  const gt = image(64, 0.013);
  const refLoss = mghfLossSync(sr, gt, { device: 'cpu' });
  const refFeatures = dfeFeaturesSync(sr, { device: 'cpu' });
  const refTrain = await trainerLoss();

  const delays = [0, 5, 10, 20, 40, 80];
  const cases: [string, number, number[]][] = [
    ['lossSync', 64, delays],
    ['loss', 64, delays],
    ['featuresSync', 64, delays],
    ['features', 64, delays],
    ['train', 64, delays],
    ['loss', 256, [10, 60]],
    ['lossSync', 256, [30]],
  ];
  const waits: number[] = [];
  for (const [kind, H, ds] of cases) {
    for (let rep = 0; rep < 2; rep++) {
      for (const d of ds) waits.push(await terminateAfter(kind, H, d + rep * 3));
    }
  }
  t.comment(`${waits.length} workers terminated mid-call; terminate() took ${Math.min(...waits)}–${Math.max(...waits)} ms ` +
    '(it waits for the native work in flight to finish)');

  const again = mghfLossSync(sr, gt, { device: 'cpu' });
  t.equal(again.loss, refLoss.loss, 'mghfLossSync: the same loss');
  t.ok(bytes(again.grad.data).equals(bytes(refLoss.grad.data)), 'mghfLossSync: the same gradient');
  const asyncAgain = await mghfLoss(sr, gt, { device: 'cpu' });
  t.equal(asyncAgain.loss, refLoss.loss, 'mghfLoss: the same loss');
  t.ok(bytes((await dfeFeatures(sr, { device: 'cpu' })).data).equals(bytes(refFeatures.data)), 'dfeFeatures: the same features');
  t.equal(await trainerLoss(), refTrain, 'a pretraining step: the same loss');
});
