import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export const mlpSchema = z.strictObject({
  ...baseFields,
  family: z.literal('mlp'),
  trainSize: count.default(5_000),
  hidden: z.array(count).min(1).default([32]),
  epochs: count.default(20),
  batchSize: count.default(64),
  lr: z.number().positive().default(0.003),
});
export type MlpSpec = Omit<z.output<typeof mlpSchema>, 'task'> & { id: string; task?: TaskName };

export const mlpFamily: FamilyModule<MlpSpec> = {
  name: 'mlp',
  schema: mlpSchema,
  async train() {
    throw new Error('mlp targets: not built yet');
  },
  async restore() {
    throw new Error('mlp targets: not built yet');
  },
};
