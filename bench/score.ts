import * as tf from '@tensorflow/tfjs';
import { toTensor } from '../datasets/split.ts';
import type { Split } from '../datasets/types.ts';
import type { Imitation, Target } from '../models/types.ts';
import { accuracy, agreement, argmaxRows, rhoClassification } from './metric.ts';

const BATCH = 1000;

/** The predicted class of every row of a split, in batches (no tensor outlives its batch). */
export async function predictClasses(predict: (x: tf.Tensor) => Promise<tf.Tensor2D>, split: Split, shape: [number, number, number]): Promise<Int32Array> {
  const out = new Int32Array(split.n);
  for (let start = 0; start < split.n; start += BATCH) {
    const end = Math.min(split.n, start + BATCH);
    const x = toTensor(split, shape, start, end);
    const scores = await predict(x).finally(() => x.dispose());
    const data = await scores.data();
    scores.dispose();
    out.set(argmaxRows(data, scores.shape[1]), start);
  }
  return out;
}

/**
 * ρ and friends on data the attacker never saw. `fromTarget`, the target's classes on the split,
 * may be given: they are the same for every cell of a target, so a sweep computes them once.
 */
export async function scoreImitation(
  imitation: Imitation,
  target: Target,
  evalSplit: Split,
  inputShape: [number, number, number],
  fromTarget?: Int32Array,
): Promise<{ rho: number; agreement: number; studentAccuracy: number; targetAccuracy: number }> {
  fromTarget ??= await predictClasses((x) => target.predictProba(x), evalSplit, inputShape);
  const fromImitation = await predictClasses((x) => imitation.predict(x), evalSplit, inputShape);
  return {
    rho: rhoClassification(fromImitation, fromTarget),
    agreement: agreement(fromImitation, fromTarget),
    studentAccuracy: accuracy(fromImitation, evalSplit.y),
    targetAccuracy: accuracy(fromTarget, evalSplit.y),
  };
}
