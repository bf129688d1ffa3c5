import { Matrix, solve } from 'ml-matrix';
import { linearFitted, linearPredict } from './ridge.ts';
import { checkRows, type Learner, type Rows64 } from './types.ts';

/**
 * Linear SVM with the squared hinge loss and an unpenalised intercept:
 *   Σᵢ max(0, 1 − yᵢ(w·xᵢ + b))² + λ‖w‖²,   labels ±1, params = [w (d values), b].
 *
 * The objective is piecewise quadratic, so the generalised Newton method (Keerthi & DeCoste,
 * JMLR 2005) reaches the exact minimiser in finitely many steps: once the set of rows inside
 * the margin stops changing, one full Newton step lands on the optimum up to rounding.
 */
export const svmSqHinge: Learner = {
  name: 'svm-sqhinge',
  task: 'classification',
  fit(rows, y, lambda) {
    checkRows(rows, y);
    checkLabels('svm-sqhinge', y);
    if (!(lambda >= 0) || !Number.isFinite(lambda)) throw new RangeError(`svm-sqhinge: λ must be a finite number ≥ 0 (got ${lambda})`);
    return linearFitted('svm-sqhinge', lambda, solveSqHinge(rows, y, lambda));
  },
  gradients(params, rows, y) {
    const { n, d, x } = rows;
    const m = margins(params, rows, y);
    const loss = new Float64Array(d + 1);
    for (let i = 0; i < n; i++) {
      const slack = 1 - m[i];
      if (slack <= 0) continue;
      const c = -2 * slack * y[i];
      for (let j = 0; j < d; j++) loss[j] += c * x[i * d + j];
      loss[d] += c;
    }
    return { loss, reg: linearRegGradient(params, d) };
  },
};

/** Labels of a binary service are exactly ±1. */
export function checkLabels(learner: string, y: Float64Array): void {
  for (let i = 0; i < y.length; i++) {
    if (y[i] !== 1 && y[i] !== -1) throw new RangeError(`${learner}: label ${i} is ${y[i]}; labels must be ±1`);
  }
}

/** yᵢ(w·xᵢ + b) for params = [w, b]. */
export function margins(params: Float64Array, rows: Rows64, y: Float64Array): Float64Array {
  const out = linearPredict(params, rows);
  for (let i = 0; i < out.length; i++) out[i] *= y[i];
  return out;
}

/** ∂‖w‖²/∂[w, b] = [2w, 0]: the intercept is not penalised. */
export function linearRegGradient(params: Float64Array, d: number): Float64Array {
  const reg = new Float64Array(d + 1);
  for (let j = 0; j < d; j++) reg[j] = 2 * params[j];
  return reg;
}

function objective(m: Float64Array, params: Float64Array, d: number, lambda: number): number {
  let f = 0;
  for (let i = 0; i < m.length; i++) if (m[i] < 1) f += (1 - m[i]) ** 2;
  for (let j = 0; j < d; j++) f += lambda * params[j] ** 2;
  return f;
}

function sameSet(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const MAX_NEWTON = 200;

function solveSqHinge(rows: Rows64, y: Float64Array, lambda: number): Float64Array {
  const { n, d, x } = rows;
  const p = d + 1;
  let z = new Float64Array(p);
  let m = margins(z, rows, y);
  let f = objective(m, z, d, lambda);
  let exactSteps = 0;
  for (let iter = 0; iter < MAX_NEWTON; iter++) {
    const active = new Uint8Array(n);
    for (let i = 0; i < n; i++) active[i] = m[i] < 1 ? 1 : 0;
    // Gradient and generalised Hessian of the objective over the rows inside the margin.
    const g = linearRegGradient(z, d);
    for (let j = 0; j < d; j++) g[j] *= lambda;
    const h = new Float64Array(p * p);
    const xi = new Float64Array(p);
    xi[d] = 1;
    for (let i = 0; i < n; i++) {
      if (!active[i]) continue;
      for (let j = 0; j < d; j++) xi[j] = x[i * d + j];
      const c = -2 * (1 - m[i]) * y[i];
      for (let j = 0; j < p; j++) {
        g[j] += c * xi[j];
        const xj = 2 * xi[j];
        if (xj === 0) continue;
        for (let k = j; k < p; k++) h[j * p + k] += xj * xi[k];
      }
    }
    const { hm, trace } = penalisedHessian(h, p, d, lambda);
    let gnorm = 0;
    for (let j = 0; j < p; j++) gnorm = Math.max(gnorm, Math.abs(g[j]));
    if (gnorm === 0) break;
    // With no row inside the margin (or λ = 0) the Hessian can be singular; a damping far below
    // its scale keeps the step defined without moving the minimiser.
    const damp = 1e-13 * Math.max(trace, 1);
    for (let j = 0; j < p; j++) hm.set(j, j, hm.get(j, j) + damp);
    const step = solve(hm, Matrix.columnVector(Array.from(g, (v) => -v))).to1DArray();
    let slope = 0;
    for (let j = 0; j < p; j++) slope += g[j] * step[j];
    if (!(slope < 0)) break;
    // Armijo backtracking from the full step: near the optimum the full step is exact.
    let t = 1;
    let next = z;
    let nextM = m;
    let nextF = f;
    for (let tries = 0; tries < 60; tries++) {
      next = Float64Array.from(z, (v, j) => v + t * step[j]);
      nextM = margins(next, rows, y);
      nextF = objective(nextM, next, d, lambda);
      if (nextF <= f + 1e-4 * t * slope) break;
      // Rounding: once the decrease promised is below the objective's precision, take the full step.
      if (-slope <= 1e-14 * Math.max(f, 1)) break;
      t /= 2;
    }
    z = next;
    m = nextM;
    f = nextF;
    const nextActive = new Uint8Array(n);
    for (let i = 0; i < n; i++) nextActive[i] = m[i] < 1 ? 1 : 0;
    // A full step that kept the active set solved the right quadratic: the point is the minimiser.
    // One more step then only polishes rounding.
    if (t === 1 && sameSet(active, nextActive)) {
      exactSteps++;
      if (exactSteps >= 2) break;
    }
  }
  return z;
}

/**
 * The Newton matrix of a linear SVM objective: the loss Hessian, accumulated in its upper triangle
 * (p × p, row-major, p = d + 1 with the intercept last), made symmetric, plus λ‖w‖²'s 2λ on the
 * weights' diagonal (not the intercept's). Also its trace, which scales the damping callers add.
 */
export function penalisedHessian(upper: Float64Array, p: number, d: number, lambda: number): { hm: Matrix; trace: number } {
  const hm = new Matrix(p, p);
  let trace = 0;
  for (let j = 0; j < p; j++) {
    for (let k = j; k < p; k++) {
      hm.set(j, k, upper[j * p + k]);
      hm.set(k, j, upper[j * p + k]);
    }
    if (j < d) hm.set(j, j, hm.get(j, j) + 2 * lambda);
    trace += hm.get(j, j);
  }
  return { hm, trace };
}
