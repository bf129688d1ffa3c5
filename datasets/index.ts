import { join } from 'node:path';
import { sampleIndices } from '../models/seed.ts';
import { loadFashion } from './fashion.ts';
import { DatasetError } from './idx.ts';
import { loadMnistFiles } from './mnist.ts';
import { noiseSplit } from './noise.ts';
import { rowSize, subset } from './split.ts';
import type { Dataset, DatasetSpec, PoolKind, Split, SplitName } from './types.ts';

export { DatasetError } from './idx.ts';
export const DATASETS = ['mnist'] as const;
export const POOL_KINDS: readonly PoolKind[] = ['same', 'related', 'noise'];

const REPO_ROOT = join(import.meta.dirname, '..');

export function defaultCacheDir(): string {
  return process.env.RHOBENCH_CACHE ?? join(REPO_ROOT, '.cache');
}

let mnistFiles: ReturnType<typeof loadMnistFiles> | undefined;
const fashionByDir = new Map<string, Promise<Split>>();

/**
 * MNIST as the benchmark splits it: `train` (the provider's rows) and `pool` (the attacker's)
 * are disjoint samples of MNIST train; `eval` is the first evalSize rows of t10k.
 */
export async function loadDataset(spec: DatasetSpec, _cacheDir = defaultCacheDir()): Promise<Dataset> {
  if (spec.name !== 'mnist') throw new DatasetError(`unknown dataset "${spec.name}": choose one of ${DATASETS.join(', ')}`);
  mnistFiles ??= loadMnistFiles();
  const { train, test } = await mnistFiles.catch((err) => {
    mnistFiles = undefined;
    throw err;
  });
  if (spec.trainSize + spec.poolSize > train.n) {
    throw new DatasetError(`dataset.trainSize + dataset.poolSize = ${spec.trainSize + spec.poolSize} exceeds the ${train.n} rows of MNIST train`);
  }
  if (spec.evalSize > test.n) throw new DatasetError(`dataset.evalSize ${spec.evalSize} exceeds the ${test.n} rows of MNIST t10k`);
  const order = sampleIndices(train.n, spec.trainSize + spec.poolSize, spec.seed);
  const splits: Record<SplitName, Split> = {
    train: subset(train, order.subarray(0, spec.trainSize)),
    pool: subset(train, order.subarray(spec.trainSize)),
    eval: subset(test, Int32Array.from({ length: spec.evalSize }, (_, i) => i)),
  };
  return { name: 'mnist', inputShape: [28, 28, 1], classes: 10, split: (name) => splits[name] };
}

/** The attacker's query pool of n rows: its own MNIST rows, Fashion-MNIST, or noise. */
export async function loadPool(kind: PoolKind, ds: Dataset, n: number, seed: number, cacheDir = defaultCacheDir()): Promise<Split> {
  const d = ds.inputShape.reduce((a, b) => a * b, 1);
  switch (kind) {
    case 'same': {
      const pool = ds.split('pool');
      if (n > pool.n) throw new DatasetError(`a same-distribution pool of ${n} rows was asked for, but dataset.poolSize is ${pool.n}`);
      return subset(pool, Int32Array.from({ length: n }, (_, i) => i));
    }
    case 'related': {
      let fashion = fashionByDir.get(cacheDir);
      if (!fashion) fashionByDir.set(cacheDir, (fashion = loadFashion(cacheDir)));
      const all = await fashion;
      if (rowSize(all) !== d) throw new DatasetError(`Fashion-MNIST rows (${rowSize(all)}) do not fit ${ds.name} inputs (${d})`);
      if (n > all.n) throw new DatasetError(`a related pool of ${n} rows was asked for, but Fashion-MNIST has ${all.n}`);
      return subset(all, sampleIndices(all.n, n, seed));
    }
    case 'noise':
      return noiseSplit(n, d, seed);
    default:
      throw new DatasetError(`unknown pool kind "${kind as string}": choose one of ${POOL_KINDS.join(', ')}`);
  }
}
