import * as tf from '@tensorflow/tfjs';
import { createAdam } from './fused-adam.ts';
import { fusedForward, handDerivedStep } from './sequential-step.ts';
import { stackKey, submitFit } from './stacked-fit.ts';
import { softCrossEntropy } from './soft-loss.ts';
import { rng, shuffleInPlace } from './seed.ts';
import type { Imitation } from './types.ts';

export interface FitOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** Distillation temperature T: the loss compares targets with softmax(logits / T), scaled by T². */
  temperature?: number;
  onEpoch?(epoch: number, loss: number): void;
}

export { softCrossEntropy } from './soft-loss.ts';

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface TrainStep {
  /** One Adam step on a batch; returns the batch's mean loss (before the update). */
  step(xb: tf.Tensor, yb: tf.Tensor2D): tf.Scalar;
  /** 'hand-derived' where models/sequential-step.ts applies, else 'autodiff' (tf.variableGrads). */
  readonly gradients: 'hand-derived' | 'autodiff';
  dispose(): void;
}

/**
 * The training step of fitSoft: Adam on the distillation loss. On wasm, Sequential students
 * get their gradients from models/sequential-step.ts (fused kernels, no gradient tape) and
 * Adam is one kernel per variable (models/fused-adam.ts); otherwise tf.variableGrads and
 * tf.train.adam.
 */
export function makeTrainStep(model: tf.LayersModel, lr: number, temperature?: number): TrainStep {
  const optimizer = createAdam(lr);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const fast = handDerivedStep(model);
  return {
    gradients: fast ? 'hand-derived' : 'autodiff',
    step: (xb, yb) =>
      tf.tidy(() => {
        const { value, grads } =
          fast?.grads(xb, yb, temperature) ??
          tf.variableGrads(() => softCrossEntropy(yb, model.apply(xb, { training: true }) as tf.Tensor2D, temperature), vars);
        optimizer.apply(vars, grads);
        return value;
      }),
    dispose: () => optimizer.dispose(),
  };
}

/**
 * Adam on soft targets (one-hot rows for hard labels), by makeTrainStep, or on webgpu by
 * models/stacked-fit.ts (stacked with other cells' students where they match; the same numbers as
 * alone). Shuffles with its own seeded generator, never Math.random, so concurrent cells cannot
 * disturb each other's order. The loss is read once per epoch: a read per batch would stall the
 * backend's pipeline.
 */
export async function fitSoft(
  model: tf.LayersModel,
  x: tf.Tensor,
  targets: tf.Tensor2D,
  opts: FitOptions,
): Promise<{ losses: number[] }> {
  const n = x.shape[0];
  if (targets.shape[0] !== n) throw new Error(`fitSoft: ${n} inputs but ${targets.shape[0]} target rows`);
  if (n === 0) return { losses: [] };
  // On webgpu, Sequential students train on rhobench's kernels, stacked with other cells' alike.
  const key = stackKey({ model, x, targets, opts });
  if (key) return submitFit({ model, x, targets, opts }, key);
  const random = rng(opts.seed, 'shuffle');
  const trainer = makeTrainStep(model, opts.lr, opts.temperature);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const losses: number[] = [];
  try {
    for (let epoch = 0; epoch < opts.epochs; epoch++) {
      const index = tf.tensor1d(shuffleInPlace(order, random), 'int32');
      let total = tf.scalar(0);
      for (let start = 0; start < n; start += opts.batchSize) {
        const size = Math.min(opts.batchSize, n - start);
        const cost = tf.tidy(() => {
          const rows = index.slice(start, size);
          return trainer.step(tf.gather(x, rows), tf.gather(targets, rows) as tf.Tensor2D);
        });
        // Inside tidy: the number `size` becomes a tensor that would otherwise leak.
        const next = tf.tidy(() => tf.add(total, tf.mul(cost, size)) as tf.Scalar);
        tf.dispose([total, cost]);
        total = next;
        await nextTick();
      }
      const loss = (await total.data())[0] / n;
      tf.dispose([total, index]);
      losses.push(loss);
      opts.onEpoch?.(epoch + 1, loss);
    }
  } finally {
    trainer.dispose();
  }
  return { losses };
}

/** Applies fn to x in row batches and concatenates, so large inputs never make one huge intermediate. */
export function predictBatched(fn: (x: tf.Tensor) => tf.Tensor2D, x: tf.Tensor, batchSize = 512): tf.Tensor2D {
  const n = x.shape[0];
  if (n <= batchSize) return tf.tidy(() => fn(x));
  const parts: tf.Tensor2D[] = [];
  for (let start = 0; start < n; start += batchSize) {
    parts.push(tf.tidy(() => fn(x.slice(start, Math.min(batchSize, n - start)))));
  }
  const out = tf.concat(parts);
  tf.dispose(parts);
  return out;
}

/**
 * A model's logits for a batch in one pass: the fused kernels of the hand-derived step where they
 * apply (the same numbers as model.predict, in fewer kernels), else model.predict without its
 * 32-row batches. Settled per backend, so a model outlives a change of backend.
 */
export function logitsOf(model: tf.LayersModel): (x: tf.Tensor) => tf.Tensor2D {
  const byBackend = new Map<string, (x: tf.Tensor) => tf.Tensor2D>();
  return (x) => {
    const backend = tf.getBackend();
    let f = byBackend.get(backend);
    if (!f) byBackend.set(backend, (f = fusedForward(model) ?? ((b) => model.predict(b, { batchSize: b.shape[0] }) as tf.Tensor2D)));
    return f(x);
  };
}

/** A logit model as an Imitation: predict gives softmax probabilities; dispose frees the model. */
export function asImitation(model: tf.LayersModel, batchSize = 512): Imitation {
  const logits = logitsOf(model);
  return {
    predict: async (x) => predictBatched((b) => tf.softmax(logits(b)), x, batchSize),
    dispose: () => model.dispose(),
  };
}
