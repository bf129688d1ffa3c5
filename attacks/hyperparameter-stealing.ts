import type { Learner, Rows64 } from '../models/learners/types.ts';

/**
 * Wang & Gong (S&P 2018): at the learned parameters w the objective is stationary,
 *   ∂L/∂w + λ·∂R/∂w = 0,
 * an overdetermined linear system in λ alone. Its least-squares solution is
 *   λ̂ = −(aᵀb)/(aᵀa),  a = ∂R/∂w, b = ∂L/∂w.
 */
export function stealLambda(learner: Learner, params: Float64Array, rows: Rows64, y: Float64Array): number {
  if (!learner.gradients) throw new Error(`${learner.name} has no stationarity condition to steal λ from`);
  const { loss, reg } = learner.gradients(params, rows, y);
  let ab = 0;
  let aa = 0;
  for (let j = 0; j < reg.length; j++) {
    ab += reg[j] * loss[j];
    aa += reg[j] * reg[j];
  }
  if (aa === 0) throw new Error(`${learner.name}: the regulariser's gradient is zero at these parameters; λ is not identifiable`);
  return -ab / aa;
}
