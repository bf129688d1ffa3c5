import { Matrix } from 'ml-matrix';
import { z } from 'zod';
import {
  centredSpanBasis,
  featuresFromBasis,
  gaussianRows,
  probeWithRandomLabels,
  sampleCovariance,
} from '../../attacks/assisted-linear.ts';
import { sampleRegressionTasks } from '../../datasets/task-sampler.ts';
import { ridge } from '../../models/learners/ridge.ts';
import type { Rows64 } from '../../models/learners/types.ts';
import { gaussians, rng } from '../../models/seed.ts';
import { TrainingService } from '../../serve/training.ts';
import { rhoRegression } from '../metric.ts';
import type { Experiment, ExperimentRow } from './types.ts';

/**
 * Assisted learning, Bob's learner linear regression on X_B ~ N(0, Σ_B): Alice probes Stage I with
 * k₁ random label vectors, reconstructs X̂_B from the span of the answers and Σ_B, and imitates Bob.
 *
 * What ρ measures: Bob's learning functionality on his own individuals. For a held-out task
 * y' = X_B w + noise·ε (w ~ N(0, I), fresh per task), the target is Bob's fit's values on his n
 * individuals (exactly what his Stage I would answer for y'); the imitation is Bob's learner, same
 * λ, fitted by Alice on X̂_B to y' and evaluated on X̂_B. ρ = ‖f_Bob − f_Alice‖² / ‖f_Bob‖² over the
 * n values (rhoRegression with dim = n), averaged over the held-out tasks. This target is the one
 * the rotation left over in X̂_B cannot touch when the learner ignores it (see
 * attacks/assisted-linear.ts). Bob's predictions for new individuals are not imitated: Alice never
 * sees Bob's features of new individuals, so she has nothing to evaluate an imitation on.
 *
 * Bob's ridge penalty is λ = penalty · n (the summed loss grows with n; a fixed λ would turn ridge
 * into least squares as n grows and the trend would say nothing about the attack). penalty = 0 is
 * least squares. Alice knows Bob's learner and λ; his data is the secret.
 *
 * Imitations per cell: 'sigma-known' (Σ_B exact), 'sigma-estimated' (Σ_B estimated from m draws of
 * Bob's distribution), and 'random-features' (a baseline that ignores Stage I: X̂_B drawn afresh
 * from N(0, Σ_B)).
 */

const covarianceKind = z.enum(['identity', 'ar1']);
type CovarianceKind = z.infer<typeof covarianceKind>;

export const assistedLinearSchema = z
  .strictObject({
    ns: z.array(z.number().int().min(8)).min(1).describe('Bob\'s individuals'),
    seeds: z.array(z.number().int()).min(1),
    p: z.number().int().min(1).max(50).default(5).describe('Bob\'s feature count'),
    k1: z.number().int().min(1).optional().describe('Stage I probes (default p: enough to span the centred col(X_B))'),
    penalties: z.array(z.number().min(0)).min(1).default([0, 1]).describe('Bob\'s ridge λ / n; 0 is least squares'),
    covariances: z.array(covarianceKind).min(1).default(['identity', 'ar1']),
    ar1: z.number().gt(-1).lt(1).default(0.7).describe('Σ_jk = ar1^|j−k| for the ar1 covariance'),
    sigmaSamples: z.array(z.number().int().min(2)).default([200]).describe('m: draws Alice estimates Σ_B from'),
    evalTasks: z.number().int().min(1).default(20),
    taskNoise: z.number().min(0).default(1),
    /**
     * The task family ρ is averaged over: `noisy-linear` y' = X_B w + noise·ε (the default), or a
     * sampler of datasets/task-sampler.ts — `linear` (y' = X_B β) or `smooth` (sums of tanh ridges,
     * outside Bob's span).
     */
    taskFamily: z.enum(['noisy-linear', 'linear', 'smooth']).default('noisy-linear'),
  })
  .superRefine((c, ctx) => {
    const k1 = c.k1 ?? c.p;
    if (k1 < c.p) ctx.addIssue({ code: 'custom', path: ['k1'], message: `k1 = ${k1} probes cannot span p = ${c.p} directions` });
    for (const n of c.ns) if (n <= c.p + 1) ctx.addIssue({ code: 'custom', path: ['ns'], message: `n = ${n} must exceed p + 1 = ${c.p + 1}` });
  });

export type AssistedLinearParams = z.infer<typeof assistedLinearSchema>;

export function covarianceMatrix(kind: CovarianceKind, p: number, ar1: number): Matrix {
  if (kind === 'identity') return Matrix.eye(p, p);
  return new Matrix(Array.from({ length: p }, (_, j) => Array.from({ length: p }, (_, k) => ar1 ** Math.abs(j - k))));
}

/** Held-out tasks on Bob's individuals: y' = X_B w + noise·ε. */
function linearTasks(xb: Rows64, count: number, noise: number, random: () => number): Float64Array[] {
  const { x, n, d } = xb;
  return Array.from({ length: count }, () => {
    const w = gaussians(d, random);
    const eps = gaussians(n, random);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = noise * eps[i];
      for (let j = 0; j < d; j++) s += x[i * d + j] * w[j];
      y[i] = s;
    }
    return y;
  });
}

/** Mean over tasks of ρ between Bob's fitted values and the same learner refitted on X̂_B. */
export function fittedValueRho(xb: Rows64, xhat: Rows64, tasks: readonly Float64Array[], lambda: number): number {
  let total = 0;
  for (const y of tasks) {
    const target = ridge.fit(xb, y, lambda).predict(xb);
    const imitation = ridge.fit(xhat, y, lambda).predict(xhat);
    total += rhoRegression(target, imitation, target.length);
  }
  return total / tasks.length;
}

export const assistedLinear: Experiment<AssistedLinearParams> = {
  name: 'assisted-linear',
  description:
    'Assisted learning with a linear-regression Bob: k₁ random-label Stage I probes span col(X_B); with Σ_B Alice rebuilds X_B up to a rotation and imitates Bob\'s fits on his individuals',
  schema: assistedLinearSchema,
  curves: { x: 'n', by: ['imitation', 'covariance', 'penalty', 'm'] },
  async run(params, ctx) {
    const { p, penalties, covariances, ar1, sigmaSamples, evalTasks, taskNoise, taskFamily } = params;
    const k1 = params.k1 ?? p;
    const rows: ExperimentRow[] = [];
    for (const covariance of covariances) {
      const sigma = covarianceMatrix(covariance, p, ar1);
      for (const penalty of penalties) {
        for (const n of params.ns) {
          const lambda = penalty * n;
          for (const seed of params.seeds) {
            const xb = gaussianRows(n, sigma, rng(seed, `assisted-bob:${covariance}:${n}`));
            const bob = new TrainingService({
              learner: ridge,
              data: xb,
              protocol: 'I',
              lambdas: [lambda],
              releases: ['fitted'],
              caps: { fits: k1 },
              seed,
            });
            const answers = await probeWithRandomLabels(bob, n, k1, seed);
            const basis = centredSpanBasis(answers, p);
            const tasks =
              taskFamily === 'noisy-linear'
                ? linearTasks(xb, evalTasks, taskNoise, rng(seed, `assisted-tasks:${n}`))
                : sampleRegressionTasks(xb, taskFamily, evalTasks, seed);
            const { fits } = await bob.usage();
            const base = { covariance, penalty, lambda, n, seed, k1, fits, taskFamily, tasks: evalTasks };

            rows.push({ ...base, imitation: 'sigma-known', m: null, rho: fittedValueRho(xb, featuresFromBasis(basis, sigma), tasks, lambda) });
            for (const m of sigmaSamples) {
              const estimate = sampleCovariance(gaussianRows(m, sigma, rng(seed, `assisted-side:${m}`)));
              rows.push({ ...base, imitation: 'sigma-estimated', m, rho: fittedValueRho(xb, featuresFromBasis(basis, estimate), tasks, lambda) });
            }
            const fake = gaussianRows(n, sigma, rng(seed, `assisted-fake:${n}`));
            rows.push({ ...base, imitation: 'random-features', m: null, rho: fittedValueRho(xb, fake, tasks, lambda) });
          }
          ctx.log(`assisted-linear: ${covariance} penalty ${penalty} n ${n} done`);
        }
      }
    }
    return { rows, summary: summarise(rows) };
  },
};

function summarise(rows: ExperimentRow[]): string[] {
  const groups = new Map<string, Map<number, number[]>>();
  for (const r of rows) {
    const key = `${r.imitation}${r.m === null ? '' : ` m=${r.m}`}, Σ ${r.covariance}, λ = ${r.penalty}·n`;
    const byN = groups.get(key) ?? new Map<number, number[]>();
    const list = byN.get(r.n as number) ?? [];
    list.push(r.rho as number);
    byN.set(r.n as number, list);
    groups.set(key, byN);
  }
  const lines = ['mean ρ on Bob\'s fitted values for held-out tasks, by n:'];
  for (const [key, byN] of groups) {
    const points = [...byN].map(([n, rhos]) => `n=${n}: ${(rhos.reduce((s, v) => s + v, 0) / rhos.length).toExponential(2)}`);
    lines.push(`${key} — ${points.join(', ')}`);
  }
  return lines;
}
