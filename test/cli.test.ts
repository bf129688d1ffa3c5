import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ATTACKS } from '../attacks/index.ts';
import { REPO_ROOT } from '../bench/manifest.ts';

function rhobench(...args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'rhobench.js'), ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('list names the attacks, students and presets', () => {
  const r = rhobench('list');
  assert.is(r.code, 0, r.err);
  // Every attack a config may name, in the registry's order.
  assert.match(r.out, `attacks: ${Object.keys(ATTACKS).join(', ')}\n`);
  assert.match(r.out, /attacks: knockoff, adaptive-knockoff, .*active-kcenter/);
  assert.match(r.out, /tasks: digits, parity, ge5, one-vs-rest-D/);
  assert.match(r.out, /disclosures: .*leaf \(tree targets\)/);
  assert.match(r.out, /students: mlp, lenet5, cnn-small/);
  assert.match(r.out, /presets: .*orekondy2020-mnist.*quick/);
  const one = rhobench('list', 'targets');
  assert.equal(one.out.trim().split('\n'), ['cnn', 'svm', 'naive-bayes', 'logreg', 'mlp', 'tree', 'linear-svm']);
  assert.is(rhobench('list', 'nonsense').code, 2);
});

test('an experiment preset runs through sweep and writes its record; bad params exit 2 naming the field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rho-cli-'));
  const path = join(dir, 'steal.json');
  const params = { learners: ['ridge', 'krr'], lambdas: [0.1, 10], seeds: [1], data: { regression: { n: 60, d: 4 }, classification: { n: 60, d: 3 } } };
  writeFileSync(path, JSON.stringify({ experiment: 'hyperparameter-stealing', name: 'steal-tiny', params }));
  const r = rhobench('sweep', path, '--results', dir, '--run-id', 'steal', '-b', 'webgpu', '-c', '2');
  assert.is(r.code, 0, r.err);
  assert.match(r.err, /--backend webgpu and --concurrency 2 not used: experiments compute in float64 JavaScript/);
  assert.match(r.out, /ridge: median [0-9.e+-]+, max/);
  const record = JSON.parse(readFileSync(join(dir, 'steal', 'experiment.json'), 'utf8'));
  assert.is(record.status, 'finished');
  assert.is(record.rows.length, 4);
  for (const row of record.rows) assert.ok(row.relError < 1e-6, `${row.learner} λ=${row.lambda}: ${row.relError}`);
  assert.ok(existsSync(join(dir, 'steal', 'rows.csv')));

  writeFileSync(path, JSON.stringify({ experiment: 'hyperparameter-stealing', params: { ...params, lambdas: [-1] } }));
  const bad = rhobench('sweep', path, '--results', dir);
  assert.is(bad.code, 2);
  assert.match(bad.err, /lambdas/);
  const flags = rhobench('sweep', 'wang2018-hyperparameters', '--budgets', '10', '--results', dir);
  assert.is(flags.code, 2);
  assert.match(flags.err, /--budgets apply to sweeps only/);
  const listed = rhobench('list', 'experiments');
  assert.match(listed.out, /^hyperparameter-stealing\n {2}\S/m);
});

test('a bad config exits 2 naming the field, before any work', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rho-cli-'));
  const path = join(dir, 'bad.json');
  writeFileSync(path, JSON.stringify({
    name: 'bad', dataset: { name: 'mnist' }, targets: [{ family: 'svm', C: -1 }],
    attacks: ['knockoff'], students: [{ arch: 'mlp' }], side: [{ name: 's', pool: 'same', disclosure: 'probs' }], budgets: [10],
  }));
  const r = rhobench('sweep', path, '--results', dir);
  assert.is(r.code, 2);
  assert.match(r.err, /targets\.0\.C/);
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{"name": ');
  const b = rhobench('sweep', broken);
  assert.is(b.code, 2);
  assert.match(b.err, /broken\.json is not valid JSON/);
  const missing = rhobench('sweep', 'no-such-preset');
  assert.is(missing.code, 2);
  assert.match(missing.err, /no preset of that name \(presets: .*quick/);
});

test('a backend that cannot load is an error, not a silent fallback', () => {
  const r = rhobench('sweep', 'quick', '--backend', 'tensorflow', '--results', mkdtempSync(join(tmpdir(), 'rho-cli-')));
  assert.is(r.code, 2);
  assert.match(r.err, /tfjs-node-gpu/);
});

test.run();
