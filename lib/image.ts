// Image files ↔ the library's tensors (docs/MATH.md "Inputs": RGB in [0, 1], float32, NCHW or
// NHWC). Decoding and encoding are sharp's job (a dependency of this package: users never install
// or import it); this module only fixes the pixel layout, the value range and the checks.

import { open, stat, writeFile } from 'node:fs/promises';
import { extname } from 'node:path';
import sharp from 'sharp';
import { MghfError, describe, invalidParameterError } from './errors';
import { Tensor, type TensorLike, errorText } from './tensor';
import { type ImageLayout, checkFinite, checkOptions, is } from './validate';

/**
 * Largest image loadImage / decodeImage accepts: 2^30 bytes (1 GiB) as a float32 tensor, i.e.
 * W·H·3·4 bytes, about 89 million pixels (9,459×9,459). Checked from the file's header before
 * anything is decoded; MGHF-c on an image of that size would need far more memory than that anyway.
 */
export const MAX_IMAGE_BYTES = 2 ** 30;
const MAX_IMAGE_PIXELS = Math.floor(MAX_IMAGE_BYTES / 12);
/**
 * Largest batch loadImages builds: 4 GiB as a float32 tensor (checked from the headers before
 * decoding), so a list of thousands of files fails at once instead of after minutes of decoding.
 */
export const MAX_BATCH_BYTES = 4 * MAX_IMAGE_BYTES;

/** An image file's path, or its encoded bytes (a Buffer or Uint8Array holding a PNG, JPEG, …). */
export type ImageSource = string | Uint8Array;

export interface LoadImageOptions {
  /** 'NCHW' (default): `[1, 3, H, W]`; 'NHWC': `[1, H, W, 3]` (tfjs style). */
  layout?: ImageLayout;
  /**
   * Apply the EXIF orientation tag (default true), so the tensor is the picture as a viewer shows
   * it (a phone's portrait JPEG stored sideways comes out upright; H and W swap for 90° tags).
   * false: the pixels as stored, ignoring the tag. Use the same setting for `sr` and `gt`.
   */
  autoOrient?: boolean;
}

export interface SaveImageOptions {
  /** Layout of the tensor: 'NCHW' (default; `[1, 3, H, W]` or `[3, H, W]`) or 'NHWC' (`[1, H, W, 3]` or `[H, W, 3]`). */
  layout?: ImageLayout;
  /** Which image of a batch to write (0-based). Required when the batch has more than one image. */
  index?: number;
}

const LOAD_OPTION_NAMES = ['layout', 'autoOrient'] as const;
const SAVE_OPTION_NAMES = ['layout', 'index'] as const;

/** Output formats by file extension (case-insensitive). */
const SAVE_FORMATS: Readonly<Record<string, 'png' | 'jpeg' | 'webp' | 'tiff'>> = {
  '.png': 'png',
  '.jpg': 'jpeg',
  '.jpeg': 'jpeg',
  '.webp': 'webp',
  '.tif': 'tiff',
  '.tiff': 'tiff',
};

/**
 * Decode an image (a file path, or the file's bytes as a Buffer / Uint8Array; any format sharp
 * reads: PNG, JPEG, WebP, TIFF, GIF, AVIF, …) into a float32 tensor with values in [0, 1]:
 * `[1, 3, H, W]`, or `[1, H, W, 3]` with `layout: 'NHWC'`. The EXIF orientation is applied
 * (`autoOrient: false` reads the pixels as stored); alpha is dropped (not composited); grayscale
 * and CMYK become sRGB; 16-bit images are reduced to 8 bits. Errors: E_ARGUMENT for an unreadable
 * source, saying why (no such file, permission denied, not an image); E_LIMIT for an image over
 * MAX_IMAGE_BYTES as a tensor (checked from the header, before decoding); E_OPTION for a bad option.
 */
export async function loadImage(source: ImageSource, opts?: LoadImageOptions): Promise<Tensor> {
  const o = readLoadOptions(opts);
  const src = checkSource(source, 'source');
  const size = await probe(src, o.autoOrient);
  const out = allocate(size.width * size.height * 3, `image ${src.label}`, size);
  await decodeInto(src, o, size, out, 0);
  return new Tensor(out, imageDims(1, size, o.layout));
}

/**
 * Decode several images into one batch: `[B, 3, H, W]` (or `[B, H, W, 3]` with `layout: 'NHWC'`),
 * image i at batch index i, each as loadImage decodes it. Every image must have the same size
 * (after orientation): otherwise an E_SHAPE error names the odd one out (by index and path) and
 * both sizes, before anything is decoded. An unreadable image is E_ARGUMENT naming its index.
 */
export async function loadImages(sources: readonly ImageSource[], opts?: LoadImageOptions): Promise<Tensor> {
  const o = readLoadOptions(opts);
  if (!Array.isArray(sources) || sources.length === 0) {
    throw invalidParameterError('E_ARGUMENT', 'sources', 'a non-empty array of image paths or Buffers', sources);
  }
  const list = Array.from(sources as readonly unknown[]);
  const srcs = list.map((s, i) => checkSource(s, `sources[${i}]`, i));
  const sizes = await Promise.all(srcs.map((s) => probe(s, o.autoOrient)));
  checkSameSize(srcs, sizes);
  const size = sizes[0];
  const per = size.width * size.height * 3;
  if (per * srcs.length * 4 > MAX_BATCH_BYTES) {
    throw new MghfError(
      'E_LIMIT',
      `A batch of ${srcs.length} images of ${size.width}×${size.height} is ${((per * srcs.length * 4) / 1e9).toFixed(1)} GB ` +
        `as a float32 tensor, over the ${MAX_BATCH_BYTES / 2 ** 30} GiB limit; load it in smaller batches`,
      { argument: 'sources' },
    );
  }
  const out = allocate(per * srcs.length, `a batch of ${srcs.length} images`, size);
  await Promise.all(srcs.map((s, i) => decodeInto(s, o, size, out, i)));
  return new Tensor(out, imageDims(srcs.length, size, o.layout));
}

/**
 * Write one image of a tensor to `path`, the format chosen by the extension: `.png` (8-bit,
 * lossless), `.jpg`/`.jpeg` (quality 95, no chroma subsampling), `.webp` (lossless), `.tif`/`.tiff`.
 * The tensor is `[1, 3, H, W]` or `[3, H, W]` (or `[1, H, W, 3]` / `[H, W, 3]` with
 * `layout: 'NHWC'`), RGB in [0, 1]: values are clamped to [0, 1] and rounded to 8 bits
 * (round(x·255)), so a PNG written here loads back within 1/510 of each value. A batch with
 * B > 1 needs `index` (which image to write): without it the call is E_SHAPE. NaN or ±Infinity
 * is E_NONFINITE; an unwritable path E_ARGUMENT saying why.
 */
export async function saveImage(image: Tensor | TensorLike, path: string, opts?: SaveImageOptions): Promise<void> {
  const o = checkOptions(opts, SAVE_OPTION_NAMES);
  const layout = o.layout ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') throw invalidParameterError('E_OPTION', 'opts.layout', "'NCHW' or 'NHWC'", layout);
  if (typeof path !== 'string' || path.length === 0) throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
  const format = SAVE_FORMATS[extname(path).toLowerCase()];
  if (format === undefined) {
    throw new MghfError(
      'E_ARGUMENT',
      `Expected an image file name ending in ${Object.keys(SAVE_FORMATS).join(', ')} for path but received ${describe(path)}`,
      { argument: 'path' },
    );
  }
  const t = Tensor.from(image, 'image');
  const dims = t.dims.length === 3 ? [1, ...t.dims] : [...t.dims];
  const [B, H, W, C] = layout === 'NCHW' ? [dims[0], dims[2], dims[3], dims[1]] : dims;
  if (dims.length !== 4 || C !== 3) {
    const shape = layout === 'NCHW' ? '[1, 3, H, W] or [3, H, W]' : '[1, H, W, 3] or [H, W, 3]';
    throw invalidParameterError('E_SHAPE', 'image.dims', `${shape} (RGB, layout ${layout})`, t.dims, 'image');
  }
  let index = 0;
  if (o.index !== undefined) {
    if (!is.integer(o.index) || o.index < 0 || o.index >= B) {
      throw invalidParameterError('E_OPTION', 'opts.index', `an integer image index from 0 to ${B - 1}`, o.index);
    }
    index = o.index;
  } else if (B > 1) {
    throw new MghfError(
      'E_SHAPE',
      `Expected one image for image but received a batch of ${B} (dims ${describe(t.dims)}); ` +
        'saveImage writes one image: pass { index: i } to choose which',
      { argument: 'image' },
    );
  }
  const plane = H * W;
  const data = t.data.subarray(index * 3 * plane, (index + 1) * 3 * plane);
  checkFinite(data, B > 1 ? `image[${index}]` : 'image');
  const rgb = Buffer.allocUnsafe(3 * plane);
  if (layout === 'NHWC') {
    for (let i = 0; i < rgb.length; i++) rgb[i] = toByte(data[i]);
  } else {
    for (let p = 0, i = 0; p < plane; p++, i += 3) {
      rgb[i] = toByte(data[p]);
      rgb[i + 1] = toByte(data[plane + p]);
      rgb[i + 2] = toByte(data[2 * plane + p]);
    }
  }
  let encoded: Buffer;
  try {
    const pipeline = sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
    encoded = await (format === 'png'
      ? pipeline.png()
      : format === 'jpeg'
        ? pipeline.jpeg({ quality: 95, chromaSubsampling: '4:4:4' })
        : format === 'webp'
          ? pipeline.webp({ lossless: true })
          : pipeline.tiff()
    ).toBuffer();
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `Cannot encode image ${path} (${W}×${H}) as ${format}: ${errorText(err)}`, { argument: 'image', cause: err });
  }
  try {
    await writeFile(path, encoded);
  } catch (err) {
    throw new MghfError('E_ARGUMENT', `Cannot write image ${path}: ${fileErrorText(err)}`, { argument: 'path', cause: err });
  }
}

/** [0, 1] → 0…255: clamped, rounded to nearest. */
function toByte(x: number): number {
  return x <= 0 ? 0 : x >= 1 ? 255 : Math.round(x * 255);
}

/**
 * Decode an image file into a `[1, 3, H, W]` tensor exactly as loadImage does, but with the
 * pixels as stored (EXIF orientation not applied): `loadImage(path, { autoOrient: false })`.
 * Kept for the command line and existing callers; new code should call loadImage.
 */
export async function decodeImage(path: string): Promise<Tensor> {
  if (typeof path !== 'string' || path.length === 0) {
    throw invalidParameterError('E_ARGUMENT', 'path', 'a non-empty file path string', path);
  }
  return loadImage(path, { autoOrient: false });
}

// ---------------------------------------------------------------------------------------------

interface CheckedLoadOptions {
  layout: ImageLayout;
  autoOrient: boolean;
}

function readLoadOptions(opts: unknown): CheckedLoadOptions {
  const o = checkOptions(opts, LOAD_OPTION_NAMES);
  const layout = o.layout ?? 'NCHW';
  if (layout !== 'NCHW' && layout !== 'NHWC') throw invalidParameterError('E_OPTION', 'opts.layout', "'NCHW' or 'NHWC'", layout);
  const autoOrient = o.autoOrient ?? true;
  if (!is.bool(autoOrient)) throw invalidParameterError('E_OPTION', 'opts.autoOrient', 'a boolean', autoOrient);
  return { layout, autoOrient };
}

/** A checked image source: what sharp opens, and how messages name it. */
interface Source {
  input: string | Buffer;
  /** What follows "image" in messages: "a.png", "buffer (123 bytes)", in a batch "2 (a.png)". */
  label: string;
  path?: string;
  argument: string;
}

function checkSource(value: unknown, argument: string, index?: number): Source {
  if (typeof value === 'string' && value.length > 0) {
    return { input: value, label: index === undefined ? value : `${index} (${value})`, path: value, argument };
  }
  if (value instanceof Uint8Array) {
    // A Buffer view of the same bytes (sharp takes Buffers; no copy).
    const input = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (input.length === 0) throw invalidParameterError('E_ARGUMENT', argument, 'a file path or the bytes of an image file', value);
    const bytes = `${input.length} bytes`;
    return { input, label: index === undefined ? `buffer (${bytes})` : `${index} (a buffer of ${bytes})`, argument };
  }
  throw invalidParameterError('E_ARGUMENT', argument, 'a non-empty file path string or a Buffer holding an image file', value);
}

interface Size {
  width: number;
  height: number;
}

/** The image's size (after orientation when `autoOrient`), from its header; size limit checked. */
async function probe(src: Source, autoOrient: boolean): Promise<Size> {
  if (src.path !== undefined) {
    try {
      const st = await stat(src.path);
      if (!st.isFile()) throw new Error('not a regular file');
    } catch (err) {
      throw new MghfError('E_ARGUMENT', `Cannot read image ${src.label}: ${fileErrorText(err)}`, { argument: src.argument, cause: err });
    }
  }
  let width = 0;
  let height = 0;
  try {
    const meta = await sharp(src.input, { limitInputPixels: false }).metadata();
    ({ width = 0, height = 0 } = (autoOrient ? meta.autoOrient : undefined) ?? meta);
  } catch (err) {
    throw await decodeError(src, err);
  }
  if (!(width > 0 && height > 0)) {
    throw new MghfError('E_ARGUMENT', `Cannot decode image ${src.label}: the file declares no image size`, { argument: src.argument });
  }
  checkImageSize(src.label, width, height, src.argument);
  return { width, height };
}

/** Decode `src` as 8-bit sRGB and write it, scaled to [0, 1], as image `b` of `out`. */
async function decodeInto(src: Source, o: CheckedLoadOptions, size: Size, out: Float32Array, b: number): Promise<void> {
  let data: Buffer;
  let info: sharp.OutputInfo;
  try {
    ({ data, info } = await sharp(src.input, { limitInputPixels: MAX_IMAGE_PIXELS, autoOrient: o.autoOrient })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw await decodeError(src, err);
  }
  const { width, height, channels } = info;
  if (channels !== 3 || width !== size.width || height !== size.height || data.length !== width * height * 3) {
    throw new MghfError(
      'E_ARGUMENT',
      `Cannot decode image ${src.label}: expected ${size.width}×${size.height} pixels of 8-bit RGB but sharp returned ` +
        `${channels} channels, ${data.length} bytes for ${width}×${height}`,
      { argument: src.argument },
    );
  }
  const plane = width * height;
  const base = b * 3 * plane;
  if (o.layout === 'NHWC') {
    for (let i = 0; i < data.length; i++) out[base + i] = data[i] / 255;
  } else {
    // Interleaved HWC → planar CHW.
    for (let p = 0, i = 0; p < plane; p++, i += 3) {
      out[base + p] = data[i] / 255;
      out[base + plane + p] = data[i + 1] / 255;
      out[base + 2 * plane + p] = data[i + 2] / 255;
    }
  }
}

function imageDims(B: number, { width, height }: Size, layout: ImageLayout): number[] {
  return layout === 'NCHW' ? [B, 3, height, width] : [B, height, width, 3];
}

function allocate(count: number, what: string, size: Size): Float32Array {
  try {
    return new Float32Array(count);
  } catch (err) {
    // Within the limit but still more than this process can allocate.
    throw new MghfError('E_LIMIT', `Cannot decode ${what} (${size.width}×${size.height}): out of memory (${errorText(err)})`, { cause: err });
  }
}

/** E_SHAPE naming the first image whose size differs from the most common one. */
function checkSameSize(srcs: readonly Source[], sizes: readonly Size[]): void {
  const key = (s: Size) => `${s.width}×${s.height}`;
  const counts = new Map<string, number>();
  for (const s of sizes) counts.set(key(s), (counts.get(key(s)) ?? 0) + 1);
  if (counts.size === 1) return;
  // The usual size: the most common one (ties: the earliest image's).
  let usual = key(sizes[0]);
  for (const s of sizes) if ((counts.get(key(s)) ?? 0) > (counts.get(usual) ?? 0)) usual = key(s);
  const odd = sizes.findIndex((s) => key(s) !== usual);
  const ref = sizes.findIndex((s) => key(s) === usual);
  throw new MghfError(
    'E_SHAPE',
    `Expected images of one size for a batch but image ${srcs[odd].label} is ${key(sizes[odd])} while image ${srcs[ref].label} is ${usual} ` +
      `(width×height; ${counts.get(usual)} of ${sizes.length} images are ${usual}); resize or crop them to one size`,
    { argument: srcs[odd].argument },
  );
}

function checkImageSize(label: string, width: number, height: number, argument: string): void {
  const bytes = width * height * 3 * 4;
  if (bytes > MAX_IMAGE_BYTES) {
    throw new MghfError(
      'E_LIMIT',
      `Image ${label} is ${width}×${height} pixels: ${(bytes / 1e9).toFixed(1)} GB as a float32 RGB tensor, over the ` +
        `${MAX_IMAGE_BYTES / 2 ** 30} GiB limit (${MAX_IMAGE_PIXELS.toLocaleString('en-US')} pixels); crop or downscale it`,
      { argument },
    );
  }
}

async function decodeError(src: Source, err: unknown): Promise<MghfError> {
  if (err instanceof MghfError) return err;
  const reason = src.path !== undefined ? await imageErrorText(src.path, err) : bufferErrorText(err);
  return new MghfError('E_ARGUMENT', `Cannot decode image ${src.label}: ${reason}`, { argument: src.argument, cause: err });
}

function bufferErrorText(err: unknown): string {
  const message = errorText(err).split('\n')[0];
  if (/pixel limit/i.test(message)) return `too large to decode (${message})`;
  return message;
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
