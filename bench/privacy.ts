import betaQuantile from '@stdlib/stats-base-dists-beta-quantile';

/**
 * (ε, δ) imitation privacy, estimated from repeated attacks: δ̂ = P(ρ ≤ ε), the chance that an
 * attack (one seed) gets an imitation within ε of the target, with an exact binomial interval.
 */

/** ε values a sweep tabulates unless its config lists its own (`epsilons`). */
export const DEFAULT_EPSILONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/**
 * Clopper–Pearson (exact) interval for a binomial proportion: the central interval with at most
 * (1 − level)/2 probability below and above. At k = 0 the lower end is 0, at k = n the upper end
 * is 1; with no trials it is [0, 1].
 */
export function clopperPearson(successes: number, trials: number, level = 0.95): { low: number; high: number } {
  if (!Number.isInteger(trials) || trials < 0) throw new RangeError(`trials must be an integer ≥ 0, got ${trials}`);
  if (!Number.isInteger(successes) || successes < 0 || successes > trials) {
    throw new RangeError(`successes must be an integer in [0, ${trials}], got ${successes}`);
  }
  if (!(level > 0 && level < 1)) throw new RangeError(`level must be in (0, 1), got ${level}`);
  const tail = (1 - level) / 2;
  const k = successes;
  const n = trials;
  return {
    low: k === 0 ? 0 : betaQuantile(tail, k, n - k + 1),
    high: k === n ? 1 : betaQuantile(1 - tail, k + 1, n - k),
  };
}

/** Fraction of ρ values at most ε (NaN for none). */
export function deltaHat(rhos: readonly number[], eps: number): number {
  return rhos.length ? rhos.filter((r) => r <= eps).length / rhos.length : NaN;
}

export interface EpsDeltaStats {
  epsilon: number;
  /** Attacks (seeds) measured. */
  trials: number;
  /** Of those, the ones with ρ ≤ ε. */
  successes: number;
  /** successes / trials; null with no trials. */
  deltaHat: number | null;
  /** 95% Clopper–Pearson interval of δ. */
  deltaLow: number;
  deltaHigh: number;
}

/**
 * One row per group and ε: the group's key fields, then δ̂ and its interval over the group's ρ
 * values. Non-finite ρ values are refused, so a failed cell cannot pass for a private one.
 */
export function epsDeltaTable<K extends object>(
  groups: readonly (K & { rhos: readonly number[] })[],
  epsilons: readonly number[] = DEFAULT_EPSILONS,
  level = 0.95,
): (Omit<K, 'rhos'> & EpsDeltaStats)[] {
  const eps = [...new Set(epsilons)].sort((a, b) => a - b);
  return groups.flatMap((group) => {
    const { rhos, ...key } = group;
    const bad = rhos.find((r) => !Number.isFinite(r));
    if (bad !== undefined) throw new RangeError(`ρ values must be finite numbers, got ${bad} in ${JSON.stringify(key)}`);
    return eps.map((epsilon) => {
      const successes = rhos.filter((r) => r <= epsilon).length;
      const { low, high } = clopperPearson(successes, rhos.length, level);
      return {
        ...(key as Omit<K, 'rhos'>),
        epsilon,
        trials: rhos.length,
        successes,
        deltaHat: rhos.length ? successes / rhos.length : null,
        deltaLow: low,
        deltaHigh: high,
      };
    });
  });
}

const KEY_COLUMNS = ['target', 'tasks', 'attack', 'side', 'student', 'budget'] as const;

/**
 * A terminal table of (ε, δ) rows: one line per curve and budget, one column per ε, each
 * `δ̂ [low,high]` (δ̂ = P(ρ ≤ ε) over seeds, 95% Clopper–Pearson). The student column shows
 * only when students differ, tasks only when some target averages several.
 */
export function formatEpsDelta(rows: readonly (EpsDeltaStats & Partial<Record<(typeof KEY_COLUMNS)[number], string | number>>)[]): string {
  if (rows.length === 0) return '(no ρ values to tabulate)';
  const eps = [...new Set(rows.map((r) => r.epsilon))].sort((a, b) => a - b);
  const shown = (k: (typeof KEY_COLUMNS)[number]) =>
    rows.some((r) => r[k] !== undefined) &&
    (k === 'student' ? new Set(rows.map((r) => r.student)).size > 1 : k === 'tasks' ? rows.some((r) => Number(r.tasks) > 1) : true);
  const keys = KEY_COLUMNS.filter(shown);
  const lineKey = (r: (typeof rows)[number]) => keys.map((k) => String(r[k] ?? '')).join('\u0000');
  const lines = new Map<string, (typeof rows)[number][]>();
  for (const r of rows) lines.set(lineKey(r), [...(lines.get(lineKey(r)) ?? []), r]);
  const two = (v: number) => v.toFixed(2);
  const head = [...keys, 'n', ...eps.map((e) => `ε=${e}`)];
  const body = [...lines.values()].map((group) => [
    ...keys.map((k) => String(group[0][k] ?? '')),
    String(group[0].trials),
    ...eps.map((e) => {
      const r = group.find((g) => g.epsilon === e);
      return r && r.deltaHat !== null ? `${two(r.deltaHat)} [${two(r.deltaLow)},${two(r.deltaHigh)}]` : '';
    }),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const numeric = (i: number) => i >= keys.length || keys[i] === 'budget' || keys[i] === 'tasks';
  const line = (cells: string[]) => cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '─'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}
