import type * as tf from '@tensorflow/tfjs';

export type Disclosure =
  | { kind: 'label' }
  | { kind: 'topk'; k: number }
  | { kind: 'probs' }
  | { kind: 'rounded'; decimals: number };

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
}

export class BudgetExceeded extends Error {
  readonly name = 'BudgetExceeded';
  constructor(readonly asked: number, readonly remaining: number) {
    super(`query of ${asked} rows refused: only ${remaining} of the budget remain`);
  }
}
