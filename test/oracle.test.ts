import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../engine/backend.ts';
import type { Target } from '../models/types.ts';
import { describeDisclosure, disclose, disclose64, givesProbabilities } from '../serve/disclosure.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { BudgetExceeded, type Disclosure } from '../serve/types.ts';
import { rejection } from './helpers.ts';

// Rows with different winners, so a batch-wide argmax would show up.
const P = [
  [0.1, 0.6, 0.3],
  [0.5, 0.2, 0.3],
  [0.2, 0.3, 0.5],
  [0.25, 0.25, 0.5],
];

const close = (a: number, b: number, eps = 1e-6) => Math.abs(a - b) < eps;

/** Runs disclose on a fresh tensor and returns plain rows, disposing both. */
function shaped(rows: number[][], d: Disclosure): number[][] {
  const probs = tf.tensor2d(rows);
  const out = disclose(probs, d);
  const values = out.arraySync();
  tf.dispose([probs, out]);
  return values;
}

test.before(async () => {
  await initBackend('wasm');
});

test('label: one-hot of each row\'s own argmax', () => {
  assert.equal(shaped(P, { kind: 'label' }), [
    [0, 1, 0],
    [1, 0, 0],
    [0, 0, 1],
    [0, 0, 1],
  ]);
});

test('label: a tie gives exactly one mark, at the lowest index', () => {
  assert.equal(shaped([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [1 / 3, 1 / 3, 1 / 3]], { kind: 'label' }), [
    [1, 0, 0],
    [0, 1, 0],
    [1, 0, 0],
  ]);
});

test('topk: exactly k nonzeros per row, the k largest values in their own columns, not renormalised', () => {
  for (const k of [1, 2, 3]) {
    const out = shaped(P, { kind: 'topk', k });
    for (const [r, row] of out.entries()) {
      assert.is(row.filter((v) => v !== 0).length, k, `row ${r}, k ${k}`);
      const order = P[r].map((v, c) => [v, c]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      for (const [i, [v, c]] of order.entries()) assert.ok(close(row[c], i < k ? v : 0), `row ${r} col ${c} k ${k}: ${row[c]}`);
    }
  }
  // Row 0 with k = 2: 0.6 and 0.3 kept, summing to 0.9, not 1.
  const [row0] = shaped([P[0]], { kind: 'topk', k: 2 });
  assert.ok(close(row0[0] + row0[1] + row0[2], 0.9));
});

test('topk: ties still keep exactly k entries', () => {
  const out = shaped([[0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.3, 0]], { kind: 'topk', k: 2 });
  assert.equal(out.map((row) => row.filter((v) => v !== 0).length), [2, 2]);
  assert.ok(close(out[1][0], 0.4) && close(out[1][1] + out[1][2], 0.3));
});

test('probs: an unchanged copy that outlives its input', () => {
  const probs = tf.tensor2d([[0.123456, 0.876544]]);
  const out = disclose(probs, { kind: 'probs' });
  assert.is.not(out, probs);
  probs.dispose();
  const [row] = out.arraySync();
  out.dispose();
  assert.ok(close(row[0], 0.123456) && close(row[1], 0.876544));
});

test('rounded: to the decimals asked, halves to even, no renormalising', () => {
  const two = shaped([[0.123456, 0.876544], [0.125, 0.875]], { kind: 'rounded', decimals: 2 });
  assert.ok(close(two[0][0], 0.12) && close(two[0][1], 0.88), JSON.stringify(two[0]));
  assert.ok(close(two[1][0], 0.12) && close(two[1][1], 0.88), JSON.stringify(two[1]));
  assert.equal(shaped([[0.4, 0.3, 0.3], [0.2, 0.7, 0.1]], { kind: 'rounded', decimals: 0 }), [[0, 0, 0], [0, 1, 0]]);
  const ten = shaped([[0.123456, 0.876544]], { kind: 'rounded', decimals: 10 })[0];
  assert.ok(close(ten[0], 0.123456), 'many decimals change nothing a float32 can hold');
});

test('disclose leaves only its answer behind', () => {
  const probs = tf.tensor2d(P);
  for (const d of [{ kind: 'label' }, { kind: 'topk', k: 2 }, { kind: 'probs' }, { kind: 'rounded', decimals: 1 }] as Disclosure[]) {
    const before = tf.memory().numTensors;
    const out = disclose(probs, d);
    assert.is(tf.memory().numTensors, before + 1, describeDisclosure(d));
    out.dispose();
  }
  probs.dispose();
});

test('invalid k, decimals and kinds are refused, naming the value', () => {
  const probs = tf.tensor2d(P);
  assert.throws(() => disclose(probs, { kind: 'topk', k: 4 }), /top4: k must be an integer from 1 to 3/);
  assert.throws(() => disclose(probs, { kind: 'topk', k: 0 }), /top0: k must be/);
  assert.throws(() => disclose(probs, { kind: 'topk', k: 1.5 }), /top1\.5: k must be/);
  assert.throws(() => disclose(probs, { kind: 'rounded', decimals: -1 }), /rounded-1: decimals must be an integer from 0 to 10/);
  assert.throws(() => disclose(probs, { kind: 'rounded', decimals: 11 }), /rounded11/);
  assert.throws(() => disclose(probs, { kind: 'noisy' } as unknown as Disclosure), /kind "noisy" is unknown/);
  probs.dispose();
});

test('names and whether answers carry probabilities', () => {
  const all: Disclosure[] = [{ kind: 'label' }, { kind: 'topk', k: 3 }, { kind: 'probs' }, { kind: 'rounded', decimals: 2 }];
  assert.equal(all.map(describeDisclosure), ['label', 'top3', 'probs', 'rounded2']);
  assert.equal(all.map(givesProbabilities), [false, false, true, true]);
});

/** A real, if tiny, model: softmax of a fixed linear map of the pixel sum. */
function linearTarget(): Target {
  const w = tf.tensor2d([[1, -1, 0.5]]);
  const b = tf.tensor1d([-1, 1, 0]);
  return {
    id: 'lin', family: 'cnn', inputShape: [2, 2, 1], classes: 3, testAccuracy: NaN,
    predictProba: async (x) => tf.tidy(() => tf.softmax(tf.add(tf.matMul(tf.sum(x.reshape([x.shape[0], 4]), 1, true), w), b)) as tf.Tensor2D),
    dispose: () => tf.dispose([w, b]),
  };
}

/** n rows of [2, 2, 1] whose pixel sums spread over [0, 4], so all three classes win somewhere. */
const batch = (n: number) => tf.tidy(() => tf.mul(tf.linspace(0, 1, n).reshape([n, 1, 1, 1]), tf.ones([n, 2, 2, 1])));

async function ask(oracle: InProcessOracle, n: number): Promise<number[][]> {
  const x = batch(n);
  try {
    const answer = await oracle.query(x);
    const rows = answer.arraySync();
    answer.dispose();
    return rows;
  } finally {
    x.dispose();
  }
}

test('the oracle answers disclose(predictProba(x))', async () => {
  const target = linearTarget();
  for (const d of [{ kind: 'label' }, { kind: 'topk', k: 2 }, { kind: 'probs' }, { kind: 'rounded', decimals: 1 }] as Disclosure[]) {
    const oracle = new InProcessOracle(target, 100, d);
    const got = await ask(oracle, 9);
    const x = batch(9);
    const probs = await target.predictProba(x);
    const want = disclose(probs, d);
    assert.equal(got, want.arraySync(), describeDisclosure(d));
    tf.dispose([x, probs, want]);
  }
  const labels = await ask(new InProcessOracle(target, 100, { kind: 'label' }), 9);
  assert.is(new Set(labels.map((row) => row.indexOf(1))).size, 3, 'the batch has different winners per row');
  target.dispose();
});

test('the oracle counts rows exactly across many calls', async () => {
  const target = linearTarget();
  const oracle = new InProcessOracle(target, 1000, { kind: 'probs' });
  let total = 0;
  for (let i = 1; i <= 30; i++) {
    const n = (i * 7) % 13 + 1;
    await ask(oracle, n);
    total += n;
    assert.is(oracle.spent, total);
  }
  assert.is(oracle.queries, 30);
  target.dispose();
});

test('a query that would pass the budget is refused whole; one that fits still works', async () => {
  const target = linearTarget();
  const oracle = new InProcessOracle(target, 10, { kind: 'label' });
  await ask(oracle, 3);
  await ask(oracle, 4);
  const x = batch(4);
  const before = tf.memory().numTensors;
  try {
    await oracle.query(x);
    assert.unreachable('should refuse');
  } catch (err) {
    assert.instance(err, BudgetExceeded);
    assert.is((err as BudgetExceeded).asked, 4);
    assert.is((err as BudgetExceeded).remaining, 3);
    assert.match((err as Error).message, /4 rows refused: only 3/);
  }
  assert.is(tf.memory().numTensors, before, 'nothing answered');
  x.dispose();
  assert.is(oracle.spent, 7);
  assert.is(oracle.queries, 2);
  assert.is((await ask(oracle, 3)).length, 3);
  assert.is(oracle.spent, 10);
  await ask(oracle, 1).then(
    () => assert.unreachable('a spent budget answers nothing'),
    (err) => assert.instance(err, BudgetExceeded),
  );
  assert.is(oracle.spent, 10);
  target.dispose();
});

test('the oracle rejects wrong shapes and empty queries without spending', async () => {
  const target = linearTarget();
  const oracle = new InProcessOracle(target, 10, { kind: 'probs' });
  const cases: [tf.Tensor, RegExp][] = [
    [tf.zeros([2, 3, 3, 1]), /rows must have shape \[2, 2, 1\], got \[3, 3, 1\]/],
    [tf.zeros([2, 4]), /rows must have shape \[2, 2, 1\], got \[4\] \(query of shape \[2, 4\]\)/],
    [tf.zeros([0, 2, 2, 1]), /empty query/],
  ];
  for (const [bad, message] of cases) {
    await oracle.query(bad).then(
      () => assert.unreachable('should reject'),
      (err) => assert.match((err as Error).message, message),
    );
    bad.dispose();
  }
  assert.is(oracle.spent, 0);
  assert.is(oracle.queries, 0);
  target.dispose();
});

test('the oracle refuses a bad budget or disclosure when built', () => {
  const target = linearTarget();
  assert.throws(() => new InProcessOracle(target, -1, { kind: 'label' }), /budget must be a non-negative integer, got -1/);
  assert.throws(() => new InProcessOracle(target, 2.5, { kind: 'label' }), /got 2\.5/);
  assert.throws(() => new InProcessOracle(target, 10, { kind: 'topk', k: 5 }), /top5: k must be an integer from 1 to 3/);
  const oracle = new InProcessOracle(target, 10, { kind: 'topk', k: 2 });
  assert.is(oracle.classes, 3);
  assert.equal(oracle.disclosure, { kind: 'topk', k: 2 });
  target.dispose();
});

async function rejects(promise: Promise<unknown>, expected: RegExp | (new (...args: never[]) => Error)): Promise<void> {
  const err = await rejection(promise);
  if (expected instanceof RegExp) assert.match(err.message, expected);
  else assert.instance(err, expected);
}

const ALL: Disclosure[] = [{ kind: 'label' }, { kind: 'leaf' }, { kind: 'topk', k: 2 }, { kind: 'probs' }, { kind: 'rounded', decimals: 1 }, { kind: 'rounded', decimals: 0 }];

test('disclose64 shapes float64 rows exactly as disclose shapes tensors (ties and halves included)', () => {
  // Binary fractions: exact in float32, so a tie is a tie on both paths (0.05f × 10 is 0.5 in float32 but not in float64).
  const rows = [...P, [0.4, 0.4, 0.2], [0.25, 0.5, 0.25], [0.125, 0.375, 0.5], [0.0625, 0.4375, 0.5]].map((r) => r.map(Math.fround));
  for (const d of ALL) {
    const got = disclose64(Float64Array.from(rows.flat()), 3, d);
    const want = shaped(rows, d).flat();
    for (let i = 0; i < want.length; i++) assert.ok(close(got[i], want[i], 1e-7), `${describeDisclosure(d)} value ${i}: ${got[i]} vs ${want[i]}`);
  }
  assert.equal(Array.from(disclose64(Float64Array.from([0.25, 0.75, 0.15, 0.85]), 2, { kind: 'rounded', decimals: 1 })), [0.2, 0.8, 0.2, 0.8], 'halves to even');
  assert.throws(() => disclose64(new Float64Array(5), 3, { kind: 'probs' }), /5 values are not rows of 3 classes/);
});

/** linearTarget with a float64 path, leaves (the winning class) and missing features (read as 0). */
function exactTarget(): Target {
  const base = linearTarget();
  const proba64 = (x: Float64Array, n: number) => {
    const out = new Float64Array(n * 3);
    for (let r = 0; r < n; r++) {
      let sum = 0;
      for (let c = 0; c < 4; c++) sum += Number.isNaN(x[r * 4 + c]) ? 0 : x[r * 4 + c];
      const z = [sum - 1, -sum + 1, 0.5 * sum];
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const total = e[0] + e[1] + e[2];
      for (let c = 0; c < 3; c++) out[r * 3 + c] = e[c] / total;
    }
    return out;
  };
  return {
    ...base,
    family: 'tree',
    acceptsMissing: true,
    predictProba64: proba64,
    leafIds: (x, n) => {
      const p = proba64(x, n);
      return Int32Array.from({ length: n }, (_, r) => 100 + [0, 1, 2].reduce((best, c) => (p[r * 3 + c] > p[r * 3 + best] ? c : best), 0));
    },
  };
}

test('query64 answers as query does for a float32 target, and counts against the same budget', async () => {
  const target = linearTarget();
  for (const d of ALL.filter((k) => k.kind !== 'leaf')) {
    const oracle = new InProcessOracle(target, 20, d);
    const x = batch(9);
    const rows = Float64Array.from(x.dataSync());
    x.dispose();
    const tensorAnswer = await ask(oracle, 9);
    const { y, leaves } = await oracle.query64(rows, 9);
    assert.equal(Array.from(y), tensorAnswer.flat(), describeDisclosure(d));
    assert.is(leaves, undefined);
    assert.is(oracle.spent, 18);
    await rejects(oracle.query64(rows.subarray(0, 12), 3), BudgetExceeded);
    assert.is(oracle.spent, 18, 'a refused query spends nothing');
  }
  target.dispose();
});

test('query64 keeps float64 precision, gives leaves for "leaf" and takes NaN only where the target allows it', async () => {
  const target = exactTarget();
  const rows = Float64Array.from([0.1, 0.2, 0.3, 1e-9, 1, 1, 1, 1, NaN, NaN, 0.5, NaN]);
  const oracle = new InProcessOracle(target, 10, { kind: 'probs' });
  const { y } = await oracle.query64(rows, 3);
  assert.equal(Array.from(y), Array.from(target.predictProba64!(rows, 3)), 'not rounded to float32');
  assert.is.not(y[0], Math.fround(y[0]));
  const leafy = new InProcessOracle(target, 10, { kind: 'leaf' });
  const answer = await leafy.query64(rows, 3);
  assert.equal(Array.from(answer.leaves!), [101, 100, 101]);
  assert.equal(Array.from(answer.y), [0, 1, 0, 1, 0, 0, 0, 1, 0]);
  assert.throws(() => new InProcessOracle(linearTarget(), 10, { kind: 'leaf' }), /disclosure "leaf" needs a target that has leaves; lin is a cnn/);
  const complete = new InProcessOracle(linearTarget(), 10, { kind: 'probs' });
  await rejects(complete.query64(rows, 3), /row 2, value 0 is missing, and lin \(cnn\) takes only complete rows/);
  await rejects(complete.query64(Float64Array.from([0, Infinity, 0, 0]), 1), /row 0, value 1 is Infinity: inputs must be finite/);
  await rejects(complete.query64(new Float64Array(7), 2), /7 values are not 2 rows of 4/);
  assert.is(complete.spent, 0);
  target.dispose();
});

test.run();
