import * as tf from '@tensorflow/tfjs';
import { STUDENT_ARCHS, type StudentArch } from './types.ts';

type Shape = [number, number, number];

const conv = (filters: number, kernelSize: number, extra: Partial<Parameters<typeof tf.layers.conv2d>[0]> = {}) =>
  tf.layers.conv2d({ filters, kernelSize, activation: 'relu', ...extra });

const stack = (layers: tf.layers.Layer[]) => tf.sequential({ layers });

/** Two 3×3 convolutions with an identity shortcut (He et al. 2016), without batch norm to stay small. */
function residual(x: tf.SymbolicTensor, filters: number): tf.SymbolicTensor {
  const inner = conv(filters, 3, { padding: 'same' }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.conv2d({ filters, kernelSize: 3, padding: 'same' }).apply(inner) as tf.SymbolicTensor;
  return tf.layers.reLU().apply(tf.layers.add().apply([out, x])) as tf.SymbolicTensor;
}

const BUILDERS: Record<StudentArch, (inputShape: Shape, classes: number) => tf.LayersModel> = {
  mlp: (inputShape, classes) => stack([
    tf.layers.flatten({ inputShape }),
    tf.layers.dense({ units: 256, activation: 'relu' }),
    tf.layers.dense({ units: 128, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ]),
  // LeCun et al. 1998, with ReLU and max pooling as in most modern re-implementations.
  lenet5: (inputShape, classes) => stack([
    conv(6, 5, { inputShape, padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    conv(16, 5, { padding: 'valid' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 120, activation: 'relu' }),
    tf.layers.dense({ units: 84, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ]),
  // The reference student whose speed the project tracks against PyTorch.
  'cnn-small': (inputShape, classes) => stack([
    conv(16, 3, { inputShape, padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    conv(32, 3, { strides: 2, padding: 'same' }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 64, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ]),
  // Twice the channels of a small CNN and a wider head: more capacity for the same depth.
  'cnn-wide': (inputShape, classes) => stack([
    conv(32, 3, { inputShape, padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    conv(64, 3, { padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 128, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ]),
  // VGG's pattern (Simonyan & Zisserman 2015) at MNIST scale: pairs of 3×3 convolutions, then pooling.
  'vgg-mini': (inputShape, classes) => stack([
    conv(16, 3, { inputShape, padding: 'same' }),
    conv(16, 3, { padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    conv(32, 3, { padding: 'same' }),
    conv(32, 3, { padding: 'same' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 128, activation: 'relu' }),
    tf.layers.dense({ units: classes }),
  ]),
  // A stem, one residual block per stage, global average pooling: the ResNet shape in miniature.
  'resnet-mini': (inputShape, classes) => {
    const input = tf.input({ shape: inputShape });
    let x = conv(16, 3, { padding: 'same' }).apply(input) as tf.SymbolicTensor;
    x = residual(x, 16);
    x = conv(32, 3, { strides: 2, padding: 'same' }).apply(x) as tf.SymbolicTensor;
    x = residual(x, 32);
    x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
    const logits = tf.layers.dense({ units: classes }).apply(x) as tf.SymbolicTensor;
    return tf.model({ inputs: input, outputs: logits });
  },
};

/** An untrained model whose last layer outputs logits (softmax is applied by the loss and by predict). */
export function buildStudent(arch: StudentArch, inputShape: Shape, classes: number): tf.LayersModel {
  const build = BUILDERS[arch];
  if (!build) throw new Error(`unknown student architecture "${arch}": choose one of ${STUDENT_ARCHS.join(', ')}`);
  return build(inputShape, classes);
}
