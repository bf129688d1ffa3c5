import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../models/backend.ts';
import { rng } from '../models/seed.ts';

type Case = { n: number; h: number; w: number; ci: number; co: number; k: number; stride: 1 | 2; pad: 'same' | 'valid' };

/** dL/dW for L = Σ conv2d(x, W) ⊙ g, on whichever backend is current. */
function filterGrad(c: Case, x: Float32Array, w: Float32Array, g: Float32Array): Float32Array {
  return tf.tidy(() => {
    const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
    const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
    const out = tf.conv2d(xt, wt, c.stride, c.pad);
    const gt = tf.tensor(g, out.shape);
    const grad = tf.grad((ww: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(xt, ww as tf.Tensor4D, c.stride, c.pad), gt)))(wt);
    return grad.dataSync() as Float32Array;
  });
}

function outSize(c: Case): number {
  const o = (s: number) => (c.pad === 'same' ? Math.ceil(s / c.stride) : Math.floor((s - c.k) / c.stride) + 1);
  return c.n * o(c.h) * o(c.w) * c.co;
}

test('wasm Conv2DBackpropFilter matches the cpu backend (strides 1, 2; same, valid; random shapes)', async () => {
  const random = rng(42, 'conv-test');
  const pick = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const cases: Case[] = [];
  for (const stride of [1, 2] as const)
    for (const pad of ['same', 'valid'] as const)
      for (let i = 0; i < 4; i++) {
        const k = random() < 0.5 ? 3 : 5;
        cases.push({ n: pick(1, 4), h: pick(k, 15), w: pick(k, 15), ci: pick(1, 5), co: pick(1, 6), k, stride, pad });
      }
  for (const c of cases) {
    const fill = (len: number) => Float32Array.from({ length: len }, () => random() * 2 - 1);
    const x = fill(c.n * c.h * c.w * c.ci);
    const w = fill(c.k * c.k * c.ci * c.co);
    const g = fill(outSize(c));
    await initBackend('cpu');
    const expected = filterGrad(c, x, w, g);
    await initBackend('wasm');
    const actual = filterGrad(c, x, w, g);
    assert.is(actual.length, expected.length);
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < expected.length; i++) {
      diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
      norm = Math.max(norm, Math.abs(expected[i]));
    }
    assert.ok(diff / norm <= 1e-4, `relative error ${diff / norm} for ${JSON.stringify(c)}`);
  }
});

test('the kernel is registered for wasm (the stock 4.22 backend has none)', async () => {
  await initBackend('wasm');
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'));
});

test('the registered kernel leaks no tensors', async () => {
  await initBackend('wasm');
  const c: Case = { n: 2, h: 9, w: 9, ci: 3, co: 4, k: 3, stride: 2, pad: 'same' };
  const data = (len: number) => new Float32Array(len).fill(0.5);
  filterGrad(c, data(2 * 81 * 3), data(9 * 3 * 4), data(outSize(c))); // warm-up: kernels allocate once
  const before = tf.memory().numTensors;
  const bytes = tf.memory().numBytes;
  filterGrad(c, data(2 * 81 * 3), data(9 * 3 * 4), data(outSize(c)));
  assert.is(tf.memory().numTensors, before);
  assert.is(tf.memory().numBytes, bytes);
});

test.run();
