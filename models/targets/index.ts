import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { accuracy, argmaxRows } from '../../bench/metric.ts';
import { fingerprint, subset, toTensor } from '../../datasets/split.ts';
import type { Dataset, Split } from '../../datasets/types.ts';
import type { Target, TargetFamily, TargetSpec } from '../types.ts';
import { bytesF32, cacheKey, f32Bytes, readEntry, writeEntry } from './cache.ts';
import { cnnTarget, deserializeModel, fitCnn, serializeModel } from './cnn.ts';
import { fitNaiveBayes, naiveBayesTarget, type NaiveBayesParams } from './naive-bayes.ts';
import { fitSvm, svmTarget, type SvmParams } from './svm.ts';

export const TARGET_FAMILIES: readonly TargetFamily[] = ['cnn', 'svm', 'naive-bayes'];

export interface TargetOptions {
  cacheDir: string;
  log?(message: string): void;
}

type Built = { target: Target; files: Record<string, Uint8Array>; meta: Record<string, unknown> };

async function train(spec: TargetSpec, data: Split, ds: Dataset): Promise<Built> {
  const { inputShape, classes } = ds;
  switch (spec.family) {
    case 'cnn': {
      const model = await fitCnn(data, inputShape, classes, spec);
      const { topology, weights } = await serializeModel(model);
      return { target: cnnTarget(spec.id, spec.arch, model, inputShape, classes), files: { 'model.json': topology, 'weights.bin': weights }, meta: {} };
    }
    case 'svm': {
      const { params, svm } = await fitSvm(data, classes, spec.C, spec.gamma);
      svm.free();
      const { supportVectors, ...rest } = params;
      return { target: svmTarget(spec.id, params, inputShape), files: { 'sv.bin': f32Bytes(supportVectors) }, meta: rest };
    }
    case 'naive-bayes': {
      const params = fitNaiveBayes(data, classes, spec.varSmoothing);
      const { means, variances, logPriors, ...rest } = params;
      return {
        target: naiveBayesTarget(spec.id, params, inputShape),
        files: { 'means.bin': f32Bytes(means), 'variances.bin': f32Bytes(variances), 'priors.bin': f32Bytes(logPriors) },
        meta: rest,
      };
    }
  }
}

async function restore(spec: TargetSpec, ds: Dataset, files: Record<string, Uint8Array>, meta: Record<string, unknown>): Promise<Target> {
  const { inputShape, classes } = ds;
  switch (spec.family) {
    case 'cnn':
      return cnnTarget(spec.id, spec.arch, await deserializeModel(files['model.json'], files['weights.bin']), inputShape, classes);
    case 'svm':
      return svmTarget(spec.id, { ...(meta as Omit<SvmParams, 'supportVectors'>), supportVectors: bytesF32(files['sv.bin']) }, inputShape);
    case 'naive-bayes':
      return naiveBayesTarget(spec.id, {
        ...(meta as Pick<NaiveBayesParams, 'classes' | 'features'>),
        means: bytesF32(files['means.bin']),
        variances: bytesF32(files['variances.bin']),
        logPriors: bytesF32(files['priors.bin']),
      }, inputShape);
  }
}

/** Accuracy on the dataset's eval split, measured each time: the eval split belongs to the sweep, not the target. */
async function evalAccuracy(target: Target, evalSplit: Split, ds: Dataset): Promise<number> {
  const pred = new Int32Array(evalSplit.n);
  for (let s = 0; s < evalSplit.n; s += 1000) {
    const e = Math.min(evalSplit.n, s + 1000);
    const probs = tf.tidy(() => target.predictProba(toTensor(evalSplit, ds.inputShape, s, e)));
    pred.set(argmaxRows(await probs.data(), ds.classes), s);
    probs.dispose();
  }
  return accuracy(pred, evalSplit.y);
}

/**
 * The trained target for spec: from cacheDir/targets/ when an intact entry for the same spec and
 * training rows exists, else trained on the first spec.trainSize rows of ds's train split and cached.
 */
export async function getTarget(spec: TargetSpec, ds: Dataset, opts: TargetOptions): Promise<Target & { fromCache: boolean }> {
  const log = opts.log ?? (() => {});
  const all = ds.split('train');
  if (spec.trainSize > all.n) throw new RangeError(`target ${spec.id}: trainSize ${spec.trainSize} exceeds the ${all.n} training rows`);
  const data = spec.trainSize === all.n ? all : subset(all, Int32Array.from({ length: spec.trainSize }, (_, i) => i));
  const { id: _id, ...identity } = spec;
  const key = cacheKey(identity, fingerprint(data));
  const dir = join(opts.cacheDir, 'targets', `${spec.family}-${key.slice(0, 16)}`);

  let target: Target | undefined;
  let fromCache = false;
  const entry = await readEntry<Record<string, unknown>>(dir);
  if (entry) {
    try {
      target = await restore(spec, ds, entry.files, entry.meta);
      fromCache = true;
      log(`target ${spec.id}: loaded from cache ${dir}`);
    } catch (err) {
      log(`target ${spec.id}: cache entry unusable (${(err as Error).message}); retraining`);
    }
  }
  if (!target) {
    log(`target ${spec.id}: training ${spec.family} on ${data.n} rows…`);
    const started = performance.now();
    const built = await train(spec, data, ds);
    await writeEntry(dir, built.meta, built.files);
    target = built.target;
    log(`target ${spec.id}: trained in ${((performance.now() - started) / 1000).toFixed(1)} s, cached in ${dir}`);
  }
  const testAccuracy = await evalAccuracy(target, ds.split('eval'), ds);
  return { ...target, testAccuracy, fromCache };
}
