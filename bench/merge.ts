import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { SweepConfig } from './config.ts';
import { cellConfigDifferences, cellKey, expandCells } from './grid.ts';
import { readRunFolder, retrainedTargets, writeRunData, writeRunViews, type RunFolder, type RunManifest } from './runner.ts';
import { formatShard, inShard, WHOLE, type Shard } from './shard.ts';
import type { Cell, CellResult } from './types.ts';
import { RunFiles, RunFolderError } from './writers.ts';

/** Shard folders that cannot be merged: the message names the folders and the problem. */
export class MergeError extends Error {
  readonly name = 'MergeError';
}

export interface MergeSource extends RunFolder {
  shard: Shard;
}

/** Where a merged run's cells came from. */
export interface MergeRecord {
  at: string;
  shardCount: number;
  sources: {
    dir: string;
    runId: string;
    shard: Shard;
    status: RunManifest['status'];
    cells: number;
    backend: string;
    gpu: boolean;
    hostname: string | null;
    gitCommit: string | null;
    startedAt: string;
    finishedAt: string | null;
  }[];
  missingShards: number[];
  missingCells: number;
}

export interface MergedManifest extends RunManifest {
  merged: MergeRecord;
}

export interface MergePlan {
  /** The shards' config (the first folder's, runtime settings included). */
  config: SweepConfig;
  shardCount: number;
  /** In shard order. */
  sources: MergeSource[];
  /** Every result, each cell once, in grid order. */
  results: CellResult[];
  /** Cells in the whole grid. */
  total: number;
  missingShards: number[];
  /** Grid cells with no result: those of missing shards, and those an unfinished shard did not reach. */
  missingCells: Cell[];
  /** Not blocking: shards run on different backends or commits, unfinished shards, torn lines. */
  warnings: string[];
}

/** Reads each folder; a folder with no manifest.json is an error (it holds no run). */
export async function loadShards(dirs: readonly string[]): Promise<MergeSource[]> {
  const sources: MergeSource[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) throw new RunFolderError(`run folder ${dir} does not exist`);
    const folder = await readRunFolder(dir);
    if (!folder) throw new RunFolderError(`${dir} has no manifest.json: is it a sweep run folder (results/<run-id>/)?`);
    sources.push({ ...folder, shard: folder.manifest.shard ?? WHOLE });
  }
  return sources;
}

function checkConfigs(sources: readonly MergeSource[]): void {
  const [first, ...rest] = sources;
  for (const s of rest) {
    const diffs = cellConfigDifferences(first.manifest.config, s.manifest.config);
    if (diffs.length) {
      throw new MergeError(
        `${first.dir} and ${s.dir} ran different configs, so their cells are not one grid (${basename(first.dir)} vs ${basename(s.dir)}):\n${diffs.map((d) => `  ${d}`).join('\n')}`,
      );
    }
  }
}

function checkShards(sources: readonly MergeSource[]): void {
  const counts = new Set(sources.map((s) => s.shard.count));
  if (counts.size > 1) {
    throw new MergeError(`the folders split the grid in different ways (${sources.map((s) => `${s.dir} is shard ${formatShard(s.shard)}`).join(', ')}): merge the shards of one split`);
  }
  const byIndex = new Map<number, MergeSource>();
  for (const s of sources) {
    const other = byIndex.get(s.shard.index);
    if (other) throw new MergeError(`${other.dir} and ${s.dir} are both shard ${formatShard(s.shard)}: overlapping shards (their cells would count twice)`);
    byIndex.set(s.shard.index, s);
  }
}

/** Each source's cells must lie in its own slice of the grid, once. */
function collectCells(sources: readonly MergeSource[], grid: readonly Cell[]): Map<string, { result: CellResult; from: string }> {
  const position = new Map(grid.map((c, i) => [cellKey(c), i]));
  const found = new Map<string, { result: CellResult; from: string }>();
  for (const s of sources) {
    const file = `${s.dir}/cells.jsonl`;
    const seen = new Set<string>();
    for (const r of s.cells) {
      const key = cellKey(r);
      const at = position.get(key);
      if (at === undefined) throw new MergeError(`${file} holds cell ${key}, which is not in the config's grid`);
      if (!inShard(at, s.shard)) {
        throw new MergeError(`${file} holds cell ${key}, which belongs to shard ${at % s.shard.count}/${s.shard.count}, but ${s.dir} is shard ${formatShard(s.shard)}`);
      }
      if (seen.has(key)) throw new MergeError(`cell ${key} appears twice in ${file} (duplicate cell)`);
      seen.add(key);
      const other = found.get(key);
      if (other) throw new MergeError(`cell ${key} is in both ${other.from} and ${s.dir} (duplicate cell)`);
      found.set(key, { result: r, from: s.dir });
    }
  }
  return found;
}

function warningsFor(sources: readonly MergeSource[]): string[] {
  const warnings: string[] = [];
  const [first] = sources;
  for (const s of sources) {
    if (s.tornLine) warnings.push(`${s.dir}/cells.jsonl ends in a line torn by a crash; that cell is left out (resume the shard to run it)`);
    if (s.manifest.status !== 'finished') warnings.push(`${s.dir} (shard ${formatShard(s.shard)}) is ${s.manifest.status}: resume it to finish its cells`);
  }
  const distinct = (label: string, pick: (s: MergeSource) => unknown) => {
    const values = new Set(sources.map((s) => JSON.stringify(pick(s))));
    if (values.size > 1) warnings.push(`the shards differ in ${label} (${sources.map((s) => `${basename(s.dir)}: ${JSON.stringify(pick(s))}`).join(', ')}); each cell records its own backend`);
  };
  distinct('backend', (s) => `${s.manifest.backend.name}${s.manifest.backend.gpu ? ' (GPU)' : ''}`);
  distinct('git commit', (s) => s.manifest.gitCommit);
  distinct('rhobench version', (s) => s.manifest.rhobench);
  for (const s of sources.slice(1)) {
    for (const t of retrainedTargets(first.manifest.targets ?? [], s.manifest.targets ?? [])) {
      warnings.push(`target ${t.id} has test accuracy ${t.before} in ${first.dir}, ${t.after} in ${s.dir}: the shards trained their own copies differently (share RHOBENCH_CACHE so every shard loads one)`);
    }
  }
  return warnings;
}

/**
 * Checks that the folders are shards of one grid and collects their cells. Pure. Throws
 * MergeError for the same folder twice, differing configs (naming each difference), shards of
 * different splits, two folders with one shard index, and a cell outside its shard or twice.
 * Missing shards and cells are returned, not thrown: the caller decides.
 */
export function planMerge(sources: readonly MergeSource[]): MergePlan {
  if (!sources.length) throw new MergeError('no shard folders to merge');
  const dirs = new Map<string, string>();
  for (const s of sources) {
    const abs = resolve(s.dir);
    if (dirs.has(abs)) throw new MergeError(`${s.dir} is given twice`);
    dirs.set(abs, s.dir);
  }
  checkShards(sources);
  checkConfigs(sources);
  const ordered = [...sources].sort((a, b) => a.shard.index - b.shard.index);
  const config = { ...ordered[0].manifest.config, taskSets: ordered[0].manifest.config.taskSets ?? [] };
  const grid = expandCells(config);
  const found = collectCells(ordered, grid);
  const shardCount = ordered[0].shard.count;
  const present = new Set(ordered.map((s) => s.shard.index));
  return {
    config,
    shardCount,
    sources: ordered,
    results: grid.flatMap((c) => found.get(cellKey(c))?.result ?? []),
    total: grid.length,
    missingShards: Array.from({ length: shardCount }, (_, i) => i).filter((i) => !present.has(i)),
    missingCells: grid.filter((c) => !found.has(cellKey(c))),
    warnings: warningsFor(ordered),
  };
}

export function mergedManifest(out: string, plan: MergePlan): MergedManifest {
  const first = plan.sources[0].manifest;
  const complete = plan.missingCells.length === 0;
  const count = (status: CellResult['status']) => plan.results.filter((r) => r.status === status).length;
  const startedAt = plan.sources.map((s) => s.manifest.startedAt).sort()[0];
  const finished = plan.sources.map((s) => s.manifest.finishedAt);
  const now = new Date().toISOString();
  // The span of the whole sharded sweep (the tracker's wall time); a partial merge ends now.
  const finishedAt = complete && finished.every((f): f is string => typeof f === 'string') ? [...finished].sort().at(-1)! : now;
  const { shard: _shard, resumes: _resumes, ...rest } = first;
  return {
    ...rest,
    runId: basename(resolve(out)),
    status: complete ? 'finished' : 'interrupted',
    startedAt,
    finishedAt,
    config: plan.config,
    cells: { total: plan.total, ok: count('ok'), notApplicable: count('not-applicable'), failed: count('failed') },
    merged: {
      at: now,
      shardCount: plan.shardCount,
      sources: plan.sources.map((s) => ({
        dir: resolve(s.dir),
        runId: s.manifest.runId,
        shard: s.shard,
        status: s.manifest.status,
        cells: s.cells.length,
        backend: s.manifest.backend.name,
        gpu: s.manifest.backend.gpu,
        hostname: s.manifest.machine?.hostname ?? null,
        gitCommit: s.manifest.gitCommit ?? null,
        startedAt: s.manifest.startedAt,
        finishedAt: s.manifest.finishedAt ?? null,
      })),
      missingShards: plan.missingShards,
      missingCells: plan.missingCells.length,
    },
  };
}

/** OUT may be new, empty, or an earlier merge's output (re-merging after the last shard lands); nothing else. */
async function checkOut(out: string, plan: MergePlan): Promise<void> {
  const abs = resolve(out);
  if (plan.sources.some((s) => resolve(s.dir) === abs)) throw new MergeError(`${out} is one of the shards: write the merge to a new folder`);
  if (!existsSync(out)) return;
  const previous = await readRunFolder(out).catch(() => undefined);
  if (previous && (previous.manifest as Partial<MergedManifest>).merged) return;
  if (!previous && (await readdir(out)).length === 0) return;
  throw new MergeError(`${out} already exists and is not the output of an earlier merge: choose a new folder`);
}

/**
 * Writes the merge into OUT: cells.jsonl (grid order), the aggregates and the manifest are
 * written into a folder beside OUT and renamed into place, so OUT is never half-written; an
 * earlier merge's OUT is replaced whole. benchmark.json, plots and the report follow in OUT.
 */
export async function writeMerge(out: string, plan: MergePlan, log: (message: string) => void = () => {}): Promise<MergedManifest> {
  await checkOut(out, plan);
  const manifest = mergedManifest(out, plan);
  const staging = `${resolve(out)}.merging-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  const files = new RunFiles(staging);
  await mkdir(staging, { recursive: true });
  try {
    await files.rewriteCells(plan.results);
    await writeRunData(files, plan.config, plan.results, manifest);
    if (existsSync(out)) {
      const old = `${resolve(out)}.replaced-${process.pid}`;
      await rename(out, old);
      await rename(staging, out);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(staging, out);
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  await writeRunViews(out, log);
  return manifest;
}

export interface MergeOutcome {
  plan: MergePlan;
  /** False when cells are missing and partial merges were not allowed: nothing was written. */
  written: boolean;
  manifest?: MergedManifest;
}

/** Loads, checks and (when complete, or allowPartial) writes a merge of shard folders into OUT. */
export async function mergeRuns(out: string, dirs: readonly string[], opts: { allowPartial?: boolean; log?: (message: string) => void } = {}): Promise<MergeOutcome> {
  const plan = planMerge(await loadShards(dirs));
  if (plan.missingCells.length && !opts.allowPartial) return { plan, written: false };
  const manifest = await writeMerge(out, plan, opts.log);
  return { plan, written: true, manifest };
}

/** "shard 1/4 missing; 10 of 40 cells have no result (e.g. …)" */
export function describeMissing(plan: MergePlan): string {
  const parts: string[] = [];
  if (plan.missingShards.length) parts.push(`shard${plan.missingShards.length > 1 ? 's' : ''} ${plan.missingShards.map((i) => `${i}/${plan.shardCount}`).join(', ')} missing`);
  if (plan.missingCells.length) {
    const examples = plan.missingCells.slice(0, 3).map(cellKey).join('; ');
    parts.push(`${plan.missingCells.length} of ${plan.total} cells have no result (e.g. ${examples}${plan.missingCells.length > 3 ? '; …' : ''})`);
  }
  return parts.join('; ');
}
