import type * as tf from '@tensorflow/tfjs';

export type Disclosure =
  | { kind: 'label' }
  | { kind: 'topk'; k: number }
  | { kind: 'probs' }
  | { kind: 'rounded'; decimals: number }
  /** The label, plus the identifier of the leaf that decided it (decision trees, as BigML's API gives). */
  | { kind: 'leaf' };

/** Answers on plain float64 rows (Oracle.query64). */
export interface Answers64 {
  /** n × classes, row-major, shaped by the disclosure exactly as `query` shapes them, in float64. */
  y: Float64Array;
  /** With disclosure 'leaf': each row's leaf identifier (an internal node's, for a row that stopped at a missing feature). */
  leaves?: Int32Array;
}

export interface Oracle {
  readonly budget: number;
  /** Rows answered so far; never more than budget. */
  readonly spent: number;
  readonly disclosure: Disclosure;
  readonly classes: number;
  /**
   * x: [n, ...inputShape]. Answers [n, classes] shaped by the disclosure:
   * label → one-hot of each row's own argmax; topk → the k largest probabilities, zeros elsewhere;
   * probs → probabilities; rounded → probabilities rounded to `decimals`.
   * Rejects with BudgetExceeded (answering nothing) if spent + n > budget. Caller disposes x and the answer.
   */
  query(x: tf.Tensor): Promise<tf.Tensor2D>;
  /**
   * The same answers for n flattened rows of float64, computed in float64 where the target can
   * (logistic regression, MLP, tree and linear SVM targets; others answer in float32). Exact
   * attacks use it: equation solving recovers weights to 1e-6, which float32 answers cannot carry.
   * NaN marks a missing feature, accepted only by targets that take incomplete queries (trees).
   * Budget rules are those of `query`.
   */
  query64(x: Float64Array, n: number): Promise<Answers64>;
}

export class BudgetExceeded extends Error {
  readonly name = 'BudgetExceeded';
  constructor(readonly asked: number, readonly remaining: number) {
    super(`query of ${asked} rows refused: only ${remaining} of the budget remain`);
  }
}
