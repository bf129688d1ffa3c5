import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ATTACKS } from '../attacks/index.ts';
import { parseSweepConfig, type SweepConfig } from '../bench/config.ts';
import { cellKey, expandCells } from '../bench/grid.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import { queryGridPath } from '../bench/query-samples.ts';
import { runSweep, type RunManifest } from '../bench/runner.ts';
import type { CellResult } from '../bench/types.ts';
import { CELLS_PER_GPU_THREAD, attackRegistryDigest, largestFirst, resolveCellsPerThread, resolveConcurrency } from '../bench/workers.ts';
import { TEST_CACHE } from './helpers.ts';

const work = mkdtempSync(join(tmpdir(), 'rhobench-workers-'));
const resultsDir = join(work, 'results');

/** Cheap cells (as in sweep.test.ts): a naive-Bayes target on small MNIST, cached across the suite. */
const tinyJson = {
  name: 'tiny',
  dataset: { name: 'mnist', trainSize: 2000, poolSize: 1000, evalSize: 500, seed: 3 },
  targets: [{ id: 'nb', family: 'naive-bayes', trainSize: 2000 }],
  attacks: ['knockoff', 'distillation'],
  students: [{ arch: 'mlp', epochs: 3, batchSize: 32, lr: 0.003 }],
  side: [
    { name: 'same+probs', pool: 'same', disclosure: 'probs' },
    { name: 'noise+label', pool: 'noise', disclosure: 'label' },
  ],
  budgets: [100, 300],
  seeds: [1],
  backend: 'wasm',
};
const tiny = parseSweepConfig(tinyJson);
const tinyPath = join(work, 'tiny.json');
writeFileSync(tinyPath, JSON.stringify(tinyJson));

const json = (path: string) => JSON.parse(readFileSync(path, 'utf8'));
const cellsOf = (dir: string): CellResult[] => readFileSync(join(dir, 'cells.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));

/** The CLI through its bin shim (node scripts/rhobench.js), as a user runs it. */
function rhobench(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'scripts', 'rhobench.js'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, RHOBENCH_CACHE: TEST_CACHE },
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) => child.on('close', (code) => (clearTimeout(timer), resolve({ code, out, err }))));
}

test("'auto' concurrency is one cell per core, at most one per cell, and one in the main thread", () => {
  assert.is(resolveConcurrency('auto', 8, { cores: 2 }), 2);
  assert.is(resolveConcurrency('auto', 1, { cores: 16 }), 1);
  assert.is(resolveConcurrency('auto', 8, { cores: 2, inThread: true }), 1);
  assert.is(resolveConcurrency('auto', 8, { cores: 8, memory: { free: 3e9, perThread: 1e9 } }), 4, 'the main thread and as many workers as free memory holds');
  assert.is(resolveConcurrency('auto', 8, { cores: 8, memory: { free: 0.5e9, perThread: 1e9 } }), 1);
  assert.is(resolveConcurrency(3, 8, { cores: 2, inThread: true }), 3, 'a number is taken as given');
  assert.is(resolveConcurrency('auto', 36, { cores: 16, cellsPerThread: 8 }), 5, 'no more threads than the cells fill');
  assert.is(parseSweepConfig(tinyJson).concurrency, 'auto');
  assert.throws(() => parseSweepConfig({ ...tinyJson, concurrency: 0 }), /concurrency/);
  assert.throws(() => parseSweepConfig({ ...tinyJson, concurrency: 'many' }), /concurrency/);
});

/** The tiny sweep one cell at a time in this thread: the reference the concurrent runs must equal. */
let oneAtATime: Promise<CellResult[]> | undefined;
const reference = () => (oneAtATime ??= runSweep({ ...tiny, concurrency: 1 }, { resultsDir, cacheDir: TEST_CACHE, runId: 'one' }).then((r) => r.results));

function assertSameCells(got: CellResult[], want: CellResult[], where: string): void {
  assert.equal(got.map(cellKey), expandCells(tiny).map(cellKey), 'every cell once, put back in grid order when the run ended');
  const byKey = new Map(want.map((r) => [cellKey(r), r]));
  for (const r of got) {
    const o = byKey.get(cellKey(r))!;
    assert.is(r.status, o.status, cellKey(r));
    assert.is(r.rho, o.rho, `${cellKey(r)}: ρ ${r.rho} ${where} vs ${o.rho} one at a time`);
    assert.is(r.studentAccuracy, o.studentAccuracy, cellKey(r));
  }
  assert.ok(got.filter((r) => r.status === 'ok').length >= 5 && got.every((r) => r.status !== 'failed'));
}

test('2 cells at a time (the CLI through its bin shim: this thread and a worker) give the cells and ρ of 1 at a time', async () => {
  const one = await reference();
  assert.equal(json(join(resultsDir, 'one', 'manifest.json')).workers, { threads: 1, mainThread: true, cellsPerThread: 1 });

  const cli = await rhobench(['sweep', tinyPath, '-c', '2', '--json', '--results', resultsDir, '--run-id', 'two']);
  assert.is(cli.code, 0, cli.err);
  const logs = cli.out.trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.event === 'log').map((e) => e.message as string);
  assert.ok(logs.some((m) => /1 worker thread ready: 2 cells at a time/.test(m)), logs.join('\n'));
  const dir = join(resultsDir, 'two');
  const manifest: RunManifest = json(join(dir, 'manifest.json'));
  assert.equal(manifest.workers, { threads: 2, workerThreads: 1, crashes: 0, cellsPerThread: 1 });
  assert.is(manifest.config.concurrency, 2);
  assertSameCells(cellsOf(dir), one, 'in a worker');
  // The main thread hands each picture to one cell: the same three as a one-thread run draws.
  for (const [attack, side] of [['knockoff', 'same+probs'], ['knockoff', 'noise+label'], ['distillation', 'same+probs']]) {
    assert.ok(existsSync(queryGridPath(dir, { target: 'nb', attack, side })), `${attack} ${side}`);
  }
  assert.not.ok(existsSync(queryGridPath(dir, { target: 'nb', attack: 'distillation', side: 'noise+label' })));

  const bad = await rhobench(['sweep', tinyPath, '-c', '0', '--results', resultsDir]);
  assert.is(bad.code, 2);
  assert.match(bad.err, /expected "auto" or a whole number from 1 to 64, got "0"/);
});

test('cells interleaved in a thread (3 in this one; 2 in each of two threads through the CLI) give the cells and ρ of 1 at a time', async () => {
  const one = await reference();
  const here = await runSweep({ ...tiny, concurrency: 1, cellsPerThread: 3 }, { resultsDir, cacheDir: TEST_CACHE, runId: 'interleaved' });
  assert.equal(json(join(resultsDir, 'interleaved', 'manifest.json')).workers, { threads: 1, mainThread: true, cellsPerThread: 3 });
  assertSameCells(cellsOf(join(resultsDir, 'interleaved')), one, 'interleaved');
  assert.is(here.results.length, one.length);

  const cli = await rhobench(['sweep', tinyPath, '-c', '2', '--cells-per-thread', '2', '--json', '--results', resultsDir, '--run-id', 'two-by-two']);
  assert.is(cli.code, 0, cli.err);
  const logs = cli.out.trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.event === 'log').map((e) => e.message as string);
  assert.ok(logs.some((m) => /1 worker thread ready: 4 cells at a time \(2 interleaved in each thread\)/.test(m)), logs.join('\n'));
  assert.equal(json(join(resultsDir, 'two-by-two', 'manifest.json')).workers, { threads: 2, workerThreads: 1, crashes: 0, cellsPerThread: 2 });
  assertSameCells(cellsOf(join(resultsDir, 'two-by-two')), one, 'two threads of two');
  assert.is(resolveCellsPerThread('auto', { gpu: false }), 1);
  assert.is(resolveCellsPerThread('auto', { gpu: true }), CELLS_PER_GPU_THREAD);
  assert.is(resolveCellsPerThread(5, { gpu: false }), 5);
  assert.throws(() => parseSweepConfig({ ...tinyJson, cellsPerThread: 17 }), /cellsPerThread/);
});

test('with worker threads the largest cells go first, grid order among equals', () => {
  const cells = expandCells({ ...tiny, budgets: [100, 300, 200] });
  const order = largestFirst(cells);
  assert.equal(order.map((c) => c.budget), [...cells.map((c) => c.budget)].sort((a, b) => b - a));
  for (const budget of [300, 200, 100]) {
    assert.equal(order.filter((c) => c.budget === budget).map(cellKey), cells.filter((c) => c.budget === budget).map(cellKey));
  }
  assert.equal(cells.map((c) => c.budget).slice(0, 3), [100, 300, 200], 'the grid itself is left as it was');
});

test('a sweep whose preparation fails stops the worker threads it spawned and exits with the error', async () => {
  const path = join(work, 'missing-pool.json');
  const missing = join(work, 'no-such-folder');
  writeFileSync(path, JSON.stringify({ ...tinyJson, side: [{ name: 'p', pool: { path: missing }, disclosure: 'label' }], concurrency: 2 }));
  const started = Date.now();
  const cli = await rhobench(['sweep', path, '--results', resultsDir]);
  assert.is(cli.code, 2, `exit code ${cli.code} after ${Date.now() - started} ms (null: it hung and was killed)\n${cli.err}`);
  assert.match(cli.err, new RegExp(`pool ${missing}: cannot read it`));
});

// Attacks that crash the thread they run in on seed 1 and act as knockoff otherwise. A worker
// registers them by importing the module (SweepOptions.workerPreload). This file may be compiled
// to CommonJS (uvu -r tsx), with a registry of its own: it registers them there too.
const crashModule = join(work, 'crashing-attacks.mjs');
writeFileSync(crashModule, [
  "import { isMainThread } from 'node:worker_threads';",
  'export function register(attacks) {',
  '  const knockoff = attacks.knockoff;',
  "  attacks['wasm-crash'] = { name: 'wasm-crash', run: async (ctx) => {",
  "    if (ctx.seed === 1) throw new WebAssembly.RuntimeError('memory access out of bounds');",
  '    return knockoff.run(ctx);',
  '  } };',
  "  attacks['thread-exit'] = { name: 'thread-exit', run: async (ctx) => {",
  "    if (ctx.seed === 1) { if (isMainThread) throw new Error('meant for a worker thread'); process.exit(7); }",
  '    return knockoff.run(ctx);',
  '  } };',
  '}',
  `register((await import(${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'attacks', 'index.ts')).href)})).ATTACKS);`,
].join('\n'));

// Three cells at a time: this thread and two workers. This thread takes the first cell in grid
// order (wasm-crash, seed 1) before any worker is ready, and no other after its backend crashed;
// the workers take the rest, thread-exit's seed-1 cell among them.
const crashing = (): SweepConfig => ({
  ...tiny,
  attacks: ['wasm-crash', 'thread-exit', 'knockoff'] as SweepConfig['attacks'],
  side: [tiny.side[0]],
  budgets: [100],
  seeds: [1, 2],
  concurrency: 3,
});

test('a crash fails its cell only: a crashed worker is replaced, a crashed main thread leaves its cells to the workers', async () => {
  (await import(pathToFileURL(crashModule).href)).register(ATTACKS);
  try {
    const config = crashing();
    const logs: string[] = [];
    const progress = { cellStart() {}, cellStep() {}, cellEnd() {}, log: (m: string) => logs.push(m) };
    const run = await runSweep(config, { resultsDir, cacheDir: TEST_CACHE, runId: 'crash', workerPreload: [crashModule], progress });
    assert.not.ok(run.crashed, 'a crash does not end the run');
    assert.ok(logs.some((m) => /backend of this thread crashed in cell 1 .*the worker threads run the remaining cells/.test(m)), logs.join('\n'));
    assert.ok(logs.some((m) => /worker thread \d+ exited \(code 7\) in a cell; the cell is recorded as failed and a fresh worker takes its place/.test(m)), logs.join('\n'));
    const cells = cellsOf(join(resultsDir, 'crash'));
    assert.equal(cells.map(cellKey).sort(), expandCells(config).map(cellKey).sort(), 'every cell has its record');
    const cell = (attack: string, seed: number) => cells.find((c) => c.attack === attack && c.seed === seed)!;
    assert.is(cell('wasm-crash', 1).status, 'failed');
    assert.match(cell('wasm-crash', 1).error!, /^backend crashed: memory access out of bounds/);
    assert.is(cell('thread-exit', 1).status, 'failed');
    assert.match(cell('thread-exit', 1).error!, /^backend crashed: worker thread \d+ exited \(code 7\)/);
    // The fresh workers run knockoff's cells as before: the same ρ as knockoff's own seed-2 cell.
    const reference = cell('knockoff', 2);
    assert.is(reference.status, 'ok', reference.error);
    for (const attack of ['wasm-crash', 'thread-exit']) {
      assert.is(cell(attack, 2).status, 'ok', cell(attack, 2).error);
      assert.is(cell(attack, 2).rho, reference.rho, attack);
    }
    const manifest: RunManifest = json(join(resultsDir, 'crash', 'manifest.json'));
    assert.equal(manifest.workers, { threads: 3, workerThreads: 2, crashes: 1, cellsPerThread: 1 });
    assert.equal(manifest.cells, { total: 6, ok: 4, notApplicable: 0, failed: 2 });
    assert.is(manifest.status, 'finished');
  } finally {
    delete ATTACKS['wasm-crash'];
    delete ATTACKS['thread-exit'];
  }
});

test('an attack registered in this thread only keeps the cells here, where it exists', async () => {
  const before = attackRegistryDigest(ATTACKS);
  ATTACKS['main-only'] = { name: 'main-only', run: (ctx) => ATTACKS.knockoff.run(ctx) };
  try {
    assert.is.not(attackRegistryDigest(ATTACKS), before);
    const logs: string[] = [];
    const progress = { cellStart() {}, cellStep() {}, cellEnd() {}, log: (m: string) => logs.push(m) };
    const config = { ...tiny, attacks: ['main-only'] as unknown as SweepConfig['attacks'], side: [tiny.side[0]], concurrency: 2 };
    const run = await runSweep(config, { resultsDir, cacheDir: TEST_CACHE, runId: 'main-only', progress });
    assert.ok(logs.some((m) => /cells run in this thread only: the attack registry was changed/.test(m)), logs.join('\n'));
    assert.equal(run.manifest.workers, { threads: 1, mainThread: true, cellsPerThread: 1 });
    assert.ok(run.results.every((r) => r.status === 'ok'), JSON.stringify(run.results.map((r) => r.error)));
  } finally {
    delete ATTACKS['main-only'];
  }
});

test.run();
