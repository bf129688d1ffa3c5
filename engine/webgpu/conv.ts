import type * as tf from '@tensorflow/tfjs';
import type { ConvGeometry } from '../geometry.ts';
import { dispatch, grid, type WebGPUBackend } from './program.ts';
import { sumChunks } from './reduce.ts';
import { WG, bindings, consts, perElement, pixelOf, type Access, type Scalar } from './wgsl.ts';

type Info = tf.TensorInfo;

/** The geometry a shader bakes in: everything of the convolution but the batch size. */
const shape = (g: ConvGeometry) => ({ H: g.h, W: g.w, CI: g.ci, KH: g.kh, KW: g.kw, CO: g.co, HO: g.ho, WO: g.wo, SH: g.sh, SW: g.sw, TOP: g.top, LEFT: g.left });
const keyOf = (...parts: object[]) => parts.map((p) => Object.values(p).join(',')).join(';');

/**
 * relu(conv(x) + bias) pooled 2×2, and which cell of each window won (0..3, row-major; the first
 * of equal values, as tfjs's max pooling picks): one thread per pooled value, computing the four
 * convolution outputs under it. The convolution's output is never written.
 */
export function convReluPool(backend: WebGPUBackend, x: Info, filter: Info, bias: Info, g: ConvGeometry): Info[] {
  const ph = g.ho / 2;
  const pw = g.wo / 2;
  const count = g.n * ph * pw * g.co;
  const c = { ...shape(g), PH: ph, PW: pw };
  const wgsl = () => `
${bindings([['pooled', 'read_write'], ['cell', 'read_write', 'i32'], ['x', 'read'], ['w', 'read'], ['bias', 'read']], [['count', 'i32']])}
${consts(c)}
${perElement(`
  let co = index % CO;
  let p = index / CO;
  let pj = p % PW;
  let pi = (p / PW) % PH;
  let n = p / (PW * PH);
  var best = -1.0;
  var bestCell = 0;
  for (var c = 0; c < 4; c++) {
    let i = 2 * pi + c / 2;
    let j = 2 * pj + c % 2;
    var s = 0.0;
    for (var kh = 0; kh < KH; kh++) {
      let ih = i * SH + kh - TOP;
      if (ih < 0 || ih >= H) { continue; }
      for (var kw = 0; kw < KW; kw++) {
        let iw = j * SW + kw - LEFT;
        if (iw < 0 || iw >= W) { continue; }
        let xb = ((n * H + ih) * W + iw) * CI;
        let wb = (kh * KW + kw) * CI * CO + co;
        for (var ci = 0; ci < CI; ci++) { s += x[xb + ci] * w[wb + ci * CO]; }
      }
    }
    let r = max(s + bias[co], 0.0);
    if (r > best) { best = r; bestCell = c; }
  }
  pooled[index] = best;
  cell[index] = bestCell;`)}`;
  const out = [g.n, ph, pw, g.co];
  return dispatch(backend, { name: 'RhobenchConvReluPool', key: keyOf(c), wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inputs: [x, filter, bias],
    outputs: [{ shape: out }, { shape: out, dtype: 'int32' }],
    uniforms: [{ type: 'int32', data: [count] }],
  });
}

/** Where the filter gradient's second operand comes from. */
export type FilterGradRows =
  /** dy at the convolution's output. */
  | { kind: 'dy'; dy: Info }
  /** dy at the 2×2-pooled ReLU output, routed back through convReluPool's cells and the ReLU. */
  | { kind: 'relu-pool'; dy: Info; pooled: Info; cell: Info };

const POOL_OPERANDS: [string, Access, Scalar?][] = [['pooled', 'read'], ['cell', 'read', 'i32']];

// The reduction's tiles: 16 × 16 threads, each owning MK × MC outputs; TR rows staged at a time.
const TR = 32;
/** Workgroups the first pass aims for: enough to fill a large GPU, few enough partial sums. */
const TARGET_GROUPS = 512;

/**
 * dW[k, co] = Σ_r P[r, k]·D[r, co] over the r = n·Ho·Wo output pixels, P the patches of x (and,
 * with `withBias`, a column of ones whose row of dW is the bias gradient). tfjs's own kernel
 * gives each output one thread that loops over all n·Ho·Wo pixels, which leaves a GPU nearly idle
 * (95–99 % of a training step's GPU time on an H200). Here the pixels are split into chunks: the
 * first pass runs one workgroup per (output tile, chunk), staging TR rows of P and D in workgroup
 * memory; the second sums the chunks' partial results in a fixed order, so results repeat exactly.
 */
export function filterGrad(backend: WebGPUBackend, x: Info, rows: FilterGradRows, g: ConvGeometry, withBias: boolean): Info[] {
  const kp = g.kh * g.kw * g.ci;
  const k = kp + (withBias ? 1 : 0);
  const mk = Math.min(4, Math.ceil(k / 16));
  const mc = Math.min(4, Math.ceil(g.co / 16));
  const tk = 16 * mk;
  const tc = 16 * mc;
  const tilesK = Math.ceil(k / tk);
  const tilesC = Math.ceil(g.co / tc);
  const m = g.n * g.ho * g.wo;
  const stages = Math.ceil(m / TR);
  const wanted = Math.min(stages, Math.max(1, Math.ceil(TARGET_GROUPS / (tilesK * tilesC))));
  const chunk = Math.ceil(stages / wanted) * TR;
  const chunks = Math.ceil(m / chunk);

  const fused = rows.kind === 'relu-pool';
  const c = { ...shape(g), K: k, KP: kp, TK: tk, TC: tc, MK: mk, MC: mc, TR, TILES_C: tilesC };
  const loadB = fused
    ? `let pj = (r % WO) / 2; let pi = ((r / WO) % HO) / 2; let n = r / (WO * HO);
       let at = ((n * (HO / 2) + pi) * (WO / 2) + pj) * CO + c;
       let here = ((r / WO) % 2) * 2 + (r % WO) % 2;
       if (cell[at] == here && pooled[at] > 0.0) { v = dy[at]; }`
    : `v = dy[r * CO + c];`;
  const wgsl = () => `
${bindings([['partial', 'read_write'], ['x', 'read'], ['dy', 'read'], ...(fused ? POOL_OPERANDS : [])], [['m', 'i32'], ['chunk', 'i32']])}
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
  ${loadB}
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
  let r0 = s * u.chunk;
  let r1 = min(r0 + u.chunk, u.m);
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
  const inputs = fused ? [x, rows.dy, rows.pooled, rows.cell] : [x, rows.dy];
  const [partial] = dispatch(backend, { name: 'RhobenchFilterGradChunks', key: `${rows.kind};${keyOf(c)}`, wgsl, workgroups: [tilesK * tilesC, chunks] }, {
    inputs,
    outputs: [{ shape: [chunks, k, g.co] }],
    uniforms: [{ type: 'int32', data: [m, chunk] }],
  });
  const filterShape = [g.kh, g.kw, g.ci, g.co];
  try {
    return sumChunks(backend, partial, chunks, withBias ? [filterShape, [g.co]] : [filterShape]);
  } finally {
    backend.disposeData(partial.dataId);
  }
}

/**
 * dx[n,h,w,ci] = Σ_{kh,kw,co} dy[n, (h + top − kh)/sh, (w + left − kw)/sw, co]·W[kh,kw,ci,co]
 * over the taps whose division is exact and in range: one thread per element of dx.
 */
export function convBackpropInput(backend: WebGPUBackend, dy: Info, filter: Info, g: ConvGeometry): Info {
  const count = g.n * g.h * g.w * g.ci;
  const c = shape(g);
  const wgsl = () => `
${bindings([['dx', 'read_write'], ['dy', 'read'], ['w', 'read']], [['count', 'i32']])}
${consts(c)}
${perElement(`${pixelOf('CI')}
  var s = 0.0;
  for (var kh = 0; kh < KH; kh++) {
    let a = ih + TOP - kh;
    if (a < 0 || a % SH != 0 || a / SH >= HO) { continue; }
    for (var kw = 0; kw < KW; kw++) {
      let b = iw + LEFT - kw;
      if (b < 0 || b % SW != 0 || b / SW >= WO) { continue; }
      let db = ((n * HO + a / SH) * WO + b / SW) * CO;
      let wb = ((kh * KW + kw) * CI + ch) * CO;
      for (var co = 0; co < CO; co++) { s += dy[db + co] * w[wb + co]; }
    }
  }
  dx[index] = s;`)}`;
  return dispatch(backend, { name: 'RhobenchConv2DBackpropInput', key: keyOf(c), wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inputs: [dy, filter],
    outputs: [{ shape: [g.n, g.h, g.w, g.ci] }],
    uniforms: [{ type: 'int32', data: [count] }],
  })[0];
}
