import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toTensor } from '../datasets/split.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { couplePairwise, fitSvm, parseLibsvmModel, svmTarget, type LibsvmReference, type SvmParams } from '../models/targets/svm.ts';
import { smallMnist } from './helpers.ts';

let ds: Dataset;
let params: SvmParams;
let svm: LibsvmReference;
const shape: [number, number, number] = [28, 28, 1];
const D = 784;

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  const train = ds.split('train');
  const first1000: Split = { x: train.x.subarray(0, 1000 * D), y: train.y.subarray(0, 1000), n: 1000 };
  ({ params, reference: svm } = await fitSvm(first1000, 10, 5, 0.03));
});

test.after(() => svm.free());

test('tfjs probabilities equal libsvm\'s own predictProbability, and the labels agree', async () => {
  const target = svmTarget('svm', params, shape);
  const ev = ds.split('eval');
  const reference = svm.predictProbability(ev.x, 30);
  const x = toTensor(ev, shape, 0, 30);
  const answer = await target.predictProba(x);
  const ours = answer.arraySync();
  answer.dispose();
  let worst = 0;
  for (let r = 0; r < 30; r++) {
    assert.is(reference[r].estimates.length, 10);
    for (const { label, probability } of reference[r].estimates) worst = Math.max(worst, Math.abs(ours[r][label] - probability));
    assert.is(ours[r].indexOf(Math.max(...ours[r])), reference[r].prediction, `row ${r}`);
  }
  assert.ok(worst < 1e-4, `largest probability difference ${worst}`);
  x.dispose();
  target.dispose();
});

test('accuracy above 85% on 1,000 eval rows; rows sum to 1; no tensor leaks', async () => {
  const before = tf.memory().numTensors;
  const target = svmTarget('svm', params, shape);
  const ev = ds.split('eval');
  const x = toTensor(ev, shape);
  const during = tf.memory().numTensors;
  const probs = await target.predictProba(x);
  assert.is(tf.memory().numTensors, during + 1, 'predictProba leaves only its answer');
  const values = await probs.data();
  let right = 0;
  for (let r = 0; r < ev.n; r++) {
    const row = Array.from(values.subarray(r * 10, r * 10 + 10));
    assert.ok(row.every((v) => Number.isFinite(v) && v >= 0), `row ${r} finite, non-negative`);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, `row ${r} sums to 1`);
    if (row.indexOf(Math.max(...row)) === ev.y[r]) right++;
  }
  assert.ok(right / ev.n > 0.85, `accuracy ${right / ev.n}`);
  tf.dispose([x, probs]);
  target.dispose();
  assert.is(tf.memory().numTensors, before, 'dispose frees the support vectors');
});

test('libsvm on raw pixels (the path past PRECOMPUTED_MAX_ROWS) and on the kernel matrix train the same SVM', async () => {
  const train = ds.split('train');
  const first300: Split = { x: train.x.subarray(0, 300 * D), y: train.y.subarray(0, 300), n: 300 };
  const raw = await fitSvm(first300, 10, 5, 0.03, { precomputedMaxRows: 0 });
  const pre = await fitSvm(first300, 10, 5, 0.03);
  // The same dual problem: same classes, support vectors, coefficients and offsets, up to the
  // kernel's precision (float64 in libsvm, float32 in the matrix) and the text's six-digit rho.
  assert.equal(pre.params.labels, raw.params.labels);
  assert.equal(pre.params.nSV, raw.params.nSV);
  const worst = (u: ArrayLike<number>, v: ArrayLike<number>) => Array.from(u).reduce((m, x, i) => Math.max(m, Math.abs(x - v[i])), 0);
  // The text prints pixels with 8 digits; the matrix path takes the training rows' own floats.
  assert.ok(worst(pre.params.supportVectors, raw.params.supportVectors) < 1e-6, 'same support vectors');
  assert.ok(worst(pre.params.rho, raw.params.rho) < 1e-3, `rho differs by ${worst(pre.params.rho, raw.params.rho)}`);
  pre.params.coef.forEach((row, j) => assert.ok(worst(row, raw.params.coef[j]) < 1e-3, `coef row ${j}`));
  // The raw-pixel path is checked against libsvm as the matrix path is in the first test.
  const a = svmTarget('raw', raw.params, shape);
  const ev = ds.split('eval');
  const x = toTensor(ev, shape, 0, 30);
  const answerA = await a.predictProba(x);
  const pa = answerA.arraySync();
  answerA.dispose();
  const reference = raw.reference.predictProbability(ev.x, 30);
  let worstRef = 0;
  for (let r = 0; r < 30; r++) {
    for (const { label, probability } of reference[r].estimates) worstRef = Math.max(worstRef, Math.abs(pa[r][label] - probability));
    assert.is(pa[r].indexOf(Math.max(...pa[r])), reference[r].prediction, `row ${r}`);
  }
  assert.ok(worstRef < 1e-4, `raw-pixel model vs libsvm: ${worstRef}`);
  tf.dispose(x);
  a.dispose();
  [raw, pre].forEach((f) => f.reference.free());
});

test('pairwise coupling recovers the distribution that consistent pairwise probabilities come from', () => {
  const k = 5;
  const p = [0.4, 0.25, 0.2, 0.1, 0.05];
  const r = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) if (i !== j) r[i * k + j] = p[i] / (p[i] + p[j]);
  const out = new Float64Array(k);
  couplePairwise(r, k, out);
  // libsvm's stopping rule (max error < 0.005/k) bounds how close it gets, not exactness.
  for (let i = 0; i < k; i++) assert.ok(Math.abs(out[i] - p[i]) < 5e-3, `class ${i}: ${out[i]} vs ${p[i]}`);
  assert.ok(Math.abs(out.reduce((a, b) => a + b, 0) - 1) < 1e-9);
});

test('model text: labels keep libsvm\'s order; broken text is refused with the reason', () => {
  const text = [
    'svm_type c_svc', 'kernel_type rbf', 'gamma 0.5', 'nr_class 3', 'total_sv 3',
    'rho 0.1 0.2 0.3', 'label 7 2 5', 'probA -1 -2 -3', 'probB 0.5 0.25 0', 'nr_sv 1 1 1', 'SV',
    '1 0.5 1:0.25 3:1', '-1 2 2:0.5', '-0.5 -2 1:1 2:1 3:1', '',
  ].join('\n');
  const p = parseLibsvmModel(text, 10, 3, 0.5);
  assert.equal(p.labels, [7, 2, 5]);
  assert.equal(p.nSV, [1, 1, 1]);
  assert.equal(Array.from(p.supportVectors), [0.25, 0, 1, 0, 0.5, 0, 1, 1, 1]);
  assert.equal(p.coef, [[1, -1, -0.5], [0.5, 2, -2]]);
  assert.equal(p.rho, [0.1, 0.2, 0.3]);
  assert.throws(() => parseLibsvmModel(text.replace(/probA.*\n/, ''), 10, 3, 0.5), /no "probA" line/);
  assert.throws(() => parseLibsvmModel(text.replace('total_sv 3', 'total_sv 4'), 10, 3, 0.5), /total_sv/);
  assert.throws(() => parseLibsvmModel(text.replace('3:1\n', '4:1\n'), 10, 3, 0.5), /bad feature "4:1"/);
  assert.throws(() => parseLibsvmModel(text.replace('label 7 2 5', 'label 7 2 11'), 10, 3, 0.5), /label 11/);
  assert.throws(() => parseLibsvmModel(text, 10, 3, 0.25), /gamma/);
});

test.run();
