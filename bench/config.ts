import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { DATASETS, POOL_KINDS } from '../datasets/index.ts';
import { sampleTasks, TASK_KINDS, TASK_SAMPLERS, taskCapacity, type TaskSamplerSpec } from '../datasets/task-sampler.ts';
import type { TaskName } from '../datasets/tasks.ts';
import type { DatasetName, PoolKind } from '../datasets/types.ts';
import { taskField } from '../models/targets/family.ts';
import { targetSchemas } from '../models/targets/index.ts';
import { STUDENT_ARCHS, type TargetSpec } from '../models/types.ts';
import type { Disclosure } from '../serve/types.ts';
import { DEFAULT_EPSILONS } from './privacy.ts';

/** Thrown for any problem with a sweep config; the message names the file, the field and what is allowed. */
export class ConfigError extends Error {
  readonly name = 'ConfigError';
}

export const ATTACK_NAMES = [
  'knockoff', 'adaptive-knockoff', 'distillation', 'copycat', 'jbda',
  'active-random', 'active-uncertainty', 'active-margin', 'active-entropy', 'active-kcenter',
  'equation-solving', 'path-finding', 'lowd-meek', 'adaptive-retraining', 'uniform-retraining',
] as const;
export const BACKEND_NAMES = ['auto', 'tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export const TRANSPORTS = ['inprocess', 'http'] as const;
export const DISCLOSURE_HELP = 'label, probs, topK (e.g. top3), roundedN (e.g. rounded2) or leaf (label and leaf id, tree targets)';

/** Disclosures are written as short strings in configs ("label", "top3", "rounded2"), as users name them. */
export function parseDisclosure(text: string): Disclosure | undefined {
  if (text === 'label' || text === 'probs' || text === 'leaf') return { kind: text };
  const topk = /^top(\d+)$/.exec(text);
  if (topk) return { kind: 'topk', k: Number(topk[1]) };
  const rounded = /^rounded(\d+)$/.exec(text);
  if (rounded) return { kind: 'rounded', decimals: Number(rounded[1]) };
  return undefined;
}

const count = z.number().int().positive();
const seed = z.number().int().nonnegative();

const disclosure = z.string().transform((text, ctx) => {
  const parsed = parseDisclosure(text);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: `unknown disclosure "${text}": use ${DISCLOSURE_HELP}` });
    return z.NEVER;
  }
  return parsed;
});

const arch = z.enum(STUDENT_ARCHS);

/**
 * A sweep target may draw its tasks instead of naming one: it then stands for `count` targets,
 * one per sampled task, and ρ is also reported averaged over them (E_tasks E_x L).
 */
const taskSampler = z.strictObject({
  sampler: z.enum(TASK_SAMPLERS),
  count,
  seed: seed.default(1),
  kinds: z.array(z.enum(TASK_KINDS)).min(1).default([...TASK_KINDS]),
});

// Each target family owns its schema (models/targets/<family>.ts), so a new family needs no edit here.
// The sweep adds `tasks`, and leaves `task` without its default so a target naming both is caught.
const familySchemas = targetSchemas as unknown as [z.ZodObject, ...z.ZodObject[]];
const [firstSampling, ...otherSampling] = familySchemas.map((s) =>
  s.extend({ task: (taskField as unknown as z.ZodDefault<z.ZodType<TaskName>>).unwrap().optional(), tasks: taskSampler.optional() }),
) as unknown as [z.ZodObject, ...z.ZodObject[]];
/** A spec as a config gives it: id optional, every default filled in (task included). */
type ConfigTarget = TargetSpec extends infer T ? (T extends TargetSpec ? Omit<T, 'id' | 'task'> & { id?: string; task: TaskName } : never) : never;
/** A target entry of a sweep config: one task (default digits), or a sampler of tasks. */
type EntryTarget = Omit<ConfigTarget, 'task'> & { task?: TaskName; tasks?: TaskSamplerSpec };
const target = z.discriminatedUnion('family', familySchemas) as unknown as z.ZodType<ConfigTarget>;
const samplingTarget = z.discriminatedUnion('family', [firstSampling, ...otherSampling]) as unknown as z.ZodType<EntryTarget>;

/** Joins a sampler target's id and a task into the id of the target that learns that task. */
export const TASK_ID_SEPARATOR = '@';

/** The targets a config's entries stand for: each sampler entry becomes one target per drawn task. */
function expandTargets(entries: EntryTarget[]): { targets: (ConfigTarget & { id: string })[]; taskSets: TaskSet[] } {
  const targets: (ConfigTarget & { id: string })[] = [];
  const taskSets: TaskSet[] = [];
  entries.forEach((entry, i) => {
    const { tasks: sampler, ...spec } = entry;
    const id = entry.id ?? defaultTargetId(entry.family, i, entries);
    if (!sampler) {
      targets.push({ ...spec, id, task: spec.task ?? 'digits' } as ConfigTarget & { id: string });
      return;
    }
    const members = sampleTasks(sampler).map((task) => ({ id: `${id}${TASK_ID_SEPARATOR}${task}`, task }));
    for (const m of members) targets.push({ ...spec, id: m.id, task: m.task } as ConfigTarget & { id: string });
    taskSets.push({ base: id, family: entry.family, sampler, members });
  });
  return { targets, taskSets };
}

const student = z.strictObject({
  arch,
  epochs: count.default(5),
  batchSize: count.default(64),
  lr: z.number().positive().default(0.001),
});

const side = z.strictObject({
  name: z.string().regex(/^[\w.+-]+$/, 'use letters, digits and . _ + - only (it names curves and files)'),
  /** A built-in pool, or {"path": ...} for an IDX image file or a folder of images (relative to the config file). */
  pool: z.union([
    z.enum(POOL_KINDS as [PoolKind, ...PoolKind[]]),
    z.strictObject({ path: z.string().min(1), transpose: z.boolean().optional() }),
  ]),
  disclosure,
  architecture: z.enum(['known', 'unknown']).default('unknown'),
});

const sweepFields = {
  name: z.string().regex(/^[\w.-]+$/, 'use letters, digits and . _ - only (it names the run folder)'),
  description: z.string().optional(),
  dataset: z.strictObject({
    name: z.enum(DATASETS as [DatasetName, ...DatasetName[]]).default('mnist'),
    trainSize: count.default(10_000),
    poolSize: count.default(20_000),
    evalSize: count.max(10_000).default(2_000),
    seed: seed.default(1),
  }),
  targets: z.array(samplingTarget).min(1),
  /** ε values of the (ε, δ) tables: δ̂ = P(ρ ≤ ε) over seeds. */
  epsilons: z.array(z.number().nonnegative()).min(1).default(() => [...DEFAULT_EPSILONS]),
  attacks: z.array(z.enum(ATTACK_NAMES)).min(1),
  students: z.array(student).min(1),
  side: z.array(side).min(1),
  budgets: z.array(count).min(1),
  seeds: z.array(seed).min(1).default([1]),
  backend: z.enum(BACKEND_NAMES).default('auto'),
  /** 'http': the harness serves the targets on a loopback port and every attack queries them over HTTP. */
  transport: z.enum(TRANSPORTS).default('inprocess'),
  /**
   * With transport 'http': an API that is already running instead of one the harness starts.
   * `keys` maps each side-information level to the environment variable holding its API key,
   * so no secret is written into a config file.
   */
  server: z
    .strictObject({
      url: z.url(),
      keys: z.record(z.string(), z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'the name of an environment variable')),
    })
    .optional(),
  /** Published figures this sweep reproduces; printed beside ours and written to reference.json. */
  reference: z
    .array(
      z.strictObject({
        target: z.string(),
        attack: z.string(),
        side: z.string(),
        budget: count,
        student: z.string().optional(),
        metric: z.enum(['studentAccuracy', 'agreement', 'rho', 'queries']),
        value: z.number(),
        source: z.string().min(1),
        note: z.string().optional(),
      }),
    )
    .optional(),
  /**
   * Cells in flight at once, each in a worker thread of its own (its own tfjs backend, data and
   * targets). 'auto': one per core, at most one per cell. 1 runs cells in the main thread, as do
   * sweeps whose cells cannot leave it (transport "http" without a server, say: see bench/workers.ts).
   */
  concurrency: z.union([count.max(64), z.literal('auto')]).default('auto'),
  /**
   * Cells each thread runs interleaved, sharing its backend: on a GPU their students train
   * stacked as one program (models/stacked-fit.ts), which a small student alone cannot fill.
   * 'auto': 1 on CPU backends (interleaving there only shares one core), CELLS_PER_GPU_THREAD on a GPU.
   */
  cellsPerThread: z.union([count.max(16), z.literal('auto')]).default('auto'),
};

type SweepEntries = z.output<z.ZodObject<typeof sweepFields>>;

function refineSweep(cfg: SweepEntries, ctx: z.RefinementCtx): void {
  const unique = (values: string[], path: string) => {
    const seen = new Set<string>();
    for (const v of values) {
      if (seen.has(v)) ctx.addIssue({ code: 'custom', path: [path], message: `duplicate name "${v}"` });
      seen.add(v);
    }
  };
  unique(cfg.side.map((s) => s.name), 'side');
  unique(cfg.targets.map((t, i) => t.id ?? defaultTargetId(t.family, i, cfg.targets)), 'targets');
  let samplersOk = true;
  for (const [i, t] of cfg.targets.entries()) {
    if (!t.tasks) continue;
    // Refinements run even when a field failed its own check: sample only from a valid spec.
    const { sampler, count: n, kinds } = t.tasks;
    const known = (TASK_SAMPLERS as readonly string[]).includes(sampler) && kinds.every((k) => (TASK_KINDS as readonly string[]).includes(k));
    if (!known || !Number.isInteger(n) || n < 1 || kinds.length === 0) {
      samplersOk = false;
      continue;
    }
    if (t.task !== undefined) {
      samplersOk = false;
      ctx.addIssue({ code: 'custom', path: ['targets', i, 'tasks'], message: 'give either task (one task) or tasks (a sampler), not both' });
    }
    const capacity = taskCapacity(t.tasks.kinds);
    if (t.tasks.count > capacity) {
      samplersOk = false;
      ctx.addIssue({ code: 'custom', path: ['targets', i, 'tasks', 'count'], message: `${t.tasks.count} tasks asked for, but the kinds ${t.tasks.kinds.join(', ')} allow only ${capacity} distinct ones` });
    }
  }
  // A sampled target's id (base@task) must not be another entry's id too.
  const expansion = samplersOk ? expandTargets(cfg.targets) : undefined;
  const expanded = expansion?.targets.map((t) => t.id) ?? [];
  const sampledIds = new Set(expansion?.taskSets.flatMap((set) => set.members.map((m) => m.id)));
  for (const [i, t] of cfg.targets.entries()) {
    if (!t.tasks && t.id && sampledIds.has(t.id)) ctx.addIssue({ code: 'custom', path: ['targets', i, 'id'], message: `"${t.id}" is also the id of a sampled task's target` });
  }
  unique(cfg.students.map((s) => s.arch), 'students');
  const largest = Math.max(...cfg.budgets);
  const sameRows = Math.max(...cfg.side.map((s) => (s.pool === 'same' ? largest : s.pool === 'mixed' ? Math.ceil(largest / 2) : 0)));
  if (sameRows > cfg.dataset.poolSize) {
    ctx.addIssue({
      code: 'custom',
      path: ['budgets'],
      message: `largest budget ${largest} needs ${sameRows} rows of the attacker's same-distribution pool, more than dataset.poolSize ${cfg.dataset.poolSize}`,
    });
  }
  if (cfg.server) {
    if (cfg.transport !== 'http') ctx.addIssue({ code: 'custom', path: ['server'], message: 'a server is only used with "transport": "http"' });
    for (const s of cfg.side) {
      if (!cfg.server.keys[s.name]) {
        ctx.addIssue({ code: 'custom', path: ['server', 'keys'], message: `no API key variable for side-information level "${s.name}"` });
      }
    }
  }
  const targetIds = samplersOk ? expanded : cfg.targets.map((t, i) => t.id ?? defaultTargetId(t.family, i, cfg.targets));
  for (const [i, ref] of (cfg.reference ?? []).entries()) {
    const known = (field: 'target' | 'attack' | 'side' | 'budget', ok: boolean) => {
      if (!ok) ctx.addIssue({ code: 'custom', path: ['reference', i, field], message: `${JSON.stringify(ref[field])} is not one of the sweep's ${field}s` });
    };
    known('target', targetIds.includes(ref.target));
    known('attack', (cfg.attacks as string[]).includes(ref.attack));
    known('side', cfg.side.some((s) => s.name === ref.side));
    known('budget', cfg.budgets.includes(ref.budget));
  }
  for (const [i, t] of cfg.targets.entries()) {
    if (t.trainSize > cfg.dataset.trainSize) {
      ctx.addIssue({
        code: 'custom',
        path: ['targets', i, 'trainSize'],
        message: `${t.trainSize} exceeds dataset.trainSize ${cfg.dataset.trainSize}`,
      });
    }
  }
}

/** What a sweep config file holds: a target entry may sample its tasks (`tasks`). */
const sweepFileSchema = z.strictObject(sweepFields).superRefine(refineSweep);

/**
 * The same fields with one task per target entry. Serve configs take their dataset and targets
 * from its shape: a server serves the targets it is given and samples none.
 */
export const sweepSchema = z.strictObject({ ...sweepFields, targets: z.array(target).min(1) }).superRefine(refineSweep);

/** A target's id when its spec gives none: the family, or family-index when a family repeats (serve configs use it too). */
export function defaultTargetId(family: string, index: number, all: { family: string }[]): string {
  return all.filter((t) => t.family === family).length > 1 ? `${family}-${index}` : family;
}

/** The targets one sampler entry became: ρ is averaged over its members (E_tasks) per seed. */
export interface TaskSet {
  /** The entry's id; members' ids are `${base}@${task}`. */
  base: string;
  family: string;
  sampler: TaskSamplerSpec;
  members: { id: string; task: TaskName }[];
}

type Parsed = z.output<typeof sweepFileSchema>;
export type SweepConfig = Omit<Parsed, 'targets'> & {
  /** Every target a cell may name, sampler entries expanded; each spec as its family's schema takes it. */
  targets: (ConfigTarget & { id: string })[];
  /** One per sampler entry in the config, in config order; empty when no target samples tasks. */
  taskSets: TaskSet[];
};

function formatIssues(issues: z.core.$ZodIssue[]): string {
  return issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('\n');
}

/** Validates a parsed JSON value; `source` names where it came from in errors. */
export function parseSweepConfig(value: unknown, source = 'config'): SweepConfig {
  const result = sweepFileSchema.safeParse(value);
  if (!result.success) throw new ConfigError(`${source} is not a valid sweep config:\n${formatIssues(result.error.issues)}`);
  const cfg = result.data;
  return { ...cfg, ...expandTargets(cfg.targets) };
}

export async function loadSweepConfig(path: string): Promise<SweepConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  const config = parseSweepConfig(json, path);
  // A pool path in a config file means a path beside that file, wherever the CLI was started.
  const base = dirname(resolve(path));
  return { ...config, side: config.side.map((s) => (typeof s.pool === 'object' ? { ...s, pool: { ...s.pool, path: resolve(base, s.pool.path) } } : s)) };
}
