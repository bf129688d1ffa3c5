import * as tf from '@tensorflow/tfjs';

/**
 * Kernels for the 'wasm' backend. tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter at all, so
 * training any CNN on it fails; and its BatchMatMul with a transposed operand, Conv2DBackpropInput
 * and MaxPoolGrad are plain loops that took most of a training step's time. Each kernel here is
 * composed from wasm's own fast kernels (XNNPACK convolution and transpose, contiguous slices,
 * element-wise ops), working on TensorInfos directly so nothing reaches the engine's bookkeeping.
 */

type Info = tf.TensorInfo;
type Attrs = Record<string, unknown>;
interface Args {
  inputs: Record<string, Info>;
  backend: unknown;
  attrs: Attrs;
}
interface WasmHeap {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Float32Array | Int32Array | Uint8Array;
}
type KernelFn = (args: { inputs: Record<string, Info> | Info[]; backend: unknown; attrs?: Attrs }) => Info;

function wasmKernel(name: string): KernelFn {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`wasm backend has no ${name} kernel to build on`);
  return k.kernelFunc as unknown as KernelFn;
}

/** The handful of wasm kernels the compositions below need, bound to one backend. */
function wasmOps(backend: unknown) {
  const run = (name: string, inputs: Record<string, Info> | Info[], attrs: Attrs = {}) => wasmKernel(name)({ inputs, backend, attrs });
  return {
    transpose: (x: Info, perm: number[]) => run('Transpose', { x }, { perm }),
    conv2d: (x: Info, filter: Info, attrs: Attrs) => run('Conv2D', { x, filter }, { dataFormat: 'NHWC', ...attrs }),
    slice: (x: Info, begin: number[], size: number[]) => run('Slice', { x }, { begin, size }),
    /** Row k of a [rows, m] tensor; wasm's Slice first copies the whole input out of the heap. */
    row: (x: Info, k: number): Info => {
      const b = backend as WasmHeap;
      const m = x.shape[1];
      const out = b.makeOutput([1, m], x.dtype);
      b.typedArrayFromHeap(out).set(b.typedArrayFromHeap(x).subarray(k * m, (k + 1) * m));
      return out;
    },
    step: (x: Info) => run('Step', { x }, { alpha: 0 }),
    mul: (a: Info, b: Info) => run('Multiply', { a, b }),
    sub: (a: Info, b: Info) => run('Sub', { a, b }),
    pad: (x: Info, paddings: number[][]) => run('PadV2', { x }, { paddings, constantValue: 0 }),
    concat: (xs: Info[], axis: number) => run('Concat', xs, { axis }),
    dispose: (...xs: Info[]) => {
      for (const x of xs) (backend as { disposeData(id: object): void }).disposeData(x.dataId);
    },
  };
}

/** A reshape that shares storage: only for inputs to other kernels, never returned or disposed. */
const view = (x: Info, shape: number[]): Info => ({ dataId: x.dataId, shape, dtype: x.dtype });

const pair = (v: unknown): [number, number] => (typeof v === 'number' ? [v, v] : (v as [number, number]));

/**
 * dW[kh,kw,ci,co] = Σ_{n,i,j} x[n, i·s + kh − padTop, j·s + kw − padLeft, ci] · dy[n,i,j,co]:
 * a forward convolution of x with channels as batch (Ci×H×W×N) by dy as the filter (Ho×Wo×N×Co)
 * with dilation = stride, cropped to the filter size.
 */
function conv2dBackpropFilter({ inputs, backend, attrs }: Args): Info {
  const { x, dy } = inputs;
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as {
    strides: [number, number] | number;
    pad: 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
    dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  if (dataFormat === 'NCHW') throw new Error('Conv2DBackpropFilter on wasm supports NHWC only');
  const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode);
  const { top, bottom, left, right } = info.padInfo;
  const op = wasmOps(backend);
  const xT = op.transpose(x, [3, 1, 2, 0]);
  const dyT = op.transpose(dy, [1, 2, 0, 3]);
  const full = op.conv2d(xT, dyT, {
    strides: [1, 1],
    pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    dilations: [info.strideHeight, info.strideWidth],
  });
  op.dispose(xT, dyT);
  const [kh, kw] = filterShape;
  let cropped = full;
  if (full.shape[1] !== kh || full.shape[2] !== kw) {
    cropped = op.slice(full, [0, 0, 0, 0], [full.shape[0], kh, kw, full.shape[3]]);
    op.dispose(full);
  }
  const out = op.transpose(cropped, [1, 2, 0, 3]);
  op.dispose(cropped);
  return out;
}

/**
 * dx for a convolution of stride s, split by output phase (y mod sh, x mod sw): each phase
 * receives dy through only the filter taps congruent to it, so it is one small stride-1
 * correlation of dy with those taps flipped (its channels swapped). The phases are then
 * interleaved by two transposes. This replaces wasm's own kernel, a plain loop several times
 * slower than XNNPACK's convolutions; the work stays that of one forward convolution.
 */
function conv2dBackpropInputVia(original: KernelFn) {
  return (args: Args): Info => {
    const { inputs, backend, attrs } = args;
    const { dy, filter } = inputs;
    const { inputShape, strides, pad, dataFormat, dimRoundingMode } = attrs as {
      inputShape: [number, number, number, number];
      strides: [number, number] | number;
      pad: 'same' | 'valid' | number | tf.backend_util.ExplicitPadding;
      dataFormat: 'NHWC' | 'NCHW';
      dimRoundingMode?: 'floor' | 'round' | 'ceil';
    };
    if (dataFormat === 'NCHW' || dy.dtype !== 'float32' || filter.dtype !== 'float32') return original(args);
    const [kh, kw, ci, co] = filter.shape;
    const info = tf.backend_util.computeConv2DInfo(inputShape, [kh, kw, ci, co], strides, 1, pad, dimRoundingMode);
    const { strideHeight: sh, strideWidth: sw, outHeight: ho, outWidth: wo } = info;
    if (sh > kh || sw > kw) return original(args); // some phases would get no taps at all
    const [n, h, w] = inputShape;
    const uMax = Math.ceil(h / sh);
    const vMax = Math.ceil(w / sw);
    // Per axis and phase: the first tap, the tap count, and the padding that lines dy up.
    const axis = (phase: number, padBefore: number, s: number, k: number, inLen: number, outLen: number) => {
      const r = (phase + padBefore) % s;
      const taps = Math.ceil((k - r) / s);
      const before = taps - 1 - Math.floor((phase + padBefore) / s);
      const after = outLen - inLen - before + taps - 1;
      return { r, taps, before, after };
    };
    const op = wasmOps(backend);
    const heap = backend as WasmHeap;
    const wv = heap.typedArrayFromHeap(filter);
    const parts: Info[] = [];
    for (let py = 0; py < sh; py++) {
      for (let px = 0; px < sw; px++) {
        const ay = axis(py, info.padInfo.top, sh, kh, ho, uMax);
        const ax = axis(px, info.padInfo.left, sw, kw, wo, vMax);
        // Sub-filter [ty, tx, co, ci]: taps r + s·(T−1−t), i.e. flipped, channels swapped.
        const sub = heap.makeOutput([ay.taps, ax.taps, co, ci], 'float32');
        const sv = heap.typedArrayFromHeap(sub);
        for (let ty = 0; ty < ay.taps; ty++) {
          const y = ay.r + sh * (ay.taps - 1 - ty);
          for (let tx = 0; tx < ax.taps; tx++) {
            const x = ax.r + sw * (ax.taps - 1 - tx);
            const src = (y * kw + x) * ci * co;
            const dst = (ty * ax.taps + tx) * co * ci;
            for (let i = 0; i < ci; i++) for (let o = 0; o < co; o++) sv[dst + o * ci + i] = wv[src + i * co + o];
          }
        }
        const padY = [Math.max(ay.before, 0), Math.max(ay.after, 0)];
        const padX = [Math.max(ax.before, 0), Math.max(ax.after, 0)];
        let part = op.conv2d(dy, sub, { strides: [1, 1], pad: [[0, 0], padY, padX, [0, 0]], dilations: [1, 1] });
        op.dispose(sub);
        const cropY = padY[0] - ay.before;
        const cropX = padX[0] - ax.before;
        if (cropY || cropX || part.shape[1] !== uMax || part.shape[2] !== vMax) {
          const cropped = op.slice(part, [0, cropY, cropX, 0], [n, uMax, vMax, ci]);
          op.dispose(part);
          part = cropped;
        }
        parts.push(part);
      }
    }
    let full: Info;
    if (parts.length === 1) {
      full = parts[0];
    } else {
      const stacked = op.concat(parts, 0); // [py, px, n·uMax·vMax, ci]
      op.dispose(...parts);
      const a = op.transpose(view(stacked, [sh, sw, n * uMax * vMax, ci]), [0, 2, 1, 3]);
      op.dispose(stacked);
      full = op.transpose(view(a, [sh, n * uMax, vMax * sw * ci]), [1, 0, 2]);
      op.dispose(a);
    }
    full = { ...full, shape: [n, uMax * sh, vMax * sw, ci] };
    if (uMax * sh === h && vMax * sw === w) return full;
    const out = op.slice(full, [0, 0, 0, 0], [n, h, w, ci]);
    op.dispose(full);
    return out;
  };
}

/** Wasm's BatchMatMul is fast only without transposes (dense layers' gradients use both kinds). */
function batchMatMulVia(original: KernelFn) {
  return ({ inputs, backend, attrs }: Args): Info => {
    const { a, b } = inputs;
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return original({ inputs, backend, attrs });
    const op = wasmOps(backend);
    const swapLast = (t: Info) => {
      const r = t.shape.length;
      return op.transpose(t, [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2]);
    };
    const at = transposeA ? swapLast(a) : a;
    const bt = transposeB ? swapLast(b) : b;
    const out = original({ inputs: { a: at, b: bt }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
    if (transposeA) op.dispose(at);
    if (transposeB) op.dispose(bt);
    return out;
  };
}

/**
 * The common 2×2, stride-2 pooling ('valid', or 'same' over even sizes), where every input cell
 * lies in at most one window: each window passes dy to its first maximum in row-major order (the cpu backend's and
 * TensorFlow's tie rule). Walking the four window positions in that order, `rest` holds the
 * gradient not yet given out: step(max − x) is 0 exactly where x is the maximum. Only same-shape
 * element-wise ops and 4-d transposes are used: wasm's broadcasting and 6-d paths are slow loops.
 * Other pooling shapes go to wasm's own kernel.
 */
function maxPoolGradVia(original: KernelFn) {
  return (args: Args): Info => {
    const { inputs, backend, attrs } = args;
    const { dy, input, output } = inputs;
    const [n, h0, w0, c] = input.shape;
    const fs = pair(attrs.filterSize);
    const st = pair(attrs.strides);
    const evenSame = attrs.pad === 'same' && h0 % 2 === 0 && w0 % 2 === 0;
    const simple =
      input.dtype === 'float32' && fs[0] === 2 && fs[1] === 2 && st[0] === 2 && st[1] === 2 &&
      (attrs.pad === 'valid' || evenSame) && h0 >= 2 && w0 >= 2;
    if (!simple) return original(args);
    // 'valid' windows skip an odd last row or column: pool over the even part, zero-pad dx after.
    const h = h0 - (h0 % 2);
    const w = w0 - (w0 % 2);
    const odd = h !== h0 || w !== w0;
    if (odd) {
      const x = wasmOps(backend).slice(input, [0, 0, 0, 0], [n, h, w, c]);
      const even = maxPoolGradVia(original)({ inputs: { dy, input: x, output }, backend, attrs });
      wasmOps(backend).dispose(x);
      const dx = wasmOps(backend).pad(even, [[0, 0], [0, h0 - h], [0, w0 - w], [0, 0]]);
      wasmOps(backend).dispose(even);
      return dx;
    }
    const op = wasmOps(backend);
    const rows = n * (h / 2);
    const m = rows * (w / 2) * c;
    // [n·h/2, dh, w/2, dw·c] → [dh, n·h/2, w/2, dw·c] → [dh, dw, n·h/2·w/2, c]: rows k = 2·dh + dw.
    const byRow = op.transpose(view(input, [rows, 2, w / 2, 2 * c]), [1, 0, 2, 3]);
    const phases = op.transpose(view(byRow, [2, rows * (w / 2), 2, c]), [0, 2, 1, 3]);
    op.dispose(byRow);
    const max = view(output, [1, m]);
    const grads: Info[] = [];
    let rest = view(dy, [1, m]);
    for (let k = 0; k < 4; k++) {
      const xk = op.row(view(phases, [4, m]), k);
      const gap = op.sub(max, xk);
      const below = op.step(gap);
      const left = op.mul(below, rest);
      grads.push(op.sub(rest, left));
      op.dispose(xk, gap, below);
      if (k > 0) op.dispose(rest);
      rest = left;
    }
    op.dispose(rest, phases);
    const stacked = op.concat(grads, 0);
    op.dispose(...grads);
    const back = op.transpose(view(stacked, [2, 2, rows * (w / 2), c]), [0, 2, 1, 3]);
    op.dispose(stacked);
    const dx = op.transpose(view(back, [2, rows, w / 2, 2 * c]), [1, 0, 2, 3]);
    op.dispose(back);
    return { ...dx, shape: [n, h, w, c] };
  };
}

// Functions this module installed, so a second call recognises its own work.
const ours = new WeakSet<object>();

function install(kernelName: string, make: (original: KernelFn | undefined) => (args: Args) => Info): void {
  const existing = tf.getKernel(kernelName, 'wasm');
  if (existing && ours.has(existing.kernelFunc)) return;
  const kernelFunc = make(existing?.kernelFunc as unknown as KernelFn | undefined) as unknown as tf.KernelFunc;
  ours.add(kernelFunc);
  if (existing) tf.unregisterKernel(kernelName, 'wasm');
  // Keeping the original's setupFunc binds its wasm entry point, which the wrapper still calls.
  tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc, setupFunc: existing?.setupFunc, disposeFunc: existing?.disposeFunc });
}

/**
 * Registers for 'wasm' the kernels that training our students needs and wasm 4.22 lacks
 * (Conv2DBackpropFilter), and faster versions of three it has (BatchMatMul with transposes,
 * Conv2DBackpropInput, MaxPoolGrad). Call after importing '@tensorflow/tfjs-backend-wasm' and before tf.setBackend.
 * Idempotent.
 */
export function registerWasmKernels(): void {
  // A future wasm release that ships its own Conv2DBackpropFilter keeps it.
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) install('Conv2DBackpropFilter', () => conv2dBackpropFilter);
  install('BatchMatMul', (original) => {
    if (!original) throw new Error('registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm BatchMatMul registered)');
    return batchMatMulVia(original);
  });
  install('Conv2DBackpropInput', (original) => {
    if (!original) throw new Error('registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm Conv2DBackpropInput registered)');
    return conv2dBackpropInputVia(original);
  });
  install('MaxPoolGrad', (original) => {
    if (!original) throw new Error('registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm MaxPoolGrad registered)');
    return maxPoolGradVia(original);
  });
}
