import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toTensor } from '../datasets/split.ts';
import type { Dataset } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { asImitation, fitSoft, predictBatched, softCrossEntropy } from '../models/train.ts';
import { STUDENT_ARCHS } from '../models/types.ts';
import { smallMnist } from './helpers.ts';

let ds: Dataset;
const shape: [number, number, number] = [28, 28, 1];
test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
});

test('every architecture maps images to one logit per class', () => {
  for (const arch of STUDENT_ARCHS) {
    const model = buildStudent(arch, shape, 10);
    const out = model.predict(tf.zeros([3, ...shape])) as tf.Tensor;
    assert.equal(out.shape, [3, 10], arch);
    tf.dispose(out);
    model.dispose();
  }
  assert.throws(() => buildStudent('resnet' as never, shape, 10), /unknown student architecture "resnet": choose one of mlp, lenet5, cnn-small, cnn-wide, vgg-mini, resnet-mini/);
});

test('soft cross-entropy: hand-computed value, and the T² scaling', () => {
  const logits = tf.tensor2d([[Math.log(1), Math.log(3)]]);
  const targets = tf.tensor2d([[0.5, 0.5]]);
  // softmax = (1/4, 3/4): CE = −½(ln ¼ + ln ¾)
  const expected = -0.5 * (Math.log(0.25) + Math.log(0.75));
  assert.ok(Math.abs(softCrossEntropy(targets, logits).dataSync()[0] - expected) < 1e-6);
  // T = 2: softmax(z/2) = (1, √3)/(1 + √3)
  const s = Math.sqrt(3);
  const expectedT = 4 * -0.5 * (Math.log(1 / (1 + s)) + Math.log(s / (1 + s)));
  assert.ok(Math.abs(softCrossEntropy(targets, logits, 2).dataSync()[0] - expectedT) < 1e-5);
});

async function trainCnn(seed: number) {
  const train = ds.split('train');
  const x = toTensor(train, shape, 0, 1000);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(train.y.subarray(0, 1000), 'int32'), 10).toFloat() as tf.Tensor2D);
  const model = await withSeed(seed, () => buildStudent('cnn-small', shape, 10));
  const before = tf.memory().numTensors;
  const { losses } = await fitSoft(model, x, y, { epochs: 3, batchSize: 32, lr: 0.003, seed });
  const leaked = tf.memory().numTensors - before;
  tf.dispose([x, y]);
  return { model, losses, leaked };
}

test('cnn-small learns real MNIST, deterministically, without leaking tensors', async () => {
  const before = tf.memory().numTensors;
  const a = await trainCnn(4);
  const b = await trainCnn(4);
  assert.is(a.leaked, 0, 'fitSoft leaves no tensors behind (optimizer state included)');
  assert.equal(a.losses, b.losses, 'same seed, same losses');
  assert.ok(a.losses[2] < a.losses[0], 'loss falls');
  const ev = toTensor(ds.split('eval'), shape);
  const predict = (m: tf.LayersModel) => tf.tidy(() => (m.predict(ev) as tf.Tensor).argMax(1).dataSync());
  const predA = predict(a.model);
  assert.equal(Array.from(predA), Array.from(predict(b.model)), 'same seed, same predictions');
  const acc = Array.from(predA).filter((p, i) => p === ds.split('eval').y[i]).length / predA.length;
  assert.ok(acc > 0.8, `held-out accuracy ${acc}`);
  tf.dispose(ev);
  a.model.dispose();
  b.model.dispose();
  assert.is(tf.memory().numTensors, before, 'models disposed: back where we started');
});

test('a different seed trains differently', async () => {
  const a = await trainCnnShort(4);
  const c = await trainCnnShort(5);
  assert.not.equal(a, c);
});

test('asImitation: batched softmax equals the one-shot one, rows sum to 1, no leaks; dispose frees the model', async () => {
  const model = await withSeed(9, () => buildStudent('mlp', shape, 10));
  const x = toTensor(ds.split('eval'), shape, 0, 70);
  const before = tf.memory().numTensors;
  const imitation = asImitation(model, 16); // 70 rows: 5 batches, the last one short
  const batched = await imitation.predict(x);
  const whole = tf.tidy(() => tf.softmax(model.predict(x) as tf.Tensor2D));
  assert.equal(batched.shape, [70, 10]);
  const b = batched.dataSync();
  const w = whole.dataSync();
  assert.ok(b.every((v, i) => Math.abs(v - w[i]) < 1e-6));
  const sums = tf.tidy(() => tf.sum(batched, 1).dataSync());
  assert.ok(sums.every((v) => Math.abs(v - 1) < 1e-5));
  const doubled = predictBatched((t) => tf.mul(t.reshape([t.shape[0], -1]), 2) as tf.Tensor2D, x, 32);
  assert.equal(doubled.shape, [70, 784]);
  tf.dispose([batched, whole, doubled]);
  assert.is(tf.memory().numTensors, before);
  const weights = model.countParams() > 0 ? tf.memory().numTensors : 0;
  imitation.dispose();
  assert.ok(tf.memory().numTensors < weights, 'model weights freed');
  x.dispose();
});

async function trainCnnShort(seed: number): Promise<number[]> {
  const train = ds.split('train');
  const x = toTensor(train, shape, 0, 200);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(train.y.subarray(0, 200), 'int32'), 10).toFloat() as tf.Tensor2D);
  const model = await withSeed(seed, () => buildStudent('cnn-small', shape, 10));
  const { losses } = await fitSoft(model, x, y, { epochs: 1, batchSize: 32, lr: 0.003, seed });
  tf.dispose([x, y]);
  model.dispose();
  return losses;
}

/** Gradients of the soft cross-entropy w.r.t. every weight, on whichever backend is current. */
function weightGrads(model: tf.LayersModel, x: tf.Tensor, y: tf.Tensor2D): Float32Array[] {
  return tf.tidy(() => {
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const { grads } = tf.variableGrads(() => softCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor2D), vars);
    return vars.map((v) => grads[v.name].dataSync() as Float32Array);
  });
}

test('every architecture trains on wasm with the same gradients as on cpu', async () => {
  const train = ds.split('train');
  // Two rows: the pure-JS cpu backend is slow, and two distinct digits exercise every kernel.
  const x = toTensor(train, shape, 0, 2);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(train.y.subarray(0, 2), 'int32'), 10).toFloat() as tf.Tensor2D);
  for (const arch of STUDENT_ARCHS) {
    const model = await withSeed(2, () => buildStudent(arch, shape, 10));
    const onWasm = weightGrads(model, x, y);
    await initBackend('cpu');
    const onCpu = weightGrads(model, x, y);
    await initBackend('wasm');
    let diff = 0;
    let norm = 0;
    onCpu.forEach((g, i) => g.forEach((v, j) => {
      diff = Math.max(diff, Math.abs(v - onWasm[i][j]));
      norm = Math.max(norm, Math.abs(v));
    }));
    assert.ok(norm > 0 && diff / norm < 1e-3, `${arch}: relative gradient difference ${diff / norm}`);
    model.dispose();
  }
  tf.dispose([x, y]);
});

test.run();
