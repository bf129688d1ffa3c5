import type { z } from 'zod';

/** One measured point of an experiment, flat so it goes to CSV as is. */
export type ExperimentRow = Record<string, string | number | boolean | null>;

export interface ExperimentResult {
  /** Tidy rows, one per measured point (per seed where there are seeds). */
  rows: ExperimentRow[];
  /** Headline lines for the console and the JSON. */
  summary: string[];
}

export interface ExperimentContext {
  /** Progress lines for long work (stderr on the CLI). */
  log(line: string): void;
}

/**
 * An experiment on learning services that is not a query-budget sweep over classification
 * targets: hyperparameter stealing, Train-Steal-Retrain, assisted-learning imitation.
 * A preset names it with `"experiment": "<name>"` and its parameters under `"params"`.
 */
export interface Experiment<C = unknown> {
  name: string;
  description: string;
  schema: z.ZodType<C>;
  /**
   * How rows become ρ curves: rows with a numeric `rho` grouped by the `by` columns, one point per
   * value of `x`, mean and interval over seeds. Experiments without ρ rows leave it out.
   */
  curves?: { x: string; by: string[] };
  run(params: C, ctx: ExperimentContext): Promise<ExperimentResult>;
}
