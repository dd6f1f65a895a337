// A stand-in for the native trainer (same interface as NativeAddon's trainer functions) so the
// pretraining loop, checkpoints and resume can be tested without the native build: softmax
// regression on 4 image statistics (channel means and horizontal texture) through the first 4
// columns of head.fc.weight and head.fc.bias, with Adam and the SPEC §10 lr schedule. Parameters
// and moments are float32, as in the native trainer, so a resume from a checkpoint is exact.
import type { NativeTrainerConfig, NativeTrainResult, NativeTrainerState, TrainerHandle } from '../../lib/native';
import type { TrainerAddon } from '../../lib/pretrain';

interface FakeState {
  cfg: NativeTrainerConfig;
  steps: number;
  tensors: Record<string, Float32Array>;
}

export interface FakeTrainer extends TrainerAddon {
  /** Every trainStep call: a checksum of its batch, its labels and the loss. */
  log: Array<{ checksum: number; labels: number[]; loss: number }>;
  created: NativeTrainerConfig[];
}

const FEATURES = 4;

function features(images: Float32Array, dims: number[], b: number): number[] {
  const [, , H, W] = dims;
  const plane = H * W;
  const base = b * 3 * plane;
  const f = [0, 0, 0, 0];
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) f[c] += images[base + c * plane + p];
    f[c] /= plane;
  }
  for (let y = 0; y < H; y++) for (let x = 1; x < W; x++) f[3] += Math.abs(images[base + y * W + x] - images[base + y * W + x - 1]);
  f[3] /= H * (W - 1);
  return f.map((v) => 4 * (v - 0.5));
}

function checksum(a: Float32Array): number {
  let h = 0;
  for (let i = 0; i < a.length; i++) h = (h * 31 + Math.round(a[i] * 255)) % 1_000_000_007;
  return h;
}

export function fakeTrainer(): FakeTrainer {
  const log: FakeTrainer['log'] = [];
  const created: NativeTrainerConfig[] = [];
  const forward = (s: FakeState, images: Float32Array, dims: number[], labels: Int32Array) => {
    const { classes, channels: N } = s.cfg;
    const W = s.tensors['head.fc.weight'];
    const bias = s.tensors['head.fc.bias'];
    const B = dims[0];
    const gW = new Float64Array(W.length);
    const gb = new Float64Array(bias.length);
    let loss = 0;
    let correct = 0;
    for (let b = 0; b < B; b++) {
      const f = features(images, dims, b);
      const z = Array.from({ length: classes }, (_, k) => bias[k] + f.reduce((acc, v, j) => acc + W[k * N + j] * v, 0));
      const zmax = Math.max(...z);
      const e = z.map((v) => Math.exp(v - zmax));
      const sum = e.reduce((a, v) => a + v, 0);
      loss += Math.log(sum) - (z[labels[b]] - zmax);
      if (z.indexOf(zmax) === labels[b]) correct++;
      for (let k = 0; k < classes; k++) {
        const g = (e[k] / sum - (k === labels[b] ? 1 : 0)) / B;
        gb[k] += g;
        for (let j = 0; j < FEATURES; j++) gW[k * N + j] += g * f[j];
      }
    }
    return { loss: loss / B, correct, gW, gb };
  };
  const adam = (s: FakeState, name: string, g: Float64Array) => {
    const { beta1, beta2, eps, lr, decayEvery, decayRate } = s.cfg;
    const p = s.tensors[name];
    const m = s.tensors[`adam.m.${name}`];
    const v = s.tensors[`adam.v.${name}`];
    const t = s.steps + 1;
    const rate = lr * decayRate ** Math.floor(s.steps / decayEvery);
    for (let i = 0; i < p.length; i++) {
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const mh = m[i] / (1 - beta1 ** t);
      const vh = v[i] / (1 - beta2 ** t);
      p[i] = p[i] - (rate * mh) / (Math.sqrt(vh) + eps);
    }
  };
  return {
    log,
    created,
    trainerCreate(cfg: NativeTrainerConfig): TrainerHandle {
      created.push(cfg);
      const tensors: Record<string, Float32Array> = {};
      for (const [name, data] of Object.entries(cfg.tensors)) tensors[name] = Float32Array.from(data);
      for (const name of Object.keys(cfg.tensors)) {
        if (name.startsWith('adam.')) continue;
        tensors[`adam.m.${name}`] ??= new Float32Array(cfg.tensors[name].length);
        tensors[`adam.v.${name}`] ??= new Float32Array(cfg.tensors[name].length);
      }
      const state: FakeState = { cfg, steps: cfg.steps, tensors };
      return state as unknown as TrainerHandle;
    },
    async trainStep(h, images, dims, labels): Promise<NativeTrainResult> {
      await new Promise((r) => setImmediate(r));
      const s = h as unknown as FakeState;
      const { loss, correct, gW, gb } = forward(s, images, dims, labels);
      adam(s, 'head.fc.weight', gW);
      adam(s, 'head.fc.bias', gb);
      s.steps++;
      log.push({ checksum: checksum(images), labels: Array.from(labels), loss });
      return { loss, correct };
    },
    async trainEval(h, images, dims, labels): Promise<NativeTrainResult> {
      await new Promise((r) => setImmediate(r));
      const { loss, correct } = forward(h as unknown as FakeState, images, dims, labels);
      return { loss, correct };
    },
    trainerState(h): NativeTrainerState {
      const s = h as unknown as FakeState;
      const tensors: Record<string, Float32Array> = {};
      for (const [name, data] of Object.entries(s.tensors)) tensors[name] = Float32Array.from(data);
      return { steps: s.steps, lr: s.cfg.lr * s.cfg.decayRate ** Math.floor(s.steps / s.cfg.decayEvery), tensors };
    },
  };
}
