import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { toTensor } from '../../datasets/split.ts';
import type { Split } from '../../datasets/types.ts';
import { withSeed } from '../seed.ts';
import { buildStudent } from '../students.ts';
import { fitSoft, logitsOf, predictBatched } from '../train.ts';
import { STUDENT_ARCHS, type StudentArch, type Target } from '../types.ts';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export interface CnnTrainOptions {
  arch: StudentArch;
  epochs: number;
  batchSize: number;
  lr: number;
  seed: number;
}

export async function fitCnn(data: Split, inputShape: [number, number, number], classes: number, o: CnnTrainOptions): Promise<tf.LayersModel> {
  const model = await withSeed(o.seed, () => buildStudent(o.arch, inputShape, classes));
  const x = toTensor(data, inputShape);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(data.y, 'int32'), classes).toFloat() as tf.Tensor2D);
  try {
    const { losses } = await fitSoft(model, x, y, { epochs: o.epochs, batchSize: o.batchSize, lr: o.lr, seed: o.seed });
    const last = losses.at(-1);
    // A diverged network answers NaN probabilities; better to refuse it here than deep in a sweep.
    if (last !== undefined && !Number.isFinite(last)) throw new Error(`cnn target (${o.arch}): training diverged (loss ${last} after ${losses.length} epochs); lower lr (now ${o.lr})`);
  } catch (err) {
    model.dispose();
    throw err;
  } finally {
    tf.dispose([x, y]);
  }
  return model;
}

/** The model answers logits; the target answers their softmax. */
export function cnnTarget(id: string, arch: StudentArch, model: tf.LayersModel, inputShape: [number, number, number], classes: number, testAccuracy = NaN): Target {
  const logits = logitsOf(model);
  return {
    id,
    family: 'cnn',
    arch,
    inputShape,
    classes,
    testAccuracy,
    predictProba: async (x) => predictBatched((b) => tf.softmax(logits(b)), x),
    dispose: () => model.dispose(),
  };
}

/** tfjs has no file:// handler without tfjs-node: the topology and weights go through memory. */
export async function serializeModel(model: tf.LayersModel): Promise<{ topology: Uint8Array; weights: Uint8Array }> {
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      saved = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!saved?.weightData || !saved.weightSpecs) throw new Error('model serialisation produced no weights');
  return {
    topology: new TextEncoder().encode(JSON.stringify({ modelTopology: saved.modelTopology, weightSpecs: saved.weightSpecs })),
    // Large models may hand their weights over in several buffers.
    weights: new Uint8Array(tf.io.CompositeArrayBuffer.join(saved.weightData)),
  };
}

/** Inverse of serializeModel; throws (rather than loading garbage) when the weights do not match the topology. */
export async function deserializeModel(topology: Uint8Array | undefined, weights: Uint8Array | undefined): Promise<tf.LayersModel> {
  if (!topology || !weights) throw new Error('cnn cache entry lacks model.json or weights.bin');
  const { modelTopology, weightSpecs } = JSON.parse(new TextDecoder().decode(topology)) as { modelTopology: object; weightSpecs: tf.io.WeightsManifestEntry[] };
  const want = weightSpecs.reduce((sum, s) => sum + s.shape.reduce((a, b) => a * b, 1) * 4, 0);
  if (weightSpecs.some((s) => s.dtype !== 'float32') || want !== weights.byteLength) {
    throw new Error(`cnn weights: ${weights.byteLength} bytes where the topology needs ${want} bytes of float32`);
  }
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology, weightSpecs, weightData: weights.slice().buffer }));
}

export const cnnSchema = z.strictObject({
  ...baseFields,
  family: z.literal('cnn'),
  arch: z.enum(STUDENT_ARCHS).default('cnn-small'),
  trainSize: count.default(10_000),
  epochs: count.default(3),
  batchSize: count.default(64),
  lr: z.number().positive().default(0.001),
});
export type CnnSpec = Omit<z.output<typeof cnnSchema>, 'task'> & { id: string; task?: TaskName };

export const cnnFamily: FamilyModule<CnnSpec> = {
  name: 'cnn',
  schema: cnnSchema,
  async train(spec, data, { inputShape, classes }) {
    const model = await fitCnn(data, inputShape, classes, spec);
    const { topology, weights } = await serializeModel(model);
    return { target: cnnTarget(spec.id, spec.arch, model, inputShape, classes), files: { 'model.json': topology, 'weights.bin': weights }, params: {} };
  },
  async restore(spec, files, _params, { inputShape, classes }) {
    return cnnTarget(spec.id, spec.arch, await deserializeModel(files['model.json'], files['weights.bin']), inputShape, classes);
  },
};
