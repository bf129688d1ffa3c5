import * as tf from '@tensorflow/tfjs';
import type { Target } from '../models/types.ts';
import { disclose, disclose64, validateDisclosure } from './disclosure.ts';
import { BudgetExceeded, type Answers64, type Disclosure, type Oracle } from './types.ts';

/** Throws a RangeError unless the disclosure suits the target (leaf identifiers need a tree). */
export function checkDisclosureFor(target: Target, d: Disclosure): void {
  validateDisclosure(d, target.classes);
  if (d.kind === 'leaf' && !target.leafIds) throw new RangeError(`disclosure "leaf" needs a target that has leaves; ${target.id} is a ${target.family}`);
}

/**
 * The first problem with n float64 rows for target, or undefined: a wrong length, or a value that
 * is not finite (NaN is a missing feature, allowed only where the target takes incomplete queries).
 */
export function rowProblem(target: Target, x: Float64Array, n: number): string | undefined {
  const d = target.inputShape.reduce((a, b) => a * b, 1);
  if (!(Number.isInteger(n) && n >= 1)) return `row count must be a positive integer, got ${n}`;
  if (x.length !== n * d) return `${x.length} values are not ${n} rows of ${d} (shape [${target.inputShape.join(', ')}], flattened)`;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (Number.isFinite(v) || (Number.isNaN(v) && target.acceptsMissing)) continue;
    const what = Number.isNaN(v) ? `missing, and ${target.id} (${target.family}) takes only complete rows` : `${v}: inputs must be finite`;
    return `row ${Math.floor(i / d)}, value ${i % d} is ${what}`;
  }
  return undefined;
}

/** The target's probabilities for x, shaped by the disclosure; the caller disposes x and the answer. */
export async function answerTensor(target: Target, x: tf.Tensor, d: Disclosure): Promise<tf.Tensor2D> {
  const probs = await target.predictProba(x);
  try {
    return disclose(probs, d);
  } finally {
    probs.dispose();
  }
}

/**
 * Answers for float64 rows, shaped by the disclosure: in float64 where the target computes so,
 * else its float32 probabilities widened. Rows must already have passed rowProblem.
 */
export async function answerRows64(target: Target, x: Float64Array, n: number, d: Disclosure): Promise<Answers64> {
  if (!target.predictProba64) {
    // The float32 path as `query` takes it, widened: both methods then answer a row alike.
    const rows = tf.tensor(Float32Array.from(x), [n, ...target.inputShape]);
    const t = await answerTensor(target, rows, d).finally(() => rows.dispose());
    const y = Float64Array.from(await t.data());
    t.dispose();
    return { y };
  }
  const y = disclose64(target.predictProba64(x, n), target.classes, d);
  return d.kind === 'leaf' ? { y, leaves: target.leafIds!(x, n) } : { y };
}

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
    checkDisclosureFor(target, disclosure);
  }

  get spent(): number {
    return this.used;
  }

  get classes(): number {
    return this.target.classes;
  }

  /**
   * The rows are counted in the same synchronous step as the budget check, before anything
   * awaits, so concurrent calls cannot both slip under the budget; a failed answer gives them back.
   */
  async query(x: tf.Tensor): Promise<tf.Tensor2D> {
    const want = this.target.inputShape;
    const got = x.shape.slice(1);
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new RangeError(`oracle for target ${this.target.id}: query rows must have shape [${want.join(', ')}], got [${got.join(', ')}] (query of shape [${x.shape.join(', ')}])`);
    }
    const n = x.shape[0];
    if (n === 0) throw new RangeError(`oracle for target ${this.target.id}: empty query (0 rows)`);
    return this.held(n, () => answerTensor(this.target, x, this.disclosure));
  }

  async query64(x: Float64Array, n: number): Promise<Answers64> {
    const problem = rowProblem(this.target, x, n);
    if (problem) throw new RangeError(`oracle for target ${this.target.id}: ${problem}`);
    return this.held(n, () => answerRows64(this.target, x, n, this.disclosure));
  }

  private async held<T>(n: number, answer: () => Promise<T>): Promise<T> {
    if (this.used + n > this.budget) throw new BudgetExceeded(n, this.budget - this.used);
    this.used += n;
    try {
      const out = await answer();
      this.queries++;
      return out;
    } catch (err) {
      this.used -= n;
      throw err;
    }
  }
}
