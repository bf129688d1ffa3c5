import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { accuracy } from '../../bench/metric.ts';
import { predictClasses } from '../../bench/score.ts';
import { fingerprint } from '../../datasets/split.ts';
import { relabel, taskClasses, type TaskName } from '../../datasets/tasks.ts';
import type { Dataset, Split } from '../../datasets/types.ts';
import { TARGET_FAMILIES, type Target, type TargetFamily, type TargetSpec } from '../types.ts';
import { cacheKey, readEntry, writeEntry } from './cache.ts';
import { cnnFamily } from './cnn.ts';
import type { FamilyModule, TargetShape } from './family.ts';
import { linearSvmFamily } from './linear-svm.ts';
import { logregFamily } from './logreg.ts';
import { mlpFamily } from './mlp.ts';
import { naiveBayesFamily } from './naive-bayes.ts';
import { svmFamily } from './svm.ts';
import { treeFamily } from './tree.ts';

export { TARGET_FAMILIES };

/** Every family, by name; a new family is one module and one line here. */
export const FAMILIES: { [F in TargetFamily]: FamilyModule<Extract<TargetSpec, { family: F }>> } = {
  cnn: cnnFamily,
  svm: svmFamily,
  'naive-bayes': naiveBayesFamily,
  logreg: logregFamily,
  mlp: mlpFamily,
  tree: treeFamily,
  'linear-svm': linearSvmFamily,
};

/** The config schema of every family, for sweep and serve configs. */
export const targetSchemas = TARGET_FAMILIES.map((f) => FAMILIES[f].schema);

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

function familyOf(spec: TargetSpec): FamilyModule<TargetSpec> {
  const family = FAMILIES[spec.family as TargetFamily] as FamilyModule<TargetSpec> | undefined;
  if (!family) throw new RangeError(`target ${JSON.stringify(spec.id)}: family must be one of ${TARGET_FAMILIES.join(', ')}, got ${JSON.stringify(spec.family)}`);
  return family;
}

/** Fails fast, naming the field, on a spec its family's schema refuses. Returns the spec with defaults filled in. */
export function checkTargetSpec<S extends TargetSpec>(spec: S): S & { task: TaskName } {
  const result = familyOf(spec).schema.safeParse(spec);
  if (!result.success) {
    const valueAt = (path: PropertyKey[]) => path.reduce<unknown>((v, k) => (v as Record<PropertyKey, unknown> | undefined)?.[k], spec);
    const issues = result.error.issues
      .map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}, got ${JSON.stringify(valueAt(i.path))}` : `${i.message}`))
      .join('; ');
    throw new RangeError(`target ${JSON.stringify(spec.id)}: ${issues}`);
  }
  return { ...(result.data as S), id: spec.id, task: (result.data as { task: TaskName }).task } as S & { task: TaskName };
}

/** Accuracy of target on split (labels mapped by the target's task), in slices so no single intermediate grows with the split. */
export async function measureAccuracy(target: Target, split: Split, ds: Dataset): Promise<number> {
  const labelled = relabel(split, target.task ?? 'digits');
  return accuracy(await predictClasses((x) => target.predictProba(x), labelled, ds.inputShape), labelled.y);
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
export async function getTarget(input: TargetSpec, ds: Dataset, opts: TargetOptions): Promise<LoadedTarget> {
  const spec = checkTargetSpec(input);
  const family = familyOf(spec);
  const log = opts.log ?? (() => {});
  const all = ds.split('train');
  if (spec.trainSize > all.n) throw new RangeError(`target "${spec.id}": trainSize ${spec.trainSize} exceeds the dataset's ${all.n} training rows`);
  const data = relabel(firstRows(all, spec.trainSize), spec.task);
  const shape: TargetShape = { inputShape: ds.inputShape, classes: taskClasses(spec.task, ds.classes) };
  // The id is a label, not part of the model; the default task is left out so entries made before tasks existed still match.
  const { id: _label, ...identity } = spec as TargetSpec & { task: TaskName };
  if (identity.task === 'digits') delete (identity as { task?: TaskName }).task;
  const dir = join(opts.cacheDir, 'targets', `${spec.family}-${cacheKey(identity, fingerprint(data))}`);
  const evalSplit = ds.split('eval');
  const evalPrint = fingerprint(evalSplit);
  const finish = (target: Target, testAccuracy: number, fromCache: boolean): LoadedTarget => ({
    ...target,
    model: target.model ?? { family: spec.family },
    task: spec.task,
    testAccuracy,
    fromCache,
  });

  const entry = await readEntry<Meta>(dir);
  if (entry) {
    let target: Target | undefined;
    try {
      const { params } = entry.meta;
      if (params.classes !== undefined && params.classes !== shape.classes) throw new Error(`entry has ${String(params.classes)} classes, the task ${shape.classes}`);
      target = await family.restore(spec, entry.files, params, shape);
      const known = entry.meta.evaluated?.fingerprint === evalPrint ? entry.meta.evaluated.accuracy : undefined;
      const testAccuracy = typeof known === 'number' ? known : await measureAccuracy({ ...target, task: spec.task }, evalSplit, ds);
      log(`target ${spec.id}: loaded ${spec.family} from cache ${dir}`);
      return finish(target, testAccuracy, true);
    } catch (err) {
      target?.dispose();
      log(`target ${spec.id}: cache entry ${dir} is unusable (${(err as Error).message}); retraining`);
    }
  } else if (existsSync(dir)) {
    log(`target ${spec.id}: cache entry ${dir} is damaged or from another cache format; retraining`);
  }

  log(`target ${spec.id}: training ${spec.family}${spec.task === 'digits' ? '' : ` (task ${spec.task})`} on ${data.n} rows…`);
  const started = performance.now();
  const built = await family.train(spec, data, shape);
  const testAccuracy = await measureAccuracy({ ...built.target, task: spec.task }, evalSplit, ds);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  try {
    await writeEntry<Meta>(dir, { params: built.params, evaluated: { fingerprint: evalPrint, accuracy: testAccuracy } }, built.files);
    log(`target ${spec.id}: trained in ${seconds} s, cached in ${dir}`);
  } catch (err) {
    // The target is good; only the next run loses. Say so rather than throw the training away.
    log(`target ${spec.id}: trained in ${seconds} s, but could not be cached in ${dir}: ${(err as Error).message}`);
  }
  return finish(built.target, testAccuracy, false);
}
