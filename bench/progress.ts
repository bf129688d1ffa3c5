import { cellKey } from './grid.ts';
import type { Shard } from './shard.ts';
import type { Cell, CellResult } from './types.ts';

/** What a run is about to do; `done` counts cells a resumed run already has. */
export interface RunStartInfo {
  runDir: string;
  runId: string;
  /** Cells of this run (the shard's slice when sharded). */
  total: number;
  done: number;
  toRun: number;
  /** The budgets of the cells to run, summed: the work left, in which the ETA is reckoned. */
  queriesToRun?: number;
  shard?: Shard;
  resumed: boolean;
}

export interface RunCounts {
  total: number;
  ok: number;
  notApplicable: number;
  failed: number;
  /** Cells with no result: not run because of an interrupt or a backend crash. */
  missing: number;
}

export interface RunEndInfo {
  runDir: string;
  status: 'finished' | 'interrupted';
  counts: RunCounts;
}

export interface Progress {
  /** Optional so a minimal Progress stays valid. */
  runStart?(info: RunStartInfo): void;
  /** `index` is the cell's position among the run's cells, `total` their number. */
  cellStart(index: number, total: number, cell: Cell): void;
  /** Within a cell: e.g. queries asked or epochs trained. */
  cellStep(done: number, total: number, phase: string): void;
  cellEnd(index: number, total: number, result: CellResult): void;
  log(message: string): void;
  runEnd?(info: RunEndInfo): void;
}

function describe(cell: Cell): string {
  return `${cell.target} · ${cell.attack} · ${cell.side} · ${cell.student} · ${cell.budget} q · seed ${cell.seed}`;
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function outcome(r: CellResult): string {
  if (r.status === 'ok') return `ρ=${(r.rho as number).toFixed(3)} (${r.seconds.toFixed(1)}s)`;
  if (r.status === 'not-applicable') return `n/a: ${r.error}`;
  return `FAILED: ${r.error}`;
}

function bar(done: number, total: number, width = 16): string {
  const full = total ? Math.round((done / total) * width) : width;
  return `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
}

/**
 * Cells done of the run's total, counting those a resumed run already had, and an ETA from the
 * time since the first cell of this process started. A cell's work is taken as its budget (queries
 * asked, a student trained on them): the ETA is that time per query of the cells done, times the
 * queries of the cells left, so it holds whatever order the cells run in (several threads take
 * the largest first). Cells that end without running (not applicable, failed) only leave the
 * count. Without budgets (a minimal runStart) it is the mean time per cell times the cells left.
 * (The time before the first cell, loading data and training targets, is not a cell's cost.)
 */
export class Tally {
  total = 0;
  done = 0;
  private ranHere = 0;
  private firstStart?: number;
  private queriesLeft?: number;
  private queriesDone = 0;

  constructor(private readonly now: () => number = Date.now) {}

  begin(info: Pick<RunStartInfo, 'total' | 'done' | 'queriesToRun'>): void {
    this.total = info.total;
    this.done = info.done;
    this.queriesLeft = info.queriesToRun;
  }

  start(): void {
    this.firstStart ??= this.now();
  }

  end(result: Pick<CellResult, 'status' | 'budget'>): void {
    this.done++;
    this.ranHere++;
    if (this.queriesLeft === undefined) return;
    this.queriesLeft -= result.budget;
    if (result.status === 'ok') this.queriesDone += result.budget;
  }

  /** Seconds left, NaN before a cell has finished. */
  secondsLeft(): number {
    if (!this.ranHere || this.firstStart === undefined) return NaN;
    const elapsed = (this.now() - this.firstStart) / 1000;
    if (this.queriesLeft !== undefined) return this.queriesDone ? (elapsed / this.queriesDone) * Math.max(0, this.queriesLeft) : NaN;
    return (elapsed / this.ranHere) * Math.max(0, this.total - this.done);
  }

  eta(): string {
    return duration(this.secondsLeft());
  }
}

/**
 * On a terminal one live status line (a bar, cells done/total, the cell in flight, its steps, an
 * ETA) with a line per finished cell scrolling above it; elsewhere (CI logs) plain lines only.
 */
export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  const tty = Boolean(stream.isTTY);
  const tally = new Tally();
  let current = '';
  // Counts and ETA first: a narrow terminal cuts the end of the line.
  const status = (step = '') => `${bar(tally.done, tally.total)} ${tally.done}/${tally.total} · ETA ${tally.eta()} · ${current}${step}`;
  const redraw = (text: string) => {
    const width = stream.columns ?? 120;
    stream.write(`\r\x1b[2K${text.length > width - 1 ? text.slice(0, width - 2) + '…' : text}`);
  };
  const line = (text: string) => {
    if (tty) redraw('');
    stream.write(`${tty ? '\r' : ''}${text}\n`);
    if (tty && current) redraw(status());
  };
  return {
    runStart(info) {
      tally.begin(info);
      const shard = info.shard && info.shard.count > 1 ? ` (shard ${info.shard.index}/${info.shard.count})` : '';
      const kept = info.resumed ? `; ${info.done} already done, ${info.toRun} to run` : '';
      line(`${info.total} cells${shard}${kept}`);
    },
    cellStart(index, total, cell) {
      tally.total = total;
      tally.start();
      current = describe(cell);
      if (tty) redraw(status());
      else stream.write(`[${index + 1}/${total}] ${current} …\n`);
    },
    cellStep(done, total, phase) {
      if (tty) redraw(status(` · ${phase} ${done}/${total}`));
    },
    cellEnd(index, total, result) {
      tally.end(result);
      const text = `[${index + 1}/${total}] ${describe(result)} → ${outcome(result)} · ${tally.done}/${tally.total} done, ETA ${tally.eta()}`;
      if (tty) redraw('');
      stream.write(`${tty ? '\r' : ''}${text}\n`);
      current = '';
    },
    log(message) {
      line(message);
    },
    runEnd(info) {
      current = '';
      const c = info.counts;
      line(`${info.status}: ${c.ok} ok, ${c.notApplicable} n/a, ${c.failed} failed${c.missing ? `, ${c.missing} not run` : ''} of ${c.total} cells`);
    },
  };
}

/**
 * Machine-readable progress: one JSON object per line, each with `event` and `time` (ISO 8601):
 *   start     {runDir, runId, total, done, toRun, queriesToRun, shard?, resumed}
 *   cell-start {index, total, key, cell}
 *   cell-end  {index, total, done, key, cell, status, rho, seconds, queries, error?}
 *   log       {message}
 *   finish    {runDir, status, counts: {total, ok, notApplicable, failed, missing}}
 * `index` is the cell's 0-based position among the run's cells. Steps within a cell are not sent.
 */
export function createJsonProgress(stream: NodeJS.WritableStream = process.stdout): Progress {
  let done = 0;
  const emit = (event: string, fields: object) => stream.write(`${JSON.stringify({ event, time: new Date().toISOString(), ...fields })}\n`);
  const cellOf = (c: Cell): Cell => ({ target: c.target, attack: c.attack, student: c.student, side: c.side, budget: c.budget, seed: c.seed });
  return {
    runStart(info) {
      done = info.done;
      emit('start', info);
    },
    cellStart(index, total, cell) {
      emit('cell-start', { index, total, key: cellKey(cell), cell: cellOf(cell) });
    },
    cellStep() {},
    cellEnd(index, total, r) {
      done++;
      emit('cell-end', {
        index, total, done, key: cellKey(r), cell: cellOf(r), status: r.status, rho: r.rho, seconds: r.seconds, queries: r.queries,
        ...(r.error !== undefined ? { error: r.error } : {}),
      });
    },
    log(message) {
      emit('log', { message });
    },
    runEnd(info) {
      emit('finish', info);
    },
  };
}

/** For tests and library use. */
export const silentProgress: Progress = { cellStart() {}, cellStep() {}, cellEnd() {}, log() {} };
