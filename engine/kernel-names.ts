/**
 * The fused training kernels rhobench registers on its backends (engine/wasm, engine/webgpu) and
 * the training code in models/ runs where a backend has them. This file is the contract between
 * the two rooms: names, attributes and the shape rule, nothing else, so neither imports the other.
 *
 * Where an attribute `models` is taken (webgpu), one call serves that many stacked models: the
 * batch holds each model's rows in turn, the weights are [models, …] (or the plain shape for one),
 * and every model's numbers are those it would get alone.
 */

/** Kernel: inputs {dy, y} (y a ReLU layer's output) → [gradient before the ReLU, bias gradient]. */
export const RELU_BIAS_GRAD = 'RhobenchReluBiasGrad';
/** Kernel: MaxPoolGrad's inputs and attributes (+ models), pooling a ReLU layer's output → [dpre, dbias]. */
export const POOL_RELU_BIAS_GRAD = 'RhobenchMaxPoolReluBiasGrad';
/** Kernel: inputs {x, filter, bias}, attrs {strides, pad, models?} → [2×2-max-pooled relu(conv + bias), argmax]. */
export const CONV_RELU_POOL = 'RhobenchConvReluPool';
/** Kernel: inputs {x, dy, pooled, argmax}, attrs {strides, pad, filterShape, models?} → [dfilter, dbias] (no dx). */
export const CONV_RELU_POOL_GRAD = 'RhobenchConvReluPoolGrad';
/** Kernel: inputs {w, g, m, v}, attrs AdamStepAttrs → the updated w; m and v are updated in place. */
export const ADAM_STEP = 'RhobenchAdamStep';
/**
 * Kernel: inputs {targets, logits, total?} [rows, classes], attrs {temperature, models?} →
 * [loss (scalar, or one per model), dlogits]: softCrossEntropy and its gradient (models/soft-loss.ts)
 * in one kernel; with `total`, loss × rows is added to it in place. Optional: the step uses tfjs
 * ops where a backend lacks it.
 */
export const SOFT_CROSS_ENTROPY = 'RhobenchSoftCrossEntropy';
/**
 * Kernel: inputs {x, filter, bias}, attrs {strides, pad, relu, models} → relu?(conv(x) + bias). A
 * rank-2 x [rows, in] with filter [in, out] is a dense layer.
 */
export const CONV_FORWARD = 'RhobenchConv';
/**
 * Kernel: inputs {x, dy, y?}, attrs {strides, pad, filterShape, bias, models} → [dfilter, dbias
 * if bias]: the gradient of a convolution's (or a rank-2 dense layer's) weights from dy at its
 * output, taken through its ReLU when its output y is given.
 */
export const FILTER_GRAD = 'RhobenchFilterGrad';
/** Kernel: inputs {dy, filter, y?}, attrs {strides, pad, inputShape, models} → dx, through the ReLU when y is given. */
export const INPUT_GRAD = 'RhobenchInputGrad';

/** What the hand-derived Sequential step needs on wasm (models/sequential-step.ts). */
export const STEP_KERNELS = [RELU_BIAS_GRAD, POOL_RELU_BIAS_GRAD, CONV_RELU_POOL, CONV_RELU_POOL_GRAD] as const;
/** What the stacked step needs (webgpu): every kernel of the step is then rhobench's own. */
export const STACKED_STEP_KERNELS = [CONV_FORWARD, FILTER_GRAD, INPUT_GRAD, CONV_RELU_POOL, CONV_RELU_POOL_GRAD, POOL_RELU_BIAS_GRAD, SOFT_CROSS_ENTROPY, ADAM_STEP] as const;

export interface AdamStepAttrs {
  beta1: number;
  beta2: number;
  /** 1 − β₁ᵗ and 1 − β₂ᵗ for this step, as float32 (what tfjs's Adam divides by). */
  c1: number;
  c2: number;
  epsilon: number;
  learningRate: number;
}

/**
 * Whether CONV_RELU_POOL and POOL_RELU_BIAS_GRAD apply on `backend`: the 2×2 pooling must tile
 * the convolution's output, and wasm's SIMD kernels take channels only in fours.
 */
export function convReluPoolFits(backend: string, outHeight: number, outWidth: number, channels: number): boolean {
  return outHeight % 2 === 0 && outWidth % 2 === 0 && (backend !== 'wasm' || channels % 4 === 0);
}
