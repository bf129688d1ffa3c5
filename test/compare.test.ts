import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { meanInterval, toCurves } from '../bench/aggregate.ts';
import {
  compareRunDirs,
  compareRuns,
  comparisonExitCode,
  formatComparison,
  IncomparableRunsError,
  loadRun,
  RunFolderError,
  type ComparisonRow,
  type LoadedRun,
} from '../bench/compare.ts';
import { parseSweepConfig, type SweepConfig } from '../bench/config.ts';
import { REPO_ROOT, type Manifest } from '../bench/manifest.ts';
import { TRACKER_FILE, trackerEntries, writeTrackerJson } from '../bench/tracker.ts';
import type { CellResult } from '../bench/types.ts';
import { RunFiles } from '../bench/writers.ts';
import { rejection } from './helpers.ts';

const TARGET_ACCURACY: Record<string, number> = { cnn: 0.941, 'svm-rbf': 0.957, 'naive-bayes': 0.781 };

/** The cells of one curve point, one per seed, as runCell records them. */
function point(target: string, attack: string, side: string, budget: number, rhos: (number | null)[], seconds: number): CellResult[] {
  return rhos.map((rho, i) => ({
    target,
    attack,
    student: 'cnn-small',
    side,
    budget,
    seed: i + 1,
    status: rho === null ? 'failed' : 'ok',
    rho,
    agreement: rho === null ? null : 1 - rho,
    studentAccuracy: rho === null ? null : TARGET_ACCURACY[target] - rho / 2,
    targetAccuracy: TARGET_ACCURACY[target],
    queries: budget,
    // Seeds differ a little in time, as they do.
    seconds: seconds * (1 + 0.02 * i),
    backend: 'wasm',
    gpu: false,
    ...(rho === null ? { error: 'student training diverged (NaN loss)' } : {}),
  }));
}

function notApplicable(target: string, attack: string, side: string, budget: number): CellResult[] {
  return [1, 2, 3].map((seed) => ({
    target, attack, student: 'cnn-small', side, budget, seed, status: 'not-applicable' as const, rho: null, agreement: null,
    studentAccuracy: null, targetAccuracy: TARGET_ACCURACY[target], queries: 0, seconds: 0, backend: 'wasm', gpu: false,
    error: 'distillation needs probabilities; this side discloses labels',
  }));
}

// Spreads: ±0.005 over three seeds gives a 95% half-interval of 4.303·0.005/√3 ≈ 0.0124.
const BASE_CELLS: CellResult[] = [
  ...point('cnn', 'knockoff', 'same+probs', 250, [0.18, 0.19, 0.2], 1.9),
  ...point('cnn', 'knockoff', 'same+probs', 1000, [0.095, 0.1, 0.105], 5),
  ...point('svm-rbf', 'knockoff', 'same+probs', 1000, [0.155, 0.16, 0.165], 6),
  ...point('naive-bayes', 'distillation', 'same+probs', 1000, [0.1, 0.12, 0.14], 4),
  ...point('cnn', 'distillation', 'same+probs', 1000, [0.05, 0.06, 0.07], 4),
  ...point('svm-rbf', 'distillation', 'same+probs', 1000, [0.07, 0.08, 0.09], 5),
  ...notApplicable('cnn', 'distillation', 'same+label', 1000),
];

const NEXT_CELLS: CellResult[] = [
  // unchanged
  ...point('cnn', 'knockoff', 'same+probs', 250, [0.18, 0.19, 0.2], 2),
  // ρ worse by 0.06 > 0.02: the attack copies less well
  ...point('cnn', 'knockoff', 'same+probs', 1000, [0.155, 0.16, 0.165], 5.2),
  // ρ better by 0.05
  ...point('svm-rbf', 'knockoff', 'same+probs', 1000, [0.105, 0.11, 0.115], 6.1),
  // ρ worse by 0.01, within tolerance; and a budget the base run did not have
  ...point('naive-bayes', 'distillation', 'same+probs', 1000, [0.11, 0.13, 0.15], 4.1),
  ...point('naive-bayes', 'distillation', 'same+probs', 3000, [0.06, 0.07, 0.08], 11),
  // same ρ, three times slower
  ...point('cnn', 'distillation', 'same+probs', 1000, [0.05, 0.06, 0.07], 12),
  // every seed fails now
  ...point('svm-rbf', 'distillation', 'same+probs', 1000, [null, null, null], 0.4),
  ...notApplicable('cnn', 'distillation', 'same+label', 1000),
];

function config(over: Record<string, unknown> = {}): SweepConfig {
  const quick = JSON.parse(readFileSync(join(REPO_ROOT, 'bench', 'presets', 'quick.json'), 'utf8'));
  return parseSweepConfig({ ...quick, budgets: [250, 1000, 3000], seeds: [1, 2, 3], ...over }, 'quick (test)');
}

function manifest(runId: string, cfg: SweepConfig, cells: CellResult[]): Manifest {
  const count = (s: CellResult['status']) => cells.filter((c) => c.status === s).length;
  return {
    rhobench: '0.1.0',
    runId,
    status: 'finished',
    startedAt: '2026-11-24T02:00:00.000Z',
    finishedAt: '2026-11-24T02:07:30.000Z',
    config: cfg,
    backend: { name: 'wasm', gpu: false, reason: 'WebAssembly (SIMD, one thread)' },
    targets: cfg.targets.map((t) => ({ id: t.id, family: t.family, testAccuracy: TARGET_ACCURACY[t.id] })),
    packages: { '@tensorflow/tfjs': '4.22.0' },
    gitCommit: 'abc123',
    machine: { hostname: 'ci', platform: 'linux', release: '6.1', cpus: 2, cpuModel: 'Test CPU', memoryGiB: 8, node: 'v20.20.2' },
    cells: { total: cells.length, ok: count('ok'), notApplicable: count('not-applicable'), failed: count('failed') },
  };
}

const ROOT = mkdtempSync(join(tmpdir(), 'rhobench-compare-'));

/** A run folder written by the real writers: cells.jsonl, rho.json and the rest, manifest.json. */
async function writeRun(name: string, cells: CellResult[], m: Manifest): Promise<string> {
  const files = new RunFiles(join(ROOT, name));
  await files.open();
  for (const c of cells) await files.appendCell(c);
  await files.writeAggregates(cells);
  await files.writeManifest(m);
  return files.dir;
}

const TOL = { rhoTolerance: 0.02, speedTolerance: 0.5 };

let baseDir: string;
let nextDir: string;
let base: LoadedRun;
let next: LoadedRun;

function row(rows: readonly ComparisonRow[], target: string, attack: string, side: string, budget: number): ComparisonRow {
  const r = rows.find((x) => x.target === target && x.attack === attack && x.side === side && x.budget === budget);
  if (!r) throw new Error(`no row ${target} ${attack} ${side} ${budget}`);
  return r;
}

test.before(async () => {
  baseDir = await writeRun('base', BASE_CELLS, manifest('base', config(), BASE_CELLS));
  nextDir = await writeRun('next', NEXT_CELLS, manifest('next', config(), NEXT_CELLS));
  base = await loadRun(baseDir);
  next = await loadRun(nextDir);
});

test.after(() => rmSync(ROOT, { recursive: true, force: true }));

test('verdicts: worse ρ, better ρ, within tolerance, new budget, 3× slower, failed', () => {
  const { rows, warnings } = compareRuns(base, next, TOL);
  assert.equal(warnings, []);
  // 7 base points, plus naive-bayes@3000 in the new run only.
  assert.is(rows.length, 8);
  const worse = row(rows, 'cnn', 'knockoff', 'same+probs', 1000);
  assert.is(worse.verdict, 'regressed-rho');
  assert.ok(Math.abs((worse.deltaRho as number) - 0.06) < 1e-12);
  assert.is(row(rows, 'cnn', 'knockoff', 'same+probs', 250).verdict, 'same');
  const better = row(rows, 'svm-rbf', 'knockoff', 'same+probs', 1000);
  assert.is(better.verdict, 'improved');
  assert.ok(Math.abs((better.deltaRho as number) + 0.05) < 1e-12);
  const within = row(rows, 'naive-bayes', 'distillation', 'same+probs', 1000);
  assert.is(within.verdict, 'same');
  assert.ok(Math.abs((within.deltaRho as number) - 0.01) < 1e-12);
  const added = row(rows, 'naive-bayes', 'distillation', 'same+probs', 3000);
  assert.is(added.verdict, 'only-in-new');
  assert.is(added.base, null);
  assert.ok(Math.abs((added.next?.rhoMean as number) - 0.07) < 1e-12);
  const slow = row(rows, 'cnn', 'distillation', 'same+probs', 1000);
  assert.is(slow.verdict, 'regressed-speed');
  assert.is(slow.rhoChange, 'same');
  assert.ok(Math.abs((slow.speedRatio as number) - 3) < 1e-9);
  assert.is(row(rows, 'svm-rbf', 'distillation', 'same+probs', 1000).verdict, 'regressed-status');
  assert.is(row(rows, 'cnn', 'distillation', 'same+label', 1000).verdict, 'same');
  assert.is(comparisonExitCode(rows), 1);
});

test('a run compared with itself: all same, exit 0', () => {
  const { rows } = compareRuns(base, base, TOL);
  assert.ok(rows.every((r) => r.verdict === 'same'));
  assert.is(comparisonExitCode(rows), 0);
});

test('tolerances and direction change the verdicts', () => {
  const loose = compareRuns(base, next, { rhoTolerance: 0.1, speedTolerance: 0.5 }).rows;
  assert.is(row(loose, 'cnn', 'knockoff', 'same+probs', 1000).verdict, 'same');
  assert.is(row(loose, 'svm-rbf', 'knockoff', 'same+probs', 1000).verdict, 'same');
  const tight = compareRuns(base, next, { rhoTolerance: 0.005, speedTolerance: 0.5 }).rows;
  assert.is(row(tight, 'naive-bayes', 'distillation', 'same+probs', 1000).verdict, 'regressed-rho');
  const slowOk = compareRuns(base, next, { rhoTolerance: 0.02, speedTolerance: 3 }).rows;
  assert.is(row(slowOk, 'cnn', 'distillation', 'same+probs', 1000).verdict, 'same');
  // The 8 s slowdown passes a floor of 10 s per cell.
  const floored = compareRuns(base, next, { ...TOL, speedFloorSeconds: 10 }).rows;
  assert.is(row(floored, 'cnn', 'distillation', 'same+probs', 1000).verdict, 'same');
  // Defenses under test: lower ρ (a closer copy) is the regression.
  const defense = compareRuns(base, next, { ...TOL, direction: 'defense' }).rows;
  assert.is(row(defense, 'cnn', 'knockoff', 'same+probs', 1000).verdict, 'improved');
  assert.is(row(defense, 'svm-rbf', 'knockoff', 'same+probs', 1000).verdict, 'regressed-rho');
  // Only the failed point is left regressed once the tolerances swallow the rest.
  const lenient = compareRuns(base, next, { rhoTolerance: 0.1, speedTolerance: 3 }).rows;
  assert.equal(lenient.filter((r) => r.verdict.startsWith('regressed')).map((r) => r.verdict), ['regressed-status']);
  assert.throws(() => compareRuns(base, next, { rhoTolerance: -1, speedTolerance: 0.5 }), /rhoTolerance/);
});

test('interval overlap: 95% t-intervals over seeds', () => {
  const { rows } = compareRuns(base, next, TOL);
  // 0.100 ± 0.0124 against 0.160 ± 0.0124: disjoint.
  assert.is(row(rows, 'cnn', 'knockoff', 'same+probs', 1000).overlap, false);
  // 0.160 ± 0.0124 against 0.110 ± 0.0124: disjoint.
  assert.is(row(rows, 'svm-rbf', 'knockoff', 'same+probs', 1000).overlap, false);
  // 0.12 ± 0.0497 against 0.13 ± 0.0497: overlap.
  assert.is(row(rows, 'naive-bayes', 'distillation', 'same+probs', 1000).overlap, true);
  assert.is(row(rows, 'cnn', 'knockoff', 'same+probs', 250).overlap, true);
  // No ρ, or one side missing: no interval to compare.
  assert.is(row(rows, 'naive-bayes', 'distillation', 'same+probs', 3000).overlap, null);
  assert.is(row(rows, 'svm-rbf', 'distillation', 'same+probs', 1000).overlap, null);
  // The interval is the aggregate's, not recomputed here.
  const r = row(rows, 'cnn', 'knockoff', 'same+probs', 1000);
  const ci = meanInterval([0.155, 0.16, 0.165]);
  assert.ok(Math.abs((r.next?.rhoLow as number) - ci.low) < 1e-12 && Math.abs((r.next?.rhoHigh as number) - ci.high) < 1e-12);
  // One seed: the interval is a point, so overlap is not judged.
  const one = compareRuns(
    { manifest: base.manifest, curves: toCurves(point('cnn', 'knockoff', 'same+probs', 1000, [0.1], 5)) },
    { manifest: next.manifest, curves: toCurves(point('cnn', 'knockoff', 'same+probs', 1000, [0.1], 5)) },
    TOL,
  );
  assert.is(one.rows[0].overlap, null);
});

test('table: names the regressed curve and ends with the counts', () => {
  const comparison = compareRuns(base, next, TOL);
  const text = formatComparison(comparison.rows, comparison);
  const lines = text.split('\n');
  const regressed = lines.filter((l) => l.includes('regressed-rho'));
  assert.is(regressed.length, 1);
  assert.match(regressed[0], /^cnn\s+knockoff\s+same\+probs\s+1000\s+0\.100 \[0\.088, 0\.112\]\s+0\.160 \[0\.148, 0\.172\]\s+\+0\.060\b/);
  assert.match(lines.find((l) => l.includes('regressed-speed')) as string, /^cnn\s+distillation\s+same\+probs\s+1000\b.*×3\.00/);
  assert.ok(lines.some((l) => /^svm-rbf\s+distillation.*FAILED.*regressed-status$/.test(l)));
  assert.ok(lines.includes('3 regressed (ρ 1, speed 1, status 1), 1 improved, 3 same, 0 only in base, 1 only in new'), text);
  assert.match(text, /\|Δρ\| ≤ 0\.02, ρ up = worse/);
  // Every table line (head, rule, rows) has the same width up to the verdict column.
  const verdictAt = lines[0].indexOf('verdict');
  for (const l of lines.slice(2, 2 + comparison.rows.length)) assert.ok(/^(regressed|improved|same|only)/.test(l.slice(verdictAt)), l);
});

test('configs: a different eval set is refused with the difference named; force compares anyway', () => {
  const cfg = config({ dataset: { name: 'mnist', trainSize: 10000, poolSize: 20000, evalSize: 1000, seed: 1 } });
  const other = { manifest: manifest('other', cfg, NEXT_CELLS), curves: next.curves };
  const err = (() => {
    try {
      compareRuns(base, other, TOL);
    } catch (e) {
      return e as Error;
    }
    throw new Error('expected a refusal');
  })();
  assert.instance(err, IncomparableRunsError);
  assert.match(err.message, 'dataset.evalSize: 2000 → 1000');
  assert.equal((err as IncomparableRunsError).differences, ['dataset.evalSize: 2000 → 1000']);
  const forced = compareRuns(base, other, { ...TOL, force: true });
  assert.equal(forced.overridden, ['dataset.evalSize: 2000 → 1000']);
  assert.ok(forced.warnings.some((w) => w.includes('dataset.evalSize')));
  assert.is(row(forced.rows, 'cnn', 'knockoff', 'same+probs', 1000).verdict, 'regressed-rho');
});

test('configs: a shared target defined differently is refused; other differences only warn', () => {
  const retrained = config();
  retrained.targets = retrained.targets.map((t) => (t.id === 'cnn' ? { ...t, epochs: 5 } : t));
  const err = (() => {
    try {
      compareRuns(base, { manifest: manifest('x', retrained, NEXT_CELLS), curves: next.curves }, TOL);
    } catch (e) {
      return e as IncomparableRunsError;
    }
    throw new Error('expected a refusal');
  })();
  assert.equal(err.differences, ['targets[cnn].epochs: 3 → 5']);

  // A field one run's rhobench did not record, other seeds, another machine: comparable, with warnings.
  const older = config({ seeds: [1, 2] });
  older.targets = older.targets.map(({ task: _task, ...t }) => t as SweepConfig['targets'][number]);
  const oldManifest = manifest('old', older, BASE_CELLS);
  oldManifest.machine = { ...oldManifest.machine, cpuModel: 'Other CPU' };
  const c = compareRuns({ manifest: oldManifest, curves: base.curves }, next, TOL);
  assert.equal(c.overridden, []);
  assert.ok(c.warnings.some((w) => w.startsWith('seconds per cell are not like-for-like: machine.cpuModel')));
  assert.ok(c.warnings.some((w) => w.includes('config.seeds')));
  assert.ok(c.warnings.some((w) => w.includes('targets[cnn].task: (absent) → "digits"')));
});

test('loadRun: curves rebuilt from cells.jsonl when rho.json is missing; clear errors otherwise', async () => {
  const dir = await writeRun('no-rho', NEXT_CELLS, manifest('no-rho', config(), NEXT_CELLS));
  rmSync(join(dir, 'rho.json'));
  const run = await loadRun(dir);
  assert.is(run.source, 'cells.jsonl');
  assert.equal(run.curves, toCurves(NEXT_CELLS));
  assert.equal(run.curves, next.curves);
  const viaCells = await compareRunDirs(baseDir, dir, TOL);
  assert.equal(viaCells.rows, compareRuns(base, next, TOL).rows);
  assert.ok(viaCells.warnings.some((w) => w.includes('no rho.json')));

  const noManifest = await rejection(loadRun(join(ROOT, 'missing')));
  assert.instance(noManifest, RunFolderError);
  assert.match(noManifest.message, 'does not exist');
  rmSync(join(dir, 'manifest.json'));
  assert.match((await rejection(loadRun(dir))).message, 'has no manifest.json');

  const corrupt = await writeRun('corrupt', BASE_CELLS, manifest('corrupt', config(), BASE_CELLS));
  writeFileSync(join(corrupt, 'rho.json'), '{"curves": [');
  const err = await rejection(loadRun(corrupt));
  assert.instance(err, RunFolderError);
  assert.match(err.message, join(corrupt, 'rho.json'));
  assert.match(err.message, 'corrupt');
  writeFileSync(join(corrupt, 'rho.json'), '{"curves": [{"target": "cnn"}]}');
  assert.match((await rejection(loadRun(corrupt))).message, /rho\.json is not a rho\.json of curves: curves\.0\.attack/);
  writeFileSync(join(corrupt, 'manifest.json'), '{"name": "an experiment"}');
  assert.match((await rejection(loadRun(corrupt))).message, /manifest\.json is not a sweep manifest/);
});

test('tracker: ρ and seconds entries equal the curve means; benchmark.json on disk', async () => {
  const entries = trackerEntries(next.curves, next.manifest);
  assert.is(new Set(entries.map((e) => e.name)).size, entries.length);
  let rhoEntries = 0;
  for (const c of next.curves) {
    for (const p of c.points) {
      const name = `${c.target} ${c.attack} ${c.student} ${c.side}`;
      const rho = entries.find((e) => e.name === `${name} ρ@${p.budget}`);
      const secs = entries.find((e) => e.name === `${name} s/cell@${p.budget}`);
      if (p.rhoMean === null) {
        assert.is(rho, undefined, 'failed and n/a points are left out');
        assert.is(secs, undefined);
        continue;
      }
      rhoEntries++;
      assert.is(rho?.unit, 'rho');
      assert.is(rho?.value, p.rhoMean);
      assert.is(rho?.range, `± ${((p.rhoHigh as number) - p.rhoMean).toFixed(4)}`);
      assert.match(rho?.extra as string, 'backend: wasm (no GPU)');
      assert.is(secs?.unit, 's');
      assert.is(secs?.value, p.secondsMean);
    }
  }
  assert.is(rhoEntries, 6);
  const knock = entries.find((e) => e.name === 'cnn knockoff cnn-small same+probs ρ@1000');
  assert.ok(Math.abs((knock?.value as number) - 0.16) < 1e-12);
  assert.is(knock?.range, '± 0.0124');
  assert.equal(entries.at(-1), { name: 'quick sweep wall time', unit: 's', value: 450, extra: 'backend: wasm (no GPU)\nrun: next' });
  for (const e of entries) assert.equal(Object.keys(e).filter((k) => !['name', 'unit', 'value', 'range', 'extra'].includes(k)), []);

  const path = await writeTrackerJson(nextDir);
  assert.is(path, join(nextDir, TRACKER_FILE));
  assert.equal(JSON.parse(readFileSync(path, 'utf8')), entries);
});

test.run();
