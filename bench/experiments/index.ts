import { assistedLinear } from './assisted-linear.ts';
import { assistedTree } from './assisted-tree.ts';
import { dpImitation } from './dp-imitation.ts';
import { hyperparameterStealing } from './hyperparameter-stealing.ts';
import { restrictedOutcome } from './restricted-outcome.ts';
import { trainStealRetrain } from './train-steal-retrain.ts';
import type { Experiment } from './types.ts';

/** Every experiment a preset can name with `"experiment"`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const EXPERIMENTS: Record<string, Experiment<any>> = {
  [assistedLinear.name]: assistedLinear,
  [assistedTree.name]: assistedTree,
  [dpImitation.name]: dpImitation,
  [hyperparameterStealing.name]: hyperparameterStealing,
  [restrictedOutcome.name]: restrictedOutcome,
  [trainStealRetrain.name]: trainStealRetrain,
};
