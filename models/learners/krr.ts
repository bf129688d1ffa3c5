import { CholeskyDecomposition, Matrix } from 'ml-matrix';
import { checkRows, rowsTimes, type Fitted, type Learner, type Rows64 } from './types.ts';

export interface KernelRidgeOptions {
  /** RBF width in k(x, z) = exp(−γ‖x − z‖²); default 1/d, so the exponent is O(1) for unit-variance features. */
  gamma?: number;
}

/**
 * Kernel ridge regression with an RBF kernel, in the form Wang & Gong steal from:
 *   ‖y − Kα‖² + λ αᵀKα,   minimised by α = (K + λI)⁻¹y  (λ > 0).
 * params = α, one dual weight per training row; the fitted model keeps a copy of the training
 * rows, since f(x) = Σᵢ αᵢ k(x, xᵢ) needs them. No intercept.
 *
 * The solve is a Cholesky factorisation with one step of iterative refinement, which brings the
 * residual of (K + λI)α = y to rounding level even when K + λI is ill-conditioned at small λ.
 */
export function kernelRidge(options: KernelRidgeOptions = {}): Learner {
  const { gamma } = options;
  if (gamma !== undefined && !(gamma > 0 && Number.isFinite(gamma))) throw new RangeError(`krr: γ must be a positive number (got ${gamma})`);
  const widthFor = (rows: Rows64) => gamma ?? 1 / rows.d;
  return {
    name: 'krr',
    task: 'regression',
    fit(rows, y, lambda): Fitted {
      checkRows(rows, y);
      if (!(lambda > 0)) throw new RangeError(`krr: λ must be > 0 (got ${lambda})`);
      const g = widthFor(rows);
      const { n } = rows;
      const k = rbfKernel(rows, rows, g);
      const a = new Matrix(n, n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a.set(i, j, k[i * n + j] + (i === j ? lambda : 0));
      const chol = new CholeskyDecomposition(a);
      if (!chol.isPositiveDefinite()) throw new Error(`krr: K + λI is not positive definite at λ = ${lambda} (raise λ)`);
      const alpha = Float64Array.from(chol.solve(Matrix.columnVector(Array.from(y))).to1DArray());
      const residual = Float64Array.from(y);
      for (let i = 0; i < n; i++) {
        let s = lambda * alpha[i];
        for (let j = 0; j < n; j++) s += k[i * n + j] * alpha[j];
        residual[i] -= s;
      }
      const correction = chol.solve(Matrix.columnVector(Array.from(residual))).to1DArray();
      for (let i = 0; i < n; i++) alpha[i] += correction[i];
      const train: Rows64 = { x: Float64Array.from(rows.x), n, d: rows.d };
      return {
        learner: 'krr',
        lambda,
        params: alpha,
        predict(query) {
          checkRows(query);
          if (query.d !== train.d) throw new RangeError(`krr model has ${train.d} features, rows have ${query.d}`);
          return rowsTimes({ x: rbfKernel(query, train, g), n: query.n, d: n }, alpha);
        },
      };
    },
    gradients(params, rows, y) {
      const { n } = rows;
      if (params.length !== n) throw new RangeError(`krr params hold one α per training row: ${params.length} for ${n} rows`);
      const k = rbfKernel(rows, rows, widthFor(rows));
      const ka = rowsTimes({ x: k, n, d: n }, params);
      const r = y.map((v, i) => v - ka[i]);
      const kr = rowsTimes({ x: k, n, d: n }, r);
      const loss = kr.map((v) => -2 * v);
      const reg = ka.map((v) => 2 * v);
      return { loss, reg };
    },
  };
}

/** The default instance: γ = 1/d. */
export const krr: Learner = kernelRidge();

/** k(aᵢ, bⱼ) = exp(−γ‖aᵢ − bⱼ‖²), a.n × b.n row-major; squared distances summed directly, not via norms, to avoid cancellation. */
export function rbfKernel(a: Rows64, b: Rows64, gamma: number): Float64Array {
  const d = a.d;
  const out = new Float64Array(a.n * b.n);
  for (let i = 0; i < a.n; i++) {
    const ai = i * d;
    for (let j = 0; j < b.n; j++) {
      const bj = j * d;
      let s = 0;
      for (let t = 0; t < d; t++) {
        const diff = a.x[ai + t] - b.x[bj + t];
        s += diff * diff;
      }
      out[i * b.n + j] = Math.exp(-gamma * s);
    }
  }
  return out;
}
