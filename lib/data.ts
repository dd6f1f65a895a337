// Training data for DFE pretraining (docs/MATH.md §10): an ImageFolder tree (`root/<class>/<image>`), the
// deterministic plan of each epoch (shuffle order, crop positions, flips), and a loader that
// decodes batches ahead of the trainer with sharp.
//
// Determinism: every random choice is drawn from one SeededRandom when an epoch's plan is made,
// before any image is decoded, so batch contents never depend on decode timing or on image sizes,
// and the generator's state at the start of an epoch is all a checkpoint needs to replay it.

import { promises as fsp, type Dirent } from 'node:fs';
import { availableParallelism } from 'node:os';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { MghfError, invalidParameterError } from './errors';
import { is } from './validate';
import { SeededRandom } from './weights';
import { imageErrorText } from './image';

/** File name endings read as images (compared case-insensitively: ImageNet's files end in .JPEG). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff'];

export interface Sample {
  path: string;
  /** Index into the folder's `classes`. */
  label: number;
}

export interface ImageFolder {
  root: string;
  /** Class folder names, sorted; a label is an index into this list. */
  classes: string[];
  /** Every image, by class, each class's files sorted by name. */
  samples: Sample[];
}

export interface ScanOptions {
  /**
   * The classes of the training set, when scanning its validation folder: every class folder
   * found must be one of them (labels index this list); a class may have no folder.
   */
  classes?: readonly string[];
}

const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
// Hidden entries are skipped: '.ipynb_checkpoints' is no class and macOS '._x.jpg' files are no images.
const hidden = (name: string): boolean => name.startsWith('.');

function dataError(message: string, folder: string, cause?: unknown): MghfError {
  return new MghfError('E_DATA', message, { argument: folder, ...(cause === undefined ? {} : { cause }) });
}

async function listFolder(folder: string, what: string): Promise<Dirent[]> {
  let st;
  try {
    st = await fsp.stat(folder);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${(err as Error).message})`;
    throw dataError(`${what} ${folder} ${why}`, folder, err);
  }
  if (!st.isDirectory()) throw dataError(`${what} ${folder} is not a folder`, folder);
  try {
    return await fsp.readdir(folder, { withFileTypes: true });
  } catch (err) {
    throw dataError(`${what} ${folder} cannot be read (${(err as Error).message})`, folder, err);
  }
}

/** Whether a directory entry is (or links to) a folder / a regular file. */
async function entryKind(folder: string, e: Dirent): Promise<'dir' | 'file' | 'other'> {
  if (e.isDirectory()) return 'dir';
  if (e.isFile()) return 'file';
  if (!e.isSymbolicLink()) return 'other';
  try {
    const st = await fsp.stat(join(folder, e.name));
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  } catch {
    return 'other'; // a dangling link
  }
}

const isImageName = (name: string): boolean => IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());

/**
 * The ImageFolder tree under `root`: class folders (sorted names) holding image files (sorted
 * names; extensions of IMAGE_EXTENSIONS). E_DATA, naming the folder, when `root` does not exist,
 * is empty, has fewer than 2 class folders (training set), or a class folder has no images.
 */
export async function scanImageFolder(root: string, opts: ScanOptions = {}): Promise<ImageFolder> {
  if (!is.string(root) || root.length === 0) throw invalidParameterError('E_ARGUMENT', 'root', 'a folder path string', root);
  const known = opts.classes;
  const entries = await listFolder(root, 'Data folder');
  const kinds = await Promise.all(entries.map((e) => entryKind(root, e)));
  const classDirs = entries.filter((e, i) => kinds[i] === 'dir' && !hidden(e.name)).map((e) => e.name).sort(byCodeUnit);
  const layout = `expected the ImageFolder layout ${join(root, '<class>', '<image>')}`;
  if (classDirs.length === 0) {
    const looseImages = entries.some((e, i) => kinds[i] === 'file' && isImageName(e.name));
    throw dataError(
      looseImages ? `Data folder ${root} holds images but no class folders: ${layout}` : `Data folder ${root} is empty: ${layout}`,
      root,
    );
  }
  if (known === undefined && classDirs.length < 2) {
    throw dataError(
      `Data folder ${root} has 1 class folder ('${classDirs[0]}'); classification needs at least 2 (${layout})`,
      root,
    );
  }
  const classes = known === undefined ? classDirs : [...known];
  const samples: Sample[] = [];
  for (const name of classDirs) {
    const label = classes.indexOf(name);
    if (label < 0) {
      throw dataError(`Class folder ${join(root, name)} is not a class of the training set (${classes.length} classes: ${preview(classes)})`, join(root, name));
    }
    const folder = join(root, name);
    const files = await listFolder(folder, 'Class folder');
    const fileKinds = await Promise.all(files.map((e) => entryKind(folder, e)));
    const images = files
      .filter((e, i) => fileKinds[i] === 'file' && !hidden(e.name) && isImageName(e.name))
      .map((e) => e.name)
      .sort(byCodeUnit);
    if (images.length === 0) {
      throw dataError(`Class folder ${folder} has no images (${IMAGE_EXTENSIONS.join(' ')})`, folder);
    }
    for (const file of images) samples.push({ path: join(folder, file), label });
  }
  return { root, classes, samples };
}

function preview(names: readonly string[]): string {
  return names.length <= 6 ? names.join(', ') : `${names.slice(0, 6).join(', ')}, …`;
}

// Independent streams of one seed (0 initialises the DFE, 1 the classifier head).
export const DATA_STREAM = 2;
const SPLIT_STREAM = 3;

/**
 * A deterministic validation split for a data folder without val/: in each class, a fixed
 * pseudo-random `fraction` of its images (rounded, at least 1 of a class with 2 or more). The
 * choice depends only on the file lists, not on the training seed, so runs with different seeds
 * are validated on the same images.
 */
export function splitValidation(folder: ImageFolder, fraction = 0.1): { train: ImageFolder; val: ImageFolder } {
  const rng = SeededRandom.fromSeed(0, SPLIT_STREAM);
  const train: Sample[] = [];
  const val: Sample[] = [];
  for (let label = 0; label < folder.classes.length; label++) {
    const own = folder.samples.filter((s) => s.label === label);
    const order = shuffled(own.length, rng);
    const count = own.length < 2 ? 0 : Math.max(1, Math.round(own.length * fraction));
    const chosen = new Set(order.slice(0, count));
    own.forEach((s, i) => (chosen.has(i) ? val : train).push(s));
  }
  return { train: { ...folder, samples: train }, val: { ...folder, samples: val } };
}

/** 0 … n−1 in Fisher–Yates order. */
function shuffled(n: number, rng: SeededRandom): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** One sample of an epoch and how to crop it. */
export interface SampleDraw {
  /** Index into the folder's samples. */
  sample: number;
  /** Crop corner as fractions in [0, 1) of the free range on each axis; null: centre crop. */
  at: { x: number; y: number } | null;
  /** Mirror left–right. */
  flip: boolean;
}

/**
 * A training epoch: the samples in a shuffled order, each with a random crop position and a
 * coin-flip mirror, all drawn from `rng` now (it advances to the next epoch's start).
 */
export function trainingPlan(count: number, rng: SeededRandom): SampleDraw[] {
  const order = shuffled(count, rng);
  return order.map((sample) => {
    const x = rng.uniform();
    const y = rng.uniform();
    return { sample, at: { x, y }, flip: rng.uniform() < 0.5 };
  });
}

/** A validation pass: every sample in order, centre-cropped, not mirrored. */
export function validationPlan(count: number): SampleDraw[] {
  return Array.from({ length: count }, (_, sample) => ({ sample, at: null, flip: false }));
}

export interface CropGeometry {
  /** The size to scale to first (short side = crop), or null when the short side is already ≥ crop. */
  resize: { width: number; height: number } | null;
  left: number;
  top: number;
}

/**
 * Where to crop a `width`×`height` image (after EXIF orientation): scale up so the short side is
 * `crop` when it is smaller (docs/MATH.md §10), then a random corner (`at`) or the centre.
 */
export function cropGeometry(width: number, height: number, crop: number, at: SampleDraw['at']): CropGeometry {
  let w = width;
  let h = height;
  let resize: CropGeometry['resize'] = null;
  const short = Math.min(width, height);
  if (short < crop) {
    w = Math.max(crop, Math.round((width * crop) / short));
    h = Math.max(crop, Math.round((height * crop) / short));
    resize = { width: w, height: h };
  }
  const place = (size: number, u: number | undefined) =>
    u === undefined ? Math.floor((size - crop) / 2) : Math.min(size - crop, Math.floor(u * (size - crop + 1)));
  return { resize, left: place(w, at?.x), top: place(h, at?.y) };
}

/**
 * Decode `path` and write its `crop`×`crop` crop to `out` at `offset` as planar RGB in [0, 1]
 * (3·crop² values). EXIF orientation is applied; grayscale and CMYK become sRGB; alpha is dropped.
 * Throws (sharp's error) for an unreadable file.
 */
export async function decodeCrop(path: string, crop: number, draw: Pick<SampleDraw, 'at' | 'flip'>, out: Float32Array, offset: number): Promise<void> {
  const meta = await sharp(path).metadata();
  const { width, height } = meta.autoOrient ?? meta;
  if (!(width > 0 && height > 0)) throw new Error('the file declares no image size');
  const g = cropGeometry(width, height, crop, draw.at);
  let pipeline = sharp(path, { autoOrient: true });
  if (g.resize) pipeline = pipeline.resize(g.resize.width, g.resize.height, { fit: 'fill' });
  const { data, info } = await pipeline
    .extract({ left: g.left, top: g.top, width: crop, height: crop })
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== crop || info.height !== crop || data.length !== 3 * crop * crop) {
    throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${crop}×${crop}×3`);
  }
  const plane = crop * crop;
  for (let y = 0; y < crop; y++) {
    for (let x = 0; x < crop; x++) {
      const src = 3 * (y * crop + (draw.flip ? crop - 1 - x : x));
      const dst = offset + y * crop + x;
      out[dst] = data[src] / 255;
      out[dst + plane] = data[src + 1] / 255;
      out[dst + 2 * plane] = data[src + 2] / 255;
    }
  }
}

export interface Batch {
  /** Position of this batch in its epoch. */
  index: number;
  /** [B, 3, crop, crop], NCHW, RGB in [0, 1]. */
  images: Float32Array;
  dims: [number, 3, number, number];
  /** [B] class indices. */
  labels: Int32Array;
}

export interface LoaderOptions {
  crop: number;
  /** Batches decoded ahead of the one being used (default 3). */
  prefetch?: number;
  /** Images decoded at once on libuv's pool (default: one thread fewer than the pool, so the trainer always finds one). */
  concurrency?: number;
  /** Told once per unreadable file; the sample is replaced (training) or dropped (validation). */
  onWarning?: (message: string) => void;
}

export interface BatchOptions {
  /** The first batch to produce (resuming inside an epoch). */
  first?: number;
  /**
   * An unreadable image in training is replaced by the next readable one of its batch (the
   * batch keeps its size); in validation it is dropped.
   */
  unreadable?: 'replace' | 'drop';
}

/** FIFO limit on concurrent async jobs. */
class Limiter {
  private active = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly max: number) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.active < this.max) this.active++;
    else await new Promise<void>((resolve) => this.queue.push(resolve)); // the slot is handed over
    try {
      return await job();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}

function defaultConcurrency(): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.min(pool - 1, availableParallelism()));
}

/**
 * Produces the batches of an epoch plan, decoding up to `prefetch` batches ahead with sharp
 * (off the main thread, on libuv's pool) while the caller trains on the current one.
 */
export class BatchLoader {
  readonly crop: number;
  private readonly prefetch: number;
  private readonly limiter: Limiter;
  private readonly onWarning: (message: string) => void;
  // Files found unreadable: not decoded again, and warned about once.
  private readonly unreadable = new Set<string>();

  constructor(
    readonly folder: ImageFolder,
    opts: LoaderOptions,
  ) {
    if (!is.positiveInteger(opts.crop)) throw invalidParameterError('E_OPTION', 'crop', 'an integer ≥ 1', opts.crop);
    this.crop = opts.crop;
    this.prefetch = opts.prefetch ?? 3;
    this.limiter = new Limiter(opts.concurrency ?? defaultConcurrency());
    this.onWarning = opts.onWarning ?? (() => undefined);
  }

  /** ceil(plan length / batch size): the last batch may be smaller. */
  static batchCount(samples: number, batchSize: number): number {
    return Math.ceil(samples / batchSize);
  }

  async *batches(plan: readonly SampleDraw[], batchSize: number, opts: BatchOptions = {}): AsyncGenerator<Batch> {
    const { first = 0, unreadable = 'replace' } = opts;
    const count = BatchLoader.batchCount(plan.length, batchSize);
    const pending: Array<Promise<Batch | null>> = [];
    let next = first;
    const fill = () => {
      while (pending.length < this.prefetch && next < count) {
        const index = next++;
        const p = this.makeBatch(plan.slice(index * batchSize, (index + 1) * batchSize), index, unreadable);
        p.catch(() => undefined); // handled when awaited; never an unhandled rejection if the caller stops early
        pending.push(p);
      }
    };
    fill();
    while (pending.length > 0) {
      const p = pending.shift()!;
      fill();
      const batch = await p;
      if (batch !== null) yield batch;
    }
  }

  private async makeBatch(draws: readonly SampleDraw[], index: number, mode: 'replace' | 'drop'): Promise<Batch | null> {
    const { crop } = this;
    const per = 3 * crop * crop;
    const images = new Float32Array(draws.length * per);
    const labels = new Int32Array(draws.length);
    const ok = await Promise.all(
      draws.map((d, i) => {
        labels[i] = this.folder.samples[d.sample].label;
        return this.limiter.run(() => this.load(d, images, i * per, mode));
      }),
    );
    if (ok.every(Boolean)) return { index, images, dims: [draws.length, 3, crop, crop], labels };

    const good = ok.flatMap((v, i) => (v ? [i] : []));
    if (mode === 'drop') {
      if (good.length === 0) return null;
      const kept = new Float32Array(good.length * per);
      const keptLabels = new Int32Array(good.length);
      good.forEach((src, dst) => {
        kept.set(images.subarray(src * per, (src + 1) * per), dst * per);
        keptLabels[dst] = labels[src];
      });
      return { index, images: kept, dims: [good.length, 3, crop, crop], labels: keptLabels };
    }
    if (good.length === 0) {
      const files = draws.map((d) => this.folder.samples[d.sample].path);
      throw dataError(
        `None of the ${draws.length} images of training batch ${index} could be read (${preview(files)}); ` +
          `check the data folder ${this.folder.root}`,
        this.folder.root,
      );
    }
    // Each unreadable sample takes the next readable one of the batch (cyclically): fixed by the
    // plan alone, so a resumed run makes the same choice.
    for (let i = 0; i < draws.length; i++) {
      if (ok[i]) continue;
      const src = good.find((j) => j > i) ?? good[0];
      images.copyWithin(i * per, src * per, (src + 1) * per);
      labels[i] = labels[src];
    }
    return { index, images, dims: [draws.length, 3, crop, crop], labels };
  }

  private async load(draw: SampleDraw, out: Float32Array, offset: number, mode: 'replace' | 'drop'): Promise<boolean> {
    const { path } = this.folder.samples[draw.sample];
    if (this.unreadable.has(path)) return false;
    try {
      await decodeCrop(path, this.crop, draw, out, offset);
      return true;
    } catch (err) {
      if (!this.unreadable.has(path)) {
        this.unreadable.add(path);
        // "permission denied" rather than sharp's "unsupported image format" for a file it cannot open.
        const reason = await imageErrorText(path, err);
        const fate = mode === 'replace' ? 'the next readable image of its batch takes its place' : 'left out of validation';
        this.onWarning(`Skipping unreadable image ${path} (${reason}); ${fate}`);
      }
      return false;
    }
  }
}
