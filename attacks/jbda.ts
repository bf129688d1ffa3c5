import * as tf from '@tensorflow/tfjs';
import { subset, toTensor } from '../datasets/split.ts';
import { sampleIndices, withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { asImitation, fitSoft } from '../models/train.ts';
import { hardLabels, studentArch } from './transfer.ts';
import type { Attack, AttackContext } from './types.ts';

export interface JbdaOptions {
  /** Rows of the attacker's pool in the initial seed set (Papernot et al. used 150 for MNIST). */
  seedSize?: number;
  /** Step size λ of each augmentation. */
  lambda?: number;
  /** Flip the sign of λ every τ rounds (the paper's periodic step size); 0 never flips. */
  tau?: number;
}

/**
 * One augmentation: x + λ · sign(∂F_label(x)/∂x), clipped to the input range [0, 1], where F is the
 * substitute's logit for the class the oracle gave each row. It moves each point towards the
 * substitute's decision boundary, where new oracle labels teach the most.
 */
export function jacobianStep(model: tf.LayersModel, x: tf.Tensor, labels: tf.Tensor2D, lambda: number): tf.Tensor {
  return tf.tidy(() => {
    const grad = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(model.apply(input) as tf.Tensor2D, labels)))(x);
    return tf.clipByValue(tf.add(x, tf.mul(tf.sign(grad), lambda)), 0, 1);
  });
}

/**
 * Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017): a small seed set labelled by
 * the API, then rounds that train the substitute, step every point along the sign of its Jacobian
 * and ask the API to label the new points, doubling the set each round until the budget is spent.
 * Hard labels only, so it runs with every disclosure.
 */
export function makeJbda(opts: JbdaOptions = {}): Attack {
  const lambda = opts.lambda ?? 0.1;
  const tau = opts.tau ?? 3;
  if (!(lambda > 0)) throw new RangeError(`jbda lambda must be positive, got ${lambda}`);
  return {
    name: 'jbda',
    async run(ctx: AttackContext) {
      const budget = ctx.oracle.budget - ctx.oracle.spent;
      const seedSize = Math.min(opts.seedSize ?? 150, budget);
      if (seedSize < 1) throw new RangeError('jbda needs a budget of at least one query');
      if (seedSize > ctx.pool.n) throw new RangeError(`the attacker's pool has ${ctx.pool.n} rows, fewer than the seed set of ${seedSize}`);
      const rounds = Math.ceil(Math.log2(budget / seedSize));
      const model = await withSeed(ctx.seed, () => buildStudent(studentArch(ctx), ctx.inputShape, ctx.classes));
      let x: tf.Tensor = toTensor(subset(ctx.pool, sampleIndices(ctx.pool.n, seedSize, ctx.seed)), ctx.inputShape);
      let y: tf.Tensor2D;
      try {
        y = hardLabelsOf(await ctx.oracle.query(x));
      } catch (err) {
        x.dispose();
        model.dispose();
        throw err;
      }
      try {
        for (let round = 0; round < rounds; round++) {
          await fitSoft(model, x, y, { ...ctx.student, seed: ctx.seed + round });
          const remaining = ctx.oracle.budget - ctx.oracle.spent;
          if (remaining <= 0) break;
          const step = Math.floor(round / Math.max(tau, 1)) % 2 === 1 && tau > 0 ? -lambda : lambda;
          const fresh = stepInSlices(model, x, y, step, Math.min(remaining, x.shape[0]));
          let answers: tf.Tensor2D;
          try {
            answers = hardLabelsOf(await ctx.oracle.query(fresh));
          } catch (err) {
            fresh.dispose();
            throw err;
          }
          const nextX = tf.concat([x, fresh]);
          const nextY = tf.concat([y, answers]) as tf.Tensor2D;
          tf.dispose([x, y, fresh, answers]);
          x = nextX;
          y = nextY;
          ctx.onProgress?.(round + 1, rounds, 'jbda rounds');
        }
        // The last labels arrived after the last fit: one more pass uses every answer bought.
        await fitSoft(model, x, y, { ...ctx.student, seed: ctx.seed + rounds });
      } catch (err) {
        model.dispose();
        throw err;
      } finally {
        tf.dispose([x, y]);
      }
      return asImitation(model);
    },
  };
}

/**
 * jacobianStep on the first `rows` rows, a slice at a time: the gradient of a whole set at once
 * holds every activation of every row, which for tens of thousands of images overruns the wasm
 * heap (4 GB) long before the set itself does.
 */
export function stepInSlices(model: tf.LayersModel, x: tf.Tensor, y: tf.Tensor2D, lambda: number, rows: number, slice = 512): tf.Tensor {
  const parts: tf.Tensor[] = [];
  try {
    for (let start = 0; start < rows; start += slice) {
      const size = Math.min(slice, rows - start);
      parts.push(tf.tidy(() => jacobianStep(model, x.slice(start, size), y.slice(start, size), lambda)));
    }
    return parts.length === 1 ? parts[0] : tf.concat(parts);
  } finally {
    if (parts.length > 1) tf.dispose(parts);
  }
}

function hardLabelsOf(answer: tf.Tensor2D): tf.Tensor2D {
  const labels = hardLabels(answer);
  answer.dispose();
  return labels;
}

export const jbda = makeJbda();
