import * as tf from '@tensorflow/tfjs';
import { CONV_FORWARD, CONV_RELU_POOL, CONV_RELU_POOL_GRAD, FILTER_GRAD, INPUT_GRAD, POOL_RELU_BIAS_GRAD, SOFT_CROSS_ENTROPY, STACKED_STEP_KERNELS } from '../engine/kernel-names.ts';
import { forwardStages, run1, run2, tilesTwoByTwo, type Pass, type Stage } from './stages.ts';

/**
 * The training step of Sequential students on rhobench's own kernels alone (webgpu), for one
 * model or `models` stacked ones: the batch holds each model's rows in turn, and each trained
 * stage's weights are the model's own or [models, …] stacks. Every kernel computes a model's
 * numbers as it would alone, so a stack of students trains each exactly as training it alone does
 * (test/webgpu-kernels.test.ts checks bit for bit), in the dispatches of one. The ReLU of a layer
 * is taken inside its gradient kernels (no separate mask pass), a dense layer is a 1 × 1
 * convolution, and the loss adds itself to the epoch's running sum.
 */

/** Per stage: the weights it trains (undefined for pooling and flattening). */
export type StackWeights = ({ kernel: tf.Tensor; bias: tf.Tensor } | undefined)[];

export function hasStackedKernels(backend = tf.getBackend()): boolean {
  return STACKED_STEP_KERNELS.every((k) => tf.getKernel(k, backend));
}

/** A model's own variables as the weights of a one-model step. */
export function ownWeights(stages: Stage[]): StackWeights {
  return stages.map((s) => ('kernel' in s ? { kernel: s.kernel, bias: s.bias } : undefined));
}

export function stackedForward(stages: Stage[], weights: StackWeights, models: number, x: tf.Tensor): Pass {
  return forwardStages(stages, x, {
    convReluPool: (s, i, h) => run2(CONV_RELU_POOL, { x: h, filter: weights[i]!.kernel, bias: weights[i]!.bias }, { strides: s.strides, pad: s.pad, models }),
    layer: (s, i, h) =>
      run1(CONV_FORWARD, { x: h, filter: weights[i]!.kernel, bias: weights[i]!.bias }, { ...(s.kind === 'conv' ? { strides: s.strides, pad: s.pad } : {}), relu: s.act === 'relu', models }),
  });
}

/** The gradients keyed by the name of the variable each weight is (what createAdam takes). */
export function namedGrads(weights: StackWeights, grads: StackedGrads['grads']): tf.NamedTensorMap {
  const named: tf.NamedTensorMap = {};
  weights.forEach((w, i) => {
    if (!w) return;
    named[(w.kernel as tf.Variable).name] = grads[i]!.kernel;
    named[(w.bias as tf.Variable).name] = grads[i]!.bias;
  });
  return named;
}

export interface StackedGrads {
  /** The loss: a scalar for one model, [models] for a stack. */
  value: tf.Tensor;
  /** Per stage, the gradients of its weights (in the weights' shapes). */
  grads: ({ kernel: tf.Tensor; bias: tf.Tensor } | undefined)[];
}

/**
 * The loss on (x, targets) and the gradient of every trained stage's weights; with `total`, each
 * model's loss × its rows is also added to total in place.
 */
export function stackedGrads(stages: Stage[], weights: StackWeights, models: number, x: tf.Tensor, targets: tf.Tensor2D, temperature: number, total?: tf.Tensor): StackedGrads {
  const { logits, inputs, outputs, argmax, firstTrained } = stackedForward(stages, weights, models, x);
  const [value, dlogits] = run2(SOFT_CROSS_ENTROPY, { targets, logits, ...(total ? { total } : {}) }, { temperature, models });
  const grads: StackedGrads['grads'] = stages.map(() => undefined);
  let g: tf.Tensor = dlogits;
  // A gradient already taken through a ReLU below a pooling, with its bias gradient.
  let pre: [tf.Tensor, tf.Tensor] | undefined;
  for (let i = stages.length - 1; i >= firstTrained; i--) {
    const s = stages[i];
    const w = weights[i];
    const input = inputs[i]!;
    if (s.kind === 'conv' || s.kind === 'dense') {
      const attrs = { ...(s.kind === 'conv' ? { strides: s.strides, pad: s.pad } : {}), models };
      // Through the layer's ReLU inside the kernels (its output y says where), unless `pre` did it.
      const relu: tf.NamedTensorMap = !pre && s.act === 'relu' ? { y: outputs[i]! } : {};
      const dy = pre ? pre[0] : g;
      const filterShape = s.kernel.shape;
      if (pre) {
        grads[i] = { kernel: run2(FILTER_GRAD, { x: input, dy }, { ...attrs, filterShape, bias: false })[0], bias: pre[1] };
      } else {
        const [kernel, bias] = run2(FILTER_GRAD, { x: input, dy, ...relu }, { ...attrs, filterShape, bias: true });
        grads[i] = { kernel, bias };
      }
      pre = undefined;
      if (i > firstTrained) g = run1(INPUT_GRAD, { dy, filter: w!.kernel, ...relu }, { ...attrs, inputShape: input.shape });
    } else if (s.kind === 'pool' && argmax && i === firstTrained + 1) {
      const conv = stages[firstTrained] as Stage & { kind: 'conv' };
      const [kernel, bias] = run2(CONV_RELU_POOL_GRAD, { x: inputs[firstTrained]!, dy: g, pooled: outputs[i]!, argmax }, { strides: conv.strides, pad: conv.pad, filterShape: conv.kernel.shape, models });
      grads[firstTrained] = { kernel, bias };
      break;
    } else if (s.kind === 'pool') {
      const below = stages[i - 1];
      const attrs = { filterSize: s.size, strides: s.strides, pad: s.pad };
      const poolInputs = { dy: g, input, output: outputs[i]! };
      if (below.kind === 'conv' && below.act === 'relu' && tilesTwoByTwo(s, input)) pre = run2(POOL_RELU_BIAS_GRAD, poolInputs, { ...attrs, models });
      else g = run1('MaxPoolGrad', poolInputs, attrs);
    } else {
      g = tf.reshape(g, input.shape);
    }
  }
  return { value, grads };
}
