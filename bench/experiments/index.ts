import type { Experiment } from './types.ts';

/** Every experiment a preset can name with `"experiment"`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const EXPERIMENTS: Record<string, Experiment<any>> = {};
