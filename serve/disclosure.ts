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

const KINDS: readonly string[] = ['label', 'topk', 'probs', 'rounded', 'leaf'];

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
 * - label (and leaf): one-hot of each row's own argmax (some libraries mark the whole batch's winners in
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
      case 'leaf': // the leaf identifiers travel beside the answers (Oracle.query64), never in them
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

/** Round half to even, as tf.round does, so float64 answers round exactly as float32 ones. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * disclose() for n × classes float64 probabilities (row-major), with the same rules and ties;
 * returns a new array. Used by Oracle.query64, whose answers must keep float64 precision.
 */
export function disclose64(probs: Float64Array, classes: number, d: Disclosure): Float64Array {
  validateDisclosure(d, classes);
  if (probs.length % classes !== 0) throw new RangeError(`disclose64: ${probs.length} values are not rows of ${classes} classes`);
  const n = probs.length / classes;
  if (d.kind === 'probs') return probs.slice();
  const out = new Float64Array(probs.length);
  for (let r = 0; r < n; r++) {
    const row = probs.subarray(r * classes, (r + 1) * classes);
    const at = r * classes;
    switch (d.kind) {
      case 'label':
      case 'leaf': {
        let best = 0;
        for (let c = 1; c < classes; c++) if (row[c] > row[best]) best = c;
        out[at + best] = 1;
        break;
      }
      case 'topk': {
        // Stable sort by value, descending: equal values keep class order, as tf.topk does.
        const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b);
        for (let i = 0; i < d.k; i++) out[at + order[i]] = row[order[i]];
        break;
      }
      case 'rounded': {
        const scale = 10 ** d.decimals;
        for (let c = 0; c < classes; c++) out[at + c] = roundHalfEven(row[c] * scale) / scale;
        break;
      }
    }
  }
  return out;
}
