import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeDistillation } from '../attacks/distillation.ts';
import { ATTACKS, getAttack } from '../attacks/index.ts';
import { ATTACK_NAMES } from '../bench/config.ts';
import { select } from '../attacks/active.ts';
import { jacobianStep, stepInSlices } from '../attacks/jbda.ts';
import { buildTransferSet, studentArch } from '../attacks/transfer.ts';
import { NotApplicable, type AttackContext, type SideInfo } from '../attacks/types.ts';
import { scoreImitation } from '../bench/score.ts';
import { loadPool } from '../datasets/index.ts';
import { subset, toTensor } from '../datasets/split.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { sampleIndices, withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { getTarget } from '../models/targets/index.ts';
import { asImitation } from '../models/train.ts';
import type { Target } from '../models/types.ts';
import { InProcessOracle, answerTensor } from '../serve/oracle.ts';
import type { Disclosure } from '../serve/types.ts';
import { rejection, smallMnist, TEST_CACHE } from './helpers.ts';

let ds: Dataset;
let target: Target;
let pool: Split;
const shape: [number, number, number] = [28, 28, 1];

// A naive Bayes target: real, cached by the suite, and quick to train the first time.
test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  target = await getTarget({ id: 'nb', family: 'naive-bayes', trainSize: 2000, varSmoothing: 0.1, seed: 1 }, ds, { cacheDir: TEST_CACHE });
  pool = await loadPool('same', ds, 2000, 1);
});
test.after(() => target.dispose());

function context(budget: number, disclosure: Disclosure, seed = 1, side: Partial<SideInfo> = {}): AttackContext {
  return {
    oracle: new InProcessOracle(target, budget, disclosure),
    pool,
    inputShape: shape,
    classes: 10,
    side: { name: 's', pool: 'same', disclosure, architecture: 'unknown', ...side },
    student: { arch: 'mlp', epochs: 6, batchSize: 32, lr: 0.003 },
    seed,
  };
}

/** Runs the attack, scores it on eval and checks it left no tensor behind (transfer set, answers, model). */
async function rhoOf(attack: string, ctx: AttackContext): Promise<number> {
  const before = tf.memory().numTensors;
  const imitation = await getAttack(attack).run(ctx);
  let rho: number;
  try {
    rho = (await scoreImitation(imitation, target, ds.split('eval'), shape)).rho;
  } finally {
    imitation.dispose();
  }
  assert.is(tf.memory().numTensors, before, `${attack}: tensors left behind`);
  assert.ok(ctx.oracle.spent <= ctx.oracle.budget, `${attack} spent ${ctx.oracle.spent} of ${ctx.oracle.budget}`);
  return rho;
}

test('the transfer set: distinct seeded pool rows, batched, answers as the API gave them, never past the budget', async () => {
  const ctx = context(700, { kind: 'label' }, 5);
  const first = toTensor(pool, shape, 0, 100);
  tf.dispose(await ctx.oracle.query(first)); // an earlier stage spent 100 of the 700
  const progress: [number, number, string][] = [];
  ctx.onProgress = (done, total, phase) => progress.push([done, total, phase]);
  const { x, y } = await buildTransferSet(ctx, { batchSize: 256 });

  assert.equal(x.shape, [600, 28, 28, 1]);
  assert.equal(y.shape, [600, 10]);
  assert.is(ctx.oracle.spent, 700);
  assert.is((ctx.oracle as InProcessOracle).queries, 1 + 3, '600 rows in batches of 256');
  assert.equal(progress, [[256, 600, 'queries'], [512, 600, 'queries'], [600, 600, 'queries']]);

  const indices = sampleIndices(pool.n, 600, 5);
  assert.is(new Set(indices).size, 600);
  const expected = toTensor(subset(pool, indices), shape);
  assert.ok(tf.tidy(() => tf.all(tf.equal(x, expected)).dataSync()[0] === 1), 'the rows of the seeded sample, in order');
  const answers = await answerTensor(target, x, { kind: 'label' });
  assert.equal(y.arraySync(), answers.arraySync());
  tf.dispose([first, x, y, expected, answers]);
});

test('the transfer set refuses a pool smaller than the budget and a spent budget', async () => {
  const before = tf.memory().numTensors;
  const big = context(2001, { kind: 'label' });
  assert.match((await rejection(buildTransferSet(big))).message, /pool has 2000 rows, fewer than the budget of 2001/);
  assert.is(big.oracle.spent, 0);
  assert.match((await rejection(getAttack('copycat').run(context(0, { kind: 'label' })))).message, /budget of 0 queries is spent/);
  assert.is(tf.memory().numTensors, before);
});

test('scoreImitation: batched over 2,000 rows, matches a direct count, leaks nothing', async () => {
  const before = tf.memory().numTensors;
  const self = await scoreImitation({ predict: (x) => target.predictProba(x), dispose: () => {} }, target, pool, shape);
  assert.is(self.rho, 0);
  assert.is(self.agreement, 1);
  assert.is(self.studentAccuracy, self.targetAccuracy);

  // Independent path: the target on the whole split at once, counted by hand.
  const all = toTensor(pool, shape);
  const probs = await target.predictProba(all);
  const classes = tf.argMax(probs, 1);
  const predicted = Array.from(await classes.data());
  tf.dispose([all, probs, classes]);
  const threes = predicted.filter((c) => c === 3).length / pool.n;
  const right = predicted.filter((c, i) => c === pool.y[i]).length / pool.n;
  const alwaysThree = { predict: async (x: tf.Tensor) => tf.tidy(() => tf.oneHot(tf.fill([x.shape[0]], 3, 'int32') as tf.Tensor1D, 10).toFloat() as tf.Tensor2D), dispose: () => {} };
  const constant = await scoreImitation(alwaysThree, target, pool, shape);
  assert.ok(Math.abs(constant.agreement - threes) < 1e-12, `${constant.agreement} vs ${threes}`);
  assert.ok(Math.abs(constant.rho - (1 - threes)) < 1e-12);
  assert.ok(Math.abs(constant.targetAccuracy - right) < 1e-12);
  assert.ok(Math.abs(constant.studentAccuracy - pool.y.filter((c) => c === 3).length / pool.n) < 1e-12);
  assert.is(tf.memory().numTensors, before);
});

test('knockoff with probabilities copies the target far better than an untrained student', async () => {
  const untrained = asImitation(await withSeed(1, () => buildStudent('mlp', shape, 10)));
  const baseline = (await scoreImitation(untrained, target, ds.split('eval'), shape)).rho;
  untrained.dispose();
  const ctx = context(1000, { kind: 'probs' });
  const phases = new Set<string>();
  ctx.onProgress = (_done, _total, phase) => phases.add(phase);
  const rho = await rhoOf('knockoff', ctx);
  assert.is(ctx.oracle.spent, 1000);
  assert.ok(baseline > 0.7, `untrained ρ ${baseline}`);
  assert.ok(rho < 0.3, `knockoff ρ ${rho}`);
  assert.equal([...phases], ['queries', 'epochs']);
});

test('distillation needs probabilities and spends nothing without them', async () => {
  for (const d of [{ kind: 'label' }, { kind: 'topk', k: 3 }] as Disclosure[]) {
    const ctx = context(500, d);
    const err = await rejection(getAttack('distillation').run(ctx));
    assert.instance(err, NotApplicable);
    assert.match(err.message, d.kind === 'label' ? /needs probabilities.*label/ : /needs probabilities.*top3/);
    assert.is(ctx.oracle.spent, 0);
  }
  assert.throws(() => makeDistillation({ temperature: 0 }), /temperature must be positive, got 0/);
});

test('distillation from rounded probabilities and copycat from top-k both imitate', async () => {
  const distilled = await rhoOf('distillation', context(1000, { kind: 'rounded', decimals: 2 }));
  assert.ok(distilled < 0.35, `distillation ρ ${distilled}`);
  const copied = await rhoOf('copycat', context(1000, { kind: 'topk', k: 3 }));
  assert.ok(copied < 0.4, `copycat ρ ${copied}`);
});

test('the same seed gives the same imitation', async () => {
  const a = context(300, { kind: 'label' }, 9);
  const b = context(300, { kind: 'label' }, 9);
  const rhoA = await rhoOf('knockoff', a);
  assert.is(await rhoOf('knockoff', b), rhoA);
  assert.is(a.oracle.spent, 300);
});

test('known architecture uses the target\'s own', () => {
  const ctx = context(10, { kind: 'label' }, 1, { architecture: 'known' });
  assert.is(studentArch(ctx), 'mlp', 'a target without an architecture leaves the configured student');
  assert.is(studentArch({ ...ctx, targetArch: 'lenet5' }), 'lenet5');
  assert.is(studentArch({ ...ctx, targetArch: 'lenet5', side: { ...ctx.side, architecture: 'unknown' } }), 'mlp');
});

test('attacks by name', () => {
  // A config may name exactly the attacks that exist.
  assert.equal(Object.keys(ATTACKS).sort(), [...ATTACK_NAMES].sort());
  assert.ok(ATTACK_NAMES.includes('adaptive-knockoff'));
  for (const [name, attack] of Object.entries(ATTACKS)) assert.is(getAttack(name), attack);
  assert.throws(() => getAttack('papernot'), /unknown attack "papernot": choose one of knockoff, adaptive-knockoff, distillation, .*lowd-meek/);
});

test('a Jacobian step moves each row by λ along the sign of its own label\'s gradient, clipped to [0, 1]', () => {
  // A linear substitute: the gradient of logit c is column c of W, whatever the input.
  const W = [[1, -2, 0.5], [-1, 3, 0], [0.2, -0.1, -4], [0, 1, 1]];
  const model = tf.sequential({ layers: [tf.layers.dense({ units: 3, inputShape: [4], useBias: false, weights: [tf.tensor2d(W)] })] });
  const x = tf.tensor2d([[0.5, 0.5, 0.5, 0.5], [0.95, 0.05, 0.5, 0.5]]);
  const labels = tf.tensor2d([[1, 0, 0], [0, 1, 0]]);
  const moved = jacobianStep(model, x, labels, 0.1).arraySync() as number[][];
  const expected = [[0.6, 0.4, 0.6, 0.5], [0.85, 0.15, 0.4, 0.6]];
  moved.forEach((row, r) => row.forEach((v, j) => assert.ok(Math.abs(v - expected[r][j]) < 1e-6, `row ${r} col ${j}: ${v}`)));
  const clipped = jacobianStep(model, tf.tensor2d([[0.98, 0.01, 0.5, 0.5]]), tf.tensor2d([[1, 0, 0]]), 0.1).arraySync() as number[][];
  assert.ok(Math.abs(clipped[0][0] - 1) < 1e-6 && Math.abs(clipped[0][1]) < 1e-6, 'clipped to the input range');
  // In slices (as jbda steps large sets) the first `rows` rows move exactly as in one piece.
  const many = tf.randomUniform([20, 4], 0, 1, 'float32', 7);
  const manyLabels = tf.oneHot(tf.tensor1d(Array.from({ length: 20 }, (_, i) => i % 3), 'int32'), 3).toFloat() as tf.Tensor2D;
  const whole = jacobianStep(model, many, manyLabels, 0.1);
  const sliced = stepInSlices(model, many, manyLabels, 0.1, 17, 5);
  assert.equal(sliced.shape, [17, 4]);
  assert.equal(sliced.arraySync(), whole.slice(0, 17).arraySync());
  model.dispose();
  tf.dispose([x, labels, many, manyLabels, whole, sliced]);
});

test('jbda doubles a small seed set with augmented points, spends its budget exactly and imitates from labels', async () => {
  const untrained = asImitation(await withSeed(1, () => buildStudent('mlp', shape, 10)));
  const baseline = (await scoreImitation(untrained, target, ds.split('eval'), shape)).rho;
  untrained.dispose();
  const ctx = context(600, { kind: 'label' }, 5);
  const steps: number[] = [];
  ctx.onProgress = (done) => steps.push(done);
  const rho = await rhoOf('jbda', ctx);
  assert.is(ctx.oracle.spent, 600, '150 seeds, then 150 and 300 augmented points');
  assert.equal(steps, [1, 2]);
  assert.ok(rho < baseline - 0.3, `jbda ρ ${rho} vs untrained ${baseline}`);
  assert.is(await rhoOf('jbda', context(600, { kind: 'label' }, 5)), rho, 'same seed, same imitation');
});

test('active-learning selection: least confidence, margin, entropy, k-center and random pick as defined', () => {
  const probs = Float32Array.from([0.9, 0.05, 0.05, 0.4, 0.35, 0.25, 0.5, 0.48, 0.02, 0.34, 0.33, 0.33]);
  assert.equal(Array.from(select('uncertainty', probs, 3, 2, 1)), [3, 1]);
  assert.equal(Array.from(select('margin', probs, 3, 2, 1)), [3, 2]);
  assert.equal(Array.from(select('entropy', probs, 3, 1, 1)), [3]);
  // Farthest from the labelled one-hot row [1, 0, 0] is row 3; then farthest from both is row 2.
  assert.equal(Array.from(select('kcenter', probs, 3, 2, 1, Float32Array.from([1, 0, 0]))), [3, 2]);
  const random = Array.from(select('random', probs, 3, 2, 7));
  assert.equal(random, Array.from(select('random', probs, 3, 2, 7)));
  assert.is(new Set(random).size, 2);
});

test('ActiveThief rounds spend the budget exactly and imitate from labels', async () => {
  const untrained = asImitation(await withSeed(1, () => buildStudent('mlp', shape, 10)));
  const baseline = (await scoreImitation(untrained, target, ds.split('eval'), shape)).rho;
  untrained.dispose();
  for (const name of ['active-entropy', 'active-kcenter']) {
    const ctx = context(500, { kind: 'label' }, 3);
    const rho = await rhoOf(name, ctx);
    assert.is(ctx.oracle.spent, 500, name);
    assert.ok(rho < baseline - 0.3, `${name} ρ ${rho} vs untrained ${baseline}`);
  }
});

test.run();
