// Image files → the library's input tensors (SPEC §1: RGB in [0, 1], NCHW float32).
// Decoding is sharp's job; this module only fixes the pixel layout and the value range.

import { stat } from 'node:fs/promises';
import sharp from 'sharp';
import { MghfError, invalidParameterError } from './errors';
import { Tensor } from './tensor';

/**
 * Decode an image file (any format sharp reads: PNG, JPEG, WebP, TIFF, …) into a `[1, 3, H, W]`
 * float32 tensor with values in [0, 1]. Alpha is dropped and grayscale is expanded to three
 * channels; 16-bit images are reduced to 8 bits. Pixels are read as stored: EXIF orientation is
 * not applied, so an `sr` and a `gt` written by the same pipeline line up.
 */
export async function decodeImage(path: string): Promise<Tensor> {
  if (typeof path !== 'string' || path.length === 0) {
    throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
  }
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a regular file');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new MghfError('E_ARGUMENT', `Cannot read image ${path}: ${why}`, { argument: 'path', cause: err });
  }

  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    ({ data, info } = await sharp(path)
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `Cannot decode image ${path}: ${(err as Error).message}`, {
      argument: 'path',
      cause: err,
    });
  }

  const { width, height, channels } = info;
  if (channels !== 3 || data.length !== width * height * 3) {
    throw new MghfError(
      'E_ARGUMENT',
      `Cannot decode image ${path}: expected 3 channels of 8-bit RGB but sharp returned ` +
        `${channels} channels, ${data.length} bytes for ${width}×${height}`,
      { argument: 'path' },
    );
  }
  return new Tensor(hwcToNchw(data, height, width), [1, 3, height, width]);
}

/** Interleaved 8-bit RGB (HWC) → planar float32 (CHW) scaled to [0, 1]. */
function hwcToNchw(rgb: Uint8Array, height: number, width: number): Float32Array {
  const plane = height * width;
  const out = new Float32Array(3 * plane);
  for (let p = 0, i = 0; p < plane; p++, i += 3) {
    out[p] = rgb[i] / 255;
    out[plane + p] = rgb[i + 1] / 255;
    out[2 * plane + p] = rgb[i + 2] / 255;
  }
  return out;
}
