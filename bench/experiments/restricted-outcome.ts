import { z } from 'zod';
import { buildDictionary, coefficientGrid, nearestOutcome, quantise, type OutcomeDictionary } from '../../attacks/restricted-outcome.ts';
import { logGrid } from '../../models/learners/cv.ts';
import { LEARNERS } from '../../models/learners/index.ts';
import { regressionTree } from '../../models/learners/tree-regression.ts';
import { rowsTimes, type Learner, type Rows64 } from '../../models/learners/types.ts';
import { gaussians, rng } from '../../models/seed.ts';
import { TrainingService, type TrainingServiceOptions } from '../../serve/training.ts';
import { rhoRegression } from '../metric.ts';
import type { Experiment, ExperimentRow } from './types.ts';

/**
 * Restricted outcome (Xian et al.): Alice's tasks are linear in Bob's features, y = X_B β with β
 * uniform on [−1, 1]^p (Bob's X_B: n × p standard normal, private). She spends k₁ Stage I fits on
 * a quantised cover of the family, a grid of levels^p cell centres ('grid') or k₁ distinct random
 * β rounded to a precision ('random'), and answers fresh tasks (plus noise·ε when noise > 0) by the
 * stored fitted values of the nearest stored label vector, never querying Bob for them.
 *
 * ρ = ‖f_Bob(y') − f̂‖² / ‖f_Bob(y')‖² over Bob's n fitted values (rhoRegression with dim = n),
 * averaged over fresh tasks; f_Bob(y') is what Bob's Stage I would have answered (computed on an
 * uncounted copy of his service). Fresh tasks keep ‖β‖₂ ≥ minNorm: a task near β = 0 has almost no
 * signal, its relative error is unbounded, and for p ≥ 2 the mean of the ratio over β uniform on
 * the cube would have no finite expectation. rhoPooled = Σ‖f − f̂‖² / Σ‖f‖² over the tasks is
 * reported beside it. The cover still spans the whole cube. With noise > 0 the part of f_Bob(y') due to the noise is not in
 * the family, and ρ keeps a floor that no dictionary removes.
 */

const schema = z
  .strictObject({
    learner: z
      .string()
      .default('ridge')
      .refine((name) => Object.hasOwn(LEARNERS, name) && LEARNERS[name].task === 'regression', {
        message: `not a registered regression learner; known: ${Object.keys(LEARNERS).filter((k) => LEARNERS[k].task === 'regression').join(', ')}`,
      }),
    tree: z.strictObject({ maxDepth: z.number().int().min(1).max(30), minLeaf: z.number().int().min(1) }).optional().describe('growth limits when learner is tree-regression'),
    protocol: z.enum(['I', 'II']).default('I').describe('I: Bob cross-validates λ on each task; II: Alice sends λ'),
    lambda: z.number().min(0).finite().default(1).describe('λ Alice sends under Protocol II'),
    lambdas: z.array(z.number().min(0).finite()).min(1).default(() => logGrid(-3, 3, 7)).describe('Bob\'s secret grid under Protocol I'),
    n: z.number().int().min(10).default(200),
    ps: z.array(z.number().int().min(1).max(6)).min(1).default([2]).describe('dimensions of the task family (Bob\'s features), one run each'),
    dictionary: z.enum(['grid', 'random']).default('grid'),
    levels: z.array(z.number().int().min(1)).min(1).default([1, 2, 3, 4, 6, 8, 12, 16, 24, 32]).describe('grid cells per axis (k₁ = levels^p)'),
    maxFits: z.number().int().min(1).max(100_000).default(5000).describe('grid levels with levels^p above this are skipped'),
    budgets: z.array(z.number().int().min(1)).min(1).default([1, 4, 16, 64, 256, 1024]).describe('k₁ for the random dictionary (nested)'),
    precision: z.number().positive().default(0.05).describe('quantisation step of the random dictionary'),
    noise: z.number().min(0).finite().default(0).describe('label noise of the fresh tasks'),
    minNorm: z.number().min(0).lt(1).default(0.5).describe('fresh tasks have ‖β‖₂ ≥ minNorm (a per-task relative error needs a signal)'),
    freshTasks: z.number().int().min(1).default(100),
    seeds: z.array(z.number().int()).min(1).default([1, 2, 3]),
    epsilons: z.array(z.number().positive()).min(1).default([0.1, 0.05, 0.01]),
  })
  .superRefine((c, ctx) => {
    if (c.tree && c.learner !== 'tree-regression') ctx.addIssue({ code: 'custom', path: ['tree'], message: 'tree limits apply to learner "tree-regression" only' });
    for (const p of c.ps) {
      if (c.dictionary === 'grid') {
        if (Math.min(...c.levels) ** p > c.maxFits) ctx.addIssue({ code: 'custom', path: ['levels'], message: `every grid exceeds maxFits = ${c.maxFits} at p = ${p}` });
      } else {
        const distinct = (2 * Math.floor(1 / c.precision + 1e-9) + 1) ** p;
        const largest = Math.max(...c.budgets);
        if (largest > distinct) ctx.addIssue({ code: 'custom', path: ['budgets'], message: `only ${distinct} distinct quantised tasks exist at precision ${c.precision} for p = ${p}; budget ${largest} is more` });
      }
    }
  });

export type RestrictedOutcomeParams = z.output<typeof schema>;

function tasksOf(xb: Rows64, betas: Float64Array[]): Float64Array[] {
  return betas.map((beta) => rowsTimes(xb, beta));
}

/** k distinct β drawn uniformly on [−1, 1]^p and rounded to the precision, in draw order. */
function randomQuantised(p: number, k: number, precision: number, random: () => number): Float64Array[] {
  const seen = new Set<string>();
  const out: Float64Array[] = [];
  for (let tries = 0; out.length < k; tries++) {
    if (tries > 1000 * k) throw new Error(`could not draw ${k} distinct quantised tasks at precision ${precision}`);
    const beta = quantise(new Float64Array(p).map(() => 2 * random() - 1), precision);
    const key = Array.from(beta).join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(beta);
  }
  return out;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

export const restrictedOutcome: Experiment<RestrictedOutcomeParams> = {
  name: 'restricted-outcome',
  description: 'Restricted outcome (Xian et al.): a dictionary of k₁ Stage I answers on a quantised task family answers fresh tasks by nearest neighbour; ρ against k₁',
  schema,
  async run(params, ctx) {
    const learner: Learner = params.learner === 'tree-regression' && params.tree ? regressionTree(params.tree) : LEARNERS[params.learner];
    const { n } = params;
    const rows: ExperimentRow[] = [];
    const sendLambda = params.protocol === 'II' ? params.lambda : undefined;
    for (const p of params.ps) {
      for (const seed of params.seeds) {
        const xb: Rows64 = { x: gaussians(n * p, rng(seed, 'restricted-outcome-features')), n, d: p };
        const options: TrainingServiceOptions = {
          learner,
          data: xb,
          protocol: params.protocol,
          lambdas: params.lambdas,
          seed,
          releases: ['fitted'],
        };
        // Bob's true answers to the fresh tasks, on a copy of his service that Alice's budget does not pay for.
        const reference = new TrainingService(options);
        const freshRandom = rng(seed, 'restricted-outcome-fresh');
        const freshBetas = Array.from({ length: params.freshTasks }, () => {
          for (;;) {
            const beta = new Float64Array(p).map(() => 2 * freshRandom() - 1);
            if (Math.hypot(...beta) >= params.minNorm) return beta;
          }
        });
        const fresh = tasksOf(xb, freshBetas).map((y) => {
          if (params.noise > 0) {
            const eps = gaussians(n, freshRandom);
            for (let i = 0; i < n; i++) y[i] += params.noise * eps[i];
          }
          return y;
        });
        const truth: Float64Array[] = [];
        for (const y of fresh) truth.push((await reference.fit(sendLambda === undefined ? { y } : { y, lambda: sendLambda })).fitted!);

        const measure = (dictionary: OutcomeDictionary) => {
          const rhos: number[] = [];
          const distances: number[] = [];
          let err = 0;
          let norm2 = 0;
          fresh.forEach((y, t) => {
            const answer = nearestOutcome(dictionary, y);
            rhos.push(rhoRegression(truth[t], answer.outcome, n));
            for (let i = 0; i < n; i++) {
              err += (truth[t][i] - answer.outcome[i]) ** 2;
              norm2 += truth[t][i] ** 2;
            }
            let norm = 0;
            for (let i = 0; i < n; i++) norm += y[i] * y[i];
            distances.push(answer.distance / Math.sqrt(norm));
          });
          const sorted = [...rhos].sort((a, b) => a - b);
          return { rho: mean(rhos), rhoMedian: sorted[Math.floor(sorted.length / 2)], rhoPooled: err / norm2, relativeDistance: mean(distances) };
        };

        const base = { learner: learner.name, protocol: params.protocol, dictionary: params.dictionary, n, p, seed };
        if (params.dictionary === 'grid') {
          for (const levels of params.levels) {
            if (levels ** p > params.maxFits) continue;
            const service = new TrainingService(options);
            const started = performance.now();
            const dictionary = await buildDictionary(service, tasksOf(xb, coefficientGrid(p, levels)), sendLambda);
            const k1 = (await service.usage()).fits;
            rows.push({ ...base, levels, k1, ...measure(dictionary), seconds: (performance.now() - started) / 1000 });
            ctx.log(`restricted-outcome p=${p} seed=${seed} levels=${levels}: k1=${k1} ρ=${(rows.at(-1)!.rho as number).toExponential(2)}`);
          }
        } else {
          const budgets = [...params.budgets].sort((a, b) => a - b);
          const betas = randomQuantised(p, budgets[budgets.length - 1], params.precision, rng(seed, 'restricted-outcome-dictionary'));
          const service = new TrainingService(options);
          const started = performance.now();
          const full = await buildDictionary(service, tasksOf(xb, betas), sendLambda);
          const seconds = (performance.now() - started) / 1000;
          for (const k1 of budgets) {
            // Budgets share one draw: a smaller dictionary is a prefix of the larger.
            const dictionary = { labels: full.labels.slice(0, k1), outcomes: full.outcomes.slice(0, k1) };
            rows.push({ ...base, levels: null, k1, ...measure(dictionary), seconds: (seconds * k1) / budgets[budgets.length - 1] });
          }
        }
      }
    }
    return { rows, summary: params.ps.flatMap((p) => summarise(rows.filter((r) => r.p === p), p, params.epsilons)) };
  },
};

function summarise(rows: ExperimentRow[], p: number, epsilons: number[]): string[] {
  const byK1 = new Map<number, number[]>();
  for (const r of rows) byK1.set(r.k1 as number, [...(byK1.get(r.k1 as number) ?? []), r.rho as number]);
  const curve = [...byK1.entries()].sort((a, b) => a[0] - b[0]).map(([k1, rhos]) => ({ k1, rho: mean(rhos) }));
  const lines = [`p = ${p}, mean ρ by k₁: ${curve.map((c) => `${c.k1}: ${c.rho.toPrecision(3)}`).join(', ')}`];
  for (const eps of epsilons) {
    const hit = curve.find((c) => c.rho <= eps);
    lines.push(hit ? `  ρ ≤ ${eps} from k₁ = ${hit.k1} (mean ρ ${hit.rho.toPrecision(3)})` : `  ρ ≤ ${eps} not reached up to k₁ = ${curve[curve.length - 1].k1}`);
  }
  return lines;
}
