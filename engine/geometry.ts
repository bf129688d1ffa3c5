import * as tf from '@tensorflow/tfjs';

export interface ConvGeometry {
  n: number;
  h: number;
  w: number;
  ci: number;
  kh: number;
  kw: number;
  co: number;
  ho: number;
  wo: number;
  sh: number;
  sw: number;
  top: number;
  left: number;
  /** Padded image size: every window lies inside. */
  hp: number;
  wp: number;
}

/** An NHWC convolution's sizes from its kernel attributes (strides, pad, dimRoundingMode; dilation 1). */
export function convGeometry(xShape: readonly number[], filterShape: readonly number[], attrs: Record<string, unknown>): ConvGeometry {
  const [n, h, w, ci] = xShape;
  const [kh, kw, , co] = filterShape;
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number],
    attrs.strides as number | [number, number], 1, attrs.pad as Parameters<typeof tf.backend_util.computeConv2DInfo>[4],
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
  );
  const { outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw } = info;
  const { top, left } = info.padInfo;
  return { n, h, w, ci, kh, kw, co, ho, wo, sh, sw, top, left, hp: Math.max(h + top, (ho - 1) * sh + kh), wp: Math.max(w + left, (wo - 1) * sw + kw) };
}
