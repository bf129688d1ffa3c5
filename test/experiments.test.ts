import { existsSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { stealLambda } from '../attacks/hyperparameter-stealing.ts';
import { ConfigError } from '../bench/config.ts';
import { experimentCurves, parseExperimentConfig, rowsToCsv, runExperiment } from '../bench/experiments/run.ts';
import type { Experiment } from '../bench/experiments/types.ts';
import { ridge } from '../models/learners/ridge.ts';
import { rng } from '../models/seed.ts';
import { rejection } from './helpers.ts';

// A real, tiny experiment: steal ridge's λ from its parameters on Gaussian data.
const ridgeSteal: Experiment<{ lambdas: number[]; seeds: number[] }> = {
  name: 'ridge-steal-tiny',
  description: 'ridge λ stealing on 200 Gaussian rows',
  schema: z.object({ lambdas: z.array(z.number().positive()), seeds: z.array(z.number().int()) }),
  curves: { x: 'lambda', by: ['learner'] },
  async run({ lambdas, seeds }) {
    const rows = [];
    for (const seed of seeds) {
      const random = rng(seed);
      const n = 200;
      const d = 5;
      const x = Float64Array.from({ length: n * d }, () => random() - 0.5);
      const y = Float64Array.from({ length: n }, (_, i) => x[i * d] - 2 * x[i * d + 1] + 0.1 * random());
      for (const lambda of lambdas) {
        const fitted = ridge.fit({ x, n, d }, y, lambda);
        const lambdaHat = stealLambda(ridge, fitted.params, { x, n, d }, y);
        // ρ here stands for the relative error, so the curve machinery has something real to average.
        rows.push({ learner: 'ridge', lambda, seed, lambdaHat, rho: Math.abs(lambdaHat - lambda) / lambda });
      }
    }
    return { rows, summary: [`${rows.length} fits`] };
  },
};

test('runExperiment writes rows, curves and a finished record with provenance', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'rb-exp-'));
  const result = await runExperiment(
    { experiment: ridgeSteal, name: 'tiny', params: { lambdas: [0.01, 1, 100], seeds: [1, 2] }, epsilons: [1e-20, 1e-6] },
    { resultsDir: dir, runId: 'r1' },
  );
  const record = JSON.parse(await readFile(join(result.dir, 'experiment.json'), 'utf8'));
  assert.is(record.status, 'finished');
  assert.is(record.experiment, 'ridge-steal-tiny');
  assert.ok(record.machine.cpus >= 1);
  assert.is(record.rows.length, 6);
  for (const row of record.rows) assert.ok(row.rho < 1e-8, `ridge λ recovered to ${row.rho}`);
  const csv = (await readFile(join(result.dir, 'rows.csv'), 'utf8')).trim().split('\n');
  assert.is(csv.length, 7);
  assert.is(csv[0], 'learner,lambda,seed,lambdaHat,rho');
  assert.is(record.curves.length, 3);
  const at1 = record.curves.find((c: { lambda: number }) => c.lambda === 1);
  const rows1 = record.rows.filter((r: { lambda: number }) => r.lambda === 1);
  assert.is(at1.seeds, 2);
  assert.ok(Math.abs(at1.rhoMean - (rows1[0].rho + rows1[1].rho) / 2) < 1e-18);
  // Every seed recovers λ to 1e-6, so δ̂(1e-6) = 2/2 with the Clopper–Pearson lower end 0.025^(1/2).
  const table = record.epsDelta.rows.filter((r: { lambda: number; epsilon: number }) => r.lambda === 1 && r.epsilon === 1e-6);
  assert.is(table.length, 1);
  assert.is(table[0].successes, 2);
  assert.ok(Math.abs(table[0].deltaLow - Math.sqrt(0.025)) < 1e-9);
  assert.is(record.epsDelta.rows.length, 6);
  assert.ok(existsSync(join(result.dir, 'eps-delta.csv')));
});

test('a failing experiment leaves a record that says so and rejects', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'rb-exp-'));
  const broken: Experiment<Record<string, never>> = {
    name: 'broken',
    description: 'throws',
    schema: z.object({}),
    async run() {
      throw new Error('the solver diverged');
    },
  };
  const err = await rejection(runExperiment({ experiment: broken, name: 'broken', params: {}, epsilons: [0.1] }, { resultsDir: dir, runId: 'b' }));
  assert.match(err.message, 'the solver diverged');
  const record = JSON.parse(await readFile(join(dir, 'b', 'experiment.json'), 'utf8'));
  assert.is(record.status, 'failed');
  assert.match(record.error, 'the solver diverged');
});

test('experiment configs: unknown experiments and bad names are refused with the field named', () => {
  assert.throws(() => parseExperimentConfig({ experiment: 'no-such-thing' }, 'x.json'), (e: Error) => e instanceof ConfigError && /unknown experiment "no-such-thing"/.test(e.message));
  assert.throws(() => parseExperimentConfig({ experiment: 'a', name: 'a/b' }, 'x.json'), (e: Error) => e instanceof ConfigError && /name/.test(e.message));
  assert.throws(() => parseExperimentConfig({ experiment: 'a', extra: 1 }, 'x.json'), (e: Error) => e instanceof ConfigError && /extra/.test(e.message));
});

test('experimentCurves: groups by the named columns, skips rows without ρ, intervals widen with spread', () => {
  const rows = [
    { a: 'x', n: 10, seed: 1, rho: 0.2 },
    { a: 'x', n: 10, seed: 2, rho: 0.4 },
    { a: 'x', n: 20, seed: 1, rho: 0.1 },
    { a: 'y', n: 10, seed: 1, rho: 0.5 },
    { a: 'y', n: 10, seed: 2, rho: null },
  ];
  const curves = experimentCurves(rows, { x: 'n', by: ['a'] });
  assert.is(curves.length, 3);
  const x10 = curves.find((c) => c.a === 'x' && c.n === 10)!;
  assert.is(x10.seeds, 2);
  assert.ok(Math.abs((x10.rhoMean as number) - 0.3) < 1e-12);
  assert.ok((x10.rhoLow as number) < 0.3 && (x10.rhoHigh as number) > 0.3);
  assert.is(curves.find((c) => c.a === 'y')!.seeds, 1);
});

test('rowsToCsv: union of columns, quoting', () => {
  assert.is(rowsToCsv([{ a: 1 }, { a: 'p,q', b: true }]), 'a,b\n1,\n"p,q",true\n');
});

test('experiments never load tfjs: no module they import reaches @tensorflow (so any --backend serves them)', async () => {
  const root = new URL('../', import.meta.url);
  const seen = new Set<string>();
  const reached: string[] = [];
  const visit = async (file: URL, from: string) => {
    if (seen.has(file.href)) return;
    seen.add(file.href);
    const source = await readFile(file, 'utf8');
    for (const m of source.matchAll(/^\s*import\s+(type\s+)?[^'"]*?['"]([^'"]+)['"]/gm)) {
      const [, typeOnly, spec] = m;
      if (typeOnly) continue;
      if (spec.startsWith('@tensorflow/')) reached.push(`${from} → ${file.pathname.slice(root.pathname.length)} imports ${spec}`);
      else if (spec.startsWith('.')) await visit(new URL(spec, file), `${from} → ${file.pathname.slice(root.pathname.length)}`);
    }
  };
  await visit(new URL('bench/experiments/index.ts', root), 'experiments');
  assert.ok(seen.size > 10, `followed ${seen.size} modules`);
  assert.equal(reached, []);
});

test.run();
