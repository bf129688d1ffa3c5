import { DatasetError } from './errors.ts';
import type { Split } from './types.ts';

/**
 * A task turns a dataset's labels into the labels a provider trains on: the ten digits as they
 * are, or a binary question about them. Binary tasks are what the classical extraction papers
 * attack (Tramèr et al. 2016 use binary logistic regression, Lowd and Meek binary linear models);
 * a family of them lets ρ be averaged over tasks, E_tasks E_x L.
 */
export type TaskName = 'digits' | 'parity' | 'ge5' | `one-vs-rest-${number}` | `subset-${string}`;

export const TASK_HELP =
  'digits, parity (odd = 1), ge5 (≥ 5 = 1), one-vs-rest-D (D = 1, others 0) or subset-DDD (e.g. subset-0137: 0, 1, 3 and 7 = 1, others 0; digits in increasing order)';

/**
 * The classes a subset task labels 1, or undefined when name is no valid subset task for
 * `classes` classes. Digits are written once each, in increasing order (one name per task), and
 * the subset must be proper and non-empty, else every row would get one label.
 */
export function subsetClasses(name: string, classes = 10): number[] | undefined {
  const m = /^subset-(\d+)$/.exec(name);
  if (!m) return undefined;
  const digits = [...m[1]].map(Number);
  const increasing = digits.every((d, i) => i === 0 || d > digits[i - 1]);
  if (!increasing || digits[digits.length - 1] >= classes || digits.length >= classes) return undefined;
  return digits;
}

/** The name of the subset task labelling `members` 1. */
export function subsetTask(members: Iterable<number>): TaskName {
  return `subset-${[...new Set(members)].sort((a, b) => a - b).join('')}`;
}

/** Whether name is a task, for a base label set of `classes` classes. */
export function isTask(name: string, classes = 10): name is TaskName {
  if (name === 'digits' || name === 'parity' || name === 'ge5') return true;
  if (subsetClasses(name, classes)) return true;
  const m = /^one-vs-rest-(\d+)$/.exec(name);
  return m !== null && Number(m[1]) < classes;
}

export function taskClasses(task: TaskName, base: number): number {
  return task === 'digits' ? base : 2;
}

/**
 * The base classes a binary task labels 1 (undefined for 'digits'). Two tasks with the same
 * positives, or with complementary ones, ask the same question of the data.
 */
export function taskPositives(task: TaskName, classes = 10): number[] | undefined {
  if (task === 'digits') return undefined;
  const all = Array.from({ length: classes }, (_, c) => c);
  if (task === 'parity') return all.filter((c) => c % 2 === 1);
  if (task === 'ge5') return all.filter((c) => c >= 5);
  const subset = subsetClasses(task, classes);
  if (subset) return subset;
  return [Number(task.slice('one-vs-rest-'.length))];
}

/** The label function of a task; -1 (no label) stays -1. */
export function taskLabel(task: TaskName): (y: number) => number {
  if (task === 'digits') return (y) => y;
  if (task === 'parity') return (y) => (y < 0 ? -1 : y % 2);
  if (task === 'ge5') return (y) => (y < 0 ? -1 : y >= 5 ? 1 : 0);
  const subset = subsetClasses(task);
  if (subset) {
    const positive = new Set(subset);
    return (y) => (y < 0 ? -1 : positive.has(y) ? 1 : 0);
  }
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
