import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { sampleIndices } from '../models/seed.ts';
import { DatasetError } from './errors.ts';
import { readIdx, type IdxData } from './idx.ts';
import type { Split } from './types.ts';

/** A pool the user brings: an IDX image file (e.g. EMNIST letters) or a folder of images. */
export interface PathPool {
  path: string;
  /** EMNIST stores its IDX images transposed (column-major); set this to turn them upright. */
  transpose?: boolean;
}

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.bmp']);

/**
 * n rows sampled (seeded) from the images at pool.path, as [0, 1] floats of inputShape. Labels
 * are -1: whatever the file's labels mean, they are not the target's classes. An IDX file must
 * already have the target's height and width (channels 1); a folder's images (searched
 * recursively, so a class-per-folder layout works) are converted with sharp: grayscale or RGB to
 * the target's channels, resized to fill its height and width.
 */
export async function loadPathPool(pool: PathPool, inputShape: [number, number, number], n: number, seed: number): Promise<Split> {
  let info;
  try {
    info = await stat(pool.path);
  } catch (err) {
    throw new DatasetError(`pool ${pool.path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); give an IDX image file or a folder of images`);
  }
  return info.isDirectory() ? folderPool(pool, inputShape, n, seed) : idxPool(pool, inputShape, n, seed);
}

function tooFew(path: string, have: number, n: number): DatasetError {
  return new DatasetError(`pool ${path} has ${have} images, fewer than the ${n} queries of the largest budget`);
}

async function idxPool(pool: PathPool, [h, w, c]: [number, number, number], n: number, seed: number): Promise<Split> {
  const { dims, data } = await readIdx(pool.path);
  const shape = dims.slice(1);
  const fits = (shape.length === 2 && c === 1 && shape[0] === h && shape[1] === w) || (shape.length === 3 && shape[0] === h && shape[1] === w && shape[2] === c);
  if (!fits) throw new DatasetError(`pool ${pool.path}: IDX images of shape [${shape.join(', ')}] do not fit the target's inputs [${h}, ${w}, ${c}]`);
  const total = dims[0];
  if (n > total) throw tooFew(pool.path, total, n);
  const scale = data instanceof Uint8Array ? 1 / 255 : 1;
  const d = h * w * c;
  const pick = sampleIndices(total, n, seed);
  const x = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const src = pick[i] * d;
    for (let p = 0; p < d; p++) {
      // Transposed storage: pixel (row, col) sits at (col, row).
      const from = pool.transpose ? transposedIndex(p, h, w, c) : p;
      x[i * d + p] = (data as IdxData)[src + from] * scale;
    }
  }
  const bad = x.findIndex((v) => !(v >= 0 && v <= 1));
  if (bad >= 0) throw new DatasetError(`pool ${pool.path}: value ${x[bad]} is outside [0, 1] (float IDX data must already be scaled)`);
  return { x, y: new Int32Array(n).fill(-1), n };
}

function transposedIndex(p: number, h: number, w: number, c: number): number {
  const ch = p % c;
  const pixel = (p - ch) / c;
  const row = Math.floor(pixel / w);
  const col = pixel % w;
  return (col * h + row) * c + ch;
}

async function listImages(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listImages(path)));
    else if (IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())) out.push(path);
  }
  return out;
}

async function folderPool(pool: PathPool, [h, w, c]: [number, number, number], n: number, seed: number): Promise<Split> {
  // Sorted, so the seeded sample does not depend on the order the file system lists entries in.
  const files = (await listImages(pool.path)).sort();
  if (files.length === 0) throw new DatasetError(`pool ${pool.path}: no images (${[...IMAGE_EXTENSIONS].join(' ')}) in the folder or below it`);
  if (n > files.length) throw tooFew(pool.path, files.length, n);
  const { default: sharp } = await import('sharp');
  const d = h * w * c;
  const x = new Float32Array(n * d);
  const pick = sampleIndices(files.length, n, seed);
  for (let i = 0; i < n; i++) {
    const file = files[pick[i]];
    let pixels: Buffer;
    try {
      let img = sharp(file).resize(w, h, { fit: 'fill' }).removeAlpha();
      img = c === 1 ? img.grayscale() : img.toColourspace('srgb');
      pixels = await img.raw().toBuffer();
    } catch (err) {
      throw new DatasetError(`pool ${pool.path}: cannot decode ${file}: ${(err as Error).message}`);
    }
    if (pixels.length !== d) throw new DatasetError(`pool ${pool.path}: ${file} decoded to ${pixels.length} values, expected ${d} (${h}×${w}×${c})`);
    for (let p = 0; p < d; p++) x[i * d + p] = pixels[p] / 255;
  }
  return { x, y: new Int32Array(n).fill(-1), n };
}
