import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { subset, toTensor } from '../datasets/split.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { fitNaiveBayes, naiveBayesTarget } from '../models/targets/naive-bayes.ts';
import { smallMnist } from './helpers.ts';

let ds: Dataset;
const shape: [number, number, number] = [28, 28, 1];
const D = 784;

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
});

/** Posterior of one row straight from the Gaussian density, in float64, normalised by log-sum-exp. */
function referencePosterior(p: ReturnType<typeof fitNaiveBayes>, x: Float32Array, row: number): number[] {
  const logJoint = Array.from({ length: p.classes }, (_, c) => {
    let s = p.logPriors[c];
    for (let f = 0; f < D; f++) {
      const v = p.variances[c * D + f];
      s += -0.5 * Math.log(2 * Math.PI * v) - (x[row * D + f] - p.means[c * D + f]) ** 2 / (2 * v);
    }
    return s;
  });
  const max = Math.max(...logJoint);
  const lse = max + Math.log(logJoint.reduce((a, l) => a + Math.exp(l - max), 0));
  return logJoint.map((l) => Math.exp(l - lse));
}

test('fit: class means and variances, smoothing = varSmoothing × the largest feature variance', () => {
  const train = ds.split('train');
  const p = fitNaiveBayes(train, 10, 0.1);
  const column = (f: number, keep: (r: number) => boolean) => {
    const v: number[] = [];
    for (let r = 0; r < train.n; r++) if (keep(r)) v.push(train.x[r * D + f]);
    return v;
  };
  const meanVar = (v: number[]) => {
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    return [m, v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length];
  };
  let maxVar = 0;
  for (let f = 0; f < D; f++) maxVar = Math.max(maxVar, meanVar(column(f, () => true))[1]);
  const eps = 0.1 * maxVar;
  for (const [c, f] of [[3, 400], [7, 0], [0, 350]]) {
    const [m, v] = meanVar(column(f, (r) => train.y[r] === c));
    assert.ok(Math.abs(p.means[c * D + f] - m) < 1e-6, `mean of class ${c}, pixel ${f}`);
    assert.ok(Math.abs(p.variances[c * D + f] - (v + eps)) < 1e-6, `variance of class ${c}, pixel ${f}`);
  }
  const count3 = train.y.filter((y) => y === 3).length;
  assert.ok(Math.abs(p.logPriors[3] - Math.log(count3 / train.n)) < 1e-6);
});

for (const varSmoothing of [0.1, 1e-9]) {
  test(`predictProba equals a float64 evaluation of the density (varSmoothing ${varSmoothing})`, async () => {
    // 1e-9 is scikit-learn's default: 1/σ² reaches ~1e10 on border pixels, where float32 shortcuts fall apart.
    const p = fitNaiveBayes(ds.split('train'), 10, varSmoothing);
    const target = naiveBayesTarget('nb', p, shape);
    const ev = ds.split('eval');
    const x = toTensor(ev, shape, 0, 20);
    const answer = await target.predictProba(x);
    const probs = answer.arraySync();
    answer.dispose();
    for (let r = 0; r < 20; r++) {
      const want = referencePosterior(p, ev.x, r);
      const worst = Math.max(...want.map((w, c) => Math.abs(w - probs[r][c])));
      assert.ok(worst < 1e-4, `row ${r}: off by ${worst}`);
      assert.is(probs[r].indexOf(Math.max(...probs[r])), want.indexOf(Math.max(...want)), `row ${r} argmax`);
    }
    x.dispose();
    target.dispose();
  });
}

test('accuracy well above chance; rows sum to 1; no tensor leaks', async () => {
  const before = tf.memory().numTensors;
  const target = naiveBayesTarget('nb', fitNaiveBayes(ds.split('train'), 10, 0.1), shape);
  const ev = ds.split('eval');
  const x = toTensor(ev, shape);
  const during = tf.memory().numTensors;
  const probs = await target.predictProba(x);
  assert.is(tf.memory().numTensors, during + 1, 'predictProba leaves only its answer');
  assert.equal(probs.shape, [ev.n, 10]);
  const values = await probs.data();
  for (let r = 0; r < ev.n; r++) {
    let s = 0;
    for (let c = 0; c < 10; c++) {
      assert.ok(Number.isFinite(values[r * 10 + c]) && values[r * 10 + c] >= 0, `row ${r} finite, non-negative`);
      s += values[r * 10 + c];
    }
    assert.ok(Math.abs(s - 1) < 1e-5, `row ${r} sums to ${s}`);
  }
  const argmax = probs.argMax(1);
  const pred = (await argmax.data()) as Int32Array;
  argmax.dispose();
  const acc = pred.filter((p, i) => p === ev.y[i]).length / ev.n;
  assert.ok(acc > 0.5, `accuracy ${acc}`);
  tf.dispose([x, probs]);
  target.dispose();
  assert.is(tf.memory().numTensors, before, 'dispose frees the weights');
});

test('a class absent from the training rows gets probability 0, and nothing is NaN', async () => {
  const train = ds.split('train');
  const without7: Split = subset(train, Int32Array.from({ length: train.n }, (_, i) => i).filter((i) => train.y[i] !== 7));
  const target = naiveBayesTarget('nb', fitNaiveBayes(without7, 10, 0.1), shape);
  const x = toTensor(ds.split('eval'), shape, 0, 100);
  const answer = await target.predictProba(x);
  const probs = answer.arraySync();
  answer.dispose();
  for (const row of probs) {
    assert.is(row[7], 0);
    assert.ok(row.every(Number.isFinite));
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5);
  }
  x.dispose();
  target.dispose();
});

test('fit refuses labels outside the classes, naming the row', () => {
  const train = ds.split('train');
  const bad: Split = { x: train.x.subarray(0, 3 * D), y: Int32Array.from([1, 12, 3]), n: 3 };
  assert.throws(() => fitNaiveBayes(bad, 10, 0.1), /label 12 at training row 1/);
});

test.run();
