import { ridge } from './ridge.ts';
import { nn } from './nn.ts';
import { svmHinge } from './svm-hinge.ts';
import { svmSqHinge } from './svm-sqhinge.ts';
import { krr } from './krr.ts';
import { lasso } from './lasso.ts';
import { logregL1 } from './logreg-l1.ts';
import { logregL2 } from './logreg-l2.ts';
import { treeRegression } from './tree-regression.ts';
import type { Learner } from './types.ts';

/** Every learner a learning service can run, by name. */
export const LEARNERS: Record<string, Learner> = {
  ridge,
  'svm-sqhinge': svmSqHinge,
  'svm-hinge': svmHinge,
  nn,
  'tree-regression': treeRegression,
  lasso,
  krr,
  'logreg-l2': logregL2,
  'logreg-l1': logregL1,
};

export function getLearner(name: string): Learner {
  const learner = LEARNERS[name];
  if (!learner) throw new Error(`unknown learner "${name}"; known: ${Object.keys(LEARNERS).join(', ')}`);
  return learner;
}
