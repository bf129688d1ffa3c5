import { z } from 'zod';
import { coverCuts, kendallTau, recoverOrder, recoverValues, sameUpToReversal } from '../../attacks/assisted-tree.ts';
import { regressionTree } from '../../models/learners/tree-regression.ts';
import type { Learner, Rows64 } from '../../models/learners/types.ts';
import { gaussians, rng, shuffleInPlace } from '../../models/seed.ts';
import { TrainingService } from '../../serve/training.ts';
import { rhoRegression } from '../metric.ts';
import type { Experiment, ExperimentContext, ExperimentRow } from './types.ts';

/**
 * Assisted learning, Bob's learner a CART regression tree on one private feature x_1..x_n drawn
 * uniformly on a public range (see attacks/assisted-tree.ts for the query designs).
 *
 * Part 'order' (Stage I only): Alice recovers the order of Bob's values. orderRecovered is exact
 * equality up to reversal; kendallTau is |τ| against the true order. ρ: held-out tasks
 * y' = g(x) + noise·ε (g a random sum of three sinusoids); the target is Bob's Stage I answer, his
 * tree's fitted values on his n rows; the imitation is the same tree fitted by Alice to y' on the
 * recovered ranks (a tree on one feature depends on the values only through their order, so an
 * exact order imitates exactly). rhoRandomOrder is the same imitation on a random order.
 *
 * Part 'values' (Stage II): Alice covers every cut with a threshold (step labels where the order
 * queries left none), bisects the thresholds through the handles, and solves the midpoints for
 * Bob's values. precision = max |x̂ − x|; precisionBound is the half-width the order leaves the
 * solution (≈ the smallest gap between neighbours, shrinking like 1/n²). ρ: on fresh x uniform on
 * the range, Bob's tree fitted to y' versus Alice's fitted on x̂; rhoQuantiles places the ranks at
 * evenly spaced quantiles instead (what the order alone, oriented, gives). k₁ counts every fit,
 * order queries included; k₂ the rows predicted.
 *
 * Alice knows Bob's learner (depth, leaf size) and sends λ (Protocol II, λ = cost per leaf).
 */

const treeSetting = z.strictObject({
  maxDepth: z.number().int().min(1).max(30).default(1).describe('Bob\'s tree depth (1: a stump)'),
  minLeaf: z.number().int().min(1).default(1),
  strategy: z.enum(['basis', 'partitions']).default('basis').describe('Stage I query design: basis vectors (stumps) or Gaussian labels (any depth)'),
  lambda: z.number().min(0).finite().default(0).describe('λ Alice sends (Protocol II): cost per leaf'),
  budget: z.number().int().min(1).optional().describe('Stage I fits for the order (default: n − 1 basis, 20n partitions)'),
});

const schema = z
  .strictObject({
    ns: z.array(z.number().int().min(3)).min(1).default([10, 30, 100, 300, 1000]).describe('Bob\'s rows'),
    seeds: z.array(z.number().int()).min(1).default([1, 2, 3, 4, 5]),
    trees: z.array(treeSetting).min(1).default(() => [treeSetting.parse({})]).describe('Bob\'s tree and Alice\'s query design, one run each'),
    stageII: z.boolean().default(true),
    range: z.tuple([z.number().finite(), z.number().finite()]).default([0, 1]).describe('public range of Bob\'s feature'),
    tolerance: z.number().positive().default(1e-10).describe('bisection bracket width for each threshold'),
    evalTasks: z.number().int().min(1).default(20),
    evalPoints: z.number().int().min(1).default(1000).describe('fresh x per task for the Stage II ρ'),
    taskNoise: z.number().min(0).finite().default(0.1),
  })
  .superRefine((c, ctx) => {
    if (!(c.range[0] < c.range[1])) ctx.addIssue({ code: 'custom', path: ['range'], message: `range [${c.range[0]}, ${c.range[1]}] is empty` });
    if (c.tolerance >= c.range[1] - c.range[0]) ctx.addIssue({ code: 'custom', path: ['tolerance'], message: 'tolerance must be smaller than the range' });
  });

export type AssistedTreeParams = z.output<typeof schema>;

/** Held-out task labels on the given values: a random sum of three sinusoids over the range, plus noise. */
function smoothTask(lo: number, hi: number, noise: number, random: () => number): (x: Float64Array) => Float64Array {
  const a = gaussians(3, random);
  const phase = [random(), random(), random()].map((u) => 2 * Math.PI * u);
  return (x) => {
    const eps = gaussians(x.length, random);
    return x.map((v, i) => {
      const u = (v - lo) / (hi - lo);
      let s = noise * eps[i];
      for (let k = 0; k < 3; k++) s += (a[k] / (k + 1)) * Math.sin(2 * Math.PI * (k + 1) * u + phase[k]);
      return s;
    });
  };
}

const column = (x: Float64Array): Rows64 => ({ x, n: x.length, d: 1 });

/** Positions 0..n−1 given to rows in the listed order. */
function ranksOf(order: Int32Array): Float64Array {
  const ranks = new Float64Array(order.length);
  order.forEach((row, r) => (ranks[row] = r));
  return ranks;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Stage I imitation: Bob's fitted values on his rows against Alice's tree on surrogate positions. */
function stageIRho(learner: Learner, lambda: number, x: Float64Array, surrogates: Float64Array[], tasks: ((x: Float64Array) => Float64Array)[]) {
  const sums = surrogates.map(() => 0);
  for (const task of tasks) {
    const y = task(x);
    const target = learner.fit(column(x), y, lambda).predict(column(x));
    surrogates.forEach((s, k) => {
      sums[k] += rhoRegression(target, learner.fit(column(s), y, lambda).predict(column(s)), target.length);
    });
  }
  return sums.map((s) => s / tasks.length);
}

/** Stage II imitation: Bob's tree against Alice's trees (fitted on surrogate values) on fresh x. */
function stageIIRho(learner: Learner, lambda: number, x: Float64Array, surrogates: Float64Array[], tasks: ((x: Float64Array) => Float64Array)[], fresh: Float64Array) {
  const sums = surrogates.map(() => 0);
  for (const task of tasks) {
    const y = task(x);
    const target = learner.fit(column(x), y, lambda).predict(column(fresh));
    surrogates.forEach((s, k) => {
      sums[k] += rhoRegression(target, learner.fit(column(s), y, lambda).predict(column(fresh)), target.length);
    });
  }
  return sums.map((s) => s / tasks.length);
}

export const assistedTree: Experiment<AssistedTreeParams> = {
  name: 'assisted-tree',
  description: 'Imitating a regression tree in assisted learning (Xian et al.): Stage I label queries recover the order of Bob\'s private values; Stage II bisection recovers the values',
  schema,
  async run(params, ctx) {
    const rows: ExperimentRow[] = [];
    for (const setting of params.trees) rows.push(...(await runSetting(params, setting, ctx)));
    return { rows, summary: params.trees.flatMap((setting) => summarise(rows, params.ns, setting)) };
  },
};

type TreeSetting = z.output<typeof treeSetting>;

async function runSetting(params: AssistedTreeParams, setting: TreeSetting, ctx: ExperimentContext): Promise<ExperimentRow[]> {
  const learner = regressionTree({ maxDepth: setting.maxDepth, minLeaf: setting.minLeaf });
  const [lo, hi] = params.range;
  const rows: ExperimentRow[] = [];
  const base = { strategy: setting.strategy, maxDepth: setting.maxDepth, minLeaf: setting.minLeaf, lambda: setting.lambda, budget: setting.budget ?? null };
  for (const n of params.ns) {
    for (const seed of params.seeds) {
      const draw = rng(seed, `assisted-tree-x-${n}`);
      const x = new Float64Array(n).map(() => lo + (hi - lo) * draw());
      const truth = Int32Array.from([...Array(n).keys()].sort((a, b) => x[a] - x[b]));
      const service = new TrainingService({
        learner,
        data: column(x),
        protocol: 'II',
        lambdas: [],
        releases: ['fitted', 'handle'],
      });
      const taskRandom = rng(seed, `assisted-tree-tasks-${n}`);
      const tasks = Array.from({ length: params.evalTasks }, () => smoothTask(lo, hi, params.taskNoise, taskRandom));

      let started = performance.now();
      const recovery = await recoverOrder(service, n, { strategy: setting.strategy, budget: setting.budget, lambda: setting.lambda, seed });
      const orderSeconds = (performance.now() - started) / 1000;
      const usageI = await service.usage();
      const randomOrder = shuffleInPlace(Int32Array.from(truth), rng(seed, 'assisted-tree-baseline'));
      const [rho, rhoRandomOrder] = stageIRho(learner, setting.lambda, x, [ranksOf(recovery.order), ranksOf(randomOrder)], tasks);
      const exact = sameUpToReversal(recovery.order, truth);
      rows.push({
        part: 'order',
        ...base,
        n,
        seed,
        k1: usageI.fits,
        k2: usageI.rows,
        orderRecovered: exact,
        complete: recovery.complete,
        placed: recovery.placed,
        kendallTau: Math.abs(kendallTau(recovery.order, truth)),
        kendallTauRandomOrder: Math.abs(kendallTau(randomOrder, truth)),
        rho,
        rhoRandomOrder,
        seconds: orderSeconds,
      });
      ctx.log(`assisted-tree ${setting.strategy} depth ${setting.maxDepth} order n=${n} seed=${seed}: k1=${usageI.fits} recovered=${exact} ρ=${rho.toExponential(2)}`);

      if (!params.stageII) continue;
      const valueRow: ExperimentRow = { part: 'values', ...base, n, seed };
      if (!recovery.complete) {
        // Without the full order Alice cannot tell which step of a handle is which cut.
        rows.push({ ...valueRow, k1: usageI.fits, k2: usageI.rows, precision: null, meanError: null, precisionBound: null, minGap: null, rho: null, rhoQuantiles: null, seconds: null });
        continue;
      }
      started = performance.now();
      const extra = await coverCuts(service, recovery.order, recovery.queries, setting.lambda);
      const values = await recoverValues(service, [...recovery.queries, ...extra], recovery.order, { range: [lo, hi], tolerance: params.tolerance });
      const seconds = (performance.now() - started) / 1000;
      const usage = await service.usage();
      let worst = 0;
      let total = 0;
      for (let i = 0; i < n; i++) {
        const e = Math.abs(values.x[i] - x[i]);
        worst = Math.max(worst, e);
        total += e;
      }
      let minGap = Infinity;
      for (let r = 1; r < n; r++) minGap = Math.min(minGap, x[truth[r]] - x[truth[r - 1]]);
      const quantiles = new Float64Array(n);
      values.order.forEach((row, r) => (quantiles[row] = lo + ((hi - lo) * (r + 0.5)) / n));
      const freshDraw = rng(seed, `assisted-tree-fresh-${n}`);
      const fresh = new Float64Array(params.evalPoints).map(() => lo + (hi - lo) * freshDraw());
      const [rhoValues, rhoQuantiles] = stageIIRho(learner, setting.lambda, x, [values.x, quantiles], tasks, fresh);
      rows.push({
        ...valueRow,
        k1: usage.fits,
        k2: usage.rows,
        precision: worst,
        meanError: total / n,
        precisionBound: values.bound,
        minGap,
        rho: rhoValues,
        rhoQuantiles,
        seconds,
      });
      ctx.log(`assisted-tree ${setting.strategy} depth ${setting.maxDepth} values n=${n} seed=${seed}: k1=${usage.fits} k2=${usage.rows} precision=${worst.toExponential(2)} ρ=${rhoValues.toExponential(2)}`);
    }
  }
  return rows;
}

function summarise(all: ExperimentRow[], ns: number[], setting: TreeSetting): string[] {
  const budget = setting.budget ?? null;
  const rows = all.filter(
    (r) => r.strategy === setting.strategy && r.maxDepth === setting.maxDepth && r.minLeaf === setting.minLeaf && r.lambda === setting.lambda && r.budget === budget,
  );
  const lines: string[] = [
    `${setting.strategy} queries${budget === null ? '' : ` (budget ${budget})`}, Bob's tree depth ${setting.maxDepth}, leaves ≥ ${setting.minLeaf}, λ ${setting.lambda}:`,
  ];
  const fmt = (v: number) => (Number.isFinite(v) ? v.toPrecision(3) : 'n/a');
  for (const n of ns) {
    const order = rows.filter((r) => r.part === 'order' && r.n === n);
    const values = rows.filter((r) => r.part === 'values' && r.n === n && typeof r.precision === 'number');
    const num = (rs: ExperimentRow[], key: string) => mean(rs.map((r) => r[key] as number));
    let line =
      `n=${n}: order recovered ${order.filter((r) => r.orderRecovered).length}/${order.length}, |τ| ${fmt(num(order, 'kendallTau'))}` +
      ` (random ${fmt(num(order, 'kendallTauRandomOrder'))}), k₁ ${fmt(num(order, 'k1'))}, Stage I ρ ${fmt(num(order, 'rho'))} (random order ${fmt(num(order, 'rhoRandomOrder'))})`;
    if (values.length > 0) {
      line +=
        `; Stage II: k₁ ${fmt(num(values, 'k1'))}, k₂ ${fmt(num(values, 'k2'))}, max |x̂ − x| ${fmt(num(values, 'precision'))}` +
        ` (bound ${fmt(num(values, 'precisionBound'))}), ρ ${fmt(num(values, 'rho'))} (quantiles ${fmt(num(values, 'rhoQuantiles'))})`;
    }
    lines.push(`  ${line}`);
  }
  return lines;
}
