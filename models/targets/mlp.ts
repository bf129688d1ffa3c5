import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import type { Split } from '../../datasets/types.ts';
import { affine, bytesF64, f64Bytes, float64Target, softmaxRows } from '../linear64.ts';
import { withSeed } from '../seed.ts';
import { fitSoft } from '../train.ts';
import type { Target } from '../types.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export const mlpSchema = z.strictObject({
  ...baseFields,
  family: z.literal('mlp'),
  trainSize: count.default(5_000),
  /** Hidden layer widths; every hidden layer is tanh, the output a softmax. */
  hidden: z.array(count).min(1).default([32]),
  epochs: count.default(20),
  batchSize: count.default(64),
  lr: z.number().positive().default(0.003),
});
export type MlpSpec = Omit<z.output<typeof mlpSchema>, 'task'> & { id: string; task?: TaskName };

/**
 * tanh hidden layers and a softmax output. Tramèr et al. (2016, §4.1) attack MLPs with a sigmoid
 * hidden layer; tanh is the same function up to an affine change of each unit (tanh u = 2σ(2u) − 1),
 * so the model class is theirs, and being smooth everywhere it gives the attacker's
 * gradient-based fit informative gradients (a ReLU's dead units give none).
 * An attacker told the architecture ('mlp' with its hidden widths) is told this activation too.
 */
export const MLP_ACTIVATION = 'tanh';

export interface MlpParams {
  classes: number;
  features: number;
  hidden: number[];
  /** One per layer (hidden…, output): out × in, row-major. */
  W: Float64Array[];
  /** One per layer: out entries. */
  b: Float64Array[];
}

export type MlpTarget = Target & { mlp: MlpParams };

/** Layer widths in order, input first: [features, ...hidden, classes]. */
const widths = (p: Pick<MlpParams, 'features' | 'hidden' | 'classes'>) => [p.features, ...p.hidden, p.classes];

export function checkMlpParams(p: MlpParams): void {
  const w = widths(p);
  if (!w.every((v) => Number.isInteger(v) && v > 0) || p.classes < 2) throw new Error(`mlp: bad shape ${w.join(' → ')}`);
  if (p.W.length !== w.length - 1 || p.b.length !== w.length - 1) throw new Error(`mlp: ${p.W.length} weight and ${p.b.length} bias arrays for ${w.length - 1} layers`);
  for (let l = 0; l < w.length - 1; l++) {
    if (p.W[l].length !== w[l + 1] * w[l]) throw new Error(`mlp: layer ${l} has ${p.W[l].length} weights for ${w[l + 1]} × ${w[l]}`);
    if (p.b[l].length !== w[l + 1]) throw new Error(`mlp: layer ${l} has ${p.b[l].length} biases for ${w[l + 1]} units`);
  }
}

/** n × classes output logits of float64 rows. */
export function mlpLogits64(p: MlpParams, x: Float64Array | Float32Array, n: number): Float64Array {
  const w = widths(p);
  let h: Float64Array | Float32Array = x;
  for (let l = 0; l < p.W.length; l++) {
    const next = affine(h, n, w[l], p.W[l], p.b[l]);
    if (l < p.W.length - 1) for (let i = 0; i < next.length; i++) next[i] = Math.tanh(next[i]);
    h = next;
  }
  return h as Float64Array;
}

export function mlpProba64(p: MlpParams, x: Float64Array | Float32Array, n: number): Float64Array {
  return softmaxRows(mlpLogits64(p, x, n), n, p.classes);
}

export function mlpTarget(id: string, p: MlpParams, inputShape: [number, number, number]): MlpTarget {
  checkMlpParams(p);
  const predictProba64 = (x: Float64Array, n: number) => mlpProba64(p, x, n);
  return {
    ...float64Target(
      { id, family: 'mlp', model: { family: 'mlp', hidden: [...p.hidden] }, inputShape, classes: p.classes, testAccuracy: NaN },
      predictProba64,
    ),
    mlp: p,
  };
}

export function mlpParamsOf(t: Target): MlpParams | undefined {
  return (t as Partial<MlpTarget>).mlp;
}

/** The dense layers of the MLP as a tfjs model that outputs logits (the attack fits the same one). */
export function buildMlp(features: number, hidden: number[], classes: number): tf.Sequential {
  const model = tf.sequential();
  hidden.forEach((units, i) => model.add(tf.layers.dense({ units, activation: MLP_ACTIVATION, ...(i === 0 ? { inputShape: [features] } : {}) })));
  model.add(tf.layers.dense({ units: classes }));
  return model;
}

/** A dense model's weights as float64, each kernel (in × out in tfjs) transposed to out × in. */
export async function mlpParamsFrom(model: tf.LayersModel, features: number, hidden: number[], classes: number): Promise<MlpParams> {
  const w = [features, ...hidden, classes];
  const values = await Promise.all(model.getWeights().map((t) => t.data()));
  if (values.length !== 2 * (w.length - 1)) throw new Error(`mlp: model has ${values.length} weight tensors, expected ${2 * (w.length - 1)}`);
  const W: Float64Array[] = [];
  const b: Float64Array[] = [];
  for (let l = 0; l < w.length - 1; l++) {
    const [inn, out] = [w[l], w[l + 1]];
    const kernel = values[2 * l];
    const t = new Float64Array(out * inn);
    for (let i = 0; i < inn; i++) for (let o = 0; o < out; o++) t[o * inn + i] = kernel[i * out + o];
    W.push(t);
    b.push(Float64Array.from(values[2 * l + 1]));
  }
  return { classes, features, hidden: [...hidden], W, b };
}

/** Trains with Adam on one-hot labels (models/train.ts fitSoft), seeded; returns float64 weights. */
export async function fitMlp(data: Split, classes: number, spec: Pick<MlpSpec, 'hidden' | 'epochs' | 'batchSize' | 'lr' | 'seed'>): Promise<MlpParams> {
  if (data.n === 0) throw new RangeError('mlp: no training rows');
  const d = data.x.length / data.n;
  for (let r = 0; r < data.n; r++) {
    if (!(Number.isInteger(data.y[r]) && data.y[r] >= 0 && data.y[r] < classes)) throw new RangeError(`mlp: label ${data.y[r]} at training row ${r} is outside 0..${classes - 1}`);
  }
  const model = await withSeed(spec.seed, () => buildMlp(d, spec.hidden, classes));
  const x = tf.tensor2d(data.x, [data.n, d]);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(Int32Array.from(data.y), 'int32'), classes).toFloat() as tf.Tensor2D);
  try {
    await fitSoft(model, x, y, { epochs: spec.epochs, batchSize: spec.batchSize, lr: spec.lr, seed: spec.seed });
    return await mlpParamsFrom(model, d, spec.hidden, classes);
  } finally {
    tf.dispose([x, y]);
    model.dispose();
  }
}

export const mlpFamily: FamilyModule<MlpSpec> = {
  name: 'mlp',
  schema: mlpSchema,
  async train(spec, data, { inputShape, classes }) {
    const params = await fitMlp(data, classes, spec);
    const files: Record<string, Uint8Array> = {};
    params.W.forEach((w, l) => (files[`W${l}.bin`] = f64Bytes(w)));
    params.b.forEach((b, l) => (files[`b${l}.bin`] = f64Bytes(b)));
    return { target: mlpTarget(spec.id, params, inputShape), files, params: { classes, features: params.features, hidden: params.hidden } };
  },
  async restore(spec, files, params, { inputShape, classes }) {
    const d = inputShape.reduce((a, c) => a * c, 1);
    if (params.features !== d) throw new Error(`mlp entry has ${String(params.features)} features, the input ${d}`);
    const hidden = params.hidden as unknown;
    if (!Array.isArray(hidden) || hidden.join() !== spec.hidden.join()) throw new Error(`mlp entry has hidden widths ${JSON.stringify(hidden)}, the spec ${JSON.stringify(spec.hidden)}`);
    const w = [d, ...spec.hidden, classes];
    const W = w.slice(1).map((out, l) => bytesF64(files[`W${l}.bin`], `W${l}.bin`, out * w[l]));
    const b = w.slice(1).map((out, l) => bytesF64(files[`b${l}.bin`], `b${l}.bin`, out));
    return mlpTarget(spec.id, { classes, features: d, hidden: [...spec.hidden], W, b }, inputShape);
  },
};
