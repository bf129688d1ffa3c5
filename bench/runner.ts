import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { getAttack } from '../attacks/index.ts';
import { NotApplicable, type SideInfo } from '../attacks/types.ts';
import { defaultCacheDir, loadDataset, loadPool, poolKey } from '../datasets/index.ts';
import { relabel } from '../datasets/tasks.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { initBackend, type BackendInfo, type BackendName } from '../models/backend.ts';
import { getTarget } from '../models/targets/index.ts';
import type { StudentSpec, Target } from '../models/types.ts';
import type { Oracle } from '../serve/types.ts';
import { scoreImitation } from './score.ts';
import type { SweepConfig } from './config.ts';
import { expandCells } from './grid.ts';
import { baseManifest, REPO_ROOT, type Manifest } from './manifest.ts';
import { silentProgress, type Progress } from './progress.ts';
import type { Cell, CellResult } from './types.ts';
import { openTransport, type Transport } from './transport.ts';
import { writePlots } from './plots.ts';
import { writeReport } from './report.ts';
import { writeTrackerJson } from './tracker.ts';
import { RunFiles, writeAtomic } from './writers.ts';
import { compareReferences } from './reference.ts';

export interface SweepOptions {
  /** Folder holding run folders; default <repo>/results. */
  resultsDir?: string;
  /** Run folder name; default <config name>-<UTC timestamp>. */
  runId?: string;
  /** Overrides the config's backend. */
  backend?: BackendName;
  /** Where datasets and trained targets are cached; default RHOBENCH_CACHE or <repo>/.cache. */
  cacheDir?: string;
  progress?: Progress;
  /** Run folder, for files a transport writes (the HTTP server's ledger); default a temporary folder. */
  runDir?: string;
}

/** What every cell of a sweep shares: loaded once, before the first cell. */
export interface SweepEnv {
  config: SweepConfig;
  backend: BackendInfo;
  dataset: Dataset;
  evalSplit: Split;
  targets: Map<string, Target>;
  /** By poolKey of each side-information level's pool. */
  pools: Map<string, Split>;
  transport: Transport;
}

export async function prepareSweep(config: SweepConfig, opts: SweepOptions = {}): Promise<SweepEnv> {
  const progress = opts.progress ?? silentProgress;
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const backend = await initBackend(opts.backend ?? config.backend);
  progress.log(`backend: ${backend.name}${backend.gpu ? ' (GPU)' : ''} — ${backend.reason}`);
  const dataset = await loadDataset(config.dataset, cacheDir);
  const targets = new Map<string, Target>();
  for (const spec of config.targets) {
    const target = await getTarget(spec, dataset, { cacheDir, log: (m) => progress.log(m) });
    progress.log(`target ${target.id} (${target.family}): test accuracy ${target.testAccuracy.toFixed(4)}`);
    targets.set(spec.id, target);
  }
  const poolSize = Math.max(...config.budgets);
  const pools = new Map<string, Split>();
  for (const s of config.side) {
    const key = poolKey(s.pool);
    if (!pools.has(key)) pools.set(key, await loadPool(s.pool, dataset, poolSize, config.dataset.seed, cacheDir));
  }
  const transport = await openTransport(config, targets, {
    runDir: opts.runDir,
    cacheDir,
    log: (m) => progress.log(m),
  });
  return { config, backend, dataset, evalSplit: dataset.split('eval'), targets, pools, transport };
}

export async function disposeSweep(env: SweepEnv): Promise<void> {
  await env.transport.close();
  for (const t of env.targets.values()) t.dispose();
}

function lookup<T>(items: T[], pick: (t: T) => string, name: string, what: string): T {
  const found = items.find((t) => pick(t) === name);
  if (!found) throw new Error(`cell names unknown ${what} "${name}"`);
  return found;
}

/**
 * Marks a cell whose error came from inside the wasm module (out-of-bounds memory, say): the heap
 * is damaged then, and every later cell in this process would fail too.
 */
export const BACKEND_CRASH = 'backend crashed';

/** Runs one cell: build the oracle, let the attack spend its budget, score the imitation. Never throws. */
export async function runCell(env: SweepEnv, cell: Cell, onStep?: Progress['cellStep']): Promise<CellResult> {
  const started = performance.now();
  const target = env.targets.get(cell.target);
  const base = {
    ...cell,
    task: target?.task ?? 'digits',
    rho: null,
    agreement: null,
    studentAccuracy: null,
    targetAccuracy: target?.testAccuracy ?? NaN,
    backend: env.backend.name,
    gpu: env.backend.gpu,
  };
  let oracle: Oracle | undefined;
  try {
    if (!target) throw new Error(`cell names unknown target "${cell.target}"`);
    const side: SideInfo = lookup(env.config.side, (s) => s.name, cell.side, 'side-information level');
    const student: StudentSpec = lookup(env.config.students, (s) => s.arch, cell.student, 'student');
    const pool = env.pools.get(poolKey(side.pool));
    if (!pool) throw new Error(`no pool ${poolKey(side.pool)} was loaded`);
    if (side.disclosure.kind === 'leaf' && !target.leafIds) throw new NotApplicable(`leaf answers need a tree target; ${target.id} is a ${target.family}`);
    oracle = env.transport.oracle(target, side, cell.budget);
    const imitation = await getAttack(cell.attack).run({
      oracle,
      pool,
      inputShape: env.dataset.inputShape,
      classes: target.classes,
      side,
      student,
      targetArch: target.arch,
      ...(side.architecture === 'known' && target.model ? { known: target.model } : {}),
      seed: cell.seed,
      onProgress: onStep,
    });
    try {
      const score = await scoreImitation(imitation, target, relabel(env.evalSplit, target.task ?? 'digits'), env.dataset.inputShape);
      return { ...base, ...score, status: 'ok', queries: oracle.spent, seconds: (performance.now() - started) / 1000 };
    } finally {
      imitation.dispose();
    }
  } catch (err) {
    const status = err instanceof NotApplicable ? 'not-applicable' : 'failed';
    const message = err instanceof Error ? err.message : String(err);
    return {
      ...base,
      status,
      queries: oracle?.spent ?? 0,
      seconds: (performance.now() - started) / 1000,
      error: err instanceof WebAssembly.RuntimeError ? `${BACKEND_CRASH}: ${message}` : message,
    };
  }
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

function freshRunDir(resultsDir: string, name: string): string {
  const base = join(resultsDir, `${name}-${timestamp()}`);
  let dir = base;
  for (let i = 2; existsSync(dir); i++) dir = `${base}-${i}`;
  return dir;
}

/**
 * A sweep in progress. Each finished cell is appended to cells.jsonl at once; `finish` (also on
 * an interrupt) writes the aggregates and the manifest from whatever has finished.
 */
export class SweepRun {
  readonly results: CellResult[] = [];
  readonly cells: Cell[];
  private stopped = false;
  /** Set when the backend crashed and the remaining cells were not run. */
  crashed = false;

  private constructor(
    readonly env: SweepEnv,
    readonly files: RunFiles,
    readonly manifest: Manifest,
    private readonly progress: Progress,
  ) {
    this.cells = expandCells(env.config);
    manifest.cells.total = this.cells.length;
  }

  static async start(config: SweepConfig, opts: SweepOptions = {}): Promise<SweepRun> {
    const progress = opts.progress ?? silentProgress;
    const resultsDir = opts.resultsDir ?? join(REPO_ROOT, 'results');
    const dir = opts.runId ? join(resultsDir, opts.runId) : freshRunDir(resultsDir, config.name);
    const files = new RunFiles(dir);
    await files.open();
    const env = await prepareSweep(config, { ...opts, progress, runDir: dir });
    const manifest = baseManifest(dir.split(/[\\/]/).pop() as string, config, env.backend);
    manifest.targets = [...env.targets.values()].map((t) => ({
      id: t.id,
      family: t.family,
      ...(t.arch ? { arch: t.arch } : {}),
      testAccuracy: t.testAccuracy,
    }));
    const run = new SweepRun(env, files, manifest, progress);
    await files.writeManifest(manifest);
    progress.log(`writing to ${dir}`);
    return run;
  }

  /** Runs every cell (bounded by config.concurrency); stops launching new ones after stop(). */
  async runAll(): Promise<CellResult[]> {
    const limit = pLimit(this.env.config.concurrency);
    const total = this.cells.length;
    await Promise.all(
      this.cells.map((cell, index) =>
        limit(async () => {
          if (this.stopped) return;
          this.progress.cellStart(index, total, cell);
          const result = await runCell(this.env, cell, (d, t, phase) => this.progress.cellStep(d, t, phase));
          if (this.stopped) return; // finish() already wrote the files; a late result must not change them
          this.results.push(result);
          await this.files.appendCell(result);
          this.progress.cellEnd(index, total, result);
          if (result.error?.startsWith(BACKEND_CRASH)) {
            this.stopped = true;
            this.crashed = true;
            this.progress.log(`the ${this.env.backend.name} backend crashed in cell ${index + 1} (${result.error}); the cells not yet run are left out, since each would fail on the damaged heap. Finished cells are kept in ${this.files.dir}`);
          }
        }),
      ),
    );
    return this.results;
  }

  stop(): void {
    this.stopped = true;
  }

  async finish(status: 'finished' | 'interrupted'): Promise<void> {
    this.stopped = true;
    const count = (s: CellResult['status']) => this.results.filter((r) => r.status === s).length;
    this.manifest.status = status;
    this.manifest.finishedAt = new Date().toISOString();
    this.manifest.cells = { total: this.cells.length, ok: count('ok'), notApplicable: count('not-applicable'), failed: count('failed') };
    await this.files.writeAggregates(this.results, { taskSets: this.env.config.taskSets, epsilons: this.env.config.epsilons });
    if (this.env.config.reference) {
      await writeAtomic(join(this.files.dir, 'reference.json'), `${JSON.stringify(compareReferences(this.env.config.reference, this.results), null, 2)}\n`);
    }
    await this.files.writeManifest(this.manifest);
    // After the manifest: the tracker's wall-time entry reads finishedAt from it.
    await writeTrackerJson(this.files.dir);
    // Plots and the report are conveniences: a rendering problem is logged, never fails the sweep.
    try {
      await writePlots(this.files.dir);
      await writeReport(this.files.dir);
    } catch (err) {
      this.progress.log(`could not write plots or report.html: ${(err as Error).message}`);
    }
    await disposeSweep(this.env);
  }
}

/** Runs a whole sweep and writes its files; for library use and tests. */
export async function runSweep(config: SweepConfig, opts: SweepOptions = {}): Promise<SweepRun> {
  const run = await SweepRun.start(config, opts);
  await run.runAll();
  await run.finish('finished');
  return run;
}
