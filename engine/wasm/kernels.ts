import * as tf from '@tensorflow/tfjs';
import { ADAM_STEP, CONV_RELU_POOL, CONV_RELU_POOL_GRAD, POOL_RELU_BIAS_GRAD, RELU_BIAS_GRAD, convReluPoolFits, type AdamStepAttrs } from '../kernel-names.ts';
import { convGeometry, type ConvGeometry } from '../geometry.ts';
import { TILE_ROWS, TILE_VECTORS, fusedKernels, type FusedKernels } from './fused.ts';

/**
 * Kernels for the 'wasm' backend. tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter at all, so
 * training any CNN on it fails; and many kernels a training step leans on are plain loops or
 * copies there: BatchMatMul with a transposed operand, Conv2DBackpropInput, MaxPoolGrad, a Sum
 * over rows, a broadcast Add of a bias, GatherV2 (3 ms for a batch of 128 images), Slice (which
 * first copies its whole input), Identity and same-type Cast (which copy). The replacements run
 * the SIMD kernels of engine/wasm/fused.ts on the backend's heap, or compose wasm's own XNNPACK
 * kernels; they work on TensorInfos directly, so nothing reaches the engine's bookkeeping.
 * Anything outside the cases handled goes to wasm's own kernel. Also registered: the fused
 * kernels of engine/kernel-names.ts. Each is checked against the
 * cpu backend in test/wasm-kernels.test.ts.
 */

type Info = tf.TensorInfo;
type Attrs = Record<string, unknown>;
interface Args {
  inputs: Record<string, Info>;
  backend: unknown;
  attrs: Attrs;
}
interface WasmBackend {
  wasm: { asm?: { memory?: WebAssembly.Memory }; _malloc(bytes: number): number; _free(ptr: number): void };
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Float32Array | Int32Array | Uint8Array;
  getMemoryOffset(dataId: object): number;
  incRef(dataId: object): void;
  refCount(dataId: object): number;
  disposeData(dataId: object): boolean;
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
    dispose: (...xs: Info[]) => {
      for (const x of xs) (backend as WasmBackend).disposeData(x.dataId);
    },
  };
}

/** The backend's heap, its SIMD kernels, and byte addresses of tensors on it. */
function heapOf(backend: unknown) {
  const b = backend as WasmBackend;
  const memory = b.wasm.asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) throw new Error('wasm backend: cannot find its WebAssembly memory (wasm.asm.memory)');
  return {
    k: fusedKernels(memory),
    memory,
    ptr: (t: Info) => b.getMemoryOffset(t.dataId),
    out: (shape: number[]) => b.makeOutput(shape, 'float32'),
    /** Scratch bytes on the heap, for the duration of `use`. */
    scratch<T>(bytes: number, use: (ptr: number) => T): T {
      const ptr = b.wasm._malloc(bytes);
      try {
        return use(ptr);
      } finally {
        b.wasm._free(ptr);
      }
    },
    /** A Float32Array view, made after any allocation (which may grow the heap). */
    floats: (ptr: number, count: number) => new Float32Array(memory.buffer, ptr, count),
  };
}
type Heap = ReturnType<typeof heapOf>;

/**
 * Rows of x along axis 0 (a batch from a dataset), copied row by row on the heap. wasm's own
 * GatherV2 runs a strided loop per element: 3 ms for 128 MNIST images.
 */
function gatherVia(original: KernelFn) {
  return (args: Args): Info => {
    const { x, indices } = args.inputs;
    const axis = tf.util.parseAxisParam(args.attrs.axis as number, x.shape)[0];
    if (axis !== 0 || (args.attrs.batchDims as number | undefined) || x.dtype === 'string' || x.shape.length === 0) return original(args);
    const b = args.backend as WasmBackend;
    const rows = x.shape[0];
    const row = tf.util.sizeFromShape(x.shape.slice(1));
    if (row < 8) return original(args); // short rows: wasm's loop beats a call per row
    const idx = b.typedArrayFromHeap(indices);
    for (const i of idx) {
      if (!(i >= 0 && i < rows)) throw new Error(`GatherV2: the index value ${i} is not in [0, ${rows - 1}]`);
    }
    const out = b.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    // Views made after makeOutput, which may grow the heap.
    const src = b.typedArrayFromHeap(x);
    const dst = b.typedArrayFromHeap(out);
    const at = b.typedArrayFromHeap(indices);
    for (let r = 0; r < at.length; r++) dst.set(src.subarray(at[r] * row, (at[r] + 1) * row), r * row);
    return out;
  };
}

/** A contiguous slice, read through a view of the heap: wasm's Slice first copies all of x out. */
function sliceVia(original: KernelFn) {
  return (args: Args): Info => {
    const { x } = args.inputs;
    if (x.dtype === 'string') return original(args);
    const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, args.attrs.begin as number[], args.attrs.size as number[]);
    if (!tf.slice_util.isSliceContinous(x.shape, begin, size)) return original(args);
    const b = args.backend as WasmBackend;
    const start = tf.slice_util.computeFlatOffset(begin, tf.util.computeStrides(x.shape));
    const out = b.makeOutput(size, x.dtype);
    b.typedArrayFromHeap(out).set(b.typedArrayFromHeap(x).subarray(start, start + tf.util.sizeFromShape(size)));
    return out;
  };
}

/** A tensor sharing x's storage (what the cpu backend does for Identity; wasm copies). */
function share(backend: unknown, x: Info): Info {
  (backend as WasmBackend).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

const pair = (v: unknown): [number, number] => (typeof v === 'number' ? [v, v] : (v as [number, number]));

/**
 * C[M, N4] (+)= A^T·B for A [K, M] (rows `lda` floats apart), B [K, N4] (rows `ldb` apart),
 * C rows `ldc` apart; N4 a multiple of 4; `acc` 0 overwrites C. B is read in whole 4-float
 * vectors, so up to 3 floats past its last row: callers check that these lie inside the heap.
 */
function gemmTN(k: FusedKernels, a: number, lda: number, b: number, ldb: number, c: number, ldc: number, m: number, n4: number, rows: number, acc: 0 | 1): void {
  k.gemmTN(a, lda, b, ldb, c, ldc, m, n4, rows, acc);
}

/**
 * C[rows, N4] = relu?(A·B + bias), see gemm_nn: bands of 8 columns (then 4), rows in tiles of
 * 4 — 3 for short products (kLen < 32: a first convolution's 9 taps), measured faster there —
 * then the remainder.
 */
function gemmNN(k: FusedKernels, a: number, lda: number, b: number, ldb: number, c: number, ldc: number, rows: number, n4: number, kLen: number, bias: number, relu: 0 | 1): void {
  const mr = kLen < 32 ? TILE_ROWS - 1 : TILE_ROWS;
  const whole = rows - (rows % mr);
  for (let n0 = 0; n0 < n4; n0 += 4 * TILE_VECTORS) {
    const nv = Math.min(TILE_VECTORS, (n4 - n0) / 4);
    if (whole > 0) k.gemmNN(mr, nv)(a, lda, b + 4 * n0, ldb, c + 4 * n0, ldc, kLen, bias + 4 * n0, relu, whole);
    if (rows > whole) k.gemmNN(rows - whole, nv)(a + 4 * whole * lda, lda, b + 4 * n0, ldb, c + 4 * (whole * ldc + n0), ldc, kLen, bias + 4 * n0, relu, rows - whole);
  }
}

const roundUp4 = (n: number) => Math.ceil(n / 4) * 4;

/** Copies C [rows, ldc] to out [rows, cols] when the two differ in row length. */
function copyRows(h: Heap, c: number, ldc: number, out: Info, rows: number, cols: number): void {
  const src = h.floats(c, rows * ldc);
  const dst = h.floats(h.ptr(out), rows * cols);
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * ldc, r * ldc + cols), r * cols);
}

/** Whether reading up to 16 bytes past `end` stays inside the heap. */
const slackAfter = (h: Heap, end: number) => end + 16 <= h.memory.buffer.byteLength;

/**
 * dW[kh,kw,ci,co] = Σ_{n,i,j} x[n, i·s + kh − padTop, j·s + kw − padLeft, ci] · dy[n,i,j,co]:
 * with the patch matrix X [P, kh·kw·ci] (P = n·Ho·Wo output pixels), dW = Xᵀ·dy. x is padded
 * once, so a patch row is kh contiguous runs of kw·ci floats; X is built a block of rows at a
 * time into a small scratch (so it and dy's rows stay in cache) and each block's product is
 * added into dW by the A^T·B register tiles.
 */
function conv2dBackpropFilter({ inputs, backend, attrs }: Args): Info {
  const { x, dy } = inputs;
  const filterShape = attrs.filterShape as [number, number, number, number];
  if (attrs.dataFormat === 'NCHW') throw new Error('Conv2DBackpropFilter on wasm supports NHWC only');
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') throw new Error('Conv2DBackpropFilter on wasm supports float32 only');
  const { n, h, w, ci, kh, kw, co, ho, wo, sh, sw, top, left, hp, wp } = convGeometry(x.shape, filterShape, attrs);
  const m = kh * kw * ci;
  const n4 = roundUp4(co);
  const pixels = n * ho * wo;
  const heap = heapOf(backend);
  const out = heap.out(filterShape);
  if (pixels === 0) {
    heap.floats(heap.ptr(out), m * co).fill(0);
    return out;
  }
  // About 32 KB of patches per block: with dy's rows, well inside L2.
  const block = Math.max(16, Math.floor(8192 / m));
  const direct = n4 === co; // dW's rows are whole vectors: accumulate straight into the output
  const padded = 4 * n * hp * wp * ci + 16;
  const patchBytes = 4 * block * m + 16;
  // dy's rows are read as whole vectors: past its end when co is not a multiple of 4. In the
  // (never seen) case where that would leave the heap, a copy with padded rows is read instead.
  const copyDy = !slackAfter(heap, heap.ptr(dy) + 4 * pixels * co);
  const dyCopy = copyDy ? 4 * pixels * n4 : 0;
  heap.scratch(padded + patchBytes + (direct ? 0 : 4 * m * n4) + dyCopy, (xp) => {
    const patches = xp + padded;
    const c = direct ? heap.ptr(out) : patches + patchBytes;
    const dyp = copyDy ? patches + patchBytes + (direct ? 0 : 4 * m * n4) : heap.ptr(dy);
    const ldb = copyDy ? n4 : co;
    if (copyDy) {
      const src = heap.floats(heap.ptr(dy), pixels * co);
      const dst = heap.floats(dyp, pixels * n4).fill(0);
      for (let p = 0; p < pixels; p++) dst.set(src.subarray(p * co, (p + 1) * co), p * n4);
    }
    heap.k.padImages(heap.ptr(x), xp, n, h, w, ci, hp, wp, top, left);
    for (let p0 = 0; p0 < pixels; p0 += block) {
      const rows = Math.min(block, pixels - p0);
      heap.k.patches(xp, patches, p0, rows, hp, wp, ci, ho, wo, kh, kw, sh, sw);
      gemmTN(heap.k, patches, m, dyp + 4 * p0 * ldb, ldb, c, n4, m, n4, rows, p0 === 0 ? 0 : 1);
    }
    if (!direct) copyRows(heap, c, n4, out, m, co);
  });
  return out;
}

/** Images per block of the conv-ReLU-pool kernels: patches and activations of about 256 KB, in L2. */
const imagesPerBlock = (g: ConvGeometry) => Math.max(1, Math.floor(65536 / (g.ho * g.wo * (g.kh * g.kw * g.ci + g.co))));

/**
 * A convolution with bias and ReLU followed by 2×2 max pooling, a few images at a time so the
 * full-size activation never leaves the cache: patches, their product with the filter (bias and
 * ReLU in the register tiles), then the pooling, which also records each window's first maximum.
 * Outputs [pooled, argmax (int32, row-major cell 0..3)]: the backward pass needs nothing else.
 */
function convReluPool({ inputs, backend, attrs }: Args): Info[] {
  const { x, filter, bias } = inputs;
  const g = convGeometry(x.shape, filter.shape, attrs);
  if ([x, filter, bias].some((t) => t.dtype !== 'float32') || !convReluPoolFits('wasm', g.ho, g.wo, g.co)) throw new Error(`${CONV_RELU_POOL}: unsupported shapes`);
  const heap = heapOf(backend);
  const pooledShape = [g.n, g.ho / 2, g.wo / 2, g.co];
  const pooled = heap.out(pooledShape);
  const argmax = (backend as WasmBackend).makeOutput(pooledShape, 'int32');
  const k = g.kh * g.kw * g.ci;
  const block = imagesPerBlock(g);
  const pixels = g.ho * g.wo;
  const padded = 4 * g.n * g.hp * g.wp * g.ci + 16;
  const patchBytes = 4 * block * pixels * k + 16;
  heap.scratch(padded + patchBytes + 4 * block * pixels * g.co, (xp) => {
    const patches = xp + padded;
    const y = patches + patchBytes;
    heap.k.padImages(heap.ptr(x), xp, g.n, g.h, g.w, g.ci, g.hp, g.wp, g.top, g.left);
    const pooledBlock = 4 * (pixels / 4) * g.co;
    for (let b0 = 0; b0 < g.n; b0 += block) {
      const images = Math.min(block, g.n - b0);
      const rows = images * pixels;
      heap.k.patches(xp, patches, b0 * pixels, rows, g.hp, g.wp, g.ci, g.ho, g.wo, g.kh, g.kw, g.sh, g.sw);
      gemmNN(heap.k, patches, k, heap.ptr(filter), g.co, y, g.co, rows, g.co, k, heap.ptr(bias), 1);
      heap.k.maxPoolArgmax(y, heap.ptr(pooled) + b0 * pooledBlock, heap.ptr(argmax) + b0 * pooledBlock, images * (g.ho / 2), g.wo / 2, g.co);
    }
  });
  return [pooled, argmax];
}

/**
 * The backward pass of CONV_RELU_POOL for the network's first layer (no input gradient):
 * inputs {x, dy (at the pooled output), pooled, argmax}, attrs as the forward's plus
 * filterShape; outputs [dfilter, dbias]. Per block of images, the gradient before the ReLU is
 * rebuilt from dy and the argmax into a scratch, the patches are rebuilt, and their product is
 * added into dfilter.
 */
function convReluPoolGrad({ inputs, backend, attrs }: Args): Info[] {
  const { x, dy, pooled, argmax } = inputs;
  const filterShape = attrs.filterShape as number[];
  const g = convGeometry(x.shape, filterShape, attrs);
  if (!convReluPoolFits('wasm', g.ho, g.wo, g.co)) throw new Error(`${CONV_RELU_POOL_GRAD}: unsupported shapes`);
  const heap = heapOf(backend);
  const dw = heap.out(filterShape);
  const db = heap.out([g.co]);
  const k = g.kh * g.kw * g.ci;
  const block = imagesPerBlock(g);
  const pixels = g.ho * g.wo;
  const padded = 4 * g.n * g.hp * g.wp * g.ci + 16;
  const patchBytes = 4 * block * pixels * k + 16;
  heap.floats(heap.ptr(db), g.co).fill(0);
  heap.scratch(padded + patchBytes + 4 * block * pixels * g.co + 4 * g.co, (xp) => {
    const patches = xp + padded;
    const dpre = patches + patchBytes;
    const partial = dpre + 4 * block * pixels * g.co;
    heap.k.padImages(heap.ptr(x), xp, g.n, g.h, g.w, g.ci, g.hp, g.wp, g.top, g.left);
    const pooledBlock = 4 * (pixels / 4) * g.co;
    for (let b0 = 0; b0 < g.n; b0 += block) {
      const images = Math.min(block, g.n - b0);
      const rows = images * pixels;
      heap.floats(partial, g.co).fill(0);
      const off = b0 * pooledBlock;
      heap.k.unpoolReluGrad(heap.ptr(dy) + off, heap.ptr(pooled) + off, heap.ptr(argmax) + off, dpre, images * (g.ho / 2), g.wo / 2, g.co, partial);
      heap.k.columnSums(partial, heap.ptr(db), 1, g.co);
      heap.k.patches(xp, patches, b0 * pixels, rows, g.hp, g.wp, g.ci, g.ho, g.wo, g.kh, g.kw, g.sh, g.sw);
      gemmTN(heap.k, patches, k, dpre, g.co, heap.ptr(dw), g.co, k, g.co, rows, b0 === 0 ? 0 : 1);
    }
  });
  return [dw, db];
}

/**
 * dx of a convolution as the adjoint of the patch matrix: the patch gradient dy·Wᵀ
 * ([P, kh·kw·ci], on the gemm_nn tiles) is added back window by window (add_patches) into a
 * padded dx, a block of rows at a time, then cropped.
 */
function conv2dBackpropInputByPatches(args: Args): Info {
  const { inputs, backend, attrs } = args;
  const { dy, filter } = inputs;
  const g = convGeometry(attrs.inputShape as number[], filter.shape, attrs);
  const k = g.kh * g.kw * g.ci;
  const k4 = roundUp4(k);
  const heap = heapOf(backend);
  const dx = heap.out([g.n, g.h, g.w, g.ci]);
  const pixels = g.n * g.ho * g.wo;
  const block = Math.max(16, Math.floor(16384 / k4));
  const paddedLen = g.n * g.hp * g.wp * g.ci;
  // Wᵀ [co, k4] (zero columns past k) and a zero bias.
  const wt = 4 * paddedLen;
  const zeros = wt + 4 * g.co * k4;
  const cols = zeros + 4 * k4;
  heap.scratch(cols + 4 * block * k4, (xp) => {
    heap.floats(xp, paddedLen).fill(0);
    const w = heap.floats(heap.ptr(filter), k * g.co);
    const t = heap.floats(xp + wt, g.co * k4 + k4).fill(0);
    for (let i = 0; i < k; i++) for (let o = 0; o < g.co; o++) t[o * k4 + i] = w[i * g.co + o];
    for (let p0 = 0; p0 < pixels; p0 += block) {
      const rows = Math.min(block, pixels - p0);
      gemmNN(heap.k, heap.ptr(dy) + 4 * p0 * g.co, g.co, xp + wt, k4, xp + cols, k4, rows, k4, g.co, xp + zeros, 0);
      heap.k.addPatches(xp, xp + cols, k4, p0, rows, g.hp, g.wp, g.ci, g.ho, g.wo, g.kh, g.kw, g.sh, g.sw);
    }
    heap.k.cropImages(xp, heap.ptr(dx), g.n, g.h, g.w, g.ci, g.hp, g.wp, g.top, g.left);
  });
  return dx;
}

/**
 * dx of a convolution, replacing wasm's own kernel (a plain loop several times slower than
 * XNNPACK's convolutions). Measured on our students' shapes, the patch-matrix adjoint above
 * wins for strides > 1 (2.0 vs 2.3 ms for cnn-small's second convolution), few input channels
 * (lenet5's 6: 2.6 vs 5.5 ms) and widening layers (32 → 64: 26.6 vs 30.6 ms); otherwise one
 * XNNPACK convolution of dy with the filter flipped and its channels swapped, padded so the
 * windows line up (16 → 16: 16.0 vs 19.4 ms).
 */
function conv2dBackpropInputVia(original: KernelFn) {
  return (args: Args): Info => {
    const { inputs, backend, attrs } = args;
    const { dy, filter } = inputs;
    if (attrs.dataFormat === 'NCHW' || dy.dtype !== 'float32' || filter.dtype !== 'float32') return original(args);
    const g = convGeometry(attrs.inputShape as number[], filter.shape, attrs);
    const { kh, kw, ci, co } = g;
    // dx[i] gathers dy[i + top − t] over taps t: dy padded by k − 1 − top before, the rest after.
    const before = [kh - 1 - g.top, kw - 1 - g.left];
    const after = [g.h - g.ho + kh - 1 - before[0], g.w - g.wo + kw - 1 - before[1]];
    const patches = g.sh > 1 || g.sw > 1 || ci < 16 || co >= 2 * ci || [...before, ...after].some((p) => p < 0);
    if (patches) return conv2dBackpropInputByPatches(args);
    const heap = backend as WasmBackend;
    const w = heap.typedArrayFromHeap(filter);
    const flipped = heap.makeOutput([kh, kw, co, ci], 'float32');
    const f = heap.typedArrayFromHeap(flipped);
    for (let y = 0; y < kh; y++) {
      for (let x = 0; x < kw; x++) {
        const src = (y * kw + x) * ci * co;
        const dst = ((kh - 1 - y) * kw + (kw - 1 - x)) * co * ci;
        for (let i = 0; i < ci; i++) for (let o = 0; o < co; o++) f[dst + o * ci + i] = w[src + i * co + o];
      }
    }
    const op = wasmOps(backend);
    const dx = op.conv2d(dy, flipped, { strides: [1, 1], pad: [[0, 0], [before[0], after[0]], [before[1], after[1]], [0, 0]], dilations: [1, 1] });
    op.dispose(flipped);
    return dx;
  };
}

/**
 * Products on our register tiles where they apply (batch 1, float32, no PReLU): Aᵀ·B — a dense
 * layer's weight gradient — on gemm_tn, with no transposes; A·B (forward, with the bias and
 * ReLU of _FusedMatMul) and A·Bᵀ (the input gradient; B, a weight matrix, transposed first) on
 * gemm_nn, for column counts that are whole vectors. They beat XNNPACK here, which also
 * repacks the weights on every call because they change every step. Anything else: transposes,
 * then wasm's own kernel.
 */
function matMulVia(original: KernelFn) {
  return (args: Args): Info => {
    const { inputs, backend, attrs } = args;
    const { a, b, bias } = inputs;
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    const activation = (attrs.activation as string | undefined) ?? 'linear';
    const batch = a.shape.slice(0, -2).reduce((p, d) => p * d, 1) * b.shape.slice(0, -2).reduce((p, d) => p * d, 1);
    const plain = batch === 1 && a.dtype === 'float32' && b.dtype === 'float32' && !inputs.preluActivationWeights && (activation === 'linear' || activation === 'relu');
    const fallback = () => (transposeA || transposeB ? viaTransposes(original, args) : original(args));
    if (!plain || (transposeA && transposeB)) return fallback();
    const heap = heapOf(backend);
    const lead = a.shape.slice(0, -2).map(() => 1);
    if (transposeA) {
      if (bias || activation !== 'linear') return fallback();
      const [k, m] = a.shape.slice(-2);
      const nCols = b.shape[b.shape.length - 1];
      const out = heap.out([...lead, m, nCols]);
      const n4 = roundUp4(nCols);
      const direct = n4 === nCols;
      const bp = heap.ptr(b);
      if (!slackAfter(heap, bp + 4 * k * nCols)) return fallback();
      if (k === 0) {
        heap.floats(heap.ptr(out), m * nCols).fill(0);
        return out;
      }
      heap.scratch(direct ? 0 : 4 * m * n4, (scratch) => {
        gemmTN(heap.k, heap.ptr(a), m, bp, nCols, direct ? heap.ptr(out) : scratch, n4, m, n4, k, 0);
        if (!direct) copyRows(heap, scratch, n4, out, m, nCols);
      });
      return out;
    }
    const [m, k] = a.shape.slice(-2);
    const nCols = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
    if (nCols % 4 !== 0 || k === 0 || (bias && tf.util.sizeFromShape(bias.shape) !== nCols) || (bias && bias.dtype !== 'float32')) return fallback();
    const op = wasmOps(backend);
    const bt = transposeB ? op.transpose(b, [...lead.map((_, i) => i), lead.length + 1, lead.length]) : b;
    const out = heap.out([...lead, m, nCols]);
    heap.scratch(bias ? 0 : 4 * nCols, (zeros) => {
      if (!bias) heap.floats(zeros, nCols).fill(0);
      gemmNN(heap.k, heap.ptr(a), k, heap.ptr(bt), nCols, heap.ptr(out), nCols, m, nCols, k, bias ? heap.ptr(bias) : zeros, activation === 'relu' ? 1 : 0);
    });
    if (transposeB) op.dispose(bt);
    return out;
  };
}

/** Transposes the operands that need it, then wasm's fast path. */
function viaTransposes(original: KernelFn, { inputs, backend, attrs }: Args): Info {
  const { a, b } = inputs;
  const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
  const op = wasmOps(backend);
  const swapLast = (t: Info) => {
    const r = t.shape.length;
    return op.transpose(t, [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2]);
  };
  const at = transposeA ? swapLast(a) : a;
  const bt = transposeB ? swapLast(b) : b;
  const out = original({ inputs: { ...inputs, a: at, b: bt }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
  if (transposeA) op.dispose(at);
  if (transposeB) op.dispose(bt);
  return out;
}

interface PoolShape {
  n: number;
  h: number;
  w: number;
  c: number;
  info: tf.backend_util.Conv2DInfo;
  /** 2×2 windows at stride 2 tiling the input exactly, channels a multiple of 4: the unrolled kernels. */
  twoByTwo: boolean;
  /** Windows that cover the input exactly once. */
  tiled: boolean;
}

function poolShape(input: Info, attrs: Attrs): PoolShape | undefined {
  if (input.dtype !== 'float32' || input.shape.length !== 4) return undefined;
  if (attrs.dilations !== undefined && pair(attrs.dilations).some((d) => d !== 1)) return undefined;
  const [n, h, w, c] = input.shape;
  const info = tf.backend_util.computePool2DInfo(
    input.shape as [number, number, number, number], pair(attrs.filterSize), pair(attrs.strides), 1,
    attrs.pad as 'same' | 'valid' | number, attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
  );
  const { outHeight: ho, outWidth: wo, filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const tiled = fh === sh && fw === sw && padInfo.top === 0 && padInfo.left === 0 && h === ho * fh && w === wo * fw;
  return { n, h, w, c, info, tiled, twoByTwo: tiled && fh === 2 && fw === 2 && c % 4 === 0 };
}

/** 2×2 max pooling (the students' only pooling) by the unrolled SIMD kernel; others by XNNPACK. */
function maxPoolVia(original: KernelFn) {
  return (args: Args): Info => {
    const { x } = args.inputs;
    const s = poolShape(x, args.attrs);
    if (!s?.twoByTwo) return original(args);
    const heap = heapOf(args.backend);
    const out = heap.out([s.n, s.info.outHeight, s.info.outWidth, s.c]);
    heap.k.maxPool2x2(heap.ptr(x), heap.ptr(out), s.n * s.info.outHeight, s.info.outWidth, s.c);
    return out;
  };
}

/**
 * Max-pool gradient for any window, stride and padding (NHWC, float32): one pass of a SIMD
 * kernel, which gives each window's dy to its first cell equal to the forward maximum.
 */
function maxPoolGradVia(original: KernelFn) {
  return (args: Args): Info => {
    const { inputs, backend, attrs } = args;
    const { dy, input, output } = inputs;
    const s = poolShape(input, attrs);
    if (!s) return original(args);
    const heap = heapOf(backend);
    const dx = heap.out(input.shape);
    const { outHeight: ho, outWidth: wo, filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, padInfo } = s.info;
    if (s.twoByTwo) {
      heap.k.maxPoolGrad2x2(heap.ptr(input), heap.ptr(output), heap.ptr(dy), heap.ptr(dx), s.n * ho, wo, s.c, 0);
    } else {
      heap.k.maxPoolGrad(
        heap.ptr(input), heap.ptr(output), heap.ptr(dy), heap.ptr(dx), s.n, s.h, s.w, s.c, ho, wo,
        fh, fw, sh, sw, padInfo.top, padInfo.left, s.tiled ? 1 : 0,
      );
    }
    return dx;
  };
}

/** Rows summed per partial sum: the float32 rounding error grows with the count added in a row. */
const SUM_BLOCK = 256;

/** Adds column sums of `rows` rows into `sums`, SUM_BLOCK rows per float32 partial sum. */
function blockedSums(heap: Heap, cols: number, rows: number, sums: number, addBlock: (r0: number, count: number, partial: number) => void): void {
  heap.floats(sums, cols).fill(0);
  heap.scratch(4 * cols, (partial) => {
    for (let r0 = 0; r0 < rows; r0 += SUM_BLOCK) {
      heap.floats(partial, cols).fill(0);
      addBlock(r0, Math.min(SUM_BLOCK, rows - r0), partial);
      heap.k.columnSums(partial, sums, 1, cols);
    }
  });
}

/**
 * Backward pass of a ReLU layer with a bias, in one read of dy: the gradient before the ReLU
 * (dy where the layer's output y is not 0) and the bias gradient (its sum over all but the
 * last axis). Outputs [dpre, dbias].
 */
function reluBiasGrad({ inputs, backend }: Args): Info[] {
  const { dy, y } = inputs;
  if (dy.dtype !== 'float32' || y.dtype !== 'float32' || !tf.util.arraysEqual(dy.shape, y.shape)) throw new Error(`${RELU_BIAS_GRAD}: dy and y must be float32 of one shape`);
  const cols = dy.shape[dy.shape.length - 1];
  const rows = tf.util.sizeFromShape(dy.shape) / cols;
  const heap = heapOf(backend);
  const dpre = heap.out(dy.shape);
  const db = heap.out([cols]);
  const [dyp, yp, dp] = [heap.ptr(dy), heap.ptr(y), heap.ptr(dpre)];
  blockedSums(heap, cols, rows, heap.ptr(db), (r0, count, partial) =>
    heap.k.reluGradSums(dyp + 4 * r0 * cols, yp + 4 * r0 * cols, dp + 4 * r0 * cols, partial, count, cols));
  return [dpre, db];
}

/**
 * Backward pass of a ReLU layer with a bias followed by 2×2 max pooling (which must tile the
 * input, channels a multiple of 4): the pooling gradient, the ReLU's and the bias gradient in
 * one pass. Inputs as MaxPoolGrad's (input = the ReLU's output); outputs [dpre, dbias].
 */
function poolReluBiasGrad({ inputs, backend, attrs }: Args): Info[] {
  const { dy, input, output } = inputs;
  const s = poolShape(input, attrs);
  if (!s?.twoByTwo) throw new Error(`${POOL_RELU_BIAS_GRAD}: only 2×2 pooling that tiles the input, channels a multiple of 4`);
  const heap = heapOf(backend);
  const dpre = heap.out(input.shape);
  const db = heap.out([s.c]);
  const wo = s.info.outWidth;
  const pooledRow = wo * s.c;
  const [xp, mp, dyp, dp] = [heap.ptr(input), heap.ptr(output), heap.ptr(dy), heap.ptr(dpre)];
  // A block of output rows holds wo windows per channel: blocks of SUM_BLOCK windows.
  const rowsPerBlock = Math.max(1, Math.floor(SUM_BLOCK / wo));
  const rows = s.n * s.info.outHeight;
  heap.floats(heap.ptr(db), s.c).fill(0);
  heap.scratch(4 * s.c, (partial) => {
    for (let r0 = 0; r0 < rows; r0 += rowsPerBlock) {
      heap.floats(partial, s.c).fill(0);
      const count = Math.min(rowsPerBlock, rows - r0);
      heap.k.maxPoolGrad2x2(xp + 16 * r0 * pooledRow, mp + 4 * r0 * pooledRow, dyp + 4 * r0 * pooledRow, dp + 16 * r0 * pooledRow, count, wo, s.c, partial);
      heap.k.columnSums(partial, heap.ptr(db), 1, s.c);
    }
  });
  return [dpre, db];
}

/** x + bias with bias a vector along x's last axis (a layer's bias): one pass, no broadcasting loop. */
function addVia(original: KernelFn) {
  return (args: Args): Info => {
    const { a, b } = args.inputs;
    const isBias = (v: Info, x: Info) => {
      const cols = x.shape[x.shape.length - 1];
      return v.shape.length >= 1 && v.shape.length <= x.shape.length && v.shape[v.shape.length - 1] === cols &&
        tf.util.sizeFromShape(v.shape) === cols && x.shape.length >= 2;
    };
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return original(args);
    const pairing = isBias(b, a) ? [a, b] : isBias(a, b) ? [b, a] : undefined;
    if (!pairing || tf.util.sizeFromShape(pairing[0].shape) === tf.util.sizeFromShape(pairing[1].shape)) return original(args);
    const [x, bias] = pairing;
    const cols = x.shape[x.shape.length - 1];
    const heap = heapOf(args.backend);
    const out = heap.out(x.shape);
    heap.k.biasAdd(heap.ptr(x), heap.ptr(bias), heap.ptr(out), tf.util.sizeFromShape(x.shape) / cols, cols);
    return out;
  };
}

/** Sum over every axis but the last (a bias gradient): SIMD column sums in blocks of rows. */
function sumVia(original: KernelFn) {
  return (args: Args): Info => {
    const { x } = args.inputs;
    const r = x.shape.length;
    const axes = tf.util.parseAxisParam(args.attrs.axis as number | number[], x.shape).sort((p, q) => p - q);
    const allButLast = r >= 2 && axes.length === r - 1 && axes.every((v, i) => v === i);
    if (!allButLast || x.dtype !== 'float32') return original(args);
    const cols = x.shape[r - 1];
    const rows = tf.util.sizeFromShape(x.shape) / cols;
    const heap = heapOf(args.backend);
    const out = heap.out(args.attrs.keepDims ? [...Array(r - 1).fill(1), cols] : [cols]);
    const xp = heap.ptr(x);
    blockedSums(heap, cols, rows, heap.ptr(out), (r0, count, partial) => heap.k.columnSums(xp + 4 * r0 * cols, partial, count, cols));
    return out;
  };
}

/**
 * One Adam step for one variable: returns the new weights (a new tensor: XNNPACK caches packed
 * weights by tensor id, so weights never change in place); the optimizer's private moments m
 * and v are updated in place.
 */
function adamStep({ inputs, backend, attrs }: Args): Info {
  const { w, g, m, v } = inputs;
  const size = tf.util.sizeFromShape(w.shape);
  for (const t of [w, g, m, v]) {
    if (t.dtype !== 'float32' || tf.util.sizeFromShape(t.shape) !== size) throw new Error(`${ADAM_STEP}: w, g, m and v must be float32 of one size`);
  }
  const b = backend as WasmBackend;
  if (b.refCount(m.dataId) !== 1 || b.refCount(v.dataId) !== 1) throw new Error(`${ADAM_STEP}: the moments are shared, so they cannot be updated in place`);
  const a = attrs as unknown as AdamStepAttrs;
  const f = Math.fround;
  const heap = heapOf(backend);
  const out = heap.out(w.shape);
  heap.k.adam(heap.ptr(w), heap.ptr(g), heap.ptr(m), heap.ptr(v), heap.ptr(out), size,
    a.beta1, f(1 - a.beta1), a.beta2, f(1 - a.beta2), a.c1, a.c2, a.epsilon, -a.learningRate);
  return out;
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
 * Registers for 'wasm' the kernel that training our students needs and wasm 4.22 lacks
 * (Conv2DBackpropFilter), and faster versions of ones it has (see the top of this file). Call
 * after importing '@tensorflow/tfjs-backend-wasm' and before tf.setBackend. Idempotent.
 */
export function registerWasmKernels(): void {
  // Identity copies on wasm, and the engine clones every tensor it saves for the backward pass.
  install('Identity', (original) => (args) => (args.inputs.x.dtype === 'string' ? original!(args) : share(args.backend, args.inputs.x)));
  install('Cast', (original) => (args) => (args.attrs.dtype === args.inputs.x.dtype && args.inputs.x.dtype !== 'string' ? share(args.backend, args.inputs.x) : original!(args)));
  install('Add', (original) => addVia(original!));
  install('GatherV2', (original) => gatherVia(original!));
  install('Slice', (original) => sliceVia(original!));
  install('Sum', (original) => sumVia(original!));
  install(ADAM_STEP, () => adamStep);
  install(RELU_BIAS_GRAD, () => reluBiasGrad as unknown as (args: Args) => Info);
  install(POOL_RELU_BIAS_GRAD, () => poolReluBiasGrad as unknown as (args: Args) => Info);
  install(CONV_RELU_POOL, () => convReluPool as unknown as (args: Args) => Info);
  install(CONV_RELU_POOL_GRAD, () => convReluPoolGrad as unknown as (args: Args) => Info);
  // A future wasm release that ships its own Conv2DBackpropFilter keeps it.
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) install('Conv2DBackpropFilter', () => conv2dBackpropFilter);
  for (const name of ['BatchMatMul', '_FusedMatMul']) {
    install(name, (original) => {
      if (!original) throw new Error(`registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm ${name} registered)`);
      return matMulVia(original);
    });
  }
  install('Conv2DBackpropInput', (original) => {
    if (!original) throw new Error('registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm Conv2DBackpropInput registered)');
    return conv2dBackpropInputVia(original);
  });
  install('MaxPool', (original) => {
    if (!original) throw new Error('registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm MaxPool registered)');
    return maxPoolVia(original);
  });
  install('MaxPoolGrad', (original) => {
    if (!original) throw new Error('registerWasmKernels: import @tensorflow/tfjs-backend-wasm first (no wasm MaxPoolGrad registered)');
    return maxPoolGradVia(original);
  });
}
