import type * as tf from '@tensorflow/tfjs';
import type { AdamStepAttrs } from '../kernel-names.ts';
import { sumChunks } from './conv.ts';
import { dispatch, grid, type WebGPUBackend } from './program.ts';
import { WG, bindings, consts, perElement } from './wgsl.ts';

type Info = tf.TensorInfo;

/** Row chunks of the bias sums: each workgroup sums at least this many rows of its columns. */
const MIN_CHUNK = 64;
const TARGET_GROUPS = 256;

/**
 * dpre[r, c] = f(r, c) over rows × cols, and Σ_r dpre[r, c], in two dispatches: workgroups of
 * (row chunk × column block) write dpre and their chunk's column sums, then sumChunks adds the
 * chunks in a fixed order. `f` is WGSL that sets `v` from `i` = r·COLS + c (and r, c).
 */
function mapWithColumnSums(backend: WebGPUBackend, name: string, f: string, rows: number, cols: number, extra: Record<string, number>, inputs: [string, Info][], outShape: number[]): Info[] {
  const block = Math.min(64, 2 ** Math.ceil(Math.log2(Math.max(1, cols))));
  const lanes = 256 / block;
  const chunk = Math.max(MIN_CHUNK, Math.ceil(rows / TARGET_GROUPS));
  const chunks = Math.ceil(rows / chunk);
  const blocks = Math.ceil(cols / block);
  const c = { COLS: cols, BLOCK: block, LANES: lanes, ...extra };
  const wgsl = () => `
${bindings([['dpre', 'read_write'], ['partial', 'read_write'], ...inputs.map(([n, t]) => [n, 'read', t.dtype === 'int32' ? 'i32' : 'f32'] as [string, 'read', 'i32' | 'f32'])], [['rows', 'i32'], ['chunk', 'i32']])}
${consts(c)}
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let t = i32(lid);
  let c = i32(wid.y) * BLOCK + t % BLOCK;
  let lane = t / BLOCK;
  let g = i32(wid.x);
  var acc = 0.0;
  if (c < COLS) {
    let r1 = min((g + 1) * u.chunk, u.rows);
    for (var r = g * u.chunk + lane; r < r1; r += LANES) {
      let i = r * COLS + c;
      var v = 0.0;
      ${f}
      dpre[i] = v;
      acc += v;
    }
  }
  part[t] = acc;
  workgroupBarrier();
  if (lane == 0 && c < COLS) {
    var total = 0.0;
    for (var l = 0; l < LANES; l++) { total += part[l * BLOCK + t]; }
    partial[g * COLS + c] = total;
  }
}`;
  const [dpre, partial] = dispatch(backend, { name, key: Object.values(c).join(','), wgsl, workgroups: [chunks, blocks] }, {
    inputs: inputs.map(([, t]) => t),
    outputs: [{ shape: outShape }, { shape: [chunks, cols] }],
    uniforms: [{ type: 'int32', data: [rows, chunk] }],
  });
  try {
    return [dpre, ...sumChunks(backend, partial, chunks, [[cols]])];
  } finally {
    backend.disposeData(partial.dataId);
  }
}

/** [dy·(y > 0), its column sums]: a ReLU layer's gradient before the ReLU and its bias gradient. */
export function reluBiasGrad(backend: WebGPUBackend, dy: Info, y: Info): Info[] {
  const cols = y.shape[y.shape.length - 1];
  const rows = y.shape.reduce((a, b) => a * b, 1) / cols;
  return mapWithColumnSums(backend, 'RhobenchReluBiasGrad', 'if (y[i] > 0.0) { v = dy[i]; }', rows, cols, {}, [['dy', dy], ['y', y]], y.shape);
}

/**
 * MaxPoolGrad of a 2×2 pooling that tiles y (a ReLU layer's output, NHWC, even height and width),
 * times the ReLU's gradient, and its column sums: each element takes dy of its window if it is
 * the window's first maximum and positive.
 */
export function poolReluBiasGrad(backend: WebGPUBackend, dy: Info, y: Info): Info[] {
  const [n, h, w, c] = y.shape;
  const f = `
      let j = r % W;
      let ii = (r / W) % H;
      let n = r / (W * H);
      let top = ((n * H + (ii - ii % 2)) * W + (j - j % 2)) * COLS + c;
      var cells = array<f32, 4>(y[top], y[top + COLS], y[top + W * COLS], y[top + (W + 1) * COLS]);
      var best = 0;
      for (var q = 1; q < 4; q++) { if (cells[q] > cells[best]) { best = q; } }
      if (best == (ii % 2) * 2 + j % 2 && y[i] > 0.0) { v = dy[((n * (H / 2) + ii / 2) * (W / 2) + j / 2) * COLS + c]; }`;
  return mapWithColumnSums(backend, 'RhobenchPoolReluBiasGrad', f, n * h * w, c, { H: h, W: w }, [['dy', dy], ['y', y]], y.shape);
}

/** One Adam step, tf.train.adam's arithmetic: returns the new weights, updates m and v in place. */
export function adamStep(backend: WebGPUBackend, w: Info, g: Info, m: Info, v: Info, a: AdamStepAttrs): Info {
  const count = w.shape.reduce((x, y) => x * y, 1);
  const wgsl = () => `
${bindings([['wout', 'read_write'], ['m', 'read_write'], ['v', 'read_write'], ['w', 'read'], ['g', 'read']], [
    ['count', 'i32'], ['b1', 'f32'], ['nb1', 'f32'], ['b2', 'f32'], ['nb2', 'f32'], ['c1', 'f32'], ['c2', 'f32'], ['eps', 'f32'], ['neglr', 'f32'],
  ])}
${perElement(`
  let gv = g[index];
  let mv = m[index] * u.b1 + gv * u.nb1;
  let vv = v[index] * u.b2 + (gv * gv) * u.nb2;
  m[index] = mv;
  v[index] = vv;
  wout[index] = ((mv / u.c1) / (sqrt(vv / u.c2) + u.eps)) * u.neglr + w[index];`)}`;
  const f = Math.fround;
  return dispatch(backend, { name: 'RhobenchAdamStep', key: '', wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inplace: [m, v],
    inputs: [w, g],
    outputs: [{ shape: w.shape }],
    uniforms: [
      { type: 'int32', data: [count] },
      ...[a.beta1, f(1 - a.beta1), a.beta2, f(1 - a.beta2), a.c1, a.c2, a.epsilon, -a.learningRate].map((x) => ({ type: 'float32' as const, data: [x] })),
    ],
  })[0];
}

/**
 * [T²·mean_r(−Σ_c t·log softmax(z/T)), its gradient T·(softmax(z/T)·Σ_c t − t)/rows] for targets
 * t and logits z [rows, classes], in one workgroup: a training batch's loss and the gradient that
 * starts its backward pass, in one dispatch instead of about twenty.
 */
export function softCrossEntropy(backend: WebGPUBackend, targets: Info, logits: Info, temperature: number): Info[] {
  const [rows, classes] = logits.shape;
  const wgsl = () => `
${bindings([['loss', 'read_write'], ['grad', 'read_write'], ['t', 'read'], ['z', 'read']], [['rows', 'i32'], ['temp', 'f32'], ['scale', 'f32'], ['lossScale', 'f32']])}
${consts({ C: classes })}
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  let tid = i32(lid);
  var acc = 0.0;
  for (var r = tid; r < u.rows; r += 256) {
    let b = r * C;
    var mx = z[b] / u.temp;
    for (var c = 1; c < C; c++) { mx = max(mx, z[b + c] / u.temp); }
    var se = 0.0;
    for (var c = 0; c < C; c++) { se += exp(z[b + c] / u.temp - mx); }
    let lse = log(se);
    var s = 0.0;
    for (var c = 0; c < C; c++) {
      s += t[b + c];
      acc -= t[b + c] * (z[b + c] / u.temp - mx - lse);
    }
    for (var c = 0; c < C; c++) {
      let p = exp(z[b + c] / u.temp - mx) / se;
      grad[b + c] = (p * s - t[b + c]) * u.scale;
    }
  }
  part[tid] = acc;
  workgroupBarrier();
  for (var width = 128; width > 0; width /= 2) {
    if (tid < width) { part[tid] += part[tid + width]; }
    workgroupBarrier();
  }
  if (tid == 0) { loss[0] = part[0] * u.lossScale; }
}`;
  return dispatch(backend, { name: 'RhobenchSoftCrossEntropy', key: String(classes), wgsl, workgroups: [1] }, {
    inputs: [targets, logits],
    outputs: [{ shape: [] }, { shape: [rows, classes] }],
    uniforms: [
      { type: 'int32', data: [rows] },
      { type: 'float32', data: [temperature] },
      { type: 'float32', data: [temperature / rows] },
      { type: 'float32', data: [(temperature * temperature) / rows] },
    ],
  });
}

export interface PoolGeometry {
  n: number;
  h: number;
  w: number;
  c: number;
  ho: number;
  wo: number;
  fh: number;
  fw: number;
  sh: number;
  sw: number;
  top: number;
  left: number;
}

/**
 * MaxPoolGrad in one dispatch (tfjs's takes two: the windows' argmax, then the scatter): one
 * thread per element of dx, adding dy of every window whose first maximum (scanned row by row,
 * inside the image, as tfjs's max pooling picks) it is.
 */
export function maxPoolGrad(backend: WebGPUBackend, dy: Info, x: Info, p: PoolGeometry): Info {
  const count = p.n * p.h * p.w * p.c;
  const c = { H: p.h, W: p.w, C: p.c, HO: p.ho, WO: p.wo, FH: p.fh, FW: p.fw, SH: p.sh, SW: p.sw, TOP: p.top, LEFT: p.left };
  const wgsl = () => `
${bindings([['dx', 'read_write'], ['dy', 'read'], ['x', 'read']], [['count', 'i32']])}
${consts(c)}
${perElement(`
  let ch = index % C;
  let p = index / C;
  let iw = p % W;
  let ih = (p / W) % H;
  let n = p / (W * H);
  var s = 0.0;
  // The windows that hold (ih, iw): oh·SH − TOP ≤ ih < oh·SH − TOP + FH.
  let oh0 = max(0, (ih + TOP - FH + SH) / SH);
  let oh1 = min(HO - 1, (ih + TOP) / SH);
  let ow0 = max(0, (iw + LEFT - FW + SW) / SW);
  let ow1 = min(WO - 1, (iw + LEFT) / SW);
  for (var oh = oh0; oh <= oh1; oh++) {
    for (var ow = ow0; ow <= ow1; ow++) {
      let r0 = oh * SH - TOP;
      let c0 = ow * SW - LEFT;
      var best = 0.0;
      var bestAt = -1;
      for (var r = max(r0, 0); r < min(r0 + FH, H); r++) {
        for (var q = max(c0, 0); q < min(c0 + FW, W); q++) {
          let v = x[((n * H + r) * W + q) * C + ch];
          if (bestAt < 0 || v > best) { best = v; bestAt = r * W + q; }
        }
      }
      if (bestAt == ih * W + iw) { s += dy[((n * HO + oh) * WO + ow) * C + ch]; }
    }
  }
  dx[index] = s;`)}`;
  return dispatch(backend, { name: 'RhobenchMaxPoolGrad', key: Object.values(c).join(','), wgsl, workgroups: grid(Math.ceil(count / WG)) }, {
    inputs: [dy, x],
    outputs: [{ shape: [p.n, p.h, p.w, p.c] }],
    uniforms: [{ type: 'int32', data: [count] }],
  })[0];
}
