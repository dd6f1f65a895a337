// lib/pretrain.ts, lib/checkpoint.ts and `mghf pretrain`: the training loop, checkpoints, exact
// resume and abort, option errors. The loop is tested with a stand-in trainer
// (helpers/fake-trainer.ts) everywhere; the tests marked "native" run the real trainer and skip,
// saying why, when the loaded addon has none.
import t, { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CHECKPOINT_FORMAT,
  checkpointShapes,
  createHeadWeights,
  headShapes,
  loadCheckpoint,
  parseCheckpoint,
} from '../lib/checkpoint';
import { MghfError } from '../lib/errors';
import { backendInfo } from '../lib/native';
import { type PretrainOptions, type PretrainResult, type PretrainStart, nativeTrainer, runPretrain } from '../lib/pretrain';
import { createWeights, loadWeights, saveWeightsSync, weightShapes } from '../lib/weights';
import { fakeTrainer, type FakeTrainer } from './helpers/fake-trainer';
import { interruptAtFirstStep } from './helpers/interrupt';
import { writeStandInAddon } from './helpers/stand-in-addon';
import { writeImageFolder } from './helpers/image-folder';

const dir = mkdtempSync(join(tmpdir(), 'mghf-pretrain-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const data = join(dir, 'data');
const flat = join(dir, 'flat');
// 4 classes × 12 training images plus one corrupt file (49 samples, 7 batches of 8), 4 × 3 validation images.
const ready = (async () => {
  const special = await writeImageFolder(join(data, 'train'), { perClass: 12, corrupt: 'cherry/broken.png' });
  await writeImageFolder(join(data, 'val'), { perClass: 3, seed: 2 });
  await writeImageFolder(flat, { perClass: 12 });
  return special;
})();

const SMALL = { batch: 8, crop: 16, channels: 8, lr: 0.05 } as const;
const STEPS_PER_EPOCH = 7;

let runs = 0;
function paths(name = `run${runs++}`) {
  const out = join(dir, `${name}.safetensors`);
  return { out, checkpoint: `${out}.ckpt.safetensors` };
}

async function withFake(opts: PretrainOptions, fake: FakeTrainer = fakeTrainer()): Promise<PretrainResult & { fake: FakeTrainer }> {
  await ready;
  const r = await runPretrain({ data, ...SMALL, ...opts }, () => fake);
  return { ...r, fake };
}

async function rejectsCode(t0: Test, p: Promise<unknown>, code: string, needle: RegExp, what: string): Promise<void> {
  try {
    await p;
    t0.fail(`${what}: expected an error`);
  } catch (err) {
    t0.ok(err instanceof MghfError, `${what}: MghfError (${(err as Error).message})`);
    t0.equal((err as MghfError).code, code, `${what}: ${code}`);
    t0.match((err as Error).message, needle, what);
  }
}

const cudaUsable = backendInfo().cuda.available;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

t.test('createHeadWeights: PyTorch default bounds, seeded', async (t) => {
  const h = createHeadWeights({ seed: 3, channels: 8, classes: 5 });
  t.same(Object.keys(h), headShapes(8, 5).map(([n]) => n));
  for (const [name, dims] of headShapes(8, 5)) {
    t.equal(h[name].length, dims.reduce((a, b) => a * b, 1), `${name} size`);
    const bound = 1 / Math.sqrt(name.startsWith('head.fc.') ? 8 : 8 * 9);
    const max = Math.max(...Array.from(h[name], Math.abs));
    t.ok(max <= bound && max > 0.5 * bound, `${name} within ±1/√fan_in (${max} ≤ ${bound})`);
  }
  const again = createHeadWeights({ seed: 3, channels: 8, classes: 5 });
  t.ok(Object.keys(h).every((n) => bytes(h[n]).equals(bytes(again[n]))), 'same seed, same head');
  const other = createHeadWeights({ seed: 4, channels: 8, classes: 5 });
  t.notOk(bytes(h['head.fc.weight']).equals(bytes(other['head.fc.weight'])), 'another seed, another head');
  const dfe = createWeights({ seed: 3, channels: 8 });
  t.not(h['head.conv.0.weight'][0] * Math.sqrt(72), dfe.tensors['stem.weight'][0] * Math.sqrt(27), 'not the DFE stream');
  t.throws(() => createHeadWeights({ channels: 8, classes: 1 }), { code: 'E_OPTION' });
  t.throws(() => createHeadWeights({ classes: 3, bogus: 1 } as never), { code: 'E_OPTION' });
});

t.test('pretrain loop (stand-in trainer): epochs, checkpoint, weights file', async (t) => {
  const special = await ready;
  const { out, checkpoint } = paths('full');
  const warnings: string[] = [];
  const epochs: number[] = [];
  const progress: number[] = [];
  let started: PretrainStart | undefined;
  const r = await withFake({
    epochs: 3,
    out,
    onStart: (i) => (started = i),
    onProgress: (p) => progress.push(p.step),
    onEpoch: (e) => epochs.push(e.valAccuracy ?? NaN),
    onWarning: (m) => warnings.push(m),
  });
  t.equal(r.stopped, 'done');
  t.equal(r.out, out);
  t.equal(r.checkpoint, checkpoint, "checkpoint defaults to out + '.ckpt.safetensors'");
  t.equal(r.step, 3 * STEPS_PER_EPOCH);
  t.equal(r.epochs, 3);
  t.same(progress, Array.from({ length: 21 }, (_, i) => i + 1), 'onProgress after every step');
  t.match(started, { trainImages: 49, valImages: 12, valSource: 'folder', stepsPerEpoch: 7, totalSteps: 21, step: 0, resumedFrom: null });
  t.equal(epochs.length, 3, 'onEpoch after each epoch');
  t.ok(epochs.every((a) => a >= 0 && a <= 1));
  t.equal(warnings.length, 1, 'one warning for the corrupt file');
  t.match(warnings[0], special.corrupt!);
  t.ok(mean(r.losses.slice(-7)) < mean(r.losses.slice(0, 7)), `loss falls (${mean(r.losses.slice(0, 7))} → ${mean(r.losses.slice(-7))})`);

  const cfg = r.fake.created[0];
  t.match(cfg, { channels: 8, blocks: 1, expand: 2, classes: 4, steps: 0, lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, decayEvery: 5000, decayRate: 0.95 });
  const auto = cudaUsable ? { device: 'cuda', deviceIndex: 0 } : { device: 'cpu', deviceIndex: 0 };
  t.match(cfg, auto, "device 'auto': CUDA device 0 when usable, else the CPU");
  t.equal(started?.device, cudaUsable ? 'cuda:0' : 'cpu', 'onStart says where the math runs');
  const dfe = createWeights({ seed: 0, channels: 8 });
  const head = createHeadWeights({ seed: 0, channels: 8, classes: 4 });
  t.same(Object.keys(cfg.tensors).sort(), [...Object.keys(dfe.tensors), ...Object.keys(head)].sort(), 'DFE and head, no optimiser state');
  t.ok(bytes(cfg.tensors['stem.weight']).equals(bytes(dfe.tensors['stem.weight'])), 'DFE from createWeights({ seed })');
  t.ok(bytes(cfg.tensors['head.fc.weight']).equals(bytes(head['head.fc.weight'])), 'head from createHeadWeights({ seed })');

  const w = await loadWeights(out);
  t.equal(w.channels, 8);
  t.same(Object.keys(w.tensors).sort(), weightShapes(w).map(([n]) => n).sort(), 'a §9 weights file: DFE tensors only');
  t.match(w.metadata, {
    format: 'mghf-dfe',
    trainedData: data,
    trainedCrop: '16',
    trainedEpochs: '3',
    trainedSteps: '21',
    valAccuracy: String(epochs[2]),
  });
  t.match(w.metadata.trainedOn, new RegExp(`4-class classifier on ${data} \\(49 training images\\), 16×16 crops, batch 8, 3 epochs \\(21 steps\\); final validation accuracy [0-9.]+% on 12 images`));

  const ck = await loadCheckpoint(checkpoint);
  t.match(ck, { channels: 8, classes: 4, step: 21, epoch: 3, batchInEpoch: 0, lr0: 0.05, crop: 16, batch: 8, seed: 0, data: resolve(data), trainImages: 49 });
  t.same(ck.classNames, ['apple', 'bean', 'cherry', 'date']);
  t.equal(ck.metadata.format, CHECKPOINT_FORMAT);
  t.same(Object.keys(ck.tensors).sort(), checkpointShapes(ck, 4).map(([n]) => n).sort(), 'every parameter and its Adam moments');
  t.ok(ck.rng.length === 4 && ck.rng.every((v) => Number.isInteger(v)), 'the data generator state');
});

t.test('resume continues exactly (inside an epoch, at an epoch boundary, across lr decays)', async (t) => {
  const base = { epochs: 3, decayEvery: 4, decayRate: 0.5 };
  const full = await withFake({ ...base, ...paths('exact-full') });
  for (const stop of [10, STEPS_PER_EPOCH, 1]) {
    const first = paths(`exact-${stop}-a`);
    const a = await withFake({ ...base, ...first, maxSteps: stop });
    t.equal(a.stopped, 'maxSteps', `stop at ${stop}`);
    t.equal(a.step, stop);
    t.same(a.losses, full.losses.slice(0, stop), `first ${stop} losses equal`);
    t.ok(existsSync(first.out), 'maxSteps also writes the weights file');
    const ck = await loadCheckpoint(first.checkpoint);
    t.equal(ck.step, stop);
    t.equal(ck.epoch * STEPS_PER_EPOCH + ck.batchInEpoch, stop);

    const second = paths(`exact-${stop}-b`);
    const b = await withFake({ resume: first.checkpoint, out: second.out, data: undefined, batch: undefined, crop: undefined, channels: undefined, lr: undefined, epochs: undefined });
    t.equal(b.fake.created[0].steps, stop, 'the trainer continues at the checkpoint step');
    t.ok(Object.keys(b.fake.created[0].tensors).some((n) => n.startsWith('adam.m.')), 'with the Adam moments');
    t.equal(b.step, full.step);
    t.same(b.losses, full.losses.slice(stop), `resumed from ${stop}: the remaining losses are identical`);
    t.same(
      b.fake.log.map((l) => l.checksum),
      full.fake.log.slice(stop).map((l) => l.checksum),
      'and the batches are identical',
    );
    const [wFull, wResumed] = await Promise.all([loadWeights(full.out!), loadWeights(second.out)]);
    t.same(wResumed.metadata.trainedSteps, wFull.metadata.trainedSteps);
    t.ok(Object.keys(wFull.tensors).every((n) => bytes(wFull.tensors[n]).equals(bytes(wResumed.tensors[n]))), 'bit-identical final DFE');
    const ckFull = await loadCheckpoint(full.checkpoint);
    const ckResumed = await loadCheckpoint(second.checkpoint);
    t.ok(
      Object.keys(ckFull.tensors).every((n) => bytes(ckFull.tensors[n]).equals(bytes(ckResumed.tensors[n]))),
      'bit-identical final checkpoint tensors (head and Adam included)',
    );
  }
});

t.test('abort: checkpoint, no weights file, resume continues exactly', async (t) => {
  const full = await withFake({ epochs: 2, ...paths('abort-full') });
  const p = paths('abort-a');
  const controller = new AbortController();
  const a = await withFake({
    epochs: 2,
    ...p,
    signal: controller.signal,
    onProgress: (q) => {
      if (q.step === 9) controller.abort();
    },
  });
  t.equal(a.stopped, 'aborted');
  t.equal(a.out, null);
  t.equal(a.step, 9, 'the step in flight finishes');
  t.notOk(existsSync(p.out), 'no weights file');
  t.equal((await loadCheckpoint(p.checkpoint)).step, 9);
  const b = await withFake({ resume: p.checkpoint, out: paths('abort-b').out, epochs: 2 });
  t.same([...a.losses, ...b.losses], full.losses, 'aborted + resumed = uninterrupted');

  const pre = new AbortController();
  pre.abort();
  const c = await withFake({ epochs: 1, ...paths('abort-pre'), signal: pre.signal });
  t.equal(c.stopped, 'aborted');
  t.equal(c.step, 0);
});

t.test('a data folder without val/: 10% of each class held out', async (t) => {
  let info: { valSource?: string; valImages?: number; trainImages?: number } = {};
  const r = await withFake({ data: flat, epochs: 1, ...paths('flat'), onStart: (i) => (info = i) });
  t.equal(info.valSource, 'split');
  t.equal(info.valImages, 4);
  t.equal(info.trainImages, 44);
  t.equal(r.stopped, 'done');
});

t.test('option and data errors', async (t) => {
  await ready;
  const fake = () => fakeTrainer();
  const run = (o: Record<string, unknown>) => runPretrain({ data, ...SMALL, ...paths(), ...o } as PretrainOptions, fake);
  await rejectsCode(t, run({ epoch: 2 }), 'E_OPTION', /Unknown option 'epoch'.*did you mean 'epochs'/, 'typo');
  if (!cudaUsable) {
    // The reason comes from the native side: built without CUDA, no driver, no device, ...
    await rejectsCode(t, run({ device: 'cuda' }), 'E_UNSUPPORTED', /opts\.device 'cuda' is not available: .+Use device 'cpu'/, 'cuda');
    await rejectsCode(t, run({ device: 'cuda:1' }), 'E_UNSUPPORTED', /opts\.device 'cuda:1' is not available/, 'cuda:1');
  }
  await rejectsCode(t, run({ device: 'gpu' }), 'E_OPTION', /'auto', 'cpu', 'cuda' or 'cuda:N' for opts\.device/, 'unknown device');
  await rejectsCode(t, run({ epochs: 0 }), 'E_OPTION', /opts\.epochs/, 'epochs 0');
  await rejectsCode(t, run({ lr: -1 }), 'E_OPTION', /opts\.lr/, 'negative lr');
  await rejectsCode(t, run({ channels: 7 }), 'E_OPTION', /channels/, 'odd channels');
  await rejectsCode(t, run({ data: join(dir, 'missing') }), 'E_DATA', /missing does not exist/, 'missing data');
  await rejectsCode(t, run({ data: undefined }), 'E_OPTION', /opts\.data/, 'no data');
  await rejectsCode(t, run({ out: 'x.safetensors', checkpoint: 'x.safetensors' }), 'E_OPTION', /opts\.checkpoint/, 'checkpoint = out');

  const first = paths('err-ck');
  await runPretrain({ data, ...SMALL, ...first, maxSteps: 2 }, fake);
  await rejectsCode(t, run({ resume: first.checkpoint, crop: 24 }), 'E_OPTION', /trained with crop 16/, 'resume with another crop');
  await rejectsCode(t, run({ resume: first.checkpoint, data: flat }), 'E_DATA', /not those the checkpoint/, 'resume on other data');
  await rejectsCode(t, run({ resume: join(dir, 'nope.ckpt') }), 'E_WEIGHTS_FILE', /Cannot read checkpoint/, 'missing checkpoint');

  await rejectsCode(t, runPretrain({ data, ...SMALL, ...paths() }, () => {
    throw new MghfError('E_UNSUPPORTED', 'no trainer here');
  }), 'E_UNSUPPORTED', /no trainer here/, 'a missing trainer surfaces');
});

t.test('checkpoint files are validated', async (t) => {
  const p = paths('validate');
  await withFake({ ...p, maxSteps: 1 });
  const buf = readFileSync(p.checkpoint);
  t.ok(parseCheckpoint(buf, 'ok'), 'a written checkpoint parses');
  const weightsFile = join(dir, 'plain.safetensors');
  saveWeightsSync(createWeights({ seed: 0, channels: 8 }), weightsFile);
  await rejectsCode(t, loadCheckpoint(weightsFile), 'E_WEIGHTS_FILE', /format is "mghf-dfe", expected 'mghf-ckpt'/, 'a weights file is no checkpoint');
  await rejectsCode(t, loadWeights(p.checkpoint), 'E_WEIGHTS_FILE', /format is "mghf-ckpt", expected 'mghf-dfe'/, 'a checkpoint is no weights file');

  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const rebuild = (h: unknown) => {
    const json = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, buf.subarray(8 + n)]);
  };
  const edit = (f: (h: any) => void) => {
    const h = structuredClone(header);
    f(h);
    return rebuild(h);
  };
  const rejects = (b: Buffer, needle: RegExp, what: string) => {
    t.throws(() => parseCheckpoint(b, 'bad.ckpt'), { code: 'E_WEIGHTS_FILE', message: needle }, what);
  };
  rejects(edit((h) => (h.__metadata__.rng = '[1,2,3]')), /rng/, 'bad rng');
  rejects(edit((h) => (h.__metadata__.classes = '5')), /classNames|head\.fc/, 'classes disagree with the head');
  rejects(edit((h) => (h.__metadata__.step = '-1')), /step/, 'negative step');
  rejects(edit((h) => (h.__metadata__.lr0 = 'fast')), /lr0/, 'bad lr0');
  // Rename an Adam tensor: one missing, one unknown.
  rejects(edit((h) => {
    h['adam.m.bogus'] = h['adam.m.stem.bias'];
    delete h['adam.m.stem.bias'];
  }), /adam\.m\.bogus.*unknown/, 'unknown tensor');
});

// ---------------------------------------------------------------------------------------------
// The native trainer

let nativeSkip: string | false = false;
try {
  nativeTrainer();
} catch (err) {
  nativeSkip = `no native trainer: ${(err as Error).message.split('\n')[0]}`;
}

t.test('native: the training loss falls well below ln(classes)', { skip: nativeSkip }, async (t) => {
  await ready;
  const { pretrain } = await import('../lib/pretrain');
  const p = paths('native-learn');
  const r = await pretrain({ data, batch: 8, crop: 16, channels: 8, lr: 2e-3, epochs: 50, maxSteps: 300, ...p });
  t.equal(r.step, 300);
  const first = mean(r.losses.slice(0, 10));
  const last = mean(r.losses.slice(-30));
  t.ok(Math.abs(first - Math.log(4)) < 0.5, `starts near ln 4 = ${Math.log(4).toFixed(3)} (${first.toFixed(3)})`);
  t.ok(last < 0.5 * Math.log(4), `ends well below ln 4 (${last.toFixed(3)})`);
  t.ok((r.valAccuracy ?? 0) > 0.5, `validation accuracy ${r.valAccuracy}`);
  const w = await loadWeights(p.out);
  t.equal(w.metadata.trainedSteps, '300');
  t.equal(w.metadata.valAccuracy, String(r.valAccuracy));
});

t.test('native: resume gives the same losses exactly', { skip: nativeSkip }, async (t) => {
  await ready;
  const { pretrain } = await import('../lib/pretrain');
  const base = { data, batch: 8, crop: 16, channels: 8, lr: 2e-3, epochs: 4, decayEvery: 5, decayRate: 0.9 };
  const full = await pretrain({ ...base, ...paths('native-full'), maxSteps: 26 });
  const a = paths('native-a');
  const first = await pretrain({ ...base, ...a, maxSteps: 11 });
  const second = await pretrain({ resume: a.checkpoint, ...paths('native-b'), maxSteps: 26 });
  t.same(first.losses, full.losses.slice(0, 11), 'the first 11 losses');
  t.same(second.losses, full.losses.slice(11), 'the resumed 15 losses, exactly');
  const [wf, wr] = await Promise.all([loadWeights(full.out!), loadWeights(second.out!)]);
  t.ok(Object.keys(wf.tensors).every((n) => bytes(wf.tensors[n]).equals(bytes(wr.tensors[n]))), 'bit-identical final weights');
});

// ---------------------------------------------------------------------------------------------
// The command line

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const cliSkip = existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`;
const runCli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });

t.test('mghf pretrain: arguments', { skip: cliSkip }, async (t) => {
  await ready;
  const help = runCli(['help']);
  t.match(help.stdout, /mghf pretrain --data/);
  t.match(help.stdout, /mghf show --image/);
  const missing = runCli(['pretrain']);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /missing --data/);
  const badInt = runCli(['pretrain', '--data', data, '--epochs', 'many']);
  t.equal(badInt.status, 2);
  t.match(badInt.stderr, /--epochs must be an integer/);
  if (!cudaUsable) {
    const cuda = runCli(['pretrain', '--data', data, '--device', 'cuda']);
    t.equal(cuda.status, 1);
    t.match(cuda.stderr, /'cuda' is not available/);
  }
  const gpu = runCli(['pretrain', '--data', data, '--device', 'gpu']);
  t.equal(gpu.status, 2);
  t.match(gpu.stderr, /--device must be auto, cpu, cuda or cuda:N/);
  const noData = runCli(['pretrain', '--data', join(dir, 'absent')]);
  t.equal(noData.status, 1);
  t.match(noData.stderr, /absent does not exist/);
});


async function interruptAndResume(t0: Test, env: NodeJS.ProcessEnv, name: string): Promise<void> {
  const out = join(dir, `${name}.safetensors`);
  const args = ['pretrain', '--data', data, '--epochs', '50', '--batch', '8', '--crop', '16', '--out', out];
  const { code, stderr } = await interruptAtFirstStep(CLI, args, env);
  t0.equal(code, 130, 'exit 130');
  t0.match(stderr, /Pretraining the DFE \(N=128, K=1, e=2\) on 4 classes: 49 training images, 12 validation images \(val\/\); 7 steps per epoch, 350 steps, on cpu/);
  t0.match(stderr, /epoch 1\/50 {2}step \d+\/350 {2}loss [0-9.]+ {2}acc [0-9.]+% {2}[0-9.]+ img\/s {2}left /, 'progress line');
  t0.match(stderr, /interrupted; stopping the step in progress and writing a checkpoint of the last completed one/);
  t0.match(stderr, new RegExp(`checkpoint written to ${out}\\.ckpt\\.safetensors`));
  const m = /Resume with: (.*)/.exec(stderr);
  t0.ok(m, 'says how to resume');
  t0.match(m?.[1] ?? '', new RegExp(`^npx mghf pretrain --data ${data} --epochs 50 --batch 8 --crop 16 --out ${out} --resume ${out}\\.ckpt\\.safetensors$`));
  t0.notOk(existsSync(out), 'no weights file yet');
  const ck = await loadCheckpoint(`${out}.ckpt.safetensors`);
  t0.ok(ck.step >= 1, `checkpoint at step ${ck.step}`);
  const resumed = spawnSync(process.execPath, [CLI, ...args, '--resume', `${out}.ckpt.safetensors`, '--max-steps', String(ck.step + 2)], {
    encoding: 'utf8',
    env,
    timeout: 120_000,
  });
  t0.equal(resumed.status, 0, resumed.stderr);
  t0.match(resumed.stderr, new RegExp(`resuming at step ${ck.step} from `));
  t0.match(resumed.stderr, new RegExp(`Wrote ${out}: ${ck.step + 2} steps .*\\(stopped at --max-steps\\)`));
  t0.equal((await loadWeights(out)).metadata.trainedSteps, String(ck.step + 2));
}

t.test('mghf pretrain (stand-in trainer): progress, Ctrl-C → checkpoint and exit 130, --resume', { skip: cliSkip }, async (t) => {
  await ready;
  await interruptAndResume(t, { ...process.env, MGHF_BINARY: writeStandInAddon(dir) }, 'cli-stand-in');
});

t.test('native: mghf pretrain runs, Ctrl-C checkpoints and exits 130, --resume continues', { skip: cliSkip || nativeSkip }, async (t) => {
  await ready;
  await interruptAndResume(t, process.env, 'cli-native');
});
