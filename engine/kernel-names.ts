/**
 * The fused training kernels rhobench registers on its backends (engine/wasm, engine/webgpu) and
 * the training code in models/ runs where a backend has them. This file is the contract between
 * the two rooms: names, attributes and the shape rule, nothing else, so neither imports the other.
 */

/** Kernel: inputs {dy, y} (y a ReLU layer's output) → [gradient before the ReLU, bias gradient]. */
export const RELU_BIAS_GRAD = 'RhobenchReluBiasGrad';
/** Kernel: MaxPoolGrad's inputs and attributes, pooling a ReLU layer's output → [dpre, dbias]. */
export const POOL_RELU_BIAS_GRAD = 'RhobenchMaxPoolReluBiasGrad';
/** Kernel: inputs {x, filter, bias}, attrs {strides, pad} → [2×2-max-pooled relu(conv + bias), argmax]. */
export const CONV_RELU_POOL = 'RhobenchConvReluPool';
/** Kernel: inputs {x, dy, pooled, argmax}, attrs {strides, pad, filterShape} → [dfilter, dbias] (no dx). */
export const CONV_RELU_POOL_GRAD = 'RhobenchConvReluPoolGrad';
/** Kernel: inputs {w, g, m, v}, attrs AdamStepAttrs → the updated w; m and v are updated in place. */
export const ADAM_STEP = 'RhobenchAdamStep';

/**
 * Kernel: inputs {targets, logits} [rows, classes], attrs {temperature} → [loss (scalar), dlogits]:
 * softCrossEntropy and its gradient (models/soft-loss.ts) in one kernel. Optional: the step uses
 * tfjs ops where a backend lacks it.
 */
export const SOFT_CROSS_ENTROPY = 'RhobenchSoftCrossEntropy';

/** The kernels the hand-derived Sequential step needs (models/sequential-step.ts). */
export const STEP_KERNELS = [RELU_BIAS_GRAD, POOL_RELU_BIAS_GRAD, CONV_RELU_POOL, CONV_RELU_POOL_GRAD] as const;

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
