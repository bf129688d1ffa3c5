import { join } from 'node:path';
import { rng, sampleIndices, shuffleInPlace } from '../models/seed.ts';
import { DatasetError } from './errors.ts';
import { loadPathPool } from './external.ts';
import { loadFashionBytes } from './fashion.ts';
import { loadMnistFiles } from './mnist.ts';
import { noiseSplit } from './noise.ts';
import { byteRange, pickRows, subset, type ByteRows } from './split.ts';
import type { Dataset, DatasetName, DatasetSpec, PoolKind, PoolSpec, Split, SplitName } from './types.ts';

export { DatasetError } from './errors.ts';
export const DATASETS: readonly DatasetName[] = ['mnist', 'fashion-mnist'];
export const POOL_KINDS: readonly PoolKind[] = ['same', 'related', 'mixed', 'noise'];
/** Fashion-MNIST rows the benchmark treats as its test part (the package keeps no official split). */
const FASHION_TEST_ROWS = 10_000;
/** Values in a row of either dataset (28×28 grey). */
const ROW = 28 * 28;

const REPO_ROOT = join(import.meta.dirname, '..');

export function defaultCacheDir(): string {
  return process.env.RHOBENCH_CACHE ?? join(REPO_ROOT, '.cache');
}

// The raw files are read once per process: a sweep builds several datasets and pools from them.
const mnistFiles = new Map<string, ReturnType<typeof loadMnistFiles>>();
const fashionByDir = new Map<string, Promise<ByteRows>>();

/** Shares one load per key; a failed load is forgotten, so a later call tries again. */
function memo<T>(cache: Map<string, Promise<T>>, key: string, load: () => Promise<T>): Promise<T> {
  let p = cache.get(key);
  if (!p) {
    p = load().catch((err) => {
      cache.delete(key);
      throw err;
    });
    cache.set(key, p);
  }
  return p;
}

function checkCount(field: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new DatasetError(`dataset.${field} must be an integer ≥ ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A dataset's rows before the benchmark splits them, as bytes: a train part and a test part. */
async function sourceOf(name: DatasetName, cacheDir: string): Promise<{ train: ByteRows; test: ByteRows; label: string }> {
  if (name === 'mnist') return { ...(await memo(mnistFiles, 'mnist', () => loadMnistFiles())), label: 'MNIST' };
  const all = await memo(fashionByDir, cacheDir, () => loadFashionBytes(cacheDir));
  const total = all.labels.length;
  // The package groups images by class and keeps no train/test split: the benchmark's fixed
  // interleaved order is cut instead, its last 10,000 rows serving as the test part.
  const cut = Math.max(0, total - FASHION_TEST_ROWS);
  return { train: byteRange(all, ROW, 0, cut), test: byteRange(all, ROW, cut, total), label: 'Fashion-MNIST' };
}

/**
 * A dataset as the benchmark splits it: `train` (the provider's rows) and `pool` (the attacker's)
 * are disjoint seeded samples of its train part; `eval` is the first evalSize rows of its test
 * part, the same for every seed so that seeds differ only in what the provider and attacker hold.
 */
export async function loadDataset(spec: DatasetSpec, cacheDir = defaultCacheDir()): Promise<Dataset> {
  if (!DATASETS.includes(spec.name)) throw new DatasetError(`dataset.name "${spec.name}" is unknown: choose one of ${DATASETS.join(', ')}`);
  const trainSize = checkCount('trainSize', spec.trainSize, 1);
  const poolSize = checkCount('poolSize', spec.poolSize, 0);
  const evalSize = checkCount('evalSize', spec.evalSize, 1);
  if (!Number.isSafeInteger(spec.seed)) throw new DatasetError(`dataset.seed must be an integer, got ${JSON.stringify(spec.seed)}`);

  const { train, test, label } = await sourceOf(spec.name, cacheDir);
  const trainRows = train.labels.length;
  const testRows = test.labels.length;
  if (trainSize > trainRows) throw new DatasetError(`dataset.trainSize ${trainSize} exceeds the ${trainRows} rows of ${label} train`);
  if (trainSize + poolSize > trainRows) {
    throw new DatasetError(`dataset.poolSize ${poolSize} is too large: with dataset.trainSize ${trainSize}, at most ${trainRows - trainSize} rows of ${label} train (${trainRows} in all) remain for the pool`);
  }
  if (evalSize > testRows) throw new DatasetError(`dataset.evalSize ${evalSize} exceeds the ${testRows} rows of ${label} test`);

  // One seeded permutation, cut in two: distinct indices, so train and pool cannot share a row.
  const order = sampleIndices(trainRows, trainSize + poolSize, spec.seed);
  const trainIdx = order.subarray(0, trainSize);
  const poolIdx = order.subarray(trainSize);
  assertDisjoint(trainIdx, poolIdx, trainRows);
  const splits: Record<SplitName, Split> = {
    train: pickRows(train, ROW, trainIdx),
    pool: pickRows(train, ROW, poolIdx),
    eval: pickRows(test, ROW, Int32Array.from({ length: evalSize }, (_, i) => i)),
  };
  return { name: spec.name, inputShape: [28, 28, 1], classes: 10, split: (name) => splits[name] };
}

/** The benchmark's premise is that the attacker never holds the provider's rows: checked, not assumed. */
function assertDisjoint(a: ArrayLike<number>, b: ArrayLike<number>, n: number): void {
  const inA = new Uint8Array(n);
  for (let i = 0; i < a.length; i++) inA[a[i]] = 1;
  for (let i = 0; i < b.length; i++) {
    if (inA[b[i]]) throw new Error(`internal error: train row ${b[i]} is in both the provider's rows and the pool`);
  }
}

/** A stable name for a pool spec, for maps and messages. */
export function poolKey(spec: PoolSpec): string {
  return typeof spec === 'string' ? spec : `${spec.path}${spec.transpose ? ' (transposed)' : ''}`;
}

/**
 * The attacker's query pool of n rows: the first n of its own rows of the dataset (so pools of one
 * dataset are nested); a seeded sample of the related dataset (Fashion-MNIST for an MNIST target,
 * MNIST for a Fashion-MNIST one); half of each, shuffled (mixed); seeded uniform noise; or a sample
 * of images from a path. Rows from anywhere but the dataset itself carry label -1: a garment's
 * class is not a digit, and nothing should score against it.
 */
export async function loadPool(spec: PoolSpec, ds: Dataset, n: number, seed: number, cacheDir = defaultCacheDir()): Promise<Split> {
  if (!Number.isInteger(n) || n < 0) throw new DatasetError(`pool size must be an integer ≥ 0, got ${JSON.stringify(n)}`);
  const d = ds.inputShape.reduce((a, b) => a * b, 1);
  if (typeof spec === 'object') return loadPathPool(spec, ds.inputShape, n, seed);
  switch (spec) {
    case 'same': {
      const pool = ds.split('pool');
      if (n > pool.n) throw new DatasetError(`a same-distribution pool of ${n} rows was asked for, but dataset.poolSize is ${pool.n}: raise dataset.poolSize to at least ${n}`);
      return subset(pool, Int32Array.from({ length: n }, (_, i) => i));
    }
    case 'related': {
      if (ds.name === 'mnist') {
        // Any of the 70,000 Fashion-MNIST rows may be drawn: none of them is the provider's.
        const all = await memo(fashionByDir, cacheDir, () => loadFashionBytes(cacheDir));
        const total = all.labels.length;
        if (all.images.length / total !== d) throw new DatasetError(`Fashion-MNIST rows (${all.images.length / total} values) do not fit ${ds.name} inputs (${d} values)`);
        if (n > total) throw new DatasetError(`a related pool of ${n} rows was asked for, but Fashion-MNIST has ${total}`);
        const rows = pickRows(all, d, sampleIndices(total, n, seed));
        rows.y.fill(-1);
        return rows;
      }
      const { train } = await sourceOf('mnist', cacheDir);
      const total = train.labels.length;
      if (n > total) throw new DatasetError(`a related pool of ${n} rows was asked for, but MNIST train has ${total}`);
      const rows = pickRows(train, d, sampleIndices(total, n, seed));
      rows.y.fill(-1);
      return rows;
    }
    case 'mixed': {
      const same = await loadPool('same', ds, Math.ceil(n / 2), seed, cacheDir);
      const related = await loadPool('related', ds, Math.floor(n / 2), seed, cacheDir);
      const order = Int32Array.from({ length: n }, (_, i) => i);
      shuffleInPlace(order, rng(seed, 'mixed'));
      const x = new Float32Array(n * d);
      order.forEach((src, dst) => {
        const from = src < same.n ? same.x.subarray(src * d, (src + 1) * d) : related.x.subarray((src - same.n) * d, (src - same.n + 1) * d);
        x.set(from, dst * d);
      });
      return { x, y: new Int32Array(n).fill(-1), n };
    }
    case 'noise':
      return noiseSplit(n, d, seed);
    default:
      throw new DatasetError(`unknown pool kind "${spec as string}": choose one of ${POOL_KINDS.join(', ')}, or {"path": "..."} for an IDX file or an image folder`);
  }
}
