import { existsSync } from 'node:fs';
import { freemem } from 'node:os';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { getAttack } from '../attacks/index.ts';
import { NotApplicable, type SideInfo } from '../attacks/types.ts';
import { defaultCacheDir, loadDataset, loadPool, poolKey } from '../datasets/index.ts';
import { relabel } from '../datasets/tasks.ts';
import type { Dataset, Split } from '../datasets/types.ts';
import { backendFaults, initBackend, type BackendInfo, type BackendName } from '../engine/backend.ts';
import { setTrainingQuorum } from '../models/stacked-fit.ts';
import { getTarget } from '../models/targets/index.ts';
import type { StudentSpec, Target } from '../models/types.ts';
import type { Oracle } from '../serve/types.ts';
import { queryGridPath, QuerySampler } from './query-samples.ts';
import { predictClasses, scoreImitation } from './score.ts';
import { ConfigError, type SweepConfig } from './config.ts';
import { cellConfigDifferences, cellKey, expandCells } from './grid.ts';
import { baseManifest, REPO_ROOT, type Manifest, type TargetSummary } from './manifest.ts';
import { silentProgress, type Progress, type RunCounts } from './progress.ts';
import { checkShard, formatShard, sameShard, shardCells, WHOLE, type Shard } from './shard.ts';
import type { Cell, CellResult } from './types.ts';
import { openTransport, type Transport } from './transport.ts';
import { writePlots } from './plots.ts';
import { writeReport } from './report.ts';
import { writeTrackerJson } from './tracker.ts';
import { readCells, readRunJson, RunFiles, RunFolderError, writeAtomic } from './writers.ts';
import { compareReferences } from './reference.ts';
import { ATTACKS } from '../attacks/index.ts';
import { attackRegistryDigest, largestFirst, resolveCellsPerThread, resolveConcurrency, WorkerPool } from './workers.ts';

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
  /**
   * Modules (URLs or absolute paths) each worker thread imports before its first cell: ones that
   * register attacks at run time, which worker threads would not see otherwise. Import them in
   * this thread too.
   */
  workerPreload?: string[];
}

/** What every cell of a sweep shares: loaded once, before the first cell. */
export interface SweepEnv {
  config: SweepConfig;
  backend: BackendInfo;
  /** Where datasets and trained targets are cached (worker threads load the targets from there). */
  cacheDir: string;
  dataset: Dataset;
  evalSplit: Split;
  targets: Map<string, Target>;
  /** By poolKey of each side-information level's pool. */
  pools: Map<string, Split>;
  transport: Transport;
  /** Keeps the first queries of each (target, attack, side) for a picture in plots/. */
  samples?: QuerySampler;
  /** Each target's classes on the eval split, computed by its first cell (copies of an env share it). */
  evalClasses: Map<string, Promise<Int32Array>>;
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
  const samples = new QuerySampler(opts.runDir, dataset.inputShape, (m) => progress.log(m));
  return { config, backend, cacheDir, dataset, evalSplit: dataset.split('eval'), targets, pools, transport, samples, evalClasses: new Map() };
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

/** What every record of a cell says before it is scored. */
function cellBase(env: SweepEnv, cell: Cell) {
  const target = env.targets.get(cell.target);
  return {
    ...cell,
    task: target?.task ?? 'digits',
    rho: null,
    agreement: null,
    studentAccuracy: null,
    targetAccuracy: target?.testAccuracy ?? NaN,
    backend: env.backend.name,
    gpu: env.backend.gpu,
  };
}

/**
 * Cells running in this thread (a worker has its own count). Students of interleaved cells stack
 * on a GPU (models/stacked-fit.ts): a request to train waits for the others until this many ask.
 */
let cellsInFlight = 0;
setTrainingQuorum(() => Math.max(1, cellsInFlight));

/** Runs one cell: build the oracle, let the attack spend its budget, score the imitation. Never throws. */
export async function runCell(env: SweepEnv, cell: Cell, onStep?: Progress['cellStep']): Promise<CellResult> {
  cellsInFlight++;
  try {
    return await judgedCell(env, cell, onStep);
  } finally {
    cellsInFlight--;
  }
}

async function judgedCell(env: SweepEnv, cell: Cell, onStep?: Progress['cellStep']): Promise<CellResult> {
  // A GPU reports its errors after the fact, to a handler: the cell is judged by those that came
  // while it ran. A lost device is a crash (its thread can run nothing more); another GPU error
  // fails the cell, since its numbers may be wrong.
  const errorsBefore = backendFaults().errors;
  const result = await attemptCell(env, cell, onStep);
  const faults = backendFaults();
  const error = faults.lost ? `${BACKEND_CRASH}: ${faults.lost}` : faults.errors > errorsBefore ? `a GPU error was reported while the cell ran: ${faults.last}` : undefined;
  return error ? { ...cellBase(env, cell), status: 'failed', queries: result.queries, seconds: result.seconds, error } : result;
}

async function attemptCell(env: SweepEnv, cell: Cell, onStep?: Progress['cellStep']): Promise<CellResult> {
  const started = performance.now();
  const target = env.targets.get(cell.target);
  const base = cellBase(env, cell);
  let oracle: Oracle | undefined;
  try {
    if (!target) throw new Error(`cell names unknown target "${cell.target}"`);
    const side: SideInfo = lookup(env.config.side, (s) => s.name, cell.side, 'side-information level');
    const student: StudentSpec = lookup(env.config.students, (s) => s.arch, cell.student, 'student');
    const pool = env.pools.get(poolKey(side.pool));
    if (!pool) throw new Error(`no pool ${poolKey(side.pool)} was loaded`);
    if (side.disclosure.kind === 'leaf' && !target.leafIds) throw new NotApplicable(`leaf answers need a tree target; ${target.id} is a ${target.family}`);
    oracle = env.transport.oracle(target, side, cell.budget);
    const sampling = env.samples?.wrap(oracle, cell);
    const imitation = await getAttack(cell.attack)
      .run({
        oracle: sampling?.oracle ?? oracle,
        pool,
        inputShape: env.dataset.inputShape,
        classes: target.classes,
        side,
        student,
        targetArch: target.arch,
        ...(side.architecture === 'known' && target.model ? { known: target.model } : {}),
        seed: cell.seed,
        onProgress: onStep,
      })
      .finally(() => sampling?.save());
    try {
      const evalSplit = relabel(env.evalSplit, target.task ?? 'digits');
      let fromTarget = env.evalClasses.get(target.id);
      if (!fromTarget) {
        fromTarget = predictClasses((x) => target.predictProba(x), evalSplit, env.dataset.inputShape);
        env.evalClasses.set(target.id, fromTarget);
        fromTarget.catch(() => env.evalClasses.delete(target.id));
      }
      const score = await scoreImitation(imitation, target, evalSplit, env.dataset.inputShape, await fromTarget);
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

/** One continuation of a run: what it found and what it ran again. */
export interface ResumeRecord {
  at: string;
  hostname: string;
  gitCommit: string | null;
  backend: string;
  /** The manifest's status before this resume: 'running' when the last process died. */
  previousStatus: Manifest['status'];
  /** Cells kept (ok or not-applicable) and failed cells dropped to run again. */
  kept: number;
  rerunFailed: number;
  /** cells.jsonl ended in a line torn by a crash mid-write; it was cut off. */
  tornLine: boolean;
  /** Extra records of a cell already kept (a second process on the same folder, say); dropped. */
  duplicates: number;
  toRun: number;
}

/** A sweep manifest with what sharding and resuming add. */
export interface RunManifest extends Manifest {
  /** The slice of the grid this run covers; absent for a whole run (0/1). */
  shard?: Shard;
  /**
   * How the last process ran its cells: in the main thread alone, or in `threads`, the main
   * thread and `workerThreads` worker threads, each running `cellsPerThread` cells interleaved;
   * `crashes` counts workers lost in a cell (each replaced). Absent when it ran no cell.
   */
  workers?:
    | { threads: number; workerThreads: number; crashes: number; cellsPerThread?: number }
    | { threads: 1; mainThread: true; cellsPerThread?: number };
  resumes?: ResumeRecord[];
}

// What resuming and merging need from a manifest; the rest passes through untouched.
const runManifestSchema = z.looseObject({
  runId: z.string(),
  status: z.enum(['running', 'finished', 'interrupted']),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  config: z.looseObject({
    name: z.string(),
    dataset: z.looseObject({ name: z.string() }),
    targets: z.array(z.looseObject({ id: z.string(), family: z.string() })).min(1),
    taskSets: z.array(z.looseObject({ base: z.string() })).default([]),
    attacks: z.array(z.string()).min(1),
    students: z.array(z.looseObject({ arch: z.string() })).min(1),
    side: z.array(z.looseObject({ name: z.string() })).min(1),
    budgets: z.array(z.number()).min(1),
    seeds: z.array(z.number()).min(1),
  }),
  backend: z.looseObject({ name: z.string(), gpu: z.boolean() }),
  shard: z.strictObject({ index: z.number(), count: z.number() }).optional(),
});

/** A run folder as a resume or a merge finds it. */
export interface RunFolder {
  dir: string;
  manifest: RunManifest;
  /** cells.jsonl in file order, without a torn last line. */
  cells: CellResult[];
  tornLine: boolean;
}

/**
 * Reads a sweep run folder's manifest and cells; undefined when the folder has no manifest.json
 * (nothing ran there yet). A corrupt manifest, one that is not a sweep's, or a corrupt
 * cells.jsonl is a RunFolderError naming the file.
 */
export async function readRunFolder(dir: string): Promise<RunFolder | undefined> {
  const path = join(dir, 'manifest.json');
  const parsed = await readRunJson(path, runManifestSchema, {
    optional: true,
    what: 'a sweep manifest (experiment runs cannot be resumed or merged)',
  });
  if (!parsed) return undefined;
  const manifest = parsed as unknown as RunManifest;
  if (manifest.shard) {
    try {
      checkShard(manifest.shard, `${path} shard`);
    } catch (err) {
      throw new RunFolderError((err as Error).message);
    }
  }
  let read: Awaited<ReturnType<typeof readCells>>;
  try {
    read = await readCells(join(dir, 'cells.jsonl'));
  } catch (err) {
    throw new RunFolderError(`${join(dir, 'cells.jsonl')} is corrupt: ${(err as Error).message}`);
  }
  return { dir, manifest, cells: read.cells, tornLine: read.tornLine };
}

/**
 * The config a resumed run uses: the one in its manifest (with the given runtime settings). The
 * config the user passed, if any, is only checked: it must ask for the same cells, or the resume
 * is refused naming each difference.
 */
export function configForResume(
  dir: string,
  recorded: SweepConfig,
  given: SweepConfig | undefined,
  runtime: Partial<Pick<SweepConfig, 'concurrency' | 'cellsPerThread' | 'transport'>> = {},
): SweepConfig {
  if (given) {
    const diffs = cellConfigDifferences(recorded, given);
    if (diffs.length) {
      throw new ConfigError(
        `cannot resume ${dir}: it was run with a config that asks for other cells (run's value vs now):\n${diffs.map((d) => `  ${d}`).join('\n')}\n` +
          'resume with the same config (or none: the manifest has it), or start a new run',
      );
    }
  }
  return { ...recorded, taskSets: recorded.taskSets ?? [], ...runtime };
}

/** What a resume keeps: the first ok or not-applicable record of each cell; failed cells run again. */
function settledCells(folder: RunFolder, cells: readonly Cell[], shard: Shard): { kept: CellResult[]; rerunFailed: number; duplicates: number } {
  const planned = new Set(cells.map(cellKey));
  const kept = new Map<string, CellResult>();
  let duplicates = 0;
  const failed = new Set<string>();
  for (const r of folder.cells) {
    const key = cellKey(r);
    if (!planned.has(key)) {
      throw new RunFolderError(`${join(folder.dir, 'cells.jsonl')} holds cell ${key}, which is not among the cells of shard ${formatShard(shard)} of the run's config`);
    }
    if (r.status === 'failed') failed.add(key);
    else if (kept.has(key)) duplicates++;
    else kept.set(key, r);
  }
  const rerunFailed = [...failed].filter((k) => !kept.has(k)).length;
  return { kept: [...kept.values()], rerunFailed, duplicates };
}

/** Options of a fresh run; a resume takes the folder's shard and refuses a different one. */
export interface SweepStartOptions extends SweepOptions {
  shard?: Shard;
}

/**
 * A sweep in progress. Each finished cell is appended to cells.jsonl at once; `finish` (also on
 * an interrupt) writes the aggregates and the manifest from every cell the run has. A resumed run
 * starts with the cells of its folder and runs the rest.
 */
export class SweepRun {
  /** Every cell of the run with a result: kept from before a resume, then each as it finishes. */
  readonly results: CellResult[];
  /** The run's cells (its shard's slice of the grid), in grid order. */
  readonly cells: Cell[];
  /** The cells this process runs. */
  readonly pending: Cell[];
  private readonly position: Map<string, number>;
  private stopped = false;
  /** Set when the backend crashed and the remaining cells were not run. */
  crashed = false;
  /** Worker threads running cells beside this thread; absent when every cell runs here. */
  private pool?: WorkerPool;
  /** Worker threads that were ready when the pool started (0: none joined). */
  private workerThreads = 0;
  private cellsPerThread = 1;
  /** Threads spawned before preparing, loading their modules meanwhile; openPool starts them. */
  private warm?: WorkerPool;
  private workerPreload: string[] = [];
  /** Records this process appended to cells.jsonl, in the order they finished. */
  private readonly appended: CellResult[] = [];
  private readonly writing = new Set<Promise<void>>();

  private constructor(
    readonly config: SweepConfig,
    /** Prepared only when there are cells to run. */
    readonly env: SweepEnv | undefined,
    readonly files: RunFiles,
    readonly manifest: RunManifest,
    private readonly progress: Progress,
    readonly shard: Shard,
    /** The records cells.jsonl held when this process took the run over, in file order. */
    private readonly kept: CellResult[],
    private readonly resumed: boolean,
  ) {
    this.cells = shardCells(expandCells(config), shard);
    this.position = new Map(this.cells.map((c, i) => [cellKey(c), i]));
    this.results = [...kept];
    const have = new Set(kept.map(cellKey));
    this.pending = this.cells.filter((c) => !have.has(cellKey(c)));
    manifest.cells.total = this.cells.length;
  }

  /** The backend the cells run on (the recorded one when a resume has nothing left to run). */
  get backend(): BackendInfo {
    return this.env?.backend ?? this.manifest.backend;
  }

  /** A new run folder; refuses one that already holds a run (continue that with `resume`). */
  static async start(config: SweepConfig, opts: SweepStartOptions = {}): Promise<SweepRun> {
    const progress = opts.progress ?? silentProgress;
    const shard = opts.shard ?? WHOLE;
    checkShard(shard);
    const resultsDir = opts.resultsDir ?? join(REPO_ROOT, 'results');
    const dir = opts.runId ? join(resultsDir, opts.runId) : freshRunDir(resultsDir, config.name);
    if (existsSync(join(dir, 'manifest.json'))) {
      throw new ConfigError(`${dir} already holds a run (manifest.json): continue it with --resume, or choose another --run-id`);
    }
    const files = new RunFiles(dir);
    await files.open();
    const warm = spawnWorkers(config, shardCells(expandCells(config), shard).length);
    const env = await prepareSweep(config, { ...opts, progress, runDir: dir }).catch(closing(warm));
    const manifest: RunManifest = baseManifest(basename(dir), config, env.backend);
    manifest.targets = targetSummaries(env);
    if (shard.count > 1) manifest.shard = shard;
    const run = new SweepRun(config, env, files, manifest, progress, shard, [], false);
    run.workerPreload = opts.workerPreload ?? [];
    run.warm = warm;
    await files.writeManifest(manifest);
    progress.log(`writing to ${dir}${shard.count > 1 ? ` (shard ${formatShard(shard)}: ${run.cells.length} cells)` : ''}`);
    return run;
  }

  /**
   * Continues the run in `dir` with `config` (see configForResume): cuts a torn last line off
   * cells.jsonl, keeps every cell that ran (ok or not-applicable), drops failed ones to run them
   * again, and runs what is missing. With nothing to run, no data or target is loaded.
   */
  static async resume(dir: string, config: SweepConfig, opts: SweepStartOptions = {}): Promise<SweepRun> {
    const progress = opts.progress ?? silentProgress;
    const folder = await readRunFolder(dir);
    if (!folder) throw new RunFolderError(`nothing to resume in ${dir}: it has no manifest.json`);
    const prior = folder.manifest;
    const shard = prior.shard ?? WHOLE;
    if (opts.shard && !sameShard(opts.shard, shard)) {
      throw new ConfigError(`cannot resume ${dir} as shard ${formatShard(opts.shard)}: it is shard ${formatShard(shard)}`);
    }
    const diffs = cellConfigDifferences(prior.config, config);
    if (diffs.length) throw new ConfigError(`cannot resume ${dir} with another grid:\n${diffs.map((d) => `  ${d}`).join('\n')}`);
    const cells = shardCells(expandCells(config), shard);
    const { kept, rerunFailed, duplicates } = settledCells(folder, cells, shard);
    if (folder.tornLine) progress.log(`${join(dir, 'cells.jsonl')}: its last line was torn by a crash mid-write; cut off (that cell runs again)`);
    if (duplicates) progress.log(`${join(dir, 'cells.jsonl')}: ${duplicates} extra record(s) of cells already done; dropped`);
    if (rerunFailed) progress.log(`${rerunFailed} failed cell(s) run again`);
    // Before anything else: from here on the file holds each kept cell once and ends with a newline.
    const files = new RunFiles(dir);
    await files.rewriteCells(kept);
    const toRun = cells.length - kept.length;
    const warm = toRun > 0 ? spawnWorkers(config, toRun) : undefined;
    const env = toRun > 0 ? await prepareSweep(config, { ...opts, progress, runDir: dir }).catch(closing(warm)) : undefined;
    const backend = env?.backend ?? prior.backend;
    const manifest: RunManifest = { ...baseManifest(basename(dir), config, backend), startedAt: prior.startedAt };
    manifest.targets = env ? targetSummaries(env) : prior.targets;
    if (env) warnRetrainedTargets(prior.targets, manifest.targets, progress);
    if (shard.count > 1) manifest.shard = shard;
    if (prior.gitCommit !== manifest.gitCommit) progress.log(`note: the run began at commit ${prior.gitCommit ?? 'unknown'} and continues at ${manifest.gitCommit ?? 'unknown'}`);
    manifest.resumes = [
      ...(prior.resumes ?? []),
      {
        at: new Date().toISOString(),
        hostname: manifest.machine.hostname,
        gitCommit: manifest.gitCommit,
        backend: backend.name,
        previousStatus: prior.status,
        kept: kept.length,
        rerunFailed,
        tornLine: folder.tornLine,
        duplicates,
        toRun,
      },
    ];
    const run = new SweepRun(config, env, files, manifest, progress, shard, kept, true);
    run.workerPreload = opts.workerPreload ?? [];
    run.warm = warm;
    await files.writeManifest(manifest);
    progress.log(`resuming ${dir}: ${kept.length} of ${cells.length} cells done, ${toRun} to run`);
    return run;
  }

  /**
   * Runs the pending cells, at most config.concurrency at once: this thread takes cells too, the
   * others go to worker threads (see openPool); stops launching new ones after stop().
   */
  async runAll(): Promise<CellResult[]> {
    const total = this.cells.length;
    this.progress.runStart?.({
      runDir: this.files.dir,
      runId: this.manifest.runId,
      total,
      done: total - this.pending.length,
      toRun: this.pending.length,
      queriesToRun: this.pending.reduce((sum, c) => sum + c.budget, 0),
      ...(this.shard.count > 1 ? { shard: this.shard } : {}),
      resumed: this.resumed,
    });
    const env = this.env;
    if (!env || !this.pending.length) return this.results;
    // Each thread interleaves cellsPerThread cells; in this thread alone, a concurrency above 1
    // interleaves that many more (the HTTP transport's own server).
    const perThread = resolveCellsPerThread(this.config.cellsPerThread, env.backend);
    this.cellsPerThread = perThread;
    const workers = this.openPool(env, perThread);
    this.pool = workers?.pool;
    const here = perThread * (workers ? 1 : resolveConcurrency(this.config.concurrency, this.pending.length, { inThread: true }));
    this.manifest.workers = { threads: 1, mainThread: true, cellsPerThread: perThread };
    // With worker threads the largest cells go first, so that none is left running alone at the
    // end; cells interleaved in a thread then also come in by budget, so their students stack
    // (the files are put back in grid order when the run ends).
    const queue = workers || perThread > 1 ? largestFirst(this.pending) : [...this.pending];
    // One picture of sample queries per (target, attack, side): the first of its cells to start draws it.
    const pictured = new Set<string>();
    let latest = -1;
    let hereDamaged = false;

    /** Takes cells off the queue one at a time until it is empty, the run stops, or `more()` says no. */
    const runner = async (run: (cell: Cell, sample: boolean, onStep: Progress['cellStep']) => Promise<CellResult>, more: () => boolean, inHere: boolean) => {
      while (!this.stopped && queue.length && more()) {
        const cell = queue.shift() as Cell;
        const index = this.position.get(cellKey(cell)) as number;
        latest = index;
        this.progress.cellStart(index, total, cell);
        // The status line shows the cell started last; its steps only, when several run at once.
        const onStep = (d: number, t: number, phase: string) => {
          if (index === latest) this.progress.cellStep(d, t, phase);
        };
        const picture = queryGridPath(this.files.dir, cell);
        const sample = !pictured.has(picture);
        pictured.add(picture);
        const result = await run(cell, sample, onStep);
        if (this.stopped) return; // finish() already wrote the files; a late result must not change them
        this.results.push(result);
        this.appended.push(result);
        const write = this.files.appendCell(result);
        this.writing.add(write);
        await write.finally(() => this.writing.delete(write));
        this.progress.cellEnd(index, total, result);
        // A worker's crash costs that worker only (the pool replaces it). In this thread the heap
        // is damaged: its later cells go to the workers, or, with none, the run ends.
        if (inHere && result.error?.startsWith(BACKEND_CRASH)) {
          hereDamaged = true;
          if (workers && (await workers.ready) && workers.pool.size > 0) {
            this.progress.log(`the ${env.backend.name} backend of this thread crashed in cell ${index + 1} (${result.error}); the worker threads run the remaining cells`);
          } else {
            this.stopped = true;
            this.crashed = true;
            this.progress.log(`the ${env.backend.name} backend crashed in cell ${index + 1} (${result.error}); the cells not yet run are left out, since each would fail on the damaged heap. Finished cells are kept in ${this.files.dir}`);
          }
          return;
        }
      }
    };
    const inThisThread = (cell: Cell, sample: boolean, onStep: Progress['cellStep']) => runCell(sample ? env : { ...env, samples: undefined }, cell, onStep);
    const runners = Array.from({ length: here }, () => runner(inThisThread, () => !hereDamaged, true));
    if (workers) {
      // The workers join once they are ready; one stops when the pool has lost every thread.
      const inWorker = (cell: Cell, sample: boolean, onStep: Progress['cellStep']) => workers.pool.run({ cell, sample, onStep });
      runners.push(
        workers.ready.then(async (ok) => {
          if (!ok) return;
          this.workerThreads = workers.pool.size;
          await Promise.all(Array.from({ length: this.workerThreads * perThread }, () => runner(inWorker, () => workers.pool.size > 0, false)));
        }),
      );
    }
    await Promise.all(runners);
    if (queue.length && !this.stopped) {
      // This thread's backend crashed, then the workers were lost too.
      this.crashed = true;
      this.progress.log(`${queue.length} cell(s) were not run: this thread's backend crashed and no worker thread is left. Finished cells are kept in ${this.files.dir}`);
    }
    return this.results;
  }

  /**
   * Worker threads for the cells beside this thread's, or undefined to run them all in this
   * thread: when one cell at a time is asked for, or when the harness serves the targets over HTTP
   * itself (one server and one ledger, in this thread). `ready` resolves once the threads have
   * prepared their environment: to false when none can run cells (said in the log).
   */
  private openPool(env: SweepEnv, perThread: number): { pool: WorkerPool; ready: Promise<boolean> } | undefined {
    const warm = this.warm;
    this.warm = undefined;
    // This thread's footprint once prepared stands for a worker's: each holds the same data and targets.
    const memory = { free: freemem(), perThread: process.memoryUsage().rss };
    const threads = resolveConcurrency(this.config.concurrency, this.pending.length, { memory, cellsPerThread: perThread });
    const log = (m: string) => this.progress.log(m);
    if (threads <= 1 || servesInThread(this.config)) {
      void warm?.close();
      if (threads > 1) log(`transport "http" serves the targets from this thread: cells run here${this.config.concurrency === 'auto' ? ', one at a time' : ` (${this.config.concurrency} interleaved)`}`);
      return undefined;
    }
    // This thread runs cells too: the others need threads - 1 workers.
    const pool = warm ?? WorkerPool.spawn(threads - 1);
    const init = { config: this.config, cacheDir: env.cacheDir, backend: env.backend.name, runDir: this.files.dir, preload: this.workerPreload };
    const hooks = {
      log,
      crashed: (cell: Cell, error: string, seconds: number): CellResult => ({ ...cellBase(env, cell), status: 'failed', queries: 0, seconds, error: `${BACKEND_CRASH}: ${error}` }),
      isCrash: (r: CellResult) => Boolean(r.error?.startsWith(BACKEND_CRASH)),
    };
    log(`cells run in this thread now, and in ${threads - 1} worker thread${threads === 2 ? '' : 's'} as soon as they are ready (each with its own ${env.backend.name} backend, data and targets)`);
    const ready = pool.start(init, attackRegistryDigest(ATTACKS), hooks, threads - 1, perThread).then((started) => {
      if (started === true) {
        log(`${pool.size} worker thread${pool.size === 1 ? '' : 's'} ready: ${(pool.size + 1) * perThread} cells at a time${perThread > 1 ? ` (${perThread} interleaved in each thread)` : ''}`);
        return true;
      }
      log(`cells run in this thread only: ${started.reason}`);
      return false;
    });
    return { pool, ready };
  }

  stop(): void {
    this.stopped = true;
  }

  /**
   * Cells run at once finish out of grid order. Once no record is being appended, the ones this
   * process appended are put in grid order (after those it found, which stay as they were), so
   * cells.jsonl reads like that of a run of one cell at a time.
   */
  private async orderCellsFile(): Promise<void> {
    await Promise.allSettled([...this.writing]);
    const at = (r: CellResult) => this.position.get(cellKey(r)) ?? 0;
    if (this.appended.every((r, i) => i === 0 || at(this.appended[i - 1]) < at(r))) return;
    await this.files.rewriteCells([...this.kept, ...[...this.appended].sort((a, b) => at(a) - at(b))]);
  }

  /** Counts over the run's cells; `missing` have no result (interrupted, or left out after a crash). */
  counts(): RunCounts {
    const count = (s: CellResult['status']) => this.results.filter((r) => r.status === s).length;
    return { total: this.cells.length, ok: count('ok'), notApplicable: count('not-applicable'), failed: count('failed'), missing: this.cells.length - this.results.length };
  }

  async finish(status: 'finished' | 'interrupted'): Promise<void> {
    this.stopped = true;
    // Grid order, whatever order the cells finished or were resumed in: the files of a resumed or
    // concurrent run read like those of one straight run.
    this.results.sort((a, b) => (this.position.get(cellKey(a)) ?? 0) - (this.position.get(cellKey(b)) ?? 0));
    const { missing, ...counts } = this.counts();
    // A run that ended with cells not run (a backend crash) is not finished: --resume runs them.
    if (missing > 0) status = 'interrupted';
    this.manifest.status = status;
    this.manifest.finishedAt = new Date().toISOString();
    this.manifest.cells = counts;
    if (this.pool && this.workerThreads) {
      this.manifest.workers = { threads: 1 + this.workerThreads, workerThreads: this.workerThreads, crashes: this.pool.crashes, cellsPerThread: this.cellsPerThread };
    }
    await this.pool?.close();
    await this.warm?.close();
    await this.orderCellsFile();
    await writeRunOutputs(this.files, this.config, this.results, this.manifest, (m) => this.progress.log(m));
    if (this.env) await disposeSweep(this.env);
    this.progress.runEnd?.({ runDir: this.files.dir, status, counts: { ...counts, missing } });
  }
}

/** The harness serves the targets over HTTP itself: one server and one ledger, in the main thread. */
function servesInThread(config: SweepConfig): boolean {
  return config.transport === 'http' && !config.server;
}

/**
 * The worker threads for `pending` cells (all but this thread's), spawned before the sweep
 * prepares its environment so that their start-up (mostly loading modules) overlaps it; undefined
 * when every cell will run in this thread. openPool settles the number (free memory may allow
 * fewer) and starts them.
 */
function spawnWorkers(config: SweepConfig, pending: number): WorkerPool | undefined {
  const threads = resolveConcurrency(config.concurrency, pending);
  return threads > 1 && !servesInThread(config) ? WorkerPool.spawn(threads - 1) : undefined;
}

/** For a failed preparation: stops the spawned threads, then rethrows. */
function closing(pool: WorkerPool | undefined): (err: unknown) => Promise<never> {
  return async (err) => {
    await pool?.close();
    throw err;
  };
}

function targetSummaries(env: SweepEnv): Manifest['targets'] {
  return [...env.targets.values()].map((t) => ({
    id: t.id,
    family: t.family,
    ...(t.arch ? { arch: t.arch } : {}),
    testAccuracy: t.testAccuracy,
  }));
}

/**
 * Targets whose test accuracy differs between two records of one run: trained again differently
 * (another backend or machine, without a shared cache), so the run's cells imitate two models.
 */
export function retrainedTargets(before: readonly TargetSummary[], after: readonly TargetSummary[]): { id: string; before: number; after: number }[] {
  return after.flatMap((t) => {
    const b = before.find((x) => x.id === t.id);
    return b && b.testAccuracy !== t.testAccuracy ? [{ id: t.id, before: b.testAccuracy, after: t.testAccuracy }] : [];
  });
}

function warnRetrainedTargets(before: readonly TargetSummary[], after: readonly TargetSummary[], progress: Progress): void {
  for (const t of retrainedTargets(before, after)) {
    progress.log(`warning: target ${t.id} has test accuracy ${t.after} now, ${t.before} in the run so far: it was trained again differently (share RHOBENCH_CACHE between machines so every process loads the same one)`);
  }
}

/**
 * Writes a run folder's outputs from its cells and manifest: the data (writeRunData), then
 * benchmark.json, the plots and the report (writeRunViews). Shared by sweeps and merges.
 */
export async function writeRunOutputs(files: RunFiles, config: SweepConfig, results: CellResult[], manifest: Manifest, log: (message: string) => void): Promise<void> {
  await writeRunData(files, config, results, manifest);
  await writeRunViews(files.dir, log);
}

/** The aggregates, reference.json when the config has published figures, and the manifest last. */
export async function writeRunData(files: RunFiles, config: SweepConfig, results: CellResult[], manifest: Manifest): Promise<void> {
  await files.writeAggregates(results, { taskSets: config.taskSets, epsilons: config.epsilons });
  if (config.reference) {
    await writeAtomic(join(files.dir, 'reference.json'), `${JSON.stringify(compareReferences(config.reference, results), null, 2)}\n`);
  }
  await files.writeManifest(manifest);
}

/** What is read off the written data: benchmark.json, and the plots and report (conveniences: a rendering problem is logged, never fatal). */
export async function writeRunViews(dir: string, log: (message: string) => void): Promise<void> {
  // After the manifest: the tracker's wall-time entry reads finishedAt from it.
  await writeTrackerJson(dir);
  try {
    await writePlots(dir);
    await writeReport(dir);
  } catch (err) {
    log(`could not write plots or report.html: ${(err as Error).message}`);
  }
}

/** Runs a whole sweep (or one shard of it) and writes its files; for library use and tests. */
export async function runSweep(config: SweepConfig, opts: SweepStartOptions = {}): Promise<SweepRun> {
  const run = await SweepRun.start(config, opts);
  await run.runAll();
  await run.finish('finished');
  return run;
}

/** Continues the run in `dir` (see SweepRun.resume) to the end; for library use and tests. */
export async function resumeSweep(dir: string, config: SweepConfig, opts: SweepStartOptions = {}): Promise<SweepRun> {
  const run = await SweepRun.resume(dir, config, opts);
  await run.runAll();
  await run.finish('finished');
  return run;
}
