import { z } from 'zod';
import { correctedLeastSquares, laplaceRelease } from '../../attacks/dp-imitation.ts';
import { linearPredict, ridge } from '../../models/learners/ridge.ts';
import type { Rows64 } from '../../models/learners/types.ts';
import { gaussians, rng } from '../../models/seed.ts';
import { rhoRegression } from '../metric.ts';
import type { Experiment, ExperimentRow } from './types.ts';

/**
 * DP is not imitation privacy, both ways round.
 *
 * Setting: Bob holds X_B, n individuals × p features uniform on [−Δ/2, Δ/2]; Alice holds labels
 * y = X_B β + noise (in assisted learning she owns the task). Bob's model is least squares of y on
 * X_B, f_B(x) = x·β_B + b_B — the function Alice would otherwise reach only through Stage II
 * queries. ρ = ‖f_B − f_A‖² / ‖f_B‖² over evalSize new individuals of Bob's distribution
 * (rhoRegression with dim = evalSize).
 *
 * Part 'a-ldp': Bob releases X̃_B = X_B + Laplace(Δ/ε) per entry (ε-LDP per entry; a row is
 * pε-LDP). Estimator 'corrected' removes the known noise covariance (attacks/dp-imitation.ts);
 * 'naive' is least squares on X̃_B, attenuated towards 0. The corrected ρ → 0 as n grows at any ε.
 *
 * Part 'b-converse': releases that are not DP for any ε yet barely move ρ. Each release row
 * carries rhoNoRelease, the same seed's ρ without it:
 *   base 'no-data' (Alice knows nothing of X_B: her best guess is the constant ȳ), release
 *     'unused-feature': a feature z Bob holds but his model does not use, released exactly for
 *     every individual (new ones included); Alice regresses y on z.
 *   base 'ldp' (the ε-LDP release of part a, corrected estimator), release 'raw-row': on top of
 *     it, individual 0's raw feature row exactly; Alice treats that row as noise-free.
 */

export const dpImitationSchema = z.strictObject({
  ns: z.array(z.number().int().min(10)).min(1),
  ldpEpsilons: z.array(z.number().positive()).min(1).describe('per-entry LDP ε'),
  seeds: z.array(z.number().int()).min(1),
  p: z.number().int().min(1).max(50).default(3),
  sensitivity: z.number().positive().default(2).describe('Δ: the length of each feature\'s range'),
  labelNoise: z.number().min(0).default(0.5),
  evalSize: z.number().int().min(1).default(2000),
  converse: z.boolean().default(true).describe('run part b-converse as well'),
});

export type DpImitationParams = z.infer<typeof dpImitationSchema>;

function uniformRows(n: number, d: number, range: number, random: () => number): Rows64 {
  const x = new Float64Array(n * d);
  for (let i = 0; i < x.length; i++) x[i] = (random() - 0.5) * range;
  return { x, n, d };
}

export const dpImitation: Experiment<DpImitationParams> = {
  name: 'dp-imitation',
  description:
    'DP vs imitation privacy: an ε-LDP release of Bob\'s features still lets bias-corrected least squares imitate his model (ρ → 0 with n); releases that break DP can leave ρ where it was',
  schema: dpImitationSchema,
  curves: { x: 'n', by: ['part', 'estimator', 'base', 'release', 'ldpEpsilon'] },
  async run(params, ctx) {
    const { p, sensitivity, labelNoise, evalSize } = params;
    const rows: ExperimentRow[] = [];
    for (const seed of params.seeds) {
      const beta = gaussians(p, rng(seed, 'dp-weights'));
      const evalRows = uniformRows(evalSize, p, sensitivity, rng(seed, 'dp-eval'));
      const unusedEval: Rows64 = { x: gaussians(evalSize, rng(seed, 'dp-unused-eval')), n: evalSize, d: 1 };
      for (const n of params.ns) {
        const xb = uniformRows(n, p, sensitivity, rng(seed, `dp-bob:${n}`));
        const noise = gaussians(n, rng(seed, `dp-labels:${n}`));
        const y = linearPredict(Float64Array.from([...beta, 0]), xb);
        for (let i = 0; i < n; i++) y[i] += labelNoise * noise[i];
        const target = ridge.fit(xb, y, 0).predict(evalRows);
        const rho = (imitation: Float64Array) => rhoRegression(target, imitation, target.length);

        for (const epsilon of params.ldpEpsilons) {
          const release = laplaceRelease(xb, epsilon, sensitivity, rng(seed, `dp-noise:${n}:${epsilon}`));
          const variances = new Float64Array(n).fill(release.noiseVariance);
          const rhoCorrected = rho(linearPredict(correctedLeastSquares(release.rows, y, variances), evalRows));
          const rhoNaive = rho(ridge.fit(release.rows, y, 0).predict(evalRows));
          const cell = { n, ldpEpsilon: epsilon, seed, scale: release.scale };
          rows.push({ part: 'a-ldp', estimator: 'corrected', ...cell, rho: rhoCorrected });
          rows.push({ part: 'a-ldp', estimator: 'naive', ...cell, rho: rhoNaive });

          if (params.converse) {
            const withRow = Float64Array.from(release.rows.x);
            withRow.set(xb.x.subarray(0, p), 0);
            variances[0] = 0;
            const rhoRaw = rho(linearPredict(correctedLeastSquares({ x: withRow, n, d: p }, y, variances), evalRows));
            rows.push({ part: 'b-converse', base: 'ldp', release: 'none', ...cell, breaksDp: false, rho: rhoCorrected });
            rows.push({ part: 'b-converse', base: 'ldp', release: 'raw-row', ...cell, breaksDp: true, rho: rhoRaw, rhoNoRelease: rhoCorrected });
          }
        }

        if (params.converse) {
          const yMean = y.reduce((s, v) => s + v, 0) / n;
          const rhoNone = rho(new Float64Array(evalSize).fill(yMean));
          const unused: Rows64 = { x: gaussians(n, rng(seed, `dp-unused:${n}`)), n, d: 1 };
          const rhoUnused = rho(ridge.fit(unused, y, 0).predict(unusedEval));
          const cell = { n, ldpEpsilon: null, seed };
          rows.push({ part: 'b-converse', base: 'no-data', release: 'none', ...cell, breaksDp: false, rho: rhoNone });
          rows.push({ part: 'b-converse', base: 'no-data', release: 'unused-feature', ...cell, breaksDp: true, rho: rhoUnused, rhoNoRelease: rhoNone });
        }
      }
      ctx.log(`dp-imitation: seed ${seed} done`);
    }
    return { rows, summary: summarise(rows) };
  },
};

const mean = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length;

function summarise(rows: ExperimentRow[]): string[] {
  const groups = new Map<string, number[]>();
  for (const r of rows) {
    const key =
      r.part === 'a-ldp'
        ? `a-ldp ${r.estimator} ε=${r.ldpEpsilon}`
        : `b-converse ${r.base}${r.epsilon === null ? '' : ` ε=${r.ldpEpsilon}`} release=${r.release}`;
    const cell = `${key}|${r.n}`;
    groups.set(cell, [...(groups.get(cell) ?? []), r.rho as number]);
  }
  const lines = new Map<string, string[]>();
  for (const [cell, rhos] of groups) {
    const [key, n] = cell.split('|');
    lines.set(key, [...(lines.get(key) ?? []), `n=${n}: ${mean(rhos).toExponential(2)}`]);
  }
  return [
    'mean ρ of Alice\'s imitation of Bob\'s least-squares predictor on new individuals, by n',
    '(a-ldp: from an ε-LDP release; b-converse: releases that break DP, beside the same base without them)',
    ...[...lines].map(([key, points]) => `${key} — ${points.join(', ')}`),
  ];
}
