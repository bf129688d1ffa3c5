import * as tf from '@tensorflow/tfjs';
import { kmeans } from 'ml-kmeans';
import { subset, toTensor } from '../datasets/split.ts';
import type { Split } from '../datasets/types.ts';
import { rng, sampleIndices, shuffleInPlace, withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { fitSoft, logitsOf } from '../models/train.ts';
import { trainStudent } from './student.ts';
import { studentArch } from './transfer.ts';
import type { Attack, AttackContext } from './types.ts';

export const REWARDS = ['cert', 'div', 'loss', 'all'] as const;
export type Reward = (typeof REWARDS)[number];

export interface AdaptiveOptions {
  /** Which reward drives the policy (Orekondy et al. §4.1.2); 'all' sums the three, each standardised. */
  reward?: Reward;
  /** Arms of the bandit: k-means clusters of the pool (the pool's labels are never read). */
  arms?: number;
  /** Rows per oracle call; each row is its own pull of the bandit, updated once the answers come back. */
  stepSize?: number;
  /** Step size α of the gradient-bandit preference update. */
  alpha?: number;
  /**
   * Times the policy's student is retrained on everything bought so far, spread evenly over the
   * budget. Only the loss reward reads that student, so 'cert' and 'div' build none.
   */
  refits?: number;
  /** Rows of the pool (a seeded sample) that k-means is fitted on; every row is then given its nearest centre. */
  clusterSample?: number;
  /** Diversity compares an answer with the mean of the last `window` answers. */
  window?: number;
  /** Called after each oracle call with the pool rows it asked about, in order (for tests and traces). */
  onSelect?(poolIndices: Int32Array): void;
}

/* ------------------------------------------------------------------ the policy */

/**
 * Gradient bandit (Sutton & Barto 2018, §2.8): preferences H, π = softmax(H) over the arms still
 * open; after a pull of arm a with reward r, H_a += α(r − r̄)(1 − π_a) and H_b −= α(r − r̄)π_b for
 * every other arm b, where r̄ averages the rewards before this one (r̄ = r on the first pull, so the
 * first reward moves nothing: it has nothing to be compared with). A closed (exhausted) arm has
 * π = 0, so the update leaves it alone and the others share its mass.
 */
export class GradientBandit {
  readonly preferences: Float64Array;
  private readonly open: Uint8Array;
  private baseline = 0;
  private pulls = 0;

  constructor(arms: number, readonly alpha: number) {
    if (!(Number.isInteger(arms) && arms >= 1)) throw new RangeError(`gradient bandit: arms must be a positive integer, got ${arms}`);
    if (!(alpha > 0 && Number.isFinite(alpha))) throw new RangeError(`gradient bandit: alpha must be a positive number, got ${alpha}`);
    this.preferences = new Float64Array(arms);
    this.open = new Uint8Array(arms).fill(1);
  }

  get arms(): number {
    return this.preferences.length;
  }

  isOpen(arm: number): boolean {
    return this.open[arm] === 1;
  }

  /** Takes an arm out of play for good (no rows left to draw from it). */
  close(arm: number): void {
    this.open[arm] = 0;
  }

  /** π over the arms: softmax of the open arms' preferences, max subtracted first so no exp overflows; 0 for closed arms. */
  probabilities(): Float64Array {
    const p = new Float64Array(this.arms);
    let max = -Infinity;
    for (let a = 0; a < this.arms; a++) if (this.open[a] && this.preferences[a] > max) max = this.preferences[a];
    if (max === -Infinity) throw new RangeError('gradient bandit: every arm is closed; nothing left to sample');
    let sum = 0;
    for (let a = 0; a < this.arms; a++) {
      if (!this.open[a]) continue;
      p[a] = Math.exp(this.preferences[a] - max);
      sum += p[a];
    }
    // sum ≥ 1: the arm at the maximum contributes exp(0).
    for (let a = 0; a < this.arms; a++) p[a] /= sum;
    return p;
  }

  /** An open arm drawn from π with the given uniform generator. */
  sample(random: () => number): number {
    const p = this.probabilities();
    const u = random();
    let acc = 0;
    let last = -1;
    for (let a = 0; a < this.arms; a++) {
      if (p[a] === 0) continue;
      acc += p[a];
      last = a;
      if (u < acc) return a;
    }
    return last; // rounding left acc a hair under 1
  }

  update(arm: number, reward: number): void {
    if (!Number.isFinite(reward)) throw new RangeError(`gradient bandit: reward ${reward} for arm ${arm} is not a finite number`);
    if (!(Number.isInteger(arm) && arm >= 0 && arm < this.arms)) throw new RangeError(`gradient bandit: arm ${arm} is not one of 0..${this.arms - 1}`);
    // An arm emptied since it was pulled (within one batch) can no longer be chosen: its reward
    // still feeds the baseline, but there is no choice left to reinforce or discourage.
    if (this.open[arm]) {
      const p = this.probabilities();
      const baseline = this.pulls === 0 ? reward : this.baseline;
      const advantage = this.alpha * (reward - baseline);
      for (let a = 0; a < this.arms; a++) {
        this.preferences[a] += a === arm ? advantage * (1 - p[a]) : -advantage * p[a];
      }
    }
    this.pulls++;
    this.baseline += (reward - this.baseline) / this.pulls;
  }
}

/* ------------------------------------------------------------------ rewards */

/** Running mean and variance (Welford); standardises a reward so that rewards of different scales can be summed. */
export class RunningScale {
  private n = 0;
  private mean = 0;
  private m2 = 0;

  /** Adds x and returns it standardised by everything seen so far, x included; 0 while the spread is (near) zero. */
  push(x: number): number {
    this.n++;
    const delta = x - this.mean;
    this.mean += delta / this.n;
    this.m2 += delta * (x - this.mean);
    const sd = Math.sqrt(this.m2 / this.n);
    // A constant reward (e.g. certainty under label answers: always 1) carries no signal, not a division by zero.
    return sd > 1e-9 ? (x - this.mean) / sd : 0;
  }
}

const LOG_EPS = Math.log(1e-7);

/**
 * Answers as probability rows, in place: a row with a negative entry or one above 1 is taken for
 * logits and put through a max-subtracted softmax; any other row (top-k, rounded, label one-hots,
 * all zeros) is padded by ε and renormalised, like normalizeRows, so an all-zero row becomes uniform.
 */
export function toDistributions(y: Float32Array, classes: number): Float32Array {
  const eps = 1e-12;
  for (let off = 0; off < y.length; off += classes) {
    let logits = false;
    let max = -Infinity;
    for (let k = 0; k < classes; k++) {
      const v = y[off + k];
      if (!Number.isFinite(v)) throw new RangeError(`adaptive knockoff: the oracle answered ${v} in row ${off / classes}, class ${k}`);
      if (v < 0 || v > 1) logits = true;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let k = 0; k < classes; k++) {
      const v = logits ? Math.exp(y[off + k] - max) : y[off + k] + eps;
      y[off + k] = v;
      sum += v;
    }
    for (let k = 0; k < classes; k++) y[off + k] /= sum;
  }
  return y;
}

/** The margin between an answer's two largest probabilities: high where the target is sure. */
export function certainty(p: Float32Array, off: number, classes: number): number {
  let top = -Infinity;
  let second = -Infinity;
  for (let k = 0; k < classes; k++) {
    const v = p[off + k];
    if (v > top) [top, second] = [v, top];
    else if (v > second) second = v;
  }
  return classes === 1 ? top : top - second;
}

/** Σ_k max(0, y_k − ȳ_k): how much mass an answer puts where the recent answers did not. */
export function diversity(p: Float32Array, off: number, mean: Float64Array): number {
  let d = 0;
  for (let k = 0; k < mean.length; k++) d += Math.max(0, p[off + k] - mean[k]);
  return d;
}

/** Cross-entropy −Σ y_k log q_k of the answer y against softmax(logits), log q clipped at log 1e-7 so a 0 never costs ∞. */
export function crossEntropy(p: Float32Array, off: number, logits: Float32Array, logitOff: number, classes: number): number {
  let max = -Infinity;
  for (let k = 0; k < classes; k++) max = Math.max(max, logits[logitOff + k]);
  let z = 0;
  for (let k = 0; k < classes; k++) z += Math.exp(logits[logitOff + k] - max);
  const logZ = max + Math.log(z);
  let ce = 0;
  for (let k = 0; k < classes; k++) {
    const y = p[off + k];
    if (y > 0) ce -= y * Math.max(LOG_EPS, logits[logitOff + k] - logZ);
  }
  return ce;
}

/* ------------------------------------------------------------------ the arms */

/**
 * Each row's block means over the image plane (channels kept), blocks of `factor` × `factor` pixels:
 * 28×28 → 7×7 at factor 4. k-means on 49 values instead of 784 is ~16× cheaper and still tells
 * digits from garments and strokes from one another.
 */
export function blockMeans(split: Split, inputShape: [number, number, number], factor: number): { data: Float64Array; dim: number } {
  const [h, w, c] = inputShape;
  const bh = Math.ceil(h / factor);
  const bw = Math.ceil(w / factor);
  const dim = bh * bw * c;
  const row = h * w * c;
  const data = new Float64Array(split.n * dim);
  const counts = new Float64Array(dim);
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) for (let ch = 0; ch < c; ch++) counts[(Math.floor(i / factor) * bw + Math.floor(j / factor)) * c + ch]++;
  for (let r = 0; r < split.n; r++) {
    const out = r * dim;
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        const cell = out + (Math.floor(i / factor) * bw + Math.floor(j / factor)) * c;
        const src = r * row + (i * w + j) * c;
        for (let ch = 0; ch < c; ch++) data[cell + ch] += split.x[src + ch];
      }
    }
    for (let k = 0; k < dim; k++) data[out + k] /= counts[k];
  }
  return { data, dim };
}

/**
 * The arms: k-means (k-means++ start, seeded) on a seeded sample of the pool in block-mean space,
 * then every pool row assigned to its nearest centre. Returns each row's arm and the arm count
 * actually used: fewer than asked when the sample holds fewer distinct rows (k-means++ would
 * otherwise divide 0 by 0 on a pool of identical rows).
 */
export function clusterPool(
  pool: Split,
  inputShape: [number, number, number],
  arms: number,
  opts: { sample: number; seed: number },
): { assignment: Int32Array; arms: number } {
  const factor = Math.max(1, Math.ceil(Math.max(inputShape[0], inputShape[1]) / 8));
  const { data, dim } = blockMeans(pool, inputShape, factor);
  const rowOf = (r: number) => Array.from(data.subarray(r * dim, (r + 1) * dim));
  const sample = sampleIndices(pool.n, Math.min(opts.sample, pool.n), opts.seed);
  const points: number[][] = [];
  const seen = new Set<string>();
  for (const r of sample) {
    const p = rowOf(r);
    points.push(p);
    seen.add(p.join(','));
  }
  const k = Math.min(arms, seen.size);
  const assignment = new Int32Array(pool.n);
  if (k <= 1) return { assignment, arms: 1 };
  // ml-kmeans seeds its own generator from an integer; derive one from the attack's seed.
  const kmSeed = 1 + Math.floor(rng(opts.seed, 'adaptive-kmeans')() * 2 ** 30);
  const centres = kmeans(points, k, { seed: kmSeed, initialization: 'kmeans++', maxIterations: 50 }).centroids;
  for (let r = 0; r < pool.n; r++) {
    let best = 0;
    let bestD = Infinity;
    for (let c = 0; c < k; c++) {
      let d = 0;
      const centre = centres[c];
      for (let j = 0; j < dim; j++) d += (data[r * dim + j] - centre[j]) ** 2;
      if (d < bestD) [best, bestD] = [c, d];
    }
    assignment[r] = best;
  }
  return { assignment, arms: k };
}

/* ------------------------------------------------------------------ the attack */

function checkOptions(o: Required<Omit<AdaptiveOptions, 'onSelect'>>): void {
  const positiveInt = (v: number, name: string) => {
    if (!(Number.isInteger(v) && v >= 1)) throw new RangeError(`adaptive knockoff: ${name} must be a positive integer, got ${v}`);
  };
  if (!REWARDS.includes(o.reward)) throw new RangeError(`adaptive knockoff: unknown reward "${o.reward}": choose one of ${REWARDS.join(', ')}`);
  positiveInt(o.arms, 'arms');
  positiveInt(o.stepSize, 'stepSize');
  positiveInt(o.clusterSample, 'clusterSample');
  positiveInt(o.window, 'window');
  if (!(Number.isInteger(o.refits) && o.refits >= 0)) throw new RangeError(`adaptive knockoff: refits must be a non-negative integer, got ${o.refits}`);
  if (!(o.alpha > 0 && Number.isFinite(o.alpha))) throw new RangeError(`adaptive knockoff: alpha must be a positive number, got ${o.alpha}`);
}

/**
 * Knockoff Nets with the adaptive strategy (Orekondy et al., CVPR 2019, §4.1.2). The pool is split
 * into arms by k-means; a gradient bandit learns which arms pay, rewarding each bought answer by the
 * target's certainty, its difference from recent answers, and/or the student's cross-entropy on it,
 * while a student is retrained every so often on everything bought so far. The budget is spent
 * exactly, each row at most once; a fresh student is then trained on the whole transfer set, as in
 * random knockoff.
 *
 * Held per query: its pool index (4 bytes) and its answer as classes float32s; inputs are gathered
 * from the pool again whenever a student trains.
 */
export function makeAdaptiveKnockoff(options: AdaptiveOptions = {}): Attack {
  const o = {
    reward: options.reward ?? 'all',
    arms: options.arms ?? 20,
    stepSize: options.stepSize ?? 32,
    alpha: options.alpha ?? 0.1,
    refits: options.refits ?? 4,
    clusterSample: options.clusterSample ?? 2000,
    window: options.window ?? 64,
  };
  checkOptions(o);
  const useLoss = o.reward === 'loss' || o.reward === 'all';
  return {
    name: 'adaptive-knockoff',
    async run(ctx: AttackContext) {
      const budget = ctx.oracle.budget - ctx.oracle.spent;
      if (budget <= 0) throw new RangeError(`adaptive knockoff: the oracle's budget of ${ctx.oracle.budget} queries is spent (${ctx.oracle.spent}); nothing to train on`);
      if (budget > ctx.pool.n) throw new RangeError(`the attacker's pool has ${ctx.pool.n} rows, fewer than the budget of ${budget} queries`);
      const { classes, inputShape, pool } = ctx;

      // Each arm's rows in a seeded order: drawing "an unqueried row of arm a" is taking the next one.
      const { assignment, arms } = clusterPool(pool, inputShape, o.arms, { sample: o.clusterSample, seed: ctx.seed });
      const members: Int32Array[] = Array.from({ length: arms }, () => new Int32Array(0));
      const sizes = new Int32Array(arms);
      for (const a of assignment) sizes[a]++;
      for (let a = 0; a < arms; a++) members[a] = new Int32Array(sizes[a]);
      sizes.fill(0);
      for (let r = 0; r < pool.n; r++) members[assignment[r]][sizes[assignment[r]]++] = r;
      const shuffle = rng(ctx.seed, 'adaptive-rows');
      for (const m of members) shuffleInPlace(m, shuffle);
      const taken = new Int32Array(arms);

      const bandit = new GradientBandit(arms, o.alpha);
      for (let a = 0; a < arms; a++) if (members[a].length === 0) bandit.close(a);
      const pick = rng(ctx.seed, 'adaptive-arms');
      const scales = { cert: new RunningScale(), div: new RunningScale(), loss: new RunningScale() };

      const indices = new Int32Array(budget);
      const answers = new Float32Array(budget * classes);
      const refitAt = Array.from({ length: o.refits }, (_, j) => Math.floor((budget * (j + 1)) / (o.refits + 1)));
      let nextRefit = 0;
      let done = 0;
      let step = 0;

      const model = useLoss ? await withSeed(ctx.seed + 1, () => buildStudent(studentArch(ctx), inputShape, classes)) : undefined;
      const studentLogits = model && logitsOf(model);
      try {
        while (done < budget) {
          step++;
          const m = Math.min(o.stepSize, budget - done);
          const chosen = new Int32Array(m);
          const rows = new Int32Array(m);
          for (let i = 0; i < m; i++) {
            const a = bandit.sample(pick);
            chosen[i] = a;
            rows[i] = members[a][taken[a]++];
            if (taken[a] === members[a].length) bandit.close(a);
          }

          const x = toTensor(subset(pool, rows), inputShape);
          let logits: Float32Array | undefined;
          try {
            const answer = await ctx.oracle.query(x);
            const raw = (await answer.data()) as Float32Array;
            answer.dispose();
            if (raw.length !== m * classes) throw new RangeError(`adaptive knockoff: the oracle answered ${raw.length / m} values per row, expected ${classes}`);
            answers.set(toDistributions(Float32Array.from(raw), classes), done * classes);
            if (studentLogits) {
              const out = studentLogits(x);
              logits = (await out.data()) as Float32Array;
              out.dispose();
            }
          } finally {
            x.dispose();
          }
          indices.set(rows, done);

          // The recent mean answer, from the rows bought before this step (this step's own on the first).
          const from = done === 0 ? 0 : Math.max(0, done - o.window);
          const to = done === 0 ? m : done;
          const mean = new Float64Array(classes);
          for (let r = from; r < to; r++) for (let k = 0; k < classes; k++) mean[k] += answers[r * classes + k];
          for (let k = 0; k < classes; k++) mean[k] /= to - from;

          for (let i = 0; i < m; i++) {
            const off = (done + i) * classes;
            let r = 0;
            if (o.reward === 'cert' || o.reward === 'all') r += scales.cert.push(certainty(answers, off, classes));
            if (o.reward === 'div' || o.reward === 'all') r += scales.div.push(diversity(answers, off, mean));
            if (logits) r += scales.loss.push(crossEntropy(answers, off, logits, i * classes, classes));
            if (!Number.isFinite(r)) throw new Error(`adaptive knockoff: reward ${r} at step ${step}, row ${i} (pool row ${rows[i]})`);
            bandit.update(chosen[i], r);
          }
          for (let a = 0; a < arms; a++) {
            const h = bandit.preferences[a];
            if (!Number.isFinite(h)) throw new Error(`adaptive knockoff: preference of arm ${a} became ${h} at step ${step}`);
          }
          done += m;
          options.onSelect?.(rows);
          ctx.onProgress?.(done, budget, 'queries');

          if (model && nextRefit < refitAt.length && done >= refitAt[nextRefit] && done < budget) {
            while (nextRefit < refitAt.length && done >= refitAt[nextRefit]) nextRefit++;
            const xs = toTensor(subset(pool, indices.subarray(0, done)), inputShape);
            const ys = tf.tensor2d(answers.subarray(0, done * classes), [done, classes]);
            try {
              await fitSoft(model, xs, ys, { ...ctx.student, seed: ctx.seed + nextRefit });
            } finally {
              tf.dispose([xs, ys]);
            }
          }
        }
      } finally {
        model?.dispose();
      }

      // Answers are already rows summing to 1 (toDistributions), as normalizeRows would make them.
      const x = toTensor(subset(pool, indices), inputShape);
      const y = tf.tensor2d(answers, [budget, classes]);
      return trainStudent(ctx, x, y);
    },
  };
}

export const adaptiveKnockoff: Attack = makeAdaptiveKnockoff();
