import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { accuracy, agreement, argmaxRows, imitationPrivacy, rhoClassification, rhoRegression } from '../bench/metric.ts';

const I = (...v: number[]) => Int32Array.from(v);

test('argmax per row, first index on ties', () => {
  assert.equal(Array.from(argmaxRows([0.1, 0.7, 0.2, 0.5, 0.5, 0, 0, 0, 1], 3)), [1, 0, 2]);
});

test('agreement and ρ for classification', () => {
  assert.is(agreement(I(1, 2, 3, 4), I(1, 2, 0, 0)), 0.5);
  assert.is(rhoClassification(I(1, 2, 3, 4), I(1, 2, 3, 4)), 0);
  assert.is(rhoClassification(I(0, 0, 0, 0), I(1, 1, 1, 0)), 0.75);
  assert.throws(() => agreement(I(1), I(1, 2)), /1 vs 2/);
});

test('accuracy ignores unlabelled rows', () => {
  assert.is(accuracy(I(1, 2, 3), I(1, -1, 0)), 0.5);
  assert.ok(Number.isNaN(accuracy(I(1), I(-1))));
});

test('regression ρ: mean of |f − g|² / |f|² per row', () => {
  // row 1: f = (3, 4), g = (3, 0): 16 / 25; row 2: f = (1, 0), g = (2, 0): 1 / 1
  assert.ok(Math.abs(rhoRegression([3, 4, 1, 0], [3, 0, 2, 0], 2) - (16 / 25 + 1) / 2) < 1e-12);
  assert.is(rhoRegression([1, 2], [1, 2], 1), 0);
  assert.is(rhoRegression([0], [0.5], 1), 0.25); // f = 0: unscaled
});

test('one entry point, two branches', () => {
  const target = [0.9, 0.1, 0.2, 0.8];
  assert.is(imitationPrivacy('classification', target, [0.6, 0.4, 0.7, 0.3], 2), 0.5);
  assert.ok(Math.abs(imitationPrivacy('regression', [2, 4], [1, 4], 1) - 0.125) < 1e-12);
});

test.run();
