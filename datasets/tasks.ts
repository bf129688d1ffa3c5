import { DatasetError } from './errors.ts';
import type { Split } from './types.ts';

/**
 * A task turns a dataset's labels into the labels a provider trains on: the ten digits as they
 * are, or a binary question about them. Binary tasks are what the classical extraction papers
 * attack (Tramèr et al. 2016 use binary logistic regression, Lowd and Meek binary linear models).
 */
export type TaskName = 'digits' | 'parity' | 'ge5' | `one-vs-rest-${number}`;

export const TASK_HELP = 'digits, parity (odd = 1), ge5 (≥ 5 = 1) or one-vs-rest-D (D = 1, others 0)';

/** Whether name is a task, for a base label set of `classes` classes. */
export function isTask(name: string, classes = 10): name is TaskName {
  if (name === 'digits' || name === 'parity' || name === 'ge5') return true;
  const m = /^one-vs-rest-(\d+)$/.exec(name);
  return m !== null && Number(m[1]) < classes;
}

export function taskClasses(task: TaskName, base: number): number {
  return task === 'digits' ? base : 2;
}

/** The label function of a task; -1 (no label) stays -1. */
export function taskLabel(task: TaskName): (y: number) => number {
  if (task === 'digits') return (y) => y;
  if (task === 'parity') return (y) => (y < 0 ? -1 : y % 2);
  if (task === 'ge5') return (y) => (y < 0 ? -1 : y >= 5 ? 1 : 0);
  const digit = Number(task.slice('one-vs-rest-'.length));
  return (y) => (y < 0 ? -1 : y === digit ? 1 : 0);
}

/** The split with its labels mapped by the task; the rows are shared, not copied. */
export function relabel(split: Split, task: TaskName): Split {
  if (task === 'digits') return split;
  if (!isTask(task)) throw new DatasetError(`unknown task "${task}": use ${TASK_HELP}`);
  const f = taskLabel(task);
  return { x: split.x, y: split.y.map(f), n: split.n };
}
