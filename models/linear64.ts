import * as tf from '@tensorflow/tfjs';
import type { Target } from './types.ts';

/**
 * Float64 building blocks for the targets whose parameters exact attacks recover (logistic
 * regression, MLP) and for those attacks' imitations. Plain JS numbers are float64, so answers
 * computed here carry the precision equation solving needs; tfjs would round them to float32.
 */

/** The raw bytes of a, for a cache file; a restored copy (bytesF64) is bit-identical. */
export function f64Bytes(a: Float64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Copies, so the result is aligned whatever the source buffer's offset; checks the length when given. */
export function bytesF64(b: Uint8Array | undefined, what: string, length?: number): Float64Array {
  if (b === undefined) throw new Error(`cache entry lacks ${what}`);
  if (b.byteLength % 8) throw new Error(`cache file ${what} has ${b.byteLength} bytes, not a whole number of float64s`);
  const a = new Float64Array(b.slice().buffer);
  if (length !== undefined && a.length !== length) throw new Error(`cache file ${what} holds ${a.length} values, expected ${length}`);
  if (!a.every(Number.isFinite)) throw new Error(`cache file ${what} holds a value that is not finite`);
  return a;
}

/**
 * x (n × d) times Wᵀ plus b: W is m × d row-major (one row per output), b has m entries.
 * Returns n × m. Row-major W keeps the inner loop on contiguous memory.
 */
export function affine(x: Float64Array | Float32Array, n: number, d: number, W: Float64Array, b: Float64Array): Float64Array {
  const m = b.length;
  if (W.length !== m * d) throw new RangeError(`affine: ${W.length} weights are not ${m} × ${d}`);
  if (x.length !== n * d) throw new RangeError(`affine: ${x.length} inputs are not ${n} rows of ${d}`);
  const out = new Float64Array(n * m);
  for (let r = 0; r < n; r++) {
    const row = r * d;
    for (let o = 0; o < m; o++) {
      const w = o * d;
      let s = b[o];
      for (let f = 0; f < d; f++) s += W[w + f] * x[row + f];
      out[r * m + o] = s;
    }
  }
  return out;
}

/**
 * Row-wise softmax of n × k logits, in a new array. Shifted by each row's maximum, then divided
 * by the row's sum, so small probabilities keep full relative precision (σ(−40) comes out as
 * 4.2e-18, not as 1 − σ(40) = 0): an attacker can then take log-ratios of any two classes.
 */
export function softmaxRows(logits: Float64Array, n: number, k: number): Float64Array {
  const out = new Float64Array(n * k);
  for (let r = 0; r < n; r++) {
    const at = r * k;
    let max = -Infinity;
    for (let c = 0; c < k; c++) max = Math.max(max, logits[at + c]);
    let sum = 0;
    for (let c = 0; c < k; c++) sum += out[at + c] = Math.exp(logits[at + c] - max);
    for (let c = 0; c < k; c++) out[at + c] /= sum;
  }
  return out;
}

/** Binary logits z (one per row) as two-class logits [0, z]: softmax of them is [σ(−z), σ(z)]. */
export function binaryLogits(z: Float64Array): Float64Array {
  const out = new Float64Array(z.length * 2);
  for (let r = 0; r < z.length; r++) out[2 * r + 1] = z[r];
  return out;
}

/**
 * A tensor-in, tensor-out predictProba built on a float64 one: the float64 answer rounded to
 * float32, so the two never disagree beyond that rounding.
 */
export function float32Proba(proba64: (x: Float64Array, n: number) => Float64Array, classes: number): (x: tf.Tensor) => Promise<tf.Tensor2D> {
  return async (x) => {
    const n = x.shape[0];
    const p = proba64(Float64Array.from(await x.data()), n);
    return tf.tensor2d(Float32Array.from(p), [n, classes]);
  };
}

/**
 * The Target fields every float64 family shares: its float32 answers are the float64 ones rounded
 * (float32Proba), and it holds no tensors, so disposing is a no-op.
 */
export function float64Target(
  fields: Pick<Target, 'id' | 'family' | 'model' | 'inputShape' | 'classes' | 'testAccuracy'>,
  predictProba64: (x: Float64Array, n: number) => Float64Array,
): Target & { predictProba64: (x: Float64Array, n: number) => Float64Array } {
  return { ...fields, predictProba64, predictProba: float32Proba(predictProba64, fields.classes), dispose: () => {} };
}
