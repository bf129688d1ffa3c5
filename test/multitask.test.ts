import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Matrix, solve } from 'ml-matrix';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatTaskCurves, toTaskCurves } from '../bench/aggregate.ts';
import { ConfigError, parseSweepConfig } from '../bench/config.ts';
import { expandCells } from '../bench/grid.ts';
import { runSweep } from '../bench/runner.ts';
import type { CellResult } from '../bench/types.ts';
import { sampleRegressionTasks, sampleTasks, taskCapacity, TASK_KINDS, type TaskSamplerSpec } from '../datasets/task-sampler.ts';
import { isTask, relabel, taskPositives, type TaskName } from '../datasets/tasks.ts';
import type { Split } from '../datasets/types.ts';
import { gaussians, rng } from '../models/seed.ts';
import { cellResult, TEST_CACHE } from './helpers.ts';

const family = (over: Partial<TaskSamplerSpec> = {}): TaskSamplerSpec => ({ sampler: 'mnist-family', count: 6, seed: 1, kinds: TASK_KINDS, ...over });

/** A binary task as the unordered partition of the digits it makes (complements ask the same question). */
function partition(task: TaskName): string {
  const positives = new Set(taskPositives(task));
  return [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].filter((d) => positives.has(d) === positives.has(0)).join('');
}

test('subset tasks: named by their digits, relabel by membership, bad names refused', () => {
  const split: Split = { x: new Float32Array(6), y: Int32Array.from([0, 1, 2, 3, 7, -1]), n: 6 };
  assert.equal(Array.from(relabel(split, 'subset-0137').y), [1, 1, 0, 1, 1, -1]);
  assert.ok(isTask('subset-0137'));
  for (const bad of ['subset-', 'subset-31', 'subset-113', 'subset-0123456789', 'subset-0a']) assert.not.ok(isTask(bad), bad);
  assert.not.ok(isTask('subset-019', 9), 'digit 9 is no class of a nine-class dataset');
});

test('the task sampler: deterministic, distinct questions, only the kinds asked for', () => {
  const a = sampleTasks(family({ count: 12 }));
  assert.equal(a, sampleTasks(family({ count: 12 })), 'same spec, same tasks');
  assert.not.equal(a, sampleTasks(family({ count: 12, seed: 2 })));
  assert.is(new Set(a.map(partition)).size, 12, 'no two tasks split the digits the same way');
  assert.ok(a.every((t) => isTask(t)));
  const kinds = new Set(a.map((t) => t.replace(/-[\d]+$/, '')));
  assert.ok(kinds.size >= 3, `kinds drawn: ${[...kinds]}`);

  const ovr = sampleTasks(family({ count: 10, kinds: ['one-vs-rest'] }));
  assert.equal([...ovr].sort(), Array.from({ length: 10 }, (_, d) => `one-vs-rest-${d}`).sort(), 'all ten digits, each once');
  assert.equal(sampleTasks(family({ count: 2, kinds: ['parity', 'ge5'] })).sort(), ['ge5', 'parity']);
  const subsets = sampleTasks(family({ count: 40, kinds: ['subset'] }));
  assert.ok(subsets.every((t) => t.startsWith('subset-') || t === 'parity' || t === 'ge5'));
  assert.ok(subsets.every((t) => { const k = taskPositives(t)!.length; return k >= 2 && k <= 8; }), 'no subset is a one-vs-rest task in disguise');
  assert.is(new Set(subsets.map(partition)).size, 40);

  assert.is(taskCapacity(['one-vs-rest']), 10);
  assert.is(taskCapacity(['parity', 'ge5']), 2);
  assert.is(taskCapacity(TASK_KINDS), 10 + 501);
  assert.throws(() => sampleTasks(family({ count: 11, kinds: ['one-vs-rest'] })), /11 tasks asked for, but the kinds one-vs-rest allow only 10/);
  assert.throws(() => sampleTasks(family({ count: 0 })), /count must be an integer ≥ 1/);
  assert.throws(() => sampleTasks({ ...family(), sampler: 'imagenet' as never }), /unknown task sampler "imagenet"/);
});

const sweepBase = {
  name: 'multi',
  dataset: { name: 'mnist', trainSize: 2000, poolSize: 1000, evalSize: 500, seed: 3 },
  attacks: ['knockoff'],
  students: [{ arch: 'mlp', epochs: 4, batchSize: 32, lr: 0.003 }],
  side: [{ name: 'same+probs', pool: 'same', disclosure: 'probs' }],
  budgets: [200],
  seeds: [1, 2],
  backend: 'wasm',
};

function configError(targets: unknown[], extra: Record<string, unknown> = {}): string {
  try {
    parseSweepConfig({ ...sweepBase, ...extra, targets }, 'multi.json');
  } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

test('a sampler target expands into one target per task; bad specs are named', () => {
  const spec = { id: 'nb', family: 'naive-bayes', trainSize: 2000, tasks: { sampler: 'mnist-family', count: 3, seed: 5 } };
  const cfg = parseSweepConfig({ ...sweepBase, targets: [spec, { id: 'lr', family: 'logreg', task: 'ge5', trainSize: 2000 }] });
  const tasks = sampleTasks(family({ count: 3, seed: 5 }));
  assert.equal(cfg.targets.map((t) => t.id), [...tasks.map((t) => `nb@${t}`), 'lr']);
  assert.equal(cfg.targets.map((t) => t.task), [...tasks, 'ge5']);
  assert.ok(cfg.targets.every((t) => !('tasks' in t)), 'expanded specs are plain target specs');
  assert.equal(cfg.taskSets, [{ base: 'nb', family: 'naive-bayes', sampler: family({ count: 3, seed: 5 }), members: tasks.map((task) => ({ id: `nb@${task}`, task })) }]);
  assert.equal(cfg.epsilons, [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]);
  assert.equal(parseSweepConfig({ ...sweepBase, targets: [spec] }), parseSweepConfig({ ...sweepBase, targets: [spec] }), 'expansion is deterministic');
  assert.is(expandCells(cfg).length, 4 * 2, 'every task target × seed is its own cell');
  assert.equal(parseSweepConfig({ ...sweepBase, epsilons: [0, 0.3], targets: [spec] }).epsilons, [0, 0.3]);

  assert.match(configError([{ ...spec, tasks: { sampler: 'imagenet', count: 3 } }]), /targets\.0\.tasks\.sampler: .*"mnist-family"/);
  assert.match(configError([{ ...spec, tasks: { sampler: 'mnist-family', count: 0 } }]), /targets\.0\.tasks\.count: Too small/);
  assert.match(configError([{ ...spec, tasks: { sampler: 'mnist-family', count: 3, kinds: ['parity', 'ge5'] } }]), /targets\.0\.tasks\.count: 3 tasks asked for, but the kinds parity, ge5 allow only 2/);
  assert.match(configError([{ ...spec, tasks: { sampler: 'mnist-family', count: 2, kinds: ['odd'] } }]), /targets\.0\.tasks\.kinds\.0/);
  assert.match(configError([{ ...spec, task: 'parity' }]), /targets\.0\.tasks: give either task \(one task\) or tasks \(a sampler\), not both/);
  assert.match(configError([spec, { id: `nb@${tasks[0]}`, family: 'logreg', trainSize: 2000 }]), /targets\.1\.id: ".*" is also the id of a sampled task's target/);
  assert.match(configError([spec], { epsilons: [-0.1] }), /epsilons\.0/);
});

test('regression tasks: deterministic, one vector per task, linear ones in the span of X, smooth ones not', () => {
  const n = 60;
  const d = 5;
  const rows = { x: gaussians(n * d, rng(9, 'rows')), n, d };
  const linear = sampleRegressionTasks(rows, 'linear', 3, 4);
  assert.is(linear.length, 3);
  assert.ok(linear.every((y) => y instanceof Float64Array && y.length === n));
  assert.equal(sampleRegressionTasks(rows, 'linear', 3, 4), linear);
  assert.equal(sampleRegressionTasks(rows, 'linear', 5, 4).slice(0, 3), linear, 'a larger count extends a smaller one');
  assert.not.equal(linear[0], linear[1]);

  // Least squares on [X, 1]: linear tasks are fitted exactly; smooth ones leave a clear residual.
  const design = new Matrix(n, d + 1);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) design.set(i, j, rows.x[i * d + j]);
    design.set(i, d, 1);
  }
  const unexplained = (y: Float64Array) => {
    const target = Matrix.columnVector(Array.from(y));
    const fit = design.mmul(solve(design, target));
    const mean = y.reduce((a, b) => a + b, 0) / n;
    let res = 0;
    let tot = 0;
    for (let i = 0; i < n; i++) {
      res += (y[i] - fit.get(i, 0)) ** 2;
      tot += (y[i] - mean) ** 2;
    }
    return res / tot;
  };
  for (const y of linear) assert.ok(unexplained(y) < 1e-20, `linear task residual ${unexplained(y)}`);
  const smooth = sampleRegressionTasks(rows, 'smooth', 3, 4);
  assert.ok(smooth.every((y) => y.length === n && y.every(Number.isFinite)));
  for (const y of smooth) assert.ok(unexplained(y) > 0.02, `smooth task residual ${unexplained(y)}`);
  assert.throws(() => sampleRegressionTasks(rows, 'cubic' as never, 1, 1), /unknown regression task kind "cubic"/);
  assert.throws(() => sampleRegressionTasks(rows, 'linear', 0, 1), /count/);
});

const cell = (over: Partial<CellResult>) => cellResult({ target: 'nb', side: 'p', studentAccuracy: 0.9, ...over });

test('task curves: ρ averaged over tasks per seed, then over seeds; incomplete seeds left out', () => {
  const set = { base: 'nb', family: 'naive-bayes', members: [{ id: 'nb@a', task: 'parity' }, { id: 'nb@b', task: 'ge5' }] };
  const curves = toTaskCurves([
    cell({ target: 'nb@a', seed: 1, rho: 0.1, targetAccuracy: 0.8 }), cell({ target: 'nb@b', seed: 1, rho: 0.3, targetAccuracy: 0.9 }),
    cell({ target: 'nb@a', seed: 2, rho: 0.2, targetAccuracy: 0.8 }), cell({ target: 'nb@b', seed: 2, rho: 0.6, targetAccuracy: 0.9 }),
    cell({ target: 'nb@a', seed: 3, rho: 0.0, targetAccuracy: 0.8 }),
    cell({ target: 'nb@a', budget: 50, status: 'not-applicable', rho: null, targetAccuracy: 0.8 }),
    cell({ target: 'nb@b', budget: 50, status: 'not-applicable', rho: null, targetAccuracy: 0.9 }),
    cell({ target: 'other', rho: 0.9 }),
  ], [set]);
  assert.is(curves.length, 1, 'plain targets have no task curve');
  const [c] = curves;
  assert.is(c.target, 'nb');
  assert.ok(Math.abs(c.targetAccuracyMean! - 0.85) < 1e-12);
  assert.equal(c.points.map((p) => p.budget), [50, 100]);
  assert.is(c.points[0].status, 'not-applicable');
  const p = c.points[1];
  assert.equal([p.tasks, p.n, p.status], [2, 2, 'ok']);
  assert.equal(p.rhoBySeed.map((s) => s.seed), [1, 2]);
  assert.ok(Math.abs(p.rhoBySeed[0].rho - 0.2) < 1e-12 && Math.abs(p.rhoBySeed[1].rho - 0.4) < 1e-12);
  assert.ok(Math.abs(p.rhoMean! - 0.3) < 1e-12);
  // sd over seeds 0.1·√2, so the half width is t(1) · 0.1·√2 / √2.
  assert.ok(Math.abs(p.rhoHigh! - (0.3 + 12.706 * 0.1)) < 1e-9, 'a t-interval over the two seeds');
  assert.ok(Math.abs(p.byTask[0].rhoMean! - 0.15) < 1e-12 && Math.abs(p.byTask[1].rhoMean! - 0.45) < 1e-12, 'seed 3 (one task only) left out of the task means too');
  const text = formatTaskCurves(curves).split('\n');
  assert.is(text.length, 3);
  assert.match(text[0], /E_tasks ρ@50\s+E_tasks ρ@100$/);
  assert.match(text[2], /^nb\s+2\s+0\.850\s+knockoff\s+p\s+n\/a\s+0\.300±1\.271$/);
});

test('a sweep with sampled tasks writes task curves and (ε, δ) tables from its cells', async () => {
  const resultsDir = mkdtempSync(join(tmpdir(), 'rhobench-multitask-'));
  const config = parseSweepConfig({
    ...sweepBase,
    targets: [{ id: 'nb', family: 'naive-bayes', trainSize: 2000, tasks: { sampler: 'mnist-family', count: 2, seed: 3 } }],
    epsilons: [0.05, 0.2, 1],
  });
  const run = await runSweep(config, { resultsDir, cacheDir: TEST_CACHE, runId: 'multi' });
  const dir = join(resultsDir, 'multi');
  for (const f of ['cells.jsonl', 'rho.csv', 'rho.json', 'task-curves.csv', 'eps-delta.json', 'eps-delta.csv']) assert.ok(existsSync(join(dir, f)), f);

  const cells: CellResult[] = readFileSync(join(dir, 'cells.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.is(cells.length, 2 * 2);
  assert.ok(cells.every((c) => c.status === 'ok'), JSON.stringify(cells.filter((c) => c.status !== 'ok')));
  const members = config.taskSets[0].members;
  for (const c of cells) assert.is(c.task, members.find((m) => m.id === c.target)!.task, 'each cell row carries its task');

  const { taskCurves } = JSON.parse(readFileSync(join(dir, 'rho.json'), 'utf8'));
  assert.is(taskCurves.length, 1);
  const point = taskCurves[0].points[0];
  const rhoOf = (target: string, seed: number) => cells.find((c) => c.target === target && c.seed === seed)!.rho!;
  const perSeed = [1, 2].map((seed) => (rhoOf(members[0].id, seed) + rhoOf(members[1].id, seed)) / 2);
  assert.equal(point.rhoBySeed.map((s: { rho: number }) => s.rho), perSeed);
  assert.ok(Math.abs(point.rhoMean - (perSeed[0] + perSeed[1]) / 2) < 1e-12);
  assert.ok(point.rhoMean < 0.5, `probabilities from the same distribution copy binary targets well: ρ ${point.rhoMean}`);

  const csv = readFileSync(join(dir, 'task-curves.csv'), 'utf8').trim().split('\n');
  assert.is(csv.length, 2);
  assert.match(csv[0], /^target,family,attack,student,side,budget,tasks,n,status,rhoMean/);
  assert.match(csv[1], /^nb,naive-bayes,knockoff,mlp,same\+probs,200,2,2,ok,/);

  const eps = JSON.parse(readFileSync(join(dir, 'eps-delta.json'), 'utf8'));
  assert.equal(eps.epsilons, [0.05, 0.2, 1]);
  assert.equal(eps.rows.map((r: { target: string; epsilon: number }) => [r.target, r.epsilon]), [['nb', 0.05], ['nb', 0.2], ['nb', 1]]);
  for (const r of eps.rows) assert.is(r.successes, perSeed.filter((rho) => rho <= r.epsilon).length);
  assert.equal(eps.rows[2].deltaHat, 1);
  const epsCsv = readFileSync(join(dir, 'eps-delta.csv'), 'utf8').trim().split('\n');
  assert.is(epsCsv.length, 1 + 3);
  assert.match(epsCsv[0], /^target,tasks,attack,student,side,budget,epsilon,trials,successes,deltaHat,deltaLow,deltaHigh$/);
  assert.is(run.results.length, 4);
});

test.run();
