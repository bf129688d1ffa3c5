import { ridge } from './ridge.ts';
import type { Learner } from './types.ts';

/** Every learner a learning service can run, by name. */
export const LEARNERS: Record<string, Learner> = {
  ridge,
};

export function getLearner(name: string): Learner {
  const learner = LEARNERS[name];
  if (!learner) throw new Error(`unknown learner "${name}"; known: ${Object.keys(LEARNERS).join(', ')}`);
  return learner;
}
