import { z } from 'zod';
import type { TaskName } from '../../datasets/tasks.ts';
import { baseFields, count, type FamilyModule } from './family.ts';

export const linearSvmSchema = z.strictObject({
  ...baseFields,
  family: z.literal('linear-svm'),
  trainSize: count.default(5_000),
  C: z.number().positive().default(1),
  epochs: count.default(50),
});
export type LinearSvmSpec = Omit<z.output<typeof linearSvmSchema>, 'task'> & { id: string; task?: TaskName };

export const linearSvmFamily: FamilyModule<LinearSvmSpec> = {
  name: 'linear-svm',
  schema: linearSvmSchema,
  async train() {
    throw new Error('linear-svm targets: not built yet');
  },
  async restore() {
    throw new Error('linear-svm targets: not built yet');
  },
};
