#!/usr/bin/env node
// The `mghf` command. Each subcommand is one entry in COMMANDS: its flags (node:util parseArgs,
// strict), its usage text and an async run() returning the exit code. Exit codes: 0 success,
// 1 the work failed (bad image, bad weights, …), 2 the command line itself is wrong.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MghfError } from './errors';

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

/** A command-line mistake: printed with the usage, exit code 2. */
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
// Report order of the parts (SPEC §7).
const PART_ORDER = ['n', 'csc', 'mse', 'corr', 'gram', 'lip'] as const;

async function runScore(values: Values): Promise<number> {
  const sr = requireString(values, 'sr', 'score');
  const gt = requireString(values, 'gt', 'score');
  const variant = values.variant as string | undefined;
  if (variant !== undefined && !(VARIANTS as readonly string[]).includes(variant)) {
    throw new UsageError(`--variant must be one of ${VARIANTS.join(', ')}, got ${JSON.stringify(variant)}`, 'score');
  }

  // Loaded here, not at the top, so `mghf --help` works even when the native addon does not load.
  const { decodeImage } = await import('./image');
  const lib = await import('./index');

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
  const weights = typeof values.weights === 'string' ? await lib.loadWeights(values.weights) : undefined;
  const result = await lib.mghfLoss(srImage, gtImage, {
    device: 'cpu',
    ...(variant !== undefined ? { variant: variant as (typeof VARIANTS)[number] } : {}),
    ...(weights !== undefined ? { weights } : {}),
  });

  // Skipped parts are reported as 0 by the library; print only the parts that were computed.
  const skipped = new Set<string>(result.skipped);
  const parts = PART_ORDER.filter((k) => !skipped.has(k));
  if (values.json) {
    const out = {
      sr,
      gt,
      width: ws,
      height: hs,
      variant: variant ?? 'c',
      weights: typeof values.weights === 'string' ? values.weights : null,
      loss: result.loss,
      parts: Object.fromEntries(parts.map((k) => [k, result.parts[k]])),
      skipped: result.skipped,
    };
    process.stdout.write(JSON.stringify(out) + '\n');
    return 0;
  }
  const lines = [`loss   ${formatNumber(result.loss)}   (${ws}×${hs}, variant ${variant ?? 'c'})`];
  for (const k of parts) lines.push(`  ${k.padEnd(5)}${formatNumber(result.parts[k])}`);
  if (skipped.size > 0) lines.push(`skipped: ${[...skipped].join(', ')}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

function formatNumber(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const ax = Math.abs(x);
  return ax < 1e-3 || ax >= 1e5 ? x.toExponential(6) : x.toPrecision(7);
}

// ---------------------------------------------------------------------------------------------
// The command table

const COMMANDS: Record<string, Command> = {
  score: {
    summary: 'MGHF loss between a super-resolved image and its ground truth',
    synopsis: '--sr <image> --gt <image> [--weights <file.safetensors>] [--variant n|c] [--json]',
    details: [
      '  --sr <image>        super-resolved image (PNG, JPEG, WebP, TIFF, …)',
      '  --gt <image>        ground-truth image, same size',
      '  --weights <file>    DFE weights (safetensors, SPEC §9); default: the library default',
      '  --variant n|c       MGHF-n (feature MSE only) or MGHF-c (full loss); default c',
      '  --json              print one JSON object instead of a table',
    ].join('\n'),
    options: {
      sr: { type: 'string' },
      gt: { type: 'string' },
      weights: { type: 'string' },
      variant: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    run: runScore,
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
    `Commands:\n${list}\n\nRun 'mghf help <command>' for a command's options.\n`
  );
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
    if (topic !== undefined && !COMMANDS[topic]) {
      process.stderr.write(`mghf: unknown command '${topic}'\n\n${usage()}`);
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
    process.stderr.write(`mghf: unknown command '${name}'\n\n${usage()}`);
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
      if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message, name);
      throw err;
    }
    if (values.help) {
      process.stdout.write(usage(name));
      return 0;
    }
    return await command.run(values);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`mghf: ${err.message}\n\n${usage(err.command)}`);
      return 2;
    }
    if (err instanceof MghfError) {
      process.stderr.write(`mghf: ${err.message}\n`);
      return 1;
    }
    // Not one of ours: a bug, so keep the stack.
    process.stderr.write(`mghf: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`mghf: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
