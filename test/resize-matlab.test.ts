// ops.resize against MATLAB's imresize(HR, 1/4, 'bicubic'), which made the LR_x4 images of Set5
// (../shared/data/sr-bench/README.md). MATLAB resizes a uint8 image one dimension at a time,
// height first, storing each pass as uint8; examples/sr's downscaleLikeMatlab does the same with
// two ops.resize calls and reproduces the files exactly away from a 2-pixel border (where only the
// padding rule differs). One float pass of ops.resize stays within 2 grey levels. The data is
// outside the repository: the test skips, saying so, where it is absent.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import t from 'tap';

import { type Tensor, loadImage, ops } from 'mghf';

import { downscaleLikeMatlab } from '../examples/sr/data';

const SET5 = resolve(__dirname, '..', '..', 'shared', 'data', 'sr-bench', 'Set5');
const skip = existsSync(join(SET5, 'HR')) ? false : `no benchmark data at ${SET5}`;

/** Largest difference in grey levels away from a 2-pixel border, and the share of exact pixels. */
function compare(mine: Tensor, lr: Tensor): { worst: number; exact: number } {
  const [, , h, w] = lr.dims;
  let worst = 0, same = 0, n = 0;
  for (let c = 0; c < 3; c++)
    for (let y = 2; y < h - 2; y++)
      for (let x = 2; x < w - 2; x++) {
        const i = (c * h + y) * w + x;
        const d = Math.abs(Math.round(Math.min(1, Math.max(0, mine.data[i])) * 255) - Math.round(lr.data[i] * 255));
        worst = Math.max(worst, d);
        same += d === 0 ? 1 : 0;
        n++;
      }
  return { worst, exact: same / n };
}

t.test('Set5 HR ×1/4 against its MATLAB-made LR', { skip }, async (t) => {
  for (const name of ['img_001.png', 'img_002.png', 'img_003.png', 'img_004.png', 'img_005.png']) {
    const hr = await loadImage(join(SET5, 'HR', name));
    const lr = await loadImage(join(SET5, 'LR_x4', name));
    const matlab = compare(await downscaleLikeMatlab(hr), lr);
    t.ok(matlab.worst <= 1 && matlab.exact >= 0.995, `${name}: MATLAB procedure: largest interior difference ${matlab.worst}, ${(100 * matlab.exact).toFixed(2)} % exact`);
    const onePass = await ops.resize(hr, { scale: 0.25 });
    t.same(onePass.dims, lr.dims, `${name}: LR dims`);
    const single = compare(onePass, lr);
    t.ok(single.worst <= 2, `${name}: one float pass: largest interior difference ${single.worst} ≤ 2 grey levels`);
  }
});
