// `mghf pretrain` as a newcomer meets it (issue 14, item 6): the progress line under --max-steps,
// singular counts, no rate before one is measurable, --resume alone writing to the run's original
// --out, the resume command a local install can run, and a checkpoint passed as --weights.
// The training runs in a stand-in addon (helpers/stand-in-addon.ts), so this is quick.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { loadCheckpoint, saveCheckpoint } from '../lib/checkpoint';
import { progressLine } from '../lib/cli';
import { MghfError } from '../lib/errors';
import { runPretrain } from '../lib/pretrain';
import { loadWeights } from '../lib/weights';
import { fakeTrainer } from './helpers/fake-trainer';
import { writeImageFolder } from './helpers/image-folder';
import { interruptAtFirstStep } from './helpers/interrupt';
import { writeStandInAddon } from './helpers/stand-in-addon';

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const cliSkip = existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`;
let nativeSkip: string | false = false;
try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('../lib/native').native();
} catch (err) {
  nativeSkip = `the native addon does not load: ${(err as Error).message.split('\n')[0]}`;
}

const dir = mkdtempSync(join(tmpdir(), 'mghf-cli-pretrain-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const data = join(dir, 'data');
// 4 classes × 12 images, 4 × 3 validation: 48 training images, 6 batches of 8.
const ready = (async () => {
  await writeImageFolder(join(data, 'train'), { perClass: 12 });
  await writeImageFolder(join(data, 'val'), { perClass: 3, seed: 2 });
})();
const standIn = writeStandInAddon(dir);
const SMALL = ['--batch', '8', '--crop', '16'];

function runCli(args: string[], opts: { cwd?: string; standIn?: boolean } = {}) {
  const env = { ...process.env };
  if (opts.standIn !== false) env.MGHF_BINARY = standIn;
  else delete env.MGHF_BINARY;
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000, env, cwd: opts.cwd ?? dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('progressLine: the step budget under --max-steps, the rate only once measurable', async (t) => {
  const p = { epoch: 1, epochs: 20, step: 3, totalSteps: 140, stepsPerEpoch: 7, runningLoss: 1.23456, accuracy: 0.5, imagesPerSecond: 25.04, etaSeconds: 65 };
  t.equal(progressLine(p), 'epoch 1/20  step 3/140  loss 1.2346  acc 50.0%  25.0 img/s  left 1m05s');
  t.equal(progressLine({ ...p, totalSteps: 5 }), 'step 3/5 (--max-steps)  epoch 1  loss 1.2346  acc 50.0%  25.0 img/s  left 1m05s');
  t.equal(progressLine({ ...p, imagesPerSecond: NaN, etaSeconds: NaN }), 'epoch 1/20  step 3/140  loss 1.2346  acc 50.0%', 'no 0.0 img/s, no left --');
  t.equal(progressLine({ ...p, step: 140, etaSeconds: 0 }), 'epoch 1/20  step 140/140  loss 1.2346  acc 50.0%  25.0 img/s', 'nothing left at the last step');
});

t.test('the loop reports no rate of 0: NaN until one is measurable', async (t) => {
  await ready;
  const rates: number[] = [];
  const out = join(dir, 'rates.safetensors');
  await runPretrain({ data, batch: 8, crop: 16, channels: 8, maxSteps: 3, out, onProgress: (p) => rates.push(p.imagesPerSecond) }, () => fakeTrainer());
  t.equal(rates.length, 3);
  t.ok(rates.every((r) => Number.isNaN(r) || r > 0), `every rate NaN or > 0 (${rates.join(', ')})`);
});

t.test('mghf pretrain --max-steps 1: the budget, singular counts', { skip: cliSkip }, async (t) => {
  await ready;
  const out = join(dir, 'one.safetensors');
  const r = runCli(['pretrain', '--data', data, ...SMALL, '--out', out, '--max-steps', '1']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /6 steps per epoch, 1 step \(--max-steps\), on cpu\n/, 'the start line: 1 step, the budget');
  t.match(r.stderr, /^step 1\/1 \(--max-steps\) {2}epoch 1 {2}loss [0-9.]+ {2}acc [0-9.]+%/m, 'the progress line shows the step budget');
  t.notMatch(r.stderr, /epoch 1\/20/, 'not the 20 epochs it will not run');
  t.notMatch(r.stderr, /\b1 steps\b/, 'no "1 steps"');
  t.notMatch(r.stderr, / 0\.0 img\/s/, 'no 0.0 img/s');
  t.match(r.stderr, new RegExp(`Wrote ${out}: 1 step \\(0\\.17 epochs\\), .*\\(stopped at --max-steps\\)`));
});

t.test('--resume alone writes to the original --out', { skip: cliSkip }, async (t) => {
  await ready;
  const out = join(dir, 'orig', 'trained.safetensors');
  mkdirSync(join(dir, 'orig'));
  const first = runCli(['pretrain', '--data', data, ...SMALL, '--out', out, '--max-steps', '2']);
  t.equal(first.code, 0, first.stderr);
  const ck = `${out}.ckpt.safetensors`;
  t.match((await loadCheckpoint(ck)).metadata, { out, checkpoint: ck }, 'the checkpoint knows where the run writes');

  // From another folder, with nothing but --resume (and a later stop).
  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(elsewhere);
  const second = runCli(['pretrain', '--resume', ck, '--max-steps', '4'], { cwd: elsewhere });
  t.equal(second.code, 0, second.stderr);
  t.match(second.stderr, new RegExp(`resuming at step 2 from ${ck}; writing ${out}\\n`));
  t.match(second.stderr, new RegExp(`Wrote ${out}: 4 steps`));
  t.notOk(existsSync(join(elsewhere, 'mghf-dfe.safetensors')), 'nothing written to ./mghf-dfe.safetensors');
  t.equal((await loadWeights(out)).metadata.trainedSteps, '4', 'the original --out holds the resumed run');
  t.equal((await loadCheckpoint(ck)).step, 4, 'and its checkpoint moved on');

  // --out still wins when given.
  const other = join(dir, 'other.safetensors');
  const third = runCli(['pretrain', '--resume', ck, '--max-steps', '5', '--out', other], { cwd: elsewhere });
  t.equal(third.code, 0, third.stderr);
  t.equal((await loadWeights(other)).metadata.trainedSteps, '5');
  t.ok(existsSync(`${other}.ckpt.safetensors`), 'with its own checkpoint');
});

t.test('a checkpoint whose stored paths are not absolute .safetensors files is refused', async (t) => {
  await ready;
  const out = join(dir, 'paths.safetensors');
  const r = await runPretrain({ data, batch: 8, crop: 16, channels: 8, maxSteps: 1, out }, () => fakeTrainer());
  const ck = await loadCheckpoint(r.checkpoint);
  for (const bad of ['relative.safetensors', '/home/user/.bashrc']) {
    const file = join(dir, `bad-${bad.length}.ckpt.safetensors`);
    await saveCheckpoint({ ...ck, metadata: { ...ck.metadata, out: bad } }, file);
    try {
      await runPretrain({ resume: file, maxSteps: 2 }, () => fakeTrainer());
      t.fail(`${bad}: expected an error`);
    } catch (err) {
      t.ok(err instanceof MghfError && err.code === 'E_WEIGHTS_FILE', `${bad}: E_WEIGHTS_FILE (${(err as Error).message})`);
    }
  }
  // A checkpoint from before the paths were stored resumes to the default out, as it used to.
  const { out: _out, checkpoint: _ck, ...old } = ck.metadata;
  const oldFile = join(dir, 'old.ckpt.safetensors');
  await saveCheckpoint({ ...ck, metadata: old }, oldFile);
  const cwd = process.cwd();
  const scratch = join(dir, 'scratch');
  mkdirSync(scratch);
  process.chdir(scratch);
  try {
    const resumed = await runPretrain({ resume: oldFile, maxSteps: 2 }, () => fakeTrainer());
    t.equal(resumed.out, 'mghf-dfe.safetensors');
  } finally {
    process.chdir(cwd);
  }
});

t.test('Ctrl-C prints a resume command that starts with npx mghf', { skip: cliSkip }, async (t) => {
  // The whole Ctrl-C path is tested in pretrain.test.ts; here only the command's form.
  await ready;
  const out = join(dir, 'interrupted.safetensors');
  const { code, stderr } = await interruptAtFirstStep(CLI, ['pretrain', '--data', data, ...SMALL, '--epochs', '50', '--out', out], {
    ...process.env,
    MGHF_BINARY: standIn,
  });
  t.equal(code, 130);
  t.match(stderr, new RegExp(`Resume with: npx mghf pretrain --data ${data} --batch 8 --crop 16 --epochs 50 --out ${out} --resume ${out}\\.ckpt\\.safetensors\\n`));
});

t.test('a checkpoint passed as --weights: use the --out weights file', { skip: cliSkip || nativeSkip }, async (t) => {
  await ready;
  const out = join(dir, 'for-weights.safetensors');
  const r = runCli(['pretrain', '--data', data, ...SMALL, '--out', out, '--max-steps', '1']);
  t.equal(r.code, 0, r.stderr);
  const png = join(dir, 'x.png');
  await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 90, g: 120, b: 200 } } }).png().toFile(png);
  const ck = `${out}.ckpt.safetensors`;
  for (const args of [['score', '--sr', png, '--gt', png], ['show', '--image', png, '--out', join(dir, 'maps.png')]]) {
    const s = runCli([...args, '--weights', ck], { standIn: false });
    t.equal(s.code, 1, args[0]);
    t.equal(
      s.stderr,
      `mghf: --weights ${ck} is a pretraining checkpoint, not a weights file: pass the weights file the run wrote (its --out, ${out}); ` +
        `if the run was interrupted, finish it first with npx mghf pretrain --resume ${ck}\n`,
      `${args[0]}: one line saying which file to pass`,
    );
  }
  const ok = runCli(['score', '--sr', png, '--gt', png, '--variant', 'n', '--weights', out], { standIn: false });
  t.equal(ok.code, 0, `the --out file works (${ok.stderr.trim()})`);
});
