import * as tf from '@tensorflow/tfjs';
import { CONV_RELU_POOL, CONV_RELU_POOL_GRAD, POOL_RELU_BIAS_GRAD, RELU_BIAS_GRAD, SOFT_CROSS_ENTROPY, STEP_KERNELS, convReluPoolFits } from '../engine/kernel-names.ts';
import { softCrossEntropy, softCrossEntropyGrad } from './soft-loss.ts';

/**
 * The gradient of the distillation loss for a Sequential model of Conv2D, MaxPooling2D,
 * Flatten and Dense layers, derived by hand instead of by tfjs's gradient tape. The tape runs
 * a training forward pass unfused (convolution, bias add, ReLU as three kernels, each input
 * cloned for the backward pass) and a backward pass of one kernel per elementary op; here the
 * forward pass uses the fused convolution and matmul kernels (bias and ReLU inside), and the
 * backward pass fuses each ReLU's mask with its bias gradient — and, when a 2×2 max pooling
 * follows, with the pooling gradient too. For the backends that register the fused kernels of
 * engine/kernel-names.ts (wasm and webgpu); test/wasm-kernels.test.ts and
 * test/webgpu-kernels.test.ts check it against tfjs's own gradients.
 */

type Activation = 'relu' | 'linear';
type Padding = 'same' | 'valid';
type Stage =
  | { kind: 'conv'; kernel: tf.Variable; bias: tf.Variable; strides: [number, number]; pad: Padding; act: Activation }
  | { kind: 'dense'; kernel: tf.Variable; bias: tf.Variable; act: Activation }
  | { kind: 'pool'; size: [number, number]; strides: [number, number]; pad: Padding }
  | { kind: 'flatten' };

export interface HandDerivedStep {
  /** The loss on (x, targets) and its gradient for every trainable variable, keyed by name. */
  grads(x: tf.Tensor, targets: tf.Tensor2D, temperature?: number): { value: tf.Scalar; grads: tf.NamedTensorMap };
}

interface LayerConfig {
  activation?: string;
  useBias?: boolean;
  dataFormat?: string;
  dilationRate?: number | number[];
  strides?: number | number[];
  padding?: string;
  poolSize?: number | number[];
  kernelRegularizer?: unknown;
  biasRegularizer?: unknown;
  activityRegularizer?: unknown;
  kernelConstraint?: unknown;
  biasConstraint?: unknown;
}

const pair = (v: number | number[] | undefined, fallback: number): [number, number] =>
  v === undefined ? [fallback, fallback] : typeof v === 'number' ? [v, v] : [v[0], v[1]];

/** kernel and bias of a layer that trains both and nothing else; undefined otherwise. */
function weights(layer: tf.layers.Layer): { kernel: tf.Variable; bias: tf.Variable } | undefined {
  if (!layer.trainable || layer.nonTrainableWeights.length > 0 || layer.trainableWeights.length !== 2) return undefined;
  const [k, b] = layer.trainableWeights;
  if (!k.originalName.endsWith('/kernel') || !b.originalName.endsWith('/bias')) return undefined;
  return { kernel: k.read() as tf.Variable, bias: b.read() as tf.Variable };
}

function stageOf(layer: tf.layers.Layer): Stage | undefined {
  const c = layer.getConfig() as LayerConfig;
  const plain = [c.kernelRegularizer, c.biasRegularizer, c.activityRegularizer, c.kernelConstraint, c.biasConstraint].every((v) => v == null);
  const act = c.activation === 'relu' || c.activation === 'linear' ? c.activation : undefined;
  const pad = c.padding === 'same' || c.padding === 'valid' ? c.padding : undefined;
  const channelsLast = c.dataFormat === undefined || c.dataFormat === 'channelsLast';
  switch (layer.getClassName()) {
    case 'Conv2D': {
      const w = weights(layer);
      const dilated = pair(c.dilationRate, 1).some((d) => d !== 1);
      if (!w || !plain || !act || !pad || !channelsLast || dilated || c.useBias !== true) return undefined;
      return { kind: 'conv', ...w, strides: pair(c.strides, 1), pad, act };
    }
    case 'Dense': {
      const w = weights(layer);
      const inputRank = (layer.input as tf.SymbolicTensor).shape.length;
      if (!w || !plain || !act || c.useBias !== true || inputRank !== 2) return undefined;
      return { kind: 'dense', ...w, act };
    }
    case 'MaxPooling2D': {
      if (!pad || !channelsLast) return undefined;
      const size = pair(c.poolSize, 2);
      return { kind: 'pool', size, strides: c.strides == null ? size : pair(c.strides, 1), pad };
    }
    case 'Flatten':
      return channelsLast ? { kind: 'flatten' } : undefined;
    default:
      return undefined;
  }
}

/**
 * The hand-derived step for `model` on the current backend, or undefined where it does not
 * apply (another backend, a functional model, a layer or option not covered above): callers
 * then use tf.variableGrads.
 */
export function handDerivedStep(model: tf.LayersModel): HandDerivedStep | undefined {
  const stages = plan(model);
  return stages && { grads: (x, targets, temperature = 1) => tf.tidy(() => run(stages, x, targets, temperature)) };
}

/**
 * The model's logits by the same fused forward pass, for inference, or undefined where the
 * hand-derived step does not apply (callers then use model.predict). One batch is one pass: no
 * 32-row batches as model.predict makes, which on a GPU would each cost their own dispatches.
 */
export function fusedForward(model: tf.LayersModel): ((x: tf.Tensor) => tf.Tensor2D) | undefined {
  const stages = plan(model);
  return stages && ((x) => tf.tidy(() => forward(stages, x).logits));
}

/** The model's stages where every layer is one the hand-derived step covers, on a backend with its kernels. */
function plan(model: tf.LayersModel): Stage[] | undefined {
  const backend = tf.getBackend();
  if (!STEP_KERNELS.every((k) => tf.getKernel(k, backend))) return undefined;
  if (model.getClassName() !== 'Sequential') return undefined;
  const stages: Stage[] = [];
  for (const layer of model.layers) {
    const s = stageOf(layer);
    if (!s) return undefined;
    stages.push(s);
  }
  const trained = stages.flatMap((s) => ('kernel' in s ? [s.kernel.name, s.bias.name] : []));
  if (trained.length === 0) return undefined;
  const expected = model.trainableWeights.map((w) => (w.read() as tf.Variable).name);
  if (trained.length !== expected.length || !expected.every((n) => trained.includes(n))) return undefined;
  return stages;
}

const run1 = (name: string, inputs: tf.NamedTensorMap, attrs: object = {}) =>
  tf.engine().runKernel(name, inputs, attrs as tf.NamedAttrMap) as tf.Tensor;
const run2 = (name: string, inputs: tf.NamedTensorMap, attrs: object = {}) =>
  tf.engine().runKernel(name, inputs, attrs as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor];

const isTwoByTwo = (s: Stage & { kind: 'pool' }) => s.size[0] === 2 && s.size[1] === 2 && s.strides[0] === 2 && s.strides[1] === 2;

/** 2×2 pooling that tiles its input (on wasm, channels in fours): what POOL_RELU_BIAS_GRAD takes. */
function tilesTwoByTwo(s: Stage & { kind: 'pool' }, input: tf.Tensor): boolean {
  const [, h, w, c] = input.shape;
  return isTwoByTwo(s) && convReluPoolFits(tf.getBackend(), h, w, c);
}

/**
 * Whether the first trained layer, a ReLU convolution, and the 2×2 pooling after it run as
 * CONV_RELU_POOL, which never materialises the convolution's output.
 */
function fusesWithPool(stages: Stage[], i: number, firstTrained: number, input: tf.Tensor): boolean {
  const s = stages[i];
  const next = stages[i + 1];
  if (i !== firstTrained || s.kind !== 'conv' || s.act !== 'relu' || next?.kind !== 'pool' || !isTwoByTwo(next)) return false;
  const info = tf.backend_util.computeConv2DInfo(input.shape as [number, number, number, number], s.kernel.shape as [number, number, number, number], s.strides, 1, s.pad);
  return convReluPoolFits(tf.getBackend(), info.outHeight, info.outWidth, info.outChannels);
}

interface Forward {
  logits: tf.Tensor2D;
  /** Each stage's input and output (undefined where a fused pair skips one). */
  inputs: (tf.Tensor | undefined)[];
  outputs: (tf.Tensor | undefined)[];
  /** The fused first layer's pooling cells, for its gradient. */
  argmax?: tf.Tensor;
  firstTrained: number;
}

function forward(stages: Stage[], x: tf.Tensor): Forward {
  const firstTrained = stages.findIndex((s) => s.kind === 'conv' || s.kind === 'dense');
  const inputs: (tf.Tensor | undefined)[] = [];
  const outputs: (tf.Tensor | undefined)[] = [];
  let argmax: tf.Tensor | undefined;
  let h = x;
  for (let i = 0; i < stages.length; i++) {
    const s = stages[i];
    inputs.push(h);
    if (s.kind === 'conv' && fusesWithPool(stages, i, firstTrained, h)) {
      const [pooled, cells] = run2(CONV_RELU_POOL, { x: h, filter: s.kernel, bias: s.bias }, { strides: s.strides, pad: s.pad });
      argmax = cells;
      inputs.push(undefined);
      outputs.push(undefined, pooled);
      h = pooled;
      i++;
      continue;
    }
    if (s.kind === 'conv') {
      h = tf.fused.conv2d({ x: h as tf.Tensor4D, filter: s.kernel as tf.Tensor4D, bias: s.bias, strides: s.strides, pad: s.pad, activation: s.act });
    } else if (s.kind === 'dense') {
      h = tf.fused.matMul({ a: h as tf.Tensor2D, b: s.kernel as tf.Tensor2D, bias: s.bias, activation: s.act });
    } else if (s.kind === 'pool') {
      h = tf.maxPool(h as tf.Tensor4D, s.size, s.strides, s.pad);
    } else {
      h = tf.reshape(h, [h.shape[0], -1]);
    }
    outputs.push(h);
  }
  return { logits: h as tf.Tensor2D, inputs, outputs, argmax, firstTrained };
}

function run(stages: Stage[], x: tf.Tensor, targets: tf.Tensor2D, temperature: number): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  const { logits, inputs, outputs, argmax, firstTrained } = forward(stages, x);
  // One kernel where the backend has it (webgpu: one dispatch instead of about twenty).
  const [value, dlogits] = tf.getKernel(SOFT_CROSS_ENTROPY, tf.getBackend())
    ? (run2(SOFT_CROSS_ENTROPY, { targets, logits }, { temperature }) as [tf.Scalar, tf.Tensor2D])
    : [softCrossEntropy(targets, logits, temperature), softCrossEntropyGrad(targets, logits, temperature)];

  // Backward. `pre` carries a gradient already taken through a ReLU, with its bias gradient.
  const grads: tf.NamedTensorMap = {};
  let g: tf.Tensor = dlogits;
  let pre: [tf.Tensor, tf.Tensor] | undefined;
  // Below the first trained layer no gradient is needed.
  for (let i = stages.length - 1; i >= firstTrained; i--) {
    const s = stages[i];
    const needInputGrad = i > firstTrained;
    const input = inputs[i]!;
    if (s.kind === 'conv' || s.kind === 'dense') {
      const [dpre, db] = pre ?? (s.act === 'relu' ? run2(RELU_BIAS_GRAD, { dy: g, y: outputs[i]! }) : [g, tf.sum(g, s.kind === 'conv' ? [0, 1, 2] : 0)]);
      pre = undefined;
      grads[s.bias.name] = db;
      if (s.kind === 'dense') {
        grads[s.kernel.name] = tf.matMul(input, dpre, true, false);
        if (needInputGrad) g = tf.matMul(dpre, s.kernel, false, true);
      } else {
        const attrs = { strides: s.strides, pad: s.pad, dataFormat: 'NHWC' };
        grads[s.kernel.name] = run1('Conv2DBackpropFilter', { x: input, dy: dpre }, { ...attrs, filterShape: s.kernel.shape });
        if (needInputGrad) g = run1('Conv2DBackpropInput', { dy: dpre, filter: s.kernel }, { ...attrs, inputShape: input.shape });
      }
    } else if (s.kind === 'pool' && argmax && i === firstTrained + 1) {
      const conv = stages[firstTrained] as Stage & { kind: 'conv' };
      const [dw, db] = run2(CONV_RELU_POOL_GRAD, { x: inputs[firstTrained]!, dy: g, pooled: outputs[i]!, argmax }, { strides: conv.strides, pad: conv.pad, filterShape: conv.kernel.shape });
      grads[conv.kernel.name] = dw;
      grads[conv.bias.name] = db;
      break;
    } else if (s.kind === 'pool') {
      const below = stages[i - 1];
      const attrs = { filterSize: s.size, strides: s.strides, pad: s.pad };
      const poolInputs = { dy: g, input, output: outputs[i]! };
      if (below.kind === 'conv' && below.act === 'relu' && tilesTwoByTwo(s, input)) pre = run2(POOL_RELU_BIAS_GRAD, poolInputs, attrs);
      else g = run1('MaxPoolGrad', poolInputs, attrs);
    } else {
      g = tf.reshape(g, input.shape);
    }
  }
  return { value, grads };
}
