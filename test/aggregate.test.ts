import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { meanInterval, toCurves } from '../bench/aggregate.ts';
import { parseSweepConfig } from '../bench/config.ts';
import { cellKey, expandCells } from '../bench/grid.ts';
import { formatSummary } from '../bench/table.ts';
import { readCells, toCsv } from '../bench/writers.ts';
import { cellResult } from './helpers.ts';

const cell = cellResult;

test('meanInterval: mean and Student-t half width', () => {
  const r = meanInterval([1, 2, 3]);
  assert.is(r.mean, 2);
  // sd = 1, n = 3, t(2) = 4.303
  assert.ok(Math.abs(r.high - (2 + 4.303 / Math.sqrt(3))) < 1e-9);
  assert.equal(meanInterval([0.3]), { mean: 0.3, low: 0.3, high: 0.3 });
});

test('grid: every combination once, in curve order', () => {
  const cfg = parseSweepConfig({
    name: 'g', dataset: { name: 'mnist' }, targets: [{ family: 'naive-bayes' }, { family: 'svm' }],
    attacks: ['knockoff', 'distillation'], students: [{ arch: 'mlp' }],
    side: [{ name: 'a', pool: 'same', disclosure: 'probs' }, { name: 'b', pool: 'noise', disclosure: 'label' }],
    budgets: [10, 20, 30], seeds: [1, 2],
  });
  const cells = expandCells(cfg);
  assert.is(cells.length, 2 * 2 * 2 * 3 * 2);
  assert.is(new Set(cells.map(cellKey)).size, cells.length);
  assert.equal(cells.slice(0, 3).map((c) => c.budget), [10, 20, 30]);
});

test('curves: seeds averaged per budget, n/a and failures kept apart', () => {
  const curves = toCurves([
    cell({ budget: 100, seed: 1, rho: 0.4 }),
    cell({ budget: 100, seed: 2, rho: 0.6 }),
    cell({ budget: 200, seed: 1, rho: 0.2 }),
    cell({ budget: 200, seed: 2, status: 'failed', rho: null, error: 'boom' }),
    cell({ attack: 'distillation', status: 'not-applicable', rho: null }),
  ]);
  assert.is(curves.length, 2);
  const k = curves.find((c) => c.attack === 'knockoff')!;
  assert.equal(k.points.map((p) => p.budget), [100, 200]);
  assert.ok(Math.abs(k.points[0].rhoMean! - 0.5) < 1e-12);
  assert.is(k.points[0].n, 2);
  assert.is(k.points[1].n, 1);
  assert.is(k.points[1].rhoMean, 0.2);
  assert.is(curves.find((c) => c.attack === 'distillation')!.points[0].status, 'not-applicable');
});

test('csv: header, one row per cell, quoting', () => {
  const csv = toCsv([cell({}), cell({ status: 'failed', rho: null, error: 'bad "x", y' })]);
  const lines = csv.trim().split('\n');
  assert.is(lines.length, 3);
  assert.ok(lines[0].startsWith('target,task,attack,student,side,budget,seed,status,rho'));
  assert.ok(lines[2].endsWith('"bad ""x"", y"'));
  assert.ok(lines[2].includes(',failed,,'));
});

test('readCells drops a torn last line but refuses a corrupt middle one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rho-cells-'));
  const path = join(dir, 'cells.jsonl');
  writeFileSync(path, JSON.stringify(cell({})) + '\n' + JSON.stringify(cell({ budget: 200 })) + '\n{"target":"t","att');
  const { cells, tornLine } = await readCells(path);
  assert.is(cells.length, 2);
  assert.ok(tornLine);
  writeFileSync(path, '{"bad\n' + JSON.stringify(cell({})) + '\n');
  try {
    await readCells(path);
    assert.unreachable('should throw');
  } catch (err) {
    assert.match((err as Error).message, 'line 1 is not valid JSON');
  }
});

test('summary table: a row per curve, a column per budget', () => {
  const text = formatSummary([
    cell({ budget: 100, rho: 0.25 }),
    cell({ budget: 1000, rho: 0.05 }),
    cell({ attack: 'distillation', status: 'not-applicable', rho: null }),
  ]);
  const lines = text.split('\n');
  assert.is(lines.length, 4);
  assert.match(lines[0], /ρ@100\s+ρ@1000/);
  assert.match(lines[2], /knockoff.*0\.250\s+0\.050/);
  assert.match(lines[3], /distillation.*n\/a/);
});

test.run();
