import type * as tf from '@tensorflow/tfjs';
import type { AdamStepAttrs } from '../kernel-names.ts';
import { dispatch, grid, type WebGPUBackend } from './program.ts';
import { WG, bindings, consts, perElement } from './wgsl.ts';

/** A training step's two ends: the loss with the gradient that starts the backward pass, and Adam's update. */

type Info = tf.TensorInfo;

/**
 * [T²·mean_r(−Σ_c t·log softmax(z/T)), its gradient T·(softmax(z/T)·Σ_c t − t)/rows] for targets
 * t and logits z [rows, classes] of each of `models` models (rows/models each, one workgroup per
 * model): a training batch's loss and the gradient that starts its backward pass, in one dispatch
 * instead of about twenty. With `total`, each model's loss times its rows is also added to
 * total[model] in place (an epoch's running sum, without two more dispatches a step).
 */
export function softCrossEntropy(backend: WebGPUBackend, targets: Info, logits: Info, temperature: number, models = 1, total?: Info): Info[] {
  const [all, classes] = logits.shape;
  const rows = all / models;
  const wgsl = () => `
${bindings([['loss', 'read_write'], ['grad', 'read_write'], ...(total ? ([['total', 'read_write']] as [string, 'read_write'][]) : []), ['t', 'read'], ['z', 'read']], [['rows', 'i32'], ['temp', 'f32'], ['scale', 'f32'], ['lossScale', 'f32'], ['count', 'f32']])}
${consts({ C: classes })}
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let tid = i32(lid);
  let mdl = i32(wid.x);
  var acc = 0.0;
  for (var r = mdl * u.rows + tid; r < (mdl + 1) * u.rows; r += 256) {
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
  if (tid == 0) {
    let value = part[0] * u.lossScale;
    loss[mdl] = value;
    ${total ? 'total[mdl] = total[mdl] + value * u.count;' : ''}
  }
}`;
  return dispatch(backend, { name: 'RhobenchSoftCrossEntropy', key: `${classes};${Boolean(total)}`, wgsl, workgroups: [models] }, {
    inputs: [targets, logits],
    inplace: total ? [total] : [],
    outputs: [{ shape: models > 1 ? [models] : [] }, { shape: [all, classes] }],
    uniforms: [
      { type: 'int32', data: [rows] },
      { type: 'float32', data: [temperature] },
      { type: 'float32', data: [temperature / rows] },
      { type: 'float32', data: [(temperature * temperature) / rows] },
      { type: 'float32', data: [rows] },
    ],
  });
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
