import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toTensor } from '../datasets/split.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { buildStudent } from '../models/students.ts';
import { cacheKey } from '../models/targets/cache.ts';
import { deserializeModel, serializeModel } from '../models/targets/cnn.ts';
import { getTarget, measureAccuracy, type LoadedTarget } from '../models/targets/index.ts';
import type { TargetSpec } from '../models/types.ts';
import { smallMnist } from './helpers.ts';

let ds: Dataset;
const shape: [number, number, number] = [28, 28, 1];
const made: string[] = [];
const freshCache = () => {
  const dir = mkdtempSync(join(tmpdir(), 'rho-targets-'));
  made.push(dir);
  return dir;
};
const entries = (cacheDir: string) => readdirSync(join(cacheDir, 'targets')).sort();

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
});

test.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** Probabilities on the first n eval rows, as plain numbers; checks the contract on the way. */
async function probe(target: LoadedTarget, n = 50): Promise<Float32Array> {
  const x = toTensor(ds.split('eval'), shape, 0, n);
  const before = tf.memory().numTensors;
  const p = await target.predictProba(x);
  assert.is(tf.memory().numTensors, before + 1, `${target.family}: predictProba leaves only its answer`);
  assert.equal(p.shape, [n, 10]);
  const values = (await p.data()) as Float32Array;
  for (let r = 0; r < n; r++) {
    const row = values.subarray(r * 10, r * 10 + 10);
    assert.ok(row.every((v) => Number.isFinite(v) && v >= 0), `${target.family}: row ${r} finite, non-negative`);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, `${target.family}: row ${r} sums to 1`);
  }
  tf.dispose([x, p]);
  return values;
}

test('cnn: cnn-small on 2,000 rows beats 85%, and the cache gives the same model back', async () => {
  const cacheDir = freshCache();
  const logs: string[] = [];
  const spec: TargetSpec = { id: 'cnn', family: 'cnn', arch: 'cnn-small', trainSize: 2000, epochs: 2, batchSize: 32, lr: 0.003, seed: 1 };
  const a = await getTarget(spec, ds, { cacheDir, log: (m) => logs.push(m) });
  assert.is(a.fromCache, false);
  assert.is(a.arch, 'cnn-small');
  assert.ok(a.testAccuracy > 0.85, `accuracy ${a.testAccuracy}`);
  assert.ok(logs.some((m) => /training cnn on 2000 rows/.test(m)), logs.join('\n'));
  const b = await getTarget(spec, ds, { cacheDir, log: (m) => logs.push(m) });
  assert.is(b.fromCache, true);
  assert.ok(logs.some((m) => /loaded cnn from cache/.test(m)), logs.join('\n'));
  assert.is(b.arch, 'cnn-small');
  assert.is(b.testAccuracy, a.testAccuracy);
  assert.equal(Array.from(await probe(b)), Array.from(await probe(a)));
  const before = tf.memory().numTensors;
  a.dispose();
  b.dispose();
  assert.ok(tf.memory().numTensors < before, 'dispose frees the weights');
});

test('cnn: a truncated weights file is retrained, not trusted', async () => {
  const cacheDir = freshCache();
  const logs: string[] = [];
  const log = (m: string) => logs.push(m);
  const spec: TargetSpec = { id: 'tiny', family: 'cnn', arch: 'mlp', trainSize: 300, epochs: 1, batchSize: 32, lr: 0.003, seed: 2 };
  const first = await getTarget(spec, ds, { cacheDir, log });
  const [entry] = entries(cacheDir);
  truncateSync(join(cacheDir, 'targets', entry, 'weights.bin'), 1000);
  const again = await getTarget(spec, ds, { cacheDir, log });
  assert.is(again.fromCache, false);
  assert.ok(logs.some((m) => /damaged/.test(m)), logs.join('\n'));
  // Same seed, same rows: the retrained model is the one first trained.
  assert.equal(Array.from(await probe(again)), Array.from(await probe(first)));
  const third = await getTarget(spec, ds, { cacheDir, log });
  assert.is(third.fromCache, true, 'the retrained entry replaced the damaged one');
  [first, again, third].forEach((t) => t.dispose());
});

test('cnn: deserializeModel refuses weights that do not fit the topology', async () => {
  const model = buildStudent('mlp', shape, 10);
  const { topology, weights } = await serializeModel(model);
  model.dispose();
  await assert.not.throws(async () => (await deserializeModel(topology, weights)).dispose());
  try {
    await deserializeModel(topology, weights.subarray(0, weights.length - 4));
    assert.unreachable('short weights were accepted');
  } catch (err) {
    assert.match((err as Error).message, /bytes where the topology needs/);
  }
});

test('svm: the cache gives the same model back, accuracy included', async () => {
  const cacheDir = freshCache();
  const spec: TargetSpec = { id: 'svm', family: 'svm', trainSize: 300, C: 5, gamma: 0.03, seed: 1 };
  const a = await getTarget(spec, ds, { cacheDir });
  const b = await getTarget(spec, ds, { cacheDir });
  assert.equal([a.fromCache, b.fromCache], [false, true]);
  assert.ok(a.testAccuracy > 0.7, `accuracy ${a.testAccuracy}`);
  assert.is(b.testAccuracy, a.testAccuracy);
  assert.equal(Array.from(await probe(b)), Array.from(await probe(a)));
  assert.equal(readdirSync(join(cacheDir, 'targets', entries(cacheDir)[0])).sort(), ['entry.json', 'sv.bin']);
  a.dispose();
  b.dispose();
});

const nbSpec: TargetSpec = { id: 'nb', family: 'naive-bayes', trainSize: 1000, varSmoothing: 0.1, seed: 1 };

test('cache key: the id is a label, key order does not matter, any other change is a new entry', async () => {
  const cacheDir = freshCache();
  (await getTarget(nbSpec, ds, { cacheDir })).dispose();
  const reordered = { seed: 1, varSmoothing: 0.1, trainSize: 1000, family: 'naive-bayes', id: 'renamed' } as const;
  const same = await getTarget(reordered, ds, { cacheDir });
  assert.is(same.fromCache, true);
  assert.is(same.id, 'renamed');
  same.dispose();
  for (const changed of [{ varSmoothing: 0.2 }, { trainSize: 999 }, { seed: 2 }]) {
    const other = await getTarget({ ...nbSpec, ...changed }, ds, { cacheDir });
    assert.is(other.fromCache, false, JSON.stringify(changed));
    other.dispose();
  }
  assert.is(entries(cacheDir).length, 4);
  assert.is.not(cacheKey(nbSpec, 'a'), cacheKey(nbSpec, 'b'), 'the training rows are part of the key');
  assert.is(cacheKey({ a: 1, b: { c: 2, d: 3 } }, 'x'), cacheKey({ b: { d: 3, c: 2 }, a: 1 }, 'x'));
});

test('cache: damaged entries are retrained, then loaded again', async () => {
  const cacheDir = freshCache();
  const damage: [string, (dir: string) => void][] = [
    ['truncated file', (dir) => truncateSync(join(dir, 'means.bin'), 100)],
    ['flipped byte', (dir) => {
      const bytes = readFileSync(join(dir, 'variances.bin'));
      bytes[77] ^= 0xff;
      writeFileSync(join(dir, 'variances.bin'), bytes);
    }],
    ['edited entry.json', (dir) => writeFileSync(join(dir, 'entry.json'), readFileSync(join(dir, 'entry.json'), 'utf8').replace('"classes":10', '"classes":9'))],
    ['garbage entry.json', (dir) => writeFileSync(join(dir, 'entry.json'), '{"format":')],
    ['missing file', (dir) => rmSync(join(dir, 'priors.bin'))],
  ];
  const first = await getTarget(nbSpec, ds, { cacheDir });
  const reference = await probe(first);
  first.dispose();
  const dir = join(cacheDir, 'targets', entries(cacheDir)[0]);
  for (const [what, spoil] of damage) {
    spoil(dir);
    const logs: string[] = [];
    const t = await getTarget(nbSpec, ds, { cacheDir, log: (m) => logs.push(m) });
    assert.is(t.fromCache, false, what);
    assert.ok(logs.some((m) => /damaged|unusable/.test(m)), `${what}: ${logs.join('\n')}`);
    assert.equal(Array.from(await probe(t)), Array.from(reference), what);
    t.dispose();
    const u = await getTarget(nbSpec, ds, { cacheDir });
    assert.is(u.fromCache, true, `${what}: the entry was rewritten`);
    u.dispose();
  }
  assert.equal(entries(cacheDir).length, 1, 'no temporary folders left behind');
});

test('testAccuracy: stored for the eval split it was measured on, measured afresh for another', async () => {
  const cacheDir = freshCache();
  const first = await getTarget(nbSpec, ds, { cacheDir });
  assert.is(first.testAccuracy, await measureAccuracy(first, ds.split('eval'), ds));
  const full = ds.split('eval');
  const half: Split = { x: full.x.subarray(0, 500 * 784), y: full.y.subarray(0, 500), n: 500 };
  const other: Dataset = { ...ds, split: (name) => (name === 'eval' ? half : ds.split(name)) };
  const second = await getTarget(nbSpec, other, { cacheDir });
  assert.is(second.fromCache, true, 'the eval split is not part of the key');
  assert.is(second.testAccuracy, await measureAccuracy(second, half, ds));
  first.dispose();
  second.dispose();
});

test('bad specs are refused, naming the field', async () => {
  const cacheDir = freshCache();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ trainSize: 0 }, /trainSize: .*>0, got 0/],
    [{ trainSize: 5000 }, /trainSize 5000 exceeds the dataset's 2000 training rows/],
    [{ varSmoothing: -1 }, /varSmoothing: .*>0, got -1/],
    [{ family: 'svm', varSmoothing: undefined, C: 0, gamma: 0.03 }, /C: .*>0, got 0/],
    [{ family: 'cnn', varSmoothing: undefined, arch: 'resnet', epochs: 1, batchSize: 32, lr: 0.01 }, /arch: .*"mlp"\|"lenet5".*got "resnet"/],
    [{ family: 'forest' }, /family must be one of cnn, svm, naive-bayes, logreg, mlp, tree, linear-svm, got "forest"/],
    [{ task: 'odd' }, /task: unknown task: use digits, parity .*got "odd"/],
    [{ varSmoothing: 0.1, depth: 3 }, /Unrecognized key: "depth"/],
  ];
  for (const [change, message] of cases) {
    try {
      // undefined drops a field of nbSpec, as a spec of another family would not have it.
      const spec = Object.fromEntries(Object.entries({ ...nbSpec, ...change }).filter(([, v]) => v !== undefined));
      await getTarget(spec as unknown as TargetSpec, ds, { cacheDir });
      assert.unreachable(`accepted ${JSON.stringify(change)}`);
    } catch (err) {
      assert.match((err as Error).message, message);
    }
  }
  assert.not.ok(existsSync(join(cacheDir, 'targets')), 'nothing was trained');
});

test.run();
