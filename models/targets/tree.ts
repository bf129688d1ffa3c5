import { createRequire } from 'node:module';
import { z } from 'zod';
import { argmaxRows } from '../../bench/metric.ts';
import type { TaskName } from '../../datasets/tasks.ts';
import type { Split } from '../../datasets/types.ts';
import { float64Target } from '../linear64.ts';
import type { Target } from '../types.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

/**
 * A CART decision tree in flat arrays, nodes in preorder: a node's index is its identifier, which
 * the 'leaf' disclosure returns (BigML's API gives such opaque ids). A row goes left when
 * x[feature] < threshold, as ml-cart decides. Every node, internal ones included, keeps the class
 * counts of the training rows that reached it: an incomplete query stopped at an internal node
 * is answered with that node's distribution, as BigML answers it.
 */
export interface TreeModel {
  classes: number;
  features: number;
  /** Feature tested at each node; −1 at a leaf. */
  feature: Int32Array;
  threshold: Float64Array;
  /** Children's indices; −1 at a leaf. */
  left: Int32Array;
  right: Int32Array;
  /** nodes × classes training-row counts. */
  counts: Float64Array;
}

/** A tree target; the structure is there for tests and reports, never reached through an oracle. */
export type TreeTarget = Target & { tree: TreeModel };

export function treeOf(target: Target): TreeModel {
  const tree = (target as Partial<TreeTarget>).tree;
  if (!tree) throw new RangeError(`target ${target.id} (${target.family}) is not a decision tree`);
  return tree;
}

export function nodeCount(tree: TreeModel): number {
  return tree.feature.length;
}

export function leafCount(tree: TreeModel): number {
  return tree.feature.reduce((a, f) => a + (f < 0 ? 1 : 0), 0);
}

/** The node where row r of x stops: a leaf, or the first node whose feature is missing (NaN). */
export function walk(tree: TreeModel, x: Float64Array, r: number): number {
  const at = r * tree.features;
  let node = 0;
  for (;;) {
    const f = tree.feature[node];
    if (f < 0) return node;
    const v = x[at + f];
    if (Number.isNaN(v)) return node;
    node = v < tree.threshold[node] ? tree.left[node] : tree.right[node];
  }
}

// ---- training with ml-cart ---------------------------------------------------------------------

/** The parts of ml-cart's (untyped) tree this module reads. */
interface CartNode {
  splitColumn?: number;
  splitValue?: number;
  left?: CartNode;
  right?: CartNode;
}
interface CartClassifier {
  train(x: number[][], y: number[]): void;
  predict(x: number[][]): number[];
  root: CartNode;
}
type CartCtor = new (options: Record<string, unknown>) => CartClassifier;

export interface TreeOptions {
  maxDepth: number;
  minNumSamples: number;
}

/**
 * Fits ml-cart's DecisionTreeClassifier (gini, splits at midpoints of neighbouring values) and
 * flattens it. ml-cart evaluates every candidate split with a pass over the node's rows, so the
 * cost grows as rows² × features: on 784 MNIST pixels, 400 rows take ~15 s, 800 ~1 min and
 * 2,000 ~6 min on 2 cores (maxDepth 6). Hence the small default trainSize.
 */
export function fitTree(data: Split, classes: number, opts: TreeOptions): TreeModel {
  if (data.n === 0) throw new RangeError('decision tree: no training rows');
  const d = data.x.length / data.n;
  const rows: number[][] = [];
  const labels: number[] = [];
  for (let r = 0; r < data.n; r++) {
    const c = data.y[r];
    if (!(Number.isInteger(c) && c >= 0 && c < classes)) throw new RangeError(`decision tree: label ${c} at training row ${r} is outside 0..${classes - 1}`);
    rows.push(Array.from(data.x.subarray(r * d, (r + 1) * d)));
    labels.push(c);
  }
  const { DecisionTreeClassifier } = createRequire(import.meta.url)('ml-cart') as { DecisionTreeClassifier: CartCtor };
  const cart = new DecisionTreeClassifier({ gainFunction: 'gini', maxDepth: opts.maxDepth, minNumSamples: opts.minNumSamples });
  cart.train(rows, labels);
  const tree = flatten(cart.root, classes, d);
  // ml-cart keeps distributions at leaves only: count every node's training rows by routing them.
  const x64 = Float64Array.from(data.x);
  for (let r = 0; r < data.n; r++) {
    const at = r * d;
    let node = 0;
    for (;;) {
      tree.counts[node * classes + data.y[r]]++;
      const f = tree.feature[node];
      if (f < 0) break;
      node = x64[at + f] < tree.threshold[node] ? tree.left[node] : tree.right[node];
    }
  }
  // The flat tree must predict what ml-cart predicts; a mismatch is a bug here, not bad data.
  const theirs = cart.predict(rows);
  const ours = argmaxRows(predictTree(tree, x64, data.n), classes);
  const bad = theirs.findIndex((c, r) => c !== ours[r]);
  if (bad >= 0) throw new Error(`decision tree: the flattened tree predicts ${ours[bad]} on training row ${bad}, ml-cart ${theirs[bad]}`);
  return tree;
}

function flatten(root: CartNode, classes: number, features: number): TreeModel {
  const feature: number[] = [];
  const threshold: number[] = [];
  const left: number[] = [];
  const right: number[] = [];
  const visit = (node: CartNode): number => {
    const id = feature.length;
    const internal = node.left !== undefined && node.right !== undefined;
    const f = internal ? node.splitColumn : undefined;
    const t = internal ? node.splitValue : undefined;
    if (internal && !(Number.isInteger(f) && f! >= 0 && f! < features && Number.isFinite(t))) {
      throw new Error(`decision tree: ml-cart node ${id} splits on column ${f} at ${t}`);
    }
    feature.push(internal ? f! : -1);
    threshold.push(internal ? t! : 0);
    left.push(-1);
    right.push(-1);
    if (internal) {
      left[id] = visit(node.left!);
      right[id] = visit(node.right!);
    }
    return id;
  };
  visit(root);
  return {
    classes,
    features,
    feature: Int32Array.from(feature),
    threshold: Float64Array.from(threshold),
    left: Int32Array.from(left),
    right: Int32Array.from(right),
    counts: new Float64Array(feature.length * classes),
  };
}

// ---- answering ---------------------------------------------------------------------------------

/** Class frequencies of the node each row stops at (n × classes); argmax = the tree's prediction. */
export function predictTree(tree: TreeModel, x: Float64Array, n: number): Float64Array {
  const { classes } = tree;
  const out = new Float64Array(n * classes);
  for (let r = 0; r < n; r++) {
    const node = walk(tree, x, r);
    let total = 0;
    for (let c = 0; c < classes; c++) total += tree.counts[node * classes + c];
    for (let c = 0; c < classes; c++) out[r * classes + c] = total > 0 ? tree.counts[node * classes + c] / total : 1 / classes;
  }
  return out;
}

export function treeTarget(id: string, tree: TreeModel, inputShape: [number, number, number], testAccuracy = NaN): TreeTarget {
  checkTree(tree);
  const d = inputShape.reduce((a, b) => a * b, 1);
  if (d !== tree.features) throw new RangeError(`decision tree ${id}: ${tree.features} features, but inputs of shape [${inputShape.join(', ')}] have ${d}`);
  const rowsOf = (x: Float64Array, n: number, what: string) => {
    if (!(Number.isInteger(n) && n >= 0) || x.length !== n * d) throw new RangeError(`decision tree ${id}: ${what} got ${x.length} values, not ${n} rows of ${d}`);
  };
  const predictProba64 = (x: Float64Array, n: number) => {
    rowsOf(x, n, 'predictProba64');
    return predictTree(tree, x, n);
  };
  return {
    ...float64Target({ id, family: 'tree', model: { family: 'tree' }, inputShape, classes: tree.classes, testAccuracy }, predictProba64),
    acceptsMissing: true,
    tree,
    leafIds(x, n) {
      rowsOf(x, n, 'leafIds');
      const out = new Int32Array(n);
      for (let r = 0; r < n; r++) out[r] = walk(tree, x, r);
      return out;
    },
  };
}

// ---- cache -------------------------------------------------------------------------------------

/** Throws on a structure that could loop, point outside itself or answer NaN. */
export function checkTree(t: TreeModel): void {
  const nodes = t.feature.length;
  const bad = (why: string) => new Error(`decision tree: ${why}`);
  if (!(Number.isInteger(t.classes) && t.classes > 0 && Number.isInteger(t.features) && t.features > 0)) throw bad(`bad shape ${t.classes} classes × ${t.features} features`);
  if (nodes === 0) throw bad('no nodes');
  if (t.threshold.length !== nodes || t.left.length !== nodes || t.right.length !== nodes) throw bad('node arrays of different lengths');
  if (t.counts.length !== nodes * t.classes) throw bad(`${t.counts.length} counts for ${nodes} nodes × ${t.classes} classes`);
  if (!t.counts.every((c) => c >= 0 && Number.isFinite(c))) throw bad('a class count is negative or not finite');
  for (let i = 0; i < nodes; i++) {
    const f = t.feature[i];
    if (f === -1) {
      if (t.left[i] !== -1 || t.right[i] !== -1) throw bad(`leaf ${i} has children`);
      continue;
    }
    if (!(f >= 0 && f < t.features)) throw bad(`node ${i} tests feature ${f}, outside 0..${t.features - 1}`);
    if (!Number.isFinite(t.threshold[i])) throw bad(`node ${i} has threshold ${t.threshold[i]}`);
    // Preorder: children come after their parent, so every walk ends.
    for (const c of [t.left[i], t.right[i]]) if (!(c > i && c < nodes)) throw bad(`node ${i} has child ${c}`);
  }
}

interface TreeJson {
  classes: number;
  features: number;
  feature: number[];
  threshold: number[];
  left: number[];
  right: number[];
  counts: number[];
}

/** JSON numbers round-trip float64 exactly, so a restored tree answers bit for bit as the trained one. */
export function treeToJson(t: TreeModel): Uint8Array {
  const json: TreeJson = {
    classes: t.classes,
    features: t.features,
    feature: Array.from(t.feature),
    threshold: Array.from(t.threshold),
    left: Array.from(t.left),
    right: Array.from(t.right),
    counts: Array.from(t.counts),
  };
  return new TextEncoder().encode(JSON.stringify(json));
}

export function treeFromJson(bytes: Uint8Array | undefined): TreeModel {
  if (bytes === undefined) throw new Error('cache entry lacks tree.json');
  const j = JSON.parse(new TextDecoder().decode(bytes)) as Partial<TreeJson>;
  const nums = (a: unknown, what: string): number[] => {
    if (!Array.isArray(a) || !a.every((v) => typeof v === 'number')) throw new Error(`tree.json: ${what} is not an array of numbers`);
    return a as number[];
  };
  const tree: TreeModel = {
    classes: Number(j.classes),
    features: Number(j.features),
    feature: Int32Array.from(nums(j.feature, 'feature')),
    threshold: Float64Array.from(nums(j.threshold, 'threshold')),
    left: Int32Array.from(nums(j.left, 'left')),
    right: Int32Array.from(nums(j.right, 'right')),
    counts: Float64Array.from(nums(j.counts, 'counts')),
  };
  checkTree(tree);
  return tree;
}

export const treeSchema = z.strictObject({
  ...baseFields,
  family: z.literal('tree'),
  /** ml-cart's training time grows with rows² (see fitTree): 1,000 rows take ~1½ minutes, once, then the cache. */
  trainSize: count.default(1_000),
  maxDepth: count.default(8),
  /** A node with this many rows or fewer becomes a leaf. */
  minNumSamples: count.default(5),
});
export type TreeSpec = Omit<z.output<typeof treeSchema>, 'task'> & { id: string; task?: TaskName };

export const treeFamily: FamilyModule<TreeSpec> = {
  name: 'tree',
  schema: treeSchema,
  async train(spec, data, { inputShape, classes }) {
    const tree = fitTree(data, classes, spec);
    return {
      target: treeTarget(spec.id, tree, inputShape),
      files: { 'tree.json': treeToJson(tree) },
      params: { classes, features: tree.features, nodes: nodeCount(tree), leaves: leafCount(tree) },
    };
  },
  async restore(spec, files, params, { inputShape, classes }) {
    const tree = treeFromJson(files['tree.json']);
    if (tree.classes !== classes) throw new Error(`tree.json has ${tree.classes} classes, the task ${classes}`);
    if (params.nodes !== undefined && params.nodes !== nodeCount(tree)) throw new Error(`tree.json has ${nodeCount(tree)} nodes, the entry says ${String(params.nodes)}`);
    return treeTarget(spec.id, tree, inputShape);
  },
};
