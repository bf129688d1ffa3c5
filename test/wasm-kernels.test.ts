import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../engine/backend.ts';
import { createAdam } from '../models/fused-adam.ts';
import { rng, withSeed } from '../models/seed.ts';
import { handDerivedStep } from '../models/sequential-step.ts';
import { softCrossEntropy } from '../models/soft-loss.ts';
import { buildStudent } from '../models/students.ts';
import { STUDENT_ARCHS } from '../models/types.ts';
import { Fn, Module, assemble, at, f32, get, i32, v128 } from '../engine/wasm/asm.ts';
import { cpuVs, relativeError } from './helpers.ts';
import { registerWasmKernels } from '../engine/wasm/kernels.ts';

type Case = { n: number; h: number; w: number; ci: number; co: number; k: number; stride: 1 | 2; pad: 'same' | 'valid' };

const random = rng(42, 'kernel-test');
const pick = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const fill = (len: number, zeroFraction = 0) =>
  Float32Array.from({ length: len }, () => (random() < zeroFraction ? 0 : random() * 2 - 1));

/** Runs fn on the cpu backend, then on wasm, and compares every output within `tolerance`. */
const cpuVsWasm = (label: string, fn: () => tf.Tensor[], tolerance = 1e-4) => cpuVs('wasm', label, fn, tolerance);

function convCases(): Case[] {
  const cases: Case[] = [];
  for (const stride of [1, 2] as const)
    for (const pad of ['same', 'valid'] as const)
      for (let i = 0; i < 4; i++) {
        const k = random() < 0.5 ? 3 : 5;
        cases.push({ n: pick(1, 4), h: pick(k, 15), w: pick(k, 15), ci: pick(1, 5), co: pick(1, 6), k, stride, pad });
      }
  // 16 or more input channels and no widening, stride 1: dx by one XNNPACK convolution.
  cases.push({ n: 2, h: 7, w: 6, ci: 16, co: 8, k: 3, stride: 1, pad: 'same' }, { n: 1, h: 8, w: 9, ci: 20, co: 20, k: 3, stride: 1, pad: 'valid' });
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

test('the assembler: signed and unsigned LEB128 constants, loops, calls, SIMD loads and stores', () => {
  const mod = new Module();
  // Writes i32 constants at the edges of the LEB128 byte lengths, then f32 and SIMD results.
  const consts = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2 ** 31 - 1, -(2 ** 31)];
  const write = new Fn('write', ['i32']);
  const [base] = write.params;
  consts.forEach((v, k) => write.store('i32', get(base), i32.const(v), 4 * k));
  const addr = at(get(base), i32.const(consts.length));
  write.store('f32', addr, f32.div(f32.const(1), f32.const(3)));
  // Σ_{i<200} i by a loop with a step of 1, in a callee.
  const sum = mod.add(new Fn('sum', ['i32']));
  const [out] = sum.params;
  const i = sum.local('i32');
  const total = sum.local('i32');
  sum.set(total, i32.const(0)).for(i, i32.const(0), i32.const(200), 1, () => sum.set(total, i32.add(get(total), get(i))));
  sum.store('i32', get(out), get(total));
  mod.add(write);
  write.call(sum, at(get(base), i32.const(consts.length + 1)));
  // (1, 2, 3, 4) · 2 + splat(0.5), stored after the rest.
  const vecAt = at(get(base), i32.const(consts.length + 4));
  write.store('f32', vecAt, f32.const(1), 0).store('f32', vecAt, f32.const(2), 4).store('f32', vecAt, f32.const(3), 8).store('f32', vecAt, f32.const(4), 12);
  write.store('v128', vecAt, v128.add(v128.mul(v128.load(vecAt), v128.splat(f32.const(2))), v128.loadSplat(addr)), 0);
  const memory = new WebAssembly.Memory({ initial: 1 });
  const e = new WebAssembly.Instance(new WebAssembly.Module(assemble(mod.fns)), { env: { memory } }).exports as Record<string, (p: number) => void>;
  e.write(64);
  const ints = new Int32Array(memory.buffer, 64, consts.length + 2);
  const floats = new Float32Array(memory.buffer, 64, consts.length + 8);
  assert.equal(Array.from(ints.subarray(0, consts.length)), consts);
  assert.is(floats[consts.length], Math.fround(1 / 3));
  assert.is(ints[consts.length + 1], 199 * 100);
  assert.equal(Array.from(floats.subarray(consts.length + 4)), [1, 2, 3, 4].map((v) => Math.fround(2 * v + Math.fround(1 / 3))));
  assert.throws(() => assemble([new Fn('stray', [])]), /Module.add/);
});

test('wasm conv2d gradients (input and filter) match the cpu backend: strides 1, 2; same, valid; both dx paths', async () => {
  for (const c of convCases()) {
    await initBackend('cpu');
    const outLen = tf.tidy(() => tf.conv2d(tf.zeros([c.n, c.h, c.w, c.ci]) as tf.Tensor4D, tf.zeros([c.k, c.k, c.ci, c.co]) as tf.Tensor4D, c.stride, c.pad).size);
    const x = fill(c.n * c.h * c.w * c.ci);
    const w = fill(c.k * c.k * c.ci * c.co);
    const g = fill(outLen);
    await cpuVsWasm(JSON.stringify(c), () => convGrads(c, x, w, g));
  }
});

test('wasm max pooling and its gradient match the cpu backend, ties included (ReLU zeros, repeated values)', async () => {
  const shapes: [number, number, number, number, number, number, 'same' | 'valid'][] = [
    // [n, h, w, c, pool, stride, pad]
    [3, 28, 28, 4, 2, 2, 'valid'], // 2×2 tiling, channels a multiple of 4: the unrolled kernels
    [2, 8, 6, 3, 2, 2, 'valid'], // 3 channels: the general kernel, windows tiling the input
    [2, 7, 9, 2, 2, 2, 'valid'], // odd sizes: the last row and column lie in no window
    [2, 9, 9, 3, 3, 3, 'valid'],
    [2, 7, 6, 5, 3, 1, 'same'], // overlapping windows clipped at the borders: gradients add up
    [1, 5, 7, 4, 2, 2, 'same'], // 'same' over odd sizes: windows clipped at the bottom and right
  ];
  for (const [n, h, w, c, p, s, pad] of shapes) {
    // Coarse values and zeros: many exact ties inside windows.
    const x = Float32Array.from(fill(n * h * w * c, 0.4), (v) => Math.round(v * 3) / 3);
    const outShape = tf.tidy(() => tf.maxPool(tf.zeros([n, h, w, c]) as tf.Tensor4D, p, s, pad).shape);
    const g = fill(outShape.reduce((a, b) => a * b, 1));
    await cpuVsWasm(`maxPool ${[n, h, w, c, p, s, pad]}`, () => {
      const xt = tf.tensor4d(x, [n, h, w, c]);
      const gt = tf.tensor(g, outShape);
      return [
        tf.maxPool(xt, p, s, pad),
        tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(v as tf.Tensor4D, p, s, pad), gt)))(xt),
      ];
    });
  }
});

test('wasm matMul on its register tiles (Aᵀ·B, A·B with bias and ReLU, A·Bᵀ) and its fallbacks match the cpu backend', async () => {
  const a = fill(7 * 5);
  const b = fill(5 * 8);
  const b3 = fill(5 * 3);
  const bias = fill(8);
  await cpuVsWasm('matMul', () => {
    const at = tf.tensor2d(a, [7, 5]);
    const bt = tf.tensor2d(b, [5, 8]);
    const b3t = tf.tensor2d(b3, [5, 3]);
    return [
      tf.matMul(at, bt),
      tf.matMul(at, b3t), // 3 columns: wasm's own kernel
      tf.fused.matMul({ a: at, b: bt, bias: tf.tensor1d(bias), activation: 'relu' }),
      tf.fused.matMul({ a: at, b: bt, bias: tf.tensor1d(bias) }),
      tf.matMul(at.transpose(), bt.transpose(), true, true),
      tf.matMul(at.transpose(), bt, true, false),
      tf.matMul(at.transpose(), b3t, true, false), // 3 columns: padded to a vector on the tiles
      tf.matMul(at, bt.transpose(), false, true),
      tf.matMul(tf.reshape(at, [1, 7, 5]), tf.reshape(b3t.transpose(), [1, 3, 5]), false, true),
    ];
  });
});

test('wasm bias add, row sums, gather, slice, identity and cast match the cpu backend', async () => {
  const x = fill(6 * 5 * 7);
  const idx = [4, 0, 5, 5, 2];
  await cpuVsWasm('elementwise', () => {
    const xt = tf.tensor3d(x, [6, 5, 7]);
    const b7 = tf.tensor1d(x.slice(0, 7));
    const x8 = tf.tensor2d(x.slice(0, 6 * 8), [6, 8]);
    return [
      tf.add(xt, b7),
      tf.add(b7, xt),
      tf.add(x8, tf.tensor1d(x.slice(0, 8))),
      tf.sum(xt, [0, 1]),
      tf.sum(xt, [1, 0], true),
      tf.sum(x8, 0),
      tf.gather(xt, tf.tensor1d(idx, 'int32')),
      tf.gather(tf.tensor1d(x.slice(0, 9)), tf.tensor1d(idx, 'int32')),
      xt.slice([2, 0, 0], [3, 5, 7]),
      xt.slice([1, 1, 2], [2, 3, 4]),
      tf.clone(xt),
      tf.cast(xt, 'float32'),
      tf.cast(tf.mul(xt, 10), 'int32'),
    ];
  });
  await initBackend('wasm');
  assert.throws(() => tf.tidy(() => tf.gather(tf.zeros([3, 16]), tf.tensor1d([3], 'int32'))), /index value 3 is not in \[0, 2\]/);
});

test('the hand-derived training step gives tfjs autodiff gradients on cpu, every Sequential student (temperature 1 on cnn-small, 2.5 on all)', async () => {
  const shape: [number, number, number] = [28, 28, 1];
  // Images with many zero pixels, as MNIST: ReLUs at exactly 0 and tied maxima in the pools.
  for (const arch of STUDENT_ARCHS) {
    // The cpu backend's convolutions are slow: 2 rows, but 7 for cnn-small, whose fused first
    // layer then runs blocks of 3 images and a last block of 1.
    const rows = arch === 'cnn-small' ? 7 : 2;
    const x = fill(rows * 28 * 28, 0.6).map(Math.abs);
    const t = fill(rows * 10).map(Math.abs);
    await initBackend('wasm');
    const model = await withSeed(7, () => buildStudent(arch, shape, 10));
    const step = handDerivedStep(model);
    if (arch === 'resnet-mini') {
      assert.is(step, undefined, 'a functional model takes the gradient tape');
      model.dispose();
      continue;
    }
    assert.ok(step, `${arch} has a hand-derived step on wasm`);
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    for (const temperature of arch === 'cnn-small' ? [1, 2.5] : [2.5]) {
      const inputs = () => [tf.tensor4d(x, [rows, ...shape]), tf.div(tf.tensor2d(t, [rows, 10]), tf.sum(tf.tensor2d(t, [rows, 10]), 1, true)) as tf.Tensor2D] as const;
      const ours = tf.tidy(() => {
        const [xt, yt] = inputs();
        const { value, grads } = step.grads(xt, yt, temperature);
        return { loss: value.dataSync()[0], grads: vars.map((v) => grads[v.name].dataSync()) };
      });
      await initBackend('cpu');
      assert.is(handDerivedStep(model), undefined, 'no hand-derived step on cpu');
      const tape = tf.tidy(() => {
        const [xt, yt] = inputs();
        const { value, grads } = tf.variableGrads(() => softCrossEntropy(yt, model.apply(xt, { training: true }) as tf.Tensor2D, temperature), vars);
        return { loss: value.dataSync()[0], grads: vars.map((v) => grads[v.name].dataSync()) };
      });
      await initBackend('wasm');
      assert.ok(Math.abs(ours.loss - tape.loss) <= 1e-5 * Math.abs(tape.loss), `${arch}, T = ${temperature}: loss ${ours.loss} vs ${tape.loss}`);
      vars.forEach((v, i) => {
        const err = relativeError(ours.grads[i], tape.grads[i]);
        assert.ok(err <= 1e-4, `${arch}, T = ${temperature}, ${v.name}: relative error ${err}`);
      });
    }
    model.dispose();
  }
});

test('fused Adam on wasm follows tf.train.adam on cpu over several steps', async () => {
  const w0 = fill(37);
  const grads = [fill(37), fill(37), fill(37), fill(37, 0.5)];
  const run = async (backend: 'cpu' | 'wasm') => {
    await initBackend(backend);
    const w = tf.variable(tf.tensor1d(w0), true, `adam-test-${backend}`);
    const adam = createAdam(0.01);
    for (const g of grads) tf.tidy(() => adam.apply([w], { [w.name]: tf.tensor1d(g) }));
    const out = w.dataSync().slice();
    adam.dispose();
    w.dispose();
    return out;
  };
  const expected = await run('cpu');
  const actual = await run('wasm');
  assert.ok(relativeError(actual, expected) <= 1e-6, `relative error ${relativeError(actual, expected)}`);
  assert.ok(relativeError(expected, w0) > 1e-3, 'the weights moved');
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

test('the wasm kernels and the hand-derived step leak no tensors or memory', async () => {
  await initBackend('wasm');
  const c: Case = { n: 2, h: 10, w: 10, ci: 3, co: 4, k: 3, stride: 2, pad: 'same' };
  const x = fill(2 * 100 * 3);
  const w = fill(9 * 3 * 4);
  const g = fill(2 * 25 * 4);
  const model = await withSeed(3, () => buildStudent('cnn-small', [28, 28, 1], 10));
  const step = handDerivedStep(model)!;
  const images = tf.tensor4d(fill(2 * 784, 0.5), [2, 28, 28, 1]);
  const targets = tf.tensor2d([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]]);
  const run = () =>
    tf.tidy(() => {
      const grads = convGrads(c, x, w, g);
      const pooled = tf.grad((v: tf.Tensor) => tf.sum(tf.maxPool(v as tf.Tensor4D, 2, 2, 'valid')))(grads[0]);
      const fromStep = Object.values(step.grads(images, targets, 2).grads);
      return [...grads, pooled, tf.matMul(grads[1].reshape([27, 4]), grads[1].reshape([27, 4]), true, false), ...fromStep].map((t) => t.dataSync());
    });
  run(); // warm-up: kernels allocate once
  const before = tf.memory();
  run();
  const after = tf.memory();
  assert.is(after.numTensors, before.numTensors);
  assert.is(after.numBytes, before.numBytes);
  tf.dispose([images, targets]);
  model.dispose();
});

test.run();
