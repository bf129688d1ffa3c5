import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export const logregSchema = z.strictObject({
  ...baseFields,
  family: z.literal('logreg'),
  trainSize: count.default(5_000),
  /** L2 penalty λ on the weights (not the bias), as λ/2·|w|² added to the mean log-loss. */
  l2: z.number().nonnegative().default(1e-4),
  epochs: count.default(100),
});
export type LogregSpec = Omit<z.output<typeof logregSchema>, 'task'> & { id: string; task?: TaskName };

export const logregFamily: FamilyModule<LogregSpec> = {
  name: 'logreg',
  schema: logregSchema,
  async train() {
    throw new Error('logreg targets: not built yet');
  },
  async restore() {
    throw new Error('logreg targets: not built yet');
  },
};
