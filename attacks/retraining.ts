import * as tf from '@tensorflow/tfjs';
import { rng, sampleIndices, withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { fitLinearSvm, linearDecisions, linearScores, type LinearSvmParams } from '../models/targets/linear-svm.ts';
import { asImitation, fitSoft, logitsOf, predictBatched } from '../models/train.ts';
import type { Imitation, TargetFamily } from '../models/types.ts';
import { studentArch } from './transfer.ts';
import type { Attack, AttackContext } from './types.ts';

/**
 * Retraining from labels (Tramèr et al., USENIX Security 2016, §6): query points, train a model
 * of one's own on the answers. The uniform strategy spends the whole budget on a random sample of
 * the pool at once; the adaptive one (active learning after Cohn et al. 1994) spends it in rounds:
 * a random sample first, then each round asks about points on the current model's decision
 * boundary — where the model is least certain and the target's answer moves it most — and
 * retrains on everything bought so far.
 *
 * Boundary points are found without spending queries: pairs of pool rows the current model
 * labels differently, and a bisection on the model along the segment between them to where its
 * decision changes. They stay within the pool's convex hull (inside [0, 1] for images).
 *
 * The model: a linear SVM (one-vs-rest for more than two classes, float64) when the target is
 * known to be linear or nothing is known about it; the configured student (or the target's own
 * architecture) when the attacker knows the target is something else.
 */
export interface RetrainingOptions {
  /** Query rounds: 1 is uniform retraining; the first round is always a uniform sample of the pool. */
  rounds: number;
  /** C of the linear SVM student: large, as a linear target's labels are separable (measured: 10 and 100 give the same ρ there). */
  C?: number;
  /** Most passes of dual coordinate descent for the linear student. */
  epochs?: number;
  /** Bisection steps on the model per boundary point. */
  bisections?: number;
  /**
   * What an adaptive round asks about: synthetic points on the model's boundary, the pool rows
   * it is least certain of, or half of each. 'auto' (the default): half of each when the target
   * is known to be a binary linear classifier — any point near a hyperplane pins it down — else
   * the least certain pool rows, which stay on the data's manifold (measured on MNIST: boundary
   * blends of two digits teach a ten-class model about regions the eval data never visits).
   */
  strategy?: 'boundary' | 'uncertainty' | 'mixed' | 'auto';
}

const LINEAR: ReadonlySet<TargetFamily> = new Set(['linear-svm', 'logreg']);

/** A model of the attacker's: decisions for rows of float32 values, and a way to become the imitation. */
export interface Model {
  /** Each row's class, and its margin: how far the winning score is ahead of the runner-up. */
  decide(x: Float32Array, n: number): Promise<{ labels: Int32Array; margin: Float64Array }>;
  imitation(): Imitation;
  dispose(): void;
}

function linearModel(p: LinearSvmParams): Model {
  const k = p.classes;
  const d = p.features;
  return {
    async decide(x, n) {
      const scores = linearScores(p, x, n);
      const s = p.b.length;
      const labels = linearDecisions(p, x, n);
      const margin = new Float64Array(n);
      for (let r = 0; r < n; r++) margin[r] = s === 1 ? Math.abs(scores[r]) : topGap(scores.subarray(r * s, (r + 1) * s));
      return { labels, margin };
    },
    imitation: () => ({
      async predict(x) {
        const n = x.shape[0];
        const data = await x.data();
        if (data.length !== n * d) throw new RangeError(`retrained linear model: rows of ${data.length / n} values, it has ${d} weights`);
        // The float64 decision as a one-hot row: float32 scores could round two close ones into a tie.
        const out = new Float32Array(n * k);
        linearDecisions(p, data, n).forEach((c, r) => (out[r * k + c] = 1));
        return tf.tensor2d(out, [n, k]);
      },
      dispose() {},
    }),
    dispose() {},
  };
}

function studentModel(model: tf.LayersModel, inputShape: [number, number, number]): Model {
  return {
    async decide(x, n) {
      const input = tf.tensor(x, [n, ...inputShape]);
      const probs = predictBatched(logitsOf(model), input, 512);
      input.dispose();
      const k = probs.shape[1];
      const data = await probs.data();
      probs.dispose();
      const labels = new Int32Array(n);
      const margin = new Float64Array(n);
      for (let r = 0; r < n; r++) {
        const row = data.subarray(r * k, (r + 1) * k);
        let best = 0;
        for (let c = 1; c < k; c++) if (row[c] > row[best]) best = c;
        labels[r] = best;
        margin[r] = topGap(row);
      }
      return { labels, margin };
    },
    imitation: () => asImitation(model),
    dispose: () => model.dispose(),
  };
}

/** The largest value minus the second largest. */
function topGap(row: ArrayLike<number>): number {
  let first = -Infinity;
  let second = -Infinity;
  for (let c = 0; c < row.length; c++) {
    const v = row[c];
    if (v > first) [first, second] = [v, first];
    else if (v > second) second = v;
  }
  return first - second;
}

/** Sizes of `rounds` batches summing to m, as even as integers allow (the remainder goes to the first). */
export function roundSizes(m: number, rounds: number): number[] {
  const r = Math.min(rounds, m);
  const base = Math.floor(m / r);
  return Array.from({ length: r }, (_, i) => base + (i < m % r ? 1 : 0));
}

/** The k rows of the pool not yet asked about with the smallest margins (ties to the lower index); marks them asked. */
export async function leastCertain(model: Model, pool: Float32Array, poolN: number, d: number, k: number, asked: Uint8Array): Promise<Float32Array> {
  const { margin } = await model.decide(pool, poolN);
  const free = Array.from({ length: poolN }, (_, i) => i).filter((i) => !asked[i]);
  free.sort((a, b) => margin[a] - margin[b] || a - b);
  const picked = free.slice(0, k);
  const x = new Float32Array(picked.length * d);
  picked.forEach((row, j) => {
    asked[row] = 1;
    x.set(pool.subarray(row * d, (row + 1) * d), j * d);
  });
  return x;
}

/**
 * k points on the model's decision boundary: for each, two pool rows the model labels differently
 * and a bisection along their segment to where its decision leaves the first row's class.
 * Undefined when the model gives every pool row one class (no segment crosses its boundary).
 */
export async function boundaryPoints(model: Model, pool: Float32Array, poolN: number, d: number, k: number, random: () => number, steps: number): Promise<Float32Array | undefined> {
  const { labels } = await model.decide(pool, poolN);
  const byClass = new Map<number, number[]>();
  labels.forEach((c, i) => (byClass.get(c) ?? byClass.set(c, []).get(c)!).push(i));
  if (byClass.size < 2) return undefined;
  const a = new Int32Array(k);
  const b = new Int32Array(k);
  for (let j = 0; j < k; j++) {
    a[j] = Math.floor(random() * poolN);
    // Uniform over the rows of other classes: index into the pool with a's class skipped.
    const own = byClass.get(labels[a[j]])!;
    let pick = Math.floor(random() * (poolN - own.length));
    for (const [c, rows] of byClass) {
      if (c === labels[a[j]]) continue;
      if (pick < rows.length) {
        b[j] = rows[pick];
        break;
      }
      pick -= rows.length;
    }
  }
  const lo = new Float64Array(k);
  const hi = new Float64Array(k).fill(1);
  const x = new Float32Array(k * d);
  const fill = (lambda: (j: number) => number) => {
    for (let j = 0; j < k; j++) {
      const t = lambda(j);
      const pa = a[j] * d;
      const pb = b[j] * d;
      for (let f = 0; f < d; f++) x[j * d + f] = pool[pa + f] + t * (pool[pb + f] - pool[pa + f]);
    }
  };
  for (let s = 0; s < steps; s++) {
    fill((j) => (lo[j] + hi[j]) / 2);
    const got = (await model.decide(x, k)).labels;
    for (let j = 0; j < k; j++) {
      const mid = (lo[j] + hi[j]) / 2;
      if (got[j] === labels[a[j]]) lo[j] = mid;
      else hi[j] = mid;
    }
  }
  fill((j) => (lo[j] + hi[j]) / 2);
  return x;
}

export function makeRetraining(name: string, opts: RetrainingOptions): Attack {
  const C = opts.C ?? 10;
  const epochs = opts.epochs ?? 200;
  const bisections = opts.bisections ?? 20;
  const chosen = opts.strategy ?? 'auto';
  if (!(Number.isInteger(opts.rounds) && opts.rounds >= 1)) throw new RangeError(`${name}: rounds must be a positive integer, got ${opts.rounds}`);
  if (!(C > 0 && Number.isFinite(C))) throw new RangeError(`${name}: C must be a positive number, got ${C}`);
  if (!(Number.isInteger(epochs) && epochs >= 1)) throw new RangeError(`${name}: epochs must be a positive integer, got ${epochs}`);
  if (!(Number.isInteger(bisections) && bisections >= 1)) throw new RangeError(`${name}: bisections must be a positive integer, got ${bisections}`);

  return {
    name,
    async run(ctx: AttackContext) {
      const d = ctx.inputShape.reduce((a, b) => a * b, 1);
      const m = ctx.oracle.budget - ctx.oracle.spent;
      if (m <= 0) throw new RangeError(`${name}: the oracle's budget of ${ctx.oracle.budget} queries is spent (${ctx.oracle.spent}); nothing to train on`);
      const sizes = roundSizes(m, opts.rounds);
      if (sizes[0] > ctx.pool.n) throw new RangeError(`${name}: the attacker's pool has ${ctx.pool.n} rows, fewer than the ${sizes[0]} of the first (uniform) round`);
      const linear = ctx.known === undefined || LINEAR.has(ctx.known.family);
      const knownHyperplane = ctx.known !== undefined && LINEAR.has(ctx.known.family) && ctx.classes === 2;
      const strategy = chosen !== 'auto' ? chosen : knownHyperplane ? 'mixed' : 'uncertainty';
      const random = rng(ctx.seed, name);

      // Everything bought so far, as float32 rows (what the oracle was asked, exactly) and labels.
      const X = new Float32Array(m * d);
      const Y = new Int32Array(m);
      let have = 0;
      const buy = async (rows: Float32Array, n: number) => {
        const { y } = await ctx.oracle.query64(Float64Array.from(rows), n);
        const k = ctx.oracle.classes;
        X.set(rows, have * d);
        for (let r = 0; r < n; r++) {
          let best = 0;
          for (let c = 1; c < k; c++) if (y[r * k + c] > y[r * k + best]) best = c;
          Y[have + r] = best;
        }
        have += n;
        ctx.onProgress?.(have, m, 'queries');
      };
      const train = async (): Promise<Model> => {
        if (linear) return linearModel(fitLinearSvm(X.subarray(0, have * d), Y.subarray(0, have), have, ctx.classes, { C, epochs, seed: ctx.seed }));
        const model = await withSeed(ctx.seed, () => buildStudent(studentArch(ctx), ctx.inputShape, ctx.classes));
        const x = tf.tensor(X.subarray(0, have * d), [have, ...ctx.inputShape]);
        const targets = tf.tidy(() => tf.oneHot(tf.tensor1d(Y.subarray(0, have), 'int32'), ctx.classes).toFloat() as tf.Tensor2D);
        try {
          await fitSoft(model, x, targets, { ...ctx.student, seed: ctx.seed });
        } catch (err) {
          model.dispose();
          throw err;
        } finally {
          tf.dispose([x, targets]);
        }
        return studentModel(model, ctx.inputShape);
      };

      const first = sampleIndices(ctx.pool.n, sizes[0], ctx.seed);
      const asked = new Uint8Array(ctx.pool.n);
      first.forEach((row) => (asked[row] = 1));
      const seedRows = new Float32Array(sizes[0] * d);
      first.forEach((row, r) => seedRows.set(ctx.pool.x.subarray(row * d, (row + 1) * d), r * d));
      await buy(seedRows, sizes[0]);
      let model: Model | undefined = await train();
      try {
        for (const k of sizes.slice(1)) {
          const fromPool = strategy === 'uncertainty' ? k : strategy === 'mixed' ? Math.floor(k / 2) : 0;
          const parts: Float32Array[] = [];
          if (fromPool > 0) parts.push(await leastCertain(model, ctx.pool.x, ctx.pool.n, d, fromPool, asked));
          let rest = k - (parts[0]?.length ?? 0) / d;
          if (rest > 0) {
            const onBoundary = await boundaryPoints(model, ctx.pool.x, ctx.pool.n, d, rest, random, bisections);
            if (onBoundary) {
              parts.push(onBoundary);
              rest = 0;
            }
          }
          if (rest > 0) {
            // The model sees one class everywhere (or the pool ran out): random pool rows until it sees two.
            const extra = new Float32Array(rest * d);
            for (let j = 0; j < rest; j++) {
              const row = Math.floor(random() * ctx.pool.n);
              extra.set(ctx.pool.x.subarray(row * d, (row + 1) * d), j * d);
            }
            parts.push(extra);
          }
          model.dispose();
          model = undefined;
          const rows = new Float32Array(k * d);
          let at = 0;
          for (const part of parts) {
            rows.set(part, at);
            at += part.length;
          }
          await buy(rows, k);
          model = await train();
        }
        return model.imitation();
      } catch (err) {
        model?.dispose();
        throw err;
      }
    },
  };
}

/** Adaptive retraining: a uniform first round, then rounds of points on the current model's boundary. */
export const adaptiveRetraining: Attack = makeRetraining('adaptive-retraining', { rounds: 8 });

/** The non-adaptive baseline: the whole budget on one uniform sample of the pool. */
export const uniformRetraining: Attack = makeRetraining('uniform-retraining', { rounds: 1 });
