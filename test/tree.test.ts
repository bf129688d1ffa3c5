import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makePathFinding, pathFinding, type PathFindingImitation, type PathFindingOptions } from '../attacks/path-finding.ts';
import { NotApplicable, type AttackContext } from '../attacks/types.ts';
import { scoreImitation } from '../bench/score.ts';
import { loadPool } from '../datasets/index.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend } from '../engine/backend.ts';
import { getTarget } from '../models/targets/index.ts';
import { leafCount, nodeCount, treeFamily, treeOf, treeTarget, treeToJson, type TreeModel, type TreeSpec } from '../models/targets/tree.ts';
import type { ModelClass, Target } from '../models/types.ts';
import { parseServeConfig } from '../serve/config.ts';
import { HttpOracle } from '../serve/http-oracle.ts';
import { hashKey } from '../serve/keys.ts';
import { InProcessOracle } from '../serve/oracle.ts';
import { startServer } from '../serve/server.ts';
import type { Disclosure, Oracle } from '../serve/types.ts';
import { rejection, smallMnist, TEST_CACHE } from './helpers.ts';

// ml-cart's training time grows as rows², so the suite's tree learns from 300 rows (~10 s once, then cached).
const SPEC: TreeSpec = { id: 'tree', family: 'tree', trainSize: 300, maxDepth: 8, minNumSamples: 5, seed: 1 };
const shape: [number, number, number] = [28, 28, 1];
const D = 784;
const LEAF: Disclosure = { kind: 'leaf' };

let ds: Dataset;
let target: Target;
let tree: TreeModel;
let pool: Split;
let evalX: Float64Array;

test.before(async () => {
  await initBackend('wasm');
  ds = await smallMnist();
  target = await getTarget(SPEC, ds, { cacheDir: TEST_CACHE });
  tree = treeOf(target);
  pool = await loadPool('same', ds, 2000, 1);
  evalX = Float64Array.from(ds.split('eval').x);
});
test.after(() => target?.dispose());

function context(oracle: Oracle, known: ModelClass | undefined, seed = 1): AttackContext {
  return {
    oracle,
    pool,
    inputShape: shape,
    classes: 10,
    side: { name: 'leaf', pool: 'same', disclosure: oracle.disclosure, architecture: known ? 'known' : 'unknown' },
    student: { arch: 'mlp', epochs: 1, batchSize: 32, lr: 0.001 },
    known,
    seed,
  };
}

/** Runs the attack and scores it on eval; checks the budget and that no tensor was left behind. */
async function attack(oracle: Oracle, opts: PathFindingOptions = {}, seed = 1): Promise<{ rho: number; im: PathFindingImitation }> {
  const before = tf.memory().numTensors;
  const im = (await makePathFinding(opts).run(context(oracle, { family: 'tree' }, seed))) as PathFindingImitation;
  const { rho } = await scoreImitation(im, target, ds.split('eval'), shape);
  im.dispose();
  assert.is(tf.memory().numTensors, before, 'tensors left behind');
  assert.ok(oracle.spent <= oracle.budget, `spent ${oracle.spent} of ${oracle.budget}`);
  return { rho, im };
}

/** The nodes row r of x passes through, root first, walked here by hand from the tree's arrays. */
function pathOf(t: TreeModel, x: Float64Array, r: number): number[] {
  const path = [0];
  while (t.feature[path[path.length - 1]] >= 0) {
    const n = path[path.length - 1];
    path.push(x[r * t.features + t.feature[n]] < t.threshold[n] ? t.left[n] : t.right[n]);
  }
  return path;
}

const frequencies = (t: TreeModel, node: number) => {
  const c = Array.from(t.counts.subarray(node * t.classes, (node + 1) * t.classes));
  const total = c.reduce((a, b) => a + b, 0);
  return c.map((v) => v / total);
};

test('the tree target: a CART tree on real MNIST, leaf ids on the path predictProba64 takes, float32 = float64 rounded', async () => {
  console.log(`    tree (${SPEC.trainSize} rows, maxDepth ${SPEC.maxDepth}): ${nodeCount(tree)} nodes, ${leafCount(tree)} leaves, eval accuracy ${target.testAccuracy.toFixed(3)}`);
  assert.ok(leafCount(tree) >= 20, 'a tree of some size');
  assert.is(nodeCount(tree), 2 * leafCount(tree) - 1, 'binary: every internal node has two children');
  assert.ok(target.testAccuracy > 0.4, `accuracy ${target.testAccuracy}`);
  assert.equal(target.model, { family: 'tree' });
  assert.ok(target.acceptsMissing);

  const n = 200;
  const x = evalX.subarray(0, n * D);
  const leaves = target.leafIds!(x, n);
  const p = target.predictProba64!(x, n);
  const used = new Set<number>();
  for (let r = 0; r < n; r++) {
    const path = pathOf(tree, x, r);
    assert.is(leaves[r], path[path.length - 1], `row ${r}: leaf id is the end of its path`);
    assert.is(tree.feature[leaves[r]], -1, 'a leaf');
    assert.equal(Array.from(p.subarray(r * 10, (r + 1) * 10)), frequencies(tree, leaves[r]));
    used.add(leaves[r]);
  }
  assert.ok(used.size > 5, 'rows reach many leaves');
  const t32 = tf.tensor4d(Float32Array.from(x), [n, ...shape]);
  const q = await target.predictProba(t32);
  assert.equal(Array.from(q.dataSync()), Array.from(Float32Array.from(p)));
  tf.dispose([t32, q]);
});

test('a missing feature stops the walk at the first node that tests it, answering that node', async () => {
  let checked = 0;
  for (let r = 0; r < 50; r++) {
    const row = evalX.slice(r * D, (r + 1) * D);
    const path = pathOf(tree, row, 0);
    for (let k = 0; k < path.length - 1; k++) {
      const f = tree.feature[path[k]];
      if (path.slice(0, k).some((n) => tree.feature[n] === f)) continue; // an earlier node tests it too
      const holed = row.slice();
      holed[f] = NaN;
      assert.is(target.leafIds!(holed, 1)[0], path[k], `row ${r}, feature ${f} missing`);
      assert.equal(Array.from(target.predictProba64!(holed, 1)), frequencies(tree, path[k]));
      checked++;
    }
    // A feature off the path changes nothing.
    const off = row.slice();
    const offPath = Array.from({ length: D }, (_, j) => j).find((j) => !path.some((n) => tree.feature[n] === j))!;
    off[offPath] = NaN;
    assert.is(target.leafIds!(off, 1)[0], path[path.length - 1]);
  }
  assert.ok(checked > 100, `${checked} internal stops checked`);
  const all = new Float64Array(D).fill(NaN);
  assert.is(target.leafIds!(all, 1)[0], 0, 'all missing: the root');

  // A tree small enough to check by eye: f0 < 0.5 ? leaf 1 : (f1 < 0.3 ? leaf 3 : leaf 4), on 2 classes.
  const tiny: TreeModel = {
    classes: 2,
    features: D,
    feature: Int32Array.from([0, -1, 1, -1, -1]),
    threshold: Float64Array.from([0.5, 0, 0.3, 0, 0]),
    left: Int32Array.from([1, -1, 3, -1, -1]),
    right: Int32Array.from([2, -1, 4, -1, -1]),
    counts: Float64Array.from([6, 4, 5, 1, 1, 3, 1, 0, 0, 3]),
  };
  const t = treeTarget('tiny', tiny, shape);
  const rows = new Float64Array(5 * D);
  const put = (r: number, f0: number, f1: number) => {
    rows[r * D] = f0;
    rows[r * D + 1] = f1;
  };
  put(0, 0.2, 0.9); // leaf 1
  put(1, 0.5, 0.1); // 0.5 is not < 0.5: right, then leaf 3
  put(2, 0.7, 0.3); // leaf 4
  put(3, NaN, 0.1); // stops at the root
  put(4, 0.9, NaN); // stops at node 2
  assert.equal(Array.from(t.leafIds!(rows, 5)), [1, 3, 4, 0, 2]);
  assert.equal(Array.from(t.predictProba64!(rows, 5)), [5 / 6, 1 / 6, 1, 0, 0, 1, 0.6, 0.4, 0.25, 0.75]);
  // Through the API: the label (one-hot) and the leaf id; a NaN row is refused by a target that cannot take it.
  const answer = await new InProcessOracle(t, 5, LEAF).query64(rows, 5);
  assert.equal(Array.from(answer.leaves!), [1, 3, 4, 0, 2]);
  assert.equal(Array.from(answer.y), [1, 0, 1, 0, 0, 1, 1, 0, 0, 1]);
});

test('cache round trip: a restored tree answers bit for bit; a damaged one is refused', async () => {
  const again = await getTarget(SPEC, ds, { cacheDir: TEST_CACHE });
  assert.ok(again.fromCache, 'second load comes from the cache');
  const params = { classes: 10, features: D, nodes: nodeCount(tree), leaves: leafCount(tree) };
  const restored = await treeFamily.restore(SPEC, { 'tree.json': treeToJson(tree) }, params, { inputShape: shape, classes: 10 });
  // Eval rows, some with holes, and off-grid values that land next to the thresholds.
  const n = 300;
  const x = evalX.slice(0, n * D);
  for (let r = 0; r < n; r += 7) x[r * D + tree.feature[0]] = NaN;
  for (let i = 0; i < tree.feature.length; i++) if (tree.feature[i] >= 0) x[(i % n) * D + tree.feature[i]] = tree.threshold[i];
  for (const t of [again, restored]) {
    assert.equal(t.predictProba64!(x, n), target.predictProba64!(x, n));
    assert.equal(t.leafIds!(x, n), target.leafIds!(x, n));
  }
  const bytes = JSON.parse(new TextDecoder().decode(treeToJson(tree)));
  bytes.left[0] = 0; // a loop
  const err = await rejection(treeFamily.restore(SPEC, { 'tree.json': new TextEncoder().encode(JSON.stringify(bytes)) }, params, { inputShape: shape, classes: 10 }));
  assert.match(err.message, /node 0 has child 0/);
  assert.match((await rejection(treeFamily.restore(SPEC, {}, params, { inputShape: shape, classes: 10 }))).message, /lacks tree\.json/);
});

const counts: Record<string, number> = {};

test('path finding with incomplete queries rebuilds every leaf: ρ = 0 on eval, within the budget', async () => {
  const oracle = new InProcessOracle(target, 50_000, LEAF);
  const { rho, im } = await attack(oracle);
  counts.incomplete = oracle.spent;
  console.log(`    path finding, incomplete queries: ${oracle.spent} queries (${oracle.queries} calls), ${im.boxes.length} leaves, ρ = ${rho}`);
  assert.is(rho, 0);
  assert.ok(im.complete);
  assert.is(im.boxes.length, leafCount(tree), 'every leaf found');
  assert.equal(new Set(im.boxes.map((b) => b.id)).size, im.boxes.length, 'each once');
  // Finer than ρ: every eval row lies in exactly one box, the box of the leaf the target takes it to.
  const ev = ds.split('eval');
  const leaves = target.leafIds!(evalX, ev.n);
  for (let r = 0; r < ev.n; r++) {
    const inside = im.boxes.filter((b) => b.features.every((f, i) => evalX[r * D + f] > b.lo[i] && evalX[r * D + f] <= b.hi[i]));
    assert.equal(inside.map((b) => b.id), [leaves[r]], `eval row ${r}`);
  }
  // The predicates are the tree's: each box's features are exactly those tested on its leaf's path.
  for (const b of im.boxes) {
    const onPath = new Set<number>();
    for (let n = 0, child = b.id; child !== 0; child = n) {
      n = tree.left.indexOf(child) >= 0 ? tree.left.indexOf(child) : tree.right.indexOf(child);
      onPath.add(tree.feature[n]);
    }
    assert.equal(Array.from(b.features), [...onPath].sort((a, c) => a - c), `leaf ${b.id}`);
  }
  // The same seed, the same queries.
  const twice = new InProcessOracle(target, 50_000, LEAF);
  await attack(twice);
  assert.is(twice.spent, oracle.spent);
});

test('path finding with complete queries only, and on the 8-bit grid: ρ = 0 too; incomplete queries are cheaper', async () => {
  const complete = new InProcessOracle(target, 50_000, LEAF);
  const a = await attack(complete, { incomplete: false });
  const grid = new InProcessOracle(target, 50_000, LEAF);
  const b = await attack(grid, { levels: 255 });
  const fine = new InProcessOracle(target, 50_000, LEAF);
  const c = await attack(fine, { epsilon: 1e-9 });
  console.log(`    complete queries only: ${complete.spent} queries, ρ = ${a.rho}; 8-bit grid search: ${grid.spent}, ρ = ${b.rho}; ε = 1e-9: ${fine.spent}, ρ = ${c.rho}`);
  for (const { rho, im } of [a, b, c]) {
    assert.is(rho, 0);
    assert.is(im.boxes.length, leafCount(tree));
  }
  assert.ok(counts.incomplete < complete.spent, `incomplete ${counts.incomplete} vs complete ${complete.spent}`);
  assert.ok(grid.spent < counts.incomplete, 'the grid search needs fewer bisection steps than ε = 1e-3');
  assert.ok(fine.spent > counts.incomplete);
});

test('a budget too small: a partial tree, never past the budget, no throw; ρ falls as the budget grows', async () => {
  const rhos: number[] = [];
  for (const budget of [0, 1, 300, 1500]) {
    const oracle = new InProcessOracle(target, budget, LEAF);
    const { rho, im } = await attack(oracle);
    assert.ok(rho >= 0 && rho <= 1, `budget ${budget}: ρ ${rho}`);
    assert.not.ok(im.complete);
    assert.ok(oracle.spent <= budget && oracle.spent > budget - 200, `budget ${budget}: spent ${oracle.spent}`);
    rhos.push(rho);
  }
  console.log(`    ρ at budgets 0, 1, 300, 1500: ${rhos.map((r) => r.toFixed(3)).join(', ')}`);
  assert.ok(rhos[3] < rhos[0], 'more queries, a closer copy');
});

test('not applicable without leaf ids or without knowing the target is a tree', async () => {
  const label = await rejection(pathFinding.run(context(new InProcessOracle(target, 100, { kind: 'label' }), { family: 'tree' })));
  assert.instance(label, NotApplicable);
  assert.match(label.message, /leaf identifiers/);
  const unknown = await rejection(pathFinding.run(context(new InProcessOracle(target, 100, LEAF), undefined)));
  assert.instance(unknown, NotApplicable);
  assert.match(unknown.message, /architecture: known/);
  const mlp = await rejection(pathFinding.run(context(new InProcessOracle(target, 100, LEAF), { family: 'mlp', hidden: [10] })));
  assert.instance(mlp, NotApplicable);
  assert.match(mlp.message, /decision trees; the target is a mlp/);
  assert.throws(() => makePathFinding({ epsilon: 0 }), /epsilon must be a positive number/);
  assert.throws(() => makePathFinding({ levels: 2.5 }), /levels must be a positive integer/);
});

test('over HTTP with a leaf key: the same ρ = 0 and the same queries as in-process', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rhobench-tree-'));
  const secret = 'tree-leaf-secret';
  const config = parseServeConfig(
    {
      port: 0,
      dataset: { name: 'mnist', trainSize: 2000, poolSize: 2000, evalSize: 1000, seed: 3 },
      targets: [SPEC],
      keys: [{ name: 'leaf', sha256: hashKey(secret), disclosure: 'leaf', budget: 20_000, rateLimit: { requestsPerSecond: 10_000, burst: 10_000 }, models: '*' }],
      ledger: join(dir, 'ledger.jsonl'),
    },
    'tree test config',
  );
  const server = await startServer(config, { cacheDir: TEST_CACHE, log: () => {} });
  try {
    const oracle = new HttpOracle({ url: server.url, model: SPEC.id, key: secret, budget: 20_000, disclosure: LEAF, classes: 10, inputShape: shape });
    const { rho, im } = await attack(oracle);
    console.log(`    over HTTP: ${oracle.spent} queries in ${oracle.requests} requests, ρ = ${rho}`);
    assert.is(rho, 0);
    assert.is(oracle.spent, counts.incomplete, 'as many queries as in-process');
    assert.is(im.boxes.length, leafCount(tree));
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
