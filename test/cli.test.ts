// `mghf score` end to end: the compiled CLI on real PNG files, exit codes, and agreement with
// mghfLossSync on the same decoded tensors.

import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const skip = existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`;

interface ScoreJson {
  loss: number;
  parts: Record<string, number>;
  skipped: string[];
}

function runCli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A smooth RGB image with an edge and some texture; `noise` > 0 perturbs it like an SR output. */
function imagePixels(width: number, height: number, noise: number, seed: number): Buffer {
  const px = Buffer.alloc(width * height * 3);
  let s = seed >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let ch = 0; ch < 3; ch++) {
        let v = 0.5 + 0.3 * Math.sin((x + 2 * ch) / 5) * Math.cos(y / 7) + (x > width / 2 ? 0.15 : -0.15);
        v += noise * (rand() - 0.5);
        px[(y * width + x) * 3 + ch] = Math.round(255 * Math.min(1, Math.max(0, v)));
      }
    }
  }
  return px;
}

async function writePng(path: string, width: number, height: number, noise: number, seed: number) {
  await sharp(imagePixels(width, height, noise, seed), { raw: { width, height, channels: 3 } })
    .png()
    .toFile(path);
}

t.test('mghf score', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gt = join(dir, 'gt.png');
  const sr = join(dir, 'sr.png');
  const other = join(dir, 'other-size.png');
  await writePng(gt, 48, 40, 0, 1);
  await writePng(sr, 48, 40, 0.2, 2);
  await writePng(other, 40, 48, 0, 3);

  let cliLoss = NaN;
  t.test('--variant n --json prints the loss and its part', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--variant', 'n', '--json']);
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    const out = JSON.parse(r.stdout) as ScoreJson;
    t.ok(Number.isFinite(out.loss) && out.loss > 0, `finite positive loss (${out.loss})`);
    t.equal(out.loss, out.parts.n, 'variant n: loss is parts.n');
    t.ok(Array.isArray(out.skipped), 'skipped is a list');
    cliLoss = out.loss;
  });

  t.test('without --variant: MGHF-c, every computed part printed', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--json']);
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    const out = JSON.parse(r.stdout) as ScoreJson & { variant: string };
    t.equal(out.variant, 'c', 'the default variant is c');
    t.ok(Number.isFinite(out.loss) && out.loss > 0, `finite positive loss (${out.loss})`);
    t.ok(Number.isFinite(out.parts.lip), `parts.lip exists (${out.parts.lip})`);
    t.same(Object.keys(out.parts), ['n', 'csc', 'mse', 'corr', 'gram', 'lip'], 'all six parts, none skipped');
    t.same(out.skipped, []);
    const table = runCli(['score', '--sr', sr, '--gt', gt]);
    t.equal(table.code, 0, `table: exit 0 (stderr: ${table.stderr.trim()})`);
    for (const part of Object.keys(out.parts)) t.match(table.stdout, new RegExp(`^\\s+${part}\\s`, 'm'), `table prints ${part}`);
  });

  t.test('identical images give loss 0', async (t) => {
    const r = runCli(['score', '--sr', gt, '--gt', gt, '--variant', 'n', '--json']);
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    t.equal((JSON.parse(r.stdout) as ScoreJson).loss, 0);
  });

  t.test('the CLI agrees with mghfLossSync on the decoded tensors', async (t) => {
    const { decodeImage } = await import('../lib/image');
    const { mghfLossSync } = await import('../lib/index');
    const [a, b] = await Promise.all([decodeImage(sr), decodeImage(gt)]);
    t.same(a.dims, [1, 3, 40, 48], 'decoded as [1, 3, H, W]');
    const ref = mghfLossSync(a, b, { variant: 'n', device: 'cpu' }).loss;
    t.ok(Math.abs(cliLoss - ref) <= 1e-6 * Math.abs(ref), `CLI ${cliLoss} vs library ${ref}`);
  });

  t.test('the table output names the loss', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--variant', 'n']);
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    t.match(r.stdout, /^loss\s/m);
    t.match(r.stdout, /^\s+n\s/m);
  });

  t.test('images of different sizes: exit 1 with a message, no stack', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', other, '--variant', 'n', '--json']);
    t.equal(r.code, 1);
    t.match(r.stderr, /^mghf: .*size/);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    t.equal(r.stdout, '');
  });

  t.test('a missing image: exit 1 naming the path', async (t) => {
    const missing = join(dir, 'nope.png');
    const r = runCli(['score', '--sr', missing, '--gt', gt, '--variant', 'n']);
    t.equal(r.code, 1);
    t.match(r.stderr, missing);
  });

  t.test('an unknown flag: usage and exit 2', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--bogus']);
    t.equal(r.code, 2);
    t.match(r.stderr, /--bogus/);
    t.match(r.stderr, /Usage: mghf/);
  });

  t.test('an unknown command: usage and exit 2', async (t) => {
    const r = runCli(['frobnicate']);
    t.equal(r.code, 2);
    t.match(r.stderr, /unknown command/);
    t.match(r.stderr, /Usage: mghf/);
  });

  t.test('--help and help print usage, exit 0', async (t) => {
    for (const args of [['--help'], ['help'], ['help', 'score'], ['score', '--help']]) {
      const r = runCli(args);
      t.equal(r.code, 0, args.join(' '));
      t.match(r.stdout, /Usage: mghf/, args.join(' '));
    }
  });
});
