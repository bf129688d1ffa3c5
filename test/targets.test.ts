import { mkdtempSync, readdirSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toTensor } from '../datasets/split.ts';
import type { Dataset } from '../datasets/types.ts';
import { initBackend } from '../models/backend.ts';
import { getTarget } from '../models/targets/index.ts';
import { fitNaiveBayes, naiveBayesTarget } from '../models/targets/naive-bayes.ts';
import { fitSvm, svmTarget } from '../models/targets/svm.ts';
import type { TargetSpec } from '../models/types.ts';
import { smallMnist } from './helpers.ts';

let ds: Dataset;
const shape: [number, number, number] = [28, 28, 1];
const freshCache = () => mkdtempSync(join(tmpdir(), 'rho-targets-'));

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
});

function rowsSumToOne(p: number[][]) {
  for (const row of p) {
    assert.ok(row.every((v) => Number.isFinite(v) && v >= 0), 'finite, non-negative');
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'sums to 1');
  }
}

test('naive Bayes: better than chance, and equal to a direct float64 evaluation', async () => {
  const params = fitNaiveBayes(ds.split('train'), 10, 0.1);
  const target = naiveBayesTarget('nb', params, shape);
  const ev = ds.split('eval');
  const x = toTensor(ev, shape, 0, 20);
  const probs = target.predictProba(x).arraySync();
  rowsSumToOne(probs);
  for (let r = 0; r < 20; r++) {
    const logJoint = Array.from({ length: 10 }, (_, c) => {
      let s = params.logPriors[c];
      for (let f = 0; f < 784; f++) {
        const v = params.variances[c * 784 + f];
        s -= 0.5 * Math.log(2 * Math.PI * v) + (ev.x[r * 784 + f] - params.means[c * 784 + f]) ** 2 / (2 * v);
      }
      return s;
    });
    const best = logJoint.indexOf(Math.max(...logJoint));
    assert.is(probs[r].indexOf(Math.max(...probs[r])), best, `row ${r}`);
  }
  const t = await getTarget({ id: 'nb', family: 'naive-bayes', trainSize: 2000, varSmoothing: 0.1, seed: 1 }, ds, { cacheDir: freshCache() });
  assert.ok(t.testAccuracy > 0.5, `accuracy ${t.testAccuracy}`);
  tf.dispose(x);
  target.dispose();
  t.dispose();
});

test('RBF SVM: tfjs probabilities equal libsvm\'s own, and accuracy is high', async () => {
  const train = ds.split('train');
  const small = { x: train.x.subarray(0, 1000 * 784), y: train.y.subarray(0, 1000), n: 1000 };
  const { params, svm } = await fitSvm(small, 10, 5, 0.03);
  const target = svmTarget('svm', params, shape);
  const ev = ds.split('eval');
  const rows = Array.from({ length: 30 }, (_, r) => Array.from(ev.x.subarray(r * 784, (r + 1) * 784)));
  const reference = svm.predictProbability(rows);
  const x = toTensor(ev, shape, 0, 30);
  const ours = target.predictProba(x).arraySync();
  rowsSumToOne(ours);
  let worst = 0;
  for (let r = 0; r < 30; r++) {
    for (const { label, probability } of reference[r].estimates) worst = Math.max(worst, Math.abs(ours[r][label] - probability));
    assert.is(ours[r].indexOf(Math.max(...ours[r])), reference[r].prediction, `row ${r}`);
  }
  assert.ok(worst < 1e-4, `largest probability difference ${worst}`);
  const all = toTensor(ev, shape);
  const pred = (await target.predictProba(all).argMax(1).data()) as Int32Array;
  const acc = pred.filter((p, i) => p === ev.y[i]).length / ev.n;
  assert.ok(acc > 0.85, `accuracy ${acc}`);
  svm.free();
  tf.dispose([x, all]);
  target.dispose();
});

test('CNN: trains well and survives the cache round trip bit for bit', async () => {
  const cacheDir = freshCache();
  const spec: TargetSpec = { id: 'cnn', family: 'cnn', arch: 'cnn-small', trainSize: 2000, epochs: 3, batchSize: 32, lr: 0.003, seed: 1 };
  const a = await getTarget(spec, ds, { cacheDir });
  assert.is(a.fromCache, false);
  assert.ok(a.testAccuracy > 0.85, `accuracy ${a.testAccuracy}`);
  const b = await getTarget(spec, ds, { cacheDir });
  assert.is(b.fromCache, true);
  assert.is(b.arch, 'cnn-small');
  const x = toTensor(ds.split('eval'), shape, 0, 50);
  const pa = a.predictProba(x);
  const pb = b.predictProba(x);
  rowsSumToOne(pa.arraySync());
  assert.equal(Array.from(pa.dataSync()), Array.from(pb.dataSync()));
  tf.dispose([x, pa, pb]);
  a.dispose();
  b.dispose();
});

test('cache: a changed spec is a new entry; a damaged entry is retrained, not trusted', async () => {
  const cacheDir = freshCache();
  const spec: TargetSpec = { id: 'nb', family: 'naive-bayes', trainSize: 1000, varSmoothing: 0.1, seed: 1 };
  const logs: string[] = [];
  const log = (m: string) => logs.push(m);
  (await getTarget(spec, ds, { cacheDir, log })).dispose();
  const again = await getTarget({ ...spec, id: 'renamed' }, ds, { cacheDir, log });
  assert.is(again.fromCache, true, 'the id is a label, not part of the model');
  again.dispose();
  const other = await getTarget({ ...spec, varSmoothing: 0.2 }, ds, { cacheDir, log });
  assert.is(other.fromCache, false);
  other.dispose();
  const entries = readdirSync(join(cacheDir, 'targets'));
  assert.is(entries.length, 2);
  truncateSync(join(cacheDir, 'targets', entries[0], 'means.bin'), 100);
  truncateSync(join(cacheDir, 'targets', entries[1], 'means.bin'), 100);
  const retrained = await getTarget(spec, ds, { cacheDir, log });
  assert.is(retrained.fromCache, false);
  assert.ok(retrained.testAccuracy > 0.5);
  retrained.dispose();
  assert.is((await getTarget(spec, ds, { cacheDir })).fromCache, true);
});

test.run();
