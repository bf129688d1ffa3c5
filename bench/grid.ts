import type { SweepConfig } from './config.ts';
import type { Cell } from './types.ts';

/**
 * The sweep's cells in run order. Budgets vary fastest but one: cells of one curve run
 * next to each other, so a partial run still yields whole curves for the first targets.
 */
export function expandCells(cfg: SweepConfig): Cell[] {
  const cells: Cell[] = [];
  for (const target of cfg.targets)
    for (const side of cfg.side)
      for (const attack of cfg.attacks)
        for (const student of cfg.students)
          for (const seed of cfg.seeds)
            for (const budget of cfg.budgets)
              cells.push({ target: target.id, attack, student: student.arch, side: side.name, budget, seed });
  return cells;
}

/** A stable identity for a cell (resume and merge compare cells by it). */
export function cellKey(c: Cell): string {
  return [c.target, c.attack, c.student, c.side, c.budget, c.seed].join('|');
}

/** The curve a cell belongs to: everything but budget and seed. */
export function curveKey(c: Cell): string {
  return [c.target, c.attack, c.student, c.side].join('|');
}
