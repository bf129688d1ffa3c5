import type * as tf from '@tensorflow/tfjs';
import type { ConvGeometry } from '../geometry.ts';
import { dispatch, grid, type WebGPUBackend } from './program.ts';
import { sumChunks } from './reduce.ts';
import { WG, bindings, consts, perElement, pixelOf, type Access, type Scalar } from './wgsl.ts';

/**
 * Convolutions and their gradients. Each serves `models` stacked models at once: the batch holds
 * each model's images in turn (u.per images each), the weights each model's filter in turn, and a
 * model's numbers are computed exactly as they would be alone (the same loops, the same reduction
 * chunks), so training several students as one program changes nothing but the speed. A dense
 * layer is a 1 × 1 convolution of a 1 × 1 image.
 */

type Info = tf.TensorInfo;

/** The geometry a shader bakes in: everything of the convolution but the batch size. */
const shape = (g: ConvGeometry) => ({ H: g.h, W: g.w, CI: g.ci, KH: g.kh, KW: g.kw, CO: g.co, HO: g.ho, WO: g.wo, SH: g.sh, SW: g.sw, TOP: g.top, LEFT: g.left, WSIZE: g.kh * g.kw * g.ci * g.co });
const keyOf = (...parts: object[]) => parts.map((p) => Object.values(p).join(',')).join(';');

/** Σ over the taps of the filter of model `mdl` at output pixel (n, i, j), channel co, into `s`. */
const CONV_SUM = `
    for (var kh = 0; kh < KH; kh++) {
      let ih = i * SH + kh - TOP;
      if (ih < 0 || ih >= H) { continue; }
      for (var kw = 0; kw < KW; kw++) {
        let iw = j * SW + kw - LEFT;
        if (iw < 0 || iw >= W) { continue; }
        let xb = ((n * H + ih) * W + iw) * CI;
        let wb = mdl * WSIZE + (kh * KW + kw) * CI * CO + co;
        for (var ci = 0; ci < CI; ci++) { s += x[xb + ci] * w[wb + ci * CO]; }
      }
    }`;

/** act?(conv(x) + bias): one thread per output element. */
export function convForward(backend: WebGPUBackend, x: Info, filter: Info, bias: Info, g: ConvGeometry, models: number, relu: boolean, outShape: number[]): Info {
  const count = g.n * g.ho * g.wo * g.co;
  const c = shape(g);
  const wgsl = () => `
${bindings([['y', 'read_write'], ['x', 'read'], ['w', 'read'], ['bias', 'read']], [['count', 'i32'], ['per', 'i32']])}
${consts(c)}
${perElement(`
  let co = index % CO;
  let j = (index / CO) % WO;
  let i = (index / (CO * WO)) % HO;
  let n = index / (CO * WO * HO);
  let mdl = n / u.per;
  var s = 0.0;${CONV_SUM}
  s += bias[mdl * CO + co];
  ${relu ? 's = max(s, 0.0);' : ''}
  y[index] = s;`)}`;
  return dispatch(backend, { name: 'RhobenchConv', key: `${relu};${keyOf(c)}`, wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inputs: [x, filter, bias],
    outputs: [{ shape: outShape }],
    uniforms: [{ type: 'int32', data: [count] }, { type: 'int32', data: [g.n / models] }],
  })[0];
}

/**
 * relu(conv(x) + bias) pooled 2×2, and which cell of each window won (0..3, row-major; the first
 * of equal values, as tfjs's max pooling picks): one thread per pooled value, computing the four
 * convolution outputs under it. The convolution's output is never written.
 */
export function convReluPool(backend: WebGPUBackend, x: Info, filter: Info, bias: Info, g: ConvGeometry, models = 1): Info[] {
  const ph = g.ho / 2;
  const pw = g.wo / 2;
  const count = g.n * ph * pw * g.co;
  const c = { ...shape(g), PH: ph, PW: pw };
  const wgsl = () => `
${bindings([['pooled', 'read_write'], ['cell', 'read_write', 'i32'], ['x', 'read'], ['w', 'read'], ['bias', 'read']], [['count', 'i32'], ['per', 'i32']])}
${consts(c)}
${perElement(`
  let co = index % CO;
  let pj = (index / CO) % PW;
  let pi = (index / (CO * PW)) % PH;
  let n = index / (CO * PW * PH);
  let mdl = n / u.per;
  var best = -1.0;
  var bestCell = 0;
  for (var q = 0; q < 4; q++) {
    let i = 2 * pi + q / 2;
    let j = 2 * pj + q % 2;
    var s = 0.0;${CONV_SUM}
    let r = max(s + bias[mdl * CO + co], 0.0);
    if (r > best) { best = r; bestCell = q; }
  }
  pooled[index] = best;
  cell[index] = bestCell;`)}`;
  const out = [g.n, ph, pw, g.co];
  return dispatch(backend, { name: 'RhobenchConvReluPool', key: keyOf(c), wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inputs: [x, filter, bias],
    outputs: [{ shape: out }, { shape: out, dtype: 'int32' }],
    uniforms: [{ type: 'int32', data: [count] }, { type: 'int32', data: [g.n / models] }],
  });
}

/** Where the filter gradient's second operand comes from. */
export type FilterGradRows =
  /** dy at the convolution's output. */
  | { kind: 'dy'; dy: Info }
  /** dy at a ReLU's output y, through the ReLU: dy where y > 0. */
  | { kind: 'relu'; dy: Info; y: Info }
  /** dy at the 2×2-pooled ReLU output, routed back through convReluPool's cells and the ReLU. */
  | { kind: 'relu-pool'; dy: Info; pooled: Info; cell: Info };

const EXTRA_OPERANDS: Record<FilterGradRows['kind'], [string, Access, Scalar?][]> = {
  dy: [],
  relu: [['y', 'read']],
  'relu-pool': [['pooled', 'read'], ['cell', 'read', 'i32']],
};

const LOAD_ROW: Record<FilterGradRows['kind'], string> = {
  dy: 'v = dy[r * CO + c];',
  relu: 'if (y[r * CO + c] > 0.0) { v = dy[r * CO + c]; }',
  'relu-pool': `let pj = (r % WO) / 2; let pi = ((r / WO) % HO) / 2; let n = r / (WO * HO);
       let at = ((n * (HO / 2) + pi) * (WO / 2) + pj) * CO + c;
       let here = ((r / WO) % 2) * 2 + (r % WO) % 2;
       if (cell[at] == here && pooled[at] > 0.0) { v = dy[at]; }`,
};

// The reduction's tiles: 16 × 16 threads, each owning MK × MC outputs; TR rows staged at a time.
const TR = 32;
/** Workgroups the first pass aims for, per model: enough to fill a large GPU, few enough partial sums. */
const TARGET_GROUPS = 512;

/**
 * dW[k, co] = Σ_r P[r, k]·D[r, co] over the r = n·Ho·Wo output pixels of each model, P the
 * patches of x (and, with `withBias`, a column of ones whose row of dW is the bias gradient).
 * tfjs's own kernel gives each output one thread that loops over all n·Ho·Wo pixels, which leaves
 * a GPU nearly idle (95–99 % of a training step's GPU time on an H200). Here the pixels are split
 * into chunks: the first pass runs one workgroup per (output tile, chunk), staging TR rows of P
 * and D in workgroup memory; the second sums the chunks' partial results in a fixed order, so
 * results repeat exactly. Outputs: the filter gradient (and the bias gradient), in `shapes`.
 */
export function filterGrad(backend: WebGPUBackend, x: Info, rows: FilterGradRows, g: ConvGeometry, withBias: boolean, models: number, shapes: number[][]): Info[] {
  const kp = g.kh * g.kw * g.ci;
  const k = kp + (withBias ? 1 : 0);
  const mk = Math.min(4, Math.ceil(k / 16));
  const mc = Math.min(4, Math.ceil(g.co / 16));
  const tk = 16 * mk;
  const tc = 16 * mc;
  const tilesK = Math.ceil(k / tk);
  const tilesC = Math.ceil(g.co / tc);
  // Each model's rows are chunked as they would be alone.
  const m = (g.n / models) * g.ho * g.wo;
  const stages = Math.ceil(m / TR);
  const wanted = Math.min(stages, Math.max(1, Math.ceil(TARGET_GROUPS / (tilesK * tilesC))));
  const chunk = Math.ceil(stages / wanted) * TR;
  const chunks = Math.ceil(m / chunk);

  const c = { ...shape(g), K: k, KP: kp, TK: tk, TC: tc, MK: mk, MC: mc, TR, TILES_C: tilesC };
  const wgsl = () => `
${bindings([['partial', 'read_write'], ['x', 'read'], ['dy', 'read'], ...EXTRA_OPERANDS[rows.kind]], [['m', 'i32'], ['chunk', 'i32'], ['chunks', 'i32']])}
${consts(c)}
var<workgroup> a: array<f32, ${TR * tk}>;
var<workgroup> b: array<f32, ${TR * tc}>;

fn patchValue(r: i32, k: i32) -> f32 {
  if (k == KP) { return 1.0; }
  let j = r % WO;
  let i = (r / WO) % HO;
  let n = r / (WO * HO);
  let ci = k % CI;
  let kw = (k / CI) % KW;
  let kh = k / (CI * KW);
  let ih = i * SH + kh - TOP;
  let iw = j * SW + kw - LEFT;
  if (ih < 0 || ih >= H || iw < 0 || iw >= W) { return 0.0; }
  return x[((n * H + ih) * W + iw) * CI + ci];
}

fn grad(r: i32, c: i32) -> f32 {
  var v = 0.0;
  ${LOAD_ROW[rows.kind]}
  return v;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let t = i32(lid);
  let tile = i32(wid.x);
  let s = i32(wid.y);
  let k0 = (tile / TILES_C) * TK;
  let c0 = (tile % TILES_C) * TC;
  let tk = t / 16;
  let tc = t % 16;
  var acc: array<f32, ${mk * mc}>;
  // Chunk s is chunk s % chunks of model s / chunks.
  let first = (s / u.chunks) * u.m;
  let r0 = first + (s % u.chunks) * u.chunk;
  let r1 = min(r0 + u.chunk, first + u.m);
  for (var rb = r0; rb < r1; rb += TR) {
    for (var e = t; e < TR * TK; e += 256) {
      let r = rb + e / TK;
      let kk = k0 + e % TK;
      var v = 0.0;
      if (r < r1 && kk < K) { v = patchValue(r, kk); }
      a[e] = v;
    }
    for (var e = t; e < TR * TC; e += 256) {
      let r = rb + e / TC;
      let c = c0 + e % TC;
      var v = 0.0;
      if (r < r1 && c < CO) { v = grad(r, c); }
      b[e] = v;
    }
    workgroupBarrier();
    for (var rr = 0; rr < TR; rr++) {
      for (var i = 0; i < MK; i++) {
        let av = a[rr * TK + tk + 16 * i];
        for (var j = 0; j < MC; j++) { acc[i * MC + j] += av * b[rr * TC + tc + 16 * j]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0; i < MK; i++) {
    for (var j = 0; j < MC; j++) {
      let kk = k0 + tk + 16 * i;
      let c = c0 + tc + 16 * j;
      if (kk < K && c < CO) { partial[(s * K + kk) * CO + c] = acc[i * MC + j]; }
    }
  }
}`;
  const extra = rows.kind === 'relu' ? [rows.y] : rows.kind === 'relu-pool' ? [rows.pooled, rows.cell] : [];
  const [partial] = dispatch(backend, { name: 'RhobenchFilterGradChunks', key: `${rows.kind};${keyOf(c)}`, wgsl, workgroups: [tilesK * tilesC, models * chunks] }, {
    inputs: [x, rows.dy, ...extra],
    outputs: [{ shape: [models * chunks, k, g.co] }],
    uniforms: [{ type: 'int32', data: [m] }, { type: 'int32', data: [chunk] }, { type: 'int32', data: [chunks] }],
  });
  try {
    return sumChunks(backend, partial, chunks, shapes, models);
  } finally {
    backend.disposeData(partial.dataId);
  }
}

/**
 * dx[n,h,w,ci] = Σ_{kh,kw,co} dy[n, (h + top − kh)/sh, (w + left − kw)/sw, co]·W[kh,kw,ci,co]
 * over the taps whose division is exact and in range, dy taken through a ReLU when its output
 * `y` is given: one thread per element of dx.
 */
export function convBackpropInput(backend: WebGPUBackend, dy: Info, filter: Info, g: ConvGeometry, models = 1, y?: Info, outShape = [g.n, g.h, g.w, g.ci]): Info {
  const count = g.n * g.h * g.w * g.ci;
  const c = shape(g);
  const term = y ? 'select(0.0, dy[db + co], y[db + co] > 0.0) * w[wb + co]' : 'dy[db + co] * w[wb + co]';
  const wgsl = () => `
${bindings([['dx', 'read_write'], ['dy', 'read'], ['w', 'read'], ...(y ? ([['y', 'read']] as [string, Access][]) : [])], [['count', 'i32'], ['per', 'i32']])}
${consts(c)}
${perElement(`${pixelOf('CI')}
  let mdl = n / u.per;
  var s = 0.0;
  for (var kh = 0; kh < KH; kh++) {
    let a = ih + TOP - kh;
    if (a < 0 || a % SH != 0 || a / SH >= HO) { continue; }
    for (var kw = 0; kw < KW; kw++) {
      let b = iw + LEFT - kw;
      if (b < 0 || b % SW != 0 || b / SW >= WO) { continue; }
      let db = ((n * HO + a / SH) * WO + b / SW) * CO;
      let wb = mdl * WSIZE + ((kh * KW + kw) * CI + ch) * CO;
      for (var co = 0; co < CO; co++) { s += ${term}; }
    }
  }
  dx[index] = s;`)}`;
  return dispatch(backend, { name: 'RhobenchConv2DBackpropInput', key: `${Boolean(y)};${keyOf(c)}`, wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inputs: [dy, filter, ...(y ? [y] : [])],
    outputs: [{ shape: outShape }],
    uniforms: [{ type: 'int32', data: [count] }, { type: 'int32', data: [g.n / models] }],
  })[0];
}
