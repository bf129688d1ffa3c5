import { curveKey } from './grid.ts';
import { DEFAULT_EPSILONS, epsDeltaTable } from './privacy.ts';
import type { CellResult, CellStatus } from './types.ts';

export interface CurvePoint {
  budget: number;
  /** Seeds that produced a ρ at this budget. */
  n: number;
  rhoMean: number | null;
  /** 95% interval of the mean over seeds (Student t); equal to the mean when n = 1. */
  rhoLow: number | null;
  rhoHigh: number | null;
  agreementMean: number | null;
  studentAccuracyMean: number | null;
  queriesMean: number;
  secondsMean: number;
  /** 'ok' if any seed succeeded, else the status the seeds shared (or 'failed'). */
  status: CellStatus;
}

export interface Curve {
  target: string;
  attack: string;
  student: string;
  side: string;
  targetAccuracy: number;
  points: CurvePoint[];
}

// Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom; beyond, the normal's.
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11,
  2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

export function tQuantile975(df: number): number {
  if (df < 1) return NaN;
  return df <= T975.length ? T975[df - 1] : 1.96;
}

/** Mean and 95% t-interval of the mean. */
export function meanInterval(values: number[]): { mean: number; low: number; high: number } {
  const n = values.length;
  if (n === 0) return { mean: NaN, low: NaN, high: NaN };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n === 1) return { mean, low: mean, high: mean };
  const variance = values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1);
  const half = tQuantile975(n - 1) * Math.sqrt(variance / n);
  return { mean, low: mean - half, high: mean + half };
}

function meanOf(values: (number | null)[]): number | null {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v));
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}

/** Groups cell results into ρ-versus-budget curves, one per (target, attack, student, side). */
export function toCurves(results: CellResult[]): Curve[] {
  const groups = new Map<string, CellResult[]>();
  for (const r of results) {
    const key = curveKey(r);
    const list = groups.get(key);
    if (list) list.push(r);
    else groups.set(key, [r]);
  }
  return [...groups.values()].map((rows) => {
    const budgets = [...new Set(rows.map((r) => r.budget))].sort((a, b) => a - b);
    const points = budgets.map((budget): CurvePoint => {
      const at = rows.filter((r) => r.budget === budget);
      const ok = at.filter((r) => r.status === 'ok' && r.rho !== null);
      const ci = ok.length ? meanInterval(ok.map((r) => r.rho as number)) : null;
      const statuses = new Set(at.map((r) => r.status));
      return {
        budget,
        n: ok.length,
        rhoMean: ci ? ci.mean : null,
        rhoLow: ci ? ci.low : null,
        rhoHigh: ci ? ci.high : null,
        agreementMean: meanOf(ok.map((r) => r.agreement)),
        studentAccuracyMean: meanOf(ok.map((r) => r.studentAccuracy)),
        queriesMean: meanOf(at.map((r) => r.queries)) ?? 0,
        secondsMean: meanOf(at.map((r) => r.seconds)) ?? 0,
        status: ok.length ? 'ok' : statuses.size === 1 ? [...statuses][0] : 'failed',
      };
    });
    const { target, attack, student, side, targetAccuracy } = rows[0];
    return { target, attack, student, side, targetAccuracy, points };
  });
}

/** A sampled task set as aggregation needs it (config.ts's TaskSet satisfies it). */
export interface TaskGroup {
  base: string;
  family: string;
  members: readonly { id: string; task: string }[];
}

/**
 * One curve point's per-seed ρ values: the cell's ρ, or for a sampled task set the mean over its
 * tasks (E_tasks). A seed counts for a task set only when every task has a ρ there, so a failed
 * or unfinished task cannot tilt the average towards the tasks that happened to finish.
 */
export interface SeedRhos {
  /** The target id, or the task set's base id. */
  target: string;
  /** Tasks averaged per seed: 1 for a plain target. */
  tasks: number;
  attack: string;
  student: string;
  side: string;
  budget: number;
  seeds: number[];
  rhos: number[];
  /** The cells behind the point. */
  cells: CellResult[];
  /** The task set, when the target is one. */
  group?: TaskGroup;
}

export function seedRhos(results: readonly CellResult[], taskSets: readonly TaskGroup[] = []): SeedRhos[] {
  const groupOf = new Map<string, TaskGroup>();
  for (const set of taskSets) for (const m of set.members) groupOf.set(m.id, set);
  const points = new Map<string, SeedRhos>();
  for (const r of results) {
    const group = groupOf.get(r.target);
    const target = group ? group.base : r.target;
    const key = [target, r.attack, r.student, r.side, r.budget].join('|');
    let point = points.get(key);
    if (!point) {
      point = { target, tasks: group ? group.members.length : 1, attack: r.attack, student: r.student, side: r.side, budget: r.budget, seeds: [], rhos: [], cells: [], ...(group ? { group } : {}) };
      points.set(key, point);
    }
    point.cells.push(r);
  }
  for (const point of points.values()) {
    const seeds = [...new Set(point.cells.map((c) => c.seed))].sort((a, b) => a - b);
    const members = point.group ? point.group.members.map((m) => m.id) : [point.target];
    for (const seed of seeds) {
      const rhoOf = new Map<string, number>();
      for (const c of point.cells) if (c.seed === seed && c.status === 'ok' && c.rho !== null && Number.isFinite(c.rho)) rhoOf.set(c.target, c.rho);
      if (!members.every((m) => rhoOf.has(m))) continue;
      point.seeds.push(seed);
      point.rhos.push(members.reduce((a, m) => a + (rhoOf.get(m) as number), 0) / members.length);
    }
  }
  return [...points.values()];
}

export interface TaskCurvePoint {
  budget: number;
  /** Tasks in the set. */
  tasks: number;
  /** Seeds at which every task has a ρ. */
  n: number;
  /** Mean over those seeds of the task-averaged ρ, and its 95% t-interval over seeds. */
  rhoMean: number | null;
  rhoLow: number | null;
  rhoHigh: number | null;
  rhoBySeed: { seed: number; rho: number }[];
  /** Each task's ρ averaged over the same seeds: how far the tasks spread around the mean. */
  byTask: { task: string; rhoMean: number | null }[];
  /**
   * 'ok' when some seed has every task; else 'failed' if a cell failed, 'not-applicable' if every
   * cell was, 'incomplete' when cells are missing (an interrupted run).
   */
  status: CellStatus | 'incomplete';
}

export interface TaskCurve {
  /** The task set's base id. */
  target: string;
  family: string;
  attack: string;
  student: string;
  side: string;
  /** Mean test accuracy of the task targets, each on its own task. */
  targetAccuracyMean: number | null;
  points: TaskCurvePoint[];
}

/** ρ-versus-budget curves averaged over each task set's tasks per seed, then over seeds. */
export function toTaskCurves(results: readonly CellResult[], taskSets: readonly TaskGroup[]): TaskCurve[] {
  const curves = new Map<string, TaskCurve>();
  const series = seedRhos(results, taskSets).filter((s) => s.group);
  for (const s of series) {
    const group = s.group as TaskGroup;
    const key = [s.target, s.attack, s.student, s.side].join('|');
    let curve = curves.get(key);
    if (!curve) {
      const accuracyByTarget = new Map(results.filter((r) => group.members.some((m) => m.id === r.target)).map((r) => [r.target, r.targetAccuracy]));
      curve = { target: s.target, family: group.family, attack: s.attack, student: s.student, side: s.side, targetAccuracyMean: meanOf([...accuracyByTarget.values()]), points: [] };
      curves.set(key, curve);
    }
    const ci = s.rhos.length ? meanInterval(s.rhos) : null;
    const used = new Set(s.seeds);
    const statuses = new Set(s.cells.map((c) => c.status));
    const allThere = group.members.every((m) => s.cells.some((c) => c.target === m.id));
    curve.points.push({
      budget: s.budget,
      tasks: s.tasks,
      n: s.rhos.length,
      rhoMean: ci ? ci.mean : null,
      rhoLow: ci ? ci.low : null,
      rhoHigh: ci ? ci.high : null,
      rhoBySeed: s.seeds.map((seed, i) => ({ seed, rho: s.rhos[i] })),
      byTask: group.members.map((m) => ({
        task: m.task,
        rhoMean: meanOf(s.cells.filter((c) => c.target === m.id && used.has(c.seed) && c.status === 'ok').map((c) => c.rho)),
      })),
      status: ci ? 'ok' : statuses.has('failed') ? 'failed' : !allThere ? 'incomplete' : statuses.has('not-applicable') ? 'not-applicable' : 'incomplete',
    });
  }
  for (const c of curves.values()) c.points.sort((a, b) => a.budget - b.budget);
  return [...curves.values()];
}

/**
 * (ε, δ) rows for every curve point with a ρ: δ̂ = P(ρ ≤ ε) over seeds, where a seed's ρ is
 * task-averaged for a sampled task set and the cell's own otherwise. Members of a task set are
 * represented by the set, not listed one by one.
 */
export function toEpsDelta(results: readonly CellResult[], taskSets: readonly TaskGroup[] = [], epsilons: readonly number[] = DEFAULT_EPSILONS) {
  const groups = seedRhos(results, taskSets)
    .filter((s) => s.rhos.length > 0)
    .map(({ target, tasks, attack, student, side, budget, rhos }) => ({ target, tasks, attack, student, side, budget, rhos }));
  return epsDeltaTable(groups, epsilons);
}

export type EpsDeltaRow = ReturnType<typeof toEpsDelta>[number];

/**
 * A terminal table of task-averaged curves: one line per task set × attack × side (× student),
 * one ρ column per budget (mean ± half the 95% interval over seeds; n/a, FAILED or … for a run
 * missing cells).
 */
export function formatTaskCurves(curves: readonly TaskCurve[]): string {
  if (curves.length === 0) return '(no sampled tasks)';
  const budgets = [...new Set(curves.flatMap((c) => c.points.map((p) => p.budget)))].sort((a, b) => a - b);
  const showStudent = new Set(curves.map((c) => c.student)).size > 1;
  const cell = (p: TaskCurvePoint | undefined) => {
    if (!p) return '';
    if (p.rhoMean === null || p.rhoHigh === null) return p.status === 'not-applicable' ? 'n/a' : p.status === 'incomplete' ? '…' : 'FAILED';
    return p.n > 1 ? `${p.rhoMean.toFixed(3)}±${(p.rhoHigh - p.rhoMean).toFixed(3)}` : p.rhoMean.toFixed(3);
  };
  const head = ['target', 'tasks', 'mean acc', 'attack', 'side', ...(showStudent ? ['student'] : []), ...budgets.map((b) => `E_tasks ρ@${b}`)];
  const rows = curves.map((c) => [
    c.target,
    String(c.points[0]?.tasks ?? ''),
    c.targetAccuracyMean === null ? '' : c.targetAccuracyMean.toFixed(3),
    c.attack,
    c.side,
    ...(showStudent ? [c.student] : []),
    ...budgets.map((b) => cell(c.points.find((p) => p.budget === b))),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const numeric = (i: number) => i === 1 || i === 2 || i >= head.length - budgets.length;
  const line = (cells: string[]) => cells.map((x, i) => (numeric(i) ? x.padStart(widths[i]) : x.padEnd(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
