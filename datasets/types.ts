/**
 * Data lives in plain typed arrays, not tensors: splits are long-lived and shared by
 * many cells, and a tensor-free data layer keeps each cell's tensor count honest.
 */
export interface Split {
  /** n rows, row-major, each prod(inputShape) floats in [0, 1]. */
  x: Float32Array;
  /** True labels; -1 where a row has none (noise pools). */
  y: Int32Array;
  n: number;
}

export type SplitName = 'train' | 'pool' | 'eval';
/**
 * Where the attacker's queries come from: the target's own distribution, a related one (the other
 * of MNIST and Fashion-MNIST), half of each (mixed), or noise.
 */
export type PoolKind = 'same' | 'related' | 'mixed' | 'noise';

/** A built-in pool, or images the user brings (an IDX file or a folder). */
export type PoolSpec = PoolKind | { path: string; transpose?: boolean };

export interface Dataset {
  name: string;
  /** NHWC without the batch dimension, e.g. [28, 28, 1]. */
  inputShape: [number, number, number];
  classes: number;
  split(name: SplitName): Split;
}

export type DatasetName = 'mnist' | 'fashion-mnist';

export interface DatasetSpec {
  name: DatasetName;
  /** Rows of the dataset's train part given to the provider. */
  trainSize: number;
  /** Rows of the train part (disjoint from `train`) the attacker may hold. */
  poolSize: number;
  /** Rows of the test part used to score imitations. */
  evalSize: number;
  seed: number;
}
