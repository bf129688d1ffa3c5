import * as tf from '@tensorflow/tfjs';
import { createAdam } from './fused-adam.ts';
import { rng, shuffleInPlace } from './seed.ts';
import { hasStackedKernels, namedGrads, ownWeights, stackedGrads, type StackWeights } from './stacked-step.ts';
import { planStages, type Stage } from './stages.ts';
import type { FitOptions } from './train.ts';

/**
 * Students trained as one program (webgpu): cells interleaved in a thread that train the same
 * architecture on as many rows with the same schedule have their students stacked, K models in the
 * dispatches of one, each with its own data, shuffle and initial weights. Every model ends with
 * the weights it would have alone, bit for bit (test/webgpu-kernels.test.ts), so which cells meet
 * in a stack changes only the speed, never a result.
 */

export interface FitRequest {
  model: tf.LayersModel;
  x: tf.Tensor;
  targets: tf.Tensor2D;
  opts: FitOptions;
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

function signature(stages: Stage[]): string {
  return stages
    .map((s) => (s.kind === 'conv' ? `conv${s.kernel.shape}/${s.strides}/${s.pad}/${s.act}` : s.kind === 'dense' ? `dense${s.kernel.shape}/${s.act}` : s.kind === 'pool' ? `pool${s.size}/${s.strides}/${s.pad}` : 'flatten'))
    .join('|');
}

/** What requests must share to train as one program, or undefined where stacking does not apply. */
export function stackKey(r: FitRequest): string | undefined {
  if (!hasStackedKernels() || r.x.shape[0] === 0) return undefined;
  const stages = planStages(r.model);
  if (!stages) return undefined;
  const { epochs, batchSize, lr, temperature = 1 } = r.opts;
  return [signature(stages), r.x.shape.join('x'), r.targets.shape.join('x'), epochs, batchSize, lr, temperature].join(';');
}

/**
 * Trains the requests' models as one program (they share a stackKey): Adam on the distillation
 * loss, each model's rows shuffled by its own seed as fitSoft does. One model trains its own
 * variables; a stack trains [K, …] copies and writes each model's slice back at the end.
 */
export async function fitStacked(requests: FitRequest[]): Promise<{ losses: number[] }[]> {
  const k = requests.length;
  const perModel = requests.map((r) => planStages(r.model)!);
  const stages = perModel[0];
  const n = requests[0].x.shape[0];
  const { epochs, batchSize, lr, temperature = 1 } = requests[0].opts;
  const weights: StackWeights =
    k === 1
      ? ownWeights(stages)
      : stages.map((s, i) => {
          if (!('kernel' in s)) return undefined;
          const of = (pick: 'kernel' | 'bias') => tf.variable(tf.tidy(() => tf.stack(perModel.map((p) => (p[i] as Stage & { kernel: tf.Variable; bias: tf.Variable })[pick]))));
          return { kernel: of('kernel'), bias: of('bias') };
        });
  const vars = weights.flatMap((w) => (w ? [w.kernel as tf.Variable, w.bias as tf.Variable] : []));
  const x = k === 1 ? requests[0].x : tf.concat(requests.map((r) => r.x));
  const y = k === 1 ? requests[0].targets : tf.concat(requests.map((r) => r.targets));
  const adam = createAdam(lr);
  const randoms = requests.map((r) => rng(r.opts.seed, 'shuffle'));
  const orders = requests.map(() => Int32Array.from({ length: n }, (_, i) => i));
  const losses: number[][] = requests.map(() => []);
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      orders.forEach((order, m) => shuffleInPlace(order, randoms[m]));
      // Batch by batch, each model's rows of the batch in turn: a batch is one contiguous slice.
      const flat = new Int32Array(k * n);
      let at = 0;
      for (let start = 0; start < n; start += batchSize) {
        const size = Math.min(batchSize, n - start);
        for (let m = 0; m < k; m++) for (let j = 0; j < size; j++) flat[at++] = m * n + orders[m][start + j];
      }
      const index = tf.tensor1d(flat, 'int32');
      const total = tf.zeros(k === 1 ? [] : [k]);
      for (let start = 0; start < n; start += batchSize) {
        const size = Math.min(batchSize, n - start);
        tf.tidy(() => {
          const rows = index.slice(k * start, k * size);
          const { grads } = stackedGrads(stages, weights, k, tf.gather(x, rows), tf.gather(y, rows) as tf.Tensor2D, temperature, total);
          adam.apply(vars, namedGrads(weights, grads));
        });
        await nextTick();
      }
      const sums = await total.data();
      tf.dispose([total, index]);
      requests.forEach((r, m) => {
        losses[m].push(sums[m] / n);
        r.opts.onEpoch?.(epoch + 1, sums[m] / n);
      });
    }
    if (k > 1) {
      tf.tidy(() =>
        stages.forEach((s, i) => {
          if (!('kernel' in s)) return;
          const kernels = tf.unstack(weights[i]!.kernel);
          const biases = tf.unstack(weights[i]!.bias);
          perModel.forEach((p, m) => {
            const own = p[i] as Stage & { kernel: tf.Variable; bias: tf.Variable };
            own.kernel.assign(kernels[m]);
            own.bias.assign(biases[m]);
          });
        }),
      );
    }
  } finally {
    adam.dispose();
    if (k > 1) tf.dispose([...vars, x, y]);
  }
  return losses.map((l) => ({ losses: l }));
}

/** How many cells in this thread may still ask to train (the sweep's runner says; 1 alone). */
let quorum: () => number = () => 1;
/** How long a request waits for others to join its stack when not every cell has asked yet. */
const WINDOW_MS = 25;

/** Sets the quorum; returns what restores the previous one. */
export function setTrainingQuorum(count: () => number): () => void {
  const previous = quorum;
  quorum = count;
  return () => {
    quorum = previous;
  };
}

interface Waiting {
  key: string;
  request: FitRequest;
  resolve(v: { losses: number[] }): void;
  reject(err: unknown): void;
}
const waiting: Waiting[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;

/**
 * Trains a request's model, stacked with the others waiting under the same key: at once when
 * every cell of the thread is waiting (the quorum), else after WINDOW_MS.
 */
export function submitFit(request: FitRequest, key: string): Promise<{ losses: number[] }> {
  return new Promise((resolve, reject) => {
    waiting.push({ key, request, resolve, reject });
    if (waiting.length >= quorum()) flush();
    else timer ??= setTimeout(flush, WINDOW_MS);
  });
}

function flush(): void {
  if (timer) clearTimeout(timer);
  timer = undefined;
  const groups = new Map<string, Waiting[]>();
  for (const w of waiting.splice(0)) (groups.get(w.key) ?? groups.set(w.key, []).get(w.key)!).push(w);
  for (const group of groups.values()) {
    fitStacked(group.map((w) => w.request)).then(
      (results) => group.forEach((w, i) => w.resolve(results[i])),
      (err) => group.forEach((w) => w.reject(err)),
    );
  }
}
