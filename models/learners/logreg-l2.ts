import { Matrix, solve } from 'ml-matrix';
import { linearFitted, linearPredict } from './ridge.ts';
import { checkRows, type Learner, type Rows64 } from './types.ts';

/**
 * L2-regularised logistic regression with an unpenalised intercept, labels ±1:
 *   Σᵢ log(1 + exp(−yᵢ(w·xᵢ + b))) + λ‖w‖².   params = [w (d values), b].
 *
 * Damped Newton on the full (d+1)-dimensional problem until the step is at rounding level, so
 * the gradient at the returned parameters is at its floating-point floor.
 */
export const logregL2: Learner = {
  name: 'logreg-l2',
  task: 'classification',
  fit(rows, y, lambda) {
    checkLogistic('logreg-l2', rows, y, lambda);
    const { d } = rows;
    const m = d + 1;
    const objective = (theta: Float64Array) => logisticLoss(theta, rows, y) + lambda * squaredNorm(theta, d);
    let theta = startAtInterceptOnly(rows, y);
    for (let it = 0; it < 100; it++) {
      const { grad, hess: withLoss } = logisticDerivatives(theta, rows, y, true);
      const hess = withLoss!;
      for (let j = 0; j < d; j++) {
        grad[j] += 2 * lambda * theta[j];
        hess[j * m + j] += 2 * lambda;
      }
      const step = newtonStep(hess, grad);
      let decrement = 0;
      for (let j = 0; j < m; j++) decrement -= grad[j] * step[j];
      const next = lineSearch(objective, theta, step, -decrement);
      const moved = maxAbsDiff(next, theta);
      theta = next;
      if (moved <= 1e-14 * Math.max(1, maxAbs(theta))) return linearFitted('logreg-l2', lambda, theta);
    }
    throw new Error('logreg-l2: Newton did not converge in 100 steps (are the classes separable with λ ≈ 0?)');
  },
  gradients(params, rows, y) {
    const { grad } = logisticDerivatives(params, rows, y, false);
    const reg = new Float64Array(rows.d + 1);
    for (let j = 0; j < rows.d; j++) reg[j] = 2 * params[j];
    return { loss: grad, reg };
  },
};

export function checkLogistic(name: string, rows: Rows64, y: Float64Array, lambda: number): void {
  checkRows(rows, y);
  if (!(lambda >= 0)) throw new RangeError(`${name}: λ must be ≥ 0 (got ${lambda})`);
  let pos = 0;
  for (let i = 0; i < y.length; i++) {
    if (y[i] === 1) pos++;
    else if (y[i] !== -1) throw new RangeError(`${name}: labels must be ±1 (row ${i} has ${y[i]})`);
  }
  if (pos === 0 || pos === y.length) throw new RangeError(`${name}: both classes must be present`);
}

/** log(1 + eˣ) without overflow. */
export function softplus(t: number): number {
  return t > 0 ? t + Math.log1p(Math.exp(-t)) : Math.log1p(Math.exp(t));
}

export function sigmoid(t: number): number {
  if (t >= 0) return 1 / (1 + Math.exp(-t));
  const e = Math.exp(t);
  return e / (1 + e);
}

/** Σᵢ log(1 + exp(−yᵢ(w·xᵢ + b))). */
export function logisticLoss(params: Float64Array, rows: Rows64, y: Float64Array): number {
  const margin = linearPredict(params, rows);
  let s = 0;
  for (let i = 0; i < rows.n; i++) s += softplus(-y[i] * margin[i]);
  return s;
}

/**
 * Gradient of the summed logistic loss w.r.t. [w, b], and with `withHessian` its Hessian
 * Σᵢ σᵢ(1 − σᵢ) x̃ᵢx̃ᵢᵀ, x̃ = [x, 1] ((d+1) × (d+1), row-major).
 */
export function logisticDerivatives(
  params: Float64Array,
  rows: Rows64,
  y: Float64Array,
  withHessian: boolean,
): { grad: Float64Array; hess: Float64Array | null } {
  const { n, d, x } = rows;
  const m = d + 1;
  const margin = linearPredict(params, rows);
  const grad = new Float64Array(m);
  const hess = withHessian ? new Float64Array(m * m) : null;
  for (let i = 0; i < n; i++) {
    const z = y[i] * margin[i];
    const g = -y[i] * sigmoid(-z);
    const off = i * d;
    for (let j = 0; j < d; j++) grad[j] += g * x[off + j];
    grad[d] += g;
    if (hess) {
      const h = sigmoid(z) * sigmoid(-z);
      if (h === 0) continue;
      for (let j = 0; j < d; j++) {
        const hj = h * x[off + j];
        for (let k = j; k < d; k++) hess[j * m + k] += hj * x[off + k];
        hess[j * m + d] += hj;
      }
      hess[d * m + d] += h;
    }
  }
  if (hess) for (let j = 0; j < m; j++) for (let k = 0; k < j; k++) hess[j * m + k] = hess[k * m + j];
  return { grad, hess };
}

/** w = 0 and the intercept that fits the class balance: the minimiser when every weight is zero. */
export function startAtInterceptOnly(rows: Rows64, y: Float64Array): Float64Array {
  let pos = 0;
  for (let i = 0; i < y.length; i++) if (y[i] > 0) pos++;
  const theta = new Float64Array(rows.d + 1);
  theta[rows.d] = Math.log(pos / (y.length - pos));
  return theta;
}

function newtonStep(hess: Float64Array, grad: Float64Array): Float64Array {
  const m = grad.length;
  const h = new Matrix(m, m);
  for (let j = 0; j < m; j++) for (let k = 0; k < m; k++) h.set(j, k, hess[j * m + k]);
  const step = solve(h, Matrix.columnVector(Array.from(grad, (g) => -g))).to1DArray();
  if (!step.every(Number.isFinite)) throw new Error('logistic Newton step is not finite (singular Hessian: constant or duplicate features with λ = 0?)');
  return Float64Array.from(step);
}

/**
 * Backtracking (Armijo) along `step` from theta, where `slope` ≤ 0 is the directional derivative.
 * Once the expected decrease is below rounding, the objective cannot tell steps apart, and the
 * full step is taken: there Newton is in its quadratic phase.
 */
export function lineSearch(
  objective: (theta: Float64Array) => number,
  theta: Float64Array,
  step: Float64Array,
  slope: number,
): Float64Array {
  const f0 = objective(theta);
  const at = (t: number) => theta.map((v, j) => v + t * step[j]);
  if (-slope <= 1e-12 * Math.max(1, Math.abs(f0))) return at(1);
  for (let t = 1; t > 1e-12; t /= 2) {
    const next = at(t);
    if (objective(next) <= f0 + 1e-4 * t * slope) return next;
  }
  return at(0);
}

function squaredNorm(theta: Float64Array, d: number): number {
  let s = 0;
  for (let j = 0; j < d; j++) s += theta[j] * theta[j];
  return s;
}

export function maxAbs(a: Float64Array): number {
  let s = 0;
  for (const v of a) s = Math.max(s, Math.abs(v));
  return s;
}

export function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let j = 0; j < a.length; j++) s = Math.max(s, Math.abs(a[j] - b[j]));
  return s;
}
