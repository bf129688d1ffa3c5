import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { DatasetError } from './errors.ts';
import type { Split } from './types.ts';

/**
 * Rows of bytes (pixels 0..255, one label each) as the files hold them. A dataset keeps its
 * source in bytes and scales only the rows a split takes: all of MNIST as floats would be 220 MB
 * in every thread of a sweep.
 */
export interface ByteRows {
  images: Uint8Array;
  labels: Uint8Array;
}

/** Byte → its float in [0, 1]: a table lookup is several times faster than dividing. */
const SCALED = Float32Array.from({ length: 256 }, (_, i) => i / 255);

/** Rows `indices` of `rows`, scaled to [0, 1]. */
export function pickRows({ images, labels }: ByteRows, rowSize: number, indices: ArrayLike<number>): Split {
  const n = labels.length;
  const x = new Float32Array(indices.length * rowSize);
  const y = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i];
    if (r < 0 || r >= n) throw new RangeError(`row ${r} outside ${n} rows`);
    const from = r * rowSize;
    const to = i * rowSize;
    for (let j = 0; j < rowSize; j++) x[to + j] = SCALED[images[from + j]];
    y[i] = labels[r];
  }
  return { x, y, n: indices.length };
}

/** The rows [from, to) of `rows`, sharing its memory. */
export function byteRange({ images, labels }: ByteRows, rowSize: number, from: number, to: number): ByteRows {
  return { images: images.subarray(from * rowSize, to * rowSize), labels: labels.subarray(from, to) };
}

/** Every row of `images` and `labels`, scaled to [0, 1]. */
export function fromUint8(images: Uint8Array, labels: Uint8Array, rowSize: number): Split {
  const n = images.length / rowSize;
  if (!Number.isInteger(n) || n !== labels.length) throw new DatasetError(`${images.length} pixels do not make ${labels.length} rows of ${rowSize}`);
  return pickRows({ images, labels }, rowSize, Int32Array.from({ length: n }, (_, i) => i));
}

export function rowSize(split: Split): number {
  return split.n ? split.x.length / split.n : 0;
}

export function subset(split: Split, indices: ArrayLike<number>): Split {
  const d = rowSize(split);
  const x = new Float32Array(indices.length * d);
  const y = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i];
    if (r < 0 || r >= split.n) throw new RangeError(`row ${r} outside a split of ${split.n}`);
    x.set(split.x.subarray(r * d, (r + 1) * d), i * d);
    y[i] = split.y[r];
  }
  return { x, y, n: indices.length };
}

/** Rows [start, end) as an NHWC tensor (the caller disposes it). */
export function toTensor(split: Split, inputShape: [number, number, number], start = 0, end = split.n): tf.Tensor4D {
  const d = rowSize(split);
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= split.n)) {
    throw new RangeError(`rows [${start}, ${end}) outside a split of ${split.n}`);
  }
  const want = inputShape[0] * inputShape[1] * inputShape[2];
  if (split.n > 0 && d !== want) throw new DatasetError(`rows of ${d} values do not fit shape [${inputShape.join(', ')}]`);
  return tf.tensor4d(split.x.subarray(start * want, end * want), [end - start, ...inputShape]);
}

/** Identifies the data a target was trained on (for cache keys). */
export function fingerprint(split: Split): string {
  return createHash('sha256')
    .update(new Uint8Array(split.x.buffer, split.x.byteOffset, split.x.byteLength))
    .update(new Uint8Array(split.y.buffer, split.y.byteOffset, split.y.byteLength))
    .digest('hex');
}
