import { stat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { toCurves, type Curve, type CurvePoint } from './aggregate.ts';
import { curveKey } from './grid.ts';
import type { Manifest } from './manifest.ts';
import { readCells, readRunJson, RunFolderError } from './writers.ts';

/*
 * Comparing two sweep runs, point by point (curve × budget), to gate a nightly job.
 *
 * Direction. ρ is what the attacker failed to copy: lower ρ = closer imitation. What counts as a
 * regression depends on which side the code under test is on:
 *   - 'attack' (default): rhobench's attacks are the code under test, so ρ going UP means an
 *     attack got worse at imitating: a regression.
 *   - 'defense': the target side is under test (a defended API, a coarser disclosure), so ρ going
 *     DOWN means the target leaks more: a regression.
 * Speed (seconds per cell) is lower-is-better either way.
 */

export type Direction = 'attack' | 'defense';

export interface CompareOptions {
  /** Largest change of mean ρ (absolute) that still counts as the same. */
  rhoTolerance: number;
  /** Largest relative slowdown of seconds per cell that still counts as the same: 0.5 = 50% slower. */
  speedTolerance: number;
  direction?: Direction;
  /**
   * A slowdown must also exceed this many seconds per cell to count: keeps cells that take a
   * fraction of a second from failing a nightly on timer noise. Default 0 (ratio alone).
   */
  speedFloorSeconds?: number;
  /** Compare even when the configs make rows incomparable (the differences become warnings). */
  force?: boolean;
}

export const DEFAULT_COMPARE_OPTIONS = {
  rhoTolerance: 0.02,
  speedTolerance: 0.5,
  direction: 'attack',
  speedFloorSeconds: 0,
  force: false,
} as const satisfies Required<CompareOptions>;

export type Verdict =
  | 'regressed-rho'
  | 'regressed-speed'
  /** The point had a ρ in base and has none in new (failed, or became not-applicable). */
  | 'regressed-status'
  | 'improved'
  | 'same'
  | 'only-in-base'
  | 'only-in-new';

export const REGRESSED_VERDICTS: readonly Verdict[] = ['regressed-rho', 'regressed-speed', 'regressed-status'];

/** One side of a row: the curve point's figures. */
export interface PointFigures {
  n: number;
  rhoMean: number | null;
  rhoLow: number | null;
  rhoHigh: number | null;
  secondsMean: number;
  queriesMean: number;
  status: CurvePoint['status'];
}

export interface ComparisonRow {
  /** curveKey: target|attack|student|side. */
  key: string;
  target: string;
  attack: string;
  student: string;
  side: string;
  budget: number;
  base: PointFigures | null;
  next: PointFigures | null;
  /** new ρ − base ρ; null unless both have a ρ. */
  deltaRho: number | null;
  /** new seconds per cell / base seconds per cell; null unless both have a ρ and base took time. */
  speedRatio: number | null;
  /**
   * Whether the two 95% intervals over seeds overlap. null when either side has fewer than two
   * seeds: a single seed has no interval, and a zero-width one would call every change "disjoint".
   */
  overlap: boolean | null;
  rhoChange: 'worse' | 'better' | 'same' | 'unknown';
  speedChange: 'slower' | 'faster' | 'same' | 'unknown';
  verdict: Verdict;
}

export interface Comparison {
  rows: ComparisonRow[];
  options: Required<Omit<CompareOptions, 'force'>>;
  /** Things the reader should know: speed not like-for-like, seeds differ, a run unfinished… */
  warnings: string[];
  /** Blocking config differences that `force` overrode (empty unless forced). */
  overridden: string[];
}

// ---------------------------------------------------------------------------------------------
// Loading a run folder

export { RunFolderError };


/** The two runs' configs differ in a way that makes rows incomparable. */
export class IncomparableRunsError extends Error {
  readonly name = 'IncomparableRunsError';
  constructor(readonly differences: string[]) {
    super(`the runs are not comparable (pass force to compare anyway):\n${differences.map((d) => `  ${d}`).join('\n')}`);
  }
}

export interface LoadedRun {
  dir: string;
  manifest: Manifest;
  curves: Curve[];
  /** Where the curves came from: rho.json, or rebuilt from cells.jsonl when rho.json is missing. */
  source: 'rho.json' | 'cells.jsonl';
  /** cells.jsonl ended in a line torn by a crash (dropped). */
  tornLine: boolean;
}

const nullableNumber = z.number().nullable();
const pointSchema = z.looseObject({
  budget: z.number(),
  n: z.number(),
  rhoMean: nullableNumber,
  rhoLow: nullableNumber,
  rhoHigh: nullableNumber,
  // Not compared; defaulted so a rho.json written before they existed still loads.
  agreementMean: nullableNumber.default(null),
  studentAccuracyMean: nullableNumber.default(null),
  queriesMean: z.number(),
  secondsMean: z.number(),
  status: z.enum(['ok', 'not-applicable', 'failed']),
});
const curveSchema = z.looseObject({
  target: z.string(),
  attack: z.string(),
  student: z.string(),
  side: z.string(),
  targetAccuracy: z.number(),
  points: z.array(pointSchema),
});
const rhoFileSchema = z.looseObject({ curves: z.array(curveSchema) });

// Only what comparing and tracking read; the rest of a manifest passes through untouched.
const manifestSchema = z.looseObject({
  runId: z.string(),
  status: z.string(),
  config: z.looseObject({
    name: z.string(),
    dataset: z.looseObject({ name: z.string(), evalSize: z.number() }),
    targets: z.array(z.looseObject({ id: z.string() })),
    students: z.array(z.looseObject({ arch: z.string() })),
    side: z.array(z.looseObject({ name: z.string() })),
    seeds: z.array(z.number()),
  }),
  backend: z.looseObject({ name: z.string(), gpu: z.boolean() }),
});


async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}


/**
 * A sweep run folder (results/<run-id>/): its manifest and ρ curves. The curves come from rho.json,
 * or, when rho.json is missing (a run killed before its aggregates were written), from cells.jsonl.
 */
export async function loadRun(dir: string): Promise<LoadedRun> {
  if (!(await exists(dir))) throw new RunFolderError(`run folder ${dir} does not exist`);
  const manifestPath = join(dir, 'manifest.json');
  if (!(await exists(manifestPath))) throw new RunFolderError(`${dir} has no manifest.json: is it a sweep run folder (results/<run-id>/)?`);
  const manifest = (await readRunJson(manifestPath, manifestSchema, { what: 'a sweep manifest' })) as unknown as Manifest;
  const rhoPath = join(dir, 'rho.json');
  if (await exists(rhoPath)) {
    const { curves } = await readRunJson(rhoPath, rhoFileSchema, { what: 'a rho.json of curves' });
    return { dir, manifest, curves: curves as Curve[], source: 'rho.json', tornLine: false };
  }
  const cellsPath = join(dir, 'cells.jsonl');
  if (!(await exists(cellsPath))) throw new RunFolderError(`${dir} has neither rho.json nor cells.jsonl: no results to compare`);
  let read: Awaited<ReturnType<typeof readCells>>;
  try {
    read = await readCells(cellsPath);
  } catch (err) {
    throw new RunFolderError(`${cellsPath} is corrupt: ${(err as Error).message}`);
  }
  return { dir, manifest, curves: toCurves(read.cells), source: 'cells.jsonl', tornLine: read.tornLine };
}

// ---------------------------------------------------------------------------------------------
// Config differences

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

interface Difference {
  path: string;
  a: unknown;
  b: unknown;
}

/** Leaf-by-leaf differences of two JSON values. */
function jsonDiff(a: unknown, b: unknown, path: string): Difference[] {
  if (isRecord(a) && isRecord(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => jsonDiff(a[k], b[k], `${path}.${k}`));
  }
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) return a.flatMap((v, i) => jsonDiff(v, b[i], `${path}[${i}]`));
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path, a, b }];
}

function describe(d: Difference): string {
  const show = (v: unknown) => (v === undefined ? '(absent)' : JSON.stringify(v));
  return `${d.path}: ${show(d.a)} → ${show(d.b)}`;
}

/** Entries named in both lists (by `id`), diffed; entries in one list only are left to the rows. */
function diffById<T extends Record<string, unknown>>(a: readonly T[], b: readonly T[], idOf: (t: T) => string, path: string): Difference[] {
  const other = new Map(b.map((t) => [idOf(t), t]));
  return a.flatMap((t) => {
    const match = other.get(idOf(t));
    return match ? jsonDiff(t, match, `${path}[${idOf(t)}]`) : [];
  });
}

export interface ConfigDifferences {
  /** Differences that change what a shared row measures: its ρ would not be comparable. */
  blocking: string[];
  /** Differences that leave ρ comparable but not seconds per cell (backend, machine, transport…). */
  speed: string[];
  /** Worth saying, not blocking (seeds, names, fields one run's rhobench did not record). */
  other: string[];
}

type ManifestLike = Pick<Manifest, 'config' | 'backend'> & Partial<Pick<Manifest, 'machine' | 'status' | 'runId'>>;

const asRecords = (xs: readonly unknown[]) => xs as readonly Record<string, unknown>[];

/**
 * What makes two runs' shared rows incomparable: the dataset (its name, sizes, split seed: evalSize
 * sets what ρ is measured on), and any target, student or side-information level that both runs
 * name but define differently (same id, other hyperparameters). Targets, attacks, sides and budgets
 * present in one run only are not blocking: they show up as only-in-base / only-in-new rows.
 * A field present in one manifest only was added to the config schema between the two rhobench
 * versions, and the older run used what is now its default: reported, not blocking.
 */
export function configDifferences(base: ManifestLike, next: ManifestLike): ConfigDifferences {
  const a = base.config;
  const b = next.config;
  const measured = [
    ...jsonDiff(a.dataset, b.dataset, 'dataset'),
    ...diffById(asRecords(a.targets), asRecords(b.targets), (t) => String(t.id), 'targets'),
    ...diffById(asRecords(a.students), asRecords(b.students), (s) => String(s.arch), 'students'),
    ...diffById(asRecords(a.side), asRecords(b.side), (s) => String(s.name), 'side'),
  ];
  const recordedByOneOnly = (d: Difference) => d.a === undefined || d.b === undefined;
  const speed = [
    ...jsonDiff(base.backend?.name, next.backend?.name, 'backend.name'),
    ...jsonDiff(base.backend?.gpu, next.backend?.gpu, 'backend.gpu'),
    ...jsonDiff(a.concurrency, b.concurrency, 'config.concurrency'),
    // An older manifest without cellsPerThread ran one cell per thread ('auto' then, on CPUs).
    ...jsonDiff(a.cellsPerThread ?? 'auto', b.cellsPerThread ?? 'auto', 'config.cellsPerThread'),
    // An older manifest without transport ran in process, the only transport it had.
    ...jsonDiff(a.transport ?? 'inprocess', b.transport ?? 'inprocess', 'config.transport'),
    ...(base.machine && next.machine
      ? [...jsonDiff(base.machine.cpuModel, next.machine.cpuModel, 'machine.cpuModel'), ...jsonDiff(base.machine.cpus, next.machine.cpus, 'machine.cpus')]
      : []),
  ];
  return {
    blocking: measured.filter((d) => !recordedByOneOnly(d)).map(describe),
    speed: speed.map(describe),
    other: [
      ...jsonDiff(a.name, b.name, 'config.name').map(describe),
      ...jsonDiff(a.seeds, b.seeds, 'config.seeds').map(describe),
      ...measured.filter(recordedByOneOnly).map((d) => `${describe(d)} (recorded by one run only; assumed the default)`),
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Comparing

function figures(p: CurvePoint): PointFigures {
  return { n: p.n, rhoMean: p.rhoMean, rhoLow: p.rhoLow, rhoHigh: p.rhoHigh, secondsMean: p.secondsMean, queriesMean: p.queriesMean, status: p.status };
}

function keyOf(c: Curve): string {
  // curveKey reads only the four curve fields; budget and seed are placeholders.
  return curveKey({ target: c.target, attack: c.attack, student: c.student, side: c.side, budget: 0, seed: 0 });
}

function hasRho(p: PointFigures | null): p is PointFigures & { rhoMean: number } {
  return p !== null && p.rhoMean !== null && Number.isFinite(p.rhoMean);
}

/** The verdict for one point present in both runs. Pure: exported for tests and other gates. */
export function judgePoint(
  base: PointFigures,
  next: PointFigures,
  options: Pick<CompareOptions, 'rhoTolerance' | 'speedTolerance' | 'direction' | 'speedFloorSeconds'>,
): Pick<ComparisonRow, 'deltaRho' | 'speedRatio' | 'overlap' | 'rhoChange' | 'speedChange' | 'verdict'> {
  const sign = (options.direction ?? 'attack') === 'attack' ? 1 : -1;
  const floor = options.speedFloorSeconds ?? 0;
  if (!hasRho(base) || !hasRho(next)) {
    const verdict: Verdict = hasRho(base) ? 'regressed-status' : hasRho(next) ? 'improved' : 'same';
    const rhoChange = verdict === 'regressed-status' ? 'worse' : verdict === 'improved' ? 'better' : 'unknown';
    return { deltaRho: null, speedRatio: null, overlap: null, rhoChange, speedChange: 'unknown', verdict };
  }
  const deltaRho = next.rhoMean - base.rhoMean;
  // A hair of float slack so a change of exactly the tolerance counts as within it.
  const eps = 1e-12;
  const rhoChange = sign * deltaRho > options.rhoTolerance + eps ? 'worse' : sign * deltaRho < -options.rhoTolerance - eps ? 'better' : 'same';
  const speedRatio = base.secondsMean > 0 ? next.secondsMean / base.secondsMean : null;
  const speedChange =
    speedRatio === null
      ? 'unknown'
      : next.secondsMean > base.secondsMean * (1 + options.speedTolerance) && next.secondsMean - base.secondsMean > floor
        ? 'slower'
        : base.secondsMean > next.secondsMean * (1 + options.speedTolerance) && base.secondsMean - next.secondsMean > floor
          ? 'faster'
          : 'same';
  const withInterval = base.n > 1 && next.n > 1 && base.rhoLow !== null && base.rhoHigh !== null && next.rhoLow !== null && next.rhoHigh !== null;
  const overlap = withInterval ? (base.rhoLow as number) <= (next.rhoHigh as number) && (next.rhoLow as number) <= (base.rhoHigh as number) : null;
  const verdict: Verdict =
    rhoChange === 'worse' ? 'regressed-rho' : speedChange === 'slower' ? 'regressed-speed' : rhoChange === 'better' || speedChange === 'faster' ? 'improved' : 'same';
  return { deltaRho, speedRatio, overlap, rhoChange, speedChange, verdict };
}

function checkOptions(o: CompareOptions): void {
  const bad = (name: string, v: unknown) => {
    throw new RangeError(`${name} must be a finite number ≥ 0, got ${JSON.stringify(v)}`);
  };
  if (!(Number.isFinite(o.rhoTolerance) && o.rhoTolerance >= 0)) bad('rhoTolerance', o.rhoTolerance);
  if (!(Number.isFinite(o.speedTolerance) && o.speedTolerance >= 0)) bad('speedTolerance', o.speedTolerance);
  if (o.speedFloorSeconds !== undefined && !(Number.isFinite(o.speedFloorSeconds) && o.speedFloorSeconds >= 0)) bad('speedFloorSeconds', o.speedFloorSeconds);
  if (o.direction !== undefined && o.direction !== 'attack' && o.direction !== 'defense') {
    throw new RangeError(`direction must be "attack" or "defense", got ${JSON.stringify(o.direction)}`);
  }
}

/**
 * Rows for every curve × budget in either run, in base order (curves only in new come last).
 * Throws IncomparableRunsError when the configs make shared rows incomparable, unless `force`.
 */
export function compareRuns(
  base: { manifest: ManifestLike; curves: Curve[] },
  next: { manifest: ManifestLike; curves: Curve[] },
  opts: CompareOptions,
): Comparison {
  checkOptions(opts);
  const options = {
    rhoTolerance: opts.rhoTolerance,
    speedTolerance: opts.speedTolerance,
    direction: opts.direction ?? DEFAULT_COMPARE_OPTIONS.direction,
    speedFloorSeconds: opts.speedFloorSeconds ?? DEFAULT_COMPARE_OPTIONS.speedFloorSeconds,
  };
  const diffs = configDifferences(base.manifest, next.manifest);
  if (diffs.blocking.length && !opts.force) throw new IncomparableRunsError(diffs.blocking);
  const warnings = [
    ...diffs.blocking.map((d) => `forced past a config difference: ${d}`),
    ...diffs.speed.map((d) => `seconds per cell are not like-for-like: ${d}`),
    ...diffs.other.map((d) => `config differs: ${d}`),
  ];
  for (const [label, run] of [['base', base], ['new', next]] as const) {
    const status = run.manifest.status;
    if (status && status !== 'finished') warnings.push(`the ${label} run is ${status}: its missing points show as only-in-${label === 'base' ? 'new' : 'base'}`);
  }

  const baseByKey = new Map(base.curves.map((c) => [keyOf(c), c]));
  const nextByKey = new Map(next.curves.map((c) => [keyOf(c), c]));
  const keys = [...new Set([...baseByKey.keys(), ...nextByKey.keys()])];
  const rows: ComparisonRow[] = [];
  for (const key of keys) {
    const b = baseByKey.get(key);
    const n = nextByKey.get(key);
    const { target, attack, student, side } = (b ?? n) as Curve;
    const budgets = [...new Set([...(b?.points ?? []), ...(n?.points ?? [])].map((p) => p.budget))].sort((x, y) => x - y);
    for (const budget of budgets) {
      const bp = b?.points.find((p) => p.budget === budget);
      const np = n?.points.find((p) => p.budget === budget);
      const head = { key, target, attack, student, side, budget, base: bp ? figures(bp) : null, next: np ? figures(np) : null };
      if (!bp || !np) {
        const verdict: Verdict = bp ? 'only-in-base' : 'only-in-new';
        rows.push({ ...head, deltaRho: null, speedRatio: null, overlap: null, rhoChange: 'unknown', speedChange: 'unknown', verdict });
      } else {
        rows.push({ ...head, ...judgePoint(figures(bp), figures(np), options) });
      }
    }
  }
  return { rows, options, warnings, overridden: opts.force ? diffs.blocking : [] };
}

/** Loads two run folders and compares them. */
export async function compareRunDirs(baseDir: string, nextDir: string, opts: CompareOptions): Promise<Comparison> {
  const [base, next] = await Promise.all([loadRun(baseDir), loadRun(nextDir)]);
  const comparison = compareRuns(base, next, opts);
  for (const [label, run] of [['base', base], ['new', next]] as const) {
    if (run.source === 'cells.jsonl') comparison.warnings.push(`the ${label} run has no rho.json: curves rebuilt from cells.jsonl`);
    if (run.tornLine) comparison.warnings.push(`the ${label} run's cells.jsonl ended in a torn line (dropped)`);
  }
  return comparison;
}

export function isRegressed(row: ComparisonRow): boolean {
  return REGRESSED_VERDICTS.includes(row.verdict);
}

/**
 * 0 when no row regressed, 1 when some did. Rows only in base are not regressions by default (a
 * config may drop a budget on purpose); `failOnMissing` counts them too, for a nightly that must
 * notice an interrupted run.
 */
export function comparisonExitCode(rows: readonly ComparisonRow[], opts: { failOnMissing?: boolean } = {}): 0 | 1 {
  return rows.some((r) => isRegressed(r) || (opts.failOnMissing && r.verdict === 'only-in-base')) ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Formatting

function rhoText(p: PointFigures | null): string {
  if (!p) return '—';
  if (p.rhoMean === null) return p.status === 'not-applicable' ? 'n/a' : 'FAILED';
  const mean = p.rhoMean.toFixed(3);
  return p.n > 1 && p.rhoLow !== null && p.rhoHigh !== null ? `${mean} [${p.rhoLow.toFixed(3)}, ${p.rhoHigh.toFixed(3)}]` : mean;
}

function secondsText(p: PointFigures | null): string {
  return p ? p.secondsMean.toFixed(2) : '—';
}

function signed(x: number | null, digits: number): string {
  if (x === null) return '';
  const text = x.toFixed(digits);
  return x > 0 && Number(text) !== 0 ? `+${text}` : text;
}

/** Counts by verdict, and the one-line summary the table ends with. */
export function summarize(rows: readonly ComparisonRow[]): { regressed: number; byVerdict: Record<Verdict, number>; line: string } {
  const byVerdict = { 'regressed-rho': 0, 'regressed-speed': 0, 'regressed-status': 0, improved: 0, same: 0, 'only-in-base': 0, 'only-in-new': 0 } as Record<Verdict, number>;
  for (const r of rows) byVerdict[r.verdict]++;
  const regressed = REGRESSED_VERDICTS.reduce((a, v) => a + byVerdict[v], 0);
  const line =
    `${regressed} regressed (ρ ${byVerdict['regressed-rho']}, speed ${byVerdict['regressed-speed']}, status ${byVerdict['regressed-status']}), ` +
    `${byVerdict.improved} improved, ${byVerdict.same} same, ${byVerdict['only-in-base']} only in base, ${byVerdict['only-in-new']} only in new`;
  return { regressed, byVerdict, line };
}

/**
 * A fixed-width table, one line per curve × budget in curve order (a curve's budgets read top to
 * bottom), the verdict last; then the summary line, the tolerances and any warnings. ρ is shown as
 * mean [95% interval over seeds] when there are several seeds.
 */
export function formatComparison(rows: readonly ComparisonRow[], notes: { options?: Comparison['options']; warnings?: readonly string[] } = {}): string {
  if (rows.length === 0) return '(no curve points in either run)';
  const showStudent = new Set(rows.map((r) => r.student)).size > 1;
  const head = ['target', 'attack', 'side', ...(showStudent ? ['student'] : []), 'budget', 'base ρ', 'new ρ', 'Δρ', 'base s', 'new s', 'speed', 'overlap', 'verdict'];
  const firstNumeric = showStudent ? 4 : 3;
  const body = rows.map((r) => [
    r.target,
    r.attack,
    r.side,
    ...(showStudent ? [r.student] : []),
    String(r.budget),
    rhoText(r.base),
    rhoText(r.next),
    signed(r.deltaRho, 3),
    secondsText(r.base),
    secondsText(r.next),
    r.speedRatio === null ? '' : `×${r.speedRatio.toFixed(2)}`,
    r.overlap === null ? '' : r.overlap ? 'yes' : 'no',
    r.verdict,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
  const numeric = (i: number) => i >= firstNumeric && i < head.length - 2;
  const line = (cells: string[]) => cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  const out = [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line), '', summarize(rows).line];
  if (notes.options) {
    const o = notes.options;
    const rule = o.direction === 'attack' ? 'ρ up = worse (attacks under test)' : 'ρ down = worse (defenses under test)';
    const floor = o.speedFloorSeconds > 0 ? ` and ≥ ${o.speedFloorSeconds} s` : '';
    out.push(`tolerances: |Δρ| ≤ ${o.rhoTolerance}, ${rule}; slower by ≤ ${Math.round(o.speedTolerance * 100)}%${floor}`);
  }
  for (const w of notes.warnings ?? []) out.push(`warning: ${w}`);
  return out.join('\n');
}
