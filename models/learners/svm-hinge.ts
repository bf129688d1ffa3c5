import { Matrix, pseudoInverse, solve } from 'ml-matrix';
import { linearFitted } from './ridge.ts';
import { checkLabels, linearRegGradient, margins, penalisedHessian, svmSqHinge } from './svm-sqhinge.ts';
import { checkRows, type Learner, type Rows64 } from './types.ts';

/**
 * Linear SVM with the (regular) hinge loss and an unpenalised intercept:
 *   Σᵢ max(0, 1 − yᵢ(w·xᵢ + b)) + λ‖w‖²,   labels ±1, λ > 0, params = [w (d values), b].
 *
 * Solved by Newton's method on the Huber-smoothed hinge (Chapelle, Neural Computation 2007), its
 * width h shrinking from 0.5 to 1e-10 and the search starting at the squared-hinge solution. From
 * h = 1e-2 on, after each width the rows within h of the margin (at most d + 1, the closest) are
 * taken as the margin rows and the optimality conditions below are solved exactly for that
 * choice; the first choice that satisfies all of them is the exact minimiser up to rounding, so
 * rows on the margin have yᵢ(w·xᵢ + b) = 1 to ~1e-13. Agrees with libsvm (tested).
 *
 * Optimality: 2λw = Σᵢ aᵢ yᵢ xᵢ and Σᵢ aᵢ yᵢ = 0 with aᵢ = 1 below the margin, 0 above it and
 * aᵢ ∈ [0, 1] on it (aᵢ = 2λ·αᵢ for the usual dual variables αᵢ ≤ C = 1/(2λ)).
 */
export const svmHinge: Learner = {
  name: 'svm-hinge',
  task: 'classification',
  fit(rows, y, lambda) {
    checkRows(rows, y);
    checkLabels('svm-hinge', y);
    if (!(lambda > 0) || !Number.isFinite(lambda)) throw new RangeError(`svm-hinge: λ must be a finite number > 0 (got ${lambda})`);
    return linearFitted('svm-hinge', lambda, solveHinge(rows, y, lambda));
  },
  gradients(params, rows, y) {
    return { loss: hingeSubgradient(params, rows, y, 'fit'), reg: linearRegGradient(params, rows.d) };
  },
};

/**
 * Which element of the hinge loss's subdifferential the stealing equations use. The hinge is not
 * differentiable on the margin, and the learned model puts rows exactly there (its free support
 * vectors), where rounding decides the side of 1 each lands on.
 *  - 'naive': the textbook rule −yᵢx̃ᵢ when yᵢ(w·xᵢ + b) < 1, else 0 — a coin toss for margin rows.
 *  - 'fit': rows within `tol` of the margin get the coefficients aᵢ ∈ [0, 1] that, with λ, best
 *    satisfy stationarity (see hingeLambdaSet). Stealing λ from this subgradient gives that λ.
 * x̃ᵢ = [xᵢ, 1]: the last coordinate is the intercept's.
 */
export function hingeSubgradient(params: Float64Array, rows: Rows64, y: Float64Array, rule: 'naive' | 'fit', tol = MARGIN_TOL): Float64Array {
  if (rule === 'fit') return hingeLambdaSet(params, rows, y, tol).loss;
  const { n, d, x } = rows;
  const m = margins(params, rows, y);
  const loss = new Float64Array(d + 1);
  for (let i = 0; i < n; i++) {
    if (m[i] >= 1) continue;
    for (let j = 0; j < d; j++) loss[j] -= y[i] * x[i * d + j];
    loss[d] -= y[i];
  }
  return loss;
}

/** What the stationarity condition says about λ for a hinge SVM's released parameters. */
export interface HingeLambdaSet {
  /** The point estimate: least squares when identifiable, else the middle of [lo, hi]. */
  lambda: number;
  /** Every λ in [lo, hi] is consistent with the parameters (lo = hi when identifiable). */
  lo: number;
  hi: number;
  identifiable: boolean;
  /** Rows within tol of the margin. */
  onMargin: number;
  /** The loss subgradient with the margin rows' coefficients at the estimate. */
  loss: Float64Array;
}

/** Rows whose margin is within this of 1 count as on it (the solver lands them at ~1e-13). */
export const MARGIN_TOL = 1e-8;

/**
 * Stationarity of the hinge SVM: s + Σ_F aₖgₖ + λr = 0 with s = Σ_below(−yᵢx̃ᵢ), gₖ = −yₖx̃ₖ for the
 * margin rows F, aₖ ∈ [0, 1], r = [2w, 0]: d + 1 linear equations in λ and the aₖ.
 *
 * Let P project out the span of the gₖ. If Pr ≠ 0, λ is the least-squares −⟨Ps, Pr⟩/⟨Pr, Pr⟩.
 * If Pr = 0 — typically d + 1 rows on the margin, which pin (w, b) by themselves — then the
 * equations hold for every λ with a(λ) = a₀ + λa₁ inside [0, 1]: the same parameters are optimal
 * for a whole interval of λ, and no method recovers more than that interval (Wang & Gong's
 * estimator cannot either). The estimate is then its midpoint.
 */
export function hingeLambdaSet(params: Float64Array, rows: Rows64, y: Float64Array, tol = MARGIN_TOL): HingeLambdaSet {
  const { n, d, x } = rows;
  const m = margins(params, rows, y);
  const s = new Float64Array(d + 1);
  const onMargin: number[] = [];
  for (let i = 0; i < n; i++) {
    if (Math.abs(1 - m[i]) <= tol) onMargin.push(i);
    else if (m[i] < 1) {
      for (let j = 0; j < d; j++) s[j] -= y[i] * x[i * d + j];
      s[d] -= y[i];
    }
  }
  const r = linearRegGradient(params, d);
  const rr = dot(r, r);
  if (rr === 0) throw new Error('svm-hinge: w = 0, so the regulariser says nothing about λ');
  const k = onMargin.length;
  if (k === 0) {
    const lambda = -dot(s, r) / rr;
    return { lambda, lo: lambda, hi: lambda, identifiable: true, onMargin: 0, loss: s };
  }
  const g = new Matrix(d + 1, k);
  for (let c = 0; c < k; c++) {
    const i = onMargin[c];
    for (let j = 0; j < d; j++) g.set(j, c, -y[i] * x[i * d + j]);
    g.set(d, c, -y[i]);
  }
  const pinv = pseudoInverse(g, 1e-12);
  // a₀ = −G⁺s and a₁ = −G⁺r: the coefficients that best cancel s and r; ps, pr what is left.
  const a0 = pinv.mmul(Matrix.columnVector(Array.from(s, (v) => -v))).to1DArray();
  const a1 = pinv.mmul(Matrix.columnVector(Array.from(r, (v) => -v))).to1DArray();
  const ps = addColumns(s, g, a0);
  const pr = addColumns(r, g, a1);
  let lambda: number;
  let lo: number;
  let hi: number;
  const identifiable = dot(pr, pr) > 1e-16 * rr;
  if (identifiable) {
    lambda = -dot(ps, pr) / dot(pr, pr);
    lo = hi = lambda;
  } else {
    lo = 0;
    hi = Infinity;
    for (let c = 0; c < k; c++) {
      // 0 ≤ a0 + λ·a1 ≤ 1
      if (a1[c] > 0) (lo = Math.max(lo, -a0[c] / a1[c])), (hi = Math.min(hi, (1 - a0[c]) / a1[c]));
      else if (a1[c] < 0) (lo = Math.max(lo, (1 - a0[c]) / a1[c])), (hi = Math.min(hi, -a0[c] / a1[c]));
    }
    lambda = Number.isFinite(hi) ? (lo + hi) / 2 : lo;
  }
  const coef = a0.map((v, c) => Math.min(1, Math.max(0, v + lambda * a1[c])));
  return { lambda, lo, hi, identifiable, onMargin: k, loss: addColumns(s, g, coef) };
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let j = 0; j < a.length; j++) s += a[j] * b[j];
  return s;
}

/** base + G·coef. */
function addColumns(base: Float64Array, g: Matrix, coef: number[]): Float64Array {
  const out = base.slice();
  for (let j = 0; j < out.length; j++) for (let c = 0; c < coef.length; c++) out[j] += g.get(j, c) * coef[c];
  return out;
}

/** Huber-smoothed hinge of the margin m with half-width h: linear below 1 − h, quadratic within h of 1, 0 above. */
function huberObjective(m: Float64Array, params: Float64Array, d: number, lambda: number, h: number): number {
  let f = 0;
  for (let i = 0; i < m.length; i++) {
    if (m[i] < 1 - h) f += 1 - m[i];
    else if (m[i] <= 1 + h) f += (1 + h - m[i]) ** 2 / (4 * h);
  }
  for (let j = 0; j < d; j++) f += lambda * params[j] ** 2;
  return f;
}

// Shrinking widths: the rows in the quadratic zone converge on the rows on the margin.
const HUBER_WIDTHS = [0.5, 0.1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-10];
const MAX_NEWTON = 60;
const KKT_EPS = 1e-9;

function solveHinge(rows: Rows64, y: Float64Array, lambda: number): Float64Array {
  const { d } = rows;
  // The squared-hinge solution is exact, cheap, and close: a better start than 0, where every row
  // is in the linear zone and the first Newton steps have no curvature to go on.
  let z: Float64Array = svmSqHinge.fit(rows, y, lambda).params;
  for (const h of HUBER_WIDTHS) {
    z = huberNewton(rows, y, lambda, h, z);
    if (h > 1e-2) continue;
    const exact = exactFromSets(rows, y, lambda, sides(margins(z, rows, y), h, d + 1));
    if (exact) return exact;
  }
  // The sets never settled: the smoothed solution is within about the last width of the optimum.
  return z;
}

/**
 * 2 below the margin, 1 on it, 0 above: the rows within h of the margin count as on it, but at most
 * `most` of them (the closest), since d + 1 margin rows already pin w and b.
 */
function sides(m: Float64Array, h: number, most: number): Uint8Array {
  const side = Uint8Array.from(m, (v) => (v < 1 ? 2 : 0));
  const zone: number[] = [];
  for (let i = 0; i < m.length; i++) if (Math.abs(1 - m[i]) <= h) zone.push(i);
  zone.sort((a, b) => Math.abs(1 - m[a]) - Math.abs(1 - m[b]));
  for (const i of zone.slice(0, most)) side[i] = 1;
  return side;
}

function huberNewton(rows: Rows64, y: Float64Array, lambda: number, h: number, start: Float64Array): Float64Array {
  const { n, d, x } = rows;
  const p = d + 1;
  let z = start;
  let m = margins(z, rows, y);
  let f = huberObjective(m, z, d, lambda, h);
  for (let iter = 0; iter < MAX_NEWTON; iter++) {
    const g = linearRegGradient(z, d);
    for (let j = 0; j < d; j++) g[j] *= lambda;
    const hess = new Float64Array(p * p);
    const xi = new Float64Array(p);
    xi[d] = 1;
    for (let i = 0; i < n; i++) {
      if (m[i] > 1 + h) continue;
      for (let j = 0; j < d; j++) xi[j] = x[i * d + j];
      const quadratic = m[i] >= 1 - h;
      const dm = quadratic ? -(1 + h - m[i]) / (2 * h) : -1;
      for (let j = 0; j < p; j++) g[j] += dm * y[i] * xi[j];
      if (!quadratic) continue;
      const c = 1 / (2 * h);
      for (let j = 0; j < p; j++) {
        const xj = c * xi[j];
        if (xj === 0) continue;
        for (let k = j; k < p; k++) hess[j * p + k] += xj * xi[k];
      }
    }
    const { hm, trace } = penalisedHessian(hess, p, d, lambda);
    // The intercept's curvature comes only from rows in the quadratic zone; damp it so a step
    // exists when the zone is empty.
    hm.set(d, d, hm.get(d, d) + 1e-8 * Math.max(trace, 1));
    const step = solve(hm, Matrix.columnVector(Array.from(g, (v) => -v))).to1DArray();
    let slope = 0;
    for (let j = 0; j < p; j++) slope += g[j] * step[j];
    if (!(slope < -1e-15 * Math.max(f, 1))) break;
    const q = margins(Float64Array.from(step), rows, y);
    let wp = 0;
    let pp = 0;
    for (let j = 0; j < d; j++) (wp += z[j] * step[j]), (pp += step[j] * step[j]);
    const t = huberLineSearch(m, q, 2 * lambda * wp, 2 * lambda * pp, h);
    if (!(t > 0)) break;
    const next = Float64Array.from(z, (v, j) => v + t * step[j]);
    const nextM = margins(next, rows, y);
    const nextF = huberObjective(nextM, next, d, lambda, h);
    if (!(nextF < f)) break;
    z = next;
    m = nextM;
    f = nextF;
  }
  return z;
}


/**
 * The exact minimiser over t of the smoothed objective along a Newton direction, where the margins
 * move as m + t·q and the regulariser's derivative is r0 + r1·t. The derivative in t is piecewise
 * linear and nondecreasing, so Newton's method on it, kept inside a bracket, ends on its root
 * within a few evaluations, each O(n) — cheaper than backtracking, which recomputes margins.
 */
function huberLineSearch(m: Float64Array, q: Float64Array, r0: number, r1: number, h: number): number {
  const slopeAt = (t: number): [number, number] => {
    let g = r0 + r1 * t;
    let c = r1;
    for (let i = 0; i < m.length; i++) {
      const u = m[i] + t * q[i];
      if (u < 1 - h) g -= q[i];
      else if (u <= 1 + h) {
        g -= ((1 + h - u) / (2 * h)) * q[i];
        c += (q[i] * q[i]) / (2 * h);
      }
    }
    return [g, c];
  };
  let lo = 0;
  let hi = 1;
  let [g, c] = slopeAt(hi);
  for (let k = 0; g < 0 && k < 60; k++) {
    lo = hi;
    hi *= 2;
    [g, c] = slopeAt(hi);
  }
  if (g < 0) return hi;
  let t = hi;
  const scale = Math.abs(slopeAt(0)[0]);
  for (let k = 0; k < 100; k++) {
    if (Math.abs(g) <= 1e-14 * scale) return t;
    if (g > 0) hi = t;
    else lo = t;
    let next = c > 0 ? t - g / c : (lo + hi) / 2;
    if (!(next > lo && next < hi)) next = (lo + hi) / 2;
    if (next === t || hi - lo <= 1e-16 * hi) return t;
    t = next;
    [g, c] = slopeAt(t);
  }
  return t;
}

/**
 * With each row's side fixed (below the margin: a = 1; above: a = 0; on it: a free), solve the
 * optimality conditions exactly. With w = (s_B + Σ_F aⱼyⱼxⱼ)/(2λ), s_B = Σ_B yᵢxᵢ, the unknowns
 * (a_F, b) solve |F| + 1 linear equations:
 *   w·xᵢ + b = yᵢ  (i ∈ F),    Σ_F aⱼyⱼ = −Σ_B yᵢ.
 * The point is the exact minimiser if every a_F lies in [0, 1] and every other row is on its side;
 * otherwise (or with no or too many rows on the margin to pin b and w) null.
 */
function exactFromSets(rows: Rows64, y: Float64Array, lambda: number, side: Uint8Array): Float64Array | null {
  const { n, d, x } = rows;
  const free: number[] = [];
  const sB = new Float64Array(d);
  let yB = 0;
  for (let i = 0; i < n; i++) {
    if (side[i] === 2) {
      yB += y[i];
      for (let j = 0; j < d; j++) sB[j] += y[i] * x[i * d + j];
    } else if (side[i] === 1) free.push(i);
  }
  const k = free.length;
  if (k === 0 || k > d + 1) return null;
  const c = 1 / (2 * lambda);
  const sys = new Matrix(k + 1, k + 1);
  const rhs = new Matrix(k + 1, 1);
  for (let r = 0; r < k; r++) {
    const i = free[r];
    let sx = 0;
    for (let j = 0; j < d; j++) sx += sB[j] * x[i * d + j];
    for (let col = r; col < k; col++) {
      const l = free[col];
      let dot = 0;
      for (let j = 0; j < d; j++) dot += x[i * d + j] * x[l * d + j];
      sys.set(r, col, c * dot * y[l]);
      sys.set(col, r, c * dot * y[i]);
    }
    sys.set(r, k, 1);
    sys.set(k, r, y[i]);
    rhs.set(r, 0, y[i] - c * sx);
  }
  rhs.set(k, 0, -yB);
  let sol: number[];
  try {
    sol = solve(sys, rhs).to1DArray();
  } catch {
    // Singular: margin rows that are not independent (duplicates); try the next width.
    return null;
  }
  for (let r = 0; r < k; r++) if (!(sol[r] >= -KKT_EPS && sol[r] <= 1 + KKT_EPS)) return null;
  const z = new Float64Array(d + 1);
  for (let j = 0; j < d; j++) z[j] = c * sB[j];
  for (let r = 0; r < k; r++) {
    const i = free[r];
    for (let j = 0; j < d; j++) z[j] += c * sol[r] * y[i] * x[i * d + j];
  }
  z[d] = sol[k];
  if (!z.every(Number.isFinite)) return null;
  const m = margins(z, rows, y);
  for (let i = 0; i < n; i++) {
    if ((side[i] === 2 && m[i] > 1 + KKT_EPS) || (side[i] === 0 && m[i] < 1 - KKT_EPS)) return null;
  }
  return z;
}
