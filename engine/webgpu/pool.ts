import type * as tf from '@tensorflow/tfjs';
import { dispatch, grid, type WebGPUBackend } from './program.ts';
import { mapWithColumnSums } from './reduce.ts';
import { WG, bindings, consts, perElement, pixelOf } from './wgsl.ts';

/** Gradients through max pooling (and the ReLU below it, with the bias sums that layer needs). */

type Info = tf.TensorInfo;

/**
 * MaxPoolGrad of a 2×2 pooling that tiles y (a ReLU layer's output, NHWC, even height and width),
 * times the ReLU's gradient, and its column sums: each element takes dy of its window if it is
 * the window's first maximum and positive.
 */
export function poolReluBiasGrad(backend: WebGPUBackend, dy: Info, y: Info, models = 1): Info[] {
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
  return mapWithColumnSums(backend, 'RhobenchPoolReluBiasGrad', f, n * h * w, c, { H: h, W: w }, [['dy', dy], ['y', y]], y.shape, models);
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
${perElement(`${pixelOf('C')}
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
