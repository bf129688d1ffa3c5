import * as tf from '@tensorflow/tfjs';
import { convGeometry } from '../geometry.ts';
import { ADAM_STEP, CONV_RELU_POOL, CONV_RELU_POOL_GRAD, POOL_RELU_BIAS_GRAD, RELU_BIAS_GRAD, SOFT_CROSS_ENTROPY, type AdamStepAttrs } from '../kernel-names.ts';
import { convBackpropInput, convReluPool, filterGrad } from './conv.ts';
import { adamStep, softCrossEntropy } from './optimize.ts';
import { maxPoolGrad, poolReluBiasGrad, reluBiasGrad } from './pool.ts';
import type { WebGPUBackend } from './program.ts';

/**
 * Kernels for the 'webgpu' backend: the fused kernels of engine/kernel-names.ts, which the
 * hand-derived training step (models/sequential-step.ts) runs, and replacements for tfjs's
 * Conv2DBackpropFilter (see filterGrad), Conv2DBackpropInput and MaxPoolGrad (one dispatch, not two). Each is checked against the cpu
 * backend in test/webgpu-kernels.test.ts.
 */

type Info = tf.TensorInfo;
interface Args {
  inputs: Record<string, Info>;
  backend: unknown;
  attrs: Record<string, unknown>;
}
type KernelFn = (args: Args) => Info | Info[];

function floats(name: string, ...ts: Info[]): void {
  for (const t of ts) if (t.dtype !== 'float32') throw new Error(`${name} (webgpu): expected float32 operands, got ${t.dtype}`);
}

const KERNELS: Record<string, (original: KernelFn | undefined) => KernelFn> = {
  [CONV_RELU_POOL]: () => ({ inputs: { x, filter, bias }, backend, attrs }) => {
    floats(CONV_RELU_POOL, x, filter, bias);
    const g = convGeometry(x.shape, filter.shape, attrs);
    if (g.ho % 2 || g.wo % 2) throw new Error(`${CONV_RELU_POOL}: the 2×2 pooling must tile the ${g.ho}×${g.wo} convolution output`);
    return convReluPool(backend as WebGPUBackend, x, filter, bias, g);
  },
  [CONV_RELU_POOL_GRAD]: () => ({ inputs: { x, dy, pooled, argmax }, backend, attrs }) => {
    floats(CONV_RELU_POOL_GRAD, x, dy, pooled);
    const g = convGeometry(x.shape, attrs.filterShape as number[], attrs);
    return filterGrad(backend as WebGPUBackend, x, { kind: 'relu-pool', dy, pooled, cell: argmax }, g, true);
  },
  Conv2DBackpropFilter: (original) => (args) => {
    const { x, dy } = args.inputs;
    if (args.attrs.dataFormat === 'NCHW' || x.dtype !== 'float32' || dy.dtype !== 'float32') return original!(args);
    const g = convGeometry(x.shape, args.attrs.filterShape as number[], args.attrs);
    return filterGrad(args.backend as WebGPUBackend, x, { kind: 'dy', dy }, g, false)[0];
  },
  Conv2DBackpropInput: (original) => (args) => {
    const { dy, filter } = args.inputs;
    if (args.attrs.dataFormat === 'NCHW' || dy.dtype !== 'float32' || filter.dtype !== 'float32') return original!(args);
    return convBackpropInput(args.backend as WebGPUBackend, dy, filter, convGeometry(args.attrs.inputShape as number[], filter.shape, args.attrs));
  },
  MaxPoolGrad: (original) => (args) => {
    const { dy, input } = args.inputs;
    if (dy.dtype !== 'float32' || input.dtype !== 'float32') return original!(args);
    const a = args.attrs as { filterSize: number | [number, number]; strides: number | [number, number]; pad: 'same' | 'valid' | number; dimRoundingMode?: 'floor' | 'round' | 'ceil' };
    const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], a.filterSize, a.strides, 1, a.pad, a.dimRoundingMode);
    const [n, h, w, c] = input.shape;
    return maxPoolGrad(args.backend as WebGPUBackend, dy, input, {
      n, h, w, c, ho: info.outHeight, wo: info.outWidth, fh: info.filterHeight, fw: info.filterWidth, sh: info.strideHeight, sw: info.strideWidth, top: info.padInfo.top, left: info.padInfo.left,
    });
  },
  [RELU_BIAS_GRAD]: () => ({ inputs: { dy, y }, backend }) => {
    floats(RELU_BIAS_GRAD, dy, y);
    return reluBiasGrad(backend as WebGPUBackend, dy, y);
  },
  [POOL_RELU_BIAS_GRAD]: () => ({ inputs: { dy, input }, backend, attrs }) => {
    floats(POOL_RELU_BIAS_GRAD, dy, input);
    const [, h, w] = input.shape;
    const two = (v: unknown) => v === 2 || (Array.isArray(v) && v[0] === 2 && v[1] === 2);
    if (!two(attrs.filterSize) || !two(attrs.strides) || h % 2 || w % 2) throw new Error(`${POOL_RELU_BIAS_GRAD}: only a 2×2 pooling that tiles its ${h}×${w} input`);
    return poolReluBiasGrad(backend as WebGPUBackend, dy, input);
  },
  [ADAM_STEP]: () => ({ inputs: { w, g, m, v }, backend, attrs }) => {
    floats(ADAM_STEP, w, g, m, v);
    const b = backend as WebGPUBackend & { refCount(id: object): number };
    if (b.refCount(m.dataId) !== 1 || b.refCount(v.dataId) !== 1) throw new Error(`${ADAM_STEP}: the moments are shared, so they cannot be updated in place`);
    return adamStep(b, w, g, m, v, attrs as unknown as AdamStepAttrs);
  },
  [SOFT_CROSS_ENTROPY]: () => ({ inputs: { targets, logits }, backend, attrs }) => {
    floats(SOFT_CROSS_ENTROPY, targets, logits);
    return softCrossEntropy(backend as WebGPUBackend, targets, logits, (attrs.temperature as number | undefined) ?? 1);
  },
};

let registered = false;

/** Registers the kernels above for 'webgpu' (after tfjs-backend-webgpu has registered its own). Idempotent. */
export function registerWebgpuKernels(): void {
  if (registered) return;
  registered = true;
  for (const [kernelName, make] of Object.entries(KERNELS)) {
    const existing = tf.getKernel(kernelName, 'webgpu');
    if (existing) tf.unregisterKernel(kernelName, 'webgpu');
    const kernelFunc = make(existing?.kernelFunc as unknown as KernelFn | undefined) as unknown as tf.KernelFunc;
    tf.registerKernel({ kernelName, backendName: 'webgpu', kernelFunc, setupFunc: existing?.setupFunc, disposeFunc: existing?.disposeFunc });
  }
}
