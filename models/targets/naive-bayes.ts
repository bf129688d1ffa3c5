import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { Split } from '../../datasets/types.ts';
import { predictBatched } from '../train.ts';
import type { Target } from '../types.ts';
import { bytesF32, f32Bytes } from './cache.ts';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export interface NaiveBayesParams {
  classes: number;
  features: number;
  /** [classes × features] */
  means: Float32Array;
  /** [classes × features], smoothing included, so every entry is > 0. */
  variances: Float32Array;
  /** log(count_c / n); a class absent from the data gets a large negative number instead of −∞. */
  logPriors: Float32Array;
}

/** Stands in for log 0: finite, so no −∞ − (−∞) = NaN can arise, and exp() of it is exactly 0. */
const LOG_ZERO = -1e30;

/**
 * Gaussian naive Bayes as scikit-learn fits it: per-class means and (population) variances, and
 * variance smoothing ε = varSmoothing × the largest per-feature variance of the whole data, added
 * to every class variance, so MNIST's constant border pixels never divide by zero.
 */
export function fitNaiveBayes(data: Split, classes: number, varSmoothing: number): NaiveBayesParams {
  if (data.n === 0) throw new RangeError('naive Bayes: no training rows');
  if (!(varSmoothing >= 0)) throw new RangeError(`naive Bayes: varSmoothing must be ≥ 0, got ${varSmoothing}`);
  const d = data.x.length / data.n;
  const count = new Float64Array(classes);
  const sum = new Float64Array(classes * d);
  const sumSq = new Float64Array(classes * d);
  for (let r = 0; r < data.n; r++) {
    const c = data.y[r];
    if (!(c >= 0 && c < classes)) throw new RangeError(`naive Bayes: label ${c} at training row ${r} is outside 0..${classes - 1}`);
    count[c]++;
    const row = r * d;
    const at = c * d;
    for (let f = 0; f < d; f++) {
      const v = data.x[row + f];
      sum[at + f] += v;
      sumSq[at + f] += v * v;
    }
  }
  // The whole data's per-feature variance, from the class sums (float64: no cancellation worth the name on [0, 1] data).
  let maxVar = 0;
  for (let f = 0; f < d; f++) {
    let s = 0;
    let sq = 0;
    for (let c = 0; c < classes; c++) {
      s += sum[c * d + f];
      sq += sumSq[c * d + f];
    }
    maxVar = Math.max(maxVar, sq / data.n - (s / data.n) ** 2);
  }
  // All-constant data has no variance to scale: fall back to scikit-learn's default absolute size.
  const eps = varSmoothing * maxVar || 1e-9;
  const means = new Float32Array(classes * d);
  const variances = new Float32Array(classes * d);
  const logPriors = new Float32Array(classes);
  for (let c = 0; c < classes; c++) {
    logPriors[c] = count[c] ? Math.log(count[c] / data.n) : LOG_ZERO;
    for (let f = 0; f < d; f++) {
      const i = c * d + f;
      const m = count[c] ? sum[i] / count[c] : 0;
      means[i] = m;
      variances[i] = Math.max(0, count[c] ? sumSq[i] / count[c] - m * m : 0) + eps;
    }
  }
  return { classes, features: d, means, variances, logPriors };
}

/** Checks what a cache entry (or a caller) hands over before any tensor is made of it. */
export function checkNaiveBayesParams(p: NaiveBayesParams): void {
  const { classes, features: d } = p;
  if (!(Number.isInteger(classes) && classes > 0 && Number.isInteger(d) && d > 0)) throw new Error(`naive Bayes: bad shape ${classes} classes × ${d} features`);
  if (p.means.length !== classes * d) throw new Error(`naive Bayes: ${p.means.length} means for ${classes} × ${d}`);
  if (p.variances.length !== classes * d) throw new Error(`naive Bayes: ${p.variances.length} variances for ${classes} × ${d}`);
  if (p.logPriors.length !== classes) throw new Error(`naive Bayes: ${p.logPriors.length} priors for ${classes} classes`);
  if (!p.variances.every((v) => v > 0 && Number.isFinite(v))) throw new Error('naive Bayes: a variance is not a positive finite number');
}

/**
 * log p(x, c) = log prior_c − ½ Σ_f log 2πσ²_cf − ½ Σ_f (x_f − μ_cf)²/σ²_cf. The squared distance is
 * taken per class by broadcasting rather than expanded into x² − 2xμ + μ² matmuls: with a small
 * varSmoothing, 1/σ² reaches 1e9 on border pixels and the expanded form cancels to noise in float32.
 * Normalised after shifting by the row's maximum, so a row far from every class still sums to 1.
 */
export function naiveBayesTarget(id: string, p: NaiveBayesParams, inputShape: [number, number, number], testAccuracy = NaN): Target {
  checkNaiveBayesParams(p);
  const { classes, features: d } = p;
  const bias = new Float32Array(classes);
  const invVar = new Float32Array(classes * d);
  for (let c = 0; c < classes; c++) {
    let b = p.logPriors[c];
    for (let f = 0; f < d; f++) {
      const i = c * d + f;
      invVar[i] = 1 / p.variances[i];
      b -= 0.5 * Math.log(2 * Math.PI * p.variances[i]);
    }
    bias[c] = b;
  }
  const mu = tf.tensor3d(p.means, [1, classes, d]);
  const iv = tf.tensor3d(invVar, [1, classes, d]);
  const b = tf.tensor1d(bias);
  const logJoint = (x: tf.Tensor) => {
    const flat = x.reshape([x.shape[0], 1, d]);
    const dist = tf.sum(tf.mul(tf.square(tf.sub(flat, mu)), iv), 2);
    return tf.sub(b, tf.mul(dist, 0.5)) as tf.Tensor2D;
  };
  return {
    id,
    family: 'naive-bayes',
    inputShape,
    classes,
    testAccuracy,
    predictProba: async (x) =>
      predictBatched((batch) => {
        // Shift by the row's max (exp ≤ 1, at least one term is 1), then divide: exp(l − logSumExp)
        // would carry float32's error in the log into every entry, and rows would miss 1 by 1e-5.
        const l = logJoint(batch);
        const e = tf.exp(tf.sub(l, tf.max(l, 1, true)));
        return tf.div(e, tf.sum(e, 1, true)) as tf.Tensor2D;
      }, x, 256),
    dispose: () => tf.dispose([mu, iv, b]),
  };
}

export const naiveBayesSchema = z.strictObject({
  ...baseFields,
  family: z.literal('naive-bayes'),
  trainSize: count.default(10_000),
  varSmoothing: z.number().positive().default(0.1),
});
export type NaiveBayesSpec = Omit<z.output<typeof naiveBayesSchema>, 'task'> & { id: string; task?: TaskName };

export const naiveBayesFamily: FamilyModule<NaiveBayesSpec> = {
  name: 'naive-bayes',
  schema: naiveBayesSchema,
  async train(spec, data, { inputShape, classes }) {
    const params = fitNaiveBayes(data, classes, spec.varSmoothing);
    const { means, variances, logPriors, ...rest } = params;
    return {
      target: naiveBayesTarget(spec.id, params, inputShape),
      files: { 'means.bin': f32Bytes(means), 'variances.bin': f32Bytes(variances), 'priors.bin': f32Bytes(logPriors) },
      params: rest,
    };
  },
  async restore(spec, files, params, { inputShape }) {
    return naiveBayesTarget(
      spec.id,
      {
        ...(params as Pick<NaiveBayesParams, 'classes' | 'features'>),
        means: bytesF32(files['means.bin'], 'means.bin'),
        variances: bytesF32(files['variances.bin'], 'variances.bin'),
        logPriors: bytesF32(files['priors.bin'], 'priors.bin'),
      },
      inputShape,
    );
  },
};
