import * as tf from '@tensorflow/tfjs';

/** Cross-entropy between target distributions and softmax(logits / T), times T² (Hinton et al. 2015). */
export function softCrossEntropy(targets: tf.Tensor2D, logits: tf.Tensor2D, temperature = 1): tf.Scalar {
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
