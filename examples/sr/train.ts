// The trainer: Adam on L1, optionally plus λ·MGHF (n or c), with periodic validation on
// Set5/Set14, checkpoints that resume exactly, and the model saved as safetensors.
//
//   loss = L1(sr, hr) + λ·MGHF(sr, hr);   ∂loss/∂sr = ∂L1/∂sr + λ·(mghfLoss's grad)
//
// Only the public API of mghf is used: SrNet (the network, from the trainer ops), ops (the
// kernels), mghfLoss (the loss and its gradient), createWeights (a random DFE for the ablation).
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';

import { type DfeWeights, type Tensor, SrNet, createWeights, defaultWeights, mghfLoss, ops, scope } from 'mghf';

import { type EvalPair, type StoredImage, Rng, makeBatch } from './data';
import { type ImageScores, meanScores, scoreImage } from './metrics';

export type LossKind = 'l1' | 'l1+mghf-n' | 'l1+mghf-c';

export interface TrainOptions {
  loss: LossKind;
  /** Weight of the MGHF term (ignored for 'l1'). */
  lambda: number;
  /** 'default': the bundled pretrained DFE; 'random': a freshly initialised one (the ablation). */
  dfe: 'default' | 'random';
  steps: number;
  batch: number;
  /** HR crop side (LR is crop/4). */
  crop: number;
  lr: number;
  seed: number;
  /** Start from this model file (fine-tuning); otherwise a new network of `channels`/`blocks`. */
  init?: string;
  channels?: number;
  blocks?: number;
  /** Resume from this checkpoint (written by a run with the same options). */
  resume?: string;
  /** Write a checkpoint here every `checkpointEvery` steps and at the end. */
  checkpoint?: string;
  checkpointEvery?: number;
  /** Validate every `validateEvery` steps (and at the end) on these sets. */
  validate?: Record<string, readonly EvalPair[]>;
  validateEvery?: number;
  /** Called with a progress line. */
  log?: (line: string) => void;
}

export interface HistoryPoint {
  step: number;
  loss: number;
  l1: number;
  mghf: number;
  ms: number;
}

export interface Validation {
  step: number;
  sets: Record<string, ImageScores>;
}

export interface TrainResult {
  net: SrNet;
  history: HistoryPoint[];
  validations: Validation[];
  /** Mean milliseconds per step (data, forward, loss, backward, Adam). */
  msPerStep: number;
}

/** Scores of `net` on every pair of a set (sr clamped to [0, 1] and rounded inside the metrics). */
export async function evaluate(net: SrNet, pairs: readonly EvalPair[]): Promise<ImageScores> {
  const scores: ImageScores[] = [];
  for (const p of pairs) {
    const sr = await net.upscale(p.lr);
    const [, , H, W] = p.hr.dims;
    scores.push(scoreImage(sr.data, p.hr.data, H, W, 4));
    sr.dispose();
  }
  return meanScores(scores);
}

function dfeWeightsFor(kind: 'default' | 'random', seed: number): DfeWeights {
  return kind === 'default' ? defaultWeights() : createWeights({ seed });
}

/** Trains as `o` says; `images` are the training images (data.ts). */
export async function train(images: readonly StoredImage[], o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? (() => undefined);
  const net = o.init ? await SrNet.load(o.init) : SrNet.create({ channels: o.channels, blocks: o.blocks }, o.seed);
  const params = net.paramList();
  const adam = ops.adamState(params);
  const rng = new Rng(o.seed * 7919 + 17);
  const weights = o.loss === 'l1' ? undefined : dfeWeightsFor(o.dfe, o.seed);
  const history: HistoryPoint[] = [];
  const validations: Validation[] = [];
  let step = 0;
  if (o.resume) {
    const state = await readCheckpoint(o.resume, net, adam);
    step = state.step;
    rng.state = state.rng;
    history.push(...state.history);
    validations.push(...state.validations);
    log(`resumed ${o.resume} at step ${step}`);
  }
  const validate = async () => {
    if (!o.validate) return;
    const sets: Record<string, ImageScores> = {};
    for (const [name, pairs] of Object.entries(o.validate)) sets[name] = await evaluate(net, pairs);
    validations.push({ step, sets });
    log(`step ${step} ` + Object.entries(sets).map(([n, s]) => `${n} PSNR-Y ${s.psnr.toFixed(2)} SSIM-Y ${s.ssim.toFixed(4)} GMSD ${s.gmsd.toFixed(4)}`).join(' | '));
  };
  let totalMs = 0, timed = 0;
  while (step < o.steps) {
    const t0 = performance.now();
    const point = await scope(async () => {
      const { hr, lr } = await makeBatch(images, rng, o.batch, o.crop);
      const { sr, tape } = await net.forward(lr);
      const l1 = await ops.l1(sr, hr);
      let dsr: Tensor = l1.dx;
      let mghf = 0;
      if (weights) {
        const m = await mghfLoss(sr, hr, { variant: o.loss === 'l1+mghf-n' ? 'n' : 'c', weights });
        mghf = m.loss;
        dsr = await ops.add(l1.dx, m.grad, { alpha: o.lambda });
      }
      const grads = await net.backward(tape, dsr);
      await ops.adam(params, grads, adam, { lr: o.lr });
      return { l1: l1.loss, mghf };
    });
    step += 1;
    const ms = performance.now() - t0;
    totalMs += ms;
    timed += 1;
    const loss = point.l1 + (weights ? o.lambda * point.mghf : 0);
    if (!Number.isFinite(loss)) throw new Error(`loss is ${loss} at step ${step}`);
    history.push({ step, loss, l1: point.l1, mghf: point.mghf, ms });
    if (step % 10 === 0 || step === o.steps) {
      log(`step ${step}/${o.steps} loss ${loss.toFixed(5)} (L1 ${point.l1.toFixed(5)}${weights ? `, MGHF ${point.mghf.toFixed(5)}` : ''}) ${ms.toFixed(0)} ms/step`);
    }
    if (o.validateEvery && step % o.validateEvery === 0 && step !== o.steps) await validate();
    if (o.checkpoint && o.checkpointEvery && step % o.checkpointEvery === 0 && step !== o.steps) {
      await writeCheckpoint(o.checkpoint, net, adam, step, rng.state, history, validations);
    }
  }
  await validate();
  if (o.checkpoint) await writeCheckpoint(o.checkpoint, net, adam, step, rng.state, history, validations);
  return { net, history, validations, msPerStep: timed ? totalMs / timed : 0 };
}

type AdamState = ReturnType<typeof ops.adamState>;

/**
 * A checkpoint is a model file (SrNet.save: `mghf upscale` reads it too) whose metadata holds the
 * step, the generator state, the history and validations, and whose `state.*` tensors hold
 * Adam's moments.
 */
export async function writeCheckpoint(path: string, net: SrNet, adam: AdamState, step: number, rng: number, history: HistoryPoint[], validations: Validation[]): Promise<void> {
  await fsp.mkdir(dirname(path), { recursive: true });
  const names = net.paramList().map((_, i) => i);
  const extra = [
    ...names.map((i) => ({ name: `state.adam.m.${i}`, dims: adam.m[i].dims, data: adam.m[i].data })),
    ...names.map((i) => ({ name: `state.adam.v.${i}`, dims: adam.v[i].dims, data: adam.v[i].data })),
  ];
  await net.save(path, {
    metadata: {
      step: String(step),
      adamStep: String(adam.step),
      rng: String(rng),
      history: JSON.stringify(history),
      validations: JSON.stringify(validations),
    },
    extra,
  });
}

async function readCheckpoint(path: string, net: SrNet, adam: AdamState): Promise<{ step: number; rng: number; history: HistoryPoint[]; validations: Validation[] }> {
  const { net: saved, metadata: md, extra } = await SrNet.loadFile(path);
  try {
    const mine = net.paramList();
    saved.paramList().forEach((t, i) => mine[i].data.set(t.data));
  } finally {
    saved.dispose();
  }
  for (let i = 0; i < adam.m.length; i++) {
    const m = extra.get(`state.adam.m.${i}`), v = extra.get(`state.adam.v.${i}`);
    if (!m || !v) throw new Error(`${path} is a model, not a checkpoint: Adam's moments are missing`);
    adam.m[i].data.set(m.data);
    adam.v[i].data.set(v.data);
  }
  adam.step = Number(md.adamStep);
  return { step: Number(md.step), rng: Number(md.rng), history: JSON.parse(md.history ?? '[]'), validations: JSON.parse(md.validations ?? '[]') };
}
