import { rowsTimes, type Rows64 } from '../models/learners/types.ts';
import { gaussians, rng } from '../models/seed.ts';
import { subsetTask, taskPositives, type TaskName } from './tasks.ts';

/**
 * Task families for multi-task imitation privacy, ρ = E_tasks E_x L: a sweep names a sampler
 * instead of one task, and the harness averages ρ over the tasks it draws.
 */

export const TASK_SAMPLERS = ['mnist-family'] as const;
export type TaskSamplerName = (typeof TASK_SAMPLERS)[number];

/** Kinds of binary question about a ten-class label the mnist-family sampler draws from. */
export const TASK_KINDS = ['one-vs-rest', 'parity', 'ge5', 'subset'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];

export interface TaskSamplerSpec {
  sampler: TaskSamplerName;
  /** Distinct tasks to draw. */
  count: number;
  seed: number;
  /** Kinds to draw from, each equally likely at every draw (while it has tasks left). */
  kinds: readonly TaskKind[];
}

/** MNIST and Fashion-MNIST both label ten classes. */
export const FAMILY_CLASSES = 10;

/**
 * A task's question as an unordered two-way partition of the classes: complementary positives
 * (subset-01234 and ge5) ask the same thing with the labels swapped, so they count as one task.
 */
function partitionKey(task: TaskName, classes: number): string {
  const positives = new Set(taskPositives(task, classes));
  const side = Array.from({ length: classes }, (_, c) => c).filter((c) => positives.has(c) === positives.has(0));
  return side.join(',');
}

/** Partitions with both sides of at least two classes: what a subset draw can produce. */
function subsetPartitions(classes: number): number {
  return (2 ** classes - 2 - 2 * classes) / 2;
}

/** How many distinct tasks the kinds allow (parity and ge5 are themselves subset partitions). */
export function taskCapacity(kinds: readonly TaskKind[], classes = FAMILY_CLASSES): number {
  const has = (k: TaskKind) => kinds.includes(k);
  const subsets = has('subset') ? subsetPartitions(classes) : (has('parity') ? 1 : 0) + (has('ge5') ? 1 : 0);
  return (has('one-vs-rest') ? classes : 0) + subsets;
}

function drawSubset(classes: number, random: () => number): TaskName {
  // Sizes 2 … classes−2: a singleton (or its complement) is a one-vs-rest task.
  const size = 2 + Math.floor(random() * (classes - 3));
  const order = Array.from({ length: classes }, (_, c) => c);
  for (let i = 0; i < size; i++) {
    const j = i + Math.floor(random() * (classes - i));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return subsetTask(order.slice(0, size));
}

/**
 * `count` distinct binary tasks, the same for the same spec. Each draw picks a kind uniformly
 * among those with tasks left, then a task of that kind not drawn before (as a partition).
 */
export function sampleTasks(spec: TaskSamplerSpec, classes = FAMILY_CLASSES): TaskName[] {
  if (spec.sampler !== 'mnist-family') throw new RangeError(`unknown task sampler "${spec.sampler}": use ${TASK_SAMPLERS.join(', ')}`);
  if (!Number.isInteger(spec.count) || spec.count < 1) throw new RangeError(`task count must be an integer ≥ 1, got ${spec.count}`);
  if (spec.kinds.length === 0) throw new RangeError('task kinds must name at least one of ' + TASK_KINDS.join(', '));
  const capacity = taskCapacity(spec.kinds, classes);
  if (spec.count > capacity) throw new RangeError(`${spec.count} tasks asked for, but the kinds ${spec.kinds.join(', ')} allow only ${capacity} distinct ones`);

  const random = rng(spec.seed, 'task-sampler');
  const used = new Set<string>();
  const tasks: TaskName[] = [];
  const fresh = (task: TaskName) => !used.has(partitionKey(task, classes));
  const digits = Array.from({ length: classes }, (_, c) => c);
  const left: Record<TaskKind, () => boolean> = {
    'one-vs-rest': () => digits.some((d) => fresh(`one-vs-rest-${d}`)),
    parity: () => fresh('parity'),
    ge5: () => fresh('ge5'),
    subset: () => [...used].filter((k) => k.split(',').length >= 2 && k.split(',').length <= classes - 2).length < subsetPartitions(classes),
  };
  while (tasks.length < spec.count) {
    const open = [...new Set(spec.kinds)].filter((k) => left[k]());
    const kind = open[Math.floor(random() * open.length)];
    let task: TaskName;
    if (kind === 'one-vs-rest') {
      const free = digits.filter((d) => fresh(`one-vs-rest-${d}`));
      task = `one-vs-rest-${free[Math.floor(random() * free.length)]}`;
    } else if (kind === 'subset') {
      do task = drawSubset(classes, random);
      while (!fresh(task));
    } else {
      task = kind;
    }
    used.add(partitionKey(task, classes));
    tasks.push(task);
  }
  return tasks;
}

export const REGRESSION_TASK_KINDS = ['linear', 'smooth'] as const;
export type RegressionTaskKind = (typeof REGRESSION_TASK_KINDS)[number];

/** Ridge functions summed in a smooth task: few enough to stay smooth, enough to be far from linear. */
const RIDGES = 3;

function linearTask(rows: Rows64, random: () => number): Float64Array {
  const { d } = rows;
  // β ~ N(0, I/d): y keeps the scale of one standardised feature whatever d is.
  const beta = gaussians(d, random).map((b) => b / Math.sqrt(d));
  return rowsTimes(rows, beta);
}

function smoothTask(rows: Rows64, random: () => number): Float64Array {
  const { x, n, d } = rows;
  const y = new Float64Array(n);
  const z = new Float64Array(n);
  for (let r = 0; r < RIDGES; r++) {
    const w = gaussians(d, random);
    const [a, b] = gaussians(2, random);
    let mean = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += x[i * d + j] * w[j];
      z[i] = s;
      mean += s;
    }
    mean /= n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (z[i] - mean) ** 2;
    // The projection is standardised on these rows so tanh bends over the data, neither flat
    // (a linear task in disguise) nor saturated (a step), whatever the feature scale.
    const sd = Math.sqrt(variance / n) || 1;
    for (let i = 0; i < n; i++) y[i] += a * Math.tanh((2 * (z[i] - mean)) / sd + b);
  }
  return y;
}

/**
 * `count` regression label vectors over rows, for learning-service experiments averaged over
 * tasks. 'linear': y = Xβ, β Gaussian (no intercept, so y lies in the span of X's columns).
 * 'smooth': a sum of a few random tanh ridge functions of x. Task t depends only on (seed, kind,
 * t), so a larger count extends a smaller one.
 */
export function sampleRegressionTasks(rows: Rows64, kind: RegressionTaskKind, count: number, seed: number): Float64Array[] {
  if (!REGRESSION_TASK_KINDS.includes(kind)) throw new RangeError(`unknown regression task kind "${kind}": use ${REGRESSION_TASK_KINDS.join(', ')}`);
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`task count must be an integer ≥ 1, got ${count}`);
  if (rows.x.length !== rows.n * rows.d) throw new RangeError(`rows.x has ${rows.x.length} values, expected n·d = ${rows.n * rows.d}`);
  const make = kind === 'linear' ? linearTask : smoothTask;
  return Array.from({ length: count }, (_, t) => make(rows, rng(seed, `regression-task-${kind}-${t}`)));
}
