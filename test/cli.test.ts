// `mghf score` end to end: the compiled CLI on real PNG files, exit codes, the weighted table and
// its JSON, --device, usage errors, and agreement with mghfLossSync on the same decoded tensors.

import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { backendInfo } from '../lib/native';

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const skip = existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`;

interface PartJson {
  value: number;
  weight: number;
  contribution: number;
  share: number | null;
  partOf?: string;
}

interface ScoreJson {
  loss: number;
  parts: Record<string, PartJson>;
  skipped: string[];
  variant: string;
  device: string;
  backend: { isa: string; threads: number; binary: string };
  width: number;
  height: number;
}

const near = (a: number, b: number, rel = 1e-9) => Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b)) + 1e-15;

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
  let cliLossC = NaN;
  t.test('--variant n --json prints the loss and its part', async (t) => {
    // On the CPU, to compare with mghfLossSync below at the CPU's precision.
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--variant', 'n', '--device', 'cpu', '--json']);
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    const out = JSON.parse(r.stdout) as ScoreJson;
    t.ok(Number.isFinite(out.loss) && out.loss > 0, `finite positive loss (${out.loss})`);
    t.same(Object.keys(out.parts), ['n'], 'MGHF-n has one part');
    t.same(out.parts.n, { value: out.loss, weight: 1, contribution: out.loss, share: 100 }, 'variant n: the loss is n, unweighted');
    t.ok(Array.isArray(out.skipped), 'skipped is a list');
    t.match(out, { variant: 'n', width: 48, height: 40 });
    cliLoss = out.loss;
  });

  t.test('without --variant: MGHF-c, every part with its weight, contribution and share', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--device', 'cpu', '--json']);
    t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    const out = JSON.parse(r.stdout) as ScoreJson;
    t.equal(out.variant, 'c', 'the default variant is c');
    t.ok(Number.isFinite(out.loss) && out.loss > 0, `finite positive loss (${out.loss})`);
    t.same(Object.keys(out.parts), ['n', 'csc', 'mse', 'corr', 'gram', 'lip'], 'all six parts, in the order of the total');
    t.same(out.skipped, []);
    const p = out.parts;
    // SPEC §7: L = Γ1·n + Γ2·csc + Γ3·lip, csc = β1·mse + β2·corr + β3·gram.
    const expected = { n: 2, csc: 1.5, mse: 1.5 * 0.1333, corr: 1.5, gram: 1.5 * 0.1333, lip: 1e-3 };
    for (const [name, w] of Object.entries(expected)) {
      t.ok(near(p[name].weight, w), `${name}: weight ${p[name].weight} = ${w}`);
      t.ok(near(p[name].contribution, p[name].weight * p[name].value), `${name}: contribution = weight × value`);
      t.ok(near(p[name].share ?? NaN, (100 * p[name].contribution) / out.loss), `${name}: share = contribution / loss in %`);
    }
    t.same(['mse', 'corr', 'gram'].map((k) => p[k].partOf), ['csc', 'csc', 'csc'], 'mse, corr, gram are parts of csc');
    t.notOk(p.n.partOf || p.csc.partOf || p.lip.partOf, 'n, csc, lip are top level');
    const top = p.n.contribution + p.csc.contribution + p.lip.contribution;
    t.ok(near(top, out.loss, 1e-6), `n + csc + lip contributions ${top} = loss ${out.loss}`);
    const sub = p.mse.contribution + p.corr.contribution + p.gram.contribution;
    t.ok(near(sub, p.csc.contribution, 1e-6), `mse + corr + gram contributions ${sub} = csc's ${p.csc.contribution}`);
    t.ok(near(p.n.share! + p.csc.share! + p.lip.share!, 100, 1e-6), 'the top-level shares add up to 100%');
    t.equal(out.device, 'cpu', 'the device used');
    t.match(out.backend, { isa: String, threads: Number, binary: String }, 'what ran it');
    cliLossC = out.loss;
    const auto = JSON.parse(runCli(['score', '--sr', sr, '--gt', gt, '--variant', 'n', '--json']).stdout) as ScoreJson;
    t.equal(auto.device, backendInfo().cuda.available ? 'cuda:0' : 'cpu', '--device auto (the default): CUDA device 0 when usable, else the CPU');

    const table = runCli(['score', '--sr', sr, '--gt', gt]);
    t.equal(table.code, 0, `table: exit 0 (stderr: ${table.stderr.trim()})`);
    t.match(table.stdout, /^\s+part\s+value\s+weight\s+contribution\s+share$/m, 'a header row');
    for (const name of Object.keys(out.parts)) {
      const share = `${p[name].share!.toFixed(1)}%`;
      const row = new RegExp(`^ {2}${p[name].partOf ? '  ' : ''}${name}\\s+\\S+\\s+${Number(p[name].weight.toPrecision(6))}\\s+\\S+\\s+${share.replace('.', '\\.')}$`, 'm');
      t.match(table.stdout, row, `table row for ${name} (weight, share)`);
    }
    t.match(table.stdout, /n, csc and lip add up to the loss/);
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
    // The weights the CLI passes are the library's defaults: its MGHF-c loss is the default call's.
    const refC = mghfLossSync(a, b, { device: 'cpu' }).loss;
    t.ok(Math.abs(cliLossC - refC) <= 1e-6 * Math.abs(refC), `MGHF-c: CLI ${cliLossC} vs library ${refC}`);
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

  t.test('an unknown flag: one line, where the usage is, exit 2', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--bogus']);
    t.equal(r.code, 2);
    t.equal(r.stderr, 'mghf: unknown flag --bogus\nrun "npx mghf help score" for usage\n');
  });

  t.test('an unknown flag close to a known one: "did you mean"', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--varaint', 'n']);
    t.equal(r.code, 2);
    t.equal(r.stderr, 'mghf: unknown flag --varaint (did you mean --variant?)\nrun "npx mghf help score" for usage\n');
    const w = runCli(['score', '--sr', sr, '--gt', gt, '--weight', 'w.safetensors']);
    t.match(w.stderr, /^mghf: unknown flag --weight \(did you mean --weights\?\)\n/);
    const p = runCli(['pretrain', '--data', dir, '--max-step', '3']);
    t.equal(p.code, 2);
    t.match(p.stderr, /^mghf: unknown flag --max-step \(did you mean --max-steps\?\)\nrun "npx mghf help pretrain" for usage\n$/);
  });

  t.test('other usage errors: one line and the hint, no usage text', async (t) => {
    for (const [args, line] of [
      [['score', '--sr', sr], 'missing --gt'],
      [['score', '--sr'], '--sr needs a value'],
      [['score', '--sr', sr, '--gt', gt, '--json=1'], '--json takes no value'],
      [['score', 'extra', '--sr', sr, '--gt', gt], "unexpected argument 'extra': every input is given with a flag (--name value)"],
      [['score', '--sr', sr, '--gt', gt, '--variant', 'x'], '--variant must be one of n, c, got "x"'],
      [['score', '--sr', sr, '--gt', gt, '--device', 'gpu'], '--device must be auto, cpu, cuda or cuda:N, got "gpu"'],
    ] as const) {
      const r = runCli([...args]);
      t.equal(r.code, 2, args.join(' '));
      t.equal(r.stderr, `mghf: ${line}\nrun "npx mghf help score" for usage\n`, args.join(' '));
    }
  });

  t.test('an unknown command: one line with the nearest command, exit 2', async (t) => {
    const r = runCli(['frobnicate']);
    t.equal(r.code, 2);
    t.equal(r.stderr, "mghf: unknown command 'frobnicate'\nrun \"npx mghf help\" for the commands\n");
    const s = runCli(['scroe']);
    t.equal(s.stderr, "mghf: unknown command 'scroe' (did you mean 'score'?)\nrun \"npx mghf help\" for the commands\n");
    const h = runCli(['help', 'shwo']);
    t.equal(h.code, 2);
    t.match(h.stderr, /did you mean 'show'/);
  });

  t.test('--device: cpu runs there; an unusable CUDA is one typed line, exit 1', async (t) => {
    const r = runCli(['score', '--sr', sr, '--gt', gt, '--variant', 'n', '--device', 'cpu', '--json']);
    t.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as ScoreJson;
    t.equal(out.device, 'cpu');
    t.ok(near(out.loss, cliLoss, 1e-6), 'the same loss as --device auto on the CPU');
    if (!backendInfo().cuda.available) {
      const c = runCli(['score', '--sr', sr, '--gt', gt, '--device', 'cuda']);
      t.equal(c.code, 1);
      t.match(c.stderr, /^mghf: --device 'cuda' is not available: .*\n$/);
      t.equal(c.stderr.split('\n').length, 2, 'one line');
      t.equal(c.stdout, '');
    }
  });

  t.test('an image smaller than the LIP patches: the hint names what the CLI can do', async (t) => {
    const tiny = join(dir, 'tiny.png');
    await writePng(tiny, 24, 20, 0, 4);
    const r = runCli(['score', '--sr', tiny, '--gt', tiny]);
    t.equal(r.code, 1);
    t.match(r.stderr, /^mghf: The images are 24×20 pixels, smaller than the 32×32 patches of MGHF-c's LIP term: use --variant n .* or images at least 32×32\n$/);
    t.notMatch(r.stderr, /gamma3|opts\./, 'no library option names');
    const n = runCli(['score', '--sr', tiny, '--gt', tiny, '--variant', 'n']);
    t.equal(n.code, 0, `--variant n works there (${n.stderr.trim()})`);
  });

  t.test('--help and help print usage, exit 0', async (t) => {
    for (const args of [['--help'], ['help'], ['help', 'score'], ['score', '--help']]) {
      const r = runCli(args);
      t.equal(r.code, 0, args.join(' '));
      t.match(r.stdout, /Usage: mghf/, args.join(' '));
    }
  });
});
