// The README's quick start runs as printed: its code block is taken from README.md, written to a
// fresh folder next to two generated PNGs, pointed at this checkout's dist/ instead of the
// installed package, and run with node. (Installing the packed tarball into an empty project is
// test/package.test.ts's job.)
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';

const ROOT = resolve(__dirname, '..');
const DIST = join(ROOT, 'dist', 'index.js');

let skip: string | false = false;
if (!existsSync(DIST)) skip = 'dist/ does not exist yet (run npm run build)';
else {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require('../lib/native').native();
  } catch (err) {
    skip = `the native addon does not load: ${(err as Error).message.split('\n')[0]}`;
  }
}

/** The first ```js block after the "## Quick start" heading. */
function quickStart(readme: string): string {
  const at = readme.indexOf('\n## Quick start\n');
  if (at < 0) throw new Error('README.md has no "## Quick start" section');
  const section = readme.slice(at + 1, readme.indexOf('\n## ', at + 1));
  const block = /```js\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('the Quick start section has no ```js block');
  return block[1];
}

t.test('the README quick start loads two PNGs and prints a finite loss', { skip }, async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const code = quickStart(readme);
  t.match(code, /from 'mghf'/, 'imports the package by name');
  t.match(code, /loadImage\('sr\.png'\)/);
  t.match(code, /loadImage\('gt\.png'\)/);
  t.ok(code.trim().split('\n').length <= 12, 'short enough to be a quick start');
  t.match(readme, /node quickstart\.mjs/, 'the README says how to run it');

  const dir = mkdtempSync(join(tmpdir(), 'mghf-readme-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const W = 64;
  const H = 48;
  const gt = Buffer.alloc(W * H * 3);
  const sr = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 3; c++) {
        const i = (y * W + x) * 3 + c;
        gt[i] = Math.round(127 + 100 * Math.sin(x / 5 + c) * Math.cos(y / 7));
        sr[i] = Math.max(0, Math.min(255, gt[i] + ((i * 7919) % 21) - 10));
      }
  await sharp(gt, { raw: { width: W, height: H, channels: 3 } }).png().toFile(join(dir, 'gt.png'));
  await sharp(sr, { raw: { width: W, height: H, channels: 3 } }).png().toFile(join(dir, 'sr.png'));

  const pointed = code.replace("from 'mghf'", `from ${JSON.stringify(pathToFileURL(DIST).href)}`);
  t.not(pointed, code, 'the import now points at this checkout');
  writeFileSync(join(dir, 'quickstart.mjs'), pointed);
  const r = spawnSync(process.execPath, ['quickstart.mjs'], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr})`);
  const m = /^loss (\S+)/.exec(r.stdout);
  t.ok(m, `prints "loss <value>" first: ${r.stdout}`);
  const loss = Number(m?.[1]);
  t.ok(Number.isFinite(loss) && loss > 0, `a finite, positive loss: ${m?.[1]}`);
  for (const part of ['n', 'mse', 'corr', 'gram', 'csc', 'lip']) t.match(r.stdout, new RegExp(`\\b${part}: \\d`), `prints part ${part}`);
  t.match(r.stdout, /\[ 1, 3, 48, 64 \]/, 'and the gradient shape [1, 3, H, W]');
});
