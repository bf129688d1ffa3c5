import * as tf from '@tensorflow/tfjs';
import { subset, toTensor } from '../datasets/split.ts';
import { sampleIndices } from '../models/seed.ts';
import type { StudentArch } from '../models/types.ts';
import type { AttackContext } from './types.ts';

/**
 * Knockoff's "build transfer set" stage: a seeded random sample of the pool, as large as the
 * remaining budget, sent to the API in batches. Returns the queries and the answers as given.
 */
export async function buildTransferSet(
  ctx: AttackContext,
  opts: { batchSize?: number } = {},
): Promise<{ x: tf.Tensor4D; y: tf.Tensor2D }> {
  const batchSize = opts.batchSize ?? 256;
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new RangeError(`transfer set: batchSize must be a positive integer, got ${batchSize}`);
  // What is left, not the whole budget: an oracle shared with an earlier stage is never asked past it.
  const count = ctx.oracle.budget - ctx.oracle.spent;
  if (count <= 0) throw new RangeError(`transfer set: the oracle's budget of ${ctx.oracle.budget} queries is spent (${ctx.oracle.spent}); nothing to train on`);
  if (count > ctx.pool.n) throw new RangeError(`the attacker's pool has ${ctx.pool.n} rows, fewer than the budget of ${count} queries`);
  const x = toTensor(subset(ctx.pool, sampleIndices(ctx.pool.n, count, ctx.seed)), ctx.inputShape);
  const answers: tf.Tensor2D[] = [];
  try {
    for (let start = 0; start < count; start += batchSize) {
      const batch = x.slice(start, Math.min(batchSize, count - start));
      try {
        answers.push(await ctx.oracle.query(batch));
      } finally {
        batch.dispose();
      }
      ctx.onProgress?.(Math.min(count, start + batchSize), count, 'queries');
    }
    const y = answers.length === 1 ? answers[0] : tf.concat(answers);
    if (answers.length > 1) tf.dispose(answers);
    return { x, y };
  } catch (err) {
    tf.dispose([x, ...answers]);
    throw err;
  }
}

/** The target's own architecture when the attacker knows it and it has one; else the configured student. */
export function studentArch(ctx: AttackContext): StudentArch {
  return ctx.side.architecture === 'known' && ctx.targetArch ? ctx.targetArch : ctx.student.arch;
}

/** Rows scaled to sum to 1 (top-k and rounded answers do not); an all-zero row becomes uniform. */
export function normalizeRows(y: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const eps = 1e-12;
    const padded = tf.add(y, eps);
    return tf.div(padded, tf.sum(padded, 1, true)) as tf.Tensor2D;
  });
}

/** Hard labels: one-hot of each row's argmax. */
export function hardLabels(y: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.oneHot(tf.argMax(y, 1), y.shape[1]).toFloat() as tf.Tensor2D);
}
