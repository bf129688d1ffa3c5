import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toTensor } from '../datasets/split.ts';
import type { Dataset } from '../datasets/types.ts';
import { initBackend } from '../models/backend.ts';
import { withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { fitSoft, softCrossEntropy } from '../models/train.ts';
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
  assert.throws(() => buildStudent('resnet' as never, shape, 10), /unknown student architecture "resnet": choose one of mlp, lenet5, cnn-small/);
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
  const { losses } = await fitSoft(model, x, y, { epochs: 3, batchSize: 32, lr: 0.003, seed });
  tf.dispose([x, y]);
  return { model, losses };
}

test('cnn-small learns real MNIST, deterministically, without leaking tensors', async () => {
  const before = tf.memory().numTensors;
  const a = await trainCnn(4);
  const b = await trainCnn(4);
  assert.equal(a.losses, b.losses, 'same seed, same losses');
  assert.ok(a.losses[2] < a.losses[0], 'loss falls');
  const ev = toTensor(ds.split('eval'), shape);
  const pa = tf.tidy(() => (a.model.predict(ev) as tf.Tensor).argMax(1));
  const pb = tf.tidy(() => (b.model.predict(ev) as tf.Tensor).argMax(1));
  const predA = pa.dataSync();
  assert.equal(Array.from(predA), Array.from(pb.dataSync()));
  const acc = Array.from(predA).filter((p, i) => p === ds.split('eval').y[i]).length / predA.length;
  assert.ok(acc > 0.8, `held-out accuracy ${acc}`);
  tf.dispose([ev, pa, pb]);
  a.model.dispose();
  b.model.dispose();
  assert.is(tf.memory().numTensors, before);
});

test.run();
