import * as tf from '@tensorflow/tfjs';
import { LuDecomposition, Matrix } from 'ml-matrix';
import { affine, softmaxRows } from '../models/linear64.ts';
import { rng, sampleIndices, withSeed } from '../models/seed.ts';
import { buildMlp, mlpParamsFrom, mlpProba64, type MlpParams } from '../models/targets/mlp.ts';
import { softCrossEntropy } from '../models/train.ts';
import type { Imitation } from '../models/types.ts';
import { describeDisclosure } from '../serve/disclosure.ts';
import { NotApplicable, type Attack, type AttackContext } from './types.ts';

/**
 * Equation-solving extraction (Tramèr et al., "Stealing Machine Learning Models via Prediction
 * APIs", USENIX Security 2016, §4.1), for targets whose model class the attacker knows.
 *
 * Logistic regression. With k classes and probabilities p, log(p_c / p_0) = (w_c − w_0)·x + (b_c − b_0)
 * is linear in x (for binary LR, log(p_1/p_0) = w·x + b itself). Softmax weights are identifiable
 * only up to a common shift, so what is recovered is V_c = w_c − w_0, a_c = b_c − b_0 for c = 1..k−1
 * (for binary LR exactly w and b). Each query row gives k − 1 such equations, one per class, all
 * with the same left-hand side [x, 1]; so d + 1 query ROWS determine all (k − 1)(d + 1) unknowns
 * (the paper counts (d + 1)·k unknowns, but each answer carries k numbers), and one LU
 * factorisation of the (d + 1) × (d + 1) design solves every class at once.
 *
 * MLP. The equations are not linear; as the paper does, the attacker fits a model of the known
 * architecture to the probabilities it bought (here: squared error on centred log-probabilities).
 *
 * Disclosure: `probs` gives exact recovery; `rounded` is accepted and gives the least-squares
 * solution of rounded log-ratios (pairs with a probability rounded to 0 dropped), so it is
 * approximate; label, top-k and leaf answers carry no usable ratios and are NotApplicable.
 */

/** log(p_c / p_ref) is taken only where both probabilities are at least this (see `usable`). */
export const MIN_P = 1e-12;
/** Rows per query64 call. */
const BATCH = 256;

/** log p_c − log p_0 = V_c·x + a_c for c = 1..k−1: the recovered parameters of a linear softmax model. */
export interface LinearSolution {
  classes: number;
  features: number;
  /** (k − 1) × d, row-major: class c's row is w_c − w_0 (binary: w). */
  V: Float64Array;
  /** k − 1 entries: b_c − b_0 (binary: b). */
  a: Float64Array;
}

export type RecoveredParams = ({ kind: 'linear' } & LinearSolution) | ({ kind: 'mlp' } & MlpParams);

/** The imitation an equation-solving attack returns; `params` are what it recovered (for tests and reports). */
export type SolvedImitation = Imitation & { params: RecoveredParams; queries: number };

/**
 * Whether p is a probability whose logarithm is still informative. A target (or API) that returns
 * p_0 = 1 − p_1 loses p_0 when p_1 nears 1: below MIN_P such a p_0 has at most a few correct digits,
 * and 0 has none. The design below keeps answers far from that; rows that still hit it are dropped
 * from the pairs that need them (and, budget permitting, queried again closer in).
 */
const usable = (p: number) => p >= MIN_P && Number.isFinite(p);

/**
 * A least-squares solution of A X = B (m × p, m × q). Square and regular: LU (what exact recovery
 * uses; the basis design below is well conditioned). Otherwise the minimum-norm (m < p) or
 * least-squares (m > p) solution through the smaller Gram matrix, with a ridge of 1e-12 of its
 * mean diagonal so that a rank-deficient design (pool rows repeat pixels that are always 0) still
 * solves; for a budget too small to determine the model that is the best it can do anyway.
 */
export function leastSquares(A: Matrix, B: Matrix): Matrix {
  const [m, p] = [A.rows, A.columns];
  if (B.rows !== m) throw new RangeError(`leastSquares: ${m} equations but ${B.rows} right-hand rows`);
  if (m === p) {
    const lu = new LuDecomposition(A);
    if (!lu.isSingular()) return lu.solve(B);
  }
  const ridge = (G: Matrix) => {
    const size = G.rows;
    let trace = 0;
    for (let i = 0; i < size; i++) trace += G.get(i, i);
    const eps = (1e-12 * trace) / size || 1e-12;
    for (let i = 0; i < size; i++) G.set(i, i, G.get(i, i) + eps);
    return new LuDecomposition(G);
  };
  const At = A.transpose();
  // m ≤ p: X = Aᵀ (A Aᵀ)⁻¹ B, the solution of least norm. m > p: X = (AᵀA)⁻¹ Aᵀ B.
  return m <= p ? At.mmul(ridge(A.mmul(At)).solve(B)) : ridge(At.mmul(A)).solve(At.mmul(B));
}

/**
 * Solves for a linear softmax model's class-difference parameters from n query rows x (n × d,
 * row-major) and their probability answers (n × classes). Pure: no oracle, no tensors.
 * Each class c is compared with a reference class r (the one most often usable), on the rows
 * where both p_c and p_r are usable; classes with the same usable rows share one factorisation.
 * The differences to r are then turned into differences to class 0.
 */
export function solveLogRatios(x: Float64Array, answers: Float64Array, n: number, d: number, classes: number): LinearSolution {
  if (!(Number.isInteger(classes) && classes >= 2)) throw new RangeError(`solveLogRatios: classes must be an integer ≥ 2, got ${classes}`);
  if (x.length !== n * d) throw new RangeError(`solveLogRatios: ${x.length} values are not ${n} rows of ${d}`);
  if (answers.length !== n * classes) throw new RangeError(`solveLogRatios: ${answers.length} answers are not ${n} rows of ${classes} probabilities`);
  const ok = (r: number, c: number) => usable(answers[r * classes + c]);
  let ref = 0;
  let best = -1;
  for (let c = 0; c < classes; c++) {
    let count = 0;
    for (let r = 0; r < n; r++) if (ok(r, c)) count++;
    if (count > best) [best, ref] = [count, c];
  }
  // U[c] = parameters of log(p_c / p_ref), d weights then the bias; U[ref] = 0.
  const U = Array.from({ length: classes }, () => new Float64Array(d + 1));
  const groups = new Map<string, { rows: number[]; classes: number[] }>();
  for (let c = 0; c < classes; c++) {
    if (c === ref) continue;
    const rows: number[] = [];
    for (let r = 0; r < n; r++) if (ok(r, c) && ok(r, ref)) rows.push(r);
    const key = rows.join(',');
    const g = groups.get(key) ?? { rows, classes: [] };
    g.classes.push(c);
    groups.set(key, g);
  }
  for (const { rows, classes: cs } of groups.values()) {
    if (rows.length === 0) continue; // nothing known about these classes: their difference stays 0
    const A = new Matrix(rows.length, d + 1);
    const B = new Matrix(rows.length, cs.length);
    rows.forEach((r, i) => {
      for (let f = 0; f < d; f++) A.set(i, f, x[r * d + f]);
      A.set(i, d, 1);
      const logRef = Math.log(answers[r * classes + ref]);
      cs.forEach((c, j) => B.set(i, j, Math.log(answers[r * classes + c]) - logRef));
    });
    const X = leastSquares(A, B);
    cs.forEach((c, j) => {
      for (let f = 0; f <= d; f++) U[c][f] = X.get(f, j);
    });
  }
  const V = new Float64Array((classes - 1) * d);
  const a = new Float64Array(classes - 1);
  for (let c = 1; c < classes; c++) {
    for (let f = 0; f < d; f++) V[(c - 1) * d + f] = U[c][f] - U[0][f];
    a[c - 1] = U[c][d] - U[0][d];
  }
  return { classes, features: d, V, a };
}

/** n × classes probabilities of a recovered linear model: logits [0, V x + a]. */
export function linearProba64(s: LinearSolution, x: Float64Array | Float32Array, n: number): Float64Array {
  const z = affine(x, n, s.features, s.V, s.a);
  const k = s.classes;
  const logits = new Float64Array(n * k);
  for (let r = 0; r < n; r++) logits.set(z.subarray(r * (k - 1), (r + 1) * (k - 1)), r * k + 1);
  return softmaxRows(logits, n, k);
}

/**
 * Scores computed in float64 from recovered parameters and rounded to float32 once, exactly as
 * the target's own predictProba is: a copy that is exact to 1e-12 then agrees on every argmax,
 * ties in float32 included, so ρ = 0 is not spoiled by rounding.
 */
function float64Imitation(proba64: (x: Float32Array, n: number) => Float64Array, classes: number, params: RecoveredParams, queries: number): SolvedImitation {
  return {
    predict: async (x) => {
      const n = x.shape[0];
      return tf.tensor2d(Float32Array.from(proba64((await x.data()) as Float32Array, n)), [n, classes]);
    },
    dispose: () => {},
    params,
    queries,
  };
}

/** Queries n rows in batches through query64, with progress. Answers n × classes. */
async function buy(ctx: AttackContext, x: Float64Array, n: number, d: number, phase = 'queries'): Promise<Float64Array> {
  const y = new Float64Array(n * ctx.classes);
  for (let start = 0; start < n; start += BATCH) {
    const end = Math.min(n, start + BATCH);
    const answer = await ctx.oracle.query64(x.subarray(start * d, end * d), end - start);
    y.set(answer.y, start * ctx.classes);
    ctx.onProgress?.(end, n, phase);
  }
  return y;
}

/** Row-wise: does every class have a usable probability? */
function rowSaturated(y: Float64Array, r: number, classes: number): boolean {
  for (let c = 0; c < classes; c++) if (!usable(y[r * classes + c])) return true;
  return false;
}

/**
 * The exact design, d + 1 rows: the all-zero input, then each unit vector e_j (one pixel at 1).
 * Its matrix [x, 1] has an explicit inverse (b = z(0), w_j = z(e_j) − z(0)), so it is as well
 * conditioned as a design can be (condition number ~d, errors ~1e-13 in float64), and the rows stay
 * inside the data's range [0, 1]. One pixel moves a trained model's logits by one weight, so the
 * answers sit near the model's answer at 0 and far from saturation. A row that saturates anyway is
 * queried again with the pixel at 1/4, 1/16, … while the budget lasts (the row then is δ·e_j).
 * Pixels are taken in order of decreasing variance in the attacker's pool, so a budget cut short
 * leaves out the pixels that matter least.
 */
async function buyExactDesign(ctx: AttackContext, d: number, budget: number): Promise<{ x: Float64Array; y: Float64Array; n: number }> {
  const n = d + 1;
  const x = new Float64Array(n * d);
  const order = pixelOrder(ctx, d);
  const scale = new Float64Array(n).fill(1);
  for (let i = 1; i < n; i++) x[i * d + order[i - 1]] = 1;
  const y = await buy(ctx, x, n, d);
  let left = budget - n;
  for (let round = 0; round < 8 && left > 0; round++) {
    const again = [];
    for (let i = 1; i < n; i++) if (rowSaturated(y, i, ctx.classes)) again.push(i);
    if (again.length === 0) break;
    const take = again.slice(0, left);
    const rows = new Float64Array(take.length * d);
    take.forEach((i, t) => {
      scale[i] /= 4;
      x[i * d + order[i - 1]] = scale[i];
      rows[t * d + order[i - 1]] = scale[i];
    });
    const answers = await buy(ctx, rows, take.length, d, 'requeries');
    take.forEach((i, t) => y.set(answers.subarray(t * ctx.classes, (t + 1) * ctx.classes), i * ctx.classes));
    left -= take.length;
  }
  return { x, y, n };
}

/** Pixels by decreasing variance over the attacker's pool (ties: index order). */
function pixelOrder(ctx: AttackContext, d: number): Int32Array {
  const { pool } = ctx;
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (let r = 0; r < pool.n; r++) {
    for (let f = 0; f < d; f++) {
      const v = pool.x[r * d + f];
      mean[f] += v;
      sq[f] += v * v;
    }
  }
  const variance = Array.from({ length: d }, (_, f) => (pool.n ? sq[f] / pool.n - (mean[f] / pool.n) ** 2 : 0));
  return Int32Array.from(Array.from({ length: d }, (_, f) => f).sort((a, b) => variance[b] - variance[a] || a - b));
}

/**
 * Fewer than d + 1 queries cannot determine the model. The best linear guess is then the
 * minimum-norm solution on the pool rows the budget buys: it is exact on the span of those rows,
 * and real inputs lie mostly in the span of a few hundred others, so ρ falls fast with the budget
 * (much faster than with the unit-vector design, whose unbought pixels would stay at weight 0).
 */
async function buyPoolRows(ctx: AttackContext, d: number, budget: number): Promise<{ x: Float64Array; y: Float64Array; n: number }> {
  const fromPool = Math.min(budget, ctx.pool.n);
  const x = new Float64Array(budget * d);
  sampleIndices(ctx.pool.n, fromPool, ctx.seed).forEach((row, i) => x.set(ctx.pool.x.subarray(row * d, (row + 1) * d), i * d));
  // A pool smaller than the budget: the rest are uniform random inputs.
  const random = rng(ctx.seed, 'equation-solving');
  for (let i = fromPool * d; i < budget * d; i++) x[i] = random();
  return { x, y: await buy(ctx, x, budget, d), n: budget };
}

async function attackLinear(ctx: AttackContext, d: number): Promise<SolvedImitation> {
  const budget = ctx.oracle.budget - ctx.oracle.spent;
  const start = ctx.oracle.spent;
  // No budget at all: nothing is known, every class difference stays 0 (a uniform guess).
  const bought = budget === 0 ? { x: new Float64Array(0), y: new Float64Array(0), n: 0 } : budget >= d + 1 ? await buyExactDesign(ctx, d, budget) : await buyPoolRows(ctx, d, budget);
  const solution = solveLogRatios(bought.x, bought.y, bought.n, d, ctx.classes);
  return float64Imitation((x, n) => linearProba64(solution, x, n), ctx.classes, { kind: 'linear', ...solution }, ctx.oracle.spent - start);
}

export interface MlpFitOptions {
  /** Passes over the bought answers (default 60). */
  epochs: number;
  batchSize: number;
  lr: number;
  /** Share of the queries that are uniform random inputs rather than pool rows (default 0.25). */
  noiseShare: number;
  /** 'logits' (default): squared error of centred logits; 'cross-entropy': soft cross-entropy on the probabilities. */
  loss: 'logits' | 'cross-entropy';
}

const MLP_FIT: MlpFitOptions = { epochs: 60, batchSize: 64, lr: 0.003, noiseShare: 0.25, loss: 'logits' };

/**
 * Fits an MLP of the known widths to the answers: the targets are the centred log-probabilities
 * (the output logits up to each row's unknown shift), matched by squared error against the
 * student's centred logits. Unlike cross-entropy this keeps its gradient on confident rows, where
 * probabilities are all but 0 and 1 and only their logarithms still say how the logits differ.
 */
async function attackMlp(ctx: AttackContext, d: number, hidden: number[], opts: MlpFitOptions): Promise<SolvedImitation> {
  const budget = ctx.oracle.budget - ctx.oracle.spent;
  const start = ctx.oracle.spent;
  const model = await withSeed(ctx.seed, () => buildMlp(d, hidden, ctx.classes));
  try {
    if (budget > 0) {
      const noise = Math.max(budget - ctx.pool.n, Math.round(budget * opts.noiseShare));
      const fromPool = budget - noise;
      const x = new Float64Array(budget * d);
      sampleIndices(ctx.pool.n, fromPool, ctx.seed).forEach((row, i) => x.set(ctx.pool.x.subarray(row * d, (row + 1) * d), i * d));
      const random = rng(ctx.seed, 'equation-solving');
      for (let i = fromPool * d; i < budget * d; i++) x[i] = random();
      const y = await buy(ctx, x, budget, d);
      const k = ctx.classes;
      const logits = new Float32Array(budget * k);
      for (let r = 0; r < budget; r++) {
        let mean = 0;
        // Rounded answers can hold zeros; floor them so the logarithm stays finite.
        for (let c = 0; c < k; c++) mean += logits[r * k + c] = Math.log(Math.max(y[r * k + c], MIN_P));
        mean /= k;
        for (let c = 0; c < k; c++) logits[r * k + c] -= mean;
      }
      await fitLogits(model, tf.tensor2d(Float32Array.from(x), [budget, d]), tf.tensor2d(logits, [budget, k]), opts, ctx);
    }
    const params = await mlpParamsFrom(model, d, hidden, ctx.classes);
    return float64Imitation((x, n) => mlpProba64(params, x, n), ctx.classes, { kind: 'mlp', ...params }, ctx.oracle.spent - start);
  } finally {
    model.dispose();
  }
}

/** Adam on squared error between centred logits; shuffles with its own seeded stream. Disposes x and targets. */
async function fitLogits(model: tf.LayersModel, x: tf.Tensor2D, targets: tf.Tensor2D, opts: MlpFitOptions, ctx: AttackContext): Promise<void> {
  const n = x.shape[0];
  const optimizer = tf.train.adam(opts.lr);
  const random = rng(ctx.seed, 'shuffle');
  const order = Int32Array.from({ length: n }, (_, i) => i);
  try {
    for (let epoch = 0; epoch < opts.epochs; epoch++) {
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (let s = 0; s < n; s += opts.batchSize) {
        tf.tidy(() => {
          const rows = tf.tensor1d(order.slice(s, Math.min(n, s + opts.batchSize)), 'int32');
          const xb = tf.gather(x, rows);
          const yb = tf.gather(targets, rows);
          optimizer.minimize(() => {
            const out = model.apply(xb, { training: true }) as tf.Tensor2D;
            if (opts.loss === 'cross-entropy') return softCrossEntropy(tf.softmax(yb) as tf.Tensor2D, out);
            const centred = tf.sub(out, tf.mean(out, 1, true));
            return tf.mean(tf.square(tf.sub(centred, yb))) as tf.Scalar;
          });
        });
      }
      ctx.onProgress?.(epoch + 1, opts.epochs, 'epochs');
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    optimizer.dispose();
    tf.dispose([x, targets]);
  }
}

/** The attack, with the MLP fit's settings; `equationSolving` uses the defaults. */
export function makeEquationSolving(mlpFit: Partial<MlpFitOptions> = {}): Attack {
  const opts = { ...MLP_FIT, ...mlpFit };
  return {
    name: 'equation-solving',
    async run(ctx): Promise<SolvedImitation> {
      const { known } = ctx;
      if (!known) throw new NotApplicable('equation solving needs the target\'s model class (side information architecture: known)');
      const kind = ctx.side.disclosure.kind;
      if (kind !== 'probs' && kind !== 'rounded') {
        throw new NotApplicable(`equation solving needs probabilities (probs or rounded); the API gives ${describeDisclosure(ctx.side.disclosure)}`);
      }
      if (ctx.oracle.disclosure.kind !== kind) throw new RangeError(`equation solving: the side information says ${kind} but the oracle discloses ${describeDisclosure(ctx.oracle.disclosure)}`);
      const d = ctx.inputShape.reduce((a, b) => a * b, 1);
      if (known.family === 'logreg') return attackLinear(ctx, d);
      if (known.family === 'mlp') {
        if (!known.hidden?.length) throw new NotApplicable('equation solving on an MLP needs its hidden widths (model.hidden)');
        return attackMlp(ctx, d, known.hidden, opts);
      }
      throw new NotApplicable(`equation solving handles logistic regression and MLP targets, not ${known.family}`);
    },
  };
}

export const equationSolving: Attack = makeEquationSolving();
