import { z } from 'zod';
import { isTask, TASK_HELP, type TaskName } from '../../datasets/tasks.ts';
import type { Split } from '../../datasets/types.ts';
import type { Target } from '../types.ts';

/**
 * One target family: its config schema, and how to train it and restore it from the cache.
 * getTarget (index.ts) does the rest for every family alike: caching, relabelling by task,
 * scoring on eval. A new family is a module exporting one of these, listed in index.ts.
 */
export interface FamilyModule<S extends { family: string }> {
  name: S['family'];
  /** A zod strictObject with `family: z.literal(name)`; the sweep and serve configs take it as is. */
  schema: z.ZodType<Omit<S, 'id'> & { id?: string }>;
  /** Trains on data, whose labels the task has already mapped to 0..classes-1. */
  train(spec: S, data: Split, shape: TargetShape): Promise<Built>;
  /** Rebuilds the target from what train returned as files and params; throws on anything inconsistent. */
  restore(spec: S, files: Record<string, Uint8Array>, params: Record<string, unknown>, shape: TargetShape): Promise<Target>;
}

export interface TargetShape {
  inputShape: [number, number, number];
  /** Classes of the task (2 for binary tasks). */
  classes: number;
}

/** What train returns: the target, the files that restore it, and JSON-sized parameters. */
export interface Built {
  target: Target;
  files: Record<string, Uint8Array>;
  params: Record<string, unknown>;
}

const seed = z.number().int().nonnegative();

export const taskField = z
  .string()
  .refine((t): t is TaskName => isTask(t), { message: `unknown task: use ${TASK_HELP}` })
  .default('digits') as unknown as z.ZodDefault<z.ZodType<TaskName>>;

/** Fields every target spec has: a label, the task it learns, and the seed of its training. */
export const baseFields = {
  id: z.string().min(1).optional(),
  task: taskField,
  seed: seed.default(1),
};

export const count = z.number().int().positive();
