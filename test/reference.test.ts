import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compareReferences, formatReferences, type Reference } from '../bench/reference.ts';
import type { CellResult } from '../bench/types.ts';

const cell = (seed: number, studentAccuracy: number | null, status: CellResult['status'] = 'ok'): CellResult => ({
  target: 'lenet', attack: 'knockoff', student: 'lenet5', side: 'label', budget: 1000, seed, status,
  rho: studentAccuracy === null ? null : 1 - studentAccuracy, agreement: null, studentAccuracy, targetAccuracy: 0.99,
  queries: 1000, seconds: 1, backend: 'wasm', gpu: false,
});

const ref: Reference = { target: 'lenet', attack: 'knockoff', side: 'label', budget: 1000, metric: 'studentAccuracy', value: 0.99, source: 'Paper, Table 1', note: 'our pool is Fashion-MNIST' };

test('our figure is the mean over the matching ok cells; failed and other cells are left out', () => {
  const results = [cell(1, 0.9), cell(2, 0.8), cell(3, null, 'failed'), { ...cell(4, 0.1), budget: 50 }, { ...cell(5, 0.1), attack: 'jbda' }];
  const [row] = compareReferences([ref], results);
  assert.ok(Math.abs(row.ours! - 0.85) < 1e-12);
  assert.is(row.seeds, 2);
  const [none] = compareReferences([{ ...ref, side: 'probs' }], results);
  assert.is(none.ours, null);
  const text = formatReferences([row, none]);
  assert.match(text, /studentAccuracy\s+99\.0%\s+85\.0%\s+Paper, Table 1/);
  assert.match(text, /—/);
  assert.match(text, /lenet\/knockoff: our pool is Fashion-MNIST/);
});

test.run();
