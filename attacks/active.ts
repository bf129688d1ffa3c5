import * as tf from '@tensorflow/tfjs';
import { subset, toTensor } from '../datasets/split.ts';
import { sampleIndices, withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { asImitation, fitSoft, logitsOf, predictBatched } from '../models/train.ts';
import { normalizeRows, studentArch } from './transfer.ts';
import type { Attack, AttackContext } from './types.ts';

export const STRATEGIES = ['random', 'uncertainty', 'margin', 'entropy', 'kcenter'] as const;
export type Strategy = (typeof STRATEGIES)[number];

/**
 * Picks k of the candidate rows from the student's probabilities on them ([n × classes], row-major).
 * uncertainty: least confidence (smallest top probability); margin: smallest gap between the top
 * two; entropy: largest entropy; kcenter: greedy k-center in probability space, away from the rows
 * already labelled (`labelled`, same layout); random: a seeded sample. Returns candidate indices.
 */
export function select(strategy: Strategy, probs: Float32Array, classes: number, k: number, seed: number, labelled?: Float32Array): Int32Array {
  const n = probs.length / classes;
  if (k >= n) return Int32Array.from({ length: n }, (_, i) => i);
  if (strategy === 'random') return sampleIndices(n, k, seed);
  if (strategy === 'kcenter') return kCenter(probs, classes, k, labelled ?? new Float32Array(0));
  const score = new Float64Array(n); // higher = more informative
  for (let r = 0; r < n; r++) {
    const row = probs.subarray(r * classes, (r + 1) * classes);
    let top = 0;
    let second = 0;
    let entropy = 0;
    for (const p of row) {
      if (p > top) [top, second] = [p, top];
      else if (p > second) second = p;
      if (p > 0) entropy -= p * Math.log(p);
    }
    score[r] = strategy === 'uncertainty' ? -top : strategy === 'margin' ? -(top - second) : entropy;
  }
  // Ties are broken by index, so the choice is deterministic.
  const order = Int32Array.from({ length: n }, (_, i) => i).sort((a, b) => score[b] - score[a] || a - b);
  return order.slice(0, k);
}

function kCenter(points: Float32Array, dim: number, k: number, centres: Float32Array): Int32Array {
  const n = points.length / dim;
  const dist = new Float64Array(n).fill(Infinity);
  const update = (c: Float32Array, offset: number) => {
    for (let r = 0; r < n; r++) {
      let d = 0;
      for (let j = 0; j < dim; j++) d += (points[r * dim + j] - c[offset + j]) ** 2;
      if (d < dist[r]) dist[r] = d;
    }
  };
  for (let c = 0; c < centres.length / dim; c++) update(centres, c * dim);
  const chosen = new Int32Array(k);
  for (let i = 0; i < k; i++) {
    let best = 0;
    for (let r = 1; r < n; r++) if (dist[r] > dist[best]) best = r;
    chosen[i] = best;
    update(points, best * dim);
    dist[best] = -1; // never twice
  }
  return chosen;
}

/** The student's probabilities on x, batched; disposes x. */
async function studentProbs(model: tf.LayersModel, x: tf.Tensor): Promise<Float32Array> {
  const logits = logitsOf(model);
  const probs = predictBatched((b) => tf.softmax(logits(b)), x);
  x.dispose();
  const data = (await probs.data()) as Float32Array;
  probs.dispose();
  return data;
}

/**
 * ActiveThief (Pal et al., AAAI 2020): a random seed set, then rounds in which the substitute,
 * trained on everything labelled so far, scores the rest of the pool and the strategy picks the
 * next batch to query. The budget is split evenly over the seed set and the rounds.
 */
export function makeActiveThief(strategy: Strategy, opts: { rounds?: number } = {}): Attack {
  const rounds = opts.rounds ?? 4;
  if (!STRATEGIES.includes(strategy)) throw new RangeError(`unknown selection strategy "${strategy}": choose one of ${STRATEGIES.join(', ')}`);
  return {
    name: `active-${strategy}`,
    async run(ctx: AttackContext) {
      const budget = ctx.oracle.budget - ctx.oracle.spent;
      if (budget > ctx.pool.n) throw new RangeError(`the attacker's pool has ${ctx.pool.n} rows, fewer than the budget of ${budget} queries`);
      const perRound = Math.max(1, Math.floor(budget / (rounds + 1)));
      const model = await withSeed(ctx.seed, () => buildStudent(studentArch(ctx), ctx.inputShape, ctx.classes));
      const unlabelled = new Set<number>(Array.from({ length: ctx.pool.n }, (_, i) => i));
      const rowsX: tf.Tensor[] = [];
      const rowsY: tf.Tensor2D[] = [];
      const ask = async (indices: ArrayLike<number>) => {
        const x = toTensor(subset(ctx.pool, indices), ctx.inputShape);
        const answer = await ctx.oracle.query(x).catch((err) => {
          x.dispose();
          throw err;
        });
        rowsX.push(x);
        rowsY.push(normalizeRows(answer));
        answer.dispose();
        for (const i of Array.from(indices)) unlabelled.delete(i);
      };
      const fitAll = async (round: number) => {
        const x = tf.concat(rowsX);
        const y = tf.concat(rowsY) as tf.Tensor2D;
        try {
          await fitSoft(model, x, y, { ...ctx.student, seed: ctx.seed + round });
        } finally {
          tf.dispose([x, y]);
        }
      };
      try {
        await ask(sampleIndices(ctx.pool.n, Math.min(perRound, budget), ctx.seed));
        for (let round = 1; round <= rounds; round++) {
          const remaining = ctx.oracle.budget - ctx.oracle.spent;
          if (remaining <= 0) break;
          await fitAll(round);
          const candidates = Int32Array.from(unlabelled);
          const p = await studentProbs(model, toTensor(subset(ctx.pool, candidates), ctx.inputShape));
          // k-center keeps away from what is labelled, seen through the student as it is now.
          const centres = strategy === 'kcenter' ? await studentProbs(model, tf.concat(rowsX)) : undefined;
          const k = round === rounds ? remaining : Math.min(perRound, remaining);
          const picked = select(strategy, p, ctx.classes, k, ctx.seed + round, centres);
          await ask(Array.from(picked, (i) => candidates[i]));
          ctx.onProgress?.(round, rounds, 'active-learning rounds');
        }
        await fitAll(rounds + 1);
      } catch (err) {
        model.dispose();
        throw err;
      } finally {
        tf.dispose([...rowsX, ...rowsY]);
      }
      return asImitation(model);
    },
  };
}

export const ACTIVE_ATTACKS: Record<string, Attack> = Object.fromEntries(STRATEGIES.map((s) => [`active-${s}`, makeActiveThief(s)]));
