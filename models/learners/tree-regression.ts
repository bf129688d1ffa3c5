import { checkRows, type Fitted, type Learner, type Rows64 } from './types.ts';

/**
 * A CART regression tree, written here rather than taken from ml-cart: ml-cart's regression tree
 * refuses a split whose children have zero squared error (its "gain" for regression is the error
 * left after the split, and it splits only while that exceeds 0), so it cannot fit a step
 * function, and its split search costs rows² per node. This one is exact greedy CART:
 *
 * - each node takes the split (feature, threshold) with the least summed squared error of its two
 *   children, over every threshold halfway between neighbouring distinct values; ties (as the
 *   running sums compute them) go to the lowest feature, then the lowest threshold; a row goes
 *   left when x[feature] < threshold;
 * - a node splits only if that strictly lowers the squared error, it is shallower than maxDepth,
 *   and both children keep at least minLeaf rows;
 * - λ is a cost per leaf: the grown tree is pruned to the subtree that minimises
 *     Σ (y − f(x))² + λ·(number of leaves),
 *   found exactly bottom-up (Breiman's cost-complexity criterion). λ = 0 keeps the grown tree.
 *
 * params: nodes in preorder, NODE_WIDTH values each: [feature, threshold, left, right, value],
 * with feature = left = right = −1 and threshold = 0 at a leaf; value is the mean of the node's
 * training labels (a leaf's prediction). There are no gradients: the objective is not smooth.
 */
export interface RegressionTreeOptions {
  maxDepth: number;
  minLeaf: number;
}

export const NODE_WIDTH = 5;

const DEFAULTS: RegressionTreeOptions = { maxDepth: 4, minLeaf: 1 };

/** A tree learner with fixed growth limits; the registry's 'tree-regression' uses depth 4, leaves of ≥ 1 row. */
export function regressionTree(options: Partial<RegressionTreeOptions> = {}): Learner {
  const { maxDepth, minLeaf } = { ...DEFAULTS, ...options };
  if (!(Number.isInteger(maxDepth) && maxDepth >= 0)) throw new RangeError(`regression tree: maxDepth must be an integer ≥ 0 (got ${maxDepth})`);
  if (!(Number.isInteger(minLeaf) && minLeaf >= 1)) throw new RangeError(`regression tree: minLeaf must be an integer ≥ 1 (got ${minLeaf})`);
  return {
    name: 'tree-regression',
    task: 'regression',
    fit(rows, y, lambda) {
      checkRows(rows, y);
      if (!(lambda >= 0 && Number.isFinite(lambda))) throw new RangeError(`regression tree: λ must be a finite number ≥ 0 (got ${lambda})`);
      for (let i = 0; i < y.length; i++) if (!Number.isFinite(y[i])) throw new RangeError(`regression tree: label ${i} is not finite`);
      const grown = grow(rows, y, { maxDepth, minLeaf });
      const params = encode(prune(grown, lambda));
      return treeFitted(params, rows.d, lambda);
    },
  };
}

export const treeRegression: Learner = regressionTree();

/** A fitted tree from its params (as released); d is the number of features rows must have. */
export function treeFitted(params: Float64Array, d: number, lambda = 0): Fitted {
  checkParams(params, d);
  return { learner: 'tree-regression', lambda, params, predict: (rows) => predictTree(params, rows, d) };
}

export function predictTree(params: Float64Array, rows: Rows64, d: number): Float64Array {
  if (rows.d !== d) throw new RangeError(`regression tree: model has ${d} features, rows have ${rows.d}`);
  const out = new Float64Array(rows.n);
  for (let r = 0; r < rows.n; r++) {
    let node = 0;
    for (;;) {
      const at = node * NODE_WIDTH;
      const feature = params[at];
      if (feature < 0) break;
      node = rows.x[r * d + feature] < params[at + 1] ? params[at + 2] : params[at + 3];
    }
    out[r] = params[node * NODE_WIDTH + 4];
  }
  return out;
}

/** Thresholds of the internal nodes, in preorder, with the feature each tests. */
export function treeSplits(params: Float64Array): { feature: number; threshold: number }[] {
  const out: { feature: number; threshold: number }[] = [];
  for (let at = 0; at < params.length; at += NODE_WIDTH) {
    if (params[at] >= 0) out.push({ feature: params[at], threshold: params[at + 1] });
  }
  return out;
}

export function leafTotal(params: Float64Array): number {
  let leaves = 0;
  for (let at = 0; at < params.length; at += NODE_WIDTH) if (params[at] < 0) leaves++;
  return leaves;
}

// ---- growing ---------------------------------------------------------------------------------

interface Node {
  value: number;
  /** Squared error of the node's labels about their mean. */
  sse: number;
  split?: { feature: number; threshold: number; left: Node; right: Node };
}

function grow(rows: Rows64, y: Float64Array, limits: RegressionTreeOptions): Node {
  const { n, d, x } = rows;
  // Each feature's rows are sorted once; a split partitions every sorted list stably, so no node sorts again.
  const sorted: Int32Array[] = [];
  for (let f = 0; f < d; f++) {
    const idx = Array.from({ length: n }, (_, i) => i);
    idx.sort((a, b) => x[a * d + f] - x[b * d + f] || a - b);
    sorted.push(Int32Array.from(idx));
  }
  return growNode(rows, y, sorted, 0, limits, new Uint8Array(n));
}

function growNode(rows: Rows64, y: Float64Array, sorted: Int32Array[], depth: number, limits: RegressionTreeOptions, goesLeft: Uint8Array): Node {
  const idx = sorted[0];
  const m = idx.length;
  let mean = 0;
  for (let i = 0; i < m; i++) mean += y[idx[i]];
  mean /= m;
  let sse = 0;
  for (let i = 0; i < m; i++) sse += (y[idx[i]] - mean) ** 2;
  const node: Node = { value: mean, sse };
  if (depth >= limits.maxDepth || m < 2 * limits.minLeaf || sse === 0) return node;
  const best = bestSplit(rows, y, sorted, mean, limits.minLeaf);
  // Rounding in the running sums can make a useless split look a hair better: demand a real gain.
  if (!best || !(best.sse < sse * (1 - 1e-12))) return node;
  let leftCount = 0;
  for (let i = 0; i < m; i++) {
    const r = idx[i];
    goesLeft[r] = rows.x[r * rows.d + best.feature] < best.threshold ? 1 : 0;
    leftCount += goesLeft[r];
  }
  const left: Int32Array[] = [];
  const right: Int32Array[] = [];
  for (const list of sorted) {
    const l = new Int32Array(leftCount);
    const r = new Int32Array(m - leftCount);
    for (let i = 0, a = 0, b = 0; i < m; i++) (goesLeft[list[i]] ? (l[a++] = list[i]) : (r[b++] = list[i]));
    left.push(l);
    right.push(r);
  }
  node.split = {
    feature: best.feature,
    threshold: best.threshold,
    left: growNode(rows, y, left, depth + 1, limits, goesLeft),
    right: growNode(rows, y, right, depth + 1, limits, goesLeft),
  };
  return node;
}

/** The least-error split of the node's rows (each feature's list sorted by it), or null when no threshold leaves minLeaf rows on each side. */
function bestSplit(rows: Rows64, y: Float64Array, sorted: Int32Array[], mean: number, minLeaf: number) {
  const { d, x } = rows;
  const m = sorted[0].length;
  let best: { feature: number; threshold: number; sse: number } | null = null;
  // Labels centred on the node mean keep the running sums small and their differences accurate.
  let total = 0;
  let totalSq = 0;
  for (const i of sorted[0]) {
    const v = y[i] - mean;
    total += v;
    totalSq += v * v;
  }
  for (let f = 0; f < d; f++) {
    const order = sorted[f];
    let sum = 0;
    let sq = 0;
    for (let k = 1; k < m; k++) {
      const v = y[order[k - 1]] - mean;
      sum += v;
      sq += v * v;
      if (k < minLeaf || m - k < minLeaf) continue;
      const lo = x[order[k - 1] * d + f];
      const hi = x[order[k] * d + f];
      if (!(lo < hi)) continue;
      const err = sq - (sum * sum) / k + (totalSq - sq) - ((total - sum) * (total - sum)) / (m - k);
      if (best === null || err < best.sse) {
        let threshold = (lo + hi) / 2;
        // Neighbouring doubles: the midpoint rounds onto lo, which would send lo right.
        if (!(threshold > lo)) threshold = hi;
        best = { feature: f, threshold, sse: Math.max(err, 0) };
      }
    }
  }
  return best;
}

// ---- pruning and encoding --------------------------------------------------------------------

/** The pruned subtree minimising error + λ·leaves; ties keep the smaller tree. */
function prune(node: Node, lambda: number): Node {
  return pruneCost(node, lambda).node;
}

function pruneCost(node: Node, lambda: number): { node: Node; cost: number } {
  const asLeaf = { node: { value: node.value, sse: node.sse }, cost: node.sse + lambda };
  if (!node.split) return asLeaf;
  const left = pruneCost(node.split.left, lambda);
  const right = pruneCost(node.split.right, lambda);
  const cost = left.cost + right.cost;
  if (asLeaf.cost <= cost) return asLeaf;
  return { node: { ...node, split: { ...node.split, left: left.node, right: right.node } }, cost };
}

function encode(root: Node): Float64Array {
  const out: number[] = [];
  const visit = (node: Node): number => {
    const id = out.length / NODE_WIDTH;
    out.push(-1, 0, -1, -1, node.value);
    if (node.split) {
      const at = id * NODE_WIDTH;
      out[at] = node.split.feature;
      out[at + 1] = node.split.threshold;
      out[at + 2] = visit(node.split.left);
      out[at + 3] = visit(node.split.right);
    }
    return id;
  };
  visit(root);
  return Float64Array.from(out);
}

function checkParams(params: Float64Array, d: number): void {
  const nodes = params.length / NODE_WIDTH;
  if (!Number.isInteger(nodes) || nodes < 1) throw new RangeError(`regression tree: ${params.length} params do not make nodes of ${NODE_WIDTH}`);
  for (let id = 0; id < nodes; id++) {
    const at = id * NODE_WIDTH;
    const f = params[at];
    if (f === -1) continue;
    const childOk = (c: number) => Number.isInteger(c) && c > id && c < nodes;
    if (!(Number.isInteger(f) && f >= 0 && f < d && Number.isFinite(params[at + 1]) && childOk(params[at + 2]) && childOk(params[at + 3]))) {
      throw new RangeError(`regression tree: node ${id} is malformed (feature ${f}, children ${params[at + 2]}, ${params[at + 3]})`);
    }
  }
}
