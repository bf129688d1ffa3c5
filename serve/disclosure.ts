import * as tf from '@tensorflow/tfjs';
import type { Disclosure } from './types.ts';

/** Short names used in cell ids and messages: 'label', 'top3', 'probs', 'rounded2'. */
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

const KINDS: readonly string[] = ['label', 'topk', 'probs', 'rounded'];

/** Throws a RangeError naming the field and value when d cannot shape answers over `classes` classes. */
export function validateDisclosure(d: Disclosure, classes: number): void {
  if (!KINDS.includes(d?.kind)) {
    throw new RangeError(`disclosure kind ${JSON.stringify((d as { kind?: unknown })?.kind)} is unknown: choose one of ${KINDS.join(', ')}`);
  }
  if (d.kind === 'topk' && !(Number.isInteger(d.k) && d.k >= 1 && d.k <= classes)) {
    throw new RangeError(`disclosure top${d.k}: k must be an integer from 1 to ${classes} (the number of classes)`);
  }
  if (d.kind === 'rounded' && !(Number.isInteger(d.decimals) && d.decimals >= 0 && d.decimals <= 10)) {
    throw new RangeError(`disclosure rounded${d.decimals}: decimals must be an integer from 0 to 10`);
  }
}

/**
 * Shapes a probability matrix as an API would. Returns a new tensor; `probs` is left alone.
 * - label: one-hot of each row's own argmax (some libraries mark the whole batch's winners in
 *   every row, which would leak other rows' answers); ties go to the lowest class index.
 * - topk: each row's k largest values kept, the rest 0, not renormalised (APIs return them so).
 *   Ties are broken by class index, so a row always keeps exactly k entries.
 * - probs: an unchanged copy.
 * - rounded: rounded to `decimals` places, halves to even (tf.round), not renormalised.
 */
export function disclose(probs: tf.Tensor2D, d: Disclosure): tf.Tensor2D {
  if (probs.rank !== 2) throw new RangeError(`disclose: probabilities must be [rows, classes], got shape [${probs.shape.join(', ')}]`);
  const classes = probs.shape[1];
  validateDisclosure(d, classes);
  return tf.tidy(() => {
    switch (d.kind) {
      case 'label':
        return tf.oneHot(tf.argMax(probs, 1), classes).toFloat() as tf.Tensor2D;
      case 'topk': {
        const { values, indices } = tf.topk(probs, d.k);
        // [n, k, classes] one-hots weighted by their values, summed over k: each kept value back in its column.
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
