import * as tf from '@tensorflow/tfjs';
import { toTensor } from '../../datasets/split.ts';
import type { Split } from '../../datasets/types.ts';
import { withSeed } from '../seed.ts';
import { buildStudent } from '../students.ts';
import { fitSoft, predictBatched } from '../train.ts';
import type { StudentArch, Target } from '../types.ts';

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
    await fitSoft(model, x, y, { epochs: o.epochs, batchSize: o.batchSize, lr: o.lr, seed: o.seed });
  } finally {
    tf.dispose([x, y]);
  }
  return model;
}

export function cnnTarget(id: string, arch: StudentArch, model: tf.LayersModel, inputShape: [number, number, number], classes: number, testAccuracy = NaN): Target {
  return {
    id,
    family: 'cnn',
    arch,
    inputShape,
    classes,
    testAccuracy,
    predictProba: (x) => predictBatched((b) => tf.softmax(model.predict(b) as tf.Tensor2D), x),
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
  const weightData = saved.weightData as ArrayBuffer;
  return {
    topology: new TextEncoder().encode(JSON.stringify({ modelTopology: saved.modelTopology, weightSpecs: saved.weightSpecs })),
    weights: new Uint8Array(weightData.slice(0)),
  };
}

export async function deserializeModel(topology: Uint8Array, weights: Uint8Array): Promise<tf.LayersModel> {
  const { modelTopology, weightSpecs } = JSON.parse(new TextDecoder().decode(topology));
  const weightData = weights.slice().buffer;
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology, weightSpecs, weightData }));
}
