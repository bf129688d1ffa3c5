import * as tf from '@tensorflow/tfjs';
import { SOFT_CROSS_ENTROPY } from '../engine/kernel-names.ts';

/**
 * Cross-entropy between target distributions and softmax(logits / T), times T² (Hinton et al.
 * 2015). Where the backend has SOFT_CROSS_ENTROPY (webgpu), the loss and its gradient come from
 * that one kernel, and the gradient tape multiplies the saved gradient by the upstream one: two
 * dispatches instead of about twenty-five.
 */
export function softCrossEntropy(targets: tf.Tensor2D, logits: tf.Tensor2D, temperature = 1): tf.Scalar {
  if (tf.getKernel(SOFT_CROSS_ENTROPY, tf.getBackend())) {
    const fused = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [z, save] = args as [tf.Tensor, tf.GradSaveFunc];
      const [value, dz] = tf.engine().runKernel(SOFT_CROSS_ENTROPY, { targets, logits: z }, { temperature } as unknown as tf.NamedAttrMap) as unknown as [tf.Scalar, tf.Tensor2D];
      save([dz]);
      return { value, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, saved[0]) };
    });
    return fused(logits) as tf.Scalar;
  }
  return tf.tidy(() => {
    const logp = tf.logSoftmax(temperature === 1 ? logits : tf.div(logits, temperature));
    const perRow = tf.neg(tf.sum(tf.mul(targets, logp), 1));
    return tf.mul(tf.mean(perRow), temperature * temperature) as tf.Scalar;
  });
}

/**
 * Its gradient with respect to the logits, by hand: with p = softmax(z / T) and s the row sums
 * of the targets t (1 for distributions), ∂/∂z of T²·mean_r(−Σ t log p) is T·(p·s − t) / rows.
 */
export function softCrossEntropyGrad(targets: tf.Tensor2D, logits: tf.Tensor2D, temperature = 1): tf.Tensor2D {
  return tf.tidy(() => {
    const p = tf.softmax(temperature === 1 ? logits : tf.div(logits, temperature));
    const s = tf.sum(targets, 1, true);
    return tf.mul(tf.sub(tf.mul(p, s), targets), temperature / logits.shape[0]) as tf.Tensor2D;
  });
}
