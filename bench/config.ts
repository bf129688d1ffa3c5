import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { DATASETS, POOL_KINDS } from '../datasets/index.ts';
import type { TaskName } from '../datasets/tasks.ts';
import type { DatasetName, PoolKind } from '../datasets/types.ts';
import { targetSchemas } from '../models/targets/index.ts';
import { STUDENT_ARCHS, type TargetSpec } from '../models/types.ts';
import type { Disclosure } from '../serve/types.ts';

/** Thrown for any problem with a sweep config; the message names the file, the field and what is allowed. */
export class ConfigError extends Error {
  readonly name = 'ConfigError';
}

export const ATTACK_NAMES = [
  'knockoff', 'adaptive-knockoff', 'distillation', 'copycat', 'jbda',
  'active-random', 'active-uncertainty', 'active-margin', 'active-entropy', 'active-kcenter',
  'equation-solving', 'path-finding', 'lowd-meek', 'adaptive-retraining', 'uniform-retraining',
] as const;
export const BACKEND_NAMES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
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

// Each target family owns its schema (models/targets/<family>.ts), so a new family needs no edit here.
const [firstTarget, ...otherTargets] = targetSchemas as unknown as [z.ZodObject, ...z.ZodObject[]];
/** A spec as a config gives it: id optional, every default filled in (task included). */
type ConfigTarget = TargetSpec extends infer T ? (T extends TargetSpec ? Omit<T, 'id' | 'task'> & { id?: string; task: TaskName } : never) : never;
const target = z.discriminatedUnion('family', [firstTarget, ...otherTargets]) as unknown as z.ZodType<ConfigTarget>;

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

export const sweepSchema = z
  .strictObject({
    name: z.string().regex(/^[\w.-]+$/, 'use letters, digits and . _ - only (it names the run folder)'),
    description: z.string().optional(),
    dataset: z.strictObject({
      name: z.enum(DATASETS as [DatasetName, ...DatasetName[]]).default('mnist'),
      trainSize: count.default(10_000),
      poolSize: count.default(20_000),
      evalSize: count.max(10_000).default(2_000),
      seed: seed.default(1),
    }),
    targets: z.array(target).min(1),
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
    /** Cells in flight at once. In one process they share one tfjs backend, so >1 interleaves rather than parallelises. */
    concurrency: count.max(64).default(1),
  })
  .superRefine((cfg, ctx) => {
    const unique = (values: string[], path: string) => {
      const seen = new Set<string>();
      for (const v of values) {
        if (seen.has(v)) ctx.addIssue({ code: 'custom', path: [path], message: `duplicate name "${v}"` });
        seen.add(v);
      }
    };
    unique(cfg.side.map((s) => s.name), 'side');
    unique(cfg.targets.map((t, i) => t.id ?? defaultTargetId(t.family, i, cfg.targets)), 'targets');
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
    const targetIds = cfg.targets.map((t, i) => t.id ?? defaultTargetId(t.family, i, cfg.targets));
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
  });

/** A target's id when its spec gives none: the family, or family-index when a family repeats (serve configs use it too). */
export function defaultTargetId(family: string, index: number, all: { family: string }[]): string {
  return all.filter((t) => t.family === family).length > 1 ? `${family}-${index}` : family;
}

type Parsed = z.output<typeof sweepSchema>;
export type SweepConfig = Omit<Parsed, 'targets'> & { targets: (Parsed['targets'][number] & { id: string })[] };

function formatIssues(issues: z.core.$ZodIssue[]): string {
  return issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('\n');
}

/** Validates a parsed JSON value; `source` names where it came from in errors. */
export function parseSweepConfig(value: unknown, source = 'config'): SweepConfig {
  const result = sweepSchema.safeParse(value);
  if (!result.success) throw new ConfigError(`${source} is not a valid sweep config:\n${formatIssues(result.error.issues)}`);
  const cfg = result.data;
  return { ...cfg, targets: cfg.targets.map((t, i) => ({ ...t, id: t.id ?? defaultTargetId(t.family, i, cfg.targets) })) };
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
