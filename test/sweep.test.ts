import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import sharp from 'sharp';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { queryGridPath } from '../bench/query-samples.ts';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ATTACKS } from '../attacks/index.ts';
import { ConfigError, parseSweepConfig } from '../bench/config.ts';
import { hashKey } from '../serve/keys.ts';
import { startServer } from '../serve/server.ts';
import { expandCells } from '../bench/grid.ts';
import { disposeSweep, prepareSweep, runCell, runSweep, type SweepEnv } from '../bench/runner.ts';
import type { CellResult } from '../bench/types.ts';
import { TEST_CACHE } from './helpers.ts';

// Shared across test files through the cache folder, so targets train once per suite run.
const cacheDir = TEST_CACHE;
const resultsDir = mkdtempSync(join(tmpdir(), 'rhobench-results-'));

const config = parseSweepConfig({
  name: 'tiny',
  dataset: { name: 'mnist', trainSize: 2000, poolSize: 1000, evalSize: 500, seed: 3 },
  targets: [{ id: 'nb', family: 'naive-bayes', trainSize: 2000 }],
  attacks: ['knockoff', 'distillation'],
  students: [{ arch: 'mlp', epochs: 4, batchSize: 32, lr: 0.003 }],
  side: [
    { name: 'same+probs', pool: 'same', disclosure: 'probs' },
    { name: 'noise+label', pool: 'noise', disclosure: 'label' },
  ],
  budgets: [100, 400],
  seeds: [1],
  backend: 'wasm',
});

test('a sweep writes every file, one line per cell, and records n/a cells', async () => {
  const run = await runSweep(config, { resultsDir, cacheDir, runId: 'tiny-run' });
  const dir = join(resultsDir, 'tiny-run');
  for (const f of ['cells.jsonl', 'rho.csv', 'rho.json', 'manifest.json']) assert.ok(existsSync(join(dir, f)), f);

  const lines = readFileSync(join(dir, 'cells.jsonl'), 'utf8').trim().split('\n');
  const cells: CellResult[] = lines.map((l) => JSON.parse(l));
  assert.is(cells.length, expandCells(config).length);
  assert.is(run.results.length, cells.length);

  const na = cells.filter((c) => c.status === 'not-applicable');
  assert.ok(na.length > 0 && na.every((c) => c.attack === 'distillation' && c.side === 'noise+label'));
  assert.ok(cells.every((c) => c.status !== 'failed'), JSON.stringify(cells.filter((c) => c.status === 'failed')));
  for (const c of cells.filter((c) => c.status === 'ok')) {
    assert.ok(c.rho! >= 0 && c.rho! <= 1);
    assert.ok(Math.abs(c.rho! + c.agreement! - 1) < 1e-12);
    assert.ok(c.queries <= c.budget && c.queries > 0);
    assert.is(c.backend, 'wasm');
  }
  // Same-distribution probabilities at the larger budget copy the target far better than chance.
  const best = cells.find((c) => c.attack === 'knockoff' && c.side === 'same+probs' && c.budget === 400)!;
  assert.ok(best.rho! < 0.5, `rho ${best.rho}`);

  const csv = readFileSync(join(dir, 'rho.csv'), 'utf8').trim().split('\n');
  assert.is(csv.length, cells.length + 1);
  const curves = JSON.parse(readFileSync(join(dir, 'rho.json'), 'utf8')).curves;
  assert.is(curves.length, 2 * 2); // attacks × side
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  assert.is(manifest.status, 'finished');
  assert.is(manifest.backend.name, 'wasm');
  assert.is(manifest.backend.gpu, false);
  assert.is(manifest.cells.total, cells.length);
  assert.is(manifest.targets[0].id, 'nb');

  // One picture of sample queries per (target, attack, side) that sent any; the n/a cell sent none.
  const grid = (attack: string, side: string) => queryGridPath(dir, { target: 'nb', attack, side });
  for (const [attack, side] of [['knockoff', 'same+probs'], ['knockoff', 'noise+label'], ['distillation', 'same+probs']]) {
    const meta = await sharp(grid(attack, side)).metadata();
    assert.ok(meta.width! > 8 * 28 && meta.height! > 4 * 28, `${attack} ${side}: ${meta.width}×${meta.height}`);
  }
  assert.not.ok(existsSync(grid('distillation', 'noise+label')));
  const html = readFileSync(join(dir, 'report.html'), 'utf8');
  assert.is(html.match(/<img [^>]*src="data:image\/png;base64,/g)?.length, 3);
  assert.ok(existsSync(join(dir, 'plots', 'rho-nb.svg')));
  assert.ok(existsSync(join(dir, 'benchmark.json')));
});

let env: SweepEnv;

test('the same cell and seed give the same ρ; a cell leaves no tensors behind', async () => {
  env = await prepareSweep(config, { cacheDir });
  const cell = { target: 'nb', attack: 'knockoff', student: 'mlp', side: 'same+probs', budget: 200, seed: 7 };
  const before = tf.memory().numTensors;
  const a = await runCell(env, cell);
  assert.is(tf.memory().numTensors, before, 'tensors leaked by a cell');
  const b = await runCell(env, cell);
  assert.is(a.status, 'ok', a.error);
  assert.is(a.rho, b.rho);
  assert.is(a.studentAccuracy, b.studentAccuracy);
  const na = await runCell(env, { ...cell, attack: 'distillation', side: 'noise+label' });
  assert.is(na.status, 'not-applicable');
  assert.match(na.error!, /label/);
  assert.is(tf.memory().numTensors, before, 'tensors leaked by a not-applicable cell');
  await disposeSweep(env);
});

test('over HTTP the same cells give the same ρ as in-process, and the server ledgers every row', async () => {
  const knockoffOnly = { ...config, attacks: ['knockoff' as const], budgets: [200] };
  const local = await runSweep(knockoffOnly, { resultsDir, cacheDir, runId: 'local' });
  const remote = await runSweep({ ...knockoffOnly, transport: 'http' }, { resultsDir, cacheDir, runId: 'remote' });
  assert.is(remote.results.length, local.results.length);
  for (const r of remote.results) {
    const l = local.results.find((c) => c.side === r.side && c.budget === r.budget)!;
    assert.is(r.status, 'ok', r.error);
    assert.is(r.rho, l.rho, `${r.side}: http ρ ${r.rho} vs in-process ${l.rho}`);
    assert.is(r.queries, r.budget);
  }
  const ledger = readFileSync(join(resultsDir, 'remote', 'serve-ledger.jsonl'), 'utf8').trim().split('\n');
  const rows = ledger.map((l) => JSON.parse(l).rows as number).reduce((a, b) => a + b, 0);
  assert.is(rows, remote.results.reduce((a, r) => a + r.queries, 0));
});

test('a sweep can use an API that is already running, after checking each key against it', async () => {
  const knockoffOnly = { ...config, attacks: ['knockoff' as const], budgets: [200] };
  const keyFor = (disclosure: { kind: string }) => ({
    sha256: hashKey(`secret-${disclosure.kind}`),
    disclosure: disclosure as never,
    budget: 10_000,
    rateLimit: { requestsPerSecond: 1000, burst: 1000 },
    models: '*' as const,
  });
  const server = await startServer({
    port: 0, host: '127.0.0.1', dataset: config.dataset, targets: config.targets,
    keys: [{ name: 'p', ...keyFor({ kind: 'probs' }) }, { name: 'l', ...keyFor({ kind: 'label' }) }],
    ledger: join(resultsDir, 'external-ledger.jsonl'), maxRowsPerRequest: 1024, maxBodyBytes: 2 ** 24,
  }, { cacheDir, log: () => {} });
  try {
    process.env.RHO_TEST_PROBS = 'secret-probs';
    process.env.RHO_TEST_LABEL = 'secret-label';
    const remote = await runSweep(
      { ...knockoffOnly, transport: 'http', server: { url: server.url, keys: { 'same+probs': 'RHO_TEST_PROBS', 'noise+label': 'RHO_TEST_LABEL' } } },
      { resultsDir, cacheDir, runId: 'external' },
    );
    const local = JSON.parse(readFileSync(join(resultsDir, 'local', 'rho.json'), 'utf8')).curves;
    for (const r of remote.results) {
      assert.is(r.status, 'ok', r.error);
      assert.is(r.rho, local.find((c: { side: string }) => c.side === r.side).points[0].rhoMean);
    }
    // A key whose disclosure differs from the side's is refused before any cell runs.
    try {
      await runSweep(
        { ...knockoffOnly, transport: 'http', server: { url: server.url, keys: { 'same+probs': 'RHO_TEST_LABEL', 'noise+label': 'RHO_TEST_LABEL' } } },
        { resultsDir, cacheDir, runId: 'mismatch' },
      );
      assert.unreachable('should refuse');
    } catch (err) {
      assert.instance(err, ConfigError);
      assert.match((err as Error).message, /RHO_TEST_LABEL discloses label, but side "same\+probs" is probs/);
    }
  } finally {
    await server.close();
  }
});

test('exact attacks in a sweep: the runner passes the model class only when it is known, and scores binary tasks on their own labels', async () => {
  const exact = parseSweepConfig({
    name: 'exact',
    dataset: { name: 'mnist', trainSize: 2000, poolSize: 1000, evalSize: 500, seed: 3 },
    targets: [{ id: 'lr', family: 'logreg', task: 'ge5', trainSize: 2000 }],
    attacks: ['equation-solving', 'path-finding'],
    students: [{ arch: 'mlp', epochs: 1, batchSize: 32, lr: 0.003 }],
    side: [
      { name: 'probs+known', pool: 'same', disclosure: 'probs', architecture: 'known' },
      { name: 'probs', pool: 'same', disclosure: 'probs' },
      { name: 'leaf+known', pool: 'same', disclosure: 'leaf', architecture: 'known' },
    ],
    budgets: [785],
    reference: [{ target: 'lr', attack: 'equation-solving', side: 'probs+known', budget: 785, metric: 'queries', value: 785, source: 'Tramèr et al. 2016' }],
    backend: 'wasm',
  });
  const run = await runSweep(exact, { resultsDir, cacheDir, runId: 'exact-run' });
  const cell = (attack: string, side: string) => run.results.find((r) => r.attack === attack && r.side === side)!;
  const solved = cell('equation-solving', 'probs+known');
  assert.is(solved.status, 'ok', solved.error);
  assert.is(solved.rho, 0);
  assert.is(solved.queries, 785);
  assert.ok(solved.targetAccuracy > 0.7 && solved.studentAccuracy === solved.targetAccuracy, 'accuracy on the ge5 labels, and the copy is exact');
  assert.is(cell('equation-solving', 'probs').status, 'not-applicable', 'architecture unknown');
  assert.match(cell('equation-solving', 'leaf+known').error!, /leaf answers need a tree target; lr is a logreg/);
  assert.is(cell('path-finding', 'probs+known').status, 'not-applicable');
  const reference = JSON.parse(readFileSync(join(resultsDir, 'exact-run', 'reference.json'), 'utf8'));
  assert.equal([reference[0].ours, reference[0].value, reference[0].seeds], [785, 785, 1]);
});

test('a crash inside the wasm module stops the sweep: finished cells are kept, the rest are not run on a damaged heap', async () => {
  ATTACKS['crash-test'] = {
    name: 'crash-test',
    run: async () => {
      throw new WebAssembly.RuntimeError('memory access out of bounds');
    },
  };
  try {
    // Parsed as valid, then pointed at the crashing attack (configs may only name real ones).
    const crashing = { ...config, attacks: ['knockoff', 'crash-test', 'distillation'] as typeof config.attacks, budgets: [100] };
    const run = await runSweep(crashing, { resultsDir, cacheDir, runId: 'crash-run' });
    assert.ok(run.crashed);
    const [first, second] = run.results;
    assert.is(first.status, 'ok');
    assert.is(second.status, 'failed');
    assert.match(second.error!, /^backend crashed: memory access out of bounds/);
    assert.is(run.results.length, 2, 'no cell ran after the crash');
    const cells = readFileSync(join(resultsDir, 'crash-run', 'cells.jsonl'), 'utf8').trim().split('\n');
    assert.is(cells.length, 2);
    const manifest = JSON.parse(readFileSync(join(resultsDir, 'crash-run', 'manifest.json'), 'utf8'));
    assert.equal(manifest.cells, { total: expandCells(crashing).length, ok: 1, notApplicable: 0, failed: 1 });
  } finally {
    delete ATTACKS['crash-test'];
  }
});

test.run();
