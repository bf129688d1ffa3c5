import { mkdir, readFile, rename } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { sampleIndices } from '../models/seed.ts';
import { DatasetError, readIdx, writeIdx } from './idx.ts';
import { fromUint8 } from './split.ts';
import type { Split } from './types.ts';

const IMAGES = 'fashion-mnist-images-idx3-ubyte';
const LABELS = 'fashion-mnist-labels-idx1-ubyte';
const ROW = 28 * 28;

/** The `fashion-mnist` package ships one JSON file per class: slow to parse, so it is done once. */
async function parsePackageJson(): Promise<{ images: Uint8Array; labels: Uint8Array }> {
  const dir = join(dirname(createRequire(import.meta.url).resolve('fashion-mnist/package.json')), 'src', 'clothes');
  const perClass: number[][][] = [];
  for (let c = 0; c < 10; c++) {
    const file = join(dir, `${c}.json`);
    const parsed = JSON.parse(await readFile(file, 'utf8')).data as number[][];
    // The package's class-0 file holds two empty rows; anything else malformed is an error.
    const rows = Array.isArray(parsed) ? parsed.filter((r) => r.length > 0) : [];
    const bad = rows.findIndex((r) => r.length !== ROW);
    if (!rows.length || bad >= 0) throw new DatasetError(`${file}: expected rows of ${ROW} pixels${bad >= 0 ? `, row ${bad} has ${rows[bad].length}` : ''}`);
    perClass.push(rows);
  }
  const total = perClass.reduce((a, r) => a + r.length, 0);
  // Fixed-seed interleaving so that any prefix or sample mixes all classes.
  const order = sampleIndices(total, total, 20170825);
  const flat: [number[], number][] = perClass.flatMap((rows, c) => rows.map((r): [number[], number] => [r, c]));
  const images = new Uint8Array(total * ROW);
  const labels = new Uint8Array(total);
  order.forEach((src, dst) => {
    images.set(flat[src][0], dst * ROW);
    labels[dst] = flat[src][1];
  });
  return { images, labels };
}

async function readCache(cacheDir: string): Promise<Split> {
  const [img, lab] = await Promise.all([readIdx(join(cacheDir, IMAGES)), readIdx(join(cacheDir, LABELS))]);
  if (img.dims[0] !== lab.dims[0] || img.dims[1] * img.dims[2] !== ROW) throw new DatasetError(`${IMAGES}: shape does not match ${LABELS}`);
  return fromUint8(img.data as Uint8Array, lab.data, ROW);
}

/**
 * All 70,000 Fashion-MNIST images in a fixed class-interleaved order. The first call writes them
 * as IDX files under cacheDir; later calls read those (a corrupt cache is rebuilt).
 */
export async function loadFashion(cacheDir: string): Promise<Split> {
  try {
    return await readCache(cacheDir);
  } catch (err) {
    if (!(err instanceof DatasetError)) throw err;
  }
  const { images, labels } = await parsePackageJson();
  await mkdir(cacheDir, { recursive: true });
  const n = labels.length;
  const tmp = `.${process.pid}.tmp`;
  await writeIdx(join(cacheDir, IMAGES + tmp), { dims: [n, 28, 28], data: images });
  await writeIdx(join(cacheDir, LABELS + tmp), { dims: [n], data: labels });
  await rename(join(cacheDir, IMAGES + tmp), join(cacheDir, IMAGES));
  await rename(join(cacheDir, LABELS + tmp), join(cacheDir, LABELS));
  return fromUint8(images, labels, ROW);
}

export const FASHION_CACHE_FILES = [IMAGES, LABELS];
