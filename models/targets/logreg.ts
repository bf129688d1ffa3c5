import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import type { Split } from '../../datasets/types.ts';
import { affine, binaryLogits, bytesF64, f64Bytes, float64Target, softmaxRows } from '../linear64.ts';
import type { Target } from '../types.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export const logregSchema = z.strictObject({
  ...baseFields,
  family: z.literal('logreg'),
  trainSize: count.default(5_000),
  /** L2 penalty λ on the weights (not the bias), as λ/2·|w|² added to the mean log-loss. */
  l2: z.number().nonnegative().default(1e-4),
  /** Full-batch Adam steps (the loss is convex and the data small: every step sees every row). */
  epochs: count.default(100),
  lr: z.number().positive().default(0.05),
});
export type LogregSpec = Omit<z.output<typeof logregSchema>, 'task'> & { id: string; task?: TaskName };

/**
 * Binary (classes = 2): ONE weight vector, p(1|x) = σ(w·x + b), so W is 1 × d.
 * Multinomial (classes > 2): softmax over k weight vectors, W is k × d.
 */
export interface LogregParams {
  classes: number;
  features: number;
  /** rows × features, row-major; rows = 1 when binary, else classes. */
  W: Float64Array;
  /** rows entries. */
  b: Float64Array;
}

/** A logistic-regression target; `logreg` is its parameters (for tests and reports, never for attacks). */
export type LogregTarget = Target & { logreg: LogregParams };

export const logregRows = (classes: number) => (classes === 2 ? 1 : classes);

export function checkLogregParams(p: LogregParams): void {
  const { classes, features: d } = p;
  if (!(Number.isInteger(classes) && classes >= 2 && Number.isInteger(d) && d > 0)) throw new Error(`logreg: bad shape ${classes} classes × ${d} features`);
  const rows = logregRows(classes);
  if (p.W.length !== rows * d) throw new Error(`logreg: ${p.W.length} weights for ${rows} × ${d}`);
  if (p.b.length !== rows) throw new Error(`logreg: ${p.b.length} biases for ${rows} rows`);
}

/** n × classes probabilities of float64 rows. */
export function logregProba64(p: LogregParams, x: Float64Array | Float32Array, n: number): Float64Array {
  const z = affine(x, n, p.features, p.W, p.b);
  return softmaxRows(p.classes === 2 ? binaryLogits(z) : z, n, p.classes);
}

export function logregTarget(id: string, p: LogregParams, inputShape: [number, number, number]): LogregTarget {
  checkLogregParams(p);
  const predictProba64 = (x: Float64Array, n: number) => logregProba64(p, x, n);
  return {
    ...float64Target({ id, family: 'logreg', model: { family: 'logreg' }, inputShape, classes: p.classes, testAccuracy: NaN }, predictProba64),
    logreg: p,
  };
}

/** Whether t carries logistic-regression parameters (a logreg target, also after getTarget). */
export function logregParamsOf(t: Target): LogregParams | undefined {
  return (t as Partial<LogregTarget>).logreg;
}

/**
 * Mean log-loss plus λ/2·|W|², minimised by full-batch Adam in tfjs (float32; weights start at 0,
 * so the seed changes nothing and training is deterministic). The weights are then kept as float64:
 * from then on the model IS those float64 numbers, whatever precision found them.
 */
export async function fitLogreg(data: Split, classes: number, opts: { l2: number; epochs: number; lr: number }): Promise<LogregParams> {
  if (data.n === 0) throw new RangeError('logreg: no training rows');
  const d = data.x.length / data.n;
  for (let r = 0; r < data.n; r++) {
    if (!(Number.isInteger(data.y[r]) && data.y[r] >= 0 && data.y[r] < classes)) throw new RangeError(`logreg: label ${data.y[r]} at training row ${r} is outside 0..${classes - 1}`);
  }
  const rows = logregRows(classes);
  const binary = classes === 2;
  const x = tf.tensor2d(data.x, [data.n, d]);
  const labels = binary ? tf.tensor2d(Float32Array.from(data.y), [data.n, 1]) : tf.oneHot(tf.tensor1d(Int32Array.from(data.y), 'int32'), classes).toFloat();
  const W = tf.variable(tf.zeros([d, rows]));
  const b = tf.variable(tf.zeros([rows]));
  const optimizer = tf.train.adam(opts.lr);
  try {
    for (let step = 0; step < opts.epochs; step++) {
      tf.tidy(() => {
        optimizer.minimize(() => {
          const logits = tf.add(tf.matMul(x, W), b);
          const loss = binary ? tf.losses.sigmoidCrossEntropy(labels, logits) : tf.losses.softmaxCrossEntropy(labels, logits);
          return tf.add(loss, tf.mul(0.5 * opts.l2, tf.sum(tf.square(W)))) as tf.Scalar;
        }, false, [W, b]);
      });
      if (step % 10 === 9) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // Kernel is d × rows; the float64 layout is rows × d.
    const kernel = await W.data();
    const Wout = new Float64Array(rows * d);
    for (let f = 0; f < d; f++) for (let o = 0; o < rows; o++) Wout[o * d + f] = kernel[f * rows + o];
    const params = { classes, features: d, W: Wout, b: Float64Array.from(await b.data()) };
    if (!Wout.every(Number.isFinite) || !params.b.every(Number.isFinite)) throw new Error('logreg: training diverged (a weight is not finite); lower lr');
    return params;
  } finally {
    optimizer.dispose();
    tf.dispose([x, labels, W, b]);
  }
}

export const logregFamily: FamilyModule<LogregSpec> = {
  name: 'logreg',
  schema: logregSchema,
  async train(spec, data, { inputShape, classes }) {
    const params = await fitLogreg(data, classes, spec);
    return {
      target: logregTarget(spec.id, params, inputShape),
      files: { 'W.bin': f64Bytes(params.W), 'b.bin': f64Bytes(params.b) },
      params: { classes, features: params.features },
    };
  },
  async restore(spec, files, params, { inputShape, classes }) {
    const d = inputShape.reduce((a, c) => a * c, 1);
    if (params.features !== d) throw new Error(`logreg entry has ${String(params.features)} features, the input ${d}`);
    const rows = logregRows(classes);
    return logregTarget(spec.id, { classes, features: d, W: bytesF64(files['W.bin'], 'W.bin', rows * d), b: bytesF64(files['b.bin'], 'b.bin', rows) }, inputShape);
  },
};
