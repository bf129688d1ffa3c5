import { join } from 'node:path';
import type { Curve } from './aggregate.ts';
import { loadRun } from './compare.ts';
import type { Manifest } from './manifest.ts';
import { writeAtomic } from './writers.ts';

/*
 * Headline figures for a CI benchmark tracker.
 *
 * Target: github-action-benchmark (https://github.com/benchmark-action/github-action-benchmark),
 * tool "customSmallerIsBetter". Its input is a JSON array of
 *   { "name": string, "unit": string, "value": number, "range"?: string, "extra"?: string }
 * (range and extra are free text shown in the chart's tooltip; extra must be a string). Entries are
 * matched across commits by `name`, so names must be stable and unique within a file.
 *
 * Smaller is better holds for both kinds of entry from the attacks' side: ρ (lower = closer
 * imitation) and seconds per cell. The tracker's alert-threshold is a ratio (e.g. 200%); for ρ
 * values near 0 a ratio is noisy, so gate nightlies with `rhobench compare` (absolute tolerance)
 * and use the tracker for the history charts.
 */

export interface TrackerEntry {
  name: string;
  unit: string;
  value: number;
  range?: string;
  extra?: string;
}

export const TRACKER_FILE = 'benchmark.json';

type TrackerManifest = Pick<Manifest, 'backend'> & Partial<Pick<Manifest, 'runId' | 'gitCommit' | 'startedAt' | 'finishedAt' | 'config'>>;

/**
 * The curve's name in the tracker: every field of its curve key, so two curves never share a name,
 * and the student always (naming it only when a run has several would rename history when a
 * student is added).
 */
function curveName(c: Curve): string {
  return `${c.target} ${c.attack} ${c.student} ${c.side}`;
}

/**
 * One ρ entry and one seconds-per-cell entry per curve point that has a ρ (failed and
 * not-applicable points have no value to chart and are left out), plus the sweep's wall time when
 * the run finished.
 */
export function trackerEntries(curves: readonly Curve[], manifest: TrackerManifest): TrackerEntry[] {
  const context = [`backend: ${manifest.backend.name}${manifest.backend.gpu ? ' (GPU)' : ' (no GPU)'}`, ...(manifest.runId ? [`run: ${manifest.runId}`] : [])];
  const entries: TrackerEntry[] = [];
  for (const c of curves) {
    for (const p of c.points) {
      if (p.rhoMean === null || !Number.isFinite(p.rhoMean)) continue;
      const extra = [`seeds: ${p.n}`, `queries: ${Math.round(p.queriesMean)}`, `target accuracy: ${c.targetAccuracy.toFixed(3)}`, ...context].join('\n');
      const half = p.n > 1 && p.rhoHigh !== null ? p.rhoHigh - p.rhoMean : null;
      entries.push({
        name: `${curveName(c)} ρ@${p.budget}`,
        unit: 'rho',
        value: p.rhoMean,
        ...(half !== null ? { range: `± ${half.toFixed(4)}` } : {}),
        extra: half !== null ? `${extra}\nrange: 95% t-interval over seeds` : extra,
      });
      entries.push({ name: `${curveName(c)} s/cell@${p.budget}`, unit: 's', value: p.secondsMean, extra });
    }
  }
  if (manifest.config && manifest.startedAt && manifest.finishedAt) {
    const seconds = (Date.parse(manifest.finishedAt) - Date.parse(manifest.startedAt)) / 1000;
    if (Number.isFinite(seconds) && seconds >= 0) entries.push({ name: `${manifest.config.name} sweep wall time`, unit: 's', value: seconds, extra: context.join('\n') });
  }
  return entries;
}

/** Writes <runDir>/benchmark.json from the run's curves and manifest; returns its path. */
export async function writeTrackerJson(runDir: string): Promise<string> {
  const run = await loadRun(runDir);
  const path = join(runDir, TRACKER_FILE);
  await writeAtomic(path, `${JSON.stringify(trackerEntries(run.curves, run.manifest), null, 2)}\n`);
  return path;
}
