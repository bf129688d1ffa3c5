import * as tf from '@tensorflow/tfjs';
import { convGeometry, type ConvGeometry } from '../geometry.ts';
import {
  ADAM_STEP, CONV_FORWARD, CONV_RELU_POOL, CONV_RELU_POOL_GRAD, FILTER_GRAD, INPUT_GRAD, POOL_RELU_BIAS_GRAD, SOFT_CROSS_ENTROPY, type AdamStepAttrs,
} from '../kernel-names.ts';
import { convBackpropInput, convForward, convReluPool, filterGrad } from './conv.ts';
import { adamStep, softCrossEntropy } from './optimize.ts';
import { maxPoolGrad, poolReluBiasGrad } from './pool.ts';
import type { WebGPUBackend } from './program.ts';

/**
 * Kernels for the 'webgpu' backend: those of engine/kernel-names.ts, with which the stacked
 * training step (models/sequential-step.ts) runs on rhobench's kernels alone, and replacements for
 * tfjs's Conv2DBackpropFilter (see filterGrad), Conv2DBackpropInput and MaxPoolGrad (one dispatch,
 * not two), which the gradient tape of other models runs. Each is checked against the cpu backend
 * in test/webgpu-kernels.test.ts.
 */

type Info = tf.TensorInfo;
interface Args {
  inputs: Record<string, Info>;
  backend: unknown;
  attrs: Record<string, unknown>;
}
type KernelFn = (args: Args) => Info | Info[];

function floats(name: string, ...ts: (Info | undefined)[]): void {
  for (const t of ts) if (t && t.dtype !== 'float32') throw new Error(`${name} (webgpu): expected float32 operands, got ${t.dtype}`);
}

const modelsOf = (attrs: Record<string, unknown>) => (attrs.models as number | undefined) ?? 1;

/**
 * The convolution a kernel's operands describe: x and the filter of one model; a rank-2 x [rows,
 * in] (a dense layer) is rows 1 × 1 images of `in` channels under a 1 × 1 filter.
 */
function geometry(xShape: number[], filterShape: number[], attrs: Record<string, unknown>): ConvGeometry {
  if (xShape.length === 2) return convGeometry([xShape[0], 1, 1, xShape[1]], [1, 1, ...filterShape.slice(-2)], { strides: 1, pad: 'valid' });
  return convGeometry(xShape, filterShape.slice(-4), attrs);
}

const KERNELS: Record<string, (original: KernelFn | undefined) => KernelFn> = {
  [CONV_FORWARD]: () => ({ inputs: { x, filter, bias }, backend, attrs }) => {
    floats(CONV_FORWARD, x, filter, bias);
    const g = geometry(x.shape, filter.shape, attrs);
    const out = x.shape.length === 2 ? [g.n, g.co] : [g.n, g.ho, g.wo, g.co];
    return convForward(backend as WebGPUBackend, x, filter, bias, g, modelsOf(attrs), attrs.relu === true, out);
  },
  [FILTER_GRAD]: () => ({ inputs: { x, dy, y }, backend, attrs }) => {
    floats(FILTER_GRAD, x, dy, y);
    const models = modelsOf(attrs);
    const filterShape = attrs.filterShape as number[];
    const g = geometry(x.shape, filterShape, attrs);
    const stacked = (s: number[]) => (models > 1 ? [models, ...s] : s);
    const shapes = attrs.bias ? [stacked(filterShape), stacked([g.co])] : [stacked(filterShape)];
    return filterGrad(backend as WebGPUBackend, x, y ? { kind: 'relu', dy, y } : { kind: 'dy', dy }, g, attrs.bias === true, models, shapes);
  },
  [INPUT_GRAD]: () => ({ inputs: { dy, filter, y }, backend, attrs }) => {
    floats(INPUT_GRAD, dy, filter, y);
    const inputShape = attrs.inputShape as number[];
    const g = geometry(inputShape, filter.shape, attrs);
    return convBackpropInput(backend as WebGPUBackend, dy, filter, g, modelsOf(attrs), y, inputShape);
  },
  [CONV_RELU_POOL]: () => ({ inputs: { x, filter, bias }, backend, attrs }) => {
    floats(CONV_RELU_POOL, x, filter, bias);
    const g = geometry(x.shape, filter.shape, attrs);
    if (g.ho % 2 || g.wo % 2) throw new Error(`${CONV_RELU_POOL}: the 2×2 pooling must tile the ${g.ho}×${g.wo} convolution output`);
    return convReluPool(backend as WebGPUBackend, x, filter, bias, g, modelsOf(attrs));
  },
  [CONV_RELU_POOL_GRAD]: () => ({ inputs: { x, dy, pooled, argmax }, backend, attrs }) => {
    floats(CONV_RELU_POOL_GRAD, x, dy, pooled);
    const models = modelsOf(attrs);
    const filterShape = attrs.filterShape as number[];
    const g = geometry(x.shape, filterShape, attrs);
    const shapes = models > 1 ? [[models, ...filterShape.slice(-4)], [models, g.co]] : [filterShape, [g.co]];
    return filterGrad(backend as WebGPUBackend, x, { kind: 'relu-pool', dy, pooled, cell: argmax }, g, true, models, shapes);
  },
  Conv2DBackpropFilter: (original) => (args) => {
    const { x, dy } = args.inputs;
    if (args.attrs.dataFormat === 'NCHW' || x.dtype !== 'float32' || dy.dtype !== 'float32') return original!(args);
    const filterShape = args.attrs.filterShape as number[];
    return filterGrad(args.backend as WebGPUBackend, x, { kind: 'dy', dy }, convGeometry(x.shape, filterShape, args.attrs), false, 1, [filterShape])[0];
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
  [POOL_RELU_BIAS_GRAD]: () => ({ inputs: { dy, input }, backend, attrs }) => {
    floats(POOL_RELU_BIAS_GRAD, dy, input);
    const [, h, w] = input.shape;
    const two = (v: unknown) => v === 2 || (Array.isArray(v) && v[0] === 2 && v[1] === 2);
    if (!two(attrs.filterSize) || !two(attrs.strides) || h % 2 || w % 2) throw new Error(`${POOL_RELU_BIAS_GRAD}: only a 2×2 pooling that tiles its ${h}×${w} input`);
    return poolReluBiasGrad(backend as WebGPUBackend, dy, input, modelsOf(attrs));
  },
  [ADAM_STEP]: () => ({ inputs: { w, g, m, v }, backend, attrs }) => {
    floats(ADAM_STEP, w, g, m, v);
    const b = backend as WebGPUBackend & { refCount(id: object): number };
    if (b.refCount(m.dataId) !== 1 || b.refCount(v.dataId) !== 1) throw new Error(`${ADAM_STEP}: the moments are shared, so they cannot be updated in place`);
    return adamStep(b, w, g, m, v, attrs as unknown as AdamStepAttrs);
  },
  [SOFT_CROSS_ENTROPY]: () => ({ inputs: { targets, logits, total }, backend, attrs }) => {
    floats(SOFT_CROSS_ENTROPY, targets, logits, total);
    return softCrossEntropy(backend as WebGPUBackend, targets, logits, (attrs.temperature as number | undefined) ?? 1, modelsOf(attrs), total);
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
