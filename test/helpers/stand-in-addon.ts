// A stand-in native addon for a CLI child process, loaded through MGHF_BINARY: every function of
// the stand-in trainer of fake-trainer.ts (transpiled to JavaScript), its trainStep taking
// `stepMs`, and an info() that reports no CUDA. Enough for `mghf pretrain`; nothing else.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Writes the stand-in into `dir` and returns the path to pass as MGHF_BINARY. */
export function writeStandInAddon(dir: string, stepMs = 15): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ts = require('typescript') as typeof import('typescript');
  const source = readFileSync(join(__dirname, 'fake-trainer.ts'), 'utf8');
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
  writeFileSync(join(dir, 'fake-trainer.js'), js);
  const shim = join(dir, 'stand-in-addon.js');
  writeFileSync(
    shim,
    `const f = require('./fake-trainer.js').fakeTrainer();
module.exports = {
  ...f,
  info: () => ({ cuda: { available: false, reason: 'a stand-in addon', deviceCount: 0 } }),
  trainStep: async (...a) => { await new Promise((r) => setTimeout(r, ${stepMs})); return f.trainStep(...a); },
};
`,
  );
  return shim;
}
