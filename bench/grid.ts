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

/**
 * The config fields that decide which cells exist and what each one measures. The rest (backend,
 * transport, server, concurrency, cellsPerThread, epsilons, reference, name, description) change how or how fast
 * cells run, or only the aggregates, so a resumed run or a shard may differ in them.
 */
export const CELL_FIELDS = ['dataset', 'targets', 'taskSets', 'attacks', 'students', 'side', 'budgets', 'seeds'] as const;

const ID_FIELDS = ['id', 'arch', 'name'] as const;

function short(value: unknown): string {
  const text = value === undefined ? 'absent' : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

/** JSON with object keys sorted: key order is not a difference, array order is. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    isRecord(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v,
  );
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The field that names the items of an array of specs (targets by id, students by arch, sides by name), if any. */
function idField(items: unknown[]): (typeof ID_FIELDS)[number] | undefined {
  return ID_FIELDS.find((f) => items.length > 0 && items.every((x) => isRecord(x) && typeof x[f] === 'string'));
}

/** Paths where two JSON values differ, as "path: a vs b"; arrays of named specs are matched by name. */
function jsonDifferences(a: unknown, b: unknown, path: string, out: string[]): void {
  if (canonical(a) === canonical(b)) return;
  if (isRecord(a) && isRecord(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) jsonDifferences(a[k], b[k], `${path}.${k}`, out);
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const field = idField(a) && idField(a) === idField(b) ? idField(a) : undefined;
    if (field) {
      const byId = (xs: unknown[]) => new Map(xs.map((x) => [String((x as Record<string, unknown>)[field]), x]));
      const [ma, mb] = [byId(a), byId(b)];
      const before = out.length;
      for (const id of new Set([...ma.keys(), ...mb.keys()])) jsonDifferences(ma.get(id), mb.get(id), `${path}[${id}]`, out);
      // Order matters: it is the grid's order, and so which cells each shard runs.
      if (out.length === before && a.length === b.length) out.push(`${path}: the same items in another order`);
      return;
    }
  }
  out.push(`${path}: ${short(a)} vs ${short(b)}`);
}

/**
 * Where two sweep configs differ in a field that changes cells (CELL_FIELDS), each as
 * "field.path: a vs b". Empty when a run of one may be continued or merged with a run of the other.
 */
export function cellConfigDifferences(a: SweepConfig, b: SweepConfig): string[] {
  const out: string[] = [];
  for (const field of CELL_FIELDS) jsonDifferences(a[field], b[field], field, out);
  return out;
}
