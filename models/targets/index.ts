import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { accuracy } from '../../bench/metric.ts';
import { predictClasses } from '../../bench/score.ts';
import { fingerprint } from '../../datasets/split.ts';
import type { Dataset, Split } from '../../datasets/types.ts';
import { STUDENT_ARCHS, type Target, type TargetFamily, type TargetSpec } from '../types.ts';
import { bytesF32, cacheKey, f32Bytes, readEntry, writeEntry } from './cache.ts';
import { cnnTarget, deserializeModel, fitCnn, serializeModel } from './cnn.ts';
import { fitNaiveBayes, naiveBayesTarget, type NaiveBayesParams } from './naive-bayes.ts';
import { fitSvm, svmTarget, type SvmParams } from './svm.ts';

export const TARGET_FAMILIES: readonly TargetFamily[] = ['cnn', 'svm', 'naive-bayes'];

export interface TargetOptions {
  cacheDir: string;
  log?(message: string): void;
}

/** A target and whether it came from the cache (true) or was trained by this call. */
export type LoadedTarget = Target & { fromCache: boolean };

interface Meta {
  /** Family-specific parameters small enough for JSON. */
  params: Record<string, unknown>;
  /** Accuracy on the eval split the target was first scored on, and that split's fingerprint. */
  evaluated: { fingerprint: string; accuracy: number };
}

type Built = { target: Target; files: Record<string, Uint8Array>; params: Record<string, unknown> };

/** Fails fast, naming the field, on a spec no family could train. */
export function checkTargetSpec(spec: TargetSpec): void {
  const where = `target ${JSON.stringify(spec.id)}`;
  const need = (ok: boolean, field: string, rule: string, value: unknown) => {
    if (!ok) throw new RangeError(`${where}: ${field} must be ${rule}, got ${JSON.stringify(value)}`);
  };
  need(TARGET_FAMILIES.includes(spec.family), 'family', `one of ${TARGET_FAMILIES.join(', ')}`, spec.family);
  need(Number.isInteger(spec.trainSize) && spec.trainSize >= 1, 'trainSize', 'an integer ≥ 1', spec.trainSize);
  need(Number.isSafeInteger(spec.seed), 'seed', 'an integer', spec.seed);
  switch (spec.family) {
    case 'cnn':
      need(STUDENT_ARCHS.includes(spec.arch), 'arch', `one of ${STUDENT_ARCHS.join(', ')}`, spec.arch);
      need(Number.isInteger(spec.epochs) && spec.epochs >= 1, 'epochs', 'an integer ≥ 1', spec.epochs);
      need(Number.isInteger(spec.batchSize) && spec.batchSize >= 1, 'batchSize', 'an integer ≥ 1', spec.batchSize);
      need(spec.lr > 0 && Number.isFinite(spec.lr), 'lr', 'a number > 0', spec.lr);
      break;
    case 'svm':
      need(spec.C > 0 && Number.isFinite(spec.C), 'C', 'a number > 0', spec.C);
      need(spec.gamma > 0 && Number.isFinite(spec.gamma), 'gamma', 'a number > 0', spec.gamma);
      break;
    case 'naive-bayes':
      need(spec.varSmoothing >= 0 && Number.isFinite(spec.varSmoothing), 'varSmoothing', 'a number ≥ 0', spec.varSmoothing);
      break;
  }
}

async function train(spec: TargetSpec, data: Split, ds: Dataset): Promise<Built> {
  const { inputShape, classes } = ds;
  switch (spec.family) {
    case 'cnn': {
      const model = await fitCnn(data, inputShape, classes, spec);
      const { topology, weights } = await serializeModel(model);
      return { target: cnnTarget(spec.id, spec.arch, model, inputShape, classes), files: { 'model.json': topology, 'weights.bin': weights }, params: {} };
    }
    case 'svm': {
      const { params, reference } = await fitSvm(data, classes, spec.C, spec.gamma);
      reference.free();
      const { supportVectors, ...rest } = params;
      return { target: svmTarget(spec.id, params, inputShape), files: { 'sv.bin': f32Bytes(supportVectors) }, params: rest };
    }
    case 'naive-bayes': {
      const params = fitNaiveBayes(data, classes, spec.varSmoothing);
      const { means, variances, logPriors, ...rest } = params;
      return {
        target: naiveBayesTarget(spec.id, params, inputShape),
        files: { 'means.bin': f32Bytes(means), 'variances.bin': f32Bytes(variances), 'priors.bin': f32Bytes(logPriors) },
        params: rest,
      };
    }
  }
}

/** Rebuilds a target from a cache entry; throws on anything inconsistent (each family checks its parameters). */
async function restore(spec: TargetSpec, ds: Dataset, files: Record<string, Uint8Array>, params: Record<string, unknown>): Promise<Target> {
  const { inputShape, classes } = ds;
  if (params.classes !== undefined && params.classes !== classes) throw new Error(`entry has ${String(params.classes)} classes, the dataset ${classes}`);
  switch (spec.family) {
    case 'cnn':
      return cnnTarget(spec.id, spec.arch, await deserializeModel(files['model.json'], files['weights.bin']), inputShape, classes);
    case 'svm':
      return svmTarget(spec.id, { ...(params as Omit<SvmParams, 'supportVectors'>), supportVectors: bytesF32(files['sv.bin'], 'sv.bin') }, inputShape);
    case 'naive-bayes':
      return naiveBayesTarget(
        spec.id,
        {
          ...(params as Pick<NaiveBayesParams, 'classes' | 'features'>),
          means: bytesF32(files['means.bin'], 'means.bin'),
          variances: bytesF32(files['variances.bin'], 'variances.bin'),
          logPriors: bytesF32(files['priors.bin'], 'priors.bin'),
        },
        inputShape,
      );
  }
}

/** Accuracy of target on split, in slices so no single intermediate grows with the split. */
export async function measureAccuracy(target: Target, split: Split, ds: Dataset): Promise<number> {
  return accuracy(await predictClasses((x) => target.predictProba(x), split, ds.inputShape), split.y);
}

/** The first n rows of a split, without copying. */
function firstRows(split: Split, n: number): Split {
  const d = split.x.length / split.n;
  return n === split.n ? split : { x: split.x.subarray(0, n * d), y: split.y.subarray(0, n), n };
}

/**
 * The trained target for spec. The cache entry lives in cacheDir/targets/<family>-<key>/, key =
 * sha256 of the spec (its id excepted: a label, not part of the model), the fingerprint of the
 * training rows and the cache format. An intact entry is loaded; a missing or damaged one is
 * (re)trained on the first spec.trainSize rows of ds's train split and written atomically.
 * testAccuracy is on ds's eval split: stored with the entry, and measured again when the eval
 * split differs from the one it was stored for.
 */
export async function getTarget(spec: TargetSpec, ds: Dataset, opts: TargetOptions): Promise<LoadedTarget> {
  checkTargetSpec(spec);
  const log = opts.log ?? (() => {});
  const all = ds.split('train');
  if (spec.trainSize > all.n) throw new RangeError(`target "${spec.id}": trainSize ${spec.trainSize} exceeds the dataset's ${all.n} training rows`);
  const data = firstRows(all, spec.trainSize);
  const { id: _label, ...identity } = spec;
  const dir = join(opts.cacheDir, 'targets', `${spec.family}-${cacheKey(identity, fingerprint(data))}`);
  const evalSplit = ds.split('eval');
  const evalPrint = fingerprint(evalSplit);

  const entry = await readEntry<Meta>(dir);
  if (entry) {
    let target: Target | undefined;
    try {
      target = await restore(spec, ds, entry.files, entry.meta.params);
      const known = entry.meta.evaluated?.fingerprint === evalPrint ? entry.meta.evaluated.accuracy : undefined;
      const testAccuracy = typeof known === 'number' ? known : await measureAccuracy(target, evalSplit, ds);
      log(`target ${spec.id}: loaded ${spec.family} from cache ${dir}`);
      return { ...target, testAccuracy, fromCache: true };
    } catch (err) {
      target?.dispose();
      log(`target ${spec.id}: cache entry ${dir} is unusable (${(err as Error).message}); retraining`);
    }
  } else if (existsSync(dir)) {
    log(`target ${spec.id}: cache entry ${dir} is damaged or from another cache format; retraining`);
  }

  log(`target ${spec.id}: training ${spec.family} on ${data.n} rows…`);
  const started = performance.now();
  const built = await train(spec, data, ds);
  const testAccuracy = await measureAccuracy(built.target, evalSplit, ds);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  try {
    await writeEntry<Meta>(dir, { params: built.params, evaluated: { fingerprint: evalPrint, accuracy: testAccuracy } }, built.files);
    log(`target ${spec.id}: trained in ${seconds} s, cached in ${dir}`);
  } catch (err) {
    // The target is good; only the next run loses. Say so rather than throw the training away.
    log(`target ${spec.id}: trained in ${seconds} s, but could not be cached in ${dir}: ${(err as Error).message}`);
  }
  return { ...built.target, testAccuracy, fromCache: false };
}
