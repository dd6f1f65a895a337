// REPORT.md from the experiment's summary: every number in it comes from the runs' records.
import { promises as fsp } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';

import type { EvalPair } from './data';
import type { RunRecord, Summary } from './experiment';
import type { ImageScores } from './metrics';

const f = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

function row(label: string, s: Record<string, ImageScores>, extra = ''): string {
  const cell = (set: string) => `${f(s[set].psnr, 2)} | ${f(s[set].ssim, 4)} | ${f(s[set].gmsd, 4)} | ${f(s[set].hfRatio, 3)}`;
  return `| ${label} | ${cell('Set5')} | ${cell('Set14')} |${extra}`;
}

// A signed difference at the printed precision; "±0" where it rounds to zero, so a difference
// too small to print is not called better or worse.
function delta(d: number, digits: number, lowerIsBetter: boolean, unit = ''): string {
  const shown = f(Math.abs(d), digits);
  if (Number(shown) === 0) return `±${shown}${unit} (same)`;
  const better = lowerIsBetter ? d < 0 : d > 0;
  return `${d > 0 ? '+' : '−'}${shown}${unit} (${better ? 'better' : 'worse'})`;
}

function verdict(c: RunRecord, a: RunRecord, label: string, against = 'L1 fine-tune'): string {
  const parts: string[] = [];
  for (const set of ['Set5', 'Set14']) {
    const dp = c.scores[set].psnr - a.scores[set].psnr;
    const ds = c.scores[set].ssim - a.scores[set].ssim;
    const dg = c.scores[set].gmsd - a.scores[set].gmsd;
    const dh = Math.abs(c.scores[set].hfRatio - 1) - Math.abs(a.scores[set].hfRatio - 1);
    parts.push(
      `${set}: PSNR-Y ${delta(dp, 3, false, ' dB')}, SSIM-Y ${delta(ds, 4, false)}, GMSD ${delta(dg, 4, true)}, ` +
        `HF-energy ratio ${f(c.scores[set].hfRatio, 3)} vs ${f(a.scores[set].hfRatio, 3)} (${dh < 0 ? 'closer to 1' : 'further from 1'})`,
    );
  }
  return `- **${label} vs ${against}** — ${parts.join('; ')}.`;
}

export async function writeReport(file: string, s: Summary, sets: Record<string, EvalPair[]>): Promise<void> {
  const c = s.cfg;
  const min = (r: RunRecord) => f(r.seconds / 60, 1);
  const lines: string[] = [];
  lines.push('# Training a ×4 SR network from Node with MGHF: the experiment');
  lines.push('');
  lines.push('Written by `examples/sr/experiment.ts` from the runs it measured (`examples/sr/runs/*.json`); rerun it to reproduce every number:');
  lines.push('');
  lines.push('```sh');
  lines.push('npm install && npm run example:sr    # builds examples/ and runs examples/sr/experiment.ts');
  lines.push('```');
  lines.push('');
  lines.push(`Machine: ${cpus().length} CPU threads (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, the CPU backend; shared with other work while it ran, so the times are upper bounds.`);
  lines.push('');
  lines.push('## Setup');
  lines.push('');
  lines.push(`- Network: \`SrNet\` (lib/srnet.ts): 3×3 conv to ${c.channels} channels, ${c.blocks} residual blocks (conv–ReLU–conv), a conv with a global skip, conv to 48 channels, pixel shuffle ×4, plus the bicubic upscale of the input; ${s.base.history.length ? '' : ''}trained with the library's own ops (conv2d, relu, add, pixelShuffle, resize, adam) and hand-written backward.`);
  lines.push(`- Data: ${c.images} images of imagenette2-224/train (a fixed seeded subset), random ${c.crop}×${c.crop} HR crops with flips and transposes, LR made as MATLAB's \`imresize(uint8, 1/4, 'bicubic')\` makes the benchmarks' LR (\`downscaleLikeMatlab\`: two \`ops.resize\` passes, height first, each stored as 8 bits), batch ${c.batch}.`);
  lines.push(`- Base: L1 from scratch, ${c.stepsBase} steps of Adam at ${c.lrBase} (${min(s.base)} min, ${f(s.base.msPerStep, 0)} ms/step).`);
  lines.push(`- Fine-tunes from the base, ${c.stepsFt} steps each at ${c.lrFt}, the same seed (the same batches in the same order): (a) L1; (b) L1 + λ·MGHF-n; (c) L1 + λ·MGHF-c (default options and the bundled pretrained DFE); (d) as (c) at the chosen λ with a randomly initialised DFE.`);
  lines.push('- Validation: Set5 and Set14 (the given bicubic LR_x4 images), SR rounded to 8 bits, Y channel (BT.601), 4-pixel border cropped: PSNR-Y, SSIM-Y (11×11 Gaussian, σ 1.5), GMSD (gradient-magnitude similarity deviation; lower is better), and the HF-energy ratio (Laplacian energy of SR over HR; 1 is ideal, below 1 is blur).');
  lines.push('');
  lines.push('## Choosing λ');
  lines.push('');
  lines.push('Rule (decided before the runs): the λ with the lowest GMSD over Set5+Set14 among those whose PSNR-Y is no more than 0.05 dB below the L1 fine-tune; if none qualifies, the best PSNR-Y.');
  lines.push('');
  lines.push('| run | λ | PSNR-Y (all 19) | GMSD (all 19) | time | chosen |');
  lines.push('|---|---|---|---|---|---|');
  const all = (r: RunRecord, k: keyof ImageScores) => {
    let t = 0, n = 0;
    for (const [set, pairs] of Object.entries(sets)) {
      t += r.scores[set][k] * pairs.length;
      n += pairs.length;
    }
    return t / n;
  };
  lines.push(`| L1 fine-tune (a) | – | ${f(all(s.a, 'psnr'), 3)} | ${f(all(s.a, 'gmsd'), 4)} | ${min(s.a)} min | |`);
  for (const r of [...s.nRuns, ...s.cRuns]) {
    const chosen = r.name === s.chosen.n || r.name === s.chosen.c ? '**yes**' : '';
    lines.push(`| ${r.loss} | ${r.lambda} | ${f(all(r, 'psnr'), 3)} | ${f(all(r, 'gmsd'), 4)} | ${min(r)} min (${f(r.msPerStep, 0)} ms/step) | ${chosen} |`);
  }
  lines.push('');
  lines.push('## Results');
  lines.push('');
  lines.push('| model | Set5 PSNR-Y | SSIM-Y | GMSD ↓ | HF ratio | Set14 PSNR-Y | SSIM-Y | GMSD ↓ | HF ratio |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  const byName = (n: string) => [...s.nRuns, ...s.cRuns].find((r) => r.name === n)!;
  const b = byName(s.chosen.n), cc = byName(s.chosen.c);
  lines.push(row('bicubic', s.bicubic));
  lines.push(row(`base (L1, ${c.stepsBase} steps)`, s.baseScores));
  lines.push(row('(a) `l1`', s.a.scores));
  lines.push(row(`(b) \`l1-mghf-n\` (λ ${b.lambda})`, b.scores));
  lines.push(row(`(c) \`l1-mghf-c\` (λ ${cc.lambda})`, cc.scores));
  lines.push(row(`(d) \`l1-mghf-c-random-dfe\` (λ ${s.d.lambda})`, s.d.scores));
  lines.push('');
  lines.push('What the numbers say (computed from the table):');
  lines.push('');
  lines.push(verdict(cc, s.a, '(c) L1 + MGHF-c'));
  lines.push(verdict(b, s.a, '(b) L1 + MGHF-n'));
  lines.push(verdict(s.d, s.a, '(d) L1 + MGHF-c, random DFE'));
  lines.push(verdict(cc, s.d, '(c) pretrained DFE', '(d) random DFE'));
  lines.push('');
  lines.push('## Loss curves');
  lines.push('');
  lines.push('![training loss](figures/loss.png)');
  lines.push('');
  lines.push('## Crops');
  lines.push('');
  lines.push('Each row: the most detailed 64×64 window of the ground truth (by Laplacian energy), enlarged 3× with nearest-neighbour; left to right bicubic, the four models, the ground truth.');
  lines.push('');
  for (const cf of s.cropFiles) lines.push(`![${cf}](figures/${cf})`, '');
  // The discussion is the one part a person writes after reading the numbers; it is kept in its
  // own file so that rerunning the experiment regenerates everything else without erasing it.
  const discussion = await fsp.readFile(join(dirname(file), 'discussion.md'), 'utf8').catch(() => '');
  if (discussion.trim()) lines.push('## Discussion', '', discussion.trim(), '');
  lines.push('## The models');
  lines.push('');
  lines.push('`examples/sr/models/{l1,l1-mghf-n,l1-mghf-c,l1-mghf-c-random-dfe}.safetensors`; apply one with');
  lines.push('');
  lines.push('```sh');
  lines.push('npx mghf upscale --model examples/sr/models/l1-mghf-c.safetensors --in ../shared/data/sr-bench/Set5/LR_x4 --out /tmp/sr-out');
  lines.push('```');
  lines.push('');
  await fsp.writeFile(file, lines.join('\n'));
}
