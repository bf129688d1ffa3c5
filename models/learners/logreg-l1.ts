import { minimiseL1Quadratic } from './lasso.ts';
import {
  checkLogistic,
  lineSearch,
  logisticDerivatives,
  logisticLoss,
  maxAbs,
  maxAbsDiff,
  startAtInterceptOnly,
} from './logreg-l2.ts';
import { linearFitted } from './ridge.ts';
import type { Learner } from './types.ts';

/**
 * L1-regularised logistic regression with an unpenalised intercept, labels ±1:
 *   Σᵢ log(1 + exp(−yᵢ(w·xᵢ + b))) + λ‖w‖₁.   params = [w (d values), b].
 *
 * Proximal Newton (the glmnet scheme): each step minimises the loss's second-order model plus
 * λ‖w‖₁ exactly (minimiseL1Quadratic), then backtracks on the true objective. Once the zero
 * pattern settles this is Newton on the smooth problem over the nonzero weights, so it ends at
 * rounding level.
 *
 * Stealing: as for LASSO, reg = sign(w) with sign(0) = 0, so λ̂ is fitted on the nonzero weights
 * only; an all-zero fit leaves λ unidentifiable.
 */
export const logregL1: Learner = {
  name: 'logreg-l1',
  task: 'classification',
  fit(rows, y, lambda) {
    checkLogistic('logreg-l1', rows, y, lambda);
    const { d } = rows;
    const m = d + 1;
    const l1 = (theta: Float64Array) => {
      let s = 0;
      for (let j = 0; j < d; j++) s += Math.abs(theta[j]);
      return s;
    };
    const objective = (theta: Float64Array) => logisticLoss(theta, rows, y) + lambda * l1(theta);
    const penalised = new Uint8Array(m).fill(1);
    penalised[d] = 0;
    let theta = startAtInterceptOnly(rows, y);
    for (let it = 0; it < 200; it++) {
      const { grad, hess } = logisticDerivatives(theta, rows, y, true);
      // ½(v − θ)ᵀH(v − θ) + gᵀ(v − θ) = ½vᵀHv + (g − Hθ)ᵀv + const.
      const q = Float64Array.from(grad);
      for (let j = 0; j < m; j++) for (let k = 0; k < m; k++) q[j] -= hess![j * m + k] * theta[k];
      const target = minimiseL1Quadratic(hess!, q, lambda, penalised, theta);
      const step = target.map((v, j) => v - theta[j]);
      let slope = lambda * (l1(target) - l1(theta));
      for (let j = 0; j < m; j++) slope += grad[j] * step[j];
      const next = lineSearch(objective, theta, step, Math.min(slope, 0));
      const moved = maxAbsDiff(next, theta);
      theta = next;
      if (moved <= 1e-14 * Math.max(1, maxAbs(theta))) return linearFitted('logreg-l1', lambda, theta);
    }
    throw new Error('logreg-l1: proximal Newton did not converge in 200 steps (are the classes separable with λ ≈ 0?)');
  },
  gradients(params, rows, y) {
    const { grad } = logisticDerivatives(params, rows, y, false);
    const reg = new Float64Array(rows.d + 1);
    for (let j = 0; j < rows.d; j++) reg[j] = Math.sign(params[j]);
    return { loss: grad, reg };
  },
};
