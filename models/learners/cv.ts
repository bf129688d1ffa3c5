import { rng, shuffleInPlace } from '../seed.ts';
import { takeRows, takeValues, type Fitted, type Learner, type Rows64 } from './types.ts';

export interface CvScore {
  lambda: number;
  /** Mean validation error over folds: squared error for regression, 0-1 error of the sign for classification. */
  error: number;
}

export interface ProviderFit {
  fitted: Fitted;
  lambda: number;
  scores: CvScore[];
  /** Learner fits spent: folds × grid for the search, plus one on all rows. */
  fits: number;
  seconds: number;
}

export function validationError(learner: Learner, predicted: Float64Array, y: Float64Array): number {
  let e = 0;
  if (learner.task === 'regression') {
    for (let i = 0; i < y.length; i++) e += (predicted[i] - y[i]) ** 2;
  } else {
    for (let i = 0; i < y.length; i++) if ((predicted[i] >= 0 ? 1 : -1) !== Math.sign(y[i])) e += 1;
  }
  return e / y.length;
}

/** Seeded k-fold assignment: fold ids 0..k−1, sizes within one of each other. */
export function foldIds(n: number, folds: number, seed: number): Int32Array {
  if (!Number.isInteger(folds) || folds < 2 || folds > n) throw new RangeError(`cannot make ${folds} folds of ${n} rows`);
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  shuffleInPlace(perm, rng(seed, 'folds'));
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[perm[i]] = i % folds;
  return ids;
}

/**
 * What a provider does with a training request it may tune: k-fold cross-validation over the
 * λ grid (ties go to the larger λ, the simpler model), then one fit on every row.
 */
export function providerFit(
  learner: Learner,
  rows: Rows64,
  y: Float64Array,
  lambdas: readonly number[],
  opts: { folds?: number; seed?: number } = {},
): ProviderFit {
  if (lambdas.length === 0) throw new RangeError('the λ grid is empty');
  const started = performance.now();
  const folds = opts.folds ?? 5;
  const seed = opts.seed ?? 1;
  const ids = foldIds(rows.n, folds, seed);
  const scores: CvScore[] = [];
  let fits = 0;
  for (const lambda of lambdas) {
    let error = 0;
    for (let f = 0; f < folds; f++) {
      const train: number[] = [];
      const valid: number[] = [];
      for (let i = 0; i < rows.n; i++) (ids[i] === f ? valid : train).push(i);
      const model = learner.fit(takeRows(rows, train), takeValues(y, train), lambda, { seed });
      fits++;
      error += validationError(learner, model.predict(takeRows(rows, valid)), takeValues(y, valid)) / folds;
    }
    scores.push({ lambda, error });
  }
  let best = scores[0];
  for (const s of scores) if (s.error < best.error || (s.error === best.error && s.lambda > best.lambda)) best = s;
  const fitted = learner.fit(rows, y, best.lambda, { seed });
  fits++;
  return { fitted, lambda: best.lambda, scores, fits, seconds: (performance.now() - started) / 1000 };
}

/** λ grid evenly spaced in log10 from 10^lo to 10^hi. */
export function logGrid(lo: number, hi: number, count: number): number[] {
  if (count < 1) throw new RangeError('a λ grid needs at least one value');
  if (count === 1) return [10 ** lo];
  return Array.from({ length: count }, (_, i) => 10 ** (lo + ((hi - lo) * i) / (count - 1)));
}
