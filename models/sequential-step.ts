import * as tf from '@tensorflow/tfjs';
import { CONV_RELU_POOL, CONV_RELU_POOL_GRAD, POOL_RELU_BIAS_GRAD, RELU_BIAS_GRAD, STEP_KERNELS } from '../engine/kernel-names.ts';
import { softCrossEntropy, softCrossEntropyGrad } from './soft-loss.ts';
import { hasStackedKernels, namedGrads, ownWeights, stackedForward, stackedGrads } from './stacked-step.ts';
import { forwardStages, planStages, run1, run2, tilesTwoByTwo, type LayerOps, type Stage } from './stages.ts';

/**
 * The gradient of the distillation loss for a Sequential model of Conv2D, MaxPooling2D,
 * Flatten and Dense layers, derived by hand instead of by tfjs's gradient tape. The tape runs
 * a training forward pass unfused (convolution, bias add, ReLU as three kernels, each input
 * cloned for the backward pass) and a backward pass of one kernel per elementary op; here the
 * forward pass uses fused convolution and matmul kernels (bias and ReLU inside), and the backward
 * pass fuses each ReLU's mask with its bias gradient — and, when a 2×2 max pooling follows, with
 * the pooling gradient too. On webgpu the step is models/stacked-step.ts, on rhobench's kernels
 * alone; on wasm it is below, on the wasm kernels of engine/wasm and tfjs's own.
 * test/wasm-kernels.test.ts and test/webgpu-kernels.test.ts check both against tfjs's gradients.
 */

export interface HandDerivedStep {
  /** The loss on (x, targets) and its gradient for every trainable variable, keyed by name. */
  grads(x: tf.Tensor, targets: tf.Tensor2D, temperature?: number): { value: tf.Scalar; grads: tf.NamedTensorMap };
}

/** The model's stages on a backend with either step's kernels; undefined where neither applies. */
function plan(model: tf.LayersModel): Stage[] | undefined {
  const backend = tf.getBackend();
  return hasStackedKernels(backend) || STEP_KERNELS.every((k) => tf.getKernel(k, backend)) ? planStages(model) : undefined;
}

/**
 * The hand-derived step for `model` on the current backend, or undefined where it does not
 * apply (another backend, a functional model, a layer or option not covered): callers then use
 * tf.variableGrads.
 */
export function handDerivedStep(model: tf.LayersModel): HandDerivedStep | undefined {
  const stages = plan(model);
  if (!stages) return undefined;
  if (!hasStackedKernels()) return { grads: (x, targets, temperature = 1) => tf.tidy(() => run(stages, x, targets, temperature)) };
  const weights = ownWeights(stages);
  return {
    grads: (x, targets, temperature = 1) =>
      tf.tidy(() => {
        const { value, grads } = stackedGrads(stages, weights, 1, x, targets, temperature);
        return { value: value as tf.Scalar, grads: namedGrads(weights, grads) };
      }),
  };
}

/**
 * The model's logits by the same fused forward pass, for inference, or undefined where the
 * hand-derived step does not apply (callers then use model.predict). One batch is one pass: no
 * 32-row batches as model.predict makes, which on a GPU would each cost their own dispatches.
 */
export function fusedForward(model: tf.LayersModel): ((x: tf.Tensor) => tf.Tensor2D) | undefined {
  const stages = plan(model);
  if (!stages) return undefined;
  if (!hasStackedKernels()) return (x) => tf.tidy(() => forward(stages, x).logits);
  const weights = ownWeights(stages);
  return (x) => tf.tidy(() => stackedForward(stages, weights, 1, x).logits);
}

/** On wasm: the wasm kernels of engine/wasm where they fuse, tfjs's fused convolution and matmul elsewhere. */
const WASM_LAYERS: LayerOps = {
  convReluPool: (s, _i, h) => run2(CONV_RELU_POOL, { x: h, filter: s.kernel, bias: s.bias }, { strides: s.strides, pad: s.pad }),
  layer: (s, _i, h) =>
    s.kind === 'conv'
      ? tf.fused.conv2d({ x: h as tf.Tensor4D, filter: s.kernel as tf.Tensor4D, bias: s.bias, strides: s.strides, pad: s.pad, activation: s.act })
      : tf.fused.matMul({ a: h as tf.Tensor2D, b: s.kernel as tf.Tensor2D, bias: s.bias, activation: s.act }),
};

const forward = (stages: Stage[], x: tf.Tensor) => forwardStages(stages, x, WASM_LAYERS);

function run(stages: Stage[], x: tf.Tensor, targets: tf.Tensor2D, temperature: number): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  const { logits, inputs, outputs, argmax, firstTrained } = forward(stages, x);
  const value = softCrossEntropy(targets, logits, temperature);
  const dlogits = softCrossEntropyGrad(targets, logits, temperature);

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
