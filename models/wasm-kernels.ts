import * as tf from '@tensorflow/tfjs';

type Info = tf.TensorInfo;
type KernelFn = (args: { inputs: Record<string, Info>; backend: unknown; attrs?: Record<string, unknown> }) => Info;

function wasmKernel(name: string): KernelFn {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`wasm backend has no ${name} kernel to build on`);
  return k.kernelFunc as unknown as KernelFn;
}

/**
 * dW[kh,kw,ci,co] = Σ_{n,i,j} x[n, i·s + kh − padTop, j·s + kw − padLeft, ci] · dy[n,i,j,co]:
 * a forward convolution of x with channels as batch (Ci×H×W×N) by dy as the filter (Ho×Wo×N×Co)
 * with dilation = stride, cropped to the filter size. It runs on wasm's own (XNNPACK) conv2d.
 */
function conv2dBackpropFilter(args: { inputs: Record<string, Info>; backend: unknown; attrs: Record<string, unknown> }): Info {
  const { inputs, backend, attrs } = args;
  const { x, dy } = inputs;
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as {
    strides: [number, number] | number;
    pad: 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
    dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  if (dataFormat === 'NCHW') throw new Error('Conv2DBackpropFilter on wasm supports NHWC only');
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode,
  );
  const { top, bottom, left, right } = info.padInfo;
  const transpose = wasmKernel('Transpose');
  const conv2d = wasmKernel('Conv2D');
  const slice = wasmKernel('Slice');
  const dispose = (t: Info) => (backend as { disposeData(id: object): void }).disposeData(t.dataId);

  const xT = transpose({ inputs: { x }, backend, attrs: { perm: [3, 1, 2, 0] } });
  const dyT = transpose({ inputs: { x: dy }, backend, attrs: { perm: [1, 2, 0, 3] } });
  const full = conv2d({
    inputs: { x: xT, filter: dyT },
    backend,
    attrs: {
      strides: [1, 1],
      pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
      dataFormat: 'NHWC',
      dilations: [info.strideHeight, info.strideWidth],
    },
  });
  dispose(xT);
  dispose(dyT);
  const [kh, kw] = filterShape;
  let cropped = full;
  if (full.shape[1] !== kh || full.shape[2] !== kw) {
    cropped = slice({ inputs: { x: full }, backend, attrs: { begin: [0, 0, 0, 0], size: [full.shape[0], kh, kw, full.shape[3]] } });
    dispose(full);
  }
  const out = transpose({ inputs: { x: cropped }, backend, attrs: { perm: [1, 2, 0, 3] } });
  dispose(cropped);
  return out;
}

let registered = false;

/** Registers for 'wasm' the kernels that training our students needs and wasm 4.22 lacks. Idempotent. */
export function registerWasmKernels(): void {
  if (registered || tf.getKernel('Conv2DBackpropFilter', 'wasm')) {
    registered = true;
    return;
  }
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: conv2dBackpropFilter as unknown as tf.KernelFunc,
  });
  registered = true;
}
