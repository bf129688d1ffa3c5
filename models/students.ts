import * as tf from '@tensorflow/tfjs';
import { STUDENT_ARCHS, type StudentArch } from './types.ts';

type Shape = [number, number, number];

const conv = (filters: number, kernelSize: number, extra: Partial<Parameters<typeof tf.layers.conv2d>[0]> = {}) =>
  tf.layers.conv2d({ filters, kernelSize, activation: 'relu', ...extra });

const BUILDERS: Record<StudentArch, (inputShape: Shape, classes: number) => tf.layers.Layer[]> = {
  mlp: (inputShape, classes) => [
    tf.layers.flatten({ inputShape }),
    tf.layers.dense({ units: 256, activation: 'relu' }),
    tf.layers.dense({ units: 128, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ],
  // LeCun et al. 1998, with ReLU and max pooling as in most modern re-implementations.
  lenet5: (inputShape, classes) => [
    conv(6, 5, { inputShape, padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    conv(16, 5, { padding: 'valid' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 120, activation: 'relu' }),
    tf.layers.dense({ units: 84, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ],
  // The reference student whose speed the project tracks against PyTorch.
  'cnn-small': (inputShape, classes) => [
    conv(16, 3, { inputShape, padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    conv(32, 3, { strides: 2, padding: 'same' }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 64, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ],
};

/** An untrained model whose last layer outputs logits (softmax is applied by the loss and by predict). */
export function buildStudent(arch: StudentArch, inputShape: Shape, classes: number): tf.Sequential {
  const build = BUILDERS[arch];
  if (!build) throw new Error(`unknown student architecture "${arch}": choose one of ${STUDENT_ARCHS.join(', ')}`);
  return tf.sequential({ name: arch.replace(/-/g, '_'), layers: build(inputShape, classes) });
}
