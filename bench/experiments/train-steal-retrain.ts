import { z } from 'zod';
import { stealLambda } from '../../attacks/hyperparameter-stealing.ts';
import { logGrid, validationError } from '../../models/learners/cv.ts';
import { LEARNERS, getLearner } from '../../models/learners/index.ts';
import { takeRows, takeValues, type Learner, type Rows64 } from '../../models/learners/types.ts';
import { sampleIndices } from '../../models/seed.ts';
import { TrainingService, type Protocol } from '../../serve/training.ts';
import { gaussianClassification, gaussianRegression } from './synthetic.ts';
import type { Experiment, ExperimentRow } from './types.ts';

/**
 * Train-Steal-Retrain (Wang & Gong, S&P 2018, "Implications"): a user who wants the provider's
 * cross-validated model on n rows can instead
 *   M3: have the provider cross-validate on a q% sample (Protocol I), steal λ̂ from the returned
 *       parameters, and pay for one Protocol II fit on all n rows with λ̂,
 * against
 *   M1: the provider cross-validates on all n rows (Protocol I);
 *   M2: the provider cross-validates on the q% sample only.
 * Quality is the relative test-error difference to M1 (regression: MSE, classification: 0-1
 * error), cost the provider computation TrainingService.usage() counts.
 */
const datasetSchema = z.strictObject({
  name: z.string().min(1),
  task: z.enum(['regression', 'classification']),
  /** A learner of the LEARNERS registry with a stationarity condition (gradients). */
  learner: z.string(),
  rows: z.number().int().min(100),
  testRows: z.number().int().min(100).default(10_000),
  features: z.number().int().min(1),
  /** Regression only: the label noise's standard deviation. */
  noise: z.number().nonnegative().default(0.5),
});

export const trainStealRetrainSchema = z
  .strictObject({
    datasets: z.array(datasetSchema).min(1),
    /** Sample sizes for M2 and M3, in percent of the rows. */
    percents: z.array(z.number().gt(0).lt(100)).min(1).default([1, 2, 5, 10]),
    /** The provider's secret λ grid: count values evenly spaced in log10 from 10^lo to 10^hi. */
    lambdaGrid: z.strictObject({ lo: z.number(), hi: z.number(), count: z.number().int().min(1) }).default({ lo: -3, hi: 3, count: 13 }),
    folds: z.number().int().min(2).default(5),
    seeds: z.array(z.number().int()).min(1).default([1, 2, 3]),
  })
  .superRefine((params, ctx) => {
    params.datasets.forEach((ds, i) => {
      const learner = LEARNERS[ds.learner];
      if (!learner) {
        ctx.addIssue({ code: 'custom', path: ['datasets', i, 'learner'], message: `unknown learner "${ds.learner}"; known: ${Object.keys(LEARNERS).join(', ')}` });
        return;
      }
      if (learner.task !== ds.task) {
        ctx.addIssue({ code: 'custom', path: ['datasets', i, 'learner'], message: `${ds.learner} is a ${learner.task} learner, dataset "${ds.name}" is ${ds.task}` });
      }
      if (!learner.gradients) {
        ctx.addIssue({ code: 'custom', path: ['datasets', i, 'learner'], message: `${ds.learner} has no stationarity condition to steal λ from` });
      }
      for (const q of params.percents) {
        const sample = sampleSize(ds.rows, q);
        if (sample < 2 * params.folds) {
          ctx.addIssue({ code: 'custom', path: ['percents'], message: `${q}% of ${ds.rows} rows is ${sample} rows, too few for ${params.folds}-fold cross-validation` });
        }
      }
    });
  });

export type TrainStealRetrainParams = z.infer<typeof trainStealRetrainSchema>;
type DatasetSpec = TrainStealRetrainParams['datasets'][number];

export function sampleSize(rows: number, percent: number): number {
  return Math.round((rows * percent) / 100);
}

/** A learner that remembers the λ of its latest fit: a provider's last fit uses the λ it chose. */
function recording(learner: Learner): { learner: Learner; lastLambda: () => number } {
  let last = NaN;
  return {
    learner: {
      ...learner,
      fit(rows, y, lambda, opts) {
        last = lambda;
        return learner.fit(rows, y, lambda, opts);
      },
    },
    lastLambda: () => last,
  };
}

interface ServiceRun {
  params: Float64Array;
  testError: number;
  /** The λ the provider's final fit used. */
  lambda: number;
  providerFits: number;
  providerSeconds: number;
  /** Σ rows over the provider's fits: a size-aware count of its work, independent of the clock. */
  providerRowsTrained: number;
}

/** One fit request to a fresh MLaaS-style service (the user uploads rows), then test error and usage. */
async function serviceFit(
  learner: Learner,
  protocol: Protocol,
  train: { rows: Rows64; y: Float64Array },
  test: { rows: Rows64; y: Float64Array },
  settings: { lambdas: number[]; folds: number; seed: number; lambda?: number },
): Promise<ServiceRun> {
  const spy = recording(learner);
  const service = new TrainingService({
    learner: spy.learner,
    acceptsData: true,
    protocol,
    lambdas: settings.lambdas,
    folds: settings.folds,
    seed: settings.seed,
    releases: ['params', 'handle'],
  });
  const response = await service.fit({ x: train.rows, y: train.y, lambda: settings.lambda });
  const predicted = await service.predict(response.handle!, test.rows);
  const usage = await service.usage();
  const n = train.rows.n;
  // Cross-validation trains each λ on (folds − 1)/folds of the rows, folds times, then once on all.
  const providerRowsTrained = protocol === 'I' ? settings.lambdas.length * (settings.folds - 1) * n + n : n;
  return {
    params: response.params!,
    testError: validationError(learner, predicted, test.y),
    lambda: spy.lastLambda(),
    providerFits: usage.providerFits,
    providerSeconds: usage.providerSeconds,
    providerRowsTrained,
  };
}

function makeData(ds: DatasetSpec, seed: number) {
  const total = ds.rows + ds.testRows;
  const { rows, y } = ds.task === 'regression' ? gaussianRegression(total, ds.features, seed, ds.noise) : gaussianClassification(total, ds.features, seed);
  const trainIdx = Int32Array.from({ length: ds.rows }, (_, i) => i);
  const testIdx = Int32Array.from({ length: ds.testRows }, (_, i) => ds.rows + i);
  return {
    train: { rows: takeRows(rows, trainIdx), y: takeValues(y, trainIdx) },
    test: { rows: takeRows(rows, testIdx), y: takeValues(y, testIdx) },
  };
}

const relative = (error: number, reference: number): number => Math.abs(error - reference) / reference;

/** All rows of one dataset × seed: M1 once, then M2 and M3 for every sample size. */
export async function trainStealRetrainOnce(
  ds: DatasetSpec,
  seed: number,
  settings: { percents: number[]; lambdas: number[]; folds: number },
  log: (line: string) => void = () => {},
): Promise<ExperimentRow[]> {
  const learner = getLearner(ds.learner);
  const { train, test } = makeData(ds, seed);
  const { lambdas, folds } = settings;
  const common = { dataset: ds.name, learner: ds.learner, seed, rows: ds.rows };
  const m1 = await serviceFit(learner, 'I', train, test, { lambdas, folds, seed });
  log(`${ds.name} seed ${seed}: M1 λ=${m1.lambda.toPrecision(3)} test error ${m1.testError.toPrecision(4)} in ${m1.providerSeconds.toFixed(2)} s`);
  const out: ExperimentRow[] = [
    {
      ...common,
      q: 100,
      sampleRows: ds.rows,
      method: 'M1',
      testError: m1.testError,
      relError: 0,
      providerSeconds: m1.providerSeconds,
      providerFits: m1.providerFits,
      providerRowsTrained: m1.providerRowsTrained,
      speedup: 1,
      fitSpeedup: 1,
      rowSpeedup: 1,
      lambda: m1.lambda,
      lambdaHat: null,
      stealSeconds: null,
    },
  ];
  for (const q of settings.percents) {
    // One seeded permutation per seed: the samples of one seed are nested as q grows.
    const idx = sampleIndices(ds.rows, sampleSize(ds.rows, q), seed);
    const sample = { rows: takeRows(train.rows, idx), y: takeValues(train.y, idx) };
    const m2 = await serviceFit(learner, 'I', sample, test, { lambdas, folds, seed });
    // The user's side: least-squares λ̂ from the parameters the sample fit released.
    const stealStart = performance.now();
    const lambdaHat = stealLambda(learner, m2.params, sample.rows, sample.y);
    const stealSeconds = (performance.now() - stealStart) / 1000;
    // Protocol II takes λ ≥ 0; rounding can leave λ̂ a hair below 0 when the provider chose λ = 0.
    const retrain = await serviceFit(learner, 'II', train, test, { lambdas, folds, seed, lambda: Math.max(0, lambdaHat) });
    const m3 = {
      providerSeconds: m2.providerSeconds + retrain.providerSeconds,
      providerFits: m2.providerFits + retrain.providerFits,
      providerRowsTrained: m2.providerRowsTrained + retrain.providerRowsTrained,
    };
    const base = { ...common, q, sampleRows: idx.length };
    out.push({
      ...base,
      method: 'M2',
      testError: m2.testError,
      relError: relative(m2.testError, m1.testError),
      providerSeconds: m2.providerSeconds,
      providerFits: m2.providerFits,
      providerRowsTrained: m2.providerRowsTrained,
      speedup: m1.providerSeconds / m2.providerSeconds,
      fitSpeedup: m1.providerFits / m2.providerFits,
      rowSpeedup: m1.providerRowsTrained / m2.providerRowsTrained,
      lambda: m2.lambda,
      lambdaHat: null,
      stealSeconds: null,
    });
    out.push({
      ...base,
      method: 'M3',
      testError: retrain.testError,
      relError: relative(retrain.testError, m1.testError),
      ...m3,
      speedup: m1.providerSeconds / m3.providerSeconds,
      fitSpeedup: m1.providerFits / m3.providerFits,
      rowSpeedup: m1.providerRowsTrained / m3.providerRowsTrained,
      // The secret λ the sample fit used, and what stealing recovered of it.
      lambda: m2.lambda,
      lambdaHat,
      stealSeconds,
    });
  }
  return out;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

function summarise(rows: ExperimentRow[], params: TrainStealRetrainParams): string[] {
  const lines: string[] = [];
  for (const ds of params.datasets) {
    const of = (method: string, q?: number) => rows.filter((r) => r.dataset === ds.name && r.method === method && (q === undefined || r.q === q));
    const m1 = of('M1');
    const metric = ds.task === 'regression' ? 'MSE' : 'error';
    lines.push(
      `${ds.name} (${ds.learner}, ${ds.rows} rows, d=${ds.features}): M1 test ${metric} ${mean(m1.map((r) => r.testError as number)).toPrecision(4)}, ` +
        `${mean(m1.map((r) => r.providerSeconds as number)).toFixed(2)} s, ${m1[0]?.providerFits} provider fits`,
    );
    for (const q of params.percents) {
      const m2 = of('M2', q);
      const m3 = of('M3', q);
      const num = (rs: ExperimentRow[], key: string) => mean(rs.map((r) => r[key] as number));
      const stealErr = Math.max(...m3.map((r) => Math.abs((r.lambdaHat as number) - (r.lambda as number)) / (r.lambda as number)));
      lines.push(
        `  q=${q}%: rel. ${metric} diff M2 ${num(m2, 'relError').toExponential(2)}, M3 ${num(m3, 'relError').toExponential(2)}; ` +
          `M3 speedup ×${num(m3, 'speedup').toFixed(1)} (seconds), ×${num(m3, 'rowSpeedup').toFixed(1)} (rows trained), ` +
          `fits ${num(m3, 'providerFits')} vs ${num(m1, 'providerFits')}; worst λ̂ rel. error ${stealErr.toExponential(1)}`,
      );
    }
  }
  return lines;
}

export const trainStealRetrain: Experiment<TrainStealRetrainParams> = {
  name: 'train-steal-retrain',
  description: 'Wang & Gong (S&P 2018) Train-Steal-Retrain: cross-validate on a q% sample, steal λ, retrain on all rows (M3), against full CV (M1) and sample-only CV (M2)',
  schema: trainStealRetrainSchema as z.ZodType<TrainStealRetrainParams>,
  async run(params, ctx) {
    const lambdas = logGrid(params.lambdaGrid.lo, params.lambdaGrid.hi, params.lambdaGrid.count);
    const rows: ExperimentRow[] = [];
    for (const ds of params.datasets) {
      for (const seed of params.seeds) {
        rows.push(...(await trainStealRetrainOnce(ds, seed, { percents: params.percents, lambdas, folds: params.folds }, ctx.log)));
      }
    }
    return { rows, summary: summarise(rows, params) };
  },
};
