// Image files → the library's input tensors (SPEC §1: RGB in [0, 1], NCHW float32).
// Decoding is sharp's job; this module only fixes the pixel layout and the value range.

import { open, stat } from 'node:fs/promises';
import sharp from 'sharp';
import { MghfError, invalidParameterError } from './errors';
import { Tensor } from './tensor';

/**
 * Largest image decodeImage accepts: 2^30 bytes (1 GiB) as a float32 tensor, i.e. W·H·3·4 bytes,
 * about 89 million pixels (9,459×9,459). Checked from the file's header before anything is
 * decoded; MGHF-c on an image of that size would need far more memory than that anyway.
 */
export const MAX_IMAGE_BYTES = 2 ** 30;
const MAX_IMAGE_PIXELS = Math.floor(MAX_IMAGE_BYTES / 12);

/**
 * Decode an image file (any format sharp reads: PNG, JPEG, WebP, TIFF, …) into a `[1, 3, H, W]`
 * float32 tensor with values in [0, 1]. Alpha is dropped and grayscale is expanded to three
 * channels; 16-bit images are reduced to 8 bits. Pixels are read as stored: EXIF orientation is
 * not applied, so an `sr` and a `gt` written by the same pipeline line up. An image over
 * MAX_IMAGE_BYTES as a tensor is E_LIMIT; an unreadable file E_ARGUMENT saying why (no such
 * file, permission denied, not an image).
 */
export async function decodeImage(path: string): Promise<Tensor> {
  if (typeof path !== 'string' || path.length === 0) {
    throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
  }
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a regular file');
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `Cannot read image ${path}: ${fileErrorText(err)}`, { argument: 'path', cause: err });
  }

  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    const { width = 0, height = 0 } = await sharp(path, { limitInputPixels: false }).metadata();
    checkImageSize(path, width, height);
    ({ data, info } = await sharp(path, { limitInputPixels: MAX_IMAGE_PIXELS })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true }));
  } catch (err) {
    if (err instanceof MghfError) throw err;
    throw new MghfError('E_ARGUMENT', `Cannot decode image ${path}: ${await imageErrorText(path, err)}`, {
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
  let pixels: Float32Array;
  try {
    pixels = hwcToNchw(data, height, width);
  } catch (err) {
    // Within the limit but still more than this process can allocate.
    throw new MghfError('E_LIMIT', `Cannot decode image ${path} (${width}×${height}): out of memory (${(err as Error).message})`, {
      argument: 'path',
      cause: err,
    });
  }
  return new Tensor(pixels, [1, 3, height, width]);
}

function checkImageSize(path: string, width: number, height: number): void {
  const bytes = width * height * 3 * 4;
  if (bytes > MAX_IMAGE_BYTES) {
    throw new MghfError(
      'E_LIMIT',
      `Image ${path} is ${width}×${height} pixels: ${(bytes / 1e9).toFixed(1)} GB as a float32 RGB tensor, over the ` +
        `${MAX_IMAGE_BYTES / 2 ** 30} GiB limit (${MAX_IMAGE_PIXELS.toLocaleString('en-US')} pixels); crop or downscale it`,
      { argument: 'path' },
    );
  }
}

/** A file-system error in words: "no such file", "permission denied", or the error's message. */
export function fileErrorText(err: unknown): string {
  switch ((err as NodeJS.ErrnoException)?.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a folder, not a file';
    default:
      return (err as Error)?.message ?? String(err);
  }
}

/**
 * Why sharp could not decode `path`. sharp says "unsupported image format" for a file it cannot
 * open at all, so a failure is checked against opening the file ourselves first: an unreadable
 * file is reported as such, not as a bad format.
 */
export async function imageErrorText(path: string, err: unknown): Promise<string> {
  try {
    const handle = await open(path, 'r');
    await handle.close();
  } catch (openErr) {
    return fileErrorText(openErr);
  }
  const message = String((err as Error)?.message ?? err).split('\n')[0];
  if (/pixel limit/i.test(message)) return `too large to decode (${message})`;
  return message;
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
