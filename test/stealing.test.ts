import { readFileSync } from 'node:fs';
import { Matrix, solve } from 'ml-matrix';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stealLambda } from '../attacks/hyperparameter-stealing.ts';
import { hyperparameterStealing } from '../bench/experiments/hyperparameter-stealing.ts';
import { gaussianClassification, gaussianRegression } from '../bench/experiments/synthetic.ts';
import { LEARNERS } from '../models/learners/index.ts';
import { kernelRidge, krr, rbfKernel } from '../models/learners/krr.ts';
import { lasso } from '../models/learners/lasso.ts';
import { logregL1 } from '../models/learners/logreg-l1.ts';
import { logregL2 } from '../models/learners/logreg-l2.ts';
import { ridge } from '../models/learners/ridge.ts';
import type { Learner, Rows64 } from '../models/learners/types.ts';
import { rng } from '../models/seed.ts';

// Objectives written out independently of the learners, straight from their definitions.
function linear(theta: ArrayLike<number>, rows: Rows64, i: number): number {
  let s = theta[rows.d];
  for (let j = 0; j < rows.d; j++) s += rows.x[i * rows.d + j] * theta[j];
  return s;
}
const l1 = (theta: ArrayLike<number>, d: number) => Array.from({ length: d }, (_, j) => Math.abs(theta[j])).reduce((a, b) => a + b, 0);
const l2 = (theta: ArrayLike<number>, d: number) => Array.from({ length: d }, (_, j) => theta[j] ** 2).reduce((a, b) => a + b, 0);
const squares = (theta: ArrayLike<number>, rows: Rows64, y: Float64Array) => y.reduce((s, yi, i) => s + (yi - linear(theta, rows, i)) ** 2, 0);
const logistic = (theta: ArrayLike<number>, rows: Rows64, y: Float64Array) => y.reduce((s, yi, i) => s + Math.log(1 + Math.exp(-yi * linear(theta, rows, i))), 0);

type Objective = (theta: Float64Array, rows: Rows64, y: Float64Array, lambda: number) => number;
const OBJECTIVES: Record<string, Objective> = {
  lasso: (t, r, y, lam) => squares(t, r, y) + lam * l1(t, r.d),
  'logreg-l2': (t, r, y, lam) => logistic(t, r, y) + lam * l2(t, r.d),
  'logreg-l1': (t, r, y, lam) => logistic(t, r, y) + lam * l1(t, r.d),
  krr(alpha, rows, y, lam) {
    const k = rbfKernel(rows, rows, 1 / rows.d);
    let fit = 0;
    let penalty = 0;
    for (let i = 0; i < rows.n; i++) {
      let ka = 0;
      for (let j = 0; j < rows.n; j++) ka += k[i * rows.n + j] * alpha[j];
      fit += (y[i] - ka) ** 2;
      penalty += alpha[i] * ka;
    }
    return fit + lam * penalty;
  },
};

const regression = gaussianRegression(80, 6, 11, 0.5);
const classification = gaussianClassification(400, 5, 12);
const dataFor = (learner: Learner) => (learner.task === 'regression' ? regression : classification);
const MINE = [lasso, krr, logregL2, logregL1];

for (const learner of MINE) {
  test(`${learner.name}: gradients match finite differences of the stated objective`, () => {
    const { rows, y } = dataFor(learner);
    const random = rng(3, 'fd');
    const lambda = 0.7;
    // A generic point with no zero weight, where every term is differentiable.
    const m = learner.name === 'krr' ? rows.n : rows.d + 1;
    const theta = Float64Array.from({ length: m }, () => (random() - 0.5) * (learner.name === 'krr' ? 0.2 : 1));
    const { loss, reg } = learner.gradients!(theta, rows, y);
    const f = OBJECTIVES[learner.name];
    for (const j of [0, 1, m - 1]) {
      const h = 1e-5 * Math.max(1, Math.abs(theta[j]));
      const up = Float64Array.from(theta);
      const down = Float64Array.from(theta);
      up[j] += h;
      down[j] -= h;
      const numeric = (f(up, rows, y, lambda) - f(down, rows, y, lambda)) / (2 * h);
      const analytic = loss[j] + lambda * reg[j];
      assert.ok(Math.abs(numeric - analytic) <= 1e-6 * Math.max(1, Math.abs(numeric)), `coordinate ${j}: numeric ${numeric}, analytic ${analytic}`);
    }
  });

  test(`${learner.name}: the fit is stationary, minimises the objective, and stealLambda recovers λ`, () => {
    const { rows, y } = dataFor(learner);
    const f = OBJECTIVES[learner.name];
    for (const lambda of [0.05, 3, 40]) {
      const { params } = learner.fit(rows, y, lambda);
      const { loss, reg } = learner.gradients!(params, rows, y);
      const scale = Math.max(...Array.from(loss, Math.abs), lambda);
      for (let j = 0; j < loss.length; j++) {
        if (reg[j] !== 0 || j === rows.d || learner.name === 'krr' || learner.name === 'logreg-l2') {
          assert.ok(Math.abs(loss[j] + lambda * reg[j]) <= 1e-9 * scale, `λ=${lambda}, coordinate ${j}: ${loss[j] + lambda * reg[j]}`);
        } else {
          // A zero L1 weight: stationarity is the subgradient condition |∂L/∂w_j| ≤ λ.
          assert.ok(Math.abs(loss[j]) <= lambda * (1 + 1e-9), `λ=${lambda}, zero weight ${j}: |∂L/∂w| = ${Math.abs(loss[j])} > λ`);
        }
      }
      const best = f(params, rows, y, lambda);
      const random = rng(5, 'perturb');
      for (let k = 0; k < 20; k++) {
        const moved = params.map((v) => v + (random() - 0.5) * 1e-3 * Math.max(1e-2, Math.abs(v)));
        assert.ok(f(moved, rows, y, lambda) >= best - 1e-12 * Math.abs(best), `λ=${lambda}: a perturbed point has a lower objective`);
      }
      const hat = stealLambda(learner, params, rows, y);
      assert.ok(Math.abs(hat - lambda) / lambda < 1e-8, `λ=${lambda}: stolen ${hat}`);
    }
  });
}

test('lasso at λ = 0 is ordinary least squares (ridge at λ = 0)', () => {
  const { rows, y } = regression;
  const a = lasso.fit(rows, y, 0).params;
  const b = ridge.fit(rows, y, 0).params;
  for (let j = 0; j < a.length; j++) assert.ok(Math.abs(a[j] - b[j]) < 1e-10 * Math.max(1, Math.abs(b[j])), `coefficient ${j}: ${a[j]} vs ${b[j]}`);
});

test('lasso on an orthogonal centred design is soft-thresholding of xⱼᵀy/‖xⱼ‖²', () => {
  // Columns (1,1,−1,−1) and (1,−1,1,−1): centred, orthogonal, ‖xⱼ‖² = 4.
  const rows: Rows64 = { x: Float64Array.from([1, 1, 1, -1, -1, 1, -1, -1]), n: 4, d: 2 };
  const y = Float64Array.from([5, 1, 0, 2]); // mean 2; xᵀy = (4, 2)
  const lambda = 6; // threshold λ/2 = 3 on xⱼᵀy: w = ((4 − 3)/4, 0)
  const { params } = lasso.fit(rows, y, lambda);
  assert.ok(Math.abs(params[0] - 0.25) < 1e-14, `w0 = ${params[0]}`);
  assert.is(params[1], 0);
  assert.ok(Math.abs(params[2] - 2) < 1e-14, `b = ${params[2]}`);
  assert.ok(Math.abs(stealLambda(lasso, params, rows, y) - lambda) < 1e-12);
});

test('krr: one training point gives α = y/(1 + λ); small sets match (K + λI)⁻¹y and predict Kα', () => {
  const one: Rows64 = { x: Float64Array.from([0.3, -1]), n: 1, d: 2 };
  assert.ok(Math.abs(krr.fit(one, Float64Array.of(2), 3).params[0] - 0.5) < 1e-15);

  const rows: Rows64 = { x: regression.rows.x.slice(0, 12 * 6), n: 12, d: 6 };
  const y = regression.y.slice(0, 12);
  const gamma = 0.3;
  const learner = kernelRidge({ gamma });
  const fitted = learner.fit(rows, y, 0.2);
  const k = rbfKernel(rows, rows, gamma);
  const a = new Matrix(12, 12);
  for (let i = 0; i < 12; i++) for (let j = 0; j < 12; j++) a.set(i, j, Math.exp(-gamma * dist2(rows, i, j)) + (i === j ? 0.2 : 0));
  const expected = solve(a, Matrix.columnVector(Array.from(y))).to1DArray();
  const predicted = fitted.predict(rows);
  for (let i = 0; i < 12; i++) {
    assert.ok(Math.abs(fitted.params[i] - expected[i]) < 1e-10 * Math.max(1, Math.abs(expected[i])), `α${i}`);
    let ka = 0;
    for (let j = 0; j < 12; j++) ka += k[i * 12 + j] * expected[j];
    assert.ok(Math.abs(predicted[i] - ka) < 1e-10);
  }
  assert.throws(() => learner.fit(rows, y, 0), /λ must be > 0/);
  assert.throws(() => kernelRidge({ gamma: -1 }), /γ must be a positive number/);
});

function dist2(rows: Rows64, i: number, j: number): number {
  let s = 0;
  for (let t = 0; t < rows.d; t++) s += (rows.x[i * rows.d + t] - rows.x[j * rows.d + t]) ** 2;
  return s;
}

test('logistic regression at λ = 0 on symmetric 1-d data has the closed form w = ln(a/b), b = 0', () => {
  // a rows (x=1, y=1), b rows (x=1, y=−1), and their mirror images: σ(w) = a/(a + b) at the optimum.
  const [a, b] = [3, 1];
  const xs: number[] = [];
  const ys: number[] = [];
  for (let i = 0; i < a; i++) xs.push(1, -1), ys.push(1, -1);
  for (let i = 0; i < b; i++) xs.push(1, -1), ys.push(-1, 1);
  const rows: Rows64 = { x: Float64Array.from(xs), n: xs.length, d: 1 };
  const y = Float64Array.from(ys);
  for (const learner of [logregL2, logregL1]) {
    const { params } = learner.fit(rows, y, 0);
    assert.ok(Math.abs(params[0] - Math.log(a / b)) < 1e-13, `${learner.name}: w = ${params[0]}`);
    assert.ok(Math.abs(params[1]) < 1e-13, `${learner.name}: b = ${params[1]}`);
  }
  assert.throws(() => logregL2.fit(rows, Float64Array.from(ys, (v) => (v > 0 ? 1 : 0)), 1), /labels must be ±1/);
});

test('logreg-l1: all weights vanish exactly from λ_max = ‖∇L(0, b*)‖∞ on; just below, one weight survives and λ is still recovered', () => {
  const { rows, y } = classification;
  const pos = y.filter((v) => v > 0).length;
  const start = new Float64Array(rows.d + 1);
  start[rows.d] = Math.log(pos / (rows.n - pos));
  const { loss } = logregL1.gradients!(start, rows, y);
  const lambdaMax = Math.max(...Array.from(loss.subarray(0, rows.d), Math.abs));
  const above = logregL1.fit(rows, y, lambdaMax * 1.001).params;
  assert.ok(Array.from(above.subarray(0, rows.d)).every((v) => v === 0));
  assert.throws(() => stealLambda(logregL1, above, rows, y), /not identifiable/);
  const lambda = lambdaMax * 0.99;
  const below = logregL1.fit(rows, y, lambda).params;
  assert.is(Array.from(below.subarray(0, rows.d)).filter((v) => v !== 0).length, 1);
  assert.ok(Math.abs(stealLambda(logregL1, below, rows, y) - lambda) / lambda < 1e-9);
});

test('synthetic data: deterministic per seed, ±1 labels, both classes', () => {
  const a = gaussianClassification(50, 3, 4);
  const b = gaussianClassification(50, 3, 4);
  assert.equal(Array.from(a.y), Array.from(b.y));
  assert.ok(a.y.every((v) => v === 1 || v === -1));
  assert.ok(a.y.some((v) => v === 1) && a.y.some((v) => v === -1));
  assert.not.equal(Array.from(gaussianRegression(20, 3, 1).y), Array.from(gaussianRegression(20, 3, 2).y));
  assert.throws(() => gaussianRegression(0, 3, 1), /n ≥ 1/);
});

test('hyperparameter-stealing experiment: one row with a relative error per learner × λ × seed; all-zero L1 fits are unidentifiable', async () => {
  const names = ['ridge', 'lasso', 'krr', 'logreg-l2', 'logreg-l1'];
  const params = hyperparameterStealing.schema.parse({
    learners: names,
    lambdas: [0.01, 10],
    seeds: [1, 2],
    data: { regression: { n: 60, d: 5 }, classification: { n: 300, d: 4 } },
  });
  const { rows, summary } = await hyperparameterStealing.run(params, { log() {} });
  assert.is(rows.length, names.length * 2 * 2);
  for (const row of rows) {
    assert.ok(names.includes(row.learner as string));
    assert.is(row.n, LEARNERS[row.learner as string].task === 'regression' ? 60 : 300);
    assert.type(row.relError, 'number');
    assert.ok((row.relError as number) < 1e-8, `${row.learner} λ=${row.lambda}: ${row.relError}`);
  }
  assert.is(summary.length, names.length + 1);

  const huge = await hyperparameterStealing.run(hyperparameterStealing.schema.parse({ learners: ['lasso'], lambdas: [1e7], seeds: [1], data: { regression: { n: 40, d: 3 } } }), { log() {} });
  assert.is(huge.rows[0].identifiable, false);
  assert.is(huge.rows[0].relError, null);
  assert.match(huge.summary[1], /not identifiable in 1 of 1/);
});

test('hyperparameter-stealing params: defaults are the 1e-3..1e3 grid, bad names are named, and the preset parses', () => {
  const defaults = hyperparameterStealing.schema.parse({});
  assert.equal(defaults.lambdas.map((l) => Math.round(Math.log10(l))), [-3, -2, -1, 0, 1, 2, 3]);
  assert.is(defaults.data.regression.n, 500);
  const bad = hyperparameterStealing.schema.safeParse({ learners: ['lasso', 'nope'] });
  assert.ok(!bad.success && bad.error.issues.some((i) => /unknown learner "nope"; known: .*lasso/.test(i.message)));
  assert.ok(!hyperparameterStealing.schema.safeParse({ lambdas: [0] }).success);
  const preset = JSON.parse(readFileSync(new URL('../bench/presets/wang2018-hyperparameters.json', import.meta.url), 'utf8'));
  assert.is(preset.experiment, hyperparameterStealing.name);
  const parsed = hyperparameterStealing.schema.parse(preset.params);
  assert.is(parsed.lambdas.length, 7);
  assert.is(parsed.seeds.length, 3);
});

test.run();
