import * as tf from '@tensorflow/tfjs';
import { ADAM_STEP, type AdamStepAttrs } from '../engine/kernel-names.ts';

/** Adam over a model's variables: `apply` takes the gradients of one step, keyed by variable name. */
export interface Adam {
  apply(vars: tf.Variable[], grads: tf.NamedTensorMap): void;
  dispose(): void;
}

/**
 * tf.train.adam's update (Kingma & Ba 2015, with tfjs's defaults and its float32 order of
 * operations) as one kernel per variable where the backend has ADAM_STEP, instead of about 15
 * small ones; elsewhere tf.train.adam itself. The moments are private tensors, updated in place.
 */
export function createAdam(learningRate: number, beta1 = 0.9, beta2 = 0.999): Adam {
  if (!tf.getKernel(ADAM_STEP, tf.getBackend())) {
    const optimizer = tf.train.adam(learningRate, beta1, beta2);
    return { apply: (_vars, grads) => optimizer.applyGradients(grads as Parameters<typeof optimizer.applyGradients>[0]), dispose: () => optimizer.dispose() };
  }
  const f = Math.fround;
  const epsilon = tf.backend().epsilon();
  const moments = new Map<string, { m: tf.Tensor; v: tf.Tensor }>();
  // β^t as tfjs keeps it: a float32 variable multiplied by β once per step.
  let acc1 = f(beta1);
  let acc2 = f(beta2);
  return {
    apply(vars, grads) {
      const attrs: AdamStepAttrs = { beta1, beta2, c1: f(1 - acc1), c2: f(1 - acc2), epsilon, learningRate };
      for (const w of vars) {
        const g = grads[w.name];
        if (!g) continue;
        let state = moments.get(w.name);
        if (!state) {
          state = { m: tf.keep(tf.zerosLike(w)), v: tf.keep(tf.zerosLike(w)) };
          moments.set(w.name, state);
        }
        const next = tf.engine().runKernel(ADAM_STEP, { w, g, m: state.m, v: state.v }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
        w.assign(next);
        next.dispose();
      }
      acc1 = f(acc1 * f(beta1));
      acc2 = f(acc2 * f(beta2));
    },
    dispose() {
      for (const { m, v } of moments.values()) tf.dispose([m, v]);
      moments.clear();
    },
  };
}
