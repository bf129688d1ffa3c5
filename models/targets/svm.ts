import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import type { Split } from '../../datasets/types.ts';
import { predictBatched } from '../train.ts';
import type { Target } from '../types.ts';
import { bytesF32, f32Bytes } from './cache.ts';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

/** What the decision function and libsvm's probability method need, read from a trained model. */
export interface SvmParams {
  gamma: number;
  /** Classes of the dataset; classes absent from the training rows get probability 0. */
  classes: number;
  features: number;
  /** libsvm's class order: labels[i] is the dataset class of libsvm's class i (order of first appearance). */
  labels: number[];
  /** Support vectors per libsvm class, in libsvm's order. */
  nSV: number[];
  /** [totalSV × features], row-major. */
  supportVectors: Float32Array;
  /** (k − 1) rows of totalSV dual coefficients (libsvm's sv_coef). */
  coef: number[][];
  /** One per class pair (0,1), (0,2), …, (k−2,k−1); likewise probA and probB. */
  rho: number[];
  probA: number[];
  probB: number[];
}

export interface LibSvm {
  train(x: number[][], y: number[]): void;
  serializeModel(): string;
  predictProbability(x: number[][]): { prediction: number; estimates: { label: number; probability: number }[] }[];
  free(): void;
}
type LibSvmCtor = (new (opts: Record<string, unknown>) => LibSvm) & {
  KERNEL_TYPES: Record<string, number>;
  SVM_TYPES: Record<string, number>;
};

let libsvm: Promise<LibSvmCtor> | undefined;

/**
 * libsvm-js, its wasm build or, where that cannot start, its asm.js build. The wasm loader warns
 * that Node cannot stream-compile from a file path before it falls back to a buffer: noise, hidden.
 */
export function loadLibsvm(): Promise<LibSvmCtor> {
  libsvm ??= (async () => {
    const require = createRequire(import.meta.url);
    const { warn, error } = console;
    const quiet = (orig: typeof console.warn) => (...args: unknown[]) => {
      if (!/wasm streaming compile failed|falling back to ArrayBuffer/.test(String(args[0]))) orig(...args);
    };
    console.warn = quiet(warn);
    console.error = quiet(error);
    try {
      return (await require('libsvm-js')) as LibSvmCtor;
    } catch (wasmErr) {
      try {
        return (await require('libsvm-js/asm.js')) as LibSvmCtor;
      } catch (asmErr) {
        throw new Error(`libsvm-js did not load: wasm build (${(wasmErr as Error).message}), asm.js build (${(asmErr as Error).message})`);
      }
    } finally {
      console.warn = warn;
      console.error = error;
    }
  })();
  libsvm.catch(() => (libsvm = undefined));
  return libsvm;
}

/** The numbers on the header line that starts with key. */
function headerNumbers(header: Map<string, string>, key: string, count: number): number[] {
  const raw = header.get(key);
  if (raw === undefined) throw new Error(`libsvm model has no "${key}" line${key.startsWith('prob') ? ' (was it trained with probability estimates?)' : ''}`);
  const values = raw.trim().split(/\s+/).map(Number);
  if (values.length !== count || !values.every(Number.isFinite)) throw new Error(`libsvm model line "${key}" should hold ${count} numbers, got "${raw}"`);
  return values;
}

/**
 * Reads libsvm's model text (svm_save_model's format) into SvmParams. Support vectors are sparse
 * "index:value" pairs with 1-based indices for an RBF model; for a precomputed-kernel model each is
 * "0:serial", the 1-based number of a row of `train`, whose exact floats are then taken. libsvm
 * writes rho, probA and probB with six significant digits, so this model differs from libsvm's
 * in-memory one by about 1e-6 in decision values.
 */
export function parseLibsvmModel(text: string, classes: number, features: number, gamma: number, train?: Split): SvmParams {
  const lines = text.split('\n');
  const svAt = lines.findIndex((l) => l.trim() === 'SV');
  if (svAt < 0) throw new Error('libsvm model has no "SV" line');
  const header = new Map<string, string>();
  for (const line of lines.slice(0, svAt)) {
    const space = line.indexOf(' ');
    if (space > 0) header.set(line.slice(0, space), line.slice(space + 1));
  }
  if (header.get('svm_type')?.trim() !== 'c_svc') throw new Error(`libsvm model is "${header.get('svm_type')}", expected c_svc`);
  const kernel = header.get('kernel_type')?.trim();
  if (kernel !== 'rbf' && kernel !== 'precomputed') throw new Error(`libsvm model kernel is "${kernel}", expected rbf or precomputed`);
  if (kernel === 'precomputed' && !train) throw new Error('a precomputed-kernel libsvm model needs its training rows to resolve support vectors');
  const [k] = headerNumbers(header, 'nr_class', 1);
  if (k < 2) throw new Error(`the SVM saw ${k} class in its training rows; it needs at least two`);
  const pairCount = (k * (k - 1)) / 2;
  if (kernel === 'rbf') {
    const [modelGamma] = headerNumbers(header, 'gamma', 1);
    if (Math.abs(modelGamma - gamma) > 1e-5 * gamma) throw new Error(`libsvm model has gamma ${modelGamma}, expected ${gamma}`);
  }
  const labels = headerNumbers(header, 'label', k);
  for (const l of labels) if (!(Number.isInteger(l) && l >= 0 && l < classes)) throw new Error(`libsvm model label ${l} is not a class in 0..${classes - 1}`);
  const nSV = headerNumbers(header, 'nr_sv', k);
  const [total] = headerNumbers(header, 'total_sv', 1);
  if (nSV.reduce((a, b) => a + b, 0) !== total) throw new Error(`libsvm model: nr_sv ${nSV.join(' ')} does not add up to total_sv ${total}`);

  const svLines = lines.slice(svAt + 1).filter((l) => l.trim());
  if (svLines.length !== total) throw new Error(`libsvm model lists ${svLines.length} support vectors, total_sv says ${total}`);
  const supportVectors = new Float32Array(total * features);
  const coef = Array.from({ length: k - 1 }, () => new Array<number>(total));
  svLines.forEach((line, s) => {
    const tokens = line.trim().split(/\s+/);
    for (let j = 0; j < k - 1; j++) coef[j][s] = Number(tokens[j]);
    for (let t = k - 1; t < tokens.length; t++) {
      const colon = tokens[t].indexOf(':');
      const index = Number(tokens[t].slice(0, colon));
      const value = Number(tokens[t].slice(colon + 1));
      if (kernel === 'precomputed' && train) {
        if (!(index === 0 && Number.isInteger(value) && value >= 1 && value <= train.n)) throw new Error(`libsvm model support vector ${s}: "${tokens[t]}" is not a training row 1..${train.n}`);
        supportVectors.set(train.x.subarray((value - 1) * features, value * features), s * features);
      } else {
        if (!(colon > 0 && Number.isInteger(index) && index >= 1 && index <= features)) throw new Error(`libsvm model support vector ${s}: bad feature "${tokens[t]}"`);
        supportVectors[s * features + index - 1] = value;
      }
    }
  });
  return {
    gamma,
    classes,
    features,
    labels,
    nSV,
    supportVectors,
    coef,
    rho: headerNumbers(header, 'rho', pairCount),
    probA: headerNumbers(header, 'probA', pairCount),
    probB: headerNumbers(header, 'probB', pairCount),
  };
}

/**
 * Above this many training rows libsvm gets the raw pixels and evaluates the RBF kernel itself;
 * up to it, it gets the whole kernel matrix (precomputed by tfjs): libsvm-js stores rows densely,
 * so each of its kernel evaluations costs 784 multiply-adds, and the matrix makes training some
 * 30× faster (1,000 rows: 0.4 s instead of 12 s; 5,000 rows: 12 s). The matrix costs about
 * 28·n² bytes (n = 6,000: 1 GB), which is what sets the limit.
 */
export const PRECOMPUTED_MAX_ROWS = 6000;

/** exp(−γ‖a_i − b_j‖²) for rows of a against all rows of b, as a tensor (the caller disposes). */
function rbfKernel(a: tf.Tensor2D, b: tf.Tensor2D, gamma: number): tf.Tensor2D {
  return tf.tidy(() => {
    const dist = tf.add(tf.sub(tf.sum(tf.square(a), 1, true), tf.mul(tf.matMul(a, b, false, true), 2)), tf.sum(tf.square(b), 1));
    return tf.exp(tf.mul(tf.relu(dist), -gamma)) as tf.Tensor2D;
  });
}

/** libsvm's precomputed-kernel input: row i is [i + 1, K(x_i, x_1), …, K(x_i, x_n)], 1-based serials. */
async function kernelRows(data: Split, gamma: number): Promise<Float64Array[]> {
  const n = data.n;
  const d = data.x.length / n;
  const all = new Float64Array(n * (n + 1));
  const x = tf.tensor2d(data.x, [n, d]);
  try {
    for (let start = 0; start < n; start += 512) {
      const end = Math.min(n, start + 512);
      const block = tf.tidy(() => rbfKernel(x.slice(start, end - start), x, gamma));
      const values = await block.data();
      block.dispose();
      for (let i = start; i < end; i++) {
        all[i * (n + 1)] = i + 1;
        all.set(values.subarray((i - start) * n, (i - start + 1) * n), i * (n + 1) + 1);
      }
    }
  } finally {
    x.dispose();
  }
  return Array.from({ length: n }, (_, i) => all.subarray(i * (n + 1), (i + 1) * (n + 1)));
}

/** libsvm's own prediction, for checking the tfjs one: rows of x (row-major floats), probabilities per label. */
export interface LibsvmReference {
  predictProbability(x: Float32Array, n: number): { prediction: number; estimates: { label: number; probability: number }[] }[];
  free(): void;
}

/**
 * Trains an RBF C-SVC with Platt-scaled probabilities in libsvm (on the precomputed kernel matrix
 * up to PRECOMPUTED_MAX_ROWS rows) and reads the result back from libsvm's model text. Also
 * returns libsvm's model as a reference predictor, for tests; the caller frees it.
 */
export async function fitSvm(
  data: Split,
  classes: number,
  C: number,
  gamma: number,
  { precomputedMaxRows = PRECOMPUTED_MAX_ROWS } = {},
): Promise<{ params: SvmParams; reference: LibsvmReference }> {
  if (!(C > 0 && gamma > 0)) throw new RangeError(`SVM: C and gamma must be > 0, got C=${C}, gamma=${gamma}`);
  const SVM = await loadLibsvm();
  const d = data.x.length / data.n;
  const precomputed = data.n <= precomputedMaxRows;
  const rows = precomputed
    ? await kernelRows(data, gamma)
    : Array.from({ length: data.n }, (_, r) => Array.from(data.x.subarray(r * d, (r + 1) * d)));
  const svm = new SVM({
    kernel: precomputed ? SVM.KERNEL_TYPES.PRECOMPUTED : SVM.KERNEL_TYPES.RBF,
    type: SVM.SVM_TYPES.C_SVC,
    gamma,
    cost: C,
    probabilityEstimates: true,
    quiet: true,
  });
  try {
    svm.train(rows as number[][], Array.from(data.y));
    const params = parseLibsvmModel(svm.serializeModel(), classes, d, gamma, data);
    const reference: LibsvmReference = {
      predictProbability: (x, n) =>
        svm.predictProbability(
          Array.from({ length: n }, (_, r) => {
            const row = Array.from(x.subarray(r * d, (r + 1) * d));
            if (!precomputed) return row;
            // Kernel against every training row, in float64: [serial placeholder, K(x, x_1), …].
            const out = [0];
            for (let j = 0; j < data.n; j++) {
              let dist = 0;
              for (let f = 0; f < d; f++) dist += (row[f] - data.x[j * d + f]) ** 2;
              out.push(Math.exp(-gamma * dist));
            }
            return out;
          }),
        ),
      free: () => svm.free(),
    };
    return { params, reference };
  } catch (err) {
    svm.free();
    throw err;
  }
}

/** Checks what a cache entry (or a caller) hands over before any tensor is made of it. */
export function checkSvmParams(p: SvmParams): void {
  const k = p.labels.length;
  const pairCount = (k * (k - 1)) / 2;
  const total = p.nSV.reduce((a, b) => a + b, 0);
  const bad = (what: string) => {
    throw new Error(`SVM parameters: ${what}`);
  };
  if (k < 2 || p.nSV.length !== k) bad(`${k} labels, ${p.nSV.length} nr_sv entries`);
  if (p.supportVectors.length !== total * p.features) bad(`${p.supportVectors.length} support-vector values for ${total} × ${p.features}`);
  if (p.coef.length !== k - 1 || p.coef.some((c) => c.length !== total)) bad(`coefficients are not ${k - 1} rows of ${total}`);
  for (const [name, v] of [['rho', p.rho], ['probA', p.probA], ['probB', p.probB]] as const) {
    if (v.length !== pairCount || !v.every(Number.isFinite)) bad(`${name} is not ${pairCount} finite numbers`);
  }
  if (!(p.gamma > 0)) bad(`gamma ${p.gamma}`);
}

/** Pair order of libsvm's one-vs-one decision values: (0,1), (0,2), …, (k−2,k−1). */
function pairs(k: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) out.push([i, j]);
  return out;
}

/** Platt's sigmoid 1/(1 + exp(A·f + B)), in the form that does not overflow (libsvm's sigmoid_predict). */
function sigmoid(f: number, A: number, B: number): number {
  const z = f * A + B;
  return z >= 0 ? Math.exp(-z) / (1 + Math.exp(-z)) : 1 / (1 + Math.exp(z));
}

/**
 * Multiclass probabilities from pairwise ones by Wu, Lin & Weng (2004), method 2, as libsvm's
 * multiclass_probability does it: minimise Σ (r_ji p_i − r_ij p_j)² on the simplex by coordinate
 * descent, same stopping rule and iteration cap. r is k×k with r[i·k + j] = P(i | i or j).
 * Q and Qp are scratch space (k² and k), passed in so a loop over rows allocates nothing.
 */
export function couplePairwise(r: Float64Array, k: number, out: Float64Array, Q = new Float64Array(k * k), Qp = new Float64Array(k)): void {
  Q.fill(0);
  for (let t = 0; t < k; t++) {
    out[t] = 1 / k;
    for (let j = 0; j < k; j++) {
      if (j === t) continue;
      Q[t * k + t] += r[j * k + t] ** 2;
      Q[t * k + j] = -r[j * k + t] * r[t * k + j];
    }
  }
  const eps = 0.005 / k;
  for (let iter = 0; iter < Math.max(100, k); iter++) {
    let pQp = 0;
    for (let t = 0; t < k; t++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += Q[t * k + j] * out[j];
      Qp[t] = s;
      pQp += out[t] * s;
    }
    let maxError = 0;
    for (let t = 0; t < k; t++) maxError = Math.max(maxError, Math.abs(Qp[t] - pQp));
    if (maxError < eps) break;
    for (let t = 0; t < k; t++) {
      const diff = (-Qp[t] + pQp) / Q[t * k + t];
      out[t] += diff;
      pQp = (pQp + diff * (diff * Q[t * k + t] + 2 * Qp[t])) / (1 + diff) / (1 + diff);
      for (let j = 0; j < k; j++) {
        Qp[j] = (Qp[j] + diff * Q[t * k + j]) / (1 + diff);
        out[j] /= 1 + diff;
      }
    }
  }
}

/**
 * The SVM as an API answers, without libsvm (which predicts a few hundred rows a second): kernel
 * rows K = exp(−γ‖x − sv‖²) from ‖x‖² + ‖sv‖² − 2 x·svᵀ (one matmul; relu because rounding can
 * make a distance slightly negative, i.e. a kernel value above 1), every one-vs-one decision
 * value by a second matmul, then libsvm's own probability method per row in JS (k² work): Platt
 * sigmoids clipped to [1e-7, 1 − 1e-7], then pairwise coupling.
 */
export function svmTarget(id: string, p: SvmParams, inputShape: [number, number, number], testAccuracy = NaN): Target {
  checkSvmParams(p);
  const k = p.labels.length;
  const total = p.nSV.reduce((a, b) => a + b, 0);
  const start = p.nSV.map((_, i) => p.nSV.slice(0, i).reduce((a, b) => a + b, 0));
  const pairList = pairs(k);
  const P = pairList.length;
  // W[s, q]: the dual coefficient with which support vector s votes in pair q = (i, j). libsvm
  // stores it in sv_coef row j−1 for vectors of class i, and row i for vectors of class j.
  const W = new Float32Array(total * P);
  pairList.forEach(([i, j], q) => {
    for (let s = start[i]; s < start[i] + p.nSV[i]; s++) W[s * P + q] = p.coef[j - 1][s];
    for (let s = start[j]; s < start[j] + p.nSV[j]; s++) W[s * P + q] = p.coef[i][s];
  });
  const sv = tf.tensor2d(p.supportVectors, [total, p.features]);
  const w = tf.tensor2d(W, [total, P]);
  const rho = tf.tensor1d(p.rho);
  // The same kernel code as the precomputed training matrix, so training and serving round alike.
  const decisionValues = (x: tf.Tensor) =>
    predictBatched((batch) => tf.sub(tf.matMul(rbfKernel(batch.reshape([batch.shape[0], p.features]), sv, p.gamma), w), rho) as tf.Tensor2D, x, 512);

  const minProb = 1e-7;
  const r = new Float64Array(k * k);
  const out = new Float64Array(k);
  const Q = new Float64Array(k * k);
  const Qp = new Float64Array(k);
  const predictProba = async (x: tf.Tensor): Promise<tf.Tensor2D> => {
    const n = x.shape[0];
    const dec = decisionValues(x);
    const values = await dec.data();
    dec.dispose();
    const probs = new Float32Array(n * p.classes);
    for (let row = 0; row < n; row++) {
      for (let q = 0; q < P; q++) {
        const [i, j] = pairList[q];
        const rij = Math.min(Math.max(sigmoid(values[row * P + q], p.probA[q], p.probB[q]), minProb), 1 - minProb);
        r[i * k + j] = rij;
        r[j * k + i] = 1 - rij;
      }
      if (k === 2) {
        // libsvm takes the one pairwise probability as it is for two classes.
        out[0] = r[1];
        out[1] = r[2];
      } else couplePairwise(r, k, out, Q, Qp);
      for (let i = 0; i < k; i++) probs[row * p.classes + p.labels[i]] = out[i];
    }
    return tf.tensor2d(probs, [n, p.classes]);
  };

  return {
    id,
    family: 'svm',
    inputShape,
    classes: p.classes,
    testAccuracy,
    predictProba,
    dispose: () => tf.dispose([sv, w, rho]),
  };
}

export const svmSchema = z.strictObject({
  ...baseFields,
  family: z.literal('svm'),
  trainSize: count.default(5_000),
  C: z.number().positive().default(5),
  gamma: z.number().positive().default(0.03),
});
export type SvmSpec = Omit<z.output<typeof svmSchema>, 'task'> & { id: string; task?: TaskName };

export const svmFamily: FamilyModule<SvmSpec> = {
  name: 'svm',
  schema: svmSchema,
  async train(spec, data, { inputShape, classes }) {
    const { params, reference } = await fitSvm(data, classes, spec.C, spec.gamma);
    reference.free();
    const { supportVectors, ...rest } = params;
    return { target: svmTarget(spec.id, params, inputShape), files: { 'sv.bin': f32Bytes(supportVectors) }, params: rest };
  },
  async restore(spec, files, params, { inputShape }) {
    return svmTarget(spec.id, { ...(params as Omit<SvmParams, 'supportVectors'>), supportVectors: bytesF32(files['sv.bin'], 'sv.bin') }, inputShape);
  },
};
