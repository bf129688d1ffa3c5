import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { z } from 'zod';
import { toCurves, toEpsDelta, toTaskCurves, type TaskCurve, type TaskGroup } from './aggregate.ts';
import { DEFAULT_EPSILONS } from './privacy.ts';
import type { CellResult } from './types.ts';

export const CSV_COLUMNS = [
  'target', 'task', 'attack', 'student', 'side', 'budget', 'seed', 'status', 'rho', 'agreement',
  'studentAccuracy', 'targetAccuracy', 'queries', 'seconds', 'backend', 'gpu', 'error',
] as const satisfies readonly (keyof CellResult)[];

function csvField(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Tidy CSV: one row per record, one column per named field (pandas, R and spreadsheets read it as is). */
export function tableCsv<T extends object>(rows: readonly T[], columns: readonly (keyof T & string)[]): string {
  const lines = [columns.join(',')];
  for (const r of rows) lines.push(columns.map((c) => csvField(r[c])).join(','));
  return lines.join('\n') + '\n';
}

/** One row per cell. */
export function toCsv(results: CellResult[]): string {
  return tableCsv(results, CSV_COLUMNS);
}

export const TASK_CURVE_COLUMNS = [
  'target', 'family', 'attack', 'student', 'side', 'budget', 'tasks', 'n', 'status', 'rhoMean', 'rhoLow', 'rhoHigh', 'targetAccuracyMean',
] as const;

/** One row per task-averaged curve point. */
export function taskCurvesCsv(curves: readonly TaskCurve[]): string {
  const rows = curves.flatMap(({ points, ...curve }) => points.map(({ rhoBySeed: _s, byTask: _t, ...p }) => ({ ...curve, ...p })));
  return tableCsv(rows, TASK_CURVE_COLUMNS);
}

export const EPS_DELTA_COLUMNS = [
  'target', 'tasks', 'attack', 'student', 'side', 'budget', 'epsilon', 'trials', 'successes', 'deltaHat', 'deltaLow', 'deltaHigh',
] as const;

/** What writeAggregates needs beyond the cells: the config's task sets and ε grid. */
export interface AggregateOptions {
  taskSets?: readonly TaskGroup[];
  epsilons?: readonly number[];
}

/** Write-then-rename, so a reader (or a crash) never sees half a file. */
export async function writeAtomic(path: string, text: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

/** A run folder file that is missing, unreadable or malformed; the message names the file. */
export class RunFolderError extends Error {
  readonly name = 'RunFolderError';
}

export interface ReadRunJsonOptions {
  /** A missing file gives undefined instead of an error. */
  optional?: boolean;
  /** What the file should be, for the message when it is not (e.g. "a sweep manifest"). */
  what?: string;
}

/** Reads and validates a JSON file of a run folder; every failure is a RunFolderError naming the file. */
export async function readRunJson<T>(path: string, schema: z.ZodType<T>, opts: ReadRunJsonOptions & { optional: true }): Promise<T | undefined>;
export async function readRunJson<T>(path: string, schema: z.ZodType<T>, opts?: ReadRunJsonOptions & { optional?: false }): Promise<T>;
export async function readRunJson<T>(path: string, schema: z.ZodType<T>, opts: ReadRunJsonOptions = {}): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && opts.optional) return undefined;
    throw new RunFolderError(code === 'ENOENT' ? `${path} is missing` : `cannot read ${path}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new RunFolderError(`${path} is not valid JSON (corrupt: ${(err as Error).message}); was the run killed while writing it?`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new RunFolderError(`${path} ${opts.what ? `is not ${opts.what}` : 'does not have the expected shape'}: ${issues.join('; ')}`);
  }
  return parsed.data;
}

/**
 * Reads cells.jsonl. A line that does not parse can only be the last one, torn by a crash
 * mid-write: it is dropped and reported, never merged. A bad line elsewhere is an error.
 */
export async function readCells(path: string): Promise<{ cells: CellResult[]; tornLine: boolean }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { cells: [], tornLine: false };
    throw err;
  }
  const lines = text.split('\n');
  const cells: CellResult[] = [];
  let tornLine = false;
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      cells.push(JSON.parse(line) as CellResult);
    } catch {
      const isLast = lines.slice(i + 1).every((l) => !l.trim());
      if (!isLast) throw new Error(`${path}: line ${i + 1} is not valid JSON`);
      tornLine = true;
    }
  });
  return { cells, tornLine };
}

/** The files of one run directory; cells are appended as they finish so a crash loses at most the cell in flight. */
export class RunFiles {
  constructor(readonly dir: string) {}

  get cellsPath(): string {
    return join(this.dir, 'cells.jsonl');
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  async appendCell(result: CellResult): Promise<void> {
    await appendFile(this.cellsPath, JSON.stringify(result) + '\n');
  }

  /**
   * Replaces cells.jsonl with exactly these cells (write-then-rename). A resume uses it to drop a
   * torn last line and records it will run again before appending, so no line is ever merged
   * with a torn one and each cell appears once.
   */
  async rewriteCells(results: readonly CellResult[]): Promise<void> {
    await writeAtomic(this.cellsPath, results.map((r) => JSON.stringify(r) + '\n').join(''));
  }

  async writeManifest(manifest: unknown): Promise<void> {
    await writeAtomic(join(this.dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  }

  /**
   * From every cell so far: rho.csv and rho.json (curves per target, and `taskCurves` averaged
   * over each sampled task set), task-curves.csv when tasks were sampled, and the (ε, δ) tables
   * eps-delta.json and eps-delta.csv.
   */
  async writeAggregates(results: CellResult[], opts: AggregateOptions = {}): Promise<void> {
    const taskSets = opts.taskSets ?? [];
    const epsilons = opts.epsilons ?? DEFAULT_EPSILONS;
    await writeAtomic(join(this.dir, 'rho.csv'), toCsv(results));
    const curves = toCurves(results);
    const taskCurves = toTaskCurves(results, taskSets);
    await writeAtomic(join(this.dir, 'rho.json'), JSON.stringify({ curves, taskCurves }, null, 2) + '\n');
    if (taskSets.length) await writeAtomic(join(this.dir, 'task-curves.csv'), taskCurvesCsv(taskCurves));
    const rows = toEpsDelta(results, taskSets, epsilons);
    const epsDelta = { level: 0.95, interval: 'Clopper–Pearson', meaning: 'deltaHat = fraction of seeds with rho ≤ epsilon', epsilons, rows };
    await writeAtomic(join(this.dir, 'eps-delta.json'), JSON.stringify(epsDelta, null, 2) + '\n');
    await writeAtomic(join(this.dir, 'eps-delta.csv'), tableCsv(rows, EPS_DELTA_COLUMNS));
  }
}
