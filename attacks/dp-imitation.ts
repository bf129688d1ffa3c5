import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { centredGram } from '../models/learners/ridge.ts';
import { checkRows, type Rows64 } from '../models/learners/types.ts';

/**
 * Differential privacy is not imitation privacy (Xian et al., "Imitation Privacy").
 *
 * Bob releases his features under local DP: X̃ = X + Laplace(b) noise per entry, b = Δ/ε, which
 * makes each released entry ε-LDP when the feature ranges over an interval of length Δ (a whole
 * row of p entries is pε-LDP by composition). The noise is known, so Alice — who holds the labels
 * y — can undo its bias in least squares (errors in variables):
 *
 *   β̂ = (X̃cᵀX̃c − (1 − 1/n)·Σᵢ vᵢ·I)⁻¹ X̃cᵀ yc,    vᵢ = 2b² (Laplace variance) for a noisy row, 0 for an exact one,
 *
 * with X̃c, yc centred. β̂ → β as n grows at any fixed ε, so Alice's x ↦ x·β̂ + b̂ imitates Bob's
 * least-squares predictor with ρ → 0: a release can be ε-LDP and still give the model away.
 */

/** Laplace(0, scale) draws by inversion of a seeded uniform generator. */
export function laplaceNoise(count: number, scale: number, random: () => number): Float64Array {
  if (!(scale >= 0 && Number.isFinite(scale))) throw new RangeError(`Laplace scale must be finite and ≥ 0 (got ${scale})`);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const u = random() - 0.5;
    // 1 − 2|u| ∈ (0, 1], so the logarithm is finite.
    out[i] = -scale * Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
  }
  return out;
}

export interface LdpRelease {
  rows: Rows64;
  /** Laplace scale b = Δ/ε per entry. */
  scale: number;
  /** The variance of each entry's noise, 2b². */
  noiseVariance: number;
}

/** X + Laplace(Δ/ε) on every entry: ε-LDP per entry for features whose range has length Δ. */
export function laplaceRelease(rows: Rows64, epsilon: number, sensitivity: number, random: () => number): LdpRelease {
  checkRows(rows);
  if (!(epsilon > 0 && Number.isFinite(epsilon))) throw new RangeError(`ε must be a finite number > 0 (got ${epsilon})`);
  if (!(sensitivity > 0 && Number.isFinite(sensitivity))) throw new RangeError(`sensitivity Δ must be a finite number > 0 (got ${sensitivity})`);
  const scale = sensitivity / epsilon;
  const noise = laplaceNoise(rows.x.length, scale, random);
  const x = new Float64Array(rows.x.length);
  for (let i = 0; i < x.length; i++) x[i] = rows.x[i] + noise[i];
  return { rows: { x, n: rows.n, d: rows.d }, scale, noiseVariance: 2 * scale * scale };
}

/**
 * Bias-corrected least squares on rows with known additive Laplace noise, independent across
 * entries, of variance rowNoiseVariance[i] in every feature of row i. Returns params = [w, b] (the
 * ridge layout, so linearPredict applies).
 *
 * The correction is itself noisy: Σᵢ eᵢⱼ² has standard deviation √(5·Σᵢ vᵢ²) for Laplace noise
 * (E e⁴ = 6v², so Var e² = 5v²). Eigenvalues of the corrected Gram matrix below that level cannot
 * be told from 0 (and may be negative when n is small next to the noise), so they are raised to
 * it; the estimate then shrinks along those directions instead of blowing up.
 */
export function correctedLeastSquares(rows: Rows64, y: Float64Array, rowNoiseVariance: Float64Array): Float64Array {
  checkRows(rows, y);
  const { n, d } = rows;
  if (rowNoiseVariance.length !== n) throw new RangeError(`${rowNoiseVariance.length} noise variances for ${n} rows`);
  const centred = centredGram(rows, y);
  const { xty, mean, yMean } = centred;
  const gram = new Matrix(d, d);
  for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) gram.set(j, k, centred.gram[j * d + k]);
  let noise = 0;
  let noiseSquares = 0;
  for (let i = 0; i < n; i++) {
    noise += rowNoiseVariance[i];
    noiseSquares += rowNoiseVariance[i] ** 2;
  }
  noise *= 1 - 1 / n;
  for (let j = 0; j < d; j++) gram.set(j, j, gram.get(j, j) - noise);
  const evd = new EigenvalueDecomposition(gram, { assumeSymmetric: true });
  // Without noise the floor is 0 and this is plain least squares (a singular Gram matrix still is).
  const lowest = Math.max(Math.sqrt(5 * noiseSquares), Number.MIN_VALUE);
  const v = evd.eigenvectorMatrix;
  // w = V diag(1/max(e, lowest)) Vᵀ Xᵀy
  const vtb = v.transpose().mmul(Matrix.columnVector(Array.from(xty)));
  evd.realEigenvalues.forEach((e, j) => vtb.set(j, 0, vtb.get(j, 0) / Math.max(e, lowest)));
  const w = v.mmul(vtb).to1DArray();
  const params = new Float64Array(d + 1);
  params.set(w);
  let b = yMean;
  for (let j = 0; j < d; j++) b -= w[j] * mean[j];
  params[d] = b;
  return params;
}
