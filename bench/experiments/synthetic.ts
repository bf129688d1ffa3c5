import { rowsTimes, type Rows64 } from '../../models/learners/types.ts';
import { gaussians, rng } from '../../models/seed.ts';

/** A synthetic training set and the weights that generated it. */
export interface SyntheticData {
  rows: Rows64;
  y: Float64Array;
  /** The generating weights (d values); the intercept is 0. */
  w: Float64Array;
}


function checkShape(n: number, d: number): void {
  if (!Number.isInteger(n) || !Number.isInteger(d) || n < 1 || d < 1) {
    throw new RangeError(`synthetic data needs integer n ≥ 1 and d ≥ 1 (got n=${n}, d=${d})`);
  }
}


/**
 * Linear-Gaussian regression: x ~ N(0, I_d), w ~ N(0, I_d), y = x·w + noise·ε with ε ~ N(0, 1).
 * Features, weights and noise come from separate streams of the seed, so changing n keeps w.
 */
export function gaussianRegression(n: number, d: number, seed: number, noise = 0.5): SyntheticData {
  checkShape(n, d);
  if (!(noise >= 0)) throw new RangeError(`regression noise must be ≥ 0 (got ${noise})`);
  const w = gaussians(d, rng(seed, 'synthetic-weights'));
  const x = gaussians(n * d, rng(seed, 'synthetic-features'));
  const eps = gaussians(n, rng(seed, 'synthetic-noise'));
  const y = rowsTimes({ x, n, d }, w);
  for (let i = 0; i < n; i++) y[i] += noise * eps[i];
  return { rows: { x, n, d }, y, w };
}

/**
 * Logistic classification: x ~ N(0, I_d), w ~ N(0, I_d), labels ±1 with P(y = 1 | x) = σ(x·w).
 * Drawing labels from the logistic model (not the sign of x·w) keeps the classes overlapping, so
 * unregularised and lightly regularised logistic fits stay finite.
 */
export function gaussianClassification(n: number, d: number, seed: number): SyntheticData {
  checkShape(n, d);
  const w = gaussians(d, rng(seed, 'synthetic-weights'));
  const x = gaussians(n * d, rng(seed, 'synthetic-features'));
  const margin = rowsTimes({ x, n, d }, w);
  const random = rng(seed, 'synthetic-labels');
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) y[i] = random() < 1 / (1 + Math.exp(-margin[i])) ? 1 : -1;
  return { rows: { x, n, d }, y, w };
}
