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
/** Where the attacker's queries come from: the target's own distribution, a related one, or noise. */
export type PoolKind = 'same' | 'related' | 'noise';

export interface Dataset {
  name: string;
  /** NHWC without the batch dimension, e.g. [28, 28, 1]. */
  inputShape: [number, number, number];
  classes: number;
  split(name: SplitName): Split;
}

export interface DatasetSpec {
  name: 'mnist';
  /** Rows of MNIST train given to the provider. */
  trainSize: number;
  /** Rows of MNIST train (disjoint from `train`) the attacker may hold. */
  poolSize: number;
  /** Rows of MNIST t10k used to score imitations. */
  evalSize: number;
  seed: number;
}
