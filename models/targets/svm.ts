import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { subset } from '../../datasets/split.ts';
import type { Split } from '../../datasets/types.ts';
import { predictBatched } from '../train.ts';
import type { Target } from '../types.ts';

/** What the decision function needs, taken from a trained libsvm model. */
export interface SvmParams {
  gamma: number;
  classes: number;
  /** libsvm's class order: labels[i] is the class of its i-th block of support vectors. */
  labels: number[];
  /** Support vectors per class block, in libsvm's order. */
  nSV: number[];
  /** [totalSV × features] */
  supportVectors: Float32Array;
  features: number;
  /** (nr_class − 1) rows of totalSV dual coefficients. */
  coef: number[][];
  rho: number[];
  probA: number[];
  probB: number[];
}

interface LibSvm {
  train(x: number[][], y: number[]): void;
  serializeModel(): string;
  getSVIndices(): number[];
  predictProbability(x: number[][]): { prediction: number; estimates: { label: number; probability: number }[] }[];
  free(): void;
}
type LibSvmCtor = (new (opts: Record<string, unknown>) => LibSvm) & {
  KERNEL_TYPES: Record<string, number>;
  SVM_TYPES: Record<string, number>;
};

let libsvm: Promise<LibSvmCtor> | undefined;

/** libsvm-js's wasm build; its loader warns about streaming compilation in Node, which is noise. */
export function loadLibsvm(): Promise<LibSvmCtor> {
  libsvm ??= (async () => {
    const warn = console.warn;
    const error = console.error;
    const quiet = (orig: typeof console.warn) => (...args: unknown[]) => {
      if (!/wasm streaming compile failed|falling back to ArrayBuffer/.test(String(args[0]))) orig(...args);
    };
    console.warn = quiet(warn);
    console.error = quiet(error);
    try {
      return (await createRequire(import.meta.url)('libsvm-js')) as LibSvmCtor;
    } finally {
      console.warn = warn;
      console.error = error;
    }
  })();
  return libsvm;
}

function rows(split: Split): number[][] {
  const d = split.x.length / split.n;
  return Array.from({ length: split.n }, (_, r) => Array.from(split.x.subarray(r * d, (r + 1) * d)));
}

function numbersAfter(text: string, key: string): number[] {
  const line = text.split('\n').find((l) => l.startsWith(`${key} `));
  if (!line) throw new Error(`libsvm model has no "${key}" line`);
  return line.slice(key.length + 1).trim().split(/\s+/).map(Number);
}

/**
 * Trains an RBF C-SVC with Platt-scaled probabilities in libsvm, then keeps only what the decision
 * function needs. Support vectors come from the training rows by index (exact floats; the model
 * text rounds them); coefficients are read from the model text.
 */
export async function fitSvm(data: Split, classes: number, C: number, gamma: number): Promise<{ params: SvmParams; svm: LibSvm }> {
  const SVM = await loadLibsvm();
  const svm = new SVM({
    kernel: SVM.KERNEL_TYPES.RBF,
    type: SVM.SVM_TYPES.C_SVC,
    gamma,
    cost: C,
    probabilityEstimates: true,
    quiet: true,
  });
  svm.train(rows(data), Array.from(data.y));
  const text = svm.serializeModel();
  const labels = numbersAfter(text, 'label');
  const nSV = numbersAfter(text, 'nr_sv');
  const svLines = text.slice(text.indexOf('\nSV\n') + 4).split('\n').filter((l) => l.trim());
  const k = labels.length;
  const coef = Array.from({ length: k - 1 }, (_, j) => svLines.map((l) => Number(l.trim().split(/\s+/)[j])));
  // 0-based indices into the training rows, in the model's SV order.
  const indices = svm.getSVIndices();
  if (indices.length !== svLines.length) throw new Error(`libsvm gave ${indices.length} SV indices for ${svLines.length} SVs`);
  const sv = subset(data, indices);
  return {
    svm,
    params: {
      gamma,
      classes,
      labels,
      nSV,
      supportVectors: sv.x,
      features: data.x.length / data.n,
      coef,
      rho: numbersAfter(text, 'rho'),
      probA: numbersAfter(text, 'probA'),
      probB: numbersAfter(text, 'probB'),
    },
  };
}

/** Pair order of libsvm's one-vs-one decision values: (0,1), (0,2), …, (k−2,k−1). */
function pairs(k: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) out.push([i, j]);
  return out;
}

/** Platt's sigmoid 1/(1 + exp(A·f + B)), in the form that does not overflow. */
function sigmoid(f: number, A: number, B: number): number {
  const z = f * A + B;
  return z >= 0 ? Math.exp(-z) / (1 + Math.exp(-z)) : 1 / (1 + Math.exp(z));
}

/**
 * Multiclass probabilities from pairwise ones by Wu, Lin & Weng (2004), method 2 — the coupling
 * libsvm itself uses: minimise Σ (r_ji p_i − r_ij p_j)² on the simplex by coordinate descent.
 */
export function couplePairwise(r: Float64Array, k: number, out: Float64Array): void {
  const Q = new Float64Array(k * k);
  const Qp = new Float64Array(k);
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
 * The SVM as an API answers: kernel rows K = exp(−γ‖x − sv‖²) by one matmul, all one-vs-one
 * decision values by a second, then Platt scaling and pairwise coupling per row in JS (k² work).
 */
export function svmTarget(id: string, p: SvmParams, inputShape: [number, number, number], testAccuracy = NaN): Target {
  const k = p.labels.length;
  const total = p.nSV.reduce((a, b) => a + b, 0);
  const start = p.nSV.map((_, i) => p.nSV.slice(0, i).reduce((a, b) => a + b, 0));
  const pairList = pairs(k);
  // W[s, pair]: the dual coefficient with which support vector s votes in that pair's decision.
  const W = new Float32Array(total * pairList.length);
  pairList.forEach(([i, j], q) => {
    for (let s = start[i]; s < start[i] + p.nSV[i]; s++) W[s * pairList.length + q] = p.coef[j - 1][s];
    for (let s = start[j]; s < start[j] + p.nSV[j]; s++) W[s * pairList.length + q] = p.coef[i][s];
  });
  const sv = tf.tensor2d(p.supportVectors, [total, p.features]);
  const svSq = tf.sum(tf.square(sv), 1);
  const svT = sv.transpose();
  const w = tf.tensor2d(W, [total, pairList.length]);
  const rho = tf.tensor1d(p.rho);

  const decisionValues = (x: tf.Tensor) =>
    predictBatched((batch) => {
      const flat = batch.reshape([batch.shape[0], p.features]) as tf.Tensor2D;
      const dist = tf.add(tf.sub(tf.sum(tf.square(flat), 1, true), tf.mul(tf.matMul(flat, svT), 2)), svSq);
      const K = tf.exp(tf.mul(tf.relu(dist), -p.gamma)) as tf.Tensor2D;
      return tf.sub(tf.matMul(K, w), rho) as tf.Tensor2D;
    }, x, 256);

  const predictProba = (x: tf.Tensor): tf.Tensor2D => {
    const dec = decisionValues(x);
    const values = dec.dataSync();
    dec.dispose();
    const n = x.shape[0];
    const probs = new Float32Array(n * p.classes);
    const r = new Float64Array(k * k);
    const out = new Float64Array(k);
    const minProb = 1e-7;
    for (let row = 0; row < n; row++) {
      pairList.forEach(([i, j], q) => {
        const rij = Math.min(Math.max(sigmoid(values[row * pairList.length + q], p.probA[q], p.probB[q]), minProb), 1 - minProb);
        r[i * k + j] = rij;
        r[j * k + i] = 1 - rij;
      });
      if (k === 2) {
        out[0] = r[1];
        out[1] = r[2];
      } else couplePairwise(r, k, out);
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
    dispose: () => tf.dispose([sv, svSq, svT, w, rho]),
  };
}
