import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ATTACKS } from '../attacks/index.ts';
import { REPO_ROOT } from '../bench/manifest.ts';
import type { CellResult } from '../bench/types.ts';
import { probeDawn } from '../engine/webgpu/probe.ts';
import { TARGET_FAMILIES, type TargetFamily } from '../models/types.ts';
import { TEST_CACHE, haveWebgpu } from './helpers.ts';

// Every family, small enough to train in seconds on a software adapter. A Record, so a new family
// fails to type-check here until it is given a spec.
const SPECS: Record<TargetFamily, object> = {
  cnn: { id: 'cnn', family: 'cnn', arch: 'mlp', trainSize: 600, epochs: 1 },
  svm: { id: 'svm', family: 'svm', trainSize: 300 },
  'naive-bayes': { id: 'nb', family: 'naive-bayes', trainSize: 600 },
  logreg: { id: 'lr', family: 'logreg', task: 'ge5', trainSize: 600, epochs: 20 },
  mlp: { id: 'mlp', family: 'mlp', hidden: [8], trainSize: 600, epochs: 2 },
  tree: { id: 'tree', family: 'tree', trainSize: 200, maxDepth: 3 },
  'linear-svm': { id: 'lsvm', family: 'linear-svm', task: 'ge5', trainSize: 600 },
};
/** Attacks that need a family of their own (and its disclosure): run against every family. */
const EXACT = ['equation-solving', 'lowd-meek', 'path-finding'];

const grid = (name: string, targets: object[], attacks: string[]) => ({
  name,
  dataset: { name: 'mnist', trainSize: 600, poolSize: 800, evalSize: 300, seed: 3 },
  targets,
  attacks,
  students: [{ arch: 'mlp', epochs: 1, batchSize: 32, lr: 0.003 }],
  side: [
    { name: 'same+probs+known', pool: 'same', disclosure: 'probs', architecture: 'known' },
    { name: 'noise+leaf+known', pool: 'noise', disclosure: 'leaf', architecture: 'known' },
  ],
  budgets: [120],
  seeds: [1],
});

/** rhobench sweep on webgpu in a child process (as a user runs it); its cells and manifest. */
function sweepOnWebgpu(config: ReturnType<typeof grid>, flags: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'rho-webgpu-'));
  const path = join(dir, `${config.name}.json`);
  writeFileSync(path, JSON.stringify(config));
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'rhobench.js'), 'sweep', path, '-b', 'webgpu', '-c', '1', '--results', dir, '--run-id', 'run', ...flags], {
    encoding: 'utf8',
    timeout: 600_000,
    env: { ...process.env, RHOBENCH_CACHE: TEST_CACHE },
  });
  assert.is(r.status, 0, `${config.name}: exit ${r.status}\n${r.stderr.slice(-3000)}`);
  const cells = readFileSync(join(dir, 'run', 'cells.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as CellResult);
  const manifest = JSON.parse(readFileSync(join(dir, 'run', 'manifest.json'), 'utf8'));
  return { cells, manifest };
}

test('every target family and every attack runs on webgpu: no cell fails, each family and attack answers somewhere', async () => {
  if (!(await haveWebgpu('every family and attack through rhobench sweep'))) return;
  const probe = await probeDawn();
  const families = Object.values(SPECS);
  // Every family against knockoff and the exact attacks, then the remaining attacks against one family.
  const a = sweepOnWebgpu(grid('families', families, ['knockoff', ...EXACT]));
  const b = sweepOnWebgpu(grid('attacks', [SPECS['naive-bayes']], Object.keys(ATTACKS).filter((n) => n !== 'knockoff' && !EXACT.includes(n))));
  for (const { manifest } of [a, b]) {
    assert.is(manifest.backend.name, 'webgpu');
    assert.is(manifest.backend.gpu, probe.found && probe.hardware);
  }
  const cells = [...a.cells, ...b.cells];
  const failed = cells.filter((c) => c.status === 'failed');
  assert.equal(failed.map((c) => `${c.target} × ${c.attack} × ${c.side}: ${c.error}`), []);
  const ok = cells.filter((c) => c.status === 'ok');
  assert.ok(ok.every((c) => c.backend === 'webgpu' && c.rho! >= 0 && c.rho! <= 1));
  const ids = Object.fromEntries(Object.entries(SPECS).map(([family, spec]) => [(spec as { id: string }).id, family]));
  assert.equal([...new Set(ok.map((c) => ids[c.target]))].sort(), [...TARGET_FAMILIES].sort(), 'families that answered');
  assert.equal([...new Set(ok.map((c) => c.attack))].sort(), Object.keys(ATTACKS).sort(), 'attacks that ran');
});

test('on webgpu, cells interleaved in a thread (their students stacked) give the ρ of one cell at a time, bit for bit', async () => {
  if (!(await haveWebgpu('interleaved cells on webgpu'))) return;
  const config = {
    ...grid('stacked', [SPECS['naive-bayes']], ['knockoff', 'copycat']),
    side: [{ name: 'same+probs', pool: 'same', disclosure: 'probs', architecture: 'unknown' }],
    budgets: [100, 150],
    seeds: [1, 2],
  };
  const one = sweepOnWebgpu(config, ['--cells-per-thread', '1']);
  const eight = sweepOnWebgpu(config, ['--cells-per-thread', '8']);
  assert.is(one.manifest.workers.cellsPerThread, 1);
  assert.is(eight.manifest.workers.cellsPerThread, 8);
  const rho = new Map(one.cells.map((c) => [`${c.target} ${c.attack} ${c.budget} ${c.seed}`, c.rho]));
  assert.is(eight.cells.filter((c) => c.status === 'ok').length, 8);
  for (const c of eight.cells) assert.is(c.rho, rho.get(`${c.target} ${c.attack} ${c.budget} ${c.seed}`), `${c.target} ${c.attack} ${c.budget} ${c.seed}`);
});

test('GPU faults are the cells\': an uncaught GPU error fails the cell it came in, a lost device is a crash that stops the thread', async () => {
  if (!(await haveWebgpu('GPU faults in a sweep'))) return;
  // In a child process: the device is destroyed on purpose.
  const script = `
    import * as tf from '@tensorflow/tfjs';
    import { ATTACKS } from './attacks/index.ts';
    import { parseSweepConfig } from './bench/config.ts';
    import { runSweep } from './bench/runner.ts';
    const device = () => tf.backend().device;
    const settle = () => new Promise((resolve) => setTimeout(resolve, 200));
    ATTACKS['gpu-error'] = { name: 'gpu-error', async run(ctx) {
      device().createShaderModule({ code: 'fn broken( {' });
      await settle();
      return ATTACKS.knockoff.run(ctx);
    } };
    ATTACKS['gpu-lost'] = { name: 'gpu-lost', async run(ctx) {
      device().destroy();
      await settle();
      return ATTACKS.knockoff.run(ctx);
    } };
    const config = parseSweepConfig({
      name: 'faults', backend: 'webgpu', concurrency: 1,
      dataset: { name: 'mnist', trainSize: 600, poolSize: 800, evalSize: 300, seed: 3 },
      targets: [{ id: 'nb', family: 'naive-bayes', trainSize: 600 }],
      attacks: ['knockoff'],
      students: [{ arch: 'mlp', epochs: 1, batchSize: 32, lr: 0.003 }],
      side: [{ name: 'same+probs', pool: 'same', disclosure: 'probs' }],
      budgets: [100], seeds: [1, 2],
    });
    // Attacks added at run time are not names a config may give: set after parsing, as the workers test does.
    const run = await runSweep({ ...config, attacks: ['knockoff', 'gpu-error', 'gpu-lost'] }, { resultsDir: process.argv[1], cacheDir: process.env.RHOBENCH_CACHE, runId: 'faults' });
    console.log(JSON.stringify({ results: run.results, status: run.manifest.status }));`;
  const dir = mkdtempSync(join(tmpdir(), 'rho-faults-'));
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, dir], {
    cwd: REPO_ROOT, encoding: 'utf8', timeout: 300_000, env: { ...process.env, RHOBENCH_CACHE: TEST_CACHE },
  });
  assert.is(r.status, 0, r.stderr.slice(-3000));
  const { results, status } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { results: CellResult[]; status: string };
  const cell = (attack: string, seed: number) => results.find((c) => c.attack === attack && c.seed === seed);
  // Grid order: knockoff seeds 1, 2; gpu-error 1, 2; gpu-lost 1 (then the thread is done).
  assert.is(cell('knockoff', 1)?.status, 'ok');
  assert.is(cell('knockoff', 2)?.status, 'ok');
  for (const seed of [1, 2]) {
    assert.is(cell('gpu-error', seed)?.status, 'failed');
    assert.match(cell('gpu-error', seed)!.error!, /^a GPU error was reported while the cell ran: .*WGSL/);
  }
  assert.is(cell('gpu-lost', 1)?.status, 'failed');
  assert.match(cell('gpu-lost', 1)!.error!, /^backend crashed: the GPU device was lost \(destroyed/);
  assert.is(cell('gpu-lost', 2), undefined, 'no cell runs on a lost device');
  assert.is(status, 'interrupted', 'a run with cells left out is not finished: --resume runs them');
});

test.run();
