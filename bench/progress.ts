import type { Cell, CellResult } from './types.ts';

export interface Progress {
  cellStart(index: number, total: number, cell: Cell): void;
  /** Within a cell: e.g. queries asked or epochs trained. */
  cellStep(done: number, total: number, phase: string): void;
  cellEnd(index: number, total: number, result: CellResult): void;
  log(message: string): void;
}

function describe(cell: Cell): string {
  return `${cell.target} · ${cell.attack} · ${cell.side} · ${cell.student} · ${cell.budget} q · seed ${cell.seed}`;
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function outcome(r: CellResult): string {
  if (r.status === 'ok') return `ρ=${(r.rho as number).toFixed(3)} (${r.seconds.toFixed(1)}s)`;
  if (r.status === 'not-applicable') return `n/a: ${r.error}`;
  return `FAILED: ${r.error}`;
}

/**
 * One live status line on a terminal; plain log lines elsewhere (CI logs stay readable).
 * The ETA averages the time of the cells finished so far.
 */
export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress {
  const tty = Boolean(stream.isTTY);
  const started = Date.now();
  let finished = 0;
  let current = '';
  let prefix = '';
  const eta = (total: number) => {
    const elapsed = (Date.now() - started) / 1000;
    return finished ? duration((elapsed / finished) * (total - finished)) : '?';
  };
  const redraw = (text: string) => {
    const width = stream.columns ?? 120;
    stream.write(`\r\x1b[2K${text.length > width - 1 ? text.slice(0, width - 2) + '…' : text}`);
  };
  return {
    cellStart(index, total, cell) {
      prefix = `[${index + 1}/${total}] ${describe(cell)}`;
      current = `${prefix} · ETA ${eta(total)}`;
      if (tty) redraw(current);
      else stream.write(`${prefix} …\n`);
    },
    cellStep(done, total, phase) {
      if (tty) redraw(`${current} · ${phase} ${done}/${total}`);
    },
    cellEnd(index, total, result) {
      finished++;
      const text = `[${index + 1}/${total}] ${describe(result)} → ${outcome(result)}`;
      if (tty) redraw('');
      stream.write(`${tty ? '\r' : ''}${text}\n`);
    },
    log(message) {
      if (tty) redraw('');
      stream.write(`${tty ? '\r' : ''}${message}\n`);
    },
  };
}

/** For tests and library use. */
export const silentProgress: Progress = { cellStart() {}, cellStep() {}, cellEnd() {}, log() {} };
