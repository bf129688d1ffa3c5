import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../models/backend.ts';
import type { Target } from '../models/types.ts';
import { describeDisclosure, disclose, givesProbabilities } from '../serve/disclosure.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { BudgetExceeded } from '../serve/types.ts';

const P = [
  [0.1, 0.6, 0.3],
  [0.5, 0.2, 0.3],
  [0.2, 0.3, 0.5],
  [0.25, 0.25, 0.5],
];

test('label marks each row\'s own argmax, not the batch\'s winners', async () => {
  await initBackend('wasm');
  const out = disclose(tf.tensor2d(P), { kind: 'label' });
  assert.equal(out.arraySync(), [
    [0, 1, 0],
    [1, 0, 0],
    [0, 0, 1],
    [0, 0, 1],
  ]);
});

test('topk keeps exactly k values per row, unnormalised', () => {
  const out = disclose(tf.tensor2d(P), { kind: 'topk', k: 2 }).arraySync();
  for (const [r, row] of out.entries()) {
    assert.is(row.filter((v) => v !== 0).length, 2);
    const kept = [...P[r]].sort((a, b) => b - a).slice(0, 2);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - (kept[0] + kept[1])) < 1e-6);
  }
  assert.ok(Math.abs(out[0][1] - 0.6) < 1e-6 && Math.abs(out[0][2] - 0.3) < 1e-6 && out[0][0] === 0);
});

test('probs are returned as is; rounded to the decimals asked', () => {
  const probs = disclose(tf.tensor2d([[0.123456, 0.876544]]), { kind: 'probs' }).arraySync()[0];
  assert.ok(Math.abs(probs[0] - 0.123456) < 1e-6);
  const r = disclose(tf.tensor2d([[0.123456, 0.876544]]), { kind: 'rounded', decimals: 2 }).arraySync()[0];
  assert.ok(Math.abs(r[0] - 0.12) < 1e-6 && Math.abs(r[1] - 0.88) < 1e-6);
});

test('invalid k and decimals are refused clearly', () => {
  assert.throws(() => disclose(tf.tensor2d(P), { kind: 'topk', k: 4 }), /top4: k must be an integer from 1 to 3/);
  assert.throws(() => disclose(tf.tensor2d(P), { kind: 'rounded', decimals: -1 }), /decimals must be/);
  assert.is(describeDisclosure({ kind: 'topk', k: 3 }), 'top3');
  assert.ok(givesProbabilities({ kind: 'rounded', decimals: 1 }) && !givesProbabilities({ kind: 'label' }));
});

/** A real, if tiny, model: softmax of a fixed linear map of the pixel sums. */
function linearTarget(): Target {
  const w = tf.tensor2d([[1, -1, 0.5]]);
  return {
    id: 'lin', family: 'cnn', inputShape: [2, 2, 1], classes: 3, testAccuracy: NaN,
    predictProba: (x) => tf.tidy(() => tf.softmax(tf.matMul(tf.sum(x.reshape([x.shape[0], 4]), 1, true), w)) as tf.Tensor2D),
    dispose: () => w.dispose(),
  };
}

test('the oracle counts rows exactly and refuses, answering nothing, past the budget', async () => {
  const oracle = new InProcessOracle(linearTarget(), 10, { kind: 'label' });
  const batch = (n: number) => tf.randomUniform([n, 2, 2, 1]);
  for (const n of [3, 4]) tf.dispose(await oracle.query(batch(n)));
  assert.is(oracle.spent, 7);
  assert.is(oracle.queries, 2);
  try {
    await oracle.query(batch(4));
    assert.unreachable('should refuse');
  } catch (err) {
    assert.instance(err, BudgetExceeded);
    assert.is((err as BudgetExceeded).remaining, 3);
  }
  assert.is(oracle.spent, 7);
  const last = await oracle.query(batch(3));
  assert.equal(last.shape, [3, 3]);
  assert.is(oracle.spent, 10);
});

test('the oracle rejects wrong shapes and empty queries without spending', async () => {
  const oracle = new InProcessOracle(linearTarget(), 10, { kind: 'probs' });
  for (const bad of [tf.zeros([2, 3, 3, 1]), tf.zeros([0, 2, 2, 1])]) {
    try {
      await oracle.query(bad);
      assert.unreachable('should reject');
    } catch (err) {
      assert.match((err as Error).message, /shape \[2, 2, 1\], got \[3, 3, 1\]|empty query/);
    }
  }
  assert.is(oracle.spent, 0);
});

test.run();
