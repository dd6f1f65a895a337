#!/usr/bin/env node
// The `mghf` command. Each subcommand is one entry in COMMANDS: its flags (node:util parseArgs,
// strict), its usage text and an async run() returning the exit code. Exit codes: 0 success,
// 1 the work failed (bad image, bad weights, …), 2 the command line itself is wrong.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Device } from './device';
import { MghfError } from './errors';
import { closestName } from './validate';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

interface Command {
  /** One line for the command list. */
  summary: string;
  /** Argument synopsis after `mghf <name>`. */
  synopsis: string;
  /** Flag descriptions, one per line, already indented. */
  details: string;
  options: Options;
  run(values: Values): Promise<number>;
}

/** A command-line mistake: one line, then where the usage is; exit code 2. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// mghf score

const VARIANTS = ['n', 'c'] as const;
type CliVariant = (typeof VARIANTS)[number];

/**
 * The weights of the total (docs/MATH.md §7), passed to the loss explicitly so that the weights printed are
 * the ones used: MGHF-c L = Γ1·n + Γ2·csc + Γ3·lip with csc = β1·mse + β2·corr + β3·gram;
 * MGHF-n L = n (no Γ).
 */
const GAMMAS = { gamma1: 2, gamma2: 1.5, gamma3: 1e-3 } as const;
const BETAS = { beta1: 0.1333, beta2: 1, beta3: 0.1333 } as const;

interface PartRow {
  name: 'n' | 'csc' | 'mse' | 'corr' | 'gram' | 'lip';
  /** The part as the library reports it, unweighted. */
  value: number;
  /** Its factor in the total: Γ for n, csc and lip; Γ2·β for mse, corr and gram; 1 for MGHF-n's n. */
  weight: number;
  /** weight × value. The top-level rows (n, csc, lip) add up to the loss. */
  contribution: number;
  /** contribution / loss in percent; null when the loss is 0. */
  share: number | null;
  /** Set on mse, corr and gram: their contributions add up to csc's. */
  partOf?: 'csc';
}

/** The rows of the score table, in the order of the total (docs/MATH.md §7), skipped parts left out. */
export function scoreRows(variant: CliVariant, loss: number, parts: Record<string, number>, skipped: readonly string[]): PartRow[] {
  const { gamma1, gamma2, gamma3 } = GAMMAS;
  const { beta1, beta2, beta3 } = BETAS;
  const layout: Array<[PartRow['name'], number, boolean]> =
    variant === 'n'
      ? [['n', 1, false]]
      : [
          ['n', gamma1, false],
          ['csc', gamma2, false],
          ['mse', gamma2 * beta1, true],
          ['corr', gamma2 * beta2, true],
          ['gram', gamma2 * beta3, true],
          ['lip', gamma3, false],
        ];
  const skip = new Set(skipped);
  return layout
    .filter(([name]) => !skip.has(name))
    .map(([name, weight, sub]) => {
      const value = parts[name];
      const contribution = weight * value;
      return {
        name,
        value,
        weight,
        contribution,
        share: loss !== 0 && Number.isFinite(loss) ? (100 * contribution) / loss : null,
        ...(sub ? { partOf: 'csc' as const } : {}),
      };
    });
}

/**
 * The --weights file. A pretraining checkpoint is refused by the weights reader (its format is
 * 'mghf-ckpt'); recognised as one, the error says which file to pass instead.
 */
async function loadWeightsFlag(path: string) {
  const { loadWeights } = await import('./weights');
  try {
    return await loadWeights(path);
  } catch (err) {
    if (!(err instanceof MghfError) || err.code !== 'E_WEIGHTS_FILE') throw err;
    const { loadCheckpoint } = await import('./checkpoint');
    let out: string | undefined;
    try {
      out = (await loadCheckpoint(path)).metadata.out;
    } catch {
      throw err;
    }
    throw new MghfError(
      'E_WEIGHTS_FILE',
      `--weights ${path} is a pretraining checkpoint, not a weights file: pass the weights file the run wrote ` +
        `(its --out${out ? `, ${out}` : ''}); if the run was interrupted, finish it first with npx mghf pretrain --resume ${path}`,
      { argument: '--weights', cause: err },
    );
  }
}

/** --device as given (auto, cpu, cuda, cuda:N), checked for its form; usability is the library's check. */
function deviceFlag(values: Values, command: string): Device {
  const device = ((values.device as string | undefined) ?? 'auto') as Device;
  if (device !== 'auto' && device !== 'cpu' && !/^cuda(:\d+)?$/.test(device)) {
    throw new UsageError(`--device must be auto, cpu, cuda or cuda:N, got ${JSON.stringify(device)}`, command);
  }
  return device;
}

/** The device a command runs on, 'cpu' or 'cuda:N'; an unusable CUDA is E_UNSUPPORTED saying why. */
async function resolveDeviceFlag(device: Device): Promise<{ name: 'cpu' | `cuda:${number}`; backend: Record<string, unknown> }> {
  const { resolveDevice, deviceName } = await import('./device');
  const { backendInfo } = await import('./native');
  const resolved = resolveDevice(device, '--device');
  const info = backendInfo();
  const backend: Record<string, unknown> = { binary: info.binary, isa: info.isa, threads: info.threads };
  if (resolved.device === 'cuda') {
    if (resolved.deviceIndex === 0 && info.deviceName) backend.deviceName = info.deviceName;
    if (resolved.deviceIndex === 0 && info.computeCapability) backend.computeCapability = info.computeCapability;
    if (info.cudaRuntimeVersion) backend.cudaRuntimeVersion = info.cudaRuntimeVersion;
  }
  return { name: deviceName(resolved) as 'cpu' | `cuda:${number}`, backend };
}

/**
 * E_TOO_SMALL from the library names its options (opts.patch, gamma3); on the command line the
 * way out is --variant n (no LIP patches) or a larger image.
 */
function tooSmallForCli(err: unknown, variant: CliVariant, width: number, height: number): unknown {
  if (!(err instanceof MghfError) || err.code !== 'E_TOO_SMALL') return err;
  const min = Number(/at least (\d+)×/.exec(err.message)?.[1] ?? NaN);
  const lip = variant === 'c' && !(min <= 2);
  const message = lip
    ? `The images are ${width}×${height} pixels, smaller than the ${Number.isFinite(min) ? `${min}×${min} ` : ''}patches ` +
      `of MGHF-c's LIP term: use --variant n (the feature MSE, no patches), or images at least ` +
      `${Number.isFinite(min) ? `${min}×${min}` : 'that size'}`
    : `The images are ${width}×${height} pixels, too small for the feature extractor: use images at least 2×2`;
  return new MghfError('E_TOO_SMALL', message, { argument: err.argument ?? 'sr', cause: err });
}

async function runScore(values: Values): Promise<number> {
  const sr = requireString(values, 'sr', 'score');
  const gt = requireString(values, 'gt', 'score');
  const variantFlag = values.variant as string | undefined;
  if (variantFlag !== undefined && !(VARIANTS as readonly string[]).includes(variantFlag)) {
    throw new UsageError(`--variant must be one of ${VARIANTS.join(', ')}, got ${JSON.stringify(variantFlag)}`, 'score');
  }
  const variant = (variantFlag ?? 'c') as CliVariant;
  const deviceWanted = deviceFlag(values, 'score');

  // Loaded here, not at the top, so `mghf --help` works even when the native addon does not load.
  const { decodeImage } = await import('./image');
  const lib = await import('./index');
  const device = await resolveDeviceFlag(deviceWanted);

  const [srImage, gtImage] = await Promise.all([decodeImage(sr), decodeImage(gt)]);
  const [, , hs, ws] = srImage.dims;
  const [, , hg, wg] = gtImage.dims;
  if (hs !== hg || ws !== wg) {
    throw new MghfError(
      'E_SHAPE',
      `Images differ in size: --sr ${sr} is ${ws}×${hs} but --gt ${gt} is ${wg}×${hg} (width×height); ` +
        'they must be the same size',
    );
  }
  const weights = typeof values.weights === 'string' ? await loadWeightsFlag(values.weights) : undefined;
  let result;
  try {
    // Forward only: a score needs no gradient (about half the time and memory of the full call).
    result = await lib.mghfLoss(srImage, gtImage, {
      grad: false,
      device: device.name,
      variant,
      ...(variant === 'c' ? { ...GAMMAS, ...BETAS } : {}),
      ...(weights !== undefined ? { weights } : {}),
    });
  } catch (err) {
    throw tooSmallForCli(err, variant, ws, hs);
  }

  const rows = scoreRows(variant, result.loss, result.parts, result.skipped);
  if (values.json) {
    const out = {
      sr,
      gt,
      width: ws,
      height: hs,
      variant,
      device: device.name,
      backend: device.backend,
      weights: typeof values.weights === 'string' ? values.weights : null,
      loss: result.loss,
      parts: Object.fromEntries(rows.map(({ name, ...row }) => [name, row])),
      skipped: result.skipped,
    };
    process.stdout.write(JSON.stringify(out) + '\n');
    return 0;
  }
  process.stdout.write(formatScoreTable(result.loss, rows, { width: ws, height: hs, variant, device: device.name, skipped: result.skipped }));
  return 0;
}

/** The score as a table: one row per part, the csc terms indented under csc. */
export function formatScoreTable(
  loss: number,
  rows: readonly PartRow[],
  about: { width: number; height: number; variant: CliVariant; device: string; skipped: readonly string[] },
): string {
  const cells = rows.map((r) => [
    (r.partOf ? '    ' : '  ') + r.name,
    formatNumber(r.value),
    String(Number(r.weight.toPrecision(6))),
    formatNumber(r.contribution),
    r.share === null ? '-' : `${r.share.toFixed(1)}%`,
  ]);
  const head = ['  part', 'value', 'weight', 'contribution', 'share'];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('   ').trimEnd();
  const name = about.variant === 'c' ? 'MGHF-c' : 'MGHF-n';
  const lines = [`loss ${formatNumber(loss)}   (${about.width}×${about.height}, ${name}, on ${about.device})`, '', line(head), ...cells.map(line), ''];
  if (about.variant === 'c') {
    lines.push(
      'contribution = weight × value: n, csc and lip add up to the loss; mse, corr and gram to csc.',
      `weights: Γ1 = ${GAMMAS.gamma1} (n), Γ2 = ${GAMMAS.gamma2} (csc), Γ3 = ${GAMMAS.gamma3} (lip); ` +
        `mse, corr, gram: Γ2·β with β = ${BETAS.beta1}, ${BETAS.beta2}, ${BETAS.beta3}`,
    );
  } else {
    lines.push('MGHF-n: the loss is the feature MSE n, unweighted.');
  }
  // Parts of the variant that were not computed (a weight of 0); MGHF-n's missing parts are not "skipped".
  const skipped = about.variant === 'c' ? about.skipped : [];
  if (skipped.length > 0) lines.push(`skipped: ${skipped.join(', ')}`);
  return lines.join('\n') + '\n';
}

function formatNumber(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const ax = Math.abs(x);
  return ax < 1e-3 || ax >= 1e5 ? x.toExponential(6) : x.toPrecision(7);
}

// ---------------------------------------------------------------------------------------------
// mghf pretrain

/** A flag's value as an integer ≥ min, or undefined when absent. */
function intFlag(values: Values, name: string, command: string, min = 1): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^[0-9]+$/.test(v) || !Number.isSafeInteger(Number(v)) || Number(v) < min) {
    throw new UsageError(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(v)}`, command);
  }
  return Number(v);
}

function numberFlag(values: Values, name: string, command: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const x = typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(x) || x <= 0) throw new UsageError(`--${name} must be a number > 0, got ${JSON.stringify(v)}`, command);
  return x;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const percent = (x: number | null): string => (x === null ? 'n/a' : `${(100 * x).toFixed(1)}%`);

/** '1 step', '5 steps'. */
const count = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * The progress line: the epoch and step, or under --max-steps the step budget (the epoch count
 * would promise more than the run does); the rate and time left once they are measurable.
 */
export function progressLine(p: {
  epoch: number;
  epochs: number;
  step: number;
  totalSteps: number;
  stepsPerEpoch: number;
  runningLoss: number;
  accuracy: number;
  imagesPerSecond: number;
  etaSeconds: number;
}): string {
  const capped = p.totalSteps < p.epochs * p.stepsPerEpoch;
  const where = capped
    ? `step ${p.step}/${p.totalSteps} (--max-steps)  epoch ${p.epoch}`
    : `epoch ${p.epoch}/${p.epochs}  step ${p.step}/${p.totalSteps}`;
  const rate = Number.isFinite(p.imagesPerSecond) && p.imagesPerSecond > 0 ? `  ${p.imagesPerSecond.toFixed(1)} img/s` : '';
  const left = Number.isFinite(p.etaSeconds) && p.step < p.totalSteps ? `  left ${formatDuration(p.etaSeconds)}` : '';
  return `${where}  loss ${p.runningLoss.toFixed(4)}  acc ${percent(p.accuracy)}${rate}${left}`;
}

/** The command line that continues an interrupted run: the same flags, --resume pointing at the checkpoint. */
function resumeCommand(values: Values, checkpoint: string): string {
  const quote = (v: string) => (/^[\w@%+=:,./-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`);
  const flags = Object.entries(values)
    .filter(([k, v]) => k !== 'resume' && typeof v === 'string')
    .map(([k, v]) => `--${k} ${quote(v as string)}`);
  return ['npx mghf pretrain', ...flags, '--resume', quote(checkpoint)].join(' ');
}

async function runPretrainCommand(values: Values): Promise<number> {
  const command = 'pretrain';
  const data = values.data as string | undefined;
  const resume = values.resume as string | undefined;
  if (data === undefined && resume === undefined) throw new UsageError('missing --data (or --resume with a checkpoint)', command);
  const device = deviceFlag(values, command);
  const opts = {
    ...(data !== undefined ? { data } : {}),
    ...(resume !== undefined ? { resume } : {}),
    epochs: intFlag(values, 'epochs', command),
    batch: intFlag(values, 'batch', command),
    lr: numberFlag(values, 'lr', command),
    crop: intFlag(values, 'crop', command, 2),
    seed: intFlag(values, 'seed', command, 0),
    maxSteps: intFlag(values, 'max-steps', command),
    out: values.out as string | undefined,
    device,
  };
  for (const key of Object.keys(opts) as (keyof typeof opts)[]) if (opts[key] === undefined) delete opts[key];

  const lib = await import('./pretrain');
  const err = process.stderr;
  const tty = Boolean(err.isTTY);
  let barShown = false;
  let lastLine = 0;
  const clearBar = () => {
    if (tty && barShown) err.write('\r\x1b[K');
    barShown = false;
  };
  const say = (line: string) => {
    clearBar();
    err.write(line + '\n');
  };

  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) {
      say('mghf: interrupted again; exiting without waiting for the checkpoint');
      process.exit(130);
    }
    say('mghf: interrupted; stopping the step in progress and writing a checkpoint of the last completed one (Ctrl-C again to quit at once)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  let result;
  try {
    result = await lib.pretrain({
      ...opts,
      signal: controller.signal,
      onStart: (i) => {
        const a = i.architecture;
        say(
          `Pretraining the DFE (N=${a.channels}, K=${a.blocks}, e=${a.expand}) on ${i.classes.length} classes: ` +
            `${i.trainImages} training images, ${i.valImages} validation images (${i.valSource === 'folder' ? 'val/' : '10% split off'}); ` +
            `${count(i.stepsPerEpoch, 'step')} per epoch, ${count(i.totalSteps, 'step')}` +
            `${i.totalSteps < i.epochs * i.stepsPerEpoch ? ' (--max-steps)' : ''}, on ${i.device}` +
            (i.resumedFrom ? `, resuming at step ${i.step} from ${i.resumedFrom}; writing ${i.out}` : ''),
        );
      },
      onProgress: (p) => {
        const line = progressLine(p);
        const now = Date.now();
        if (tty) {
          err.write(`\r${line}\x1b[K`);
          barShown = true;
        } else if (now - lastLine >= 10_000 || p.step === p.totalSteps) {
          err.write(line + '\n');
          lastLine = now;
        }
      },
      onEpoch: (e) => {
        say(`epoch ${e.epoch}/${e.epochs}: validation loss ${e.valLoss === null ? 'n/a' : e.valLoss.toFixed(4)}, accuracy ${percent(e.valAccuracy)} (${e.valImages} images); checkpoint ${e.checkpoint}`);
      },
      onWarning: (m) => say(`mghf: warning: ${m}`),
    });
  } finally {
    process.removeListener('SIGINT', onSigint);
    clearBar();
  }
  if (result.stopped === 'aborted') {
    say(`mghf: stopped at step ${result.step}; checkpoint written to ${result.checkpoint}`);
    say(`Resume with: ${resumeCommand(values, result.checkpoint)}`);
    return 130;
  }
  say(
    `Wrote ${result.out}: ${count(result.step, 'step')} (${result.epochs.toFixed(2)} epochs), ` +
      `validation accuracy ${percent(result.valAccuracy)}${result.stopped === 'maxSteps' ? ' (stopped at --max-steps)' : ''}`,
  );
  return 0;
}

// ---------------------------------------------------------------------------------------------
// mghf show

async function runShow(values: Values): Promise<number> {
  const image = requireString(values, 'image', 'show');
  const out = requireString(values, 'out', 'show');
  const cols = intFlag(values, 'cols', 'show');
  const tile = intFlag(values, 'tile', 'show');
  if (tile !== undefined && tile > 8192) throw new UsageError(`--tile must be at most 8192, got ${tile}`, 'show');
  const deviceWanted = deviceFlag(values, 'show');
  const { decodeImage } = await import('./image');
  const lib = await import('./index');
  const { writeFeatureGrid } = await import('./show');
  const device = await resolveDeviceFlag(deviceWanted);
  const x = await decodeImage(image);
  const weights = typeof values.weights === 'string' ? await loadWeightsFlag(values.weights) : undefined;
  const grid = await lib.featureGrid(x, {
    device: device.name,
    ...(weights ? { weights } : {}),
    ...(cols !== undefined ? { cols } : {}),
    ...(tile !== undefined ? { tile } : {}),
  });
  await writeFeatureGrid(grid, out);
  process.stdout.write(
    `Wrote ${out}: ${grid.maps} feature maps in ${grid.cols}×${grid.rows} tiles of ${grid.tileWidth}×${grid.tileHeight} px ` +
      `(${grid.width}×${grid.height} px, on ${device.name}); each labelled #channel and importance, ` +
      `the ${grid.selected.length} kept by the entropy step framed in orange\n`,
  );
  return 0;
}

// ---------------------------------------------------------------------------------------------
// mghf upscale

const UPSCALE_EXTENSIONS = /\.(png|jpe?g)$/i;

async function runUpscale(values: Values): Promise<number> {
  const command = 'upscale';
  const model = requireString(values, 'model', command);
  const input = requireString(values, 'in', command);
  const outDir = requireString(values, 'out', command);
  const tile = intFlag(values, 'tile', command, 0);
  // The default is the CPU, not auto: a result that does not depend on the machine unless asked.
  // --device cuda[:N] runs the network there (E_UNSUPPORTED with the reason when CUDA is not usable).
  const device = values.device === undefined ? { name: 'cpu' as const } : await resolveDeviceFlag(deviceFlag(values, command));
  const { promises: fsp } = await import('node:fs');
  const { basename, extname, join } = await import('node:path');
  const { SrNet } = await import('./srnet');
  const { upscaleImage } = await import('./upscale');
  const { decodeImage, saveImage, fileErrorText } = await import('./image');
  let inputs: string[];
  let stat;
  try {
    stat = await fsp.stat(input);
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `--in ${input}: ${fileErrorText(err)}`, { argument: '--in' });
  }
  if (stat.isDirectory()) {
    inputs = (await fsp.readdir(input)).filter((n) => UPSCALE_EXTENSIONS.test(n)).sort().map((n) => join(input, n));
    if (inputs.length === 0) throw new MghfError('E_ARGUMENT', `--in ${input}: the folder has no PNG or JPEG images`, { argument: '--in' });
  } else {
    inputs = [input];
  }
  const net = await SrNet.load(model, { device: device.name });
  await fsp.mkdir(outDir, { recursive: true });
  const t0 = performance.now();
  for (const file of inputs) {
    const lr = await decodeImage(file);
    const sr = await upscaleImage(net, lr, tile !== undefined ? { tile } : {});
    const out = join(outDir, basename(file, extname(file)) + '.png');
    await saveImage(sr, out);
    process.stdout.write(`${file} [${lr.dims[3]}×${lr.dims[2]}] → ${out} [${sr.dims[3]}×${sr.dims[2]}]\n`);
    lr.dispose();
    sr.dispose();
  }
  process.stdout.write(`Upscaled ${inputs.length} image${inputs.length === 1 ? '' : 's'} ×4 with ${model} (${net.config.blocks} blocks, ${net.config.channels} channels) on ${device.name === 'cpu' ? 'the CPU' : device.name} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  net.dispose();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// mghf doctor

async function runDoctorCommand(values: Values): Promise<number> {
  const { runDoctor, formatDoctor } = await import('./doctor');
  const report = await runDoctor();
  process.stdout.write(values.json ? JSON.stringify(report) + '\n' : formatDoctor(report));
  return report.ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// The command table

const COMMANDS: Record<string, Command> = {
  score: {
    summary: 'MGHF loss between a super-resolved image and its ground truth',
    synopsis: '--sr <image> --gt <image> [--weights <file.safetensors>] [--variant n|c] [--device auto|cpu|cuda[:N]] [--json]',
    details: [
      '  --sr <image>        super-resolved image (PNG, JPEG, WebP, TIFF, …)',
      '  --gt <image>        ground-truth image, same size',
      '  --weights <file>    DFE weights (safetensors, docs/MATH.md §9); default: the library default',
      '  --variant n|c       MGHF-n (feature MSE only) or MGHF-c (full loss); default c',
      '  --device D          auto (CUDA device 0 when usable, else the CPU), cpu, cuda or cuda:N',
      '  --json              print one JSON object instead of a table',
      '  Prints each part unweighted, its weight in the total, its contribution (weight × value)',
      '  and its share of the loss.',
    ].join('\n'),
    options: {
      sr: { type: 'string' },
      gt: { type: 'string' },
      weights: { type: 'string' },
      variant: { type: 'string' },
      device: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    run: runScore,
  },
  pretrain: {
    summary: 'pretrain the detail feature extractor as a classifier on an ImageFolder tree (docs/MATH.md §10)',
    synopsis:
      '--data <dir> [--epochs 20] [--batch 32] [--lr 5e-4] [--crop 128] [--seed 0] [--device auto|cpu|cuda[:N]] ' +
      '[--out mghf-dfe.safetensors] [--resume <checkpoint>] [--max-steps N]',
    details: [
      '  --data <dir>        <dir>/train/<class>/<image> and <dir>/val/<class>/<image>; without val/,',
      '                      10% of each class is held out (the class folders may also sit in <dir>)',
      '  --epochs N          epochs in all (default 20)',
      '  --batch N           images per step (default 32)',
      '  --lr X              Adam learning rate, × 0.95 every 5,000 steps (default 5e-4)',
      '  --crop N            random crop size; shorter images are scaled up (default 128)',
      '  --seed N            seeds the weights and the data order (default 0)',
      '  --device D          auto (CUDA device 0 when usable, else the CPU), cpu, cuda or cuda:N;',
      '                      a run resumes exactly on the device it ran on',
      '  --out <file>        the weights file written at the end (default mghf-dfe.safetensors);',
      '                      a checkpoint <file>.ckpt.safetensors is written after every epoch',
      '  --resume <ckpt>     continue an interrupted run exactly (its settings come from the checkpoint)',
      '  --max-steps N       stop after N steps in all: checkpoint, validate, write --out',
      '  Ctrl-C              write a checkpoint and exit 130 with the command that resumes',
    ].join('\n'),
    options: {
      data: { type: 'string' },
      epochs: { type: 'string' },
      batch: { type: 'string' },
      lr: { type: 'string' },
      crop: { type: 'string' },
      seed: { type: 'string' },
      device: { type: 'string' },
      out: { type: 'string' },
      resume: { type: 'string' },
      'max-steps': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    run: runPretrainCommand,
  },
  show: {
    summary: 'a picture of the DFE feature maps of an image, the maps the entropy step keeps framed',
    synopsis: '--image <image> --out <maps.png> [--weights <file.safetensors>] [--cols 16] [--tile N] [--device auto|cpu|cuda[:N]]',
    details: [
      '  --image <image>     the image (PNG, JPEG, WebP, TIFF, …)',
      '  --out <file>        the grid picture (format from the extension, e.g. .png)',
      '  --weights <file>    DFE weights (safetensors, docs/MATH.md §9); default: the library default',
      '  --cols N            maps per row (default 16)',
      '  --tile N            the longer side of each map in pixels (default: the image\'s, at least 64,',
      '                      and at most what keeps the picture within 4096 pixels wide)',
      '  --device D          auto (CUDA device 0 when usable, else the CPU), cpu, cuda or cuda:N',
      '  Each map is labelled with its channel number and importance (docs/MATH.md §4); the maps the',
      '  entropy step keeps are framed in orange.',
    ].join('\n'),
    options: {
      image: { type: 'string' },
      out: { type: 'string' },
      weights: { type: 'string' },
      cols: { type: 'string' },
      tile: { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    run: runShow,
  },
  upscale: {
    summary: 'apply a trained ×4 SR model (examples/sr) to an image or a folder of images',
    synopsis: '--model <model.safetensors> --in <image|dir> --out <dir> [--tile 128] [--device cpu|cuda[:N]|auto]',
    details: [
      '  --model <file>      an SR model saved by SrNet.save (examples/sr/models/*.safetensors)',
      '  --in <image|dir>    a PNG/JPEG image, or a folder of them',
      '  --out <dir>         where the ×4 PNGs are written, with the input names',
      '  --tile N            LR tile side (default 128; 0: whole image at once); tiles overlap by',
      '                      more than the network sees, so the result equals the untiled one',
      '  --device D          cpu (default), cuda, cuda:N, or auto (CUDA when usable, else the CPU);',
      '                      cuda when CUDA is not usable is an error saying why',
    ].join('\n'),
    options: {
      model: { type: 'string' },
      in: { type: 'string' },
      out: { type: 'string' },
      tile: { type: 'string' },
      device: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    run: runUpscale,
  },
  doctor: {
    summary: 'check the installation: binary loaded, CUDA and why not, versions, a tiny loss and pretraining step on each backend',
    synopsis: '[--json]',
    details: [
      '  --json              print the report as one JSON object',
      '  Exit code 0 when every check passed (CPU loss and pretraining step; on CUDA, when usable,',
      '  the same and their agreement with the CPU within docs/MATH.md §8 and the trainer parity',
      '  tolerances), 1 otherwise.',
    ].join('\n'),
    options: {
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    run: runDoctorCommand,
  },
};

function requireString(values: Values, name: string, command: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0) throw new UsageError(`missing --${name}`, command);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Usage and dispatch

function usage(command?: string): string {
  if (command !== undefined && COMMANDS[command]) {
    const c = COMMANDS[command];
    return `Usage: mghf ${command} ${c.synopsis}\n\n${c.summary}.\n\n${c.details}\n`;
  }
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const list = Object.entries(COMMANDS)
    .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
    .join('\n');
  const synopses = Object.entries(COMMANDS)
    .map(([name, c]) => `  mghf ${name} ${c.synopsis}`)
    .join('\n');
  return (
    `Usage: mghf <command> [options]\n\n${synopses}\n  mghf help [command]\n  mghf --version\n\n` +
    `Commands:\n${list}\n\nRun "npx mghf help <command>" for a command's options.\n`
  );
}

/** The line after a usage error: where the full usage is. */
function usageHint(command?: string): string {
  return command === undefined ? 'run "npx mghf help" for the commands' : `run "npx mghf help ${command}" for usage`;
}

function unknownCommand(name: string): string {
  const suggestion = closestName(name, Object.keys(COMMANDS));
  return `mghf: unknown command '${oneLine(name)}'${suggestion ? ` (did you mean '${suggestion}'?)` : ''}\n${usageHint()}\n`;
}

const oneLine = (s: string) => (s.length > 60 ? `${s.slice(0, 60)}…` : s).replace(/[\u0000-\u001f]/g, '?');

/** parseArgs' errors in the CLI's words: an unknown flag with the nearest known one, a flag without its value, a stray argument. */
function parseArgsMessage(err: Error, command: Command): string {
  const code = (err as NodeJS.ErrnoException).code;
  const flags = Object.keys(command.options);
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const flag = /'([^']*)'/.exec(err.message)?.[1] ?? '';
    const suggestion = closestName(flag.replace(/^-+/, '').split('=')[0], flags);
    return `unknown flag ${oneLine(flag)}${suggestion ? ` (did you mean --${suggestion}?)` : ''}`;
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const m = /^Option '(-\S+)(?: <value>)?' argument missing/.exec(err.message);
    if (m) return `${m[1]} needs a value`;
    const b = /^Option '(-\S+)' does not take an argument/.exec(err.message);
    if (b) return `${b[1]} takes no value`;
  }
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const arg = /'([^']*)'/.exec(err.message)?.[1] ?? '';
    return `unexpected argument '${oneLine(arg)}': every input is given with a flag (--name value)`;
  }
  return err.message.split('\n')[0];
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(usage());
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    if (topic !== undefined && !Object.prototype.hasOwnProperty.call(COMMANDS, topic)) {
      process.stderr.write(unknownCommand(topic));
      return 2;
    }
    process.stdout.write(usage(topic));
    return 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = Object.prototype.hasOwnProperty.call(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) {
    process.stderr.write(unknownCommand(name));
    return 2;
  }

  try {
    let values: Values;
    try {
      ({ values } = parseArgs({ args: rest, options: command.options, strict: true, allowPositionals: false }));
    } catch (err) {
      // parseArgs reports unknown flags, missing values and stray positionals as TypeErrors
      // with an ERR_PARSE_ARGS_* code.
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) throw new UsageError(parseArgsMessage(err as Error, command), name);
      throw err;
    }
    if (values.help) {
      process.stdout.write(usage(name));
      return 0;
    }
    return await command.run(values);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`mghf: ${err.message}\n${usageHint(err.command)}\n`);
      return 2;
    }
    process.stderr.write(failureLine(err));
    return 1;
  }
}

/**
 * One line for any failure, never a stack trace: an MghfError's message as it is; anything else
 * (a RangeError from an allocation, a bug) by its name and first line, with the stack only when
 * MGHF_DEBUG is set.
 */
export function failureLine(err: unknown): string {
  if (process.env.MGHF_DEBUG && err instanceof Error && err.stack) return `mghf: ${err.stack}\n`;
  if (err instanceof MghfError) return `mghf: ${err.message}\n`;
  let text: string;
  try {
    text = err instanceof Error ? `${err.message}${err.name && err.name !== 'Error' ? ` (${err.name})` : ''}` : String(err);
  } catch {
    text = 'an error that cannot be described';
  }
  if (/allocation failed|out of memory/i.test(text)) text = `out of memory: ${text}`;
  return `mghf: ${text.split('\n')[0]} (set MGHF_DEBUG=1 for details)\n`;
}

if (require.main === module) {
  // Whatever escapes (a rejection nobody awaited, an exception in a callback) still ends as one line.
  const die = (err: unknown) => {
    process.stderr.write(failureLine(err));
    process.exit(1);
  };
  process.on('uncaughtException', die);
  process.on('unhandledRejection', die);
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, die);
}
