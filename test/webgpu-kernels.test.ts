import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { initBackend } from '../engine/backend.ts';
import { countDispatches } from '../engine/webgpu/program.ts';
import { ADAM_STEP, CONV_FORWARD, CONV_RELU_POOL, CONV_RELU_POOL_GRAD, FILTER_GRAD, INPUT_GRAD, POOL_RELU_BIAS_GRAD, SOFT_CROSS_ENTROPY } from '../engine/kernel-names.ts';
import { createAdam } from '../models/fused-adam.ts';
import { rng, withSeed } from '../models/seed.ts';
import { handDerivedStep } from '../models/sequential-step.ts';
import { softCrossEntropy, softCrossEntropyGrad } from '../models/soft-loss.ts';
import { buildStudent } from '../models/students.ts';
import { fitStacked, setTrainingQuorum, stackKey, type FitRequest } from '../models/stacked-fit.ts';
import { fitSoft, makeTrainStep } from '../models/train.ts';
import { STUDENT_ARCHS, type StudentArch } from '../models/types.ts';
import { cpuVs, haveWebgpu, readAll, relativeError } from './helpers.ts';

// Each kernel of engine/webgpu against the cpu backend: odd sizes, strides 1 and 2, 'same' and
// 'valid' padding, batch 1 and batch 1,024, and the whole hand-derived step against autodiff.

const random = rng(11, 'webgpu-kernel-test');
const pick = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const fill = (len: number, zeroFraction = 0) => Float32Array.from({ length: len }, () => (random() < zeroFraction ? 0 : random() * 2 - 1));
const run = (name: string, inputs: tf.NamedTensorMap, attrs: object = {}) => tf.engine().runKernel(name, inputs, attrs as tf.NamedAttrMap) as unknown as tf.Tensor[];
const onGpu = (what: string) => haveWebgpu(what);
/** Elements that are not bit-identical (uvu's diff of two large arrays would take minutes). */
const mismatches = (a: ArrayLike<number>, b: ArrayLike<number>) => (a.length !== b.length ? Infinity : Array.from(a).filter((v, i) => !Object.is(v, b[i])).length);

type Case = { n: number; h: number; w: number; ci: number; co: number; k: number; stride: 1 | 2; pad: 'same' | 'valid' };

function cases(): Case[] {
  const out: Case[] = [];
  for (const stride of [1, 2] as const)
    for (const pad of ['same', 'valid'] as const)
      for (let i = 0; i < 3; i++) {
        const k = random() < 0.5 ? 3 : 5;
        out.push({ n: pick(1, 3), h: pick(k, 13), w: pick(k, 13), ci: pick(1, 5), co: pick(1, 37), k, stride, pad });
      }
  // Batch 1 and batch 1,024 (small images: the cpu backend computes the reference), many chunks.
  out.push({ n: 1, h: 9, w: 7, ci: 3, co: 5, k: 3, stride: 1, pad: 'same' }, { n: 1024, h: 6, w: 5, ci: 2, co: 7, k: 3, stride: 2, pad: 'same' });
  // Wide enough for several tiles of the reduction in both directions (k·k·ci > 64, co > 64).
  out.push({ n: 2, h: 8, w: 8, ci: 9, co: 70, k: 3, stride: 1, pad: 'valid' });
  return out;
}

test('webgpu Conv2DBackpropFilter and Conv2DBackpropInput match the cpu backend (odd sizes, strides 1 and 2, same and valid, batch 1 and 1,024)', async () => {
  if (!(await onGpu('the convolution gradients'))) return;
  for (const c of cases()) {
    const x = fill(c.n * c.h * c.w * c.ci);
    const w = fill(c.k * c.k * c.ci * c.co);
    const outShape = tf.backend_util.computeConv2DInfo([c.n, c.h, c.w, c.ci], [c.k, c.k, c.ci, c.co], c.stride, 1, c.pad);
    const g = fill(c.n * outShape.outHeight * outShape.outWidth * c.co);
    await cpuVs('webgpu', JSON.stringify(c), () => {
      const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.ci]);
      const wt = tf.tensor4d(w, [c.k, c.k, c.ci, c.co]);
      const gt = tf.tensor4d(g, [c.n, outShape.outHeight, outShape.outWidth, c.co]);
      return [tf.conv2d(xt, wt, c.stride, c.pad), ...tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), gt)))([xt, wt])];
    });
  }
});

test('webgpu conv → ReLU → 2×2 pool and its fused gradient match the cpu composition (odd channels, batch 1 and 1,024)', async () => {
  if (!(await onGpu('the fused convolution and pooling'))) return;
  const shapes: Case[] = [
    { n: 3, h: 28, w: 28, ci: 1, co: 16, k: 3, stride: 1, pad: 'same' }, // cnn-small's first layer
    { n: 2, h: 12, w: 10, ci: 3, co: 6, k: 5, stride: 1, pad: 'same' },
    { n: 1, h: 9, w: 9, ci: 2, co: 5, k: 3, stride: 2, pad: 'valid' }, // 4 × 4 output
    { n: 1024, h: 6, w: 6, ci: 1, co: 3, k: 3, stride: 1, pad: 'same' },
  ];
  for (const c of shapes) {
    // Zeros and coarse values: ReLUs at exactly 0 and tied maxima inside windows.
    const x = Float32Array.from(fill(c.n * c.h * c.w * c.ci, 0.4), (v) => Math.round(v * 4) / 4);
    const w = fill(c.k * c.k * c.ci * c.co);
    const b = fill(c.co);
    const info = tf.backend_util.computeConv2DInfo([c.n, c.h, c.w, c.ci], [c.k, c.k, c.ci, c.co], c.stride, 1, c.pad);
    const g = fill(c.n * (info.outHeight / 2) * (info.outWidth / 2) * c.co);
    const tensors = () => [tf.tensor4d(x, [c.n, c.h, c.w, c.ci]), tf.tensor4d(w, [c.k, c.k, c.ci, c.co]), tf.tensor1d(b), tf.tensor4d(g, [c.n, info.outHeight / 2, info.outWidth / 2, c.co])] as const;
    const f = (xt: tf.Tensor4D, wt: tf.Tensor4D, bt: tf.Tensor1D) => tf.maxPool(tf.relu(tf.add(tf.conv2d(xt, wt, c.stride, c.pad), bt)) as tf.Tensor4D, 2, 2, 'valid');
    await initBackend('cpu');
    const expected = await readAll(tf.tidy(() => {
      const [xt, wt, bt, gt] = tensors();
      return [f(xt, wt, bt), ...tf.grads((a: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(f(xt, a as tf.Tensor4D, d as tf.Tensor1D), gt)))([wt, bt])];
    }));
    await initBackend('webgpu');
    const actual = await readAll(tf.tidy(() => {
      const [xt, wt, bt, gt] = tensors();
      const attrs = { strides: [c.stride, c.stride], pad: c.pad };
      const [pooled, argmax] = run(CONV_RELU_POOL, { x: xt, filter: wt, bias: bt }, attrs);
      return [pooled, ...run(CONV_RELU_POOL_GRAD, { x: xt, dy: gt, pooled, argmax }, { ...attrs, filterShape: wt.shape })];
    }));
    expected.forEach((e, j) => {
      assert.equal(actual[j].shape, e.shape, `${JSON.stringify(c)} output ${j}`);
      const err = relativeError(actual[j].values, e.values);
      assert.ok(err <= 1e-4, `${JSON.stringify(c)}: output ${j} off by ${err}`);
    });
  }
});

test('webgpu pooling-with-ReLU gradients and their bias sums match the cpu composition (rows 1 to 1,024 × 28 × 28)', async () => {
  if (!(await onGpu('the pooling gradients'))) return;
  for (const [n, h, w, c] of [[1, 4, 6, 3], [5, 8, 8, 16], [1024, 28, 28, 1], [3, 2, 2, 70]]) {
    const y = Float32Array.from(fill(n * h * w * c, 0.4), (v) => Math.max(0, Math.round(v * 3) / 3));
    const dyPooled = fill((n * h * w * c) / 4);
    const inputs = () => [tf.tensor4d(y, [n, h, w, c]), tf.tensor4d(dyPooled, [n, h / 2, w / 2, c])] as const;
    await initBackend('cpu');
    const expected = await readAll(tf.tidy(() => {
      const [yt, dpt] = inputs();
      const pooledGrad = tf.mul(tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(v as tf.Tensor4D, 2, 2, 'valid'), dpt)))(yt), tf.step(yt));
      return [pooledGrad, tf.sum(pooledGrad, [0, 1, 2])];
    }));
    await initBackend('webgpu');
    const actual = await readAll(tf.tidy(() => {
      const [yt, dpt] = inputs();
      return run(POOL_RELU_BIAS_GRAD, { dy: dpt, input: yt, output: tf.maxPool(yt, 2, 2, 'valid') }, { filterSize: [2, 2], strides: [2, 2], pad: 'valid' });
    }));
    expected.forEach((e, j) => {
      assert.equal(actual[j].shape, e.shape);
      const err = relativeError(actual[j].values, e.values);
      assert.ok(err <= 1e-5, `[${n}, ${h}, ${w}, ${c}] output ${j} off by ${err}`);
    });
  }
});

test('webgpu layers of the stacked step (convolution and dense, with and without ReLU) and their gradients match the cpu composition', async () => {
  if (!(await onGpu('the convolution and dense layers'))) return;
  const layers: ({ kind: 'conv' } & Case | { kind: 'dense'; n: number; in: number; out: number })[] = [
    { kind: 'conv', n: 3, h: 14, w: 14, ci: 16, co: 32, k: 3, stride: 2, pad: 'same' }, // cnn-small's second layer
    { kind: 'conv', n: 2, h: 9, w: 7, ci: 3, co: 5, k: 5, stride: 1, pad: 'valid' },
    { kind: 'conv', n: 1024, h: 5, w: 5, ci: 2, co: 3, k: 3, stride: 1, pad: 'same' },
    { kind: 'dense', n: 5, in: 1568, out: 64 },
    { kind: 'dense', n: 1024, in: 7, out: 10 },
  ];
  for (const layer of layers) {
    const xShape = layer.kind === 'conv' ? [layer.n, layer.h, layer.w, layer.ci] : [layer.n, layer.in];
    const wShape = layer.kind === 'conv' ? [layer.k, layer.k, layer.ci, layer.co] : [layer.in, layer.out];
    const conv = layer.kind === 'conv' ? { strides: [layer.stride, layer.stride], pad: layer.pad } : {};
    const apply = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
      layer.kind === 'conv' ? tf.add(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, layer.stride, layer.pad), b) : tf.add(tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D), b);
    const co = wShape[wShape.length - 1];
    const outSize = tf.tidy(() => apply(tf.zeros(xShape), tf.zeros(wShape), tf.zeros([co])).size);
    const x = fill(xShape.reduce((a, b) => a * b, 1), 0.3);
    const w = fill(wShape.reduce((a, b) => a * b, 1));
    const b = fill(co);
    const g = fill(outSize);
    for (const relu of [false, true]) {
      const label = `${JSON.stringify(layer)}, relu ${relu}`;
      const tensors = () => [tf.tensor(x, xShape), tf.tensor(w, wShape), tf.tensor1d(b)] as const;
      await initBackend('cpu');
      const expected = await readAll(tf.tidy(() => {
        const [xt, wt, bt] = tensors();
        const f = (a: tf.Tensor, v: tf.Tensor, c: tf.Tensor) => (relu ? tf.relu(apply(a, v, c)) : apply(a, v, c));
        const out = f(xt, wt, bt);
        return [out, ...tf.grads((a: tf.Tensor, v: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(f(a, v, c), tf.tensor(g, out.shape))))([xt, wt, bt])];
      }));
      await initBackend('webgpu');
      const actual = await readAll(tf.tidy(() => {
        const [xt, wt, bt] = tensors();
        const y = tf.engine().runKernel(CONV_FORWARD, { x: xt, filter: wt, bias: bt }, { ...conv, relu, models: 1 } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const dy = tf.tensor(g, y.shape);
        const mask: tf.NamedTensorMap = relu ? { y } : {};
        const dx = tf.engine().runKernel(INPUT_GRAD, { dy, filter: wt, ...mask }, { ...conv, inputShape: xShape, models: 1 } as unknown as tf.NamedAttrMap) as tf.Tensor;
        const [dw, db] = run(FILTER_GRAD, { x: xt, dy, ...mask }, { ...conv, filterShape: wShape, bias: true, models: 1 });
        return [y, dx, dw, db];
      }));
      expected.forEach((e, j) => {
        assert.equal(actual[j].shape, e.shape, `${label}: shape of output ${j}`);
        const err = relativeError(actual[j].values, e.values);
        assert.ok(err <= 1e-4, `${label}: output ${j} off by ${err}`);
      });
    }
  }
});

test('webgpu MaxPoolGrad matches the cpu backend: overlapping windows, same padding, odd sizes, ties', async () => {
  if (!(await onGpu('MaxPoolGrad'))) return;
  const shapes: [number, number, number, number, number, number, 'same' | 'valid'][] = [
    // [n, h, w, c, pool, stride, pad]
    [2, 8, 6, 3, 2, 2, 'valid'],
    [2, 7, 9, 2, 2, 2, 'valid'], // the last row and column lie in no window
    [2, 9, 9, 3, 3, 3, 'valid'],
    [2, 7, 6, 5, 3, 1, 'same'], // overlapping windows clipped at the borders: gradients add up
    [1, 5, 7, 4, 2, 2, 'same'],
    [1024, 4, 4, 2, 3, 2, 'same'],
  ];
  for (const [n, h, w, c, p, s, pad] of shapes) {
    // Coarse values and zeros: many exact ties inside windows.
    const x = Float32Array.from(fill(n * h * w * c, 0.4), (v) => Math.round(v * 3) / 3);
    const outShape = tf.backend_util.computePool2DInfo([n, h, w, c], p, s, 1, pad);
    const g = fill(n * outShape.outHeight * outShape.outWidth * c);
    await cpuVs('webgpu', `maxPool ${[n, h, w, c, p, s, pad]}`, () => {
      const xt = tf.tensor4d(x, [n, h, w, c]);
      const gt = tf.tensor4d(g, [n, outShape.outHeight, outShape.outWidth, c]);
      return [tf.maxPool(xt, p, s, pad), tf.grad((v: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(v as tf.Tensor4D, p, s, pad), gt)))(xt)];
    });
  }
});

test('webgpu soft cross-entropy kernel: loss and gradient as the cpu ops give them (T 1 and 2.5; 3, 300 and 1,500 rows)', async () => {
  if (!(await onGpu('the soft cross-entropy kernel'))) return;
  for (const rows of [3, 300, 1500])
    for (const temperature of [1, 2.5]) {
      const z = fill(rows * 10).map((v) => 6 * v);
      const t = fill(rows * 10).map(Math.abs);
      const tensors = () => [tf.div(tf.tensor2d(t, [rows, 10]), tf.sum(tf.tensor2d(t, [rows, 10]), 1, true)) as tf.Tensor2D, tf.tensor2d(z, [rows, 10])] as const;
      await initBackend('cpu');
      const expected = await readAll(tf.tidy(() => {
        const [tt, zt] = tensors();
        return [softCrossEntropy(tt, zt, temperature), softCrossEntropyGrad(tt, zt, temperature)];
      }));
      await initBackend('webgpu');
      const actual = await readAll(tf.tidy(() => {
        const [tt, zt] = tensors();
        return run(SOFT_CROSS_ENTROPY, { targets: tt, logits: zt }, { temperature });
      }));
      expected.forEach((e, j) => {
        assert.equal(actual[j].shape, e.shape);
        const err = relativeError(actual[j].values, e.values);
        assert.ok(err <= 1e-5, `${rows} rows, T ${temperature}: output ${j} off by ${err}`);
      });
    }
});

test('webgpu Adam (one dispatch per variable) follows tf.train.adam on cpu over several steps', async () => {
  if (!(await onGpu('Adam'))) return;
  const w0 = fill(1037);
  const grads = [fill(1037), fill(1037), fill(1037), fill(1037, 0.5)];
  const steps = async (backend: 'cpu' | 'webgpu') => {
    await initBackend(backend);
    assert.is(Boolean(tf.getKernel(ADAM_STEP, backend)), backend === 'webgpu');
    const w = tf.variable(tf.tensor1d(w0), true, `adam-webgpu-test-${backend}`);
    const adam = createAdam(0.01);
    for (const g of grads) tf.tidy(() => adam.apply([w], { [w.name]: tf.tensor1d(g) }));
    const out = await w.data();
    adam.dispose();
    w.dispose();
    return out;
  };
  const expected = await steps('cpu');
  const actual = await steps('webgpu');
  assert.ok(relativeError(actual, expected) <= 1e-6, `relative error ${relativeError(actual, expected)}`);
  assert.ok(relativeError(expected, w0) > 1e-3, 'the weights moved');
});

test('the hand-derived step on webgpu (the tape for resnet-mini) gives the cpu backend\'s autodiff gradients, every student', async () => {
  if (!(await onGpu('the hand-derived training step'))) return;
  const shape: [number, number, number] = [28, 28, 1];
  for (const arch of STUDENT_ARCHS) {
    const rows = 3;
    const x = fill(rows * 28 * 28, 0.6).map(Math.abs);
    const t = fill(rows * 10).map(Math.abs);
    // The model starts on cpu: its weights can move from there to the GPU, not back (that read is synchronous).
    await initBackend('cpu');
    const model = await withSeed(7, () => buildStudent(arch, shape, 10));
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const temperature = arch === 'cnn-small' ? 1 : 2.5;
    const inputs = () => [tf.tensor4d(x, [rows, ...shape]), tf.div(tf.tensor2d(t, [rows, 10]), tf.sum(tf.tensor2d(t, [rows, 10]), 1, true)) as tf.Tensor2D] as const;
    const tape = await readAll(tf.tidy(() => {
      const [xt, yt] = inputs();
      const { value, grads } = tf.variableGrads(() => softCrossEntropy(yt, model.apply(xt, { training: true }) as tf.Tensor2D, temperature), vars);
      return [value, ...vars.map((v) => grads[v.name])];
    }));
    await initBackend('webgpu');
    const step = handDerivedStep(model);
    // A functional model takes the gradient tape, through rhobench's convolution gradients and the fused loss.
    assert.is(Boolean(step), arch !== 'resnet-mini', `${arch}: hand-derived step on webgpu`);
    const ours = await readAll(tf.tidy(() => {
      const [xt, yt] = inputs();
      const { value, grads } = step
        ? step.grads(xt, yt, temperature)
        : tf.variableGrads(() => softCrossEntropy(yt, model.apply(xt, { training: true }) as tf.Tensor2D, temperature), vars);
      return [value, ...vars.map((v) => grads[v.name])];
    }));
    assert.ok(relativeError(ours[0].values, tape[0].values) <= 1e-5, `${arch}: loss ${ours[0].values[0]} vs ${tape[0].values[0]}`);
    vars.forEach((v, i) => {
      const err = relativeError(ours[i + 1].values, tape[i + 1].values);
      assert.ok(err <= 1e-4, `${arch}, ${v.name}: relative error ${err}`);
    });
    model.dispose();
  }
});

test('a cnn-small training step on webgpu issues at most 60 dispatches and leaks no tensors', async () => {
  if (!(await onGpu('dispatches per step'))) return;
  await initBackend('webgpu');
  const model = await withSeed(3, () => buildStudent('cnn-small', [28, 28, 1], 10));
  const trainer = makeTrainStep(model, 1e-3);
  assert.is(trainer.gradients, 'hand-derived');
  const x = tf.tensor4d(fill(128 * 784, 0.5).map(Math.abs), [128, 28, 28, 1]);
  const y = tf.oneHot(tf.tensor1d(Int32Array.from({ length: 128 }, (_, i) => i % 10), 'int32'), 10).toFloat() as tf.Tensor2D;
  let loss = NaN;
  const step = async () => {
    const value = trainer.step(x, y);
    loss = (await value.data())[0];
    value.dispose();
  };
  await step(); // Adam's moments are made on the first step
  const before = tf.memory().numTensors;
  const dispatches = await countDispatches(step);
  console.log(`    cnn-small step on webgpu: ${dispatches} dispatches`);
  assert.ok(Number.isFinite(loss));
  assert.ok(dispatches > 5 && dispatches <= 60, `${dispatches} dispatches`);
  assert.is(tf.memory().numTensors, before);
  trainer.dispose();
  model.dispose();
  tf.dispose([x, y]);
  await initBackend('wasm');
});

test('students stacked as one program end with the weights each gets alone, bit for bit (mlp, cnn-small, lenet5); concurrent fitSoft calls meet in one stack', async () => {
  if (!(await onGpu('stacked training'))) return;
  await initBackend('webgpu');
  const rows = 70; // batches of 32, 32 and 6
  const data = [0, 1, 2].map(() => ({ x: fill(rows * 784, 0.5).map(Math.abs), t: fill(rows * 10).map(Math.abs) }));
  const request = async (arch: StudentArch, m: number, seed: number): Promise<FitRequest> => ({
    model: await withSeed(seed, () => buildStudent(arch, [28, 28, 1], 10)),
    x: tf.tensor4d(data[m].x, [rows, 28, 28, 1]),
    targets: tf.tidy(() => tf.div(tf.tensor2d(data[m].t, [rows, 10]), tf.sum(tf.tensor2d(data[m].t, [rows, 10]), 1, true)) as tf.Tensor2D),
    opts: { epochs: 2, batchSize: 32, lr: 0.01, seed: 100 + seed, temperature: m === 1 ? 2 : 1 },
  });
  const weightsOf = (r: FitRequest) => Promise.all(r.model.getWeights().map((w) => w.data()));
  const release = (r: FitRequest) => {
    r.model.dispose();
    tf.dispose([r.x, r.targets]);
  };
  for (const arch of ['mlp', 'cnn-small', 'lenet5'] as const) {
    // Temperatures must match to stack: the three requests share one.
    const make = async () => Promise.all([0, 1, 2].map(async (m) => ({ ...(await request(arch, m, m)), opts: { ...(await request(arch, m, m)).opts, temperature: 1.5 } })));
    const alone = await make();
    const aloneLosses = [];
    const aloneDispatches = [];
    for (const r of alone) {
      let losses: number[] = [];
      aloneDispatches.push(await countDispatches(async () => void (losses = (await fitStacked([r]))[0].losses)));
      aloneLosses.push(losses);
    }
    const stacked = await make();
    assert.ok(stackKey(stacked[0]) && stacked.every((r) => stackKey(r) === stackKey(stacked[0])));
    let results: { losses: number[] }[] = [];
    const stackedDispatches = await countDispatches(async () => void (results = await fitStacked(stacked)));
    for (let m = 0; m < 3; m++) {
      const a = await weightsOf(alone[m]);
      const b = await weightsOf(stacked[m]);
      a.forEach((w, i) => assert.is(mismatches(b[i], w), 0, `${arch}, model ${m}, weight ${i}: values of the stacked model that differ from alone`));
      assert.equal(results[m].losses, aloneLosses[m], `${arch}, model ${m}: losses`);
      const initial = await withSeed(m, () => buildStudent(arch, [28, 28, 1], 10));
      const before = await Promise.all(initial.getWeights().map((w) => w.data()));
      initial.dispose();
      assert.ok(a.every((w, i) => w.some((v, j) => v !== before[i][j])), `${arch}, model ${m}: every weight moved in training`);
    }
    assert.ok(stackedDispatches < 0.5 * aloneDispatches.reduce((p, q) => p + q, 0), `${arch}: ${stackedDispatches} dispatches stacked against ${aloneDispatches.join(' + ')} alone`);
    [...alone, ...stacked].forEach(release);
  }
  // fitSoft from three cells at once: with a quorum of three they wait for each other and stack.
  const restore = setTrainingQuorum(() => 3);
  try {
    const alone = await Promise.all([0, 1, 2].map((m) => request('mlp', m, m)).map(async (p) => ({ ...(await p), opts: { ...(await p).opts, temperature: 1 } })));
    for (const r of alone) await fitStacked([r]);
    const concurrent = await Promise.all([0, 1, 2].map((m) => request('mlp', m, m)).map(async (p) => ({ ...(await p), opts: { ...(await p).opts, temperature: 1 } })));
    const dispatches = await countDispatches(async () => void (await Promise.all(concurrent.map((r) => fitSoft(r.model, r.x, r.targets, r.opts)))));
    for (let m = 0; m < 3; m++) {
      const a = await weightsOf(alone[m]);
      const b = await weightsOf(concurrent[m]);
      a.forEach((w, i) => assert.is(mismatches(b[i], w), 0, `concurrent fitSoft, model ${m}, weight ${i}: values that differ from alone`));
    }
    const one = await countDispatches(async () => void (await fitStacked([await request('mlp', 0, 0)])));
    assert.ok(dispatches < 1.5 * one, `three concurrent fitSoft calls took ${dispatches} dispatches, one alone ${one}: they did not stack`);
    [...alone, ...concurrent].forEach(release);
  } finally {
    restore();
  }
  await initBackend('wasm');
});

test.run();
