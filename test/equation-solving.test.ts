import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Matrix } from 'ml-matrix';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { equationSolving, leastSquares, makeEquationSolving, solveLogRatios, type LinearSolution, type SolvedImitation } from '../attacks/equation-solving.ts';
import { NotApplicable, type AttackContext } from '../attacks/types.ts';
import { scoreImitation } from '../bench/score.ts';
import { loadPool } from '../datasets/index.ts';
import { toTensor } from '../datasets/split.ts';
import { relabel, type TaskName } from '../datasets/tasks.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { getTarget, type LoadedTarget } from '../models/targets/index.ts';
import { logregParamsOf, logregTarget, type LogregParams } from '../models/targets/logreg.ts';
import { mlpParamsOf } from '../models/targets/mlp.ts';
import type { ModelClass, Target, TargetSpec } from '../models/types.ts';
import { parseServeConfig } from '../serve/config.ts';
import { HttpOracle } from '../serve/http-oracle.ts';
import { hashKey } from '../serve/keys.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { startServer } from '../serve/server.ts';
import type { Disclosure, Oracle } from '../serve/types.ts';
import { smallMnist, TEST_CACHE } from './helpers.ts';

const shape: [number, number, number] = [28, 28, 1];
const D = 784;
const BINARY: TargetSpec = { id: 'lr-ge5', family: 'logreg', task: 'ge5', trainSize: 2000, l2: 1e-4, epochs: 100, lr: 0.05, seed: 1 };
const SOFTMAX: TargetSpec = { id: 'lr-digits', family: 'logreg', task: 'digits', trainSize: 2000, l2: 1e-4, epochs: 100, lr: 0.05, seed: 1 };
const MLP: TargetSpec = { id: 'mlp', family: 'mlp', trainSize: 2000, hidden: [32], epochs: 10, batchSize: 64, lr: 0.003, seed: 1 };

let ds: Dataset;
let pool: Split;
let binary: LoadedTarget;
let softmax: LoadedTarget;
let mlp: LoadedTarget;

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  pool = await loadPool('same', ds, 2000, 1);
  binary = await getTarget(BINARY, ds, { cacheDir: TEST_CACHE });
  softmax = await getTarget(SOFTMAX, ds, { cacheDir: TEST_CACHE });
  mlp = await getTarget(MLP, ds, { cacheDir: TEST_CACHE });
});
test.after(() => [binary, softmax, mlp].forEach((t) => t?.dispose()));

/** known: the target's own model class unless given; null = the attacker does not know it. */
function context(target: Target, oracle: Oracle, disclosure: Disclosure = { kind: 'probs' }, knownAs?: ModelClass | null): AttackContext {
  const known = knownAs === undefined ? target.model : (knownAs ?? undefined);
  return {
    oracle,
    pool,
    inputShape: shape,
    classes: target.classes,
    side: { name: 's', pool: 'same', disclosure, architecture: known ? 'known' : 'unknown' },
    student: { arch: 'mlp', epochs: 6, batchSize: 32, lr: 0.003 },
    ...(known ? { known } : {}),
    seed: 1,
  };
}

/** Runs the attack in-process with this budget; checks the budget and that no tensor is left. */
async function solve(target: Target, budget: number, disclosure: Disclosure = { kind: 'probs' }, attack = equationSolving) {
  const oracle = new InProcessOracle(target, budget, disclosure);
  const before = tf.memory().numTensors;
  const imitation = (await attack.run(context(target, oracle, disclosure))) as SolvedImitation;
  const rho = await rhoOf(imitation, target);
  imitation.dispose();
  assert.is(tf.memory().numTensors, before, 'tensors left behind');
  assert.ok(oracle.spent <= budget);
  assert.is(imitation.queries, oracle.spent, 'the imitation reports the queries it spent');
  return { imitation, oracle, rho };
}

async function rhoOf(imitation: SolvedImitation, target: Target): Promise<number> {
  return (await scoreImitation(imitation, target, relabel(ds.split('eval'), target.task as TaskName), shape)).rho;
}

/** ‖V̂ − V‖ / ‖V‖ over the class-difference weights and biases (binary: w and b themselves). */
function relativeError(got: LinearSolution, p: LogregParams): number {
  const k = p.classes;
  let num = 0;
  let den = 0;
  for (let c = 1; c < k; c++) {
    for (let f = 0; f <= D; f++) {
      const param = (row: number) => (f < D ? p.W[row * D + f] : p.b[row]);
      const truth = k === 2 ? param(0) : param(c) - param(0);
      const est = f < D ? got.V[(c - 1) * D + f] : got.a[c - 1];
      num += (est - truth) ** 2;
      den += truth ** 2;
    }
  }
  return Math.sqrt(num / den);
}

const linear = (im: SolvedImitation) => {
  assert.is(im.params.kind, 'linear');
  return im.params as LinearSolution & { kind: 'linear' };
};

test('logreg targets: float64 weights, float32 answers are the float64 ones rounded, the cache gives the same bits back', async () => {
  const p = logregParamsOf(binary)!;
  assert.is(p.W.length, D, 'binary: ONE weight vector');
  assert.is(logregParamsOf(softmax)!.W.length, 10 * D, 'multinomial: one per class');
  assert.equal(binary.model, { family: 'logreg' });
  assert.ok(binary.testAccuracy > 0.78, `ge5 accuracy ${binary.testAccuracy}`);
  assert.ok(softmax.testAccuracy > 0.84, `digits accuracy ${softmax.testAccuracy}`);
  const again = await getTarget(BINARY, ds, { cacheDir: TEST_CACHE });
  assert.ok(again.fromCache);
  assert.equal(Array.from(logregParamsOf(again)!.W), Array.from(p.W));
  const x = toTensor(ds.split('eval'), shape, 0, 20);
  const p64 = binary.predictProba64!(Float64Array.from(x.dataSync()), 20);
  const p32 = await binary.predictProba(x);
  assert.equal(Array.from(p32.dataSync()), Array.from(Float32Array.from(p64)));
  for (let r = 0; r < 20; r++) assert.ok(Math.abs(p64[2 * r] + p64[2 * r + 1] - 1) < 1e-15);
  tf.dispose([x, p32]);
});

test('binary LR: d + 1 = 785 queries recover w and b to 1e-6, and ρ = 0', async () => {
  const { imitation, oracle, rho } = await solve(binary, 2000);
  assert.is(oracle.spent, 785, 'exactly d + 1 queries, though the budget allowed more');
  const err = relativeError(linear(imitation), logregParamsOf(binary)!);
  assert.ok(err < 1e-6, `relative weight error ${err}`);
  assert.is(rho, 0);
});

test('softmax LR: 785 query rows of 10 probabilities recover every w_c − w_0 to 1e-6, ρ = 0', async () => {
  const { imitation, oracle, rho } = await solve(softmax, 785);
  assert.is(oracle.spent, 785);
  const err = relativeError(linear(imitation), logregParamsOf(softmax)!);
  assert.ok(err < 1e-6, `relative error of the class differences ${err}`);
  assert.is(rho, 0);
});

test('over the HTTP API (JSON, float64): the same weights as in-process', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rhobench-eqs-'));
  const secret = 'equation-solving-test-key';
  const config = parseServeConfig({
    dataset: { name: 'mnist', trainSize: 2000, poolSize: 2000, evalSize: 1000, seed: 3 },
    targets: [BINARY],
    keys: [{ name: 'eqs', sha256: hashKey(secret), disclosure: 'probs', budget: 785, rateLimit: { requestsPerSecond: 1000, burst: 1000 }, models: '*' }],
    ledger: join(dir, 'ledger.jsonl'),
  });
  const server = await startServer(config, { cacheDir: TEST_CACHE, log: () => {} });
  try {
    const http = new HttpOracle({ url: server.url, model: BINARY.id, key: secret, budget: 785, disclosure: { kind: 'probs' }, classes: 2, inputShape: shape });
    const overHttp = linear((await equationSolving.run(context(binary, http))) as SolvedImitation);
    assert.is(http.spent, 785);
    const local = linear((await solve(binary, 785)).imitation);
    assert.ok(relativeError(overHttp, logregParamsOf(binary)!) < 1e-6);
    let worst = 0;
    for (let i = 0; i < D; i++) worst = Math.max(worst, Math.abs(overHttp.V[i] - local.V[i]));
    assert.ok(worst < 1e-6 && Math.abs(overHttp.a[0] - local.a[0]) < 1e-6, `largest weight difference ${worst}`);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a row that saturates is queried again closer to the base point, and recovery stays exact', async () => {
  // The trained ge5 model with one weight made huge: at e_j its p_0 = σ(−100) ≈ 4e-44 is below MIN_P.
  const p = logregParamsOf(binary)!;
  const W = p.W.slice();
  const j = 14 * 28 + 14;
  W[j] = 100;
  const steep = { ...logregTarget('steep', { ...p, W }, shape), task: 'ge5' as TaskName, testAccuracy: NaN };
  const { imitation, oracle } = await solve(steep, 800);
  assert.is(oracle.spent, 786, 'one extra query, at e_j / 4');
  const err = relativeError(linear(imitation), { ...p, W });
  assert.ok(err < 1e-6, `relative error ${err}`);
  assert.ok(Math.abs(linear(imitation).V[j] - 100) < 1e-6);
});

test('a budget below d + 1: a finite ρ from the minimum-norm solution, falling with the budget', async () => {
  const small = await solve(binary, 50);
  const half = await solve(binary, D / 2);
  assert.is(half.oracle.spent, D / 2);
  assert.ok(Number.isFinite(half.rho) && half.rho > 0 && half.rho < 0.15, `ρ at d/2 = ${half.rho}`);
  assert.ok(small.rho > half.rho, `ρ at 50 (${small.rho}) above ρ at 392 (${half.rho})`);
  const none = await solve(binary, 0);
  assert.is(none.oracle.spent, 0);
});

test('rounded answers: accepted, a close but no longer exact solution', async () => {
  const { imitation, oracle, rho } = await solve(binary, 785, { kind: 'rounded', decimals: 4 });
  assert.is(oracle.spent, 785);
  const err = relativeError(linear(imitation), logregParamsOf(binary)!);
  assert.ok(err > 1e-6 && err < 0.1, `relative error ${err}`);
  assert.ok(rho < 0.05, `ρ ${rho}`);
});

test('MLP: fitting the known architecture to 1,000 answers leaves ρ far below an untrained copy', async () => {
  assert.equal(mlp.model, { family: 'mlp', hidden: [32] });
  assert.ok(mlpParamsOf(mlp)!.W[0].length === 32 * D);
  const attack = makeEquationSolving({ epochs: 20 });
  const untrained = await solve(mlp, 0, { kind: 'probs' }, attack);
  const fitted = await solve(mlp, 1000, { kind: 'probs' }, attack);
  assert.is(fitted.oracle.spent, 1000);
  assert.is(fitted.imitation.params.kind, 'mlp');
  assert.ok(untrained.rho > 0.5, `untrained ρ ${untrained.rho}`);
  assert.ok(fitted.rho < 0.08, `fitted ρ ${fitted.rho}`);
});

test('NotApplicable without probabilities, without the architecture, or for another model class; nothing spent', async () => {
  for (const d of [{ kind: 'label' }, { kind: 'topk', k: 2 }] as Disclosure[]) {
    const oracle = new InProcessOracle(binary, 785, d);
    await equationSolving.run(context(binary, oracle, d)).then(
      () => assert.unreachable(`${d.kind} answers`),
      (err: Error) => assert.ok(err instanceof NotApplicable && /needs probabilities/.test(err.message), err.message),
    );
    assert.is(oracle.spent, 0);
  }
  const oracle = new InProcessOracle(binary, 785, { kind: 'probs' });
  for (const [known, message] of [
    [null, /architecture: known/],
    [{ family: 'naive-bayes' }, /not naive-bayes/],
    [{ family: 'mlp' }, /hidden widths/],
  ] as const) {
    await equationSolving.run(context(binary, oracle, { kind: 'probs' }, known as ModelClass | null)).then(
      () => assert.unreachable(String(known?.family)),
      (err: Error) => assert.ok(err instanceof NotApplicable && message.test(err.message), err.message),
    );
  }
  assert.is(oracle.spent, 0);
});

test('solveLogRatios and leastSquares on a small system: exact, shift-invariant, dropping what saturated', () => {
  // Three classes over three features; rows chosen so one class's probability underflows in one row.
  const W = [[0.5, -1, 2], [3, 0.25, -0.5], [-2, 1, 1]];
  const b = [0.1, -0.3, 0.7];
  const xs = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [40, 0, 0]];
  const n = xs.length;
  const x = Float64Array.from(xs.flat());
  const z = Float64Array.from(xs.flatMap((row) => W.map((w, c) => w.reduce((s, v, f) => s + v * row[f], b[c]))));
  const answers = Float64Array.from(z);
  for (let r = 0; r < n; r++) {
    const row = answers.subarray(r * 3, r * 3 + 3);
    const max = Math.max(...row);
    const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
    row.forEach((v, c) => (row[c] = Math.exp(v - max) / sum));
  }
  assert.ok(answers[5 * 3 + 2] < 1e-12, 'the last row saturates class 2');
  const s = solveLogRatios(x, answers, n, 3, 3);
  for (let c = 1; c < 3; c++) {
    for (let f = 0; f < 3; f++) assert.ok(Math.abs(s.V[(c - 1) * 3 + f] - (W[c][f] - W[0][f])) < 1e-9, `V[${c}][${f}]`);
    assert.ok(Math.abs(s.a[c - 1] - (b[c] - b[0])) < 1e-9);
  }
  // Minimum norm: one equation x1 + x2 = 2 in two unknowns gives (1, 1).
  const mn = leastSquares(new Matrix([[1, 1]]), new Matrix([[2]]));
  assert.ok(Math.abs(mn.get(0, 0) - 1) < 1e-9 && Math.abs(mn.get(1, 0) - 1) < 1e-9);
  assert.throws(() => solveLogRatios(x, answers, n, 3, 1), /classes must be/);
  assert.throws(() => solveLogRatios(x, answers.subarray(1), n, 3, 3), /answers are not/);
});

test.run();
