// The bundled weights file moves to PyTorch (SPEC §9): it loads with strict names into a module
// built from SPEC §2 (bench/torch_peer.py's DFE), and that module computes the same features as
// dfeFeatures. Skipped, with the reason, where /usr/bin/python3 has no torch.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_WEIGHTS_PATH, defaultWeights, dfeFeaturesSync, loadWeightsSync } from '../lib/index';
import { imagePair, relativeL2 } from './helpers/fixtures';

const python = process.env.MGHF_BENCH_PYTHON || '/usr/bin/python3';
const probe = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8' });

t.test('the bundled weights load through loadWeights with their training metadata', async (t) => {
  const w = loadWeightsSync(DEFAULT_WEIGHTS_PATH);
  t.equal(w.metadata.format, 'mghf-dfe');
  t.match(w.metadata.trainedOn, /crop/);
  t.ok(Number(w.metadata.valAccuracy) > 0.2, `validation accuracy ${w.metadata.valAccuracy} well above chance (0.1)`);
  t.equal(defaultWeights().tensors['stem.weight'].length, w.tensors['stem.weight'].length);
});

if (probe.status !== 0) {
  t.skip(`PyTorch check: ${python} cannot import torch and numpy`);
} else {
  t.test('the bundled weights load into the PyTorch DFE by name and give the same features', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mghf-torch-'));
    const { sr } = imagePair([1, 3, 20, 24], 17);
    writeFileSync(join(dir, 'x.f32'), Buffer.from(sr.data.buffer));
    const script = [
      'import sys, numpy as np, torch',
      `sys.path.insert(0, ${JSON.stringify(join(__dirname, '..', 'bench'))})`,
      'import torch_peer',
      `dfe = torch_peer.load_dfe(${JSON.stringify(DEFAULT_WEIGHTS_PATH)})`,
      `x = torch.from_numpy(np.fromfile(${JSON.stringify(join(dir, 'x.f32'))}, dtype='<f4').reshape(1, 3, 20, 24))`,
      'with torch.no_grad(): f = dfe(x)',
      `f.numpy().astype('<f4').tofile(${JSON.stringify(join(dir, 'f.f32'))})`,
    ].join('\n');
    const run = spawnSync(python, ['-c', script], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' } });
    t.equal(run.status, 0, run.stderr);
    const b = readFileSync(join(dir, 'f.f32'));
    const torchF = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
    const ours = dfeFeaturesSync(sr, { device: 'cpu' });
    t.equal(torchF.length, ours.size);
    const err = relativeL2(ours.data, torchF);
    t.ok(err < 1e-5, `features relative error ${err}`);
  });
}
