import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { toEpsDelta } from '../bench/aggregate.ts';
import { clopperPearson, DEFAULT_EPSILONS, deltaHat, epsDeltaTable, formatEpsDelta } from '../bench/privacy.ts';
import type { CellResult } from '../bench/types.ts';
import { cellResult } from './helpers.ts';

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

/** P(X ≤ k) for X ~ Binomial(n, p), summed term by term: an independent check of the beta quantiles. */
function binomialCdf(k: number, n: number, p: number): number {
  let term = (1 - p) ** n;
  let sum = term;
  for (let i = 1; i <= k; i++) {
    term *= ((n - i + 1) / i) * (p / (1 - p));
    sum += term;
  }
  return sum;
}

test('Clopper–Pearson matches published and closed-form values', () => {
  // k = 0 and k = n have closed forms: 1 − (α/2)^(1/n) and (α/2)^(1/n).
  const zero = clopperPearson(0, 10);
  assert.is(zero.low, 0);
  close(zero.high, 1 - 0.025 ** (1 / 10), 1e-10, '0/10 upper');
  close(zero.high, 0.3084971, 1e-6, '0/10 upper (published)');
  const all = clopperPearson(10, 10);
  close(all.low, 0.025 ** (1 / 10), 1e-10, '10/10 lower');
  assert.is(all.high, 1);
  // R: binom.test(3, 10)$conf.int = 0.06673951 0.65245285
  const three = clopperPearson(3, 10);
  close(three.low, 0.06673951, 1e-6, '3/10 lower');
  close(three.high, 0.65245285, 1e-6, '3/10 upper');
  // A 90% interval is narrower, and each end leaves exactly 5% in its tail.
  const ninety = clopperPearson(3, 10, 0.9);
  assert.ok(ninety.low > three.low && ninety.high < three.high);
  close(1 - binomialCdf(2, 10, ninety.low), 0.05, 1e-9, 'P(X ≥ 3 | low) at 90%');
  close(binomialCdf(3, 10, ninety.high), 0.05, 1e-9, 'P(X ≤ 3 | high) at 90%');
});

test('Clopper–Pearson ends solve the binomial tail equations', () => {
  for (const [k, n] of [[1, 3], [5, 20], [17, 40], [49, 50]]) {
    const { low, high } = clopperPearson(k, n);
    close(1 - binomialCdf(k - 1, n, low), 0.025, 1e-9, `P(X ≥ ${k} | low), n=${n}`);
    close(binomialCdf(k, n, high), 0.025, 1e-9, `P(X ≤ ${k} | high), n=${n}`);
  }
});

test('Clopper–Pearson: monotone in successes, narrower with more trials, vacuous without trials; bad input refused', () => {
  let previous = { low: -1, high: -1 };
  for (let k = 0; k <= 12; k++) {
    const ci = clopperPearson(k, 12);
    assert.ok(ci.low > previous.low && ci.high > previous.high, `k=${k}`);
    assert.ok(ci.low <= k / 12 && k / 12 <= ci.high);
    previous = ci;
  }
  const small = clopperPearson(3, 10);
  const large = clopperPearson(30, 100);
  assert.ok(large.high - large.low < small.high - small.low);
  assert.equal(clopperPearson(0, 0), { low: 0, high: 1 });
  assert.throws(() => clopperPearson(4, 3), /successes must be an integer in \[0, 3\]/);
  assert.throws(() => clopperPearson(1, 2.5), /trials/);
  assert.throws(() => clopperPearson(1, 2, 1), /level/);
});

test('δ̂ is the fraction with ρ ≤ ε and grows with ε', () => {
  const rhos = [0.03, 0.1, 0.15, 0.4];
  assert.is(deltaHat(rhos, 0.1), 0.5, 'ρ = ε counts as within ε');
  assert.is(deltaHat(rhos, 0.01), 0);
  assert.is(deltaHat(rhos, 1), 1);
  assert.ok(Number.isNaN(deltaHat([], 0.1)));
  const rows = epsDeltaTable([{ target: 't', rhos }], [0.5, 0.01, 0.2, 0.1, 0.2]);
  assert.equal(rows.map((r) => r.epsilon), [0.01, 0.1, 0.2, 0.5], 'ε sorted, repeats dropped');
  assert.equal(rows.map((r) => r.successes), [0, 2, 3, 4]);
  for (let i = 1; i < rows.length; i++) {
    assert.ok(rows[i].deltaLow >= rows[i - 1].deltaLow && rows[i].deltaHigh >= rows[i - 1].deltaHigh);
  }
  const { low, high } = clopperPearson(2, 4);
  assert.equal(rows[1], { target: 't', epsilon: 0.1, trials: 4, successes: 2, deltaHat: 0.5, deltaLow: low, deltaHigh: high });
  assert.throws(() => epsDeltaTable([{ target: 't', rhos: [0.1, NaN] }], [0.1]), /finite/);
  assert.equal(DEFAULT_EPSILONS, [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]);
});

const cell = (over: Partial<CellResult>) => cellResult({ target: 'nb', side: 'probs', studentAccuracy: 0.9, targetAccuracy: 0.95, ...over });

test('(ε, δ) table from cells: task sets averaged per seed, plain targets per cell, failures left out', () => {
  const set = { base: 'nb', family: 'naive-bayes', members: [{ id: 'nb@parity', task: 'parity' }, { id: 'nb@ge5', task: 'ge5' }] };
  // Task-averaged ρ per seed: seed 1 (0.02 + 0.06)/2 = 0.04, seed 2 (0.1 + 0.3)/2 = 0.2, seed 3 0.08.
  const cells = [
    cell({ target: 'nb@parity', seed: 1, rho: 0.02 }), cell({ target: 'nb@ge5', seed: 1, rho: 0.06 }),
    cell({ target: 'nb@parity', seed: 2, rho: 0.1 }), cell({ target: 'nb@ge5', seed: 2, rho: 0.3 }),
    cell({ target: 'nb@parity', seed: 3, rho: 0.08 }), cell({ target: 'nb@ge5', seed: 3, rho: 0.08 }),
    // Seed 4 lost a task: it must not count as a trial.
    cell({ target: 'nb@parity', seed: 4, rho: 0.0 }), cell({ target: 'nb@ge5', seed: 4, status: 'failed', rho: null }),
    cell({ target: 'svm', seed: 1, rho: 0.01 }), cell({ target: 'svm', seed: 2, rho: 0.5 }),
    cell({ target: 'svm', attack: 'distillation', status: 'not-applicable', rho: null }),
  ];
  const rows = toEpsDelta(cells, [set], [0.05, 0.1, 0.2]);
  const nb = rows.filter((r) => r.target === 'nb');
  assert.equal(nb.map((r) => [r.epsilon, r.tasks, r.trials, r.successes]), [[0.05, 2, 3, 1], [0.1, 2, 3, 2], [0.2, 2, 3, 3]]);
  close(nb[0].deltaHat!, 1 / 3, 1e-12, 'δ̂ at ε = 0.05');
  close(nb[0].deltaHigh, clopperPearson(1, 3).high, 1e-12, 'upper end');
  const svm = rows.filter((r) => r.target === 'svm');
  assert.equal(svm.map((r) => [r.tasks, r.trials, r.successes]), [[1, 2, 1], [1, 2, 1], [1, 2, 1]]);
  assert.not.ok(rows.some((r) => r.target.includes('@')), 'members are represented by their set');
  assert.not.ok(rows.some((r) => r.attack === 'distillation'), 'no ρ, no row');

  const text = formatEpsDelta(rows).split('\n');
  assert.is(text.length, 2 + 2, 'header, rule, one line per curve and budget');
  assert.match(text[0], /^target\s+tasks\s+attack\s+side\s+budget\s+n\s+ε=0\.05\s+ε=0\.1\s+ε=0\.2$/);
  assert.match(text.find((l) => l.startsWith('nb '))!, /^nb\s+2\s+knockoff\s+probs\s+100\s+3\s+0\.33 \[0\.01,0\.91\]\s+0\.67 \[0\.09,0\.99\]\s+1\.00 \[0\.29,1\.00\]$/);
});

test.run();
