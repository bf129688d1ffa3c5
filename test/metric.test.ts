import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { accuracy, agreement, argmaxRows, imitationPrivacy, rhoClassification, rhoRegression } from '../bench/metric.ts';

const I = (...v: number[]) => Int32Array.from(v);
const F = (...v: number[]) => Float32Array.from(v);
const close = (a: number, b: number) => Math.abs(a - b) < 1e-9;

test('argmaxRows: per row, first index on ties', () => {
  assert.equal(Array.from(argmaxRows(F(0.1, 0.7, 0.2, 0.5, 0.5, 0, 0, 0, 1), 3)), [1, 0, 2]);
  assert.equal(Array.from(argmaxRows(F(-3, -1, -2, -5), 2)), [1, 0], 'negative scores (logits) work');
  assert.equal(Array.from(argmaxRows(F(4, 2), 1)), [0, 0]);
  assert.is(argmaxRows(F(), 10).length, 0);
});

test('argmaxRows: refuses scores that do not make whole rows', () => {
  assert.throws(() => argmaxRows(F(1, 2, 3), 2), /3 scores do not make rows of 2/);
  assert.throws(() => argmaxRows(F(1, 2), 0), /classes must be a positive integer, got 0/);
});

test('agreement: fraction equal; lengths must match', () => {
  assert.is(agreement(I(1, 2, 3, 4), I(1, 2, 0, 0)), 0.5);
  assert.is(agreement(I(7, 7, 7), I(7, 7, 7)), 1);
  assert.is(agreement(I(0, 1, 2, 3, 4), I(4, 3, 2, 1, 0)), 0.2);
  assert.throws(() => agreement(I(1), I(1, 2)), /1 vs 2/);
  assert.ok(Number.isNaN(agreement(I(), I())));
});

test('ρ for classification is 1 − agreement of the argmaxes', () => {
  assert.is(rhoClassification(I(1, 2, 3, 4), I(1, 2, 3, 4)), 0);
  assert.is(rhoClassification(I(0, 0, 0, 0), I(1, 1, 1, 0)), 0.75);
  assert.is(rhoClassification(I(0, 1), I(1, 0)), 1);
});

test('accuracy ignores unlabelled rows', () => {
  assert.is(accuracy(I(1, 2, 3), I(1, -1, 0)), 0.5);
  assert.is(accuracy(I(1, 2, 3, 4), I(1, 2, 3, 0)), 0.75);
  assert.ok(Number.isNaN(accuracy(I(1), I(-1))));
  assert.throws(() => accuracy(I(1, 2), I(1)), /2 predictions vs 1 labels/);
});

test('ρ for regression: mean over rows of |f − g|² / |f|²', () => {
  // row 1: f = (3, 4), g = (3, 0): 16 / 25; row 2: f = (1, 0), g = (2, 0): 1 / 1
  assert.ok(close(rhoRegression(F(3, 4, 1, 0), F(3, 0, 2, 0), 2), (16 / 25 + 1) / 2));
  // one row of three: f = (1, 2, 2), |f|² = 9; g = (0, 2, 4): |f − g|² = 1 + 0 + 4 = 5
  assert.ok(close(rhoRegression(F(1, 2, 2), F(0, 2, 4), 3), 5 / 9));
  assert.is(rhoRegression(F(1, 2), F(1, 2), 1), 0);
  // relative: scaling both outputs leaves ρ unchanged
  assert.ok(close(rhoRegression(F(30, 40), F(30, 0), 2), rhoRegression(F(3, 4), F(3, 0), 2)));
});

test('ρ for regression: a row where the target is 0 counts its squared error unscaled', () => {
  assert.is(rhoRegression(F(0), F(0.5), 1), 0.25);
  // rows: f = (0, 0), g = (1, 2): 5; f = (2, 0), g = (1, 0): 1/4
  assert.ok(close(rhoRegression(F(0, 0, 2, 0), F(1, 2, 1, 0), 2), (5 + 0.25) / 2));
});

test('ρ for regression: refuses mismatched or ragged outputs', () => {
  assert.throws(() => rhoRegression(F(1, 2), F(1), 1), /2 vs 1 outputs/);
  assert.throws(() => rhoRegression(F(1, 2, 3), F(1, 2, 3), 2), /3 outputs do not make rows of 2/);
  assert.throws(() => rhoRegression(F(), F(), 2), /do not make rows/);
});

test('imitationPrivacy: one entry point, two branches', () => {
  const target = F(0.9, 0.1, 0.2, 0.8);
  assert.is(imitationPrivacy('classification', target, F(0.6, 0.4, 0.7, 0.3), 2), 0.5);
  assert.is(imitationPrivacy('classification', target, F(5, -1, 0, 1), 2), 0, 'only the argmax matters');
  assert.ok(close(imitationPrivacy('regression', F(2, 4), F(1, 4), 1), 0.125));
  // the same numbers read as regression compare values, not classes
  assert.ok(imitationPrivacy('regression', target, F(5, -1, 0, 1), 2) > 1);
  assert.throws(() => imitationPrivacy('classification', target, F(1, 0), 2), /4 target scores vs 2 imitation scores/);
  assert.throws(() => imitationPrivacy('ranking' as 'regression', target, target, 2), /"ranking" is unknown/);
});

test.run();
