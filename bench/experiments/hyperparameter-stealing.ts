import { z } from 'zod';
import { stealLambda } from '../../attacks/hyperparameter-stealing.ts';
import { logGrid } from '../../models/learners/cv.ts';
import { hingeLambdaSet, svmHinge } from '../../models/learners/svm-hinge.ts';
import { LEARNERS } from '../../models/learners/index.ts';
import type { Learner } from '../../models/learners/types.ts';
import { gaussianClassification, gaussianRegression, type SyntheticData } from './synthetic.ts';
import type { Experiment, ExperimentRow } from './types.ts';

const count = (fallback: number, min: number) => z.number().int().min(min).default(fallback);

const schema = z.strictObject({
  /** Learner names; default every registered learner with a stationarity condition (gradients). */
  learners: z
    .array(z.string())
    .min(1)
    .optional()
    .superRefine((names, ctx) => {
      for (const name of names ?? []) {
        const learner = LEARNERS[name];
        if (!learner) ctx.addIssue({ code: 'custom', message: `unknown learner "${name}"; known: ${Object.keys(LEARNERS).join(', ')}` });
        else if (!learner.gradients) ctx.addIssue({ code: 'custom', message: `learner "${name}" has no stationarity condition to steal λ from` });
      }
    }),
  /** True λ values the service trains with. */
  lambdas: z.array(z.number().positive().finite()).min(1).default(() => logGrid(-3, 3, 7)),
  seeds: z.array(z.number().int()).min(1).default([1, 2, 3]),
  data: z
    .strictObject({
      regression: z.strictObject({ n: count(500, 2), d: count(20, 1), noise: z.number().min(0).finite().default(0.5) }).prefault({}),
      // 8,000 rows so that L1 logistic regression keeps a nonzero weight (λ stays identifiable) up to λ = 1e3.
      classification: z.strictObject({ n: count(8000, 2), d: count(10, 1) }).prefault({}),
    })
    .prefault({}),
});

export type HyperparameterStealingParams = z.output<typeof schema>;

/**
 * Wang & Gong (S&P 2018), Protocol II-like: the service trains with the user's λ and releases the
 * parameters; the attacker solves the stationarity condition for λ (stealLambda). One row per
 * learner × λ × seed with the relative error |λ̂ − λ|/λ; every learner of a task sees the same
 * synthetic data set per seed. A fit whose regulariser gradient is zero (an all-zero L1 model)
 * leaves λ unidentifiable: its row has lambdaHat and relError null.
 */
export const hyperparameterStealing: Experiment<HyperparameterStealingParams> = {
  name: 'hyperparameter-stealing',
  description: 'Steal λ from released parameters (Wang & Gong 2018): relative error over true λ for each learner',
  schema,
  async run(params, ctx) {
    const learners = (params.learners ?? Object.keys(LEARNERS).filter((name) => LEARNERS[name].gradients)).map((name) => LEARNERS[name]);
    const rows: ExperimentRow[] = [];
    for (const seed of params.seeds) {
      const data: Record<Learner['task'], () => SyntheticData> = {
        regression: once(() => gaussianRegression(params.data.regression.n, params.data.regression.d, seed, params.data.regression.noise)),
        classification: once(() => gaussianClassification(params.data.classification.n, params.data.classification.d, seed)),
      };
      for (const learner of learners) {
        const { rows: x, y } = data[learner.task]();
        for (const lambda of params.lambdas) {
          let started = performance.now();
          let fitted;
          try {
            fitted = learner.fit(x, y, lambda, { seed });
          } catch (err) {
            throw new Error(`${learner.name} at λ = ${lambda}, seed ${seed}: ${(err as Error).message}`, { cause: err });
          }
          const fitSeconds = (performance.now() - started) / 1000;
          started = performance.now();
          const lambdaHat = stealOrNull(learner, fitted.params, x, y);
          const stealSeconds = (performance.now() - started) / 1000;
          // The hinge SVM's parameters can be optimal for a whole interval of λ (d + 1 rows on the
          // margin pin them): record that interval, which no estimator can beat.
          const set = learner === svmHinge ? hingeLambdaSet(fitted.params, x, y) : undefined;
          rows.push({
            learner: learner.name,
            task: learner.task,
            lambda,
            seed,
            lambdaHat,
            relError: lambdaHat === null ? null : Math.abs(lambdaHat - lambda) / lambda,
            identifiable: lambdaHat !== null,
            n: x.n,
            d: x.d,
            fitSeconds,
            stealSeconds,
            ...(set ? { lambdaLow: set.lo, lambdaHigh: set.hi, lambdaInSet: set.lo <= lambda * (1 + 1e-9) && lambda <= set.hi * (1 + 1e-9) } : {}),
          });
        }
        ctx.log(`seed ${seed} ${learner.name}: ${params.lambdas.length} λ values done`);
      }
    }
    return { rows, summary: summarise(rows, learners, params) };
  },
};

function stealOrNull(learner: Learner, params: Float64Array, x: SyntheticData['rows'], y: Float64Array): number | null {
  try {
    return stealLambda(learner, params, x, y);
  } catch (err) {
    if (/not identifiable/.test((err as Error).message)) return null;
    throw err;
  }
}

function once<T>(make: () => T): () => T {
  let value: T | undefined;
  return () => (value ??= make());
}

/** Per learner: median and max relative error over every λ × seed, and how many fits left λ unidentifiable. */
export function summarise(rows: ExperimentRow[], learners: Learner[], params: HyperparameterStealingParams): string[] {
  const lo = Math.min(...params.lambdas);
  const hi = Math.max(...params.lambdas);
  const lines = [`relative error |λ̂ − λ|/λ over λ ∈ [${lo.toExponential(0)}, ${hi.toExponential(0)}] (${params.lambdas.length} values) × ${params.seeds.length} seeds`];
  for (const learner of learners) {
    const mine = rows.filter((r) => r.learner === learner.name);
    const errors = mine.map((r) => r.relError).filter((e): e is number => typeof e === 'number').sort((a, b) => a - b);
    const missing = mine.length - errors.length;
    const tail = missing ? `; λ not identifiable in ${missing} of ${mine.length} fits (all-zero weights)` : '';
    if (!errors.length) {
      lines.push(`${learner.name}: no identifiable fit${tail}`);
      continue;
    }
    const median = (errors[(errors.length - 1) >> 1] + errors[errors.length >> 1]) / 2;
    const sets = mine.filter((r) => typeof r.lambdaLow === 'number' && (r.lambdaHigh as number) > (r.lambdaLow as number));
    const setNote = sets.length
      ? `; in ${sets.length} of ${mine.length} fits the same model is optimal for an interval of λ (true λ inside it in ${sets.filter((r) => r.lambdaInSet).length})`
      : '';
    lines.push(`${learner.name}: median ${median.toExponential(1)}, max ${errors[errors.length - 1].toExponential(1)}${tail}${setNote}`);
  }
  return lines;
}
