import { CholeskyDecomposition, Matrix } from 'ml-matrix';
import { rng } from '../seed.ts';
import { checkLabels } from './svm-sqhinge.ts';
import { checkRows, type Fitted, type Learner, type LearnerTask, type Rows64 } from './types.ts';

/**
 * A one-hidden-layer tanh network, f(x) = Σₖ vₖ·tanh(Wₖ·x + cₖ) + b, trained full batch in float64:
 *   regression:      Σᵢ (yᵢ − f(xᵢ))²            + λ(‖W‖² + ‖v‖²)
 *   classification:  Σᵢ log(1 + exp(−yᵢf(xᵢ)))   + λ(‖W‖² + ‖v‖²),  labels ±1.
 * Only the weights are penalised, not the biases c and b (as the linear learners leave the
 * intercept out), so the biases' stationarity equations carry no λ.
 * params = [W (hidden × d, row-major), c (hidden), v (hidden), b].
 *
 * The objective is not convex: the fit is a local minimum reached from a seeded start by L-BFGS
 * (up to maxIter iterations), then by damped Newton steps on a finite-difference Hessian, which
 * bring the gradient to rounding (what stealing needs) where L-BFGS crawls, e.g. at small λ.
 * Networks with more than NEWTON_MAX_PARAMS parameters get L-BFGS only.
 */
export interface SmallNetworkOptions {
  hidden?: number;
  task?: LearnerTask;
  name?: string;
  /** L-BFGS iterations at most (default 2,000) before the Newton polish. */
  maxIter?: number;
}

export function smallNetwork(options: SmallNetworkOptions = {}): Learner {
  const hidden = options.hidden ?? 10;
  const task = options.task ?? 'regression';
  const maxIter = options.maxIter ?? 2000;
  if (!Number.isInteger(hidden) || hidden < 1) throw new RangeError(`a small network needs hidden ≥ 1 units (got ${hidden})`);
  if (task !== 'regression' && task !== 'classification') throw new RangeError(`unknown task "${task}"`);
  const name = options.name ?? (task === 'regression' ? 'nn' : 'nn-logistic');
  return {
    name,
    task,
    fit(rows, y, lambda, opts) {
      checkRows(rows, y);
      if (task === 'classification') checkLabels(name, y);
      if (!(lambda >= 0) || !Number.isFinite(lambda)) throw new RangeError(`${name}: λ must be a finite number ≥ 0 (got ${lambda})`);
      const shape = { d: rows.d, hidden, task };
      const objective = (w: Float64Array, grad: Float64Array): number => {
        const { value, loss, reg } = evaluate(shape, w, rows, y);
        for (let j = 0; j < w.length; j++) grad[j] = loss[j] + lambda * reg[j];
        return value + lambda * penalty(shape, w);
      };
      let params = lbfgs(objective, initialParams(shape, y, opts?.seed ?? 1), { maxIter });
      if (params.length <= NEWTON_MAX_PARAMS) params = newtonPolish(objective, params);
      return networkFitted(name, lambda, shape, params);
    },
    gradients(params, rows, y) {
      const shape = { d: rows.d, hidden, task };
      checkLength(shape, params);
      const { loss, reg } = evaluate(shape, params, rows, y);
      return { loss, reg };
    },
  };
}

/** The network's outputs f(x) for params laid out as above (d from the rows). */
export function networkOutputs(params: Float64Array, rows: Rows64, hidden: number): Float64Array {
  const shape: Shape = { d: rows.d, hidden, task: 'regression' };
  checkLength(shape, params);
  return forward(shape, params, rows).f;
}

/** Above this many parameters the Newton polish (p² Hessian, 2p gradients a step) is skipped. */
const NEWTON_MAX_PARAMS = 600;

/** The default: regression, 10 tanh units. */
export const nn: Learner = smallNetwork();

interface Shape {
  d: number;
  hidden: number;
  task: LearnerTask;
}

function paramCount({ d, hidden }: Shape): number {
  return hidden * d + 2 * hidden + 1;
}

function checkLength(shape: Shape, params: Float64Array): void {
  if (params.length !== paramCount(shape)) {
    throw new RangeError(`network with ${shape.hidden} hidden units on ${shape.d} features has ${paramCount(shape)} params, got ${params.length}`);
  }
}

function networkFitted(learner: string, lambda: number, shape: Shape, params: Float64Array): Fitted {
  return {
    learner,
    lambda,
    params,
    predict(rows) {
      if (rows.d !== shape.d) throw new RangeError(`model has ${shape.d} features, rows have ${rows.d}`);
      return forward(shape, params, rows).f;
    },
  };
}

/** Seeded start: W ~ N(0, 1/d), v ~ N(0, 1/hidden), biases 0 (b at the mean label for regression). */
function initialParams(shape: Shape, y: Float64Array, seed: number): Float64Array {
  const { d, hidden, task } = shape;
  const random = rng(seed, 'nn-init');
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const w = new Float64Array(paramCount(shape));
  for (let j = 0; j < hidden * d; j++) w[j] = normal() / Math.sqrt(d);
  const vAt = hidden * d + hidden;
  for (let k = 0; k < hidden; k++) w[vAt + k] = normal() / Math.sqrt(hidden);
  if (task === 'regression') {
    let mean = 0;
    for (let i = 0; i < y.length; i++) mean += y[i];
    w[w.length - 1] = mean / y.length;
  }
  return w;
}

function penalty({ d, hidden }: Shape, w: Float64Array): number {
  let s = 0;
  for (let j = 0; j < hidden * d; j++) s += w[j] * w[j];
  const vAt = hidden * d + hidden;
  for (let k = 0; k < hidden; k++) s += w[vAt + k] ** 2;
  return s;
}

function forward({ d, hidden }: Shape, w: Float64Array, rows: Rows64): { f: Float64Array; act: Float64Array } {
  const { n, x } = rows;
  const cAt = hidden * d;
  const vAt = cAt + hidden;
  const act = new Float64Array(n * hidden);
  const f = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let out = w[vAt + hidden];
    for (let k = 0; k < hidden; k++) {
      let s = w[cAt + k];
      for (let j = 0; j < d; j++) s += w[k * d + j] * x[i * d + j];
      const a = Math.tanh(s);
      act[i * hidden + k] = a;
      out += w[vAt + k] * a;
    }
    f[i] = out;
  }
  return { f, act };
}

/** The summed loss, its gradient by backpropagation, and the regulariser's gradient. */
function evaluate(shape: Shape, w: Float64Array, rows: Rows64, y: Float64Array): { value: number; loss: Float64Array; reg: Float64Array } {
  const { d, hidden, task } = shape;
  const { n, x } = rows;
  const cAt = hidden * d;
  const vAt = cAt + hidden;
  const { f, act } = forward(shape, w, rows);
  const loss = new Float64Array(w.length);
  let value = 0;
  for (let i = 0; i < n; i++) {
    // r = ∂loss/∂f for this row.
    let r: number;
    if (task === 'regression') {
      const e = y[i] - f[i];
      value += e * e;
      r = -2 * e;
    } else {
      const z = -y[i] * f[i];
      // log(1 + e^z) and σ(z), both without overflow.
      value += z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
      r = -y[i] * (z > 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));
    }
    loss[vAt + hidden] += r;
    for (let k = 0; k < hidden; k++) {
      const a = act[i * hidden + k];
      loss[vAt + k] += r * a;
      const back = r * w[vAt + k] * (1 - a * a);
      loss[cAt + k] += back;
      for (let j = 0; j < d; j++) loss[k * d + j] += back * x[i * d + j];
    }
  }
  const reg = new Float64Array(w.length);
  for (let j = 0; j < hidden * d; j++) reg[j] = 2 * w[j];
  for (let k = 0; k < hidden; k++) reg[vAt + k] = 2 * w[vAt + k];
  return { value, loss, reg };
}

type Objective = (w: Float64Array, grad: Float64Array) => number;

function norm(a: Float64Array): number {
  let s = 0;
  for (let j = 0; j < a.length; j++) s += a[j] * a[j];
  return Math.sqrt(s);
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let j = 0; j < a.length; j++) s += a[j] * b[j];
  return s;
}

/**
 * Limited-memory BFGS (Nocedal & Wright, Algorithm 7.4) with backtracking from the unit step.
 * Near the optimum the objective's changes fall below its rounding, so there a step that lowers
 * the gradient norm without raising the objective past rounding is accepted too; without that,
 * the gradient would stall orders of magnitude above what float64 allows.
 */
export function lbfgs(objective: Objective, start: Float64Array, opts: { maxIter: number; memory?: number; gtol?: number }): Float64Array {
  const memory = opts.memory ?? 10;
  const p = start.length;
  let w: Float64Array = start.slice();
  let g = new Float64Array(p);
  let f = objective(w, g);
  const gtol = (opts.gtol ?? 1e-10) * Math.max(1, norm(g));
  const ss: Float64Array[] = [];
  const ys: Float64Array[] = [];
  const rhos: number[] = [];
  const alpha = new Float64Array(memory);
  let stalled = 0;
  for (let iter = 0; iter < opts.maxIter; iter++) {
    const gnorm = norm(g);
    if (!(gnorm > gtol)) break;
    // Two-loop recursion: dir = −H·g.
    const dir = Float64Array.from(g, (v) => -v);
    for (let k = ss.length - 1; k >= 0; k--) {
      alpha[k] = rhos[k] * dot(ss[k], dir);
      for (let j = 0; j < p; j++) dir[j] -= alpha[k] * ys[k][j];
    }
    const gamma = ss.length > 0 ? dot(ss[ss.length - 1], ys[ys.length - 1]) / dot(ys[ys.length - 1], ys[ys.length - 1]) : 1 / Math.max(gnorm, 1);
    for (let j = 0; j < p; j++) dir[j] *= gamma;
    for (let k = 0; k < ss.length; k++) {
      const beta = rhos[k] * dot(ys[k], dir);
      for (let j = 0; j < p; j++) dir[j] += (alpha[k] - beta) * ss[k][j];
    }
    let slope = dot(g, dir);
    if (!(slope < 0)) {
      // Not a descent direction (lost curvature): restart from steepest descent.
      ss.length = ys.length = rhos.length = 0;
      for (let j = 0; j < p; j++) dir[j] = -g[j] / Math.max(gnorm, 1);
      slope = dot(g, dir);
    }
    let t = 1;
    let next: Float64Array | null = null;
    const nextG = new Float64Array(p);
    let nextF = f;
    for (let tries = 0; tries < 50; tries++) {
      const cand = Float64Array.from(w, (v, j) => v + t * dir[j]);
      const fc = objective(cand, nextG);
      const armijo = fc <= f + 1e-4 * t * slope;
      const roundingFlat = fc <= f + 1e-14 * Math.abs(f) && norm(nextG) < gnorm;
      if (armijo || roundingFlat) {
        next = cand;
        nextF = fc;
        break;
      }
      t /= 2;
    }
    if (!next) break;
    // At the rounding floor the search only creeps: leave the rest to the Newton polish.
    stalled = t < 1e-3 && f - nextF <= 1e-14 * Math.abs(f) ? stalled + 1 : 0;
    if (stalled >= 3) break;
    const s = Float64Array.from(next, (v, j) => v - w[j]);
    const yv = Float64Array.from(nextG, (v, j) => v - g[j]);
    const sy = dot(s, yv);
    if (sy > 1e-12 * norm(s) * norm(yv)) {
      if (ss.length === memory) (ss.shift(), ys.shift(), rhos.shift());
      ss.push(s);
      ys.push(yv);
      rhos.push(1 / sy);
    }
    w = next;
    g = nextG;
    f = nextF;
  }
  return w;
}

/**
 * Damped Newton steps (Levenberg–Marquardt style) with the Hessian from central differences of
 * the exact gradient. Where L-BFGS crawls — small λ, a nearly flat valley — these converge in a
 * few steps; at a minimum with a positive definite Hessian each undamped step cuts the gradient
 * by about the Hessian's relative error (~1e-7), so two or three bring it to rounding. A step is
 * taken if it lowers the objective, or, at the objective's rounding floor, the gradient norm.
 */
function newtonPolish(objective: Objective, start: Float64Array, steps = 200): Float64Array {
  const p = start.length;
  let w: Float64Array = start.slice();
  let g = new Float64Array(p);
  let f = objective(w, g);
  let damping = 0;
  for (let s = 0; s < steps; s++) {
    const hess = new Float64Array(p * p);
    const gp = new Float64Array(p);
    const gm = new Float64Array(p);
    for (let j = 0; j < p; j++) {
      const e = 1e-5 * Math.max(1, Math.abs(w[j]));
      const wp = w.slice();
      const wm = w.slice();
      wp[j] += e;
      wm[j] -= e;
      objective(wp, gp);
      objective(wm, gm);
      for (let k = 0; k < p; k++) hess[k * p + j] = (gp[k] - gm[k]) / (2 * e);
    }
    let scale = 0;
    for (let j = 0; j < p; j++) {
      scale = Math.max(scale, Math.abs(hess[j * p + j]));
      for (let k = j + 1; k < p; k++) hess[j * p + k] = hess[k * p + j] = (hess[j * p + k] + hess[k * p + j]) / 2;
    }
    let taken = false;
    for (let tries = 0; tries < 14 && !taken; tries++) {
      const damped = hess.slice();
      for (let j = 0; j < p; j++) damped[j * p + j] += damping;
      const step = choleskySolve(damped, g, p);
      if (step) {
        const cand = Float64Array.from(w, (v, j) => v - step[j]);
        const gc = new Float64Array(p);
        const fc = objective(cand, gc);
        if (fc < f || (fc <= f + 1e-14 * Math.abs(f) && norm(gc) < norm(g))) {
          const progress = f - fc > 1e-14 * Math.abs(f) || norm(gc) < 0.5 * norm(g);
          w = cand;
          g = gc;
          f = fc;
          taken = true;
          damping = damping < 1e-10 * scale ? 0 : damping / 10;
          if (!progress) return w;
          break;
        }
      }
      damping = damping === 0 ? 1e-8 * scale : damping * 10;
    }
    if (!taken) break;
  }
  return w;
}

/** Solves H·x = b for symmetric positive definite H; null if H is not. */
function choleskySolve(h: Float64Array, b: Float64Array, p: number): Float64Array | null {
  const m = new Matrix(p, p);
  for (let j = 0; j < p; j++) for (let k = 0; k < p; k++) m.set(j, k, h[j * p + k]);
  const chol = new CholeskyDecomposition(m);
  if (!chol.isPositiveDefinite()) return null;
  return Float64Array.from(chol.solve(Matrix.columnVector(Array.from(b))).to1DArray());
}
