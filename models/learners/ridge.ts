import { Matrix, solve } from 'ml-matrix';
import { checkRows, type Fitted, type Learner, type Rows64 } from './types.ts';

/**
 * Ridge regression with an unpenalised intercept:  ‖y − Xw − b‖² + λ‖w‖².
 * params = [w (d values), b]. λ = 0 is ordinary least squares (minimum-norm when XᵀX is singular).
 */
export const ridge: Learner = {
  name: 'ridge',
  task: 'regression',
  fit(rows, y, lambda) {
    checkRows(rows, y);
    if (!(lambda >= 0)) throw new RangeError(`ridge: λ must be ≥ 0 (got ${lambda})`);
    const { d } = rows;
    const { gram, xty, mean, yMean } = centredGram(rows, y);
    const a = new Matrix(d, d);
    for (let j = 0; j < d; j++) for (let k = 0; k < d; k++) a.set(j, k, gram[j * d + k]);
    for (let j = 0; j < d; j++) a.set(j, j, a.get(j, j) + lambda);
    const w = solve(a, Matrix.columnVector(Array.from(xty)), lambda === 0).to1DArray();
    const params = new Float64Array(d + 1);
    params.set(w);
    let b = yMean;
    for (let j = 0; j < d; j++) b -= w[j] * mean[j];
    params[d] = b;
    return linearFitted('ridge', lambda, params);
  },
  gradients(params, rows, y) {
    const { n, d } = rows;
    const r = residuals(params, rows, y);
    const loss = new Float64Array(d + 1);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < d; j++) loss[j] -= 2 * rows.x[i * d + j] * r[i];
      loss[d] -= 2 * r[i];
    }
    const reg = new Float64Array(d + 1);
    for (let j = 0; j < d; j++) reg[j] = 2 * params[j];
    return { loss, reg };
  },
};

/**
 * G = X_cᵀX_c and c = X_cᵀy_c on column-centred data (d × d, row-major, full): the intercept drops
 * out of every centred least-squares problem. Accumulated by hand because ml-matrix's generic mmul
 * is several times slower on tall float64 data.
 */
export function centredGram(rows: Rows64, y: Float64Array): { gram: Float64Array; xty: Float64Array; mean: Float64Array; yMean: number } {
  const { n, d, x } = rows;
  const mean = columnMeans(rows);
  let yMean = 0;
  for (let i = 0; i < n; i++) yMean += y[i];
  yMean /= n;
  const gram = new Float64Array(d * d);
  const xty = new Float64Array(d);
  const row = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) row[j] = x[i * d + j] - mean[j];
    const yi = y[i] - yMean;
    for (let j = 0; j < d; j++) {
      const rj = row[j];
      if (rj === 0) continue; // image data is mostly background
      xty[j] += rj * yi;
      for (let k = j; k < d; k++) gram[j * d + k] += rj * row[k];
    }
  }
  for (let j = 0; j < d; j++) for (let k = 0; k < j; k++) gram[j * d + k] = gram[k * d + j];
  return { gram, xty, mean, yMean };
}

export function columnMeans(rows: Rows64): Float64Array {
  const { n, d, x } = rows;
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j];
  for (let j = 0; j < d; j++) mean[j] /= n;
  return mean;
}

/** Xw + b for params = [w, b]. */
export function linearPredict(params: Float64Array, rows: Rows64): Float64Array {
  const { n, d, x } = rows;
  if (params.length !== d + 1) throw new RangeError(`model has ${params.length - 1} features, rows have ${d}`);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = params[d];
    for (let j = 0; j < d; j++) s += x[i * d + j] * params[j];
    out[i] = s;
  }
  return out;
}

/** y − Xw − b. */
export function residuals(params: Float64Array, rows: Rows64, y: Float64Array): Float64Array {
  const f = linearPredict(params, rows);
  for (let i = 0; i < f.length; i++) f[i] = y[i] - f[i];
  return f;
}

export function linearFitted(learner: string, lambda: number, params: Float64Array): Fitted {
  return { learner, lambda, params, predict: (rows) => linearPredict(params, rows) };
}
