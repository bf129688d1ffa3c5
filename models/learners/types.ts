/** Row-major float64 rows: n rows of d features. Learning services compute in float64 throughout. */
export interface Rows64 {
  x: Float64Array;
  n: number;
  d: number;
}

export type LearnerTask = 'regression' | 'classification';

/**
 * A fitted model. `params` is the flat parameter vector a service may release and that
 * hyperparameter stealing reads; its layout is the learner's (documented in its module).
 */
export interface Fitted {
  learner: string;
  lambda: number;
  params: Float64Array;
  /** Real outputs: the regression value, or for classification (labels ±1) the decision value whose sign is the class. */
  predict(rows: Rows64): Float64Array;
}

/**
 * A regularised learner in the form Wang & Gong (S&P 2018) steal from:
 *   minimise  L(w; X, y) + λ·R(w),
 * with L summed (not averaged) over rows, so λ has the paper's scale.
 */
export interface Learner {
  name: string;
  task: LearnerTask;
  fit(rows: Rows64, y: Float64Array, lambda: number, opts?: { seed?: number }): Fitted;
  /**
   * ∂L/∂w and ∂R/∂w at params on the training rows. At a minimiser loss + λ·reg = 0, which is
   * the equation hyperparameter stealing solves for λ. Learners without such a condition omit it.
   */
  gradients?(params: Float64Array, rows: Rows64, y: Float64Array): { loss: Float64Array; reg: Float64Array };
}

export function checkRows(rows: Rows64, y?: Float64Array): void {
  if (!Number.isInteger(rows.n) || !Number.isInteger(rows.d) || rows.n < 1 || rows.d < 1) {
    throw new RangeError(`rows must have n ≥ 1 and d ≥ 1 (got n=${rows.n}, d=${rows.d})`);
  }
  if (rows.x.length !== rows.n * rows.d) throw new RangeError(`rows.x has ${rows.x.length} values, expected n·d = ${rows.n * rows.d}`);
  if (y && y.length !== rows.n) throw new RangeError(`y has ${y.length} values for ${rows.n} rows`);
}

/** The rows at the given indices, copied. */
export function takeRows(rows: Rows64, idx: ArrayLike<number>): Rows64 {
  const { x, d } = rows;
  const out = new Float64Array(idx.length * d);
  for (let i = 0; i < idx.length; i++) out.set(x.subarray(idx[i] * d, idx[i] * d + d), i * d);
  return { x: out, n: idx.length, d };
}

export function takeValues(y: Float64Array, idx: ArrayLike<number>): Float64Array {
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = y[idx[i]];
  return out;
}

/** Xβ for rows X (no intercept). */
export function rowsTimes(rows: Rows64, beta: ArrayLike<number>): Float64Array {
  const { x, n, d } = rows;
  if (beta.length !== d) throw new RangeError(`β has ${beta.length} values for rows of ${d} features`);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[i * d + j] * beta[j];
    out[i] = s;
  }
  return out;
}
