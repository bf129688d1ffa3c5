import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { meanInterval } from '../aggregate.ts';
import { ConfigError } from '../config.ts';
import { provenance } from '../manifest.ts';
import { DEFAULT_EPSILONS, epsDeltaTable } from '../privacy.ts';
import { tableCsv, writeAtomic } from '../writers.ts';
import { EXPERIMENTS } from './index.ts';
import type { Experiment, ExperimentRow } from './types.ts';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const outerSchema = z.strictObject({
  experiment: z.string(),
  name: z.string().regex(NAME, 'letters, digits, ".", "_" and "-" only (it names the run folder)').optional(),
  description: z.string().optional(),
  params: z.record(z.string(), z.unknown()).default({}),
  /** ε values of the (ε, δ) table written beside the ρ curves. */
  epsilons: z.array(z.number().min(0).max(1)).min(1).optional(),
});

export interface ExperimentConfig {
  experiment: Experiment;
  name: string;
  description?: string;
  params: unknown;
  epsilons: number[];
}

/** A config file names an experiment instead of targets × attacks when it has an `experiment` field. */
export function isExperimentConfig(json: unknown): boolean {
  return typeof json === 'object' && json !== null && 'experiment' in json;
}

export function parseExperimentConfig(json: unknown, source: string, overrides: { seeds?: number[] } = {}): ExperimentConfig {
  const outer = outerSchema.safeParse(json);
  if (!outer.success) throw new ConfigError(`${source} is not a valid experiment config:\n${z.prettifyError(outer.error)}`);
  const experiment = EXPERIMENTS[outer.data.experiment];
  if (!experiment) {
    throw new ConfigError(`${source}: unknown experiment "${outer.data.experiment}"; known: ${Object.keys(EXPERIMENTS).join(', ')}`);
  }
  const raw = { ...outer.data.params, ...(overrides.seeds ? { seeds: overrides.seeds } : {}) };
  const params = experiment.schema.safeParse(raw);
  if (!params.success) {
    throw new ConfigError(`${source}: invalid params for experiment "${experiment.name}":\n${z.prettifyError(params.error)}`);
  }
  return {
    experiment,
    name: outer.data.name ?? experiment.name,
    description: outer.data.description,
    params: params.data,
    epsilons: outer.data.epsilons ?? [...DEFAULT_EPSILONS],
  };
}


export interface ExperimentCurvePoint {
  [column: string]: string | number | boolean | null;
}

/** The ρ values of each group × x (one per seed), in first-seen order. */
function groupRhos(rows: ExperimentRow[], spec: { x: string; by: string[] }): { keys: ExperimentRow; rhos: number[] }[] {
  const groups = new Map<string, { keys: ExperimentRow; rhos: number[] }>();
  for (const row of rows) {
    if (typeof row.rho !== 'number' || !Number.isFinite(row.rho)) continue;
    const keys: ExperimentRow = {};
    for (const column of [...spec.by, spec.x]) keys[column] = row[column] ?? null;
    const id = JSON.stringify(keys);
    const group = groups.get(id) ?? { keys, rhos: [] };
    group.rhos.push(row.rho);
    groups.set(id, group);
  }
  return [...groups.values()];
}

/** Mean ρ and its 95% t-interval over seeds, per group × x. */
export function experimentCurves(rows: ExperimentRow[], spec: { x: string; by: string[] }): ExperimentCurvePoint[] {
  return groupRhos(rows, spec).map(({ keys, rhos }) => {
    const { mean, low, high } = meanInterval(rhos);
    return { ...keys, seeds: rhos.length, rhoMean: mean, rhoLow: low, rhoHigh: high };
  });
}

/** δ̂ = P(ρ ≤ ε) over seeds with its Clopper–Pearson interval, per group × x × ε. */
export function experimentEpsDelta(rows: ExperimentRow[], spec: { x: string; by: string[] }, epsilons: readonly number[]): ExperimentRow[] {
  return epsDeltaTable(groupRhos(rows, spec).map(({ keys, rhos }) => ({ ...keys, rhos })), epsilons).map((row) => ({ ...row }) as ExperimentRow);
}

/** Tidy CSV with the union of the rows' columns, in first-seen order. */
export function rowsToCsv(rows: ExperimentRow[]): string {
  const columns: string[] = [];
  for (const row of rows) for (const c of Object.keys(row)) if (!columns.includes(c)) columns.push(c);
  return tableCsv(rows, columns);
}

export interface ExperimentRunOptions {
  resultsDir: string;
  runId?: string;
  log?(line: string): void;
}

export interface ExperimentRunResult {
  dir: string;
  rows: ExperimentRow[];
  summary: string[];
  curves: ExperimentCurvePoint[];
  epsDelta: ExperimentRow[];
}

/**
 * Runs one experiment into results/<run-id>/: experiment.json (status, provenance, params, rows,
 * summary, curves), rows.csv and curves.csv. A failure still leaves experiment.json saying so.
 */
export async function runExperiment(config: ExperimentConfig, options: ExperimentRunOptions): Promise<ExperimentRunResult> {
  const runId = options.runId ?? `${config.name}-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  if (!NAME.test(runId)) throw new ConfigError(`run id "${runId}" must be letters, digits, ".", "_" and "-"`);
  const dir = join(options.resultsDir, runId);
  await mkdir(dir, { recursive: true });
  const log = options.log ?? (() => {});
  const record = {
    runId,
    kind: 'experiment',
    experiment: config.experiment.name,
    name: config.name,
    description: config.description,
    status: 'running' as 'running' | 'finished' | 'failed',
    startedAt: new Date().toISOString(),
    finishedAt: undefined as string | undefined,
    seconds: undefined as number | undefined,
    ...provenance(),
    params: config.params,
    error: undefined as string | undefined,
  };
  const file = join(dir, 'experiment.json');
  await writeAtomic(file, JSON.stringify(record, null, 2) + '\n');
  const started = performance.now();
  try {
    const result = await config.experiment.run(config.params, { log });
    const spec = config.experiment.curves;
    const curves = spec ? experimentCurves(result.rows, spec) : [];
    const epsDelta = spec ? experimentEpsDelta(result.rows, spec, config.epsilons) : [];
    await writeAtomic(join(dir, 'rows.csv'), rowsToCsv(result.rows));
    if (curves.length) await writeAtomic(join(dir, 'curves.csv'), rowsToCsv(curves));
    if (epsDelta.length) await writeAtomic(join(dir, 'eps-delta.csv'), rowsToCsv(epsDelta));
    Object.assign(record, { status: 'finished', finishedAt: new Date().toISOString(), seconds: (performance.now() - started) / 1000 });
    const body = { ...record, summary: result.summary, curves, epsDelta: { level: 0.95, interval: 'Clopper–Pearson', epsilons: config.epsilons, rows: epsDelta }, rows: result.rows };
    await writeAtomic(file, JSON.stringify(body, null, 2) + '\n');
    return { dir, rows: result.rows, summary: result.summary, curves, epsDelta };
  } catch (err) {
    Object.assign(record, { status: 'failed', finishedAt: new Date().toISOString(), error: String((err as Error)?.stack ?? err) });
    await writeAtomic(file, JSON.stringify(record, null, 2) + '\n');
    throw err;
  }
}
