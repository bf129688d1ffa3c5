import * as tf from '@tensorflow/tfjs';
import { convReluPoolFits } from '../engine/kernel-names.ts';

/**
 * A Sequential student as the hand-derived training steps see it: its layers as stages (Conv2D,
 * Dense, MaxPooling2D, Flatten with the options those steps cover), and the rules the steps share.
 */

export type Activation = 'relu' | 'linear';
export type Padding = 'same' | 'valid';
export type Stage =
  | { kind: 'conv'; kernel: tf.Variable; bias: tf.Variable; strides: [number, number]; pad: Padding; act: Activation }
  | { kind: 'dense'; kernel: tf.Variable; bias: tf.Variable; act: Activation }
  | { kind: 'pool'; size: [number, number]; strides: [number, number]; pad: Padding }
  | { kind: 'flatten' };

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
 * The model's stages where every layer is one the hand-derived steps cover and every trainable
 * weight belongs to one of them; undefined otherwise (a functional model, another layer or option).
 */
export function planStages(model: tf.LayersModel): Stage[] | undefined {
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

export const run1 = (name: string, inputs: tf.NamedTensorMap, attrs: object = {}) =>
  tf.engine().runKernel(name, inputs, attrs as tf.NamedAttrMap) as tf.Tensor;
export const run2 = (name: string, inputs: tf.NamedTensorMap, attrs: object = {}) =>
  tf.engine().runKernel(name, inputs, attrs as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor];

const isTwoByTwo = (s: Stage & { kind: 'pool' }) => s.size[0] === 2 && s.size[1] === 2 && s.strides[0] === 2 && s.strides[1] === 2;

/** 2×2 pooling that tiles its input (on wasm, channels in fours): what POOL_RELU_BIAS_GRAD takes. */
export function tilesTwoByTwo(s: Stage & { kind: 'pool' }, input: tf.Tensor): boolean {
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


export type TrainedStage = Stage & { kind: 'conv' | 'dense' };

/** A forward pass, with what the backward pass needs of it. */
export interface Pass {
  logits: tf.Tensor2D;
  /** Each stage's input and output (undefined where a fused pair skips one). */
  inputs: (tf.Tensor | undefined)[];
  outputs: (tf.Tensor | undefined)[];
  /** The fused first layer's pooling cells, for its gradient. */
  argmax?: tf.Tensor;
  firstTrained: number;
}

/** How a step runs its trained stages forward; pooling and flattening are tfjs's own. */
export interface LayerOps {
  /** The first layer, a ReLU convolution, with the 2×2 pooling after it: [pooled, argmax]. */
  convReluPool(s: Stage & { kind: 'conv' }, i: number, h: tf.Tensor): [tf.Tensor, tf.Tensor];
  layer(s: TrainedStage, i: number, h: tf.Tensor): tf.Tensor;
}

export function forwardStages(stages: Stage[], x: tf.Tensor, ops: LayerOps): Pass {
  const firstTrained = stages.findIndex((s) => s.kind === 'conv' || s.kind === 'dense');
  const inputs: (tf.Tensor | undefined)[] = [];
  const outputs: (tf.Tensor | undefined)[] = [];
  let argmax: tf.Tensor | undefined;
  let h = x;
  for (let i = 0; i < stages.length; i++) {
    const s = stages[i];
    inputs.push(h);
    if (s.kind === 'conv' && fusesWithPool(stages, i, firstTrained, h)) {
      const [pooled, cells] = ops.convReluPool(s, i, h);
      argmax = cells;
      inputs.push(undefined);
      outputs.push(undefined, pooled);
      h = pooled;
      i++;
      continue;
    }
    if (s.kind === 'conv' || s.kind === 'dense') h = ops.layer(s, i, h);
    else if (s.kind === 'pool') h = tf.maxPool(h as tf.Tensor4D, s.size, s.strides, s.pad);
    else h = tf.reshape(h, [h.shape[0], -1]);
    outputs.push(h);
  }
  return { logits: h as tf.Tensor2D, inputs, outputs, argmax, firstTrained };
}
