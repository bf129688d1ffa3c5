import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  coverCuts,
  kendallTau,
  recoverOrder,
  recoverValues,
  RunArrangement,
  sameUpToReversal,
  valuesFromMidpoints,
} from '../attacks/assisted-tree.ts';
import { buildDictionary, coefficientGrid, nearestOutcome, quantise } from '../attacks/restricted-outcome.ts';
import { assistedTree } from '../bench/experiments/assisted-tree.ts';
import { restrictedOutcome } from '../bench/experiments/restricted-outcome.ts';
import { getLearner } from '../models/learners/index.ts';
import { leafTotal, regressionTree, treeFitted, treeSplits } from '../models/learners/tree-regression.ts';
import type { Rows64 } from '../models/learners/types.ts';
import { gaussians, rng, shuffleInPlace } from '../models/seed.ts';
import { TrainingService } from '../serve/training.ts';

const column = (x: Float64Array): Rows64 => ({ x, n: x.length, d: 1 });

function uniformValues(n: number, seed: number): Float64Array {
  const draw = rng(seed, 'test-assisted-tree');
  return new Float64Array(n).map(() => draw());
}

function trueOrder(x: Float64Array): Int32Array {
  return Int32Array.from([...Array(x.length).keys()].sort((a, b) => x[a] - x[b]));
}

function stumpService(x: Float64Array, maxDepth = 1): TrainingService {
  return new TrainingService({ learner: regressionTree({ maxDepth }), data: column(x), protocol: 'II', lambdas: [], releases: ['fitted', 'handle'] });
}

// ---- the learner -------------------------------------------------------------------------------

test('tree-regression: a stump on a step function splits halfway between the neighbours and predicts the side means', () => {
  const x = Float64Array.from([0.9, 0.1, 0.4, 0.7, 0.2]);
  const y = Float64Array.from([5, 1, 1, 5, 1]);
  const fitted = regressionTree({ maxDepth: 1 }).fit(column(x), y, 0);
  assert.equal(treeSplits(fitted.params), [{ feature: 0, threshold: 0.55 }]);
  assert.equal(Array.from(fitted.predict(column(Float64Array.of(0.54, 0.56)))), [1, 5]);
  // The released params rebuild the same model.
  const again = treeFitted(fitted.params, 1);
  assert.equal(Array.from(again.predict(column(x))), Array.from(fitted.predict(column(x))));
});

test('tree-regression: the root split is the exhaustive least-squares split (two features)', () => {
  const n = 40;
  const x = gaussians(n * 2, rng(5, 'test-tree-x'));
  const y = gaussians(n, rng(5, 'test-tree-y'));
  const fitted = regressionTree({ maxDepth: 1 }).fit({ x, n, d: 2 }, y, 0);
  let best = Infinity;
  for (let f = 0; f < 2; f++) {
    for (let c = 0; c < n; c++) {
      const t = x[c * 2 + f];
      const sides: number[][] = [[], []];
      for (let i = 0; i < n; i++) sides[x[i * 2 + f] < t ? 0 : 1].push(y[i]);
      if (sides[0].length === 0) continue;
      let sse = 0;
      for (const side of sides) {
        const m = side.reduce((a, b) => a + b, 0) / side.length;
        for (const v of side) sse += (v - m) ** 2;
      }
      best = Math.min(best, sse);
    }
  }
  const pred = fitted.predict({ x, n, d: 2 });
  let sse = 0;
  for (let i = 0; i < n; i++) sse += (y[i] - pred[i]) ** 2;
  assert.ok(Math.abs(sse - best) < 1e-9, `stump SSE ${sse} vs exhaustive ${best}`);
});

test('tree-regression: λ is a cost per leaf (large λ prunes to one leaf, λ = 0 fits a deep tree exactly)', () => {
  const x = uniformValues(20, 2);
  const y = gaussians(20, rng(2, 'test-tree-labels'));
  const learner = getLearner('tree-regression');
  const deep = regressionTree({ maxDepth: 10 }).fit(column(x), y, 0);
  assert.equal(Array.from(deep.predict(column(x))), Array.from(y));
  const pruned = learner.fit(column(x), y, 1e6);
  assert.is(leafTotal(pruned.params), 1);
  const mean = y.reduce((a, b) => a + b, 0) / y.length;
  assert.ok(Math.abs(pruned.predict(column(x))[0] - mean) < 1e-12);
  assert.throws(() => learner.fit(column(x), y, -1), /λ/);
  assert.throws(() => treeFitted(Float64Array.of(0, 0.5, 7, 8, 1), 1), /malformed/);
});

// ---- order from Stage I ------------------------------------------------------------------------

test('run arrangement: runs of a line fix its order up to reversal; a run that is no interval is dropped', () => {
  const arrangement = new RunArrangement(6);
  arrangement.add([2, 3, 4]);
  arrangement.add([0, 1, 2]);
  arrangement.add([4, 5]);
  arrangement.add([1, 2]);
  arrangement.add([3, 4]);
  assert.ok(arrangement.complete);
  assert.ok(sameUpToReversal(arrangement.flatten(), [0, 1, 2, 3, 4, 5]));
  arrangement.add([0, 5]);
  assert.is(arrangement.dropped, 1);
});

test('basis queries on a stump recover the exact order (up to reversal) with no Stage II, n = 30', async () => {
  const n = 30;
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const x = uniformValues(n, seed);
    const service = stumpService(x);
    const recovery = await recoverOrder(service, n, { strategy: 'basis', lambda: 0, seed });
    const usage = await service.usage();
    assert.ok(recovery.complete, `seed ${seed}: incomplete`);
    assert.ok(sameUpToReversal(recovery.order, trueOrder(x)), `seed ${seed}: wrong order`);
    assert.is(Math.abs(kendallTau(recovery.order, trueOrder(x))), 1);
    assert.ok(usage.fits <= n - 1 && usage.fits >= n / 2, `seed ${seed}: k1 = ${usage.fits}`);
    assert.is(usage.rows, 0);
  }
});

test('a random order (the baseline) is not the order and has |τ| far from 1', () => {
  const x = uniformValues(30, 1);
  const truth = trueOrder(x);
  const random = shuffleInPlace(Int32Array.from(truth), rng(1, 'test-baseline'));
  assert.not.ok(sameUpToReversal(random, truth));
  assert.ok(Math.abs(kendallTau(random, truth)) < 0.5);
  // Kendall's τ itself: reversal is −1, a single adjacent swap of 4 items is 1 − 2/6.
  assert.is(kendallTau([3, 2, 1, 0], [0, 1, 2, 3]), -1);
  assert.ok(Math.abs(kendallTau([1, 0, 2, 3], [0, 1, 2, 3]) - (1 - 2 / 6)) < 1e-12);
});

test('Gaussian-label queries recover the order of a depth-3 tree; too small a budget leaves it incomplete', async () => {
  const n = 30;
  const x = uniformValues(n, 7);
  const full = await recoverOrder(stumpService(x, 3), n, { strategy: 'partitions', lambda: 0, seed: 7 });
  assert.ok(full.complete && sameUpToReversal(full.order, trueOrder(x)));
  const starved = await recoverOrder(stumpService(x, 3), n, { strategy: 'partitions', lambda: 0, seed: 7, budget: 2 });
  assert.not.ok(starved.complete);
  assert.not.ok(sameUpToReversal(starved.order, trueOrder(x)));
});

// ---- values from Stage II ----------------------------------------------------------------------

test('Stage II bisection locates every threshold within the tolerance and the values within the order bound', async () => {
  const n = 30;
  const tolerance = 1e-10;
  for (const seed of [1, 2, 3]) {
    const x = uniformValues(n, seed);
    const sorted = Array.from(x).sort((a, b) => a - b);
    const service = stumpService(x);
    const recovery = await recoverOrder(service, n, { strategy: 'basis', lambda: 0, seed });
    const extra = await coverCuts(service, recovery.order, recovery.queries, 0);
    const values = await recoverValues(service, [...recovery.queries, ...extra], recovery.order, { range: [0, 1], tolerance });
    assert.ok(Array.from(values.order).every((row, r) => row === trueOrder(x)[r]), 'Stage II orients the order');
    for (let k = 0; k < n - 1; k++) {
      const midpoint = (sorted[k] + sorted[k + 1]) / 2;
      assert.ok(Math.abs(values.thresholds[k] - midpoint) <= tolerance, `seed ${seed}: threshold ${k} off by ${values.thresholds[k] - midpoint}`);
    }
    let minGap = Infinity;
    for (let k = 1; k < n; k++) minGap = Math.min(minGap, sorted[k] - sorted[k - 1]);
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(values.x[i] - x[i]));
    assert.ok(worst <= values.bound + n * tolerance, `seed ${seed}: error ${worst} above bound ${values.bound}`);
    // The order pins the free offset to within the smallest gap; placing ranks at quantiles does far worse.
    assert.ok(values.bound <= minGap, `seed ${seed}: bound ${values.bound} vs smallest gap ${minGap}`);
    assert.ok(worst < 0.01, `seed ${seed}: error ${worst}`);
    const usage = await service.usage();
    assert.is(usage.fits, recovery.queries.length + extra.length);
    assert.is(usage.rows, values.probes);
  }
});

test('values from exact midpoints: one free offset, pinned by the order', () => {
  const x = [0.1, 0.3, 0.35, 0.8];
  const t = Float64Array.from([0.2, 0.325, 0.575]);
  const { values, bound } = valuesFromMidpoints(t, 0, 1);
  // x₁ = c, x₂ = 0.4 − c, x₃ = 0.25 + c, x₄ = 0.9 − c: the order allows c ∈ [0.075, 0.2].
  assert.ok(Math.abs(bound - 0.0625) < 1e-12);
  for (let k = 0; k < 4; k++) assert.ok(Math.abs(values[k] - x[k]) <= bound + 1e-12);
});

test('assisted-tree experiment: order and values rows, imitation ρ 0 where the order is exact', async () => {
  const params = assistedTree.schema.parse({ ns: [20], seeds: [1, 2], evalTasks: 5, evalPoints: 200 });
  const { rows, summary } = await assistedTree.run(params, { log: () => {} });
  const order = rows.filter((r) => r.part === 'order');
  const values = rows.filter((r) => r.part === 'values');
  assert.is(order.length, 2);
  assert.is(values.length, 2);
  for (const r of order) {
    assert.is(r.orderRecovered, true);
    // Exact up to the order leaf means are summed in (a reversed order rounds differently).
    assert.ok((r.rho as number) < 1e-20);
    assert.ok((r.rhoRandomOrder as number) > 0.3);
    assert.is(r.k2, 0);
  }
  for (const r of values) {
    assert.ok((r.precision as number) <= (r.precisionBound as number) + 1e-8);
    assert.ok((r.rho as number) < (r.rhoQuantiles as number));
  }
  assert.ok(summary.some((line) => /n=20: order recovered 2\/2/.test(line)), summary.join('\n'));
  assert.throws(() => assistedTree.schema.parse({ range: [1, 0] }), /empty/);
});

// ---- restricted outcome ------------------------------------------------------------------------

test('restricted outcome: the grid covers the cube; the nearest stored task answers', async () => {
  const grid = coefficientGrid(2, 3);
  assert.is(grid.length, 9);
  assert.equal(Array.from(grid[4]), [0, 0]);
  assert.equal(Array.from(quantise(Float64Array.of(0.26, -0.74), 0.5)), [0.5, -0.5]);
  const x: Rows64 = { x: gaussians(40, rng(1, 'test-ro')), n: 20, d: 2 };
  const service = new TrainingService({ learner: getLearner('ridge'), data: x, protocol: 'II', lambdas: [], releases: ['fitted'] });
  const labels = [gaussians(20, rng(2, 'a')), gaussians(20, rng(3, 'b'))];
  const dictionary = await buildDictionary(service, labels, 1);
  assert.is((await service.usage()).fits, 2);
  const near = nearestOutcome(dictionary, labels[1].map((v) => v + 1e-3));
  assert.is(near.index, 1);
  assert.is(near.outcome, dictionary.outcomes[1]);
});

test('restricted outcome: ρ falls with k₁, above 0.05 at k₁ = 4 and below 0.01 at k₁ = 256 (ridge, Protocol I)', async () => {
  const params = restrictedOutcome.schema.parse({ n: 60, ps: [2], levels: [1, 2, 4, 8, 16], seeds: [1, 2], freshTasks: 40 });
  const { rows, summary } = await restrictedOutcome.run(params, { log: () => {} });
  const mean = (k1: number) => {
    const rs = rows.filter((r) => r.k1 === k1).map((r) => r.rho as number);
    return rs.reduce((a, b) => a + b, 0) / rs.length;
  };
  const curve = [1, 4, 16, 64, 256].map(mean);
  for (let i = 1; i < curve.length; i++) assert.ok(curve[i] < curve[i - 1], `ρ ${curve.join(', ')} should fall`);
  assert.ok(curve[1] > 0.05, `ρ at k₁ = 4: ${curve[1]}`);
  assert.ok(curve[4] < 0.01, `ρ at k₁ = 256: ${curve[4]}`);
  assert.ok(summary.some((line) => /ρ ≤ 0.01 from k₁ = 256/.test(line)));
  assert.throws(() => restrictedOutcome.schema.parse({ learner: 'logreg-l2' }), /regression learner/);
});

test.run();
