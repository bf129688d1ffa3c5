import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import type { Split } from '../../datasets/types.ts';
import { bytesF64, f64Bytes, float64Target } from '../linear64.ts';
import { rng, shuffleInPlace } from '../seed.ts';
import type { Target } from '../types.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

/**
 * A linear SVM: k scorers s_c(x) = w_c·x + b_c in float64. With two classes there is one scorer
 * and the decision is sign(w·x + b) (s > 0 → class 1, s ≤ 0 → class 0); with more, one scorer per
 * class (one-vs-rest) and the decision is the argmax (ties to the lower class).
 */
export interface LinearSvmParams {
  classes: number;
  features: number;
  /** [scorers × features], scorers = 1 for two classes, else classes. */
  w: Float64Array;
  /** [scorers] */
  b: Float64Array;
}

export interface LinearSvmFitOptions {
  C: number;
  /** Most passes of dual coordinate descent over the rows. */
  epochs: number;
  seed: number;
  /** Stop once the projected gradient's spread over a pass (max − min) is below this (liblinear's ε). */
  tol?: number;
}

/** Rows as compressed sparse rows in float64: MNIST is ~80% zeros, and each pass only needs the nonzeros. */
interface SparseRows {
  start: Int32Array;
  index: Int32Array;
  value: Float64Array;
  /** |x_i|² + 1 (the augmented bias feature), the diagonal of the dual's Q. */
  sqNorm: Float64Array;
}

function sparseRows(x: ArrayLike<number>, n: number, d: number): SparseRows {
  let nnz = 0;
  for (let i = 0; i < n * d; i++) if (x[i] !== 0) nnz++;
  const start = new Int32Array(n + 1);
  const index = new Int32Array(nnz);
  const value = new Float64Array(nnz);
  const sqNorm = new Float64Array(n);
  let at = 0;
  for (let r = 0; r < n; r++) {
    start[r] = at;
    let sq = 1;
    for (let f = 0; f < d; f++) {
      const v = x[r * d + f];
      if (v === 0) continue;
      if (!Number.isFinite(v)) throw new RangeError(`linear SVM: value ${f} of training row ${r} is ${v}, not a finite number`);
      index[at] = f;
      value[at++] = v;
      sq += v * v;
    }
    sqNorm[r] = sq;
  }
  start[n] = at;
  return { start, index, value, sqNorm };
}

/**
 * One binary scorer by dual coordinate descent for the L1-loss (hinge) SVM (Hsieh et al., ICML
 * 2008 — the solver of liblinear): minimises ½|w̄|² + C·Σ max(0, 1 − y_i w̄·x̄_i) with x̄ = [x, 1],
 * so the bias is the weight of a constant feature and is regularised with w, as liblinear's -B 1
 * does. The dual is a box-constrained QP, solved one coordinate at a time in closed form; rows are
 * visited in a seeded order, so the same seed gives the same weights, bit for bit.
 * y: +1 / −1 per row. Returns w̄ (d + 1 values, the bias last).
 */
function fitBinary(rows: SparseRows, y: Int8Array, d: number, opts: LinearSvmFitOptions, stream: string): Float64Array {
  const n = y.length;
  const { start, index, value, sqNorm } = rows;
  const w = new Float64Array(d + 1);
  const alpha = new Float64Array(n);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const random = rng(opts.seed, stream);
  const tol = opts.tol ?? 1e-3;
  const C = opts.C;
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    shuffleInPlace(order, random);
    let maxPG = -Infinity;
    let minPG = Infinity;
    for (let k = 0; k < n; k++) {
      const i = order[k];
      let margin = w[d];
      for (let p = start[i]; p < start[i + 1]; p++) margin += w[index[p]] * value[p];
      const G = y[i] * margin - 1;
      const a = alpha[i];
      // The projected gradient: zero where the box stops the coordinate from moving.
      const PG = a === 0 ? Math.min(G, 0) : a === C ? Math.max(G, 0) : G;
      if (PG > maxPG) maxPG = PG;
      if (PG < minPG) minPG = PG;
      if (PG === 0) continue;
      const next = Math.min(Math.max(a - G / sqNorm[i], 0), C);
      const step = (next - a) * y[i];
      if (step === 0) continue;
      alpha[i] = next;
      for (let p = start[i]; p < start[i + 1]; p++) w[index[p]] += step * value[p];
      w[d] += step;
    }
    if (maxPG - minPG < tol) break;
  }
  return w;
}

/**
 * Trains a linear SVM on n rows of d features (labels 0..classes−1): one scorer for two classes
 * (class 1 positive), one-vs-rest scorers otherwise. Everything is float64.
 */
export function fitLinearSvm(x: ArrayLike<number>, labels: ArrayLike<number>, n: number, classes: number, opts: LinearSvmFitOptions): LinearSvmParams {
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`linear SVM: needs at least one training row, got ${n}`);
  if (x.length % n !== 0) throw new RangeError(`linear SVM: ${x.length} values are not ${n} whole rows`);
  if (labels.length !== n) throw new RangeError(`linear SVM: ${labels.length} labels for ${n} rows`);
  if (!(Number.isInteger(classes) && classes >= 2)) throw new RangeError(`linear SVM: needs at least 2 classes, got ${classes}`);
  if (!(opts.C > 0 && Number.isFinite(opts.C))) throw new RangeError(`linear SVM: C must be a positive number, got ${opts.C}`);
  if (!(Number.isInteger(opts.epochs) && opts.epochs >= 1)) throw new RangeError(`linear SVM: epochs must be a positive integer, got ${opts.epochs}`);
  const d = x.length / n;
  for (let r = 0; r < n; r++) {
    const c = labels[r];
    if (!(Number.isInteger(c) && c >= 0 && c < classes)) throw new RangeError(`linear SVM: label ${c} at training row ${r} is outside 0..${classes - 1}`);
  }
  const rows = sparseRows(x, n, d);
  const scorers = classes === 2 ? 1 : classes;
  const w = new Float64Array(scorers * d);
  const b = new Float64Array(scorers);
  for (let s = 0; s < scorers; s++) {
    const positive = classes === 2 ? 1 : s;
    const y = Int8Array.from({ length: n }, (_, r) => (labels[r] === positive ? 1 : -1));
    const wb = fitBinary(rows, y, d, opts, `linear-svm:${s}`);
    w.set(wb.subarray(0, d), s * d);
    b[s] = wb[d];
  }
  return { classes, features: d, w, b };
}

/** Scores of n rows (n × scorers, float64). */
export function linearScores(p: LinearSvmParams, x: ArrayLike<number>, n: number): Float64Array {
  const d = p.features;
  const k = p.b.length;
  const out = new Float64Array(n * k);
  for (let r = 0; r < n; r++) {
    const row = r * d;
    for (let s = 0; s < k; s++) {
      const ws = s * d;
      let sum = p.b[s];
      for (let f = 0; f < d; f++) sum += p.w[ws + f] * x[row + f];
      out[r * k + s] = sum;
    }
  }
  return out;
}

/** The decided class of each row: sign for one scorer (0 counts as class 0), argmax for several. */
export function linearDecisions(p: LinearSvmParams, x: ArrayLike<number>, n: number): Int32Array {
  const scores = linearScores(p, x, n);
  const k = p.b.length;
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    if (k === 1) {
      out[r] = scores[r] > 0 ? 1 : 0;
      continue;
    }
    let best = 0;
    for (let s = 1; s < k; s++) if (scores[r * k + s] > scores[r * k + best]) best = s;
    out[r] = best;
  }
  return out;
}

export function checkLinearSvmParams(p: LinearSvmParams): void {
  const { classes, features: d } = p;
  if (!(Number.isInteger(classes) && classes >= 2 && Number.isInteger(d) && d > 0)) throw new Error(`linear SVM: bad shape ${classes} classes × ${d} features`);
  const scorers = classes === 2 ? 1 : classes;
  if (p.w.length !== scorers * d) throw new Error(`linear SVM: ${p.w.length} weights for ${scorers} scorers × ${d} features`);
  if (p.b.length !== scorers) throw new Error(`linear SVM: ${p.b.length} biases for ${scorers} scorers`);
  if (!p.w.every(Number.isFinite) || !p.b.every(Number.isFinite)) throw new Error('linear SVM: a weight or bias is not finite');
}

/** A target whose parameters the provider (and tests) can read; attackers see only the oracle. */
export type LinearSvmTarget = Target & { linear: LinearSvmParams };

/** The provider's parameters of a linear SVM target (for tests and analysis), or undefined for another family. */
export function linearParamsOf(target: Target): LinearSvmParams | undefined {
  return target.family === 'linear-svm' ? (target as Partial<LinearSvmTarget>).linear : undefined;
}

/**
 * An SVM API answers labels, not probabilities, so predictProba64 is the one-hot of the decision:
 * every disclosure of this target (probs and rounded included) reveals the label and nothing more.
 */
export function linearSvmTarget(id: string, p: LinearSvmParams, inputShape: [number, number, number], testAccuracy = NaN): LinearSvmTarget {
  checkLinearSvmParams(p);
  const d = inputShape.reduce((a, b) => a * b, 1);
  if (d !== p.features) throw new Error(`linear SVM: ${p.features} features, but the input shape [${inputShape.join(', ')}] has ${d}`);
  const { classes } = p;
  const predictProba64 = (x: Float64Array, n: number): Float64Array => {
    if (x.length !== n * d) throw new RangeError(`linear SVM ${id}: ${x.length} values are not ${n} rows of ${d}`);
    const out = new Float64Array(n * classes);
    linearDecisions(p, x, n).forEach((c, r) => (out[r * classes + c] = 1));
    return out;
  };
  return {
    ...float64Target({ id, family: 'linear-svm', model: { family: 'linear-svm' }, inputShape, classes, testAccuracy }, predictProba64),
    linear: p,
  };
}

export const linearSvmSchema = z.strictObject({
  ...baseFields,
  family: z.literal('linear-svm'),
  trainSize: count.default(5_000),
  /** Weight of the summed hinge loss against ½|w|². 0.1 beats 1 on held-out MNIST (parity, ge5) and converges in fewer passes. */
  C: z.number().positive().default(0.1),
  /** Most passes of dual coordinate descent over the training rows (it stops earlier once converged): ~1.5 s on 5,000 rows. */
  epochs: count.default(300),
});
export type LinearSvmSpec = Omit<z.output<typeof linearSvmSchema>, 'task'> & { id: string; task?: TaskName };

export const linearSvmFamily: FamilyModule<LinearSvmSpec> = {
  name: 'linear-svm',
  schema: linearSvmSchema,
  async train(spec, data: Split, { inputShape, classes }) {
    const params = fitLinearSvm(data.x, data.y, data.n, classes, { C: spec.C, epochs: spec.epochs, seed: spec.seed });
    return {
      target: linearSvmTarget(spec.id, params, inputShape),
      files: { 'w.bin': f64Bytes(params.w), 'b.bin': f64Bytes(params.b) },
      params: { classes: params.classes, features: params.features },
    };
  },
  async restore(spec, files, params, { inputShape, classes }) {
    if (params.classes !== classes) throw new Error(`linear SVM entry has ${String(params.classes)} classes, the task ${classes}`);
    return linearSvmTarget(
      spec.id,
      { classes, features: Number(params.features), w: bytesF64(files['w.bin'], 'w.bin'), b: bytesF64(files['b.bin'], 'b.bin') },
      inputShape,
    );
  },
};
