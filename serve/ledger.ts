import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readFile, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';

/** One answered request, as a JSONL line. */
export interface LedgerEntry {
  t: string;
  key: string;
  model: string;
  rows: number;
}

export class LedgerError extends Error {
  readonly name = 'LedgerError';
}

/** Rows held for a request between the budget check and its answer. */
export interface Reservation {
  readonly key: string;
  readonly rows: number;
  settled: boolean;
}

/**
 * Sums per key of a ledger file's text. A last line that is not an entry (a crash mid-write) is
 * dropped and returned as `torn`, with the byte length of what precedes it; any other bad line is an error.
 */
export function parseLedger(text: string, path: string): { spent: Map<string, number>; goodBytes: number; torn?: string } {
  const spent = new Map<string, number>();
  const lines = text.split('\n');
  let lastFilled = lines.length - 1;
  while (lastFilled >= 0 && lines[lastFilled] === '') lastFilled--;
  let offset = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const start = offset;
    offset += Buffer.byteLength(line) + 1;
    if (line === '') continue;
    const entry = entryOf(line);
    if (!entry) {
      if (i === lastFilled) return { spent, goodBytes: start, torn: line };
      throw new LedgerError(`ledger ${path}: line ${i + 1} is not a ledger entry: ${line.slice(0, 120)}`);
    }
    spent.set(entry.key, (spent.get(entry.key) ?? 0) + entry.rows);
  }
  return { spent, goodBytes: Buffer.byteLength(text) };
}

function entryOf(line: string): LedgerEntry | undefined {
  try {
    const value = JSON.parse(line) as LedgerEntry;
    return typeof value?.key === 'string' && Number.isInteger(value.rows) && value.rows > 0 ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The spent-rows ledger: append-only JSONL, summed per key when opened. Budget checks and counts are
 * synchronous (reserve → commit or release), so concurrent requests on one key cannot both pass a
 * check that only one of them fits.
 */
export class Ledger {
  private readonly committed: Map<string, number>;
  private readonly reserved = new Map<string, number>();
  private pendingNewline: boolean;
  private closed = false;
  private writeError: Error | undefined;

  private constructor(
    readonly path: string,
    spent: Map<string, number>,
    private readonly out: WriteStream,
    needsNewline: boolean,
  ) {
    this.committed = spent;
    this.pendingNewline = needsNewline;
    out.on('error', (err) => {
      this.writeError = err;
    });
  }

  /** Opens (or creates) the ledger at path; warn() hears about a torn last line, which is cut off the file. */
  static async open(path: string, warn: (message: string) => void = () => {}): Promise<Ledger> {
    let text = '';
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new LedgerError(`cannot read ledger ${path}: ${(err as Error).message}`);
    }
    const { spent, goodBytes, torn } = parseLedger(text, path);
    if (torn !== undefined) {
      warn(`ledger ${path}: ignored a torn last line (${Buffer.byteLength(torn)} bytes: ${JSON.stringify(torn.slice(0, 60))})`);
      await truncate(path, goodBytes);
    }
    const keptText = Buffer.from(text).subarray(0, goodBytes).toString('utf8');
    await mkdir(dirname(path), { recursive: true });
    const out = createWriteStream(path, { flags: 'a' });
    await new Promise<void>((resolve, reject) => {
      out.once('open', () => resolve());
      out.once('error', (err) => reject(new LedgerError(`cannot open ledger ${path} for appending: ${err.message}`)));
    });
    return new Ledger(path, spent, out, keptText.length > 0 && !keptText.endsWith('\n'));
  }

  /** Rows answered for key, as recorded. */
  spent(key: string): number {
    return this.committed.get(key) ?? 0;
  }

  /** Rows of requests in flight for key. */
  inFlight(key: string): number {
    return this.reserved.get(key) ?? 0;
  }

  remaining(key: string, budget: number): number {
    return Math.max(0, budget - this.spent(key) - this.inFlight(key));
  }

  /** Holds rows for a request, or returns undefined when they do not fit in the budget. Synchronous on purpose. */
  reserve(key: string, rows: number, budget: number): Reservation | undefined {
    if (this.closed) throw new LedgerError(`ledger ${this.path} is closed`);
    if (!(Number.isInteger(rows) && rows > 0)) throw new RangeError(`reserve: rows must be a positive integer, got ${rows}`);
    if (this.spent(key) + this.inFlight(key) + rows > budget) return undefined;
    this.reserved.set(key, this.inFlight(key) + rows);
    return { key, rows, settled: false };
  }

  /** Gives back rows of a request that was not answered. */
  release(r: Reservation): void {
    if (r.settled) return;
    r.settled = true;
    this.reserved.set(r.key, this.inFlight(r.key) - r.rows);
  }

  /**
   * Counts the reserved rows as spent (at once) and appends the entry; resolves once the line has been
   * handed to the OS, so an answer can wait for its record.
   */
  commit(r: Reservation, model: string): Promise<void> {
    if (r.settled) throw new LedgerError(`reservation of ${r.rows} rows for key "${r.key}" is already settled`);
    r.settled = true;
    this.reserved.set(r.key, this.inFlight(r.key) - r.rows);
    this.committed.set(r.key, this.spent(r.key) + r.rows);
    const entry: LedgerEntry = { t: new Date().toISOString(), key: r.key, model, rows: r.rows };
    const line = (this.pendingNewline ? '\n' : '') + JSON.stringify(entry) + '\n';
    this.pendingNewline = false;
    return new Promise((resolve) => {
      // A failed write keeps the in-memory count (the rows were answered); the error surfaces on close.
      this.out.write(line, () => resolve());
    });
  }

  /** Flushes and closes the file. Later reserves throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => this.out.end(() => resolve()));
    if (this.writeError) throw new LedgerError(`ledger ${this.path}: a write failed: ${this.writeError.message}`);
  }
}
