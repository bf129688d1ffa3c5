import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Attack } from '../attacks/types.ts';
import type { BackendName } from '../engine/backend.ts';
import type { SweepConfig } from './config.ts';
import type { Cell, CellResult } from './types.ts';

/** A config's `concurrency`: a number of cells in flight, or 'auto' (one per core, at most one per cell). */
export type ConcurrencySetting = SweepConfig['concurrency'];

/**
 * How many threads run cells: the main thread, and worker threads beside it. 'auto' takes one per
 * core the process may use, never more than the cells fill (`cellsPerThread` each), nor more
 * workers than free memory holds when each needs `memory.perThread` bytes (a worker holds its own
 * data and targets). When cells must run in the main thread (`inThread`), 'auto' means one: cells
 * there share one backend, so more would interleave, not parallelise.
 */
export function resolveConcurrency(
  setting: ConcurrencySetting,
  cells: number,
  opts: { inThread?: boolean; cores?: number; cellsPerThread?: number; memory?: { free: number; perThread: number } } = {},
): number {
  if (setting !== 'auto') return setting;
  if (opts.inThread) return 1;
  const fits = opts.memory ? 1 + Math.floor(opts.memory.free / opts.memory.perThread) : Infinity;
  return Math.max(1, Math.min(opts.cores ?? availableParallelism(), Math.ceil(cells / (opts.cellsPerThread ?? 1)), fits));
}

/**
 * 'auto' cells per thread on a GPU backend: enough interleaved cells that their students stack
 * (models/stacked-fit.ts) into programs that fill a GPU. A first choice, until a GPU measurement
 * settles it (README, Backends and speed).
 */
export const CELLS_PER_GPU_THREAD = 8;

/** A config's `cellsPerThread` for a backend: 'auto' interleaves only on a GPU. */
export function resolveCellsPerThread(setting: SweepConfig['cellsPerThread'], backend: { gpu: boolean }): number {
  return setting === 'auto' ? (backend.gpu ? CELLS_PER_GPU_THREAD : 1) : setting;
}

/**
 * Cells in the order several threads should take them: longest first (longest-processing-time
 * scheduling), by budget, the measure of a cell's work (queries asked, a student trained on
 * them); grid order among equals.
 */
export function largestFirst(cells: readonly Cell[]): Cell[] {
  return [...cells].sort((a, b) => b.budget - a.budget);
}

/**
 * A digest of the attack registry: names and the source of each `run`. A worker loads the registry
 * from source; an attack added or replaced at run time in the main thread (a plugin, a test) gives
 * another digest there, and the sweep then keeps its cells in the main thread, where that attack is.
 */
export function attackRegistryDigest(attacks: Record<string, Attack>): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(attacks).sort()) hash.update(`${name}\0${formatFreeSource(attacks[name].run)}\0`);
  return hash.digest('hex');
}

/**
 * A function's source as written: tsx compiles a module to CommonJS when it is require()d (uvu's
 * -r tsx) and to ESM when imported (workers): CommonJS output calls imports as
 * `(0, import_mod.name)(…)` and spaces differently. Those differences are taken out.
 */
function formatFreeSource(fn: unknown): string {
  return String(fn)
    .replace(/\(0,\s*import_[\w$]+\.([\w$]+)\)/g, '$1')
    .replace(/\bimport_[\w$]+\.([\w$]+)/g, '$1')
    .replace(/\s+/g, '');
}

/** What a worker needs to prepare its own copy of a sweep's environment. */
export interface WorkerInit {
  config: SweepConfig;
  cacheDir: string;
  /** The backend the main thread resolved ('auto' is settled there, so every thread runs the same one). */
  backend: BackendName;
  /** Run folder: where sample-query pictures go. */
  runDir?: string;
  /** Modules imported before preparing (SweepOptions.workerPreload). */
  preload?: string[];
}

/** Messages to a worker: first its init (once), then cells. */
export type ToWorker = { type: 'init'; init: WorkerInit } | { type: 'run'; id: number; cell: Cell; sample: boolean };

/** Messages from a worker. */
export type FromWorker =
  | { type: 'ready'; attacks: string }
  | { type: 'start-failed'; error: string }
  | { type: 'log'; message: string }
  | { type: 'step'; id: number; done: number; total: number; phase: string }
  | { type: 'result'; id: number; result: CellResult };

/** What a pool asks of the sweep it serves. */
export interface PoolHooks {
  log(message: string): void;
  /** The record of a cell its thread did not finish: the thread died, or the pool was closed. */
  crashed(cell: Cell, error: string, seconds: number): CellResult;
  /** True for a result that leaves its worker's heap damaged (a wasm RuntimeError). */
  isCrash(result: CellResult): boolean;
}

export interface CellJob {
  cell: Cell;
  /** Keep this cell's first queries for a picture (the main thread picks one cell per picture). */
  sample: boolean;
  onStep?(done: number, total: number, phase: string): void;
}

interface Pending extends CellJob {
  id: number;
  started: number;
  resolve(result: CellResult): void;
}

/** Registers tsx in the worker, then loads cell-worker.ts. */
const ENTRY = new URL('./cell-worker.mjs', import.meta.url);

/**
 * One worker thread running cells (as many at once as the pool's cellsPerThread). It starts
 * loading its modules at once (most of a worker's start-up) and prepares its environment when
 * `start` sends the init: a sweep spawns its threads before preparing its own environment, so the
 * two overlap.
 */
class CellThread {
  readonly worker: Worker;
  readonly ready: Promise<{ attacks: string }>;
  readonly jobs = new Map<number, Pending>();
  dead = false;
  /** It prepared its environment and took work: worth replacing when it dies. */
  wasReady = false;

  constructor(
    readonly number: number,
    private readonly onMessage: (thread: CellThread, msg: FromWorker) => void,
    private readonly onDeath: (thread: CellThread, error: string) => void,
  ) {
    // stdout: true keeps a stray print of a worker off the parent's stdout (the --json event stream);
    // it is passed on to stderr instead.
    // execArgv: [] leaves out the main thread's loader flags, which a worker cannot take.
    this.worker = new Worker(ENTRY, { execArgv: [], stdout: true });
    // Until it has work to prepare for, a thread must not keep the process alive (a sweep whose
    // preparation failed ends without waiting on it).
    this.worker.unref();
    this.worker.stdout.pipe(process.stderr, { end: false });
    let settle: { ok(v: { attacks: string }): void; fail(e: Error): void };
    this.ready = new Promise((ok, fail) => (settle = { ok, fail }));
    this.ready.catch(() => {}); // awaited by the pool; a thread dying later must not raise an unhandled rejection
    this.worker.on('message', (msg: FromWorker) => {
      if (msg.type === 'ready') {
        this.wasReady = true;
        settle.ok({ attacks: msg.attacks });
      } else if (msg.type === 'start-failed') {
        this.die(`worker thread ${this.number} did not start: ${msg.error}`, settle);
        void this.worker.terminate();
      } else this.onMessage(this, msg);
    });
    this.worker.on('error', (err) => this.die(`worker thread ${this.number} failed: ${err.message}`, settle));
    this.worker.on('exit', (code) => this.die(`worker thread ${this.number} exited (code ${code})`, settle));
  }

  /** Sends the environment to prepare; `ready` resolves once it is prepared. */
  start(init: WorkerInit): void {
    if (this.dead) return;
    this.worker.ref();
    this.worker.postMessage({ type: 'init', init } satisfies ToWorker);
  }

  private die(error: string, settle: { fail(e: Error): void }): void {
    if (this.dead) return;
    this.dead = true;
    settle.fail(new Error(error));
    this.onDeath(this, error);
  }

  run(job: Pending): void {
    this.jobs.set(job.id, job);
    this.worker.postMessage({ type: 'run', id: job.id, cell: job.cell, sample: job.sample } satisfies ToWorker);
  }

  async stop(): Promise<void> {
    this.dead = true;
    await this.worker.terminate();
  }
}

/**
 * Worker threads that run a sweep's cells, each thread with its own tfjs backend, data and targets,
 * `cellsPerThread` cells at a time. A cell whose worker crashes (a wasm RuntimeError, which damages
 * that thread's heap, or the thread dying) is recorded as failed, as are the others in flight
 * there, and the thread is replaced by a fresh one.
 * Made in two steps, so that the first overlaps the main thread's own preparation: `spawn` (the
 * threads load their modules), then `start` (they prepare the sweep's environment).
 */
export class WorkerPool {
  private readonly threads = new Set<CellThread>();
  private readonly queue: Pending[] = [];
  private nextId = 0;
  private nextNumber = 1;
  private closed = false;
  /** Set by start: what a thread (a replacement too) prepares. */
  private init?: WorkerInit;
  private hooks: PoolHooks = { log() {}, crashed: () => { throw new Error('the pool has not started'); }, isCrash: () => false };
  /** Why `new Worker` threw, if it did. */
  private spawnError?: string;
  /** Threads lost in a cell (each replaced). */
  crashes = 0;
  /** Cells each thread runs at once (set by start). */
  private cellsPerThread = 1;

  private constructor() {}

  /**
   * Spawns `size` threads that load their modules and then wait for `start`. Never throws: a
   * thread that cannot be created is reported by `start`.
   */
  static spawn(size: number): WorkerPool {
    const pool = new WorkerPool();
    try {
      for (let i = 0; i < size; i++) pool.spawn();
    } catch (err) {
      pool.spawnError = (err as Error).message;
    }
    return pool;
  }

  /**
   * Sends every thread (at most `size`; extra ones are stopped) its environment and waits until
   * each has prepared it. Resolves to true, or (the pool closed) to the reason cells must stay in
   * the main thread: no thread started, or the threads' attack registry differs from the main
   * thread's (`attacks`, an attackRegistryDigest).
   */
  async start(init: WorkerInit, attacks: string, hooks: PoolHooks, size = this.threads.size, cellsPerThread = 1): Promise<true | { reason: string }> {
    this.init = init;
    this.hooks = hooks;
    this.cellsPerThread = cellsPerThread;
    const threads = [...this.threads];
    await Promise.all(threads.slice(size).map((t) => (this.threads.delete(t), t.stop())));
    const kept = threads.slice(0, size);
    if (!kept.length) {
      await this.close();
      return { reason: `no worker thread started (${this.spawnError ?? 'none was spawned'})` };
    }
    for (const t of kept) t.start(init);
    const outcomes = await Promise.allSettled(kept.map((t) => t.ready));
    const ready = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [(o.reason as Error).message] : []));
    if (this.spawnError) failures.push(this.spawnError);
    if (!ready.length) {
      await this.close();
      return { reason: `no worker thread started (${failures[0]})` };
    }
    if (ready.some((r) => r.attacks !== attacks)) {
      await this.close();
      return { reason: 'the attack registry was changed in this thread (an attack added or replaced at run time), and worker threads would not see the change' };
    }
    if (failures.length) hooks.log(`${failures.length} of ${kept.length} worker threads did not start (${failures[0]}); running on ${ready.length}`);
    return true;
  }

  /** Live threads: started or starting. */
  get size(): number {
    return this.threads.size;
  }

  private spawn(): CellThread {
    const thread = new CellThread(this.nextNumber++, (t, msg) => this.message(t, msg), (t, error) => this.death(t, error));
    this.threads.add(thread);
    thread.ready.then(
      () => this.dispatch(),
      () => {},
    );
    return thread;
  }

  /** Runs a cell on the next free thread. Never rejects: a crash is a failed result. */
  run(job: CellJob): Promise<CellResult> {
    return new Promise((resolve) => {
      this.queue.push({ ...job, id: this.nextId++, started: performance.now(), resolve });
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const thread of this.threads) {
      if (!this.queue.length) return;
      if (thread.dead || thread.jobs.size >= this.cellsPerThread) continue;
      // Only threads that are ready take work; ready resolves before any other message arrives.
      void thread.ready.then(
        () => {
          while (!thread.dead && thread.jobs.size < this.cellsPerThread && this.queue.length) {
            const job = this.queue.shift() as Pending;
            job.started = performance.now();
            thread.run(job);
          }
        },
        () => {},
      );
    }
    if (this.queue.length && this.threads.size === 0) this.failQueued('no worker thread is left to run it');
  }

  private message(thread: CellThread, msg: FromWorker): void {
    if (msg.type === 'log') this.hooks.log(`worker ${thread.number}: ${msg.message}`);
    else if (msg.type === 'step') thread.jobs.get(msg.id)?.onStep?.(msg.done, msg.total, msg.phase);
    else if (msg.type === 'result' && thread.jobs.has(msg.id)) {
      const job = thread.jobs.get(msg.id) as Pending;
      thread.jobs.delete(msg.id);
      if (this.hooks.isCrash(msg.result)) {
        // The thread's wasm heap is damaged: every later cell there would fail too.
        this.crashes++;
        this.hooks.log(`worker ${thread.number} crashed in a cell (${msg.result.error}); a fresh worker takes its place`);
        this.replace(thread);
      }
      job.resolve(msg.result);
      this.dispatch();
    }
  }

  private death(thread: CellThread, error: string): void {
    this.threads.delete(thread);
    if (!this.init) this.spawnError ??= error; // died loading its modules: start reports it
    const jobs = [...thread.jobs.values()];
    thread.jobs.clear();
    if (this.closed) {
      for (const job of jobs) job.resolve(this.hooks.crashed(job.cell, 'stopped', (performance.now() - job.started) / 1000));
      return;
    }
    if (jobs.length) {
      this.crashes++;
      this.hooks.log(`${error} in a cell; ${jobs.length === 1 ? 'the cell is' : `its ${jobs.length} cells in flight are`} recorded as failed and a fresh worker takes its place`);
      for (const job of jobs) job.resolve(this.hooks.crashed(job.cell, error, (performance.now() - job.started) / 1000));
    } else if (thread.wasReady) {
      this.hooks.log(`${error} between cells; a fresh worker takes its place`);
    }
    // A thread that never started is not replaced: its replacement would most likely fail the same way.
    if (thread.wasReady) this.spawnReplacement();
    else if (this.queue.length && this.threads.size === 0) this.failQueued(error);
    this.dispatch();
  }

  private replace(thread: CellThread): void {
    this.threads.delete(thread);
    void thread.stop();
    // Cells in flight beside the one that crashed share its damaged heap.
    for (const job of thread.jobs.values()) job.resolve(this.hooks.crashed(job.cell, `worker ${thread.number} crashed in another cell`, (performance.now() - job.started) / 1000));
    thread.jobs.clear();
    this.spawnReplacement();
  }

  private spawnReplacement(): void {
    if (this.closed || !this.init) return;
    const fresh = this.spawn();
    fresh.start(this.init);
    fresh.ready.catch((err: Error) => this.hooks.log(`a replacement worker did not start: ${err.message}`));
  }

  private failQueued(why: string): void {
    for (const job of this.queue.splice(0)) job.resolve(this.hooks.crashed(job.cell, why, 0));
  }

  /** Stops every thread; cells in flight end as failed (a stopped run drops them). */
  async close(): Promise<void> {
    this.closed = true;
    const threads = [...this.threads];
    await Promise.all(threads.map((t) => t.stop()));
    for (const t of threads) {
      for (const job of t.jobs.values()) job.resolve(this.hooks.crashed(job.cell, 'stopped', (performance.now() - job.started) / 1000));
      t.jobs.clear();
    }
    this.threads.clear();
    this.failQueued('stopped');
  }
}
