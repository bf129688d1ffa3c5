import * as tf from '@tensorflow/tfjs';
import { rng } from '../models/seed.ts';
import type { Imitation } from '../models/types.ts';
import { BudgetExceeded } from '../serve/types.ts';
import { NotApplicable, type Attack, type AttackContext } from './types.ts';

/**
 * The path-finding attack of Tramèr et al., "Stealing Machine Learning Models via Prediction
 * APIs" (USENIX Security 2016, §4.2, Algorithm 1), against a decision tree whose API returns the
 * identifier of the leaf that decided each answer (BigML's does).
 *
 * A leaf's region is a box: the product over the features tested on its path of one interval
 * each. From a point x in leaf A:
 * 1. The features on A's path. With incomplete queries, x with a set S of features missing is
 *    answered by A itself exactly when no feature of S is tested on A's path (otherwise the walk
 *    stops at the first path node testing one), so adaptive group testing finds the k path
 *    features among d in about 1.5·k·log₂(d/k) queries. With complete queries only, S is set to
 *    the range's low end and, in a second query, to its high end: as every threshold lies strictly
 *    inside the range, x leaves A's box in one of the two exactly when S holds a path feature.
 * 2. For each path feature, bisection from x towards each end of the range, to a bracket of width
 *    ε, finds A's interval on that feature (the leaf id is A exactly inside it: a box meets a line
 *    in one interval). The point just outside each bracket lies in a neighbouring leaf.
 * 3. Each neighbour not seen before is explored the same way (breadth first). Walking from leaf to
 *    neighbour along one feature crosses every threshold on that line in turn, so, by induction
 *    from the root, every leaf is reached; the exploration ends when no new leaf appears.
 *
 * The imitation is the set of leaf boxes with their labels (the tree's predicates, rebuilt). A
 * bracket (L, R] holds the threshold t of a node that sends v < t one way (the lower side, L's)
 * and v ≥ t the other; values strictly inside the bracket are unknown, and go to R's side, so a
 * box is lo < v ≤ hi with lo, hi bracket ends. That is exact for every value outside (L, t):
 * - continuously (the default): bisection to a bracket of width ε. Real data on a grid of step
 *   g (MNIST pixels: k/255) is classified exactly for ε < g/2: a CART threshold lies midway
 *   between two training values (then no grid value is within g/2 of it) or, in ml-cart, exactly
 *   ON one (the mean of two equal neighbours), and that value, on R's side, is classified right.
 * - on a grid (`levels`, e.g. 255): bisection over the grid values only, queried as float32 holds
 *   them (fround(low + k·step), the values data rows carry), until the bracket spans two
 *   neighbouring grid values: exact on every grid value, in fewer queries.
 * If the budget runs out, the boxes found so far answer and a row in none of them takes the label
 * of the nearest box (L1 distance), or the majority label of the answers seen when no box was finished.
 */
export interface PathFindingOptions {
  /**
   * Search only the grid low + k·(high − low)/levels, k = 0..levels (e.g. 255 for 8-bit pixels);
   * null (default) searches the range continuously, to precision epsilon.
   */
  levels?: number | null;
  /** Continuous search: width of the bracket each threshold is narrowed to (default 1e-3 < 1/510). */
  epsilon?: number;
  /** Find a leaf's path features with incomplete queries (missing features); default true. */
  incomplete?: boolean;
  /** Every feature's range; thresholds must lie strictly inside it (default [0, 1], pixel intensities). */
  range?: [number, number];
}

/** The imitation, with what the extraction found. */
export interface PathFindingImitation extends Imitation {
  boxes: readonly LeafBox[];
  /** Whether the exploration finished (every leaf reachable from the start was explored) within the budget. */
  complete: boolean;
}

/** One leaf's region: lo[i] < x[features[i]] ≤ hi[i] for every i (±∞ where the range's end is in the leaf). */
export interface LeafBox {
  id: number;
  label: number;
  features: Int32Array;
  lo: Float64Array;
  hi: Float64Array;
}

/** The budget cannot pay for the next batch: the extraction stops and answers with what it has. */
class Exhausted extends Error {}

interface Answer {
  ids: Int32Array;
  labels: Int32Array;
}

/** Leaf ids and labels through query64, never past the budget. */
class LeafOracle {
  /** Labels of complete queries, for the fallback when no box was finished. */
  readonly labelCounts: Float64Array;

  constructor(
    private readonly ctx: AttackContext,
    private readonly d: number,
  ) {
    this.labelCounts = new Float64Array(ctx.classes);
  }

  async ask(rows: Float64Array[]): Promise<Answer> {
    const n = rows.length;
    if (n === 0) return { ids: new Int32Array(0), labels: new Int32Array(0) };
    const { oracle, classes } = this.ctx;
    if (oracle.spent + n > oracle.budget) throw new Exhausted();
    const x = new Float64Array(n * this.d);
    rows.forEach((r, i) => x.set(r, i * this.d));
    let answer;
    try {
      answer = await oracle.query64(x, n);
    } catch (err) {
      if (err instanceof BudgetExceeded) throw new Exhausted();
      throw err;
    }
    if (!answer.leaves || answer.leaves.length !== n) {
      throw new Error(`path-finding: the oracle answered ${n} rows without ${n} leaf identifiers, though its disclosure is "leaf"`);
    }
    const labels = new Int32Array(n);
    for (let r = 0; r < n; r++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (answer.y[r * classes + c] > answer.y[r * classes + best]) best = c;
      labels[r] = best;
      if (!rows[r].some(Number.isNaN)) this.labelCounts[best]++;
    }
    this.ctx.onProgress?.(oracle.spent, oracle.budget, 'path-finding queries');
    return { ids: answer.leaves, labels };
  }
}

interface Point {
  x: Float64Array;
  id: number;
  label: number;
}

interface Settings {
  epsilon: number;
  incomplete: boolean;
  low: number;
  high: number;
  levels: number | null;
}

/**
 * A value strictly between a and b to query next, or undefined when the bracket is narrow enough:
 * the midpoint (continuous search), or a grid value near it (grid search).
 */
function nextProbe(a: number, b: number, s: Settings): number | undefined {
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  if (s.levels === null) return hi - lo > s.epsilon ? (lo + hi) / 2 : undefined;
  const step = (s.high - s.low) / s.levels;
  const grid = (k: number) => Math.fround(s.low + k * step);
  // float32 rounding may move a grid value by an ulp past the estimate: nudge the indices into place.
  let first = Math.max(0, Math.floor((lo - s.low) / step));
  while (first <= s.levels && grid(first) <= lo) first++;
  while (first > 0 && grid(first - 1) > lo) first--;
  let last = Math.min(s.levels, Math.ceil((hi - s.low) / step));
  while (last >= 0 && grid(last) >= hi) last--;
  while (last < s.levels && grid(last + 1) < hi) last++;
  return first <= last ? grid((first + last) >> 1) : undefined;
}

const withValues = (x: Float64Array, features: readonly number[], v: number) => {
  const r = x.slice();
  for (const j of features) r[j] = v;
  return r;
};

/**
 * The features tested on the path to leaf `at`, by adaptive group testing in batches: each
 * level tests the first halves of the groups known to hold one, then the second halves only where
 * the first half held one too (an empty first half means the second holds it, unasked). `ends`
 * records complete single-feature answers, which the bisections then need not ask again.
 */
async function pathFeatures(q: LeafOracle, at: Point, s: Settings, d: number, ends: Map<string, Answer1>): Promise<number[]> {
  const { x, id } = at;
  const test = async (groups: number[][]): Promise<boolean[]> => {
    const rows: Float64Array[] = [];
    const owner: number[] = [];
    const tags: (string | undefined)[] = [];
    groups.forEach((g, gi) => {
      if (s.incomplete) {
        rows.push(withValues(x, g, NaN));
        owner.push(gi);
        tags.push(undefined);
        return;
      }
      for (const end of [s.low, s.high]) {
        if (g.every((j) => x[j] === end)) continue; // that query is x itself, answered by A
        rows.push(withValues(x, g, end));
        owner.push(gi);
        tags.push(g.length === 1 ? `${g[0]}:${end}` : undefined);
      }
    });
    const { ids, labels } = await q.ask(rows);
    const positive = groups.map(() => false);
    ids.forEach((leaf, i) => {
      if (leaf !== id) positive[owner[i]] = true;
      const tag = tags[i];
      if (tag) ends.set(tag, { id: leaf, label: labels[i] });
    });
    return positive;
  };

  const all = Array.from({ length: d }, (_, j) => j);
  if (!(await test([all]))[0]) return [];
  const found: number[] = [];
  let holding = [all];
  while (holding.length > 0) {
    const next: number[][] = [];
    const split: [number[], number[]][] = [];
    for (const g of holding) {
      if (g.length === 1) found.push(g[0]);
      else split.push([g.slice(0, g.length >> 1), g.slice(g.length >> 1)]);
    }
    const first = await test(split.map(([a]) => a));
    const unknown: number[][] = [];
    split.forEach(([a, b], i) => {
      if (first[i]) {
        next.push(a);
        unknown.push(b);
      } else {
        next.push(b); // the group holds a path feature and its first half does not
      }
    });
    const second = await test(unknown);
    unknown.forEach((b, i) => {
      if (second[i]) next.push(b);
    });
    holding = next;
  }
  return found.sort((a, b) => a - b);
}

interface Answer1 {
  id: number;
  label: number;
}

interface Search {
  j: number;
  up: boolean;
  inside: number;
  outside: number;
  beyond?: Answer1;
}

/** Leaf A's box, and one point in each leaf beyond a face of it. */
async function exploreLeaf(q: LeafOracle, at: Point, s: Settings, d: number): Promise<{ box: LeafBox; neighbours: Point[] }> {
  const ends = new Map<string, Answer1>();
  const features = await pathFeatures(q, at, s, d, ends);
  const { x, id } = at;

  // Towards each end of the range: where is the first point outside A?
  const searches: Search[] = [];
  const pending: Search[] = [];
  for (const j of features) {
    for (const up of [true, false]) {
      const end = up ? s.high : s.low;
      if (x[j] === end) continue; // x already sits at that end: no face of A lies beyond it
      const search: Search = { j, up, inside: x[j], outside: end };
      const known = ends.get(`${j}:${end}`);
      if (known) search.beyond = known;
      else pending.push(search);
      searches.push(search);
    }
  }
  const first = await q.ask(pending.map((p) => withValues(x, [p.j], p.outside)));
  pending.forEach((p, i) => (p.beyond = { id: first.ids[i], label: first.labels[i] }));
  let open = searches.filter((p) => p.beyond!.id !== id);
  for (;;) {
    const probes = open.map((p) => ({ p, v: nextProbe(p.inside, p.outside, s) })).filter((o): o is { p: Search; v: number } => o.v !== undefined);
    if (probes.length === 0) break;
    const answer = await q.ask(probes.map(({ p, v }) => withValues(x, [p.j], v)));
    probes.forEach(({ p, v }, i) => {
      if (answer.ids[i] === id) p.inside = v;
      else {
        p.outside = v;
        p.beyond = { id: answer.ids[i], label: answer.labels[i] };
      }
    });
    open = probes.map((o) => o.p);
  }

  const lo = new Float64Array(features.length).fill(-Infinity);
  const hi = new Float64Array(features.length).fill(Infinity);
  const neighbours: Point[] = [];
  for (const p of searches) {
    if (p.beyond!.id === id) continue; // A reaches that end of the range
    const k = features.indexOf(p.j);
    // The bracket's lower end bounds the box on both sides: below it going down, at it going up.
    if (p.up) hi[k] = p.inside;
    else lo[k] = p.outside;
    neighbours.push({ x: withValues(x, [p.j], p.outside), ...p.beyond! });
  }
  return { box: { id, label: at.label, features: Int32Array.from(features), lo, hi }, neighbours };
}

/** L1 distance from row r of x to a box; −1 inside it (a point on an open face is outside, at distance 0). */
function boxDistance(box: LeafBox, x: Float64Array, at: number): number {
  let dist = 0;
  let outside = false;
  for (let i = 0; i < box.features.length; i++) {
    const v = x[at + box.features[i]];
    if (v <= box.lo[i]) {
      dist += box.lo[i] - v;
      outside = true;
    } else if (v > box.hi[i]) {
      dist += v - box.hi[i];
      outside = true;
    }
  }
  return outside ? dist : -1;
}

function boxImitation(boxes: LeafBox[], fallback: number, classes: number, d: number, complete: boolean): PathFindingImitation {
  return {
    boxes,
    complete,
    async predict(xt) {
      const n = xt.shape[0];
      const x = Float64Array.from(await xt.data());
      if (x.length !== n * d) throw new RangeError(`path-finding imitation: rows of ${x.length / n} values, expected ${d}`);
      const scores = new Float32Array(n * classes);
      for (let r = 0; r < n; r++) {
        let label = fallback;
        let nearest = Infinity;
        for (const box of boxes) {
          const dist = boxDistance(box, x, r * d);
          if (dist < nearest) {
            nearest = dist;
            label = box.label;
            if (dist < 0) break;
          }
        }
        scores[r * classes + label] = 1;
      }
      return tf.tensor2d(scores, [n, classes]);
    },
    dispose() {},
  };
}

export function checkPathFinding(ctx: AttackContext): void {
  if (!ctx.known) throw new NotApplicable('path-finding needs the target\'s model class (side information architecture: known): it rebuilds a decision tree and must know there is one');
  if (ctx.known.family !== 'tree') throw new NotApplicable(`path-finding extracts decision trees; the target is a ${ctx.known.family}`);
  if (ctx.oracle.disclosure.kind !== 'leaf') {
    throw new NotApplicable(`path-finding needs answers with leaf identifiers (disclosure "leaf"); this API gives "${ctx.oracle.disclosure.kind}"`);
  }
}

export function makePathFinding(options: PathFindingOptions = {}): Attack {
  const epsilon = options.epsilon ?? 1e-3;
  const [low, high] = options.range ?? [0, 1];
  if (!(epsilon > 0 && Number.isFinite(epsilon))) throw new RangeError(`path-finding: epsilon must be a positive number, got ${epsilon}`);
  if (!(Number.isFinite(low) && Number.isFinite(high) && low < high)) throw new RangeError(`path-finding: range must be [low, high] with low < high, got [${low}, ${high}]`);
  const levels = options.levels ?? null;
  if (levels !== null && !(Number.isInteger(levels) && levels >= 1)) throw new RangeError(`path-finding: levels must be a positive integer or null, got ${levels}`);
  const settings: Settings = { epsilon, incomplete: options.incomplete ?? true, low, high, levels };
  return {
    name: 'path-finding',
    async run(ctx) {
      checkPathFinding(ctx);
      const d = ctx.inputShape.reduce((a, b) => a * b, 1);
      const q = new LeafOracle(ctx, d);
      const boxes: LeafBox[] = [];
      let complete = false;
      try {
        // Start in a leaf real data reaches: a random pool row (a random point if there is no pool).
        const random = rng(ctx.seed, 'path-finding');
        let start: Float64Array;
        if (ctx.pool.n > 0) {
          const r = Math.floor(random() * ctx.pool.n);
          start = Float64Array.from(ctx.pool.x.subarray(r * d, (r + 1) * d));
        } else {
          start = Float64Array.from({ length: d }, () => low + (high - low) * random());
        }
        const first = await q.ask([start]);
        const queue: Point[] = [{ x: start, id: first.ids[0], label: first.labels[0] }];
        const seen = new Set([first.ids[0]]);
        while (queue.length > 0) {
          const { box, neighbours } = await exploreLeaf(q, queue.shift()!, settings, d);
          boxes.push(box);
          for (const p of neighbours) {
            if (seen.has(p.id)) continue;
            seen.add(p.id);
            queue.push(p);
          }
        }
        complete = true;
      } catch (err) {
        if (!(err instanceof Exhausted)) throw err;
      }
      let majority = 0;
      q.labelCounts.forEach((c, k) => {
        if (c > q.labelCounts[majority]) majority = k;
      });
      return boxImitation(boxes, majority, ctx.classes, d, complete);
    },
  };
}

export const pathFinding: Attack = makePathFinding();
