import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export const treeSchema = z.strictObject({
  ...baseFields,
  family: z.literal('tree'),
  trainSize: count.default(2_000),
  maxDepth: count.default(8),
  minNumSamples: count.default(5),
});
export type TreeSpec = Omit<z.output<typeof treeSchema>, 'task'> & { id: string; task?: TaskName };

export const treeFamily: FamilyModule<TreeSpec> = {
  name: 'tree',
  schema: treeSchema,
  async train() {
    throw new Error('tree targets: not built yet');
  },
  async restore() {
    throw new Error('tree targets: not built yet');
  },
};
