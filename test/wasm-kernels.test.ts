import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../models/backend.ts';
import { rng } from '../models/seed.ts';
import { registerWasmKernels } from '../models/wasm-kernels.ts';

type Case = { n: number; h: number; w: number; ci: number; co: number; k: number; stride: 1 | 2; pad: 'same' | 'valid' };

const random = rng(42, 'kernel-test');
const pick = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const fill = (len: number, zeroFraction = 0) =>
  Float32Array.from({ length: len }, () => (random() < zeroFraction ? 0 : random() * 2 - 1));

/** Runs fn on the cpu backend, then on wasm, and compares: max |diff| / max |expected|. */
async function cpuVsWasm(label: string, fn: () => tf.Tensor[]): Promise<void> {
  await initBackend('cpu');
  const expected = tf.tidy(() => fn().map((t) => t.dataSync() as Float32Array));
  await initBackend('wasm');
  const actual = tf.tidy(() => fn().map((t) => t.dataSync() as Float32Array));
  expected.forEach((e, j) => {
    const a = actual[j];
    assert.is(a.length, e.length, label);
    let diff = 0;
    let norm = 1e-12;
    for (let i = 0; i < e.length; i++) {
      diff = Math.max(diff, Math.abs(a[i] - e[i]));
      norm = Math.max(norm, Math.abs(e[i]));
    }
    assert.ok(diff / norm <= 1e-4, `relative error ${diff / norm} in output ${j} for ${label}`);
  });
}

function convCases(): Case[] {
  const cases: Case[] = [];
  for (const stride of [1, 2] as const)
    for (const pad of ['same', 'valid'] as const)
      for (let i = 0; i < 4; i++) {
        const k = random() < 0.5 ? 3 : 5;
        cases.push({ n: pick(1, 4), h: pick(k, 15), w: pick(k, 15), ci: pick(1, 5), co: pick(1, 6), k, stride, pad });
      }
  return cases;
}

/** dL/dx and dL/dW for L = Σ conv2d(x, W) ⊙ g: Conv2DBackpropInput and Conv2DBackpropFilter. */
function convGrads(c: Case, x: Float32Array, w: Float32Array, g: Float32Array): tf.Tensor[] {
  const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
  const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
  const out = tf.conv2d(xt, wt, c.stride, c.pad);
  const gt = tf.tensor(g, out.shape);
  const f = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), gt));
  return tf.grads(f)([xt, wt]);
}

test('wasm conv2d gradients (input and filter) match the cpu backend: strides 1, 2; same, valid; random shapes', async () => {
  for (const c of convCases()) {
    await initBackend('cpu');
    const outLen = tf.tidy(() => tf.conv2d(tf.zeros([c.n, c.h, c.w, c.ci]) as tf.Tensor4D, tf.zeros([c.k, c.k, c.ci, c.co]) as tf.Tensor4D, c.stride, c.pad).size);
    const x = fill(c.n * c.h * c.w * c.ci);
    const w = fill(c.k * c.k * c.ci * c.co);
    const g = fill(outLen);
    await cpuVsWasm(JSON.stringify(c), () => convGrads(c, x, w, g));
  }
});

test('wasm max-pool gradient matches the cpu backend, ties included (ReLU zeros, repeated values)', async () => {
  const shapes: [number, number, number, number, number][] = [
    [2, 8, 6, 3, 2], // [n, h, w, c, pool]: even sizes, 2×2 (the fast path)
    [3, 28, 28, 4, 2],
    [2, 7, 9, 2, 2], // odd sizes: the last row and column lie in no window
    [2, 9, 9, 3, 3], // 3×3: wasm's own kernel, which breaks ties its own way, so no ties here
  ];
  for (const [n, h, w, c, p] of shapes) {
    // Coarse values: many exact ties inside windows.
    const coarse = (v: number) => (p === 2 ? Math.round(v * 3) / 3 : v);
    const x = Float32Array.from(fill(n * h * w * c, p === 2 ? 0.4 : 0), coarse);
    const oh = Math.floor((h - p) / p) + 1;
    const ow = Math.floor((w - p) / p) + 1;
    const g = fill(n * oh * ow * c);
    await cpuVsWasm(`maxPool ${[n, h, w, c, p]}`, () => {
      const xt = tf.tensor4d(x, [n, h, w, c]);
      const gt = tf.tensor4d(g, [n, oh, ow, c]);
      return [tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(v as tf.Tensor4D, p, p, 'valid'), gt)))(xt)];
    });
  }
});

test('wasm matMul with transposed operands matches the cpu backend', async () => {
  const a = fill(7 * 5);
  const b = fill(5 * 3);
  await cpuVsWasm('matMul', () => {
    const at = tf.tensor2d(a, [7, 5]);
    const bt = tf.tensor2d(b, [5, 3]);
    return [
      tf.matMul(at, bt),
      tf.matMul(at.transpose(), bt.transpose(), true, true),
      tf.matMul(at.transpose(), bt, true, false),
      tf.matMul(at, bt.transpose(), false, true),
      tf.matMul(tf.reshape(at, [1, 7, 5]), tf.reshape(bt.transpose(), [1, 3, 5]), false, true),
    ];
  });
});

test('stock wasm 4.22 lacks Conv2DBackpropFilter; registerWasmKernels supplies it, idempotently', async () => {
  await initBackend('wasm');
  const ours = tf.getKernel('Conv2DBackpropFilter', 'wasm');
  assert.ok(ours);
  tf.unregisterKernel('Conv2DBackpropFilter', 'wasm');
  try {
    const c: Case = { n: 1, h: 5, w: 5, ci: 1, co: 1, k: 3, stride: 1, pad: 'same' };
    assert.throws(() => tf.tidy(() => convGrads(c, fill(25), fill(9), fill(25))), /Conv2DBackpropFilter/);
  } finally {
    registerWasmKernels();
  }
  const again = tf.getKernel('Conv2DBackpropFilter', 'wasm');
  assert.ok(again);
  const matmul = tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc;
  registerWasmKernels();
  assert.is(tf.getKernel('BatchMatMul', 'wasm')!.kernelFunc, matmul, 'a second call leaves the kernels as they are');
});

test('the wasm kernels leak no tensors or memory', async () => {
  await initBackend('wasm');
  const c: Case = { n: 2, h: 10, w: 10, ci: 3, co: 4, k: 3, stride: 2, pad: 'same' };
  const x = fill(2 * 100 * 3);
  const w = fill(9 * 3 * 4);
  const g = fill(2 * 25 * 4);
  const step = () =>
    tf.tidy(() => {
      const grads = convGrads(c, x, w, g);
      const pooled = tf.grad((v: tf.Tensor) => tf.sum(tf.maxPool(v as tf.Tensor4D, 2, 2, 'valid')))(grads[0]);
      return [...grads, pooled, tf.matMul(grads[1].reshape([27, 4]), grads[1].reshape([27, 4]), true, false)].map((t) => t.dataSync());
    });
  step(); // warm-up: kernels allocate once
  const before = tf.memory();
  step();
  const after = tf.memory();
  assert.is(after.numTensors, before.numTensors);
  assert.is(after.numBytes, before.numBytes);
});

test.run();
