import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { providerFit, logGrid } from '../models/learners/cv.ts';
import { ridge } from '../models/learners/ridge.ts';
import type { Learner, Rows64 } from '../models/learners/types.ts';
import { rng } from '../models/seed.ts';
import { gaussianRows } from '../serve/training-config.ts';
import { TrainingApiError, TrainingService, type Release, type TrainingServiceOptions } from '../serve/training.ts';
import { rejection } from './helpers.ts';

const N = 40;
const D = 6;
const rows = gaussianRows(N, D, 11);
const TRUE_W = [1.5, -2, 0.5, 0, 3, -1];
const TRUE_B = 0.7;

/** y = Xw + b + noise, noisy enough that cross-validation prefers some shrinkage. */
function labels(x: Rows64, sigma: number, seed: number): Float64Array {
  const random = rng(seed, 'noise');
  const y = new Float64Array(x.n);
  for (let i = 0; i < x.n; i++) {
    let s = TRUE_B;
    for (let j = 0; j < x.d; j++) s += x.x[i * x.d + j] * TRUE_W[j];
    y[i] = s + sigma * (random() + random() + random() - 1.5) * 2;
  }
  return y;
}
const y = labels(rows, 3, 1);
const GRID = logGrid(-2, 3, 6);
const FOLDS = 4;

/** Xw + b written out, independently of the learners' own predict. */
function dot(params: Float64Array, x: Rows64): Float64Array {
  const out = new Float64Array(x.n);
  for (let i = 0; i < x.n; i++) {
    let s = params[x.d];
    for (let j = 0; j < x.d; j++) s += params[j] * x.x[i * x.d + j];
    out[i] = s;
  }
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length, 'same length');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const service = (extra: Partial<TrainingServiceOptions> = {}) =>
  new TrainingService({ learner: ridge, data: rows, protocol: 'I', lambdas: GRID, folds: FOLDS, seed: 5, releases: ['params'], ...extra });

/** A least-squares classifier (ridge on ±1 labels): the smallest learner with task 'classification'. */
const lsClassifier: Learner = {
  name: 'ls-classifier',
  task: 'classification',
  fit: (r, labels, lambda) => ({ ...ridge.fit(r, labels, lambda), learner: 'ls-classifier' }),
};

async function status(p: Promise<unknown>): Promise<{ status: number; message: string }> {
  const err = await rejection(p);
  assert.instance(err, TrainingApiError, `expected a TrainingApiError, got ${err}`);
  return { status: (err as TrainingApiError).status, message: err.message };
}

test('Protocol I: λ stays secret and is the CV-best of the grid (same fit as providerFit)', async () => {
  const s = service();
  const answer = await s.fit({ y });
  assert.equal(Object.keys(answer), ['params'], 'only the released params; no λ anywhere');

  const reference = providerFit(ridge, rows, y, GRID, { folds: FOLDS, seed: 5 });
  // The CV argmin (ties to the larger λ), found here from the scores rather than trusted.
  let best = reference.scores[0];
  for (const sc of reference.scores) if (sc.error < best.error || (sc.error === best.error && sc.lambda > best.lambda)) best = sc;
  assert.is(reference.lambda, best.lambda);
  assert.ok(best.lambda > GRID[0], `the noisy data should make CV pick shrinkage (picked ${best.lambda})`);

  assert.equal(Array.from(answer.params!), Array.from(reference.fitted.params), 'bit-identical to providerFit');
  assert.ok(maxAbsDiff(answer.params!, ridge.fit(rows, y, best.lambda).params) < 1e-12, 'equal to a direct fit at the CV-best λ');
  for (const lambda of GRID) {
    if (lambda === best.lambda) continue;
    assert.ok(maxAbsDiff(answer.params!, ridge.fit(rows, y, lambda).params) > 1e-6, `not the fit at λ=${lambda}`);
  }
});

test('usage: providerFits = folds × grid + 1 per Protocol I fit, 1 per Protocol II fit', async () => {
  const one = service();
  let u = await one.usage();
  assert.equal({ fits: u.fits, rows: u.rows, providerFits: u.providerFits }, { fits: 0, rows: 0, providerFits: 0 });
  assert.equal(u.caps, { fits: Infinity, rows: Infinity });
  await one.fit({ y });
  await one.fit({ y: labels(rows, 3, 2) });
  u = await one.usage();
  assert.is(u.fits, 2);
  assert.is(u.providerFits, 2 * (FOLDS * GRID.length + 1));
  assert.ok(Number.isFinite(u.providerSeconds) && u.providerSeconds >= 0);

  const two = service({ protocol: 'II', lambdas: [] });
  await two.fit({ y, lambda: 1 });
  await two.fit({ y, lambda: 2 });
  await two.fit({ y, lambda: 3 });
  assert.is((await two.usage()).providerFits, 3);
});

test('Protocol II: fits with the λ the user sends', async () => {
  const s = service({ protocol: 'II', lambdas: [] });
  const seen: Float64Array[] = [];
  for (const lambda of [0, 0.37, 25]) {
    const { params } = await s.fit({ y, lambda });
    assert.ok(maxAbsDiff(params!, ridge.fit(rows, y, lambda).params) < 1e-12, `λ=${lambda}`);
    seen.push(params!);
  }
  assert.ok(maxAbsDiff(seen[0], seen[2]) > 1e-3, 'λ changes the fit, so the comparison above can fail');
});

test('Protocol I refuses a λ and Protocol II requires a valid one (400), none of them counted', async () => {
  const one = service();
  const refused = await status(one.fit({ y, lambda: 1 }));
  assert.is(refused.status, 400);
  assert.match(refused.message, /Protocol I: the provider chooses λ/);
  assert.is((await one.usage()).fits, 0);

  const two = service({ protocol: 'II', lambdas: [] });
  for (const lambda of [undefined, -1, NaN, Infinity]) {
    const r = await status(two.fit({ y, lambda }));
    assert.is(r.status, 400, `λ=${lambda}`);
    assert.match(r.message, /Protocol II: send λ, a finite number ≥ 0/);
  }
  assert.is((await two.usage()).fits, 0);
});

test('releases: only the released fields are present; fitted = Xw + b on the rows trained on', async () => {
  const sets: Release[][] = [['fitted'], ['handle'], ['params'], ['fitted', 'params'], ['fitted', 'handle', 'params'], []];
  const full = await service({ releases: ['params'] }).fit({ y });
  for (const releases of sets) {
    const answer = await service({ releases }).fit({ y });
    assert.equal(Object.keys(answer).sort(), [...releases].sort(), releases.join('+') || 'nothing');
    if (answer.fitted) {
      assert.instance(answer.fitted, Float64Array);
      assert.is(answer.fitted.length, N);
      assert.ok(maxAbsDiff(answer.fitted, dot(full.params!, rows)) < 1e-12, 'fitted values are the model on the training rows');
    }
    if (answer.params) assert.equal(Array.from(answer.params), Array.from(full.params!), 'same model whatever is released');
    if (answer.handle !== undefined) assert.type(answer.handle, 'string');
  }
});

test('handles: predictions equal params·x + b; each handle keeps its own model', async () => {
  const s = service({ protocol: 'II', lambdas: [], releases: ['handle', 'params'], caps: { rows: 1000 } });
  const a = await s.fit({ y, lambda: 0.1 });
  const b = await s.fit({ y, lambda: 100 });
  assert.is.not(a.handle, b.handle);
  const fresh = gaussianRows(25, D, 99);
  const pa = await s.predict(a.handle!, fresh);
  const pb = await s.predict(b.handle!, fresh);
  assert.instance(pa, Float64Array);
  assert.ok(maxAbsDiff(pa, dot(a.params!, fresh)) < 1e-12);
  assert.ok(maxAbsDiff(pb, dot(b.params!, fresh)) < 1e-12);
  assert.ok(maxAbsDiff(pa, pb) > 1e-3, 'the two models differ');
  assert.is((await s.usage()).rows, 50);

  const unknown = await status(s.predict('m99', fresh));
  assert.is(unknown.status, 404);
  assert.match(unknown.message, /no model "m99"/);
  const wide = await status(s.predict(a.handle!, gaussianRows(2, D + 1, 1)));
  assert.is(wide.status, 400);
  assert.match(wide.message, /model has 6 features, rows have 7/);
  const ragged = await status(s.predict(a.handle!, { x: new Float64Array(5), n: 1, d: D }));
  assert.is(ragged.status, 400);
  assert.match(ragged.message, /rows\.x has 5 values, expected n·d = 6/);
  assert.is((await s.usage()).rows, 50, 'refused rows are not counted');

  const noHandles = service({ releases: ['params'] });
  await noHandles.fit({ y });
  const none = await status(noHandles.predict('m1', fresh));
  assert.is(none.status, 404);
  assert.match(none.message, /this service releases no handles/);
});

test('cap k₁: the (k₁+1)th fit is refused with 429 and not counted', async () => {
  const s = service({ caps: { fits: 2 } });
  await s.fit({ y });
  await s.fit({ y });
  const third = await status(s.fit({ y }));
  assert.is(third.status, 429);
  assert.match(third.message, /Stage I cap reached: 2 fits \(k₁\)/);
  const u = await s.usage();
  assert.is(u.fits, 2);
  assert.is(u.providerFits, 2 * (FOLDS * GRID.length + 1), 'a refused fit costs the provider nothing');
  assert.equal(u.caps, { fits: 2, rows: Infinity });
});

test('cap k₂: Stage II rows are counted; a request passing k₂ is refused whole and consumes nothing', async () => {
  const s = service({ releases: ['handle'], caps: { rows: 10 } });
  const { handle } = await s.fit({ y });
  assert.is((await s.predict(handle!, gaussianRows(4, D, 1))).length, 4);
  const over = await status(s.predict(handle!, gaussianRows(7, D, 2)));
  assert.is(over.status, 429);
  assert.match(over.message, /Stage II cap: 7 more rows would pass 10 \(k₂\); 6 left/);
  assert.is((await s.usage()).rows, 4, 'the refused request took nothing');
  assert.is((await s.predict(handle!, gaussianRows(6, D, 3))).length, 6, 'exactly the rest still fits');
  assert.is((await s.usage()).rows, 10);
  assert.is((await status(s.predict(handle!, gaussianRows(1, D, 4)))).status, 429);
  assert.is((await s.usage()).rows, 10);
});

test('bad labels are refused with 400 naming the problem', async () => {
  const s = service({ protocol: 'II', lambdas: [] });
  const cases: [Float64Array, RegExp][] = [
    [y.subarray(0, N - 1), /labels: expected 40 values, got 39/],
    [new Float64Array(N + 1), /labels: expected 40 values, got 41/],
    [Float64Array.from(y, (v, i) => (i === 7 ? NaN : v)), /labels: value 7 is not a finite number/],
    [Float64Array.from(y, (v, i) => (i === 3 ? -Infinity : v)), /labels: value 3 is not a finite number/],
  ];
  for (const [labelsIn, message] of cases) {
    const r = await status(s.fit({ y: labelsIn, lambda: 1 }));
    assert.is(r.status, 400);
    assert.match(r.message, message);
  }
  const wrongType = await status(s.fit({ y: Array.from(y) as unknown as Float64Array, lambda: 1 }));
  assert.is(wrongType.status, 400, 'labels must be float64');
  assert.is((await s.usage()).fits, 0);

  const classes = Float64Array.from(y, (v) => (v >= 0 ? 1 : -1));
  const c = service({ learner: lsClassifier, protocol: 'II', lambdas: [], releases: ['fitted'] });
  for (const bad of [0, 0.5, 2]) {
    const r = await status(c.fit({ y: Float64Array.from(classes, (v, i) => (i === 5 ? bad : v)), lambda: 1 }));
    assert.is(r.status, 400);
    assert.match(r.message, new RegExp(`labels: value 5 is ${bad}; a classification service takes ±1`));
  }
  const { fitted } = await c.fit({ y: classes, lambda: 1 });
  let agree = 0;
  for (let i = 0; i < N; i++) if (Math.sign(fitted![i]) === classes[i]) agree++;
  assert.ok(agree >= 0.8 * N, `±1 labels are accepted and learnt (${agree}/${N} training rows agree)`);
});

test('acceptsData: the user\'s rows are trained on; without it, sending rows is refused', async () => {
  const userRows = gaussianRows(30, 3, 21);
  const userY = Float64Array.from({ length: 30 }, (_, i) => userRows.x[i * 3] - 2 * userRows.x[i * 3 + 2] + 0.25);

  const open = service({ acceptsData: true, protocol: 'II', lambdas: [], releases: ['params', 'fitted'] });
  const own = await open.fit({ y, lambda: 0.5 });
  assert.ok(maxAbsDiff(own.params!, ridge.fit(rows, y, 0.5).params) < 1e-12, 'no rows: the provider\'s own');
  const theirs = await open.fit({ y: userY, x: userRows, lambda: 0.5 });
  assert.ok(maxAbsDiff(theirs.params!, ridge.fit(userRows, userY, 0.5).params) < 1e-12, 'rows sent: the user\'s');
  assert.is(theirs.fitted!.length, 30, 'fitted values are on the rows trained on');

  const onlyUsers = new TrainingService({ learner: ridge, acceptsData: true, protocol: 'I', lambdas: GRID, folds: FOLDS, releases: ['params'] });
  const cv = await onlyUsers.fit({ y: userY, x: userRows });
  assert.equal(Array.from(cv.params!), Array.from(providerFit(ridge, userRows, userY, GRID, { folds: FOLDS }).fitted.params));
  const noRows = await status(onlyUsers.fit({ y: userY }));
  assert.is(noRows.status, 400);
  assert.match(noRows.message, /has no data of its own; send rows/);
  const tooFew = await status(onlyUsers.fit({ y: userY.subarray(0, 3), x: gaussianRows(3, 3, 1) }));
  assert.is(tooFew.status, 400);
  assert.match(tooFew.message, /4-fold cross-validation needs at least 4 rows, got 3/);
  const ragged = await status(onlyUsers.fit({ y: userY.subarray(0, 2), x: { x: new Float64Array(5), n: 2, d: 3 } }));
  assert.is(ragged.status, 400);
  assert.match(ragged.message, /rows\.x has 5 values, expected n·d = 6/);
  assert.is((await onlyUsers.usage()).fits, 1, 'refused fits are not counted');

  const closed = service();
  const refused = await status(closed.fit({ y: userY, x: userRows }));
  assert.is(refused.status, 400);
  assert.match(refused.message, /trains on its own data; do not send rows/);
});

test('a service that cannot work is refused at construction', () => {
  assert.throws(() => new TrainingService({ learner: ridge, protocol: 'I', lambdas: GRID, releases: [] }), /needs private data, or must accept/);
  assert.throws(() => service({ lambdas: [] }), /Protocol I needs a λ grid/);
  assert.throws(() => service({ releases: ['weights' as Release] }), /unknown release "weights"/);
  assert.throws(() => service({ protocol: 'III' as 'I' }), /unknown protocol "III"/);
  assert.throws(() => service({ folds: 1 }), /folds must be an integer ≥ 2/);
  assert.throws(() => service({ data: gaussianRows(3, D, 1) }), /needs at least 4 private rows, got 3/);
});

test.run();
