import type * as tf from '@tensorflow/tfjs';
import { dispatch, grid, type WebGPUBackend } from './program.ts';
import { bindings, consts } from './wgsl.ts';

/**
 * Reductions of rhobench's WebGPU kernels, all in a fixed order (no atomics), so a result is the
 * same bit for bit every time: the second pass of a chunked reduction, and column sums beside an
 * elementwise map (a bias gradient beside the gradient it sums).
 */

type Info = tf.TensorInfo;

/**
 * Σ over the chunks of partial [models·chunks, L] (each model's chunks in turn), in a fixed
 * order: 16 lanes per value, each summing every 16th chunk, then the lanes in order. Each model's
 * L sums are split, in order, into outputs of the given shapes (of all models: [models, …] or, for
 * one model, as the caller likes).
 */
export function sumChunks(backend: WebGPUBackend, partial: Info, chunks: number, shapes: number[][], models = 1): Info[] {
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1) / models);
  const length = sizes.reduce((a, b) => a + b, 0);
  const outs = shapes.map((_, i) => `out${i}`);
  // Of a model's sums, out0 takes [0, sizes[0]), out1 the next sizes[1], and so on.
  let store = '';
  let start = 0;
  sizes.forEach((size, i) => {
    store += `${i ? ' else ' : ''}if (l < ${start + size}) { ${outs[i]}[mdl * ${size} + l - ${start}] = total; }`;
    start += size;
  });
  const wgsl = () => `
${bindings([...outs.map((n) => [n, 'read_write'] as [string, 'read_write']), ['partial', 'read']], [['chunks', 'i32']])}
const L: i32 = ${length};
const ALL: i32 = ${length * models};
var<workgroup> lanes: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = i32(lid);
  let o = i32(wid.x + wid.y * nwg.x) * 16 + t % 16;
  let lane = t / 16;
  let mdl = o / L;
  let l = o % L;
  var acc = 0.0;
  if (o < ALL) {
    for (var s = lane; s < u.chunks; s += 16) { acc += partial[(mdl * u.chunks + s) * L + l]; }
  }
  lanes[t] = acc;
  workgroupBarrier();
  if (lane == 0 && o < ALL) {
    var total = 0.0;
    for (var q = 0; q < 16; q++) { total += lanes[q * 16 + t]; }
    ${store}
  }
}`;
  return dispatch(backend, { name: 'RhobenchSumChunks', key: `${models};${sizes.join(',')}`, wgsl, workgroups: grid(Math.ceil((length * models) / 16)) }, {
    inputs: [partial],
    outputs: shapes.map((shape) => ({ shape })),
    uniforms: [{ type: 'int32', data: [chunks] }],
  });
}

/** Row chunks of the bias sums: each workgroup sums at least this many rows of its columns. */
const MIN_CHUNK = 64;
const TARGET_GROUPS = 256;

/**
 * dpre[r, c] = f(r, c) over rows × cols, and each model's Σ_r dpre[r, c] (its rows are the
 * rows/models after the previous model's), in two dispatches: workgroups of (row chunk × column
 * block) write dpre and their chunk's column sums, then sumChunks adds each model's chunks in a
 * fixed order. `f` is WGSL that sets `v` from `i` = r·COLS + c (and r, c).
 */
export function mapWithColumnSums(backend: WebGPUBackend, name: string, f: string, rows: number, cols: number, extra: Record<string, number>, inputs: [string, Info][], outShape: number[], models = 1): Info[] {
  const block = Math.min(64, 2 ** Math.ceil(Math.log2(Math.max(1, cols))));
  const lanes = 256 / block;
  const per = rows / models;
  const chunk = Math.max(MIN_CHUNK, Math.ceil(per / TARGET_GROUPS));
  const chunks = Math.ceil(per / chunk);
  const blocks = Math.ceil(cols / block);
  const c = { COLS: cols, BLOCK: block, LANES: lanes, ...extra };
  const wgsl = () => `
${bindings([['dpre', 'read_write'], ['partial', 'read_write'], ...inputs.map(([n, t]) => [n, 'read', t.dtype === 'int32' ? 'i32' : 'f32'] as [string, 'read', 'i32' | 'f32'])], [['per', 'i32'], ['chunk', 'i32'], ['chunks', 'i32']])}
${consts(c)}
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let t = i32(lid);
  let c = i32(wid.y) * BLOCK + t % BLOCK;
  let lane = t / BLOCK;
  let g = i32(wid.x);
  // Group g is chunk g % chunks of model g / chunks.
  let first = (g / u.chunks) * u.per;
  let r0 = first + (g % u.chunks) * u.chunk;
  let r1 = min(r0 + u.chunk, first + u.per);
  var acc = 0.0;
  if (c < COLS) {
    for (var r = r0 + lane; r < r1; r += LANES) {
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
  const [dpre, partial] = dispatch(backend, { name, key: Object.values(c).join(','), wgsl, workgroups: [models * chunks, blocks] }, {
    inputs: inputs.map(([, t]) => t),
    outputs: [{ shape: outShape }, { shape: [models * chunks, cols] }],
    uniforms: [{ type: 'int32', data: [per] }, { type: 'int32', data: [chunk] }, { type: 'int32', data: [chunks] }],
  });
  try {
    return [dpre, ...sumChunks(backend, partial, chunks, [models > 1 ? [models, cols] : [cols]], models)];
  } finally {
    backend.disposeData(partial.dataId);
  }
}
