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
 * Σ over the first axis of partial [chunks, L], in a fixed order: 16 lanes per value, each summing
 * every 16th chunk, then the lanes in order. The L sums are split, in order, into outputs of the
 * given shapes.
 */
export function sumChunks(backend: WebGPUBackend, partial: Info, chunks: number, shapes: number[][]): Info[] {
  const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));
  const length = sizes.reduce((a, b) => a + b, 0);
  const outs = shapes.map((_, i) => `out${i}`);
  // out0 takes [0, sizes[0]), out1 the next sizes[1] values, and so on.
  let store = '';
  let start = 0;
  sizes.forEach((size, i) => {
    store += `${i ? ' else ' : ''}if (o < ${start + size}) { ${outs[i]}[o - ${start}] = total; }`;
    start += size;
  });
  const wgsl = () => `
${bindings([...outs.map((n) => [n, 'read_write'] as [string, 'read_write']), ['partial', 'read']], [['chunks', 'i32']])}
const L: i32 = ${length};
var<workgroup> lanes: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = i32(lid);
  let o = i32(wid.x + wid.y * nwg.x) * 16 + t % 16;
  let lane = t / 16;
  var acc = 0.0;
  if (o < L) {
    for (var s = lane; s < u.chunks; s += 16) { acc += partial[s * L + o]; }
  }
  lanes[t] = acc;
  workgroupBarrier();
  if (lane == 0 && o < L) {
    var total = 0.0;
    for (var l = 0; l < 16; l++) { total += lanes[l * 16 + t]; }
    ${store}
  }
}`;
  return dispatch(backend, { name: 'RhobenchSumChunks', key: sizes.join(','), wgsl, workgroups: grid(Math.ceil(length / 16)) }, {
    inputs: [partial],
    outputs: shapes.map((shape) => ({ shape })),
    uniforms: [{ type: 'int32', data: [chunks] }],
  });
}

/** Row chunks of the bias sums: each workgroup sums at least this many rows of its columns. */
const MIN_CHUNK = 64;
const TARGET_GROUPS = 256;

/**
 * dpre[r, c] = f(r, c) over rows × cols, and Σ_r dpre[r, c], in two dispatches: workgroups of
 * (row chunk × column block) write dpre and their chunk's column sums, then sumChunks adds the
 * chunks in a fixed order. `f` is WGSL that sets `v` from `i` = r·COLS + c (and r, c).
 */
export function mapWithColumnSums(backend: WebGPUBackend, name: string, f: string, rows: number, cols: number, extra: Record<string, number>, inputs: [string, Info][], outShape: number[]): Info[] {
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
