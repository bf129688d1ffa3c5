import type * as tf from '@tensorflow/tfjs';
import type { TaskName } from '../datasets/tasks.ts';
import type { CnnSpec } from './targets/cnn.ts';
import type { LinearSvmSpec } from './targets/linear-svm.ts';
import type { LogregSpec } from './targets/logreg.ts';
import type { MlpSpec } from './targets/mlp.ts';
import type { NaiveBayesSpec } from './targets/naive-bayes.ts';
import type { SvmSpec } from './targets/svm.ts';
import type { TreeSpec } from './targets/tree.ts';

export const STUDENT_ARCHS = ['mlp', 'lenet5', 'cnn-small', 'cnn-wide', 'vgg-mini', 'resnet-mini'] as const;
export type StudentArch = (typeof STUDENT_ARCHS)[number];

export interface StudentSpec {
  arch: StudentArch;
  epochs: number;
  batchSize: number;
  lr: number;
}

export const TARGET_FAMILIES = ['cnn', 'svm', 'naive-bayes', 'logreg', 'mlp', 'tree', 'linear-svm'] as const;
export type TargetFamily = (typeof TARGET_FAMILIES)[number];

/** Each family's spec is the output of its config schema (models/targets/<family>.ts). */
export type TargetSpec = CnnSpec | SvmSpec | NaiveBayesSpec | LogregSpec | MlpSpec | TreeSpec | LinearSvmSpec;

/**
 * What side information "architecture known" tells the attacker about a target: its model class
 * and, where it has one, its shape. The exact attacks of Tramèr et al. assume exactly this much.
 */
export interface ModelClass {
  family: TargetFamily;
  /** Hidden layer widths (MLP targets). */
  hidden?: number[];
}

export interface Target {
  id: string;
  family: TargetFamily;
  /** The student architecture the target itself uses, when it is one (CNN targets); side info `architecture: known` uses it. */
  arch?: StudentArch;
  /** Model class and shape, for attackers whose side information includes the architecture. */
  model?: ModelClass;
  inputShape: [number, number, number];
  /** Classes of the target's task (2 for binary tasks). */
  classes: number;
  /** The labels it was trained on ('digits' unless a binary task). */
  task?: TaskName;
  /** Accuracy on the dataset's eval split (labels mapped by the task), measured when trained (or loaded). */
  testAccuracy: number;
  /**
   * x: [n, ...inputShape] in [0,1]. Resolves to [n, classes], rows summing to 1. Caller disposes
   * both. Asynchronous because some families compute off the tfjs backend (in float64, or in
   * libsvm's coupling), and x may live on a GPU, where only an asynchronous read exists in Node.
   */
  predictProba(x: tf.Tensor): Promise<tf.Tensor2D>;
  /**
   * The same probabilities computed in float64 on n flattened rows (n × classes, row-major).
   * Families whose parameters exact attacks recover (logreg, mlp, tree, linear-svm) have it, and
   * their predictProba is this function's answer rounded to float32, so the two never disagree.
   * NaN in x marks a missing feature; only targets with acceptsMissing take it.
   */
  predictProba64?(x: Float64Array, n: number): Float64Array;
  /** Each row's leaf identifier (decision trees); the 'leaf' disclosure returns it. */
  leafIds?(x: Float64Array, n: number): Int32Array;
  /** Takes incomplete queries: NaN features stop the walk at the node that tests them (as BigML's API does). */
  acceptsMissing?: boolean;
  dispose(): void;
}

/** What an attack returns: anything that predicts. */
export interface Imitation {
  /** x: [n, ...inputShape]. Resolves to [n, classes] scores whose argmax is the predicted class (asynchronous as Target.predictProba is). */
  predict(x: tf.Tensor): Promise<tf.Tensor2D>;
  dispose(): void;
}
