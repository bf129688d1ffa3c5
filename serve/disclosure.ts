import * as tf from '@tensorflow/tfjs';
import type { Disclosure } from './types.ts';

export function describeDisclosure(d: Disclosure): string {
  switch (d.kind) {
    case 'topk':
      return `top${d.k}`;
    case 'rounded':
      return `rounded${d.decimals}`;
    default:
      return d.kind;
  }
}

/** Whether answers carry a whole probability vector (possibly rounded). */
export function givesProbabilities(d: Disclosure): boolean {
  return d.kind === 'probs' || d.kind === 'rounded';
}

export function validateDisclosure(d: Disclosure, classes: number): void {
  if (d.kind === 'topk' && !(Number.isInteger(d.k) && d.k >= 1 && d.k <= classes)) {
    throw new RangeError(`disclosure top${d.k}: k must be an integer from 1 to ${classes}`);
  }
  if (d.kind === 'rounded' && !(Number.isInteger(d.decimals) && d.decimals >= 0 && d.decimals <= 10)) {
    throw new RangeError(`disclosure rounded${d.decimals}: decimals must be an integer from 0 to 10`);
  }
}

/**
 * Shapes probabilities as an API would. `label` marks each row's own argmax (not the batch's
 * winners); `topk` keeps each row's k largest values and zeros the rest, unnormalised, as APIs
 * return them. Returns a new tensor.
 */
export function disclose(probs: tf.Tensor2D, d: Disclosure): tf.Tensor2D {
  const classes = probs.shape[1];
  validateDisclosure(d, classes);
  return tf.tidy(() => {
    switch (d.kind) {
      case 'label':
        return tf.oneHot(tf.argMax(probs, 1), classes).toFloat() as tf.Tensor2D;
      case 'topk': {
        const { values, indices } = tf.topk(probs, d.k);
        const spread = tf.mul(tf.oneHot(indices, classes), tf.expandDims(values, 2));
        return tf.sum(spread, 1) as tf.Tensor2D;
      }
      case 'probs':
        return probs.clone();
      case 'rounded': {
        const scale = 10 ** d.decimals;
        return tf.div(tf.round(tf.mul(probs, scale)), scale) as tf.Tensor2D;
      }
    }
  });
}
