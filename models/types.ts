import type * as tf from '@tensorflow/tfjs';

export const STUDENT_ARCHS = ['mlp', 'lenet5', 'cnn-small', 'cnn-wide', 'vgg-mini', 'resnet-mini'] as const;
export type StudentArch = (typeof STUDENT_ARCHS)[number];

export interface StudentSpec {
  arch: StudentArch;
  epochs: number;
  batchSize: number;
  lr: number;
}

export type TargetFamily = 'cnn' | 'svm' | 'naive-bayes';

export type TargetSpec =
  | { id: string; family: 'cnn'; arch: StudentArch; trainSize: number; epochs: number; batchSize: number; lr: number; seed: number }
  | { id: string; family: 'svm'; trainSize: number; C: number; gamma: number; seed: number }
  | { id: string; family: 'naive-bayes'; trainSize: number; varSmoothing: number; seed: number };

export interface Target {
  id: string;
  family: TargetFamily;
  /** The student architecture the target itself uses, when it is one (CNN targets); side info `architecture: known` uses it. */
  arch?: StudentArch;
  inputShape: [number, number, number];
  classes: number;
  /** Accuracy on the dataset's eval split, measured when trained (or loaded). */
  testAccuracy: number;
  /** x: [n, ...inputShape] in [0,1]. Returns [n, classes], rows summing to 1. Caller disposes both. */
  predictProba(x: tf.Tensor): tf.Tensor2D;
  dispose(): void;
}

/** What an attack returns: anything that predicts. */
export interface Imitation {
  /** x: [n, ...inputShape]. Returns [n, classes] scores whose argmax is the predicted class. */
  predict(x: tf.Tensor): tf.Tensor2D;
  dispose(): void;
}
