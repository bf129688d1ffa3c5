/** Pure metrics over plain arrays; the tfjs edge is bench/score.ts. */

/** Each row's highest-scoring class; ties go to the lowest index (as tf.argMax does). */
export function argmaxRows(scores: ArrayLike<number>, classes: number): Int32Array {
  if (!(Number.isInteger(classes) && classes >= 1)) throw new RangeError(`argmaxRows: classes must be a positive integer, got ${classes}`);
  const n = scores.length / classes;
  if (!Number.isInteger(n)) throw new RangeError(`argmaxRows: ${scores.length} scores do not make rows of ${classes}`);
  const out = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (scores[r * classes + c] > scores[r * classes + best]) best = c;
    out[r] = best;
  }
  return out;
}

/** Fraction of positions where a and b hold the same class; NaN for empty inputs. */
export function agreement(a: Int32Array, b: Int32Array): number {
  if (a.length !== b.length) throw new RangeError(`agreement: ${a.length} vs ${b.length} predictions`);
  if (a.length === 0) return NaN;
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

/** Accuracy over labelled rows (truth ≥ 0); NaN when none are labelled. */
export function accuracy(pred: Int32Array, truth: Int32Array): number {
  if (pred.length !== truth.length) throw new RangeError(`accuracy: ${pred.length} predictions vs ${truth.length} labels`);
  let right = 0;
  let labelled = 0;
  for (let i = 0; i < pred.length; i++) {
    if (truth[i] < 0) continue;
    labelled++;
    if (pred[i] === truth[i]) right++;
  }
  return labelled ? right / labelled : NaN;
}

/** Classification ρ: the 0-1 loss averaged, i.e. 1 − agreement of the predicted classes. */
export function rhoClassification(imitation: Int32Array, target: Int32Array): number {
  return 1 - agreement(imitation, target);
}

/**
 * Regression ρ: mean over rows of |f − g|² / |f|² (f the target's output, g the imitation's).
 * A row where the target outputs exactly 0 has no scale to relate to: it contributes |f − g|².
 */
export function rhoRegression(target: ArrayLike<number>, imitation: ArrayLike<number>, dim: number): number {
  if (target.length !== imitation.length) throw new RangeError(`rhoRegression: ${target.length} vs ${imitation.length} outputs`);
  const n = target.length / dim;
  if (!Number.isInteger(n) || n === 0) throw new RangeError(`rhoRegression: ${target.length} outputs do not make rows of ${dim}`);
  let total = 0;
  for (let r = 0; r < n; r++) {
    let err = 0;
    let norm = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) {
      err += (target[j] - imitation[j]) ** 2;
      norm += target[j] ** 2;
    }
    total += norm > 0 ? err / norm : err;
  }
  return total / n;
}

/** ρ = E L(f_imitation(x̃), f_target(x̃)): one entry point, the loss chosen by the output kind. */
export function imitationPrivacy(
  kind: 'classification' | 'regression',
  target: ArrayLike<number>,
  imitation: ArrayLike<number>,
  dim: number,
): number {
  if (kind === 'classification') {
    if (target.length !== imitation.length) throw new RangeError(`imitationPrivacy: ${target.length} target scores vs ${imitation.length} imitation scores`);
    return rhoClassification(argmaxRows(imitation, dim), argmaxRows(target, dim));
  }
  if (kind === 'regression') return rhoRegression(target, imitation, dim);
  throw new RangeError(`imitationPrivacy: output kind "${kind as string}" is unknown: choose classification or regression`);
}
