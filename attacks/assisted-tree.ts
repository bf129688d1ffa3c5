import { gaussians, rng } from '../models/seed.ts';
import type { TrainingApi } from '../serve/training.ts';

/**
 * Imitating a regression tree in assisted learning (Xian et al., "Imitation Privacy"). Bob holds
 * one-dimensional private values x_1..x_n and fits a CART regression tree to whatever labels
 * Alice sends (Stage I: he returns the fitted values on his rows). Every leaf of a tree on one
 * feature is an interval of Bob's sorted values, so each group of rows that share a fitted value
 * is a run of consecutive ranks. Alice collects such runs and arranges the rows so that every run
 * is consecutive: with enough runs the arrangement is Bob's order, up to reversal.
 *
 * Query designs:
 * - 'basis' (for a stump, maxDepth 1): labels e_i. The stump's best split minimises 1 − 1/m,
 *   m the size of the side holding i, so it cuts right next to i on the side nearer an end: the
 *   fitted values mark the ranks from that end up to i, with i innermost. Row i's query thus
 *   reveals the cuts on both flanks of i (the side, and the side less i, are both runs). Alice
 *   picks each spike among the rows whose rank is still open, so every query adds at least one of
 *   the n − 1 cuts: at most n − 1 fits, and at least ⌊n/2⌋ (every other rank must be spiked).
 *   The design relies on Bob's tree being a stump: a deeper tree fits e_i exactly and its two
 *   zero leaves share a value, so the "rest" group is no run.
 * - 'partitions' (any depth): Gaussian labels. A depth-D tree cuts its rows into up to 2^D runs
 *   with distinct means; runs of many queries pin the order once every neighbouring pair has been
 *   separated by some cut. Alice may send λ (Protocol II) so that a deep tree does not interpolate.
 *
 * Stage II (handles): each fitted tree predicts a step function of x whose steps sit at its
 * thresholds, the midpoints (x_(k) + x_(k+1))/2 of neighbouring sorted values. Alice, who knows
 * the order of the steps from Stage I, bisects each step to a tolerance and solves the chain of
 * midpoints for the values: one free offset per chain, pinned by the order constraints to an
 * interval whose width is the smallest gap between neighbours (about 1/n² for uniform values).
 */

export type OrderStrategy = 'basis' | 'partitions';

export interface StageIQuery {
  y: Float64Array;
  fitted: Float64Array;
  handle?: string;
}

// ---- arranging runs --------------------------------------------------------------------------

/** 'useless': consistent with the arrangement but adding nothing to it. */
export type Placement = 'placed' | 'deferred' | 'dropped' | 'useless';

/**
 * An ordered partition of the rows placed so far into blocks (rows whose relative order is not yet
 * known), kept consistent with every run added: a simple consecutive-ones arrangement for one
 * overlap component. The placed rows always form one run of Bob's order, because each run joins
 * only when it overlaps them. A run that cannot be placed yet (inside one block, disjoint from the
 * placed rows, or covering them with rows to spare on an unknown side) waits and is retried after
 * each placement; a run that contradicts the arrangement is dropped (it cannot come from a tree
 * whose leaf values are distinct).
 */
export class RunArrangement {
  private order: number[] = [];
  private readonly members = new Map<number, number[]>();
  private readonly blockOf: Int32Array;
  private nextId = 0;
  private pending: Int32Array[] = [];
  dropped = 0;

  constructor(readonly n: number) {
    if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`a run arrangement needs n ≥ 1 rows (got ${n})`);
    this.blockOf = new Int32Array(n).fill(-1);
  }

  /** Adds a run (row indices) and places whatever waiting runs it unlocks. */
  add(run: ArrayLike<number>): void {
    for (let i = 0; i < run.length; i++) {
      if (!(Number.isInteger(run[i]) && run[i] >= 0 && run[i] < this.n)) throw new RangeError(`run: row ${run[i]} is outside 0..${this.n - 1}`);
    }
    // Single rows and the whole set are runs of every order: they say nothing.
    if (run.length < 2 || run.length >= this.n) return;
    this.pending.push(Int32Array.from(run));
    this.settle();
  }

  /**
   * Adds the groups of one fit. Two groups split the rows in two, so each holds one end of the
   * order: on an empty arrangement they start it side by side, which a lone run cannot do.
   */
  addPartition(groups: ArrayLike<number>[]): void {
    if (this.order.length === 0 && groups.length === 2 && groups[0].length + groups[1].length === this.n) {
      this.newBlock(Array.from(groups[0]), 0);
      this.newBlock(Array.from(groups[1]), 1);
      this.settle();
      return;
    }
    for (const g of groups) this.add(g);
  }

  /** Every row is placed and alone in its block. */
  get complete(): boolean {
    return this.order.length === this.n;
  }

  get placed(): number {
    let count = 0;
    for (const id of this.order) count += this.members.get(id)!.length;
    return count;
  }

  /** Rows not yet known to sit alone at their rank: unplaced, or in a block of two or more. */
  unresolvedRows(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.n; i++) if (this.blockOf[i] < 0 || this.members.get(this.blockOf[i])!.length > 1) out.push(i);
    return out;
  }

  /** Rows in arranged order (within a block, and for rows not yet placed, in index order after the rest). */
  flatten(): Int32Array {
    const out: number[] = [];
    for (const id of this.order) out.push(...[...this.members.get(id)!].sort((a, b) => a - b));
    for (let i = 0; i < this.n; i++) if (this.blockOf[i] < 0) out.push(i);
    return Int32Array.from(out);
  }

  private settle(): void {
    for (let progress = true; progress; ) {
      progress = false;
      const waiting: Int32Array[] = [];
      for (const run of this.pending) {
        const result = this.place(run);
        if (result === 'placed') progress = true;
        else if (result === 'deferred') waiting.push(run);
        else if (result === 'dropped') this.dropped++;
      }
      this.pending = waiting;
    }
  }

  private place(run: Int32Array): Placement {
    if (this.order.length === 0) {
      this.newBlock(Array.from(run), 0);
      return 'placed';
    }
    const hits = new Map<number, number>();
    const outside: number[] = [];
    for (const r of run) {
      const b = this.blockOf[r];
      if (b < 0) outside.push(r);
      else hits.set(b, (hits.get(b) ?? 0) + 1);
    }
    if (hits.size === 0) return 'deferred';
    let i = Infinity;
    let j = -Infinity;
    this.order.forEach((id, p) => {
      if (hits.has(id)) {
        i = Math.min(i, p);
        j = Math.max(j, p);
      }
    });
    const full = (p: number) => hits.get(this.order[p]) === this.members.get(this.order[p])!.length;
    for (let p = i + 1; p < j; p++) if (!full(p)) return 'dropped';
    const inRun = new Set(run);
    const k = this.order.length;

    if (outside.length === 0) {
      if (i === j) return full(i) ? 'useless' : 'deferred';
      let changed = false;
      // Split the far block first so position i stays valid for the near one.
      if (!full(j)) changed = this.split(j, inRun, 'inside-first') || changed;
      if (!full(i)) changed = this.split(i, inRun, 'inside-last') || changed;
      return changed ? 'placed' : 'useless';
    }

    let side: 'left' | 'right';
    if (k === 1) {
      // A run covering the lone block may stick out on both sides: wait for a sharper one.
      if (full(0)) return 'deferred';
      // One block: the arrangement is symmetric, so either side is right up to reversal.
      side = 'right';
    } else if (i === 0 && j === k - 1) {
      if (full(i) === full(j)) return full(i) ? 'deferred' : 'dropped';
      side = full(j) ? 'right' : 'left';
    } else if (i === 0) side = 'left';
    else if (j === k - 1) side = 'right';
    else return 'dropped';

    if (side === 'right') {
      if (i < j && !full(j)) return 'dropped';
      if (!full(i)) this.split(i, inRun, 'inside-last');
      this.newBlock(outside, this.order.length);
    } else {
      if (i < j && !full(i)) return 'dropped';
      if (!full(j)) this.split(j, inRun, 'inside-first');
      this.newBlock(outside, 0);
    }
    return 'placed';
  }

  private newBlock(rows: number[], at: number): void {
    const id = this.nextId++;
    this.members.set(id, rows);
    for (const r of rows) this.blockOf[r] = id;
    this.order.splice(at, 0, id);
  }

  /** Splits the block at position p into its rows in and out of the run; false if nothing to split. */
  private split(p: number, inRun: Set<number>, layout: 'inside-first' | 'inside-last'): boolean {
    const id = this.order[p];
    const rows = this.members.get(id)!;
    const inside = rows.filter((r) => inRun.has(r));
    const outside = rows.filter((r) => !inRun.has(r));
    if (inside.length === 0 || outside.length === 0) return false;
    this.order.splice(p, 1);
    this.members.delete(id);
    const [first, second] = layout === 'inside-first' ? [inside, outside] : [outside, inside];
    this.newBlock(second, p);
    this.newBlock(first, p);
    return true;
  }
}

/** Rows grouped by exactly equal fitted value (a tree gives every row of a leaf the same double). */
export function equalValueGroups(fitted: Float64Array): Int32Array[] {
  const groups = new Map<number, number[]>();
  fitted.forEach((v, i) => {
    const g = groups.get(v);
    if (g) g.push(i);
    else groups.set(v, [i]);
  });
  return [...groups.values()].map((g) => Int32Array.from(g));
}

// ---- Stage I: the order ----------------------------------------------------------------------

export interface OrderOptions {
  strategy: OrderStrategy;
  /** Most Stage I fits to spend (default n − 1 for 'basis', which never needs more, 20n for 'partitions'); both stop once the order is complete. */
  budget?: number;
  /** λ to send (Protocol II); leave out for a Protocol I service. */
  lambda?: number;
  seed?: number;
}

export interface OrderRecovery {
  /** Row indices in recovered order (an arbitrary orientation). */
  order: Int32Array;
  /** Every row placed and every neighbouring pair separated: the order is Bob's up to reversal. */
  complete: boolean;
  placed: number;
  queries: StageIQuery[];
}

/** Alice's Stage I attack: label queries only, no Stage II. */
export async function recoverOrder(api: TrainingApi, n: number, options: OrderOptions): Promise<OrderRecovery> {
  if (!(Number.isInteger(n) && n >= 2)) throw new RangeError(`order recovery needs n ≥ 2 rows (got ${n})`);
  if (api.learnerTask !== 'regression') throw new RangeError('order recovery needs a regression service (labels are real numbers)');
  const budget = options.budget ?? (options.strategy === 'basis' ? n - 1 : 20 * n);
  if (!(Number.isInteger(budget) && budget >= 0)) throw new RangeError(`order recovery: budget must be an integer ≥ 0 (got ${budget})`);
  const arrangement = new RunArrangement(n);
  const queries: StageIQuery[] = [];
  const random = rng(options.seed ?? 1, 'assisted-tree-labels');
  for (let q = 0; q < budget && !arrangement.complete; q++) {
    let y: Float64Array;
    let spike = -1;
    if (options.strategy === 'basis') {
      const open = arrangement.unresolvedRows();
      spike = open[Math.floor(random() * open.length)];
      y = new Float64Array(n);
      y[spike] = 1;
    } else if (options.strategy === 'partitions') {
      y = gaussians(n, random);
    } else {
      throw new RangeError(`unknown order strategy "${options.strategy as string}" (basis, partitions)`);
    }
    const response = await api.fit(options.lambda === undefined ? { y } : { y, lambda: options.lambda });
    if (!response.fitted) throw new Error('order recovery needs the service to release fitted values (Stage I)');
    const fitted = response.fitted;
    queries.push({ y, fitted, handle: response.handle });
    // Single rows (a tree with a leaf per row) are runs of every order: add() ignores them.
    const groups = equalValueGroups(fitted);
    arrangement.addPartition(groups);
    if (spike >= 0 && groups.length === 2) {
      // A stump puts the spike at the inner end of its side: its side less the spike, and the
      // rest with the spike, are runs too (the cut on the spike's other flank).
      const side = fitted[spike];
      const inner: number[] = [];
      const outer: number[] = [spike];
      for (let i = 0; i < n; i++) if (i !== spike) (fitted[i] === side ? inner : outer).push(i);
      arrangement.add(inner);
      arrangement.add(outer);
    }
  }
  return { order: arrangement.flatten(), complete: arrangement.complete, placed: arrangement.placed, queries };
}

/**
 * Stage I fits that give every cut of a complete order a tree threshold, for Stage II to locate:
 * for each cut k no fitted tree has yet (a stump's basis query splits on one flank of its spike
 * only), Alice sends the step 1[rank ≤ k], which any tree fits with one split exactly there.
 */
export async function coverCuts(api: TrainingApi, order: Int32Array, queries: StageIQuery[], lambda?: number): Promise<StageIQuery[]> {
  const n = order.length;
  const covered = new Uint8Array(Math.max(n - 1, 0));
  for (const q of queries) for (const c of steps(q.fitted, order).cuts) covered[c] = 1;
  const added: StageIQuery[] = [];
  for (let k = 0; k < n - 1; k++) {
    if (covered[k]) continue;
    const y = new Float64Array(n);
    for (let r = 0; r <= k; r++) y[order[r]] = 1;
    const response = await api.fit(lambda === undefined ? { y } : { y, lambda });
    if (!response.fitted) throw new Error('covering cuts needs the service to release fitted values (Stage I)');
    added.push({ y, fitted: response.fitted, handle: response.handle });
    for (const c of steps(response.fitted, order).cuts) covered[c] = 1;
  }
  return added;
}

/**
 * Kendall's τ between two orders of the same rows (each lists row indices, first to last):
 * (concordant − discordant pairs) / pairs. Order recovery is up to reversal: compare |τ|.
 */
export function kendallTau(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  if (b.length !== n) throw new RangeError(`kendallTau: orders of ${n} and ${b.length} rows`);
  if (n < 2) return 1;
  const rankInB = new Int32Array(n).fill(-1);
  for (let r = 0; r < n; r++) {
    if (!(b[r] >= 0 && b[r] < n) || rankInB[b[r]] >= 0) throw new RangeError(`kendallTau: the second order is not a permutation of 0..${n - 1}`);
    rankInB[b[r]] = r;
  }
  const seq = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    if (!(a[r] >= 0 && a[r] < n)) throw new RangeError(`kendallTau: the first order is not a permutation of 0..${n - 1}`);
    seq[r] = rankInB[a[r]];
  }
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) s += seq[i] < seq[j] ? 1 : -1;
  return s / ((n * (n - 1)) / 2);
}

/** Same order, or the same reversed. */
export function sameUpToReversal(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  const n = a.length;
  if (b.length !== n) return false;
  let forward = true;
  let backward = true;
  for (let r = 0; r < n; r++) {
    if (a[r] !== b[r]) forward = false;
    if (a[r] !== b[n - 1 - r]) backward = false;
  }
  return forward || backward;
}

// ---- Stage II: the values --------------------------------------------------------------------

export interface ValueOptions {
  /** The public range of Bob's feature; every value (hence every threshold) lies inside. */
  range: [number, number];
  /** Bisection stops when a threshold's bracket is this narrow. */
  tolerance: number;
}

export interface ValueRecovery {
  /** Row indices from the smallest value to the largest (the recovered order, oriented by probing). */
  order: Int32Array;
  /** Estimated threshold between ranks k and k + 1 (n − 1 entries; NaN where no fitted tree cut there). */
  thresholds: Float64Array;
  /** Estimated value of each row (by row index). */
  x: Float64Array;
  /** Half the width of the interval the order constraints leave each chain's free offset: the value error, up to the tolerance. */
  bound: number;
  /** Stage II rows spent. */
  probes: number;
}

/**
 * Bisects the steps of Bob's fitted trees (Stage II handles of the Stage I queries) to locate
 * his thresholds, then solves the midpoint chains for his values. `order` must be the complete
 * order recovered in Stage I: it tells Alice, for each handle, which leaf value lies on which
 * side of which step, so one probe per bisection step suffices.
 */
export async function recoverValues(api: TrainingApi, queries: StageIQuery[], order: Int32Array, options: ValueOptions): Promise<ValueRecovery> {
  const n = order.length;
  const [lo, hi] = options.range;
  if (!(lo < hi)) throw new RangeError(`value recovery: range [${lo}, ${hi}] is empty`);
  if (!(options.tolerance > 0)) throw new RangeError(`value recovery: tolerance must be > 0 (got ${options.tolerance})`);
  const usable = queries.filter((q) => q.handle !== undefined);
  if (usable.length === 0) throw new Error('value recovery needs Stage II handles: the service released none');
  let probes = 0;
  const probe = async (handle: string, x: number): Promise<number> => {
    probes++;
    return (await api.predict(handle, { x: Float64Array.of(x), n: 1, d: 1 }))[0];
  };

  let oriented = Int32Array.from(order);
  const stepsOf = (q: StageIQuery) => steps(q.fitted, oriented);
  // Orientation: the first handle whose two ends differ tells which end of the order is low x.
  const witness = usable.find((q) => {
    const s = stepsOf(q).values;
    return s[0] !== s[s.length - 1];
  });
  if (witness) {
    const s = stepsOf(witness).values;
    const atLow = await probe(witness.handle!, lo);
    if (atLow === s[s.length - 1]) oriented = oriented.reverse();
    else if (atLow !== s[0]) throw new Error('value recovery: the fitted tree disagrees with the recovered order at the low end of the range');
  }

  const thresholds = new Float64Array(n - 1).fill(NaN);
  const bracket = (cut: number, a: number, b: number): [number, number] => {
    // Thresholds rise with the cut: located neighbours narrow the search (less a tolerance of slack).
    for (let c = cut - 1; c >= 0; c--) if (!Number.isNaN(thresholds[c])) { a = Math.max(a, thresholds[c] - options.tolerance); break; }
    for (let c = cut + 1; c < n - 1; c++) if (!Number.isNaN(thresholds[c])) { b = Math.min(b, thresholds[c] + options.tolerance); break; }
    return [a, b];
  };
  for (const q of usable) {
    const { values, cuts } = stepsOf(q);
    if (cuts.every((c) => !Number.isNaN(thresholds[c]))) continue;
    // Steps [ia, ib] lie in [a, b]: segment ia at a, ib at b.
    const locate = async (a: number, b: number, ia: number, ib: number): Promise<void> => {
      if (ib <= ia) return;
      let unknown = false;
      for (let s = ia; s < ib; s++) if (Number.isNaN(thresholds[cuts[s]])) unknown = true;
      if (!unknown) return;
      if (ib === ia + 1) {
        [a, b] = bracket(cuts[ia], a, b);
        while (b - a > options.tolerance) {
          const mid = (a + b) / 2;
          if ((await probe(q.handle!, mid)) === values[ia]) a = mid;
          else b = mid;
        }
        thresholds[cuts[ia]] = (a + b) / 2;
        return;
      }
      // Several steps in a bracket this narrow: the handle does not step where the order says.
      if (b - a <= options.tolerance) return;
      const mid = (a + b) / 2;
      const v = await probe(q.handle!, mid);
      const candidates: number[] = [];
      for (let s = ia; s <= ib; s++) if (values[s] === v) candidates.push(s);
      // A repeated leaf value leaves the step unknown; other handles may locate these cuts.
      if (candidates.length !== 1) return;
      await locate(a, mid, ia, candidates[0]);
      await locate(mid, b, candidates[0], ib);
    };
    await locate(lo, hi, 0, values.length - 1);
  }

  const { values: xs, bound } = valuesFromMidpoints(thresholds, lo, hi);
  const x = new Float64Array(n);
  for (let r = 0; r < n; r++) x[oriented[r]] = xs[r];
  return { order: oriented, thresholds, x, bound, probes };
}

/** A fitted vector read along an order: the leaf values left to right and the cuts (rank k: between k and k + 1) between them. */
export function steps(fitted: Float64Array, order: Int32Array): { values: number[]; cuts: number[] } {
  const values = [fitted[order[0]]];
  const cuts: number[] = [];
  for (let r = 1; r < order.length; r++) {
    const v = fitted[order[r]];
    if (v !== values[values.length - 1]) {
      values.push(v);
      cuts.push(r - 1);
    }
  }
  return { values, cuts };
}

/**
 * Sorted values from midpoints t_k = (x_k + x_{k+1})/2 (NaN where unknown). Each run of ranks
 * joined by known midpoints is x_k = A_k ± c with one free offset c; the order (x_k ≤ t_k ≤ x_{k+1}),
 * the range, and the nearest known midpoints beyond the run bound c, and c is taken mid-interval.
 * `bound` is the largest half-width of those intervals.
 */
export function valuesFromMidpoints(t: Float64Array, lo: number, hi: number): { values: Float64Array; bound: number } {
  const n = t.length + 1;
  const values = new Float64Array(n);
  let bound = 0;
  for (let s = 0; s < n; ) {
    let e = s;
    while (e < n - 1 && !Number.isNaN(t[e])) e++;
    // Ranks s..e are chained: x_r = base[r] + sign[r]·c.
    const base = new Float64Array(e - s + 1);
    const sign = new Float64Array(e - s + 1);
    sign[0] = 1;
    for (let r = s; r < e; r++) {
      base[r - s + 1] = 2 * t[r] - base[r - s];
      sign[r - s + 1] = -sign[r - s];
    }
    let cLo = -Infinity;
    let cHi = Infinity;
    const atMost = (r: number, u: number) => {
      if (sign[r - s] > 0) cHi = Math.min(cHi, u - base[r - s]);
      else cLo = Math.max(cLo, base[r - s] - u);
    };
    const atLeast = (r: number, l: number) => {
      if (sign[r - s] > 0) cLo = Math.max(cLo, l - base[r - s]);
      else cHi = Math.min(cHi, base[r - s] - l);
    };
    for (let r = s; r < e; r++) {
      atMost(r, t[r]);
      atLeast(r + 1, t[r]);
    }
    atLeast(s, s >= 2 && !Number.isNaN(t[s - 2]) ? Math.max(lo, t[s - 2]) : lo);
    atMost(e, e + 1 < n - 1 && !Number.isNaN(t[e + 1]) ? Math.min(hi, t[e + 1]) : hi);
    // Rounding in the located midpoints can cross the bounds by a hair: then they pin c.
    const c = (cLo + cHi) / 2;
    bound = Math.max(bound, Math.max(0, cHi - cLo) / 2);
    for (let r = s; r <= e; r++) values[r] = base[r - s] + sign[r - s] * c;
    s = e + 1;
  }
  return { values, bound };
}
