import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { toCurves } from './aggregate.ts';
import type { CellResult } from './types.ts';

export const CSV_COLUMNS = [
  'target', 'attack', 'student', 'side', 'budget', 'seed', 'status', 'rho', 'agreement',
  'studentAccuracy', 'targetAccuracy', 'queries', 'seconds', 'backend', 'gpu', 'error',
] as const satisfies readonly (keyof CellResult)[];

function csvField(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Tidy CSV: one row per cell, one column per field (pandas, R and spreadsheets read it as is). */
export function toCsv(results: CellResult[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of results) lines.push(CSV_COLUMNS.map((c) => csvField(r[c])).join(','));
  return lines.join('\n') + '\n';
}

/** Write-then-rename, so a reader (or a crash) never sees half a file. */
export async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

/**
 * Reads cells.jsonl. A line that does not parse can only be the last one, torn by a crash
 * mid-write: it is dropped and reported, never merged. A bad line elsewhere is an error.
 */
export async function readCells(path: string): Promise<{ cells: CellResult[]; tornLine: boolean }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { cells: [], tornLine: false };
    throw err;
  }
  const lines = text.split('\n');
  const cells: CellResult[] = [];
  let tornLine = false;
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      cells.push(JSON.parse(line) as CellResult);
    } catch {
      const isLast = lines.slice(i + 1).every((l) => !l.trim());
      if (!isLast) throw new Error(`${path}: line ${i + 1} is not valid JSON`);
      tornLine = true;
    }
  });
  return { cells, tornLine };
}

/** The files of one run directory; cells are appended as they finish so a crash loses at most the cell in flight. */
export class RunFiles {
  constructor(readonly dir: string) {}

  get cellsPath(): string {
    return join(this.dir, 'cells.jsonl');
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  async appendCell(result: CellResult): Promise<void> {
    await appendFile(this.cellsPath, JSON.stringify(result) + '\n');
  }

  async writeManifest(manifest: unknown): Promise<void> {
    await writeAtomic(join(this.dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  }

  /** rho.csv and rho.json from every cell so far. */
  async writeAggregates(results: CellResult[]): Promise<void> {
    await writeAtomic(join(this.dir, 'rho.csv'), toCsv(results));
    const curves = toCurves(results);
    await writeAtomic(join(this.dir, 'rho.json'), JSON.stringify({ curves }, null, 2) + '\n');
  }
}
