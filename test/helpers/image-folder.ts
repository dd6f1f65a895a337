// A tiny labelled ImageFolder written with sharp: class-dependent colours and stripe patterns,
// with a grayscale PNG, a CMYK JPEG, an upper-case .JPEG, ignored non-image and hidden files, and
// optionally one corrupt file.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';

export const CLASS_NAMES = ['apple', 'bean', 'cherry', 'date'];

export interface FolderSpec {
  classes?: number;
  perClass?: number;
  size?: number;
  /** Where in the tree the corrupt file goes (relative to `dir`), or null for none. */
  corrupt?: string | null;
  seed?: number;
}

/** RGB pixels of image `i` of class `k`: a class colour and a class-specific stripe direction, plus noise. */
export function classPixels(k: number, i: number, width: number, height: number, seed = 1): Buffer {
  const colours = [
    [200, 40, 40],
    [40, 190, 60],
    [50, 60, 210],
    [210, 200, 40],
  ];
  const base = colours[k % colours.length];
  let s = (seed * 7919 + k * 104729 + i * 1299709) >>> 0 || 1;
  const rand = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const stripe = [y % 4 < 2, x % 4 < 2, (x + y) % 4 < 2, (x - y + 64) % 6 < 3][k % 4] ? 40 : -40;
      for (let c = 0; c < 3; c++) {
        const v = base[c] + stripe + 30 * (rand() - 0.5);
        px[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return px;
}

/**
 * Writes `dir/<class>/<image>` and returns the paths of the special files. Image 0 of class 0 is
 * a one-channel grayscale PNG, image 0 of class 1 a CMYK JPEG, image 1 of class 2 ends in
 * '.JPEG'; every class folder also holds notes.txt and a hidden ._ file (both ignored).
 */
export async function writeImageFolder(dir: string, spec: FolderSpec = {}): Promise<{ gray: string; cmyk: string; upper: string; corrupt: string | null }> {
  const { classes = 4, perClass = 12, size = 24, corrupt = null, seed = 1 } = spec;
  let gray = '';
  let cmyk = '';
  let upper = '';
  const jobs: Promise<unknown>[] = [];
  for (let k = 0; k < classes; k++) {
    const folder = join(dir, CLASS_NAMES[k] ?? `class${k}`);
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'notes.txt'), 'not an image');
    writeFileSync(join(folder, '._img00.png'), 'resource fork');
    for (let i = 0; i < perClass; i++) {
      const raw = sharp(classPixels(k, i, size, size, seed), { raw: { width: size, height: size, channels: 3 } });
      let path = join(folder, `img${String(i).padStart(2, '0')}.png`);
      if (k === 0 && i === 0) {
        gray = path;
        jobs.push(raw.toColourspace('b-w').png().toFile(path));
      } else if (k === 1 && i === 0) {
        path = cmyk = join(folder, `img00.jpg`);
        jobs.push(raw.toColourspace('cmyk').jpeg({ quality: 95 }).toFile(path));
      } else if (k === 2 && i === 1) {
        path = upper = join(folder, `img01.JPEG`);
        jobs.push(raw.jpeg({ quality: 95 }).toFile(path));
      } else {
        jobs.push(raw.png().toFile(path));
      }
    }
  }
  await Promise.all(jobs);
  let corruptPath: string | null = null;
  if (corrupt !== null) {
    corruptPath = join(dir, corrupt);
    // A PNG signature followed by garbage: passes the extension test, fails to decode.
    writeFileSync(corruptPath, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, 7)]));
  }
  return { gray, cmyk, upper, corrupt: corruptPath };
}
