// Upscaling whole images with an SrNet, in overlapping tiles so that memory stays bounded
// whatever the image size. Each tile is run with a margin of LR context on every side (clipped at
// the image's edges) and only its centre is kept; the margin exceeds the network's receptive
// field, so the tiled result equals the untiled one up to float rounding. The network runs where its
// parameters are (net.location): each tile goes there and its result comes back to the host.
import { MghfError } from './errors';
import { scope } from './lifetime';
import type { SrNet } from './srnet';
import { Tensor } from './tensor';

export interface UpscaleOptions {
  /** LR tile side in pixels (default 128); 0 runs the whole image at once. */
  tile?: number;
  /** LR context kept around each tile (default: the network's receptive radius + 4). */
  margin?: number;
}

/** The receptive radius of the network in LR pixels: one per 3×3 convolution, two for the bicubic skip. */
export function receptiveRadius(net: SrNet): number {
  return 3 + 2 * net.config.blocks + 2;
}

/**
 * lr [1, 3, h, w] in [0, 1] → sr [1, 3, 4h, 4w] (not clamped), computed on the net's device and
 * returned where lr is (a host image gives a host result, whatever the net's device).
 */
export async function upscaleImage(net: SrNet, lr: Tensor, opts: UpscaleOptions = {}): Promise<Tensor> {
  const tile = opts.tile ?? 128;
  const margin = opts.margin ?? receptiveRadius(net) + 4;
  if (!Number.isInteger(tile) || tile < 0) throw new MghfError('E_OPTION', `tile must be an integer ≥ 0, got ${String(tile)}`, { argument: 'tile' });
  if (!Number.isInteger(margin) || margin < 0) throw new MghfError('E_OPTION', `margin must be an integer ≥ 0, got ${String(margin)}`, { argument: 'margin' });
  if (lr.dims.length !== 4 || lr.dims[0] !== 1 || lr.dims[1] !== 3) {
    throw new MghfError('E_SHAPE', `lr must be [1, 3, h, w], got [${lr.dims.join(', ')}]`, { argument: 'lr' });
  }
  const [, , h, w] = lr.dims;
  if (tile === 0 || (h <= tile && w <= tile)) {
    if (lr.location === net.location) return net.upscale(lr);
    return scope(async () => (await net.upscale(await lr.to(net.location))).to(lr.location));
  }
  const lrData = await lr.getData();
  const onNet = net.location === 'cpu' ? undefined : { device: net.location };
  const S = 4;
  const out = new Float32Array(3 * h * S * w * S);
  const W4 = w * S;
  for (let y0 = 0; y0 < h; y0 += tile) {
    for (let x0 = 0; x0 < w; x0 += tile) {
      const th = Math.min(tile, h - y0), tw = Math.min(tile, w - x0);
      const ya = Math.max(0, y0 - margin), xa = Math.max(0, x0 - margin);
      const yb = Math.min(h, y0 + th + margin), xb = Math.min(w, x0 + tw + margin);
      await scope(async () => {
        const ph = yb - ya, pw = xb - xa;
        const patch = new Float32Array(3 * ph * pw);
        for (let c = 0; c < 3; c++)
          for (let r = 0; r < ph; r++) patch.set(lrData.subarray((c * h + ya + r) * w + xa, (c * h + ya + r) * w + xb), (c * ph + r) * pw);
        const sr = await (await net.upscale(new Tensor(patch, [1, 3, ph, pw], onNet))).getData();
        const sw = pw * S, sh = ph * S;
        const oy = (y0 - ya) * S, ox = (x0 - xa) * S;
        for (let c = 0; c < 3; c++)
          for (let r = 0; r < th * S; r++) {
            const src = (c * sh + oy + r) * sw + ox;
            out.set(sr.subarray(src, src + tw * S), (c * h * S + y0 * S + r) * W4 + x0 * S);
          }
      });
    }
  }
  const result = new Tensor(out, [1, 3, h * S, w * S]);
  if (lr.location === 'cpu') return result;
  const moved = await result.to(lr.location);
  result.dispose();
  return moved;
}
