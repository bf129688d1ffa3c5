import { curveKey } from './grid.ts';
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
