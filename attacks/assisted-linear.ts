import { CholeskyDecomposition, EigenvalueDecomposition, Matrix, SingularValueDecomposition } from 'ml-matrix';
import type { Rows64 } from '../models/learners/types.ts';
import { gaussians, rng } from '../models/seed.ts';
import type { TrainingApi } from '../serve/training.ts';

/**
 * Imitating Bob in assisted learning when his learner is (regularised) linear regression on X_B.
 *
 * Stage I with random labels y returns S y, S Bob's smoother. For least squares and ridge S maps
 * into col([1, X_B]), so a handful of answers span that space: after projecting out the constant,
 * an orthonormal basis U (n × p) of col(X_B − mean). Then X_B − mean = U M for an unknown p × p
 * matrix M with MᵀM = n Σ̂_B (Σ̂_B Bob's sample covariance).
 *
 * Side information Σ_B pins M down as far as it can: Alice takes X̂_B = U (n Σ_B)^{1/2}, so that
 * X̂_Bᵀ X̂_B / n = Σ_B. What is left is X̂_B = (X_B − mean) G with G → Σ^{-1/2} O Σ^{1/2} as n
 * grows, O an orthogonal matrix nothing in the answers identifies (it depends on the basis U).
 * Learners whose fits on Bob's own individuals are unchanged by G are imitated by refitting them
 * on X̂_B: least squares exactly (it depends on the span alone, for any n), and ridge when Σ_B is
 * isotropic (then G tends to an orthogonal matrix and only Σ̂_B ≠ Σ_B is left, which vanishes
 * as n grows). See bench/experiments/assisted-linear.ts for what ρ measures.
 */

/** Rows of N(0, Σ): standard normals times the Cholesky factor. */
export function gaussianRows(n: number, sigma: Matrix, random: () => number): Rows64 {
  const d = sigma.rows;
  if (sigma.columns !== d) throw new RangeError(`Σ must be square (got ${sigma.rows} × ${sigma.columns})`);
  const chol = new CholeskyDecomposition(sigma);
  if (!chol.isPositiveDefinite()) throw new RangeError('Σ must be positive definite');
  const l = chol.lowerTriangularMatrix;
  const z = gaussians(n * d, random);
  const x = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k <= j; k++) s += z[i * d + k] * l.get(j, k);
      x[i * d + j] = s;
    }
  }
  return { x, n, d };
}

/** Sample covariance (divided by n) of the rows, as Alice would estimate Σ_B from m draws. */
export function sampleCovariance(rows: Rows64): Matrix {
  const { x, n, d } = rows;
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j] / n;
  const c = new Matrix(d, d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const a = x[i * d + j] - mean[j];
      for (let k = j; k < d; k++) c.set(j, k, c.get(j, k) + (a * (x[i * d + k] - mean[k])) / n);
    }
  }
  for (let j = 0; j < d; j++) for (let k = 0; k < j; k++) c.set(j, k, c.get(k, j));
  return c;
}

/** The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues from rounding clipped to 0). */
export function symmetricSqrt(m: Matrix): Matrix {
  const evd = new EigenvalueDecomposition(m, { assumeSymmetric: true });
  const v = evd.eigenvectorMatrix;
  const root = evd.realEigenvalues.map((e) => Math.sqrt(Math.max(e, 0)));
  return v.clone().mulRowVector(root).mmul(v.transpose());
}

/** Stage I with k₁ random Gaussian label vectors; Bob's fitted values for each. */
export async function probeWithRandomLabels(
  bob: TrainingApi,
  n: number,
  k1: number,
  seed: number,
  lambda?: number,
): Promise<Float64Array[]> {
  if (!Number.isInteger(k1) || k1 < 1) throw new RangeError(`k₁ must be an integer ≥ 1 (got ${k1})`);
  const random = rng(seed, 'assisted-probes');
  const answers: Float64Array[] = [];
  for (let k = 0; k < k1; k++) {
    const y = gaussians(n, random);
    const { fitted } = await bob.fit(lambda === undefined ? { y } : { y, lambda });
    if (!fitted) throw new Error("probing needs Bob's service to release 'fitted' values");
    answers.push(fitted);
  }
  return answers;
}

/**
 * Orthonormal basis (n × dim) of the span of the answers with the constant direction projected
 * out. Refuses when the answers span fewer than dim such directions (too few probes, or a
 * learner whose answers do not fill col(X_B)).
 */
export function centredSpanBasis(answers: readonly Float64Array[], dim: number, tolerance = 1e-9): Matrix {
  if (answers.length < dim) throw new RangeError(`${answers.length} answers cannot span ${dim} directions: send k₁ ≥ p = ${dim} probes`);
  const n = answers[0].length;
  if (n <= dim) throw new RangeError(`${n} individuals leave no room to identify ${dim} feature directions (need n > p)`);
  const z = new Matrix(n, answers.length);
  answers.forEach((a, k) => {
    if (a.length !== n) throw new RangeError(`answer ${k} has ${a.length} values, expected ${n}`);
    const mean = a.reduce((s, v) => s + v, 0) / n;
    for (let i = 0; i < n; i++) z.set(i, k, a[i] - mean);
  });
  const svd = new SingularValueDecomposition(z, { autoTranspose: true });
  const s = svd.diagonal;
  if (!(s[dim - 1] > tolerance * s[0])) {
    throw new Error(`the answers span fewer than ${dim} directions beyond the constant (singular values ${s.map((v) => v.toPrecision(3)).join(', ')})`);
  }
  return svd.leftSingularVectors.subMatrix(0, n - 1, 0, dim - 1);
}

/** X̂_B = U (n Σ)^{1/2}: centred features on Bob's individuals whose covariance is exactly Σ. */
export function featuresFromBasis(basis: Matrix, sigma: Matrix): Rows64 {
  const n = basis.rows;
  const d = basis.columns;
  if (sigma.rows !== d || sigma.columns !== d) throw new RangeError(`Σ is ${sigma.rows} × ${sigma.columns}, the basis has ${d} directions`);
  const xhat = basis.mmul(symmetricSqrt(sigma.clone().mul(n)));
  return { x: Float64Array.from(xhat.to1DArray()), n, d };
}

export interface LinearImitation {
  /** Alice's stand-in for X_B on Bob's individuals (centred). */
  features: Rows64;
  /** Stage I fits spent. */
  fits: number;
}

/** The whole attack: probe, span, and shape the span with the side-information Σ_B. */
export async function imitateLinearAssistant(
  bob: TrainingApi,
  opts: { n: number; sigma: Matrix; k1: number; seed: number; lambda?: number },
): Promise<LinearImitation> {
  const answers = await probeWithRandomLabels(bob, opts.n, opts.k1, opts.seed, opts.lambda);
  const basis = centredSpanBasis(answers, opts.sigma.rows);
  return { features: featuresFromBasis(basis, opts.sigma), fits: answers.length };
}
