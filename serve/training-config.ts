import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../bench/config.ts';
import { logGrid } from '../models/learners/cv.ts';
import { LEARNERS, getLearner } from '../models/learners/index.ts';
import type { Rows64 } from '../models/learners/types.ts';
import { gaussians, rng } from '../models/seed.ts';
import { TrainingService, type TrainingServiceOptions } from './training.ts';
import type { TrainingServerOptions } from './training-server.ts';

/**
 * A learning-service config (see serve/training-example.json): which learner the provider runs,
 * on what private data, under which protocol, what it releases and how much it answers.
 */

const gaussianData = z.strictObject({
  /** Standard normal features: the provider's private rows X_B. */
  kind: z.literal('gaussian'),
  n: z.number().int().min(1).max(1_000_000),
  d: z.number().int().min(1).max(10_000),
  seed: z.number().int().default(1),
});

const lambdaGrid = z.union([
  z.array(z.number().nonnegative()),
  z.strictObject({ logGrid: z.strictObject({ lo: z.number(), hi: z.number(), count: z.number().int().min(1).max(1000) }) }),
]);

const capValue = z.number().int().nonnegative();

export const trainingServeSchema = z
  .strictObject({
    description: z.string().optional(),
    port: z.number().int().min(0).max(65_535).default(0),
    host: z.string().min(1).default('127.0.0.1'),
    learner: z.string().refine((name) => Object.hasOwn(LEARNERS, name), { message: `unknown learner; known: ${Object.keys(LEARNERS).join(', ')}` }),
    /** The provider's private rows; leave out for a service that trains only on the user's rows. */
    data: gaussianData.optional(),
    /** Whether a fit may bring its own rows. */
    acceptsData: z.boolean().default(false),
    protocol: z.enum(['I', 'II']),
    /** Protocol I's secret λ grid: a list, or {logGrid: {lo, hi, count}} in log10. */
    lambdas: lambdaGrid.default([]),
    folds: z.number().int().min(2).default(5),
    seed: z.number().int().default(1),
    releases: z.array(z.enum(['fitted', 'handle', 'params'])).min(1),
    /** k₁ fits and k₂ predicted rows; a cap left out is unlimited. */
    caps: z.strictObject({ fits: capValue.optional(), rows: capValue.optional() }).default({}),
    /** sha256 of the bearer key (scripts/hash-key.ts prints it); left out, the service is open. */
    keySha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the sha256 of the key as 64 lowercase hex digits (scripts/hash-key.ts prints it)').optional(),
    maxBodyBytes: z.number().int().positive().default(16 * 1024 * 1024),
  })
  .superRefine((cfg, ctx) => {
    if (!cfg.data && !cfg.acceptsData) ctx.addIssue({ code: 'custom', path: ['data'], message: 'give the provider data, or set acceptsData: true' });
    const grid = Array.isArray(cfg.lambdas) ? cfg.lambdas : cfg.lambdas.logGrid;
    if (cfg.protocol === 'I' && Array.isArray(grid) && grid.length === 0) ctx.addIssue({ code: 'custom', path: ['lambdas'], message: 'Protocol I needs a λ grid to cross-validate' });
    if (cfg.protocol === 'II' && (!Array.isArray(grid) || grid.length > 0)) ctx.addIssue({ code: 'custom', path: ['lambdas'], message: 'Protocol II takes λ from the user; leave lambdas out' });
    if (cfg.protocol === 'I' && cfg.data && cfg.data.n < cfg.folds) ctx.addIssue({ code: 'custom', path: ['data', 'n'], message: `${cfg.folds}-fold cross-validation needs at least ${cfg.folds} rows` });
    if (new Set(cfg.releases).size !== cfg.releases.length) ctx.addIssue({ code: 'custom', path: ['releases'], message: 'a release is listed twice' });
  });

export type TrainingServeConfig = z.output<typeof trainingServeSchema>;

/** n rows of d standard normal features from the seed. */
export function gaussianRows(n: number, d: number, seed: number): Rows64 {
  return { x: gaussians(n * d, rng(seed, 'training-data')), n, d };
}

export function trainingServiceOptions(cfg: TrainingServeConfig): TrainingServiceOptions {
  const lambdas = Array.isArray(cfg.lambdas) ? cfg.lambdas : logGrid(cfg.lambdas.logGrid.lo, cfg.lambdas.logGrid.hi, cfg.lambdas.logGrid.count);
  return {
    learner: getLearner(cfg.learner),
    data: cfg.data && gaussianRows(cfg.data.n, cfg.data.d, cfg.data.seed),
    acceptsData: cfg.acceptsData,
    protocol: cfg.protocol,
    lambdas,
    folds: cfg.folds,
    seed: cfg.seed,
    releases: cfg.releases,
    caps: cfg.caps,
  };
}

/** The service and the server options a config describes, ready for startTrainingServer. */
export function buildTrainingService(cfg: TrainingServeConfig): { service: TrainingService; server: TrainingServerOptions } {
  return {
    service: new TrainingService(trainingServiceOptions(cfg)),
    server: { port: cfg.port, host: cfg.host, maxBodyBytes: cfg.maxBodyBytes, keySha256: cfg.keySha256 },
  };
}

function formatIssues(issues: z.core.$ZodIssue[]): string {
  return issues.map((i) => `  ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('\n');
}

export function parseTrainingServeConfig(value: unknown, source = 'training serve config'): TrainingServeConfig {
  const result = trainingServeSchema.safeParse(value);
  if (!result.success) throw new ConfigError(`${source} is not a valid learning-service config:\n${formatIssues(result.error.issues)}`);
  return result.data;
}

export async function loadTrainingServeConfig(path: string): Promise<TrainingServeConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read learning-service config ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseTrainingServeConfig(json, path);
}
