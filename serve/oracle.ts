import type * as tf from '@tensorflow/tfjs';
import type { Target } from '../models/types.ts';
import { disclose, validateDisclosure } from './disclosure.ts';
import { BudgetExceeded, type Disclosure, type Oracle } from './types.ts';

/** The target behind an API, in-process: a hard budget in rows, answers shaped by the disclosure. */
export class InProcessOracle implements Oracle {
  private used = 0;
  /** Calls answered (not rows). */
  queries = 0;

  constructor(
    private readonly target: Target,
    readonly budget: number,
    readonly disclosure: Disclosure,
  ) {
    if (!Number.isInteger(budget) || budget < 0) throw new RangeError(`budget must be a non-negative integer, got ${budget}`);
    validateDisclosure(disclosure, target.classes);
  }

  get spent(): number {
    return this.used;
  }

  get classes(): number {
    return this.target.classes;
  }

  /**
   * Nothing in here awaits, so the budget check and the count happen together even when an
   * attack sends several queries at once: concurrent calls cannot both slip under the budget.
   */
  async query(x: tf.Tensor): Promise<tf.Tensor2D> {
    const want = this.target.inputShape;
    const got = x.shape.slice(1);
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new RangeError(`oracle for target ${this.target.id}: query rows must have shape [${want.join(', ')}], got [${got.join(', ')}] (query of shape [${x.shape.join(', ')}])`);
    }
    const n = x.shape[0];
    if (n === 0) throw new RangeError(`oracle for target ${this.target.id}: empty query (0 rows)`);
    if (this.used + n > this.budget) throw new BudgetExceeded(n, this.budget - this.used);
    const probs = this.target.predictProba(x);
    try {
      const answer = disclose(probs, this.disclosure);
      this.used += n;
      this.queries++;
      return answer;
    } finally {
      probs.dispose();
    }
  }
}
