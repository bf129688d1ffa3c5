import { mkdir, readFile, rename } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { sampleIndices } from '../models/seed.ts';
import { DatasetError } from './errors.ts';
import { readIdx, writeIdx } from './idx.ts';
import { fromUint8, type ByteRows } from './split.ts';
import type { Split } from './types.ts';

const IMAGES = 'fashion-mnist-images-idx3-ubyte';
const LABELS = 'fashion-mnist-labels-idx1-ubyte';
const SIDE = 28;
const ROW = SIDE * SIDE;
const CLASSES = 10;
/** Fixes the class interleaving; changing it changes every "related" pool, so it never changes. */
const ORDER_SEED = 20170825;

export const FASHION_CACHE_FILES: readonly string[] = [IMAGES, LABELS];

/** Fashion-MNIST as bytes: n rows of 28×28 pixels and n labels 0–9, in the benchmark's fixed order. */
export type FashionBytes = ByteRows;

/** Validates one class file's rows and packs them into bytes, so the parsed JSON can be freed at once. */
function packClass(parsed: unknown, file: string): Uint8Array {
  const data = (parsed as { data?: unknown } | null)?.data;
  if (!Array.isArray(data)) throw new DatasetError(`${file}: expected {"data": [[${ROW} pixels], ...]}`);
  // The package's class-0 file holds two empty rows; any other malformed row is an error.
  const rows = data.filter((r) => !(Array.isArray(r) && r.length === 0));
  if (!rows.length) throw new DatasetError(`${file}: no images`);
  const out = new Uint8Array(rows.length * ROW);
  rows.forEach((r, i) => {
    if (!Array.isArray(r) || r.length !== ROW) throw new DatasetError(`${file}: image ${i} has ${Array.isArray(r) ? r.length : 'no'} pixels, expected ${ROW}`);
    for (let p = 0; p < ROW; p++) {
      const v = r[p];
      if (!Number.isInteger(v) || v < 0 || v > 255) throw new DatasetError(`${file}: image ${i} pixel ${p} is ${JSON.stringify(v)}, expected an integer 0–255`);
      out[i * ROW + p] = v;
    }
  });
  return out;
}

/**
 * Parses the `fashion-mnist` package (one JSON file per class, ~150 MB: seconds of work) into
 * bytes, interleaving the classes by a fixed seed so that any prefix or sample mixes them.
 */
export async function parseFashionPackage(): Promise<FashionBytes> {
  const dir = join(dirname(createRequire(import.meta.url).resolve('fashion-mnist/package.json')), 'src', 'clothes');
  const perClass: Uint8Array[] = [];
  for (let c = 0; c < CLASSES; c++) {
    const file = join(dir, `${c}.json`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(file, 'utf8'));
    } catch (err) {
      throw new DatasetError(`${file}: cannot read Fashion-MNIST class ${c}: ${(err as Error).message}`);
    }
    perClass.push(packClass(parsed, file));
  }
  const counts = perClass.map((b) => b.length / ROW);
  const total = counts.reduce((a, b) => a + b, 0);
  // Source row s lives in class classOf[s] at row rowOf[s].
  const classOf = new Uint8Array(total);
  const rowOf = new Int32Array(total);
  let s = 0;
  counts.forEach((k, c) => {
    for (let r = 0; r < k; r++, s++) {
      classOf[s] = c;
      rowOf[s] = r;
    }
  });
  const order = sampleIndices(total, total, ORDER_SEED);
  const images = new Uint8Array(total * ROW);
  const labels = new Uint8Array(total);
  order.forEach((src, dst) => {
    const c = classOf[src];
    const r = rowOf[src];
    images.set(perClass[c].subarray(r * ROW, (r + 1) * ROW), dst * ROW);
    labels[dst] = c;
  });
  return { images, labels };
}

async function readCache(cacheDir: string): Promise<FashionBytes> {
  const [img, lab] = await Promise.all([readIdx(join(cacheDir, IMAGES)), readIdx(join(cacheDir, LABELS))]);
  if (!(img.data instanceof Uint8Array) || img.dims.length !== 3 || img.dims[1] !== SIDE || img.dims[2] !== SIDE) {
    throw new DatasetError(`${IMAGES}: expected u8 images of ${SIDE}×${SIDE}, found [${img.dims.join(', ')}] (${join(cacheDir, IMAGES)})`);
  }
  if (!(lab.data instanceof Uint8Array) || lab.dims.length !== 1 || lab.dims[0] !== img.dims[0]) {
    throw new DatasetError(`${LABELS}: expected ${img.dims[0]} u8 labels to match ${IMAGES}, found [${lab.dims.join(', ')}] (${join(cacheDir, LABELS)})`);
  }
  const bad = lab.data.findIndex((v) => v >= CLASSES);
  if (bad >= 0) throw new DatasetError(`${LABELS}: label ${lab.data[bad]} at row ${bad} is not a class 0–${CLASSES - 1} (${join(cacheDir, LABELS)})`);
  return { images: img.data, labels: lab.data };
}

/** Each file is written under a temporary name and renamed, so a reader never sees half a file. */
async function writeCache(cacheDir: string, { images, labels }: FashionBytes): Promise<void> {
  await mkdir(cacheDir, { recursive: true });
  const n = labels.length;
  const tmp = `.${process.pid}.tmp`;
  await writeIdx(join(cacheDir, IMAGES + tmp), { dims: [n, SIDE, SIDE], data: images });
  await writeIdx(join(cacheDir, LABELS + tmp), { dims: [n], data: labels });
  await rename(join(cacheDir, IMAGES + tmp), join(cacheDir, IMAGES));
  await rename(join(cacheDir, LABELS + tmp), join(cacheDir, LABELS));
}

export interface LoadFashionOptions {
  /** Where the rows come from when the cache is missing or corrupt (default: parseFashionPackage). */
  build?: () => Promise<FashionBytes>;
  /** Told when an existing cache is refused and rebuilt. */
  log?: (message: string) => void;
}

/**
 * All 70,000 Fashion-MNIST images with labels, in a fixed class-interleaved order. The first call
 * parses the package's JSON and writes IDX files under cacheDir; later calls read those. A cache
 * that fails IDX validation is rebuilt.
 */
export async function loadFashion(cacheDir: string, options: LoadFashionOptions = {}): Promise<Split> {
  const { images, labels } = await loadFashionBytes(cacheDir, options);
  return fromUint8(images, labels, ROW);
}

/** loadFashion's rows as bytes (a quarter of the memory), for callers that keep or sample them. */
export async function loadFashionBytes(cacheDir: string, options: LoadFashionOptions = {}): Promise<FashionBytes> {
  let bytes: FashionBytes | undefined;
  try {
    bytes = await readCache(cacheDir);
  } catch (err) {
    if (!(err instanceof DatasetError)) throw err;
    const missing = (err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
    if (!missing) options.log?.(`Fashion-MNIST cache refused, rebuilding it: ${err.message}`);
  }
  if (!bytes) {
    bytes = await (options.build ?? parseFashionPackage)();
    await writeCache(cacheDir, bytes);
  }
  return bytes;
}
