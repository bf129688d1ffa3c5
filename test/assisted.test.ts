import { Matrix } from 'ml-matrix';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { centredSpanBasis, featuresFromBasis, gaussianRows, probeWithRandomLabels, sampleCovariance } from '../attacks/assisted-linear.ts';
import { correctedLeastSquares, laplaceNoise } from '../attacks/dp-imitation.ts';
import { assistedLinear, assistedLinearSchema } from '../bench/experiments/assisted-linear.ts';
import { dpImitation, dpImitationSchema } from '../bench/experiments/dp-imitation.ts';
import type { ExperimentRow } from '../bench/experiments/types.ts';
import { ridge } from '../models/learners/ridge.ts';
import { gaussians, rng } from '../models/seed.ts';
import { assistedLearning, ridgeAssistant } from '../serve/assisted.ts';
import { TrainingService } from '../serve/training.ts';
import { rejection } from './helpers.ts';

const quiet = { log: () => {} };
const mse = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / a.length;
const mean = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length;

/**
 * Two parties' features of the same individuals, correlated (so one round is not enough):
 * X_B = 0.7·X_A + noise, y = X_A a + X_B b + 0.3·ε.
 */
function twoParty(n: number, seed: number) {
  const d = 3;
  const xa = gaussians(n * d, rng(seed, 'alice'));
  const own = gaussians(n * d, rng(seed, 'bob'));
  const xb = Float64Array.from(own, (v, i) => 0.7 * xa[i] + 0.7 * v);
  const a = [1, -2, 0.5];
  const b = [1.5, 1, -1];
  const eps = gaussians(n, rng(seed, 'noise'));
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0.3 * eps[i] + 0.4;
    for (let j = 0; j < d; j++) s += xa[i * d + j] * a[j] + xb[i * d + j] * b[j];
    y[i] = s;
  }
  const joint = new Float64Array(n * 2 * d);
  for (let i = 0; i < n; i++) {
    joint.set(xa.subarray(i * d, i * d + d), i * 2 * d);
    joint.set(xb.subarray(i * d, i * d + d), i * 2 * d + d);
  }
  return { alice: { x: xa, n, d }, bob: { x: xb, n, d }, joint: { x: joint, n, d: 2 * d }, y };
}


test('assisted learning reaches the joint least-squares error, far below Alice alone, and stops by its rule', async () => {
  const train = twoParty(400, 1);
  const fresh = twoParty(1000, 2);
  const { bob, bobLambda } = ridgeAssistant(train.bob);
  const result = await assistedLearning({ alice: { rows: train.alice }, bob, bobLambda, y: train.y, maxRounds: 100, tolerance: 1e-4 });

  const oracle = ridge.fit(train.joint, train.y, 0);
  const aliceAlone = ridge.fit(train.alice, train.y, 0);
  const oracleTrain = mse(oracle.predict(train.joint), train.y);
  const aliceTrain = mse(aliceAlone.predict(train.alice), train.y);
  const assistedTrain = mse(result.fitted, train.y);
  assert.ok(assistedTrain < oracleTrain * 1.01, `assisted ${assistedTrain} vs oracle ${oracleTrain}`);
  assert.ok(assistedTrain >= oracleTrain * (1 - 1e-9), 'no fit of these two column spaces beats joint least squares in-sample');
  assert.ok(assistedTrain < aliceTrain / 5, `assisted ${assistedTrain} vs Alice alone ${aliceTrain}`);

  assert.is(result.stop, 'tolerance');
  assert.ok(result.rounds.length > 2 && result.rounds.length < 100, `${result.rounds.length} rounds`);
  for (let k = 1; k < result.trajectory.length; k++) {
    assert.ok(result.trajectory[k].train <= result.trajectory[k - 1].train + 1e-12, 'least squares on both sides never increases the residual');
  }
  const last = result.trajectory.at(-1)!;
  const before = result.trajectory.at(-2)!;
  assert.ok((before.train - last.train) / before.train < 1e-4, 'stopped when the relative gain fell below the tolerance');

  // Stage II: new individuals, Bob's part through his handles; rows counted per round used.
  const rowsBefore = (await bob.usage()).rows;
  const predicted = await result.predict({ alice: fresh.alice, bob: fresh.bob });
  assert.is((await bob.usage()).rows - rowsBefore, result.used * fresh.y.length);
  const oracleTest = mse(oracle.predict(fresh.joint), fresh.y);
  const aliceTest = mse(aliceAlone.predict(fresh.alice), fresh.y);
  const assistedTest = mse(predicted, fresh.y);
  assert.ok(assistedTest < oracleTest * 1.02, `test: assisted ${assistedTest} vs oracle ${oracleTest}`);
  assert.ok(assistedTest < aliceTest / 5, `test: assisted ${assistedTest} vs Alice alone ${aliceTest}`);
});

test('assisted learning: validation monitoring, max rounds, Bob\'s cap, and bad input', async () => {
  const train = twoParty(300, 3);
  const valid = twoParty(200, 4);
  const { bob } = ridgeAssistant(train.bob);
  const validated = await assistedLearning({
    alice: { rows: train.alice },
    bob,
    bobLambda: 0,
    y: train.y,
    maxRounds: 100,
    tolerance: 1e-3,
    validation: { alice: valid.alice, bob: valid.bob, y: valid.y },
  });
  assert.is(validated.stop, 'tolerance');
  assert.ok(validated.trajectory.every((p) => p.validation !== null));
  const best = Math.min(...validated.trajectory.map((p) => p.validation!));
  assert.is(validated.trajectory[validated.used].validation, best, 'the predictor keeps the rounds up to the best validation error');
  // Validation costs Bob one Stage II pass over the validation rows per round.
  assert.is((await bob.usage()).rows, validated.rounds.length * valid.y.length);

  const capped = await assistedLearning({ alice: { rows: train.alice }, ...ridgeAssistant(train.bob), y: train.y, maxRounds: 2, tolerance: 0 });
  assert.is(capped.stop, 'max-rounds');
  assert.is(capped.rounds.length, 2);

  const refused = await assistedLearning({ alice: { rows: train.alice }, ...ridgeAssistant(train.bob, { caps: { fits: 3 } }), y: train.y, maxRounds: 50, tolerance: 0 });
  assert.is(refused.stop, 'bob-cap');
  assert.is(refused.rounds.length, 3);

  const noHandles = new TrainingService({ learner: ridge, data: train.bob, protocol: 'II', lambdas: [], releases: ['fitted'] });
  const err = await rejection(assistedLearning({ alice: { rows: train.alice }, bob: noHandles, bobLambda: 0, y: train.y, maxRounds: 3, tolerance: 0 }));
  assert.match(err.message, /'handle'/);
  const misaligned = await rejection(
    assistedLearning({ alice: { rows: train.alice }, bob, bobLambda: 0, y: train.y, maxRounds: 3, tolerance: 0, validation: { alice: valid.alice, bob: train.bob, y: valid.y } }),
  );
  assert.match(misaligned.message, /200 values for 300 rows|same individuals/);
});

test('Stage I answers span col(X_B); with Σ_B the rebuilt features have covariance Σ_B and least squares is imitated exactly', async () => {
  const n = 120;
  const sigma = new Matrix([
    [2, 0.5, 0],
    [0.5, 1, 0.3],
    [0, 0.3, 0.5],
  ]);
  const xb = gaussianRows(n, sigma, rng(5, 'bob'));
  const bob = new TrainingService({ learner: ridge, data: xb, protocol: 'II', lambdas: [], releases: ['fitted'] });
  const answers = await probeWithRandomLabels(bob, n, 3, 5, 0);
  const xhat = featuresFromBasis(centredSpanBasis(answers, 3), sigma);
  const cov = sampleCovariance(xhat);
  for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) assert.ok(Math.abs(cov.get(j, k) - sigma.get(j, k)) < 1e-9);
  const y = gaussians(n, rng(5, 'task'));
  const target = ridge.fit(xb, y, 0).predict(xb);
  const imitation = ridge.fit(xhat, y, 0).predict(xhat);
  assert.ok(mse(target, imitation) < 1e-20);
  assert.throws(() => centredSpanBasis(answers.slice(0, 2), 3), /k₁ ≥ p/);
});

test('assisted-linear: ρ falls with n to near 0 while features that ignore Stage I stay near 1', async () => {
  const params = assistedLinearSchema.parse({
    ns: [50, 2000],
    seeds: [1, 2, 3],
    penalties: [0, 1],
    covariances: ['identity'],
    sigmaSamples: [],
    evalTasks: 10,
  });
  const { rows } = await assistedLinear.run(params, quiet);
  const rho = (imitation: string, penalty: number, n: number) =>
    mean(rows.filter((r) => r.imitation === imitation && r.penalty === penalty && r.n === n).map((r) => r.rho as number));
  // Ridge (λ = n): what is left is Bob's sample covariance against Σ_B, O(p/n).
  assert.ok(rho('sigma-known', 1, 2000) < rho('sigma-known', 1, 50) / 5, `${rho('sigma-known', 1, 2000)} vs ${rho('sigma-known', 1, 50)}`);
  assert.ok(rho('sigma-known', 1, 2000) < 5e-3);
  // Least squares depends on the span alone: exact at any n.
  assert.ok(rho('sigma-known', 0, 50) < 1e-20);
  for (const penalty of [0, 1]) for (const n of [50, 2000]) assert.ok(rho('random-features', penalty, n) > 0.7, `baseline ${rho('random-features', penalty, n)}`);
  assert.ok(rows.every((r) => r.fits === r.k1), 'the attack spends k₁ Stage I fits');
});

test('assisted-linear over sampled task families: least squares is copied exactly even on smooth tasks outside the span', async () => {
  for (const taskFamily of ['linear', 'smooth'] as const) {
    const params = assistedLinearSchema.parse({ ns: [200], seeds: [1, 2], penalties: [0, 1], covariances: ['identity'], sigmaSamples: [], evalTasks: 6, taskFamily });
    const { rows } = await assistedLinear.run(params, quiet);
    const rho = (imitation: string, penalty: number) => mean(rows.filter((r) => r.imitation === imitation && r.penalty === penalty).map((r) => r.rho as number));
    assert.ok(rows.every((r) => r.taskFamily === taskFamily));
    // Bob's least-squares fit of any label vector is its projection on col(X_B): the span is all it takes.
    assert.ok(rho('sigma-known', 0) < 1e-20, `${taskFamily}: ${rho('sigma-known', 0)}`);
    assert.ok(rho('sigma-known', 1) < 0.05, `${taskFamily} ridge: ${rho('sigma-known', 1)}`);
    assert.ok(rho('random-features', 0) > 0.5, `${taskFamily} baseline: ${rho('random-features', 0)}`);
  }
});

test('Laplace noise has variance 2b², and the corrected estimator is least squares without noise', () => {
  const e = laplaceNoise(200000, 1.5, rng(1, 'laplace'));
  const variance = e.reduce((s, v) => s + v * v, 0) / e.length;
  assert.ok(Math.abs(variance - 2 * 1.5 ** 2) < 0.1, `variance ${variance}`);
  const rows = gaussianRows(100, Matrix.eye(3, 3), rng(2, 'rows'));
  const y = gaussians(100, rng(2, 'y'));
  const corrected = correctedLeastSquares(rows, y, new Float64Array(100));
  const ols = ridge.fit(rows, y, 0).params;
  for (let j = 0; j < 4; j++) assert.ok(Math.abs(corrected[j] - ols[j]) < 1e-10);
});

test('dp-imitation: an ε-LDP release still gives Bob\'s model away; DP-breaking releases barely move ρ', async () => {
  const params = dpImitationSchema.parse({ ns: [10000, 100000], ldpEpsilons: [2], seeds: [1, 2, 3] });
  const { rows } = await dpImitation.run(params, quiet);
  const pick = (f: (r: ExperimentRow) => boolean) => rows.filter(f);
  const rho = (f: (r: ExperimentRow) => boolean) => mean(pick(f).map((r) => r.rho as number));
  const corrected = (n: number) => rho((r) => r.part === 'a-ldp' && r.estimator === 'corrected' && r.n === n);
  const naive = (n: number) => rho((r) => r.part === 'a-ldp' && r.estimator === 'naive' && r.n === n);
  assert.ok(corrected(100000) < corrected(10000) / 3, `${corrected(100000)} vs ${corrected(10000)}`);
  assert.ok(corrected(100000) < 0.02);
  for (const n of [10000, 100000]) assert.ok(corrected(n) < naive(n) / 10, `n=${n}: corrected ${corrected(n)} vs naive ${naive(n)}`);
  assert.ok(naive(100000) > 0.5, 'the uncorrected fit stays attenuated however large n is');

  const converse = pick((r) => r.part === 'b-converse' && r.release !== 'none');
  assert.is(converse.length, 2 * 2 * 3);
  for (const r of converse) {
    assert.is(r.breaksDp, true);
    const base = r.rhoNoRelease as number;
    // One exact row among n noisy ones moves the corrected fit by O(1/n) of a heavy-tailed term.
    const margin = r.release === 'unused-feature' ? 0.02 : Math.max(0.1 * base, 0.005);
    assert.ok(Math.abs((r.rho as number) - base) <= margin, `${r.release} n=${r.n}: ρ ${r.rho} vs ${base} without the release`);
  }
  for (const r of pick((r) => r.base === 'no-data' && r.release === 'none')) assert.ok((r.rho as number) > 0.95);
});

test('experiment params are checked', () => {
  assert.throws(() => assistedLinearSchema.parse({ ns: [5], seeds: [1] }));
  assert.throws(() => assistedLinearSchema.parse({ ns: [100], seeds: [1], p: 5, k1: 3 }), /k1 = 3/);
  assert.throws(() => dpImitationSchema.parse({ ns: [100], ldpEpsilons: [0], seeds: [1] }));
});

test.run();
