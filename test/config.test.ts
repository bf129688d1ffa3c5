import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import { isExperimentConfig, parseExperimentConfig } from '../bench/experiments/run.ts';
import * as assert from 'uvu/assert';
import { ConfigError, loadSweepConfig, parseDisclosure, parseSweepConfig } from '../bench/config.ts';
import { REPO_ROOT } from '../bench/manifest.ts';

const minimal = () => ({
  name: 'tiny',
  dataset: { name: 'mnist' },
  targets: [{ family: 'naive-bayes' }],
  attacks: ['knockoff'],
  students: [{ arch: 'mlp' }],
  side: [{ name: 'probs', pool: 'same', disclosure: 'probs' }],
  budgets: [100],
});

function errorOf(value: unknown): string {
  try {
    parseSweepConfig(value, 'my.json');
  } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

test('every shipped preset is a valid config', () => {
  const dir = join(REPO_ROOT, 'bench', 'presets');
  const presets = readdirSync(dir).filter((f) => f.endsWith('.json'));
  assert.ok(presets.includes('quick.json'));
  let experiments = 0;
  for (const f of presets) {
    const json = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    // Presets that name an experiment are validated by the experiment's own schema.
    if (isExperimentConfig(json)) {
      parseExperimentConfig(json, f);
      experiments++;
    } else parseSweepConfig(json, f);
  }
  assert.ok(experiments >= 3, `${experiments} experiment presets`);
});

test('defaults fill in and targets get ids', () => {
  const cfg = parseSweepConfig(minimal());
  assert.equal(cfg.targets[0].id, 'naive-bayes');
  assert.equal(cfg.seeds, [1]);
  assert.equal(cfg.backend, 'auto');
  assert.equal(cfg.side[0].disclosure, { kind: 'probs' });
  assert.equal(cfg.side[0].architecture, 'unknown');
});

test('disclosure strings parse', () => {
  assert.equal(parseDisclosure('label'), { kind: 'label' });
  assert.equal(parseDisclosure('top3'), { kind: 'topk', k: 3 });
  assert.equal(parseDisclosure('rounded2'), { kind: 'rounded', decimals: 2 });
  assert.is(parseDisclosure('logits'), undefined);
});

test('an unknown enum value names the field and the allowed values', () => {
  const cfg = minimal();
  cfg.students = [{ arch: 'resnet' }];
  const msg = errorOf(cfg);
  assert.match(msg, 'my.json');
  assert.match(msg, 'students.0.arch');
  assert.match(msg, '"cnn-small"');
});

test('bad disclosure, unknown attack and unknown field are each named', () => {
  const cfg: Record<string, unknown> = minimal();
  cfg.side = [{ name: 'x', pool: 'same', disclosure: 'logits' }];
  cfg.attacks = ['knockof'];
  cfg.budget = [1];
  const msg = errorOf(cfg);
  assert.match(msg, 'side.0.disclosure');
  assert.match(msg, 'unknown disclosure "logits"');
  assert.match(msg, 'attacks.0');
  assert.match(msg, 'distillation');
  assert.match(msg, /budget/);
});

test('a budget larger than the same-distribution pool is refused', () => {
  const cfg = minimal();
  cfg.budgets = [100, 50_000];
  assert.match(errorOf(cfg), /budgets: largest budget 50000 needs 50000 rows of the attacker's same-distribution pool, more than dataset.poolSize 20000/);
  cfg.side = [{ name: 'mixed', pool: 'mixed', disclosure: 'probs' }];
  assert.match(errorOf(cfg), /needs 25000 rows/, 'a mixed pool draws half its rows from the same distribution');
});

test('duplicate side names are refused', () => {
  const cfg = minimal();
  cfg.side = [cfg.side[0], cfg.side[0]];
  assert.match(errorOf(cfg), /side: duplicate name "probs"/);
});

test('pools by path resolve beside the config file; tasks, leaf answers and Fashion-MNIST parse', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rho-config-'));
  try {
    const cfg: Record<string, unknown> = minimal();
    cfg.dataset = { name: 'fashion-mnist' };
    cfg.targets = [{ family: 'tree', task: 'ge5' }];
    cfg.side = [
      { name: 'letters', pool: { path: 'data/letters-idx3-ubyte', transpose: true }, disclosure: 'leaf' },
      { name: 'mixed', pool: 'mixed', disclosure: 'label' },
    ];
    writeFileSync(join(dir, 'sweep.json'), JSON.stringify(cfg));
    const loaded = await loadSweepConfig(join(dir, 'sweep.json'));
    assert.equal(loaded.side[0].pool, { path: join(dir, 'data/letters-idx3-ubyte'), transpose: true });
    assert.equal(loaded.side[0].disclosure, { kind: 'leaf' });
    assert.is(loaded.side[1].pool, 'mixed');
    assert.is(loaded.dataset.name, 'fashion-mnist');
    assert.is(loaded.targets[0].task, 'ge5');
    cfg.targets = [{ family: 'logreg', task: 'odd' }];
    cfg.side = [{ name: 'x', pool: 'lake', disclosure: 'label' }];
    const msg = errorOf(cfg);
    assert.match(msg, /targets\.0\.task: unknown task: use digits, parity/);
    assert.match(msg, /side\.0\.pool/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
