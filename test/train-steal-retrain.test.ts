import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stealLambda } from '../attacks/hyperparameter-stealing.ts';
import { gaussianClassification, gaussianRegression } from '../bench/experiments/synthetic.ts';
import { trainStealRetrain, trainStealRetrainSchema } from '../bench/experiments/train-steal-retrain.ts';
import type { ExperimentRow } from '../bench/experiments/types.ts';
import { validationError } from '../models/learners/cv.ts';
import { networkOutputs, nn, smallNetwork } from '../models/learners/nn.ts';
import { ridge } from '../models/learners/ridge.ts';
import { hingeLambdaSet, hingeSubgradient, svmHinge } from '../models/learners/svm-hinge.ts';
import { linearRegGradient, margins, svmSqHinge } from '../models/learners/svm-sqhinge.ts';
import { takeRows, takeValues, type Learner, type Rows64 } from '../models/learners/types.ts';
import { rng } from '../models/seed.ts';
import { loadLibsvm } from '../models/targets/svm.ts';

const relErr = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

/** ‖∂L + λ∂R‖∞ relative to ‖λ∂R‖∞. */
function stationarity(learner: Learner, params: Float64Array, rows: Rows64, y: Float64Array, lambda: number): number {
  const { loss, reg } = learner.gradients!(params, rows, y);
  return maxAbs(loss.map((v, j) => v + lambda * reg[j])) / maxAbs(reg.map((v) => lambda * v));
}

type SummedLoss = (params: Float64Array) => number;

/** Central differences of the summed loss against gradients().loss at random params. */
function gradientCheck(learner: Learner, rows: Rows64, y: Float64Array, lossAt: SummedLoss, p: number): number {
  const random = rng(11, 'grad-check');
  const params = Float64Array.from({ length: p }, () => random() - 0.5);
  const { loss } = learner.gradients!(params, rows, y);
  let worst = 0;
  for (let j = 0; j < p; j++) {
    const e = 1e-6;
    const up = params.slice();
    const down = params.slice();
    up[j] += e;
    down[j] -= e;
    const fd = (lossAt(up) - lossAt(down)) / (2 * e);
    worst = Math.max(worst, Math.abs(fd - loss[j]) / Math.max(1, Math.abs(loss[j])));
  }
  return worst;
}

test('svm-sqhinge: gradients match finite differences; fits are stationary to rounding and λ is recovered to 1e-9', () => {
  const { rows, y } = gaussianClassification(1000, 10, 3);
  const sqhinge = (w: Float64Array) => margins(w, rows, y).reduce((s, m) => s + Math.max(0, 1 - m) ** 2, 0);
  assert.ok(gradientCheck(svmSqHinge, rows, y, sqhinge, 11) < 1e-6);
  for (const lambda of [0.1, 10, 1000]) {
    const fitted = svmSqHinge.fit(rows, y, lambda);
    assert.ok(stationarity(svmSqHinge, fitted.params, rows, y, lambda) < 1e-10, `λ=${lambda}`);
    const lambdaHat = stealLambda(svmSqHinge, fitted.params, rows, y);
    assert.ok(relErr(lambdaHat, lambda) < 1e-9, `λ=${lambda}: λ̂=${lambdaHat}`);
  }
  // λ moves the solution: a wrong λ would not pass the stationarity check above.
  const a = svmSqHinge.fit(rows, y, 0.1).params;
  const b = svmSqHinge.fit(rows, y, 1000).params;
  assert.ok(maxAbs(a.map((v, j) => v - b[j])) > 0.1);
});

test('svm-hinge: the solver agrees with libsvm (C = 1/(2λ)) and its objective is no higher', async () => {
  const SVM = await loadLibsvm();
  const d = 5;
  const { rows, y } = gaussianClassification(600, d, 7);
  const objective = (z: Float64Array, lambda: number) =>
    margins(z, rows, y).reduce((s, m) => s + Math.max(0, 1 - m), 0) + lambda * z.subarray(0, d).reduce((s, v) => s + v * v, 0);
  for (const lambda of [0.05, 1, 20]) {
    const svm = new SVM({ kernel: SVM.KERNEL_TYPES.LINEAR, type: SVM.SVM_TYPES.C_SVC, cost: 1 / (2 * lambda), tolerance: 1e-7, shrinking: false, quiet: true });
    try {
      svm.train(Array.from({ length: rows.n }, (_, i) => Array.from(rows.x.subarray(i * d, i * d + d))), Array.from(y));
      // Linear model text: "rho ρ", "label l₁ l₂", then per support vector "coef k:v …" (1-based k).
      const lines = svm.serializeModel().trim().split('\n');
      const first = Number(lines.find((l) => l.startsWith('label'))!.split(/\s+/)[1]);
      const rho = Number(lines.find((l) => l.startsWith('rho'))!.split(/\s+/)[1]);
      const ref = new Float64Array(d + 1);
      for (const line of lines.slice(lines.indexOf('SV') + 1)) {
        const [coef, ...pairs] = line.trim().split(/\s+/);
        for (const pair of pairs) {
          const [k, v] = pair.split(':');
          ref[Number(k) - 1] += Number(coef) * Number(v);
        }
      }
      ref[d] = -rho;
      if (first === -1) ref.forEach((v, j) => (ref[j] = -v));
      const ours = svmHinge.fit(rows, y, lambda).params;
      assert.ok(maxAbs(ours.map((v, j) => v - ref[j])) < 1e-3, `λ=${lambda}: ${ours} vs libsvm ${ref}`);
      assert.ok(objective(ours, lambda) <= objective(ref, lambda) * (1 + 1e-12), `λ=${lambda}`);
    } finally {
      svm.free();
    }
  }
});

test('svm-hinge: fitting the margin rows\' subgradient recovers λ exactly where the naive one is off', () => {
  const { rows, y } = gaussianClassification(1000, 10, 3);
  const lambda = 100;
  const fitted = svmHinge.fit(rows, y, lambda);
  const set = hingeLambdaSet(fitted.params, rows, y);
  // 7 rows sit on the margin (fewer than d + 1 = 11), so λ is determined.
  assert.ok(set.identifiable && set.onMargin > 0 && set.onMargin <= 10, `${set.onMargin} rows on the margin`);
  const stolen = stealLambda(svmHinge, fitted.params, rows, y);
  assert.ok(relErr(stolen, lambda) < 1e-9, `λ̂=${stolen}`);
  // The textbook subgradient decides the margin rows by rounding: measured 6.9e-3 off here.
  const naive = hingeSubgradient(fitted.params, rows, y, 'naive');
  const reg = linearRegGradient(fitted.params, rows.d);
  const naiveHat = -naive.reduce((s, v, j) => s + v * reg[j], 0) / reg.reduce((s, v) => s + v * v, 0);
  assert.ok(relErr(naiveHat, lambda) > 1e-3, `naive λ̂=${naiveHat}`);
});

test('svm-hinge: with d + 1 rows on the margin only an interval of λ is identifiable, and it is the true one', () => {
  const { rows, y } = gaussianClassification(1000, 10, 3);
  const lambda = 1;
  const fitted = svmHinge.fit(rows, y, lambda);
  const set = hingeLambdaSet(fitted.params, rows, y);
  assert.is(set.identifiable, false);
  assert.is(set.onMargin, 11);
  assert.ok(set.lo < lambda && lambda < set.hi, `[${set.lo}, ${set.hi}] should hold ${lambda}`);
  assert.ok(set.hi - set.lo > 0.05, 'measured [0.935, 1.193]');
  // Every λ inside gives the same model — no estimator could do better than the interval …
  const inside = svmHinge.fit(rows, y, set.lo + 0.9 * (set.hi - set.lo)).params;
  assert.ok(maxAbs(inside.map((v, j) => v - fitted.params[j])) < 1e-9);
  // … and λ outside it gives another one.
  const outside = svmHinge.fit(rows, y, set.hi * 1.5).params;
  assert.ok(maxAbs(outside.map((v, j) => v - fitted.params[j])) > 1e-4);
  const stolen = stealLambda(svmHinge, fitted.params, rows, y);
  assert.ok(stolen >= set.lo && stolen <= set.hi);
});

test('nn: backprop matches finite differences; L-BFGS + Newton polish reach stationarity and λ is recovered', () => {
  const reg = gaussianRegression(300, 5, 3);
  const p = 10 * 5 + 2 * 10 + 1;
  const squared = (w: Float64Array) => networkOutputs(w, reg.rows, 10).reduce((s, f, i) => s + (reg.y[i] - f) ** 2, 0);
  assert.ok(gradientCheck(nn, reg.rows, reg.y, squared, p) < 1e-5);
  const lambda = 1;
  const fitted = nn.fit(reg.rows, reg.y, lambda);
  // It learned: training MSE far below the labels' variance (‖w‖² ≈ 5).
  const mse = validationError(nn, fitted.predict(reg.rows), reg.y);
  const mean = reg.y.reduce((s, v) => s + v, 0) / reg.y.length;
  const variance = reg.y.reduce((s, v) => s + (v - mean) ** 2, 0) / reg.y.length;
  assert.ok(mse < 0.1 * variance, `train MSE ${mse}, variance ${variance}`);
  // Measured ~1e-14; the bound leaves room for other machines' rounding.
  assert.ok(stationarity(nn, fitted.params, reg.rows, reg.y, lambda) < 1e-8);
  assert.ok(relErr(stealLambda(nn, fitted.params, reg.rows, reg.y), lambda) < 1e-6);

  const logistic = smallNetwork({ task: 'classification', hidden: 5 });
  const cls = gaussianClassification(300, 5, 4);
  const logLoss = (w: Float64Array) => networkOutputs(w, cls.rows, 5).reduce((s, f, i) => s + Math.log1p(Math.exp(-cls.y[i] * f)), 0);
  assert.ok(gradientCheck(logistic, cls.rows, cls.y, logLoss, 5 * 5 + 2 * 5 + 1) < 1e-5);
  const fittedCls = logistic.fit(cls.rows, cls.y, lambda);
  assert.ok(relErr(stealLambda(logistic, fittedCls.params, cls.rows, cls.y), lambda) < 1e-6);
});

const SMALL = {
  percents: [5],
  lambdaGrid: { lo: -3, hi: 3, count: 13 },
  folds: 5,
  seeds: [1],
};

test('Train-Steal-Retrain on 4,000 rows, q = 5%: M3 steals the sample λ exactly, retrains on all rows, and beats M2 at a fraction of M1\'s cost', async () => {
  const params = trainStealRetrainSchema.parse({
    ...SMALL,
    datasets: [
      { name: 'reg', task: 'regression', learner: 'ridge', rows: 4000, testRows: 4000, features: 30, noise: 1 },
      { name: 'cls', task: 'classification', learner: 'svm-sqhinge', rows: 4000, testRows: 4000, features: 20 },
    ],
  });
  const { rows, summary } = await trainStealRetrain.run(params, { log: () => {} });
  assert.is(rows.length, 2 * 3);
  assert.is(summary.length, 2 * 2);
  const pick = (dataset: string, method: string) => rows.find((r) => r.dataset === dataset && r.method === method) as ExperimentRow & Record<string, number>;
  for (const dataset of ['reg', 'cls']) {
    const [m1, m2, m3] = ['M1', 'M2', 'M3'].map((m) => pick(dataset, m));
    assert.is(m2.sampleRows, 200);
    // Stealing: λ̂ is the λ the provider's sample cross-validation chose.
    assert.ok(relErr(m3.lambdaHat, m3.lambda) < 1e-8, `${dataset}: λ̂=${m3.lambdaHat}, λ=${m3.lambda}`);
    // Quality: M3 is close to M1 and much better than M2 (200 rows).
    assert.ok(m2.relError > 0.03, `${dataset}: M2 ${m2.relError}`);
    assert.ok(m3.relError < m2.relError / 5, `${dataset}: M3 ${m3.relError} vs M2 ${m2.relError}`);
    // Cost: M1 is 13 λ × 5 folds + 1 fits on all rows; M3 the same count on 5% of them plus one Protocol II fit.
    assert.is(m1.providerFits, 66);
    assert.is(m3.providerFits, m2.providerFits + 1);
    assert.ok(m3.providerRowsTrained < m1.providerRowsTrained / 10);
    assert.ok(m3.rowSpeedup > 10);
  }
  // Protocol II really fitted all rows with λ̂: its test MSE is a direct ridge fit's.
  const { rows: all, y } = gaussianRegression(8000, 30, 1, 1);
  const first = Int32Array.from({ length: 4000 }, (_, i) => i);
  const last = Int32Array.from({ length: 4000 }, (_, i) => 4000 + i);
  const m3 = pick('reg', 'M3');
  const direct = ridge.fit(takeRows(all, first), takeValues(y, first), m3.lambdaHat);
  assert.ok(relErr(m3.testError, validationError(ridge, direct.predict(takeRows(all, last)), takeValues(y, last))) < 1e-12);
});

test('train-steal-retrain params: unknown learners, task mismatches and too-small samples are refused by name', () => {
  const bad = (datasets: unknown[], extra: Record<string, unknown> = {}) => trainStealRetrainSchema.safeParse({ ...SMALL, ...extra, datasets });
  const unknown = bad([{ name: 'x', task: 'regression', learner: 'nope', rows: 1000, features: 3 }]);
  assert.ok(!unknown.success && /unknown learner \\?"nope/.test(unknown.error.message));
  const mismatch = bad([{ name: 'x', task: 'regression', learner: 'svm-sqhinge', rows: 1000, features: 3 }]);
  assert.ok(!mismatch.success && /classification learner/.test(mismatch.error.message));
  const tiny = bad([{ name: 'x', task: 'regression', learner: 'ridge', rows: 1000, features: 3 }], { percents: [0.5] });
  assert.ok(!tiny.success && /too few for 5-fold/.test(tiny.error.message));
});

test.run();
