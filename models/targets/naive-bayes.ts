import * as tf from '@tensorflow/tfjs';
import type { Split } from '../../datasets/types.ts';
import { predictBatched } from '../train.ts';
import type { Target } from '../types.ts';

export interface NaiveBayesParams {
  classes: number;
  features: number;
  /** [classes × features] */
  means: Float32Array;
  /** [classes × features], smoothing included. */
  variances: Float32Array;
  logPriors: Float32Array;
}

/**
 * Gaussian naive Bayes. Variance smoothing as in scikit-learn: ε = varSmoothing × the largest
 * feature variance is added to every class variance, so constant pixels (MNIST's borders) do
 * not divide by zero. A class absent from the data gets prior 0 (log −∞ is replaced by a large negative).
 */
export function fitNaiveBayes(data: Split, classes: number, varSmoothing: number): NaiveBayesParams {
  const d = data.x.length / data.n;
  const count = new Float64Array(classes);
  const sum = new Float64Array(classes * d);
  const sumSq = new Float64Array(classes * d);
  const all = new Float64Array(d);
  const allSq = new Float64Array(d);
  for (let r = 0; r < data.n; r++) {
    const c = data.y[r];
    if (c < 0 || c >= classes) throw new RangeError(`naive Bayes: label ${c} at row ${r} outside 0..${classes - 1}`);
    count[c]++;
    for (let f = 0; f < d; f++) {
      const v = data.x[r * d + f];
      sum[c * d + f] += v;
      sumSq[c * d + f] += v * v;
      all[f] += v;
      allSq[f] += v * v;
    }
  }
  let maxVar = 0;
  for (let f = 0; f < d; f++) maxVar = Math.max(maxVar, allSq[f] / data.n - (all[f] / data.n) ** 2);
  const eps = varSmoothing * maxVar || 1e-9;
  const means = new Float32Array(classes * d);
  const variances = new Float32Array(classes * d);
  const logPriors = new Float32Array(classes);
  for (let c = 0; c < classes; c++) {
    logPriors[c] = count[c] ? Math.log(count[c] / data.n) : -1e30;
    for (let f = 0; f < d; f++) {
      const m = count[c] ? sum[c * d + f] / count[c] : 0;
      means[c * d + f] = m;
      variances[c * d + f] = Math.max(0, count[c] ? sumSq[c * d + f] / count[c] - m * m : 0) + eps;
    }
  }
  return { classes, features: d, means, variances, logPriors };
}

/**
 * log p(x, c) = log prior − ½ Σ log 2πσ² − ½ Σ (x − μ)²/σ², expanded so one batch costs two
 * matmuls: Σ x²/σ² − 2 Σ x μ/σ² + Σ μ²/σ². Softmax over classes normalises in log space.
 */
export function naiveBayesTarget(id: string, p: NaiveBayesParams, inputShape: [number, number, number], testAccuracy = NaN): Target {
  const { classes, features: d } = p;
  const invVar = new Float32Array(classes * d);
  const meanOverVar = new Float32Array(classes * d);
  const bias = new Float32Array(classes);
  for (let c = 0; c < classes; c++) {
    let b = p.logPriors[c];
    for (let f = 0; f < d; f++) {
      const i = c * d + f;
      invVar[i] = 1 / p.variances[i];
      meanOverVar[i] = p.means[i] * invVar[i];
      b -= 0.5 * (Math.log(2 * Math.PI * p.variances[i]) + p.means[i] * p.means[i] * invVar[i]);
    }
    bias[c] = b;
  }
  const wSq = tf.tensor2d(invVar, [classes, d]).transpose() as tf.Tensor2D;
  const wLin = tf.tensor2d(meanOverVar, [classes, d]).transpose() as tf.Tensor2D;
  const b = tf.tensor1d(bias);
  const logJoint = (x: tf.Tensor) => {
    const flat = x.reshape([x.shape[0], d]) as tf.Tensor2D;
    return tf.add(tf.add(tf.mul(tf.matMul(tf.square(flat), wSq), -0.5), tf.matMul(flat, wLin)), b) as tf.Tensor2D;
  };
  return {
    id,
    family: 'naive-bayes',
    inputShape,
    classes,
    testAccuracy,
    predictProba: (x) => predictBatched((batch) => tf.softmax(logJoint(batch)), x),
    dispose: () => tf.dispose([wSq, wLin, b]),
  };
}
