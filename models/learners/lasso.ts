import { Matrix, solve } from 'ml-matrix';
import { centredGram, linearFitted, ridge } from './ridge.ts';
import { checkRows, type Learner, type Rows64 } from './types.ts';

/**
 * LASSO with an unpenalised intercept:  ‖y − Xw − b‖² + λ‖w‖₁.  params = [w (d values), b].
 *
 * Solved by coordinate descent on the centred Gram matrix, then an exact solve on the active set
 * (see minimiseL1Quadratic), so the parameters are a minimiser to rounding and hyperparameter
 * stealing measures the method, not the solver. λ = 0 is ordinary least squares.
 *
 * Stationarity for stealing: the ℓ₁ norm has no gradient at w_j = 0, only the subgradient
 * interval [−1, 1]. `gradients` reports reg = sign(w) with sign(0) = 0, so zero coefficients
 * (and the intercept) contribute nothing to the least-squares system of stealLambda: λ̂ is fitted
 * on the nonzero coefficients only, where −∂L/∂w_j = λ·sign(w_j) holds exactly. A fit with every
 * coefficient zero leaves λ unidentifiable (only λ ≥ ‖2Xᵀ(y − ȳ)‖∞ is known).
 */
export const lasso: Learner = {
  name: 'lasso',
  task: 'regression',
  fit(rows, y, lambda) {
    checkRows(rows, y);
    if (!(lambda >= 0)) throw new RangeError(`lasso: λ must be ≥ 0 (got ${lambda})`);
    const { d } = rows;
    const { gram, xty, mean, yMean } = centredGram(rows, y);
    // ‖y_c − X_c w‖² + λ‖w‖₁ = 2·(½ wᵀGw − cᵀw + (λ/2)‖w‖₁) + const.
    const q = new Float64Array(d);
    for (let j = 0; j < d; j++) q[j] = -xty[j];
    const w = minimiseL1Quadratic(gram, q, lambda / 2, new Uint8Array(d).fill(1));
    const params = new Float64Array(d + 1);
    params.set(w);
    let b = yMean;
    for (let j = 0; j < d; j++) b -= w[j] * mean[j];
    params[d] = b;
    return linearFitted('lasso', lambda, params);
  },
  gradients(params, rows, y) {
    const { loss } = ridge.gradients!(params, rows, y);
    const reg = new Float64Array(rows.d + 1);
    for (let j = 0; j < rows.d; j++) reg[j] = Math.sign(params[j]);
    return { loss, reg };
  },
};


/**
 * argmin_v  ½ vᵀQv + qᵀv + μ Σ_{j penalised} |v_j|   for symmetric positive semidefinite Q (m × m, row-major).
 *
 * Cyclic coordinate descent with soft-thresholding until no coordinate moves by more than
 * 1e-14 of the largest, then a polish: the smooth problem restricted to the active set
 * (unpenalised and nonzero coordinates, signs fixed) is solved exactly, and the result is kept
 * when it keeps those signs and satisfies the optimality condition |∂_j| ≤ μ on the zeros.
 * Coordinate descent alone converges only linearly; the polish takes the last digits.
 */
export function minimiseL1Quadratic(
  Q: Float64Array,
  q: Float64Array,
  mu: number,
  penalised: Uint8Array,
  start?: Float64Array,
): Float64Array {
  const m = q.length;
  if (Q.length !== m * m || penalised.length !== m) throw new RangeError(`quadratic of ${m} coordinates needs a ${m}×${m} Q and ${m} penalty flags`);
  const v = start ? Float64Array.from(start) : new Float64Array(m);
  // grad = Qv + q, kept current as coordinates move.
  const grad = Float64Array.from(q);
  for (let j = 0; j < m; j++) if (v[j] !== 0) for (let k = 0; k < m; k++) grad[k] += Q[k * m + j] * v[j];
  for (let sweep = 0; sweep < 100_000; sweep++) {
    let moved = 0;
    let size = 0;
    for (let j = 0; j < m; j++) {
      const qjj = Q[j * m + j];
      let next: number;
      if (!(qjj > 0)) {
        // A flat coordinate (a constant feature): zero is optimal whenever any finite value is.
        next = 0;
      } else {
        const z = v[j] - grad[j] / qjj;
        next = penalised[j] ? Math.sign(z) * Math.max(Math.abs(z) - mu / qjj, 0) : z;
      }
      const delta = next - v[j];
      if (delta !== 0) {
        v[j] = next;
        for (let k = 0; k < m; k++) grad[k] += Q[k * m + j] * delta;
        moved = Math.max(moved, Math.abs(delta));
      }
      size = Math.max(size, Math.abs(next));
    }
    if (moved <= 1e-14 * size) break;
  }
  return polishActiveSet(Q, q, mu, penalised, v) ?? v;
}

function polishActiveSet(Q: Float64Array, q: Float64Array, mu: number, penalised: Uint8Array, v: Float64Array): Float64Array | null {
  const m = q.length;
  const active: number[] = [];
  for (let j = 0; j < m; j++) if (!penalised[j] || v[j] !== 0) active.push(j);
  if (active.length === 0) return null;
  const a = new Matrix(active.length, active.length);
  const rhs = new Matrix(active.length, 1);
  for (let r = 0; r < active.length; r++) {
    const j = active[r];
    for (let c = 0; c < active.length; c++) a.set(r, c, Q[j * m + active[c]]);
    rhs.set(r, 0, -q[j] - (penalised[j] ? mu * Math.sign(v[j]) : 0));
  }
  let sol: number[];
  try {
    sol = solve(a, rhs).to1DArray();
  } catch {
    return null;
  }
  const out = new Float64Array(m);
  for (let r = 0; r < active.length; r++) {
    const j = active[r];
    if (!Number.isFinite(sol[r])) return null;
    if (penalised[j] && Math.sign(sol[r]) !== Math.sign(v[j])) return null;
    out[j] = sol[r];
  }
  for (let j = 0; j < m; j++) {
    if (!penalised[j] || out[j] !== 0) continue;
    let g = q[j];
    for (let k = 0; k < m; k++) g += Q[j * m + k] * out[k];
    if (Math.abs(g) > mu * (1 + 1e-9)) return null;
  }
  return out;
}
