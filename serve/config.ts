import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError, defaultTargetId, DISCLOSURE_HELP, parseDisclosure, sweepSchema } from '../bench/config.ts';
import type { TargetSpec } from '../models/types.ts';
import type { ApiKey } from './keys.ts';

// The dataset and target schemas are the sweep config's own, so a target spec means the same model
// (and hits the same cache entry) in both.
const datasetSchema = sweepSchema.shape.dataset;
const targetsSchema = sweepSchema.shape.targets;

const keySchema = z.strictObject({
  name: z.string().regex(/^[\w.@+-]+$/, 'use letters, digits and . _ @ + - only (it is written to the ledger)'),
  /** Free text, e.g. where the key is used; never read by the server. */
  comment: z.string().optional(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the sha256 of the key as 64 lowercase hex digits (scripts/hash-key.ts prints it)'),
  disclosure: z.string().transform((text, ctx) => {
    const parsed = parseDisclosure(text);
    if (!parsed) {
      ctx.addIssue({ code: 'custom', message: `unknown disclosure "${text}": use ${DISCLOSURE_HELP}` });
      return z.NEVER;
    }
    return parsed;
  }),
  budget: z.number().int().nonnegative(),
  rateLimit: z.strictObject({
    requestsPerSecond: z.number().positive(),
    burst: z.number().int().positive(),
  }),
  models: z.union([z.literal('*'), z.array(z.string().min(1))]),
});

export const serveSchema = z
  .strictObject({
    description: z.string().optional(),
    port: z.number().int().min(0).max(65_535).default(0),
    host: z.string().min(1).default('127.0.0.1'),
    dataset: datasetSchema,
    targets: targetsSchema,
    keys: z.array(keySchema).min(1),
    /** JSONL file of answered requests; relative paths are against the config file's folder. */
    ledger: z.string().min(1),
    maxRowsPerRequest: z.number().int().positive().default(1024),
    maxBodyBytes: z.number().int().positive().default(16 * 1024 * 1024),
  })
  .superRefine((cfg, ctx) => {
    const ids = cfg.targets.map((t, i) => t.id ?? defaultTargetId(t.family, i, cfg.targets));
    const duplicates = (values: string[], path: string, what: string) => {
      const seen = new Set<string>();
      for (const v of values) {
        if (seen.has(v)) ctx.addIssue({ code: 'custom', path: [path], message: `duplicate ${what} "${v}"` });
        seen.add(v);
      }
    };
    duplicates(ids, 'targets', 'target id');
    duplicates(cfg.keys.map((k) => k.name), 'keys', 'key name');
    duplicates(cfg.keys.map((k) => k.sha256), 'keys', 'key hash');
    for (const [i, key] of cfg.keys.entries()) {
      if (key.models === '*') continue;
      for (const m of key.models) {
        if (!ids.includes(m)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'models'], message: `unknown model "${m}": the targets are ${ids.join(', ')}` });
      }
    }
    for (const [i, t] of cfg.targets.entries()) {
      if (t.trainSize > cfg.dataset.trainSize) {
        ctx.addIssue({ code: 'custom', path: ['targets', i, 'trainSize'], message: `${t.trainSize} exceeds dataset.trainSize ${cfg.dataset.trainSize}` });
      }
    }
  });

type Parsed = z.output<typeof serveSchema>;
export type ServeConfig = Omit<Parsed, 'targets' | 'keys'> & { targets: TargetSpec[]; keys: ApiKey[] };

function formatIssues(issues: z.core.$ZodIssue[]): string {
  return issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('\n');
}

/** Validates a parsed JSON value. `baseDir` resolves a relative ledger path. */
export function parseServeConfig(value: unknown, source = 'serve config', baseDir = process.cwd()): ServeConfig {
  const result = serveSchema.safeParse(value);
  if (!result.success) throw new ConfigError(`${source} is not a valid serve config:\n${formatIssues(result.error.issues)}`);
  const cfg = result.data;
  return {
    ...cfg,
    ledger: isAbsolute(cfg.ledger) ? cfg.ledger : resolve(baseDir, cfg.ledger),
    targets: cfg.targets.map((t, i) => ({ ...t, id: t.id ?? defaultTargetId(t.family, i, cfg.targets) })),
    keys: cfg.keys.map(({ comment: _comment, ...k }) => k),
  };
}

export async function loadServeConfig(path: string): Promise<ServeConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read serve config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseServeConfig(json, path, dirname(resolve(path)));
}
