import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { extractLinear, lowdMeek, type RecoveredLinear } from '../attacks/lowd-meek.ts';
import { adaptiveRetraining, makeRetraining, roundSizes, uniformRetraining } from '../attacks/retraining.ts';
import { NotApplicable, type Attack, type AttackContext } from '../attacks/types.ts';
import { scoreImitation } from '../bench/score.ts';
import { loadPool } from '../datasets/index.ts';
import { relabel, type TaskName } from '../datasets/tasks.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { getTarget } from '../models/targets/index.ts';
import { fitLinearSvm, linearParamsOf, type LinearSvmParams } from '../models/targets/linear-svm.ts';
import type { ModelClass, Target } from '../models/types.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import type { Disclosure } from '../serve/types.ts';
import { rejection, smallMnist, TEST_CACHE } from './helpers.ts';

const shape: [number, number, number] = [28, 28, 1];
const D = 784;
let ds: Dataset;
let pool: Split;
let svm: Target; // linear SVM, parity (odd = 1)
let svmDigits: Target; // linear SVM, one-vs-rest over ten digits
let nb: Target; // Gaussian naive Bayes, parity
let params: LinearSvmParams;

const svmSpec = { id: 'lsvm-parity', family: 'linear-svm', task: 'parity', trainSize: 2000, C: 0.1, epochs: 300, seed: 1 } as const;

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  pool = await loadPool('same', ds, 2000, 1);
  svm = await getTarget(svmSpec, ds, { cacheDir: TEST_CACHE });
  svmDigits = await getTarget({ id: 'lsvm-digits', family: 'linear-svm', trainSize: 1000, C: 0.1, epochs: 100, seed: 1 }, ds, { cacheDir: TEST_CACHE });
  nb = await getTarget({ id: 'nb-parity', family: 'naive-bayes', task: 'parity', trainSize: 2000, varSmoothing: 0.1, seed: 1 }, ds, { cacheDir: TEST_CACHE });
  params = linearParamsOf(svm)!;
});
test.after(() => [svm, svmDigits, nb].forEach((t) => t.dispose()));

function context(target: Target, budget: number, opts: { known?: ModelClass; disclosure?: Disclosure; seed?: number } = {}): AttackContext {
  const disclosure = opts.disclosure ?? { kind: 'label' };
  return {
    oracle: new InProcessOracle(target, budget, disclosure),
    pool,
    inputShape: shape,
    classes: target.classes,
    side: { name: 's', pool: 'same', disclosure, architecture: opts.known ? 'known' : 'unknown' },
    student: { arch: 'mlp', epochs: 3, batchSize: 32, lr: 0.003 },
    known: opts.known,
    seed: opts.seed ?? 1,
  };
}

/** Runs the attack, scores it on eval (labels by the target's task), checks it kept to the budget and leaked no tensor. */
async function rhoOf(attack: Attack, target: Target, ctx: AttackContext): Promise<number> {
  const before = tf.memory().numTensors;
  const imitation = await attack.run(ctx);
  let rho: number;
  try {
    rho = (await scoreImitation(imitation, target, relabel(ds.split('eval'), target.task as TaskName), shape)).rho;
  } finally {
    imitation.dispose();
  }
  assert.is(tf.memory().numTensors, before, `${attack.name}: tensors left behind`);
  assert.ok(ctx.oracle.spent <= ctx.oracle.budget, `${attack.name} spent ${ctx.oracle.spent} of ${ctx.oracle.budget}`);
  return rho;
}

function cosine(a: Float64Array, b: Float64Array): number {
  let dot = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return dot / Math.sqrt(aa * bb);
}

test('linear SVM target: sign(w·x + b) in float64, one-hot answers, cached bit for bit, and a fit that minimises the primal', async () => {
  assert.is(svm.family, 'linear-svm');
  assert.equal(svm.model, { family: 'linear-svm' });
  assert.is(svm.classes, 2);
  assert.ok(svm.testAccuracy > 0.8, `parity accuracy ${svm.testAccuracy}`);
  assert.is(params.w.length, D);

  // The decision, recomputed by hand on eval rows, and the one-hot answers in both precisions.
  const ev = ds.split('eval');
  const n = 200;
  const x64 = Float64Array.from(ev.x.subarray(0, n * D));
  const probs64 = svm.predictProba64!(x64, n);
  const t = tf.tensor(ev.x.subarray(0, n * D), [n, ...shape]);
  const probs32 = await svm.predictProba(t);
  const p32 = probs32.dataSync();
  tf.dispose([t, probs32]);
  let positives = 0;
  for (let r = 0; r < n; r++) {
    let s = params.b[0];
    for (let f = 0; f < D; f++) s += params.w[f] * x64[r * D + f];
    const c = s > 0 ? 1 : 0;
    positives += c;
    assert.equal([probs64[2 * r], probs64[2 * r + 1]], c ? [0, 1] : [1, 0], `row ${r}`);
    assert.is(p32[2 * r + 1], probs64[2 * r + 1]);
  }
  assert.ok(positives > 40 && positives < 160, `both classes answered (${positives} odd of ${n})`);

  // The cache gives back the same float64 parameters, not a float32 rounding of them.
  const again = await getTarget(svmSpec, ds, { cacheDir: TEST_CACHE });
  assert.ok(again.fromCache);
  const p2 = linearParamsOf(again)!;
  assert.ok(p2.w.every((v, i) => Object.is(v, params.w[i])) && Object.is(p2.b[0], params.b[0]), 'restored bit-identical');

  // The dual solver's answer: more passes barely lower ½|w̄|² + C·Σ hinge, and it beats a nearby point.
  const train = relabel(ds.split('train'), 'parity');
  const objective = (p: LinearSvmParams) => {
    let value = 0.5 * p.b[0] * p.b[0];
    for (const v of p.w) value += 0.5 * v * v;
    for (let r = 0; r < train.n; r++) {
      let s = p.b[0];
      for (let f = 0; f < D; f++) s += p.w[f] * train.x[r * D + f];
      value += 0.1 * Math.max(0, 1 - (train.y[r] === 1 ? 1 : -1) * s);
    }
    return value;
  };
  const longer = fitLinearSvm(train.x, train.y, train.n, 2, { C: 0.1, epochs: 1000, seed: 1, tol: 1e-5 });
  const here = objective(params);
  assert.ok(here <= objective(longer) * 1.001, `objective ${here} vs ${objective(longer)} after 1000 passes`);
  const nudged = { ...params, w: params.w.map((v, i) => v + (i % 7 === 0 ? 0.01 : 0)) };
  assert.ok(here < objective(nudged), 'a nudged w is worse');
  assert.throws(() => fitLinearSvm(train.x, Int32Array.from(train.y).fill(2, 0, 1), train.n, 2, { C: 1, epochs: 1, seed: 1 }), /label 2 at training row 0 is outside 0..1/);
  assert.throws(() => fitLinearSvm(train.x, train.y, train.n, 2, { C: 0, epochs: 1, seed: 1 }), /C must be a positive number, got 0/);
});

test('linear SVM target, ten digits: one-vs-rest scorers, argmax answers', () => {
  const p = linearParamsOf(svmDigits)!;
  assert.is(p.b.length, 10);
  assert.ok(svmDigits.testAccuracy > 0.75, `digits accuracy ${svmDigits.testAccuracy}`);
  const ev = ds.split('eval');
  const x = Float64Array.from(ev.x.subarray(0, 50 * D));
  const probs = svmDigits.predictProba64!(x, 50);
  for (let r = 0; r < 50; r++) {
    const scores = Array.from({ length: 10 }, (_, c) => p.w.subarray(c * D, (c + 1) * D).reduce((s, w, f) => s + w * x[r * D + f], p.b[c]));
    const best = scores.indexOf(Math.max(...scores));
    assert.is(probs[r * 10 + best], 1, `row ${r}`);
  }
});

test('Lowd–Meek recovers the linear SVM from labels: cos(ŵ, w) ≈ 1, ρ = 0, within the budget', async () => {
  const budget = 20_000;
  const ctx = context(svm, budget, { known: { family: 'linear-svm' } });
  const got = (await extractLinear(ctx)) as RecoveredLinear;
  assert.ok('w' in got, 'a classifier, not a constant');
  assert.is(got.queries, ctx.oracle.spent);
  assert.ok(ctx.oracle.spent <= budget);
  assert.is(got.measured, D);
  const cos = cosine(got.w, params.w);
  assert.ok(cos > 0.999999, `cos(ŵ, w) = ${cos}`);
  // Up to scale, the bias too: b̂ / |ŵ| against b / |w|.
  const norm = (w: Float64Array) => Math.sqrt(w.reduce((s, v) => s + v * v, 0));
  const bRel = got.b / norm(got.w) - params.b[0] / norm(params.w);
  assert.ok(Math.abs(bRel) < 1e-4 * Math.abs(params.b[0] / norm(params.w)), `bias off by ${bRel}`);
  // Weights the SVM left at exactly 0 (pixels never set in its training rows) are found to be 0.
  const zeros = params.w.reduce((k, v, f) => k + (v === 0 && got.w[f] === 0 ? 1 : 0), 0);
  assert.ok(zeros > 100 && zeros === params.w.filter((v) => v === 0).length, `${zeros} zero weights`);
  console.log(`    lowd-meek, d = ${D}: ${ctx.oracle.spent} queries, cos ${cos}`);

  // A pool of one class only (blank images): the pair is constructed far outside [0, 1] instead.
  const blank: Split = { x: new Float32Array(4 * D), y: new Int32Array(4).fill(-1), n: 4 };
  const far = { ...context(svm, budget, { known: { family: 'linear-svm' } }), pool: blank };
  const fromFar = (await extractLinear(far)) as RecoveredLinear;
  assert.ok('w' in fromFar, 'both classes found');
  assert.ok(cosine(fromFar.w, params.w) > 0.999999, `cos from a constructed pair ${cosine(fromFar.w, params.w)}`);
  assert.ok(far.oracle.spent <= budget);

  // The attack as the runner calls it; probabilities disclosed give it the same labels.
  for (const disclosure of [{ kind: 'label' }, { kind: 'probs' }] as Disclosure[]) {
    const run = context(svm, budget, { known: { family: 'linear-svm' }, disclosure });
    const rho = await rhoOf(lowdMeek, svm, run);
    assert.ok(rho < 0.01, `${disclosure.kind}: ρ ${rho}`);
    assert.is(run.oracle.spent, ctx.oracle.spent, 'same seed, same queries');
    if (disclosure.kind === 'label') console.log(`    lowd-meek ρ = ${rho}`);
  }
});

test('Lowd–Meek is not applicable without a known linear binary model, and spends nothing then', async () => {
  const cases: [Target, ModelClass | undefined, RegExp][] = [
    [svm, undefined, /needs the target's model class/],
    [nb, { family: 'naive-bayes' }, /recovers linear classifiers.*naive-bayes/],
    [svmDigits, { family: 'linear-svm' }, /needs a binary task; the target has 10 classes/],
  ];
  for (const [target, known, message] of cases) {
    const ctx = context(target, 1000, { known });
    const err = await rejection(lowdMeek.run(ctx));
    assert.instance(err, NotApplicable);
    assert.match(err.message, message);
    assert.is(ctx.oracle.spent, 0);
  }
});

test('Lowd–Meek on a short budget: a finite ρ that falls as the budget grows, never a throw', async () => {
  const rhos: number[] = [];
  for (const budget of [0, 1, 10, 2000, 5000]) {
    const ctx = context(svm, budget, { known: { family: 'linear-svm' } });
    const rho = await rhoOf(lowdMeek, svm, ctx);
    assert.ok(Number.isFinite(rho) && rho >= 0 && rho <= 1, `budget ${budget}: ρ ${rho}`);
    assert.is(ctx.oracle.spent, budget, `budget ${budget} spent to the last query`);
    rhos.push(rho);
  }
  // Measured 0.53, 0.47, 0.43, 0.09, 0.01: 2,000 queries measure the most used pixels roughly, 5,000 all of them.
  assert.ok(rhos[3] < rhos[2] && rhos[4] < rhos[3] && rhos[3] < 0.15 && rhos[4] < 0.03, `ρ ${rhos.join(', ')}`);
});

test('adaptive retraining from labels: ρ falls with the budget, beats uniform queries, same seed same ρ', async () => {
  const known: ModelClass = { family: 'linear-svm' };
  const small = await rhoOf(adaptiveRetraining, svm, context(svm, 100, { known }));
  const ctx = context(svm, 1000, { known });
  const large = await rhoOf(adaptiveRetraining, svm, ctx);
  assert.is(ctx.oracle.spent, 1000);
  const uniformCtx = context(svm, 1000, { known });
  const uniform = await rhoOf(uniformRetraining, svm, uniformCtx);
  assert.is(uniformCtx.oracle.spent, 1000);
  console.log(`    retraining ρ: adaptive ${small} @100, ${large} @1000; uniform ${uniform} @1000`);
  // Measured: 0.137 @100, 0.027 @1000, uniform 0.061 @1000.
  assert.ok(large < small - 0.05, `adaptive ρ ${large} @1000 vs ${small} @100`);
  assert.ok(large < uniform - 0.02, `adaptive ρ ${large} vs uniform ${uniform}`);
  assert.is(await rhoOf(adaptiveRetraining, svm, context(svm, 1000, { known })), large, 'same seed, same ρ');
});

test('adaptive retraining without side information imitates a non-linear target too, and with it trains the student', async () => {
  // Nothing known: a linear model, least-certain pool rows.
  const small = await rhoOf(adaptiveRetraining, nb, context(nb, 100));
  const ctx = context(nb, 600);
  const large = await rhoOf(adaptiveRetraining, nb, ctx);
  assert.is(ctx.oracle.spent, 600);
  // Measured 0.095 @100, 0.050 @600.
  assert.ok(large < small - 0.02, `naive Bayes ρ ${large} @600 vs ${small} @100`);
  // Known to be naive Bayes (not linear): the configured MLP student, retrained each round.
  const studentCtx = context(nb, 300, { known: { family: 'naive-bayes' } });
  const progress: string[] = [];
  studentCtx.onProgress = (done, total, phase) => progress.push(`${phase} ${done}/${total}`);
  const rho = await rhoOf(makeRetraining('adaptive-retraining', { rounds: 3 }), nb, studentCtx);
  assert.is(studentCtx.oracle.spent, 300);
  assert.ok(rho < 0.15, `MLP student ρ ${rho}`); // measured 0.067
  assert.equal(progress, ['queries 100/300', 'queries 200/300', 'queries 300/300'], 'three rounds of 100');
});

test('retraining: round sizes sum to the budget; bad options and a spent budget are refused', async () => {
  assert.equal(roundSizes(10, 3), [4, 3, 3]);
  assert.equal(roundSizes(2, 8), [1, 1]);
  assert.is(roundSizes(1001, 8).reduce((a, b) => a + b), 1001);
  assert.throws(() => makeRetraining('r', { rounds: 0 }), /rounds must be a positive integer, got 0/);
  assert.throws(() => makeRetraining('r', { rounds: 2, C: -1 }), /C must be a positive number, got -1/);
  assert.match((await rejection(adaptiveRetraining.run(context(svm, 0)))).message, /budget of 0 queries is spent/);
  assert.match((await rejection(uniformRetraining.run(context(svm, 2001)))).message, /pool has 2000 rows, fewer than the 2001/);
});

test.run();
