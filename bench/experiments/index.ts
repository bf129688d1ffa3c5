import { assistedLinear } from './assisted-linear.ts';
import { dpImitation } from './dp-imitation.ts';
import { hyperparameterStealing } from './hyperparameter-stealing.ts';
import type { Experiment } from './types.ts';

/** Every experiment a preset can name with `"experiment"`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const EXPERIMENTS: Record<string, Experiment<any>> = {
  [assistedLinear.name]: assistedLinear,
  [dpImitation.name]: dpImitation,
  [hyperparameterStealing.name]: hyperparameterStealing,
};
