import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { getAttack } from '../attacks/index.ts';
import { studentArch } from '../attacks/transfer.ts';
import { NotApplicable, type AttackContext, type SideInfo } from '../attacks/types.ts';
import { scoreImitation } from '../bench/score.ts';
import { loadPool } from '../datasets/index.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../models/backend.ts';
import { withSeed } from '../models/seed.ts';
import { buildStudent } from '../models/students.ts';
import { getTarget } from '../models/targets/index.ts';
import { asImitation } from '../models/train.ts';
import type { Target } from '../models/types.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import type { Disclosure } from '../serve/types.ts';
import { smallMnist, TEST_CACHE } from './helpers.ts';

let ds: Dataset;
let target: Target;
let pool: Split;
const shape: [number, number, number] = [28, 28, 1];

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  target = await getTarget({ id: 'nb', family: 'naive-bayes', trainSize: 2000, varSmoothing: 0.1, seed: 1 }, ds, { cacheDir: TEST_CACHE });
  pool = await loadPool('same', ds, 2000, 1);
});
test.after(() => target.dispose());

function context(budget: number, disclosure: Disclosure, seed = 1, side: Partial<SideInfo> = {}): AttackContext {
  return {
    oracle: new InProcessOracle(target, budget, disclosure),
    pool,
    inputShape: shape,
    classes: 10,
    side: { name: 's', pool: 'same', disclosure, architecture: 'unknown', ...side },
    student: { arch: 'mlp', epochs: 6, batchSize: 32, lr: 0.003 },
    seed,
  };
}

async function rhoOf(attack: string, ctx: AttackContext): Promise<number> {
  const imitation = await getAttack(attack).run(ctx);
  try {
    return (await scoreImitation(imitation, target, ds.split('eval'), shape)).rho;
  } finally {
    imitation.dispose();
  }
}

test('knockoff copies a naive Bayes target far better than an untrained student', async () => {
  const untrained = asImitation(await withSeed(1, () => buildStudent('mlp', shape, 10)));
  const baseline = (await scoreImitation(untrained, target, ds.split('eval'), shape)).rho;
  untrained.dispose();
  const ctx = context(1000, { kind: 'probs' });
  const before = tf.memory().numTensors;
  const rho = await rhoOf('knockoff', ctx);
  assert.is(tf.memory().numTensors, before, 'no tensors left behind');
  assert.is(ctx.oracle.spent, 1000);
  assert.ok(baseline > 0.6, `untrained ρ ${baseline}`);
  assert.ok(rho < 0.3, `knockoff ρ ${rho}`);
});

test('distillation needs probabilities; copycat works from labels alone', async () => {
  const labelOnly = context(500, { kind: 'label' });
  try {
    await getAttack('distillation').run(labelOnly);
    assert.unreachable('should be not applicable');
  } catch (err) {
    assert.instance(err, NotApplicable);
    assert.match((err as Error).message, /needs probabilities.*label/);
  }
  assert.is(labelOnly.oracle.spent, 0, 'nothing spent on an attack that cannot run');
  assert.ok((await rhoOf('distillation', context(1000, { kind: 'rounded', decimals: 2 }))) < 0.35);
  assert.ok((await rhoOf('copycat', context(1000, { kind: 'topk', k: 3 }))) < 0.4);
});

test('the same seed gives the same imitation; the budget is never passed', async () => {
  const a = context(300, { kind: 'label' }, 9);
  const b = context(300, { kind: 'label' }, 9);
  assert.is(await rhoOf('knockoff', a), await rhoOf('knockoff', b));
  assert.ok(a.oracle.spent <= 300);
  try {
    await getAttack('knockoff').run(context(2001, { kind: 'label' }));
    assert.unreachable('a pool smaller than the budget is an error');
  } catch (err) {
    assert.match((err as Error).message, /pool has 2000 rows, fewer than the budget of 2001/);
  }
});

test('known architecture uses the target\'s own', () => {
  const ctx = context(10, { kind: 'label' }, 1, { architecture: 'known' });
  assert.is(studentArch(ctx), 'mlp', 'a target without an architecture leaves the configured student');
  assert.is(studentArch({ ...ctx, targetArch: 'lenet5' }), 'lenet5');
  assert.is(studentArch({ ...ctx, targetArch: 'lenet5', side: { ...ctx.side, architecture: 'unknown' } }), 'mlp');
});

test.run();
