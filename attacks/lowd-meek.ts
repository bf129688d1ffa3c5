import * as tf from '@tensorflow/tfjs';
import { argmaxRows } from '../bench/metric.ts';
import { rng, sampleIndices } from '../models/seed.ts';
import type { Imitation } from '../models/types.ts';
import { NotApplicable, type Attack, type AttackContext } from './types.ts';

/**
 * Lowd & Meek, "Adversarial Learning" (KDD 2005), as Tramèr et al. (USENIX Security 2016, §6)
 * use it against label-only APIs: a binary linear classifier sign(w·x + b) is recovered up to a
 * positive scale from labels alone, by line searches to its decision boundary.
 *
 * 1. One row of each class (x⁺, x⁻), from the pool, or constructed far apart if the pool has one class.
 * 2. Bisection on the segment x⁻ + λv, v = x⁺ − x⁻, to a boundary point x₀ (to float64 precision).
 *    Along v the score grows by w·v per unit of λ; w·v is the unit of everything recovered.
 * 3. From p = x₀ + τv, whose score is τ·w·v, the point p + t·e_i has score (w·v)(τ + t·a_i) with
 *    a_i = w_i / (w·v). Its label is negative exactly when a_i lies beyond c = −τ/t (away from 0),
 *    so each query compares a_i with any threshold c we like. Two queries (c = ±z) give a_i's
 *    sign or |a_i| ≤ z (a zero weight: MNIST's blank border pixels); bisection on log|a_i| then
 *    narrows it to a relative precision ε. Each round asks one question of every feature still
 *    open, in one batch.
 *
 * The attacker may send any finite float (Lowd–Meek needs points far outside [0, 1]); queries go
 * through query64, so the boundary is located in float64. The imitation is sign(ŵ·x + b̂) with
 * ŵ = a, b̂ = −ŵ·x₀, evaluated in float64.
 */
export interface LowdMeekOptions {
  /** Relative precision of each recovered weight. */
  epsilon?: number;
  /** Weights are searched within A·2^±range, A a typical weight; below A·2^−range they count as zero. */
  range?: number;
  /** Pool rows asked at most while looking for one row of each class. */
  maxSeeds?: number;
  /** When the budget cannot measure every weight, each weight taken on gets at least this many queries. */
  minQueries?: number;
}

/** A recovered binary linear classifier: class `positive` where w·x + b > 0, else the other. */
export interface RecoveredLinear {
  w: Float64Array;
  b: number;
  positive: number;
  /** Features whose weight was measured (the rest are 0: the budget ran out first). */
  measured: number;
  /** Queries spent by this extraction. */
  queries: number;
}

/** An extraction that never saw both classes: the one class it saw (0 if it saw none). */
export interface ConstantAnswer {
  constant: number;
  queries: number;
}

const LINEAR_FAMILIES = new Set(['linear-svm', 'logreg']);

export function checkLinearBinary(ctx: AttackContext, attack: string): void {
  const known = ctx.known;
  if (!known) {
    throw new NotApplicable(`${attack} needs the target's model class (side information architecture: known): it recovers a linear decision boundary and must know there is one`);
  }
  if (!LINEAR_FAMILIES.has(known.family)) {
    throw new NotApplicable(`${attack} recovers linear classifiers (linear-svm, binary logreg); the target is a ${known.family}`);
  }
  if (ctx.classes !== 2) {
    throw new NotApplicable(`${attack} recovers one hyperplane, so it needs a binary task; the target has ${ctx.classes} classes`);
  }
}

/** Labels through query64 (argmax of whatever the disclosure gives), never past the budget. */
class Labeller {
  private readonly started: number;

  constructor(private readonly ctx: AttackContext) {
    this.started = ctx.oracle.spent;
  }

  get left(): number {
    return this.ctx.oracle.budget - this.ctx.oracle.spent;
  }

  get spent(): number {
    return this.ctx.oracle.spent - this.started;
  }

  async labels(x: Float64Array, n: number): Promise<Int32Array> {
    const { y } = await this.ctx.oracle.query64(x, n);
    return argmaxRows(y, this.ctx.oracle.classes);
  }
}

/**
 * One row of each class: pool rows first (seeded order, in growing batches); failing that, pairs
 * of points c ± R·u far out along random directions, one of which the boundary of any linear
 * classifier with w·u ≠ 0 separates. When the budget ends first: the class seen, if any.
 */
async function findPair(ctx: AttackContext, ask: Labeller, maxSeeds: number, d: number): Promise<{ plus: Float64Array; minus: Float64Array; positive: number } | { seen?: number }> {
  const pool = ctx.pool;
  const order = sampleIndices(pool.n, Math.min(pool.n, maxSeeds), ctx.seed);
  const byClass = new Map<number, Float64Array>();
  const finish = () => {
    const [[aClass, a], [, b]] = [...byClass.entries()].sort(([x], [y]) => y - x);
    return { plus: a, minus: b, positive: aClass };
  };
  let at = 0;
  let batch = 2;
  while (at < order.length && ask.left > 0) {
    const n = Math.min(batch, order.length - at, ask.left);
    const x = new Float64Array(n * d);
    for (let r = 0; r < n; r++) x.set(pool.x.subarray(order[at + r] * d, (order[at + r] + 1) * d), r * d);
    const labels = await ask.labels(x, n);
    labels.forEach((c, r) => byClass.has(c) || byClass.set(c, x.slice(r * d, (r + 1) * d)));
    if (byClass.size >= 2) return finish();
    at += n;
    batch *= 2;
  }
  // Constructed pairs around the pool's mean, so far out (±10⁴ per feature) that w·u outweighs any bias.
  const center = new Float64Array(d);
  for (let r = 0; r < pool.n; r++) for (let f = 0; f < d; f++) center[f] += pool.x[r * d + f] / pool.n;
  const random = rng(ctx.seed, 'lowd-meek');
  for (let attempt = 0; attempt < 8 && ask.left > 0; attempt++) {
    const n = Math.min(2, ask.left);
    const x = new Float64Array(2 * d);
    for (let f = 0; f < d; f++) {
      // A random ±1 pattern: no feature is left out of the direction.
      const u = (random() < 0.5 ? 1 : -1) * 1e4;
      x[f] = center[f] + u;
      x[d + f] = center[f] - u;
    }
    const labels = await ask.labels(x.subarray(0, n * d), n);
    labels.forEach((c, r) => byClass.has(c) || byClass.set(c, x.slice(r * d, (r + 1) * d)));
    if (byClass.size >= 2) return finish();
  }
  return { seen: byClass.keys().next().value };
}

const enum Stage {
  /** Not asked yet: next question is a > z. */
  Untested,
  /** Not above z: next question is a < −z. */
  NotAbove,
  /** Sign known: bisecting log2(|a|/A) within [lo, hi]. */
  Bisect,
  Done,
}

/**
 * Runs the extraction and returns the recovered classifier (or, when the budget could not even
 * find both classes, the one class seen). Spends at most the oracle's remaining budget, and
 * degrades gracefully: an unfinished weight is its bracket's midpoint, an untested one is 0.
 */
export async function extractLinear(ctx: AttackContext, opts: LowdMeekOptions = {}): Promise<RecoveredLinear | ConstantAnswer> {
  const epsilon = opts.epsilon ?? 1e-6;
  const range = opts.range ?? 30;
  const maxSeeds = opts.maxSeeds ?? 64;
  const minQueries = opts.minQueries ?? 8;
  if (!(epsilon > 0 && epsilon < 1)) throw new RangeError(`lowd-meek: epsilon must be in (0, 1), got ${epsilon}`);
  if (!(range > 0 && range <= 500)) throw new RangeError(`lowd-meek: range must be in (0, 500] (log2 of the search span either side of A), got ${range}`);
  if (!(Number.isInteger(maxSeeds) && maxSeeds >= 2)) throw new RangeError(`lowd-meek: maxSeeds must be an integer ≥ 2, got ${maxSeeds}`);
  if (!(Number.isInteger(minQueries) && minQueries >= 1)) throw new RangeError(`lowd-meek: minQueries must be a positive integer, got ${minQueries}`);
  const d = ctx.inputShape.reduce((a, b) => a * b, 1);
  const ask = new Labeller(ctx);

  const pair = await findPair(ctx, ask, maxSeeds, d);
  if (!('plus' in pair)) return { constant: pair.seen ?? 0, queries: ask.spent };
  const { plus, minus, positive } = pair;
  const v = new Float64Array(d);
  for (let f = 0; f < d; f++) v[f] = plus[f] - minus[f];

  // Boundary on the segment: at most half of what is left, so some is kept for the weights.
  let lo = 0;
  let hi = 1;
  const point = new Float64Array(d);
  const along = (lambda: number, out: Float64Array) => {
    for (let f = 0; f < d; f++) out[f] = minus[f] + lambda * v[f];
    return out;
  };
  for (let steps = Math.min(64, Math.floor(ask.left / 2)); steps > 0; steps--) {
    const mid = (lo + hi) / 2;
    if (mid <= lo || mid >= hi) break; // float64 can split the bracket no further
    const [c] = await ask.labels(along(mid, point), 1);
    if (c === positive) hi = mid;
    else lo = mid;
  }
  const x0 = along((lo + hi) / 2, new Float64Array(d));

  // Per-feature searches. Features the pool uses most come first, so a short budget measures the
  // weights that matter on data; features the pool never sets come last.
  let vAbs = 0;
  for (let f = 0; f < d; f++) vAbs += Math.abs(v[f]);
  const A = 1 / vAbs; // the size a weight would have if all shared w·v = 1 equally
  const tau = 0.5;
  const p = new Float64Array(d);
  for (let f = 0; f < d; f++) p[f] = x0[f] + tau * v[f];
  const energy = new Float64Array(d);
  for (let i = 0; i < ctx.pool.x.length; i++) energy[i % d] += ctx.pool.x[i] * ctx.pool.x[i];
  const order = Int32Array.from({ length: d }, (_, f) => f).sort((a, b) => energy[b] - energy[a] || a - b);

  const z = A * 2 ** -range;
  const doneWidth = Math.log2(1 + epsilon);
  const stage = new Uint8Array(d); // Stage.Untested
  const sign = new Float64Array(d);
  const low = new Float64Array(d).fill(-range);
  const high = new Float64Array(d).fill(range);
  /** The signed threshold each open feature is asked about next. */
  const threshold = (f: number) =>
    stage[f] === Stage.Untested ? z : stage[f] === Stage.NotAbove ? -z : sign[f] * A * 2 ** ((low[f] + high[f]) / 2);

  // A budget too short for every feature goes to the most used ones, each asked at least
  // minQueries times (sign and a rough size), rather than spread into bare signs over all d.
  const active = (left: number) => Math.max(1, Math.floor(left / minQueries));
  let width = Math.min(d, active(ask.left));
  for (;;) {
    const open: number[] = [];
    for (let k = 0; k < width; k++) if (stage[order[k]] !== Stage.Done) open.push(order[k]);
    if (open.length === 0 && width < d && ask.left > 0) {
      width = Math.min(d, width + active(ask.left));
      continue;
    }
    const n = Math.min(open.length, ask.left);
    if (n === 0) break;
    const asked = open.slice(0, n);
    const x = new Float64Array(n * d);
    const cs = asked.map(threshold);
    asked.forEach((f, r) => {
      x.set(p, r * d);
      x[r * d + f] += -tau / cs[r];
    });
    const labels = await ask.labels(x, n);
    asked.forEach((f, r) => {
      // Negative ⇔ a_f lies beyond the threshold (on the far side of it from 0).
      const beyond = labels[r] !== positive;
      if (stage[f] === Stage.Untested) {
        if (beyond) [stage[f], sign[f]] = [Stage.Bisect, 1];
        else stage[f] = Stage.NotAbove;
      } else if (stage[f] === Stage.NotAbove) {
        if (beyond) [stage[f], sign[f]] = [Stage.Bisect, -1];
        else stage[f] = Stage.Done; // |a| ≤ z: a zero weight
      } else {
        const mid = (low[f] + high[f]) / 2;
        if (beyond) low[f] = mid;
        else high[f] = mid;
        if (high[f] - low[f] <= doneWidth) stage[f] = Stage.Done;
      }
    });
    ctx.onProgress?.(ask.spent, ctx.oracle.budget, 'queries');
  }

  const w = new Float64Array(d);
  let measured = 0;
  for (let f = 0; f < d; f++) {
    if (stage[f] === Stage.Untested) continue;
    measured++;
    if (sign[f] !== 0) w[f] = sign[f] * A * 2 ** ((low[f] + high[f]) / 2);
  }
  // Nothing measured: the perpendicular bisector direction through x₀ still separates x⁺ from x⁻.
  if (measured === 0) for (let f = 0; f < d; f++) w[f] = v[f] / (vAbs * vAbs || 1);
  let b = 0;
  for (let f = 0; f < d; f++) b -= w[f] * x0[f];
  return { w, b, positive, measured, queries: ask.spent };
}

/** Two-column scores of a binary linear rule, computed in float64 (column `positive` holds w·x + b). */
export function linearImitation(w: Float64Array, b: number, positive: number): Imitation {
  const d = w.length;
  return {
    async predict(x) {
      const n = x.shape[0];
      const data = await x.data();
      if (data.length !== n * d) throw new RangeError(`linear imitation: rows of ${data.length / n} values, the model has ${d} weights`);
      const out = new Float32Array(n * 2);
      for (let r = 0; r < n; r++) {
        let s = b;
        for (let f = 0; f < d; f++) s += w[f] * data[r * d + f];
        // The decision itself, not s: float32 could round a tiny s to a tie, and s = 0 is negative, as sign() ≤ 0.
        out[r * 2 + (s > 0 ? positive : 1 - positive)] = 1;
      }
      return tf.tensor2d(out, [n, 2]);
    },
    dispose() {},
  };
}

/** Predicts one class for every row. */
export function constantImitation(cls: number, classes: number): Imitation {
  return {
    predict: async (x) => tf.tidy(() => tf.oneHot(tf.fill([x.shape[0]], cls, 'int32') as tf.Tensor1D, classes).toFloat() as tf.Tensor2D),
    dispose() {},
  };
}

export function makeLowdMeek(opts: LowdMeekOptions = {}): Attack {
  return {
    name: 'lowd-meek',
    async run(ctx) {
      checkLinearBinary(ctx, 'lowd-meek');
      const got = await extractLinear(ctx, opts);
      return 'constant' in got ? constantImitation(got.constant, ctx.classes) : linearImitation(got.w, got.b, got.positive);
    },
  };
}

export const lowdMeek: Attack = makeLowdMeek();
